"""Mixture of experts: the ops (kjit.moe.ops) and the module (MoELayer)."""

from .layer import MoELayer, RoutingStats, SharedExpert
from .ops import *  # noqa: F401,F403 (ops.__all__: the ops, the router presets, Fp4Weights)
from .ops import __all__ as _ops_all

__all__ = ["MoELayer", "RoutingStats", "SharedExpert", *_ops_all]
