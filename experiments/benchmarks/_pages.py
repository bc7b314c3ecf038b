"""Shared by the benchmark pages (docs/parity_recipe.md, docs/reproduction.md,
docs/results.md): running their sweeps, what they say about their runs (where they ran,
for how long, which did not finish), and their curves with confidence bands."""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path


def machines(folders: list[Path]) -> tuple[str, float]:
    """Where the runs ran (CPU model and core count as Sacred recorded the host, per
    host) and their summed run time in hours (each link of a resumed chain counted)."""
    from datetime import datetime

    hosts: dict[str, int] = {}
    hours = 0.0
    for folder in folders:
        record = json.loads((folder / "run.json").read_text())
        host = record.get("host", {})
        gpus = host.get("gpus", {}).get("gpus", [])
        where = host.get("cpu", "?") + (f" (host of an {gpus[0]['model']})" if gpus else "")
        hosts[where] = hosts.get(where, 0) + 1
        start, stop = record.get("start_time"), record.get("stop_time")
        if start and stop:
            span = datetime.fromisoformat(stop) - datetime.fromisoformat(start)
            hours += span.total_seconds() / 3600
    text = "; ".join(f"{count} run folders on {where}" for where, count in hosts.items())
    return text, hours


def unfinished(root: str | Path) -> str:
    """The sweep's runs that are neither COMPLETED nor continued by a newer run (killed,
    failed, or still running), which the table leaves out."""
    from analysis.runs import left_out

    reasons = {k: v for k, v in left_out(root).items() if k != "superseded"}
    if not reasons:
        return "Every run of the sweep finished."
    listed = "; ".join(
        f"{reason}: {', '.join(sorted(Path(r).name for r in runs))}"
        for reason, runs in sorted(reasons.items())
    )
    return f"Not in the table (not finished): {listed}."


def curve(ax, table, x: str, runs: list[str], color, label) -> None:
    """One line (mean over ``runs`` of ``value`` at each ``x``) and its 95% CI band, the
    legend label followed by the number of runs."""
    from analysis.runs import confidence_interval

    mine = table[table["run"].isin(runs)]
    points = sorted(mine[x].unique())
    stats = [confidence_interval(mine[mine[x] == p]["value"]) for p in points]
    means = [m for m, _ in stats]
    halves = [0.0 if math.isnan(h) else h for _, h in stats]
    ax.plot(points, means, color=color, label=f"{label} ({len(runs)})")
    ax.fill_between(
        points,
        [m - h for m, h in zip(means, halves, strict=True)],
        [m + h for m, h in zip(means, halves, strict=True)],
        color=color,
        alpha=0.2,
        lw=0,
    )


def run_sweeps(sweeps: dict[str, str], runs: Path, workers: str) -> None:
    """Run (or finish) each named sweep, ``experiments.sweep`` arguments, into
    ``runs/<name>``."""
    from experiments import sweep

    for name, arguments in sweeps.items():
        extra = ["--runs", str(runs / name), "--workers", workers, "--no-progress"]
        sweep.main([*shlex.split(arguments), *extra])


def load_folder(folder: Path):
    """The COMPLETED runs under ``folder`` (:func:`analysis.load_runs`), None when the
    folder does not exist."""
    from analysis import load_runs

    return load_runs(folder) if folder.exists() else None


def interval(values, level: float = 0.95) -> dict:
    """``values`` (one per run) as their mean, the half-width of its Student-t interval
    (None for one value) and their number (:func:`analysis.runs.confidence_interval`)."""
    from analysis.runs import confidence_interval

    values = list(values)
    mean, half = confidence_interval(values, level)
    return {"mean": mean, "half_width": None if math.isnan(half) else half, "runs": len(values)}
