"""Reading Sacred run folders back in tests that compare runs (sweeps, resumes)."""

import json
from pathlib import Path

import pytest


def metrics(folder: Path) -> dict:
    """A run's logged metrics (steps and values; not when they were logged)."""
    logged = json.loads((folder / "metrics.json").read_text())
    return {name: {k: v for k, v in e.items() if k != "timestamps"} for name, e in logged.items()}


def record(folder: Path) -> dict:
    """A run's ``run.json``."""
    return json.loads((folder / "run.json").read_text())


def assert_same_metrics(actual: dict, expected: dict) -> None:
    """The same metric names, steps, and values to 1e-9 (NaN equal to NaN)."""
    assert actual.keys() == expected.keys()
    for name, entry in expected.items():
        assert actual[name]["steps"] == entry["steps"], name
        assert actual[name]["values"] == pytest.approx(entry["values"], abs=1e-9, nan_ok=True), name


# ---------------------------------------------------------------- writing fake run folders


def log_metric(metrics: dict, name: str, step: int, value: float) -> None:
    """Append one value to ``metrics`` (the layout of Sacred's ``metrics.json``)."""
    entry = metrics.setdefault(name, {"steps": [], "values": [], "timestamps": []})
    entry["steps"].append(step)
    entry["values"].append(value)
    entry["timestamps"].append(f"2025-01-01T00:{step % 60:02d}:00.000000")


def write_run_folder(
    folder: Path,
    experiment: str,
    config: dict,
    metrics: dict | None,
    status: str = "COMPLETED",
    superseded_by: str | None = None,
) -> Path:
    """A Sacred FileStorageObserver run folder (``config.json``, ``run.json``,
    ``metrics.json`` unless ``metrics`` is None, an empty ``_sources``); a RUNNING run has
    no stop time, a superseded one names the run that continued it as a resume does."""
    folder.mkdir(parents=True)
    (folder / "_sources").mkdir()
    run = {
        "status": status,
        "start_time": "2025-01-01T00:00:00.000000",
        "experiment": {"name": experiment},
        "heartbeat": "2025-01-01T00:05:00.000000",
    }
    if status != "RUNNING":
        run["stop_time"] = "2025-01-01T00:10:00.000000"
    if superseded_by is not None:
        run["superseded_by"] = superseded_by
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "run.json").write_text(json.dumps(run))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder
