"""kjit.moe.MoELayer: a GLM-4.7-Flash-style MoE block (fp32 router with a correction bias, routed
experts through kjit's fused layer with bf16 or FP4 weights, an optional shared expert) as an
nn.Module, with the routing statistics as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InvalidArgumentError
from .ops import (
    GLM_4_7_FLASH,
    Fp4Weights,
    Router,
    balance,
    interleave_gate_up,
    layer,
    layer_fp4,
    quantize_experts_fp4,
    router_topk,
)

_FP4_PARTS = ("codes", "scales", "tensor_scale")


@dataclass
class RoutingStats:
    """One forward's routing: ids and weights [T, k], and balance()'s statistics: counts [E]
    int32, f and p [E], losses [4] = {aux, sequence-wise aux, z-loss, MaxVio}."""

    ids: Tensor
    weights: Tensor
    counts: Tensor
    f: Tensor
    p: Tensor
    losses: Tensor


class SharedExpert(nn.Module):
    """The dense SwiGLU expert every token also goes through."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: torch.dtype, device=None):
        super().__init__()
        make = lambda i, o: nn.Linear(i, o, bias=False, dtype=dtype, device=device)  # noqa: E731
        self.gate_proj, self.up_proj = make(hidden_size, intermediate_size), make(hidden_size, intermediate_size)
        self.down_proj = make(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoELayer(nn.Module):
    """x [T, H] (or [..., H]) -> the routed experts' weighted sum plus the shared expert's output.

    GLM-4.7-Flash: MoELayer(2048, 64, 1536, shared_intermediate_size=1536). Expert weights are
    bf16 (or fp16) parameters gate_up [E, 2 I, H] (gate and up rows interleaved: load torch's
    separate projections with load_experts) and down [E, H, I]; to_fp4("nvfp4" or "mxfp4")
    quantises them in place (per-expert tensor scales). The router, its correction bias and the FP4
    tensor scales stay fp32 through .to()/.half(). Inference only (kjit's fused layer has no
    backward): forward refuses to run where autograd would record it. With track_stats, each
    forward keeps `last_stats` (RoutingStats: the routing again, and balance()'s statistics)."""

    def __init__(
        self,
        hidden_size: int,
        num_experts: int,
        intermediate_size: int,
        router: Router = GLM_4_7_FLASH,
        shared_intermediate_size: Optional[int] = None,
        correction_bias: bool = True,
        dtype: torch.dtype = torch.bfloat16,
        device=None,
        block: int = 0,
        track_stats: bool = False,
    ):
        super().__init__()
        self.router, self.block, self.track_stats = router, block, track_stats
        self.num_experts = num_experts
        self.gate = nn.Linear(hidden_size, num_experts, bias=False, dtype=torch.float32, device=device)
        bias = torch.zeros(num_experts, dtype=torch.float32, device=device) if correction_bias else None
        self.register_buffer("e_score_correction_bias", bias)
        self.gate_up = nn.Parameter(
            torch.empty(num_experts, 2 * intermediate_size, hidden_size, dtype=dtype, device=device)
        )
        self.down = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size, dtype=dtype, device=device))
        nn.init.normal_(self.gate_up, std=hidden_size**-0.5)
        nn.init.normal_(self.down, std=intermediate_size**-0.5)
        self.shared_expert = (
            SharedExpert(hidden_size, shared_intermediate_size, dtype, device) if shared_intermediate_size else None
        )
        self.fp4_format: Optional[str] = None  # after to_fp4(): the experts are FP4 buffers
        self.last_stats: Optional[RoutingStats] = None

    @property
    def fp4(self) -> Optional[Tuple[Fp4Weights, Fp4Weights]]:
        """(gate_up, down) as FP4 weights after to_fp4(), else None."""
        if self.fp4_format is None:
            return None
        return tuple(
            Fp4Weights(self.fp4_format, *(getattr(self, f"{p}_{part}") for part in _FP4_PARTS))
            for p in ("gate_up", "down")
        )

    @torch.no_grad()
    def load_experts(self, gate: Tensor, up: Tensor, down: Tensor) -> None:
        """Loads torch-layout expert weights: gate and up [E, I, H], down [E, H, I]."""
        if self.fp4_format is not None:
            raise InvalidArgumentError("load_experts: the experts are already FP4; load before to_fp4()")
        self.gate_up.copy_(interleave_gate_up(torch.cat([gate, up], dim=1)))
        self.down.copy_(down)

    @torch.no_grad()
    def to_fp4(self, format: str = "nvfp4") -> "MoELayer":
        """Quantises the expert weights to FP4 (on their device, kjit's quantiser) and frees the
        16-bit ones. The FP4 codes, scales and tensor scales become buffers ({gate_up,
        down}_{codes, scales, tensor_scale}): state_dict() then saves the quantised layer."""
        if self.fp4_format is not None:
            raise InvalidArgumentError(f"to_fp4: the experts are already {self.fp4_format}")
        if self.gate_up.dtype != torch.bfloat16:
            raise InvalidArgumentError(
                f"to_fp4: FP4 experts run with bf16 activations, the weights are {self.gate_up.dtype}"
            )
        for name in ("gate_up", "down"):
            weights = quantize_experts_fp4(getattr(self, name), format)
            delattr(self, name)
            for part in _FP4_PARTS:
                self.register_buffer(f"{name}_{part}", getattr(weights, part))
        self.fp4_format = format
        return self

    def _apply(self, fn, recurse=True):
        # .half() or .to(torch.bfloat16) cast every floating tensor; kjit reads the router's
        # logits, its bias and the FP4 tensor scales as fp32, so those stay fp32 (moved only).
        names = ("e_score_correction_bias", "gate_up_tensor_scale", "down_tensor_scale")
        fp32 = {id(self.gate.weight), *(id(getattr(self, n)) for n in names if getattr(self, n, None) is not None)}

        def keeping_fp32(t):
            moved = fn(t)
            return moved.float() if id(t) in fp32 and moved.is_floating_point() else moved

        return super()._apply(keeping_fp32, recurse)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            raise InvalidArgumentError(
                "MoELayer is inference only (kjit's fused layer has no backward): call it under "
                "torch.no_grad() or torch.inference_mode(), or freeze it with requires_grad_(False)"
            )
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits = self.gate(x.float())
        bias = self.e_score_correction_bias
        shared = self.shared_expert(x) if self.shared_expert is not None else None
        fp4 = self.fp4
        if fp4 is None:
            out = layer(x, logits, self.gate_up, self.down, self.router, bias, shared, self.block)
        else:
            out = layer_fp4(x, logits, *fp4, self.router, bias, shared, self.block)
        if self.track_stats:
            self.last_stats = self.routing_stats(logits)
        return out.reshape(shape)

    def routing_stats(self, logits: Tensor) -> RoutingStats:
        """The routing the layer makes of router logits [T, E], with its statistics."""
        ids, weights = router_topk(logits, self.router, self.e_score_correction_bias)
        if self.router.sigmoid:  # DeepSeek-V3's balance loss normalises a token's scores
            scores = torch.sigmoid(logits)
            probs = scores / scores.sum(dim=-1, keepdim=True)
        else:
            probs = torch.softmax(logits, dim=-1)
        counts, f, p, losses = balance(ids, probs, logits)
        return RoutingStats(ids, weights, counts, f, p, losses)
