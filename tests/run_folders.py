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
