"""The parity task of PonderNet §3.1 (after Graves 2016).

An input is a vector of ``size`` entries of which k, drawn uniformly from a range, are set
to +1 or −1 (each sign with probability 1/2) and the rest are 0. The label is the parity
of the number of **+1** entries (1 if odd). This is the paper's task; some public code
counts all nonzero entries instead, which is a different task.

k is the difficulty dial. Splits (``parity_nonzero_range``):

* ``"interpolation"``: k ∈ 1..P for training and testing (paper: P = 64);
* ``"extrapolation_train"``: k ∈ 1..P/2;  ``"extrapolation_test"``: k ∈ P/2+1..P
  (paper: P = 96).

Every batch is drawn from an explicit ``torch.Generator``, so a seed reproduces it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ponderlife._checks import check_choice, check_int

PARITY_SPLITS: tuple[str, ...] = ("interpolation", "extrapolation_train", "extrapolation_test")


class ParityBatch(NamedTuple):
    x: Tensor  # (B, size) float in {−1, 0, +1}
    y: Tensor  # (B,) float in {0, 1}: parity of the number of +1 entries
    nonzero: Tensor  # (B,) int64 k, the difficulty tag


def parity_nonzero_range(size: int, split: str) -> tuple[int, int]:
    """Inclusive range of k for ``split`` (one of :data:`PARITY_SPLITS`)."""
    check_int("size", size, 2)
    check_choice("split", split, PARITY_SPLITS)
    half = size // 2
    return {
        "interpolation": (1, size),
        "extrapolation_train": (1, half),
        "extrapolation_test": (half + 1, size),
    }[split]


def parity_batch(
    batch_size: int,
    size: int,
    *,
    min_nonzero: int = 1,
    max_nonzero: int | None = None,
    generator: torch.Generator | None = None,
) -> ParityBatch:
    """Draw ``batch_size`` parity examples with k uniform in ``min_nonzero..max_nonzero``."""
    check_int("batch_size", batch_size, 1)
    check_int("size", size, 1)
    max_nonzero = size if max_nonzero is None else max_nonzero
    check_int("max_nonzero", max_nonzero, 1, size)
    check_int("min_nonzero", min_nonzero, 1, max_nonzero)
    nonzero = torch.randint(min_nonzero, max_nonzero + 1, (batch_size,), generator=generator)
    # A random permutation per row; the first k positions of it are the nonzero entries.
    ranks = torch.rand(batch_size, size, generator=generator).argsort(dim=1).argsort(dim=1)
    chosen = ranks < nonzero[:, None]
    signs = torch.randint(0, 2, (batch_size, size), generator=generator) * 2 - 1
    x = (chosen * signs).to(torch.float32)
    y = ((x > 0).sum(dim=1) % 2).to(torch.float32)
    return ParityBatch(x, y, nonzero)
