"""Avalanche streams built from the ponderlife generators."""

import numpy as np
import pytest
import torch

from ponderlife.tasks import FASHION_MNIST_DIR, BitFlippingStream, load_fashion_mnist, write_idx
from strategies.datasets import experience_difficulty
from strategies.streams import (
    bit_flipping_stream,
    linear_system_stream,
    parity_shift_stream,
    permuted_fashion_mnist,
    split_fashion_mnist,
)


def tensors(experience):
    dataset = experience.dataset
    samples = [dataset[i] for i in range(len(dataset))]
    return [torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in range(4)]


def test_parity_shift_follows_the_schedule_and_labels_count_plus_ones():
    bench = parity_shift_stream(
        size=8, schedule=["easy", "hard", (2, 3)], samples_per_experience=200, test_samples=50
    )
    assert len(bench.train_stream) == 3 and len(bench.test_stream) == 3
    for experience, (low, high) in zip(bench.train_stream, [(1, 4), (5, 8), (2, 3)], strict=True):
        x, y, difficulty, task = tensors(experience)
        nonzero = (x != 0).sum(1)
        assert torch.equal(nonzero, difficulty)
        assert low <= int(nonzero.min()) and int(nonzero.max()) <= high
        assert torch.equal(y, (x > 0).sum(1) % 2)
        assert torch.all(task == 0)
    labels = tensors(bench.train_stream[1])[1].float()
    assert 0.4 < float(labels.mean()) < 0.6


def test_parity_shift_pads_shorter_active_sizes_with_zeros():
    bench = parity_shift_stream(
        size=10, schedule=["all"], sizes=[4, 10], experiences=2, samples_per_experience=100
    )
    short = tensors(bench.train_stream[0])[0]
    assert short.shape == (100, 10) and torch.all(short[:, 4:] == 0)
    assert int((tensors(bench.train_stream[1])[0] != 0).sum(1).max()) > 4


def test_streams_are_deterministic_per_seed():
    a = parity_shift_stream(samples_per_experience=64, test_samples=8, seed=1)
    b = parity_shift_stream(samples_per_experience=64, test_samples=8, seed=1)
    c = parity_shift_stream(samples_per_experience=64, test_samples=8, seed=2)
    assert torch.equal(tensors(a.train_stream[1])[0], tensors(b.train_stream[1])[0])
    assert not torch.equal(tensors(a.train_stream[1])[0], tensors(c.train_stream[1])[0])
    d = linear_system_stream(dimensions=[2, 3], samples_per_experience=32, test_samples=8)
    e = linear_system_stream(dimensions=[2, 3], samples_per_experience=32, test_samples=8)
    assert torch.equal(tensors(d.test_stream[1])[0], tensors(e.test_stream[1])[0])


def test_stability_stream_balances_labels_tags_n_and_agrees_with_eigenvalues():
    bench = linear_system_stream(
        task="stability",
        dimensions=[2, 4],
        experiences=3,
        samples_per_experience=100,
        test_samples=20,
    )
    assert [int(experience_difficulty(e)[0]) for e in bench.train_stream] == [2, 4, 2]
    for experience in bench.train_stream:
        x, y, difficulty, _ = tensors(experience)
        assert int(y.sum()) == 50  # exactly balanced
        n = int(difficulty[0])
        matrices = x.reshape(-1, 4, 4)[:, :n, :n].double().numpy()
        stable = np.linalg.eigvals(matrices).real.max(axis=1) < 0
        assert np.array_equal(stable, y.numpy().astype(bool))


def test_controllability_stream_labels_match_an_independent_rank():
    bench = linear_system_stream(
        task="controllability", dimensions=[3], samples_per_experience=40, test_samples=4
    )
    x, y, _, _ = tensors(bench.train_stream[0])
    for row, label in zip(x.numpy(), y.numpy(), strict=True):
        a = row[:9].reshape(3, 3)
        b = row[9:12].reshape(3, 1)
        kalman = np.hstack([b, a @ b, a @ a @ b])
        assert (np.linalg.matrix_rank(kalman) == 3) == bool(label)


def test_bit_flipping_stream_cuts_the_reference_stream_into_segments():
    bench = bit_flipping_stream(experiences=3, period=50, test_samples=20, seed=4)
    reference = BitFlippingStream(period=50, seed=4)
    for experience in bench.train_stream:
        x, y, _, _ = tensors(experience)
        batch = reference.next(50)
        assert torch.equal(x, batch.x) and torch.equal(y, batch.y[:, 0])
        assert len(set(map(tuple, x[:, :15].tolist()))) == 1  # one setting of the slow bits
    tx, ty, _, _ = tensors(bench.test_stream[2])
    train_x = tensors(bench.train_stream[2])[0]
    assert torch.equal(tx[:, :15], train_x[: len(tx), :15])
    assert torch.equal(ty, reference.target(tx)[:, 0])


@pytest.fixture
def fashion_root(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return tmp_path


def test_permuted_fashion_permutes_pixels_per_experience(fashion_root):
    bench = permuted_fashion_mnist(
        experiences=3, samples_per_experience=None, test_samples=None, root=fashion_root
    )
    first, second, third = (tensors(e)[0] for e in bench.train_stream)
    assert first.shape == (40, 784)
    assert not torch.equal(first, second) and not torch.equal(second, third)
    assert torch.equal(first.sort(dim=1).values, second.sort(dim=1).values)
    assert torch.equal(tensors(bench.train_stream[1])[1], tensors(bench.train_stream[0])[1])


def test_split_fashion_gives_disjoint_class_groups(fashion_root):
    bench = split_fashion_mnist(experiences=5, root=fashion_root)
    groups = [set(tensors(e)[1].tolist()) for e in bench.train_stream]
    assert all(len(g) == 2 for g in groups)
    assert set().union(*groups) == set(range(10))
    with pytest.raises(ValueError, match="experiences"):
        split_fashion_mnist(experiences=3, root=fashion_root)


def test_missing_fashion_files_explain_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        permuted_fashion_mnist(root=tmp_path)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: parity_shift_stream(size=1), "size"),
        (lambda: parity_shift_stream(schedule=["medium"]), "schedule"),
        (lambda: parity_shift_stream(schedule=[(0, 3)]), "schedule"),
        (lambda: parity_shift_stream(samples_per_experience=0), "samples_per_experience"),
        (lambda: linear_system_stream(task="chaos"), "task"),
        (lambda: linear_system_stream(dimensions=[0]), "dimensions"),
        (lambda: linear_system_stream(dimensions=[]), "dimensions"),
        (lambda: bit_flipping_stream(experiences=0), "experiences"),
    ],
)
def test_invalid_stream_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed (make installs it as root)",
)
def test_the_installed_fashion_mnist_has_the_standard_sizes():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60_000, 784) and test.images.shape == (10_000, 784)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0


def test_drift_moves_the_stability_spectrum_but_keeps_labels_balanced_and_true():
    bench = linear_system_stream(
        dimensions=[3],
        experiences=3,
        samples_per_experience=400,
        test_samples=8,
        drift=0.3,
        balance="label",
    )
    margins = []
    for experience in bench.train_stream:
        x, y, _, _ = tensors(experience)
        assert int(y.sum()) == 200
        top = np.linalg.eigvals(x.reshape(-1, 3, 3).double().numpy()).real.max(axis=1)
        assert np.array_equal(top < 0, y.numpy().astype(bool))
        margins.append(float(np.mean(top)))
    assert margins[0] > margins[1] > margins[2]  # the spectrum drifts left


def test_drift_raises_the_controllability_density():
    bench = linear_system_stream(
        task="controllability",
        dimensions=[4],
        experiences=2,
        samples_per_experience=200,
        test_samples=4,
        drift=0.5,
    )
    density = [float((tensors(e)[0][:, :16] != 0).float().mean()) for e in bench.train_stream]
    assert density[1] > density[0] * 1.3


def test_the_stream_experiment_rejects_a_drift_out_of_range():
    from experiments.stream import ex

    with pytest.raises(ValueError, match="config 'drift'"):
        ex.run(config_updates={"drift": 0.9, "experiences": 1})


def test_bit_flipping_test_sets_may_be_larger_than_a_segment():
    bench = bit_flipping_stream(experiences=2, period=20, test_samples=50)
    x, _, difficulty, _ = tensors(bench.test_stream[1])
    assert len(x) == 50 and torch.all(difficulty == 1)
