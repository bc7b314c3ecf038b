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


def checkpoint_path(resume_from: str) -> Path:
    """A run folder's ``checkpoint.pt``, or the file itself."""
    path = Path(resume_from)
    return path / "checkpoint.pt" if path.is_dir() else path


def resume(ex: Experiment, run_dir: str):
    """Start a new run with the stored config of ``run_dir`` and continue from its last
    checkpoint; the new run is stored beside the others."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
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
        resume(ex, sys.argv[2])
    else:
        ex.observers.append(FileStorageObserver(str(runs_root(ex.path))))
        ex.run_commandline()
