"""Avalanche metrics for pondering, plasticity and difficulty, emitted once per experience.

Every value is a plain float, named ``<Family>/<metric>/<phase>_phase/<stream>_stream/Exp<k>``
like Avalanche's own metrics (``Ponder/halting_step_mean/eval_phase/test_stream/Exp002``):

* :class:`PonderingMetrics` — mean and 90th-percentile halting step, expected steps,
  entropy of the halting distribution and KL to the geometric prior, on the training
  experience (``train_phase``) and on each evaluated experience (``eval_phase``);
* :class:`PlasticityMetrics` — units replaced (total and per layer), dead / dormant
  fractions, effective, approximate and stable rank, feature norm of the hidden units on a
  fixed probe batch of the experience just trained, average weight magnitude, and the mean
  gradient norm over the experience's updates (``train_phase``);
* :class:`DifficultyMetrics` — for streams whose samples carry a difficulty tag
  (``mbatch[2]``, see :mod:`strategies.streams`): mean halting step per difficulty level
  (``Difficulty/halting_step/d<level>/...``) and its Spearman rank correlation with the
  difficulty, per evaluated experience.

Per-iteration work is one detached copy of the per-sample values; everything else happens
at the end of an experience, so the metrics add little to a training loop.

:func:`scheme_name` maps any Avalanche metric name, these and Avalanche's own (or a user's
``PluginMetric``), onto the study's one naming scheme ``<group>.<metric>[.d<level>][.exp<j>]``
(see its docstring), so that Sacred, Omniboard and TensorBoard get one series per name with
the experience index as the step.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import defaultdict

import torch
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricValue
from avalanche.evaluation.metric_utils import get_metric_name
from torch import Tensor, nn

from ponderlife import diagnostics, kl_to_geometric
from ponderlife._checks import check_int, check_range
from ponderlife.units import ActivationRecorder, find_unit_layers
from strategies.datasets import tensor_source

__all__ = [
    "DifficultyMetrics",
    "PlasticityMetrics",
    "PonderingMetrics",
    "halting_entropy",
    "scheme_name",
    "spearman",
]


def halting_entropy(p: Tensor) -> Tensor:
    """Entropy −Σ_n p_n log p_n of each column of p (N, B), in nats; 0·log 0 = 0."""
    return -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(0)


def _ranks(values: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank."""
    values = values.double()
    _, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).double()
    return (last - (counts.double() - 1) / 2)[inverse]


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation of two 1-d tensors (NaN when either is constant)."""
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / denominator if denominator > 0 else math.nan


def _emit(metric, strategy, family: str, values: dict[str, float]) -> list[MetricValue]:
    step = strategy.clock.train_iterations
    return [
        MetricValue(
            metric,
            get_metric_name(f"{family}/{key}", strategy, add_experience=True, add_task=False),
            float(value),
            step,
        )
        for key, value in values.items()
    ]


def _halting_distribution(output) -> Tensor | None:
    """(N, B) halting distribution of a PonderNet (p) or ACT (weights) output."""
    for field in ("p", "weights"):
        if hasattr(output, field):
            return getattr(output, field).detach()
    return None


class _PerExperience(PluginMetric[dict]):
    """Collects per-sample values during an experience (train or eval) and reduces them at
    its end."""

    family = ""

    def __init__(self):
        super().__init__()
        # One store per phase: a periodic evaluation inside training must not wipe what
        # the training experience collected so far.
        self._stores: dict[str, dict[str, list[Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }

    def reset(self) -> None:
        for phase in self._stores:
            self._stores[phase] = defaultdict(list)

    def result(self) -> dict:
        return {phase: dict(store) for phase, store in self._stores.items()}

    def _collect(self, strategy, store: dict[str, list[Tensor]]) -> None:
        raise NotImplementedError

    def _summary(self, strategy, store: dict[str, list[Tensor]]) -> dict[str, float]:
        raise NotImplementedError

    def _finish(self, strategy, phase: str) -> list[MetricValue]:
        store = self._stores[phase]
        values = self._summary(strategy, store) if store else {}
        self._stores[phase] = defaultdict(list)
        return _emit(self, strategy, self.family, values)

    def before_training_exp(self, strategy):
        self._stores["train"] = defaultdict(list)

    def before_eval_exp(self, strategy):
        self._stores["eval"] = defaultdict(list)

    def after_training_iteration(self, strategy):
        self._collect(strategy, self._stores["train"])

    def after_eval_iteration(self, strategy):
        self._collect(strategy, self._stores["eval"])

    def after_training_exp(self, strategy):
        return self._finish(strategy, "train")

    def after_eval_exp(self, strategy):
        return self._finish(strategy, "eval")


class PonderingMetrics(_PerExperience):
    """Halting depth of a :class:`~strategies.PonderTemplate` (nothing for other
    strategies). ``kl`` uses the strategy's ``lambda_p`` (forward direction).

    With PonderNet's evaluation early exit, a sample's halting distribution is not
    computed past its halting step, so expected steps, entropy and KL would describe a
    truncated distribution: only the halting-step statistics are emitted then (evaluate
    with ``early_exit=False`` to get all five).
    """

    family = "Ponder"

    def _collect(self, strategy, store) -> None:
        output = getattr(strategy, "ponder_output", None)
        if output is None:
            return
        store["halting_step"].append(output.halting_step.detach().float())
        if not getattr(strategy, "ponder_distribution_complete", True):
            return
        store["expected_steps"].append(output.expected_steps.detach().float())
        p = _halting_distribution(output)
        if p is not None:
            store["halting_entropy"].append(halting_entropy(p.float()))
            parts = getattr(strategy, "ponder_loss_parts", None)
            lambda_p = getattr(strategy, "lambda_p", None)
            if parts is not None and hasattr(parts, "regularisation"):
                store["kl"].append(parts.regularisation.detach().float())
            elif lambda_p is not None and hasattr(output, "log_p"):
                kl = kl_to_geometric(p, lambda_p, log_p=output.log_p.detach())
                store["kl"].append(kl.float())

    def _summary(self, strategy, store) -> dict[str, float]:
        values = {name: torch.cat(parts) for name, parts in store.items()}
        halting = values.pop("halting_step")
        summary = {
            "halting_step_mean": float(halting.mean()),
            "halting_step_p90": float(torch.quantile(halting, 0.9)),
        }
        summary.update({name: float(v.mean()) for name, v in values.items()})
        return summary


class DifficultyMetrics(_PerExperience):
    """Mean halting step per difficulty level and its Spearman correlation with difficulty,
    on evaluated experiences whose minibatches carry a difficulty tag as ``mbatch[2]``."""

    family = "Difficulty"

    def _collect(self, strategy, store) -> None:
        output = getattr(strategy, "ponder_output", None)
        if output is None or strategy.mbatch is None or len(strategy.mbatch) < 4:
            return
        store["difficulty"].append(strategy.mbatch[2].detach().flatten().float())
        store["halting_step"].append(output.halting_step.detach().float())

    def after_training_iteration(self, strategy):
        return None  # evaluation only: the training unroll does not sample halting steps

    def _summary(self, strategy, store) -> dict[str, float]:
        difficulty = torch.cat(store["difficulty"]).cpu()
        halting = torch.cat(store["halting_step"]).cpu()
        summary = {}
        correlation = spearman(difficulty, halting)
        if math.isfinite(correlation):  # undefined when every sample has one difficulty
            summary["halting_step_spearman"] = correlation
        for level in torch.unique(difficulty).tolist():
            chosen = difficulty == level
            summary[f"halting_step/d{round(level)}"] = float(halting[chosen].mean())
        summary["difficulty_mean"] = float(difficulty.mean())
        return summary


class PlasticityMetrics(PluginMetric[dict]):
    """Plasticity diagnostics after each training experience.

    The probe batch is the first ``probe_size`` training samples of the experience, drawn
    once per experience. Hidden activations are those of the unit layers continual backprop
    manages (:func:`ponderlife.find_unit_layers`, tracing the probe batch, or ``units``);
    for a pondering model the activations of every computed step are stacked as rows. The
    probe forward runs in evaluation mode under a forked RNG, so it changes neither the
    model nor the stream.

    A unit is *dead* when it is zero on every probe row and *dormant* when it is nonzero
    on fewer than ``dormant_threshold`` of the probe rows (the reference's 1%; rows are
    samples × positions for conv layers), as :func:`ponderlife.diagnostics.dormant_fraction`
    measures it: a fraction of inputs, not an activation magnitude.
    """

    family = "Plasticity"

    def __init__(
        self,
        *,
        probe_size: int = 256,
        dormant_threshold: float = 0.01,
        gradient_every: int = 10,
        units=None,
    ):
        super().__init__()
        self.probe_size = check_int("probe_size", probe_size, 1)
        self.dormant_threshold = check_range("dormant_threshold", dormant_threshold, 0.0, 1.0)
        self.gradient_every = check_int("gradient_every", gradient_every, 1)
        self._iterations = 0
        self.units = units
        self._grad_norms: list[float] = []
        self._warned = False

    def reset(self) -> None:
        self._grad_norms = []
        self._iterations = 0

    def result(self) -> dict:
        return {"gradient_norms": list(self._grad_norms)}

    def _warn_once(self, why: str) -> None:
        """Say once per metric why the unit diagnostics (dead, dormant, ranks, feature
        norm) are missing; weight magnitude and gradient norm are still logged."""
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"PlasticityMetrics logs no unit diagnostics: {why}. Pass units= to choose "
                "the layers (see ponderlife.unit_layer).",
                stacklevel=3,
            )

    def before_training_exp(self, strategy):
        self.reset()

    def after_backward(self, strategy):
        self._iterations += 1
        if (self._iterations - 1) % self.gradient_every:
            return
        grads = [p.grad for p in strategy.model.parameters() if p.grad is not None]
        if grads:  # one fused norm, no host sync: reduced at the end of the experience
            self._grad_norms.append(torch.nn.utils.get_total_norm(grads).detach())

    def after_training_exp(self, strategy):
        values = self._probe(strategy)
        values["weight_magnitude"] = diagnostics.average_weight_magnitude(strategy.model)
        if self._grad_norms:
            values["gradient_norm"] = float(torch.stack(self._grad_norms).mean())
        replaced = _replacements(strategy)
        if replaced is not None:
            values["units_replaced"] = float(sum(replaced.values()))
            for name, count in replaced.items():
                values[f"units_replaced/{name.replace('.', '_') or 'root'}"] = float(count)
        self.reset()
        return _emit(self, strategy, self.family, values)

    @torch.no_grad()
    def _probe(self, strategy) -> dict[str, float]:
        model: nn.Module = strategy.model
        dataset = strategy.experience.dataset
        size = min(self.probe_size, len(dataset))
        tensors = tensor_source(dataset)
        if tensors is not None:
            x = tensors[0][:size]
        else:
            x = torch.stack([dataset[i][0] for i in range(size)])
        x = x.to(strategy.device)
        try:
            layers = self.units if self.units is not None else find_unit_layers(model, (x,))
        except ValueError as error:
            self._warn_once(f"no hidden units found to probe ({error})")
            return {}
        recorder = ActivationRecorder(layers, training_only=False)
        was_training = model.training
        try:
            model.eval()
            # The probe must not consume random numbers of the run (PonderNet samples its
            # halting on the model's device), on the CPU or on an accelerator.
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                model(x)
        finally:
            model.train(was_training)
            recorder.remove()
        records = [recorder.pop(layer.name) for layer in layers]
        features = [torch.cat(rs) for rs in records if rs]
        if not features:
            names = ", ".join(layer.name or "(the model)" for layer in layers)
            self._warn_once(f"the probe forward recorded no activation of {names}")
            return {}
        # Layers are averaged: one number per diagnostic.
        per_layer = [
            {
                "dead_fraction": diagnostics.dead_fraction(f),
                "dormant_fraction": diagnostics.dormant_fraction(f, self.dormant_threshold),
                **diagnostics.ranks(f),
                "feature_norm": diagnostics.feature_norm(f),
            }
            for f in features
        ]
        return {key: sum(d[key] for d in per_layer) / len(per_layer) for key in per_layer[0]}


def _replacements(strategy) -> dict[str, int] | None:
    """Cumulative units replaced per layer by a CBP or ReDo plugin, if one is attached."""
    for plugin in strategy.plugins:
        if hasattr(plugin, "replacements") and plugin.core is not None:
            return plugin.replacements
        core = getattr(plugin, "core", None)
        if core is not None and hasattr(core, "replaced"):
            return dict(core.replaced)
    return None


# ---- metric names --------------------------------------------------------------------------

# Avalanche's accuracy and loss families: one scheme name each, whatever their granularity
# (epoch in training; experience or stream in evaluation, told apart by the .exp suffix).
_STANDARD = {
    "Top1_Acc_Exp": "accuracy",
    "Top1_Acc_Stream": "accuracy",
    "Top1_Acc_Epoch": "accuracy",
    "Loss_Exp": "loss",
    "Loss_Stream": "loss",
    "Loss_Epoch": "loss",
}


def _sanitised(text: str) -> str:
    """``"ExperienceBWT/top-1"`` → ``"experiencebwt_top_1"``: lower case, runs of anything
    outside [a-z0-9_] one underscore (Sacred, MongoDB and TensorBoard all take these)."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", text.lower())).strip("_")


def _ours(family: str, rest: list[str], group: str, suffix: str) -> str | None:
    """The scheme names of this module's families; None for the values the study logs
    under another name or not at all."""
    if family == "Ponder":
        return f"{group}.{rest[0]}{suffix}"
    if family == "Difficulty":
        if group == "eval" and rest[0] == "halting_step":
            return f"eval.halting_step.{rest[1]}{suffix}"
        if group == "eval" and rest[0] == "halting_step_spearman":
            return f"eval.difficulty_spearman{suffix}"
        # difficulty_mean: the mean tag of the evaluated test set, which the study logs once
        # per experience from the training samples as stream.difficulty.
        return None
    # Plasticity: diagnostics of the experience just trained, one series per diagnostic.
    return "plasticity." + "_".join(rest) if group == "train" else None


def scheme_name(name: str, experience: int | None = None, phase: str = "eval") -> str | None:
    """The study's name for an Avalanche metric name, or None when the value is not current.

    Avalanche names a value ``<metric>/<phase>_phase/<stream>_stream[/Task<t>][/Exp<j>]``
    (``<metric>`` may hold slashes). The scheme name is ``<group>.<metric>[.exp<j>]``:

    * group ``train`` for ``train_phase`` values, ``eval`` for ``eval_phase`` ones (a name
      without a phase takes ``phase``); a training value of an experience other than
      ``experience`` (when given) is stale and gives None;
    * ``.exp<j>`` (three digits) for an evaluation value of experience j; training values
      describe the experience just trained and need none;
    * ``<metric>``: accuracy and loss for Avalanche's ``Top1_Acc_*`` and ``Loss_*``
      (epoch, experience and stream granularity alike); this module's families by their
      own rules (``Ponder/kl`` → ``kl``, ``Difficulty/halting_step/d3`` →
      ``halting_step.d3``, ``Plasticity/units_replaced/fc1`` →
      ``plasticity.units_replaced_fc1``); any other metric (another Avalanche metric, a
      user's ``PluginMetric``) by its name, lower-cased, slashes and anything outside
      [a-z0-9_] turned into underscores: ``MyMetric/eval_phase/test_stream/Task000/Exp003``
      → ``eval.mymetric.exp003``, ``Time_Epoch/train_phase/train_stream/Task000`` →
      ``train.time_epoch``.
    """
    parts = name.split("/")
    at = next((i for i, p in enumerate(parts) if p.endswith("_phase")), None)
    if at is None:
        core, tail = parts, []
    else:
        core, tail, phase = parts[:at], parts[at + 1 :], parts[at].removesuffix("_phase")
    if not core or not core[0]:
        raise ValueError(f"{name!r} is not an Avalanche metric name (<metric>/<phase>_phase/...)")
    exp = next((int(p[3:]) for p in tail if p.startswith("Exp") and p[3:].isdigit()), None)
    if phase == "train":
        if exp is not None and experience is not None and exp != experience:
            return None
        group, suffix = "train", ""
    else:
        group, suffix = "eval", ("" if exp is None else f".exp{exp:03d}")
    family, rest = core[0], core[1:]
    if family in _STANDARD:
        return f"{group}.{_STANDARD[family]}{suffix}"
    if family in ("Ponder", "Difficulty", "Plasticity") and rest:
        return _ours(family, rest, group, suffix)
    return f"{group}.{_sanitised('_'.join(core))}{suffix}"
