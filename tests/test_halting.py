"""The halting maths pinned against loops, hand computations and the paper's identities."""

import math

import pytest
import torch
import torch.nn.functional as F

from ponderlife import (
    PonderOutput,
    halting_distribution,
    kl_to_geometric,
    log_geometric_prior,
    log_halting_distribution,
    ponder_loss,
)


def loop_halting_distribution(
    lambdas: torch.Tensor, truncation: str, lengths: list[int] | None = None
) -> torch.Tensor:
    """A plain transcription of p_n = λ_n Π_{j<n}(1 − λ_j), one number at a time.

    Column b stops at step ``lengths[b]`` (default N). Built from scalar products only, so
    autograd through it gives the product formula's own gradient.
    """
    num_steps, batch = lambdas.shape
    zero = torch.zeros((), dtype=lambdas.dtype)
    columns = []
    for b in range(batch):
        length = num_steps if lengths is None else lengths[b]
        survive = torch.ones((), dtype=lambdas.dtype)
        column = []
        for n in range(1, num_steps + 1):
            if n > length:
                column.append(zero)
                continue
            lam = lambdas[n - 1, b]
            if truncation == "last" and n == length:
                lam = torch.ones((), dtype=lambdas.dtype)
            column.append(lam * survive)
            survive = survive * (1 - lam)
        p_b = torch.stack(column)
        if truncation == "renormalise":
            p_b = p_b / p_b.sum()
        columns.append(p_b)
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("truncation", ["last", "renormalise"])
def test_halting_probabilities_sum_to_one(truncation):
    lambdas = torch.rand(7, 50, generator=torch.Generator().manual_seed(0))
    p = halting_distribution(lambdas, truncation=truncation)
    torch.testing.assert_close(p.sum(0), torch.ones(50))
    assert (p >= 0).all()


@pytest.mark.parametrize("truncation", ["last", "renormalise"])
def test_vectorised_distribution_equals_plain_loop(truncation):
    lambdas = torch.rand(6, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = loop_halting_distribution(lambdas, truncation)
    torch.testing.assert_close(halting_distribution(lambdas, truncation=truncation), expected)
    logits = torch.logit(lambdas)
    torch.testing.assert_close(
        halting_distribution(logits, truncation=truncation, from_logits=True), expected
    )


def test_truncation_rules_differ_only_in_where_leftover_mass_goes():
    lambdas = torch.tensor([[0.5], [0.5]])
    torch.testing.assert_close(halting_distribution(lambdas, truncation="last"), lambdas)
    renormalised = halting_distribution(lambdas, truncation="renormalise")
    torch.testing.assert_close(renormalised, torch.tensor([[2 / 3], [1 / 3]]))


@pytest.mark.parametrize("truncation", ["last", "renormalise"])
def test_log_space_stays_finite_for_extreme_logits(truncation):
    logits = torch.tensor([[-80.0, 80.0, 0.0], [-80.0, 80.0, 30.0], [-80.0, -80.0, -30.0]])
    logits = logits.repeat(10, 1).requires_grad_()
    log_p = log_halting_distribution(logits, truncation=truncation, from_logits=True)
    p = log_p.exp()
    assert torch.isfinite(log_p).all()
    torch.testing.assert_close(p.sum(0), torch.ones(3))
    kl = kl_to_geometric(p, 0.3, log_p=log_p)
    (kl.sum() + log_p.sum()).backward()
    assert torch.isfinite(logits.grad).all()


def test_probabilities_at_zero_and_one_give_finite_p():
    lambdas = torch.tensor([[0.0, 1.0, 1 - 1e-12], [0.0, 0.3, 1e-12], [0.0, 0.9, 0.5]])
    for truncation in ("last", "renormalise"):
        p = halting_distribution(lambdas, truncation=truncation)
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.sum(0), torch.ones(3))


def lambdas_with_exact_zeros_and_ones() -> torch.Tensor:
    """λ (6, 8) in (0, 1) with exact 0s and 1s: first, middle and last steps, repeated."""
    lambdas = 0.01 + 0.98 * torch.rand(
        6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    lambdas[0, 0] = 0.0
    lambdas[2, 1] = 1.0
    lambdas[0, 2] = 1.0
    lambdas[5, 3] = 0.0
    lambdas[1:3, 4] = 0.0
    lambdas[[1, 3], 5] = 1.0
    lambdas[1, 6], lambdas[4, 6] = 0.0, 1.0
    lambdas[:5, 7] = 0.0
    return lambdas


# Per-sample lengths that put a 0 or 1 at, and beyond, a column's last step.
LENGTHS = [6, 2, 1, 5, 3, 4, 5, 6]


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("truncation", ["last", "renormalise"])
def test_probability_gradients_at_exact_zero_and_one_equal_product_formula(truncation, lengths):
    lambdas = lambdas_with_exact_zeros_and_ones().requires_grad_()
    weights = torch.randn(6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    length_tensor = None if lengths is None else torch.tensor(lengths)
    p = halting_distribution(lambdas, truncation=truncation, lengths=length_tensor)
    expected = loop_halting_distribution(lambdas, truncation, lengths)
    (gradient,) = torch.autograd.grad((p * weights).sum(), lambdas)
    (expected_gradient,) = torch.autograd.grad((expected * weights).sum(), lambdas)
    torch.testing.assert_close(p, expected)
    assert torch.isfinite(gradient).all()
    torch.testing.assert_close(gradient, expected_gradient)


def test_renormalise_with_all_zero_lambdas_puts_mass_on_last_step():
    lambdas = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    p = halting_distribution(lambdas, truncation="renormalise", lengths=torch.tensor([3, 2]))
    torch.testing.assert_close(p.detach(), torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    p.sum().backward()
    assert torch.isfinite(lambdas.grad).all()


def test_per_sample_lengths_truncate_each_column():
    lambdas = torch.full((4, 2), 0.5)
    p = halting_distribution(lambdas, lengths=torch.tensor([2, 4]))
    torch.testing.assert_close(p[:, 0], torch.tensor([0.5, 0.5, 0.0, 0.0]))
    torch.testing.assert_close(p[:, 1], torch.tensor([0.5, 0.25, 0.125, 0.125]))


def test_geometric_prior_is_truncated_and_renormalised():
    prior = log_geometric_prior(0.5, 3, dtype=torch.float64).exp()
    torch.testing.assert_close(prior, torch.tensor([4 / 7, 2 / 7, 1 / 7], dtype=torch.float64))
    point_mass = log_geometric_prior(1.0, 3).exp()
    torch.testing.assert_close(point_mass, torch.tensor([1.0, 0.0, 0.0]))


P_HAND = torch.tensor([[0.5], [0.3], [0.2]], dtype=torch.float64)
Q_HAND = (4 / 7, 2 / 7, 1 / 7)  # geometric prior λ_p = 0.5 truncated at 3, renormalised


def test_forward_kl_equals_hand_computation():
    expected = (
        0.5 * math.log(0.5 / Q_HAND[0])
        + 0.3 * math.log(0.3 / Q_HAND[1])
        + 0.2 * math.log(0.2 / Q_HAND[2])
    )
    assert kl_to_geometric(P_HAND, 0.5).item() == pytest.approx(expected, rel=1e-12)


def test_reverse_kl_equals_hand_computation():
    expected = (
        Q_HAND[0] * math.log(Q_HAND[0] / 0.5)
        + Q_HAND[1] * math.log(Q_HAND[1] / 0.3)
        + Q_HAND[2] * math.log(Q_HAND[2] / 0.2)
    )
    assert kl_to_geometric(P_HAND, 0.5, direction="reverse").item() == pytest.approx(expected)


def test_paper_direction_is_entropy_bonus_plus_linear_ponder_cost():
    lambda_p, steps = 0.2, 6
    p = torch.softmax(torch.randn(steps, 5, dtype=torch.float64), dim=0)
    n = torch.arange(1, steps + 1, dtype=torch.float64)[:, None]
    entropy = -(p * p.log()).sum(0)
    expected_steps = (p * n).sum(0)
    normaliser = 1 - (1 - lambda_p) ** steps
    const = -math.log(lambda_p) + math.log(1 - lambda_p) + math.log(normaliser)
    identity = -entropy - math.log(1 - lambda_p) * expected_steps + const
    torch.testing.assert_close(kl_to_geometric(p, lambda_p), identity)


def test_forward_kl_is_finite_when_some_p_are_zero():
    p = torch.tensor([[1.0, 0.5], [0.0, 0.5], [0.0, 0.0]])
    for direction in ("forward", "reverse"):
        assert torch.isfinite(kl_to_geometric(p, 0.4, direction=direction)).all()
    assert kl_to_geometric(p, 0.4)[0].item() == pytest.approx(-math.log(0.4 / (1 - 0.6**3)))


def _hand_output(predictions: torch.Tensor, p: torch.Tensor) -> PonderOutput:
    return PonderOutput(
        predictions=predictions,
        lambdas=p,
        p=p,
        log_p=p.log(),
        halting_step=torch.ones(p.shape[1], dtype=torch.long),
        prediction=predictions[0],
        expected_steps=(p * torch.arange(1, p.shape[0] + 1)[:, None]).sum(0),
    )


def test_reconstruction_weights_each_samples_own_step_losses():
    # Two samples, two steps; squared error per sample so the numbers are easy to follow.
    predictions = torch.tensor([[[1.0], [0.0]], [[3.0], [2.0]]])  # (N=2, B=2, 1)
    target = torch.tensor([[1.0], [1.0]])
    p = torch.tensor([[0.25, 0.5], [0.75, 0.5]])

    def squared_error(prediction, y):
        return ((prediction - y) ** 2).sum(-1)

    losses = ponder_loss(
        _hand_output(predictions, p),
        target,
        squared_error,
        beta=0.0,
        lambda_p=0.5,
        reduction="none",
    )
    # sample 0: 0.25·0 + 0.75·4 = 3;  sample 1: 0.5·1 + 0.5·1 = 1
    torch.testing.assert_close(losses.reconstruction, torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(losses.total, torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(losses.expected_steps, torch.tensor([1.75, 1.5]))


def test_ponder_loss_rejects_a_pre_reduced_task_loss():
    predictions = torch.zeros(3, 4, 1)
    p = torch.full((3, 4), 1 / 3)
    with pytest.raises(ValueError, match="one loss per sample"):
        ponder_loss(
            _hand_output(predictions, p),
            torch.zeros(4),
            lambda yhat, y: F.binary_cross_entropy_with_logits(yhat.squeeze(-1), y),
            beta=0.01,
            lambda_p=0.2,
        )


def test_total_adds_beta_times_kl():
    predictions = torch.zeros(3, 1, 1)
    p = P_HAND.float()
    out = ponder_loss(
        _hand_output(predictions, p),
        torch.zeros(1, 1),
        lambda yhat, y: ((yhat - y) ** 2).sum(-1),
        beta=0.5,
        lambda_p=0.5,
    )
    kl = kl_to_geometric(p, 0.5)
    torch.testing.assert_close(out.regularisation, kl.mean())
    torch.testing.assert_close(out.total, 0.5 * kl.mean())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"beta": -0.1, "lambda_p": 0.5}, "beta"),
        ({"beta": 0.01, "lambda_p": 0.0}, "lambda_p"),
        ({"beta": 0.01, "lambda_p": 1.5}, "lambda_p"),
        ({"beta": 0.01, "lambda_p": 0.5, "reduction": "avg"}, "reduction"),
        ({"beta": 0.01, "lambda_p": 0.5, "direction": "backward"}, "direction"),
    ],
)
def test_bad_loss_arguments_name_the_argument_and_range(kwargs, name):
    predictions = torch.zeros(2, 3, 1)
    p = torch.full((2, 3), 0.5)
    with pytest.raises(ValueError, match=name):
        ponder_loss(
            _hand_output(predictions, p), torch.zeros(3, 1), lambda a, b: a.sum(-1), **kwargs
        )


def test_range_errors_show_the_interval():
    with pytest.raises(ValueError, match=r"lambda_p must be in \(0, 1\], got 0"):
        kl_to_geometric(torch.ones(1, 1), 0.0)
    with pytest.raises(ValueError, match="truncation must be one of 'last', 'renormalise'"):
        halting_distribution(torch.ones(1, 1), truncation="none")
