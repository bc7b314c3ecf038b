"""Parity (PonderNet §3.1): PonderNet versus ACT versus fixed depth on the paper's benchmark.

    python -m experiments.parity                          # default config (PonderNet, P = 16)
    python -m experiments.parity with act                 # a named config
    python -m experiments.parity with paper_extrapolation seed=3
    python -m experiments.parity print_config with act    # every key, documented
    python -m experiments.parity print_named_configs      # every named config, described
    python -m experiments.parity_demo --seeds 0 1         # `small` for PonderNet and ACT
    python -m experiments.parity resume runs/parity/4     # continue a killed run

Runs are stored under ``runs/parity/<id>/`` (Sacred FileStorageObserver; set
``PONDERLIFE_RUNS`` to store them elsewhere). Every ``eval_every`` updates (the step of
every metric is the update) the run logs plain floats named like the stream study's,
``<group>.<metric>[.d<level>]``:

- ``train.<metric>``: means over the updates since the last evaluation (``loss``,
  ``accuracy``, ``halting_step``, ``expected_steps``, ``unroll_steps`` and the model's
  loss parts);
- ``interpolation.<metric>`` and ``extrapolation.<metric>`` (``accuracy``,
  ``halting_step``, ``expected_steps``): means over each fixed test set;
- ``eval.<metric>.d<k>`` for the same three metrics and every number of nonzero entries k
  in the test sets (the difficulty level, as in the parity stream).

It prints a progress line ending ``(<elapsed>, ETA <left>)``; ``info.json`` holds the
final per-k results of each split (``by_nonzero``). A run resumed from a checkpoint
written before the ``eval.*.d<k>`` metrics existed logs them from its own evaluations on.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from sacred import Experiment
from sacred.utils import apply_backspaces_and_linefeeds
from torch import Tensor

from experiments import _runs
from experiments._config import check, choice_configs, guard
from experiments._progress import timing
from experiments._runs import run_directory
from ponderlife import (
    ACT,
    FixedDepth,
    GRUStep,
    PonderNet,
    ResidualMLPStep,
    RNNStep,
    model_loss,
)
from ponderlife.checkpoint import (
    load_checkpoint,
    non_finite_parameters,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from ponderlife.tasks import ParityBatch, parity_batch, parity_nonzero_range

ex = guard(Experiment("parity", save_git_info=False))  # unknown keys, seed: see _config
ex.captured_out_filter = apply_backspaces_and_linefeeds


@ex.config
def config():
    # The defaults come from the P = 16 extrapolation recipe sweep (docs/parity_recipe.md):
    # RNN-64, Adam 3e-3, 60,000 updates. It learns the trained range but does not
    # extrapolate: 0.58 ± 0.05 on k > 8 (3 seeds; goal 0.90). Weight decay 0.1, layer norm
    # or β = 0.1 on top of it reach 0.61–0.64 (3 seeds each), not clearly better.
    # ---- task --------------------------------------------------------------------------
    size = 16  # P, entries per input vector; int ≥ 2 (paper: 64 interpolation, 96 extrapolation)
    split = "extrapolation"  # "interpolation": train and test k ∈ 1..P;
    #   "extrapolation": train k ∈ 1..P/2, test on k ∈ 1..P/2 and k ∈ P/2+1..P

    # ---- model -------------------------------------------------------------------------
    model = "pondernet"  # "pondernet", "act" or "fixed" (fixed-depth recurrence)
    step = "rnn"  # step function: "rnn" (tanh RNN cell, the paper's), "gru" or "mlp"
    hidden_size = 64  # units of the step function; int ≥ 1 (paper: 128)
    max_steps = 20  # N, most steps per input; int ≥ 1 (paper: 20)
    halting_bias = None  # initial bias of the halting head (None: PyTorch's default init)
    layer_norm = False  # layer-normalise the step: rnn / gru their new state, mlp its hidden
    #   pre-activations; true or false
    fixed_steps = 5  # steps of the fixed-depth baseline; int ≥ 1

    # ---- PonderNet ---------------------------------------------------------------------
    beta = 0.01  # weight of KL(p ‖ p_G); ≥ 0 (paper: 0.01)
    lambda_p = 0.2  # prior halting probability, prior mean 1/λ_p steps; in (0, 1]
    epsilon = 0.05  # training unroll stops once cumulative p > 1 − ε; in (0, 1)
    training_unroll = "batch"  # "batch": the batch steps until every sample passes 1 − ε
    #   (paper); "per_sample": each sample leaves at its own 1 − ε (cheaper, within ε)
    truncation = "last"  # leftover halting mass: "last" (on step N) or "renormalise"
    kl_direction = "forward"  # "forward" = KL(p ‖ p_G) (paper) or "reverse" = KL(p_G ‖ p)
    eval_halting = "sample"  # evaluation halting: "sample" (paper), "threshold", "expected"
    threshold = 0.5  # cumulative-p level for eval_halting="threshold"; in (0, 1)

    # ---- ACT ---------------------------------------------------------------------------
    tau = 0.01  # ponder-cost weight τ; ≥ 0 (Graves sweeps 1e-4..1e-1)
    act_epsilon = 0.01  # ACT halts once Σ h_n ≥ 1 − ϵ; in (0, 1)

    # ---- optimisation ------------------------------------------------------------------
    learning_rate = 3e-3  # Adam step size; in (0, 1000] (paper: 3e-4)
    weight_decay = 0.0  # decoupled weight decay (AdamW) per unit learning rate; ≥ 0
    batch_size = 128  # fresh samples per update; int ≥ 1 (paper: 128)
    train_steps = 60_000  # optimizer updates; int ≥ 1
    grad_clip = 1.0  # max global gradient norm; > 0, or None for no clipping

    # ---- evaluation and bookkeeping ----------------------------------------------------
    eval_every = 2000  # updates between evaluations (and checkpoints); int ≥ 1
    eval_samples = 4096  # fixed test examples per split; int ≥ 1
    num_threads = 1  # torch threads; int ≥ 1 (1 is fastest for these small models on 2 cores)
    device = "cpu"  # torch device of the model and batches: "cpu", or "cuda" / "cuda:<i>"
    #   when this machine has that GPU (checked before the run); data and halting draws
    #   come from CPU generators either way
    resume_from = None  # run folder or checkpoint file to continue from (see `resume`)
    # seed (Sacred's): int in [0, 2**32 − 1]; seeds the model, the data and the test sets


# ``with pondernet`` / ``with act`` / ``with fixed`` set the model.
choice_configs(ex, "model", ("pondernet", "act", "fixed"))


@ex.named_config
def small():
    # The 2-core parity setting that experiments.parity_demo runs for each model: P = 16,
    # extrapolation split (train k ≤ 8; test k ≤ 8 and k > 8), RNN-128, 60,000 updates,
    # evaluated every 2,000. Differs from the paper in size, learning rate (1e-3) and β
    # (0.1: a step cost large enough that pondering has to depend on the input).
    size = 16
    split = "extrapolation"
    hidden_size = 128
    learning_rate = 1e-3
    beta = 0.1
    train_steps = 60_000
    eval_every = 2000


@ex.named_config
def extrapolation_sweep():
    # The base of the P = 16 extrapolation recipe sweep (README, docs/results.md): RNN-64,
    # Adam 1e-3, 60,000 updates evaluated every 2,000; the sweep varies one key at a time.
    size = 16
    split = "extrapolation"
    hidden_size = 64
    learning_rate = 1e-3
    train_steps = 60_000
    eval_every = 2000


@ex.named_config
def paper_interpolation():
    # The paper's interpolation setting (P = 64, RNN-128, Adam 3e-4, batch 128, β 0.01, N 20).
    size = 64
    split = "interpolation"
    hidden_size = 128
    learning_rate = 3e-4
    batch_size = 128
    beta = 0.01
    max_steps = 20
    train_steps = 100_000
    eval_every = 1000


@ex.named_config
def paper_extrapolation():
    # The paper's extrapolation setting (P = 96: train k ≤ 48, test k > 48).
    size = 96
    split = "extrapolation"
    hidden_size = 128
    learning_rate = 3e-4
    batch_size = 128
    beta = 0.01
    max_steps = 20
    train_steps = 100_000
    eval_every = 1000


# ======================================================================================
# Plumbing: validation, model construction, training and evaluation.
# ======================================================================================

STEPS = {"rnn": RNNStep, "gru": GRUStep, "mlp": ResidualMLPStep}

# Keys added after runs existed: at these defaults a run keeps its earlier identity.
_runs.added_key(ex.path, "layer_norm", False)
_runs.added_key(ex.path, "weight_decay", 0.0)
_runs.added_key(ex.path, "device", "cpu")
_runs.added_key(ex.path, "training_unroll", "batch")


def validate(cfg: dict) -> None:
    """Fail before any work with a message naming the bad key and its allowed values."""
    check.integer(cfg, "size", 2)
    check.choice(cfg, "split", ("interpolation", "extrapolation"))
    check.choice(cfg, "model", ("pondernet", "act", "fixed"))
    check.choice(cfg, "step", tuple(STEPS))
    for key in ("hidden_size", "max_steps", "fixed_steps", "batch_size", "train_steps"):
        check.integer(cfg, key, 1)
    for key in ("eval_every", "eval_samples", "num_threads"):
        check.integer(cfg, key, 1)
    check.optional_number(cfg, "halting_bias")
    check.boolean(cfg, "layer_norm")
    check.number(cfg, "beta", 0.0)
    check.number(cfg, "weight_decay", 0.0)
    check.number(cfg, "lambda_p", 0.0, 1.0, low_open=True)
    for key in ("epsilon", "threshold", "act_epsilon"):
        check.number(cfg, key, 0.0, 1.0, low_open=True, high_open=True)
    check.choice(cfg, "truncation", ("last", "renormalise"))
    check.choice(cfg, "kl_direction", ("forward", "reverse"))
    check.choice(cfg, "eval_halting", ("sample", "threshold", "expected"))
    check.choice(cfg, "training_unroll", ("batch", "per_sample"))
    check.device(cfg, "device")
    check.number(cfg, "tau", 0.0)
    check.learning_rate(cfg)
    if cfg["grad_clip"] is not None:
        check.number(cfg, "grad_clip", 0.0, low_open=True)
    check.resume_from(cfg, ex.path)


def build_model(cfg: dict) -> torch.nn.Module:
    """The config's model; PonderNet's halting draws (training and evaluation) come from
    its own generators, seeded from the run's seed and saved with its state_dict."""
    step = STEPS[cfg["step"]](
        cfg["size"],
        cfg["hidden_size"],
        1,
        halting_bias=cfg["halting_bias"],
        layer_norm=cfg["layer_norm"],
    )
    if cfg["model"] == "pondernet":
        return PonderNet(
            step,
            max_steps=cfg["max_steps"],
            epsilon=cfg["epsilon"],
            halting=cfg["eval_halting"],
            threshold=cfg["threshold"],
            truncation=cfg["truncation"],
            # Evaluation unrolls all N steps so expected_steps describes the whole halting
            # distribution; early exit gives the same halting steps and answers (tested)
            # but stops computing p at each sample's halt.
            early_exit=False,
            halting_seed=cfg["seed"],
            training_unroll=cfg["training_unroll"],
        )
    if cfg["model"] == "act":
        return ACT(step, max_steps=cfg["max_steps"], epsilon=cfg["act_epsilon"])
    return FixedDepth(step, num_steps=cfg["fixed_steps"])


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam, or AdamW when the config has weight decay."""
    if decay := cfg["weight_decay"]:
        return torch.optim.AdamW(model.parameters(), lr=cfg["learning_rate"], weight_decay=decay)
    return torch.optim.Adam(model.parameters(), lr=cfg["learning_rate"])


def training_range(cfg: dict) -> tuple[int, int]:
    """The numbers of nonzero entries k the config trains on (lowest, highest)."""
    split = "interpolation" if cfg["split"] == "interpolation" else "extrapolation_train"
    return parity_nonzero_range(cfg["size"], split)


def bce_per_sample(prediction: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(prediction.squeeze(-1), target, reduction="none")


def objective(cfg: dict, output, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    """The model's training loss and its logged parts (PonderNet: reconstruction,
    regularisation; ACT: task, ponder_cost; fixed depth: task)."""
    loss = model_loss(
        output,
        target,
        bce_per_sample,
        beta=cfg["beta"],
        lambda_p=cfg["lambda_p"],
        direction=cfg["kl_direction"],
        tau=cfg["tau"],
    )
    parts = {name: value.item() for name, value in loss._asdict().items()}
    parts.pop("total")
    parts.pop("expected_steps", None)  # logged from the output itself
    return loss.total, parts


def evaluation_sets(cfg: dict, generator: torch.Generator) -> dict[str, ParityBatch]:
    """Fixed test sets: the training range (``interpolation``) and, when extrapolating,
    the unseen range (``extrapolation``)."""
    size, n = cfg["size"], cfg["eval_samples"]
    if cfg["split"] == "interpolation":
        ranges = {"interpolation": parity_nonzero_range(size, "interpolation")}
    else:
        ranges = {
            "interpolation": parity_nonzero_range(size, "extrapolation_train"),
            "extrapolation": parity_nonzero_range(size, "extrapolation_test"),
        }
    return {
        name: parity_batch(n, size, min_nonzero=lo, max_nonzero=hi, generator=generator)
        for name, (lo, hi) in ranges.items()
    }


@torch.no_grad()
def evaluate(model, data: ParityBatch) -> dict[str, Tensor]:
    """Per-sample correctness, halting step and expected steps on a fixed test set (kept on
    the CPU; the forward runs on the model's device)."""
    model.eval()
    output = model(data.x.to(next(model.parameters()).device))
    model.train()
    correct = ((output.prediction.squeeze(-1).cpu() > 0).float() == data.y).float()
    return {
        "accuracy": correct,
        "halting_step": output.halting_step.float().cpu(),
        "expected_steps": output.expected_steps.float().cpu(),
    }


def by_nonzero(results: dict[str, Tensor], nonzero: Tensor) -> dict[str, dict[str, float]]:
    """Mean of each per-sample result for every number of nonzero entries k."""
    return {
        str(k): {name: float(values[nonzero == k].mean()) for name, values in results.items()}
        for k in nonzero.unique().tolist()
    }


def per_level(evaluated: dict[str, tuple[dict[str, Tensor], Tensor]]) -> dict[str, float]:
    """``eval.<metric>.d<k>``: each per-sample result averaged over the test samples with k
    nonzero entries, pooled over the splits (``evaluated`` maps a split to its results and
    its samples' k); the splits' ranges of k are disjoint, so each level is one split's."""
    results = {
        name: torch.cat([split_results[name] for split_results, _ in evaluated.values()])
        for name in next(iter(evaluated.values()))[0]
    }
    nonzero = torch.cat([k for _, k in evaluated.values()])
    return {
        f"eval.{name}.d{k}": value
        for k, means in by_nonzero(results, nonzero).items()
        for name, value in means.items()
    }


@ex.main
def main(_config: dict, _run, seed: int) -> dict:
    cfg = _runs.start(_config, seed, validate)
    train_generator = torch.Generator().manual_seed(seed)
    test_sets = evaluation_sets(cfg, torch.Generator().manual_seed(seed + 2))
    train_range = training_range(cfg)

    device = torch.device(cfg["device"])
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    start, history = 0, _runs.History(_run)
    if cfg["resume_from"] is not None:
        source = _runs.resume_checkpoint(cfg["resume_from"])
        state = load_checkpoint(source, experiment=ex.path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_states(state["rng"], train=train_generator)
        start = int(state["update"])
        history.replay(state.get("history", {}))
        _runs.continued(_run, cfg, ex.path)
        print(f"resumed from {source} at update {start}")
    directory = run_directory(_run)

    totals: dict[str, float] = {}
    began, last_report = time.perf_counter(), start
    for update in range(start + 1, cfg["train_steps"] + 1):
        batch = parity_batch(
            cfg["batch_size"],
            cfg["size"],
            min_nonzero=train_range[0],
            max_nonzero=train_range[1],
            generator=train_generator,
        )
        target = batch.y.to(device)
        output = model(batch.x.to(device))
        loss, parts = objective(cfg, output, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at update {update}; metrics up to "
                f"update {last_report} and the checkpoint of that update are kept"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        optimizer.step()
        broken = non_finite_parameters(model)
        if broken:
            raise FloatingPointError(
                f"non-finite weights ({', '.join(broken)}) after update {update}; the loss "
                f"before it was finite ({loss.item():.4g}), so the update made them "
                f"non-finite; metrics up to update {last_report} and the checkpoint of that "
                "update are kept"
            )

        accuracy = ((output.prediction.detach().squeeze(-1) > 0).float() == target).float()
        running = {
            "loss": loss.item(),
            "accuracy": float(accuracy.mean()),
            "halting_step": float(output.halting_step.float().mean()),
            "expected_steps": float(output.expected_steps.detach().mean()),
            "unroll_steps": float(output.predictions.shape[0]),
            **parts,
        }
        for name, value in running.items():
            totals[name] = totals.get(name, 0.0) + value

        if update % cfg["eval_every"] == 0 or update == cfg["train_steps"]:
            count = update - last_report
            for name, value in totals.items():
                history.log(f"train.{name}", value / count, update)
            summary, evaluated = [], {}
            for split, data in test_sets.items():
                results = evaluate(model, data)
                evaluated[split] = (results, data.nonzero)
                for name, values in results.items():
                    history.log(f"{split}.{name}", float(values.mean()), update)
                summary.append(
                    f"{split} acc {float(results['accuracy'].mean()):.3f} "
                    f"halt {float(results['halting_step'].mean()):.2f}"
                )
            for name, value in per_level(evaluated).items():
                history.log(name, value, update)
            elapsed = time.perf_counter() - began
            print(
                f"[parity {cfg['model']}] update {update}/{cfg['train_steps']}  "
                f"loss {totals['loss'] / count:.3f}  "
                + "  ".join(summary)
                + f"  ({timing(update, cfg['train_steps'], elapsed, start=start)})"
            )
            totals, last_report = {}, update
            if directory is not None:
                save_checkpoint(
                    directory / "checkpoint.pt",
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": rng_states(train=train_generator),
                        "update": update,
                        "history": history.entries,
                    },
                    experiment=ex.path,
                )

    final = {}
    for split, data in test_sets.items():
        results = evaluate(model, data)
        _run.info.setdefault("by_nonzero", {})[split] = by_nonzero(results, data.nonzero)
        final.update({f"{split}.{name}": float(v.mean()) for name, v in results.items()})
    _run.info["wall_seconds"] = time.perf_counter() - began
    return final


if __name__ == "__main__":
    _runs.main(ex)
