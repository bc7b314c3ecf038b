"""`make demo`: the pondering × plasticity study at a size 2 cores finish in minutes.

PonderNet on the linear-system stability stream whose dimension n (the difficulty) cycles
3 → 4 → 6, each experience with its own input permutation (45 experiences, 5 epochs
each), trained with plain backprop and with continual backprop, two seeds each: four
Sacred runs of ``experiments.stream`` (named config ``demo``) on a process pool, stored
in ``runs/stream/``. Then every figure of :mod:`analysis.plots` is written to
``figures/`` and a summary table is printed.

    python -m experiments.demo                      # the default study
    python -m experiments.demo --methods bp cbp redo --seeds 0 1 2 --workers 2
    python -m experiments.demo --set experiences=90  # any config key of experiments.stream
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from experiments.sweep import plan, run_sweep, settings


def thirds(last: int) -> tuple[int, int]:
    """How the summaries split a stream whose last experience is ``last``: experiences
    below the first value are its first third, those above the second its last third."""
    third = max(1, (last + 1) // 3)
    return third, last - third


def summary_table(frame) -> list[str]:
    """Per method: final stream accuracy, accuracy on new experiences early vs late,
    mean halting step per difficulty level, units replaced."""
    from analysis import per_experience, with_difficulty

    lines = []
    new = per_experience(frame, "accuracy", on="new")
    halting = per_experience(frame, "halting_step_mean", on="new")
    last = frame["step"].max()
    early_end, late_start = thirds(int(last))
    header = (
        f"{'method':<8}{'runs':>5}{'new acc, first third':>22}{'new acc, last third':>21}"
        f"{'final seen acc':>16}   halting step by n"
    )
    lines += [header, "-" * len(header)]
    for method, rows in new.groupby("config.method"):
        early = rows[rows["experience"] < early_end].groupby("run")["value"].mean()
        late = rows[rows["experience"] > late_start].groupby("run")["value"].mean()
        final = frame[
            (frame["name"] == "eval.accuracy")
            & (frame["step"] == last)
            & (frame["config.method"] == method)
        ]["value"]
        steps = with_difficulty(frame, halting[halting["config.method"] == method])
        by_n = "  ".join(
            f"n={int(n)}: {v:.2f}" for n, v in steps.groupby("level")["value"].mean().items()
        )
        lines.append(
            f"{method:<8}{rows['run'].nunique():>5}{_cell(early):>22}"
            f"{_cell(late):>21}{_cell(final):>16}   {by_n}"
        )
    return lines


def _cell(values) -> str:
    values = list(values)
    if not values:
        return "-"
    spread = f" ±{statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{spread}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["bp", "cbp"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--figures", default="figures", help="folder for the figures")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    updates = settings(args.set, parser)

    began = time.perf_counter()
    jobs = plan("stream", [args.methods], args.seeds, base=["demo"], updates=updates)
    results = run_sweep(jobs, args.workers)
    done = [r for r in results if r["status"] == "COMPLETED"]
    if not done:
        print("no run completed; see the errors above")
        return 1

    from analysis import load_runs
    from analysis.report import write_report

    frame = load_runs(*(r["run_dir"] for r in done))
    print()
    print("\n".join(summary_table(frame)))
    print("\nfigures:")
    paths = write_report(frame, Path(args.figures), log=lambda message: print(f"  {message}"))
    for path in paths:
        print(f"  {path}")
    print(f"\n{len(done)} runs in {time.perf_counter() - began:.0f} s; run folders:")
    for r in done:
        job = r["job"]
        print(
            f"  {r['run_dir']}  ({' '.join(job.named_configs)}, "
            f"seed {job.config_updates['seed']}, {r['seconds']:.0f} s)"
        )
    print(
        f"figures in {args.figures}/ ({len(paths)} files); make figures from any runs with "
        "`make report` (or `.venv/bin/python -m analysis.report runs --out figures`)"
    )
    return 0 if len(done) == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
