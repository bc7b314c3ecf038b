"""Sweeps: a grid of configs × seeds, each an independent Sacred run executed as a Ray task.

    python -m experiments.sweep stream --with demo --grid bp cbp \\
        --grid learning_rate=1e-3 learning_rate=3e-3 --seeds 0 1 2 --set experiences=20 \\
        --workers 2                                          # a local Ray, started for it
    python -m experiments.sweep stream ... --address auto   # an existing Ray cluster
    python -m experiments.sweep stream ... --dry-run        # the plan: skip / resume / start
    python -m experiments.sweep stream ... --tensorboard runs/tensorboard  # + TensorBoard

Every ``--grid`` lists the alternatives of one axis, named configs (``cbp``) or config
values (``learning_rate=3e-3``); the sweep runs their Cartesian product, each combination
plus the ``--with`` configs and the ``--set`` values, once per seed. Every planned config
is built and validated (the experiment's own ``validate``) before anything is submitted:
a bad value stops the sweep at once, naming the run and the key.

A run's identity is (experiment, full config, seed); its folder is
``<runs>/<experiment>/<first 12 hex digits of the identity's SHA-256>``, continued as
``<name>.r1``, ``<name>.r2`` … when it is resumed (``experiments._runs``). The same sweep
run again skips COMPLETED runs, resumes runs that have a checkpoint, and starts the rest:
nothing is ever duplicated. A worker process that dies mid-run (the OOM killer, a lost
node) is retried by Ray, and the retry resumes from the run's last checkpoint; a run that
raises is FAILED and reported while the others go on; a killed sweep loses at most each
running run's work since its last checkpoint.

Each run gets ``num_threads`` CPUs (one torch thread by default), a GPU when its
``device`` is CUDA, and a worker process of its own (Ray's ``max_calls=1``), so memory a
run held (freed, but kept by the allocator) never adds up over the runs one process would
otherwise take in turn: a reused worker reached 11 GB on permuted Fashion-MNIST and Ray's
memory monitor killed its neighbour. Its output goes to its own folder (``cout.txt``), not
to the terminal, which shows one progress bar over the runs and a summary table at the end
(also written to ``<runs>/<experiment>/_sweeps/<time>.json``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from experiments import _runs
from experiments._tensorboard import TensorBoardObserver

#: Ray retries of a run whose worker process died (each retry resumes the run).
RETRIES = 3


class SweepConfigError(ValueError):
    """A planned run whose config is invalid; the message names the run and the key."""


@dataclass(frozen=True)
class Job:
    experiment: str  # module name under experiments/
    named_configs: tuple[str, ...]
    config_updates: dict = field(default_factory=dict)
    choices: tuple[str, ...] = ()  # the grid alternatives of this run, as written

    @property
    def label(self) -> str:
        grid = " ".join(self.choices) or "(defaults)"
        return f"{grid} seed={self.config_updates.get('seed')}"


def parse_value(text: str):
    """``--set`` values: JSON when it parses (numbers, lists, null, true), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _assignment(text: str) -> tuple[str, object] | None:
    key, sep, value = text.partition("=")
    return (key, parse_value(value)) if sep else None


def settings(items: list[str], parser: argparse.ArgumentParser) -> dict:
    """``--set KEY=VALUE ...`` as config updates (values by :func:`parse_value`); an item
    without ``=`` stops the command through ``parser.error``."""
    updates = {}
    for item in items:
        assignment = _assignment(item)
        if assignment is None:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        updates[assignment[0]] = assignment[1]
    return updates


def plan(
    experiment: str,
    grid: list[list[str]],
    seeds: list[int],
    base: list[str] | None = None,
    updates: dict | None = None,
) -> list[Job]:
    """The jobs of a sweep: every combination of the grid's alternatives × every seed. An
    alternative is a named config or a ``key=value`` update."""
    updates = dict(updates or {})
    jobs = []
    for combo in itertools.product(*grid) if grid else [()]:
        named, values = list(base or []), {}
        for choice in combo:
            assignment = _assignment(choice)
            if assignment is None:
                named.append(choice)
                continue
            key, value = assignment
            if key in updates or key in values:
                raise SweepConfigError(
                    f"config '{key}' is set twice ({choice!r} in --grid and "
                    f"{key}={updates.get(key, values.get(key))!r}); give each key one axis"
                )
            values[key] = value
        for seed in seeds:
            jobs.append(
                Job(experiment, tuple(named), {**updates, **values, "seed": seed}, tuple(combo))
            )
    return jobs


# ---- the plan: each run's identity, folder and what to do with it ---------------------------


@dataclass
class PlannedRun:
    job: Job
    config: dict  # the full config, as Sacred builds it
    identity: str
    action: str  # "start", "resume", "skip" or "running" (alive in another process)
    folder: Path | None  # the newest folder of the run's chain, if any
    root: Path  # the runs folder of its experiment (absolute)
    note: str = ""

    @property
    def name(self) -> str:
        return self.identity[:12]


def full_config(job: Job) -> dict:
    """The config Sacred builds for ``job`` (named configs, updates, config scope), as
    stored in ``config.json``; unknown keys fail here, naming the closest valid ones."""
    module = importlib.import_module(f"experiments.{job.experiment}")
    run = module.ex._create_run(
        named_configs=list(job.named_configs), config_updates=dict(job.config_updates)
    )
    return json.loads(json.dumps(run.config))


def state_of(root: Path, experiment: str, name: str, ident: str) -> tuple[str, Path | None, str]:
    """What a sweep does with the run ``name`` under ``root`` now: ``(action, newest folder
    of its chain, note)``."""
    links = _runs.chain(root, name)
    if not links:
        return "start", None, ""
    latest = links[-1]
    stored = _runs.stored_config(latest)
    if stored is not None and _runs.identity(experiment, stored) != ident:
        raise RuntimeError(
            f"{latest} holds a run of another config than its name says; move it away"
        )
    holder = _runs.lock_holder(latest)
    if holder is not None:
        return "running", latest, f"pid {holder.get('pid')} on {holder.get('host')}"
    status = _runs.status_of(latest)
    if status == "COMPLETED":
        return "skip", latest, "COMPLETED"
    if status == "RUNNING":
        status = "killed: RUNNING without a live process"
    try:
        checkpoint = _runs.resume_checkpoint(latest)
    except ValueError:
        return "start", latest, f"{status}, no checkpoint yet"
    return "resume", latest, f"{status}, from {checkpoint.relative_to(root)}"


def resolve(jobs: list[Job], root: Path | None = None, check_devices: bool = True):
    """Build, validate and locate every job's run before anything is submitted; raises
    :class:`SweepConfigError` naming the first invalid run. Jobs of one identity (the same
    run written two ways) are planned once."""
    planned, seen = [], {}
    for job in jobs:
        module = importlib.import_module(f"experiments.{job.experiment}")
        try:
            config = full_config(job)
            checked = dict(config)
            if not check_devices and checked.get("device", "cpu") != "cpu":
                checked["device"] = "cpu"  # the cluster's nodes check their own devices
            module.validate(checked)
        except Exception as error:
            raise SweepConfigError(f"run '{job.label}': {error}") from error
        ident = _runs.identity(job.experiment, config)
        if ident in seen:
            continue
        seen[ident] = job
        where = Path(root).absolute() if root is not None else _runs.runs_root(job.experiment)
        action, folder, note = state_of(where, job.experiment, ident[:12], ident)
        planned.append(PlannedRun(job, config, ident, action, folder, where, note))
    return planned


def describe(planned: list[PlannedRun], root: Path | None = None) -> list[str]:
    """The plan as lines: one per run, then the counts."""
    lines = []
    for run in planned:
        where = run.folder if run.folder is not None else f"{run.name} (new)"
        note = f"  [{run.note}]" if run.note else ""
        lines.append(f"  {run.action:<8}{run.job.label:<40} {where}{note}")
    counts = {a: sum(r.action == a for r in planned) for a in ("start", "resume", "skip")}
    alive = sum(r.action == "running" for r in planned)
    lines.append(
        f"plan: {counts['start']} to start, {counts['resume']} to resume, "
        f"{counts['skip']} to skip (COMPLETED), {alive} running elsewhere"
    )
    return lines


# ---- one run, in a worker process ---------------------------------------------------------


def execute(
    job: Job,
    ident: str,
    root: str,
    mongo: tuple[str, str] | None = None,
    tensorboard: str | None = None,
) -> dict:
    """Run (or skip, or resume) one planned run in this process; never raises. This is the
    body of the Ray task: its state is decided again here, since a retry after a killed
    worker finds the run's folder with a checkpoint. With ``tensorboard`` (a folder), the
    run's metrics also go to TensorBoard event files in ``<tensorboard>/<run folder name>``."""
    from sacred.observers import MongoObserver

    began = time.perf_counter()
    root_path = Path(root)
    outcome = {"job": job, "name": ident[:12], "status": "FAILED", "result": None}
    outcome["pid"] = os.getpid()  # the worker process that ran it
    try:
        action, latest, note = state_of(root_path, job.experiment, ident[:12], ident)
        outcome["action"] = action
        if action == "skip":
            record = json.loads((latest / "run.json").read_text())
            outcome.update(status="COMPLETED", result=record.get("result"), run_dir=latest)
            return outcome
        if action == "running":
            outcome.update(status="RUNNING", error=f"running in another process ({note})")
            return outcome
        name = ident[:12] if latest is None else _runs.next_in_chain(latest)
        updates = dict(job.config_updates)
        if action == "resume":
            updates[_runs.RESUME_KEY] = str(latest)
        elif latest is not None:  # died before its first checkpoint: start it again
            _runs.mark_superseded(latest, name)
        outcome["run_dir"] = root_path / name
        module = importlib.import_module(f"experiments.{job.experiment}")
        observers = [_runs.RunFolderObserver(str(root_path))]
        if mongo is not None:
            url, db_name = mongo
            failures = root_path / "_mongo_failures"
            observers.append(MongoObserver(url=url, db_name=db_name, failure_dir=str(failures)))
        if tensorboard is not None:
            observers.append(TensorBoardObserver(tensorboard))
        module.ex.observers.extend(observers)
        try:
            run = module.ex.run(
                named_configs=list(job.named_configs),
                config_updates=updates,
                options={"--id": name, "--capture": "sys"},
            )
        finally:
            for observer in observers:
                module.ex.observers.remove(observer)
        outcome.update(status=run.status, result=run.result)
    except FileExistsError as error:  # another process took this run's next folder first
        outcome.update(status="RUNNING", error=f"started by another process ({error})")
    except Exception as error:  # a failed run is reported; the sweep goes on
        outcome.update(error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc())
    finally:
        outcome["seconds"] = time.perf_counter() - began
        outcome.setdefault("run_dir", None)
    return outcome


# ---- the sweep ----------------------------------------------------------------------------


def headline(result) -> str:
    """The summary table's result cell: the run's main figures."""
    if not isinstance(result, dict):
        return "" if result is None else str(result)[:40]
    keys = ("eval.accuracy", "interpolation.accuracy", "extrapolation.accuracy")
    keys += ("last_bin_error",)
    shown = [f"{k} {result[k]:.3f}" for k in keys if isinstance(result.get(k), int | float)]
    return "  ".join(shown)


def summary(outcomes: list[dict]) -> list[str]:
    """The table printed at the end of a sweep: run, status, time, result or error."""
    header = f"{'run':<40}{'folder':<18}{'status':<17}{'time':>6}  result"
    lines = [header, "-" * (len(header) + 30)]
    for outcome in outcomes:
        folder = Path(outcome["run_dir"]).name if outcome.get("run_dir") else outcome["name"]
        status = outcome["status"] + (" (skip)" if outcome.get("action") == "skip" else "")
        shown = outcome.get("error") or headline(outcome.get("result"))
        lines.append(
            f"{outcome['job'].label:<40}{folder:<18}{status:<17}"
            f"{outcome.get('seconds', 0.0):>5.0f}s  {shown}"
        )
    return lines


def _start_ray(address: str | None, cpus: int) -> bool:
    """Connect to ``address`` or start a local Ray with ``cpus`` CPUs; False when Ray was
    already running in this process (then it is left running)."""
    import ray

    if ray.is_initialized():
        return False
    options = {"include_dashboard": False, "log_to_driver": False}
    if address is None:
        ray.init(num_cpus=cpus, **options)
    else:
        ray.init(address=address, **options)
    return True


def run_sweep(
    jobs: list[Job],
    workers: int = 2,
    *,
    address: str | None = None,
    root: str | os.PathLike | None = None,
    mongo: tuple[str, str] | None = None,
    tensorboard: str | os.PathLike | None = None,
    retries: int = RETRIES,
    log=print,
    progress: bool = True,
) -> list[dict]:
    """Run ``jobs`` as Ray tasks, ``workers`` at a time on a local Ray started for the
    sweep (or on the cluster at ``address``); returns one outcome per planned run, in job
    order: ``job``, ``status``, ``run_dir``, ``seconds``, ``result`` or ``error``. With
    ``tensorboard`` (a folder every worker sees), each run's metrics also go to TensorBoard
    event files in ``<tensorboard>/<run folder name>``."""
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    planned = resolve(jobs, root, check_devices=address is None)
    # Finished runs are reported here, by the same code a worker would run for them.
    outcomes = {
        run.identity: execute(run.job, run.identity, str(run.root))
        for run in planned
        if run.action == "skip"
    }
    todo = [run for run in planned if run.identity not in outcomes]
    log(
        f"sweep: {len(planned)} runs ({len(outcomes)} COMPLETED before, skipped), "
        f"{len(todo)} to run, {workers} at a time"
        + ("" if address is None else f" on the Ray cluster at {address}")
    )
    if todo:
        board = None if tensorboard is None else str(Path(tensorboard).absolute())
        outcomes.update(_run_on_ray(todo, workers, address, mongo, board, retries, progress))
    ordered = [outcomes[run.identity] for run in planned]
    for line in summary(ordered):
        log(line)
    failed = sum(o["status"] != "COMPLETED" for o in ordered)
    log(f"{len(ordered) - failed} completed, {failed} not")
    _write_record(planned, ordered)
    return ordered


def _run_on_ray(todo, workers, address, mongo, tensorboard, retries, progress) -> dict:
    import ray
    from tqdm import tqdm

    threads = max(int(run.config.get("num_threads", 1)) for run in todo)
    started = _start_ray(address, workers * threads)
    task = ray.remote(max_calls=1)(execute)  # a fresh worker process per run
    outcomes: dict[str, dict] = {}
    pending = {}
    for run in todo:
        gpus = 1 if str(run.config.get("device", "cpu")).startswith("cuda") else 0
        ref = task.options(
            num_cpus=int(run.config.get("num_threads", 1)),
            num_gpus=gpus,
            max_retries=retries,
            retry_exceptions=False,
        ).remote(run.job, run.identity, str(run.root), mongo, tensorboard)
        pending[ref] = run
    bar = tqdm(total=len(todo), unit="run", desc="sweep", file=sys.stderr, disable=not progress)
    shown = ""
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as error:  # the worker died every retry
                    outcome = {
                        "job": run.job,
                        "name": run.name,
                        "status": "FAILED",
                        "run_dir": None,
                        "seconds": 0.0,
                        "error": f"the worker died {retries + 1} times: "
                        f"{type(error).__name__}: {str(error).splitlines()[0]}",
                    }
                outcomes[run.identity] = outcome
            done = sum(o["status"] == "COMPLETED" for o in outcomes.values())
            running = sum(_alive(r.root, r.name) for r in pending.values())
            counts = f"done {done}, running {running}, failed {len(outcomes) - done}"
            if ready or counts != shown:
                bar.set_postfix_str(shown := counts, refresh=False)
                bar.update(len(ready)) if ready else bar.refresh()
    except KeyboardInterrupt:
        bar.close()
        print(
            f"\ninterrupted: {len(pending)} runs left; each keeps its last checkpoint. "
            "Run the same command again to resume them.",
            file=sys.stderr,
        )
        raise
    finally:
        bar.close()
        if started:
            ray.shutdown()
    return outcomes


def _alive(root: Path, name: str) -> bool:
    links = _runs.chain(root, name)
    return bool(links) and _runs.lock_holder(links[-1]) is not None


def _write_record(planned: list[PlannedRun], outcomes: list[dict]) -> None:
    """The summary as JSON under ``<root>/_sweeps/`` (the command line included)."""
    by_root: dict[Path, list[dict]] = {}
    for run, outcome in zip(planned, outcomes, strict=True):
        by_root.setdefault(run.root, []).append(
            {
                "run": run.job.label,
                "named_configs": list(run.job.named_configs),
                "config_updates": run.job.config_updates,
                "identity": run.identity,
                "folder": None if outcome.get("run_dir") is None else str(outcome["run_dir"]),
                "status": outcome["status"],
                "seconds": outcome.get("seconds"),
                "error": outcome.get("error"),
            }
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for root, rows in by_root.items():
        folder = root / "_sweeps"
        folder.mkdir(parents=True, exist_ok=True)
        record = {"command": sys.argv, "runs": rows}
        (folder / f"{stamp}-{os.getpid()}.json").write_text(json.dumps(record, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("experiment", help="module under experiments/, e.g. stream")
    parser.add_argument(
        "--grid",
        nargs="+",
        action="append",
        default=[],
        metavar="NAMED|KEY=VALUE",
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
    parser.add_argument(
        "--workers", type=int, default=2, help="runs at a time on a local Ray (default 2)"
    )
    parser.add_argument(
        "--address", help="an existing Ray cluster ('auto', or host:port of its head)"
    )
    parser.add_argument(
        "--runs",
        help="runs folder (default $PONDERLIFE_RUNS/<experiment>, else runs/<experiment>); "
        "on a cluster, a path every node sees",
    )
    parser.add_argument(
        "-m",
        "--mongo",
        metavar="URL",
        help="also store runs in MongoDB, e.g. mongodb://host:27017 "
        "(needs `pip install 'ponderlife[mongo]'`)",
    )
    parser.add_argument("--mongo-db", default="ponderlife", help="MongoDB database name")
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write each run's metrics to TensorBoard event files in DIR/<run folder "
        "name> (on a cluster, a path every node sees)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    updates = settings(args.set, parser)
    mongo = None
    if args.mongo:
        if importlib.util.find_spec("pymongo") is None:
            parser.error("--mongo needs pymongo: pip install 'ponderlife[mongo]'")
        mongo = (args.mongo, args.mongo_db)
    root = None if args.runs is None else Path(args.runs).absolute()
    try:
        jobs = plan(args.experiment, args.grid, args.seeds, args.base, updates)
        if args.dry_run:
            planned = resolve(jobs, root, check_devices=args.address is None)
            print("\n".join(describe(planned)))
            return 0
        results = run_sweep(
            jobs,
            args.workers,
            address=args.address,
            root=root,
            mongo=mongo,
            tensorboard=args.tensorboard,
            progress=not args.no_progress,
        )
    except SweepConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0 if all(r["status"] == "COMPLETED" for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
