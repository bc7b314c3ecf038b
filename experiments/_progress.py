"""Time left on a progress line: every experiment's progress output ends with
``(<elapsed>, ETA <left>)``.

The estimate is the mean time per unit of work done *in this process* times the units
left: a resumed run counts only what it did itself, so the time the killed run spent on
the units it restored does not distort the rate.
"""

from __future__ import annotations

import math

__all__ = ["duration", "timing"]


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 20 s"``, ``"2 h 05 min"``; ``"?"`` for a NaN or negative time."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def timing(done: int, total: int, elapsed: float, start: int = 0) -> str:
    """``"12 s, ETA 1 min 40 s"`` after ``done`` of ``total`` units, ``elapsed`` seconds
    since this process began at unit ``start`` (the units a resumed run restored are not
    timed). ``"ETA ?"`` before the first timed unit; no ETA once everything is done."""
    if done >= total:
        return duration(elapsed)
    timed = done - start
    left = elapsed / timed * (total - done) if timed > 0 else math.nan
    return f"{duration(elapsed)}, ETA {duration(left)}"
