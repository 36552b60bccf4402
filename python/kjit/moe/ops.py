"""The MoE ops (kjit/moe.hpp) as torch custom ops: router top-k, the dispatch layout (align), the
tokens' trip into it and back (permute, unpermute), the experts' grouped GEMM with 16-bit or FP4
weights over the contiguous or the masked layout, FP4 quantisation, load statistics with the
balancing losses, and the fused layer. kjit/moe.hpp has every layout; the shapes of the outputs
depend only on the inputs' shapes, so torch.compile traces them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .._launch import empty_like, launch, op
from .._library import RouterOptions
from ..errors import InvalidArgumentError

__all__ = [
    "Router",
    "GLM_4_7_FLASH",
    "DEEPSEEK_V3",
    "router_topk",
    "align_capacity",
    "align",
    "permute",
    "unpermute",
    "grouped_gemm",
    "grouped_gemm_masked",
    "expert_gemm_fp4",
    "expert_gemm_fp4_masked",
    "quantize_fp4",
    "quantize_experts_fp4",
    "balance",
    "layer",
    "layer_fp4",
    "Fp4Weights",
    "interleave_gate_up",
]


@dataclass(frozen=True)
class Router:
    """The router's rules (kjit::moe::RouterOptions)."""

    top_k: int
    sigmoid: bool = False  # False: softmax over the experts
    groups: int = 1  # DeepSeek's grouped top-k: a group's score as vLLM's grouped_topk
    topk_groups: int = 1
    renormalize: bool = False  # weights divided by their sum
    scaling: float = 1.0  # then multiplied by this (routed_scaling_factor)

    def op_args(self) -> tuple:
        """The fields in the ops' schema order (top_k ... scaling)."""
        return (self.top_k, self.sigmoid, self.groups, self.topk_groups, self.renormalize, self.scaling)

    def c_options(self) -> RouterOptions:
        return RouterOptions(
            int(self.sigmoid), self.top_k, self.groups, self.topk_groups, int(self.renormalize), self.scaling
        )


@functools.lru_cache(maxsize=64)
def _options(top_k, sigmoid, groups, topk_groups, renormalize, scaling) -> RouterOptions:
    """The C struct of a router's fields in the ops' schema order, made once per router (kjit
    only reads it)."""
    return Router(top_k, sigmoid, groups, topk_groups, renormalize, scaling).c_options()


GLM_4_7_FLASH = Router(top_k=4, sigmoid=True, renormalize=True, scaling=1.8)
DEEPSEEK_V3 = Router(top_k=8, sigmoid=True, groups=8, topk_groups=4, renormalize=True, scaling=2.5)

_EPILOGUES = {"plain": 0, "swiglu": 1, "routing_weights": 2}
_FORMATS = {"nvfp4": 0, "mxfp4": 1}
_SCALE_BLOCK = {"nvfp4": 16, "mxfp4": 32}


def _choice(table: dict, value: str, what: str) -> int:
    try:
        return table[value]
    except KeyError:
        raise InvalidArgumentError(f"{what} must be one of {sorted(table)}, got {value!r}") from None


def _rows(t: Tensor, dim: int = 0):
    """t's size along `dim`, 0 where t has no such dim (kjit then refuses t's rank)."""
    return t.shape[dim] if t.dim() > dim else 0


def _gemm_columns(w_rows, epilogue: str):
    return w_rows // 2 if epilogue == "swiglu" else w_rows


# ---- routing -----------------------------------------------------------------------------------


@op(
    "kjit::moe_router_topk",
    schema="(Tensor logits, Tensor? bias, int top_k, bool sigmoid, int groups, int topk_groups, bool renormalize, "
    "float scaling) -> (Tensor, Tensor)",
)
def _router_topk(logits, bias, top_k, sigmoid, groups, topk_groups, renormalize, scaling):
    ids, weights = _new_router_outputs(logits, top_k)
    _router_topk_out.impl(logits, bias, ids, weights, top_k, sigmoid, groups, topk_groups, renormalize, scaling)
    return ids, weights


def _new_router_outputs(logits: Tensor, top_k: int):
    shape = (_rows(logits), max(top_k, 0))
    return logits.new_empty(shape, dtype=torch.int32), logits.new_empty(shape, dtype=torch.float32)


@_router_topk.register_fake
def _(logits, bias, top_k, *_):
    return _new_router_outputs(logits, top_k)


@op(
    "kjit::moe_router_topk_out",
    mutates_args=("ids", "weights"),
    schema="(Tensor logits, Tensor? bias, Tensor(a!) ids, Tensor(b!) weights, int top_k, bool sigmoid, int groups, "
    "int topk_groups, bool renormalize, float scaling) -> ()",
)
def _router_topk_out(logits, bias, ids, weights, *router):
    launch("kjit_moe_router_topk", logits, logits, bias, ids, weights, _options(*router))


def align_capacity(pairs, experts: int, block: int):
    """The rows of align's layout for `pairs` routed pairs (kjit_moe_align_capacity; written here
    in torch's integer arithmetic so that symbolic shapes trace through it)."""
    if block <= 0 or experts <= 0:
        return 0
    m = torch.sym_min(experts, pairs)
    return torch.sym_max(0, (m + (pairs - m) // block) * block)


@op(
    "kjit::moe_align",
    schema="(Tensor ids, int experts, int block) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def _align(ids, experts, block):
    sorted_, block_expert, counts, offsets, invalid = _new_align_outputs(ids, experts, block)
    launch(
        "kjit_moe_align",
        ids,
        ids,
        experts,
        block,
        sorted_,
        block_expert,
        counts,
        offsets,
        invalid,
    )
    return sorted_, block_expert, counts, offsets, invalid


def _new_align_outputs(ids: Tensor, experts: int, block: int):
    rows = align_capacity(ids.numel(), experts, block)
    blocks = rows // block if block > 0 else 0
    new = lambda n: ids.new_empty((n,), dtype=torch.int32)  # noqa: E731
    return new(rows), new(blocks), new(max(experts, 0)), new(max(experts + 1, 0)), new(1)


@_align.register_fake
def _(ids, experts, block):
    return _new_align_outputs(ids, experts, block)


@op("kjit::moe_permute", schema="(Tensor x, Tensor sorted, int top_k) -> (Tensor, Tensor)")
def _permute(x, sorted, top_k):
    x_sorted, positions = _new_permute_outputs(x, sorted, top_k)
    launch(
        "kjit_moe_permute",
        x,
        x,
        sorted,
        top_k,
        x_sorted,
        positions,
    )
    return x_sorted, positions


def _new_permute_outputs(x: Tensor, sorted: Tensor, top_k: int):
    return (x.new_empty((sorted.numel(), _rows(x, 1))), x.new_empty((_rows(x) * max(top_k, 0),), dtype=torch.int32))


@_permute.register_fake
def _(x, sorted, top_k):
    return _new_permute_outputs(x, sorted, top_k)


@op(
    "kjit::moe_unpermute",
    schema="(Tensor y_sorted, Tensor positions, int top_k, Tensor? weights, Tensor? shared) -> Tensor",
)
def _unpermute(y_sorted, positions, top_k, weights, shared):
    out = _new_unpermute_output(y_sorted, positions, top_k)
    launch(
        "kjit_moe_unpermute",
        y_sorted,
        y_sorted,
        positions,
        top_k,
        weights,
        shared,
        out,
    )
    return out


def _new_unpermute_output(y_sorted: Tensor, positions: Tensor, top_k: int):
    tokens = positions.numel() // top_k if top_k > 0 else 0
    return y_sorted.new_empty((tokens, _rows(y_sorted, 1)))


@_unpermute.register_fake
def _(y_sorted, positions, top_k, *_):
    return _new_unpermute_output(y_sorted, positions, top_k)


# ---- the experts' GEMM -------------------------------------------------------------------------


@op(
    "kjit::moe_grouped_gemm",
    schema="(Tensor x_sorted, Tensor block_expert, int block, Tensor w, str epilogue, Tensor? sorted, "
    "Tensor? weights) -> Tensor",
)
def _grouped_gemm(x_sorted, block_expert, block, w, epilogue, sorted, weights):
    kind = _choice(_EPILOGUES, epilogue, "epilogue")
    y = x_sorted.new_empty((_rows(x_sorted), _gemm_columns(_rows(w, 1), epilogue)))
    launch(
        "kjit_moe_grouped_gemm",
        x_sorted,
        x_sorted,
        block_expert,
        block,
        w,
        y,
        kind,
        sorted,
        weights,
    )
    return y


@_grouped_gemm.register_fake
def _(x_sorted, block_expert, block, w, epilogue, *_):
    return x_sorted.new_empty((_rows(x_sorted), _gemm_columns(_rows(w, 1), epilogue)))


@op(
    "kjit::moe_expert_gemm_fp4",
    schema="(Tensor x_sorted, Tensor block_expert, int block, str format, Tensor codes, Tensor scales, "
    "Tensor? tensor_scale, str epilogue, Tensor? sorted, Tensor? weights) -> Tensor",
)
def _expert_gemm_fp4(x_sorted, block_expert, block, format, codes, scales, tensor_scale, epilogue, sorted, weights):
    kind, fmt = _choice(_EPILOGUES, epilogue, "epilogue"), _choice(_FORMATS, format, "format")
    y = x_sorted.new_empty((_rows(x_sorted), _gemm_columns(_rows(codes, 1), epilogue)))
    launch(
        "kjit_moe_expert_gemm_fp4",
        x_sorted,
        x_sorted,
        block_expert,
        block,
        fmt,
        codes,
        scales,
        tensor_scale,
        y,
        kind,
        sorted,
        weights,
    )
    return y


@_expert_gemm_fp4.register_fake
def _(x_sorted, block_expert, block, format, codes, scales, tensor_scale, epilogue, *_):
    return x_sorted.new_empty((_rows(x_sorted), _gemm_columns(_rows(codes, 1), epilogue)))


def _new_masked_output(x: Tensor, w_rows, epilogue: str):
    return x.new_empty((_rows(x), _rows(x, 1), _gemm_columns(w_rows, epilogue)))


@op(
    "kjit::moe_grouped_gemm_masked",
    schema="(Tensor x, Tensor masked_m, int expected_m, Tensor w, str epilogue) -> Tensor",
)
def _grouped_gemm_masked(x, masked_m, expected_m, w, epilogue):
    kind = _choice(_EPILOGUES, epilogue, "epilogue")
    y = _new_masked_output(x, _rows(w, 1), epilogue)
    launch(
        "kjit_moe_grouped_gemm_masked",
        x,
        x,
        masked_m,
        expected_m,
        w,
        y,
        kind,
    )
    return y


@_grouped_gemm_masked.register_fake
def _(x, masked_m, expected_m, w, epilogue):
    return _new_masked_output(x, _rows(w, 1), epilogue)


@op(
    "kjit::moe_expert_gemm_fp4_masked",
    schema="(Tensor x, Tensor masked_m, int expected_m, str format, Tensor codes, Tensor scales, "
    "Tensor? tensor_scale, str epilogue) -> Tensor",
)
def _expert_gemm_fp4_masked(x, masked_m, expected_m, format, codes, scales, tensor_scale, epilogue):
    kind, fmt = _choice(_EPILOGUES, epilogue, "epilogue"), _choice(_FORMATS, format, "format")
    y = _new_masked_output(x, _rows(codes, 1), epilogue)
    launch(
        "kjit_moe_expert_gemm_fp4_masked",
        x,
        x,
        masked_m,
        expected_m,
        fmt,
        codes,
        scales,
        tensor_scale,
        y,
        kind,
    )
    return y


@_expert_gemm_fp4_masked.register_fake
def _(x, masked_m, expected_m, format, codes, scales, tensor_scale, epilogue):
    return _new_masked_output(x, _rows(codes, 1), epilogue)


# ---- FP4 weights -------------------------------------------------------------------------------


@op("kjit::moe_quantize_fp4", schema="(Tensor w, str format) -> (Tensor, Tensor, Tensor)")
def _quantize_fp4(w, format):
    fmt = _choice(_FORMATS, format, "format")
    codes, scales, tensor_scale = _new_quantize_outputs(w, format)
    launch(
        "kjit_moe_quantize_fp4",
        w,
        w,
        fmt,
        codes,
        scales,
        tensor_scale,
    )
    return codes, scales, tensor_scale


def _new_quantize_outputs(w: Tensor, format: str):
    rows, columns = _rows(w), _rows(w, 1)
    block = _SCALE_BLOCK.get(format, 16)
    return (
        w.new_empty((rows, columns // 2), dtype=torch.uint8),
        w.new_empty((rows, columns // block), dtype=torch.uint8),
        w.new_empty((1,), dtype=torch.float32),
    )


@_quantize_fp4.register_fake
def _(w, format):
    return _new_quantize_outputs(w, format)


# ---- statistics --------------------------------------------------------------------------------


@op(
    "kjit::moe_balance",
    mutates_args=("bias",),
    schema="(Tensor ids, Tensor probs, Tensor? logits, Tensor? cu_seqlens, int max_seqlen, Tensor(a!)? bias, "
    "float aux_coeff, float z_coeff, float bias_rate) -> (Tensor, Tensor, Tensor, Tensor)",
)
def _balance(ids, probs, logits, cu_seqlens, max_seqlen, bias, aux_coeff, z_coeff, bias_rate):
    counts, f, p, losses = _new_balance_outputs(probs)
    launch(
        "kjit_moe_balance",
        ids,
        ids,
        probs,
        logits,
        cu_seqlens,
        max_seqlen,
        bias,
        aux_coeff,
        z_coeff,
        bias_rate,
        counts,
        f,
        p,
        losses,
    )
    return counts, f, p, losses


def _new_balance_outputs(probs: Tensor):
    experts = _rows(probs, 1)
    return (
        probs.new_empty((experts,), dtype=torch.int32),
        probs.new_empty((experts,), dtype=torch.float32),
        probs.new_empty((experts,), dtype=torch.float32),
        probs.new_empty((4,), dtype=torch.float32),
    )


@_balance.register_fake
def _(ids, probs, *_):
    return _new_balance_outputs(probs)


# ---- the fused layer ---------------------------------------------------------------------------


@op(
    "kjit::moe_layer",
    schema="(Tensor x, Tensor router_logits, Tensor gate_up, Tensor down, Tensor? router_bias, Tensor? shared, "
    "int top_k, bool sigmoid, int groups, int topk_groups, bool renormalize, float scaling, int block) -> Tensor",
)
def _layer(
    x,
    router_logits,
    gate_up,
    down,
    router_bias,
    shared,
    top_k,
    sigmoid,
    groups,
    topk_groups,
    renormalize,
    scaling,
    block,
):
    out = empty_like(x)
    router = (top_k, sigmoid, groups, topk_groups, renormalize, scaling)
    _layer_out.impl(x, router_logits, gate_up, down, router_bias, shared, out, *router, block)
    return out


@_layer.register_fake
def _(x, *_):
    return empty_like(x)


@op(
    "kjit::moe_layer_out",
    mutates_args=("out",),
    schema="(Tensor x, Tensor router_logits, Tensor gate_up, Tensor down, Tensor? router_bias, Tensor? shared, "
    "Tensor(a!) out, int top_k, bool sigmoid, int groups, int topk_groups, bool renormalize, float scaling, "
    "int block) -> ()",
)
def _layer_out(x, router_logits, gate_up, down, router_bias, shared, out, *router_and_block):
    *router, block = router_and_block  # top_k ... scaling, then block
    options = _options(*router)
    launch("kjit_moe_layer", x, x, router_logits, gate_up, down, router_bias, shared, options, block, out)


@op(
    "kjit::moe_layer_fp4",
    schema="(Tensor x, Tensor router_logits, str format, Tensor gate_up_codes, Tensor gate_up_scales, "
    "Tensor? gate_up_tensor_scale, Tensor down_codes, Tensor down_scales, Tensor? down_tensor_scale, "
    "Tensor? router_bias, Tensor? shared, int top_k, bool sigmoid, int groups, int topk_groups, bool renormalize, "
    "float scaling, int block) -> Tensor",
)
def _layer_fp4(
    x,
    router_logits,
    format,
    gate_up_codes,
    gate_up_scales,
    gate_up_tensor_scale,
    down_codes,
    down_scales,
    down_tensor_scale,
    router_bias,
    shared,
    top_k,
    sigmoid,
    groups,
    topk_groups,
    renormalize,
    scaling,
    block,
):
    fmt = _choice(_FORMATS, format, "format")
    out = empty_like(x)
    options = _options(top_k, sigmoid, groups, topk_groups, renormalize, scaling)
    weights = (gate_up_codes, gate_up_scales, gate_up_tensor_scale, down_codes, down_scales, down_tensor_scale)
    launch("kjit_moe_layer_fp4", x, x, router_logits, fmt, *weights, router_bias, shared, options, block, out)
    return out


@_layer_fp4.register_fake
def _(x, *_):
    return empty_like(x)


# ---- the public functions ----------------------------------------------------------------------


def router_topk(
    logits: Tensor,
    router: Router,
    bias: Optional[Tensor] = None,
    *,
    out: Optional[Tuple[Tensor, Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    """(ids [T, k] int32, weights [T, k] fp32) of logits [T, E]; bias [E] fp32 steers the choice
    only (DeepSeek-V3's and GLM's e_score_correction_bias). With `out` = (ids, weights) given,
    written there."""
    if out is None:
        return _router_topk(logits, bias, *router.op_args())
    ids, weights = out
    _router_topk_out(logits, bias, ids, weights, *router.op_args())
    return ids, weights


def align(ids: Tensor, experts: int, block: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(sorted, block_expert, counts, offsets, invalid): the routed pairs grouped by expert, each
    expert's run padded to whole blocks (vLLM's moe_align_block_size); sorted holds
    align_capacity(ids.numel(), experts, block) rows."""
    return _align(ids, experts, block)


def permute(x: Tensor, sorted: Tensor, top_k: int) -> Tuple[Tensor, Tensor]:
    """(x_sorted [rows, D], positions [T k]): the tokens in align's layout."""
    return _permute(x, sorted, top_k)


def unpermute(
    y_sorted: Tensor, positions: Tensor, top_k: int, weights: Optional[Tensor] = None, shared: Optional[Tensor] = None
) -> Tensor:
    """out [T, D] = shared + sum_j weights[t, j] y_sorted[positions[t k + j]] (weights None: 1)."""
    return _unpermute(y_sorted, positions, top_k, weights, shared)


def grouped_gemm(
    x_sorted: Tensor,
    block_expert: Tensor,
    block: int,
    w: Tensor,
    epilogue: str = "plain",
    sorted: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
) -> Tensor:
    """y [rows, N] (N / 2 with "swiglu") = x_sorted w[e]^T per block of align's layout; epilogue
    "plain", "swiglu" (w's rows interleave gate and up) or "routing_weights" (needs sorted and
    weights)."""
    return _grouped_gemm(x_sorted, block_expert, block, w, epilogue, sorted, weights)


def grouped_gemm_masked(x: Tensor, masked_m: Tensor, w: Tensor, epilogue: str = "plain", expected_m: int = 0) -> Tensor:
    """y [E, M, N] over the masked layout x [E, M, K], masked_m [E] int32 on the device."""
    return _grouped_gemm_masked(x, masked_m, expected_m, w, epilogue)


@dataclass
class Fp4Weights:
    """FP4 expert weights (kjit::moe::Fp4Weights): codes [E, N, K / 2] uint8, scales [E, N, K /
    block] uint8, tensor_scale fp32 [E] (NVFP4; None for MXFP4)."""

    format: str
    codes: Tensor
    scales: Tensor
    tensor_scale: Optional[Tensor]

    def tensors(self) -> tuple:
        """(codes, scales, tensor_scale), the ops' order."""
        return (self.codes, self.scales, self.tensor_scale)


def expert_gemm_fp4(
    x_sorted: Tensor,
    block_expert: Tensor,
    block: int,
    w: Fp4Weights,
    epilogue: str = "plain",
    sorted: Optional[Tensor] = None,
    weights: Optional[Tensor] = None,
) -> Tensor:
    """grouped_gemm with FP4 weights (bf16 x_sorted and y)."""
    return _expert_gemm_fp4(x_sorted, block_expert, block, w.format, *w.tensors(), epilogue, sorted, weights)


def expert_gemm_fp4_masked(
    x: Tensor, masked_m: Tensor, w: Fp4Weights, epilogue: str = "plain", expected_m: int = 0
) -> Tensor:
    return _expert_gemm_fp4_masked(x, masked_m, expected_m, w.format, *w.tensors(), epilogue)


def quantize_fp4(w: Tensor, format: str = "nvfp4") -> Tuple[Tensor, Tensor, Tensor]:
    """(codes, scales, tensor_scale [1]) of w [R, C] bf16/fp16: one tensor scale for all of w."""
    return _quantize_fp4(w, format)


def quantize_experts_fp4(w: Tensor, format: str = "nvfp4") -> Fp4Weights:
    """Expert weights w [E, N, K] to FP4 with a tensor scale per expert (NVFP4)."""
    if w.dim() != 3:
        raise InvalidArgumentError(f"w must be [E, N, K] expert weights, got shape {list(w.shape)}")
    parts = [quantize_fp4(w[e], format) for e in range(w.shape[0])]
    codes, scales, tensor_scale = (torch.stack(p) for p in zip(*parts))
    return Fp4Weights(format, codes, scales, tensor_scale.reshape(-1) if format == "nvfp4" else None)


def balance(
    ids: Tensor,
    probs: Tensor,
    logits: Optional[Tensor] = None,
    cu_seqlens: Optional[Tensor] = None,
    max_seqlen: int = 0,
    bias: Optional[Tensor] = None,
    aux_coeff: float = 1.0,
    z_coeff: float = 1.0,
    bias_rate: float = 1e-3,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(counts [E] int32, f [E], p [E], losses [4]): load statistics and the balancing losses
    {aux, sequence-wise aux, z-loss, MaxVio} (kjit/moe.hpp); bias [E] fp32, when given, takes
    DeepSeek-V3's loss-free update in place."""
    return _balance(ids, probs, logits, cu_seqlens, max_seqlen, bias, aux_coeff, z_coeff, bias_rate)


def layer(
    x: Tensor,
    router_logits: Tensor,
    gate_up: Tensor,
    down: Tensor,
    router: Router,
    router_bias: Optional[Tensor] = None,
    shared: Optional[Tensor] = None,
    block: int = 0,
    *,
    out: Optional[Tensor] = None,
) -> Tensor:
    """The fused MoE layer (kjit::moe::layer): gate_up [E, 2 I, H] with gate and up rows
    interleaved (interleave_gate_up makes it from torch's w13), down [E, H, I]. With `out` [T, H]
    given, written there."""
    if out is None:
        return _layer(x, router_logits, gate_up, down, router_bias, shared, *router.op_args(), block)
    _layer_out(x, router_logits, gate_up, down, router_bias, shared, out, *router.op_args(), block)
    return out


def layer_fp4(
    x: Tensor,
    router_logits: Tensor,
    gate_up: Fp4Weights,
    down: Fp4Weights,
    router: Router,
    router_bias: Optional[Tensor] = None,
    shared: Optional[Tensor] = None,
    block: int = 0,
) -> Tensor:
    """The fused layer with FP4 experts (one format for both projections)."""
    if gate_up.format != down.format:
        raise InvalidArgumentError(
            f"gate_up and down must share one FP4 format, got {gate_up.format} and {down.format}"
        )
    return _layer_fp4(
        x,
        router_logits,
        gate_up.format,
        *gate_up.tensors(),
        *down.tensors(),
        router_bias,
        shared,
        *router.op_args(),
        block,
    )


def interleave_gate_up(w13: Tensor) -> Tensor:
    """torch's w13 = cat([gate, up], 1) of [E, 2 I, H] as kjit's gate_up (row 2c gate c, 2c + 1
    up c)."""
    experts, rows, hidden = w13.shape
    return w13.view(experts, 2, rows // 2, hidden).transpose(1, 2).reshape(experts, rows, hidden).contiguous()
