"""Plasticity diagnostics: pure functions of a probe batch's activations or of a model.

Activations are (B, H) for dense layers or (B, C, H, W) for conv layers, where a unit is
a channel and its values are pooled over samples × positions. Definitions follow the
continual-backprop reference code unless said otherwise; each rank notion has its own
name because the literature uses "stable rank" for two different things.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ponderlife._checks import check_range


def _per_unit(activations: Tensor) -> Tensor:
    """(samples, units): conv channels become units, positions become more samples."""
    if activations.dim() == 2:
        return activations
    if activations.dim() == 4:
        return activations.transpose(0, 1).flatten(1).T
    raise ValueError(f"activations must be (B, H) or (B, C, H, W), got {tuple(activations.shape)}")


def dead_fraction(activations: Tensor) -> float:
    """Fraction of units whose output is exactly 0 on every probe input."""
    values = _per_unit(activations)
    return float((values == 0).all(dim=0).float().mean())


def dormant_fraction(activations: Tensor, threshold: float = 0.01) -> float:
    """Fraction of units that are nonzero on fewer than ``threshold`` of the probe inputs
    (reference: 1%); for conv layers the inputs are samples × positions."""
    check_range("threshold", threshold, 0.0, 1.0)
    values = _per_unit(activations)
    return float(((values != 0).float().mean(dim=0) < threshold).float().mean())


def tau_dormant_scores(activations: Tensor) -> Tensor:
    """ReDo's score per unit (Sokar et al. 2023): ``E|h_i| / mean_k E|h_k|``. Shape (units,)."""
    return dormancy_scores(_per_unit(activations).abs().mean(dim=0))


def dormancy_scores(magnitude: Tensor) -> Tensor:
    """ReDo's normalisation of each unit's mean |activation| (units,) by the layer's mean."""
    return magnitude / magnitude.mean().clamp_min(torch.finfo(magnitude.dtype).tiny)


def tau_dormant_fraction(activations: Tensor, tau: float = 0.1) -> float:
    """Fraction of units with ReDo score ≤ τ (ReDo's default τ = 0.1)."""
    check_range("tau", tau, 0.0)
    return float((tau_dormant_scores(activations) <= tau).float().mean())


def _singular_values(matrix: Tensor) -> Tensor:
    return torch.linalg.svdvals(_per_unit(matrix).double())


def effective_rank(matrix: Tensor) -> float:
    """Roy & Vetterli (2007): ``exp(−Σ p_k ln p_k)`` with ``p_k = σ_k / Σσ``, on the
    probe-inputs × units representation matrix. 0 for an all-zero matrix."""
    return _effective_rank(_singular_values(matrix))


def approximate_rank(matrix: Tensor, fraction: float = 0.99) -> int:
    """The reference code's "stable rank": the smallest k whose top-k (unsquared) singular
    values reach ``fraction`` of their sum."""
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
    return _approximate_rank(_singular_values(matrix), fraction)


def stable_rank(matrix: Tensor) -> float:
    """The classical stable rank ``‖A‖_F² / ‖A‖_2² = Σσ² / σ_max²``. 0 for a zero matrix."""
    return _stable_rank(_singular_values(matrix))


def ranks(matrix: Tensor, fraction: float = 0.99) -> dict[str, float]:
    """All three ranks above from one singular value decomposition."""
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
    sigma = _singular_values(matrix)
    return {
        "effective_rank": _effective_rank(sigma),
        "approximate_rank": float(_approximate_rank(sigma, fraction)),
        "stable_rank": _stable_rank(sigma),
    }


def _effective_rank(sigma: Tensor) -> float:
    total = sigma.sum()
    if total == 0:
        return 0.0
    p = sigma / total
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


def _approximate_rank(sigma: Tensor, fraction: float) -> int:
    if sigma.sum() == 0:
        return 0
    cumulative = torch.cumsum(sigma, 0) / sigma.sum()
    return int((cumulative < fraction - 1e-12).sum()) + 1


def _stable_rank(sigma: Tensor) -> float:
    if sigma.numel() == 0 or sigma[0] == 0:
        return 0.0
    return float((sigma**2).sum() / sigma[0] ** 2)


def feature_norm(activations: Tensor) -> float:
    """Mean over probe inputs of the L2 norm of a sample's features."""
    return float(activations.flatten(1).norm(dim=1).mean())


def average_weight_magnitude(model: nn.Module) -> float:
    """Mean |w| over all weight matrices and kernels (parameters with ≥ 2 dimensions)."""
    weights = [p.detach().abs().flatten() for p in model.parameters() if p.dim() >= 2]
    if not weights:
        raise ValueError("model has no weight matrices")
    return float(torch.cat(weights).mean())


def gradient_norm(model: nn.Module) -> float:
    """Global L2 norm of the gradients currently stored on the model's parameters."""
    grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0
