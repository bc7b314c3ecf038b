"""ponderlife: pondering (PonderNet) and plasticity maintenance for continual learning.

The core depends on torch and numpy only. Public API:

* halting maths: :func:`halting_distribution`, :func:`log_halting_distribution`,
  :func:`log_geometric_prior`, :func:`kl_to_geometric`, :func:`ponder_loss`;
* models: :class:`PonderNet`, :class:`ACT`, :class:`FixedDepth` and their losses
  (:func:`model_loss` picks the right one from a model's output, and
  :func:`ponder_step_weights` the weight of each step for the plasticity methods);
* step functions: :class:`RNNStep`, :class:`GRUStep`, :class:`ResidualMLPStep`,
  :class:`TransformerStep`;
* plasticity: :class:`ContinualBackprop` (units found by :mod:`ponderlife.units`),
  :class:`AdamPerElement`, :func:`reset_optimizer_state`, :mod:`ponderlife.diagnostics`;
* tasks: :mod:`ponderlife.tasks`; runtime: :func:`configure_threads`.
"""

from ponderlife.act import ACT, ACTLoss, ACTOutput, act_loss
from ponderlife.continual_backprop import ContinualBackprop
from ponderlife.fixed_depth import FixedDepth, FixedDepthLoss, FixedDepthOutput, fixed_depth_loss
from ponderlife.halting import (
    PonderLoss,
    halting_distribution,
    kl_to_geometric,
    log_geometric_prior,
    log_halting_distribution,
    ponder_loss,
)
from ponderlife.objectives import model_loss, ponder_step_weights
from ponderlife.optim import AdamPerElement, reset_optimizer_state
from ponderlife.pondernet import PonderNet, PonderOutput, reach_probabilities
from ponderlife.runtime import configure_threads
from ponderlife.steps import (
    GRUStep,
    ResidualMLPStep,
    RNNStep,
    SplitStep,
    StepFunction,
    StepOutput,
    TransformerStep,
)
from ponderlife.units import (
    ParamSlice,
    UnitLayer,
    find_unit_layers,
    trace_unit_layers,
    unit_layer,
)

__all__ = [
    "ACT",
    "ACTLoss",
    "ACTOutput",
    "AdamPerElement",
    "ContinualBackprop",
    "FixedDepth",
    "FixedDepthLoss",
    "FixedDepthOutput",
    "GRUStep",
    "ParamSlice",
    "PonderLoss",
    "PonderNet",
    "PonderOutput",
    "RNNStep",
    "ResidualMLPStep",
    "SplitStep",
    "StepFunction",
    "StepOutput",
    "TransformerStep",
    "UnitLayer",
    "act_loss",
    "configure_threads",
    "find_unit_layers",
    "fixed_depth_loss",
    "halting_distribution",
    "kl_to_geometric",
    "log_geometric_prior",
    "log_halting_distribution",
    "model_loss",
    "ponder_loss",
    "ponder_step_weights",
    "reach_probabilities",
    "reset_optimizer_state",
    "trace_unit_layers",
    "unit_layer",
]
