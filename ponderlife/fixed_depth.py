"""Fixed-depth baseline: the same step functions, unrolled a set number of times.

The answer is the last step's prediction; the halting head is ignored. This is the
"no pondering" point of comparison for PonderNet and ACT. A split step
(:class:`~ponderlife.steps.SplitStep`) only advances in the loop; its output head runs
once over all steps' states after it, and its halting head not at all.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ponderlife._checks import check_int
from ponderlife.halting import Reduction, TaskLoss, reduce
from ponderlife.steps import StepFunction, prepare


class FixedDepthOutput(NamedTuple):
    predictions: Tensor  # (N, B, *out)
    halting_step: Tensor  # (B,) int64, always N
    prediction: Tensor  # (B, *out) ŷ_N
    expected_steps: Tensor  # (B,) always N


class FixedDepth(nn.Module):
    """Unroll ``step`` exactly ``num_steps`` (≥ 1) times."""

    def __init__(self, step: StepFunction, *, num_steps: int):
        super().__init__()
        self.step = step
        self.num_steps = check_int("num_steps", num_steps, 1)

    def forward(self, x: Tensor) -> FixedDepthOutput:
        state, inputs = self.step.initial_state(x), prepare(self.step, x)
        split = bool(getattr(self.step, "batched_heads", False))
        kept = []  # the states of a split step, else the predictions
        for _ in range(self.num_steps):
            if split:
                state = self.step.advance(inputs, state)
                kept.append(state)
            else:
                prediction, state, _ = self.step(inputs, state)
                kept.append(prediction)
        predictions = self.step.predict(torch.stack(kept)) if split else torch.stack(kept)
        steps = torch.full((x.shape[0],), self.num_steps, dtype=torch.long, device=x.device)
        return FixedDepthOutput(
            predictions=predictions,
            halting_step=steps,
            prediction=predictions[-1],
            expected_steps=steps.to(predictions.dtype),
        )


class FixedDepthLoss(NamedTuple):
    total: Tensor
    task: Tensor


def fixed_depth_loss(
    output: FixedDepthOutput, target: Tensor, task_loss: TaskLoss, *, reduction: Reduction = "mean"
) -> FixedDepthLoss:
    """The task loss of the last step's prediction (one value per sample, then reduced)."""
    task = reduce(task_loss(output.prediction, target), reduction)
    return FixedDepthLoss(total=task, task=task)
