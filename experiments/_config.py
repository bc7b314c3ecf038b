"""Validation of Sacred config values: each check names the key and its allowed values.

Experiments call these at the top of their main function, before any work, so a bad
value stops the run with a message like ``config 'size' must be in [2, inf), got 1``.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace

from ponderlife._checks import check_choice, check_int, check_range


def _name(key: str) -> str:
    return f"config '{key}'"


def _number(cfg: dict, key: str, low=None, high=None, *, low_open=False, high_open=False):
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{_name(key)} must be a number, got {value!r}")
    return check_range(
        _name(key), value, low, high, low_inclusive=not low_open, high_inclusive=not high_open
    )


def _optional_number(cfg: dict, key: str):
    return None if cfg[key] is None else _number(cfg, key)


def _integer(cfg: dict, key: str, low: int | None = None, high: int | None = None) -> int:
    return check_int(_name(key), cfg[key], low, high)


def _choice(cfg: dict, key: str, choices: Iterable[str]) -> str:
    return check_choice(_name(key), cfg[key], choices)


check = SimpleNamespace(
    number=_number, optional_number=_optional_number, integer=_integer, choice=_choice
)


def choice_configs(ex, key: str, choices: Iterable[str], extra: dict | None = None) -> None:
    """One named config per allowed value of ``key`` (``with cbp`` sets ``method="cbp"``),
    plus any ``extra`` settings for a value (``{"upgd": {"learning_rate": 1e-2}}``)."""
    for value in choices:
        ex.add_named_config(value, {key: value, **(extra or {}).get(value, {})})
