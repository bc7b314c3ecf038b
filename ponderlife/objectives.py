"""The training loss of any pondering model, and the weight of each of its steps, chosen by
the type of its output.

PonderNet (:class:`~ponderlife.PonderOutput`) → :func:`~ponderlife.ponder_loss` (β, λ_p,
KL direction); ACT (:class:`~ponderlife.ACTOutput`) → :func:`~ponderlife.act_loss` (τ);
fixed depth (:class:`~ponderlife.FixedDepthOutput`) → :func:`~ponderlife.fixed_depth_loss`.
Training loops that switch between the three (the parity experiment, the Avalanche
template) call this one function. :func:`ponder_step_weights` weighs each step's
activations for continual backprop and ReDo in the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ponderlife.act import ACTLoss, ACTOutput, act_loss
from ponderlife.fixed_depth import FixedDepthLoss, FixedDepthOutput, fixed_depth_loss
from ponderlife.halting import KLDirection, PonderLoss, Reduction, TaskLoss, ponder_loss
from ponderlife.pondernet import PonderOutput, reach_probabilities


def model_loss(
    output: PonderOutput | ACTOutput | FixedDepthOutput,
    target: Tensor,
    task_loss: TaskLoss,
    *,
    beta: float = 0.01,
    lambda_p: float = 0.2,
    direction: KLDirection = "forward",
    tau: float = 0.01,
    reduction: Reduction = "mean",
) -> PonderLoss | ACTLoss | FixedDepthLoss:
    """The loss of ``output``'s model: arguments a model does not use are ignored."""
    if isinstance(output, PonderOutput):
        return ponder_loss(
            output,
            target,
            task_loss,
            beta=beta,
            lambda_p=lambda_p,
            direction=direction,
            reduction=reduction,
        )
    if isinstance(output, ACTOutput):
        return act_loss(output, target, task_loss, tau=tau, reduction=reduction)
    if isinstance(output, FixedDepthOutput):
        return fixed_depth_loss(output, target, task_loss, reduction=reduction)
    raise TypeError(
        "model_loss takes a PonderOutput, ACTOutput or FixedDepthOutput, got "
        f"{type(output).__name__}"
    )


def ponder_step_weights(
    output: PonderOutput | ACTOutput | FixedDepthOutput,
) -> Tensor | list[Tensor] | None:
    """How much each of the N step-function forwards of one batch counts, per sample (N, B):
    the probability that the sample reached the step. For PonderNet's per-sample training
    unroll, whose forwards ran on fewer rows as samples stopped, one vector per forward
    with the weight of each of its rows.

    PonderNet: ``P(not halted before n)`` (:func:`~ponderlife.reach_probabilities`). ACT: 1
    up to the sample's halting step N(b) and 0 after it (ACT is deterministic; the batch
    keeps stepping for its slowest sample, but a halted sample's later steps do not
    exist for it). Fixed depth: None, every step of every sample counts the same.
    """
    if isinstance(output, PonderOutput):
        reach = reach_probabilities(output)
        if output.step_rows is None:
            return reach
        # A per-sample unroll: each forward's rows, in its own order (0 after a stop).
        return [reach[n, rows] for n, rows in enumerate(output.step_rows)]
    if isinstance(output, ACTOutput):
        steps = torch.arange(1, output.weights.shape[0] + 1, device=output.weights.device)
        return (steps[:, None] <= output.halting_step).to(output.weights.dtype)
    if isinstance(output, FixedDepthOutput):
        return None
    raise TypeError(
        "ponder_step_weights takes a PonderOutput, ACTOutput or FixedDepthOutput, got "
        f"{type(output).__name__}"
    )
