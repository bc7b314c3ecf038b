"""What a Ray sweep costs and gains: 8 short runs one after another in this process vs a
sweep of them on a local Ray with 1 and with 2 workers.

    python -m experiments.benchmarks.sweep_overhead              # 9 rounds, rotated order
    python -m experiments.benchmarks.sweep_overhead --rounds 5 --examples 8000

Each round runs the three variants in a rotated order, each into a fresh runs folder:

- ``sequential``: ``ex.run`` of each run in this process (no Ray, nothing to start);
- ``ray-1``, ``ray-2``: :func:`experiments.sweep.run_sweep` with 1 / 2 workers, a local
  Ray started (``ray.init``) and stopped for each.

Printed per variant: wall time with and without Ray's start-up, and per round the speedup of
``ray-2`` over ``sequential`` (what a researcher waits for, start-up included) and the
per-run overhead of a Ray task (``ray-1`` minus ``sequential``, start-up excluded, over the
runs). Wall time is the point here (parallelism); the machine's load average is printed
with the figures, since other work on the machine shifts them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from experiments import bit_flipping, sweep
from experiments.benchmarks._measure import load


def jobs(examples: int, runs: int) -> list[sweep.Job]:
    config = {"examples": examples, "bin_size": examples // 4, "probe_size": 64}
    return sweep.plan("bit_flipping", [["bp", "cbp"]], list(range(runs // 2)), updates=config)


def sequential(batch: list[sweep.Job], root: Path) -> dict:
    from experiments._runs import RunFolderObserver

    observer = RunFolderObserver(str(root))
    bit_flipping.ex.observers.append(observer)
    began = time.perf_counter()
    try:
        for job in batch:
            # The runs' own output goes nowhere, as in a sweep (where it goes to cout.txt).
            with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
                run = bit_flipping.ex.run(
                    named_configs=list(job.named_configs),
                    config_updates=dict(job.config_updates),
                    options={"--loglevel": "WARNING"},
                )
            assert run.status == "COMPLETED"
    finally:
        bit_flipping.ex.observers.remove(observer)
    wall = time.perf_counter() - began
    return {"wall": wall, "startup": 0.0}


def on_ray(batch: list[sweep.Job], root: Path, workers: int) -> dict:
    import ray

    began = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    startup = time.perf_counter() - began
    try:
        outcomes = sweep.run_sweep(batch, workers, root=root, log=lambda _: None, progress=False)
    finally:
        ray.shutdown()
    wall = time.perf_counter() - began
    assert all(o["status"] == "COMPLETED" for o in outcomes), outcomes
    return {"wall": wall, "startup": startup}


def spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} (min {min(values):{fmt}}, max {max(values):{fmt}})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=8, help="runs per sweep (even)")
    parser.add_argument(
        "--examples", type=int, default=2000, help="examples per run (2,000: about 2.5 s)"
    )
    args = parser.parse_args(argv)
    batch = jobs(args.examples, args.runs)
    variants = {
        "sequential": sequential,
        "ray-1": lambda b, r: on_ray(b, r, 1),
        "ray-2": lambda b, r: on_ray(b, r, 2),
    }
    names = list(variants)
    results: dict[str, list[dict]] = {name: [] for name in names}
    print(f"{len(batch)} bit-flipping runs of {args.examples} examples; before: {load()}")
    for index in range(args.rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            with tempfile.TemporaryDirectory() as folder:
                results[name].append(variants[name](batch, Path(folder)))
        row = {name: results[name][-1] for name in names}
        print(
            f"round {index + 1} ({' → '.join(order)}): "
            + ", ".join(f"{n} {row[n]['wall']:.1f} s" for n in names)
        )
    print(f"after: {load()}")
    print()
    for name in names:
        walls = [r["wall"] for r in results[name]]
        work = [r["wall"] - r["startup"] for r in results[name]]
        print(f"{name:<11} wall {spread(walls)} s; without Ray start-up {spread(work)} s")
    startups = [r["startup"] for name in ("ray-1", "ray-2") for r in results[name]]
    speedup = [
        s["wall"] / r["wall"] for s, r in zip(results["sequential"], results["ray-2"], strict=True)
    ]
    speedup_work = [
        s["wall"] / (r["wall"] - r["startup"])
        for s, r in zip(results["sequential"], results["ray-2"], strict=True)
    ]
    overhead = [
        ((r["wall"] - r["startup"]) - s["wall"]) / len(batch)
        for s, r in zip(results["sequential"], results["ray-1"], strict=True)
    ]
    print(f"Ray start-up (ray.init, local): {spread(startups)} s")
    print(f"speedup of 2 workers over one after another, start-up included: {spread(speedup)}×")
    print(f"  the same without Ray's start-up: {spread(speedup_work)}×")
    print(f"per-run overhead of a Ray task (1 worker vs in-process): {spread(overhead)} s")


if __name__ == "__main__":
    main()
