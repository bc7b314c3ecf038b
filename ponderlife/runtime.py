"""Process-wide runtime settings."""

from __future__ import annotations

import os

import torch

from ponderlife._checks import check_int

#: Threads used when nothing else is said. The models here are small; on the 2-core
#: machines this project targets one thread ran a training step ~7-17x faster than two
#: (1.4 ms vs 10-24 ms), since intra-op parallelism costs more than it saves at this size.
DEFAULT_NUM_THREADS = 1


def configure_threads(num_threads: int | None = None) -> int:
    """Set ``torch.set_num_threads`` and return the value used.

    Order of precedence: the argument, the ``PONDERLIFE_NUM_THREADS`` environment variable,
    :data:`DEFAULT_NUM_THREADS`. Use more threads for large models or batches.
    """
    if num_threads is None:
        env = os.environ.get("PONDERLIFE_NUM_THREADS")
        num_threads = int(env) if env else DEFAULT_NUM_THREADS
    check_int("num_threads", num_threads, 1)
    torch.set_num_threads(num_threads)
    return num_threads
