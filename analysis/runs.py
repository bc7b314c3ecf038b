"""Sacred runs → tidy pandas DataFrames.

A Sacred ``FileStorageObserver`` writes one folder per run, ``<root>/<id>/``, holding
``config.json`` (nested config), ``run.json`` (status, start and stop time, experiment
name), ``metrics.json`` (``{name: {"steps": [...], "values": [...], "timestamps": [...]}}``)
and ``_sources/`` (ignored). :func:`load_runs` turns any number of such folders into one
long frame, one row per run × metric name × step, and parses each metric name with the
naming scheme every experiment logs in::

    <group>.<metric>[.d<level>][.exp<NNN>]

``group`` is ``train``, ``eval``, ``plasticity``, ``stream`` (stream), or
``interpolation`` / ``extrapolation`` (parity); ``.exp<NNN>`` names the evaluated
experience and ``.d<level>`` a difficulty level (``eval.halting_step.d3.exp002``; parity's
``eval.accuracy.d5`` for k = 5). ``step`` is the experience just trained (stream), the
examples seen (bit_flipping) or the update (parity).

Runs are averaged only with repeats of their configuration: :func:`varying_keys` lists the
config keys that differ between runs (those in :data:`NOT_A_DIFFERENCE`, the seed first,
aside), :func:`run_groups` gives each run its group, refusing an explicit grouping that
would pool different configurations, and :func:`where` selects runs by config values. The
helpers below (:func:`per_experience`, :func:`accuracy_matrix`, :func:`final_forgetting`,
:func:`summarise`) take the frame and return smaller frames that the figures in
:mod:`analysis.plots` are drawn from.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "METRIC_NAME",
    "NOT_A_DIFFERENCE",
    "RUN_COLUMNS",
    "MissingMetricError",
    "accuracy_matrix",
    "confidence_interval",
    "count_runs",
    "departures",
    "final_forgetting",
    "final_rows",
    "flatten_config",
    "format_value",
    "group_label",
    "left_out",
    "load_configs",
    "load_runs",
    "mongo_runs",
    "parse_metric_name",
    "parse_value",
    "per_experience",
    "run_groups",
    "run_table",
    "summarise",
    "varying_keys",
    "where",
    "with_difficulty",
]

METRIC_NAME = re.compile(
    r"^(?P<group>[a-z]+)\.(?P<metric>[a-z0-9_]+)"
    r"(?:\.d(?P<difficulty>-?\d+))?(?:\.exp(?P<experience>\d+))?$"
)

#: Columns of :func:`load_runs` before the ``config.*`` columns.
RUN_COLUMNS = [
    "run",
    "run_dir",
    "experiment",
    "status",
    "name",
    "group",
    "metric",
    "difficulty",
    "experience",
    "step",
    "value",
    "timestamp",
]

# Run folders are searched this many levels below a root: runs/stream/3 from runs/.
_SEARCH_DEPTH = 2

#: Config keys added to an experiment after runs of it were made, with the default under
#: which a run computes what runs made before the key existed did (the experiments declare
#: them with ``experiments._runs.added_key``; a test keeps the two equal). A run whose
#: config lacks such a key is read as holding the default, so it groups with runs that
#: hold it rather than apart from them.
ADDED_KEYS: dict[str, dict[str, Any]] = {
    "parity": {
        "layer_norm": False,
        "weight_decay": 0.0,
        "device": "cpu",
        "training_unroll": "batch",
    },
    "stream": {"layer_norm": False, "clip_scale": 2.0, "training_unroll": "batch"},
}


class MissingMetricError(ValueError):
    """A figure or table needs a metric that none of the runs logged."""


def _missing(metric: str, frame: pd.DataFrame, group: str | None = None) -> MissingMetricError:
    names = frame["name"] if "name" in frame else pd.Series(dtype=str)
    in_group = names[frame["group"] == group] if group is not None else names
    logged = sorted((in_group if len(in_group) else names).unique())[:12]
    hint = f"logged names include {logged}" if logged else "the frame holds no metrics"
    return MissingMetricError(f"no '{metric}' metric in the runs; {hint}")


# ---------------------------------------------------------------- names and configs


def parse_metric_name(name: str) -> tuple[str, str, float, float]:
    """``(group, metric, difficulty, experience)`` of a metric name.

    Names outside the scheme are split at the first dot (no dot: empty group) and get NaN
    difficulty and experience, so they stay in the frame under their full ``name``.
    """
    match = METRIC_NAME.match(name)
    if match is None:
        group, _, metric = name.partition(".") if "." in name else ("", "", name)
        return group, metric, math.nan, math.nan
    difficulty, experience = match["difficulty"], match["experience"]
    return (
        match["group"],
        match["metric"],
        float(difficulty) if difficulty is not None else math.nan,
        float(experience) if experience is not None else math.nan,
    )


def flatten_config(config: dict[str, Any], prefix: str = "config.") -> dict[str, Any]:
    """Nested config → ``{"config.optimizer.lr": 0.01, ...}``; values are made hashable so
    that runs can be grouped on them: lists become tuples, dicts inside lists tuples of
    items, an empty dict None."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _hashable(value)
    return flat


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _hashable(v)) for k, v in value.items()) or None
    return value


# ---------------------------------------------------------------- finding run folders


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("run.json", "config.json", "metrics.json")
    )


def _run_dirs_below(root: Path, depth: int) -> Iterator[Path]:
    """Folders holding Sacred files (``3``, a sweep's ``4c9ad62933c7``, a resumed
    ``3.r1``), at most ``depth`` levels down; ``_sources``, ``_sweeps`` and hidden folders
    are skipped."""
    for child in sorted(root.iterdir(), key=lambda p: (len(p.name), p.name)):
        if not child.is_dir() or child.name.startswith((".", "_")):
            continue
        if _is_run_dir(child):
            yield child
        elif depth > 1:
            yield from _run_dirs_below(child, depth - 1)


def _find_runs(roots: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``(label, folder)`` of every run under the roots; the label is
    ``<root name>/<relative path>`` (``stream/3``), or the full path where two runs would
    share a label."""
    found: list[tuple[str, Path]] = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(
                f"no runs folder {root}; pass a Sacred run folder or its parent"
            )
        if _is_run_dir(root):
            found.append((f"{root.resolve().parent.name}/{root.name}", root))
            continue
        base = root.resolve().parent
        for folder in _run_dirs_below(root, _SEARCH_DEPTH):
            found.append((folder.resolve().relative_to(base).as_posix(), folder))
    labels = [label for label, _ in found]
    return [
        (label if labels.count(label) == 1 else str(folder.resolve()), folder)
        for label, folder in found
    ]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        # A run killed mid-write leaves a truncated file; treat it as absent.
        return None


def _run_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's ``run.json`` and what selects it: its ``status`` and ``superseded_by``."""
    run = _read_json(folder / "run.json") or {}
    return run, {
        "status": run.get("status", "UNKNOWN"),
        "superseded_by": run.get("superseded_by"),
    }


def _read_run(
    label: str, folder: Path, read: tuple[dict[str, Any], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The run's record; ``read`` is its :func:`_run_state` when the caller has it."""
    run, state = read or _run_state(folder)
    return {
        "run": label,
        "run_dir": str(folder),
        "experiment": (run.get("experiment") or {}).get("name"),
        **state,
        "start_time": run.get("start_time"),
        "stop_time": run.get("stop_time"),
        "config": _read_json(folder / "config.json") or {},
        "metrics": _read_json(folder / "metrics.json"),
    }


# ---------------------------------------------------------------- frames


def _status_filter(statuses: str | Iterable[str] | None) -> set[str] | None:
    if statuses is None:
        return None
    return {statuses} if isinstance(statuses, str) else set(statuses)


def _metrics_frame(record: dict[str, Any]) -> pd.DataFrame:
    """Long frame of one run's ``metrics.json`` (the RUN_COLUMNS, no config)."""
    entries = record["metrics"]
    counts = [len(entry.get("steps", [])) for entry in entries.values()]
    names = list(entries)
    frame = pd.DataFrame(
        {
            "name": np.repeat(np.array(names, dtype=object), counts),
            "step": np.fromiter(
                (s for e in entries.values() for s in e.get("steps", [])), np.int64, sum(counts)
            ),
            "value": np.fromiter(
                (v for e in entries.values() for v in e.get("values", [])), float, sum(counts)
            ),
            "timestamp": pd.to_datetime(
                [
                    t
                    for e, n in zip(entries.values(), counts, strict=True)
                    for t in (e.get("timestamps") or [None] * n)
                ],
                format="ISO8601",
            ),
        }
    )
    parsed = pd.DataFrame(
        [parse_metric_name(name) for name in names],
        columns=["group", "metric", "difficulty", "experience"],
        index=names,
    )
    frame = frame.join(parsed, on="name")
    for key in ("run", "run_dir", "experiment", "status"):
        frame[key] = record[key]
    return frame[RUN_COLUMNS]


def _empty_runs() -> pd.DataFrame:
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in RUN_COLUMNS})
    return frame.astype(
        {
            "difficulty": float,
            "experience": "Int64",
            "step": np.int64,
            "value": float,
            "timestamp": "datetime64[ns]",
        }
    )


def _with_added_keys(record: dict[str, Any]) -> dict[str, Any]:
    """The run's config, with the :data:`ADDED_KEYS` defaults of its experiment where a run
    made before those keys existed has none."""
    return {**ADDED_KEYS.get(record["experiment"], {}), **record["config"]}


def _frame_from_records(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The :func:`load_runs` frame of run records (see ``_read_run``)."""
    parts, configs = [], []
    for record in records:
        if not record["metrics"]:
            continue
        parts.append(_metrics_frame(record))
        configs.append({"run": record["run"], **flatten_config(_with_added_keys(record))})
    if not parts:
        return _empty_runs()
    frame = pd.concat(parts, ignore_index=True)
    frame["difficulty"] = frame["difficulty"].astype(float)
    frame["experience"] = frame["experience"].astype(float).astype("Int64")
    frame = frame.merge(pd.DataFrame(configs), on="run", how="left")
    return frame


def load_runs(
    *roots: str | Path,
    statuses: str | Iterable[str] | None = "COMPLETED",
    superseded: bool = False,
) -> pd.DataFrame:
    """All metrics of the Sacred runs under ``roots`` as one long frame.

    Each root is a run folder (``runs/stream/3``), a folder of run folders
    (``runs/stream``) or a folder of experiment folders (``runs``); run folders are those
    holding Sacred files, searched at most two levels down (``_sources`` is skipped).
    By default only finished runs count: ``statuses`` (``"COMPLETED"``, a collection of
    statuses, or None for every status: RUNNING, FAILED and INTERRUPTED runs keep what
    they logged) keeps runs with those statuses, and a run that a resumed run continued
    (``superseded_by`` in its ``run.json``; the resumed run holds its whole history) is
    left out unless ``superseded``. :func:`left_out` says what a load left out. Runs
    without ``metrics.json`` (crashed before logging) are skipped.

    Returns one row per run × metric name × step with the columns :data:`RUN_COLUMNS`
    (``difficulty`` float, ``experience`` Int64, both NA when the name has no such part)
    followed by the run's config flattened into ``config.<key>`` columns
    (``config.optimizer.lr``). No runs → an empty frame with the :data:`RUN_COLUMNS`.
    """
    keep = _status_filter(statuses)
    states = ((label, folder, _run_state(folder)) for label, folder in _find_runs(roots))
    return _frame_from_records(
        _read_run(label, folder, read)
        for label, folder, read in states
        if _kept(read[1], keep, superseded)
    )


def _kept(state: dict[str, Any], keep: set[str] | None, superseded: bool) -> bool:
    if keep is not None and state["status"] not in keep:
        return False
    return superseded or state["superseded_by"] is None


def left_out(
    *roots: str | Path,
    statuses: str | Iterable[str] | None = "COMPLETED",
    superseded: bool = False,
) -> dict[str, list[str]]:
    """The runs :func:`load_runs` with the same arguments leaves out, by reason
    (``"superseded"``, or the status, e.g. ``"RUNNING"``): ``{reason: [run labels]}``."""
    keep, reasons = _status_filter(statuses), {}
    for label, folder in _find_runs(roots):
        state = _run_state(folder)[1]  # run.json only: no metrics are read
        if not _kept(state, keep, superseded):
            reason = "superseded" if state["superseded_by"] is not None else state["status"]
            reasons.setdefault(reason, []).append(label)
    return reasons


def load_configs(*roots: str | Path) -> pd.DataFrame:
    """One row per run folder under ``roots`` (the search of :func:`load_runs`), also those
    without metrics, superseded and unfinished ones too: ``run``, ``run_dir``,
    ``experiment``, ``status``, ``superseded_by`` (None, or the run that continued it),
    ``has_metrics``, ``start_time``, ``stop_time`` (UTC-naive datetimes as Sacred writes them),
    ``duration_s`` (stop − start in seconds; NaN while a run has no stop time) and the
    flattened ``config.*`` columns."""
    rows = []
    for label, folder in _find_runs(roots):
        record = _read_run(label, folder)
        rows.append(
            {
                **{key: record[key] for key in ("run", "run_dir", "experiment", "status")},
                "superseded_by": record["superseded_by"],
                "has_metrics": bool(record["metrics"]),
                "start_time": record["start_time"],
                "stop_time": record["stop_time"],
                **flatten_config(_with_added_keys(record)),
            }
        )
    columns = ["run", "run_dir", "experiment", "status", "superseded_by", "has_metrics"]
    frame = pd.DataFrame(rows, columns=None if rows else [*columns, "start_time", "stop_time"])
    for key in ("start_time", "stop_time"):
        frame[key] = pd.to_datetime(frame[key], format="ISO8601")
    frame.insert(8, "duration_s", (frame["stop_time"] - frame["start_time"]).dt.total_seconds())
    return frame


def mongo_runs(
    url: str,
    db_name: str,
    query: dict[str, Any] | None = None,
    statuses: str | Iterable[str] | None = "COMPLETED",
) -> pd.DataFrame:
    """The :func:`load_runs` frame of the runs in a Sacred ``MongoObserver`` database.

    ``query`` filters the ``runs`` collection (``{"config.method": "cbp"}``) and, as in
    :func:`load_runs`, only finished runs count unless ``statuses`` says otherwise (a
    status, several, or None for every status). Superseded runs cannot be told apart here:
    a resume marks ``superseded_by`` in the run folder's ``run.json`` only, so a database
    that holds a killed run and its resumed copy has both (the killed one is not
    COMPLETED, so the default leaves it out). Runs are labelled ``<db_name>/<_id>`` and
    ``run_dir`` is the URL. Needs ``pymongo``. Only the ImportError path and a fake client
    are tested (the project has no MongoDB); the document layout is Sacred 0.8's (``runs`` with
    ``config``, ``status``, ``experiment.name``; ``metrics`` with ``run_id``, ``name``,
    ``steps``, ``values``, ``timestamps``).
    """
    try:
        import pymongo
    except ImportError as error:
        raise ImportError(
            "mongo_runs needs pymongo: pip install pymongo (or read FileStorageObserver "
            "folders with load_runs)"
        ) from error
    database = pymongo.MongoClient(url)[db_name]
    keep, records = _status_filter(statuses), []
    for run in database["runs"].find(query or {}):
        if keep is not None and run.get("status", "UNKNOWN") not in keep:
            continue
        metrics = {
            entry["name"]: {
                "steps": entry.get("steps", []),
                "values": entry.get("values", []),
                "timestamps": [_isoformat(t) for t in entry.get("timestamps", [])],
            }
            for entry in database["metrics"].find({"run_id": run["_id"]})
        }
        records.append(
            {
                "run": f"{db_name}/{run['_id']}",
                "run_dir": url,
                "experiment": (run.get("experiment") or {}).get("name"),
                "status": run.get("status", "UNKNOWN"),
                "config": run.get("config") or {},
                "metrics": metrics,
            }
        )
    return _frame_from_records(records)


def _isoformat(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


# ---------------------------------------------------------------- which runs may be averaged

#: Flattened config keys in which repeats of one configuration may differ, each with why;
#: every other key that differs between two runs makes them runs of different configurations.
NOT_A_DIFFERENCE: dict[str, str] = {
    "config.seed": "repeats of one configuration differ in the seed: the spread is over it",
    "config.stream_seed": "draws the stream's data, a repeat over it is a repeat like the seed",
    "config.resume_from": "a resumed run continues its original's configuration",
    "config.num_threads": "CPU threads change how fast a run goes, not what it learns",
    "config.device": "where a run ran (cpu, cuda), not what it ran",
    "config.fashion_root": "the folder the Fashion-MNIST files were read from",
}

# Keys that name what a figure compares come first in labels, the rest alphabetically.
_LEADING_KEYS = ("experiment", "config.method", "config.model")
# Groups are ordered by value, these known methods and models in this order first.
_VALUE_ORDER = (
    *("bp", "cbp", "l2", "shrink_perturb", "l2_init", "redo", "upgd", "linear"),
    *("pondernet", "act", "fixed"),
)

#: A figure's or table's grouping: ``"auto"``, a column, a list of columns, or None.
Hue = str | Sequence[str] | None


def run_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a :func:`load_runs` frame, indexed by ``run``: its ``experiment``
    and ``config.*`` columns."""
    columns = [c for c in ("experiment",) if c in frame]
    columns += [c for c in frame.columns if c.startswith("config.")]
    return frame.drop_duplicates("run").set_index("run")[columns]


def _values(column: pd.Series) -> pd.Series:
    """A column's values with every missing one (NaN from a key a run lacks, or None) as
    None, so that missing counts as one value."""
    return column.astype(object).where(column.notna(), None)


def _key_order(key: str) -> tuple[int, str]:
    return (_LEADING_KEYS.index(key) if key in _LEADING_KEYS else len(_LEADING_KEYS), key)


def varying_keys(frame: pd.DataFrame, ignore: Iterable[str] = tuple(NOT_A_DIFFERENCE)) -> list[str]:
    """The columns whose values differ between the runs of ``frame``: ``experiment`` when
    runs of several experiments are mixed, and every ``config.*`` key outside ``ignore``
    (by default :data:`NOT_A_DIFFERENCE`). A key some runs lack counts as differing. Ordered
    ``experiment``, ``config.method``, ``config.model``, then alphabetically."""
    return _varying(run_table(frame), set(ignore))


def _varying(runs: pd.DataFrame, ignore: set[str]) -> list[str]:
    keys = [k for k in runs if k not in ignore and len(_counts(runs[k])) > 1]
    return sorted(keys, key=_key_order)


def format_value(value: Any) -> str:
    """A config value as :func:`where` reads it back: ``16`` for an integral float (a key
    some runs lack turns ints into floats), the shortest round-trip repr for other floats,
    ``None`` for a missing value, ``(3,4,6)`` for a list (a tuple in the frame)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    if isinstance(value, tuple):
        # No spaces: a label's items are split at ", " (dimensions=(3,4,6), method=cbp);
        # strings quoted so that the tuple reads back as one.
        items = [repr(item) if isinstance(item, str) else format_value(item) for item in value]
        return "(" + ",".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of each run's last logged step (its final evaluation)."""
    return rows[rows["step"] == rows.groupby("run")["step"].transform("max")]


def group_label(values: dict[str, Any]) -> str:
    """``{"config.method": "cbp", "config.stream": "parity"}`` → ``method=cbp,
    stream=parity``: keys without their ``config.`` prefix, in the given order; each item is
    a :func:`where` condition."""
    return ", ".join(
        f"{key.removeprefix('config.')}={format_value(v)}" for key, v in values.items()
    )


def _column(columns: Sequence[str], key: str) -> str:
    """The column a user's key names among ``columns``: the key itself or ``config.<key>``."""
    for column in (key, f"config.{key}"):
        if column in columns:
            return column
    available = sorted(c.removeprefix("config.") for c in columns)
    raise ValueError(f"no key {key!r} in the runs; the keys are {available}")


def _value_order(value: Any) -> tuple[int, int, Any]:
    if value is None:
        return (len(_VALUE_ORDER) + 1, 0, 0)
    if isinstance(value, str) and value in _VALUE_ORDER:
        return (_VALUE_ORDER.index(value), 0, 0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (len(_VALUE_ORDER), 0, float(value))
    return (len(_VALUE_ORDER), 1, str(value))


def _refuse_pooling(runs: pd.DataFrame, keys: list[str], pool: list[str], argument: str) -> None:
    """Raise when runs differ in a key outside the group ``keys`` and ``pool``: their mean
    would average different configurations."""
    ignore = {*NOT_A_DIFFERENCE, *keys, *pool}
    outside = _varying(runs, ignore)
    if not outside:
        return
    differences = "; ".join(
        f"{k.removeprefix('config.')}: "
        + ", ".join(f"{format_value(v)} ({count_runs(n)})" for v, n in _counts(runs[k]))
        for k in outside
    )
    example = (
        f"{outside[0].removeprefix('config.')}={format_value(_counts(runs[outside[0]])[0][0])}"
    )
    shown = [k.removeprefix("config.") for k in keys] or None
    short = [k.removeprefix("config.") for k in outside]
    raise ValueError(
        f"the runs differ outside {argument}={shown} in {differences}; a mean over them would "
        f"mix configurations. Use {argument}='auto' (one group per configuration), select runs "
        f"with where(frame, {example!r}) (--where {example}), or pool them on purpose with "
        f"pool={tuple(short)!r} (--pool {','.join(short)})"
    )


def confidence_interval(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Mean of ``values`` (one per seed) and the half-width of its two-sided Student-t
    confidence interval at ``level``: ``t_{(1+level)/2, n-1} · s / √n`` with ``s`` the
    sample standard deviation. One value has no spread to estimate: half-width NaN."""
    from scipy.stats import t

    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        raise ValueError("confidence_interval needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = float(data.mean())
    if data.size == 1:
        return mean, math.nan
    spread = float(data.std(ddof=1)) / math.sqrt(data.size)
    return mean, float(t.ppf((1 + level) / 2, data.size - 1)) * spread


def count_runs(n: int) -> str:
    """``1 run``, ``3 runs``: how figures and tables say how many runs a group holds."""
    return f"{n} run" if n == 1 else f"{n} runs"


def _counts(column: pd.Series) -> list[tuple[Any, int]]:
    counts: dict[Any, int] = {}
    for value in _values(column):
        counts[value] = counts.get(value, 0) + 1
    return sorted(counts.items(), key=lambda item: _value_order(item[0]))


def run_groups(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    pool: Sequence[str] = (),
    argument: str = "hue",
) -> pd.DataFrame:
    """Which group each run of ``frame`` is averaged in, refusing to average runs of
    different configurations.

    ``hue="auto"``: one group per combination of the :func:`varying_keys` (outside
    ``pool``); when none varies, one group labelled by ``config.method`` or
    ``config.model`` if the runs have one. A column or list of columns (``"method"`` is
    ``config.method``): one group per combination of them, and a ValueError naming the keys
    and values when runs also differ in a key outside them and ``pool``. ``None``: all runs
    in one group, with the same check. ``pool`` names keys to average over on purpose
    (``("config.learning_rate",)``). ``argument`` is the parameter name the error mentions.

    Returns one row per run, indexed by ``run``, ordered by group (known methods and models
    first, then by value): the group key columns and ``group``, the :func:`group_label`.
    """
    runs = run_table(frame)
    columns = list(runs.columns)
    pooled = [_column(columns, key) for key in ([pool] if isinstance(pool, str) else pool)]
    if isinstance(hue, str) and hue == "auto":
        keys = _varying(runs, {*NOT_A_DIFFERENCE, *pooled})
        if not keys:
            keys = [k for k in _LEADING_KEYS[1:] if k in runs][:1]
    else:
        named = [] if hue is None else [hue] if isinstance(hue, str) else list(hue)
        keys = list(dict.fromkeys(_column(columns, key) for key in named))
        _refuse_pooling(runs, keys, pooled, argument)
    table = runs[keys].apply(_values) if keys else pd.DataFrame(index=runs.index)
    order = sorted(
        range(len(table)),
        key=lambda i: ([_value_order(v) for v in table.iloc[i]], table.index[i]),
    )
    table = table.iloc[order]
    labels = [group_label(dict(zip(keys, row, strict=True))) for row in table.itertuples(False)]
    return table.assign(group=labels if keys else "all runs")


# ---------------------------------------------------------------- selecting runs


def departures(groups: pd.DataFrame) -> tuple[dict[str, str], str]:
    """For the :func:`run_groups` table of a sweep: each group's label reduced to the keys
    whose value differs from the most common one over the groups (``"base"`` when none
    does), and those common values (the sweep's base), so that a one-factor-at-a-time
    sweep reads ``lambda_p=0.05`` rather than every key."""
    table = groups.drop_duplicates("group").set_index("group")
    base = {key: table[key].map(format_value).mode().iloc[0] for key in table.columns}
    short = {}
    for label, row in table.iterrows():
        changed = {k: row[k] for k in table.columns if format_value(row[k]) != base[k]}
        short[label] = group_label(changed) if changed else "base"
    return short, ", ".join(f"{k.removeprefix('config.')}={v}" for k, v in base.items())


def parse_value(text: str) -> Any:
    """A config value typed on a command line: ``3`` → 3, ``1e-3`` → 0.001, ``true`` /
    ``false`` → bool, ``None`` / ``null`` → None, ``(3, 4)`` / ``[3, 4]`` → a tuple (lists
    are tuples in the frame), anything else the string itself (quotes optional)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()
    return tuple(value) if isinstance(value, list) else value


def _equal(a: Any, b: Any) -> bool:
    """``a == b`` as Python compares (``16 == 16.0``); False where they cannot be compared."""
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _matches(column: pd.Series, value: Any) -> pd.Series:
    if value is None:
        return column.isna()  # a None config value and a key the run lacks alike
    return column.map(lambda v: _equal(v, value)).astype(bool)


def where(frame: pd.DataFrame, *conditions: str, **equals: Any) -> pd.DataFrame:
    """The rows of the runs of ``frame`` that match every condition.

    ``conditions`` are ``"key=value"`` strings (``"stream=stability"``, ``"optimizer.lr=1e-3"``;
    the ``config.`` prefix is optional, ``experiment`` and ``status`` work too), the value
    read by :func:`parse_value`; ``equals`` are the same as keywords with typed values
    (``method="cbp"``). An unknown key raises a ValueError listing the keys; a value no run
    has raises a ValueError listing the values the runs have.
    """
    items = []
    for condition in conditions:
        key, sign, text = condition.partition("=")
        if not sign or not key.strip():
            raise ValueError(f"condition {condition!r} is not key=value, e.g. 'method=cbp'")
        items.append((key.strip(), parse_value(text)))
    items += list(equals.items())
    columns = [*run_table(frame).columns, *(c for c in ("run", "status") if c in frame)]
    selected, chosen = frame, []
    for key, value in items:
        column = _column(columns, key)
        matched = selected[_matches(selected[column], value)]
        if matched.empty:
            runs = f"no run with {', '.join(chosen)}" if chosen else "no run"
            they = "they have" if chosen else "the runs have"
            present = [format_value(v) for v, _ in _counts(selected.drop_duplicates("run")[column])]
            raise ValueError(
                f"{runs} has {column.removeprefix('config.')}={format_value(value)}; "
                f"{they} {column.removeprefix('config.')} in {present}"
            )
        selected = matched
        chosen.append(f"{column.removeprefix('config.')}={format_value(value)}")
    return selected


# ---------------------------------------------------------------- per-experience views


def _run_columns(frame: pd.DataFrame) -> list[str]:
    """Columns that are constant within a run (its identity and config)."""
    return [c for c in ("run", "experiment", "status") if c in frame] + [
        c for c in frame.columns if c.startswith("config.")
    ]


def per_experience(
    frame: pd.DataFrame,
    metric: str,
    group: str = "eval",
    on: Literal["new", "final", "all"] = "new",
    difficulty: float | None = None,
) -> pd.DataFrame:
    """Values of ``<group>.<metric>.exp<NNN>`` per run × evaluated experience.

    ``on="new"``: the evaluation of experience e right after training it (step == e);
    ``on="final"``: the evaluation at the run's last step of that metric (a RUNNING run's
    last logged step); ``on="all"``: every step. ``difficulty`` selects the ``.d<level>``
    names; None selects the names without a level.

    Returns columns ``run, experience (int), step, value`` plus the run's identity and
    ``config.*`` columns, sorted by run and experience. Raises :class:`MissingMetricError`
    (a ValueError) when no run logged the metric per experience.
    """
    if on not in ("new", "final", "all"):
        raise ValueError(f"on={on!r}; use 'new', 'final' or 'all'")
    rows = frame[
        (frame["group"] == group) & (frame["metric"] == metric) & frame["experience"].notna()
    ]
    level = rows["difficulty"]
    rows = rows[level.isna() if difficulty is None else level == difficulty]
    if rows.empty:
        level_part = "" if difficulty is None else f".d{difficulty:g}"
        raise _missing(f"{group}.{metric}{level_part}.exp<NNN>", frame, group)
    if on == "new":
        rows = rows[rows["step"] == rows["experience"]]
    elif on == "final":
        rows = final_rows(rows)
    rows = rows.assign(experience=rows["experience"].astype(np.int64))
    columns = ["run", "experience", "step", "value"]
    columns += [c for c in _run_columns(frame) if c != "run"]
    return rows[columns].sort_values(["run", "experience", "step"]).reset_index(drop=True)


def with_difficulty(frame: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (rows with ``run`` and ``experience``, e.g. from :func:`per_experience`)
    joined with each experience's difficulty level (``stream.difficulty`` logged at that
    step) as a ``level`` column; rows without a logged level are dropped."""
    difficulty = frame[frame["name"] == "stream.difficulty"][["run", "step", "value"]]
    difficulty = difficulty.rename(columns={"step": "experience", "value": "level"})
    return table.merge(difficulty, on=["run", "experience"], how="inner")


def accuracy_matrix(frame: pd.DataFrame, run: str) -> pd.DataFrame:
    """``eval.accuracy.exp<NNN>`` of one run as a matrix: rows = step (experience just
    trained), columns = evaluated experience, NaN where an experience was not evaluated."""
    if run not in set(frame["run"]):
        raise ValueError(f"no run {run!r} in the frame; runs are {sorted(set(frame['run']))}")
    rows = per_experience(frame[frame["run"] == run], "accuracy", on="all")
    matrix = rows.pivot(index="step", columns="experience", values="value")
    matrix.index.name, matrix.columns.name = "trained", "evaluated"
    return matrix


def final_forgetting(
    frame: pd.DataFrame, source: Literal["auto", "logged", "accuracy"] = "auto"
) -> pd.DataFrame:
    """Forgetting of each experience at the end of the stream, per run × experience.

    ``source="logged"`` reads ``eval.forgetting.exp<NNN>`` at the run's last step;
    ``source="accuracy"`` computes it from ``eval.accuracy.exp<NNN>``: the best accuracy
    on e over the steps e ≤ l < T after it was learned minus the accuracy at the last step
    T (positive = forgotten). The last experience (no step between learning and the end)
    has no forgetting and is left out. ``"auto"`` uses the logged values if any run has
    them, else computes. Columns as :func:`per_experience`, ``value`` is the forgetting.
    """
    if source not in ("auto", "logged", "accuracy"):
        raise ValueError(f"source={source!r}; use 'auto', 'logged' or 'accuracy'")
    logged = (frame["group"] == "eval") & (frame["metric"] == "forgetting")
    if source == "logged" or (source == "auto" and frame.loc[logged, "experience"].notna().any()):
        return per_experience(frame, "forgetting", on="final")
    rows = per_experience(frame, "accuracy", on="all")
    rows = rows[rows["step"] >= rows["experience"]]
    last = rows.groupby("run")["step"].transform("max")
    final = rows[rows["step"] == last].set_index(["run", "experience"])
    earlier = rows[rows["step"] < last].groupby(["run", "experience"])["value"].max()
    final = final.loc[final.index.intersection(earlier.index)]
    final["value"] = earlier.loc[final.index] - final["value"]
    return final.reset_index()[rows.columns].reset_index(drop=True)


def summarise(
    frame: pd.DataFrame,
    metrics: str | Sequence[str] = "eval.accuracy",
    by: Hue = "auto",
    at: Literal["final", "mean"] | int = "final",
    pool: Sequence[str] = (),
) -> pd.DataFrame:
    """Mean ± std over runs (seeds) of one value per run, one row per group of runs.

    ``metrics`` are full names (``"eval.accuracy"``, ``"plasticity.effective_rank"``); a
    run's value is the one at its last logged step (``at="final"``), the mean over its
    steps (``"mean"``) or the value at step ``at``. Groups are those of :func:`run_groups`:
    ``by="auto"`` gives one per configuration (every key that varies, seed aside); named
    columns (``("config.model", "config.method")``) raise a ValueError when runs also
    differ outside them, unless ``pool`` names those keys.

    Returns one row per group, indexed by the group keys (``"group"`` when there are none),
    with columns ``(<metric>, "mean" | "std" | "runs")``; std is NaN for a single run.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    groups = run_groups(frame, by, pool, argument="by")
    keys = [c for c in groups.columns if c != "group"] or ["group"]
    tables = {}
    for name in names:
        rows = frame[frame["name"] == name]
        if rows.empty:
            raise _missing(name, frame)
        if at == "final":
            rows = final_rows(rows)
        elif at != "mean":
            rows = rows[rows["step"] == at]
        per_run = groups.join(rows.groupby("run")["value"].mean(), how="inner")
        grouped = per_run.groupby(keys, sort=False, dropna=False)["value"]
        tables[name] = grouped.agg(["mean", "std", "count"]).rename(columns={"count": "runs"})
    return pd.concat(tables, axis=1)
