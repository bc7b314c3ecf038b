"""Shared fixtures."""

from collections.abc import Callable
from pathlib import Path

import pytest
from sacred import Experiment
from sacred.observers import FileStorageObserver


@pytest.fixture
def observe(tmp_path) -> Callable[[Experiment], Path]:
    """``observe(ex)`` attaches a FileStorageObserver in a temporary folder to ``ex`` for
    the test and returns that folder; the observer is detached afterwards."""
    attached: list[tuple[Experiment, FileStorageObserver]] = []

    def attach(ex: Experiment) -> Path:
        observer = FileStorageObserver(str(tmp_path / "runs"))
        ex.observers.append(observer)
        attached.append((ex, observer))
        return tmp_path / "runs"

    yield attach
    for ex, observer in attached:
        ex.observers.remove(observer)
