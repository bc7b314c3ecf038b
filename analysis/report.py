"""Every figure of :mod:`analysis.plots` that the runs can give, as PNG files::

    .venv/bin/python -m analysis.report runs --out figures
    .venv/bin/python -m analysis.report runs/stream --out figures --where stream=stability
    .venv/bin/python -m analysis.report runs/parity --out figures --hue model --pool size

Each figure belongs to one experiment (:data:`FIGURES`) and is drawn from that
experiment's runs only, so a folder holding stream, parity and bit_flipping runs gives each
experiment's figures. Runs are grouped by every config key that differs between them, seed
aside (``--hue auto``, the default); the groups drawn are printed with their number of
runs, the runs left out (unfinished, superseded) with the reason, figures whose metrics are
absent with the reason, and the paths written last.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots
from analysis.runs import (
    Hue,
    count_runs,
    left_out,
    load_runs,
    run_groups,
    varying_keys,
    where,
)

__all__ = [
    "DPI",
    "FIGURES",
    "ROOT",
    "ReportFigure",
    "main",
    "notebook_runs",
    "png_path",
    "save_figure",
    "write_report",
]

#: Where notebooks' default folders are relative to, wherever Jupyter starts them: the
#: repository root when the project is installed in place (``make``, ``pip install -e``),
#: else (a copy in site-packages) the working directory.
_CHECKOUT = Path(__file__).resolve().parents[1]
ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report: the experiment whose runs it is drawn from and the function
    that draws it, called as ``draw(runs, hue=..., pool=...)``."""

    experiment: str
    draw: Callable[..., Figure]


#: File name (without .png) → the figure; names are unique across experiments.
FIGURES: dict[str, ReportFigure] = {
    "plasticity_curve": ReportFigure("stream", plots.plasticity_curve),
    "halting_over_stream": ReportFigure("stream", plots.halting_over_stream),
    "forgetting_vs_pondering": ReportFigure("stream", plots.forgetting_vs_pondering),
    "plasticity_diagnostics": ReportFigure("stream", plots.plasticity_diagnostics),
    "halting_vs_difficulty": ReportFigure("stream", plots.halting_vs_difficulty),
    "bit_flipping_error": ReportFigure("bit_flipping", plots.bit_flipping_error),
    "bit_flipping_diagnostics": ReportFigure("bit_flipping", plots.plasticity_diagnostics),
    "parity_by_difficulty": ReportFigure("parity", plots.parity_by_difficulty),
    "parity_training": ReportFigure("parity", plots.parity_training),
    "parity_sweep": ReportFigure("parity", plots.parity_sweep),
}

DPI = 150


def save_figure(figure: Figure, out_dir: str | Path, name: str) -> Figure:
    """Write ``figure`` to :func:`png_path` ``(out_dir, name)`` at :data:`DPI` (the folder
    is made) and return the figure, so that a notebook cell ending in this call both keeps
    and shows it."""
    path = png_path(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return figure


def notebook_runs(runs: str, figures: str) -> tuple[pd.DataFrame, Path, Path]:
    """What every notebook does first: the runs of ``$PONDERLIFE_RUNS_DIR`` (default
    ``runs``) loaded with :func:`~analysis.runs.load_runs`'s defaults, and the folder its
    figures go to, ``$PONDERLIFE_FIGURES_DIR`` (default ``figures``), both relative to
    :data:`ROOT` unless absolute. Prints both folders, the runs left out and the config
    keys that differ between the runs. Returns ``(frame, runs folder, figures folder)``."""
    runs_dir = ROOT / os.environ.get("PONDERLIFE_RUNS_DIR", runs)
    figures_dir = ROOT / os.environ.get("PONDERLIFE_FIGURES_DIR", figures)
    frame = load_runs(runs_dir)
    print(f"runs from {runs_dir}; figures written to {figures_dir}")
    print(f"left out: {left_out(runs_dir) or 'nothing'}")
    print(f"config keys that differ between the runs (seed aside): {varying_keys(frame)}")
    return frame, runs_dir, figures_dir


def png_path(out_dir: str | Path, name: str) -> Path:
    """Where a figure named ``name`` is written: ``<out_dir>/<name>.png``."""
    return Path(out_dir) / f"{name}.png"


def write_report(
    frame: pd.DataFrame,
    out_dir: str | Path,
    hue: Hue = "auto",
    log: Callable[[str], None] = print,
    pool: Sequence[str] = (),
) -> list[Path]:
    """Write ``<out_dir>/<figure>.png`` for every figure in :data:`FIGURES` that can be
    drawn from ``frame``, each from the runs of its experiment only.

    ``log`` gets, per experiment, the groups of runs the figures average (with their
    number of runs), and one line per figure skipped with the reason (the ValueError it
    raised: a metric no run logged, or runs that differ outside an explicit ``hue`` and
    ``pool``). Returns the paths written."""
    written = []
    experiments = frame["experiment"].fillna("(no experiment name)")
    order = list(dict.fromkeys(spec.experiment for spec in FIGURES.values()))
    present = sorted(
        set(experiments), key=lambda e: (order.index(e) if e in order else len(order), e)
    )
    for experiment in present:
        runs = frame[experiments == experiment]
        names = [name for name, spec in FIGURES.items() if spec.experiment == experiment]
        if not names:
            log(f"no figures for the {runs['run'].nunique()} {experiment} runs")
            continue
        try:
            groups = run_groups(runs, hue, pool)
        except ValueError as error:
            log(f"skipped the {experiment} figures: {error}")
            continue
        counts = groups.groupby("group", sort=False).size()
        log(f"{experiment}: {count_runs(len(groups))} in {len(counts)} groups")
        for label, count in counts.items():
            log(f"  {label} ({count_runs(count)})")
        for name in names:
            try:
                figure = FIGURES[name].draw(runs, hue=hue, pool=pool)
            except ValueError as error:
                log(f"skipped {name}: {error}")
                continue
            save_figure(figure, out_dir, name)
            written.append(png_path(out_dir, name))
    return written


def _keys(text: str) -> list[str]:
    return [key.strip() for key in text.split(",") if key.strip()]


def _hue(text: str) -> Hue:
    """``auto``, ``none`` (all runs in one group) or comma-separated keys."""
    if text.strip().lower() in ("auto", "none"):
        return None if text.strip().lower() == "none" else "auto"
    return _keys(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="Sacred run folders or their parents")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder")
    parser.add_argument(
        "--where",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="draw only runs with these config values, e.g. stream=stability method=cbp "
        "(the config. prefix is optional; experiment=parity works too)",
    )
    parser.add_argument(
        "--hue",
        type=_hue,
        default="auto",
        help="how runs are grouped: 'auto' (default: every config key that differs, seed "
        "aside), comma-separated keys (method,model; refused if runs differ elsewhere), "
        "or 'none'",
    )
    parser.add_argument(
        "--pool",
        type=_keys,
        default=[],
        help="comma-separated keys to average over on purpose (learning_rate,stream)",
    )
    parser.add_argument(
        "--status",
        action="append",
        help="keep only runs with this status (repeatable; default COMPLETED; 'all' for any)",
    )
    parser.add_argument(
        "--superseded",
        action="store_true",
        help="also draw runs that a resumed run continued (by default only the resumed run, "
        "which holds the whole history, is drawn)",
    )
    args = parser.parse_args(argv)
    statuses = args.status or ["COMPLETED"]
    selection = {"statuses": None if "all" in statuses else statuses}
    selection["superseded"] = args.superseded
    frame = load_runs(*args.runs, **selection)
    for reason, runs in sorted(left_out(*args.runs, **selection).items()):
        shown = ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
        print(f"left out {len(runs)} {reason} run{'s' * (len(runs) > 1)}: {shown}")
    if frame.empty:
        print(f"no runs with metrics under {[str(p) for p in args.runs]}", file=sys.stderr)
        return 1
    if args.where:
        try:
            frame = where(frame, *args.where)
        except ValueError as error:
            print(f"--where: {error}", file=sys.stderr)
            return 2
    print(f"{frame['run'].nunique()} runs, {len(frame)} metric values")
    paths = write_report(frame, args.out, hue=args.hue, pool=args.pool)
    for path in paths:
        print(path)
    if not paths:
        print("no figure could be drawn; see the reasons above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
