"""torch tensors as DLPack DLTensors for the C ABI, without a copy: the struct points at the
tensor's storage and describes its shape and strides (in elements, as DLPack's)."""

from __future__ import annotations

import ctypes
from typing import Optional

import torch

from .errors import InvalidArgumentError


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


# DLPack's codes (kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLBool 6): kjit names the dtypes
# it does not take in its own message, so the common ones all pass through.
_DTYPES = {
    torch.float16: (2, 16),
    torch.bfloat16: (4, 16),
    torch.float32: (2, 32),
    torch.float64: (2, 64),
    torch.int8: (0, 8),
    torch.int16: (0, 16),
    torch.int32: (0, 32),
    torch.int64: (0, 64),
    torch.uint8: (1, 8),
    torch.bool: (6, 8),
}
_DEVICES = {"cpu": 1, "cuda": 2, "meta": 0}


def dl_tensor(tensor: Optional[torch.Tensor], what: str):
    """A pointer to a DLTensor over `tensor` (None: NULL). It keeps the shape and strides arrays
    alive; the tensor must outlive the call."""
    if tensor is None:
        return None
    dims = tensor.dim()
    try:
        code, bits = _DTYPES[tensor.dtype]
    except KeyError:
        raise InvalidArgumentError(f"{what} has dtype {tensor.dtype}, which kjit does not take") from None
    sizes = (ctypes.c_int64 * (2 * dims))(*tensor.shape, *tensor.stride())
    t = DLTensor()
    t.data = tensor.data_ptr() or None
    t.device = DLDevice(_DEVICES.get(tensor.device.type, 0), tensor.device.index or 0)
    t.ndim = dims
    t.dtype = DLDataType(code, bits, 1)
    t.shape = ctypes.cast(sizes, ctypes.POINTER(ctypes.c_int64))
    t.strides = ctypes.cast(ctypes.byref(sizes, 8 * dims), ctypes.POINTER(ctypes.c_int64))
    t.keep_alive = sizes
    return ctypes.pointer(t)
