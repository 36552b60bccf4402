"""libkjit.so and its C ABI (kjit/c_api.h).

The calls go through kjit._native (kjit/_native.c), a small C extension over the C ABI: torch fills
each tensor's DLTensor through DLPack's C exchange table and libffi makes the call, so that a call
costs about what the C++ call does (through ctypes alone, describing the tensors and converting
the arguments cost 1-2 us each on the GPU machine: docs/perf.md). The library itself is loaded
with ctypes (dlopen), which also gives the entry points' addresses and the C structs below. It is
loaded at the first call, so `import kjit` works where it is not installed yet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from pathlib import Path
from typing import Optional

import torch

from . import _native
from ._dlpack import DLArgs
from .errors import InvalidArgumentError, raise_for_status

# The structs' tensors (const DLTensor*) and host copies (const int32_t*) are addresses.
_T = _i32p = ctypes.c_void_p
_int, _float = ctypes.c_int, ctypes.c_float


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


# Every entry point's arguments, a letter each (kjit/_native.c): t a tensor (const DLTensor*: a
# torch tensor, a DLTensor's int address, or None for NULL), p a pointer (None, an int address,
# or an object with a buffer: bytes, a ctypes struct or array), i int, l int64_t, z size_t, f
# float. They return kjit_status, but for the ones in _RESULTS (l: int64_t).
_SIGNATURES = {
    "kjit_merge_states": "ttttp",
    "kjit_attention_forward": "tttttfip",
    "kjit_attention_forward_varlen": "tttttttppfip",
    "kjit_attention_backward": "tttttttttfiipzp",
    "kjit_attention_backward_varlen": "tttttttttttppfiipzp",
    "kjit_attention_backward_workspace_bytes": "tip",
    "kjit_attention_forward_grouped": "pitttpfip",
    "kjit_attention_backward_grouped": "pitttpttfipzp",
    "kjit_attention_backward_grouped_workspace_bytes": "pip",
    "kjit_mla_decode": "tttptpttfp",
    "kjit_comm_unique_id": "p",
    "kjit_comm_create": "piiilp",
    "kjit_mla_helix_heads": "iiipp",
    "kjit_mla_helix_decode": "ptttptpttfp",
    "kjit_zigzag_extract_kv_slice": "ttpiiitp",
    "kjit_zigzag_scatter_grad": "ttpiiiitp",
    "kjit_zigzag_forward": "pttttttpfiip",
    "kjit_zigzag_backward": "pttttttttttpfiip",
    "kjit_moe_router_topk": "ttttpp",
    "kjit_moe_align_capacity": "lii",
    "kjit_moe_align": "tiitttttp",
    "kjit_moe_permute": "ttittp",
    "kjit_moe_unpermute": "ttitttp",
    "kjit_moe_grouped_gemm": "ttittittp",
    "kjit_moe_grouped_gemm_masked": "ttittip",
    "kjit_moe_expert_gemm_fp4": "ttiittttittp",
    "kjit_moe_expert_gemm_fp4_masked": "ttiittttip",
    "kjit_moe_quantize_fp4": "titttp",
    "kjit_moe_balance": "ttttitfffttttp",
    "kjit_moe_layer": "ttttttpitp",
    "kjit_moe_layer_fp4": "ttittttttttpitp",
    "kjit_moe_offload_create": "ippppipp",
    "kjit_moe_offload_create_fp4": "iippppppppipp",
    "kjit_moe_offload_layer": "pittttpp",
    "kjit_moe_offload_prefetch_from_logits": "pitp",
    "kjit_moe_offload_stats_get": "pp",
    "kjit_moe_offload_write_history": "pp",
}
_RESULTS = {"kjit_moe_align_capacity": "l"}

_lock = threading.Lock()
_entries: dict = {}  # name: kjit._native's entry
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
    """libkjit.so, loaded once, with every entry point's entry for kjit._native."""
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
            for name, kinds in _SIGNATURES.items():
                address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                _entries[name] = _native.entry(address, _RESULTS.get(name, "i"), kinds, name)
            for destroy in (lib.kjit_comm_destroy, lib.kjit_moe_offload_destroy):
                destroy.argtypes, destroy.restype = [ctypes.c_void_p], None
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


def _fail(name: str, status: int) -> None:
    """Raises the kjit error of a failed call of entry point `name`, with kjit's message."""
    raise_for_status(status, _loaded.kjit_last_error().decode("utf-8", "replace"))


def _launch_on(device: int, *args):
    """kjit._native.launch(*args) with CUDA device `device` made current (kjit launches in the
    current context): where launch finds its anchor on another device than the current one."""
    with torch.cuda.device(device):
        return _native.launch(*args)


# kjit._native fills a torch tensor's DLTensor through torch's DLPack exchange table (torch >=
# 2.10), hands what the table does not take (a meta tensor, a stand-in) to a DLArgs, and takes
# the current stream from the same table; torch's raw query of the current device tells a launch
# on another device, which goes through _launch_on.
_exchange = getattr(torch.Tensor, "__dlpack_c_exchange_api__", None)
if _exchange is None:
    raise ImportError(f"kjit needs torch >= 2.10 (DLPack's C exchange table); this is torch {torch.__version__}")
_native.bind(
    _exchange,
    torch.Tensor,
    DLArgs,
    InvalidArgumentError,
    _entries,
    library,
    _fail,
    getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device),
    _launch_on,
)

# call(name, *args): calls entry point `name` (loading libkjit.so at the first call); a failure
# raises the kjit error with kjit's message. Returns the int64 of an entry point of _RESULTS, else
# None. Ops call kjit._launch.launch, which adds torch's current stream.
call = _native.call
