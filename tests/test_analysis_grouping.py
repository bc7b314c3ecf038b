"""analysis/ cannot average runs of different configurations: grouping by every config key
that varies (seed aside), `where`, the refusal of an explicit hue that would pool, and the
report over a runs folder that mixes streams, a killed run and its resumed copy."""

import re
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from run_folders import log_metric, write_run_folder

from analysis import (
    NOT_A_DIFFERENCE,
    group_label,
    load_runs,
    plasticity_curve,
    plasticity_diagnostics,
    run_groups,
    summarise,
    varying_keys,
    where,
)
from analysis.report import FIGURES, main
from analysis.runs import flatten_config, parse_value

EXPERIENCES = 4
LEVELS = (3, 4)
DRAWN = re.compile(r"^(?P<group>.+) \((?P<runs>\d+) runs?\)(?::.*)?$")


def stream_metrics(method: str, stream: str, seed: int, steps: int = EXPERIENCES) -> dict:
    """The metrics every stream figure needs; every value depends on the method and the
    stream, so a curve averaging two streams differs from either."""
    offset = (0.1 if method == "cbp" else 0.0) + (0.3 if stream == "parity" else 0.0)
    metrics: dict = {}
    for step in range(steps):
        log_metric(metrics, "stream.difficulty", step, float(LEVELS[step % 2]))
        for e in range(step + 1):
            log_metric(metrics, f"eval.accuracy.exp{e:03d}", step, 0.5 + offset - 0.05 * step)
            log_metric(metrics, f"eval.halting_step_mean.exp{e:03d}", step, 2 + offset + e)
            for level in LEVELS:
                log_metric(metrics, f"eval.halting_step.d{level}.exp{e:03d}", step, level + offset)
        log_metric(metrics, "eval.accuracy", step, 0.5 + offset + 0.01 * seed)
        for name in ("dormant_fraction", "effective_rank", "weight_magnitude", "units_replaced"):
            log_metric(metrics, f"plasticity.{name}", step, offset + step)
    return metrics


def stream_run(
    root: Path,
    run_id: str,
    method: str,
    stream: str,
    seed: int,
    status: str = "COMPLETED",
    steps: int = EXPERIENCES,
    superseded_by: str | None = None,
    **config,
) -> Path:
    config = {
        "method": method,
        "stream": stream,
        "model": "pondernet",
        "seed": seed,
        "stream_seed": None,
        "num_threads": 1,
        "device": "cpu",
        "resume_from": None,
        "learning_rate": 0.001,
        **config,
    }
    metrics = stream_metrics(method, stream, seed, steps)
    return write_run_folder(
        root / run_id, "stream", config, metrics, status, superseded_by=superseded_by
    )


@pytest.fixture
def mixed_root(tmp_path) -> Path:
    """Two streams × two methods, a killed run (RUNNING) that a resumed copy superseded, and
    a killed run that nothing resumed."""
    root = tmp_path / "runs" / "stream"
    stream_run(root, "1", "bp", "parity", 0)
    stream_run(root, "2", "bp", "parity", 1)
    stream_run(root, "3", "cbp", "parity", 0, num_threads=4)  # runtime only: same config
    stream_run(root, "4", "cbp", "stability", 0)
    stream_run(root, "5", "cbp", "stability", 1, stream_seed=7)
    stream_run(root, "6", "bp", "stability", 0)
    stream_run(root, "a1b2", "cbp", "stability", 2, "RUNNING", 2, superseded_by="a1b2.r1")
    stream_run(root, "a1b2.r1", "cbp", "stability", 2, resume_from="runs/stream/a1b2")
    stream_run(root, "9", "bp", "stability", 1, "RUNNING", 2)
    return root


def drawn_groups(figure: Figure) -> list[tuple[str, int]]:
    """``(group label, number of runs)`` of every group a figure's legends name; a label
    that does not say how many runs it averages fails the test."""
    labels = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
    labels += [
        text.get_text()
        for ax in figure.axes
        if ax.get_legend()
        for text in ax.get_legend().get_texts()
    ]
    groups = []
    for label in labels:
        if label.startswith(("stream difficulty", "not trained")):
            continue  # overlays, not groups of runs
        match = DRAWN.match(label)
        assert match, f"legend entry {label!r} does not say which runs it averages"
        groups.append((match["group"], int(match["runs"])))
    return groups


def assert_one_configuration_per_group(frame: pd.DataFrame, figure: Figure, name: str) -> None:
    """Every group drawn is the runs whose config has the label's values, all of them, and
    those runs share every config key outside NOT_A_DIFFERENCE."""
    groups = drawn_groups(figure)
    assert groups, f"{name} names no group of runs"
    for label, count in groups:
        runs = where(frame, *label.split(", "))
        configs = runs.drop_duplicates("run").set_index("run").filter(like="config.")
        configs = configs.drop(columns=[k for k in NOT_A_DIFFERENCE if k in configs])
        assert runs["run"].nunique() == count, (name, label)
        differing = [k for k in configs if configs[k].astype(str).nunique() > 1]
        assert not differing, f"{name}: group {label!r} averages runs differing in {differing}"


# ---------------------------------------------------------------- the acceptance test


def test_report_over_mixed_streams_and_a_resumed_run_averages_only_equal_configs(
    mixed_root, tmp_path, monkeypatch, capsys
):
    drawn: dict[str, Figure] = {}
    save = Figure.savefig

    def keep(figure, path, **kwargs):
        drawn[Path(path).stem] = figure
        return save(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    assert main([str(mixed_root.parent), "--out", str(tmp_path / "figures")]) == 0
    printed = capsys.readouterr().out

    assert "left out 1 superseded run: runs/stream/a1b2\n" in printed
    assert "left out 1 RUNNING run: runs/stream/9\n" in printed
    assert "stream: 7 runs in 4 groups" in printed
    for group in (
        "method=bp, stream=parity (2 runs)",
        "method=cbp, stream=parity (1 run)",
        "method=bp, stream=stability (1 run)",
        "method=cbp, stream=stability (3 runs)",  # 4, 5 and the resumed a1b2.r1
    ):
        assert f"  {group}\n" in printed
    assert {"plasticity_curve", "plasticity_diagnostics", "halting_vs_difficulty"} <= set(drawn)
    kept = load_runs(mixed_root)
    for name, figure in drawn.items():
        assert_one_configuration_per_group(kept, figure, name)
        assert {g for g, _ in drawn_groups(figure)} <= {
            "method=bp, stream=parity",
            "method=cbp, stream=parity",
            "method=bp, stream=stability",
            "method=cbp, stream=stability",
        }
    assert set(drawn) == {name for name, spec in FIGURES.items() if spec.experiment == "stream"}


# ---------------------------------------------------------------- which keys vary


def test_varying_keys_leave_out_seeds_and_runtime_keys_and_count_the_experiment(mixed_root):
    frame = load_runs(mixed_root)
    assert varying_keys(frame) == ["config.method", "config.stream"]
    assert "config.num_threads" in varying_keys(frame, ignore=())
    assert set(NOT_A_DIFFERENCE) >= {
        "config.seed", "config.stream_seed", "config.resume_from", "config.num_threads",
        "config.device", "config.fashion_root",
    }  # fmt: skip
    other = frame.assign(
        experiment=frame["run"].map(lambda r: "parity" if r == "stream/1" else "stream")
    )
    assert varying_keys(other)[0] == "experiment"


def test_a_key_some_runs_lack_varies_and_labels_say_none(mixed_root, tmp_path):
    stream_run(mixed_root, "10", "bp", "parity", 2, halting_bias=0.5)
    groups = run_groups(where(load_runs(mixed_root), "stream=parity", "method=bp"))
    # only halting_bias differs among these runs: method is the same, so not in the label
    assert groups["group"].tolist() == ["halting_bias=0.5", *["halting_bias=None"] * 2]


def test_config_values_are_flattened_into_hashable_values():
    flat = flatten_config({"a": {}, "b": [[1, 2], {"x": [3]}], "c": {"d": 1}})
    assert flat == {"config.a": None, "config.b": ((1, 2), (("x", (3,)),)), "config.c.d": 1}
    frame = pd.DataFrame([{"run": str(i), **flat, "config.e": i} for i in range(2)])
    assert varying_keys(frame) == ["config.e"]  # nested values compare, and do not crash


def test_group_labels_drop_the_prefix_and_read_back_as_where_conditions(mixed_root):
    label = group_label({"config.method": "cbp", "config.optimizer.lr": 0.001, "config.size": 16.0})
    assert label == "method=cbp, optimizer.lr=0.001, size=16"
    assert [parse_value(v) for v in ("3", "1e-3", "true", "None", "(3, 4)", "[3]", "relu")] == [
        3, 0.001, True, None, (3, 4), (3,), "relu",
    ]  # fmt: skip
    frame = load_runs(mixed_root)
    for label, runs in run_groups(frame).groupby("group"):
        assert set(where(frame, *label.split(", "))["run"]) == set(runs.index)


def test_groups_are_ordered_known_methods_first(mixed_root):
    frame = load_runs(mixed_root)
    assert run_groups(frame).drop_duplicates("group")["group"].tolist() == [
        "method=bp, stream=parity",
        "method=bp, stream=stability",
        "method=cbp, stream=parity",
        "method=cbp, stream=stability",
    ]
    one_method = where(frame, method="cbp", stream="parity")
    assert run_groups(one_method)["group"].tolist() == ["method=cbp"]  # nothing varies


# ---------------------------------------------------------------- where


def test_where_keeps_the_runs_matching_every_condition(mixed_root):
    frame = load_runs(mixed_root)
    assert sorted(where(frame, "stream=stability", "method=cbp")["run"].unique()) == [
        "stream/4", "stream/5", "stream/a1b2.r1",
    ]  # fmt: skip
    assert sorted(where(frame, "config.seed=1", method="bp")["run"].unique()) == ["stream/2"]
    assert where(frame, "learning_rate=1e-3")["run"].nunique() == 7  # floats parse
    assert where(frame, "stream_seed=None")["run"].nunique() == 6  # None matches None
    assert where(frame, "experiment=stream")["run"].nunique() == 7


def test_where_names_the_keys_or_values_that_exist(mixed_root):
    frame = load_runs(mixed_root)
    with pytest.raises(ValueError, match=r"no key 'strem' in the runs; the keys are \[.*'stream'"):
        where(frame, "strem=parity")
    with pytest.raises(ValueError, match=r"no run has stream=routh; .*\['parity', 'stability'\]"):
        where(frame, "stream=routh")
    with pytest.raises(ValueError, match=r"no run with method=bp has num_threads=4; .*\['1'\]"):
        where(frame, "method=bp", "num_threads=4")
    with pytest.raises(ValueError, match="not key=value"):
        where(frame, "stream")


# ---------------------------------------------------------------- explicit hue and pool


def test_an_explicit_hue_refuses_runs_that_differ_outside_it(mixed_root):
    frame = load_runs(mixed_root)
    with pytest.raises(ValueError) as refused:
        plasticity_curve(frame, hue="config.method")
    message = str(refused.value)
    assert "stream: parity (3 runs), stability (4 runs)" in message
    assert "hue='auto'" in message and "where(frame, 'stream=parity')" in message
    assert "pool=('stream',)" in message
    pooled = plasticity_curve(frame, hue="config.method", pool=("stream",), by_difficulty=False)
    labels = [line.get_label() for line in pooled.axes[0].lines]
    assert labels == ["method=bp (3 runs)", "method=cbp (4 runs)"]
    both = plasticity_curve(frame, hue=["method", "stream"], by_difficulty=False)
    assert len(both.axes[0].lines) == 4


def test_summarise_groups_by_configuration_and_refuses_to_pool(mixed_root):
    frame = load_runs(mixed_root)
    table = summarise(frame, "eval.accuracy")
    assert table.index.names == ["config.method", "config.stream"]
    assert table.loc[("cbp", "stability"), ("eval.accuracy", "runs")] == 3
    assert table.loc[("cbp", "stability"), ("eval.accuracy", "mean")] == pytest.approx(0.61)
    with pytest.raises(ValueError, match=r"outside by=\['method'\] in stream: parity"):
        summarise(frame, "eval.accuracy", by=("config.method",))
    pooled = summarise(frame, "eval.accuracy", by=("config.method",), pool=("stream",))
    assert pooled.loc["cbp", ("eval.accuracy", "runs")] == 4


# ---------------------------------------------------------------- readable at a glance


def test_lines_with_few_points_have_markers_and_the_legend_covers_no_axes(mixed_root):
    frame = load_runs(mixed_root)
    figure = plasticity_diagnostics(frame)
    assert all(line.get_marker() == "o" for ax in figure.axes for line in ax.lines)
    assert len(figure.legends) == 1 and not [ax for ax in figure.axes if ax.get_legend()]
    figure.draw_without_rendering()  # lays the figure out, so extents are final
    legend = figure.legends[0].get_window_extent()
    assert not [ax for ax in figure.axes if legend.overlaps(ax.get_window_extent())]
    many = mixed_root.parent / "long"
    stream_run(many, "1", "bp", "parity", 0, steps=25)
    long_frame = load_runs(many)
    (line,) = plasticity_diagnostics(long_frame).axes[0].lines
    assert line.get_marker() in ("None", None, "")


# ---------------------------------------------------------------- the report command


def test_report_where_keeps_the_selected_runs_and_a_pooling_hue_is_refused(
    mixed_root, tmp_path, capsys
):
    out = tmp_path / "figures"
    assert main([str(mixed_root), "--out", str(out), "--where", "stream=stability"]) == 0
    printed = capsys.readouterr().out
    assert "stream: 4 runs in 2 groups\n  method=bp (1 run)\n  method=cbp (3 runs)" in printed
    assert main([str(mixed_root), "--out", str(tmp_path / "no"), "--hue", "method"]) == 1
    printed = capsys.readouterr().out
    assert "skipped the stream figures: the runs differ outside hue=['method']" in printed
    assert "--pool stream" in printed
    assert not (tmp_path / "no").exists()
    hue = ["--hue", "method", "--pool", "stream"]
    assert main([str(mixed_root), "--out", str(tmp_path / "pooled"), *hue]) == 0
    assert "stream: 7 runs in 2 groups" in capsys.readouterr().out
    assert main([str(mixed_root), "--out", str(out), "--where", "strem=parity"]) == 2
    assert "--where: no key 'strem'" in capsys.readouterr().err


def test_every_report_figure_belongs_to_an_experiment_with_a_unique_file_name():
    assert {spec.experiment for spec in FIGURES.values()} == {"stream", "bit_flipping", "parity"}
    assert len(set(FIGURES)) == len(FIGURES)


def test_difficulty_panels_of_two_streams_are_apart(mixed_root):
    """stability's n = 3 and parity's k = 3 are different levels: one panel each, never a
    panel that puts both streams' "difficulty 3" together."""
    frame = load_runs(mixed_root)
    titles = [ax.get_title() for ax in plasticity_curve(frame).axes if ax.get_title()]
    assert titles == [
        f"New-experience accuracy, {stream}, difficulty {level}"
        for stream in ("parity", "stability")
        for level in LEVELS
    ]
    one = plasticity_curve(where(frame, "stream=stability"))
    assert [ax.get_title() for ax in one.axes if ax.get_title()] == [
        f"New-experience accuracy, difficulty {level}" for level in LEVELS
    ]


def test_labels_of_list_values_read_back_as_where_conditions(tmp_path):
    """A list key (the stream's `dimensions`) in a label has no ", " inside it, so a label
    still splits into its conditions, each of which selects the group's runs."""
    root = tmp_path / "runs" / "stream"
    stream_run(root, "1", "cbp", "stability", 0, dimensions=[3, 4, 6])
    stream_run(root, "2", "cbp", "stability", 0, dimensions=[3, 4])
    stream_run(root, "3", "cbp", "stability", 0, dimensions=[3, 4], schedule=["easy", "hard"])
    frame = load_runs(root)
    groups = run_groups(frame)
    assert sorted(groups["group"]) == [
        "dimensions=(3,4), schedule=('easy','hard')",
        "dimensions=(3,4), schedule=None",
        "dimensions=(3,4,6), schedule=None",
    ]
    for label, runs in groups.groupby("group"):
        assert set(where(frame, *label.split(", "))["run"]) == set(runs.index)


def test_a_run_made_before_an_added_key_groups_with_runs_holding_its_default(tmp_path):
    for name, extra in (
        ("1", {}),  # made before layer_norm and weight_decay existed
        ("2", {"layer_norm": False, "weight_decay": 0.0}),
        ("3", {"layer_norm": True, "weight_decay": 0.0}),
    ):
        config = {"size": 16, "seed": int(name), "resume_from": None, **extra}
        metrics: dict = {}
        log_metric(metrics, "interpolation.accuracy", 1, 0.5)
        write_run_folder(tmp_path / name, "parity", config, metrics)
    groups = run_groups(load_runs(tmp_path))["group"]
    by_folder = {run.rsplit("/", 1)[-1]: group for run, group in groups.items()}
    assert by_folder == {"1": "layer_norm=False", "2": "layer_norm=False", "3": "layer_norm=True"}


def test_the_added_keys_analysis_knows_are_the_experiments_own():
    import importlib

    from analysis.runs import ADDED_KEYS

    for name in ("bit_flipping", "parity", "stream"):  # each declares its keys on import
        importlib.import_module(f"experiments.{name}")
    from experiments import _runs

    assert ADDED_KEYS == _runs.ADDED_KEYS
