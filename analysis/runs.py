"""Sacred runs → tidy pandas DataFrames.

A Sacred ``FileStorageObserver`` writes one folder per run, ``<root>/<id>/``, holding
``config.json`` (nested config), ``run.json`` (status, start and stop time, experiment
name), ``metrics.json`` (``{name: {"steps": [...], "values": [...], "timestamps": [...]}}``)
and ``_sources/`` (ignored). :func:`load_runs` turns any number of such folders into one
long frame, one row per run × metric name × step, and parses each metric name with the
naming scheme of the ``stream`` experiment::

    <group>.<metric>[.d<level>][.exp<NNN>]

``group`` is ``train``, ``eval``, ``plasticity`` or ``stream``; ``step`` is the 0-based
index of the experience just trained; ``.exp<NNN>`` names the evaluated experience and
``.d<level>`` a difficulty level (``eval.halting_step.d3.exp002``). The helpers below
(:func:`per_experience`, :func:`accuracy_matrix`, :func:`final_forgetting`,
:func:`summarise`) take that frame and return smaller frames that the figures in
:mod:`analysis.plots` are drawn from.
"""

from __future__ import annotations

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
    "RUN_COLUMNS",
    "MissingMetricError",
    "accuracy_matrix",
    "final_forgetting",
    "flatten_config",
    "left_out",
    "load_configs",
    "load_runs",
    "mongo_runs",
    "parse_metric_name",
    "per_experience",
    "summarise",
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
    """Nested config → ``{"config.optimizer.lr": 0.01, ...}``; lists become tuples so that
    the columns can be grouped on."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return flat


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


def _read_run(label: str, folder: Path) -> dict[str, Any]:
    run, state = _run_state(folder)
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


def _frame_from_records(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The :func:`load_runs` frame of run records (see ``_read_run``)."""
    parts, configs = [], []
    for record in records:
        if not record["metrics"]:
            continue
        parts.append(_metrics_frame(record))
        configs.append({"run": record["run"], **flatten_config(record["config"])})
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
    return _frame_from_records(
        _read_run(label, folder)
        for label, folder in _find_runs(roots)
        if _kept(_run_state(folder)[1], keep, superseded)
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
                **flatten_config(record["config"]),
            }
        )
    columns = ["run", "run_dir", "experiment", "status", "superseded_by", "has_metrics"]
    frame = pd.DataFrame(rows, columns=None if rows else [*columns, "start_time", "stop_time"])
    for key in ("start_time", "stop_time"):
        frame[key] = pd.to_datetime(frame[key], format="ISO8601")
    frame.insert(8, "duration_s", (frame["stop_time"] - frame["start_time"]).dt.total_seconds())
    return frame


def mongo_runs(url: str, db_name: str, query: dict[str, Any] | None = None) -> pd.DataFrame:
    """The :func:`load_runs` frame of the runs in a Sacred ``MongoObserver`` database.

    ``query`` filters the ``runs`` collection (``{"status": "COMPLETED"}``,
    ``{"config.method": "cbp"}``); runs are labelled ``<db_name>/<_id>`` and ``run_dir`` is
    the URL. Needs ``pymongo``. Only the ImportError path and a fake client are tested
    (the project has no MongoDB); the document layout is Sacred 0.8's (``runs`` with
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
    records = []
    for run in database["runs"].find(query or {}):
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
        rows = rows[rows["step"] == rows.groupby("run")["step"].transform("max")]
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
    by: Sequence[str] = ("config.method",),
    at: Literal["final", "mean"] | int = "final",
) -> pd.DataFrame:
    """Mean ± std over runs (seeds) of one value per run, grouped by the ``by`` columns.

    ``metrics`` are full names (``"eval.accuracy"``, ``"plasticity.effective_rank"``); a
    run's value is the one at its last logged step (``at="final"``), the mean over its
    steps (``"mean"``) or the value at step ``at``. Runs that differ in columns outside
    ``by`` (seed, but also model or stream if left out) are pooled.

    Returns one row per group with columns ``(<metric>, "mean" | "std" | "n")``; std is NaN
    for a single run, n counts the runs.
    """
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    by = list(by)
    if not by:
        raise ValueError("summarise needs at least one column in by, e.g. ('config.method',)")
    absent = [c for c in by if c not in frame]
    if absent:
        raise ValueError(f"no column {absent} in the frame; group by one of {list(frame)}")
    tables = {}
    for name in names:
        rows = frame[frame["name"] == name]
        if rows.empty:
            raise _missing(name, frame)
        if at == "final":
            rows = rows[rows["step"] == rows.groupby("run")["step"].transform("max")]
        elif at != "mean":
            rows = rows[rows["step"] == at]
        per_run = rows.groupby([*by, "run"], dropna=False)["value"].mean()
        grouped = per_run.groupby(level=list(range(len(by))), dropna=False)
        tables[name] = grouped.agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    return pd.concat(tables, axis=1)
