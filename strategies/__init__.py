"""Avalanche adapters over the ponderlife core: plugins, the PonderNet strategy, metrics,
streams and checkpoints. See strategies/README.md."""

from strategies.metrics import (
    DifficultyMetrics,
    PlasticityMetrics,
    PonderingMetrics,
    scheme_name,
)
from strategies.plugins import (
    ContinualBackpropPlugin,
    FiniteLossPlugin,
    FullResetPlugin,
    HeadResetPlugin,
    L2InitPlugin,
    L2Plugin,
    ReDoPlugin,
    ShrinkPerturbPlugin,
    WeightClippingPlugin,
)
from strategies.template import PonderTemplate

__all__ = [
    "ContinualBackpropPlugin",
    "DifficultyMetrics",
    "FiniteLossPlugin",
    "FullResetPlugin",
    "HeadResetPlugin",
    "L2InitPlugin",
    "L2Plugin",
    "PlasticityMetrics",
    "PonderTemplate",
    "PonderingMetrics",
    "ReDoPlugin",
    "ShrinkPerturbPlugin",
    "WeightClippingPlugin",
    "scheme_name",
]
