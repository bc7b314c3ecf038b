"""The matched Routh ensemble (issue 10, item 2): unstable polynomials keep every coefficient
positive, so only the Hurwitz conditions separate the classes; signs and magnitudes of the
coefficients predict no more than 0.60; labels are exact; n = 2 is refused."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.benchmarks.shortcuts import shortcut_accuracies
from ponderlife.tasks import routh_batch
from ponderlife.tasks.linear_systems import routh_feasibility
from ponderlife.tasks.spectra import matched_polynomials, polynomial_from_roots
from strategies.datasets import tensor_source
from strategies.streams import check_drift, linear_system_stream


def hurwitz_stable(coefficients: np.ndarray) -> bool:
    """The Routh array of s^k + c_1 s^{k−1} + … + c_k: stable iff its first column stays
    positive (a transcription of the textbook test, independent of the generator's
    eigenvalue check)."""
    c = np.concatenate([[1.0], coefficients])
    rows = [c[0::2].copy(), c[1::2].copy()]
    width = len(rows[0])
    rows = [np.pad(r, (0, width - len(r))) for r in rows]
    for _ in range(len(c) - 2):
        upper, lower = rows[-2], rows[-1]
        if lower[0] <= 0:
            return False
        nxt = np.zeros(width)
        nxt[:-1] = (lower[0] * upper[1:] - upper[0] * lower[1:]) / lower[0]
        rows.append(nxt)
    return bool(all(r[0] > 0 for r in rows))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 8])
def test_signs_and_magnitudes_predict_no_more_than_060_of_matched_routh_labels(n):
    result = shortcut_accuracies("routh", "matched", n, train=4000, test=2000)
    assert result["logistic"] <= 0.60 and result["tree"] <= 0.60, result


def test_the_gaussian_routh_ensemble_keeps_its_positive_coefficients_shortcut():
    result = shortcut_accuracies("routh", "label", 4, train=4000, test=2000)
    assert result["best_feature"].startswith("sign_c") and result["best_stump"] > 0.85


@pytest.mark.parametrize(("n", "n_max"), [(3, 3), (4, 6), (6, 6), (8, 8)])
def test_matched_routh_labels_are_exact_and_every_coefficient_is_positive(n, n_max):
    batch = routh_batch(n, 301, rng=np.random.default_rng(n), n_max=n_max, encoding="coefficients")
    c = batch.inputs.double().numpy()
    assert c.shape == (301, n_max) and np.all(c > 0)
    assert int(batch.targets.sum()) == 150
    labels = batch.targets.numpy() == 1
    routh = np.array([hurwitz_stable(row) for row in c])
    clear = batch.margin.numpy() > 1e-3  # the Routh array in float64 is exact well above this
    assert clear.mean() > 0.9
    assert np.array_equal(routh[clear], labels[clear])
    roots = np.array([np.roots(np.concatenate([[1.0], row])) for row in c])
    assert np.array_equal(roots.real.max(axis=1) < 0, labels)


def test_the_log_encoding_is_signs_then_log10_magnitudes_of_the_same_polynomials():
    raw = routh_batch(5, 64, rng=np.random.default_rng(1), encoding="coefficients")
    log = routh_batch(5, 64, rng=np.random.default_rng(1))
    assert log.inputs.shape == (64, 10)
    np.testing.assert_array_equal(log.inputs[:, :5].numpy(), np.sign(raw.inputs.numpy()))
    np.testing.assert_allclose(
        log.inputs[:, 5:].double().numpy(), np.log10(raw.inputs.double().numpy()), atol=1e-5
    )
    assert np.array_equal(log.targets.numpy(), raw.targets.numpy())


def test_twins_share_every_root_but_the_sign_of_the_leading_pair():
    drawn = matched_polynomials(4, 200, rng=np.random.default_rng(3))
    assert drawn["label"].size > 100
    assert np.array_equal(drawn["label"][0::2], np.zeros(drawn["label"].size // 2, bool))
    assert np.all(drawn["label"][1::2])
    # Undo each twin's own scale with g (geometric mean of root magnitudes): the twins' root
    # magnitudes then agree up to the overall scale, and their real parts differ in sign
    # for one complex pair only.
    for unstable, stable in zip(
        drawn["coefficients"][0::2][:20], drawn["coefficients"][1::2][:20], strict=True
    ):
        ru = np.sort_complex(np.roots(np.concatenate([[1.0], unstable])))
        rs = np.sort_complex(np.roots(np.concatenate([[1.0], stable])))
        gu, gs = np.exp(np.log(np.abs(ru)).mean()), np.exp(np.log(np.abs(rs)).mean())
        assert (ru.real > 0).sum() == 2 and (rs.real > 0).sum() == 0
        np.testing.assert_allclose(np.sort(np.abs(ru)) / gu, np.sort(np.abs(rs)) / gs, rtol=1e-3)


def test_polynomial_from_roots_matches_numpy_poly():
    roots = np.array([[-1.0, -2.0 + 1j, -2.0 - 1j, 0.5]])
    np.testing.assert_allclose(polynomial_from_roots(roots)[0], np.poly(roots[0]).real)


def test_degree_two_is_refused_by_the_matched_ensemble_with_the_reason():
    with pytest.raises(ValueError, match=r"n >= 3.*all coefficients positive is stable"):
        routh_batch(2, 8, rng=np.random.default_rng(0))
    assert routh_feasibility(2) == 0.0
    assert routh_batch(2, 8, rng=np.random.default_rng(0), balance="label").targets.sum() == 4


def test_matched_routh_drift_is_checked_against_its_own_acceptance():
    assert routh_feasibility(4, shift_offset=0.0) > 0.5
    assert routh_feasibility(4, shift_offset=9.0) < routh_feasibility(4, shift_offset=3.0)
    check_drift("routh", [3, 4], 0.1, experiences=10)  # feasible: no error
    with pytest.raises(
        ValueError, match=r"drift = 0.5 is infeasible for routh.*matched polynomial pair.*largest"
    ):
        check_drift("routh", [3, 4], 0.5, experiences=45)


def test_the_routh_stream_defaults_to_the_matched_ensemble_and_log_inputs():
    benchmark = linear_system_stream(
        task="routh", dimensions=[3, 4], samples_per_experience=64, test_samples=16
    )
    x, y = tensor_source(benchmark.train_stream[1].dataset)[:2]
    assert x.shape[1] == 8 and bool((x[:, :4] == 1).all())  # signs: all positive
    assert int(y.sum()) == 32


def test_the_routh_stream_refuses_degree_two_under_matched_before_drawing():
    with pytest.raises(ValueError, match=r"every dimensions entry >= 3, got 2"):
        linear_system_stream(task="routh", dimensions=[2, 3], samples_per_experience=8)
    benchmark = linear_system_stream(
        task="routh", dimensions=[2, 3], samples_per_experience=8, balance="label"
    )
    assert len(benchmark.train_stream) == 2
