"""Optimizer support for unit replacement.

:class:`AdamPerElement` is Adam with one step count per parameter *element*. torch's Adam
keeps one scalar step t per tensor, so when continual backprop zeroes a replaced unit's
moments its first update is ``lr·((1 − β1)/(1 − β1^t)) / √((1 − β2)/(1 − β2^t))``: ≈0.7×
a fresh Adam's first update at t = 51 and (1 − β1)/√(1 − β2) ≈ 3.2× once t is in the
thousands (stack.md measured ≈16× one step later, ≈6.5× after 20 steps). With a
per-element step, resetting the step with the moments gives the replaced unit exactly a
fresh Adam's first update, lr·g/(|g| + eps).
When nothing is reset it equals ``torch.optim.Adam`` to floating-point tolerance.

:func:`reset_optimizer_state` zeroes, for a slice of a parameter, every per-element state
tensor an optimizer keeps (Adam's moments and per-element step, SGD's momentum buffer).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ponderlife._checks import check_range


class AdamPerElement(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015) with a per-element step count; arguments as torch's Adam.

    ``weight_decay`` is L2 added to the gradient, as in ``torch.optim.Adam`` (not AdamW).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        check_range("lr", lr, 0.0)
        check_range("betas[0]", betas[0], 0.0, 1.0, high_inclusive=False)
        check_range("betas[1]", betas[1], 0.0, 1.0, high_inclusive=False)
        check_range("eps", eps, 0.0)
        check_range("weight_decay", weight_decay, 0.0)
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(param, alpha=group["weight_decay"])
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros_like(param)
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                step.add_(1)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - torch.pow(beta1, step)
                bias_correction2_sqrt = (1 - torch.pow(beta2, step)).sqrt_()
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
                param.addcdiv_(exp_avg, denom * bias_correction1, value=-group["lr"])
        return loss


def reset_optimizer_state(
    optimizer: torch.optim.Optimizer, param: Tensor, index: Tensor, dim: int = 0
) -> None:
    """Zero the optimizer state of ``param``'s slices ``index`` along ``dim``.

    Every state tensor shaped like ``param`` is reset there: Adam's ``exp_avg``,
    ``exp_avg_sq`` (and ``max_exp_avg_sq``), :class:`AdamPerElement`'s per-element
    ``step``, SGD's ``momentum_buffer``. Scalar state (torch Adam's per-tensor ``step``)
    cannot be reset for a slice and is left alone. A parameter without state yet (no
    optimizer step taken) is skipped. State is looked up fresh on each call, since
    frameworks such as Avalanche replace ``optimizer.state`` wholesale.
    """
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.index_fill_(dim, index, 0)
