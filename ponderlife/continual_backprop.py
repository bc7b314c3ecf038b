r"""Continual backprop (Dohare et al. 2021; Nature 2024): generate-and-test on hidden units.

After every optimizer step, for each managed layer and each unit i with activation h_i:

1. **Utility.** A running average (decay η) of the unit's contribution
   ``|h_i| · Σ_k |w_out[k, i]|`` summed over *every* consumer of the unit; variants
   ``"mean_corrected_contribution"`` use ``|h_i − f̂_i|`` (f̂ the running mean of h_i) and
   ``"adaptable_contribution"`` further divides by ``Σ_j |w_in[i, j]|``. Running averages
   are bias-corrected by the unit's own age, ``û = u / (1 − η^age)``.
   A conv channel's |h| (or |h − f̂|, f̂ the channel's running mean) is taken at every
   position and then averaged over positions, as in the reference; when the channel is
   flattened into a Linear, each position's |h| pairs with that position's outgoing
   weights. A Linear applied to a sequence (B, L, D) has D units, averaged over B and L.
2. **Select.** Units older than ``maturity_threshold`` are eligible. ``replacement_rate ×
   #eligible`` is added to a per-layer accumulator only while some unit is eligible (so
   no burst at maturity) and its integer part is replaced: the eligible units with the
   smallest û.
3. **Reinitialise.** The removed unit's mean contribution ``W_next[:, i] · f̂_i`` moves into
   each consumer's bias (``bias_transfer``; the reference code meant to and did not), then
   incoming weights are redrawn from the layer's initial distribution, incoming biases and
   outgoing weights are zeroed, per-unit norm statistics are reset, and
   :func:`~ponderlife.optim.reset_optimizer_state` clears the optimizer state of every
   touched slice. The unit's utility, mean and age restart at 0.

Timing is explicit: forward hooks only *record* activations (in training mode); all of
the above happens in :meth:`ContinualBackprop.step`, called after ``optimizer.step()``.

**Pondering models.** A step function applied N times per input records N activations
per step(). They are averaged with weights ``step_weights`` (N, B), normally each step's
reach probability (:func:`ponderlife.ponder_step_weights`: ``P(not halted before n)`` for
PonderNet, 1 up to the halting step and 0 after it for ACT), so a step that most samples
never reach counts little. Without weights, every recorded sample counts equally, and
forwards of different batch sizes (a replay batch forwarded separately) are pooled.

The optimizer pairs best with :class:`~ponderlife.optim.AdamPerElement` (the documented
default for pondering experiments here): resetting its per-element step makes a replaced
unit's first update equal to a fresh Adam's. With ``torch.optim.Adam`` it depends on the
tensor's scalar step count, ≈3.2× larger late in training (see :mod:`ponderlife.optim`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ponderlife._checks import check_choice, check_int, check_range
from ponderlife.units import (
    ActivationRecorder,
    ParamSlice,
    StepWeights,
    UnitLayer,
    abs_sum_along,
    recorded_samples,
    reinitialise_units,
    resolve_unit_layers,
    sample_average,
)

UTILITIES: tuple[str, ...] = (
    "contribution",
    "mean_corrected_contribution",
    "adaptable_contribution",
)
INITS: tuple[str, ...] = ("default", "kaiming")


@dataclass
class _Mirror:
    youngest: int | None  # the youngest unit's age
    accumulated: float | None  # the accumulator's value


class _UnitState(nn.Module):
    """Per-layer buffers, saved by ``state_dict`` so a run resumes exactly.

    Two of them are mirrored in Python so that a step reads no tensor back: the youngest
    unit's age (all units are eligible while it is past maturity) and the accumulator
    (a float64 either way). The mirrors are read from the buffers again after the buffers
    are loaded or copied (:meth:`forget_mirrors`).
    """

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("utility", torch.zeros(size))
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("age", torch.zeros(size, dtype=torch.long))
        self.register_buffer("accumulator", torch.zeros((), dtype=torch.float64))
        self.register_buffer("replaced", torch.zeros((), dtype=torch.long))
        self.mirror = _Mirror(youngest=0, accumulated=0.0)  # a plain object: fast to set

    def forget_mirrors(self) -> None:
        self.mirror.youngest = self.mirror.accumulated = None

    def mirrors(self) -> _Mirror:
        mirror = self.mirror
        if mirror.youngest is None:
            mirror.youngest = int(self.age.min()) if self.age.numel() else 0
        if mirror.accumulated is None:
            mirror.accumulated = float(self.accumulator)
        return mirror

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.forget_mirrors()


class ContinualBackprop(nn.Module):
    """Continual backprop over the hidden units of ``model``.

    Args:
        model: the network; its unit layers are found by
            :func:`~ponderlife.units.find_unit_layers` unless ``units`` is given.
        optimizer: the optimizer whose state of replaced weights is reset.
        replacement_rate: ρ, fraction of eligible units replaced per step, in [0, 1]
            (reference: 1e-4 bit-flipping/ImageNet, 1e-6..1e-4 permuted MNIST).
        maturity_threshold: m, steps a unit lives before it may be replaced, ≥ 0 (100).
        decay_rate: η of the running averages, in [0, 1) (0.99).
        utility: ``"contribution"``, ``"mean_corrected_contribution"`` or
            ``"adaptable_contribution"``.
        init: new incoming weights from ``"default"`` (the layer's own PyTorch
            initialisation, U(±1/√fan_in), U(±1/√hidden) for RNN cells) or ``"kaiming"``
            (He normal, for ReLU).
        bias_transfer: move a removed unit's mean contribution into consumers' biases.
        units: explicit unit layers (or a function of the model returning them), for
            architectures discovery does not cover.
        generator: RNG for new weights (default: torch's global RNG).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        replacement_rate: float = 1e-4,
        maturity_threshold: int = 100,
        decay_rate: float = 0.99,
        utility: str = "contribution",
        init: str = "default",
        bias_transfer: bool = True,
        units: Sequence[UnitLayer] | Callable[[nn.Module], Sequence[UnitLayer]] | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.replacement_rate = check_range("replacement_rate", replacement_rate, 0.0, 1.0)
        self.maturity_threshold = check_int("maturity_threshold", maturity_threshold, 0)
        self.decay_rate = check_range("decay_rate", decay_rate, 0.0, 1.0, high_inclusive=False)
        self.utility_kind = check_choice("utility", utility, UTILITIES)
        self.init = check_choice("init", init, INITS)
        self.bias_transfer = bias_transfer
        self.optimizer = optimizer
        self.generator = generator
        self.layers = resolve_unit_layers(model, units)
        self.states = nn.ModuleDict(
            {self._key(layer.name): _UnitState(layer.size) for layer in self.layers}
        )
        self.recorder = ActivationRecorder(self.layers)
        self._dense = {layer.name: _dense_weights(layer) for layer in self.layers}

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__") or "root"

    def remove(self) -> None:
        """Detach the recording hooks from the model."""
        self.recorder.remove()

    @torch.no_grad()
    def carry_from(self, other: ContinualBackprop, *, same_units: bool = True) -> None:
        """Continue ``other``'s run on this object's layers (rebuilt after the model changed).

        Per layer of the same name and size: the replacement count always carries over;
        utilities, means, ages and the accumulator only when ``same_units`` (the units are
        the ones ``other`` tracked, e.g. only a consumer head grew). A model replaced by a
        fresh one (``same_units=False``) starts its units at age 0.
        """
        previous = dict(other.states.items())
        for layer in self.layers:
            key = self._key(layer.name)
            old = previous.get(key)
            if old is None or old.utility.shape != self.states[key].utility.shape:
                continue
            state = self.states[key]
            state.replaced.copy_(old.replaced)
            if same_units:
                for name in ("utility", "mean", "age", "accumulator"):
                    getattr(state, name).copy_(getattr(old, name))
                state.forget_mirrors()

    @property
    def replacements(self) -> dict[str, int]:
        """Units replaced so far, per layer."""
        return {
            layer.name: int(self.states[self._key(layer.name)].replaced) for layer in self.layers
        }

    # -- the algorithm -------------------------------------------------------------------

    @torch.no_grad()
    def step(self, step_weights: StepWeights | None = None) -> dict[str, int]:
        """Update utilities from the activations recorded since the last call, then replace
        units. Call after ``optimizer.step()``. Returns the units replaced now, per layer.

        ``step_weights`` (N, B): weight of each of N recorded forwards per sample (see the
        module docstring), or one vector per forward for forwards on different rows (a
        per-sample unroll); weights that do not match a layer's records are an error.
        """
        selected = []
        for layer in self.layers:
            state = self.states[self._key(layer.name)]
            records = self.recorder.pop(layer.name)
            if not records:
                raise RuntimeError(
                    f"no training forward recorded for unit layer {layer.name!r} since the "
                    "last step(); call step() once after each optimizer.step()"
                )
            self._update_utility(layer, state, records, step_weights)
            selected.append((layer, state, self._select(state)))
        # Every layer is tested on the same weights before any is changed (as in the
        # reference): a replacement zeroes columns that are the next layer's incoming
        # weights, which its adaptable utility reads.
        replaced = {}
        for layer, state, units in selected:
            if units is not None:
                self._replace(layer, state, units)
            replaced[layer.name] = 0 if units is None else int(units.numel())
        return replaced

    def _update_utility(
        self,
        layer: UnitLayer,
        state: _UnitState,
        records: list[Tensor],
        step_weights: StepWeights | None,
    ) -> None:
        decay = self.decay_rate
        state.age.add_(1)  # in place: += on a module attribute goes through __setattr__
        if state.mirror.youngest is not None:
            state.mirror.youngest += 1
        dense = self._dense[layer.name]
        if dense is not None and step_weights is None and _one_plain_record(records, layer.size):
            self._update_dense(state, records[0], *dense)  # (B, units): the sums below,
            return  # without positions
        samples, weights = recorded_samples(layer, records, step_weights)  # (S, units, P)
        # lerp_: m + (1 − η)(x − m) = η·m + (1 − η)·x in one operation instead of two
        state.mean.lerp_(_over_positions(sample_average(samples, weights)), 1 - decay)
        if self.utility_kind == "contribution":
            deviation = samples.abs()
        else:
            mean = state.mean / self._bias_correction(state.age)
            deviation = (samples - mean.to(samples.dtype)[:, None]).abs()
        # |h| per position first, then averaged: a channel whose signed responses cancel
        # over positions is not useless (the reference's order).
        magnitude = sample_average(deviation, weights)  # (units, P)
        contribution = _summed(
            [_paired(magnitude, part.abs_sum_per_block(layer.size)) for part in layer.outgoing]
        )
        if self.utility_kind == "adaptable_contribution":
            tiny = torch.finfo(contribution.dtype).tiny
            contribution = contribution / _abs_sum(layer.incoming, layer.size).clamp_min(tiny)
        state.utility.lerp_(contribution, 1 - decay)

    def _update_dense(
        self, state: _UnitState, h: Tensor, outgoing: list[Tensor], incoming: list[Tensor]
    ) -> None:
        """The update above for a dense layer recorded once, (B, units), in as few tensor
        operations as it takes: on a small network each costs more than its arithmetic."""
        decay = self.decay_rate
        state.mean.lerp_(h[0] if h.shape[0] == 1 else h.mean(0), 1 - decay)
        if self.utility_kind == "contribution":
            deviation = h.abs()
        else:
            deviation = (h - state.mean / self._bias_correction(state.age)).abs()
        magnitude = deviation[0] if h.shape[0] == 1 else deviation.mean(0)
        contribution = magnitude * _summed([abs_sum_along(w, 1) for w in outgoing])
        if self.utility_kind == "adaptable_contribution":
            incoming_sum = _summed([abs_sum_along(w, 0) for w in incoming])
            contribution = contribution / incoming_sum.clamp_min(torch.finfo(h.dtype).tiny)
        state.utility.lerp_(contribution, 1 - decay)

    def _bias_correction(self, age: Tensor) -> Tensor:
        """1 − η^age in the default float dtype (torch.pow of a float by an integer tensor)."""
        return 1 - torch.pow(self.decay_rate, age)

    def _select(self, state: _UnitState) -> Tensor | None:
        """The units to replace now (None: none)."""
        if self.replacement_rate == 0:
            return None
        mirror = state.mirrors()
        everyone = mirror.youngest > self.maturity_threshold  # the common case: no tensor read
        eligible = None if everyone else state.age > self.maturity_threshold
        count = state.age.numel() if everyone else int(eligible.sum())
        if count == 0:
            return None
        accumulated = mirror.accumulated + self.replacement_rate * count
        number = min(int(accumulated), count)
        mirror.accumulated = accumulated - number
        state.accumulator.fill_(mirror.accumulated)
        if number == 0:
            return None
        corrected = state.utility / self._bias_correction(state.age)
        if eligible is not None:
            corrected = torch.where(eligible, corrected, torch.full_like(corrected, math.inf))
        return torch.topk(corrected, number, largest=False).indices

    def _replace(self, layer: UnitLayer, state: _UnitState, units: Tensor) -> None:
        mean = None
        if self.bias_transfer:
            mean = state.mean[units] / self._bias_correction(state.age[units])
        reinitialise_units(
            layer, units, self.optimizer, init=self.init, generator=self.generator, mean=mean
        )
        state.utility[units] = 0.0
        state.mean[units] = 0.0
        state.age[units] = 0
        state.mirror.youngest = 0
        state.replaced.add_(units.numel())


def _dense_weights(layer: UnitLayer) -> tuple[list[Tensor], list[Tensor]] | None:
    """The 2-D outgoing weights (units on dim 1) and incoming weights (units on dim 0) of a
    layer whose every slice is a plain column or row per unit, or None."""

    def plain(part: ParamSlice, dim: int) -> bool:
        return part.param.dim() == 2 and part.dim == dim and part.block == part.groups == 1

    if layer.unit_axis != -1 or not layer.outgoing:
        return None
    if all(plain(p, 1) for p in layer.outgoing) and all(plain(p, 0) for p in layer.incoming):
        return [p.param for p in layer.outgoing], [p.param for p in layer.incoming]
    return None


def _one_plain_record(records: list[Tensor], units: int) -> bool:
    return len(records) == 1 and records[0].dim() == 2 and records[0].shape[1] == units


def _summed(terms: list[Tensor]) -> Tensor:
    """The sum of a non-empty list of tensors, without ``sum()``'s extra ``0 + t``."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _abs_sum(parts: list[ParamSlice], units: int) -> Tensor:
    return _summed([part.abs_sum_per_unit(units) for part in parts])


def _over_positions(values: Tensor) -> Tensor:
    """Mean of (units, P) over positions; a view when P = 1 (the mean of one value is
    that value, so this is exact)."""
    return values[:, 0] if values.shape[1] == 1 else values.mean(-1)


def _paired(magnitude: Tensor, outgoing: Tensor) -> Tensor:
    """Mean over positions of ``E|h|`` (units, P) times the outgoing Σ|w| (units, block).

    A conv channel flattened into a Linear owns one column block per position (block = P):
    each position's |h| pairs with that position's weights, as in the reference. A conv
    or Linear consumer reads every position with the same weights (block = 1). Between
    the two (pooling before ``Flatten``), positions cannot be matched and the means pair.
    """
    if outgoing.shape[1] == magnitude.shape[1] == 1:  # dense units: no positions
        return magnitude[:, 0] * outgoing[:, 0]
    if outgoing.shape[1] == magnitude.shape[1]:
        return (magnitude * outgoing).mean(-1)
    return magnitude.mean(-1) * outgoing.mean(-1)
