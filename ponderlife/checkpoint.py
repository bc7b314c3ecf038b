"""Atomic, checksummed checkpoints of plain state (state_dicts, RNG states, counters).

A checkpoint file is a ``torch.save`` of a small envelope::

    {"format": "ponderlife-checkpoint", "version": 2, "sha256": <hex digest>,
     "payload": <bytes>}

where ``payload`` is itself the ``torch.save`` of ``{"experiment": <name or None>,
"state": <the caller's state>}`` and ``sha256`` is the SHA-256 of those bytes. Loading
recomputes the digest, so a flipped byte, a truncated or empty file or a file that is no
checkpoint at all is reported as one :class:`CheckpointError` naming the file, instead of
loading as a corrupted optimizer state. Everything saved is a tensor, bytes or a container
of Python scalars, so both levels load with ``torch.load(weights_only=True)`` (no pickled
code runs on load).

Writes are atomic: the new checkpoint goes to a temporary file beside its destination and
is renamed over it, so a run killed mid-write leaves the earlier checkpoint intact. The
checkpoint it replaces is kept as ``<name>.previous<suffix>`` (``checkpoint.previous.pt``):
the destination always holds a complete checkpoint, and one more is kept to fall back on.

Non-finite weights must never reach a checkpoint: :func:`non_finite_parameters` is the
cheap test training loops run after every update (one fused reduction).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "largest_magnitudes",
    "load_checkpoint",
    "non_finite_parameters",
    "previous_checkpoint",
    "restore_rng_states",
    "rng_states",
    "save_checkpoint",
]

FORMAT = "ponderlife-checkpoint"
VERSION = 2  # 1: a bare torch.save of the state, without checksum or experiment name


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted: unreadable, corrupt, of an older format, or of
    another experiment. The message names the file (and the previous checkpoint, when the
    run kept one)."""


def previous_checkpoint(path: str | os.PathLike) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint that ``path`` replaced
    (``checkpoint.pt`` → ``checkpoint.previous.pt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def _temporary_beside(path: Path) -> Path:
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    os.close(descriptor)
    return Path(temporary)


def _keep_as_previous(path: Path) -> None:
    """Make ``previous_checkpoint(path)`` a copy of ``path`` without ever leaving it
    half-written (hard link, or copy, to a temporary name; then rename)."""
    temporary = _temporary_beside(path)
    try:
        temporary.unlink()
        try:
            os.link(path, temporary)
        except OSError:  # no hard links on this filesystem
            shutil.copyfile(path, temporary)
        os.replace(temporary, previous_checkpoint(path))
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _serialize(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def save_checkpoint(
    path: str | os.PathLike,
    state: dict[str, Any],
    *,
    experiment: str | None = None,
    keep_previous: bool = True,
) -> Path:
    """Write ``state`` to ``path`` atomically, with the SHA-256 of its bytes and the name
    of the ``experiment`` it belongs to; the checkpoint it replaces is kept as
    :func:`previous_checkpoint` (unless ``keep_previous`` is false)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _serialize({"experiment": experiment, "state": state})
    envelope = {
        "format": FORMAT,
        "version": VERSION,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": payload,
    }
    temporary = _temporary_beside(path)
    try:
        with open(temporary, "wb") as handle:
            torch.save(envelope, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_previous and path.is_file():
            _keep_as_previous(path)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _fallback(path: Path) -> str:
    """The sentence pointing at the run's previous checkpoint, when there is one."""
    previous = previous_checkpoint(path)
    if path.name == previous.name or not previous.is_file():
        return ""
    return f"; the run's previous checkpoint is kept: resume from {previous} instead"


def load_checkpoint(path: str | os.PathLike, *, experiment: str | None = None) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint` at ``path``, after checking its SHA-256
    (both levels load with ``weights_only=True``).

    With ``experiment``, the checkpoint must have been saved by that experiment. Raises
    :class:`CheckpointError` for a file that is empty, truncated, corrupt, no checkpoint,
    written before checkpoints carried a checksum, or of another experiment;
    ``FileNotFoundError`` when there is no file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): it was never completely written"
            + _fallback(path)
        )
    try:
        envelope = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) cannot be read: it is truncated, corrupt or "
            f"not a checkpoint ({type(error).__name__})" + _fallback(path)
        ) from error
    if not (isinstance(envelope, dict) and envelope.get("format") == FORMAT):
        if isinstance(envelope, dict) and "format" not in envelope:
            raise CheckpointError(
                f"checkpoint {path} predates checksums (format version 1, without a SHA-256 "
                "of its contents), so its integrity cannot be verified; start the run "
                "afresh, or inspect it yourself with torch.load(path, weights_only=True)"
            )
        raise CheckpointError(
            f"{path} is not a ponderlife checkpoint (it holds a {type(envelope).__name__})"
            + _fallback(path)
        )
    if envelope.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {envelope.get('version')!r}; this code "
            f"reads version {VERSION}"
        )
    payload, digest = envelope.get("payload"), envelope.get("sha256")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: the SHA-256 of its contents does not match the "
            "one stored with them" + _fallback(path)
        )
    content = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    saved_by = content["experiment"]
    if experiment is not None and saved_by != experiment:
        raise CheckpointError(
            f"checkpoint {path} belongs to experiment {saved_by!r}, not {experiment!r}"
            + (f" (continue it with `python -m experiments.{saved_by} resume`)" if saved_by else "")
        )
    return content["state"]


def largest_magnitudes(tensors: Iterable[Tensor]) -> Tensor:
    """The largest ``|element|`` of each tensor, as one 1-D tensor, from a single fused
    reduction (``torch._foreach_norm`` with ord=inf) and no host sync. An entry is NaN or
    inf exactly when its tensor holds a NaN or ±inf (max propagates NaN, and cannot
    overflow)."""
    with torch.no_grad():
        tensors = list(tensors)
        if not tensors:
            return torch.zeros(0)
        foreach_norm = getattr(torch, "_foreach_norm", None)
        if foreach_norm is not None:
            norms = foreach_norm(tensors, math.inf)
        else:  # pragma: no cover - torch without the private foreach kernels
            norms = [torch.linalg.vector_norm(t, math.inf) for t in tensors]
        if len({n.device for n in norms}) > 1:  # a model spread over devices
            norms = [n.cpu() for n in norms]
        return torch.stack(norms)  # promotes mixed dtypes


def non_finite_parameters(model: nn.Module) -> list[str]:
    """Names of ``model``'s parameters that hold a NaN or ±inf (``[]`` when all are
    finite): one fused reduction and one host sync, cheap enough for every update."""
    values = largest_magnitudes(model.parameters()).tolist()
    if all(map(math.isfinite, values)):
        return []
    return [
        name
        for (name, _), value in zip(model.named_parameters(), values, strict=True)
        if not math.isfinite(value)
    ]


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
