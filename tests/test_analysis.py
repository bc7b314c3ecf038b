"""analysis/: Sacred run folders → frames → figures, on fake run folders written here."""

import ast
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from run_folders import log_metric, write_run_folder
from run_notebook import execute_notebook

from analysis import (
    accuracy_matrix,
    final_forgetting,
    forgetting_vs_pondering,
    halting_over_stream,
    halting_vs_difficulty,
    left_out,
    load_configs,
    load_runs,
    mongo_runs,
    parse_metric_name,
    per_experience,
    plasticity_curve,
    plasticity_diagnostics,
    summarise,
    write_report,
)
from analysis.plots import spearman
from analysis.report import FIGURES, main
from analysis.runs import RUN_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
STREAM_FIGURES = [name for name, spec in FIGURES.items() if spec.experiment == "stream"]
EXPERIENCES = 4
LEVELS = (2, 3, 4)
PLASTICITY = (
    "units_replaced", "dead_fraction", "dormant_fraction", "effective_rank", "approximate_rank",
    "stable_rank", "feature_norm", "weight_magnitude", "gradient_norm",
)  # fmt: skip
# id → (method, seed, status, steps logged); 6 is a run that crashed before logging.
RUNS = {
    1: ("bp", 0, "COMPLETED", 4),
    2: ("bp", 1, "COMPLETED", 4),
    3: ("cbp", 0, "COMPLETED", 4),
    4: ("cbp", 1, "COMPLETED", 4),
    5: ("cbp", 2, "RUNNING", 2),
    6: ("bp", 2, "FAILED", 0),
}


# ---------------------------------------------------------------- the fake experiment


def accuracy(method: str, seed: int, step: int, experience: int) -> float:
    """Accuracy on ``experience`` after training ``step``: 0.9 when learned, a bump of 0.15
    one step later (so the best accuracy is not the first), then a drop per step."""
    drop = 0.1 if method == "bp" else 0.05
    bump = 0.15 if step == experience + 1 else 0.0
    return 0.9 + 0.01 * seed + bump - drop * (step - experience)


def halting(method: str, seed: int, experience: int) -> float:
    return 2.0 + 0.5 * experience + (1.0 if method == "cbp" else 0.0) + 0.1 * seed


def level_halting(seed: int, level: int, experience: int) -> float:
    return level + 0.1 * experience + 0.1 * seed


def fake_metrics(method: str, seed: int, steps: int) -> dict[str, dict[str, list]]:
    metrics: dict[str, dict[str, list]] = {}

    def log(name: str, step: int, value: float) -> None:
        log_metric(metrics, name, step, value)

    for step in range(steps):
        log("train.accuracy", step, 0.95)
        log("train.halting_step_mean", step, halting(method, seed, step))
        log("stream.difficulty", step, float(2 + step % 3))
        for e in range(step + 1):
            log(f"eval.accuracy.exp{e:03d}", step, accuracy(method, seed, step, e))
            log(f"eval.halting_step_mean.exp{e:03d}", step, halting(method, seed, e))
            # A logged forgetting that differs from the one computed from accuracies, so
            # the tests can tell which one final_forgetting used.
            log(f"eval.forgetting.exp{e:03d}", step, 0.01 * (step - e))
            for level in LEVELS:
                log(f"eval.halting_step.d{level}.exp{e:03d}", step, level_halting(seed, level, e))
        accuracies = [accuracy(method, seed, step, e) for e in range(step + 1)]
        log("eval.accuracy", step, float(np.mean(accuracies)))
        log("eval.forgetting", step, 0.01 * step)
        log("eval.bwt", step, -0.01 * step)
        for index, name in enumerate(PLASTICITY):
            log(f"plasticity.{name}", step, index + 0.1 * step + (0.5 if method == "cbp" else 0))
    if steps:
        log("debug.Loss.raw", 0, 1.0)  # outside the naming scheme
    return metrics


def write_run(folder: Path, method: str, seed: int, status: str, steps: int) -> int:
    """A Sacred FileStorageObserver run folder; returns the number of values logged."""
    config = {
        "model": "pondernet",
        "method": method,
        "stream": "parity",
        "seed": seed,
        "optimizer": {"lr": 0.01, "betas": [0.9, 0.999]},
    }
    metrics = fake_metrics(method, seed, steps) if steps else None
    write_run_folder(folder, "stream", config, metrics, status)
    return sum(len(entry["steps"]) for entry in (metrics or {}).values())


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    """``<tmp>/runs`` holding ``stream/<id>`` run folders and ``stream/_sources``."""
    root = tmp_path_factory.mktemp("fake") / "runs"
    (root / "stream" / "_sources").mkdir(parents=True)
    for run_id, spec in RUNS.items():
        write_run(root / "stream" / str(run_id), *spec)
    return root


@pytest.fixture(scope="module")
def frame(runs_root) -> pd.DataFrame:
    return load_runs(runs_root / "stream", statuses=None)


def only(frame: pd.DataFrame, run: str, name: str, step: int) -> float:
    rows = frame[(frame["run"] == run) & (frame["name"] == name) & (frame["step"] == step)]
    assert len(rows) == 1
    return float(rows["value"].iloc[0])


# ---------------------------------------------------------------- loading


def test_metric_names_parse_into_group_metric_difficulty_and_experience():
    assert parse_metric_name("eval.halting_step.d-3.exp012") == ("eval", "halting_step", -3, 12)
    assert parse_metric_name("plasticity.effective_rank")[:2] == ("plasticity", "effective_rank")
    group, metric, difficulty, experience = parse_metric_name("debug.Loss.raw")
    assert (group, metric) == ("debug", "Loss.raw")
    assert math.isnan(difficulty) and math.isnan(experience)


def test_load_runs_parses_names_and_flattens_config(frame):
    assert list(frame.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    row = frame[(frame["name"] == "eval.halting_step.d3.exp002") & (frame["run"] == "stream/1")]
    assert row[["group", "metric"]].iloc[0].tolist() == ["eval", "halting_step"]
    assert row["difficulty"].iloc[0] == 3.0 and row["experience"].iloc[0] == 2
    assert row["step"].tolist() == [2, 3]
    stream_level = frame[frame["name"] == "eval.accuracy"]
    assert stream_level["experience"].isna().all() and stream_level["difficulty"].isna().all()
    odd = frame[frame["name"] == "debug.Loss.raw"].iloc[0]
    assert (odd["group"], odd["metric"]) == ("debug", "Loss.raw")
    assert frame["experience"].dtype == "Int64" and frame["step"].dtype == np.int64
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2025-01-01T00:00:00")
    first = frame[frame["run"] == "stream/3"].iloc[0]
    assert first["config.method"] == "cbp" and first["config.seed"] == 0
    assert first["config.optimizer.lr"] == 0.01
    assert first["config.optimizer.betas"] == (0.9, 0.999)
    assert first[["experiment", "status"]].tolist() == ["stream", "COMPLETED"]


def test_load_runs_keeps_every_value_logged_and_skips_runs_without_metrics(frame, tmp_path):
    counts = {}
    for run_id, spec in RUNS.items():
        logged = write_run(tmp_path / str(run_id), *spec)
        if logged:
            counts[f"stream/{run_id}"] = logged
    assert frame["run"].value_counts().to_dict() == counts
    running = frame[frame["run"] == "stream/5"]
    assert running["status"].unique().tolist() == ["RUNNING"]
    assert running["step"].max() == 1  # a run still going keeps what it logged


def test_statuses_keep_only_runs_with_those_statuses(runs_root):
    completed = load_runs(runs_root / "stream", statuses="COMPLETED")
    assert sorted(completed["run"].unique()) == ["stream/1", "stream/2", "stream/3", "stream/4"]
    running = load_runs(runs_root / "stream", statuses=["RUNNING", "FAILED"])
    assert running["run"].unique().tolist() == ["stream/5"]


def test_unfinished_and_superseded_runs_are_left_out_by_default_and_said(tmp_path, capsys):
    root = tmp_path / "stream"
    write_run(root / "4c9ad62933c7", "bp", 0, "RUNNING", 2)  # a sweep run, killed
    record = json.loads((root / "4c9ad62933c7" / "run.json").read_text())
    record["superseded_by"] = "4c9ad62933c7.r1"  # what its resume writes
    (root / "4c9ad62933c7" / "run.json").write_text(json.dumps(record))
    write_run(root / "4c9ad62933c7.r1", "bp", 0, "COMPLETED", 3)
    write_run(root / "7", "cbp", 0, "FAILED", 2)
    write_run(root / "8", "cbp", 1, "COMPLETED", 3)
    frame = load_runs(root)
    assert sorted(frame["run"].unique()) == ["stream/4c9ad62933c7.r1", "stream/8"]
    assert left_out(root) == {"superseded": ["stream/4c9ad62933c7"], "FAILED": ["stream/7"]}
    assert (
        frame["run"].nunique() + 2
        == load_runs(root, statuses=None, superseded=True)["run"].nunique()
    )
    assert left_out(root, statuses=None, superseded=True) == {}
    configs = load_configs(root).set_index("run")
    assert configs.loc["stream/4c9ad62933c7", "superseded_by"] == "4c9ad62933c7.r1"

    assert main([str(root), "--out", str(tmp_path / "figures")]) == 0
    printed = capsys.readouterr().out
    assert "left out 1 FAILED run: stream/7" in printed
    assert "left out 1 superseded run: stream/4c9ad62933c7" in printed
    assert "2 runs," in printed


def test_a_root_may_be_one_run_or_a_folder_of_experiment_folders(runs_root, frame):
    single = load_runs(runs_root / "stream" / "3", statuses=None)
    assert single["run"].unique().tolist() == ["stream/3"]
    pd.testing.assert_frame_equal(
        single.reset_index(drop=True),
        frame[frame["run"] == "stream/3"].reset_index(drop=True),
        check_dtype=False,
    )
    nested = load_runs(runs_root, statuses=None)
    assert sorted(nested["run"].unique()) == [f"runs/stream/{i}" for i in range(1, 6)]
    assert len(nested) == len(frame)


def test_no_runs_give_an_empty_frame_with_the_columns(tmp_path):
    empty = load_runs(tmp_path)
    assert empty.empty and list(empty.columns) == RUN_COLUMNS
    with pytest.raises(FileNotFoundError, match="no runs folder"):
        load_runs(tmp_path / "missing")


def test_load_configs_lists_every_run_with_its_duration(runs_root):
    configs = load_configs(runs_root / "stream").set_index("run")
    assert list(configs.index) == [f"stream/{i}" for i in range(1, 7)]
    assert configs.loc["stream/6", ["status", "has_metrics"]].tolist() == ["FAILED", False]
    assert configs.loc["stream/1", "duration_s"] == 600.0
    assert math.isnan(configs.loc["stream/5", "duration_s"])  # RUNNING: no stop time
    assert configs.loc["stream/4", "config.optimizer.lr"] == 0.01


def test_mongo_runs_without_pymongo_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymongo", None)
    with pytest.raises(ImportError, match="pip install pymongo"):
        mongo_runs("mongodb://localhost", "ponderlife")


def test_mongo_runs_reads_sacred_documents_into_the_same_frame(monkeypatch):
    class Collection(list):
        def find(self, query):
            return [d for d in self if all(d.get(k) == v for k, v in query.items())]

    metrics = fake_metrics("cbp", 1, 2)
    database = {
        "runs": Collection(
            [
                {"_id": 7, "status": "COMPLETED", "experiment": {"name": "stream"},
                 "config": {"method": "cbp", "optimizer": {"lr": 0.1}}},
                {"_id": 8, "status": "FAILED", "config": {"method": "bp"}},
                {"_id": 9, "status": "RUNNING", "config": {"method": "cbp"}},
            ]
        ),
        "metrics": Collection(
            [{"run_id": run, "name": name, **entry} for name, entry in metrics.items()
             for run in (7, 9)]
        ),
    }  # fmt: skip
    fake = types.SimpleNamespace(MongoClient=lambda url: {"sacred": database})
    monkeypatch.setitem(sys.modules, "pymongo", fake)
    loaded = mongo_runs("mongodb://localhost", "sacred", query={})
    assert loaded["run"].unique().tolist() == ["sacred/7"]  # 8 logged nothing, 9 RUNNING
    every = mongo_runs("mongodb://localhost", "sacred", query={}, statuses=None)
    assert every["run"].unique().tolist() == ["sacred/7", "sacred/9"]
    assert len(loaded) == sum(len(entry["steps"]) for entry in metrics.values())
    assert loaded["config.optimizer.lr"].unique().tolist() == [0.1]
    assert only(loaded, "sacred/7", "eval.accuracy.exp000", 1) == accuracy("cbp", 1, 1, 0)


# ---------------------------------------------------------------- tables


def test_accuracy_matrix_rows_are_trained_and_columns_evaluated_experiences(frame):
    matrix = accuracy_matrix(frame, "stream/2")
    assert matrix.shape == (EXPERIENCES, EXPERIENCES)
    assert list(matrix.index) == list(range(EXPERIENCES))
    assert list(matrix.columns) == list(range(EXPERIENCES))
    assert matrix.loc[3, 1] == pytest.approx(accuracy("bp", 1, 3, 1))
    assert np.isnan(matrix.loc[1, 2])  # experience 2 not yet trained nor evaluated
    assert matrix.notna().to_numpy().sum() == EXPERIENCES * (EXPERIENCES + 1) // 2
    with pytest.raises(ValueError, match="no run 'stream/9'"):
        accuracy_matrix(frame, "stream/9")


def test_per_experience_new_is_right_after_training_and_final_at_the_last_step(frame):
    new = per_experience(frame, "accuracy", on="new")
    assert (new["step"] == new["experience"]).all()
    assert new.groupby("run").size().to_dict() == {
        "stream/1": 4, "stream/2": 4, "stream/3": 4, "stream/4": 4, "stream/5": 2,
    }  # fmt: skip
    assert set(new["value"].round(9)) == {round(0.9 + 0.01 * s, 9) for s in (0, 1, 2)}
    assert "config.method" in new
    final = per_experience(frame, "accuracy", on="final").set_index(["run", "experience"])
    assert final.loc[("stream/3", 0), "step"] == 3
    assert final.loc[("stream/3", 0), "value"] == pytest.approx(accuracy("cbp", 0, 3, 0))
    assert final.loc[("stream/5", 1), "step"] == 1  # a RUNNING run's last step so far
    by_level = per_experience(frame, "halting_step", on="final", difficulty=4)
    assert by_level["value"].iloc[0] == pytest.approx(level_halting(0, 4, 0))
    with pytest.raises(ValueError, match=r"no 'eval.loss.exp<NNN>' metric"):
        per_experience(frame, "loss")


def test_forgetting_is_best_accuracy_after_learning_minus_final(frame):
    computed = final_forgetting(frame, source="accuracy").set_index(["run", "experience"])
    # bp, seed 0, experience 0: accuracies 0.9, 1.05 - 0.1, 0.7, 0.6 → best 0.95 - 0.6
    assert computed.loc[("stream/1", 0), "value"] == pytest.approx(0.35)
    # cbp, seed 1, experience 2: learned at step 2 (0.91), final 0.91 + 0.15 - 0.05
    assert computed.loc[("stream/4", 2), "value"] == pytest.approx(0.91 - 1.01)
    assert 3 not in computed.loc["stream/1"].index  # the last experience has no forgetting
    assert computed.loc["stream/5"].index.tolist() == [0]
    logged = final_forgetting(frame).set_index(["run", "experience"])
    assert logged.loc[("stream/1", 0), "value"] == pytest.approx(0.03)
    without_logged = frame[frame["metric"] != "forgetting"]
    pd.testing.assert_frame_equal(
        final_forgetting(without_logged), final_forgetting(frame, source="accuracy")
    )


def test_summarise_gives_mean_std_and_count_over_seeds(frame):
    table = summarise(frame, ["eval.accuracy", "eval.bwt"], by=("config.method",))
    bp_finals = [np.mean([accuracy("bp", s, 3, e) for e in range(4)]) for s in (0, 1)]
    assert table.loc["bp", ("eval.accuracy", "mean")] == pytest.approx(np.mean(bp_finals))
    assert table.loc["bp", ("eval.accuracy", "std")] == pytest.approx(np.std(bp_finals, ddof=1))
    assert table.loc["cbp", ("eval.accuracy", "runs")] == 3  # the RUNNING run at its step 1
    assert table.loc["cbp", ("eval.bwt", "mean")] == pytest.approx((-0.03 - 0.03 - 0.01) / 3)
    at_zero = summarise(frame, "eval.bwt", at=0)
    assert (at_zero[("eval.bwt", "mean")] == 0).all()
    with pytest.raises(ValueError, match=r"no 'eval\.nothing' metric"):
        summarise(frame, "eval.nothing")


def test_spearman_is_the_correlation_of_ranks():
    assert spearman(pd.Series([1.0, 2, 3, 4]), pd.Series([1.0, 3, 2, 4])) == pytest.approx(0.8)
    assert spearman(pd.Series([1.0, 2, 3]), pd.Series([1.0, 10, 100])) == pytest.approx(1.0)


# ---------------------------------------------------------------- figures


def test_plasticity_curve_draws_one_mean_line_and_band_per_method(frame):
    ax = plasticity_curve(frame, by_difficulty=False).axes[0]
    assert [line.get_label() for line in ax.lines] == ["method=bp (2 runs)", "method=cbp (3 runs)"]
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 2
    bp_mean = ax.lines[0].get_ydata()
    assert bp_mean == pytest.approx([0.905] * EXPERIENCES)
    assert "accuracy" in ax.get_ylabel() and "experience" in ax.get_xlabel()
    assert len(plasticity_curve(frame, spread="none", by_difficulty=False).axes[0].collections) == 0
    pooled = plasticity_curve(frame, hue=None, pool=("method",), by_difficulty=False)
    assert [line.get_label() for line in pooled.axes[0].lines] == ["all runs (5 runs)"]


def test_cycling_difficulty_gets_one_panel_per_level(frame):
    # the fake stream visits levels 2, 3, 4, 2: one panel each, experiences of that level
    figure = plasticity_curve(frame)
    assert [ax.get_title() for ax in figure.axes] == [
        f"New-experience accuracy, difficulty {level}" for level in (2, 3, 4)
    ]
    assert list(figure.axes[0].lines[0].get_xdata()) == [0.0, 3.0]
    assert len({ax.get_ylim() for ax in figure.axes}) == 1  # shared y range
    assert len(halting_over_stream(frame).axes) == 3


def test_halting_over_stream_overlays_the_difficulty_on_a_twin_axis(frame):
    figure = halting_over_stream(frame, by_difficulty=False)
    main_ax, twin = figure.axes
    assert len(main_ax.lines) == 2
    (difficulty,) = twin.lines
    assert difficulty.get_linestyle() == "--"
    assert list(difficulty.get_ydata()) == [2.0, 3.0, 4.0, 2.0]
    mixed = frame.copy()
    mixed.loc[mixed["run"] == "stream/1", "config.stream"] = "routh"
    with pytest.raises(ValueError, match=r"several streams \['parity', 'routh'\].*where\("):
        halting_over_stream(mixed, by_difficulty=False)


def test_forgetting_vs_pondering_scatters_runs_and_fits_a_line_per_method(frame):
    ax = forgetting_vs_pondering(frame, source="accuracy").axes[0]
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 2 and len(ax.lines) == 2
    # 2 completed bp runs × experiences 0..2 (the last experience has no forgetting)
    assert len(scatters[0].get_offsets()) == 6
    labels = [text.get_text() for text in ax.figure.legends[0].get_texts()]
    assert all("ρ=" in label and "r=" in label for label in labels)
    # bp: forgetting 0.35, 0.25, -0.05 per seed against halting 2, 2.5, 3 (+0.1 seed)
    assert labels[0].startswith("method=bp (2 runs): ρ=-0.")


def test_plasticity_diagnostics_has_one_panel_per_metric(frame):
    figure = plasticity_diagnostics(frame)
    assert len(figure.axes) == 4
    assert all(len(ax.lines) == 2 for ax in figure.axes)
    three = plasticity_diagnostics(frame, metrics=("dead_fraction", "stable_rank", "feature_norm"))
    assert [ax.get_visible() for ax in three.axes] == [True, True, True, False]
    with pytest.raises(ValueError, match=r"no 'plasticity.sparsity' metric"):
        plasticity_diagnostics(frame, metrics=("dead_fraction", "sparsity"))


def test_halting_vs_difficulty_averages_experiences_at_the_last_step(frame):
    ax = halting_vs_difficulty(frame).axes[0]
    bp = ax.lines[0]
    assert list(bp.get_xdata()) == [2.0, 3.0, 4.0]
    # bp seeds 0 and 1 at step 3: level + mean(0.1 e for e in 0..3) + 0.1 seed
    assert bp.get_ydata() == pytest.approx([level + 0.15 + 0.05 for level in LEVELS])
    over_all = halting_vs_difficulty(frame, steps="all").axes[0].lines[0].get_ydata()
    assert over_all[0] < bp.get_ydata()[0]  # earlier steps saw only early experiences


@pytest.mark.parametrize("name", STREAM_FIGURES)
def test_every_figure_names_the_metric_it_misses(frame, name):
    draw = FIGURES[name].draw
    assert isinstance(draw(frame), Figure)
    train_only = frame[frame["group"] == "train"]
    with pytest.raises(ValueError, match=r"no '[a-zA-Z_.<>]+' metric in the runs; \w"):
        draw(train_only)


# ---------------------------------------------------------------- report and notebooks


def test_write_report_writes_the_figures_it_can_and_says_why_it_skips(frame, tmp_path):
    written = write_report(frame, tmp_path / "all")
    assert [p.name for p in written] == [f"{name}.png" for name in STREAM_FIGURES]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    skipped: list[str] = []
    no_levels = frame[frame["difficulty"].isna()]
    written = write_report(no_levels, tmp_path / "some", log=skipped.append)
    assert "halting_vs_difficulty.png" not in [p.name for p in written]
    assert len(written) == len(STREAM_FIGURES) - 1
    assert skipped == [
        "stream: 5 runs in 2 groups",
        "  method=bp (2 runs)",
        "  method=cbp (3 runs)",
        "skipped halting_vs_difficulty: no 'eval.halting_step.d<level>.exp<NNN>' metric in "
        "the runs; it is logged only for streams whose samples carry a difficulty level",
    ]


def test_report_command_writes_pngs_and_fails_without_runs(runs_root, tmp_path, capsys):
    assert main([str(runs_root / "stream"), "--out", str(tmp_path / "figures")]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "figures" / "plasticity_curve.png") in printed
    assert main([str(tmp_path / "figures"), "--out", str(tmp_path / "x")]) == 1
    done = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(runs_root / "stream" / "1"),
         "--out", str(tmp_path / "cli"), "--status", "COMPLETED"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stderr == ""
    assert len(list((tmp_path / "cli").glob("*.png"))) == len(STREAM_FIGURES)


@pytest.mark.parametrize(
    ("name", "figures"),
    [
        (
            "forgetting_vs_pondering",
            ["forgetting_vs_pondering", "halting_over_stream", "halting_vs_difficulty"],
        ),
        (
            "plasticity_over_tasks",
            ["plasticity_curve", "plasticity_diagnostics", "plasticity_diagnostics_more"],
        ),
    ],
)
def test_notebook_shows_and_writes_its_figures(name, figures, runs_root, tmp_path, monkeypatch):
    outputs = execute_notebook(name, runs_root / "stream", tmp_path, monkeypatch)
    assert not [o for o in outputs if o["output_type"] == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == len(figures)
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(figures)
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) == 2  # the runs and the summary
    printed = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert f"figures written to {tmp_path}" in printed
    assert "left out: {'RUNNING': ['stream/5'], 'FAILED': ['stream/6']}" in printed


def test_analysis_imports_only_pandas_numpy_matplotlib_and_the_standard_library():
    # pymongo for mongo_runs, scipy for confidence_interval's t quantile: both imported
    # inside the function that needs them.
    allowed = {"analysis", "pandas", "numpy", "matplotlib", "pymongo", "scipy"}
    allowed |= set(sys.stdlib_module_names)
    for path in (ROOT / "analysis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.relative_to(ROOT)} imports {roots - allowed}"
