"""Attention ops (kjit/attention.hpp, kjit/merge_states.hpp) as torch custom ops: forward and
backward, batched and packed (varlen), grouped (several query groups over one shared K/V), and the
exact merge of partial results. Each op allocates its outputs and runs on torch's current stream;
the forward ops carry autograd (their backward is kjit's backward).

Layouts follow FlashAttention: q [B, Sq, Hq, D], k and v [B, Sk, Hk, D], lse [B, Hq, Sq] fp32
natural log; packed: q [Tq, Hq, D], lse [Hq, Tq], cu_seqlens int32 [B + 1] on the device with a
host copy (kjit validates the host copy, so no call synchronises; where none is given, the
functions below make one).
"""

from __future__ import annotations

import ctypes
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._dlpack import DLArgs
from ._launch import empty_like, host_copy, host_or_copy as _host, launch, op
from ._library import AttentionGroup, call
from .errors import InvalidArgumentError

__all__ = [
    "forward",
    "forward_varlen",
    "backward",
    "backward_varlen",
    "grouped_forward",
    "grouped_backward",
    "merge_states",
]


def _lse_shape(q: Tensor, packed: bool):
    """lse's shape for q, or an empty one where q's rank is wrong (kjit then refuses q)."""
    if packed:
        return (q.shape[1], q.shape[0]) if q.dim() == 3 else (0,)
    return (q.shape[0], q.shape[2], q.shape[1]) if q.dim() == 4 else (0,)


def _new_forward_outputs(q: Tensor, packed: bool) -> Tuple[Tensor, Tensor]:
    return empty_like(q), q.new_empty(_lse_shape(q, packed), dtype=torch.float32)


def _workspace(q: Tensor, deterministic: bool) -> Tensor:
    """The backward's workspace from torch's allocator (so CUDA graphs and torch's memory
    accounting see it)."""
    size = ctypes.c_size_t()
    call("kjit_attention_backward_workspace_bytes", q, int(deterministic), size)
    return torch.empty(size.value, dtype=torch.uint8, device=q.device)


# ---- forward and backward, batched and packed --------------------------------------------------
# The packed ops differ from the batched ones by their sequences: cu_seqlens_q and _k on the
# device and their host copies, passed after the tensors (`seqlens`, None when batched).


def _seqlens_args(seqlens):
    if seqlens is None:
        return ()
    cu_q, cu_k, host_q, host_k = seqlens
    return (
        cu_q,
        cu_k,
        host_copy(host_q, cu_q, "host_cu_seqlens_q"),
        host_copy(host_k, cu_k, "host_cu_seqlens_k"),
    )


def _run_forward(entry, q, k, v, seqlens, softmax_scale, causal):
    out, lse = _new_forward_outputs(q, packed=seqlens is not None)
    launch(entry, q, q, k, v, out, lse, *_seqlens_args(seqlens), softmax_scale, int(causal))
    return out, lse


def _run_backward(entry, dout, q, k, v, out, lse, seqlens, softmax_scale, causal, deterministic):
    dq, dk, dv = _new_grads(q, k, v)
    workspace = _workspace(q, deterministic)
    tensors = (q, k, v, out, dout, lse, dq, dk, dv)  # the C ABI's order
    launch(
        entry,
        q,
        *tensors,
        *_seqlens_args(seqlens),
        softmax_scale,
        int(causal),
        int(deterministic),
        workspace.data_ptr(),
        workspace.numel(),
    )
    return dq, dk, dv


def _new_grads(q: Tensor, k: Tensor, v: Tensor):
    return empty_like(q), empty_like(k), empty_like(v)


@op(
    "kjit::attention_forward",
    schema="(Tensor q, Tensor k, Tensor v, float softmax_scale, bool causal, bool deterministic) -> (Tensor, Tensor)",
)
def _forward(q, k, v, softmax_scale, causal, deterministic):
    out, lse = _new_forward_outputs(q, packed=False)
    _forward_out.impl(q, k, v, out, lse, softmax_scale, causal)
    return out, lse


@_forward.register_fake
def _(q, *_):
    return _new_forward_outputs(q, packed=False)


@op(
    "kjit::attention_forward_out",
    mutates_args=("out", "lse"),
    schema="(Tensor q, Tensor k, Tensor v, Tensor(a!) out, Tensor(b!)? lse, float softmax_scale, bool causal) -> ()",
)
def _forward_out(q, k, v, out, lse, softmax_scale, causal):
    launch("kjit_attention_forward", q, q, k, v, out, lse, softmax_scale, int(causal))


@op(
    "kjit::attention_backward",
    schema="(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, float softmax_scale, "
    "bool causal, bool deterministic) -> (Tensor, Tensor, Tensor)",
)
def _backward(dout, q, k, v, out, lse, softmax_scale, causal, deterministic):
    return _run_backward("kjit_attention_backward", dout, q, k, v, out, lse, None, softmax_scale, causal, deterministic)


@_backward.register_fake
def _(dout, q, k, v, *_):
    return _new_grads(q, k, v)


@op(
    "kjit::attention_forward_varlen",
    schema="(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
    "Tensor host_cu_seqlens_q, Tensor host_cu_seqlens_k, float softmax_scale, bool causal, bool deterministic) "
    "-> (Tensor, Tensor)",
)
def _forward_varlen(q, k, v, cu_q, cu_k, host_q, host_k, softmax_scale, causal, deterministic):
    return _run_forward("kjit_attention_forward_varlen", q, k, v, (cu_q, cu_k, host_q, host_k), softmax_scale, causal)


@_forward_varlen.register_fake
def _(q, *_):
    return _new_forward_outputs(q, packed=True)


@op(
    "kjit::attention_backward_varlen",
    schema="(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor cu_seqlens_q, "
    "Tensor cu_seqlens_k, Tensor host_cu_seqlens_q, Tensor host_cu_seqlens_k, float softmax_scale, "
    "bool causal, bool deterministic) -> (Tensor, Tensor, Tensor)",
)
def _backward_varlen(dout, q, k, v, out, lse, cu_q, cu_k, host_q, host_k, softmax_scale, causal, deterministic):
    return _run_backward(
        "kjit_attention_backward_varlen",
        dout,
        q,
        k,
        v,
        out,
        lse,
        (cu_q, cu_k, host_q, host_k),
        softmax_scale,
        causal,
        deterministic,
    )


@_backward_varlen.register_fake
def _(dout, q, k, v, *_):
    return _new_grads(q, k, v)


# ---- autograd: the forward ops' backward is kjit's backward ------------------------------------
# The forward ops take the backward's `deterministic` so that it is recorded with them; the
# options that are not tensors travel in ctx. lse is an output for the caller, not
# differentiable (as FlashAttention's).


def _save(ctx, inputs, output):
    out, lse = output
    ctx.mark_non_differentiable(lse)
    tensors, options = inputs[:-3], inputs[-3:]
    ctx.save_for_backward(*tensors, out, lse)
    ctx.softmax_scale, ctx.causal, ctx.deterministic = options


def _forward_grad(ctx, grad_out, _grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = _backward(grad_out.contiguous(), q, k, v, out, lse, ctx.softmax_scale, ctx.causal, ctx.deterministic)
    return dq, dk, dv, None, None, None


def _forward_varlen_grad(ctx, grad_out, _grad_lse):
    q, k, v, cu_q, cu_k, host_q, host_k, out, lse = ctx.saved_tensors
    dq, dk, dv = _backward_varlen(
        grad_out.contiguous(),
        q,
        k,
        v,
        out,
        lse,
        cu_q,
        cu_k,
        host_q,
        host_k,
        ctx.softmax_scale,
        ctx.causal,
        ctx.deterministic,
    )
    return dq, dk, dv, None, None, None, None, None, None, None


torch.library.register_autograd("kjit::attention_forward", _forward_grad, setup_context=_save)
torch.library.register_autograd("kjit::attention_forward_varlen", _forward_varlen_grad, setup_context=_save)


# ---- grouped: several query groups over one shared packed K/V ---------------------------------


def _group_array(dl, q, out, lse, cu_seqlens_q, host_cu_seqlens_q, windows, host_windows, dout=None, dq=None):
    """kjit_attention_group[G] over the per-group lists (DLTensors from dl)."""
    groups = (AttentionGroup * len(q))()
    for g in range(len(q)):
        groups[g] = AttentionGroup(
            dl(q[g], f"groups[{g}].q"),
            dl(out[g], f"groups[{g}].out"),
            dl(lse[g], f"groups[{g}].lse"),
            dl(cu_seqlens_q[g], f"groups[{g}].cu_seqlens_q"),
            host_copy(host_cu_seqlens_q[g], cu_seqlens_q[g], f"groups[{g}].host_cu_seqlens_q"),
            dl(windows[g], f"groups[{g}].windows"),
            host_copy(host_windows[g], windows[g], f"groups[{g}].host_windows"),
            dl(dout[g], f"groups[{g}].dout") if dout else None,
            dl(dq[g], f"groups[{g}].dq") if dq else None,
        )
    return groups


def _keys_args(k, v, cu_seqlens_k, host_cu_seqlens_k):
    """The shared keys' arguments of the grouped entry points."""
    return (
        k,
        v,
        cu_seqlens_k,
        host_copy(host_cu_seqlens_k, cu_seqlens_k, "host_cu_seqlens_k"),
    )


def _check_group_lists(**lists):
    counts = {name: len(items) for name, items in lists.items()}
    if len(set(counts.values())) != 1:
        raise InvalidArgumentError(f"grouped attention: every per-group list needs one entry per group, got {counts}")


@op(
    "kjit::attention_forward_grouped",
    schema="(Tensor[] q, Tensor[] cu_seqlens_q, Tensor[] host_cu_seqlens_q, Tensor[] windows, "
    "Tensor[] host_windows, Tensor k, Tensor v, Tensor cu_seqlens_k, Tensor host_cu_seqlens_k, "
    "float softmax_scale, bool causal) -> (Tensor[], Tensor[])",
)
def _forward_grouped(
    q,
    cu_seqlens_q,
    host_cu_seqlens_q,
    windows,
    host_windows,
    k,
    v,
    cu_seqlens_k,
    host_cu_seqlens_k,
    softmax_scale,
    causal,
):
    _check_group_lists(
        q=q, cu_seqlens_q=cu_seqlens_q, host_cu_seqlens_q=host_cu_seqlens_q, windows=windows, host_windows=host_windows
    )
    outs, lses = zip(*(_new_forward_outputs(qg, packed=True) for qg in q)) if q else ((), ())
    dl = DLArgs()
    groups = _group_array(dl, q, outs, lses, cu_seqlens_q, host_cu_seqlens_q, windows, host_windows)
    keys = _keys_args(k, v, cu_seqlens_k, host_cu_seqlens_k)
    launch("kjit_attention_forward_grouped", k, groups, len(q), *keys, softmax_scale, int(causal))
    return list(outs), list(lses)


@_forward_grouped.register_fake
def _(q, *_):
    outputs = [_new_forward_outputs(qg, packed=True) for qg in q]
    return [o for o, _ in outputs], [lse for _, lse in outputs]


@op(
    "kjit::attention_backward_grouped",
    schema="(Tensor[] dout, Tensor[] q, Tensor[] out, Tensor[] lse, Tensor[] cu_seqlens_q, "
    "Tensor[] host_cu_seqlens_q, Tensor[] windows, Tensor[] host_windows, Tensor k, Tensor v, "
    "Tensor cu_seqlens_k, Tensor host_cu_seqlens_k, float softmax_scale, bool causal) "
    "-> (Tensor[], Tensor, Tensor)",
)
def _backward_grouped(
    dout,
    q,
    out,
    lse,
    cu_seqlens_q,
    host_cu_seqlens_q,
    windows,
    host_windows,
    k,
    v,
    cu_seqlens_k,
    host_cu_seqlens_k,
    softmax_scale,
    causal,
):
    _check_group_lists(
        dout=dout,
        q=q,
        out=out,
        lse=lse,
        cu_seqlens_q=cu_seqlens_q,
        host_cu_seqlens_q=host_cu_seqlens_q,
        windows=windows,
        host_windows=host_windows,
    )
    dq = [empty_like(qg) for qg in q]
    dk, dv = empty_like(k), empty_like(v)
    dl = DLArgs()
    groups = _group_array(dl, q, out, lse, cu_seqlens_q, host_cu_seqlens_q, windows, host_windows, dout, dq)
    size = ctypes.c_size_t()
    call("kjit_attention_backward_grouped_workspace_bytes", groups, len(q), size)
    workspace = torch.empty(size.value, dtype=torch.uint8, device=k.device)
    keys = _keys_args(k, v, cu_seqlens_k, host_cu_seqlens_k)
    launch(
        "kjit_attention_backward_grouped",
        k,
        groups,
        len(q),
        *keys,
        dk,
        dv,
        softmax_scale,
        int(causal),
        workspace.data_ptr(),
        workspace.numel(),
    )
    return dq, dk, dv


@_backward_grouped.register_fake
def _(dout, q, out, lse, cu_seqlens_q, host_cu_seqlens_q, windows, host_windows, k, v, *_):
    return [empty_like(qg) for qg in q], empty_like(k), empty_like(v)


# Autograd of the grouped forward: dq of every group, dk and dv summed over the groups (kjit's
# grouped backward). Saved: each group's q, out, lse and index tensors, then the shared keys'.


def _save_grouped(ctx, inputs, output):
    q, cu_q, host_q, windows, host_windows, k, v, cu_k, host_k, softmax_scale, causal = inputs
    outs, lses = output
    ctx.mark_non_differentiable(*lses)
    ctx.groups = len(q)
    ctx.save_for_backward(*q, *outs, *lses, *cu_q, *host_q, *windows, *host_windows, k, v, cu_k, host_k)
    ctx.softmax_scale, ctx.causal = softmax_scale, causal


def _forward_grouped_grad(ctx, grad_outs, _grad_lses):
    saved, g = ctx.saved_tensors, ctx.groups
    q, outs, lses, cu_q, host_q, windows, host_windows = (list(saved[i * g : (i + 1) * g]) for i in range(7))
    k, v, cu_k, host_k = saved[7 * g :]
    douts = [torch.zeros_like(o) if d is None else d.contiguous() for d, o in zip(grad_outs, outs)]
    dq, dk, dv = _backward_grouped(
        douts, q, outs, lses, cu_q, host_q, windows, host_windows, k, v, cu_k, host_k, ctx.softmax_scale, ctx.causal
    )
    none = [None] * g  # a list input's gradient is a list
    return dq, none, none, none, none, dk, dv, None, None, None, None


torch.library.register_autograd("kjit::attention_forward_grouped", _forward_grouped_grad, setup_context=_save_grouped)


# ---- merge of partial results ------------------------------------------------------------------


@op("kjit::merge_states", schema="(Tensor parts, Tensor parts_lse) -> (Tensor, Tensor)")
def _merge_states(parts: Tensor, parts_lse: Tensor):
    out, out_lse = _new_merge_outputs(parts)
    _merge_states_out.impl(parts, parts_lse, out, out_lse)
    return out, out_lse


def _new_merge_outputs(parts: Tensor):
    """out [T, H, D] and out_lse [T, H] for parts [N, T, H, D] (empty where parts' rank is wrong:
    kjit then refuses parts)."""
    if parts.dim() != 4:
        return parts.new_empty((0,)), parts.new_empty((0,), dtype=torch.float32)
    return parts.new_empty(parts.shape[1:]), parts.new_empty(parts.shape[1:3], dtype=torch.float32)


@_merge_states.register_fake
def _(parts, *_):
    return _new_merge_outputs(parts)


@op(
    "kjit::merge_states_out",
    mutates_args=("out", "out_lse"),
    schema="(Tensor parts, Tensor parts_lse, Tensor(a!) out, Tensor(b!)? out_lse) -> ()",
)
def _merge_states_out(parts, parts_lse, out, out_lse):
    launch("kjit_merge_states", parts, parts, parts_lse, out, out_lse)


# ---- the public functions ----------------------------------------------------------------------


def _scale(softmax_scale: Optional[float]) -> float:
    return 0.0 if softmax_scale is None else float(softmax_scale)  # 0: kjit's 1 / sqrt(D)


def forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
    *,
    out: Optional[Tensor] = None,
    lse: Optional[Tensor] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """(out, lse) of softmax(q k^T scale) v; differentiable in q, k, v (the backward is kjit's,
    bitwise reproducible with `deterministic`). Causal masking is bottom-right aligned.

    With `out` (and optionally `lse`) given, the results are written there and nothing is
    allocated (lse None: not written); such a call records no autograd, so it refuses inputs
    that require grad."""
    scale = _scale(softmax_scale)
    if out is None and lse is None:
        return _forward(q, k, v, scale, causal, deterministic)
    if out is None:
        raise InvalidArgumentError("forward: lse= needs out= too")
    _forward_out(q, k, v, out, lse, scale, causal)
    return out, lse


def forward_varlen(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    host_cu_seqlens_q: Optional[Tensor] = None,
    host_cu_seqlens_k: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Packed sequences: (out [Tq, Hq, D], lse [Hq, Tq]). Without the host copies of cu_seqlens
    this synchronises once to make them."""
    host_q = _host(host_cu_seqlens_q, cu_seqlens_q)
    host_k = (
        host_q if host_cu_seqlens_k is None and cu_seqlens_k is cu_seqlens_q else _host(host_cu_seqlens_k, cu_seqlens_k)
    )
    return _forward_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, host_q, host_k, _scale(softmax_scale), causal, deterministic
    )


def backward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv) of forward() for its inputs, output and lse."""
    return _backward(dout, q, k, v, out, lse, _scale(softmax_scale), causal, deterministic)


def backward_varlen(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cu_seqlens_q: Tensor,
    cu_seqlens_k: Tensor,
    host_cu_seqlens_q: Optional[Tensor] = None,
    host_cu_seqlens_k: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    deterministic: bool = False,
) -> Tuple[Tensor, Tensor, Tensor]:
    host_q = _host(host_cu_seqlens_q, cu_seqlens_q)
    host_k = (
        host_q if host_cu_seqlens_k is None and cu_seqlens_k is cu_seqlens_q else _host(host_cu_seqlens_k, cu_seqlens_k)
    )
    return _backward_varlen(
        dout,
        q,
        k,
        v,
        out,
        lse,
        cu_seqlens_q,
        cu_seqlens_k,
        host_q,
        host_k,
        _scale(softmax_scale),
        causal,
        deterministic,
    )


class QueryGroup:
    """One query group of grouped attention: packed q [Tq, Hq, D] over the shared keys' B
    sequences (cu_seqlens_q int32 [B + 1]), seeing keys [begin, end) of sequence b (windows int32
    [B, 2]); the host copies are made (one synchronisation each) where not given."""

    def __init__(
        self,
        q: Tensor,
        cu_seqlens_q: Tensor,
        windows: Tensor,
        host_cu_seqlens_q: Optional[Tensor] = None,
        host_windows: Optional[Tensor] = None,
    ):
        self.q, self.cu_seqlens_q, self.windows = q, cu_seqlens_q, windows
        self.host_cu_seqlens_q = _host(host_cu_seqlens_q, cu_seqlens_q)
        self.host_windows = _host(host_windows, windows)

    @staticmethod
    def lists(groups: Sequence["QueryGroup"]):
        return (
            [g.q for g in groups],
            [g.cu_seqlens_q for g in groups],
            [g.host_cu_seqlens_q for g in groups],
            [g.windows for g in groups],
            [g.host_windows for g in groups],
        )


def grouped_forward(
    groups: Sequence[QueryGroup],
    k: Tensor,
    v: Tensor,
    cu_seqlens_k: Tensor,
    host_cu_seqlens_k: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
) -> Tuple[List[Tensor], List[Tensor]]:
    """Every group's (out, lse) in one launch; causal masking bottom-right aligned to each window.
    Differentiable in the groups' q, k and v (kjit's grouped backward: dk, dv summed over the
    groups)."""
    return _forward_grouped(
        *QueryGroup.lists(groups),
        k,
        v,
        cu_seqlens_k,
        _host(host_cu_seqlens_k, cu_seqlens_k),
        _scale(softmax_scale),
        causal,
    )


def grouped_backward(
    groups: Sequence[QueryGroup],
    douts: Sequence[Tensor],
    outs: Sequence[Tensor],
    lses: Sequence[Tensor],
    k: Tensor,
    v: Tensor,
    cu_seqlens_k: Tensor,
    host_cu_seqlens_k: Optional[Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
) -> Tuple[List[Tensor], Tensor, Tensor]:
    """(dq per group, dk, dv): overlapping windows sum their contributions to dk and dv."""
    q, cu_q, host_q, windows, host_windows = QueryGroup.lists(groups)
    return _backward_grouped(
        list(douts),
        q,
        list(outs),
        list(lses),
        cu_q,
        host_q,
        windows,
        host_windows,
        k,
        v,
        cu_seqlens_k,
        _host(host_cu_seqlens_k, cu_seqlens_k),
        _scale(softmax_scale),
        causal,
    )


def merge_states(
    parts: Tensor, parts_lse: Tensor, *, out: Optional[Tensor] = None, out_lse: Optional[Tensor] = None
) -> Tuple[Tensor, Optional[Tensor]]:
    """Partial results parts [N, T, H, D] with their lse [N, T, H] merged exactly into
    (out [T, H, D], lse [T, H]); with `out` (and optionally `out_lse`) given, written there."""
    if out is None and out_lse is None:
        return _merge_states(parts, parts_lse)
    if out is None:
        raise InvalidArgumentError("merge_states: out_lse= needs out= too")
    _merge_states_out(parts, parts_lse, out, out_lse)
    return out, out_lse
