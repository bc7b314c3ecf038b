"""Run a grid of named configs × seeds as independent Sacred runs on a local process pool.

    python -m experiments.sweep stream --grid bp cbp --seeds 0 1 2
    python -m experiments.sweep stream --with demo --grid bp cbp redo --grid pondernet act \\
        --seeds 0 1 --set experiences=20 learning_rate=3e-4 --workers 2

Every ``--grid`` lists alternatives (named configs); the sweep runs their Cartesian product,
each combination plus the ``--with`` configs and the ``--set`` values, once per seed. Runs
are stored like any other run of the experiment (``runs/<experiment>/<id>``); a failing
run is reported and the others go on. Each worker is a fresh ``spawn`` process with one
torch thread per run (the experiments' ``num_threads``), so use as many workers as cores.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import multiprocessing
import os
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    experiment: str  # module name under experiments/
    named_configs: tuple[str, ...]
    config_updates: dict = field(default_factory=dict)


def parse_value(text: str):
    """``--set`` values: JSON when it parses (numbers, lists, null, true), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def plan(
    experiment: str,
    grid: list[list[str]],
    seeds: list[int],
    base: list[str] | None = None,
    updates: dict | None = None,
) -> list[Job]:
    """The jobs of a sweep: every combination of the grid's alternatives × every seed."""
    combos = list(itertools.product(*grid)) if grid else [()]
    return [
        Job(experiment, (*(base or []), *combo), {**(updates or {}), "seed": seed})
        for combo in combos
        for seed in seeds
    ]


def run_job(job: Job) -> dict:
    """Run one job in this process with a file observer; never raises."""
    from sacred.observers import FileStorageObserver

    from experiments._runs import runs_root

    module = importlib.import_module(f"experiments.{job.experiment}")
    observer = FileStorageObserver(str(runs_root(job.experiment)))
    module.ex.observers.append(observer)
    began = time.perf_counter()
    try:
        run = module.ex.run(
            named_configs=list(job.named_configs), config_updates=job.config_updates
        )
        outcome = {"id": run._id, "status": run.status, "result": run.result}
    except Exception as error:  # a failed run is reported; the sweep goes on
        outcome = {
            "id": None,
            "status": "FAILED",
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(),
        }
    finally:
        module.ex.observers.remove(observer)
    outcome.update(
        job=job,
        seconds=time.perf_counter() - began,
        run_dir=os.path.join(str(runs_root(job.experiment)), str(outcome["id"])),
    )
    return outcome


def run_sweep(jobs: list[Job], workers: int = 2, log=print) -> list[dict]:
    """Run ``jobs`` on ``workers`` spawned processes; results in job order."""
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    log(f"sweep: {len(jobs)} runs, {workers} at a time")
    context = multiprocessing.get_context("spawn")
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for index, outcome in enumerate(pool.map(run_job, jobs), start=1):
            job = outcome["job"]
            label = " ".join(job.named_configs) or "(defaults)"
            state = (
                outcome["status"]
                if outcome["id"] is None
                else (f"{outcome['status']} → {outcome['run_dir']}")
            )
            log(
                f"  [{index}/{len(jobs)}] {label} seed={job.config_updates.get('seed')}: "
                f"{state} ({outcome['seconds']:.0f} s)"
            )
            if "error" in outcome:
                log(f"      {outcome['error']}")
            results.append(outcome)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiment", help="module under experiments/, e.g. stream")
    parser.add_argument(
        "--grid",
        nargs="+",
        action="append",
        default=[],
        metavar="NAMED",
        help="alternatives for one axis of the grid (repeatable)",
    )
    parser.add_argument(
        "--with",
        dest="base",
        nargs="+",
        default=[],
        metavar="NAMED",
        help="named configs applied to every run",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="config values for every run"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    updates = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        updates[key] = parse_value(value)
    jobs = plan(args.experiment, args.grid, args.seeds, args.base, updates)
    results = run_sweep(jobs, args.workers)
    failed = [r for r in results if r["status"] != "COMPLETED"]
    print(f"{len(results) - len(failed)} completed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
