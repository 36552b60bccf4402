"""torch tensors as DLPack DLTensors held from Python, without a copy: each DLTensor points at the
tensor's storage and describes its shape and strides (in elements, as DLPack's).

A call's own tensor arguments do not come here: kjit._native has torch fill their DLTensors in C.
DLArgs serves the DLTensors that C structs point at (the grouped attention's groups, the offloaded
stack's per-layer arrays) and what torch's exchange table does not take (meta tensors, the CPU
tests' stand-ins for CUDA tensors), so that kjit still names what it refuses. A torch tensor is
exported by torch (torch._C._to_dlpack: its DLManagedTensor starts with the DLTensor); anything
else is described by hand, one struct.pack into a buffer of its own."""

from __future__ import annotations

import ctypes
import struct
from typing import Optional

import torch

from .errors import InvalidArgumentError

# DLTensor (dlpack.h): void* data; DLDevice {int32 type, int32 id}; int32 ndim; DLDataType
# {uint8 code, uint8 bits, uint16 lanes}; int64* shape; int64* strides; uint64 byte_offset. The
# shape and the strides follow each struct in the buffer.
_HEADER = "=QiiiBBHQQQ"
_HEADER_BYTES = struct.calcsize(_HEADER)  # 48
_LAYOUTS = [struct.Struct(_HEADER + "q" * (2 * dims)) for dims in range(9)]

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


_DEVICES = {"cpu": 1, "cuda": 2}  # others (meta, ...): 0, which kjit refuses by name

_to_dlpack = torch._C._to_dlpack
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


class DLArgs:
    """The DLTensors of one C ABI call: dl(tensor, name) is the address of a DLTensor over
    `tensor` (None for None: a NULL argument), valid while this DLArgs lives. `name` names the
    tensor in errors."""

    __slots__ = ("_held",)

    def __init__(self):
        self._held = []  # torch's exports (their capsules free them) and the hand descriptions

    def __call__(self, t: Optional[torch.Tensor], name: str) -> Optional[int]:
        if t is None:
            return None
        kind = _DTYPES.get(t.dtype)
        dims = t.dim()
        if kind is None or dims >= len(_LAYOUTS):
            raise InvalidArgumentError(f"{name} has dtype {t.dtype} and {dims} dims, which kjit does not take")
        if type(t) is torch.Tensor and not t.is_meta:
            export = _to_dlpack(t)
            self._held.append(export)
            return _capsule_pointer(export, b"dltensor")
        buffer = ctypes.create_string_buffer(_HEADER_BYTES + 16 * dims)
        self._held.append(buffer)
        here = ctypes.addressof(buffer)
        sizes = here + _HEADER_BYTES
        index = t.get_device()  # -1 on the host
        device = 2 if t.is_cuda else _DEVICES.get(t.device.type, 0)
        _LAYOUTS[dims].pack_into(
            buffer,
            0,
            t.data_ptr(),
            device,
            max(index, 0),
            dims,
            kind[0],
            kind[1],
            1,
            sizes,
            sizes + 8 * dims,
            0,
            *t.shape,
            *t.stride(),
        )
        return here
