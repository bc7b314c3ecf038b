"""Avalanche plugins over the plasticity core: a few lines per callback, no maths.

Each plugin builds its :mod:`ponderlife` object (its *core*) from the strategy's model and
optimizer and hands off to it:

* :class:`ContinualBackpropPlugin` — :class:`ponderlife.ContinualBackprop`, stepped in
  ``after_update``;
* :class:`L2Plugin`, :class:`ShrinkPerturbPlugin`, :class:`L2InitPlugin`,
  :class:`WeightClippingPlugin`, :class:`ReDoPlugin` — the per-update baselines of
  :mod:`ponderlife.baselines`;
* :class:`HeadResetPlugin`, :class:`FullResetPlugin` — resets at experience boundaries.

UPGD is an optimizer: pass ``ponderlife.baselines.UPGD(model.parameters(), ...)`` as the
strategy's optimizer; no plugin is needed. Layer normalisation with weight decay (Lyle et
al. 2024) is an architecture plus :class:`L2Plugin`: build the step function with
``layer_norm=True`` (:mod:`ponderlife.steps`) or give your own model its norm layers.

**Following the strategy.** Strategies change the model under a plugin: GDumb replaces it
with a fresh copy before every experience, ``IncrementalClassifier`` and
``MultiHeadClassifier`` heads are replaced by larger ones, Avalanche rebuilds the
optimizer's parameter groups. So every plugin binds to ``strategy.model`` and
``strategy.optimizer`` again at every experience (and after an evaluation, which may adapt
the model), just before the first training forward; the per-update plugins act on the
live parameters from then on. What a core has learned carries over by layer or parameter
name (:meth:`~ponderlife.ContinualBackprop.carry_from`): all of it while the model is the
same object, only the counts when the model was replaced by a fresh one.

**Finding units.** Continual backprop and ReDo find the units by tracing the model on the
first training batch (:func:`ponderlife.units.trace_unit_layers`), so chains across
submodules (Avalanche's ``SimpleMLP``, ``SimpleCNN``, multi-head classifiers) are found;
``units=`` (a list, or a function of the model for strategies that replace it) overrides.

**What counts as an update's activations.** Every forward of the model between
``before_forward`` and ``after_update``, whatever mode its modules are in (RWalk, LFL and
CWR* train with modules in eval mode), concatenated along the batch when there are several
(ER-ACE, ER-AML and MIR forward a replay batch separately). Forwards elsewhere (an
evaluation, EWC's importance pass, RWalk's own pass before the iteration) are not
recorded. A strategy that never calls ``before_forward``/``after_update`` (Avalanche's
meta-learning templates, e.g. MER) is refused at the start of training, and an iteration
that ends without an update is an error, so no plugin ever does nothing silently.

Weights are always changed in place, never by swapping ``nn.Parameter`` objects (Avalanche
matches optimizer state by parameter identity).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models import MultiTaskModule
from avalanche.training.templates import SupervisedMetaLearningTemplate
from torch import nn

from ponderlife import ContinualBackprop
from ponderlife.baselines import (
    L2,
    FullReset,
    HeadReset,
    L2Init,
    ReDo,
    ShrinkPerturb,
    WeightClipping,
)
from ponderlife.checkpoint import non_finite_parameters
from ponderlife.units import StepWeights, resolve_unit_layers

__all__ = [
    "ContinualBackpropPlugin",
    "FiniteLossPlugin",
    "FullResetPlugin",
    "HeadResetPlugin",
    "L2InitPlugin",
    "L2Plugin",
    "ReDoPlugin",
    "ShrinkPerturbPlugin",
    "WeightClippingPlugin",
    "step_weights",
]

# Samples of the first training batch traced to find the units (a few: cheap, and the
# batch-norm layers in eval mode do not need many).
_TRACE_SAMPLES = 4


def step_weights(strategy) -> StepWeights | None:
    """Per-forward weights of the activations recorded in this iteration: the strategy's
    ``unit_step_weights()`` (PonderTemplate: reach probabilities of the ponder steps), or
    None (every recorded forward counts equally) for ordinary strategies."""
    weights = getattr(strategy, "unit_step_weights", None)
    return weights() if callable(weights) else None


def _probe_network() -> nn.Module:
    """A throwaway network to validate hyperparameters on when a plugin is created."""
    return nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))


def _validate(build: Callable[[], Any]) -> None:
    """Build a throwaway core (on a probe network) so that a bad hyperparameter fails when
    the plugin is created, leaving torch's global RNG as it was: building draws initial
    weights, and creating a plugin must not shift the run's other randomness."""
    with torch.random.fork_rng(devices=[]):
        core = build()
        if hasattr(core, "remove"):
            core.remove()


def _example(strategy) -> tuple | None:
    """The first few samples of the current training batch, as the model's positional
    arguments (with task labels for a multi-task model, as Avalanche calls it); None
    outside a training iteration."""
    if getattr(strategy, "mbatch", None) is None:
        return None
    x = strategy.mb_x[:_TRACE_SAMPLES]
    if isinstance(strategy.model, MultiTaskModule):
        return x, strategy.mb_task_id[:_TRACE_SAMPLES]
    return (x,)


class _CorePlugin(SupervisedPlugin):
    """Binds ``self.core = factory(model, optimizer, example)`` to the strategy's current
    model and optimizer before the first training forward of every experience."""

    def __init__(self, factory: Callable[[nn.Module, Any, Any], Any]):
        super().__init__()
        self._factory = factory
        self.core: Any = None
        self._model: nn.Module | None = None
        self._stale = True
        self._pending: dict | None = None  # state loaded before a core existed

    def build(self, strategy, example: Any = None) -> None:
        """Bind to ``strategy.model`` now if not bound to it yet (training does it before
        the first forward of each experience); checkpointing and the experiments call it
        early so that a bad setting fails before any training."""
        if self.core is None or strategy.model is not self._model:
            self._bind(strategy, example)

    def _bind(self, strategy, example: Any = None) -> None:
        model = strategy.model
        core = self._factory(model, strategy.optimizer, example)
        old = self.core
        if old is not None:
            if hasattr(core, "carry_from"):
                core.carry_from(old, same_units=model is self._model)
            if hasattr(old, "remove"):
                old.remove()
        elif self._pending is not None:
            core.load_state_dict(self._pending)
            self._pending = None
        # Cores with state (CBP buffers, L2-Init's θ₀) live beside the model's weights.
        if hasattr(core, "to"):
            core.to(next(model.parameters()).device)
        self.core, self._model, self._stale = core, model, False

    def before_training_exp(self, strategy, *args, **kwargs):
        self._stale = True

    def after_eval(self, strategy, *args, **kwargs):
        self._stale = True  # evaluation may adapt the model (a head for new classes)

    # Checkpointing (strategies.checkpoint) saves and restores plugins through these.
    def state_dict(self) -> dict:
        if self.core is None:
            return dict(self._pending or {})
        return self.core.state_dict() if hasattr(self.core, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if self.core is None:
            self._pending = dict(state)
        else:
            self.core.load_state_dict(state)


class _PerUpdatePlugin(_CorePlugin):
    """Acts in ``after_update``; bound in ``before_forward``, after the strategy adapted the
    model and built the optimizer for the experience."""

    needs_example = False
    _updated = True  # whether after_update ran in the current training iteration

    def before_training(self, strategy, *args, **kwargs):
        if isinstance(strategy, SupervisedMetaLearningTemplate):
            raise RuntimeError(
                f"{type(self).__name__} cannot run in {type(strategy).__name__}: its "
                "meta-learning updates never call before_forward/after_update, where this "
                "plugin records the update's activations and acts on the weights"
            )

    def before_training_iteration(self, strategy, *args, **kwargs):
        self._updated = False

    def before_forward(self, strategy, *args, **kwargs):
        if self._stale or strategy.model is not self._model:
            self._bind(strategy, _example(strategy) if self.needs_example else None)

    def after_update(self, strategy, *args, **kwargs):
        self._updated = True
        self._step(strategy)

    def _step(self, strategy) -> None:
        self.core.step()

    def after_training_iteration(self, strategy, *args, **kwargs):
        if not self._updated:
            raise RuntimeError(
                f"{type(strategy).__name__} ended a training iteration without calling "
                f"after_update; {type(self).__name__} acts there and would do nothing"
            )


class _UnitPlugin(_PerUpdatePlugin):
    """Records every forward between ``before_forward`` and ``after_update``."""

    needs_example = True

    def build(self, strategy, example: Any = None) -> None:
        """As for every plugin; without a training batch to trace, units are read from the
        model's ``nn.Sequential`` chains, and a model that needs the trace (Avalanche's
        ``SimpleMLP``) is bound at the first training forward instead (a loaded
        checkpoint waits for it)."""
        example = _example(strategy) if example is None else example
        try:
            super().build(strategy, example)
        except ValueError:
            if example is not None:
                raise

    def before_forward(self, strategy, *args, **kwargs):
        super().before_forward(strategy)
        self.core.recorder.clear()
        self.core.recorder.gate = True

    def _step(self, strategy) -> None:
        self.core.recorder.gate = False
        self.core.step(step_weights(strategy))

    def after_training_exp(self, strategy, *args, **kwargs):
        if self.core is not None:
            self.core.recorder.gate = False
            self.core.recorder.clear()


def _units_factory(make, units):
    def factory(model, optimizer, example):
        layers = resolve_unit_layers(model, units, example)
        core = make(model, optimizer, layers)
        core.recorder.gate = False  # opened by the plugin for each update's forwards
        return core

    return factory


class ContinualBackpropPlugin(_UnitPlugin):
    """Continual backprop in any Avalanche strategy.

    Keyword arguments are :class:`ponderlife.ContinualBackprop`'s (``replacement_rate``,
    ``maturity_threshold``, ``decay_rate``, ``utility``, ``init``, ``bias_transfer``,
    ``units``, ``generator``), checked when the plugin is created.

    With :class:`~strategies.PonderTemplate` a step function's activations from the N
    ponder steps are weighted by each step's reach probability.
    """

    def __init__(self, **hyperparameters):
        units = hyperparameters.pop("units", None)
        super().__init__(
            _units_factory(
                lambda model, opt, layers: ContinualBackprop(
                    model, opt, units=layers, **hyperparameters
                ),
                units,
            )
        )
        checked = {k: v for k, v in hyperparameters.items() if k != "generator"}
        _validate(lambda: ContinualBackprop(_probe_network(), None, **checked))

    @property
    def replacements(self) -> dict[str, int]:
        """Units replaced so far, per layer (empty before training)."""
        return {} if self.core is None else self.core.replacements


class L2Plugin(_PerUpdatePlugin):
    """Decoupled weight decay after every update (:class:`ponderlife.baselines.L2`)."""

    def __init__(self, *, weight_decay: float = 1e-4):
        _validate(lambda: L2(nn.Linear(1, 1), weight_decay=weight_decay))
        super().__init__(lambda model, opt, _: L2(model, weight_decay=weight_decay))


class ShrinkPerturbPlugin(_PerUpdatePlugin):
    """Shrink and perturb after every update (:class:`ponderlife.baselines.ShrinkPerturb`)."""

    def __init__(self, **hyperparameters):
        _validate(lambda: ShrinkPerturb(nn.Linear(1, 1), **hyperparameters))
        super().__init__(lambda model, opt, _: ShrinkPerturb(model, **hyperparameters))


class L2InitPlugin(_PerUpdatePlugin):
    """Pull towards the weights the model had when training started
    (:class:`ponderlife.baselines.L2Init`). A parameter that appears later (a new head) or
    grows (new classes) takes its value when it appeared as its θ₀."""

    def __init__(self, *, strength: float = 1e-2):
        _validate(lambda: L2Init(nn.Linear(1, 1), strength=strength))
        super().__init__(lambda model, opt, _: L2Init(model, strength=strength))


class WeightClippingPlugin(_PerUpdatePlugin):
    """Clip every weight into ±``scale``·s after every update, s the bound of its initial
    distribution (:class:`ponderlife.baselines.WeightClipping`). s is measured when the
    plugin first binds to the model, which should then be freshly initialised; it carries
    over by parameter name when the strategy changes the model, and with checkpoints. A
    parameter that appears later (a new head) is bounded by its own module's rule."""

    def __init__(self, *, scale: float = 2.0, bounds: dict[str, float] | None = None):
        _validate(lambda: WeightClipping(nn.Linear(1, 1), scale=scale))
        super().__init__(lambda model, opt, _: WeightClipping(model, scale=scale, bounds=bounds))


class ReDoPlugin(_UnitPlugin):
    """Recycle τ-dormant units every ``every`` updates (:class:`ponderlife.baselines.ReDo`).

    With :class:`~strategies.PonderTemplate` dormancy is scored over all ponder steps of
    the update, weighted by their reach probability, as continual backprop does."""

    def __init__(self, **hyperparameters):
        units = hyperparameters.pop("units", None)
        checked = {k: v for k, v in hyperparameters.items() if k != "generator"}
        _validate(lambda: ReDo(_probe_network(), None, **checked))
        super().__init__(
            _units_factory(
                lambda model, opt, layers: ReDo(model, opt, units=layers, **hyperparameters),
                units,
            )
        )

    @property
    def replacements(self) -> dict[str, int]:
        """Units recycled so far, per layer (empty before training)."""
        return {} if self.core is None else dict(self.core.replaced)


class _BoundaryPlugin(_CorePlugin):
    """Calls ``core.task_boundary()`` before every experience but the first trained, on
    the model and optimizer the strategy has for that experience."""

    def __init__(self, factory):
        super().__init__(lambda model, opt, _: factory(model, opt))
        self.boundaries = 0

    def before_training(self, strategy, *args, **kwargs):
        self.build(strategy)  # a bad head name fails before training

    def before_training_exp(self, strategy, *args, **kwargs):
        self._bind(strategy)
        if self.boundaries:
            self.core.task_boundary()
        self.boundaries += 1

    def state_dict(self) -> dict:
        return {"boundaries": self.boundaries}

    def load_state_dict(self, state: dict) -> None:
        self.boundaries = int(state.get("boundaries", 0))


class HeadResetPlugin(_BoundaryPlugin):
    """Re-initialise the submodule named ``head`` (e.g. ``"step.output"``) and drop its
    optimizer state at each new experience."""

    def __init__(self, head: str):
        super().__init__(lambda model, opt: HeadReset(model.get_submodule(head), opt))


class FullResetPlugin(_BoundaryPlugin):
    """Train from scratch on every experience: the full-plasticity reference point."""

    def __init__(self):
        super().__init__(lambda model, opt: FullReset(model, opt))


class FiniteLossPlugin(SupervisedPlugin):
    """Stop training at the first non-finite loss, before it reaches the weights, or at the
    first update that leaves a weight non-finite although the loss before it was finite,
    with a ``FloatingPointError`` naming the experience and the iteration within it.

    The weights are checked in ``after_update`` with one fused reduction and one host sync
    (:func:`ponderlife.checkpoint.non_finite_parameters`). Listed after the method's
    plugins, it also sees what their ``after_update`` did to the weights. Raising stops
    the experience before its checkpoint is written, so the run's last checkpoint (that of
    the previous experience) keeps finite weights.
    """

    def __init__(self):
        super().__init__()
        self._loss = math.nan

    @staticmethod
    def _where(strategy) -> str:
        return (
            f"experience {strategy.experience.current_experience}, iteration "
            f"{strategy.clock.train_exp_iterations + 1} of that experience"
        )

    def before_backward(self, strategy, *args, **kwargs):
        value = float(strategy.loss.detach().sum())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"non-finite training loss ({value}) in {self._where(strategy)}"
            )
        self._loss = value

    def after_update(self, strategy, *args, **kwargs):
        names = non_finite_parameters(strategy.model)
        if names:
            raise FloatingPointError(
                f"non-finite weights ({', '.join(names)}) after the update in "
                f"{self._where(strategy)}; the loss before it was finite ({self._loss:.4g}), "
                "so the update made them non-finite"
            )
