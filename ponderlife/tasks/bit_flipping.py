"""Slowly-changing regression ("bit-flipping"), the continual-backprop reference problem.

Each example has m = ``num_slow + num_random`` input bits in {0, 1}: the ``num_slow``
slow bits stay fixed for ``period`` examples and then change (``flip="one"``: one
randomly chosen slow bit flips, the paper's description; ``flip="all"``: all slow bits are
redrawn, the reference code's default), while the ``num_random`` bits are redrawn for
every example. The target is a fixed random network:

* ``num_features`` linear threshold units with weights and biases in {−1, +1}; unit i
  fires (outputs 1) when ``(W x + b)_i > τ_i``, with ``τ_i = beta·(m + 1) − S_i`` and
  ``S_i = (m − Σ_j W_ij + b_i)/2`` (the number of −1 input weights, adjusted by the bias);
* a linear output with weights and bias in {−1, +1}.

Defaults follow the reference: 15 slow + 5 random bits, period 10,000, 100 features,
beta 0.7. The stream is deterministic given its seed and can be saved and restored.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ponderlife._checks import check_choice, check_int, check_range


class RegressionBatch(NamedTuple):
    x: Tensor  # (n, m) float in {0, 1}
    y: Tensor  # (n, 1) float target
    step: Tensor  # (n,) int64 position of each example in the stream


class BitFlippingStream:
    """An endless, seeded stream of slowly-changing regression examples."""

    def __init__(
        self,
        *,
        num_slow: int = 15,
        num_random: int = 5,
        period: int = 10_000,
        flip: str = "one",
        num_features: int = 100,
        beta: float = 0.7,
        seed: int = 0,
    ):
        self.num_slow = check_int("num_slow", num_slow, 1)
        self.num_random = check_int("num_random", num_random, 0)
        self.period = check_int("period", period, 1)
        self.flip = check_choice("flip", flip, ("one", "all"))
        check_int("num_features", num_features, 1)
        self.beta = check_range("beta", beta, 0.0)
        self.num_inputs = num_slow + num_random
        target = torch.Generator().manual_seed(seed)

        def signs(*shape: int) -> Tensor:
            return torch.randint(0, 2, shape, generator=target).float() * 2 - 1

        self.weight, self.bias = signs(num_features, self.num_inputs), signs(num_features)
        self.out_weight, self.out_bias = signs(1, num_features), signs(1)
        m = self.num_inputs
        negatives = (m - self.weight.sum(dim=1) + self.bias) / 2
        self.threshold = beta * (m + 1) - negatives
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.slow = torch.randint(0, 2, (num_slow,), generator=self.generator).float()
        self.position = 0

    def target(self, x: Tensor) -> Tensor:
        """The target network's output for inputs x (n, m): shape (n, 1)."""
        features = ((x @ self.weight.T + self.bias) > self.threshold).float()
        return features @ self.out_weight.T + self.out_bias

    def _change_slow_bits(self) -> None:
        if self.flip == "one":
            bit = int(torch.randint(0, self.num_slow, (1,), generator=self.generator))
            self.slow[bit] = 1 - self.slow[bit]
        else:
            self.slow = torch.randint(0, 2, (self.num_slow,), generator=self.generator).float()

    def next(self, n: int) -> RegressionBatch:
        """The next ``n`` examples of the stream, in order (they may span a change)."""
        check_int("n", n, 1)
        parts = []
        remaining = n
        while remaining:
            room = self.period - self.position % self.period
            take = min(room, remaining)
            noise = torch.randint(0, 2, (take, self.num_random), generator=self.generator).float()
            x = torch.cat([self.slow.expand(take, -1), noise], dim=1)
            steps = torch.arange(self.position, self.position + take)
            parts.append((x, steps))
            self.position += take
            remaining -= take
            if self.position % self.period == 0:
                self._change_slow_bits()
        x = torch.cat([p[0] for p in parts])
        return RegressionBatch(x, self.target(x), torch.cat([p[1] for p in parts]))

    def state_dict(self) -> dict:
        return {
            "slow": self.slow.clone(),
            "position": self.position,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.slow = state["slow"].clone()
        self.position = int(state["position"])
        self.generator.set_state(state["generator"])
