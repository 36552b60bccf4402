"""kjit for PyTorch: kjit's ops (libkjit.so, through its C ABI over DLPack, no copies) as torch
custom ops with fake implementations (torch.compile traces them) on torch's current stream.

    import kjit
    out = kjit.flash_attn_func(q, k, v, causal=True)         # autograd through kjit's backward
    out, lse = kjit.attention.forward(q, k, v, causal=True)  # the op itself: torch.ops.kjit.*
    moe = kjit.moe.MoELayer(2048, 64, 1536, shared_intermediate_size=1536).cuda()

libkjit.so is found through KJIT_LIBRARY, next to the package, where CMake installed it, or in the
source tree's build/ (kjit.library_path() says which).
"""

try:  # the C extension first, so that a source tree never built says so
    from . import _native  # noqa: F401
except ImportError as error:
    raise ImportError(
        "kjit: its C extension kjit._native is not built; install the package with `pip install ./python` "
        "(it compiles kjit/_native.c: needs Python's, libffi's and DLPack's headers)"
    ) from error

from . import attention, comm, mla, moe, zigzag  # noqa: E402
from ._library import library_path
from .errors import (
    CommError,
    CompileError,
    DriverError,
    InvalidArgumentError,
    KjitError,
    MissingKernelError,
    NoDriverError,
)
from .flash_attn import flash_attn_func, flash_attn_varlen_func, zigzag_llama3_flash_attn_varlen_func

__version__ = "0.1.0"

__all__ = [
    "attention",
    "comm",
    "mla",
    "moe",
    "zigzag",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "zigzag_llama3_flash_attn_varlen_func",
    "library_path",
    "KjitError",
    "InvalidArgumentError",
    "NoDriverError",
    "DriverError",
    "CompileError",
    "MissingKernelError",
    "CommError",
]
