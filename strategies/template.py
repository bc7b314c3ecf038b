"""`PonderTemplate`: Avalanche's SupervisedTemplate for pondering models.

Only ``forward()`` and ``criterion()`` change. ``forward()`` keeps the model's full output
(:class:`~ponderlife.PonderOutput`, :class:`~ponderlife.ACTOutput` or
:class:`~ponderlife.FixedDepthOutput`) on the strategy as ``ponder_output`` and returns the
answer's logits (the prediction at each sample's halting step), so every Avalanche metric,
logger and plugin works unchanged. ``criterion()`` is the model's own loss in training
(PonderNet: reconstruction + β·KL; ACT: task loss + τ·ponder cost; fixed depth: task loss)
and the task loss of the answer in evaluation, where PonderNet's early exit leaves later
steps uncomputed. Everything else (plugins, evaluation, checkpointing) is composed.

Plugins that run the model themselves (EWC, MAS, RWalk, GEM, A-GEM, LwF's teacher, all
through ``strategy.model(x)``) get the answer's logits too: while the template is alive, a
forward hook on its model (and on deep copies of it, such as LwF's teacher) returns
``output.prediction``. The model object, its class, its parameters and its state_dict
stay as they are; the hook leaves with the template (a model the template no longer holds,
or a pickled copy, returns its full output again). The full output is
``strategy.ponder_output`` after each forward, ``strategy.full_output(x)`` for any input,
or ``model(x)`` inside ``with full_outputs():``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch.nn.functional as F
from avalanche.training.templates import SupervisedTemplate
from torch import Tensor, nn

from ponderlife import (
    ACT,
    ACTOutput,
    FixedDepth,
    FixedDepthOutput,
    PonderNet,
    PonderOutput,
    model_loss,
    ponder_step_weights,
)
from ponderlife._checks import check_choice, check_range
from ponderlife.units import StepWeights
from strategies.datasets import TensorBatches, tensor_source

__all__ = ["MeanTaskLoss", "PonderTemplate", "full_outputs", "per_sample_cross_entropy"]

_FULL_OUTPUTS = (PonderOutput, ACTOutput, FixedDepthOutput)
#: The smallest default evaluation minibatch (see PonderTemplate's ``eval_mb_size``).
EVAL_MB_SIZE = 256
_passing = threading.local()  # depth of full_outputs() blocks in this thread


def per_sample_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy per sample (B,): the default task loss for class labels."""
    return F.cross_entropy(logits, target, reduction="none")


class MeanTaskLoss:
    """``criterion(logits, target)``: the batch mean of a per-sample task loss. The
    template's default Avalanche criterion, which plugins such as EWC, RWalk, GEM and A-GEM
    call on the model's logits (equal to ``CrossEntropyLoss()`` for the default loss)."""

    def __init__(self, task_loss: Callable[[Tensor, Tensor], Tensor]):
        self.task_loss = task_loss

    def __call__(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.task_loss(logits, target).mean()


@contextmanager
def full_outputs() -> Iterator[None]:
    """Within this block (in this thread), models hooked by a :class:`PonderTemplate`
    return their full output instead of the answer's logits."""
    depth = getattr(_passing, "depth", 0)
    _passing.depth = depth + 1
    try:
        yield
    finally:
        _passing.depth = depth


class _AnswerHook:
    """Forward hook replacing a pondering model's full output by the answer's logits while
    its template lives. Deep copies of the model (LwF's teacher, say) share the hook; a
    pickled model gets an inert one, so it does not drag the strategy along."""

    def __init__(self, template: PonderTemplate | None = None):
        self._template = None if template is None else weakref.ref(template)

    def __call__(self, module: nn.Module, args, output):
        if self._template is None or self._template() is None:
            return None
        if getattr(_passing, "depth", 0) or not isinstance(output, _FULL_OUTPUTS):
            return None
        return output.prediction

    def __deepcopy__(self, memo) -> _AnswerHook:
        return self

    def __reduce__(self):
        return (_AnswerHook, ())


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
            ``eval_mb_size``, ``device``, ``plugins``, ``evaluator``, ...). ``criterion``,
            which only plugins call (on logits), defaults to the mean ``task_loss``.
            ``eval_mb_size`` defaults to ``max(train_mb_size, 256)`` (Avalanche's default
            is 1, which evaluates a pondering model one unroll per sample: several times
            slower than training on the same data).

    What callers of the model see. While this template lives, ``strategy.model(x)`` (and a
    deep copy of the model) returns the answer's logits ``(B, C)``, not the model's output
    tuple, so Avalanche plugins that run the model themselves (EWC, MAS, RWalk, GEM, A-GEM,
    LwF) compose with this template. The full output of the last forward is
    ``strategy.ponder_output``; :meth:`full_output` computes it for any input (as does
    ``model(x)`` inside ``with full_outputs():``). The model object, class, parameter names
    and state_dict are unchanged; assigning another model to ``strategy.model`` moves the
    hook to it. Training forwards run the model in training mode even if a plugin left it
    in evaluation mode (RWalk does, after its own forward).
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
        self._answer_hook = _AnswerHook(self)
        self._hooked_model: nn.Module | None = None
        self._hook_handle = None
        kwargs.setdefault("criterion", MeanTaskLoss(task_loss))
        if kwargs.get("eval_mb_size") is None:
            kwargs["eval_mb_size"] = max(kwargs.get("train_mb_size", 1), EVAL_MB_SIZE)
        super().__init__(model=model, optimizer=optimizer, **kwargs)

    # The model: every assignment (Avalanche's model adaptation, a plugin replacing the
    # model) goes through the setter, which keeps the answer hook on the current model.
    @property
    def model(self) -> nn.Module:
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        self._model = model
        if model is self._hooked_model:
            return
        if self._hook_handle is not None:
            self._hook_handle.remove()
        self._hook_handle = model.register_forward_hook(self._answer_hook)
        self._hooked_model = model

    def full_output(self, x: Tensor, **kwargs):
        """The model's full output for ``x`` (``**kwargs`` go to its forward, e.g.
        PonderNet's ``generator``), in the model's current mode, bypassing the hook that
        makes ``strategy.model(x)`` return the answer's logits."""
        with full_outputs():
            return self.model(x, **kwargs)

    # A lean data path: datasets built from tensors (all of strategies.streams, and any
    # Avalanche dataset over one TensorDataset without transforms) are sliced in minibatches,
    # task labels included, instead of going through a Python call per sample. Anything
    # else, worker processes, a training set mixing task labels (Avalanche balances its
    # minibatches by task) or a plugin that installs its own loader (replay) uses
    # Avalanche's loaders. A change of the Avalanche internals this reads raises
    # strategies.datasets.AvalancheInternalsError instead of falling back.
    def make_train_dataloader(self, num_workers=0, shuffle=True, drop_last=False, **kwargs):
        tensors = None if num_workers else tensor_source(self.adapted_dataset)
        labels = getattr(self.adapted_dataset, "targets_task_labels", None)
        if tensors is None or (labels is not None and len(labels.uniques) > 1):
            return super().make_train_dataloader(
                num_workers=num_workers, shuffle=shuffle, drop_last=drop_last, **kwargs
            )
        self.dataloader = TensorBatches(tensors, self.train_mb_size, shuffle, drop_last)

    def make_eval_dataloader(self, num_workers=0, **kwargs):
        tensors = None if num_workers else tensor_source(self.adapted_dataset)
        if tensors is None or kwargs.get("shuffle", False):
            return super().make_eval_dataloader(num_workers=num_workers, **kwargs)
        self.dataloader = TensorBatches(tensors, self.eval_mb_size, shuffle=False)

    def forward(self):
        model = self.model
        if self.is_training and not model.training:
            model.train()  # a plugin (RWalk) left it in eval mode: run the training unroll
        self.ponder_output = self.full_output(self.mb_x)
        self.ponder_loss_parts = None
        # Evaluation with early exit leaves each sample's p truncated at its halting step.
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

    def unit_step_weights(self) -> StepWeights | None:
        """Weights (N, B) of the N step-function forwards of this iteration for continual
        backprop and ReDo: each step's reach probability (:func:`ponderlife.ponder_step_weights`;
        None, equal weights, for fixed depth)."""
        return ponder_step_weights(self.ponder_output)
