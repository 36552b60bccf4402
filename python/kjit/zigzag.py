"""Zigzag-llama3 context parallelism (kjit/zigzag.hpp) as torch custom ops: packed varlen sequences
sharded over the W ranks of a kjit.comm.Communicator, each sequence cut into 2W equal chunks and
rank r holding chunks r and 2W-1-r (its local buffer, T / W tokens). attention() runs causal
attention over the ranks with autograd through kjit's backward; shard() and unshard() move whole
tensors between the global order and the zigzag one; extract_kv_slice() and
scatter_grad_to_zigzag() are the component kernels."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._launch import host_copy, host_or_copy, launch, op
from .attention import _new_forward_outputs, _new_grads
from .errors import InvalidArgumentError

__all__ = [
    "attention",
    "forward",
    "backward",
    "extract_kv_slice",
    "scatter_grad_to_zigzag",
    "shard",
    "unshard",
    "local_cu_seqlens",
    "EVERY_RANK",
]

EVERY_RANK = -1  # scatter_grad_to_zigzag's rank for every rank's buffers in rank order


def local_cu_seqlens(cu_seqlens: Tensor, world: int) -> Tensor:
    """A rank's local cu_seqlens (the global ones / W), where every length is a multiple of 2W."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    if bool((lengths % (2 * world) != 0).any()):
        bad = int(torch.nonzero(lengths % (2 * world))[0, 0])
        raise InvalidArgumentError(f"sequence {bad} has {int(lengths[bad])} tokens, not a multiple of 2W = {2 * world}")
    return torch.div(cu_seqlens, world, rounding_mode="floor")


# ---- the component kernels ---------------------------------------------------------------------


# The outputs' rows come from the inputs' shapes, never from a host value, so that the fakes need
# none. A bad world or chunk range gives 0 rows: kjit then refuses the call, naming it.
def _valid_range(world: int, chunk_begin: int, chunk_end: int) -> bool:
    return world >= 1 and 0 <= chunk_begin < chunk_end <= 2 * world


@op(
    "kjit::zigzag_extract_kv_slice",
    schema="(Tensor gathered, Tensor cu_seqlens, Tensor host_cu_seqlens, int world, int chunk_begin, "
    "int chunk_end) -> Tensor",
)
def _extract(gathered, cu_seqlens, host_cu_seqlens, world, chunk_begin, chunk_end):
    out = _new_extract(gathered, world, chunk_begin, chunk_end)
    launch(
        "kjit_zigzag_extract_kv_slice",
        gathered,
        gathered,
        cu_seqlens,
        host_copy(host_cu_seqlens, cu_seqlens, "host_cu_seqlens"),
        world,
        chunk_begin,
        chunk_end,
        out,
    )
    return out


def _new_extract(gathered, world, chunk_begin, chunk_end):
    valid = _valid_range(world, chunk_begin, chunk_end)
    rows = (chunk_end - chunk_begin) * (gathered.shape[0] // (2 * world)) if valid else 0
    return gathered.new_empty((rows, *gathered.shape[1:]))


@_extract.register_fake
def _(gathered, cu_seqlens, host_cu_seqlens, world, chunk_begin, chunk_end):
    return _new_extract(gathered, world, chunk_begin, chunk_end)


@op(
    "kjit::zigzag_scatter_grad",
    schema="(Tensor grad, Tensor cu_seqlens, Tensor host_cu_seqlens, int world, int chunk_begin, "
    "int chunk_end, int rank) -> Tensor",
)
def _scatter(grad, cu_seqlens, host_cu_seqlens, world, chunk_begin, chunk_end, rank):
    out = _new_scatter(grad, world, chunk_begin, chunk_end, rank)
    launch(
        "kjit_zigzag_scatter_grad",
        grad,
        grad,
        cu_seqlens,
        host_copy(host_cu_seqlens, cu_seqlens, "host_cu_seqlens"),
        world,
        chunk_begin,
        chunk_end,
        rank,
        out,
    )
    return out


def _new_scatter(grad, world, chunk_begin, chunk_end, rank):
    valid = _valid_range(world, chunk_begin, chunk_end)
    tokens = grad.shape[0] * 2 * world // (chunk_end - chunk_begin) if valid else 0
    rows = tokens if rank == EVERY_RANK or not valid else tokens // world
    return grad.new_empty((rows, *grad.shape[1:]))


@_scatter.register_fake
def _(grad, cu_seqlens, host_cu_seqlens, world, chunk_begin, chunk_end, rank):
    return _new_scatter(grad, world, chunk_begin, chunk_end, rank)


def extract_kv_slice(
    gathered: Tensor,
    cu_seqlens: Tensor,
    world: int,
    chunk_begin: int,
    chunk_end: int,
    host_cu_seqlens: Optional[Tensor] = None,
) -> Tensor:
    """Chunks [chunk_begin, chunk_end) of every sequence, in global order, out of `gathered` [T, H,
    D] (every rank's local buffer in rank order: an all-gather's output). cu_seqlens: the global
    int32 [B + 1] on the device; its host copy is made where not given (one synchronisation)."""
    return _extract(gathered, cu_seqlens, host_or_copy(host_cu_seqlens, cu_seqlens), world, chunk_begin, chunk_end)


def scatter_grad_to_zigzag(
    grad: Tensor,
    cu_seqlens: Tensor,
    world: int,
    chunk_begin: int,
    chunk_end: int,
    rank: int = EVERY_RANK,
    host_cu_seqlens: Optional[Tensor] = None,
) -> Tensor:
    """The reverse: grad holds chunks [chunk_begin, chunk_end) of every sequence in global order;
    returns rank `rank`'s local buffer [T / W, H, D], or every rank's [T, H, D] (EVERY_RANK), zeros
    where a token is outside the chunks."""
    return _scatter(grad, cu_seqlens, host_or_copy(host_cu_seqlens, cu_seqlens), world, chunk_begin, chunk_end, rank)


def shard(x: Tensor, cu_seqlens: Tensor, world: int, rank: int, host_cu_seqlens: Optional[Tensor] = None) -> Tensor:
    """Rank `rank`'s zigzag slice [T / W, ...] of x [T, H, D] in global order (the fork's
    extract_local, per sequence)."""
    return scatter_grad_to_zigzag(x, cu_seqlens, world, 0, 2 * world, rank, host_cu_seqlens)


def unshard(gathered: Tensor, cu_seqlens: Tensor, world: int, host_cu_seqlens: Optional[Tensor] = None) -> Tensor:
    """The global order [T, H, D] of every rank's local buffer in rank order (an all-gather of
    shard()'s outputs)."""
    return extract_kv_slice(gathered, cu_seqlens, world, 0, 2 * world, host_cu_seqlens)


# ---- attention over the ranks ------------------------------------------------------------------


@op(
    "kjit::zigzag_forward",
    schema="(int comm, Tensor q, Tensor k, Tensor v, Tensor cu_seqlens, Tensor host_cu_seqlens, "
    "float softmax_scale, bool causal, int heads_k_stride) -> (Tensor, Tensor)",
    side_effect=True,
)
def _forward(comm, q, k, v, cu_seqlens, host_cu_seqlens, softmax_scale, causal, heads_k_stride):
    out, lse = _new_forward_outputs(q, packed=True)
    launch(
        "kjit_zigzag_forward",
        q,
        comm,
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens,
        host_copy(host_cu_seqlens, cu_seqlens, "host_cu_seqlens"),
        softmax_scale,
        causal,
        heads_k_stride,
    )
    return out, lse


@_forward.register_fake
def _(comm, q, *_):
    return _new_forward_outputs(q, packed=True)


@op(
    "kjit::zigzag_backward",
    schema="(int comm, Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor cu_seqlens, "
    "Tensor host_cu_seqlens, float softmax_scale, bool causal, int heads_k_stride) -> (Tensor, Tensor, Tensor)",
    side_effect=True,
)
def _backward(comm, dout, q, k, v, out, lse, cu_seqlens, host_cu_seqlens, softmax_scale, causal, heads_k_stride):
    dq, dk, dv = _new_grads(q, k, v)
    tensors = (q, k, v, out, dout, lse, dq, dk, dv)  # the C ABI's order
    launch(
        "kjit_zigzag_backward",
        q,
        comm,
        *tensors,
        cu_seqlens,
        host_copy(host_cu_seqlens, cu_seqlens, "host_cu_seqlens"),
        softmax_scale,
        causal,
        heads_k_stride,
    )
    return dq, dk, dv


@_backward.register_fake
def _(comm, dout, q, k, v, *_):
    return _new_grads(q, k, v)


def _save(ctx, inputs, output):
    out, lse = output
    ctx.mark_non_differentiable(lse)
    comm, q, k, v, cu_seqlens, host_cu_seqlens, *options = inputs
    ctx.save_for_backward(q, k, v, cu_seqlens, host_cu_seqlens, out, lse)
    ctx.comm, ctx.options = comm, options


def _forward_grad(ctx, grad_out, _grad_lse):
    q, k, v, cu_seqlens, host_cu_seqlens, out, lse = ctx.saved_tensors
    dq, dk, dv = _backward(
        ctx.comm, grad_out.contiguous(), q, k, v, out, lse, cu_seqlens, host_cu_seqlens, *ctx.options
    )
    return None, dq, dk, dv, None, None, None, None, None


torch.library.register_autograd("kjit::zigzag_forward", _forward_grad, setup_context=_save)


def _options(softmax_scale, causal, heads_k_stride):
    """The ops' scalar arguments (softmax_scale 0: 1 / sqrt(D))."""
    return 0.0 if softmax_scale is None else float(softmax_scale), bool(causal), int(heads_k_stride)


def forward(
    comm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    host_cu_seqlens: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = True,
    heads_k_stride: int = 0,
) -> Tuple[Tensor, Tensor]:
    """(out [Tl, Hq, D], lse [Hq, Tl] fp32) on this rank of `comm` (kjit.comm.Communicator): q
    [Tl, Hq, D], k and v [Tl, Hk, D] its local tokens (Tl = T / W), cu_seqlens the GLOBAL int32
    [B + 1] on the device (every length a multiple of 2W; the host copy is made where not given,
    one synchronisation). Equal to varlen attention over the whole sequences, in the rank's local
    order. heads_k_stride: K/V heads gathered per step (a divisor of Hk; 0: all). Collective:
    every rank calls it with the same sequences and options. Differentiable (q, k, v)."""
    return _forward(
        comm.handle,
        q,
        k,
        v,
        cu_seqlens,
        host_or_copy(host_cu_seqlens, cu_seqlens),
        *_options(softmax_scale, causal, heads_k_stride),
    )


def backward(
    comm,
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens: Tensor,
    host_cu_seqlens: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = True,
    heads_k_stride: int = 0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of forward() for this rank's tokens; dK/dV are reduce-scattered across the
    ranks in their dtype. Collective."""
    return _backward(
        comm.handle,
        dout,
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens,
        host_or_copy(host_cu_seqlens, cu_seqlens),
        *_options(softmax_scale, causal, heads_k_stride),
    )


def attention(
    comm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens: Tensor,
    host_cu_seqlens: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = True,
    heads_k_stride: int = 0,
) -> Tensor:
    """forward()'s out alone (the zigzag_llama3 attention of ring-flash-attention's fork)."""
    return forward(comm, q, k, v, cu_seqlens, host_cu_seqlens, softmax_scale, causal, heads_k_stride)[0]
