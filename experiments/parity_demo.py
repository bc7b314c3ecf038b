"""PonderNet versus ACT on parity at a small size, next to the paper's numbers.

Runs the ``small`` named config of :mod:`experiments.parity` for each model as its own
Sacred run (stored under ``runs/parity/``), two at a time on a process pool, then prints a
table. ``python -m experiments.parity_demo --seeds 0 1 --models pondernet act fixed`` widens it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

# Read off the paper's plots (≈, 10 seeds): interpolation at P = 64, extrapolation at P = 96.
PAPER = {
    "pondernet": {"interpolation": (0.974, 2.7), "extrapolation": (0.925, 4.9)},
    "act": {"interpolation": (0.958, 3.15), "extrapolation": (0.51, 2.1)},
}


def run_one(model: str, seed: int) -> dict:
    """One Sacred run in this worker process; returns what the table needs."""
    from sacred.observers import FileStorageObserver

    from experiments._runs import runs_root
    from experiments.parity import ex

    ex.observers.append(FileStorageObserver(str(runs_root("parity"))))
    run = ex.run(named_configs=["small", model], config_updates={"seed": seed})
    return {
        "model": model,
        "seed": seed,
        "id": run._id,
        "result": run.result,
        "size": run.config["size"],
        "seconds": run.info["wall_seconds"],
    }


def cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    spread = f" ±{statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pondernet", "act"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    jobs = [(model, seed) for model in args.models for seed in args.seeds]
    print(f"running {len(jobs)} parity runs ({args.workers} at a time) ...", flush=True)
    began = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=context) as pool:
        results = list(pool.map(run_one, *zip(*jobs, strict=True)))
    wall = time.perf_counter() - began

    size = results[0]["size"]
    print(f"\nparity, P = {size}: train k ≤ {size // 2}; interpolation = held-out k ≤ {size // 2},")
    print(
        f"extrapolation = k > {size // 2}. Paper: P = 64 (interpolation), P = 96 (extrapolation)."
    )
    header = f"{'':<22}{'interp acc':>14}{'extrap acc':>14}{'interp steps':>14}{'extrap steps':>14}"
    print(header)
    print("-" * len(header))
    for model in args.models:
        rows = [r["result"] for r in results if r["model"] == model]
        line = f"{model + ' (here)':<22}"
        for metric, digits in (("accuracy", 3), ("halting_step", 2)):
            for split in ("interpolation", "extrapolation"):
                line += f"{cell([r[f'{split}.{metric}'] for r in rows], digits):>14}"
        print(line)
    for model, paper in PAPER.items():
        if model in args.models:
            (ia, isteps), (ea, esteps) = paper["interpolation"], paper["extrapolation"]
            print(f"{model + ' (paper)':<22}{ia:>14}{ea:>14}{isteps:>14}{esteps:>14}")
    print(f"\n{len(jobs)} runs in {wall:.0f} s wall time; run folders:")
    for r in results:
        print(f"  runs/parity/{r['id']}  ({r['model']}, seed {r['seed']}, {r['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
