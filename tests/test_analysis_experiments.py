"""The figures of the bit_flipping and parity experiments, the report over a runs folder of
all three experiments, and the notebooks of both, on fake run folders written here with
the experiments' metric names."""

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from run_folders import log_metric, write_run_folder
from run_notebook import execute_notebook

from analysis import (
    bit_flipping_error,
    load_runs,
    parity_by_difficulty,
    parity_sweep,
    parity_training,
    plasticity_diagnostics,
    where,
)
from analysis.plots import COLORS
from analysis.report import FIGURES, write_report

BIN_SIZE = 100
BINS = 30  # more points than a line gets markers for
DIAGNOSTICS = (
    "dead_fraction", "dormant_fraction", "effective_rank", "approximate_rank", "stable_rank",
    "feature_norm", "weight_magnitude", "gradient_norm", "units_replaced",
)  # fmt: skip
PARITY_SIZE = 8
EVAL_EVERY = 50
EVALUATIONS = 3
UNTRAINED_ACCURACY = {"pondernet": 0.9, "act": 0.7, "fixed": 0.5}


# ---------------------------------------------------------------- fake runs


def squared_error(method: str, activation: str, seed: int, bin_index: int) -> float:
    """bp's error climbs along the stream, cbp's stays, the linear learner's is flat."""
    if activation == "linear":
        return 2.0
    climb = 0.05 * bin_index if method == "bp" else 0.0
    return 1.0 + climb + 0.1 * seed


def bit_flipping_run(root: Path, run_id: str, method: str, seed: int, activation: str = "relu"):
    metrics: dict = {}
    for index in range(BINS):
        examples = (index + 1) * BIN_SIZE
        log_metric(
            metrics, "train.squared_error", examples, squared_error(method, activation, seed, index)
        )
        if activation != "linear":  # no hidden layer, nothing to diagnose
            for number, name in enumerate(DIAGNOSTICS):
                log_metric(metrics, f"plasticity.{name}", examples, number + 0.01 * index)
    config = {
        "method": method,
        "activation": activation,
        "seed": seed,
        "bin_size": BIN_SIZE,
        "examples": BIN_SIZE * BINS,
        "num_threads": 1,
        "resume_from": None,
    }
    write_run_folder(root / run_id, "bit_flipping", config, metrics)


def halting(model: str, seed: int, k: int) -> float:
    return 5.0 if model == "fixed" else k / 2 + 0.2 * seed + (1.0 if model == "act" else 0.0)


def parity_accuracy(model: str, seed: int, k: int, split: str, update: int) -> float:
    """1 on the trained range at the end (0.6 before); the model's own value on k > P/2
    when that range was not trained."""
    untrained = split == "extrapolation" and k > PARITY_SIZE // 2
    final = update == EVAL_EVERY * EVALUATIONS
    return UNTRAINED_ACCURACY[model] - 0.01 * seed if untrained else (1.0 if final else 0.6)


def parity_run(root: Path, run_id: str, model: str, seed: int, split: str = "extrapolation"):
    metrics: dict = {}
    half = PARITY_SIZE // 2
    for update in range(EVAL_EVERY, EVAL_EVERY * EVALUATIONS + 1, EVAL_EVERY):
        log_metric(metrics, "train.loss", update, 1.0 / update)
        log_metric(metrics, "train.accuracy", update, 0.8)
        ranges = {"interpolation": range(1, PARITY_SIZE + 1)}
        if split == "extrapolation":
            ranges = {"interpolation": range(1, half + 1)}
            ranges["extrapolation"] = range(half + 1, PARITY_SIZE + 1)
        for name, ks in ranges.items():
            values = [parity_accuracy(model, seed, k, split, update) for k in ks]
            log_metric(metrics, f"{name}.accuracy", update, sum(values) / len(values))
            steps = [halting(model, seed, k) for k in ks]
            log_metric(metrics, f"{name}.halting_step", update, sum(steps) / len(steps))
            log_metric(metrics, f"{name}.expected_steps", update, sum(steps) / len(steps))
        for k in range(1, PARITY_SIZE + 1):
            value = parity_accuracy(model, seed, k, split, update)
            log_metric(metrics, f"eval.accuracy.d{k}", update, value)
            log_metric(metrics, f"eval.halting_step.d{k}", update, halting(model, seed, k))
            log_metric(metrics, f"eval.expected_steps.d{k}", update, halting(model, seed, k))
    config = {
        "model": model,
        "size": PARITY_SIZE,
        "split": split,
        "seed": seed,
        "eval_every": EVAL_EVERY,
        "num_threads": 1,
        "resume_from": None,
    }
    write_run_folder(root / run_id, "parity", config, metrics)


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """``runs/bit_flipping``: bp and cbp × 2 seeds and one linear learner; ``runs/parity``:
    PonderNet × 2 seeds, ACT and fixed depth on the extrapolation split, and one PonderNet
    run on the interpolation split."""
    root = tmp_path_factory.mktemp("experiments") / "runs"
    for run_id, (method, seed) in enumerate([("bp", 0), ("bp", 1), ("cbp", 0), ("cbp", 1)]):
        bit_flipping_run(root / "bit_flipping", str(run_id + 1), method, seed)
    bit_flipping_run(root / "bit_flipping", "5", "bp", 0, activation="linear")
    for run_id, (model, seed) in enumerate([("pondernet", 0), ("pondernet", 1), ("act", 0)]):
        parity_run(root / "parity", str(run_id + 1), model, seed)
    parity_run(root / "parity", "4", "fixed", 0)
    parity_run(root / "parity", "5", "pondernet", 0, split="interpolation")
    return root


@pytest.fixture(scope="module")
def flips(runs_root) -> pd.DataFrame:
    return load_runs(runs_root / "bit_flipping")


@pytest.fixture(scope="module")
def parity(runs_root) -> pd.DataFrame:
    return load_runs(runs_root / "parity")


def legend_labels(figure: Figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


# ---------------------------------------------------------------- bit_flipping


def test_bit_flipping_error_draws_bp_cbp_and_the_linear_learner_over_examples(flips):
    figure = bit_flipping_error(flips)
    (ax,) = figure.axes
    lines = {line.get_label(): line for line in ax.lines}
    assert list(lines) == [
        "method=bp, activation=linear (1 run)",
        "method=bp, activation=relu (2 runs)",
        "method=cbp, activation=relu (2 runs)",
    ]
    bp = lines["method=bp, activation=relu (2 runs)"]
    assert list(bp.get_xdata()) == [BIN_SIZE * (i + 1) for i in range(BINS)]
    # mean over seeds 0 and 1: 1 + 0.05 i + 0.05
    assert bp.get_ydata() == pytest.approx([1.05 + 0.05 * i for i in range(BINS)])
    assert bp.get_marker() in ("None", None, "")  # 30 points: a line, not dots
    assert lines["method=bp, activation=linear (1 run)"].get_color() == COLORS["linear"]
    assert bp.get_color() == COLORS["bp"]
    assert lines["method=cbp, activation=relu (2 runs)"].get_color() == COLORS["cbp"]
    assert ax.get_xlabel() == "examples seen"
    assert ax.get_ylabel() == "squared error (bin mean)"
    assert ax.get_title() == "Online squared error, bins of 100 examples"


def test_plasticity_diagnostics_count_examples_in_bit_flipping(flips):
    figure = plasticity_diagnostics(flips, metrics=("dormant_fraction", "units_replaced"))
    assert [ax.get_xlabel() for ax in figure.axes] == ["examples seen"] * 2
    # the linear learner has no hidden units: not drawn, and the others keep their labels
    assert [line.get_label() for line in figure.axes[0].lines] == [
        "method=bp, activation=relu (2 runs)",
        "method=cbp, activation=relu (2 runs)",
    ]
    assert len(legend_labels(figure)) == 2
    assert figure.axes[1].lines[0].get_ydata()[-1] == pytest.approx(8 + 0.01 * (BINS - 1))


def test_figures_refuse_runs_of_several_experiments(flips, parity):
    both = pd.concat([flips, parity], ignore_index=True)
    with pytest.raises(ValueError, match=r"experiments \['bit_flipping', 'parity'\].*where\("):
        plasticity_diagnostics(both)
    with pytest.raises(ValueError, match="experiment=bit_flipping"):
        bit_flipping_error(parity)


def test_bit_flipping_error_names_the_metric_it_misses(flips):
    with pytest.raises(ValueError, match=r"no 'train.squared_error' metric in the runs"):
        bit_flipping_error(flips[flips["group"] == "plasticity"])


# ---------------------------------------------------------------- parity


def test_parity_by_difficulty_draws_accuracy_and_halting_per_k_and_shades_the_untrained(parity):
    figure = parity_by_difficulty(parity)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == [
        "accuracy, P=8, extrapolation",
        "halting step, P=8, extrapolation",
        "accuracy, P=8, interpolation",
        "halting step, P=8, interpolation",
    ]
    accuracy, halting_ax, interpolation, _ = figure.axes
    lines = {line.get_label(): line for line in accuracy.lines}
    assert list(lines) == [
        "model=pondernet, split=extrapolation (2 runs)",
        "model=act, split=extrapolation (1 run)",
        "model=fixed, split=extrapolation (1 run)",
    ]
    pondernet = lines["model=pondernet, split=extrapolation (2 runs)"]
    assert list(pondernet.get_xdata()) == list(range(1, PARITY_SIZE + 1))
    # final evaluation: 1 on k ≤ 4, 0.9 − 0.01 seed on k > 4
    assert pondernet.get_ydata() == pytest.approx([1.0] * 4 + [0.895] * 4)
    assert pondernet.get_marker() == "o"  # 8 points
    steps = {line.get_label(): line.get_ydata() for line in halting_ax.lines}
    assert steps["model=fixed, split=extrapolation (1 run)"] == pytest.approx([5.0] * 8)
    (span,) = accuracy.patches
    assert span.get_x() == pytest.approx(4.5) and span.get_width() == pytest.approx(4.0)
    assert len(halting_ax.patches) == 1 and not interpolation.patches  # all k were trained
    legend = figure.legends[0]
    assert "not trained (k > P/2)" in legend_labels(figure)
    assert any(isinstance(h, Patch) for h in legend.legend_handles)
    assert "nonzero entries k" in accuracy.get_xlabel()


def test_parity_training_has_an_extrapolation_panel_only_when_logged(parity):
    figure = parity_training(parity)
    assert [ax.get_title().split(" ")[0] for ax in figure.axes] == [
        "interpolation",
        "extrapolation",
    ]
    extrapolation = {line.get_label(): line for line in figure.axes[1].lines}
    assert "model=pondernet, split=interpolation (1 run)" not in extrapolation
    act = extrapolation["model=act, split=extrapolation (1 run)"]
    assert list(act.get_xdata()) == [50, 100, 150] and act.get_ydata() == pytest.approx([0.7] * 3)
    assert figure.axes[0].get_xlabel() == "updates"
    only_interpolation = where(parity, "split=interpolation")
    assert len(parity_training(only_interpolation).axes) == 1


def test_parity_figures_name_the_metric_they_miss(parity):
    train_only = parity[parity["group"] == "train"]
    with pytest.raises(ValueError, match=r"no 'eval.accuracy.d<k>' metric in the runs"):
        parity_by_difficulty(train_only)
    with pytest.raises(ValueError, match=r"no 'interpolation.accuracy' metric in the runs"):
        parity_training(train_only)


def test_parity_sweep_sorts_configurations_by_extrapolation_and_labels_what_they_change(parity):
    figure = parity_sweep(parity)
    accuracy, halting_ax = figure.axes
    # The interpolation-split run has no extrapolation accuracy: not a sweep point.
    labels = [tick.get_text() for tick in accuracy.get_yticklabels()]
    assert labels == ["model=fixed (1 run)", "model=act (1 run)", "base (2 runs)"]
    assert "base: model=pondernet, split=extrapolation" in figure.get_suptitle()
    # One dot per run and split: PonderNet's two seeds at 0.90 and 0.89 on k > 4.
    filled = [c for c in accuracy.collections if c.get_facecolors().size][-1]
    assert sorted(filled.get_offsets()[:, 0]) == pytest.approx([0.89, 0.90])
    # Mean ticks, bottom row first: fixed depth, 1.0 in range and 0.5 beyond it.
    assert [line.get_xdata()[0] for line in accuracy.lines[:2]] == pytest.approx([1.0, 0.5])
    goal = [line for line in accuracy.lines if line.get_linestyle() == "--"]
    assert len(goal) == 1 and goal[0].get_xdata()[0] == pytest.approx(0.9)
    assert halting_ax.get_xlabel() == "final halting step (mean, steps)"
    with pytest.raises(ValueError, match=r"no 'extrapolation.accuracy' metric"):
        parity_sweep(where(parity, "split=interpolation"))


# ---------------------------------------------------------------- report and notebooks


def test_report_draws_each_experiments_figures_from_its_own_runs(runs_root, tmp_path):
    frame = load_runs(runs_root)
    drawn: dict[str, Figure] = {}
    logged: list[str] = []

    def keep(figure, out_dir, name):
        drawn[name] = figure
        return figure

    import analysis.report

    original = analysis.report.save_figure
    analysis.report.save_figure = keep
    try:
        written = write_report(frame, tmp_path, log=logged.append)
    finally:
        analysis.report.save_figure = original
    expected = ["bit_flipping_error", "bit_flipping_diagnostics"]
    expected += ["parity_by_difficulty", "parity_training", "parity_sweep"]
    assert [p.name for p in written] == [f"{name}.png" for name in expected]
    assert "bit_flipping: 5 runs in 3 groups" in logged
    assert "parity: 5 runs in 4 groups" in logged
    for name, figure in drawn.items():
        experiment = FIGURES[name].experiment
        for label in legend_labels(figure):
            if label.startswith(("not trained", "trained k", "untrained k", "goal")):
                continue  # what marks, shading and lines mean, not groups
            conditions = label.rsplit(" (", 1)[0].split(", ")
            assert set(where(frame, *conditions)["experiment"]) == {experiment}, (name, label)


@pytest.mark.parametrize(
    ("name", "figures"),
    [
        ("bit_flipping", ["bit_flipping_error", "bit_flipping_diagnostics"]),
        ("parity", ["parity_by_difficulty", "parity_training"]),
    ],
)
def test_notebook_shows_and_writes_its_figures(name, figures, runs_root, tmp_path, monkeypatch):
    outputs = execute_notebook(name, runs_root / name, tmp_path, monkeypatch)
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) == len(figures)
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(figures)
    printed = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert f"figures written to {tmp_path}" in printed


def test_real_parity_and_bit_flipping_runs_give_every_figure_of_their_experiment(tmp_path):
    """The figures above are drawn from hand-written run folders; here from what the two
    experiments really log (tiny configs), so a renamed metric cannot skip a figure."""
    from sacred.observers import FileStorageObserver
    from tiny_configs import BIT_FLIPPING, PARITY

    from experiments import bit_flipping, parity

    runs = {
        parity.ex: [{**PARITY, "model": model, "seed": 0} for model in ("pondernet", "act")],
        bit_flipping.ex: [{**BIT_FLIPPING, "method": m, "seed": 0} for m in ("bp", "cbp")],
    }
    for ex, configs in runs.items():
        observer = FileStorageObserver(str(tmp_path / "runs" / ex.path))
        ex.observers.append(observer)
        try:
            for config in configs:
                assert ex.run(config_updates=config).status == "COMPLETED"
        finally:
            ex.observers.remove(observer)
    skipped: list[str] = []
    written = write_report(load_runs(tmp_path / "runs"), tmp_path / "figures", log=skipped.append)
    expected = {name for name, figure in FIGURES.items() if figure.experiment != "stream"}
    assert {path.stem for path in written} == expected
    assert not [line for line in skipped if line.startswith("skipped")]
