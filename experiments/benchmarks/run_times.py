"""How long each experiment's default and named configs take, measured on a short prefix
of each run and extrapolated to its full length.

    python -m experiments.benchmarks.run_times                      # every config, CPU
    python -m experiments.benchmarks.run_times --experiments parity --out docs/run_times.md
    python -m experiments.benchmarks.run_times --device cuda        # the study on a GPU

Each config runs in this process (no observer, output discarded) with the experiment's
own code, shortened, and the full run's time is extrapolated from what the prefix cost:

- ``stream``: the first ``--experiences`` (3) experiences (split Fashion-MNIST, whose
  experiences must divide its 10 classes, runs whole). Training costs the same for
  every experience; evaluation after experience i covers the i + 1 test sets seen so far,
  so a full run of E experiences costs ``E · train + E (E + 1) / 2 · eval`` (train per
  experience and eval per test set timed around ``PonderTemplate.train`` / ``.eval``), plus
  the rest (drawing the stream up front, metrics) scaled by E / prefix.
- ``parity``: two prefixes of ``--updates`` and 2 × ``--updates`` updates (one
  evaluation each, plus the final one) give the cost per update and per evaluation. A
  pondering model's unroll grows or shrinks as it learns, so the estimate is at the
  prefix's mean unroll length (``train.unroll_steps``); the upper bound (PonderNet, ACT)
  assumes every update and evaluation unrolls all ``max_steps``.
- ``bit_flipping``: two prefixes of one and two bins (``--bin`` examples each) give the
  cost per bin (updates, probe diagnostics); a full run is ``examples / bin`` bins.

One torch thread, as the experiments default to. The machine's load average is printed
with the table: other work on the machine slows every row alike.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from sacred.observers import RunObserver

from experiments._progress import duration
from experiments.sweep import Job, full_config

# Named configs per experiment, in the order the table lists them (None = the default).
CONFIGS = {
    "stream": [
        None,
        *("cbp", "l2", "shrink_perturb", "l2_init", "redo", "upgd"),
        *("act", "fixed"),
        *("routh", "controllability", "parity", "bit_flipping"),
        *("permuted_fashion", "split_fashion", "demo"),
    ],
    "parity": [None, "act", "fixed", "small", "paper_interpolation", "paper_extrapolation"],
    "bit_flipping": [None, "cbp", "l2", "shrink_perturb", "l2_init", "redo", "upgd", "linear"],
}


@dataclass
class Estimate:
    experiment: str
    named: str | None
    length: str  # the full run's length in its own units
    measured_s: float  # wall time of the prefixes together
    full_s: float  # extrapolated full run
    upper_s: float | None = None  # a bound where the cost per unit can grow


class MetricsMemory(RunObserver):
    """Keeps the last value of every metric a run logs (no files written)."""

    def __init__(self):
        self.values: dict[str, float] = {}

    def started_event(self, *args, _id=None, **kwargs):
        return _id or "memory"

    def log_metrics(self, metrics_by_name, info):
        for name, entry in metrics_by_name.items():
            if entry["values"]:
                self.values[name] = float(entry["values"][-1])


def quiet_run(ex, named: list[str], updates: dict, observer: RunObserver | None = None):
    """``ex.run`` with its progress lines discarded and ``observer`` (by default one that
    only keeps metrics in memory) attached."""
    observer = observer or MetricsMemory()
    ex.observers.append(observer)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            run = ex.run(
                named_configs=named, config_updates=updates, options={"--loglevel": "WARNING"}
            )
    finally:
        ex.observers.remove(observer)
    if run.status != "COMPLETED":
        raise RuntimeError(f"{ex.path} with {named} {updates} ended {run.status}")
    return run


def config_of(experiment: str, named: list[str]) -> dict:
    return full_config(Job(experiment, tuple(named)))


def timed(call: Callable[[], object]) -> tuple[object, float]:
    began = time.perf_counter()
    result = call()
    return result, time.perf_counter() - began


# ---------------------------------------------------------------- per experiment


def stream_estimate(named: list[str], prefix: int, device: str) -> Estimate:
    from experiments import stream
    from strategies import PonderTemplate

    config = config_of("stream", named)
    total = config["experiences"]
    # Split Fashion-MNIST needs a number of experiences that divides the 10 classes: it is
    # short (5 experiences), so it runs whole.
    shown = total if config["stream"] == "split_fashion" else min(prefix, total)
    spent = {"train": 0.0, "eval": 0.0, "eval_sets": 0}
    train, evaluate = PonderTemplate.train, PonderTemplate.eval

    def timed_train(self, *args, **kwargs):
        result, seconds = timed(lambda: train(self, *args, **kwargs))
        spent["train"] += seconds
        return result

    def timed_eval(self, experiences, *args, **kwargs):
        result, seconds = timed(lambda: evaluate(self, experiences, *args, **kwargs))
        spent["eval"] += seconds
        spent["eval_sets"] += len(experiences)
        return result

    PonderTemplate.train, PonderTemplate.eval = timed_train, timed_eval
    try:
        _, wall = timed(
            lambda: quiet_run(stream.ex, named, {"experiences": shown, "seed": 0, "device": device})
        )
    finally:
        PonderTemplate.train, PonderTemplate.eval = train, evaluate
    per_train = spent["train"] / shown
    per_set = spent["eval"] / max(spent["eval_sets"], 1)
    rest = wall - spent["train"] - spent["eval"]
    full = total * per_train + total * (total + 1) / 2 * per_set + rest * total / shown
    length = f"{total} exp × {config['epochs']} ep × {config['samples_per_experience']}"
    return Estimate("stream", named[0] if named else None, length, wall, full)


def parity_estimate(named: list[str], updates: int) -> Estimate:
    from experiments import parity

    config = config_of("parity", named)
    # Evaluation sets as in the real run (its size drives the cost per evaluation).
    walls, observer = [], MetricsMemory()
    for steps in (updates, 2 * updates):
        observer.values.clear()
        updates_ = {"train_steps": steps, "eval_every": steps, "seed": 0}
        walls.append(timed(lambda u=updates_: quiet_run(parity.ex, named, u, observer))[1])
    t1, t2 = walls
    long_metrics = dict(observer.values)
    per_update = (t2 - t1) / updates
    # Each prefix ran one evaluation inside the loop and one final: 2 evaluations.
    per_eval = max(t1 - updates * per_update, 0.0) / 2
    evaluations = -(-config["train_steps"] // config["eval_every"]) + 1
    full = config["train_steps"] * per_update + evaluations * per_eval
    mean_unroll = long_metrics.get("train.unroll_steps")
    upper = None
    if mean_unroll and config["model"] != "fixed":  # fixed depth always unrolls fixed_steps
        upper = config["train_steps"] * per_update * config["max_steps"] / mean_unroll
        upper += evaluations * per_eval * config["max_steps"] / mean_unroll
    length = f"{config['train_steps']:,} updates (P = {config['size']})"
    return Estimate("parity", named[0] if named else None, length, t1 + t2, full, upper)


def bit_flipping_estimate(named: list[str], bin_size: int) -> Estimate:
    from experiments import bit_flipping

    config = config_of("bit_flipping", named)
    walls = []
    for bins in (1, 2):
        updates = {"examples": bins * bin_size, "bin_size": bin_size, "seed": 0}
        walls.append(timed(lambda updates=updates: quiet_run(bit_flipping.ex, named, updates))[1])
    per_bin = walls[1] - walls[0]
    start = walls[0] - per_bin
    full = max(start, 0.0) + config["examples"] / bin_size * per_bin
    length = f"{config['examples']:,} examples"
    return Estimate("bit_flipping", named[0] if named else None, length, sum(walls), full)


def warm_up(experiment: str, args: argparse.Namespace) -> None:
    """One short untimed run first: the first run in a process pays one-off costs (lazy
    imports, allocator and kernel warm-up) that would read as a cost per unit."""
    module = importlib.import_module(f"experiments.{experiment}")
    short = {
        "stream": {"experiences": 1, "samples_per_experience": 256, "test_samples": 64},
        "parity": {"train_steps": 20, "eval_every": 20, "eval_samples": 64},
        "bit_flipping": {"examples": 200, "bin_size": 100},
    }[experiment]
    quiet_run(module.ex, [], {**short, "seed": 0}, MetricsMemory())


# ---------------------------------------------------------------- table


def table(estimates: list[Estimate], where: str) -> list[str]:
    lines = [
        f"| experiment | config | full length | measured prefix | full run ({where}) |",
        "|---|---|---|---|---|",
    ]
    for e in estimates:
        full = duration(e.full_s)
        if e.upper_s is not None and e.upper_s > 1.15 * e.full_s:
            full += f" (≤ {duration(e.upper_s)})"
        named = f"`{e.named}`" if e.named else "default"
        lines.append(
            f"| {e.experiment} | {named} | {e.length} | {duration(e.measured_s)} | {full} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--configs", nargs="+", help="only these named configs ('default')")
    parser.add_argument("--experiences", type=int, default=3, help="stream prefix")
    parser.add_argument("--updates", type=int, default=300, help="parity prefix (and twice it)")
    parser.add_argument("--bin", type=int, default=2000, help="bit_flipping bin (1 and 2 bins)")
    parser.add_argument(
        "--device", default="cpu", help="stream's device (parity and bit_flipping run on CPU)"
    )
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    estimates = []
    for experiment in args.experiments:
        warm_up(experiment, args)
        for named in CONFIGS[experiment]:
            if args.configs and (named or "default") not in args.configs:
                continue
            names = [named] if named else []
            if experiment == "stream":
                estimate = stream_estimate(names, args.experiences, args.device)
            elif experiment == "parity":
                estimate = parity_estimate(names, args.updates)
            else:
                estimate = bit_flipping_estimate(names, args.bin)
            estimates.append(estimate)
            print(table([estimate], args.device)[-1], flush=True)
    load = os.getloadavg()
    where = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, one torch "
        f"thread, load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min)"
    )
    if args.device != "cpu" and torch.cuda.is_available():
        where += f", stream on {torch.cuda.get_device_name()}"
    lines = [*table(estimates, args.device), "", where]
    print("\n" + "\n".join(lines))
    if args.out:
        with open(args.out, "w") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
