"""Run plumbing shared by the Sacred experiments: where runs live, checkpoints, `resume`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from sacred import Experiment
from sacred.observers import FileStorageObserver

from ponderlife import configure_threads


def start(config: dict, seed: int, validate: Callable[[dict], None]) -> dict:
    """The opening of every experiment's main: the config as a plain dict, validated before
    any work, torch's thread count set and its global RNG seeded."""
    cfg = dict(config)
    validate(cfg)
    configure_threads(cfg["num_threads"])
    torch.manual_seed(seed)
    return cfg


def runs_root(experiment: str) -> Path:
    """``runs/<experiment>`` (or ``$PONDERLIFE_RUNS/<experiment>``)."""
    return Path(os.environ.get("PONDERLIFE_RUNS", "runs")) / experiment


def run_directory(run) -> Path | None:
    """The FileStorageObserver folder of a running Sacred run, if it has one."""
    for observer in run.observers:
        if isinstance(observer, FileStorageObserver):
            return Path(observer.dir)
    return None


def checkpoint_path(resume_from: str | os.PathLike) -> Path:
    """A run folder's ``checkpoint.pt``, or the file itself (e.g. the run's
    ``checkpoint.previous.pt``)."""
    path = Path(resume_from)
    return path / "checkpoint.pt" if path.is_dir() else path


def run_folder(resume_from: str | os.PathLike) -> Path:
    """The run folder of a run folder or of a checkpoint file in one."""
    path = Path(resume_from)
    return path if path.is_dir() else path.parent


def experiment_of(resume_from: str | os.PathLike) -> str | None:
    """The experiment a run folder (or a checkpoint file in one) belongs to, from Sacred's
    ``run.json``; None when there is no readable ``run.json``."""
    try:
        record = json.loads((run_folder(resume_from) / "run.json").read_text())
        return record["experiment"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_owner(resume_from: str | os.PathLike, experiment: str) -> None:
    """Raise ``ValueError`` when ``resume_from`` is a run of another experiment, saying
    which one and how to continue it."""
    owner = experiment_of(resume_from)
    if owner is not None and owner != experiment:
        raise ValueError(
            f"{resume_from} is a run of experiment {owner!r}, not {experiment!r}: continue "
            f"it with `python -m experiments.{owner} resume {resume_from}`"
        )


def resume(ex: Experiment, run_dir: str):
    """Start a new run with the stored config of ``run_dir`` and continue from its last
    checkpoint; the new run is stored beside the others.

    ``run_dir`` may also be a checkpoint file of a run folder (its
    ``checkpoint.previous.pt``, say) to continue from that one. A run of another
    experiment is refused before anything is read but its ``run.json``."""
    check_owner(run_dir, ex.path)
    config = json.loads((run_folder(run_dir) / "config.json").read_text())
    config.pop("resume_from", None)
    added = None
    if not any(isinstance(o, FileStorageObserver) for o in ex.observers):
        added = FileStorageObserver(str(runs_root(ex.path)))
        ex.observers.append(added)
    try:
        return ex.run(config_updates={**config, "resume_from": str(run_dir)})
    finally:
        if added is not None:
            ex.observers.remove(added)


def main(ex: Experiment) -> None:
    """Command line: ``resume <run dir>``, or Sacred's own commands with a file observer."""
    if len(sys.argv) == 3 and sys.argv[1] == "resume":
        try:
            check_owner(sys.argv[2], ex.path)
        except ValueError as error:
            sys.exit(f"error: {error}")
        resume(ex, sys.argv[2])
    else:
        ex.observers.append(FileStorageObserver(str(runs_root(ex.path))))
        ex.run_commandline()
