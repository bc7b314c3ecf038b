"""Figures of the three experiments: each function takes the :func:`~analysis.load_runs`
frame of one experiment's runs and returns a matplotlib :class:`~matplotlib.figure.Figure`.

Figures are built with ``Figure`` directly, not ``pyplot``: nothing is shown, no global
figure list grows, and any backend (Agg in scripts and tests, inline in notebooks) works.
All figures share :data:`STYLE` and :data:`COLORS`.

Curves are the mean over the runs of a group with a shaded spread, ``"std"`` (± one
standard deviation), ``"minmax"`` or ``"none"``. Groups come from
:func:`~analysis.runs.run_groups`: by default (``hue="auto"``) one per configuration, that
is per combination of the config keys that differ between the runs (seed aside), labelled
``method=cbp, stream=parity (3 runs)``. An explicit ``hue`` (a column or list of columns)
refuses runs that also differ outside it unless ``pool`` names those keys, so no curve
averages different configurations by accident. Lines with at most
``STYLE["max_marker_points"]`` points carry markers; the legend sits outside the axes, to
the right. A figure whose metric no run logged raises
:class:`~analysis.runs.MissingMetricError` (a ValueError) naming the metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.textpath import text_to_path
from matplotlib.ticker import EngFormatter, MaxNLocator

from analysis.runs import (
    Hue,
    MissingMetricError,
    count_runs,
    departures,
    final_forgetting,
    final_rows,
    per_experience,
    run_groups,
    run_table,
    with_difficulty,
)

__all__ = [
    "COLORS",
    "METRIC_LABELS",
    "STEP_LABELS",
    "STYLE",
    "bit_flipping_error",
    "forgetting_vs_pondering",
    "halting_over_stream",
    "halting_vs_difficulty",
    "parity_by_difficulty",
    "parity_sweep",
    "parity_training",
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
    "line_marker_size": 4,
    "max_marker_points": 20,  # a line with at most this many points shows its points
    "band_alpha": 0.2,
    "point_alpha": 0.6,
    "difficulty_color": "0.45",
    "untrained_color": "0.88",
}

#: One colour per method, model and the linear learner, so each keeps its colour across
#: figures; a group takes the colour of one of its values (see ``_groups``).
COLORS = {
    "bp": "#4c72b0",
    "cbp": "#dd8452",
    "l2": "#55a868",
    "shrink_perturb": "#c44e52",
    "l2_init": "#8172b3",
    "redo": "#937860",
    "upgd": "#da8bc3",
    "weight_clipping": "#64b5cd",
    "layer_norm_l2": "#ccb974",
    "linear": "#333333",
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

#: What ``step`` counts in each experiment: the x label of curves over steps.
STEP_LABELS = {
    "stream": "experience trained (index)",
    "bit_flipping": "examples seen",
    "parity": "updates",
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


def _count_axis(ax: Axes) -> None:
    """An x axis of large counts (examples seen up to millions): five ticks at most, written
    200k, 1M, so that the labels do not run into each other."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))


@dataclass(frozen=True)
class _Group:
    """Runs averaged into one curve: the legend label (with its number of runs), the
    colour, the run labels, and the group's :func:`~analysis.runs.run_groups` name."""

    label: str
    color: str
    runs: frozenset[str]
    name: str


def _groups(frame: pd.DataFrame, hue: Hue, pool: Sequence[str], drawn: pd.Series) -> list[_Group]:
    """The groups of :func:`~analysis.runs.run_groups` over all runs of ``frame`` (so a
    group has the same label in every figure of the runs), each reduced to its runs in
    ``drawn`` (a column of run labels: those with the figure's metric); groups without any
    are left out. A group takes the colour of a value that only it has (``linear`` among
    ``method=bp`` groups), else of a value whose colour is still free, else the next
    fallback colour."""
    table = run_groups(frame, hue, pool)
    values = {
        label: list(rows.iloc[0].drop("group"))
        for label, rows in table.groupby("group", sort=False)
    }
    colors: dict[str, str] = {}
    for label, own in values.items():  # a value only this group has cannot clash
        others = {v for other, vs in values.items() if other != label for v in vs}
        unique = [v for v in own if v not in others and isinstance(v, str) and v in COLORS]
        if unique:
            colors[label] = COLORS[unique[0]]
    fallback = iter(_FALLBACK * len(values))
    for label, own in values.items():
        if label not in colors:
            taken = set(colors.values())
            known = [COLORS[v] for v in own if isinstance(v, str) and v in COLORS]
            free = [color for color in known if color not in taken]
            colors[label] = free[0] if free else next(fallback)
    shown = table[table.index.isin(set(drawn))]
    return [
        _Group(f"{label} ({count_runs(len(rows))})", colors[label], frozenset(rows.index), label)
        for label, rows in shown.groupby("group", sort=False)
    ]


def _mean_band(ax: Axes, table: pd.DataFrame, x: str, groups: list[_Group], spread: Spread) -> None:
    """One line (mean over runs) and one shaded band per group; ``table`` holds one
    ``value`` per run × ``x``. A group without rows in ``table`` draws nothing."""
    if spread not in ("std", "minmax", "none"):
        raise ValueError(f"spread={spread!r}; use 'std', 'minmax' or 'none'")
    for group in groups:
        rows = table[table["run"].isin(group.runs)]
        if rows.empty:
            continue
        stats = rows.groupby(x)["value"].agg(["mean", "std", "min", "max"]).sort_index()
        xs = stats.index.to_numpy(dtype=float)
        few = len(xs) <= STYLE["max_marker_points"]
        ax.plot(
            xs,
            stats["mean"],
            color=group.color,
            linewidth=STYLE["line_width"],
            marker="o" if few else None,
            markersize=STYLE["line_marker_size"],
            label=group.label,
        )
        if spread == "none":
            continue
        if spread == "std":
            # A single run has no spread: std is NaN, drawn as a zero-width band.
            deviation = stats["std"].fillna(0.0)
            low, high = stats["mean"] - deviation, stats["mean"] + deviation
        else:
            low, high = stats["min"], stats["max"]
        ax.fill_between(xs, low, high, color=group.color, alpha=STYLE["band_alpha"], linewidth=0)


def _legend(figure: Figure, groups: list[_Group], extra: Sequence[Artist] = ()) -> None:
    """One legend for the whole figure, outside the axes on the right, so that it covers no
    data: a line per group, then the ``extra`` handles (an overlay, a shaded region)."""
    handles = [
        Line2D([], [], color=g.color, linewidth=STYLE["line_width"], label=g.label) for g in groups
    ]
    _outside_legend(figure, [*handles, *extra])


def _outside_legend(figure: Figure, handles: Sequence[Artist]) -> None:
    """The legend right of the axes, the figure widened by its width so that the panels
    keep theirs (constrained layout would otherwise shrink them to make room)."""
    font = FontProperties(size=STYLE["font_size"])
    widest = max(
        (
            text_to_path.get_text_width_height_descent(h.get_label(), font, False)[0]
            for h in handles
        ),
        default=0.0,
    )
    # label width plus the handle, its padding and the margins: about four font sizes
    figure.set_figwidth(figure.get_figwidth() + (widest + 4 * STYLE["font_size"]) / 72)
    figure.legend(
        handles=handles, loc="outside right upper", fontsize=STYLE["font_size"], frameon=False
    )


def _one_experiment(frame: pd.DataFrame, wanted: str | None = None) -> str | None:
    """The experiment of ``frame``'s runs; a ValueError when they come from several (or
    not from ``wanted``), since each figure's axes mean one experiment's steps."""
    names = sorted({str(n) for n in frame["experiment"].dropna()}) if "experiment" in frame else []
    if len(names) > 1 or (wanted is not None and names and names != [wanted]):
        target = wanted or names[0]
        raise ValueError(
            f"runs of the experiments {names}; this figure draws "
            f"{'the ' + wanted if wanted else 'one experiment'}'s runs: select them with "
            f"where(frame, 'experiment={target}')"
        )
    return names[0] if names else None


# ---------------------------------------------------------------- stream figures


MAX_LEVEL_PANELS = 6


def _levels(frame: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame | None:
    """``table`` (one row per run × experience) with each experience's difficulty level
    (``stream.difficulty`` at that step) as ``level`` and its panel as ``panel``, when the
    streams cycle through 2 to :data:`MAX_LEVEL_PANELS` panels; None otherwise. Levels of
    different streams mean different things (n = 3 of a linear system, k = 3 nonzeros of
    parity), so with several streams a panel is a (stream, level) pair."""
    merged = with_difficulty(frame, table)
    streams = merged.get("config.stream")
    if streams is not None and streams.nunique() > 1:
        merged["panel"] = [
            f"{stream}, difficulty {level:g}"
            for stream, level in zip(streams, merged["level"], strict=True)
        ]
    else:
        merged["panel"] = [f"difficulty {level:g}" for level in merged["level"]]
    count = merged["panel"].nunique()
    return merged if 2 <= count <= MAX_LEVEL_PANELS else None


def _per_level_panels(
    table: pd.DataFrame, groups: list[_Group], spread: Spread, title: str, ylabel: str
) -> Figure:
    """One panel per difficulty level (per stream and level with several streams, see
    :func:`_levels`), sharing the y axis: a trend within a level is not hidden by the
    zig-zag of a stream that cycles through levels."""
    order = table.drop_duplicates("panel").sort_values(
        [c for c in ("config.stream", "level") if c in table]
    )
    panels = list(order["panel"])
    figure, axes = _figure(1, len(panels))
    for ax, panel in zip(axes[0], panels, strict=True):
        _mean_band(ax, table[table["panel"] == panel], "experience", groups, spread)
        _style(ax, f"{title}, {panel}", "experience (index)", ylabel)
    shared = [ax.get_ylim() for ax in axes[0]]
    for ax in axes[0]:
        ax.set_ylim(min(lo for lo, _ in shared), max(hi for _, hi in shared))
    _legend(figure, groups)
    return figure


def plasticity_curve(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    spread: Spread = "std",
    by_difficulty: bool = True,
    pool: Sequence[str] = (),
) -> Figure:
    """``stream``: accuracy on each new experience right after training on it
    (``eval.accuracy.exp<NNN>`` at step NNN) against the experience index. A curve that
    falls along the stream is loss of plasticity. With ``by_difficulty`` and a stream that
    cycles through a few difficulty levels, one panel per level."""
    _one_experiment(frame, "stream")
    table = per_experience(frame, "accuracy", on="new")
    groups = _groups(frame, hue, pool, table["run"])
    leveled = _levels(frame, table) if by_difficulty else None
    if leveled is not None:
        return _per_level_panels(
            leveled, groups, spread, "New-experience accuracy", "accuracy (fraction)"
        )
    figure, axes = _figure()
    ax = axes[0, 0]
    _mean_band(ax, table, "experience", groups, spread)
    _style(ax, "Accuracy on each new experience", "experience (index)", "accuracy (fraction)")
    _legend(figure, groups)
    return figure


def halting_over_stream(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    spread: Spread = "std",
    by_difficulty: bool = True,
    pool: Sequence[str] = (),
) -> Figure:
    """``stream``: mean halting step on each new experience right after training on it
    (``eval.halting_step_mean.exp<NNN>`` at step NNN). With ``by_difficulty`` and a stream
    cycling through a few levels, one panel per level (the level in the panel's title).
    Otherwise one panel with the stream's mean difficulty level of each experience
    (``stream.difficulty``, mean over the runs) dashed grey on a twin axis, left out when
    no run logged it; that overlay needs runs of one stream."""
    _one_experiment(frame, "stream")
    table = per_experience(frame, "halting_step_mean", on="new")
    groups = _groups(frame, hue, pool, table["run"])
    leveled = _levels(frame, table) if by_difficulty else None
    if leveled is not None:
        return _per_level_panels(
            leveled, groups, spread, "Halting step", "halting step (mean, steps)"
        )
    figure, axes = _figure()
    ax = axes[0, 0]
    _mean_band(ax, table, "experience", groups, spread)
    _style(
        ax,
        "Halting step on each new experience",
        "experience (index)",
        "halting step (mean, steps)",
    )
    difficulty = frame[(frame["name"] == "stream.difficulty") & frame["run"].isin(table["run"])]
    extra = []
    if not difficulty.empty:
        if "config.stream" in table and table["config.stream"].nunique() > 1:
            streams = sorted(table["config.stream"].dropna().unique())
            raise ValueError(
                f"runs from several streams {streams}: one difficulty overlay would average "
                f"their levels; select one stream, e.g. where(frame, 'stream={streams[0]}')"
            )
        level = difficulty.groupby("step")["value"].mean()
        twin = ax.twinx()
        (line,) = twin.plot(
            level.index,
            level.to_numpy(),
            linestyle="--",
            color=STYLE["difficulty_color"],
            label="stream difficulty (level)",
        )
        twin.set_ylabel("difficulty level (mean)", fontsize=STYLE["font_size"])
        twin.tick_params(labelsize=STYLE["font_size"])
        twin.spines[["top"]].set_visible(False)
        extra.append(line)
    _legend(figure, groups, extra)
    return figure


def forgetting_vs_pondering(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    source: Literal["auto", "logged", "accuracy"] = "auto",
    pool: Sequence[str] = (),
) -> Figure:
    """``stream``: forgetting of each experience at the end of the stream
    (:func:`final_forgetting`) against the mean halting step on it when it was learned
    (``eval.halting_step_mean`` at step == experience): one point per run × experience, a
    least-squares line and the Spearman ρ and Pearson r per group in the legend."""
    _one_experiment(frame, "stream")
    forgetting = final_forgetting(frame, source)
    halting = per_experience(frame, "halting_step_mean", on="new")
    halting = halting[["run", "experience", "value"]].rename(columns={"value": "halting"})
    points = forgetting.merge(halting, on=["run", "experience"])
    if points.empty:
        raise MissingMetricError(
            "no experience has both a forgetting value and 'eval.halting_step_mean.exp<NNN>' "
            "at the step it was learned; forgetting needs at least two trained experiences"
        )
    groups = _groups(frame, hue, pool, points["run"])
    figure, axes = _figure()
    ax = axes[0, 0]
    handles = []
    for group in groups:
        rows = points[points["run"].isin(group.runs)]
        x, y = rows["halting"], rows["value"]
        handles.append(
            ax.scatter(
                x,
                y,
                s=STYLE["marker_size"],
                color=group.color,
                alpha=STYLE["point_alpha"],
                label=f"{group.label}: ρ={spearman(x, y):.2f}, r={x.corr(y):.2f}",
            )
        )
        if x.nunique() >= 2:
            slope, intercept = np.polyfit(x, y, 1)
            xs = np.linspace(x.min(), x.max(), 2)
            ax.plot(xs, slope * xs + intercept, color=group.color, linewidth=STYLE["line_width"])
    _style(
        ax,
        "Forgetting vs pondering",
        "halting step when learned (mean, steps)",
        "forgetting at end (accuracy drop)",
        integer_x=False,
    )
    _outside_legend(figure, handles)
    return figure


def halting_vs_difficulty(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    steps: Literal["final", "all"] = "final",
    spread: Spread = "std",
    pool: Sequence[str] = (),
) -> Figure:
    """``stream``: mean halting step per difficulty level
    (``eval.halting_step.d<level>.exp<NNN>``) against the level. A run's value for a level
    is the plain mean over the evaluated experiences (each experience counts once, whatever
    its number of samples of that level) at its last step (``steps="final"``) or over all
    steps (``"all"``); the stream-level names without ``.exp`` are used only when no run
    logged per-experience ones. Then mean ± spread over the runs of each group."""
    if steps not in ("final", "all"):
        raise ValueError(f"steps={steps!r}; use 'final' or 'all'")
    _one_experiment(frame, "stream")
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
        rows = final_rows(rows)
    table = rows.groupby(["run", "difficulty"], as_index=False)["value"].mean()
    groups = _groups(frame, hue, pool, table["run"])
    figure, axes = _figure()
    ax = axes[0, 0]
    _mean_band(ax, table, "difficulty", groups, spread)
    when = "last step" if steps == "final" else "all steps"
    _style(
        ax,
        f"Halting step per difficulty ({when})",
        "difficulty level",
        "halting step (mean, steps)",
    )
    _legend(figure, groups)
    return figure


# ---------------------------------------------------------------- any experiment


def plasticity_diagnostics(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    metrics: Sequence[str] = (
        "dormant_fraction",
        "effective_rank",
        "weight_magnitude",
        "units_replaced",
    ),
    spread: Spread = "std",
    pool: Sequence[str] = (),
    xlabel: str | None = None,
) -> Figure:
    """One panel per ``plasticity.<metric>`` against ``step``, two panels a row: after
    each experience in ``stream``, every ``bin_size`` examples in ``bit_flipping``. The x
    label is the experiment's :data:`STEP_LABELS` entry unless ``xlabel`` is given; runs of
    several experiments are refused (their steps count different things)."""
    experiment = _one_experiment(frame)
    logged = set(frame.loc[frame["group"] == "plasticity", "metric"])
    missing = [m for m in metrics if m not in logged]
    if missing:
        raise MissingMetricError(
            f"no 'plasticity.{missing[0]}' metric in the runs; missing {missing}, "
            f"logged plasticity metrics: {sorted(logged)}"
        )
    rows = frame[
        (frame["group"] == "plasticity")
        & frame["metric"].isin(metrics)
        & frame["experience"].isna()
        & frame["difficulty"].isna()
    ]
    groups = _groups(frame, hue, pool, rows["run"])
    label = xlabel or STEP_LABELS.get(experiment or "", "step")
    ncols = min(2, len(metrics))
    figure, axes = _figure(math.ceil(len(metrics) / ncols), ncols)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        _mean_band(ax, rows[rows["metric"] == metric], "step", groups, spread)
        _style(ax, metric.replace("_", " "), label, METRIC_LABELS.get(metric, metric))
        if experiment == "bit_flipping":
            _count_axis(ax)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    _legend(figure, groups)
    return figure


# ---------------------------------------------------------------- bit_flipping


def bit_flipping_error(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    spread: Spread = "std",
    pool: Sequence[str] = (),
) -> Figure:
    """``bit_flipping``: the online squared error of each bin (``train.squared_error``,
    the mean over the bin's ``bin_size`` examples of the error made before learning from
    each) against the examples seen, one curve per group: plain backprop's error climbing
    towards (or above) the linear learner's (``activation=linear``) is loss of plasticity,
    continual backprop's staying low is plasticity kept."""
    _one_experiment(frame, "bit_flipping")
    rows = frame[frame["name"] == "train.squared_error"]
    if rows.empty:
        raise MissingMetricError(
            "no 'train.squared_error' metric in the runs; the bit_flipping experiment logs it "
            "every bin_size examples"
        )
    groups = _groups(frame, hue, pool, rows["run"])
    figure, axes = _figure()
    ax = axes[0, 0]
    _mean_band(ax, rows, "step", groups, spread)
    sizes = set(run_table(rows).get("config.bin_size", pd.Series(dtype=float)).dropna())
    bins = f", bins of {int(next(iter(sizes))):,} examples" if len(sizes) == 1 else ""
    _style(
        ax, f"Online squared error{bins}", STEP_LABELS["bit_flipping"], "squared error (bin mean)"
    )
    _count_axis(ax)
    ax.set_ylim(bottom=0)
    _legend(figure, groups)
    return figure


# ---------------------------------------------------------------- parity


def _tasks(rows: pd.DataFrame) -> list[tuple[int, str]]:
    """The ``(size, split)`` pairs of the parity runs in ``rows``, each drawn in its own
    row of panels (an extrapolation boundary P/2 belongs to one size)."""
    runs = run_table(rows)
    absent = [k for k in ("config.size", "config.split") if k not in runs]
    if absent:
        raise ValueError(
            f"parity runs without {absent} in their config; the parity figures need the "
            "vector size P and the split to mark what was trained"
        )
    pairs = {
        (int(size), str(split)) for size, split in runs[["config.size", "config.split"]].values
    }
    return sorted(pairs)


def parity_by_difficulty(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    spread: Spread = "std",
    pool: Sequence[str] = (),
) -> Figure:
    """``parity``: accuracy (``eval.accuracy.d<k>``) and halting step
    (``eval.halting_step.d<k>``) against the number of nonzero entries k, at each run's
    final evaluation; one row of two panels per vector size P and split. With
    ``split="extrapolation"`` the runs were trained on k ≤ P/2 only, and k > P/2 is shaded
    "not trained". PonderNet should take more steps for larger k and keep its accuracy
    there; a fixed-depth model cannot."""
    _one_experiment(frame, "parity")
    rows = frame[
        (frame["group"] == "eval")
        & frame["metric"].isin(["accuracy", "halting_step"])
        & frame["difficulty"].notna()
        & frame["experience"].isna()
    ]
    if rows.empty:
        raise MissingMetricError(
            "no 'eval.accuracy.d<k>' metric in the runs; the parity experiment logs accuracy "
            "and halting step per number of nonzero entries k at every evaluation"
        )
    rows = final_rows(rows)
    groups = _groups(frame, hue, pool, rows["run"])
    tasks = _tasks(rows)
    figure, axes = _figure(len(tasks), 2)
    untrained = Patch(color=STYLE["untrained_color"], label="not trained (k > P/2)")
    shaded = False
    for panels, (size, split) in zip(axes, tasks, strict=True):
        task = rows[(rows["config.size"] == size) & (rows["config.split"] == split)]
        for ax, metric, ylabel in (
            (panels[0], "accuracy", "accuracy (fraction)"),
            (panels[1], "halting_step", "halting step (mean, steps)"),
        ):
            _mean_band(ax, task[task["metric"] == metric], "difficulty", groups, spread)
            if split == "extrapolation":
                # k ≤ P // 2 was trained (parity_nonzero_range); the half-steps put the
                # boundary between two whole k.
                ax.axvspan(size // 2 + 0.5, size + 0.5, color=STYLE["untrained_color"], zorder=0)
                shaded = True
            title = f"{metric.replace('_', ' ')}, P={size}, {split}"
            _style(ax, title, "nonzero entries k (difficulty)", ylabel)
            ax.set_xlim(0.5, size + 0.5)
    _legend(figure, groups, [untrained] if shaded else [])
    return figure


def parity_training(
    frame: pd.DataFrame,
    hue: Hue = "auto",
    spread: Spread = "std",
    pool: Sequence[str] = (),
) -> Figure:
    """``parity``: accuracy on the test set of the trained range
    (``interpolation.accuracy``) and, when any run has one, of the untrained range
    (``extrapolation.accuracy``, split="extrapolation" only) against the optimizer
    updates, one panel each."""
    _one_experiment(frame, "parity")
    splits = [
        split
        for split in ("interpolation", "extrapolation")
        if (frame["name"] == f"{split}.accuracy").any()
    ]
    if "interpolation" not in splits:
        raise MissingMetricError(
            "no 'interpolation.accuracy' metric in the runs; the parity experiment logs it "
            "every eval_every updates"
        )
    rows = frame[frame["name"].isin([f"{split}.accuracy" for split in splits])]
    groups = _groups(frame, hue, pool, rows["run"])
    figure, axes = _figure(1, len(splits))
    titles = {"interpolation": "trained k", "extrapolation": "k > P/2, not trained"}
    for ax, split in zip(axes[0], splits, strict=True):
        _mean_band(ax, rows[rows["name"] == f"{split}.accuracy"], "step", groups, spread)
        _style(
            ax,
            f"{split} ({titles[split]})",
            STEP_LABELS["parity"],
            "accuracy (fraction)",
        )
        _count_axis(ax)
    _legend(figure, groups)
    return figure


#: The extrapolation accuracy issue 14 asks of PonderNet at P = 16, drawn on the sweep.
PARITY_GOAL = 0.90


def parity_sweep(frame: pd.DataFrame, hue: Hue = "auto", pool: Sequence[str] = ()) -> Figure:
    """``parity``, a sweep of configurations: per group (one per configuration, see
    :func:`~analysis.runs.run_groups`), the final accuracy on the trained range
    (``interpolation.accuracy``, open circles) and on the untrained one
    (``extrapolation.accuracy``, filled), one dot per run and a tick at the mean, sorted by
    mean extrapolation accuracy, with the goal of 0.90 marked; beside it the mean halting
    step on each split, which rises from the trained to the untrained range where pondering
    extrapolates. Groups are labelled by what they change from the sweep's most common
    values, which the title gives."""
    _one_experiment(frame, "parity")
    names = [
        f"{split}.{metric}"
        for split in ("interpolation", "extrapolation")
        for metric in ("accuracy", "halting_step")
    ]
    rows = frame[frame["name"].isin(names)]
    if not (rows["name"] == "extrapolation.accuracy").any():
        raise MissingMetricError(
            "no 'extrapolation.accuracy' metric in the runs; parity logs it with "
            "split='extrapolation'"
        )
    rows = final_rows(rows)
    final = rows.pivot_table(index="run", columns="name", values="value")
    groups = _groups(frame, hue, pool, rows.loc[rows["name"] == "extrapolation.accuracy", "run"])
    short, base = departures(run_groups(frame, hue, pool))
    mean = {g.label: final.loc[sorted(g.runs), "extrapolation.accuracy"].mean() for g in groups}
    groups.sort(key=lambda g: mean[g.label])
    labels = [f"{short[g.name]} ({count_runs(len(g.runs))})" for g in groups]
    figure, axes = _figure(1, 2)
    figure.set_size_inches(
        2 * STYLE["panel_size"][0] + 0.07 * max(map(len, labels)),
        max(STYLE["panel_size"][1], 0.3 * len(groups) + 1.4),
    )
    for ax, metric, xlabel in (
        (axes[0][0], "accuracy", "final accuracy (fraction)"),
        (axes[0][1], "halting_step", "final halting step (mean, steps)"),
    ):
        for y, group in enumerate(groups):
            values = final.loc[sorted(group.runs)]
            for split, offset, face in (
                ("interpolation", 0.15, "none"),
                ("extrapolation", -0.15, group.color),
            ):
                column = values.get(f"{split}.{metric}", pd.Series(dtype=float)).dropna()
                ax.scatter(
                    column,
                    np.full(len(column), y + offset),
                    s=STYLE["marker_size"],
                    facecolors=face,
                    edgecolors=group.color,
                )
                if len(column):
                    ax.plot(
                        [column.mean()] * 2,
                        [y + offset - 0.12, y + offset + 0.12],
                        color=group.color,
                        linewidth=STYLE["line_width"],
                    )
        _style(ax, metric.replace("_", " "), xlabel, "", integer_x=False)
        ax.set_yticks(range(len(groups)), labels if ax is axes[0][0] else [])
        ax.set_ylim(-0.6, len(groups) - 0.4)
    axes[0][0].axvline(PARITY_GOAL, color=STYLE["difficulty_color"], linestyle="--", linewidth=1)
    figure.suptitle(f"parity sweep; base: {base}", fontsize=STYLE["font_size"])
    marker = {"linestyle": "", "marker": "o", "markeredgecolor": "0.3"}
    _outside_legend(
        figure,
        [
            Line2D([], [], markerfacecolor="none", label="trained k ≤ P/2", **marker),
            Line2D([], [], markerfacecolor="0.3", label="untrained k > P/2", **marker),
            Line2D(
                [],
                [],
                color=STYLE["difficulty_color"],
                linestyle="--",
                label=f"goal {PARITY_GOAL:.2f}",
            ),
        ],
    )
    return figure


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks, ties given their
    average rank (pandas' ``method="spearman"`` would need scipy). NaN when either is
    constant or there are fewer than two points."""
    return float(x.rank().corr(y.rank()))
