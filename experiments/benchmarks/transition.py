"""Gradual versus abrupt task switches: does backprop still lose plasticity when each task
fades into the next, and does continual backprop still help?

Runs the study (``experiments.stream``, named config ``demo`` plus ``--set`` overrides) for
bp and cbp × ``transition`` abrupt and gradual × ``--seeds`` (12 Sacred runs by default, on
a process pool of ``--workers``), stored in a temporary folder (``--runs`` to keep them
elsewhere, never under ``runs/``). Then it writes a figure of the accuracy on each new
experience right after training on it (one panel per dimension n, mean ± one std over seeds)
and a Markdown page with the table (mean ± std over seeds of that accuracy on the first and
the last third of the stream), the command, the machine and the wall time.

    python -m experiments.benchmarks.transition                       # print the table
    python -m experiments.benchmarks.transition --out docs/transition.md  # + docs/transition.png
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

METHODS = ("bp", "cbp")
TRANSITIONS = ("abrupt", "gradual")
#: The reduced ``demo`` of this comparison: one pass over each experience (so a gradual
#: window is a one-way mixture, visited once, in order, and neither transition replays
#: the same data), with 5 × the demo's samples: as many updates as ``demo``'s 5 epochs.
REDUCED_DEMO = {"epochs": 1, "samples_per_experience": 10_240, "window": 2048}


def plan_jobs(seeds: list[int], updates: dict) -> list:
    from experiments.sweep import Job

    return [
        Job("stream", ("demo", method), {**updates, "transition": transition, "seed": seed})
        for method in METHODS
        for transition in TRANSITIONS
        for seed in seeds
    ]


def new_accuracy(frame):
    """Accuracy on each new experience right after training on it, per run × experience,
    with the run's ``condition`` ("bp, gradual") and the experience's dimension ``level``."""
    from analysis import per_experience, with_difficulty

    table = with_difficulty(frame, per_experience(frame, "accuracy", on="new"))
    condition = table["config.method"] + ", " + table["config.transition"]
    return table.assign(condition=condition)


def summary_rows(table) -> list[dict]:
    """Per condition: mean and std over runs of each run's mean new-experience accuracy on
    the first and the last third of the stream, over all n and at n = 3 alone."""
    from experiments.demo import thirds

    early, late = thirds(int(table["experience"].max()))
    rows = []
    for method in METHODS:
        for transition in TRANSITIONS:
            runs = table[table["condition"] == f"{method}, {transition}"]
            row = {"method": method, "transition": transition, "runs": runs["run"].nunique()}
            for name, chosen in (("all", runs), ("n3", runs[runs["level"] == 3])):
                for part, mask in (
                    ("first", chosen["experience"] < early),
                    ("last", chosen["experience"] > late),
                ):
                    per_run = chosen[mask].groupby("run")["value"].mean().tolist()
                    row[f"{name}_{part}"] = per_run
            rows.append(row)
    return rows


def cell(values: list[float]) -> str:
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{spread}"


def change(first: list[float], last: list[float]) -> str:
    """Mean over runs of (last third − first third)."""
    if not first or len(first) != len(last):
        return "–"
    return f"{statistics.fmean(b - a for a, b in zip(first, last, strict=True)):+.3f}"


def table_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| method | transition | runs | first third | last third | change "
        "| n = 3, first third | n = 3, last third | change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['transition']} | {row['runs']} "
            f"| {cell(row['all_first'])} | {cell(row['all_last'])} "
            f"| {change(row['all_first'], row['all_last'])} "
            f"| {cell(row['n3_first'])} | {cell(row['n3_last'])} "
            f"| {change(row['n3_first'], row['n3_last'])} |"
        )
    return lines


def figure(table, rows: list[dict]):
    """One panel per n: new-experience accuracy against the experience index, mean ± one
    std over seeds; colour = method, line style = transition. A last panel: each
    condition's first-third and last-third accuracy (all n), mean ± one std over seeds."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from analysis.plots import COLORS, STYLE, _style

    levels = sorted(table["level"].unique())
    width, height = STYLE["panel_size"]
    fig = Figure(figsize=(width * (len(levels) + 1), height + 0.6), layout="constrained")
    axes = fig.subplots(1, len(levels) + 1, squeeze=False)[0]
    dashes = {"abrupt": "-", "gradual": "--"}
    for ax, level in zip(axes[: len(levels)], levels, strict=True):
        for method in METHODS:
            for transition in TRANSITIONS:
                rows_of = table[
                    (table["level"] == level) & (table["condition"] == f"{method}, {transition}")
                ]
                stats = rows_of.groupby("experience")["value"].agg(["mean", "std"]).sort_index()
                xs, std = stats.index.to_numpy(dtype=float), stats["std"].fillna(0.0)
                color = COLORS[method]
                ax.plot(xs, stats["mean"], dashes[transition], color=color, linewidth=1.4)
                ax.fill_between(
                    xs, stats["mean"] - std, stats["mean"] + std, color=color, alpha=0.12, lw=0
                )
        _style(ax, f"n = {level:g}", "experience (index)", "")
    for ax in axes[1 : len(levels)]:
        ax.sharey(axes[0])
    axes[0].set_ylabel("accuracy on the new experience", fontsize=STYLE["font_size"])
    summary = axes[-1]
    for offset, row in zip((-0.09, -0.03, 0.03, 0.09), rows, strict=True):
        means = [statistics.fmean(row[f"all_{part}"]) for part in ("first", "last")]
        spreads = [_std(row[f"all_{part}"]) for part in ("first", "last")]
        summary.errorbar(
            [offset, 1 + offset],
            means,
            yerr=spreads,
            fmt=dashes[row["transition"]] + "o",
            color=COLORS[row["method"]],
            markersize=4,
            capsize=3,
            linewidth=1.4,
        )
    summary.set_xticks([0, 1], ["first third", "last third"])
    summary.set_xlim(-0.4, 1.4)
    _style(summary, "All n, per third of the stream", "", "", integer_x=False)
    summary.set_ylabel("mean accuracy on new experiences", fontsize=STYLE["font_size"])
    seeds = table.groupby("condition")["run"].nunique().min()
    handles = [
        Line2D([], [], color=COLORS[m], linestyle=dashes[t], label=f"{m}, {t}")
        for m in METHODS
        for t in TRANSITIONS
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    fig.suptitle(
        "Accuracy on each new experience, abrupt vs gradual task switches "
        f"(mean ± one std over {seeds} seeds)",
        fontsize=STYLE["title_size"],
    )
    return fig


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, CPU only"


def page(
    rows, command: str, updates: dict, seeds: list[int], seconds: float, workers: int, image: str
) -> str:
    settings = ", ".join(f"`{k}={v}`" for k, v in updates.items())
    intro = (
        "Accuracy on each new experience right after training on it (the plasticity curve of "
        "`make demo`), for plain backprop (bp) and continual backprop (cbp), with abrupt task "
        'switches and with gradual ones (`transition="gradual"`: the first `window` training '
        "samples of each experience mix the previous task into the new one, linearly; see "
        "`strategies/streams.py`), seeds " + ", ".join(map(str, seeds)) + ". The stream is "
        f"the `demo` stability stream (n = 3, 4, 6, ..., a new input permutation per "
        f"experience) with {settings}. A gradual experience is trained in stream order and "
        "about window/2 of its training samples are the previous task's, which leaves the "
        "new task that many fewer samples than in the abrupt stream."
    )
    legend = (
        "Mean ± std over seeds of each run's mean accuracy on the new experiences of the "
        "first and the last third of the stream; `change` is the mean over seeds of "
        "last − first; the n = 3 columns take the experiences with n = 3 only."
    )
    timing = (
        f"Machine: {machine()}; {workers} runs at a time, one torch thread each. Wall time: "
        f"{seconds / 60:.1f} min for all runs and this page."
    )
    return "\n".join(
        [
            "# Gradual versus abrupt task switches",
            "",
            textwrap.fill(intro, 90),
            "",
            *table_lines(rows),
            "",
            textwrap.fill(legend, 90),
            "",
            f"![new-experience accuracy, abrupt vs gradual]({image})",
            "",
            "Command (from the repository root):",
            "",
            "```bash",
            command,
            "```",
            "",
            textwrap.fill(timing, 90),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--runs", help="folder for the run folders (default: a temporary one)")
    parser.add_argument("--out", help="Markdown page to write; the figure goes beside it (.png)")
    args = parser.parse_args(argv)

    from experiments.sweep import parse_value, run_sweep

    updates = {**REDUCED_DEMO}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set takes KEY=VALUE, got {item!r}")
        updates[key] = parse_value(value)
    runs = Path(args.runs or tempfile.mkdtemp(prefix="ponderlife-transition-"))
    os.environ["PONDERLIFE_RUNS"] = str(runs)  # read by the spawned workers

    began = time.perf_counter()
    results = run_sweep(plan_jobs(args.seeds, updates), args.workers)
    done = [r for r in results if r["status"] == "COMPLETED"]
    if len(done) != len(results):
        print(f"{len(results) - len(done)} runs failed; see the errors above")
        return 1

    from analysis import load_runs

    table = new_accuracy(load_runs(*(r["run_dir"] for r in done)))
    rows = summary_rows(table)
    print("\n".join(table_lines(rows)))
    print(f"\nruns in {runs}")
    if args.out:
        out = Path(args.out)
        image = out.with_suffix(".png")
        figure(table, rows).savefig(image, dpi=120, bbox_inches="tight")
        command = ".venv/bin/python -m experiments.benchmarks.transition " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
        seconds = time.perf_counter() - began
        text = page(rows, command.strip(), updates, args.seeds, seconds, args.workers, image.name)
        out.write_text(text)
        print(f"wrote {out} and {image}")
    print(f"{len(done)} runs in {(time.perf_counter() - began) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
