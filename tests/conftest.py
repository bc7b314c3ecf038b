"""Shared fixtures."""

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
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


@pytest.fixture
def cell_states() -> Callable:
    """``cell_states(cell, x, steps)``: the hidden states (steps, B, hidden) a recurrent
    cell fed ``x`` at every step produces from the zero state, computed on a copy of the
    cell so that no recording hook on it sees these forwards."""

    def unroll(cell, x, steps: int):
        plain_cell, states = copy.deepcopy(cell), []
        with torch.no_grad():
            h = x.new_zeros(x.shape[0], cell.hidden_size)
            for _ in range(steps):
                h = plain_cell(x, h)
                states.append(h)
        return torch.stack(states)

    return unroll
