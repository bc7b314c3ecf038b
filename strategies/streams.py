"""Avalanche benchmarks built from the ponderlife task generators.

Every sample is ``(x, y, difficulty, task_label)``: Avalanche reads ``mb_x = mbatch[0]``,
``mb_y = mbatch[1]`` and the task label from ``mbatch[-1]``, so the difficulty tag in
``mbatch[2]`` rides along unnoticed by Avalanche and is read by
:class:`~strategies.DifficultyMetrics`. Each function validates its arguments before
drawing anything and is deterministic in ``seed``; the test set of an experience is drawn
from the same distribution as its training set.

* :func:`parity_shift_stream` — parity whose range of nonzero counts (and active vector
  size) changes between experiences; difficulty = k.
* :func:`bit_flipping_stream` — the slowly-changing regression problem cut into segments
  (targets are real numbers: use loss metrics, not accuracy); difficulty = segment index.
* :func:`linear_system_stream` — stability / Routh–Hurwitz / controllability of linear
  systems with the dimension n changing between experiences; difficulty = n.
* :func:`permuted_fashion_mnist`, :func:`split_fashion_mnist` — real data read from IDX
  files (see :mod:`ponderlife.tasks.idx`); difficulty = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from torch import Tensor

from ponderlife._checks import check_choice, check_int
from ponderlife.tasks import (
    SYSTEM_TASKS,
    BitFlippingStream,
    controllability_density,
    load_fashion_mnist,
    parity_batch,
    permuted,
    system_batch,
)
from strategies.datasets import experience_difficulty, tagged_dataset

__all__ = [
    "PARITY_LEVELS",
    "bit_flipping_stream",
    "experience_difficulty",
    "linear_system_stream",
    "parity_shift_stream",
    "permuted_fashion_mnist",
    "split_fashion_mnist",
    "tagged_dataset",
]


def _benchmark(train: list, test: list):
    return benchmark_from_datasets(train=train, test=test)


def _repeat(schedule: Sequence, experiences: int | None, name: str) -> list:
    if len(schedule) == 0:
        raise ValueError(f"{name} must name at least one experience")
    count = len(schedule) if experiences is None else check_int("experiences", experiences, 1)
    return [schedule[i % len(schedule)] for i in range(count)]


# ---- parity -----------------------------------------------------------------------------

PARITY_LEVELS: tuple[str, ...] = ("easy", "hard", "all")


def _parity_range(level, size: int) -> tuple[int, int]:
    """``"easy"`` k ∈ 1..P/2, ``"hard"`` k ∈ P/2+1..P, ``"all"`` k ∈ 1..P, or (low, high)."""
    if isinstance(level, str):
        check_choice("schedule entry", level, PARITY_LEVELS)
        half = size // 2
        return {"easy": (1, half), "hard": (half + 1, size), "all": (1, size)}[level]
    low, high = (int(v) for v in level)
    if not 1 <= low <= high <= size:
        raise ValueError(f"schedule entry {level!r} must satisfy 1 ≤ low ≤ high ≤ size={size}")
    return low, high


def parity_shift_stream(
    *,
    size: int = 16,
    schedule: Sequence = ("easy", "hard", "easy"),
    sizes: Sequence[int] | None = None,
    experiences: int | None = None,
    samples_per_experience: int = 2048,
    test_samples: int = 512,
    seed: int = 0,
):
    """Parity (PonderNet §3.1) whose difficulty changes between experiences.

    Args:
        size: P, length of every input vector; int ≥ 2.
        schedule: per experience, ``"easy"`` (k ≤ P/2), ``"hard"`` (k > P/2), ``"all"``
            or an explicit ``(low, high)`` range of nonzero counts; cycled when
            ``experiences`` is larger.
        sizes: optional active vector size per experience (≤ size, cycled): entries past
            it stay 0, which is parity of a shorter vector; the k range is then taken
            relative to the active size.
        experiences: number of experiences (default: ``len(schedule)``).
        samples_per_experience, test_samples: int ≥ 1.
        seed: one seed for the whole stream.

    Labels are classes {0, 1} (parity of the number of +1 entries); difficulty = k.
    """
    check_int("size", size, 2)
    check_int("samples_per_experience", samples_per_experience, 1)
    check_int("test_samples", test_samples, 1)
    levels = _repeat(list(schedule), experiences, "schedule")
    active = _repeat(list(sizes), len(levels), "sizes") if sizes is not None else None
    if active is not None:
        for value in active:
            check_int("sizes entry", value, 2, size)
    plan = [
        (a := size if active is None else active[i], *_parity_range(level, a))
        for i, level in enumerate(levels)
    ]
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for active_size, low, high in plan:
        for count, out in ((samples_per_experience, train), (test_samples, test)):
            batch = parity_batch(
                count, active_size, min_nonzero=low, max_nonzero=high, generator=generator
            )
            x = torch.zeros(count, size)
            x[:, :active_size] = batch.x
            out.append(tagged_dataset(x, batch.y.long(), batch.nonzero))
    return _benchmark(train, test)


# ---- bit-flipping -----------------------------------------------------------------------


def bit_flipping_stream(
    *,
    experiences: int = 10,
    test_samples: int = 1000,
    period: int = 10_000,
    flip: str = "one",
    seed: int = 0,
    **problem,
):
    """The slowly-changing regression problem, one experience per period of the slow
    bits (``period`` examples; the slow bits change between experiences).

    ``problem`` passes :class:`~ponderlife.tasks.BitFlippingStream`'s other arguments
    (``num_slow``, ``num_random``, ``num_features``, ``beta``). Targets are float (B,);
    the test set of an experience uses the same slow bits as its training set.
    """
    check_int("experiences", experiences, 1)
    check_int("test_samples", test_samples, 1)
    source = BitFlippingStream(period=period, flip=flip, seed=seed, **problem)
    # Test draws use their own generator, so the training segments are exactly the
    # reference stream of this seed.
    test_generator = torch.Generator().manual_seed(seed + 7919)
    train, test = [], []
    for index in range(experiences):
        batch = source.next(period)
        difficulty = torch.full((period,), index)
        train.append(tagged_dataset(batch.x, batch.y[:, 0], difficulty))
        # Fresh inputs under the same slow bits: random bits redrawn, target from the net.
        x = batch.x[torch.randint(0, period, (test_samples,), generator=test_generator)]
        x = x.clone()
        fast = slice(source.num_slow, source.num_slow + source.num_random)
        bits = torch.randint(0, 2, x[:, fast].shape, generator=test_generator)
        x[:, fast] = bits.to(x.dtype)
        test.append(tagged_dataset(x, source.target(x)[:, 0], torch.full((test_samples,), index)))
    return _benchmark(train, test)


# ---- linear systems ----------------------------------------------------------------------


def linear_system_stream(
    *,
    task: str = "stability",
    dimensions: Sequence[int] = (2, 3, 4, 5, 6),
    experiences: int | None = None,
    samples_per_experience: int = 2048,
    test_samples: int = 512,
    n_max: int | None = None,
    permute_inputs: bool = False,
    drift: float = 0.0,
    seed: int = 0,
    **options,
):
    """Linear-system tasks (after Charton, Hayat & Lample 2021) with a dimension shift.

    Args:
        task: ``"stability"`` (x' = Ax Hurwitz-stable?), ``"routh"`` (the same label from
            the characteristic polynomial's coefficients) or ``"controllability"``
            (Kalman rank of (A, B) = n?).
        dimensions: n per experience, each ≥ 1, cycled when ``experiences`` is larger.
        n_max: padding size (default: the largest n), so every input has one shape.
        permute_inputs: give every experience after the first its own fixed permutation
            of the input features (the Permuted-MNIST protocol on top of the dimension
            shift: each experience then needs a new input mapping). Matrix inputs only.
        drift: slow drift of the generator, per experience i: stability / Routh shift the
            spectrum by ``drift · i`` (``shift_offset``); controllability scales the
            density of nonzero entries by ``1 + drift · i`` (clamped to (0, 1]). The rule
            (the label) never changes, only the input distribution.
        options: passed to the generator (``balance="label" | "trace" | "none"``,
            ``encoding="matrix" | "tokens"``, ``density`` for controllability).

    Labels are balanced classes per experience; difficulty = n.
    """
    check_choice("task", task, SYSTEM_TASKS)
    check_int("samples_per_experience", samples_per_experience, 1)
    check_int("test_samples", test_samples, 1)
    plan = _repeat(list(dimensions), experiences, "dimensions")
    for n in plan:
        check_int("dimensions entry", n, 1)
    n_max = max(plan) if n_max is None else check_int("n_max", n_max, max(plan))
    if permute_inputs and options.get("encoding", "matrix") != "matrix":
        raise ValueError("permute_inputs applies to encoding='matrix' only")
    rng = np.random.default_rng(seed)
    permutations = torch.Generator().manual_seed(seed + 104_729)
    train, test = [], []
    for index, n in enumerate(plan):
        order = None
        drifted = dict(options)
        if drift and task == "controllability":
            base = options.get("density") or controllability_density(n)
            drifted["density"] = min(1.0, max(1e-3, base * (1 + drift * index)))
        elif drift:
            drifted["shift_offset"] = drift * index
        for count, out in ((samples_per_experience, train), (test_samples, test)):
            batch = system_batch(task, n, count, rng=rng, n_max=n_max, **drifted)
            inputs = batch.inputs
            if permute_inputs and index:
                if order is None:
                    order = torch.randperm(inputs.shape[1], generator=permutations)
                inputs = inputs[:, order]
            out.append(tagged_dataset(inputs, batch.targets, batch.dimension))
    return _benchmark(train, test)


# ---- Fashion-MNIST -----------------------------------------------------------------------


def _subset(images: Tensor, labels: Tensor, count: int | None, generator) -> tuple:
    if count is None or count >= len(images):
        return images, labels
    chosen = torch.randperm(len(images), generator=generator)[:count]
    return images[chosen], labels[chosen]


def permuted_fashion_mnist(
    *,
    experiences: int = 5,
    samples_per_experience: int | None = 10_000,
    test_samples: int | None = 2_000,
    root=None,
    seed: int = 0,
):
    """Permuted Fashion-MNIST: each experience applies its own fixed pixel permutation
    (the first is the identity), 10 classes throughout. ``samples_per_experience`` /
    ``test_samples`` subsample (None: all 60,000 / 10,000). ``root``: an IDX folder (see
    :func:`ponderlife.tasks.load_fashion_mnist`)."""
    check_int("experiences", experiences, 1)
    if samples_per_experience is not None:
        check_int("samples_per_experience", samples_per_experience, 1)
    if test_samples is not None:
        check_int("test_samples", test_samples, 1)
    full_train = load_fashion_mnist("train", root)
    full_test = load_fashion_mnist("test", root)
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for index in range(experiences):
        for source, count, out in (
            (full_train, samples_per_experience, train),
            (full_test, test_samples, test),
        ):
            images, labels = _subset(source.images, source.labels, count, generator)
            if index:
                images = permuted(images, seed * 10_007 + index)
            out.append(tagged_dataset(images, labels, torch.zeros(len(labels))))
    return _benchmark(train, test)


def split_fashion_mnist(*, experiences: int = 5, root=None, seed: int = 0):
    """Split Fashion-MNIST: the 10 classes in a seeded random order, split into
    ``experiences`` groups (10 must divide evenly), one group per experience."""
    check_int("experiences", experiences, 1, 10)
    if 10 % experiences:
        raise ValueError(f"experiences must divide the 10 classes evenly, got {experiences}")
    full_train = load_fashion_mnist("train", root)
    full_test = load_fashion_mnist("test", root)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(seed))
    per = 10 // experiences
    train, test = [], []
    for index in range(experiences):
        classes = order[index * per : (index + 1) * per]
        for source, out in ((full_train, train), (full_test, test)):
            chosen = torch.isin(source.labels, classes)
            labels = source.labels[chosen]
            out.append(tagged_dataset(source.images[chosen], labels, torch.zeros(len(labels))))
    return _benchmark(train, test)
