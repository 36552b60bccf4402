"""What every op's implementation shares: the kjit call on the tensors' device and torch's current
stream there, and the host copies some ops validate on the host."""

from __future__ import annotations

import inspect

import torch
from torch.autograd.graph import increment_version

from . import _native
from .errors import InvalidArgumentError

# launch(name, anchor, *args): calls entry point `name` with `args` and torch's current stream of
# tensor `anchor`'s CUDA device, made current for the call where it is not (a tensor elsewhere
# passes no stream: kjit refuses it by its device first, with kjit's message). In C because in
# Python the device and stream queries and the frame cost 0.5-1 us a call on the GPU machine.
launch = _native.launch

# What torch.autograd.graph.increment_version calls over a sequence (a frame less).
_increment_version = getattr(torch._C, "_increment_version", None) or increment_version

# host_copy(host, device_copy, what) -> int: the address of `host`, the host copy of int32
# `device_copy` that kjit validates on the host (so that no call synchronises with the device):
# a contiguous int32 tensor on the host of the device copy's shape (kjit reads as many entries
# as the device copy has); else InvalidArgumentError naming it `what`.
host_copy = _native.host_copy


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor of t's shape, dtype and device (torch.empty_like: about half
    t.new_empty(t.shape)'s host time on the GPU machine)."""
    return torch.empty_like(t, memory_format=torch.contiguous_format)


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
_JIT_TRACING = getattr(torch._C, "_is_tracing", None)
_PROFILING = getattr(torch.autograd, "_profiler_enabled", None)  # any profiler, C++ or on demand too
# Each answers None or a false value where nothing would see the call.
_QUERIES = (_DISPATCH_MODES, _FUNCTION_MODES, _FUNCTORCH_LEVEL, _JIT_TRACING, _PROFILING)
_CAN_GO_DIRECT = None not in _QUERIES


class Op:
    """A kjit op: the torch.library custom op `name` over `impl` (torch.ops.kjit.*).

    Calling it runs `impl` straight where torch's dispatcher would only pass the call through
    (kjit._native.run): plain CUDA tensors (no fake, meta, functional or other subclass: those
    take the fake or the dispatcher's path), no gradient to record, and no torch.compile, jit
    trace, dispatch or function mode, functorch transform or profiler that would see the op.
    Else it goes through torch.ops. An op that mutates arguments (`mutates_args`, an out=
    variant's outputs) bumps their version counters on the straight path, as the dispatcher
    does (autograd checks them: kjit writes through the pointer). A collective (`side_effect`) is
    kept by torch.compile even where its outputs go unused: one rank skipping it would hang the
    others."""

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
        if _CAN_GO_DIRECT and not torch.compiler.is_compiling():  # the rest in C
            result = _native.run(_QUERIES, torch.is_grad_enabled, _increment_version, self.impl, self.mutated, args)
            if result is not NotImplemented:
                return result
        if self.mutated:
            self._refuse_gradients(args)
        return self.op(*args)

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
