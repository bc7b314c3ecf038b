"""Side-by-side timing that holds still on a shared machine.

Every benchmark here times its variants the same way: the CPU time of this process (not
wall time, which other jobs on the machine stretch), the variants run in rotated order
round after round (A B C, B C A, C A B, ...) so that slow spells hit each in turn, and a
ratio per round, summarised by its median and its min–max over the rounds. The load the
machine was under is printed with the results.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


def cpu_seconds(call: Callable[[], object]) -> float:
    """CPU seconds this process spends in ``call()`` (every thread of it)."""
    start = time.process_time()
    call()
    return time.process_time() - start


def rotated_rounds(
    variants: Mapping[str, Callable[[], object]], rounds: int, *, clock=cpu_seconds
) -> dict[str, list[float]]:
    """Time each variant once per round, the order rotated by one each round; returns
    each variant's times in round order."""
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(clock(variants[name]))
    return times


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of two variants' times: median and range."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, numerator: list[float], denominator: list[float]) -> Ratio:
        if len(numerator) != len(denominator) or not numerator:
            raise ValueError("ratios need the same, non-zero number of rounds on both sides")
        values = [a / b for a, b in zip(numerator, denominator, strict=True)]
        return cls(statistics.median(values), min(values), max(values))

    def __str__(self) -> str:
        return f"{self.median:.2f}× (min–max {self.low:.2f}–{self.high:.2f})"


def load() -> str:
    """The machine's load average, to print beside the results."""
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min) "
        f"on {os.cpu_count()} CPUs"
    )
