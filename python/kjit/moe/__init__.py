"""Mixture of experts: the ops (kjit.moe.ops), the module (MoELayer) and the offloaded stack
(OffloadedMoE)."""

from .layer import MoELayer, RoutingStats, SharedExpert
from .offload import OffloadedMoE
from .ops import *  # noqa: F401,F403 (ops.__all__: the ops, the router presets, Fp4Weights)
from .ops import __all__ as _ops_all

__all__ = ["MoELayer", "OffloadedMoE", "RoutingStats", "SharedExpert", *_ops_all]
