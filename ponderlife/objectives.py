"""The training loss of any pondering model, chosen by the type of its output.

PonderNet (:class:`~ponderlife.PonderOutput`) → :func:`~ponderlife.ponder_loss` (β, λ_p,
KL direction); ACT (:class:`~ponderlife.ACTOutput`) → :func:`~ponderlife.act_loss` (τ);
fixed depth (:class:`~ponderlife.FixedDepthOutput`) → :func:`~ponderlife.fixed_depth_loss`.
Training loops that switch between the three (the parity experiment, the Avalanche
template) call this one function.
"""

from __future__ import annotations

from torch import Tensor

from ponderlife.act import ACTLoss, ACTOutput, act_loss
from ponderlife.fixed_depth import FixedDepthLoss, FixedDepthOutput, fixed_depth_loss
from ponderlife.halting import KLDirection, PonderLoss, Reduction, TaskLoss, ponder_loss
from ponderlife.pondernet import PonderOutput


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
