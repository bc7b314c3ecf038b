"""Diagnostics against hand-computed values on known matrices."""

import math

import pytest
import torch
from torch import nn

from ponderlife import diagnostics
from ponderlife.diagnostics import (
    approximate_rank,
    average_weight_magnitude,
    dead_fraction,
    dormant_fraction,
    effective_rank,
    feature_norm,
    gradient_norm,
    stable_rank,
    tau_dormant_fraction,
    tau_dormant_scores,
)


def test_ranks_of_a_diagonal_matrix():
    # Singular values 3, 2, 1: p = (1/2, 1/3, 1/6).
    matrix = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    entropy = -(0.5 * math.log(0.5) + (1 / 3) * math.log(1 / 3) + (1 / 6) * math.log(1 / 6))
    assert effective_rank(matrix) == pytest.approx(math.exp(entropy))
    assert stable_rank(matrix) == pytest.approx((9 + 4 + 1) / 9)
    assert approximate_rank(matrix) == 3
    assert approximate_rank(matrix, fraction=5 / 6) == 2  # 3 + 2 = 5 of 6
    assert approximate_rank(matrix, fraction=0.5) == 1


def test_ranks_of_identity_and_rank_one_and_zero():
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert stable_rank(torch.eye(5)) == pytest.approx(5.0)
    rank_one = torch.outer(torch.arange(1.0, 5.0), torch.tensor([1.0, -2.0, 0.5]))
    assert effective_rank(rank_one) == pytest.approx(1.0, abs=1e-6)
    assert stable_rank(rank_one) == pytest.approx(1.0)
    assert approximate_rank(rank_one) == 1
    assert effective_rank(torch.zeros(4, 3)) == 0.0
    assert stable_rank(torch.zeros(4, 3)) == 0.0


def test_dead_dormant_and_tau_dormant_units():
    acts = torch.zeros(200, 4)
    acts[:, 1] = 1.0  # always active
    acts[0, 2] = 5.0  # active on 0.5% of inputs: dormant, not dead
    acts[:100, 3] = 0.05  # active half the time but tiny
    assert dead_fraction(acts) == 0.25
    assert dormant_fraction(acts) == 0.5  # units 0 and 2
    scores = tau_dormant_scores(acts)
    mean = (0 + 1.0 + 5.0 / 200 + 0.025) / 4
    torch.testing.assert_close(scores, torch.tensor([0, 1.0, 0.025, 0.025]) / mean)
    assert tau_dormant_fraction(acts, tau=0.1) == 0.75


def test_conv_units_are_channels_pooled_over_positions():
    acts = torch.zeros(10, 3, 4, 4)
    acts[:, 0] = 1.0
    acts[0, 1, 0, 0] = 1.0  # 1 of 160 positions: dormant
    assert dead_fraction(acts) == pytest.approx(1 / 3)
    assert dormant_fraction(acts) == pytest.approx(2 / 3)


def test_model_level_diagnostics():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        model.bias.fill_(100.0)
    assert average_weight_magnitude(model) == 2.5
    assert gradient_norm(model) == 0.0
    model(torch.ones(1, 2)).sum().backward()
    # d/dW = ones(2, 2), d/db = ones(2): norm sqrt(6)
    assert gradient_norm(model) == pytest.approx(math.sqrt(6))
    assert feature_norm(torch.tensor([[3.0, 4.0], [0.0, 0.0]])) == 2.5


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="threshold"):
        dormant_fraction(torch.zeros(2, 2), threshold=2.0)
    with pytest.raises(ValueError, match="activations must be"):
        dead_fraction(torch.zeros(2, 2, 2))


def test_ranks_from_one_decomposition_equal_the_separate_functions():
    matrix = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    matrix[:, 3] = 0
    together = diagnostics.ranks(matrix)
    assert together == {
        "effective_rank": diagnostics.effective_rank(matrix),
        "approximate_rank": float(diagnostics.approximate_rank(matrix)),
        "stable_rank": diagnostics.stable_rank(matrix),
    }
