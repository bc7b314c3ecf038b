"""Loss gradients equal central finite differences (``torch.autograd.gradcheck``, float64)."""

from typing import NamedTuple

import pytest
import torch
from torch import Tensor

from ponderlife import ACT, act_loss, log_halting_distribution, ponder_loss
from ponderlife.steps import StepFunction, StepOutput


class HaltingOutput(NamedTuple):
    """What :func:`ponder_loss` reads from a PonderNet output."""

    predictions: Tensor
    p: Tensor
    log_p: Tensor


class ReplayStep(StepFunction):
    """Emits given predictions (N, B, D) and halting logits (N, B), one step per call."""

    def __init__(self, predictions: Tensor, logits: Tensor):
        super().__init__()
        self.predictions, self.logits = predictions, logits

    def initial_state(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], 1, dtype=torch.long)

    def forward(self, x: Tensor, state: Tensor) -> StepOutput:
        n = int(state[0, 0])
        return StepOutput(self.predictions[n], state + 1, self.logits[n])


def squared_error(prediction: Tensor, target: Tensor) -> Tensor:
    return ((prediction - target) ** 2).sum(-1)


def random_float64(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("lengths", [None, [4, 2, 3]], ids=["full", "lengths"])
@pytest.mark.parametrize("truncation", ["last", "renormalise"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_ponder_loss_gradients_equal_finite_differences(direction, truncation, lengths):
    logits = random_float64(4, 3, seed=0).requires_grad_()
    predictions = random_float64(4, 3, 2, seed=1).requires_grad_()
    target = random_float64(3, 2, seed=2)
    length_tensor = None if lengths is None else torch.tensor(lengths)

    def losses(logits: Tensor, predictions: Tensor) -> tuple[Tensor, Tensor]:
        log_p = log_halting_distribution(
            logits, truncation=truncation, from_logits=True, lengths=length_tensor
        )
        output = HaltingOutput(predictions, log_p.exp(), log_p)
        loss = ponder_loss(
            output,
            target,
            squared_error,
            beta=0.5,
            lambda_p=0.3,
            direction=direction,
            reduction="none",
        )
        return loss.total, loss.regularisation

    assert torch.autograd.gradcheck(losses, (logits, predictions))


# ACT's halting step N is piecewise constant in h, so every cumulative sum stays at least
# 0.005 away from the threshold 1 − ϵ = 0.99, far beyond gradcheck's 1e-6 perturbation.
# Samples halt at steps 2, 3, 1 and (forced) 4.
ACT_HALTING_PROBS = [
    [0.3, 0.2, 0.995, 0.1],
    [0.8, 0.3, 0.5, 0.2],
    [0.5, 0.6, 0.5, 0.1],
    [0.5, 0.5, 0.5, 0.2],
]


def test_act_loss_gradients_equal_finite_differences_away_from_halting_decisions():
    logits = torch.logit(torch.tensor(ACT_HALTING_PROBS, dtype=torch.float64)).requires_grad_()
    predictions = random_float64(4, 4, 2, seed=3).requires_grad_()
    target = random_float64(4, 2, seed=4)

    def losses(logits: Tensor, predictions: Tensor) -> tuple[Tensor, Tensor]:
        model = ACT(ReplayStep(predictions, logits), max_steps=4, epsilon=0.01)
        output = model(torch.zeros(4, 1))
        assert output.halting_step.tolist() == [2, 3, 1, 4]
        loss = act_loss(output, target, squared_error, tau=0.1, reduction="none")
        return loss.total, loss.ponder_cost

    assert torch.autograd.gradcheck(losses, (logits, predictions))
