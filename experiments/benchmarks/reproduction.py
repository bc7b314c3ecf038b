"""The reproduction table: each source paper's headline result next to ours.

One row per headline result (:data:`ROWS`: PonderNet parity at P = 16 and at the paper's
P = 96, bit-flipping, permuted Fashion-MNIST, stability vs dimension), each measured by one
Ray sweep command into ``runs/reproduction/<row>/`` (the stability row also fits two simple
learners per n here).
This script runs the sweeps (``--run ROW ...``; each skips finished runs and resumes killed
ones), reads every COMPLETED run and gives each figure as the mean over seeds with its 95%
Student-t confidence interval (:func:`analysis.runs.confidence_interval`).

``--out`` writes the page (``docs/reproduction.md``), its figure (``.png``) and the figures
with their tolerances (``.json``); ``--readme`` puts the table into the README between
its markers. ``--check`` recomputes every figure whose runs are present and fails when one
moved from the stored value by more than its tolerance, so a regression shows up.

    python -m experiments.benchmarks.reproduction                      # print the table
    python -m experiments.benchmarks.reproduction --run bit_flipping   # run or finish a row
    python -m experiments.benchmarks.reproduction --out docs/reproduction.md --readme README.md
    python -m experiments.benchmarks.reproduction --check              # against the stored JSON
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from experiments.benchmarks._pages import interval, load_folder, run_sweeps

RUNS = Path("runs/reproduction")
STORED = Path("docs/reproduction.json")
README_START = "<!-- reproduction table: written by experiments.benchmarks.reproduction -->"
README_END = "<!-- end of the reproduction table -->"
LEVEL = 0.95

#: Bit-flipping: the examples at the start and at the end of the stream that the row
#: compares (the paper's figure reads the curve's first and last bins).
BIT_FLIPPING_WINDOW = 100_000
#: Permuted Fashion-MNIST: the tasks at the start and at the end of the stream compared.
PERMUTED_WINDOW = 10
#: Stability: the learners fitted per n (scikit-learn), their training and test sizes.
LEARNER_SAMPLES = 2048
LEARNER_TEST = 4000
LEARNER_SEEDS = (0, 1, 2, 3, 4)


#: Parity's guessing accuracy and the band around it read as chance: a guessing model's
#: accuracy on a 4,096-input test set lies within ±0.016 of 0.5 (95%), so means within
#: 0.02 are no evidence of learning.
PARITY_CHANCE = (0.5, 0.02)
#: What both parity rows test: the paper's two claims.
PARITY_CLAIMS = (
    ("pondernet accuracy beyond", "act accuracy beyond", "PonderNet extrapolates better than ACT"),
    (
        "pondernet expected steps beyond",
        "pondernet expected steps trained range",
        "PonderNet ponders longer beyond the trained range",
    ),
)


@dataclass(frozen=True)
class Row:
    """One headline result: the paper's figure, the sweep that measures ours, and how the
    figures are read from its runs (``measure(folder) -> {figure: {seed: value}}``)."""

    key: str
    short: str  # the row's name in the README's table
    result: str
    paper: str
    setting: str
    sweep: str  # experiments.sweep arguments, without --runs / --workers
    measure: Callable[[Path], dict[str, dict[int, float]]]
    headline: tuple[tuple[str, str], ...]  # the README's lines: (figure, the paper's value)
    tolerance: float  # smallest allowed change in --check (the CI half-width when wider)
    # (figure a, figure b, the claim a > b) per comparison
    compare: tuple[tuple[str, str, str], ...] = ()
    # (the accuracy of guessing, a band around it): a comparison of two accuracies whose
    # means both lie within the band says that neither beats guessing (a clear gap between
    # two chance-level models is no evidence for the claim)
    chance: tuple[float, float] | None = None

    def command(self, runs: Path = RUNS) -> str:
        return (
            f".venv/bin/python -m experiments.sweep {self.sweep} --runs {runs / self.key} "
            "--workers 2"
        )


# ---------------------------------------------------------------- reading runs


def _per_run(rows) -> dict[str, float]:
    return rows.groupby("run")["value"].mean().to_dict()


def _per_seed(frame, runs, values: dict[str, float]) -> dict[int, float]:
    """``values`` (per run) of ``runs`` keyed by each run's seed, so that two figures can be
    compared seed by seed."""
    seeds = frame.groupby("run")["config.seed"].first()
    return {int(seeds[r]): values[r] for r in runs if r in values}


def _by_group(frame, key: str) -> dict[str, list[str]]:
    """The runs of each value of config ``key``, refusing to pool runs that differ in
    another key (:func:`analysis.runs.run_groups`)."""
    from analysis.runs import format_value, run_groups

    groups = run_groups(frame, key)
    return {
        format_value(value): list(runs.index) for value, runs in groups.groupby(key, sort=False)
    }


def parity_figures(folder: Path) -> dict[str, dict[int, float]]:
    """Per model: final accuracy and expected steps on both ranges, one value per seed."""
    from analysis.runs import final_rows

    frame = load_folder(folder)
    if frame is None or frame.empty:
        return {}
    finals = {
        (split, metric): _per_run(final_rows(frame[frame["name"] == f"{split}.{metric}"]))
        for split in ("interpolation", "extrapolation")
        for metric in ("accuracy", "expected_steps")
    }
    figures = {}
    for model, runs in _by_group(frame, "config.model").items():
        for (split, metric), values in finals.items():
            label = "trained range" if split == "interpolation" else "beyond"
            figures[f"{model} {metric.replace('_', ' ')} {label}"] = _per_seed(frame, runs, values)
    return figures


def _bit_flipping_learners(frame) -> dict[str, list[str]]:
    """The runs of each learner: ``linear`` (activation linear, no method of its own) or
    the method of a ReLU learner."""
    from analysis.runs import run_groups

    groups = run_groups(frame, ("config.method", "config.activation"))
    learners: dict[str, list[str]] = {}
    for (method, activation), runs in groups.groupby(
        ["config.method", "config.activation"], sort=False
    ):
        learners["linear" if activation == "linear" else method] = list(runs.index)
    return learners


def bit_flipping_figures(folder: Path) -> dict[str, dict[int, float]]:
    """Per learner: mean binned squared error over the first and the last
    :data:`BIT_FLIPPING_WINDOW` examples of the stream."""
    frame = load_folder(folder)
    if frame is None or frame.empty:
        return {}
    rows = frame[frame["name"] == "train.squared_error"]
    last = rows.groupby("run")["step"].transform("max")
    figures = {}
    for label, runs in _bit_flipping_learners(frame).items():
        mine = rows[rows["run"].isin(runs)]
        first = _per_run(mine[mine["step"] <= BIT_FLIPPING_WINDOW])
        end = _per_run(mine[mine["step"] > last[mine.index] - BIT_FLIPPING_WINDOW])
        figures[f"{label} error first 100k"] = _per_seed(frame, runs, first)
        figures[f"{label} error last 100k"] = _per_seed(frame, runs, end)
    return figures


def new_task_accuracy(frame):
    """Per run and experience i: the test accuracy on experience i right after training on
    it (``eval.accuracy.exp<i>`` at step i), columns ``run``, ``experience``, ``value``."""
    from analysis.runs import per_experience

    return per_experience(frame, "accuracy", on="new")[["run", "experience", "value"]]


def permuted_figures(folder: Path) -> dict[str, dict[int, float]]:
    """Per method: mean new-task accuracy over the first and the last
    :data:`PERMUTED_WINDOW` tasks."""
    frame = load_folder(folder)
    if frame is None or frame.empty:
        return {}
    new = new_task_accuracy(frame)
    last = new.groupby("run")["experience"].transform("max")
    figures = {}
    for method, runs in _by_group(frame, "config.method").items():
        mine = new[new["run"].isin(runs)]
        first = _per_run(mine[mine["experience"] < PERMUTED_WINDOW])
        end = _per_run(mine[mine["experience"] > last[mine.index] - PERMUTED_WINDOW])
        figures[f"{method} first {PERMUTED_WINDOW} tasks"] = _per_seed(frame, runs, first)
        figures[f"{method} last {PERMUTED_WINDOW} tasks"] = _per_seed(frame, runs, end)
    return figures


def stability_by_dimension(frame) -> dict[tuple[str, int], dict[str, float]]:
    """Per group of runs and n: each run's new-experience accuracy averaged over the
    experiences with that n (n is the experience's difficulty, ``stream.difficulty``)."""
    from analysis.runs import with_difficulty

    table = with_difficulty(frame, new_task_accuracy(frame))
    result = {}
    for epochs, runs in _by_group(frame, "config.epochs").items():
        mine = table[table["run"].isin(runs)]
        for dimension, rows in mine.groupby("level"):
            result[(f"epochs={epochs}", int(dimension))] = _per_run(rows)
    return result


def learnability(
    dimensions, samples: int = LEARNER_SAMPLES, test: int = LEARNER_TEST, seeds=LEARNER_SEEDS
) -> dict[str, dict[int, float]]:
    """What is learnable from ``samples`` examples per n of the (matched) stability task:
    test accuracy of a gradient-boosted tree ensemble and of a 256×2 ReLU MLP fitted to
    the flattened matrices, on ``test`` fresh examples, one value per seed."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier

    from ponderlife.tasks.linear_systems import stability_batch

    figures: dict[str, dict[int, float]] = {}
    for n in dimensions:
        for seed in seeds:
            rng = np.random.default_rng([seed, n])
            train = stability_batch(n, samples, rng=rng)
            held = stability_batch(n, test, rng=rng)
            x, y = train.inputs.numpy(), train.targets.numpy()
            learners = {
                "gradient-boosted trees": HistGradientBoostingClassifier(random_state=seed),
                "MLP 256×2": MLPClassifier(
                    (256, 256), max_iter=300, early_stopping=True, random_state=seed
                ),
            }
            for name, learner in learners.items():
                score = learner.fit(x, y).score(held.inputs.numpy(), held.targets.numpy())
                figures.setdefault(f"{name} n={n}", {})[seed] = float(score)
    return figures


def stability_figures(folder: Path) -> dict[str, dict[int, float]]:
    """Per group (epochs) and n: the study's new-experience accuracy; next to it, the
    simple learners fitted per n at the same sample size (:func:`learnability`)."""
    frame = load_folder(folder)
    if frame is None or frame.empty:
        return {}
    figures = {}
    table = stability_by_dimension(frame)
    for (group, n), values in sorted(table.items(), key=lambda item: (item[0][0], item[0][1])):
        figures[f"PonderNet {group} n={n}"] = _per_seed(frame, list(values), values)
    dimensions = sorted({n for _, n in table})
    return figures | learnability(dimensions)


ROWS = (
    Row(
        key="parity",
        short="PonderNet parity",
        result="PonderNet parity (Banino et al. 2021)",
        paper="P = 96, trained on 1–48 nonzeros, tested on 49–96: PonderNet ≈0.92–0.93 "
        "(≈4.9 steps), ACT ≈0.51 (chance); P = 64 interpolation: PonderNet ≈0.974, ACT ≈0.958",
        setting="CPU size: P = 16, trained on k ≤ 8 nonzeros, tested on held-out k ≤ 8 and on "
        "k = 9..16; RNN-64, Adam 3e-3, 60,000 updates (the default parity config); the "
        "paper's size is the next row",
        sweep="parity --grid model=pondernet model=act --seeds 0 1 2",
        measure=parity_figures,
        headline=(
            ("pondernet accuracy trained range", "≈0.974 (P = 64)"),
            ("pondernet accuracy beyond", "≈0.92–0.93 (P = 96)"),
            ("pondernet expected steps trained range", "≈2.7 (P = 64)"),
            ("pondernet expected steps beyond", "≈4.9 (P = 96)"),
            ("act accuracy trained range", "≈0.958 (P = 64)"),
            ("act accuracy beyond", "≈0.51, chance (P = 96)"),
        ),
        tolerance=0.02,
        compare=PARITY_CLAIMS,
        chance=PARITY_CHANCE,
    ),
    Row(
        key="parity_paper",
        short="PonderNet parity, P = 96",
        result="PonderNet parity at the paper's size (P = 96)",
        paper="trained on 1–48 nonzeros, tested on 49–96: PonderNet ≈0.92–0.93 (≈4.9 steps), "
        "ACT ≈0.51 (chance, ≈2.1 steps); training length not stated",
        setting="the paper's setting (`with paper_extrapolation`): P = 96, trained on k ≤ 48, "
        "tested on held-out k ≤ 48 and on k = 49..96; RNN-128, Adam 3e-4, batch 128, "
        "β = 0.01, λ_p = 0.2, N = 20, 100,000 updates, on CPUs (an H100 trains this model "
        "1.3× slower than one CPU core: README, Run times)",
        sweep="parity --with paper_extrapolation --grid model=pondernet model=act "
        "--seeds 0 1 2 3 4",
        measure=parity_figures,
        headline=(
            ("pondernet accuracy trained range", "–"),
            ("pondernet accuracy beyond", "≈0.92–0.93"),
            ("pondernet expected steps beyond", "≈4.9"),
            ("act accuracy beyond", "≈0.51, chance"),
            ("act expected steps beyond", "≈2.1"),
        ),
        tolerance=0.02,
        compare=PARITY_CLAIMS,
        chance=PARITY_CHANCE,
    ),
    Row(
        key="bit_flipping",
        short="bit-flipping",
        result="Bit-flipping (Dohare et al.)",
        paper="backprop's error rises ≈0.62 → ≈1.25, above the linear learner's ≈0.88; "
        "continual backprop's stays low",
        setting="the reference problem at full size: 20 bits (15 slow, one flips every 10,000 "
        "examples), 20-5-1 ReLU learner, SGD 0.01, batch 1, 1,000,000 examples; errors are "
        "bin means (10,000 examples)",
        sweep="bit_flipping --grid method=bp method=cbp activation=linear --seeds 0 1 2 3 4",
        measure=bit_flipping_figures,
        headline=(
            ("bp error first 100k", "≈0.62"),
            ("bp error last 100k", "≈1.25"),
            ("cbp error first 100k", "–"),
            ("cbp error last 100k", "stays low"),
            ("linear error last 100k", "≈0.88"),
        ),
        tolerance=0.03,
        compare=(
            ("bp error last 100k", "bp error first 100k", "backprop's error rises"),
            ("bp error last 100k", "linear error last 100k", "backprop ends above linear"),
            ("bp error last 100k", "cbp error last 100k", "cbp ends below backprop"),
        ),
    ),
    Row(
        key="permuted_fashion",
        short="permuted Fashion-MNIST",
        result="Permuted Fashion-MNIST (the continual-backprop papers' permuted-MNIST protocol)",
        paper="online permuted MNIST, 800 tasks of 60,000 examples, 784-2000-2000-2000-10, SGD: "
        "backprop ≈95.2% → ≈93.7% on new tasks; continual backprop holds",
        setting="CPU size (`with permuted_reproduction`): 100 permutations of Fashion-MNIST, "
        "10,000 training images each seen once, 784-256-10 ReLU network, Adam 1e-3, batch 64; "
        "accuracy on each new task's 1,000 test images right after training on it",
        sweep="stream --with permuted_reproduction --grid method=bp method=cbp method=l2 "
        "method=shrink_perturb --seeds 0 1 2 3 4",
        measure=permuted_figures,
        headline=(
            (f"bp first {PERMUTED_WINDOW} tasks", "≈0.952 (MNIST)"),
            (f"bp last {PERMUTED_WINDOW} tasks", "≈0.937 (after 800 tasks)"),
            (f"cbp first {PERMUTED_WINDOW} tasks", "–"),
            (f"cbp last {PERMUTED_WINDOW} tasks", "holds"),
            *(
                (f"{method} {part} {PERMUTED_WINDOW} tasks", "–")
                for method in ("l2", "shrink_perturb")
                for part in ("first", "last")
            ),
        ),
        tolerance=0.01,
        compare=tuple(
            (
                f"{method} first {PERMUTED_WINDOW} tasks",
                f"{method} last {PERMUTED_WINDOW} tasks",
                f"{method} loses accuracy on new tasks",
            )
            for method in ("bp", "cbp", "l2", "shrink_perturb")
        ),
    ),
    Row(
        key="stability",
        short="stability vs n",
        result="Stability vs dimension (Charton, Hayat & Lample 2021)",
        paper="a transformer trained on 25–93 M symbolic systems: 96.4% on stability (n = 2–6), "
        "accuracy falling with n",
        setting="the study's default stream (matched stability, n = 3, 4, 5, 6 cycled, 10 "
        f"experiences of {LEARNER_SAMPLES:,} samples): PonderNet's new-experience accuracy "
        "per n after 1 or 20 epochs, next to gradient-boosted trees and a 256×2 MLP fitted "
        f"per n on {LEARNER_SAMPLES:,} samples (tested on {LEARNER_TEST:,})",
        sweep="stream --grid epochs=1 epochs=20 --seeds 0 1 2 3 4",
        measure=stability_figures,
        headline=tuple(
            (
                f"{who} n={n}",
                "0.964 over n = 2–6 at 25–93 M examples"
                if (n, who) == (3, "PonderNet epochs=1")
                else "–",
            )
            for n in (3, 6)
            for who in (
                "PonderNet epochs=1",
                "PonderNet epochs=20",
                "gradient-boosted trees",
                "MLP 256×2",
            )
        ),
        tolerance=0.02,
        compare=tuple(
            (
                f"PonderNet epochs=20 n={n}",
                f"MLP 256×2 n={n}",
                f"PonderNet (20 epochs) above the MLP, n = {n}",
            )
            for n in (3, 4, 5, 6)
        ),
    ),
)
BY_KEY = {row.key: row for row in ROWS}


# ---------------------------------------------------------------- estimates and checks


def estimates(figures: dict[str, dict[int, float]]) -> dict[str, dict]:
    """Each figure as mean, 95% CI half-width (None for one value), number of runs, and
    its value per seed (``per_seed``, for comparisons seed by seed)."""
    return {
        name: interval(values.values(), LEVEL) | {"per_seed": dict(sorted(values.items()))}
        for name, values in figures.items()
        if values
    }


def measure_all(runs: Path = RUNS, rows=ROWS) -> dict[str, dict]:
    """Every row's estimates from its runs folder, each with its tolerance."""
    measured = {}
    for row in rows:
        figures = estimates(row.measure(runs / row.key))
        for estimate in figures.values():
            estimate["tolerance"] = max(row.tolerance, estimate["half_width"] or 0.0)
        measured[row.key] = figures
    return measured


def check(stored: dict, measured: dict) -> tuple[list[str], list[str]]:
    """(problems, notes): a problem per stored figure whose re-measured mean moved by more
    than its tolerance (or whose run count changed); a note per row or figure not
    re-measured (no runs here)."""
    problems, notes = [], []
    for key, figures in stored.items():
        now = measured.get(key) or {}
        if not now:
            notes.append(f"{key}: no runs here, not checked")
            continue
        for name, old in figures.items():
            new = now.get(name)
            if new is None:
                notes.append(f"{key}: {name}: no runs here, not checked")
            elif new["runs"] != old["runs"]:
                problems.append(f"{key}: {name}: {new['runs']} runs, stored {old['runs']}")
            elif abs(new["mean"] - old["mean"]) > old["tolerance"]:
                problems.append(
                    f"{key}: {name}: {new['mean']:.4f}, stored {old['mean']:.4f} "
                    f"± {old['tolerance']:.4f}"
                )
    return problems, notes


# ---------------------------------------------------------------- the table and the page


def value(estimate: dict | None, digits: int = 3) -> str:
    if estimate is None:
        return "not run"
    text = f"{estimate['mean']:.{digits}f}"
    if estimate["half_width"] is not None:
        text += f" ± {estimate['half_width']:.{digits}f}"
    return text


def table_lines(measured: dict) -> list[str]:
    """The README's table: one line per headline figure, the paper's value beside ours."""
    lines = [
        "| result | figure | paper | ours (mean ± 95% CI) | seeds |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        figures = measured.get(row.key, {})
        for name, paper in row.headline:
            estimate = figures.get(name)
            runs = estimate["runs"] if estimate else 0
            lines.append(f"| {row.short} | {name} | {paper} | {value(estimate)} | {runs} |")
    return lines


def commands() -> list[str]:
    return [f"# {row.result}\n{row.command()}" for row in ROWS]


def readme_block(measured: dict) -> str:
    return "\n".join(
        [
            README_START,
            *table_lines(measured),
            "",
            "```bash",
            *commands(),
            ".venv/bin/python -m experiments.benchmarks.reproduction --out docs/reproduction.md "
            "--readme README.md",
            "```",
            README_END,
        ]
    )


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the README markers (markers included) replaced."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"no {README_START!r} … {README_END!r} block to replace")
    return text[:start] + block + text[end + len(README_END) :]


def reading(row: Row, figures: dict) -> list[str]:
    """Each comparison of ``row`` (the claim a > b): a − b and whether the two intervals
    overlap, and where both figures have values for two or more of the same seeds, the
    per-seed difference a − b with its interval. A comparison is clear when the intervals
    do not overlap, or when the per-seed difference's interval excludes 0 (the paired
    test, which removes what the seeds share: the problem instance the seed draws, and for
    first vs last, the run itself); a clear a < b is said to contradict the claim."""
    lines = []
    for a, b, what in row.compare:
        if a not in figures or b not in figures:
            lines.append(f"- {what}: not measured yet")
            continue
        first, second = figures[a], figures[b]
        if first["half_width"] is None or second["half_width"] is None:
            lines.append(f"- {what}: one run, no interval")
            continue
        gap = first["mean"] - second["mean"]
        apart = abs(gap) > first["half_width"] + second["half_width"]
        line = f"- {what}: {first['mean']:.3f} − {second['mean']:.3f} = {gap:+.3f}; the intervals "
        warning = _at_chance(row, (a, first), (b, second))
        paired = _paired_difference(first, second)
        if paired is None:
            verdict = "do not overlap" + _sign(gap) if apart else "overlap, so this is not clear"
            lines.append(line + verdict + warning)
            continue
        excludes = abs(paired["mean"]) > paired["half_width"]
        lines.append(
            line
            + ("do not overlap" if apart else "overlap")
            + f"; per seed ({paired['runs']} paired): {paired['mean']:+.3f} ± "
            + f"{paired['half_width']:.3f}, "
            + ("clear" + _sign(gap) if apart or excludes else "so this is not clear")
            + warning
        )
    return lines


def _at_chance(row: Row, *named) -> str:
    """The reading's warning when both figures compared are accuracies within the row's
    band around chance."""
    if row.chance is None or not all("accuracy" in name for name, _ in named):
        return ""
    level, band = row.chance
    if all(abs(figure["mean"] - level) <= band for _, figure in named):
        return (
            f"; but both lie within {band:.2f} of chance ({level:.2f}): neither beats "
            "guessing, so this says nothing for the claim"
        )
    return ""


def _sign(gap: float) -> str:
    """A clear comparison's direction: nothing when it is the claim's (a > b)."""
    return "" if gap > 0 else ", in the opposite direction: the claim does not hold"


def _paired_difference(first: dict, second: dict) -> dict | None:
    """The interval of a − b over the seeds both figures have (None: fewer than two)."""
    a, b = first.get("per_seed") or {}, second.get("per_seed") or {}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    return interval([a[s] - b[s] for s in seeds], LEVEL)


def where(folder: Path) -> str:
    """The machines a row's runs ran on, their summed run time, and the runs that did not
    finish."""
    from experiments.benchmarks._pages import machines, unfinished

    folders = sorted(p.parent for p in folder.glob("*/run.json"))
    if not folders:
        return "No runs yet."
    hosts, hours = machines(folders)
    return f"Ran on {hosts}; summed run time {hours:.1f} h. {unfinished(folder)}"


def page(measured: dict, image: str, runs: Path = RUNS) -> str:
    sections = [
        "# Reproduction table",
        "",
        textwrap.fill(
            "Each source paper's headline result next to ours, measured by the command "
            "below it (CPU, one torch thread per run). Figures are means over seeds with the "
            f"half-width of their {LEVEL:.0%} Student-t confidence interval; a figure with "
            "one run has no interval. `--check` compares a rerun with the stored figures "
            "(docs/reproduction.json) within each figure's tolerance.",
            90,
        ),
        "",
        f"![the rows: parity, bit-flipping, permuted Fashion-MNIST, stability]({image})",
        "",
    ]
    for row in ROWS:
        sections += section(row, measured.get(row.key, {}), where(runs / row.key))
    return "\n".join(sections)


def section(row: Row, figures: dict, place: str) -> list[str]:
    """The page's lines for ``row``: the paper, our setting, the figures, the reading, the
    command and ``place`` (where its runs ran, :func:`where`)."""
    return [
        f"## {row.result}",
        "",
        textwrap.fill(f"Paper: {row.paper}.", 90),
        "",
        textwrap.fill(f"Ours: {row.setting}.", 90),
        "",
        "| figure | ours | runs |",
        "|---|---|---|",
        *(
            f"| {name} | {value(estimate)} | {estimate['runs']} |"
            for name, estimate in figures.items()
        ),
        *([] if figures else ["| (no runs yet) | – | 0 |"]),
        "",
        *reading(row, figures),
        "",
        "```bash",
        row.command(),
        "```",
        "",
        textwrap.fill(place, 90),
        "",
    ]


def update_page(text: str, measured: dict, keys, runs: Path = RUNS) -> str:
    """The page ``text`` with the sections of the rows ``keys`` written again from
    ``measured`` and their runs; every other row's section is kept as it stands (added from
    the stored figures, without a where-line, if the page lacks it)."""
    head, *parts = text.split("\n## ")
    kept = {part.split("\n", 1)[0]: "## " + part.rstrip("\n") for part in parts}
    lines = [head.rstrip("\n"), ""]
    for row in ROWS:
        if row.key in keys:
            lines += section(row, measured.get(row.key, {}), where(runs / row.key))
        elif row.result not in kept:
            stored = "Not re-measured in this update: figures as stored."
            lines += section(row, measured.get(row.key, {}), stored)
        else:
            lines += [kept[row.result], ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the figure


def figure(measured: dict, runs: Path = RUNS):
    """Four panels: parity accuracy per range (both sizes) and stability accuracy per n
    (from ``measured``, :func:`measure_all`), bit-flipping error over the stream and
    permuted new-task accuracy over tasks (from the runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import COLORS

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)
    _parity_panel(axes[0, 0], measured.get("parity", {}), measured.get("parity_paper", {}), COLORS)
    _bit_flipping_panel(axes[0, 1], runs / "bit_flipping", COLORS)
    _permuted_panel(axes[1, 0], runs / "permuted_fashion", COLORS)
    _stability_panel(axes[1, 1], measured.get("stability", {}))
    return fig


def _ci_bars(ax, positions, figures: dict, names, color, label):
    found = [(x, figures[n]) for x, n in zip(positions, names, strict=True) if n in figures]
    if not found:
        return
    xs = [x for x, _ in found]
    means = [e["mean"] for _, e in found]
    halves = [e["half_width"] or 0.0 for _, e in found]
    ax.errorbar(xs, means, yerr=halves, fmt="o", capsize=4, color=color, label=label)


def _parity_panel(ax, small: dict, paper: dict, colors) -> None:
    """Final accuracy per range at P = 16 (``small``) and at the paper's P = 96."""
    for offset, model in ((-0.08, "pondernet"), (0.08, "act")):
        names = [f"{model} accuracy trained range", f"{model} accuracy beyond"]
        for base, figures, label in ((0, small, model), (2, paper, None)):
            positions = [base + offset, base + 1 + offset]
            _ci_bars(ax, positions, figures, names, colors.get(model), label)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.axvline(1.5, color="0.8", lw=0.8)
    ticks = ["P = 16\nk ≤ 8", "P = 16\nk = 9..16", "P = 96\nk ≤ 48", "P = 96\nk = 49..96"]
    ax.set_xticks([0, 1, 2, 3], ticks)
    ax.set_ylim(0.4, 1.05)
    ax.set_title("Parity: final accuracy, trained range and beyond (95% CI over seeds)")
    ax.set_ylabel("accuracy")
    ax.legend(frameon=False)


#: Points of the moving average the curves of the figure draw (per run, then over runs).
SMOOTH = 5


def _moving_average(rows, x: str):
    """Each run's ``value`` replaced by its moving average over :data:`SMOOTH` points
    along ``x`` (fewer at the start)."""
    rows = rows.sort_values(["run", x])
    smooth = rows.groupby("run")["value"].transform(lambda v: v.rolling(SMOOTH, 1).mean())
    return rows.assign(value=smooth)


def _bit_flipping_panel(ax, folder: Path, colors) -> None:
    from experiments.benchmarks._pages import curve

    frame = load_folder(folder)
    ax.set_title(f"Bit-flipping: squared error (bins of 10,000, {SMOOTH}-bin average)")
    if frame is None or frame.empty:
        ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
        return
    rows = _moving_average(frame[frame["name"] == "train.squared_error"], "step")
    for label, runs in _bit_flipping_learners(frame).items():
        curve(ax, rows, "step", runs, colors.get(label), label)
    for level, text in ((1.25, "paper: backprop's end"), (0.88, "paper: linear")):
        ax.axhline(level, color="0.5", lw=0.8, ls="--")
        ax.text(0, level, text, va="bottom", fontsize="small", color="0.4")
    ax.set_ylim(0, 2.5)  # a band of two runs' t-interval can reach far beyond the means
    ax.set_xlabel("examples seen")
    ax.set_ylabel("squared error")
    ax.legend(frameon=False, title="learner (runs)")


def _permuted_panel(ax, folder: Path, colors) -> None:
    from experiments.benchmarks._pages import curve

    frame = load_folder(folder)
    ax.set_title(f"Permuted Fashion-MNIST: new-task accuracy ({SMOOTH}-task average)")
    if frame is None or frame.empty:
        ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
        return
    new = _moving_average(new_task_accuracy(frame), "experience")
    for method, runs in _by_group(frame, "config.method").items():
        curve(ax, new, "experience", runs, colors.get(method), method)
    ax.set_ylim(0.6, 0.9)
    ax.set_xlabel("task (index)")
    ax.set_ylabel("test accuracy after training on it")
    ax.legend(frameon=False, title="method (runs)")


def _stability_panel(ax, figures: dict) -> None:
    ax.set_title("Stability (matched): accuracy per n at 2,048 samples")
    if not figures:
        ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
        return
    who = sorted({name.rsplit(" n=", 1)[0] for name in figures})
    dimensions = sorted({int(name.rsplit("=", 1)[1]) for name in figures})
    width = 0.8 / max(len(who), 1)
    for i, name in enumerate(who):
        positions = [n - 0.4 + width * (i + 0.5) for n in dimensions]
        _ci_bars(ax, positions, figures, [f"{name} n={n}" for n in dimensions], f"C{i}", name)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xticks(dimensions)
    ax.set_xlabel("n (system dimension)")
    ax.set_ylabel("test accuracy")
    ax.legend(frameon=False, fontsize="small")


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder of the rows' run folders")
    parser.add_argument("--run", nargs="+", choices=list(BY_KEY), help="run these rows first")
    parser.add_argument("--workers", default="2", help="runs at a time for --run")
    parser.add_argument("--out", type=Path, help="page to write (figure .png and .json beside)")
    parser.add_argument("--readme", type=Path, help="README whose table block to rewrite")
    parser.add_argument("--check", action="store_true", help=f"compare with {STORED}")
    parser.add_argument("--stored", type=Path, default=STORED, help="figures --check reads")
    parser.add_argument(
        "--update",
        nargs="+",
        choices=list(BY_KEY),
        help="measure only these rows; every other row keeps its stored figures (--stored), "
        "its page section and the figure (which needs every row's runs to be redrawn)",
    )
    args = parser.parse_args(argv)
    run_sweeps({key: BY_KEY[key].sweep for key in args.run or []}, args.runs, args.workers)

    if args.update:
        if args.out and not args.out.exists():
            parser.error(f"--update rewrites sections of an existing {args.out}; write it first")
        measured = json.loads(args.stored.read_text())
        fresh = measure_all(args.runs, [BY_KEY[key] for key in args.update])
        empty = [key for key, figures in fresh.items() if not figures]
        if empty:
            parser.error(f"no COMPLETED runs for {', '.join(empty)} in {args.runs}")
        measured.update(fresh)
    else:
        measured = measure_all(args.runs)
    print("\n".join(table_lines(measured)))
    if args.check:
        problems, notes = check(json.loads(args.stored.read_text()), measured)
        for line in notes:
            print(f"note: {line}")
        for line in problems:
            print(f"REGRESSION: {line}", file=sys.stderr)
        print(f"{'failed' if problems else 'passed'}: checked against {args.stored}")
        if problems:
            return 1
    if args.out and args.update:
        text = args.out.read_text()
        args.out.with_suffix(".json").write_text(json.dumps(measured, indent=1) + "\n")
        args.out.write_text(update_page(text, measured, args.update, args.runs))
        print(f"updated {', '.join(args.update)} in {args.out} and its .json; figure kept")
    elif args.out:
        image = args.out.with_suffix(".png")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figure(measured, args.runs).savefig(image, dpi=110)
        args.out.with_suffix(".json").write_text(json.dumps(measured, indent=1) + "\n")
        args.out.write_text(page(measured, image.name, args.runs))
        print(f"wrote {args.out}, {image} and {args.out.with_suffix('.json')}")
    if args.readme:
        args.readme.write_text(replace_block(args.readme.read_text(), readme_block(measured)))
        print(f"rewrote the reproduction table in {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
