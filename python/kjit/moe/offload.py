"""kjit.moe.OffloadedMoE: a stack of MoE layers whose experts stay in page-locked host memory
(kjit/expert_offload.hpp through the C ABI's kjit_moe_offload_*). Each layer keeps a cache of GPU
slots; a layer call routes on the GPU, loads the experts it misses on a stream of its own and
prefetches what the next layer is expected to need. The outputs are those of kjit.moe.layer with
every expert on the GPU, bit for bit."""

from __future__ import annotations

import ctypes
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._dlpack import DLArgs
from .._launch import launch
from .._library import call, library
from ..errors import InvalidArgumentError
from .ops import _FORMATS, GLM_4_7_FLASH, Fp4Weights, Router, _choice

_POLICIES = {"lru": 0, "lfu": 1}
_PREDICTORS = {"frequency": 0, "previous-token": 1, "cross-layer": 2}


class OffloadOptions(ctypes.Structure):
    """kjit_moe_offload_options."""

    _fields_ = [
        ("policy", ctypes.c_int),
        ("slots", ctypes.c_int),
        ("prefetch", ctypes.c_int),
        ("predictor", ctypes.c_int),
        ("history", ctypes.c_int64),
        ("pinned", ctypes.c_void_p),
        ("pinned_count", ctypes.c_int),
    ]


class OffloadStats(ctypes.Structure):
    """kjit_moe_offload_stats."""

    _fields_ = [
        (name, ctypes.c_int64)
        for name in (
            "tokens",
            "hits",
            "misses",
            "prefetches",
            "prefetch_hits",
            "prefetches_wasted",
            "bytes_on_demand",
            "bytes_prefetched",
        )
    ] + [("stall_ms", ctypes.c_double), ("copy_ms", ctypes.c_double)]


class OffloadedMoE:
    """Experts per layer in page-locked host memory (tensor.pin_memory()): gate_up [E, 2 I, H]
    with gate and up rows interleaved and down [E, H, I] as kjit.moe.layer takes them, or
    Fp4Weights per projection (codes and scales on the host; a per-expert tensor scale on the
    host, one for all on the GPU). router_bias: per layer a GPU fp32 [E] or None.

    slots: GPU slots a layer (top_k to E); policy "lru" or "lfu"; pinned: per layer the experts
    kept resident; prefetch: each token's likeliest experts at the next layer brought in after a
    layer routes (0: loads on demand only), by `predictor` ("cross-layer", "previous-token",
    "frequency"); history: records a layer the routing history keeps.

    layer(i, x, router_logits) runs layer i (in order each step) on torch's current stream;
    stats() gives the cache's and the loader's counts; write_history(path) a routing trace for
    `kjit moe analyze`. close() (or the garbage collector) waits for the stack's work and frees
    its GPU memory; the host weights must outlive it."""

    def __init__(
        self,
        gate_up: Sequence[Union[Tensor, Fp4Weights]],
        down: Sequence[Union[Tensor, Fp4Weights]],
        *,
        slots: int,
        router: Router = GLM_4_7_FLASH,
        router_bias: Optional[Sequence[Optional[Tensor]]] = None,
        policy: str = "lru",
        prefetch: int = 0,
        predictor: str = "cross-layer",
        history: int = 4096,
        pinned: Optional[Sequence[Sequence[int]]] = None,
        block: int = 0,
    ):
        self._handle = None
        layers = len(gate_up)
        if layers == 0 or len(down) != layers or (router_bias is not None and len(router_bias) != layers):
            raise InvalidArgumentError(
                f"gate_up, down (and router_bias) must hold one entry a layer, got {layers}, {len(down)}"
                f"{'' if router_bias is None else f' and {len(router_bias)}'}"
            )
        counts = {len(p) for p in pinned} if pinned else {0}
        if len(counts) != 1 or (pinned and len(pinned) != layers):
            raise InvalidArgumentError("pinned must name as many experts for every layer, one list a layer")
        self._pinned = (ctypes.c_int * sum(len(p) for p in pinned))(*[e for p in pinned for e in p]) if pinned else None
        options = OffloadOptions(
            _choice(_POLICIES, policy, "policy"),
            slots,
            prefetch,
            _choice(_PREDICTORS, predictor, "predictor"),
            history,
            ctypes.cast(self._pinned, ctypes.c_void_p) if pinned else None,
            counts.pop(),
        )
        self._weights = (list(gate_up), list(down), list(router_bias) if router_bias else None)
        self.layers, self.router = layers, router
        handle = ctypes.c_void_p()
        args = DLArgs()
        array = lambda ts: (ctypes.c_void_p * layers)(*ts)  # noqa: E731
        biases = (
            None if router_bias is None else array([args(b, f"router_bias[{i}]") for i, b in enumerate(router_bias)])
        )
        fp4 = isinstance(gate_up[0], Fp4Weights)
        if any(isinstance(w, Fp4Weights) != fp4 for w in (*gate_up, *down)):
            raise InvalidArgumentError("gate_up and down must be all Fp4Weights or all tensors")
        if not fp4:
            call(
                "kjit_moe_offload_create",
                layers,
                array([args(w, f"gate_up[{i}]") for i, w in enumerate(gate_up)]),
                array([args(w, f"down[{i}]") for i, w in enumerate(down)]),
                biases,
                router.c_options(),
                block,
                options,
                handle,
            )
        else:
            parts = {}
            for name, ws in (("gate_up", gate_up), ("down", down)):
                for part in ("codes", "scales", "tensor_scale"):
                    parts[name, part] = array([args(getattr(w, part), f"{name}[{i}] {part}") for i, w in enumerate(ws)])
            call(
                "kjit_moe_offload_create_fp4",
                layers,
                _choice(_FORMATS, gate_up[0].format, "format"),
                parts["gate_up", "codes"],
                parts["gate_up", "scales"],
                parts["gate_up", "tensor_scale"],
                parts["down", "codes"],
                parts["down", "scales"],
                parts["down", "tensor_scale"],
                biases,
                router.c_options(),
                block,
                options,
                handle,
            )
        self._handle = handle.value

    def _live(self):
        if self._handle is None:
            raise InvalidArgumentError("the offloaded stack is closed")
        return self._handle

    def layer(
        self,
        index: int,
        x: Tensor,
        router_logits: Tensor,
        shared: Optional[Tensor] = None,
        sequences: Optional[Tensor] = None,
    ) -> Tensor:
        """Layer `index` on x [T, H] with the router's logits [T, E] (x's router projection),
        adding `shared` [T, H]; sequences: each token's sequence id (int64 or int32 on the host,
        the predictors' key; None: token t is sequence t)."""
        out = torch.empty_like(x)
        ids = None
        if sequences is not None:  # kjit reads T uint32 ids
            ids = sequences.to("cpu", torch.int64).reshape(-1)
            if ids.numel() != x.shape[0] or (ids.numel() and (ids.min() < 0 or ids.max() >= 2**31)):
                raise InvalidArgumentError(
                    f"sequences must hold one id in 0..2^31-1 per token ({x.shape[0]}), got {ids.numel()}"
                )
            ids = ids.to(torch.int32).contiguous()  # the same bits as uint32 below 2^31
        launch(
            "kjit_moe_offload_layer",
            x,
            self._live(),
            index,
            x,
            router_logits,
            shared,
            out,
            None if ids is None else ids.data_ptr(),
        )
        return out

    def prefetch_from_logits(self, index: int, guess_logits: Tensor) -> None:
        """Brings into layer `index` what its router would choose on guess_logits [T, E] (the next
        router applied to the current hidden state)."""
        launch("kjit_moe_offload_prefetch_from_logits", guess_logits, self._live(), index, guess_logits)

    def stats(self) -> dict:
        """tokens, hits, misses, prefetches, prefetch_hits, prefetches_wasted, bytes_on_demand,
        bytes_prefetched, stall_ms, copy_ms (the loader's copies), and hit_rate."""
        s = OffloadStats()
        call("kjit_moe_offload_stats_get", self._live(), s)
        out = {name: getattr(s, name) for name, _ in OffloadStats._fields_}
        out["hit_rate"] = s.hits / (s.hits + s.misses) if s.hits + s.misses else 0.0
        return out

    def write_history(self, path: str) -> None:
        """The routing history as a trace (".jsonl": JSON lines; else kjit's binary format)."""
        call("kjit_moe_offload_write_history", self._live(), str(path).encode())

    def close(self) -> None:
        if getattr(self, "_handle", None) is not None:
            library().kjit_moe_offload_destroy(self._handle)
            self._handle = None

    def __del__(self):
        self.close()
