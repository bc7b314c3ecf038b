"""Checkpoint and resume an Avalanche strategy between experiences.

Avalanche's own ``save_checkpoint`` pickles the whole strategy with dill, which fails for
torch's optimizers here. A ponderlife checkpoint holds state only: the model's and the
optimizer's state_dicts, every plugin's ``state_dict()`` (continual backprop's utilities,
ages and accumulators, the baselines' counters), the strategy clock, the caller's metric
history and stream position, and the torch / numpy / Python RNG states. It is written
by :func:`ponderlife.checkpoint.save_checkpoint`: atomically (temp file, then rename), with
a SHA-256 of its contents checked on load, the name of the experiment it belongs to, and
the checkpoint it replaces kept beside it (``checkpoint.previous.pt``); it loads with
``torch.load(weights_only=True)``.

Resume = build the same strategy from scratch (same config, same seed), then
:func:`load_strategy` before training the next experience; the rest of the run then
matches an uninterrupted one.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from avalanche.models.dynamic_optimizers import update_optimizer

from ponderlife.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["load_strategy", "save_strategy"]

_CLOCK_FIELDS = (
    "train_iterations",
    "train_exp_counter",
    "train_exp_epochs",
    "train_exp_iterations",
    "train_epoch_iterations",
    "total_iterations",
)


def _stateful_plugins(strategy) -> dict[str, Any]:
    """Plugins that carry state, keyed by position and class (stable for one config)."""
    return {
        f"{index}:{type(plugin).__name__}": plugin
        for index, plugin in enumerate(strategy.plugins)
        if hasattr(plugin, "state_dict") and hasattr(plugin, "load_state_dict")
    }


def _numpy_state() -> dict:
    # numpy's legacy global RNG is what third-party code (and Avalanche) may draw from.
    name, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _set_numpy_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(  # noqa: NPY002
        (state["name"], keys, state["position"], state["has_gauss"], state["cached"])
    )


def save_strategy(
    path: str | os.PathLike,
    strategy,
    *,
    next_experience: int,
    history: dict | None = None,
    extra: dict | None = None,
    experiment: str | None = None,
) -> None:
    """Save everything needed to continue ``strategy`` at ``next_experience``.

    ``history`` (e.g. every metric value logged so far) and ``extra`` must hold only
    tensors and plain Python containers / scalars. ``experiment`` names the experiment the
    checkpoint belongs to (checked by :func:`load_strategy`).
    """
    plugins = {}
    for key, plugin in _stateful_plugins(strategy).items():
        plugin.build(strategy) if hasattr(plugin, "build") else None
        plugins[key] = plugin.state_dict()
    save_checkpoint(
        path,
        {
            "next_experience": int(next_experience),
            "model": strategy.model.state_dict(),
            "optimizer": strategy.optimizer.state_dict(),
            "plugins": plugins,
            "clock": {field: int(getattr(strategy.clock, field)) for field in _CLOCK_FIELDS},
            "rng": {
                "torch": torch.get_rng_state(),
                # Code running on a GPU may draw from its RNG (PonderNet's halting draws
                # do not: its generators are CPU ones, saved with the model).
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
                "numpy": _numpy_state(),
                "python": random.getstate(),
            },
            "history": history or {},
            "extra": extra or {},
        },
        experiment=experiment,
    )


def load_strategy(path: str | os.PathLike, strategy, *, experiment: str | None = None) -> dict:
    """Restore a checkpoint into a freshly built ``strategy`` (same model architecture,
    optimizer type and plugins). Returns ``{"next_experience", "history", "extra"}``.

    The checkpoint's checksum is verified first (and, with ``experiment``, that it belongs
    to that experiment): :class:`ponderlife.checkpoint.CheckpointError` otherwise, before
    the strategy is touched."""
    state = load_checkpoint(path, experiment=experiment)
    strategy.model.load_state_dict(state["model"])
    # Tell Avalanche the optimizer is already set up, or its first train() would reset it.
    strategy.optimized_param_id = update_optimizer(
        strategy.optimizer, dict(strategy.model.named_parameters()), None, reset_state=True
    )
    strategy.optimizer.load_state_dict(state["optimizer"])
    plugins = _stateful_plugins(strategy)
    if set(plugins) != set(state["plugins"]):
        raise ValueError(
            f"checkpoint {path} was saved with plugins {sorted(state['plugins'])}, the "
            f"strategy has {sorted(plugins)}; rebuild the strategy from the run's config"
        )
    for key, plugin in plugins.items():
        if hasattr(plugin, "build"):
            plugin.build(strategy)
        plugin.load_state_dict(state["plugins"][key])
    for field, value in state["clock"].items():
        setattr(strategy.clock, field, value)
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    _set_numpy_state(state["rng"]["numpy"])
    python = state["rng"]["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    return {
        "next_experience": state["next_experience"],
        "history": state["history"],
        "extra": state["extra"],
    }
