"""libkjit.so and its C ABI (kjit/c_api.h) through ctypes.

ctypes rather than a compiled extension: the C ABI is already the stable boundary (plain C
types and DLPack tensors), so the package builds nothing and works with any torch build. The
library is loaded at the first call, so `import kjit` works where it is not installed yet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from pathlib import Path
from typing import Optional

from .errors import InvalidArgumentError, raise_for_status

_P = ctypes.POINTER
# Tensors (const DLTensor*) and host copies (const int32_t*) pass as addresses: a Python int from
# dl_tensors() or tensor.data_ptr(), or None for NULL.
_T = _i32p = _ptr = ctypes.c_void_p
_int, _float, _size = ctypes.c_int, ctypes.c_float, ctypes.c_size_t


class AttentionGroup(ctypes.Structure):
    """kjit_attention_group: one query group of the grouped attention."""

    _fields_ = [
        ("q", _T),
        ("out", _T),
        ("lse", _T),
        ("cu_seqlens_q", _T),
        ("host_cu_seqlens_q", _i32p),
        ("windows", _T),
        ("host_windows", _i32p),
        ("dout", _T),
        ("dq", _T),
    ]


class RouterOptions(ctypes.Structure):
    """kjit_moe_router_options."""

    _fields_ = [
        ("sigmoid", _int),
        ("top_k", _int),
        ("groups", _int),
        ("topk_groups", _int),
        ("renormalize", _int),
        ("scaling", _float),
    ]


# Every entry point: its argument types (the return type is kjit_status unless listed below).
_SIGNATURES = {
    "kjit_merge_states": [_T, _T, _T, _T, _ptr],
    "kjit_attention_forward": [_T, _T, _T, _T, _T, _float, _int, _ptr],
    "kjit_attention_forward_varlen": [_T] * 7 + [_i32p, _i32p, _float, _int, _ptr],
    "kjit_attention_backward": [_T] * 9 + [_float, _int, _int, _ptr, _size, _ptr],
    "kjit_attention_backward_varlen": [_T] * 11 + [_i32p, _i32p, _float, _int, _int, _ptr, _size, _ptr],
    "kjit_attention_backward_workspace_bytes": [_T, _int, _P(_size)],
    "kjit_attention_forward_grouped": [_P(AttentionGroup), _int, _T, _T, _T, _i32p, _float, _int, _ptr],
    "kjit_attention_backward_grouped": [
        _P(AttentionGroup),
        _int,
        _T,
        _T,
        _T,
        _i32p,
        _T,
        _T,
        _float,
        _int,
        _ptr,
        _size,
        _ptr,
    ],
    "kjit_attention_backward_grouped_workspace_bytes": [_P(AttentionGroup), _int, _P(_size)],
    "kjit_mla_decode": [_T, _T, _T, _i32p, _T, _i32p, _T, _T, _float, _ptr],
    "kjit_comm_unique_id": [ctypes.c_char_p],
    "kjit_comm_create": [ctypes.c_char_p, _int, _int, _int, ctypes.c_int64, _P(_ptr)],
    "kjit_mla_helix_heads": [_int, _int, _int, _P(_int), _P(_int)],
    "kjit_mla_helix_decode": [_ptr, _T, _T, _T, _i32p, _T, _i32p, _T, _T, _float, _ptr],
    "kjit_zigzag_extract_kv_slice": [_T, _T, _i32p, _int, _int, _int, _T, _ptr],
    "kjit_zigzag_scatter_grad": [_T, _T, _i32p, _int, _int, _int, _int, _T, _ptr],
    "kjit_zigzag_forward": [_ptr] + [_T] * 6 + [_i32p, _float, _int, _int, _ptr],
    "kjit_zigzag_backward": [_ptr] + [_T] * 10 + [_i32p, _float, _int, _int, _ptr],
    "kjit_moe_router_topk": [_T, _T, _T, _T, _P(RouterOptions), _ptr],
    "kjit_moe_align_capacity": [ctypes.c_int64, _int, _int],
    "kjit_moe_align": [_T, _int, _int, _T, _T, _T, _T, _T, _ptr],
    "kjit_moe_permute": [_T, _T, _int, _T, _T, _ptr],
    "kjit_moe_unpermute": [_T, _T, _int, _T, _T, _T, _ptr],
    "kjit_moe_grouped_gemm": [_T, _T, _int, _T, _T, _int, _T, _T, _ptr],
    "kjit_moe_grouped_gemm_masked": [_T, _T, _int, _T, _T, _int, _ptr],
    "kjit_moe_expert_gemm_fp4": [_T, _T, _int, _int, _T, _T, _T, _T, _int, _T, _T, _ptr],
    "kjit_moe_expert_gemm_fp4_masked": [_T, _T, _int, _int, _T, _T, _T, _T, _int, _ptr],
    "kjit_moe_quantize_fp4": [_T, _int, _T, _T, _T, _ptr],
    "kjit_moe_balance": [_T, _T, _T, _T, _int, _T, _float, _float, _float, _T, _T, _T, _T, _ptr],
    "kjit_moe_layer": [_T, _T, _T, _T, _T, _T, _P(RouterOptions), _int, _T, _ptr],
    "kjit_moe_layer_fp4": [_T, _T, _int] + [_T] * 8 + [_P(RouterOptions), _int, _T, _ptr],
    # The offloaded stack: per-layer tensor arrays (const DLTensor* const*), the options and the
    # stats as structs by address (kjit.moe.offload), the stack as an opaque pointer.
    "kjit_moe_offload_create": [_int, _ptr, _ptr, _ptr, _P(RouterOptions), _int, _ptr, _ptr],
    "kjit_moe_offload_create_fp4": [_int, _int] + [_ptr] * 7 + [_P(RouterOptions), _int, _ptr, _ptr],
    "kjit_moe_offload_layer": [_ptr, _int, _T, _T, _T, _T, _ptr, _ptr],
    "kjit_moe_offload_prefetch_from_logits": [_ptr, _int, _T, _ptr],
    "kjit_moe_offload_stats_get": [_ptr, _ptr],
    "kjit_moe_offload_write_history": [_ptr, ctypes.c_char_p],
}
_RESULT_TYPES = {"kjit_moe_align_capacity": ctypes.c_int64}

_lock = threading.Lock()
_loaded: Optional[ctypes.CDLL] = None
_loaded_path: Optional[Path] = None


def _candidates() -> list:
    """Where libkjit.so may be, in the order tried."""
    found = []
    env = os.environ.get("KJIT_LIBRARY")
    if env:
        return [Path(env)]  # an explicit choice is the only one tried
    here = Path(__file__).resolve().parent
    found.append(here / "libkjit.so")  # shipped next to the package
    for prefix in dict.fromkeys((sys.prefix, "/usr/local", "/usr")):  # where CMake's install put it
        for libdir in ("lib", "lib64", "lib/x86_64-linux-gnu"):
            found.append(Path(prefix) / libdir / "libkjit.so")
    by_linker = ctypes.util.find_library("kjit")
    if by_linker:
        found.append(Path(by_linker))
    # A source checkout (`pip install -e python`): the build tree beside it.
    repo = here.parent.parent
    for preset in ("default", "release", "relwithdebinfo"):
        found.append(repo / "build" / preset / "runtime" / "libkjit.so")
    return found


def library() -> ctypes.CDLL:
    """libkjit.so, loaded once, with every entry point's signature set."""
    global _loaded, _loaded_path
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        tried = []
        for path in _candidates():
            if not path.exists():
                tried.append(f"{path} (absent)")
                continue
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as error:
                tried.append(f"{path} ({error})")
                continue
            missing = [name for name in _SIGNATURES if not hasattr(lib, name)]
            if missing:
                tried.append(f"{path} (lacks {', '.join(missing[:3])}: an older libkjit?)")
                continue
            for name, argtypes in _SIGNATURES.items():
                function = getattr(lib, name)
                function.argtypes = argtypes
                function.restype = _RESULT_TYPES.get(name, _int)
            for destroy in (lib.kjit_comm_destroy, lib.kjit_moe_offload_destroy):
                destroy.argtypes, destroy.restype = [_ptr], None
            lib.kjit_last_error.argtypes = []
            lib.kjit_last_error.restype = ctypes.c_char_p
            _loaded, _loaded_path = lib, path
            return lib
        raise ImportError(
            "kjit: libkjit.so not found; set KJIT_LIBRARY to its path, or install it with CMake "
            "(cmake --install build/default). Tried: " + "; ".join(tried)
        )


def library_path() -> Path:
    """The libkjit.so in use (loading it if needed)."""
    library()
    return _loaded_path


def call(name: str, *args) -> None:
    """Calls one entry point; a failure raises the kjit error with kjit's message."""
    lib = library()
    try:
        status = getattr(lib, name)(*args)
    except ctypes.ArgumentError as error:  # a scalar of the wrong type (the direct path has no schema check)
        raise InvalidArgumentError(f"{name}: {error}") from None
    if status != 0:
        raise_for_status(status, lib.kjit_last_error().decode("utf-8", "replace"))
