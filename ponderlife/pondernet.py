"""PonderNet (Banino et al. 2021): a step function unrolled until it decides to halt.

How far the step function is unrolled depends on the mode; the output type does not.

* **Training** (``model.train()``): every sample of the batch steps together until each
  sample's cumulative halting probability exceeds ``1 − epsilon`` or ``max_steps`` is
  reached (the paper's rule, ε = 0.05). The halting distribution is truncated there.
* **Evaluation** (``model.eval()``), by ``halting``:

  - ``"sample"`` (the paper's): at step n draw Λ_n ~ Bernoulli(λ_n) and halt at the
    first Λ_n = 1; halting is forced at ``max_steps``.
  - ``"threshold"`` (deterministic, PALBERT): halt at the first step whose cumulative
    halting probability exceeds ``threshold``; forced at ``max_steps``.
  - ``"expected"``: unroll as in training and answer with the p-weighted mean of the
    per-step predictions.

  With ``early_exit=True`` (the default) ``"sample"`` and ``"threshold"`` stop computing
  a sample as soon as it halts, so evaluation cost follows the halting steps. Steps a
  sample never computed hold NaN in ``predictions`` and ``lambdas``, and its p is the
  halting distribution truncated at its halting step (see ``truncation``). With
  ``early_exit=False`` every sample runs ``max_steps`` steps and p is the full
  distribution; the halting decisions are the same.

In training the halting step is also decided by ``halting`` (over the training unroll),
so ``halting_step`` can be logged in both modes.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ponderlife._checks import check_choice, check_int, check_range
from ponderlife.halting import (
    TRUNCATIONS,
    Truncation,
    expected_steps,
    log_halting_distribution,
    weighted_over_steps,
)
from ponderlife.steps import StepFunction

HaltingMode = Literal["sample", "threshold", "expected"]
HALTING_MODES: tuple[str, ...] = ("sample", "threshold", "expected")


class PonderOutput(NamedTuple):
    """What :class:`PonderNet` returns, in training and in evaluation alike.

    N is the number of steps unrolled for the batch, B the batch size.
    """

    predictions: Tensor  # (N, B, *out) ŷ_n; NaN where early exit skipped the step
    lambdas: Tensor  # (N, B) λ_n; NaN where early exit skipped the step
    p: Tensor  # (N, B) halting distribution, each column sums to 1
    log_p: Tensor  # (N, B) log p, exact where p underflows
    halting_step: Tensor  # (B,) int64, 1-based step whose prediction is the answer
    prediction: Tensor  # (B, *out) ŷ at the halting step ("expected": Σ_n p_n ŷ_n)
    expected_steps: Tensor  # (B,) Σ_n n·p_n


class PonderNet(nn.Module):
    """Wraps a step function ``s(x, h) → (ŷ, h', z)`` (see :mod:`ponderlife.steps`).

    Args:
        step: the step function, applied up to ``max_steps`` times.
        max_steps: cap on the unroll, ≥ 1 (paper's parity: 20).
        epsilon: training unroll stops once every sample's cumulative p exceeds 1 − ε;
            in (0, 1) (paper: 0.05).
        halting: evaluation halting mode, ``"sample"``, ``"threshold"`` or ``"expected"``.
        threshold: cumulative-p level q for ``"threshold"``, in (0, 1).
        truncation: ``"last"`` or ``"renormalise"``, see :mod:`ponderlife.halting`.
        early_exit: in evaluation, stop computing samples that halted.
    """

    def __init__(
        self,
        step: StepFunction,
        *,
        max_steps: int = 20,
        epsilon: float = 0.05,
        halting: HaltingMode = "sample",
        threshold: float = 0.5,
        truncation: Truncation = "last",
        early_exit: bool = True,
    ):
        super().__init__()
        self.step = step
        self.max_steps = check_int("max_steps", max_steps, 1)
        self.epsilon = check_range(
            "epsilon", epsilon, 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )
        self.halting = check_choice("halting", halting, HALTING_MODES)
        self.threshold = check_range(
            "threshold", threshold, 0.0, 1.0, low_inclusive=False, high_inclusive=False
        )
        self.truncation = check_choice("truncation", truncation, TRUNCATIONS)
        self.early_exit = early_exit

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> PonderOutput:
        """Unroll on a batch ``x`` (batch first). ``generator`` drives ``"sample"`` halting."""
        if self.training or self.halting == "expected":
            return self._unroll(x, generator, stop_log_survival=math.log(self.epsilon))
        if self.early_exit:
            return self._unroll_early_exit(x, generator)
        return self._unroll(x, generator, stop_log_survival=-math.inf)

    # -- unroll rules ---------------------------------------------------------------------

    def _unroll(
        self, x: Tensor, generator: torch.Generator | None, stop_log_survival: float
    ) -> PonderOutput:
        """All samples step together until every log P(not halted) < ``stop_log_survival``."""
        state = self.step.initial_state(x)
        predictions, logits, uniforms = [], [], []
        log_survival: Tensor | float = 0.0
        for _ in range(self.max_steps):
            prediction, state, logit = self.step(x, state)
            predictions.append(prediction)
            logits.append(logit)
            uniforms.append(self._uniforms(logit, generator))
            log_survival = log_survival + F.logsigmoid(-logit.detach())
            if bool((log_survival < stop_log_survival).all()):
                break
        logits_t = torch.stack(logits)
        uniforms_t = None if uniforms[0] is None else torch.stack(uniforms)
        halting_step = self._halting_steps(logits_t.detach(), uniforms_t)
        return self._output(torch.stack(predictions), logits_t, halting_step, lengths=None)

    def _unroll_early_exit(self, x: Tensor, generator: torch.Generator | None) -> PonderOutput:
        """Each sample steps until it halts; halted samples leave the working batch."""
        batch = x.shape[0]
        active = torch.arange(batch, device=x.device)  # batch indices still running
        x_active, state = x, self.step.initial_state(x)
        halting_step = torch.full((batch,), self.max_steps, dtype=torch.long, device=x.device)
        log_survival: Tensor | float = 0.0
        for n in range(1, self.max_steps + 1):
            prediction, state, logit = self.step(x_active, state)
            if n == 1:
                predictions = prediction.new_full((self.max_steps, *prediction.shape), math.nan)
                logits = logit.new_full((self.max_steps, batch), math.nan)
            predictions[n - 1, active] = prediction
            logits[n - 1, active] = logit
            # Drawn for the whole batch so every unroll rule consumes the same random numbers.
            uniform = self._uniforms(logits[0], generator)
            log_survival = log_survival + F.logsigmoid(-logit)
            halts = self._halts_now(
                logit, None if uniform is None else uniform[active], log_survival
            )
            halting_step[active[halts]] = n
            running = ~halts
            active, x_active, state = active[running], x_active[running], state[running]
            log_survival = log_survival[running]
            if active.numel() == 0:
                break
        steps_run = int(halting_step.max())
        return self._output(
            predictions[:steps_run], logits[:steps_run], halting_step, lengths=halting_step
        )

    # -- halting decisions ----------------------------------------------------------------

    def _uniforms(self, like: Tensor, generator: torch.Generator | None) -> Tensor | None:
        """One uniform per sample of ``like`` (B,) for ``"sample"`` halting, else None."""
        if self.halting != "sample":
            return None
        return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    def _halts_now(self, logit: Tensor, uniform: Tensor | None, log_survival: Tensor) -> Tensor:
        """Which of the running samples halt at this step (early-exit rule)."""
        if uniform is not None:
            return uniform < torch.sigmoid(logit)
        # Cumulative p up to this step is 1 − P(not halted) = 1 − exp(log_survival).
        return -torch.expm1(log_survival) > self.threshold

    def _halting_steps(self, logits: Tensor, uniforms: Tensor | None) -> Tensor:
        """First halting step per sample over a complete unroll (N, B); forced at N."""
        num_steps = logits.shape[0]
        if self.halting == "expected":
            return torch.full((logits.shape[1],), num_steps, dtype=torch.long, device=logits.device)
        if uniforms is not None:
            halts = uniforms < torch.sigmoid(logits)
        else:
            log_survival = torch.cumsum(F.logsigmoid(-logits), dim=0)
            halts = -torch.expm1(log_survival) > self.threshold
        halts[-1] = True
        return halts.to(torch.int8).argmax(dim=0) + 1

    def _output(
        self, predictions: Tensor, logits: Tensor, halting_step: Tensor, lengths: Tensor | None
    ) -> PonderOutput:
        log_p = log_halting_distribution(
            logits, truncation=self.truncation, from_logits=True, lengths=lengths
        )
        p = log_p.exp()
        if self.halting == "expected":
            prediction = weighted_over_steps(p, predictions)
        else:
            index = (halting_step - 1).reshape(1, -1, *([1] * (predictions.dim() - 2)))
            prediction = predictions.gather(0, index.expand(1, *predictions.shape[1:]))[0]
        return PonderOutput(
            predictions=predictions,
            lambdas=torch.sigmoid(logits),
            p=p,
            log_p=log_p,
            halting_step=halting_step,
            prediction=prediction,
            expected_steps=expected_steps(p),
        )


def reach_probabilities(output: PonderOutput) -> Tensor:
    """P(step n is computed) = P(not halted before n) = Σ_{j≥n} p_j, shape (N, B).

    The weights :class:`~ponderlife.ContinualBackprop` uses to average a step function's
    activations over the N steps of one forward.
    """
    return torch.flip(torch.cumsum(torch.flip(output.p.detach(), [0]), 0), [0])
