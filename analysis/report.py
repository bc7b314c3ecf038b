"""Every figure of :mod:`analysis.plots` whose metrics the runs logged, as PNG files::

    python -m analysis.report runs/stream --out figures
    python -m analysis.report runs/stream other/runs --out figures --hue config.model

Figures whose metrics are absent are skipped with the reason printed; the paths written are
printed last.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis import plots
from analysis.runs import left_out, load_runs

__all__ = ["FIGURES", "main", "write_report"]

#: File name (without .png) → figure function; each takes ``(frame, hue=...)``.
FIGURES: dict[str, Callable[..., Figure]] = {
    "plasticity_curve": plots.plasticity_curve,
    "halting_over_stream": plots.halting_over_stream,
    "forgetting_vs_pondering": plots.forgetting_vs_pondering,
    "plasticity_diagnostics": plots.plasticity_diagnostics,
    "halting_vs_difficulty": plots.halting_vs_difficulty,
}

DPI = 150


def write_report(
    frame: pd.DataFrame,
    out_dir: str | Path,
    hue: str | None = "config.method",
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write ``<out_dir>/<figure>.png`` (``DPI`` dots per inch) for every figure in
    :data:`FIGURES` that can be drawn from ``frame``; ``log`` gets one line per skipped
    figure with the reason (the ValueError the figure raised). Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in FIGURES.items():
        try:
            figure = draw(frame, hue=hue)
        except ValueError as error:
            log(f"skipped {name}: {error}")
            continue
        path = out / f"{name}.png"
        figure.savefig(path, dpi=DPI)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="Sacred run folders or their parents")
    parser.add_argument("--out", type=Path, default=Path("figures"), help="output folder")
    parser.add_argument("--hue", default="config.method", help="column that groups runs")
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
    print(f"{frame['run'].nunique()} runs, {len(frame)} metric values")
    for path in write_report(frame, args.out, hue=args.hue):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
