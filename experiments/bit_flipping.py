"""Slowly-changing regression (bit-flipping): loss of plasticity and what prevents it.

    python -m experiments.bit_flipping with bp                # plain backprop (ReLU, SGD 0.01)
    python -m experiments.bit_flipping with cbp seed=1        # continual backprop
    python -m experiments.bit_flipping with l2 | shrink_perturb | l2_init | redo | upgd
    python -m experiments.bit_flipping with linear            # a linear learner, for reference
    python -m experiments.bit_flipping resume runs/bit_flipping/3

One example per update (batch 1), as in the reference. Every ``bin_size`` examples the run
logs, at step = examples seen so far, plain floats named like the stream study's
(``<group>.<metric>``): the bin's mean squared error ``train.squared_error``; diagnostics
of the hidden layer on a fixed probe batch, ``plasticity.dead_fraction``,
``plasticity.dormant_fraction``, ``plasticity.effective_rank``,
``plasticity.approximate_rank``, ``plasticity.stable_rank``, ``plasticity.feature_norm``
(none for the linear learner); ``plasticity.weight_magnitude``,
``plasticity.gradient_norm`` (of the bin's last update) and ``plasticity.units_replaced``
(cumulative). It prints a progress line ending ``(<elapsed>, ETA <left>)`` and writes a
checkpoint. A non-finite loss stops the run at its example; weights are checked for NaN
or ±inf once per bin (a check per batch-1 update would cost a quarter of the iteration),
so non-finite weights stop it naming the bin; the checkpoint before it is kept. Runs are
stored under ``runs/bit_flipping/<id>/``; a run resumed from a checkpoint of before these
names (``stream.squared_error``, ``probe.*``, ``model.*``,
``method.units_replaced``) re-logs its history under the old names and continues under
the new ones.
"""

from __future__ import annotations

import math
import time

import torch
from sacred import Experiment
from sacred.utils import apply_backspaces_and_linefeeds
from torch import nn

from experiments import _runs
from experiments._config import check, choice_configs, guard
from experiments._progress import timing
from experiments._runs import run_directory
from ponderlife import ContinualBackprop, diagnostics
from ponderlife.baselines import L2, UPGD, L2Init, ReDo, ShrinkPerturb
from ponderlife.checkpoint import (
    load_checkpoint,
    non_finite_parameters,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from ponderlife.tasks import BitFlippingStream

ex = guard(Experiment("bit_flipping", save_git_info=False))  # unknown keys, seed: see _config
METHODS = ("bp", "cbp", "l2", "shrink_perturb", "l2_init", "redo", "upgd")
ex.captured_out_filter = apply_backspaces_and_linefeeds


@ex.config
def config():
    # ---- stream (continual-backprop reference problem) -----------------------------------
    num_slow = 15  # slowly changing input bits; int ≥ 1 (reference: 15)
    num_random = 5  # bits redrawn every example; int ≥ 0 (reference: 5)
    period = 10_000  # examples between changes of the slow bits; int ≥ 1 (reference: 10,000)
    flip = "one"  # what changes: "one" slow bit flips, or "all" are redrawn (reference code)
    num_features = 100  # threshold units of the target network; int ≥ 1 (reference: 100)
    beta = 0.7  # target threshold parameter; ≥ 0 (reference: 0.7)

    # ---- learner -------------------------------------------------------------------------
    hidden_size = 5  # hidden units; int ≥ 1 (reference: 5)
    activation = "relu"  # "relu", "tanh", "sigmoid", "leaky_relu", or "linear" (no hidden layer)
    learning_rate = 0.01  # SGD step size; in (0, 1000] (reference: 0.01)
    examples = 1_000_000  # stream length = number of updates (batch 1); int ≥ 1

    # ---- plasticity method ---------------------------------------------------------------
    method = "bp"  # "bp", "cbp", "l2", "shrink_perturb", "l2_init", "redo" or "upgd"
    replacement_rate = 1e-4  # cbp: ρ, fraction of eligible units replaced per step; [0, 1]
    maturity_threshold = 100  # cbp: steps before a unit may be replaced; int ≥ 0
    decay_rate = 0.99  # cbp: running-average decay η; [0, 1)
    utility = "adaptable_contribution"  # cbp: "contribution", "mean_corrected_contribution"
    #   or "adaptable_contribution" (the reference's choice for this problem)
    init = "default"  # cbp / redo: new weights from the layer's own init, or "kaiming"
    bias_transfer = True  # cbp: move a removed unit's mean contribution into the next bias;
    #   true or false
    weight_decay = 1e-4  # l2: per-step decoupled decay; [0, 1]
    shrink = 1e-4  # shrink_perturb: per-step shrink factor; [0, 1]
    noise_std = 1e-5  # shrink_perturb: std of the per-step Gaussian perturbation; ≥ 0
    l2_init_strength = 1e-4  # l2_init: per-step pull towards the initial weights; [0, 1]
    redo_tau = 0.1  # redo: τ-dormancy threshold; ≥ 0 (Sokar et al.: 0.1)
    redo_every = 1000  # redo: steps between recycling rounds; int ≥ 1
    upgd_weight_decay = 1e-3  # upgd: weight decay; ≥ 0 (Elsayed & Mahmood: 1e-3)
    upgd_sigma = 1e-3  # upgd: perturbation std; ≥ 0 (1e-3)
    upgd_beta_utility = 0.999  # upgd: utility running-average decay; [0, 1) (0.999)

    # ---- logging and runtime -------------------------------------------------------------
    bin_size = 10_000  # examples per logged point (and per checkpoint); int ≥ 1
    probe_size = 2000  # fixed random inputs for the diagnostics; int ≥ 1 (reference: 2000)
    num_threads = 1  # torch threads; int ≥ 1
    resume_from = None  # run folder or checkpoint file to continue from (see `resume`)
    # seed (Sacred's): int in [0, 2**32 − 1]; seeds the stream, the learner and the probe


# One named config per method (``with cbp``); their hyperparameters are the keys above.
choice_configs(ex, "method", METHODS)


@ex.named_config
def linear():
    # A linear learner (no hidden layer): the reference's lower bar.
    activation = "linear"


# ======================================================================================
# Plumbing
# ======================================================================================

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


def validate(cfg: dict) -> None:
    """Fail before any work with a message naming the bad key and its allowed values."""
    for key in ("num_slow", "period", "num_features", "hidden_size", "examples"):
        check.integer(cfg, key, 1)
    for key in ("bin_size", "probe_size", "num_threads", "redo_every"):
        check.integer(cfg, key, 1)
    check.integer(cfg, "num_random", 0)
    check.integer(cfg, "maturity_threshold", 0)
    check.choice(cfg, "flip", ("one", "all"))
    check.choice(cfg, "activation", (*ACTIVATIONS, "linear"))
    check.choice(cfg, "method", METHODS)
    check.choice(
        cfg, "utility", ("contribution", "mean_corrected_contribution", "adaptable_contribution")
    )
    check.choice(cfg, "init", ("default", "kaiming"))
    check.learning_rate(cfg)
    check.boolean(cfg, "bias_transfer")
    check.number(cfg, "beta", 0.0)
    for key in ("replacement_rate", "weight_decay", "shrink", "l2_init_strength"):
        check.number(cfg, key, 0.0, 1.0)
    for key in ("decay_rate", "upgd_beta_utility"):
        check.number(cfg, key, 0.0, 1.0, high_open=True)
    for key in ("noise_std", "redo_tau", "upgd_weight_decay", "upgd_sigma"):
        check.number(cfg, key, 0.0)
    if cfg["activation"] == "linear" and cfg["method"] in ("cbp", "redo"):
        raise ValueError(
            f"config 'method' {cfg['method']!r} needs hidden units, not a linear learner"
        )
    check.resume_from(cfg, ex.path)


def build_learner(cfg: dict, inputs: int) -> nn.Sequential:
    if cfg["activation"] == "linear":
        return nn.Sequential(nn.Linear(inputs, 1))
    hidden = cfg["hidden_size"]
    return nn.Sequential(
        nn.Linear(inputs, hidden), ACTIVATIONS[cfg["activation"]](), nn.Linear(hidden, 1)
    )


def build_optimizer(cfg: dict, model: nn.Module) -> torch.optim.Optimizer:
    if cfg["method"] == "upgd":
        return UPGD(
            model.parameters(),
            lr=cfg["learning_rate"],
            weight_decay=cfg["upgd_weight_decay"],
            beta_utility=cfg["upgd_beta_utility"],
            sigma=cfg["upgd_sigma"],
        )
    return torch.optim.SGD(model.parameters(), lr=cfg["learning_rate"])


def build_method(cfg: dict, model: nn.Module, optimizer):
    """The object whose ``step()`` runs after every optimizer step (None for bp / upgd)."""
    method = cfg["method"]
    if method == "cbp":
        return ContinualBackprop(
            model,
            optimizer,
            replacement_rate=cfg["replacement_rate"],
            maturity_threshold=cfg["maturity_threshold"],
            decay_rate=cfg["decay_rate"],
            utility=cfg["utility"],
            init=cfg["init"],
            bias_transfer=cfg["bias_transfer"],
        )
    if method == "l2":
        return L2(model, weight_decay=cfg["weight_decay"])
    if method == "shrink_perturb":
        return ShrinkPerturb(model, shrink=cfg["shrink"], noise_std=cfg["noise_std"])
    if method == "l2_init":
        return L2Init(model, strength=cfg["l2_init_strength"])
    if method == "redo":
        return ReDo(
            model, optimizer, tau=cfg["redo_tau"], every=cfg["redo_every"], init=cfg["init"]
        )
    return None


def units_replaced(method) -> float:
    if isinstance(method, ContinualBackprop):
        return float(sum(method.replacements.values()))
    if isinstance(method, ReDo):
        return float(sum(method.replaced.values()))
    return 0.0


@torch.no_grad()
def probe_metrics(model: nn.Sequential, probe: torch.Tensor) -> dict[str, float]:
    metrics = {"plasticity.weight_magnitude": diagnostics.average_weight_magnitude(model)}
    if len(model) == 1:
        return metrics
    model.eval()  # so plasticity methods do not record the probe as a training forward
    hidden = model[1](model[0](probe))
    model.train()
    metrics.update(
        {
            "plasticity.dead_fraction": diagnostics.dead_fraction(hidden),
            "plasticity.dormant_fraction": diagnostics.dormant_fraction(hidden),
            **{f"plasticity.{name}": value for name, value in diagnostics.ranks(hidden).items()},
            "plasticity.feature_norm": diagnostics.feature_norm(hidden),
        }
    )
    return metrics


@ex.main
def main(_config: dict, _run, seed: int) -> dict:
    cfg = _runs.start(_config, seed, validate)
    stream = BitFlippingStream(
        num_slow=cfg["num_slow"],
        num_random=cfg["num_random"],
        period=cfg["period"],
        flip=cfg["flip"],
        num_features=cfg["num_features"],
        beta=cfg["beta"],
        seed=seed,
    )
    probe = torch.randint(
        0,
        2,
        (cfg["probe_size"], stream.num_inputs),
        generator=torch.Generator().manual_seed(seed + 2),
    ).float()
    model = build_learner(cfg, stream.num_inputs)
    optimizer = build_optimizer(cfg, model)
    method = build_method(cfg, model, optimizer)

    done, first_error, history = 0, None, _runs.History(_run)
    if cfg["resume_from"] is not None:
        source = _runs.resume_checkpoint(cfg["resume_from"])
        state = load_checkpoint(source, experiment=ex.path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stream.load_state_dict(state["stream"])
        if method is not None and "method" in state:
            method.load_state_dict(state["method"])
        restore_rng_states(state["rng"])
        done = int(state["examples"])
        first_error = state.get("first_error")
        history.replay(state.get("history", {}))
        _runs.continued(_run, cfg, ex.path)
        print(f"resumed from {source} at example {done}")
    directory = run_directory(_run)
    began, resumed_at = time.perf_counter(), done
    step_method = method.step if method is not None else None
    last_error = None
    while done < cfg["examples"]:
        count = min(cfg["bin_size"], cfg["examples"] - done)
        batch = stream.next(count)
        total = 0.0
        for offset, (x, y) in enumerate(zip(batch.x.split(1), batch.y.split(1), strict=True)):
            loss = (model(x) - y).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step_method is not None:
                step_method()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"non-finite training loss ({loss_value}) at example {done + offset + 1}; "
                    f"the metrics and the checkpoint up to example {done} are kept"
                )
            total += loss_value
        # Weights are checked once per bin (a check per update cost a quarter of this tiny
        # network's iteration); a non-finite weight almost always makes the next loss
        # non-finite, which the loop above catches at its example.
        broken = non_finite_parameters(model)  # after the whole update, method included
        if broken:
            raise FloatingPointError(
                f"non-finite weights ({', '.join(broken)}) after an update among examples "
                f"{done + 1}–{done + count}, whose losses were all finite, so an update made "
                f"them non-finite; the metrics and the checkpoint up to example {done} are kept"
            )
        error = total / count
        done += count
        first_error = error if first_error is None else first_error
        last_error = error
        history.log("train.squared_error", error, done)
        history.log("plasticity.gradient_norm", diagnostics.gradient_norm(model), done)
        history.log("plasticity.units_replaced", units_replaced(method), done)
        for name, value in probe_metrics(model, probe).items():
            history.log(name, value, done)
        elapsed = time.perf_counter() - began
        print(
            f"[bit_flipping {cfg['method']}] example {done}/{cfg['examples']}  "
            f"error {error:.3f}  ({timing(done, cfg['examples'], elapsed, start=resumed_at)})"
        )
        if directory is not None:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "stream": stream.state_dict(),
                "rng": rng_states(),
                "examples": done,
                "first_error": first_error,
                "history": history.entries,
            }
            if method is not None and hasattr(method, "state_dict"):
                state["method"] = method.state_dict()
            save_checkpoint(directory / "checkpoint.pt", state, experiment=ex.path)
    _run.info["wall_seconds"] = time.perf_counter() - began
    return {"first_bin_error": first_error, "last_bin_error": last_error}


if __name__ == "__main__":
    _runs.main(ex)
