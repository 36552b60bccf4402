"""flash_attn_func and flash_attn_varlen_func with FlashAttention's signatures, over kjit's
attention with autograd, so that `from kjit import flash_attn_func` can replace
`from flash_attn import flash_attn_func`; zigzag_llama3_flash_attn_varlen_func with the
ring-flash-attention fork's. What kjit does not do (dropout, sliding windows, softcapping, ALiBi,
a paged K/V) is refused by name rather than ignored."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import attention, zigzag
from ._launch import host_or_copy
from .comm import Communicator
from .errors import InvalidArgumentError

__all__ = ["flash_attn_func", "flash_attn_varlen_func", "zigzag_llama3_flash_attn_varlen_func"]


def _refuse_unsupported(dropout_p, window_size, softcap, alibi_slopes, block_table=None):
    if dropout_p:
        raise InvalidArgumentError(f"dropout_p: kjit's attention has no dropout, got {dropout_p}")
    if tuple(window_size) != (-1, -1):
        raise InvalidArgumentError(f"window_size: kjit's attention has no sliding window, got {tuple(window_size)}")
    if softcap:
        raise InvalidArgumentError(f"softcap: kjit's attention has no softcapping, got {softcap}")
    if alibi_slopes is not None:
        raise InvalidArgumentError("alibi_slopes: kjit's attention has no ALiBi")
    if block_table is not None:
        raise InvalidArgumentError("block_table: kjit's varlen attention takes packed K/V, not a paged cache")


def _result(out: Tensor, lse: Tensor, return_attn_probs: bool):
    # FlashAttention returns (out, softmax_lse, S_dmask); S_dmask is dropout's mask, absent here.
    return (out, lse, None) if return_attn_probs else out


def flash_attn_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
):
    """q [B, Sq, Hq, D], k and v [B, Sk, Hk, D] -> out [B, Sq, Hq, D] (with return_attn_probs:
    (out, lse [B, Hq, Sq], None)). Differentiable in q, k, v."""
    _refuse_unsupported(dropout_p, window_size, softcap, alibi_slopes)
    out, lse = attention.forward(q, k, v, softmax_scale, causal, deterministic)
    return _result(out, lse, return_attn_probs)


def flash_attn_varlen_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Optional[Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: Optional[Tensor] = None,
    *,
    host_cu_seqlens_q: Optional[Tensor] = None,
    host_cu_seqlens_k: Optional[Tensor] = None,
):
    """Packed sequences: q [Tq, Hq, D], k and v [Tk, Hk, D], cu_seqlens int32 [B + 1] on the device.

    kjit validates host copies of cu_seqlens instead of trusting max_seqlen_q/k (accepted for
    FlashAttention's signature, not read): pass host_cu_seqlens_q/k to avoid the one
    synchronisation that makes them."""
    _refuse_unsupported(dropout_p, window_size, softcap, alibi_slopes, block_table)
    out, lse = attention.forward_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, host_cu_seqlens_q, host_cu_seqlens_k, softmax_scale, causal, deterministic
    )
    return _result(out, lse, return_attn_probs)


# kjit's communicator of each torch.distributed group (and CUDA device) the zigzag function has
# run over: made once, collectively, on the group's first call, and kept for the process's life.
_communicators = {}


def _communicator_of(group) -> Communicator:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidArgumentError(
            "group: torch.distributed is not initialised (call init_process_group first, or pass a "
            "kjit.comm.Communicator to kjit.zigzag.attention)"
        )
    device = torch.cuda.current_device() if torch.cuda.is_available() else -1  # -1: kjit's current one
    key = (dist.group.WORLD if group is None else group, device)
    if key not in _communicators:
        _communicators[key] = Communicator.from_torch_distributed(group, device=device)
    return _communicators[key]


def zigzag_llama3_flash_attn_varlen_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    heads_k_stride: int,
    dropout_p: float = 0.0,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Tuple[int, int] = (-1, -1),
    alibi_slopes: Optional[Tensor] = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    group=None,
    *,
    host_cu_seqlens_k: Optional[Tensor] = None,
):
    """The ring-flash-attention fork's zigzag_llama3_flash_attn_varlen_func (less local_k_slice,
    which kjit works out itself) over kjit's zigzag path: q [Tl, Hq, D], k and v [Tl, Hk, D] this
    rank's tokens in the zigzag layout, cu_seqlens_q the LOCAL and cu_seqlens_k the GLOBAL int32
    [B + 1] on the device (every sequence a multiple of 2W long), heads_k_stride the K/V heads
    gathered per step (a divisor of Hk). Runs over `group` (default: the world), through a kjit
    communicator made from it on the first call (collective: every rank of the group calls).
    kjit reads cu_seqlens_k's host copy (made here where host_cu_seqlens_k is not passed, one
    synchronisation); cu_seqlens_q, max_seqlen_q and max_seqlen_k are taken for the signature
    and not read. Returns out [Tl, Hq, D] (with return_attn_probs: (out, lse [Hq, Tl], None));
    differentiable in q, k, v."""
    _refuse_unsupported(dropout_p, window_size, 0.0, alibi_slopes)
    if deterministic:
        raise InvalidArgumentError("deterministic: kjit's zigzag backward has no deterministic mode")
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise InvalidArgumentError(
            f"cu_seqlens_q (local) and cu_seqlens_k (global) must describe the same sequences, got "
            f"shapes {list(cu_seqlens_q.shape)} and {list(cu_seqlens_k.shape)}"
        )
    comm = _communicator_of(group)
    out, lse = zigzag.forward(
        comm,
        q,
        k,
        v,
        cu_seqlens_k,
        host_or_copy(host_cu_seqlens_k, cu_seqlens_k),
        softmax_scale,
        causal,
        heads_k_stride,
    )
    return _result(out, lse, return_attn_probs)
