"""Mixture of experts: the ops (kjit.moe.ops) and the module (MoELayer)."""

from .layer import MoELayer, RoutingStats, SharedExpert
from .ops import *  # noqa: F401,F403
from .ops import __all__ as _ops_all
from .ops import Fp4Weights, interleave_gate_up

__all__ = ["MoELayer", "RoutingStats", "SharedExpert", "Fp4Weights", "interleave_gate_up", *_ops_all]
