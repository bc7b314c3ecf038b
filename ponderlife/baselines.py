"""Plasticity baselines, built and timed like :class:`~ponderlife.ContinualBackprop`.

Per-step methods expose ``step()``, called after ``optimizer.step()``; task-boundary
methods expose ``task_boundary()``. The weight-space regularisers here act *decoupled*
(directly on the weights after the optimizer step, as AdamW does), so they behave the
same under SGD and Adam; ``penalty()`` gives the coupled loss-term form where the
literature uses it. Both forms describe one regulariser: ``step()`` is exactly one
gradient step of ``penalty()`` with learning rate 1. Defaults are the references'
(continual-backprop.md).

=================  ====================================================================
``L2``             θ ← (1 − weight_decay)·θ each step (reference: 1e-4).
``ShrinkPerturb``  θ ← (1 − shrink)·θ + N(0, noise_std²) each step (Ash & Adams 2020;
                   reference here: shrink 1e-4, σ 1e-5).
``L2Init``         θ ← θ − strength·(θ − θ₀) each step; ``penalty()`` = strength/2·‖θ − θ₀‖²
                   (Kumar et al. 2023).
``WeightClipping`` θ ← clip(θ, −κ·s, κ·s) each step, s the bound of the parameter's initial
                   distribution (Elsayed et al. 2024: κ swept 1–5; 2 here).
``ReDo``           every ``every`` steps, units with τ-dormant score ≤ τ get fresh incoming
                   weights, zero outgoing weights and zero optimizer moments (Sokar et al.
                   2023: τ = 0.1; F = 1000 here).
``UPGD``           an optimizer: utility-gated perturbed gradient descent (Elsayed &
                   Mahmood, ICLR 2024: lr 1e-5, weight decay 1e-3, β_u 0.999, σ 1e-3).
``HeadReset``      re-initialise the output head at each task boundary.
``FullReset``      re-initialise the whole network at each task boundary.
=================  ====================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from ponderlife._checks import check_choice, check_int, check_range
from ponderlife.diagnostics import dormancy_scores
from ponderlife.units import (
    ActivationRecorder,
    StepWeights,
    UnitLayer,
    recorded_samples,
    reinitialise_units,
    resolve_unit_layers,
    sample_average,
)


def _parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


class L2:
    """Decoupled weight decay: θ ← (1 − weight_decay)·θ after every optimizer step."""

    def __init__(self, model: nn.Module, *, weight_decay: float = 1e-4):
        self.weight_decay = check_range("weight_decay", weight_decay, 0.0, 1.0)
        self.params = _parameters(model)

    @torch.no_grad()
    def step(self) -> None:
        torch._foreach_mul_(self.params, 1 - self.weight_decay)

    def penalty(self) -> Tensor:
        """The coupled form, ``weight_decay/2 · ‖θ‖²``, to add to the loss instead."""
        return 0.5 * self.weight_decay * sum(p.pow(2).sum() for p in self.params)


class ShrinkPerturb:
    """θ ← (1 − shrink)·θ + ε, ε ~ N(0, noise_std²), after every optimizer step."""

    def __init__(
        self,
        model: nn.Module,
        *,
        shrink: float = 1e-4,
        noise_std: float = 1e-5,
        generator: torch.Generator | None = None,
    ):
        self.shrink = check_range("shrink", shrink, 0.0, 1.0)
        self.noise_std = check_range("noise_std", noise_std, 0.0)
        self.generator = generator
        self.params = _parameters(model)

    @torch.no_grad()
    def step(self) -> None:
        for p in self.params:
            noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype)
            p.mul_(1 - self.shrink).add_(noise.to(p.device), alpha=self.noise_std)


class L2Init:
    """Regularise towards the initial weights θ₀ (captured at construction)."""

    def __init__(self, model: nn.Module, *, strength: float = 1e-2):
        self.strength = check_range("strength", strength, 0.0, 1.0)
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.initial = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def carry_from(self, other: L2Init, *, same_units: bool = True) -> None:
        """Keep ``other``'s θ₀ for the parameters of the same name (this object was built on
        a model that changed: a head that grew, or a model replaced by another, e.g. GDumb's
        fresh copy of the initial model, whose θ₀ is the same either way). A parameter with
        more rows than its θ₀ (a grown classifier) keeps θ₀ for the old rows and takes its
        new rows' current values; a new or reshaped parameter starts from its current
        value."""
        initial = dict(zip(other.names, other.initial, strict=True))
        for index, (name, p) in enumerate(zip(self.names, self.params, strict=True)):
            old = initial.get(name)
            if old is None or old.shape[1:] != p.shape[1:] or old.shape[0] > p.shape[0]:
                continue
            self.initial[index] = torch.cat([old.to(p.device), p.detach()[old.shape[0] :]])

    @torch.no_grad()
    def step(self) -> None:
        for p, p0 in zip(self.params, self.initial, strict=True):
            p.sub_(p - p0, alpha=self.strength)

    def penalty(self) -> Tensor:
        """The coupled form, ``strength/2 · ‖θ − θ₀‖²``, to add to the loss instead (its
        gradient step with learning rate 1 is :meth:`step`)."""
        return (
            0.5
            * self.strength
            * sum((p - p0).pow(2).sum() for p, p0 in zip(self.params, self.initial, strict=True))
        )

    def to(self, device) -> L2Init:
        """Keep θ₀ beside the parameters (a model built on the CPU and moved later)."""
        self.initial = [p0.to(device) for p0 in self.initial]
        return self

    def state_dict(self) -> dict:
        return {"initial": [p.clone() for p in self.initial]}

    def load_state_dict(self, state: dict) -> None:
        initial = list(state["initial"])
        if len(initial) != len(self.params) or any(
            p0.shape != p.shape for p0, p in zip(initial, self.params, strict=True)
        ):
            raise ValueError(
                f"L2Init state holds θ₀ for {len(initial)} tensors of shapes "
                f"{[tuple(p.shape) for p in initial]}, not for this model's "
                f"{[tuple(p.shape) for p in self.params]}"
            )
        self.initial = [p.clone() for p in initial]


def initial_bound(module: nn.Module, param: Tensor) -> float | None:
    """Half-width s of the distribution PyTorch's own initialisation draws ``param`` (a
    parameter of ``module``) from, or None when the module type has no known rule:

    - Linear and convolution weights and biases: U(±1/√fan_in), s = 1/√fan_in;
    - RNN/GRU/LSTM cells and layers: U(±1/√hidden_size);
    - LayerNorm, GroupNorm and batch-norm affine parameters (initialised to 1 and 0): s = 1,
      the scale of the gain.
    """
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        return 1 / math.sqrt(fan_in) if fan_in else None
    if isinstance(module, (nn.RNNCellBase, nn.RNNBase)):
        return 1 / math.sqrt(module.hidden_size)
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)):
        return 1.0
    return None


class WeightClipping:
    """Clip every weight into ±κ·s after every optimizer step (Elsayed, Lan, Lyle & Mahmood
    2024), κ = ``scale``, s the bound of the parameter's initial distribution.

    s is :func:`initial_bound` of the parameter's module, or the largest magnitude the
    parameter had when this object was built, whichever is larger: so a parameter that
    starts outside its module's usual range (a halting head's bias of −3, an embedding's
    N(0, 1) entries) is never clipped below where it started, and a module type without a
    rule is bounded by its own initial values. Build it on the freshly initialised model;
    ``bounds`` (parameter name → s) sets s by hand, e.g. for a parameter initialised to
    zero by a module without a rule, which is refused otherwise.
    """

    def __init__(
        self, model: nn.Module, *, scale: float = 2.0, bounds: dict[str, float] | None = None
    ):
        self.scale = check_range("scale", scale, 0.0, low_inclusive=False)
        bounds = dict(bounds or {})
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        self.bounds: list[float] = []
        for module_name, module in model.named_modules():
            for param_name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                name = f"{module_name}.{param_name}" if module_name else param_name
                bound = bounds.pop(name, None)
                if bound is None:
                    rule = initial_bound(module, p)
                    bound = max(rule or 0.0, float(p.detach().abs().max()) if p.numel() else 0.0)
                    if bound == 0.0:
                        raise ValueError(
                            f"WeightClipping has no initial bound for {name!r}: its "
                            f"{type(module).__name__} module has no known initialisation and "
                            "the parameter starts at zero; give it in bounds={name: s}"
                        )
                self.names.append(name)
                self.params.append(p)
                self.bounds.append(check_range(f"bounds[{name!r}]", float(bound), 0.0))
        if bounds:
            raise ValueError(
                f"WeightClipping bounds name parameters the model does not have: "
                f"{sorted(bounds)}; it has {self.names}"
            )

    @torch.no_grad()
    def step(self) -> None:
        for p, bound in zip(self.params, self.bounds, strict=True):
            limit = self.scale * bound
            p.clamp_(-limit, limit)

    def limits(self) -> dict[str, float]:
        """κ·s per parameter name: the interval each weight is kept in."""
        return {name: self.scale * b for name, b in zip(self.names, self.bounds, strict=True)}

    def carry_from(self, other: WeightClipping, *, same_units: bool = True) -> None:
        """Keep ``other``'s s for the parameters of the same name (this object was built on a
        model that has trained since, whose weights are no longer initial ones)."""
        earlier = dict(zip(other.names, other.bounds, strict=True))
        self.bounds = [earlier.get(n, b) for n, b in zip(self.names, self.bounds, strict=True)]

    def state_dict(self) -> dict:
        return {"bounds": dict(zip(self.names, self.bounds, strict=True))}

    def load_state_dict(self, state: dict) -> None:
        saved = dict(state["bounds"])
        if set(saved) != set(self.names):
            raise ValueError(
                f"WeightClipping state holds bounds for {sorted(saved)}, not for this "
                f"model's parameters {sorted(self.names)}"
            )
        self.bounds = [float(saved[name]) for name in self.names]


class ReDo:
    """Recycle dormant units (Sokar et al. 2023) every ``every`` steps.

    A unit is τ-dormant when its mean |activation| over the latest update's training
    forwards, divided by the layer's mean over units, is ≤ ``tau``. Such units get fresh
    incoming weights (``init`` as in :class:`~ponderlife.ContinualBackprop`), zero outgoing
    weights, and their optimizer state is zeroed. Units are found as for continual
    backprop, or given as ``units``.

    The mean is over every sample and position of every forward recorded in the update,
    exactly as continual backprop averages: a pondering model's N step forwards are
    weighted by ``step_weights`` (N, B) (:func:`ponderlife.ponder_step_weights`), not
    scored on the last step alone.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        *,
        tau: float = 0.1,
        every: int = 1000,
        init: str = "default",
        units: Sequence[UnitLayer] | Callable[[nn.Module], Sequence[UnitLayer]] | None = None,
        generator: torch.Generator | None = None,
    ):
        self.tau = check_range("tau", tau, 0.0)
        self.every = check_int("every", every, 1)
        self.init = check_choice("init", init, ("default", "kaiming"))
        self.optimizer = optimizer
        self.generator = generator
        self.layers = resolve_unit_layers(model, units)
        self.recorder = ActivationRecorder(self.layers)
        self.steps = 0
        self.replaced = {layer.name: 0 for layer in self.layers}

    @torch.no_grad()
    def step(self, step_weights: StepWeights | None = None) -> dict[str, int]:
        """Count a step; on every ``every``-th, recycle the τ-dormant units. Returns the
        units recycled now, per layer. ``step_weights`` as for continual backprop."""
        self.steps += 1
        recycled = {}
        for layer in self.layers:
            records = self.recorder.pop(layer.name)
            recycled[layer.name] = 0
            if self.steps % self.every:
                continue
            if not records:
                raise RuntimeError(
                    f"no training forward recorded for unit layer {layer.name!r} since the "
                    "last step(); call step() once after each optimizer.step()"
                )
            samples, weights = recorded_samples(layer, records, step_weights)
            magnitude = sample_average(samples.abs(), weights).mean(-1)
            units = torch.nonzero(dormancy_scores(magnitude) <= self.tau).flatten()
            if units.numel():
                reinitialise_units(
                    layer, units, self.optimizer, init=self.init, generator=self.generator
                )
            recycled[layer.name] = int(units.numel())
            self.replaced[layer.name] += int(units.numel())
        return recycled

    def remove(self) -> None:
        self.recorder.remove()

    def carry_from(self, other: ReDo, *, same_units: bool = True) -> None:
        """Continue ``other``'s run on this object's layers (rebuilt after the model
        changed): the step count and the recycled counts of layers of the same name."""
        self.steps = other.steps
        for name in self.replaced:
            self.replaced[name] = other.replaced.get(name, 0)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "replaced": dict(self.replaced)}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.replaced = {name: int(count) for name, count in state["replaced"].items()}


class UPGD(torch.optim.Optimizer):
    """Utility-gated perturbed gradient descent, global first-order variant.

    Per weight, the utility is a running average (β_u) of ``−g·θ`` (first-order estimate
    of the loss increase if the weight were removed). It is bias-corrected, divided by the
    largest running utility over all parameters, and squashed: ``s = sigmoid(û / max u)``.
    Useful weights (s → 1) are protected; the rest get gradient plus noise:

        θ ← (1 − lr·weight_decay)·θ − lr·(g + ξ)·(1 − s),  ξ ~ N(0, σ²).

    This is the authors' update (Elsayed & Mahmood's ``FirstOrderGlobalUPGD``) whenever the
    largest running utility is positive. When it is not (every utility ≤ 0, e.g. at the
    first step or when all weights are useless), their division by the maximum either
    fails (0/0) or flips the sign of the gate, so that the *least* useful weights are the
    most protected; here every gate is then s = 1/2 instead, since no weight is known to
    be more useful than another.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-5,
        weight_decay: float = 1e-3,
        beta_utility: float = 0.999,
        sigma: float = 1e-3,
        generator: torch.Generator | None = None,
    ):
        check_range("lr", lr, 0.0)
        check_range("weight_decay", weight_decay, 0.0)
        check_range("beta_utility", beta_utility, 0.0, 1.0, high_inclusive=False)
        check_range("sigma", sigma, 0.0)
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "beta_utility": beta_utility,
            "sigma": sigma,
        }
        super().__init__(params, defaults)
        self.generator = generator

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        active = [
            (group, p) for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        largest = None
        for group, p in active:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["avg_utility"] = torch.zeros_like(p)
            state["step"] += 1
            beta = group["beta_utility"]
            state["avg_utility"].mul_(beta).add_(-p.grad * p, alpha=1 - beta)
            peak = state["avg_utility"].max()
            largest = peak if largest is None else torch.maximum(largest, peak)
        # With no positive utility anywhere (e.g. the first step from zero gradients) no
        # weight is more useful than another: every gate is sigmoid(0) = 1/2, not 0/0.
        scale = 1 / largest if largest is not None and largest > 0 else 0.0
        for group, p in active:
            state = self.state[p]
            correction = 1 - group["beta_utility"] ** state["step"]
            gate = torch.sigmoid(state["avg_utility"] / correction * scale)
            noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
            p.mul_(1 - group["lr"] * group["weight_decay"])
            p.add_((p.grad + group["sigma"] * noise) * (1 - gate), alpha=-group["lr"])
        return loss


def _reset_method(module: nn.Module):
    """The module's own initialisation: ``reset_parameters`` or, for
    ``nn.MultiheadAttention`` (packed input projection), ``_reset_parameters``."""
    for name in ("reset_parameters", "_reset_parameters"):
        method = getattr(module, name, None)
        if callable(method):
            return method
    return None


def _post_order(module: nn.Module):
    for child in module.children():
        yield from _post_order(child)
    yield module


def _check_resettable(module: nn.Module, method: str) -> None:
    """Refuse, at construction, a model with parameters no initialisation would redraw."""
    missing = [
        f"{name}.{param_name}" if name else param_name
        for name, sub in module.named_modules()
        if _reset_method(sub) is None
        for param_name, _ in sub.named_parameters(recurse=False)
    ]
    if missing:
        raise ValueError(
            f"{method} cannot re-initialise {', '.join(missing)}: their modules have no "
            "reset_parameters(); give each such module one that redraws its parameters"
        )


def _reset_modules(module: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Re-run every submodule's own initialisation, children before parents (as
    construction does: ``nn.MultiheadAttention`` zeroes its output projection's bias after
    that Linear drew one), and drop the optimizer state of every parameter."""
    with torch.no_grad():
        for sub in _post_order(module):
            reset = _reset_method(sub)
            if reset is not None:
                reset()
    if optimizer is not None:
        for p in module.parameters():
            optimizer.state.pop(p, None)


class HeadReset:
    """Re-initialise ``head`` (e.g. the output layer) and drop its optimizer state at each
    task boundary."""

    def __init__(self, head: nn.Module, optimizer: torch.optim.Optimizer | None = None):
        _check_resettable(head, "HeadReset")
        self.head = head
        self.optimizer = optimizer

    def task_boundary(self) -> None:
        _reset_modules(self.head, self.optimizer)


class FullReset:
    """Re-initialise the whole model and drop all optimizer state at each task boundary:
    training from scratch on every task, the reference point for full plasticity.

    Every parameter is redrawn by its module's own initialisation, so the model is
    distributed as when it was constructed (a step function's ``halting_bias`` included,
    see :class:`~ponderlife.steps.HaltingHead`); a model with a parameter no module
    initialises is refused at construction."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None):
        _check_resettable(model, "FullReset")
        self.model = model
        self.optimizer = optimizer

    def task_boundary(self) -> None:
        _reset_modules(self.model, self.optimizer)
