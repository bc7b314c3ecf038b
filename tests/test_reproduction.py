"""The reproduction table's script (experiments/benchmarks/reproduction.py): each row's
figures read from hand-written run folders with known values, the confidence interval
against its textbook value, the regression check, and the README's table kept equal to the
stored figures."""

import json
import math
from pathlib import Path

import pytest
from run_folders import log_metric, write_run_folder

from analysis.runs import confidence_interval
from experiments.benchmarks import reproduction

ROOT = Path(__file__).resolve().parents[1]


def test_confidence_interval_is_the_student_t_half_width():
    mean, half = confidence_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    # s = √2.5, t(0.975, 4) = 2.776445: the textbook interval of five values.
    assert mean == 3.0
    assert half == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert confidence_interval([1.0, 3.0], level=0.5)[1] == pytest.approx(1.0)  # t(0.75,1)=1
    assert math.isnan(confidence_interval([0.7])[1])
    with pytest.raises(ValueError, match="at least one"):
        confidence_interval([])
    with pytest.raises(ValueError, match="level"):
        confidence_interval([1.0, 2.0], level=1.0)


def _runs(folder: Path, experiment: str, configs: list[dict], fill) -> Path:
    for index, config in enumerate(configs):
        metrics: dict = {}
        fill(metrics, config)
        write_run_folder(folder / str(index), experiment, config, metrics)
    return folder


def test_parity_row_reads_each_models_final_evaluation(tmp_path):
    def fill(metrics, config):
        bonus = 0.1 * config["seed"] + (0.2 if config["model"] == "pondernet" else 0.0)
        for step in (1000, 2000):
            final = step == 2000
            log_metric(metrics, "interpolation.accuracy", step, 0.5 + bonus * final)
            log_metric(metrics, "extrapolation.accuracy", step, 0.4 + bonus * final)
            log_metric(metrics, "interpolation.expected_steps", step, 2.0 + final)
            log_metric(metrics, "extrapolation.expected_steps", step, 3.0 + final)

    configs = [{"model": m, "seed": s} for m in ("pondernet", "act") for s in (0, 1)]
    figures = reproduction.parity_figures(_runs(tmp_path, "parity", configs, fill))
    # One value per seed, keyed by the seed.
    assert figures["pondernet accuracy trained range"] == pytest.approx({0: 0.7, 1: 0.8})
    assert figures["act accuracy beyond"] == pytest.approx({0: 0.4, 1: 0.5})
    assert figures["pondernet expected steps beyond"] == {0: 4.0, 1: 4.0}
    assert reproduction.parity_figures(tmp_path / "absent") == {}


def test_bit_flipping_row_compares_the_first_and_last_100k_examples(tmp_path):
    def fill(metrics, config):
        rising = config["method"] == "bp" and config["activation"] == "relu"
        for step in range(10_000, 300_001, 10_000):  # 30 bins; error = step / 1e5 when rising
            log_metric(metrics, "train.squared_error", step, step / 1e5 if rising else 0.5)

    configs = [
        {"method": "bp", "activation": "relu", "seed": 0},
        {"method": "cbp", "activation": "relu", "seed": 0},
        {"method": "bp", "activation": "linear", "seed": 0},
    ]
    figures = reproduction.bit_flipping_figures(_runs(tmp_path, "bit_flipping", configs, fill))
    assert list(figures["bp error first 100k"].values()) == pytest.approx([0.55])  # bins 10k..100k
    assert list(figures["bp error last 100k"].values()) == pytest.approx([2.55])  # 210k..300k
    assert list(figures["cbp error last 100k"].values()) == [0.5]
    assert list(figures["linear error last 100k"].values()) == [0.5]


def _stream_metrics(metrics, accuracy_of, experiences: int, difficulty_of=None) -> None:
    for step in range(experiences):
        for seen in range(step + 1):  # every experience seen so far, as the study evaluates
            value = accuracy_of(seen) if seen == step else 0.0  # only the new one counts
            log_metric(metrics, f"eval.accuracy.exp{seen:03d}", step, value)
        log_metric(metrics, "eval.accuracy", step, 0.0)
        if difficulty_of is not None:
            log_metric(metrics, "stream.difficulty", step, difficulty_of(step))


def test_permuted_row_reads_new_task_accuracy_at_both_ends(tmp_path):
    def fill(metrics, config):
        falling = config["method"] == "bp"
        _stream_metrics(metrics, lambda i: 0.9 - 0.01 * i if falling else 0.8, 25)

    configs = [{"method": m, "seed": s} for m in ("bp", "cbp") for s in (0, 1)]
    figures = reproduction.permuted_figures(_runs(tmp_path, "stream", configs, fill))
    assert list(figures["bp first 10 tasks"].values()) == pytest.approx([0.9 - 0.045] * 2)
    assert list(figures["bp last 10 tasks"].values()) == pytest.approx([0.9 - 0.195] * 2)
    assert list(figures["cbp last 10 tasks"].values()) == pytest.approx([0.8, 0.8])


def test_stability_row_averages_new_experience_accuracy_per_n(tmp_path):
    dimensions = [3, 4, 6]

    def fill(metrics, config):
        _stream_metrics(
            metrics,
            lambda i: 1.0 - 0.1 * dimensions[i % 3] + 0.01 * i * config["epochs"],
            7,
            lambda i: dimensions[i % 3],
        )

    configs = [{"epochs": e, "seed": 0} for e in (1, 20)]
    frame = reproduction.load_folder(_runs(tmp_path, "stream", configs, fill))
    table = reproduction.stability_by_dimension(frame)
    assert sorted(table) == [(f"epochs={e}", n) for e in (1, 20) for n in dimensions]
    # n = 3 at experiences 0, 3, 6 → mean index 3.
    assert list(table[("epochs=20", 3)].values()) == pytest.approx([0.7 + 0.01 * 3 * 20])
    assert list(table[("epochs=1", 6)].values()) == pytest.approx([0.4 + 0.01 * 3.5])


def test_learnability_fits_both_learners_per_n_and_seed():
    figures = reproduction.learnability([3], samples=128, test=64, seeds=(0, 1))
    assert sorted(figures) == ["MLP 256×2 n=3", "gradient-boosted trees n=3"]
    for values in figures.values():
        assert sorted(values) == [0, 1]  # seeds
        assert all(0.0 <= v <= 1.0 for v in values.values())


def test_check_flags_a_moved_figure_and_notes_rows_without_runs():
    stored = {
        "parity": {"a": {"mean": 0.9, "half_width": 0.01, "runs": 3, "tolerance": 0.02}},
        "stability": {"b": {"mean": 0.6, "half_width": None, "runs": 1, "tolerance": 0.02}},
    }
    same = {"parity": {"a": {"mean": 0.915, "half_width": 0.01, "runs": 3}}, "stability": {}}
    assert reproduction.check(stored, same) == ([], ["stability: no runs here, not checked"])
    moved = {"parity": {"a": {"mean": 0.85, "half_width": 0.01, "runs": 3}}}
    problems, _ = reproduction.check(stored, moved)
    assert problems == ["parity: a: 0.8500, stored 0.9000 ± 0.0200"]
    fewer = {"parity": {"a": {"mean": 0.9, "half_width": None, "runs": 1}}}
    assert reproduction.check(stored, fewer)[0] == ["parity: a: 1 runs, stored 3"]


def test_measure_all_stores_a_tolerance_no_narrower_than_the_interval(tmp_path):
    def fill(metrics, config):
        for split in ("interpolation", "extrapolation"):
            for metric in ("accuracy", "expected_steps"):
                log_metric(metrics, f"{split}.{metric}", 100, 0.5 + 0.2 * config["seed"])

    configs = [{"model": "pondernet", "seed": s} for s in (0, 1)]
    _runs(tmp_path / "parity", "parity", configs, fill)
    parity_only = [r for r in reproduction.ROWS if r.key == "parity"]
    measured = reproduction.measure_all(tmp_path, parity_only)["parity"]
    estimate = measured["pondernet accuracy beyond"]
    assert estimate["mean"] == pytest.approx(0.6)
    assert estimate["tolerance"] == estimate["half_width"] > reproduction.BY_KEY["parity"].tolerance


def test_the_readme_holds_the_table_of_the_stored_figures():
    stored = json.loads((ROOT / reproduction.STORED).read_text())
    readme = (ROOT / "README.md").read_text()
    assert reproduction.readme_block(stored) in readme
    assert set(stored) == {row.key for row in reproduction.ROWS}
    rewritten = reproduction.replace_block(readme, reproduction.readme_block({}))
    assert "not run" in rewritten
    with pytest.raises(ValueError, match="block"):
        reproduction.replace_block("no markers", "x")


def test_reading_says_whether_the_intervals_of_a_comparison_overlap():
    row = reproduction.BY_KEY["bit_flipping"]
    figures = {
        "bp error first 100k": {"mean": 0.6, "half_width": 0.05, "runs": 5},
        "bp error last 100k": {"mean": 1.2, "half_width": 0.1, "runs": 5},
        "linear error last 100k": {"mean": 1.1, "half_width": 0.1, "runs": 5},
        "cbp error last 100k": {"mean": 0.7, "half_width": None, "runs": 1},
    }
    lines = reproduction.reading(row, figures)
    assert lines[0] == (
        "- backprop's error rises: 1.200 − 0.600 = +0.600; the intervals do not overlap"
    )
    assert lines[1].endswith("+0.100; the intervals overlap, so this is not clear")
    assert lines[2] == "- cbp ends below backprop: one run, no interval"
    assert reproduction.reading(row, {})[0] == "- backprop's error rises: not measured yet"


def test_reading_compares_seed_by_seed_where_both_figures_share_seeds():
    row = reproduction.BY_KEY["bit_flipping"]
    # Wide intervals (the seeds differ a lot), but every seed's error rises by 0.4-0.6.
    first = reproduction.estimates({"a": {0: 0.1, 1: 0.9, 2: 0.5, 3: 1.4}})["a"]
    last = reproduction.estimates({"b": {0: 0.6, 1: 1.3, 2: 1.0, 3: 2.0}})["b"]
    assert first["per_seed"] == {0: 0.1, 1: 0.9, 2: 0.5, 3: 1.4}
    flat = reproduction.estimates({"c": {0: 0.6, 1: 0.5, 2: 1.5, 3: 1.1}})["c"]
    figures = {
        "bp error first 100k": first,
        "bp error last 100k": last,
        "linear error last 100k": flat,
        "cbp error last 100k": {**flat, "per_seed": {7: 0.1, 8: 0.2}},  # no shared seeds
    }
    rises, above, below = reproduction.reading(row, figures)
    # differences 0.5, 0.4, 0.5, 0.6: mean 0.5, sd 0.0816, t(0.975, 3) 3.182 → ± 0.130
    assert rises == (
        "- backprop's error rises: 1.225 − 0.725 = +0.500; the intervals overlap; "
        "per seed (4 paired): +0.500 ± 0.130, clear"
    )
    # differences 0, 0.8, -0.5, 0.9: the interval includes 0
    assert above.startswith("- backprop ends above linear: 1.225 − 0.925 = +0.300; the ")
    assert above.endswith("so this is not clear") and "per seed (4 paired): +0.300" in above
    assert below.endswith("; the intervals overlap, so this is not clear")  # unpaired


def test_reading_says_when_a_clear_difference_contradicts_the_claim():
    row = reproduction.BY_KEY["bit_flipping"]
    first = reproduction.estimates({"a": {0: 1.1, 1: 1.9, 2: 1.5}})["a"]
    last = reproduction.estimates({"b": {0: 0.1, 1: 0.9, 2: 0.5}})["b"]
    rises = reproduction.reading(row, {"bp error first 100k": first, "bp error last 100k": last})
    assert rises[0].endswith(
        "per seed (3 paired): -1.000 ± 0.000, clear, in the opposite direction: the claim "
        "does not hold"
    )


def test_reading_says_when_two_accuracies_compared_are_both_at_chance():
    """A paired gap can be clear between two models that both guess: the reading then says
    neither beats guessing. A mean beyond the band around chance reads as before."""
    row = reproduction.BY_KEY["parity_paper"]
    names = ("pondernet accuracy beyond", "act accuracy beyond")

    def lines(ours, theirs):
        figures = reproduction.estimates({names[0]: ours, names[1]: theirs})
        return reproduction.reading(row, figures)[0]

    guessing = lines({0: 0.512, 1: 0.516, 2: 0.508}, {0: 0.498, 1: 0.502, 2: 0.494})
    assert guessing.endswith(
        "per seed (3 paired): +0.014 ± 0.000, clear; but both lie within 0.02 of chance "
        "(0.50): neither beats guessing, so this says nothing for the claim"
    )
    learned = lines({0: 0.52, 1: 0.53, 2: 0.51}, {0: 0.500, 1: 0.501, 2: 0.499})
    assert learned.endswith("clear")  # 0.52 is beyond the band
    assert reproduction.BY_KEY["bit_flipping"].chance is None


def test_the_parity_panel_draws_both_sizes_each_range(tmp_path):
    """P = 16 at x = 0, 1 and the paper's P = 96 at x = 2, 3, one point per model and range
    measured (a figure not measured is left out, not drawn at zero)."""
    import matplotlib.pyplot as plt

    def figures(accuracy):
        return {
            f"{model} accuracy {part}": {"mean": accuracy, "half_width": 0.01, "runs": 3}
            for model in ("pondernet", "act")
            for part in ("trained range", "beyond")
        }

    paper = figures(0.5)
    del paper["act accuracy trained range"]
    fig = reproduction.figure({"parity": figures(0.9), "parity_paper": paper}, tmp_path)
    ax = fig.axes[0]
    points = sorted(
        (round(float(x), 2), float(y))
        for bars in ax.containers  # one errorbar per model and size
        for x, y in zip(*bars.lines[0].get_data(), strict=True)
    )
    plt.close(fig)
    assert points == [
        (-0.08, 0.9), (0.08, 0.9), (0.92, 0.9), (1.08, 0.9), (1.92, 0.5), (2.92, 0.5),
        (3.08, 0.5),
    ]  # fmt: skip


def test_updating_one_row_keeps_every_other_rows_figures_and_section(tmp_path):
    """``--update parity_paper`` measures that row alone: the stored figures of the others,
    their page sections (word for word) and the figure file stay; the README block holds
    every row."""
    stored = json.loads((ROOT / "docs" / "reproduction.json").read_text())
    stored.pop("parity_paper", None)
    (tmp_path / "reproduction.json").write_text(json.dumps(stored))
    others = [row for row in reproduction.ROWS if row.key != "parity_paper"]
    old_page = "# Reproduction table\n\nintro\n\n" + "".join(
        f"## {row.result}\n\nthe old section of {row.key}\n\n" for row in others
    )
    out = tmp_path / "reproduction.md"
    out.write_text(old_page)
    (tmp_path / "reproduction.png").write_bytes(b"old figure")
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{reproduction.README_START}\nold\n{reproduction.README_END}\n")

    def fill(metrics, config):
        for split in ("interpolation", "extrapolation"):
            accuracy = 0.5 + 0.01 * config["seed"]
            log_metric(metrics, f"{split}.accuracy", 1000, accuracy)
            log_metric(metrics, f"{split}.expected_steps", 1000, 3.0)

    configs = [{"model": m, "seed": s} for m in ("pondernet", "act") for s in (0, 1, 2)]
    _runs(tmp_path / "runs" / "parity_paper", "parity", configs, fill)
    argv = ["--runs", str(tmp_path / "runs"), "--stored", str(tmp_path / "reproduction.json")]
    argv += ["--update", "parity_paper", "--out", str(out), "--readme", str(readme)]
    assert reproduction.main(argv) == 0

    written = json.loads((tmp_path / "reproduction.json").read_text())
    assert {k: v for k, v in written.items() if k != "parity_paper"} == stored
    assert written["parity_paper"]["act accuracy beyond"]["mean"] == pytest.approx(0.51)
    assert written["parity_paper"]["act accuracy beyond"]["runs"] == 3
    page = out.read_text()
    for row in others:
        assert f"## {row.result}\n\nthe old section of {row.key}\n" in page
    new = page.index("## PonderNet parity at the paper's size")
    assert page.index("the old section of parity\n") < new < page.index("of bit_flipping")
    assert "| act accuracy beyond | 0.510 ± " in page[new:]
    assert (tmp_path / "reproduction.png").read_bytes() == b"old figure"
    assert readme.read_text() == "before\n" + reproduction.readme_block(written) + "\n"

    with pytest.raises(SystemExit):  # a row without runs is refused, and nothing is written
        reproduction.main([*argv[:4], "--update", "bit_flipping", "--out", str(out)])
    assert json.loads((tmp_path / "reproduction.json").read_text()) == written
    with pytest.raises(SystemExit):  # nor is a page that does not exist yet
        reproduction.main([*argv[:4], "--update", "parity_paper", "--out", str(tmp_path / "x.md")])
    assert not (tmp_path / "x.md").exists()
