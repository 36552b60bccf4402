"""MLA decode (kjit/mla.hpp) as a torch custom op: weight-absorbed multi-head latent attention over
a paged latent cache (576 columns a token: the 512-column latent, which is also V, then 64 rotary
columns)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

import ctypes

from ._launch import host_copy, host_or_copy, launch, op
from ._library import call
from .errors import InvalidArgumentError

__all__ = ["decode", "helix_decode", "helix_heads", "LATENT_DIM", "ROPE_DIM"]

LATENT_DIM, ROPE_DIM = 512, 64


def _new_outputs(q: Tensor) -> Tuple[Tensor, Tensor]:
    """out [B, s_q, H, 512] and lse [B, s_q, H] for q [B, s_q, H, 576] (empty where q's rank is
    wrong: kjit then refuses q)."""
    if q.dim() != 4:
        return q.new_empty((0,)), q.new_empty((0,), dtype=torch.float32)
    return q.new_empty((*q.shape[:3], LATENT_DIM)), q.new_empty(q.shape[:3], dtype=torch.float32)


@op(
    "kjit::mla_decode",
    schema="(Tensor q, Tensor cache, Tensor block_table, Tensor lengths, Tensor host_block_table, "
    "Tensor host_lengths, float softmax_scale) -> (Tensor, Tensor)",
)
def _decode(q, cache, block_table, lengths, host_block_table, host_lengths, softmax_scale):
    out, lse = _new_outputs(q)
    _decode_out.impl(q, cache, block_table, lengths, host_block_table, host_lengths, out, lse, softmax_scale)
    return out, lse


def _paged_args(cache, block_table, lengths, host_block_table, host_lengths):
    """The paged cache's arguments, in the C ABI's order."""
    return (
        cache,
        block_table,
        host_copy(host_block_table, block_table, "host_block_table"),
        lengths,
        host_copy(host_lengths, lengths, "host_lengths"),
    )


@_decode.register_fake
def _(q, *_):
    return _new_outputs(q)


@op(
    "kjit::mla_decode_out",
    mutates_args=("out", "lse"),
    schema="(Tensor q, Tensor cache, Tensor block_table, Tensor lengths, Tensor host_block_table, "
    "Tensor host_lengths, Tensor(a!) out, Tensor(b!)? lse, float softmax_scale) -> ()",
)
def _decode_out(q, cache, block_table, lengths, host_block_table, host_lengths, out, lse, softmax_scale):
    paged = _paged_args(cache, block_table, lengths, host_block_table, host_lengths)
    launch("kjit_mla_decode", q, q, *paged, out, lse, softmax_scale)


def decode(
    q: Tensor,
    cache: Tensor,
    block_table: Tensor,
    lengths: Tensor,
    host_block_table: Optional[Tensor] = None,
    host_lengths: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    *,
    out: Optional[Tensor] = None,
    lse: Optional[Tensor] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """(out [B, s_q, H, 512], lse [B, s_q, H] fp32) of q [B, s_q, H, 576] (s_q 1 to 4, the last
    tokens of each sequence, causal among themselves) over the paged cache [num_blocks,
    block_size, 576]; block_table int32 [B, max_blocks], lengths int32 [B] on the device. With
    `out` (and optionally `lse`) given, written there (lse None: not written).

    The host copies are validated and plan the split over the keys; where not given they are
    made (one synchronisation). Under CUDA graphs the plan is the one captured: capture with
    host_lengths at least the longest the replays will see (the kernel reads the device lengths).
    softmax_scale None means 1 / sqrt(576); models pass theirs (GLM-4.7-Flash: 0.0625)."""
    host_table, host_len = host_or_copy(host_block_table, block_table), host_or_copy(host_lengths, lengths)
    scale = 0.0 if softmax_scale is None else float(softmax_scale)
    if out is None and lse is None:
        return _decode(q, cache, block_table, lengths, host_table, host_len, scale)
    if out is None:
        raise InvalidArgumentError("decode: lse= needs out= too")
    _decode_out(q, cache, block_table, lengths, host_table, host_len, out, lse, scale)
    return out, lse


# ---- helix: the cache sharded along the sequence across ranks ----------------------------------


def helix_heads(heads: int, world: int, rank: int) -> Tuple[int, int]:
    """Rank `rank`'s heads [begin, end) of `heads` over `world` helix ranks."""
    begin, end = ctypes.c_int(), ctypes.c_int()
    call("kjit_mla_helix_heads", int(heads), world, rank, begin, end)
    return begin.value, end.value


def _new_helix_outputs(q: Tensor, rank: int, world: int) -> Tuple[Tensor, Tensor]:
    if q.dim() != 4:
        return _new_outputs(q)  # kjit refuses q
    begin, end = helix_heads(q.shape[2], world, rank)
    shape = (q.shape[0], q.shape[1], end - begin)
    return q.new_empty((*shape, LATENT_DIM)), q.new_empty(shape, dtype=torch.float32)


@op(
    "kjit::mla_helix_decode",
    schema="(int comm, int rank, int world, Tensor q, Tensor cache, Tensor block_table, Tensor lengths, "
    "Tensor host_block_table, Tensor host_lengths, float softmax_scale) -> (Tensor, Tensor)",
    side_effect=True,
)
def _helix_decode(comm, rank, world, q, cache, block_table, lengths, host_block_table, host_lengths, softmax_scale):
    out, lse = _new_helix_outputs(q, rank, world)
    paged = _paged_args(cache, block_table, lengths, host_block_table, host_lengths)
    launch("kjit_mla_helix_decode", q, comm, q, *paged, out, lse, softmax_scale)
    return out, lse


@_helix_decode.register_fake
def _(comm, rank, world, q, *_):
    return _new_helix_outputs(q, rank, world)


def helix_decode(
    comm,
    q: Tensor,
    cache: Tensor,
    block_table: Tensor,
    lengths: Tensor,
    host_block_table: Optional[Tensor] = None,
    host_lengths: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
) -> Tuple[Tensor, Tensor]:
    """One helix decode step on this rank of `comm` (kjit.comm.Communicator): q [B, 1, H, 576] the
    same on every rank, the paged cache this rank's shard (its blocks of every sequence); returns
    (out [B, 1, H_r, 512], lse [B, 1, H_r]) for this rank's heads helix_heads(H, W, rank), merged
    exactly over every rank's shard. Collective: every rank calls it with the same B, H, scale."""
    return _helix_decode(
        comm.handle,
        comm.rank,
        comm.size,
        q,
        cache,
        block_table,
        lengths,
        host_or_copy(host_block_table, block_table),
        host_or_copy(host_lengths, lengths),
        0.0 if softmax_scale is None else float(softmax_scale),
    )
