"""Atomic checkpoints of plain state (state_dicts, RNG states, counters).

A checkpoint is written to a temporary file beside its destination and renamed over it,
so a run killed mid-write leaves the previous checkpoint intact. Everything saved is a
tensor or a container of Python scalars, so it loads with ``torch.load(weights_only=True)``
(no pickled code runs on load).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (write a sibling temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, weights_only=True, map_location="cpu")


def rng_states(**generators: torch.Generator) -> dict[str, torch.Tensor]:
    """Snapshot torch's global RNG and the named generators."""
    states = {"torch_global": torch.get_rng_state()}
    states.update({name: g.get_state() for name, g in generators.items()})
    return states


def restore_rng_states(states: dict[str, torch.Tensor], **generators: torch.Generator) -> None:
    """Restore what :func:`rng_states` saved, into torch's global RNG and ``generators``."""
    torch.set_rng_state(states["torch_global"])
    for name, g in generators.items():
        g.set_state(states[name])
