r"""PonderNet's halting maths (Banino et al. 2021, arXiv 2107.05407, §2).

A step function emits, at every step n = 1..N, the conditional probability
λ_n = P(halt at n | not halted before n). The unconditional halting distribution is

    p_n = λ_n · Π_{j<n} (1 − λ_j).

From halting *logits* z_n (what :class:`~ponderlife.PonderNet` emits) and for log p it
is computed in log space,

    log p_n = log λ_n + Σ_{j<n} log(1 − λ_j),

because the product underflows after a few confident steps and a ``log(0)`` is the
classic NaN source of public implementations; the two logs are ``logsigmoid(z_n)`` and
``logsigmoid(−z_n)``, finite for every finite z. From probabilities λ,
:func:`halting_distribution` computes the product itself (an exclusive cumulative
product), because log λ has an infinite derivative at λ = 0 (log(1 − λ) at λ = 1) and
the chain rule turns that into NaN, whereas the product is a polynomial in λ with finite
gradients everywhere.

Truncation at N (the paper names both options and does not say which it used):

* ``"last"``: the mass of never halting within N steps goes to step N (λ_N := 1);
* ``"renormalise"``: p is divided by its sum over n ≤ N.

Either way every column of p sums to 1.

The regulariser is KL(p ‖ p_G), p_G(n) = λ_p (1 − λ_p)^{n−1} the geometric prior,
truncated at N and renormalised. In that direction (the paper's; direction
``"forward"`` here) it equals

    KL(p ‖ p_G) = −H(p) + (−log(1 − λ_p)) · E_p[n] + const(λ_p, N),

an entropy bonus plus a linear ponder cost. Many public codes compute the reverse
KL(p_G ‖ p), a different regulariser; it is available as ``direction="reverse"``.

Shapes: steps come first, ``(N, B)``, so step n of the batch is ``p[n - 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ponderlife._checks import check_choice, check_range

Truncation = Literal["last", "renormalise"]
KLDirection = Literal["forward", "reverse"]
Reduction = Literal["mean", "sum", "none"]

TRUNCATIONS: tuple[str, ...] = ("last", "renormalise")
KL_DIRECTIONS: tuple[str, ...] = ("forward", "reverse")
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def _step_masks(
    lambdas: Tensor, truncation: Truncation, lengths: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(valid, last)`` of shape (N, B): steps n ≤ length, and the step n = length."""
    check_choice("truncation", truncation, TRUNCATIONS)
    if lambdas.dim() != 2:
        raise ValueError(f"lambdas must have shape (N, B), got {tuple(lambdas.shape)}")
    num_steps = lambdas.shape[0]
    step = torch.arange(1, num_steps + 1, device=lambdas.device)[:, None]
    if lengths is None:
        lengths = torch.full((lambdas.shape[1],), num_steps, device=lambdas.device)
    return step <= lengths, step == lengths


def _log_lambdas(values: Tensor, from_logits: bool) -> tuple[Tensor, Tensor]:
    """``(log λ, log(1 − λ))`` from probabilities or from logits."""
    if from_logits:
        return F.logsigmoid(values), F.logsigmoid(-values)
    return torch.log(values), torch.log1p(-values)


def log_halting_distribution(
    lambdas: Tensor,
    *,
    truncation: Truncation = "last",
    from_logits: bool = False,
    lengths: Tensor | None = None,
) -> Tensor:
    """log p of shape (N, B) from λ (or halting logits, ``from_logits=True``) of shape (N, B).

    See the module docstring for the truncation rules. ``lengths`` (B,), optional, truncates
    column b at step ``lengths[b]`` instead of N (steps after it get p = 0 and their λ are
    ignored); PonderNet's early exit uses it. Entries where p_n is exactly 0 are ``-inf``.
    Under ``"renormalise"``, a column whose λ are all exactly 0 has no halting mass to
    renormalise; it puts all its mass on its last step, as ``"last"`` does.

    Computed in log space from logits and probabilities alike. From probabilities, λ
    exactly 0 or 1 give non-finite gradients (log p_n itself is −inf there); use
    :func:`halting_distribution` when you need gradients at those points.
    """
    valid, last = _step_masks(lambdas, truncation, lengths)
    log_lambda, log_continue = _log_lambdas(lambdas, from_logits)
    # Ignored steps must not leak NaN or inf into the cumulative sums.
    log_lambda = torch.where(valid, log_lambda, torch.zeros_like(log_lambda))
    log_continue = torch.where(valid, log_continue, torch.zeros_like(log_continue))
    # Σ_{j<n} log(1 − λ_j): an exclusive cumulative sum over steps (shifted, not
    # cumsum − x, which is NaN once a λ_j is exactly 1).
    log_survival = torch.cat(
        [torch.zeros_like(log_continue[:1]), torch.cumsum(log_continue[:-1], dim=0)]
    )
    minus_inf = torch.full_like(log_survival, -math.inf)
    log_p = torch.where(valid, log_lambda + log_survival, minus_inf)
    leftover_on_last = torch.where(last, log_survival, log_p)
    if truncation == "last":
        return leftover_on_last
    log_total = torch.logsumexp(log_p, dim=0, keepdim=True)
    return torch.where(torch.isfinite(log_total), log_p - log_total, leftover_on_last)


def _halting_probabilities(
    lambdas: Tensor, truncation: Truncation, lengths: Tensor | None
) -> Tensor:
    """p (N, B) from probabilities λ (N, B) by the product formula, in probability space.

    The same truncation rules and all-zero fallback as :func:`log_halting_distribution`.
    """
    valid, last = _step_masks(lambdas, truncation, lengths)
    # Ignored steps get λ = 0: they take no mass and leave the survival product unchanged.
    lambdas = torch.where(valid, lambdas, 0.0)
    if truncation == "last":
        lambdas = torch.where(last, 1.0, lambdas)
    # Π_{j<n}(1 − λ_j): an exclusive cumulative product over steps (shifted, not the
    # inclusive one divided by 1 − λ_n, which is 0/0 once a λ is exactly 1).
    # torch.cumprod's backward is exact where factors are exactly 0 (tests pin it).
    survival = torch.cat([torch.ones_like(lambdas[:1]), torch.cumprod(1 - lambdas[:-1], dim=0)])
    p = lambdas * survival
    if truncation == "last":
        return p
    total = p.sum(0, keepdim=True)
    has_mass = total > 0
    # The safe divisor keeps the unused branch (0/0) from sending NaN into the gradient.
    renormalised = p / torch.where(has_mass, total, 1.0)
    return torch.where(has_mass, renormalised, torch.where(last, survival, p))


def halting_distribution(
    lambdas: Tensor,
    *,
    truncation: Truncation = "last",
    from_logits: bool = False,
    lengths: Tensor | None = None,
) -> Tensor:
    """p of shape (N, B), ``p_n = λ_n Π_{j<n}(1 − λ_j)``, truncated so each column sums to 1.

    From logits p is ``exp`` of :func:`log_halting_distribution`; from probabilities it is
    the product itself (see the module docstring), so gradients stay finite and exact where
    a λ is exactly 0 or 1.

    Args:
        lambdas: conditional halting probabilities λ_n, shape (N, B); halting logits when
            ``from_logits`` is true (the numerically safe path used by :class:`PonderNet`).
        truncation: ``"last"`` puts the leftover mass on step N; ``"renormalise"`` divides
            by the total mass of the N steps.
        lengths: optional per-sample truncation steps (B,), see
            :func:`log_halting_distribution`.
    """
    if not from_logits:
        return _halting_probabilities(lambdas, truncation, lengths)
    return torch.exp(
        log_halting_distribution(lambdas, truncation=truncation, from_logits=True, lengths=lengths)
    )


def log_geometric_prior(
    lambda_p: float, num_steps: int, *, dtype: torch.dtype = torch.float32, device=None
) -> Tensor:
    """log p_G(n) for n = 1..N: the geometric prior with success probability λ_p, truncated
    at N and renormalised. Shape (N,).

    Computed in float64; values below the dtype's smallest normal number (only reachable
    as λ_p → 1) are floored there so the KL stays finite.
    """
    check_range("lambda_p", lambda_p, 0.0, 1.0, low_inclusive=False)
    log_continue = math.log1p(-lambda_p) if lambda_p < 1.0 else -math.inf
    log_normaliser = math.log(-math.expm1(num_steps * log_continue))
    n = torch.arange(num_steps, dtype=torch.float64, device=device)
    # (n − 1)·log(1 − λ_p), reading 0·(−inf) as 0 for the first step.
    tail = torch.where(n > 0, n * log_continue, torch.zeros_like(n))
    floor = math.log(torch.finfo(dtype).tiny)
    return (math.log(lambda_p) + tail - log_normaliser).clamp_min(floor).to(dtype)


def kl_to_geometric(
    p: Tensor,
    lambda_p: float,
    *,
    direction: KLDirection = "forward",
    log_p: Tensor | None = None,
) -> Tensor:
    """Per-sample KL divergence between p (N, B) and the truncated geometric prior. Shape (B,).

    ``direction="forward"`` is the paper's KL(p ‖ p_G); ``"reverse"`` is KL(p_G ‖ p).
    Steps with p_n = 0 contribute 0 to the forward direction (0·log 0 = 0); in the reverse
    direction log p_n is floored at the dtype's smallest normal number, so the value stays
    finite. Pass ``log_p`` when you have it (PonderNet does): it is exact where ``p``
    underflowed to 0.
    """
    check_choice("direction", direction, KL_DIRECTIONS)
    if p.dim() != 2:
        raise ValueError(f"p must have shape (N, B), got {tuple(p.shape)}")
    log_q = log_geometric_prior(lambda_p, p.shape[0], dtype=p.dtype, device=p.device)[:, None]
    if log_p is None:
        log_p = torch.log(p)
    floor = torch.log(torch.tensor(torch.finfo(p.dtype).tiny, dtype=p.dtype, device=p.device))
    if direction == "forward":
        positive = p > 0
        # The where() inside keeps −inf out of the graph so gradients stay finite.
        safe_log_p = torch.where(positive, log_p, torch.zeros_like(log_p))
        return torch.where(positive, p * (safe_log_p - log_q), torch.zeros_like(p)).sum(0)
    return (log_q.exp() * (log_q - log_p.clamp_min(floor))).sum(0)


def weighted_over_steps(weights: Tensor, values: Tensor) -> Tensor:
    """Σ_n w_n · values_n for weights (N, B) and values (N, B, ...): shape (B, ...)."""
    shaped = weights.reshape(*weights.shape, *([1] * (values.dim() - 2)))
    return (shaped * values).sum(0)


def expected_steps(weights: Tensor) -> Tensor:
    """Σ_n n · w_n (steps counted from 1) for weights (N, B): shape (B,)."""
    steps = torch.arange(1, weights.shape[0] + 1, dtype=weights.dtype, device=weights.device)
    return weighted_over_steps(weights, steps[:, None].expand_as(weights))


class PonderLoss(NamedTuple):
    """The PonderNet objective and its parts, reduced the same way (see ``reduction``)."""

    total: Tensor
    reconstruction: Tensor
    regularisation: Tensor
    expected_steps: Tensor


class _HaltingOutput(Protocol):
    predictions: Tensor
    p: Tensor
    log_p: Tensor


TaskLoss = Callable[[Tensor, Tensor], Tensor]


def per_step_task_loss(predictions: Tensor, target: Tensor, task_loss: TaskLoss) -> Tensor:
    """ℓ(y, ŷ_n) for every step and sample, shape (N, B).

    ``task_loss(prediction, target)`` is called once on all N·B pairs and must return one
    value per pair (e.g. ``F.binary_cross_entropy_with_logits(..., reduction="none")``
    reduced over any feature dimensions). A loss that was already reduced to a scalar is
    rejected: weighting a scalar by p_n is the best-known bug of public PonderNet code.
    """
    num_steps, batch = predictions.shape[:2]
    expanded = target.unsqueeze(0).expand(num_steps, *target.shape)
    flat_predictions = predictions.reshape(num_steps * batch, *predictions.shape[2:])
    losses = task_loss(flat_predictions, expanded.reshape(num_steps * batch, *target.shape[1:]))
    if losses.shape != (num_steps * batch,):
        raise ValueError(
            "task_loss must return one loss per sample (use reduction='none' and reduce "
            f"feature dimensions yourself): expected shape ({num_steps * batch},), "
            f"got {tuple(losses.shape)}"
        )
    return losses.reshape(num_steps, batch)


def reduce(values: Tensor, reduction: Reduction) -> Tensor:
    """Reduce per-sample values (B,) by ``"mean"``, ``"sum"`` or ``"none"``."""
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


def ponder_loss(
    output: _HaltingOutput,
    target: Tensor,
    task_loss: TaskLoss,
    *,
    beta: float,
    lambda_p: float,
    direction: KLDirection = "forward",
    reduction: Reduction = "mean",
) -> PonderLoss:
    """``L = Σ_n p_n ℓ(y, ŷ_n) + β · KL(p ‖ p_G(λ_p))`` per sample, then reduced.

    Args:
        output: a :class:`~ponderlife.PonderOutput` (anything with ``predictions`` (N, B, ...),
            ``p`` and ``log_p`` (N, B)).
        target: targets of shape (B, ...), broadcast over the N steps.
        task_loss: per-sample loss, see :func:`per_step_task_loss`.
        beta: weight of the regulariser, ≥ 0 (paper: 0.01).
        lambda_p: the prior's halting probability, in (0, 1] (prior mean 1/λ_p steps).
        direction: ``"forward"`` = KL(p ‖ p_G) (the paper's), ``"reverse"`` = KL(p_G ‖ p).
        reduction: over the batch, ``"mean"``, ``"sum"`` or ``"none"``.
    """
    check_range("beta", beta, 0.0)
    check_range("lambda_p", lambda_p, 0.0, 1.0, low_inclusive=False)
    losses = per_step_task_loss(output.predictions, target, task_loss)
    reconstruction = (output.p * losses).sum(0)
    regularisation = kl_to_geometric(output.p, lambda_p, direction=direction, log_p=output.log_p)
    return PonderLoss(
        total=reduce(reconstruction + beta * regularisation, reduction),
        reconstruction=reduce(reconstruction, reduction),
        regularisation=reduce(regularisation, reduction),
        expected_steps=reduce(expected_steps(output.p), reduction),
    )
