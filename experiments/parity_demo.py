"""PonderNet versus ACT on parity at a small size, next to the paper's numbers.

Runs the ``small`` named config of :mod:`experiments.parity` (P = 16, extrapolation
split, 60,000 updates) once per model and seed as a Ray sweep
(:func:`experiments.sweep.run_sweep`): each run is stored under
``runs/parity/<identity>/`` (``$PONDERLIFE_RUNS/parity`` when set), so running the same
command again skips the finished runs and resumes killed ones. Then it prints accuracy and
halting step on both splits, mean ± standard deviation over the seeds, beside the paper's.

    python -m experiments.parity_demo                              # PonderNet and ACT, seed 0
    python -m experiments.parity_demo --seeds 0 1 --models pondernet act fixed --workers 2
    python -m experiments.parity_demo --set train_steps=6000 eval_every=1000   # shorter
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from experiments.sweep import plan, run_sweep, settings

# Read off the paper's plots (≈, 10 seeds): interpolation at P = 64, extrapolation at P = 96.
PAPER = {
    "pondernet": {"interpolation": (0.974, 2.7), "extrapolation": (0.925, 4.9)},
    "act": {"interpolation": (0.958, 3.15), "extrapolation": (0.51, 2.1)},
}
SPLITS = ("interpolation", "extrapolation")


def cell(values: list[float], digits: int) -> str:
    """Mean ± standard deviation over the seeds ("-" when no run has the value)."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    spread = f" ±{statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{spread}"


def table(models: list[str], done: list[dict]) -> list[str]:
    """Accuracy and halting step per split for each model here, then the paper's rows."""
    config = json.loads((Path(done[0]["run_dir"]) / "config.json").read_text())
    size, half = config["size"], config["size"] // 2
    if config["split"] == "extrapolation":
        setting = (
            f"train k ≤ {half}; interpolation = held-out k ≤ {half}, extrapolation = k > {half}"
        )
    else:
        setting = f"train and test k ∈ 1..{size} (interpolation split)"
    header = f"{'':<22}{'interp acc':>14}{'extrap acc':>14}{'interp steps':>14}{'extrap steps':>14}"
    lines = [
        f"parity, P = {size}: {setting}.",
        "Paper: P = 64 (interpolation), P = 96 (extrapolation).",
        header,
        "-" * len(header),
    ]
    for model in models:
        results = [r["result"] for r in done if r["job"].named_configs[-1] == model]
        line = f"{model + ' (here)':<22}"
        for metric, digits in (("accuracy", 3), ("halting_step", 2)):
            for split in SPLITS:
                values = [r[f"{split}.{metric}"] for r in results if f"{split}.{metric}" in r]
                line += f"{cell(values, digits):>14}"
        lines.append(line)
    for model in models:
        if model in PAPER:
            (ia, isteps), (ea, esteps) = (PAPER[model][split] for split in SPLITS)
            lines.append(f"{model + ' (paper)':<22}{ia:>14}{ea:>14}{isteps:>14}{esteps:>14}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pondernet", "act"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="any config key of experiments.parity, e.g. train_steps=6000 to shorten the runs",
    )
    args = parser.parse_args(argv)
    updates = settings(args.set, parser)

    began = time.perf_counter()
    # Each model is a named config applied after ``small``, so it is the job's last one.
    jobs = plan("parity", [args.models], args.seeds, base=["small"], updates=updates)
    results = run_sweep(jobs, args.workers)
    done = [r for r in results if r["status"] == "COMPLETED"]
    if not done:
        print("no run completed; see the errors above")
        return 1
    print()
    print("\n".join(table(args.models, done)))
    print(f"\n{len(done)} runs in {time.perf_counter() - began:.0f} s; run folders:")
    for r in done:
        job = r["job"]
        note = " (finished before, skipped)" if r.get("action") == "skip" else ""
        print(
            f"  {r['run_dir']}  ({job.named_configs[-1]}, seed {job.config_updates['seed']}, "
            f"{r['seconds']:.0f} s){note}"
        )
    return 0 if len(done) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
