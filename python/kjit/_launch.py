"""What every op's implementation shares: the kjit call on the tensors' device and torch's current
stream there, and the host copies some ops validate on the host."""

from __future__ import annotations

import inspect

import torch
from torch.autograd.graph import increment_version as _increment_version

from . import _native
from ._library import call
from .errors import InvalidArgumentError

# The current cudaStream_t and device as plain ints (what inductor's get_raw_stream uses): a
# torch.cuda.Stream object and torch.cuda.current_device()'s checks cost several us a call. A
# torch without these private queries takes the public (slower) path. current_stream(index): the
# cudaStream_t of torch's current stream on CUDA device `index`.
current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
    lambda index: torch.cuda.current_stream(index).cuda_stream
)
_current_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device


def launch(name: str, anchor: torch.Tensor, *args) -> None:
    """Calls entry point `name` with `args` and the current stream of `anchor`'s device (a CPU
    tensor passes no stream: kjit refuses it by its device first, with kjit's message)."""
    stream = None
    if anchor.is_cuda:
        index = anchor.get_device()
        if index != _current_device():
            with torch.cuda.device(index):  # kjit launches in the current context
                call(name, *args, current_stream(index))
            return
        stream = current_stream(index)
    call(name, *args, stream)


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor of t's shape, dtype and device (torch.empty_like: about half
    t.new_empty(t.shape)'s host time on the GPU machine)."""
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def host_copy(host: torch.Tensor, device_copy: torch.Tensor, what: str) -> int:
    """The address of `host`, the host copy of int32 `device_copy` that kjit validates on the host
    (so that no call synchronises with the device). kjit reads as many entries as the device
    copy has, so they must agree here."""
    if not host.is_cpu or host.dtype != torch.int32 or not host.is_contiguous():
        raise InvalidArgumentError(
            f"{what} must be a contiguous int32 tensor on the host, got {host.dtype} on {host.device}"
        )
    if host.shape != device_copy.shape:
        raise InvalidArgumentError(
            f"{what} must have the device copy's shape {list(device_copy.shape)}, got {list(host.shape)}"
        )
    return host.data_ptr()


def host_or_copy(host, device_copy: torch.Tensor) -> torch.Tensor:
    """`host`, or where it is None the host copy of `device_copy` (one synchronisation: callers
    pass their own to avoid it)."""
    return device_copy.to("cpu", torch.int32).contiguous() if host is None else host


# ---- calling an op: straight to its implementation where torch's dispatcher would only pass -----
# the call through (about 5-7 us a call on the CPU machine, docs/perf.md). These private torch
# queries say whether anything would see the call; a torch without one of them always dispatches.
_DISPATCH_MODES = getattr(torch._C, "_len_torch_dispatch_stack", None)
_FUNCTION_MODES = getattr(torch._C, "_is_torch_function_mode_enabled", None)
_FUNCTORCH_LEVEL = getattr(getattr(torch._C, "_functorch", None), "maybe_current_level", None)
_JIT_TRACING = getattr(torch._C, "_get_tracing_state", None)
_PROFILING = getattr(torch.autograd, "_profiler_enabled", None)  # any profiler, C++ or on demand too
# Each answers None or a false value where nothing would see the call.
_QUERIES = (_DISPATCH_MODES, _FUNCTION_MODES, _FUNCTORCH_LEVEL, _JIT_TRACING, _PROFILING)
_CAN_GO_DIRECT = None not in _QUERIES


def direct(args) -> bool:
    """Whether an op may run its implementation on `args` without torch's dispatcher: plain CUDA
    tensors (no fake, meta, functional or other subclass: those take the fake or the dispatcher's
    path), no gradient to record, and no torch.compile, jit trace, dispatch or function mode,
    functorch transform or profiler that would see the op (the checks past torch.compile's are
    kjit._native's)."""
    if not _CAN_GO_DIRECT or torch.compiler.is_compiling():
        return False
    return _native.direct(_QUERIES, torch.is_grad_enabled, args)


class Op:
    """A kjit op: the torch.library custom op `name` over `impl` (torch.ops.kjit.*). Calling it
    runs `impl` straight where direct() allows, else through torch.ops. An op that mutates
    arguments (`mutates_args`, an out= variant's outputs) bumps their version counters on the
    straight path, as the dispatcher does (autograd checks them: kjit writes through the pointer).
    A collective (`side_effect`) is kept by torch.compile even where its outputs go unused: one
    rank skipping it would hang the others."""

    def __init__(self, name: str, impl, schema: str, mutates_args=(), side_effect=False):
        self.name, self.impl = name, impl
        self.op = torch.library.custom_op(name, impl, mutates_args=mutates_args, schema=schema)
        self.register_fake = self.op.register_fake
        parameters = list(inspect.signature(impl).parameters)
        self.mutated = tuple(parameters.index(arg) for arg in mutates_args)
        if schema.endswith("-> ()"):  # an out= variant: its fake has nothing to make
            self.register_fake(lambda *_: None)
        if side_effect:
            torch.fx.node.has_side_effect(getattr(torch.ops.kjit, name.split("::")[1]).default)

    def __call__(self, *args):
        if not direct(args):
            if self.mutated:
                self._refuse_gradients(args)
            return self.op(*args)
        result = self.impl(*args)
        if self.mutated:
            _increment_version([args[i] for i in self.mutated if args[i] is not None])
        return result

    def _refuse_gradients(self, args):
        """Outputs given by the caller (out=) record no autograd: an input that requires grad is
        refused, as torch's out= variants do (the direct path never sees one)."""
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            raise InvalidArgumentError(
                f"{self.name}: outputs given with out= record no autograd; an input requires grad"
            )


def op(name: str, schema: str, mutates_args=(), side_effect=False):
    """Decorator: an implementation as an Op."""
    return lambda impl: Op(name, impl, schema, mutates_args, side_effect)
