"""The parity generator: the paper's labelling, the splits, seeding and argument checks."""

import pytest
import torch

from ponderlife.tasks import parity_batch, parity_nonzero_range


def test_label_is_parity_of_the_number_of_plus_one_entries():
    batch = parity_batch(200, 12, generator=torch.Generator().manual_seed(0))
    for x, y in zip(batch.x.tolist(), batch.y.tolist(), strict=True):
        assert y == sum(1 for v in x if v == 1.0) % 2
    # Counting all nonzero entries (a different task some code implements) disagrees often.
    by_nonzero = batch.nonzero % 2
    assert (by_nonzero.float() != batch.y).float().mean() > 0.3


def test_entries_are_signed_ones_at_exactly_k_positions():
    batch = parity_batch(500, 10, min_nonzero=3, max_nonzero=7, generator=torch.Generator())
    assert set(batch.x.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal((batch.x != 0).sum(1), batch.nonzero)
    assert batch.nonzero.min() >= 3 and batch.nonzero.max() <= 7
    assert set(batch.nonzero.tolist()) == set(range(3, 8))


def test_labels_are_balanced():
    batch = parity_batch(20000, 16, generator=torch.Generator().manual_seed(1))
    assert abs(batch.y.mean().item() - 0.5) < 0.015


def test_same_seed_same_batch_and_other_seed_other_batch():
    first = parity_batch(64, 16, generator=torch.Generator().manual_seed(3))
    again = parity_batch(64, 16, generator=torch.Generator().manual_seed(3))
    other = parity_batch(64, 16, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first.x, other.x)


def test_splits_follow_the_paper():
    assert parity_nonzero_range(64, "interpolation") == (1, 64)
    assert parity_nonzero_range(96, "extrapolation_train") == (1, 48)
    assert parity_nonzero_range(96, "extrapolation_test") == (49, 96)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0, "size": 4}, "batch_size"),
        ({"batch_size": 2, "size": 4, "max_nonzero": 5}, "max_nonzero"),
        ({"batch_size": 2, "size": 4, "min_nonzero": 0}, "min_nonzero"),
        ({"batch_size": 2, "size": 4, "min_nonzero": 3, "max_nonzero": 2}, "min_nonzero"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        parity_batch(**kwargs)
    with pytest.raises(ValueError, match="split must be one of"):
        parity_nonzero_range(8, "test")
