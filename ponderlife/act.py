r"""Adaptive Computation Time (Graves 2016, arXiv 1603.08983), PonderNet's baseline.

With halting units h_n = sigmoid(z_n) from the same step functions PonderNet uses:

* N(b) = min{n : Σ_{j≤n} h_j ≥ 1 − ϵ}, forced at ``max_steps``;
* remainder R = 1 − Σ_{n<N} h_n;
* weights w_n = h_n for n < N, w_N = R, 0 after N (they sum to 1);
* the answer is the weighted mean of the per-step predictions, Σ_n w_n ŷ_n (for
  classifiers that means a mean of logits);
* the ponder cost is ρ = N + R; the loss adds τ·ρ, whose gradient flows through R only.

The whole batch runs until its last sample halts; a halted sample's later steps carry
zero weight. Training and evaluation behave the same (ACT is deterministic).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ponderlife._checks import check_int, check_range
from ponderlife.halting import (
    Reduction,
    TaskLoss,
    expected_steps,
    reduce,
    weighted_over_steps,
)
from ponderlife.steps import StepFunction, prepare


class ACTOutput(NamedTuple):
    predictions: Tensor  # (N, B, *out) ŷ_n
    halting_probs: Tensor  # (N, B) h_n (before masking)
    weights: Tensor  # (N, B) w_n, each column sums to 1
    halting_step: Tensor  # (B,) int64 N(b), 1-based
    remainder: Tensor  # (B,) R
    ponder_cost: Tensor  # (B,) N + R
    prediction: Tensor  # (B, *out) Σ_n w_n ŷ_n
    expected_steps: Tensor  # (B,) Σ_n n·w_n


class ACT(nn.Module):
    """ACT around a step function.

    Args:
        step: the step function (see :mod:`ponderlife.steps`).
        max_steps: cap on the unroll, ≥ 1.
        epsilon: halting tolerance ϵ in (0, 1) (Graves: 0.01), so one step can halt.
    """

    def __init__(self, step: StepFunction, *, max_steps: int = 20, epsilon: float = 0.01):
        super().__init__()
        self.step = step
        self.max_steps = check_int("max_steps", max_steps, 1)
        self.epsilon = check_range(
            "epsilon", epsilon, 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )

    def forward(self, x: Tensor) -> ACTOutput:
        state, inputs = self.step.initial_state(x), prepare(self.step, x)
        predictions, halting_probs, weights = [], [], []
        cumulative = remainder = None
        running = None
        halting_step = None
        for n in range(1, self.max_steps + 1):
            prediction, state, logit = self.step(inputs, state)
            h = torch.sigmoid(logit)
            if cumulative is None:
                cumulative = torch.zeros_like(h)
                running = torch.ones_like(h, dtype=torch.bool)
                halting_step = torch.full_like(h, self.max_steps, dtype=torch.long)
                remainder = torch.zeros_like(h)
            halts = running & ((cumulative + h >= 1 - self.epsilon) | (n == self.max_steps))
            leftover = 1 - cumulative
            weight = torch.where(halts, leftover, torch.where(running, h, torch.zeros_like(h)))
            remainder = torch.where(halts, leftover, remainder)
            halting_step = torch.where(halts, torch.full_like(halting_step, n), halting_step)
            cumulative = cumulative + torch.where(running, h, torch.zeros_like(h))
            running = running & ~halts
            predictions.append(prediction)
            halting_probs.append(h)
            weights.append(weight)
            if not bool(running.any()):
                break
        predictions_t, weights_t = torch.stack(predictions), torch.stack(weights)
        return ACTOutput(
            predictions=predictions_t,
            halting_probs=torch.stack(halting_probs),
            weights=weights_t,
            halting_step=halting_step,
            remainder=remainder,
            ponder_cost=halting_step.to(remainder.dtype) + remainder,
            prediction=weighted_over_steps(weights_t, predictions_t),
            expected_steps=expected_steps(weights_t),
        )


class ACTLoss(NamedTuple):
    total: Tensor
    task: Tensor
    ponder_cost: Tensor


def act_loss(
    output: ACTOutput,
    target: Tensor,
    task_loss: TaskLoss,
    *,
    tau: float,
    reduction: Reduction = "mean",
) -> ACTLoss:
    """``ℓ(y, Σ w_n ŷ_n) + τ·(N + R)`` per sample, reduced by ``reduction``.

    ``task_loss`` returns one value per sample (``reduction="none"``); ``tau`` ≥ 0 is the
    time penalty (Graves sweeps 1e-4..1e-1).
    """
    check_range("tau", tau, 0.0)
    task = task_loss(output.prediction, target)
    if task.shape != output.remainder.shape:
        raise ValueError(
            "task_loss must return one loss per sample (reduction='none'): expected shape "
            f"{tuple(output.remainder.shape)}, got {tuple(task.shape)}"
        )
    return ACTLoss(
        total=reduce(task + tau * output.ponder_cost, reduction),
        task=reduce(task, reduction),
        ponder_cost=reduce(output.ponder_cost, reduction),
    )
