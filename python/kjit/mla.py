"""MLA decode (kjit/mla.hpp) as a torch custom op: weight-absorbed multi-head latent attention over
a paged latent cache (576 columns a token: the 512-column latent, which is also V, then 64 rotary
columns)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._dlpack import DLArgs
from ._launch import host_copy, host_or_copy, launch, op

__all__ = ["decode", "LATENT_DIM", "ROPE_DIM"]

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
    dl = DLArgs()
    launch(
        "kjit_mla_decode",
        q,
        dl(q, "q"),
        dl(cache, "cache"),
        dl(block_table, "block_table"),
        host_copy(host_block_table, block_table, "host_block_table"),
        dl(lengths, "lengths"),
        host_copy(host_lengths, lengths, "host_lengths"),
        dl(out, "out"),
        dl(lse, "lse"),
        softmax_scale,
    )
    return out, lse


@_decode.register_fake
def _(q, *_):
    return _new_outputs(q)


def decode(
    q: Tensor,
    cache: Tensor,
    block_table: Tensor,
    lengths: Tensor,
    host_block_table: Optional[Tensor] = None,
    host_lengths: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
) -> Tuple[Tensor, Tensor]:
    """(out [B, s_q, H, 512], lse [B, s_q, H] fp32) of q [B, s_q, H, 576] (s_q 1 to 4, the last
    tokens of each sequence, causal among themselves) over the paged cache [num_blocks,
    block_size, 576]; block_table int32 [B, max_blocks], lengths int32 [B] on the device.

    The host copies are validated and plan the split over the keys; where not given they are
    made (one synchronisation). Under CUDA graphs the plan is the one captured: capture with
    host_lengths at least the longest the replays will see (the kernel reads the device lengths).
    softmax_scale None means 1 / sqrt(576); models pass theirs (GLM-4.7-Flash: 0.0625)."""
    return _decode(
        q,
        cache,
        block_table,
        lengths,
        host_or_copy(host_block_table, block_table),
        host_or_copy(host_lengths, lengths),
        0.0 if softmax_scale is None else float(softmax_scale),
    )
