"""`PonderTemplate`: Avalanche's SupervisedTemplate for pondering models.

Only ``forward()`` and ``criterion()`` change. ``forward()`` keeps the model's full output
(:class:`~ponderlife.PonderOutput`, :class:`~ponderlife.ACTOutput` or
:class:`~ponderlife.FixedDepthOutput`) on the strategy as ``ponder_output`` and returns the
answer's logits (the prediction at each sample's halting step), so every Avalanche metric,
logger and plugin works unchanged. ``criterion()`` is the model's own loss in training
(PonderNet: reconstruction + β·KL; ACT: task loss + τ·ponder cost; fixed depth: task loss)
and the task loss of the answer in evaluation, where PonderNet's early exit leaves later
steps uncomputed. Everything else (plugins, evaluation, checkpointing) is composed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from ponderlife import ACT, FixedDepth, PonderNet, model_loss, ponder_step_weights
from ponderlife._checks import check_choice, check_range
from strategies.datasets import TensorBatches, tensor_source

__all__ = ["PonderTemplate", "per_sample_cross_entropy"]


def per_sample_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy per sample (B,): the default task loss for class labels."""
    return F.cross_entropy(logits, target, reduction="none")


class PonderTemplate(SupervisedTemplate):
    """Train a :class:`~ponderlife.PonderNet`, :class:`~ponderlife.ACT` or
    :class:`~ponderlife.FixedDepth` model on an Avalanche stream.

    Args:
        model, optimizer: as for any Avalanche strategy.
        beta: PonderNet's KL weight, ≥ 0 (paper: 0.01).
        lambda_p: PonderNet's prior halting probability, in (0, 1].
        kl_direction: ``"forward"`` (paper) or ``"reverse"``.
        tau: ACT's ponder-cost weight, ≥ 0.
        eval_halting: PonderNet's evaluation halting mode (``"sample"``, ``"threshold"``,
            ``"expected"``); None keeps the model's.
        task_loss: per-sample loss ``(logits (B, C), target (B,)) → (B,)``.
        **kwargs: :class:`SupervisedTemplate`'s (``train_mb_size``, ``train_epochs``,
            ``eval_mb_size``, ``device``, ``plugins``, ``evaluator``, ...).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer,
        beta: float = 0.01,
        lambda_p: float = 0.2,
        kl_direction: str = "forward",
        tau: float = 0.01,
        eval_halting: str | None = None,
        task_loss: Callable[[Tensor, Tensor], Tensor] = per_sample_cross_entropy,
        **kwargs,
    ):
        if not isinstance(model, PonderNet | ACT | FixedDepth):
            raise TypeError(
                "PonderTemplate trains PonderNet, ACT or FixedDepth models, got "
                f"{type(model).__name__}; use an Avalanche strategy for other models"
            )
        self.beta = check_range("beta", beta, 0.0)
        self.lambda_p = check_range("lambda_p", lambda_p, 0.0, 1.0, low_inclusive=False)
        self.kl_direction = check_choice("kl_direction", kl_direction, ("forward", "reverse"))
        self.tau = check_range("tau", tau, 0.0)
        if eval_halting is not None:
            if not isinstance(model, PonderNet):
                raise ValueError("eval_halting applies to PonderNet models only")
            model.halting = check_choice(
                "eval_halting", eval_halting, ("sample", "threshold", "expected")
            )
        self.task_loss = task_loss
        self.ponder_output = None
        self.ponder_loss_parts = None
        self.ponder_distribution_complete = True
        super().__init__(model=model, optimizer=optimizer, **kwargs)

    # A lean data path: datasets built from tensors (all of strategies.streams) are sliced
    # in minibatches instead of going through a Python call per sample. Anything else, or
    # a plugin that installs its own loader (replay), uses Avalanche's loaders.
    def make_train_dataloader(self, shuffle=True, **kwargs):
        tensors = tensor_source(self.adapted_dataset)
        if tensors is None or kwargs.get("num_workers", 0):
            return super().make_train_dataloader(shuffle=shuffle, **kwargs)
        self.dataloader = TensorBatches(tensors, self.train_mb_size, shuffle)

    def make_eval_dataloader(self, **kwargs):
        tensors = tensor_source(self.adapted_dataset)
        if tensors is None or kwargs.get("num_workers", 0):
            return super().make_eval_dataloader(**kwargs)
        self.dataloader = TensorBatches(tensors, self.eval_mb_size, shuffle=False)

    def forward(self):
        self.ponder_output = self.model(self.mb_x)
        self.ponder_loss_parts = None
        # Evaluation with early exit leaves each sample's p truncated at its halting step.
        model = self.model
        self.ponder_distribution_complete = self.is_training or not (
            isinstance(model, PonderNet) and model.early_exit and model.halting != "expected"
        )
        return self.ponder_output.prediction

    def criterion(self):
        output, target = self.ponder_output, self.mb_y
        if not self.is_training:
            return self.task_loss(output.prediction, target).mean()
        # Per-sample parts, kept for the pondering metrics (no second KL computation).
        parts = model_loss(
            output,
            target,
            self.task_loss,
            beta=self.beta,
            lambda_p=self.lambda_p,
            direction=self.kl_direction,
            tau=self.tau,
            reduction="none",
        )
        self.ponder_loss_parts = parts
        return parts.total.mean()

    def unit_step_weights(self) -> Tensor | None:
        """Weights (N, B) of the N step-function forwards of this iteration for continual
        backprop and ReDo: each step's reach probability (:func:`ponderlife.ponder_step_weights`;
        None, equal weights, for fixed depth)."""
        return ponder_step_weights(self.ponder_output)
