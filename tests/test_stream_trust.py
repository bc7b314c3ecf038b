"""Streams a learner cannot shortcut: matched stability pairs, disjoint train/test sets, and
drift values refused before anything is drawn (issue 10, items 1, 3 and 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.benchmarks.shortcuts import shortcut_accuracies
from ponderlife.tasks import linear_systems, stability_batch
from ponderlife.tasks.spectra import equalise_diagonal, matched_matrices
from strategies import streams
from strategies.datasets import tensor_source
from strategies.streams import (
    bit_flipping_stream,
    check_drift,
    linear_system_stream,
    on_test_side,
    parity_shift_stream,
)


def rows(tensor: torch.Tensor) -> set[bytes]:
    array = tensor.reshape(len(tensor), -1).numpy()
    return {row.tobytes() for row in array}


def inputs(experience) -> torch.Tensor:
    return tensor_source(experience.dataset)[0]


# ---- matched stability pairs ------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_cheap_features_predict_no_more_than_060_of_matched_stability_labels(n):
    result = shortcut_accuracies("stability", "matched", n, train=4000, test=2000)
    assert result["logistic"] <= 0.60 and result["tree"] <= 0.60, result


def test_the_probe_finds_the_determinant_shortcut_of_the_shifted_gaussian_ensemble():
    result = shortcut_accuracies("stability", "label", 4, train=4000, test=2000)
    assert result["best_feature"] == "sign_det" and result["best_stump"] > 0.85
    assert result["tree"] > 0.85


@pytest.mark.parametrize("n", [2, 3, 6, 9])
def test_matched_labels_are_the_sign_of_the_float64_spectrum_of_what_the_learner_sees(n):
    batch = stability_batch(n, 301, rng=np.random.default_rng(n), n_max=10)
    full = batch.inputs.double().numpy().reshape(-1, 10, 10)
    a = full[:, :n, :n]
    top = np.linalg.eigvals(a).real.max(axis=1)
    assert np.array_equal(top < 0, batch.targets.numpy() == 1)
    assert int(batch.targets.sum()) == 150  # exact balance, odd batch
    np.testing.assert_allclose(np.abs(top), batch.margin.numpy(), rtol=1e-4, atol=1e-6)
    assert batch.margin.min() >= 0.049 and batch.margin.max() <= 0.501
    padded = np.linalg.eigvals(full).real.max(axis=1)  # the −3 padding keeps every label
    assert np.array_equal(padded < 0, top < 0)


def test_every_matched_matrix_has_a_positive_signed_determinant_and_a_constant_diagonal():
    drawn = matched_matrices(5, 500, rng=np.random.default_rng(0))
    a = drawn["a"]
    assert np.all(np.linalg.det(a) * (-1) ** 5 > 0)
    diagonal = np.diagonal(a, axis1=1, axis2=2)
    np.testing.assert_allclose(diagonal - diagonal.mean(axis=1, keepdims=True), 0, atol=1e-5)
    # twins (adjacent, unstable first) share trace and Frobenius norm
    trace = diagonal.sum(axis=1).reshape(-1, 2)
    norm = np.linalg.norm(a, axis=(1, 2)).reshape(-1, 2)
    np.testing.assert_allclose(trace[:, 0], trace[:, 1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm[:, 0], norm[:, 1], rtol=1e-5)
    assert np.array_equal(drawn["label"].reshape(-1, 2), np.tile([False, True], (len(trace), 1)))


def test_equalising_the_diagonal_is_an_orthogonal_similarity():
    a = np.random.default_rng(1).standard_normal((50, 6, 6))
    b = equalise_diagonal(a)
    diagonal = np.diagonal(b, axis1=1, axis2=2)
    mean = np.trace(a, axis1=1, axis2=2)[:, None] / 6
    np.testing.assert_allclose(diagonal - mean, 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(b, axis=(1, 2)), np.linalg.norm(a, axis=(1, 2)))
    original = np.sort_complex(np.linalg.eigvals(a))
    np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(b)), original, atol=1e-9)


def test_the_study_stream_is_matched_and_starts_at_n_3_by_default():
    bench = linear_system_stream(samples_per_experience=64, test_samples=16, seed=3)
    first = tensor_source(bench.train_stream[0].dataset)
    assert int(first[2][0]) == 3 and first[0].shape[1] == 36
    assert [int(tensor_source(e.dataset)[2][0]) for e in bench.train_stream] == [3, 4, 5, 6]
    a = first[0].double().numpy().reshape(-1, 6, 6)[:, :3, :3]
    diagonal = np.diagonal(a, axis1=1, axis2=2)
    np.testing.assert_allclose(diagonal, diagonal[:, :1].repeat(3, axis=1), atol=1e-5)


# ---- no test example is a training example -------------------------------------------------


def test_controllability_at_n_2_has_no_test_input_in_any_training_set():
    bench = linear_system_stream(
        task="controllability", dimensions=[2], experiences=2, samples_per_experience=512
    )
    seen = set().union(*(rows(inputs(e)) for e in bench.train_stream))
    for experience in bench.test_stream:
        assert not rows(inputs(experience)) & seen
    assert bench.test_overlap == [0.0, 0.0]


@pytest.mark.parametrize("task", ["stability", "routh", "controllability"])
def test_linear_system_test_sets_are_disjoint_from_training_and_keep_exact_balance(task):
    bench = linear_system_stream(task=task, samples_per_experience=200, test_samples=101)
    for train, test in zip(bench.train_stream, bench.test_stream, strict=True):
        assert not rows(inputs(train)) & rows(inputs(test))
        assert on_test_side(inputs(test)).all() and not on_test_side(inputs(train)).any()
        assert int(tensor_source(test.dataset)[1].sum()) == 50
        assert int(tensor_source(train.dataset)[1].sum()) == 100


def test_parity_with_few_nonzeros_has_disjoint_test_sets():
    bench = parity_shift_stream(size=8, schedule=[(1, 2), "all"], samples_per_experience=500)
    for train, test in zip(bench.train_stream, bench.test_stream, strict=True):
        assert not rows(inputs(train)) & rows(inputs(test))
    assert bench.test_overlap == [0.0, 0.0]


def test_a_space_too_small_to_split_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="too small for a test set disjoint from training"):
        parity_shift_stream(size=2, schedule=[(1, 1)], samples_per_experience=8, test_samples=4)


def test_bit_flipping_reports_that_its_test_inputs_occur_in_training():
    bench = bit_flipping_stream(experiences=2, period=400, test_samples=50)
    assert all(overlap > 0.9 for overlap in bench.test_overlap)


# ---- drift is checked before anything is drawn ---------------------------------------------


@pytest.mark.parametrize(
    ("dimensions", "experiences", "drift", "balance"),
    [([6], 45, 0.05, "label"), ([2, 3, 4, 5, 6], 10, 0.2, "label"), ([6], 10, 0.2, "matched")],
)
def test_infeasible_drift_is_refused_before_drawing_naming_the_largest_feasible(
    monkeypatch, dimensions, experiences, drift, balance
):
    drawn = []
    monkeypatch.setattr(streams, "system_batch", lambda *a, **k: drawn.append(a))
    with pytest.raises(ValueError, match="largest feasible drift is") as error:
        linear_system_stream(
            dimensions=dimensions, experiences=experiences, drift=drift, balance=balance
        )
    assert not drawn
    message = str(error.value)
    assert "trace bin" not in message  # the cause under balance="label" is the class
    largest = float(message.rsplit(" ", 1)[1])
    assert 0 < largest < drift
    plan = [dimensions[i % len(dimensions)] for i in range(experiences)]
    check_drift("stability", plan, largest, balance=balance)  # the value offered works


def test_the_largest_feasible_drift_really_draws():
    plan = [3, 4] * 4
    with pytest.raises(ValueError, match="largest feasible drift") as error:
        check_drift("stability", plan, 0.5, balance="label")
    largest = float(str(error.value).rsplit(" ", 1)[1])
    bench = linear_system_stream(
        dimensions=[3, 4],
        experiences=8,
        drift=largest,
        balance="label",
        samples_per_experience=64,
        test_samples=16,
    )
    assert len(bench.train_stream) == 8


def test_controllability_drift_towards_empty_matrices_is_refused():
    with pytest.raises(ValueError, match=r"controllable or not.*largest feasible drift is -"):
        check_drift("controllability", [3, 4, 5, 6] * 3, -0.3)


def test_a_generator_that_cannot_fill_a_label_names_the_label_not_trace_bins():
    with pytest.raises(RuntimeError, match="stable and unstable matrices") as error:
        linear_systems.stability_batch(
            6, 64, rng=np.random.default_rng(0), balance="label", shift_offset=3.0
        )
    assert "trace" not in str(error.value)
