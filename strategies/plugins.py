"""Avalanche plugins over the plasticity core: a few lines per callback, no maths.

Each plugin builds its :mod:`ponderlife` object from the strategy's model and optimizer the
first time training starts (so it can be created before the strategy, like any Avalanche
plugin) and hands off to it:

* :class:`ContinualBackpropPlugin` — :class:`ponderlife.ContinualBackprop`; records during
  training forwards only and calls ``step()`` in ``after_update``;
* :class:`L2Plugin`, :class:`ShrinkPerturbPlugin`, :class:`L2InitPlugin`,
  :class:`ReDoPlugin` — the per-update baselines of :mod:`ponderlife.baselines`;
* :class:`HeadResetPlugin`, :class:`FullResetPlugin` — resets at experience boundaries.

UPGD is an optimizer: pass ``ponderlife.baselines.UPGD(model.parameters(), ...)`` as the
strategy's optimizer; no plugin is needed.

Weights are always changed in place, never by swapping ``nn.Parameter`` objects (Avalanche
matches optimizer state by parameter identity), and the optimizer is looked up from the
strategy at every experience, so Avalanche replacing its state wholesale at the first
experience (or a user passing ``reset_optimizer_state=True``) is harmless.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from avalanche.core import SupervisedPlugin
from torch import Tensor, nn

from ponderlife import ContinualBackprop
from ponderlife.baselines import L2, FullReset, HeadReset, L2Init, ReDo, ShrinkPerturb
from ponderlife.checkpoint import non_finite_parameters

__all__ = [
    "ContinualBackpropPlugin",
    "FiniteLossPlugin",
    "FullResetPlugin",
    "HeadResetPlugin",
    "L2InitPlugin",
    "L2Plugin",
    "ReDoPlugin",
    "ShrinkPerturbPlugin",
    "step_weights",
]


def step_weights(strategy) -> Tensor | None:
    """Per-forward weights of the activations recorded in this iteration: the strategy's
    ``unit_step_weights()`` (PonderTemplate: reach probabilities of the ponder steps), or
    None (every recorded forward counts equally) for ordinary strategies."""
    weights = getattr(strategy, "unit_step_weights", None)
    return weights() if callable(weights) else None


def _probe_network() -> nn.Module:
    """A throwaway network to validate hyperparameters on when a plugin is created."""
    return nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))


class _CorePlugin(SupervisedPlugin):
    """Builds ``self.core`` on first use from ``factory(model, optimizer)``."""

    def __init__(self, factory: Callable[[nn.Module, Any], Any]):
        super().__init__()
        self._factory = factory
        self.core: Any = None

    def build(self, strategy) -> None:
        """Create the core object for ``strategy`` (once; training does it on first use)."""
        if self.core is None:
            self.core = self._factory(strategy.model, strategy.optimizer)

    def before_training(self, strategy, *args, **kwargs):
        self.build(strategy)

    def before_training_exp(self, strategy, *args, **kwargs):
        if hasattr(self.core, "optimizer"):
            self.core.optimizer = strategy.optimizer
        # Cores with state (CBP buffers, L2-Init's θ₀) were built, or loaded, before
        # Avalanche moved the model to its device.
        if hasattr(self.core, "to"):
            self.core.to(next(strategy.model.parameters()).device)

    # Checkpointing (strategies.checkpoint) saves and restores plugins through these.
    def state_dict(self) -> dict:
        if self.core is None or not hasattr(self.core, "state_dict"):
            return {}
        return self.core.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.core.load_state_dict(state)


class ContinualBackpropPlugin(_CorePlugin):
    """Continual backprop in any Avalanche strategy.

    Keyword arguments are :class:`ponderlife.ContinualBackprop`'s (``replacement_rate``,
    ``maturity_threshold``, ``decay_rate``, ``utility``, ``init``, ``bias_transfer``,
    ``units``, ``generator``), checked when the plugin is created.

    With :class:`~strategies.PonderTemplate` a step function's activations from the N
    ponder steps are weighted by each step's reach probability.
    """

    def __init__(self, **hyperparameters):
        super().__init__(lambda model, opt: ContinualBackprop(model, opt, **hyperparameters))
        # Validate now, on a throwaway model, so a bad value fails before any training.
        checked = {k: v for k, v in hyperparameters.items() if k not in ("units", "generator")}
        ContinualBackprop(_probe_network(), None, **checked).remove()

    @property
    def replacements(self) -> dict[str, int]:
        """Units replaced so far, per layer (empty before training)."""
        return {} if self.core is None else self.core.replacements

    def before_forward(self, strategy, *args, **kwargs):
        self.core.recorder.clear()  # only this iteration's training forward counts

    def after_update(self, strategy, *args, **kwargs):
        self.core.step(step_weights(strategy))


class _PerUpdatePlugin(_CorePlugin):
    def after_update(self, strategy, *args, **kwargs):
        self.core.step()


class L2Plugin(_PerUpdatePlugin):
    """Decoupled weight decay after every update (:class:`ponderlife.baselines.L2`)."""

    def __init__(self, *, weight_decay: float = 1e-4):
        L2(nn.Linear(1, 1), weight_decay=weight_decay)  # validate now
        super().__init__(lambda model, opt: L2(model, weight_decay=weight_decay))


class ShrinkPerturbPlugin(_PerUpdatePlugin):
    """Shrink and perturb after every update (:class:`ponderlife.baselines.ShrinkPerturb`)."""

    def __init__(self, **hyperparameters):
        ShrinkPerturb(nn.Linear(1, 1), **hyperparameters)
        super().__init__(lambda model, opt: ShrinkPerturb(model, **hyperparameters))


class L2InitPlugin(_PerUpdatePlugin):
    """Pull towards the weights the model had when training started
    (:class:`ponderlife.baselines.L2Init`)."""

    def __init__(self, *, strength: float = 1e-2):
        L2Init(nn.Linear(1, 1), strength=strength)
        super().__init__(lambda model, opt: L2Init(model, strength=strength))


class ReDoPlugin(_PerUpdatePlugin):
    """Recycle τ-dormant units every ``every`` updates (:class:`ponderlife.baselines.ReDo`).

    With :class:`~strategies.PonderTemplate` dormancy is scored over all ponder steps of
    the update, weighted by their reach probability, as continual backprop does."""

    def __init__(self, **hyperparameters):
        checked = {k: v for k, v in hyperparameters.items() if k not in ("units", "generator")}
        ReDo(_probe_network(), None, **checked).remove()
        super().__init__(lambda model, opt: ReDo(model, opt, **hyperparameters))

    def before_forward(self, strategy, *args, **kwargs):
        self.core.recorder.clear()

    def after_update(self, strategy, *args, **kwargs):
        self.core.step(step_weights(strategy))


class _BoundaryPlugin(_CorePlugin):
    """Calls ``core.task_boundary()`` before every experience but the first trained."""

    def __init__(self, factory):
        super().__init__(factory)
        self.boundaries = 0

    def before_training_exp(self, strategy, *args, **kwargs):
        super().before_training_exp(strategy)
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
