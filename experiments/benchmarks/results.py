"""The findings: how halting depth and plasticity evolve as tasks shift, and what one does
to the other, each answer a statistic per run with its 95% confidence interval over seeds.

The runs are the CPU-size cells of :data:`CELLS` (Ray sweeps into ``runs/results/<cell>/``,
PonderNet on the `demo` stability stream: n cycling 3 → 4 → 6 with a new input permutation
per experience, 45 experiences): what each question needs, not the whole product.
:data:`CLUSTER` is the whole model × method × stream × transition product as one sweep
command for a cluster. The questions (:data:`QUESTIONS`, one function each):

* ``plasticity``: does the halting step change as plasticity is lost (effective rank and
  dormant fraction over the stream), and does continual backprop change how much the
  network ponders?
* ``difficulty``: does pondering track difficulty (halting step vs n over the stream),
  and does that survive the shifts (first half vs second half)?
* ``forgetting``: is forgetting of an experience related to how much it was pondered when
  learned, within each n (so difficulty cannot explain it)?
* ``compute``: accuracy on new experiences against fixed-depth models of 1–4 steps at the
  same number of steps.
* ``transition``: does loss of plasticity survive gradual shifts?

    python -m experiments.benchmarks.results                 # print every finding
    python -m experiments.benchmarks.results --run stability # run or finish a cell first
    python -m experiments.benchmarks.results --out docs/results.md  # + figures beside it
"""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path

from experiments.benchmarks._pages import interval, load_folder, run_sweeps

RUNS = Path("runs/results")
SEEDS = "--seeds 0 1 2 3 4"
#: The CPU-size cells: a name, the experiments.sweep arguments, what it answers.
CELLS = {
    "stability": (
        "stream --with demo --grid method=bp method=cbp method=l2 method=shrink_perturb "
        f"method=redo method=upgd method=weight_clipping method=layer_norm_l2 {SEEDS}",
        "PonderNet, bp, cbp and six other plasticity methods: plasticity, difficulty, "
        "forgetting, compute",
    ),
    "fixed_depth": (
        "stream --with demo --grid model=fixed --grid fixed_steps=1 fixed_steps=2 "
        f"fixed_steps=3 fixed_steps=4 {SEEDS}",
        "fixed depth of 1–4 steps, bp: the compute comparison",
    ),
    "transition": (
        "stream --with demo --set epochs=1 samples_per_experience=10240 window=2048 "
        f"--grid transition=abrupt transition=gradual --grid method=bp method=cbp {SEEDS}",
        "bp and cbp with abrupt and gradual switches (one pass of 10,240 samples)",
    ),
    "parity_shift": (
        "stream --with parity --set parity_size=8 step=gru hidden_size=64 experiences=12 "
        "samples_per_experience=16384 epochs=4 batch_size=128 max_steps=20 lambda_p=0.2 "
        f"beta=0.01 --grid method=bp method=cbp {SEEDS}",
        "PonderNet (GRU-64, N = 20) on 8-bit parity whose experiences alternate 1–4 and "
        "5–8 nonzero bits, bp and cbp: pondering against difficulty within an experience",
    ),
}
#: The whole product, for a cluster (`--address auto` on a Ray head node).
CLUSTER = (
    "stream --with demo --grid model=pondernet model=act model=fixed "
    "--grid method=bp method=cbp method=l2 method=shrink_perturb method=redo method=upgd "
    "method=weight_clipping method=layer_norm_l2 "
    "--grid stability parity permuted_fashion "
    f"--grid transition=abrupt transition=gradual {SEEDS} --address auto"
)


def _interval(values) -> dict:
    """:func:`~experiments.benchmarks._pages.interval` of the values that are numbers (a
    correlation is NaN where undefined); no runs when none is."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"mean": math.nan, "half_width": None, "runs": 0}
    return interval(values)


def _per_method(runs) -> list[dict]:
    """One finding per method: the interval over its runs of every per-run statistic
    (every column but the run, its method and its seed)."""
    statistics = [c for c in runs.columns if c not in ("run", "config.method", "config.seed")]
    return [
        {"method": method} | {column: _interval(rows[column]) for column in statistics}
        for method, rows in runs.groupby("config.method", sort=False)
    ]


def _paired(table, column: str, key: str, first: str, second: str) -> dict:
    """The interval of ``second − first`` in ``column`` over the seeds both have."""
    pivot = table.pivot_table(index="config.seed", columns=key, values=column)
    if first not in pivot or second not in pivot:
        return _interval([])
    return _interval((pivot[second] - pivot[first]).dropna().tolist())


def per_experience_table(frame, keys: tuple[str, ...] = ()):
    """One row per run × experience: the run's seed, method, model and config ``keys``,
    the experience's n (``level``), its index, and right after training on it: the mean
    halting step (``halting``), the accuracy (``accuracy``), the effective rank and dormant
    fraction of the probe representation (``rank``, ``dormant``)."""
    from analysis.runs import per_experience, with_difficulty

    keep = ["run", "experience", "config.seed", "config.method", "config.model", *keys, "value"]
    table = with_difficulty(frame, per_experience(frame, "accuracy", on="new")[keep])
    table = table.rename(columns={"value": "accuracy"})
    try:
        halting = per_experience(frame, "halting_step_mean", on="new")
    except ValueError:  # a fixed-depth model logs no halting step: it always takes its steps
        halting = None
    if halting is not None:
        halting = halting[["run", "experience", "value"]].rename(columns={"value": "halting"})
        table = table.merge(halting, on=["run", "experience"], how="left")
    for name, column in (
        ("plasticity.effective_rank", "rank"),
        ("plasticity.dormant_fraction", "dormant"),
    ):
        rows = frame[frame["name"] == name][["run", "step", "value"]]
        rows = rows.rename(columns={"step": "experience", "value": column})
        table = table.merge(rows, on=["run", "experience"], how="left")
    return table


def partial_spearman(rows, x: str, y: str, control: str | None = None) -> float:
    """Spearman correlation of ``x`` and ``y``; with ``control``, the partial correlation
    of their ranks given the ranks of ``control`` (what is left when a common dependence on
    it, a trend over the stream say, is removed). NaN when undefined."""
    from analysis.plots import spearman

    r_xy = spearman(rows[x], rows[y])
    if control is None:
        return r_xy
    r_xz, r_yz = spearman(rows[x], rows[control]), spearman(rows[y], rows[control])
    left, right = 1 - r_xz**2, 1 - r_yz**2
    if not left > 1e-9 or not right > 1e-9:  # x or y is (almost) a function of control
        return math.nan
    return (r_xy - r_xz * r_yz) / math.sqrt(left * right)


def stratified_spearman(
    rows, x: str, y: str, by: str = "level", control: str | None = None
) -> float:
    """Mean over the strata of ``by`` of the (partial, given ``control``) Spearman
    correlation of ``x`` and ``y`` within each stratum (strata where it is undefined are
    left out): a correlation that differences between strata (difficulty levels) cannot
    produce. NaN when none is left."""
    values = [partial_spearman(part, x, y, control) for _, part in rows.groupby(by)]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _thirds(table):
    from experiments.demo import thirds

    early, late = thirds(int(table["experience"].max()))
    return table["experience"] < early, table["experience"] > late


def plasticity(frame) -> list[dict]:
    """Per method: the per-run Spearman ρ (within each n, averaged) of the halting step with
    the effective rank and with the dormant fraction over the stream; the halting step,
    effective rank and dormant fraction in the first and last third; and for every other
    method the paired difference of its mean halting step from bp's."""
    table = per_experience_table(frame)
    first, last = _thirds(table)
    table = table.assign(part=None)
    table.loc[first, "part"], table.loc[last, "part"] = "first", "last"
    per_run = []
    for run, rows in table.groupby("run"):
        record = {
            "run": run,
            "config.method": rows["config.method"].iloc[0],
            "config.seed": rows["config.seed"].iloc[0],
            "rho_rank": stratified_spearman(rows, "halting", "rank"),
            "rho_dormant": stratified_spearman(rows, "halting", "dormant"),
            "rho_rank_detrended": stratified_spearman(
                rows, "halting", "rank", control="experience"
            ),
            "halting": rows["halting"].mean(),
        }
        for part in ("first", "last"):
            chosen = rows[rows["part"] == part]
            for column in ("halting", "rank", "dormant", "accuracy"):
                record[f"{column}_{part}"] = chosen[column].mean()
        per_run.append(record)
    import pandas as pd

    runs = pd.DataFrame(per_run)
    others = [m for m in runs["config.method"].unique() if m != "bp"]
    differences = [
        {"method": f"{m} − bp", "difference": _paired(runs, "halting", "config.method", "bp", m)}
        for m in others
    ]
    return [*_per_method(runs), *differences]


def difficulty(frame) -> list[dict]:
    """Per method: the per-run Spearman ρ of the halting step with n over the experiences,
    in the first and in the second half of the stream, and the halting step per n."""
    import pandas as pd

    from analysis.plots import spearman

    table = per_experience_table(frame)
    half = table["experience"] > table["experience"].max() / 2
    per_run = []
    for _, rows in table.groupby("run"):
        second = half[rows.index]
        record = {
            "config.method": rows["config.method"].iloc[0],
            "rho_first_half": spearman(rows[~second]["halting"], rows[~second]["level"]),
            "rho_second_half": spearman(rows[second]["halting"], rows[second]["level"]),
        }
        for level, part in rows.groupby("level"):
            record[f"halting_n{int(level)}"] = part["halting"].mean()
        per_run.append(record)
    return _per_method(pd.DataFrame(per_run))


def forgetting(frame) -> list[dict]:
    """Per method: the per-run Spearman ρ, within each n and averaged, between an
    experience's forgetting at the end of the stream and its halting step when learned;
    and the same between forgetting and accuracy when learned, for comparison."""
    import pandas as pd

    from analysis.runs import final_forgetting

    table = per_experience_table(frame)
    lost = final_forgetting(frame)[["run", "experience", "value"]]
    table = table.merge(lost.rename(columns={"value": "forgetting"}), on=["run", "experience"])
    if table.empty:  # no experience was evaluated after the one that learned it
        return []
    per_run = [
        {
            "config.method": rows["config.method"].iloc[0],
            "rho_halting": stratified_spearman(rows, "forgetting", "halting"),
            "rho_accuracy": stratified_spearman(rows, "forgetting", "accuracy"),
            "rho_halting_given_accuracy": stratified_spearman(
                rows, "forgetting", "halting", control="accuracy"
            ),
            "forgetting": rows["forgetting"].mean(),
        }
        for _, rows in table.groupby("run")
    ]
    return _per_method(pd.DataFrame(per_run))


def compute(ponder_frame, fixed_frame) -> list[dict]:
    """New-experience accuracy per step spent: per fixed depth K (and method), its mean
    accuracy; per PonderNet method, its mean accuracy and mean halting step, and per seed
    its accuracy minus the same method's fixed-depth accuracy of that seed interpolated
    (linearly in K) at PonderNet's mean step count. A seed whose step count lies outside
    its fixed depths (no interpolation without extrapolating) or with no fixed-depth runs
    of the method gives no gap."""
    import numpy as np

    ponder = per_experience_table(ponder_frame)
    fixed = per_experience_table(fixed_frame, ("config.fixed_steps",))
    depth = fixed.groupby(["config.method", "config.seed", "config.fixed_steps"])["accuracy"]
    depth = depth.mean()
    findings = []
    for (method, steps), rows in fixed.groupby(["config.method", "config.fixed_steps"]):
        per_run = rows.groupby("run")["accuracy"].mean()
        findings.append(
            {
                "model": f"fixed depth, {method}, {int(steps)} step{'s' * (steps != 1)}",
                "steps": _interval([float(steps)] * len(per_run)),
                "accuracy": _interval(per_run),
                "per_step": _interval(per_run / steps),
            }
        )
    for method, rows in ponder.groupby("config.method", sort=False):
        runs = rows.groupby("run").agg(
            seed=("config.seed", "first"), accuracy=("accuracy", "mean"), steps=("halting", "mean")
        )
        gaps = []
        for seed, accuracy, steps in runs[["seed", "accuracy", "steps"]].itertuples(False):
            if (method, seed) not in depth.index.droplevel(2):
                continue
            curve = depth.loc[(method, seed)]
            if curve.index.min() <= steps <= curve.index.max():
                gaps.append(accuracy - float(np.interp(steps, curve.index, curve.values)))
        findings.append(
            {
                "model": f"PonderNet, {method}",
                "steps": _interval(runs["steps"]),
                "accuracy": _interval(runs["accuracy"]),
                "per_step": _interval(runs["accuracy"] / runs["steps"]),
                "gap": _interval(gaps),
            }
        )
    return findings


def within(frame) -> list[dict]:
    """Per method: the per-run mean of ρ(halting step, difficulty) within each experience's
    own test set right after training on it (the number of nonzero bits of parity), over
    the first and the second half of the stream and over its easy and hard experiences
    (mean difficulty below / above the stream's median), with the new-experience accuracy
    of each kind."""
    import pandas as pd

    from analysis.runs import per_experience

    table = per_experience_table(frame)
    rho = per_experience(frame, "difficulty_spearman", on="new")[["run", "experience", "value"]]
    table = table.merge(rho.rename(columns={"value": "rho"}), on=["run", "experience"])
    second = table["experience"] > table["experience"].max() / 2
    hard = table["level"] > table["level"].median()
    per_run = []
    for _, rows in table.groupby("run"):
        late, difficult = second[rows.index], hard[rows.index]
        per_run.append(
            {
                "config.method": rows["config.method"].iloc[0],
                "rho_first_half": rows[~late]["rho"].mean(),
                "rho_second_half": rows[late]["rho"].mean(),
                "rho_easy": rows[~difficult]["rho"].mean(),
                "rho_hard": rows[difficult]["rho"].mean(),
                "accuracy_easy": rows[~difficult]["accuracy"].mean(),
                "accuracy_hard": rows[difficult]["accuracy"].mean(),
            }
        )
    return _per_method(pd.DataFrame(per_run))


def transition(frame) -> list[dict]:
    """Per method × transition: new-experience accuracy in the first and the last third
    and the per-run change."""
    table = per_experience_table(frame, ("config.transition",))
    first, last = _thirds(table)
    findings = []
    for (method, kind), rows in table.groupby(["config.method", "config.transition"]):
        early = rows[first[rows.index]].groupby("run")["accuracy"].mean()
        late = rows[last[rows.index]].groupby("run")["accuracy"].mean()
        findings.append(
            {
                "method": method,
                "transition": kind,
                "first": _interval(early),
                "last": _interval(late),
                "change": _interval((late - early).dropna()),
            }
        )
    return findings


# ---------------------------------------------------------------- the page


def value(interval: dict | None, digits: int = 3) -> str:
    if not interval or interval["runs"] == 0:
        return "–"
    text = f"{interval['mean']:.{digits}f}"
    if interval["half_width"] is not None:
        text += f" ± {interval['half_width']:.{digits}f}"
    return f"{text} ({interval['runs']})"


def verdict(interval: dict | None, what: str) -> str:
    """Whether ``interval`` (a correlation or a difference) is clearly away from 0."""
    if not interval or interval["runs"] < 2 or interval["half_width"] is None:
        return f"{what}: too few runs for an interval"
    mean, half = interval["mean"], interval["half_width"]
    if abs(mean) > half:
        return f"{what}: {mean:+.3f} ± {half:.3f}, clearly {'above' if mean > 0 else 'below'} 0"
    return f"{what}: {mean:+.3f} ± {half:.3f}, not clear (the interval includes 0)"


def columns(name: str, findings: list[dict]) -> list[tuple[str, str]]:
    """The interval columns of a question's table: :data:`QUESTIONS`' and, for
    ``difficulty``, the halting step at each n the runs have."""
    fixed = QUESTIONS[name][1]
    levels = sorted(
        {int(k.removeprefix("halting_n")) for f in findings for k in f if k.startswith("halting_n")}
    )
    return fixed + [(f"halting_n{n}", f"halting at n = {n}") for n in levels]


def table_lines(findings: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """A Markdown table of ``findings``: the text columns first, then each interval."""
    text = [k for k in findings[0] if not isinstance(findings[0][k], dict)] if findings else []
    lines = [
        "| " + " | ".join([*text, *(header for _, header in columns)]) + " |",
        "|" + "---|" * (len(text) + len(columns)),
    ]
    for finding in findings:
        cells = [str(finding.get(k, "")) for k in text]
        cells += [value(finding.get(key)) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


#: Per question: its title and the table's interval columns (:data:`READ`: what its
#: reading judges).
QUESTIONS = {
    "plasticity": (
        "Does the halting step change as plasticity is lost? Do the methods change pondering?",
        [
            ("rho_rank", "ρ(halting, effective rank)"),
            ("rho_dormant", "ρ(halting, dormant fraction)"),
            ("rho_rank_detrended", "ρ(halting, effective rank), trend removed"),
            ("halting_first", "halting, first third"),
            ("halting_last", "halting, last third"),
            ("rank_first", "effective rank, first third"),
            ("rank_last", "effective rank, last third"),
            ("dormant_last", "dormant, last third"),
            ("halting", "halting, whole stream"),
            ("difference", "halting, minus bp's (paired by seed)"),
        ],
    ),
    "within": (
        "Does pondering track difficulty within an experience, and does that survive the shift?",
        [
            ("rho_first_half", "ρ(halting, nonzero bits) within an experience, first half"),
            ("rho_second_half", "second half"),
            ("rho_easy", "on easy experiences (1–4 bits)"),
            ("rho_hard", "on hard experiences (5–8 bits)"),
            ("accuracy_easy", "new-experience accuracy, easy"),
            ("accuracy_hard", "new-experience accuracy, hard"),
        ],
    ),
    "difficulty": (
        "Does pondering track difficulty across the stream, and does it survive the shifts?",
        [
            ("rho_first_half", "ρ(halting, n), first half"),
            ("rho_second_half", "ρ(halting, n), second half"),
        ],  # then "halting at n = <n>" for every n of the stream (columns())
    ),
    "forgetting": (
        "Is forgetting related to how much an experience was pondered, within each n?",
        [
            ("rho_halting", "ρ(forgetting, halting when learned)"),
            ("rho_accuracy", "ρ(forgetting, accuracy when learned)"),
            ("rho_halting_given_accuracy", "ρ(forgetting, halting), accuracy when learned removed"),
            ("forgetting", "mean forgetting"),
        ],
    ),
    "compute": (
        "Accuracy on new experiences per step: PonderNet against fixed depth",
        [
            ("steps", "steps"),
            ("accuracy", "new-experience accuracy"),
            ("per_step", "accuracy per step"),
            ("gap", "PonderNet − fixed depth at equal steps"),
        ],
    ),
    "transition": (
        "Does loss of plasticity survive gradual shifts?",
        [
            ("first", "new-experience accuracy, first third"),
            ("last", "last third"),
            ("change", "change"),
        ],
    ),
}


#: Per question: the intervals its reading judges, each with what it is.
READ = {
    "plasticity": (
        ("rho_rank", "ρ(halting, effective rank)"),
        ("rho_dormant", "ρ(halting, dormant fraction)"),
        ("rho_rank_detrended", "ρ(halting, effective rank) with the trend over the stream removed"),
        ("difference", "mean halting step, minus bp's"),
    ),
    "within": (
        ("rho_first_half", "ρ(halting, nonzero bits) within an experience, first half"),
        ("rho_second_half", "second half"),
        ("rho_easy", "on easy experiences"),
        ("rho_hard", "on hard experiences"),
    ),
    "difficulty": (
        ("rho_first_half", "ρ(halting, n), first half"),
        ("rho_second_half", "second half"),
    ),
    "forgetting": (
        ("rho_halting", "ρ(forgetting, halting when learned)"),
        ("rho_halting_given_accuracy", "the same given the accuracy when learned"),
    ),
    "compute": (("gap", "PonderNet − fixed depth at equal steps"),),
    "transition": (("change", "change of new-experience accuracy, first → last third"),),
}


def readings(name: str, findings: list[dict]) -> list[str]:
    """What each question's intervals say (:func:`verdict`), computed from them."""
    lines = []
    for finding in findings:
        label = ", ".join(str(v) for v in finding.values() if not isinstance(v, dict))
        lines += [
            f"- {label}: {verdict(finding[key], what)}"
            for key, what in READ[name]
            if key in finding
        ]
    return lines


def compute_findings(runs: Path) -> dict[str, list[dict]]:
    """Every question whose cells have runs."""
    found = {}
    stability, fixed, switches, parity = (load_folder(runs / cell) for cell in CELLS)
    if stability is not None and not stability.empty:
        found["plasticity"] = plasticity(stability)
        found["difficulty"] = difficulty(stability)
        found["forgetting"] = forgetting(stability)
        if fixed is not None and not fixed.empty:
            found["compute"] = compute(stability, fixed)
    if switches is not None and not switches.empty:
        found["transition"] = transition(switches)
    if parity is not None and not parity.empty:
        found["within"] = within(parity)
    return found


def page(found: dict[str, list[dict]], where: dict[str, str], images: dict[str, str]) -> str:
    sections = [
        "# Findings: pondering × plasticity",
        "",
        textwrap.fill(
            "Each question below is answered by a statistic per run and its mean over runs "
            "with the half-width of its 95% Student-t confidence interval (runs in "
            "brackets). A correlation or difference is called clear only when its interval "
            "excludes 0. CPU size: PonderNet on the `demo` stability stream (n cycling 3 → 4 "
            "→ 6, a new input permutation per experience, 45 experiences of 5 passes over "
            "2,048 samples), seeds 0–4; the within-experience question on 8-bit parity "
            "whose experiences alternate 1–4 and 5–8 nonzero bits (the cells are listed "
            "at the end).",
            90,
        ),
        "",
    ]
    for name, (title, _) in QUESTIONS.items():
        sections += [f"## {title}", ""]
        if name not in found:
            sections += ["Not run yet (see the commands below).", ""]
            continue
        if not found[name]:
            sections += ["Its runs do not log what it needs.", ""]
            continue
        table = table_lines(found[name], columns(name, found[name]))
        sections += [*table, "", *readings(name, found[name]), ""]
        if name in images:
            sections += [f"![{name}]({images[name]})", ""]
    sections += [
        "## How it was run",
        "",
        "```bash",
        *(
            f"# {what}\n.venv/bin/python -m experiments.sweep {sweep} --runs {RUNS / cell} "
            "--workers 2"
            for cell, (sweep, what) in CELLS.items()
        ),
        ".venv/bin/python -m experiments.benchmarks.results --out docs/results.md",
        "```",
        "",
        *(textwrap.fill(f"{cell}: {text}", 90) + "\n" for cell, text in where.items()),
        "The whole model × method × stream × transition product, for a Ray cluster:",
        "",
        "```bash",
        f".venv/bin/python -m experiments.sweep {CLUSTER} --runs runs/results/product",
        "```",
        "",
    ]
    return "\n".join(sections)


# ---------------------------------------------------------------- figures


def plasticity_figure(frame):
    """Halting step, effective rank and dormant fraction on each new experience over the
    stream, per method (mean and 95% CI over runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import COLORS
    from experiments.benchmarks._pages import curve

    table = per_experience_table(frame)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), constrained_layout=True)
    for ax, column, label in zip(
        axes,
        ("halting", "rank", "dormant"),
        ("mean halting step", "effective rank (dimensions)", "dormant units (fraction)"),
        strict=True,
    ):
        rows = table.rename(columns={column: "value"})
        for method, part in rows.groupby("config.method", sort=False):
            curve(ax, part, "experience", sorted(part["run"].unique()), COLORS.get(method), method)
        ax.set_xlabel("experience (index)")
        ax.set_ylabel(label)
    axes[0].legend(frameon=False, title="method (runs)")
    fig.suptitle("Right after training on each new experience: mean and 95% CI over runs")
    return fig


def compute_figure(findings: list[dict]):
    """Accuracy on new experiences against steps: fixed depth of K steps and PonderNet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    for finding in findings:
        steps, accuracy = finding["steps"], finding["accuracy"]
        ponder = finding["model"].startswith("PonderNet")
        ax.errorbar(
            steps["mean"],
            accuracy["mean"],
            xerr=steps["half_width"] or 0.0,
            yerr=accuracy["half_width"] or 0.0,
            fmt="o" if ponder else "s",
            color="#1b9e77" if ponder else "#7570b3",
            capsize=3,
            label=finding["model"],
        )
    ax.set_xlabel("steps per input (mean halting step for PonderNet)")
    ax.set_ylabel("new-experience accuracy")
    ax.legend(frameon=False, fontsize="small")
    return fig


def transition_figure(frame):
    """New-experience accuracy over the stream per method × transition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.benchmarks._pages import curve

    table = per_experience_table(frame, ("config.transition",))
    table = table.rename(columns={"accuracy": "value"})
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for i, ((method, kind), part) in enumerate(
        table.groupby(["config.method", "config.transition"])
    ):
        curve(ax, part, "experience", sorted(part["run"].unique()), f"C{i}", f"{method}, {kind}")
    ax.set_xlabel("experience (index)")
    ax.set_ylabel("accuracy right after training on it")
    ax.legend(frameon=False, title="(runs)")
    return fig


def within_figure(frame):
    """ρ(halting, nonzero bits) within each experience, and the new-experience accuracy,
    over the stream per method (mean and 95% CI over runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.plots import COLORS
    from analysis.runs import per_experience
    from experiments.benchmarks._pages import curve

    rho = per_experience(frame, "difficulty_spearman", on="new")
    accuracy = per_experience(frame, "accuracy", on="new")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, table, label in (
        (axes[0], rho, "ρ(halting step, nonzero bits) within the experience"),
        (axes[1], accuracy, "accuracy right after training on it"),
    ):
        for method, part in table.groupby("config.method", sort=False):
            curve(ax, part, "experience", sorted(part["run"].unique()), COLORS.get(method), method)
        ax.set_xlabel("experience (even: 1–4 bits, odd: 5–8 bits)")
        ax.set_ylabel(label)
    axes[0].axhline(0.0, color="0.6", lw=0.8)
    axes[0].legend(frameon=False, title="method (runs)")
    return fig


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder of the cells' runs")
    parser.add_argument("--run", nargs="+", choices=list(CELLS), help="run these cells first")
    parser.add_argument("--workers", default="2", help="runs at a time for --run")
    parser.add_argument("--out", type=Path, help="page to write; figures go beside it")
    args = parser.parse_args(argv)
    run_sweeps({cell: CELLS[cell][0] for cell in args.run or []}, args.runs, args.workers)

    found = compute_findings(args.runs)
    for name, findings in found.items():
        print(f"\n{QUESTIONS[name][0]}")
        print("\n".join(table_lines(findings, columns(name, findings))))
        print("\n".join(readings(name, findings)))
    if args.out:
        from experiments.benchmarks.reproduction import where

        args.out.parent.mkdir(parents=True, exist_ok=True)
        images = {}
        drawn = {
            "plasticity": lambda: plasticity_figure(load_folder(args.runs / "stability")),
            "compute": lambda: compute_figure(found["compute"]),
            "transition": lambda: transition_figure(load_folder(args.runs / "transition")),
            "within": lambda: within_figure(load_folder(args.runs / "parity_shift")),
        }
        for name, draw in drawn.items():
            if name in found:
                image = args.out.with_name(f"{args.out.stem}_{name}.png")
                draw().savefig(image, dpi=110)
                images[name] = image.name
        places = {cell: where(args.runs / cell) for cell in CELLS}
        args.out.write_text(page(found, places, images))
        print(f"wrote {args.out} and {len(images)} figures beside it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
