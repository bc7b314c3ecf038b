"""Figures of the ``stream`` experiment: each function takes the :func:`~analysis.load_runs`
frame and returns a matplotlib :class:`~matplotlib.figure.Figure`.

Figures are built with ``Figure`` directly, not ``pyplot``: nothing is shown, no global
figure list grows, and any backend (Agg in scripts and tests, inline in notebooks) works.
All figures share :data:`STYLE` and :data:`COLORS`. Curves are the mean over the runs in
each ``hue`` group (seeds, by default all runs with the same ``config.method``) with a
shaded spread, ``"std"`` (± one standard deviation), ``"minmax"`` or ``"none"``; the
legend gives each group's number of runs. A figure whose metric no run logged raises
:class:`~analysis.runs.MissingMetricError` (a ValueError) naming the metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.runs import MissingMetricError, final_forgetting, per_experience, with_difficulty

__all__ = [
    "COLORS",
    "METRIC_LABELS",
    "STYLE",
    "forgetting_vs_pondering",
    "halting_over_stream",
    "halting_vs_difficulty",
    "plasticity_curve",
    "plasticity_diagnostics",
    "spearman",
]

Spread = Literal["std", "minmax", "none"]

#: Sizes shared by every figure (inches, points, alpha).
STYLE = {
    "panel_size": (4.4, 3.0),
    "font_size": 9,
    "title_size": 10,
    "line_width": 1.6,
    "marker_size": 14,
    "band_alpha": 0.2,
    "point_alpha": 0.6,
    "difficulty_color": "0.45",
}

#: One colour per method and per model, so a method keeps its colour across figures.
COLORS = {
    "bp": "#4c72b0",
    "cbp": "#dd8452",
    "l2": "#55a868",
    "shrink_perturb": "#c44e52",
    "l2_init": "#8172b3",
    "redo": "#937860",
    "upgd": "#da8bc3",
    "pondernet": "#1b9e77",
    "act": "#d95f02",
    "fixed": "#7570b3",
}
_FALLBACK = ["#8c8c8c", "#ccb974", "#64b5cd", "#17becf", "#bcbd22", "#e377c2"]

#: Axis labels with units for the plasticity diagnostics.
METRIC_LABELS = {
    "units_replaced": "units replaced (count)",
    "dead_fraction": "dead units (fraction)",
    "dormant_fraction": "dormant units (fraction)",
    "effective_rank": "effective rank (dimensions)",
    "approximate_rank": "approximate rank (dimensions)",
    "stable_rank": "stable rank (dimensions)",
    "feature_norm": "feature norm (L2)",
    "weight_magnitude": "weight magnitude (mean |w|)",
    "gradient_norm": "gradient norm (L2)",
}


# ---------------------------------------------------------------- shared drawing


def _figure(nrows: int = 1, ncols: int = 1) -> tuple[Figure, np.ndarray]:
    width, height = STYLE["panel_size"]
    figure = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False)
    return figure, axes


def _style(ax: Axes, title: str, xlabel: str, ylabel: str, integer_x: bool = True) -> None:
    """Title, labels and ticks in the shared sizes, no top/right spines; ``integer_x`` keeps
    ticks on whole experience indices or difficulty levels."""
    ax.set_title(title, fontsize=STYLE["title_size"])
    ax.set_xlabel(xlabel, fontsize=STYLE["font_size"])
    ax.set_ylabel(ylabel, fontsize=STYLE["font_size"])
    ax.tick_params(labelsize=STYLE["font_size"])
    ax.spines[["top", "right"]].set_visible(False)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax: Axes, handles=None) -> None:
    if handles is None:
        ax.legend(fontsize=STYLE["font_size"], frameon=False)
    else:
        ax.legend(handles=handles, fontsize=STYLE["font_size"], frameon=False)


def _groups(table: pd.DataFrame, hue: str | None) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """``(label, colour, rows)`` per hue value, known methods/models first."""
    if hue is None:
        yield f"all runs (n={table['run'].nunique()})", COLORS["bp"], table
        return
    if hue not in table:
        raise ValueError(
            f"no column {hue!r} to group runs by; pass hue=None or one of "
            f"{[c for c in table.columns if c.startswith('config.')]}"
        )
    order = list(COLORS)
    values = sorted(
        table[hue].dropna().unique(),
        key=lambda v: (order.index(v) if v in order else len(order), str(v)),
    )
    unknown = 0
    for value in values:
        if value in COLORS:
            color = COLORS[value]
        else:
            color, unknown = _FALLBACK[unknown % len(_FALLBACK)], unknown + 1
        rows = table[table[hue] == value]
        yield f"{value} (n={rows['run'].nunique()})", color, rows


def _mean_band(ax: Axes, table: pd.DataFrame, x: str, hue: str | None, spread: Spread) -> None:
    """One line (mean over runs) and one shaded band per hue group; ``table`` holds one
    ``value`` per run × ``x``."""
    if spread not in ("std", "minmax", "none"):
        raise ValueError(f"spread={spread!r}; use 'std', 'minmax' or 'none'")
    for label, color, rows in _groups(table, hue):
        stats = rows.groupby(x)["value"].agg(["mean", "std", "min", "max"]).sort_index()
        xs = stats.index.to_numpy(dtype=float)
        ax.plot(xs, stats["mean"], color=color, linewidth=STYLE["line_width"], label=label)
        if spread == "none":
            continue
        if spread == "std":
            # A single run has no spread: std is NaN, drawn as a zero-width band.
            deviation = stats["std"].fillna(0.0)
            low, high = stats["mean"] - deviation, stats["mean"] + deviation
        else:
            low, high = stats["min"], stats["max"]
        ax.fill_between(xs, low, high, color=color, alpha=STYLE["band_alpha"], linewidth=0)


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks, ties given their
    average rank (pandas' ``method="spearman"`` would need scipy). NaN when either is
    constant or there are fewer than two points."""
    return float(x.rank().corr(y.rank()))


# ---------------------------------------------------------------- figures


MAX_LEVEL_PANELS = 6


def _levels(frame: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame | None:
    """``table`` (one row per run × experience) with each experience's difficulty level
    (``stream.difficulty`` at that step) as ``level``, when the stream cycles through 2 to
    :data:`MAX_LEVEL_PANELS` levels; None otherwise."""
    merged = with_difficulty(frame, table)
    count = merged["level"].nunique()
    return merged if 2 <= count <= MAX_LEVEL_PANELS else None


def _per_level_panels(
    table: pd.DataFrame, hue: str | None, spread: Spread, title: str, ylabel: str
) -> Figure:
    """One panel per difficulty level, sharing the y axis: a trend within a level is not
    hidden by the zig-zag of a stream that cycles through levels."""
    levels = sorted(table["level"].unique())
    figure, axes = _figure(1, len(levels))
    for ax, level in zip(axes[0], levels, strict=True):
        _mean_band(ax, table[table["level"] == level], "experience", hue, spread)
        _style(ax, f"{title}, difficulty {level:g}", "experience (index)", ylabel)
    shared = [ax.get_ylim() for ax in axes[0]]
    for ax in axes[0]:
        ax.set_ylim(min(lo for lo, _ in shared), max(hi for _, hi in shared))
    _legend(axes[0, 0])
    return figure


def plasticity_curve(
    frame: pd.DataFrame,
    hue: str | None = "config.method",
    spread: Spread = "std",
    by_difficulty: bool = True,
) -> Figure:
    """Accuracy on each new experience right after training on it
    (``eval.accuracy.exp<NNN>`` at step NNN) against the experience index. A curve that
    falls along the stream is loss of plasticity. With ``by_difficulty`` and a stream that
    cycles through a few difficulty levels, one panel per level."""
    table = per_experience(frame, "accuracy", on="new")
    leveled = _levels(frame, table) if by_difficulty else None
    if leveled is not None:
        return _per_level_panels(
            leveled, hue, spread, "New-experience accuracy", "accuracy (fraction)"
        )
    figure, axes = _figure()
    ax = axes[0, 0]
    _mean_band(ax, table, "experience", hue, spread)
    _style(ax, "Accuracy on each new experience", "experience (index)", "accuracy (fraction)")
    _legend(ax)
    return figure


def halting_over_stream(
    frame: pd.DataFrame,
    hue: str | None = "config.method",
    spread: Spread = "std",
    by_difficulty: bool = True,
) -> Figure:
    """Mean halting step on each new experience right after training on it
    (``eval.halting_step_mean.exp<NNN>`` at step NNN), with the stream's mean difficulty
    level of each experience (``stream.difficulty``, mean over the runs) dashed grey on a
    twin axis; the overlay is left out when no run logged it. With ``by_difficulty`` and a
    stream cycling through a few levels, one panel per level instead. Runs must come from
    one stream."""
    table = per_experience(frame, "halting_step_mean", on="new")
    if "config.stream" in table and table["config.stream"].nunique() > 1:
        streams = sorted(table["config.stream"].dropna().unique())
        raise ValueError(
            f"runs from several streams {streams}; select one, e.g. "
            f"frame[frame['config.stream'] == {streams[0]!r}]"
        )
    leveled = _levels(frame, table) if by_difficulty else None
    if leveled is not None:
        return _per_level_panels(leveled, hue, spread, "Halting step", "halting step (mean, steps)")
    figure, axes = _figure()
    ax = axes[0, 0]
    _mean_band(ax, table, "experience", hue, spread)
    _style(
        ax,
        "Halting step on each new experience",
        "experience (index)",
        "halting step (mean, steps)",
    )
    handles = ax.get_legend_handles_labels()[0]
    difficulty = frame[(frame["name"] == "stream.difficulty") & frame["run"].isin(table["run"])]
    if not difficulty.empty:
        level = difficulty.groupby("step")["value"].mean()
        twin = ax.twinx()
        (line,) = twin.plot(
            level.index,
            level.to_numpy(),
            linestyle="--",
            color=STYLE["difficulty_color"],
            label="stream difficulty",
        )
        twin.set_ylabel("difficulty level (mean)", fontsize=STYLE["font_size"])
        twin.tick_params(labelsize=STYLE["font_size"])
        twin.spines[["top"]].set_visible(False)
        handles.append(line)
    _legend(ax, handles)
    return figure


def forgetting_vs_pondering(
    frame: pd.DataFrame,
    hue: str | None = "config.method",
    source: Literal["auto", "logged", "accuracy"] = "auto",
) -> Figure:
    """Forgetting of each experience at the end of the stream (:func:`final_forgetting`)
    against the mean halting step on it when it was learned (``eval.halting_step_mean``
    at step == experience): one point per run × experience, a least-squares line and the
    Spearman ρ and Pearson r per hue group in the legend."""
    forgetting = final_forgetting(frame, source)
    halting = per_experience(frame, "halting_step_mean", on="new")
    halting = halting[["run", "experience", "value"]].rename(columns={"value": "halting"})
    points = forgetting.merge(halting, on=["run", "experience"])
    if points.empty:
        raise MissingMetricError(
            "no experience has both a forgetting value and 'eval.halting_step_mean.exp<NNN>' "
            "at the step it was learned; forgetting needs at least two trained experiences"
        )
    figure, axes = _figure()
    ax = axes[0, 0]
    for label, color, rows in _groups(points, hue):
        x, y = rows["halting"], rows["value"]
        ax.scatter(
            x,
            y,
            s=STYLE["marker_size"],
            color=color,
            alpha=STYLE["point_alpha"],
            label=f"{label}: ρ={spearman(x, y):.2f}, r={x.corr(y):.2f}",
        )
        if x.nunique() >= 2:
            slope, intercept = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 2)
            ax.plot(xs, slope * xs + intercept, color=color, linewidth=STYLE["line_width"])
    _style(
        ax,
        "Forgetting vs pondering",
        "halting step when learned (mean, steps)",
        "forgetting at end (accuracy drop)",
        integer_x=False,
    )
    _legend(ax)
    return figure


def plasticity_diagnostics(
    frame: pd.DataFrame,
    hue: str | None = "config.method",
    metrics: Sequence[str] = (
        "dormant_fraction",
        "effective_rank",
        "weight_magnitude",
        "units_replaced",
    ),
    spread: Spread = "std",
) -> Figure:
    """One panel per ``plasticity.<metric>`` (measured after training each experience)
    against the experience index, two panels a row; the legend is in the first panel."""
    logged = set(frame.loc[frame["group"] == "plasticity", "metric"])
    missing = [m for m in metrics if m not in logged]
    if missing:
        raise MissingMetricError(
            f"no 'plasticity.{missing[0]}' metric in the runs; missing {missing}, "
            f"logged plasticity metrics: {sorted(logged)}"
        )
    ncols = min(2, len(metrics))
    figure, axes = _figure(math.ceil(len(metrics) / ncols), ncols)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = frame[
            (frame["group"] == "plasticity")
            & (frame["metric"] == metric)
            & frame["experience"].isna()
            & frame["difficulty"].isna()
        ]
        _mean_band(ax, rows, "step", hue, spread)
        _style(
            ax,
            metric.replace("_", " "),
            "experience trained (index)",
            METRIC_LABELS.get(metric, metric),
        )
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    _legend(axes[0, 0])
    return figure


def halting_vs_difficulty(
    frame: pd.DataFrame,
    hue: str | None = "config.method",
    steps: Literal["final", "all"] = "final",
    spread: Spread = "std",
) -> Figure:
    """Mean halting step per difficulty level (``eval.halting_step.d<level>.exp<NNN>``)
    against the level. A run's value for a level is the plain mean over the evaluated
    experiences (each experience counts once, whatever its number of samples of that
    level) at its last step (``steps="final"``) or over all steps (``"all"``); the
    stream-level names without ``.exp`` are used only when no run logged per-experience
    ones. Then mean ± spread over the runs of each hue group."""
    if steps not in ("final", "all"):
        raise ValueError(f"steps={steps!r}; use 'final' or 'all'")
    rows = frame[
        (frame["group"] == "eval")
        & (frame["metric"] == "halting_step")
        & frame["difficulty"].notna()
    ]
    if rows.empty:
        raise MissingMetricError(
            "no 'eval.halting_step.d<level>.exp<NNN>' metric in the runs; it is logged "
            "only for streams whose samples carry a difficulty level"
        )
    if rows["experience"].notna().any():
        rows = rows[rows["experience"].notna()]
    if steps == "final":
        rows = rows[rows["step"] == rows.groupby("run")["step"].transform("max")]
    keys = ["run", "difficulty"] + ([hue] if hue is not None and hue in rows else [])
    table = rows.groupby(keys, as_index=False, dropna=False)["value"].mean()
    figure, axes = _figure()
    ax = axes[0, 0]
    _mean_band(ax, table, "difficulty", hue, spread)
    when = "last step" if steps == "final" else "all steps"
    _style(
        ax,
        f"Halting step per difficulty ({when})",
        "difficulty level",
        "halting step (mean, steps)",
    )
    _legend(ax)
    return figure
