"""kjit.moe.MoELayer: a GLM-4.7-Flash-style MoE block (fp32 router with a correction bias, routed
experts through kjit's fused layer with bf16 or FP4 weights, an optional shared expert) as an
nn.Module, with the routing statistics as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

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
    quantises them in place (per-expert tensor scales). Inference only: kjit's fused layer has
    no backward. With track_stats, each forward keeps `last_stats` (RoutingStats)."""

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
        self.fp4: Optional[tuple] = None  # (gate_up, down) Fp4Weights after to_fp4()
        self.last_stats: Optional[RoutingStats] = None

    @torch.no_grad()
    def load_experts(self, gate: Tensor, up: Tensor, down: Tensor) -> None:
        """Loads torch-layout expert weights: gate and up [E, I, H], down [E, H, I]."""
        if self.fp4 is not None:
            raise InvalidArgumentError("load_experts: the experts are already FP4; load before to_fp4()")
        self.gate_up.copy_(interleave_gate_up(torch.cat([gate, up], dim=1)))
        self.down.copy_(down)

    @torch.no_grad()
    def to_fp4(self, format: str = "nvfp4") -> "MoELayer":
        """Quantises the expert weights to FP4 (on their device, kjit's quantiser) and frees the
        16-bit ones."""
        if self.gate_up.dtype != torch.bfloat16:
            raise InvalidArgumentError(
                f"to_fp4: FP4 experts run with bf16 activations, the weights are {self.gate_up.dtype}"
            )
        self.fp4 = (quantize_experts_fp4(self.gate_up, format), quantize_experts_fp4(self.down, format))
        del self.gate_up, self.down
        return self

    def _apply(self, fn, recurse=True):
        # .to()/.cuda() move the FP4 tensors with the parameters.
        super()._apply(fn, recurse)
        if self.fp4 is not None:
            self.fp4 = tuple(
                Fp4Weights(w.format, fn(w.codes), fn(w.scales), None if w.tensor_scale is None else fn(w.tensor_scale))
                for w in self.fp4
            )
        return self

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        logits = self.gate(x.float())
        bias = self.e_score_correction_bias
        shared = self.shared_expert(x) if self.shared_expert is not None else None
        if self.fp4 is None:
            out = layer(x, logits, self.gate_up, self.down, self.router, bias, shared, self.block)
        else:
            out = layer_fp4(x, logits, *self.fp4, self.router, bias, shared, self.block)
        if self.track_stats:
            self.last_stats = self.routing_stats(logits)
        return out.reshape(shape)

    def routing_stats(self, logits: Tensor) -> RoutingStats:
        """The routing the layer makes of router logits [T, E], with its statistics."""
        ids, weights = router_topk(logits, self.router, self.e_score_correction_bias)
        probs = torch.sigmoid(logits) if self.router.sigmoid else torch.softmax(logits, dim=-1)
        counts, f, p, losses = balance(ids, probs, logits)
        return RoutingStats(ids, weights, counts, f, p, losses)
