"""The findings script (experiments/benchmarks/results.py) on hand-written stream runs whose
answers are known: correlations within each n, the paired cbp − bp difference, the
fixed-depth interpolation at equal steps and the transition change."""

import math

import pandas as pd
import pytest
from run_folders import log_metric, write_run_folder

from experiments.benchmarks import results

LEVELS = [3, 4, 6]
EXPERIENCES = 12


def _stream_run(folder, config: dict, halting=None, accuracy=None, rank=None, forgetting=None):
    """A stream run: at step i, the new experience i's accuracy, halting step, the probe's
    effective rank and dormant fraction, and n; at the last step every experience's logged
    forgetting. Each argument is a function of (experience, n)."""
    metrics: dict = {}
    for i in range(EXPERIENCES):
        n = LEVELS[i % 3]
        log_metric(metrics, f"eval.accuracy.exp{i:03d}", i, accuracy(i, n) if accuracy else 0.7)
        if halting is not None:
            log_metric(metrics, f"eval.halting_step_mean.exp{i:03d}", i, halting(i, n))
        log_metric(metrics, "plasticity.effective_rank", i, rank(i, n) if rank else 10.0 - i)
        log_metric(metrics, "plasticity.dormant_fraction", i, 0.05 * i)
        log_metric(metrics, "stream.difficulty", i, float(n))
    if forgetting is not None:
        for i in range(EXPERIENCES - 1):
            log_metric(
                metrics,
                f"eval.forgetting.exp{i:03d}",
                EXPERIENCES - 1,
                forgetting(i, LEVELS[i % 3]),
            )
    return write_run_folder(folder, "stream", config, metrics)


def _config(**values):
    return {"model": "pondernet", "method": "bp", "transition": "abrupt", "fixed_steps": 4} | values


def test_stratified_spearman_removes_the_difference_between_levels():
    # Within each level y rises with x; across levels the higher level has lower y.
    rows = pd.DataFrame(
        {"level": [3, 3, 3, 6, 6, 6], "x": [1, 2, 3, 4, 5, 6], "y": [10, 11, 12, 0, 1, 2]}
    )
    assert rows["x"].rank().corr(rows["y"].rank()) < 0
    assert results.stratified_spearman(rows, "x", "y") == pytest.approx(1.0)
    flat = rows.assign(y=1.0)
    assert math.isnan(results.stratified_spearman(flat, "x", "y"))


def test_plasticity_reads_within_level_correlation_and_the_paired_difference(tmp_path):
    for seed in range(3):
        for method, extra in (("bp", 0.0), ("cbp", 0.5), ("l2", -0.25)):
            _stream_run(
                tmp_path / f"{method}{seed}",
                _config(method=method, seed=seed),
                # halting falls with the rank within each n, and differs between n
                halting=lambda i, n, e=extra, s=seed: n + 0.1 * i + e + 0.01 * s,
                rank=lambda i, n: 100.0 - i,
            )
    found = results.plasticity(results.load_folder(tmp_path))
    by_method = {f["method"]: f for f in found}
    assert by_method["bp"]["rho_rank"]["mean"] == pytest.approx(-1.0)
    assert by_method["bp"]["rho_rank"]["half_width"] == pytest.approx(0.0)
    assert by_method["cbp"]["rho_dormant"]["mean"] == pytest.approx(1.0)
    difference = by_method["cbp − bp"]["difference"]
    assert difference["mean"] == pytest.approx(0.5) and difference["runs"] == 3
    lines = results.readings("plasticity", found)
    assert "- cbp − bp: mean halting step, minus bp's: +0.500 ± 0.000, clearly above 0" in lines
    # Every method other than bp is compared with bp, seed by seed.
    assert by_method["l2 − bp"]["difference"]["mean"] == pytest.approx(-0.25)
    assert not any(f["method"].startswith("bp −") for f in found)
    # first third: experiences 0..3 → rank 100..97; last third: 8..11 → 92..89
    assert by_method["bp"]["rank_first"]["mean"] == pytest.approx(98.5)
    assert by_method["bp"]["rank_last"]["mean"] == pytest.approx(90.5)


def test_difficulty_and_forgetting_read_each_run_then_the_interval(tmp_path):
    for seed in range(2):
        _stream_run(
            tmp_path / str(seed),
            _config(seed=seed),
            halting=lambda i, n: float(n),  # ponders more at larger n, in both halves
            forgetting=lambda i, n: -0.01 * i,  # within each n, later experiences ponder...
        )
    frame = results.load_folder(tmp_path)
    (finding,) = results.difficulty(frame)
    assert finding["rho_first_half"]["mean"] == pytest.approx(1.0)
    assert finding["rho_second_half"]["mean"] == pytest.approx(1.0)
    assert finding["halting_n6"]["mean"] == 6.0
    # halting is constant within each n here, so forgetting cannot correlate with it
    (lost,) = results.forgetting(frame)
    assert math.isnan(lost["rho_halting"]["mean"]) and lost["rho_halting"]["runs"] == 0
    assert lost["forgetting"]["mean"] == pytest.approx(-0.01 * sum(range(11)) / 11)


def test_compute_compares_with_fixed_depth_interpolated_at_equal_steps(tmp_path):
    for seed in range(2):
        _stream_run(
            tmp_path / "ponder" / str(seed),
            _config(seed=seed),
            halting=lambda i, n: 2.5,
            accuracy=lambda i, n: 0.8,
        )
        for steps in (1, 2, 3, 4):
            _stream_run(
                tmp_path / "fixed" / f"{steps}-{seed}",
                _config(model="fixed", fixed_steps=steps, seed=seed),
                accuracy=lambda i, n, k=steps: 0.5 + 0.1 * k,
            )
    load = results.load_folder
    found = results.compute(load(tmp_path / "ponder"), load(tmp_path / "fixed"))
    ponder = next(f for f in found if f["model"].startswith("PonderNet"))
    assert ponder["gap"]["mean"] == pytest.approx(0.8 - 0.75) and ponder["gap"]["runs"] == 2
    assert ponder["per_step"]["mean"] == pytest.approx(0.8 / 2.5)
    fixed = {f["model"]: f for f in found}
    assert fixed["fixed depth, bp, 3 steps"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert fixed["fixed depth, bp, 1 step"]["steps"]["runs"] == 2


def test_compute_gives_no_gap_outside_the_fixed_depths_or_for_another_method(tmp_path):
    for method, halting in (("bp", 5.0), ("cbp", 2.5)):  # bp beyond K = 4; cbp: no fixed
        _stream_run(
            tmp_path / "ponder" / method,
            _config(method=method, seed=0),
            halting=lambda i, n, h=halting: h,
        )
    for steps in (1, 4):
        _stream_run(
            tmp_path / "fixed" / str(steps), _config(model="fixed", fixed_steps=steps, seed=0)
        )
    load = results.load_folder
    found = results.compute(load(tmp_path / "ponder"), load(tmp_path / "fixed"))
    gaps = {f["model"]: f["gap"]["runs"] for f in found if "gap" in f}
    assert gaps == {"PonderNet, bp": 0, "PonderNet, cbp": 0}


def test_transition_gives_the_change_per_method_and_transition(tmp_path):
    for seed in range(2):
        for kind, slope in (("abrupt", -0.02), ("gradual", 0.0)):
            _stream_run(
                tmp_path / f"{kind}{seed}",
                _config(transition=kind, seed=seed),
                halting=lambda i, n: 2.0,
                accuracy=lambda i, n, s=slope: 0.8 + s * i,
            )
    found = {f["transition"]: f for f in results.transition(results.load_folder(tmp_path))}
    assert found["abrupt"]["change"]["mean"] == pytest.approx(-0.02 * 8)  # thirds 0..3, 8..11
    assert found["gradual"]["change"]["mean"] == pytest.approx(0.0)


def test_within_reads_each_experiences_own_correlation_by_half_and_by_kind(tmp_path):
    """Experiences alternate easy (mean 2.5 bits) and hard (6.5); the within-experience ρ
    is logged per experience right after training on it, and later evaluations must not
    count."""
    for seed in range(3):
        metrics: dict = {}
        for i in range(8):
            easy = i % 2 == 0
            log_metric(metrics, "stream.difficulty", i, 2.5 if easy else 6.5)
            log_metric(metrics, f"eval.accuracy.exp{i:03d}", i, 0.9 if easy else 0.5)
            log_metric(metrics, f"eval.halting_step_mean.exp{i:03d}", i, 5.0)
            rho = (0.6 if easy else 0.0) + (0.2 if i >= 5 else 0.0) + 0.01 * seed
            log_metric(metrics, f"eval.difficulty_spearman.exp{i:03d}", i, rho)
            if i:  # a later evaluation of experience 0: not its own
                log_metric(metrics, "eval.difficulty_spearman.exp000", i, -1.0)
        write_run_folder(
            tmp_path / "parity_shift" / str(seed), "stream", _config(seed=seed), metrics
        )
    (finding,) = results.compute_findings(tmp_path)["within"]
    # ρ by experience 0..7 (seed 0): 0.6, 0, 0.6, 0, 0.6, 0.2, 0.8, 0.2; halves 0–3 | 4–7
    assert finding["rho_easy"]["mean"] == pytest.approx((0.6 * 3 + 0.8) / 4 + 0.01)
    assert finding["rho_hard"]["mean"] == pytest.approx(0.4 / 4 + 0.01)
    assert finding["rho_first_half"]["mean"] == pytest.approx(1.2 / 4 + 0.01)
    assert finding["rho_second_half"]["mean"] == pytest.approx(1.8 / 4 + 0.01)
    assert finding["accuracy_easy"]["mean"] == pytest.approx(0.9)
    assert finding["rho_easy"]["runs"] == 3


def test_the_page_lists_every_question_and_marks_the_ones_not_run(tmp_path):
    _stream_run(tmp_path / "stability" / "0", _config(seed=0), halting=lambda i, n: float(n))
    found = results.compute_findings(tmp_path)
    assert set(found) == {"plasticity", "difficulty", "forgetting"}
    text = results.page(found, {"stability": "Ran here."}, {})
    for title, _ in results.QUESTIONS.values():
        assert f"## {title}" in text
    assert text.count("Not run yet") == 3  # compute (no fixed-depth runs), transition, within
    assert found["forgetting"] == []  # one evaluation per experience: nothing forgotten
    assert "Its runs do not log what it needs." in text
    assert "too few runs for an interval" in text
    assert results.CLUSTER in text


def test_partial_spearman_equals_the_correlation_of_rank_residuals():
    import numpy as np

    rng = np.random.default_rng(0)
    z = np.arange(30.0)
    rows = pd.DataFrame(
        {"z": z, "x": z + rng.normal(0, 5, 30), "y": -0.5 * z + rng.normal(0, 5, 30)}
    )
    ranks = rows.rank()

    def residual(column):
        slope, intercept = np.polyfit(ranks["z"], ranks[column], 1)
        return ranks[column] - (slope * ranks["z"] + intercept)

    expected = np.corrcoef(residual("x"), residual("y"))[0, 1]
    assert results.partial_spearman(rows, "x", "y", "z") == pytest.approx(expected)
    assert results.partial_spearman(rows, "x", "y") < -0.3  # the shared trend alone
    assert math.isnan(results.partial_spearman(rows.assign(x=z), "x", "y", "z"))
