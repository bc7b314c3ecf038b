"""Stability, Routh–Hurwitz and controllability of linear systems: numeric task families.

Derived from Charton, Hayat & Lample, "Learning advanced mathematical computations from
examples" (ICLR 2021), who train transformers to decide the stability and the
controllability of small dynamical systems. Here the systems are numeric and linear, and the
dimension n is the difficulty dial:

* ``"stability"`` (F1): is x' = Ax Hurwitz stable, i.e. max Re λ(A) < 0? By default A is
  one twin of a matched pair (:mod:`ponderlife.tasks.spectra`): stable and unstable
  matrices with the same distribution of trace, determinant sign, Frobenius norm and
  diagonal. The shifted-Gaussian ensemble A = G/√n − s_n·I (G standard Gaussian, s_n =
  :func:`stability_shift` the median of max Re λ(G/√n)) remains as the ``balance`` modes
  "label", "trace" and "none". The input is A itself.
* ``"routh"`` (F1b): the same question asked of a polynomial's coefficients, which the
  Routh–Hurwitz test decides in about n elimination steps. By default the polynomials are
  matched pairs (:func:`~ponderlife.tasks.spectra.matched_polynomials`) whose
  coefficients are all positive, so that only the Hurwitz conditions separate the classes;
  the ``balance`` modes "label", "trace" and "none" take the characteristic polynomial of
  A from the shifted-Gaussian ensemble.
* ``"controllability"`` (F2): is the pair (A, B) controllable, i.e. is the Kalman matrix
  [B, AB, …, A^{n−1}B] of rank n? Entries of A (n×n) and B (n×m) lie in {−1, 0, 1}; the
  rank is computed exactly (modulo a large prime, :func:`kalman_rank`).

Every batch function takes an explicit ``numpy.random.Generator`` and is deterministic
given its state. Batches are :class:`SystemBatch` tuples that also carry each example's
dimension and margin (its distance from the decision boundary) so that ponder steps can be
correlated with difficulty. A batch always holds one dimension n; inputs are padded to
``n_max`` so that batches of different n can share one network.

Labels are balanced by rejection sampling: draws are made in chunks and the first examples
of each class (or each class-and-trace-bin cell) are kept until the quotas are full; the
kept examples are then shuffled with the same generator.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ponderlife._checks import check_choice, check_int, check_range
from ponderlife.tasks.spectra import (
    matched_matrices,
    matched_polynomials,
    matched_root_sets,
    matched_spectra,
    polynomial_from_roots,
)

SYSTEM_TASKS: tuple[str, ...] = ("stability", "routh", "controllability")
STABILITY_BALANCES: tuple[str, ...] = ("matched", "label", "trace", "none")
ROUTH_BALANCES: tuple[str, ...] = ("matched", "label", "trace", "none")
ROUTH_ENCODINGS: tuple[str, ...] = ("log", "coefficients")
CONTROLLABILITY_BALANCES: tuple[str, ...] = ("label", "none")
ENCODINGS: tuple[str, ...] = ("matrix", "tokens")

# Measured medians of max Re λ(G/√n), G an n×n standard Gaussian matrix.
_SHIFT_TABLE: dict[int, float] = {
    2: 0.431,
    3: 0.584,
    4: 0.668,
    5: 0.720,
    6: 0.759,
    8: 0.806,
    10: 0.836,
    12: 0.858,
    16: 0.887,
}
# Measured densities at which half the (A, B) pairs (m = 1) are controllable.
_DENSITY_TABLE: dict[int, float] = {3: 0.528, 4: 0.485, 5: 0.436, 6: 0.397, 8: 0.336, 10: 0.290}
_PAD_EIGENVALUE = -3.0  # padding block −3·I (and root −3 for Routh) keeps the label
_MAX_DRAW_FACTOR = 1000  # rejection sampling gives up after this many draws per example
_MIN_MAX_DRAWS = 100_000
# A generator setting is feasible when its rarest cell (label, or label and trace bin) or,
# for the matched ensemble, its proposal acceptance is at least this likely per draw.
FEASIBLE_PROBABILITY = 1 / 200
_FEASIBILITY_SAMPLES = 20_000


class SystemBatch(NamedTuple):
    inputs: Tensor  # float32 (B, F) features, or int64 (B, L) tokens for encoding="tokens"
    targets: Tensor  # int64 (B,) class label: 1 = stable / controllable
    dimension: Tensor  # int64 (B,) the system's dimension n, the difficulty dial
    margin: Tensor  # float32 (B,) |max Re λ(A)| (stability, routh) or the Kalman rank


# ---------------------------------------------------------------------------------------
# number tokens


PAD_TOKEN = 0
ROW_END_TOKEN = 1
MATRIX_SEP_TOKEN = 2
PLUS_TOKEN = 3
MINUS_TOKEN = 4
MANTISSA_OFFSET = 5  # tokens 5 … 1004 are the mantissas 0 … 999
EXPONENT_MIN = -9
EXPONENT_MAX = 3
EXPONENT_OFFSET = MANTISSA_OFFSET + 1000  # tokens 1005 … 1017 are the exponents −9 … 3
VOCAB_SIZE = EXPONENT_OFFSET + EXPONENT_MAX - EXPONENT_MIN + 1
TOKENS_PER_NUMBER = 3


def token_length(shapes: Sequence[tuple[int, int]]) -> int:
    """Length of the token sequence of matrices with these (rows, cols) shapes (no padding).

    Each row takes ``3·cols + 1`` tokens (three per number, then ``ROW_END_TOKEN``) and
    consecutive matrices are separated by one ``MATRIX_SEP_TOKEN``. An n×n matrix takes
    n(3n + 1) tokens: 150 for n = 6, 252 for n = 9.
    """
    if not shapes:
        raise ValueError("shapes must hold at least one (rows, cols) pair")
    for rows, cols in shapes:
        check_int("rows", rows, 1)
        check_int("cols", cols, 1)
    return sum(r * (TOKENS_PER_NUMBER * c + 1) for r, c in shapes) + len(shapes) - 1


def _number_tokens(values: np.ndarray) -> np.ndarray:
    """Tokens (sign, mantissa, exponent) of every entry: shape values.shape + (3,)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("matrices must be finite to be encoded as tokens")
    magnitude = np.abs(values)
    safe = np.where(magnitude > 0, magnitude, 1.0)
    exponent = np.floor(np.log10(safe)).astype(np.int64) - 2
    mantissa = np.rint(safe / 10.0**exponent).astype(np.int64)
    # log10 can be off by one ulp at powers of ten, and rounding can carry to 1000.
    low = mantissa < 100
    exponent = np.where(low, exponent - 1, exponent)
    mantissa = np.where(low, np.rint(safe / 10.0**exponent).astype(np.int64), mantissa)
    high = mantissa >= 1000
    exponent = np.where(high, exponent + 1, exponent)
    mantissa = np.where(high, np.rint(safe / 10.0**exponent).astype(np.int64), mantissa)
    zero = (magnitude == 0) | (exponent < EXPONENT_MIN)
    if np.any(~zero & (exponent > EXPONENT_MAX)):
        largest = 999.5 * 10.0**EXPONENT_MAX
        raise ValueError(f"matrices has an entry too large to encode (|x| must be < {largest:g})")
    sign = np.where(values < 0, MINUS_TOKEN, PLUS_TOKEN)
    sign = np.where(zero, PLUS_TOKEN, sign)
    mantissa = np.where(zero, 0, mantissa)
    exponent = np.where(zero, 0, exponent)
    return np.stack(
        [sign, mantissa + MANTISSA_OFFSET, exponent - EXPONENT_MIN + EXPONENT_OFFSET], axis=-1
    )


def encode_tokens(
    matrices: np.ndarray | Sequence[np.ndarray], *, length: int | None = None
) -> Tensor:
    """Encode stacks of matrices as number tokens, the paper's (sign, mantissa, exponent).

    ``matrices`` is one array (B, r, c) or a sequence of arrays (B, r_i, c_i) with the same
    B. Each entry x is rounded to three significant digits, x ≈ ±m·10^e with m in
    100…999, and written as three tokens: its sign, its mantissa m, its exponent e. Rows are
    written in order, each followed by ``ROW_END_TOKEN``; matrices are separated by
    ``MATRIX_SEP_TOKEN``; the sequence is then padded with ``PAD_TOKEN`` to ``length``
    (default: no padding, :func:`token_length`).

    Vocabulary (``VOCAB_SIZE`` = 1018 tokens):

    * 0 ``PAD_TOKEN``, 1 ``ROW_END_TOKEN``, 2 ``MATRIX_SEP_TOKEN``;
    * 3 ``PLUS_TOKEN``, 4 ``MINUS_TOKEN``;
    * 5 … 1004: mantissas 0 … 999 (``MANTISSA_OFFSET`` + m; 0 only for zero);
    * 1005 … 1017: exponents −9 … 3 (``EXPONENT_OFFSET`` + e − ``EXPONENT_MIN``).

    Zero (and any |x| < 1e-7, which rounds to zero) is (+, 0, e = 0). Entries with
    |x| ≥ 999,500 raise ``ValueError``. Returns int64 tokens (B, L).
    """
    stacks = [matrices] if isinstance(matrices, np.ndarray) else list(matrices)
    if not stacks:
        raise ValueError("matrices must hold at least one array")
    stacks = [np.asarray(m) for m in stacks]
    if any(m.ndim != 3 for m in stacks):
        raise ValueError("matrices must be arrays of shape (B, rows, cols)")
    batch = stacks[0].shape[0]
    if any(m.shape[0] != batch for m in stacks):
        raise ValueError("matrices must all have the same batch size B")
    natural = token_length([(m.shape[1], m.shape[2]) for m in stacks])
    length = natural if length is None else check_int("length", length, natural)
    pieces = []
    for i, stack in enumerate(stacks):
        if i:
            pieces.append(np.full((batch, 1), MATRIX_SEP_TOKEN, dtype=np.int64))
        rows, cols = stack.shape[1:]
        numbers = _number_tokens(stack).reshape(batch, rows, TOKENS_PER_NUMBER * cols)
        row_end = np.full((batch, rows, 1), ROW_END_TOKEN, dtype=np.int64)
        pieces.append(np.concatenate([numbers, row_end], axis=2).reshape(batch, -1))
    pieces.append(np.full((batch, length - natural), PAD_TOKEN, dtype=np.int64))
    return torch.from_numpy(np.concatenate(pieces, axis=1))


def decode_tokens(tokens: Tensor) -> list[list[np.ndarray]]:
    """Invert :func:`encode_tokens`: for each sequence of ``tokens`` (B, L), its matrices.

    Values come back rounded to three significant digits, as float64 arrays.
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape (B, L), got {tuple(tokens.shape)}")
    decoded = []
    for sequence in tokens.tolist():
        matrices: list[np.ndarray] = []
        rows: list[list[float]] = []
        row: list[float] = []
        for position, token in enumerate(sequence):
            if token == PAD_TOKEN:
                break
            if token == ROW_END_TOKEN:
                rows.append(row)
                row = []
            elif token == MATRIX_SEP_TOKEN:
                matrices.append(np.array(rows, dtype=np.float64))
                rows = []
            elif token in (PLUS_TOKEN, MINUS_TOKEN):
                mantissa = sequence[position + 1] - MANTISSA_OFFSET
                exponent = sequence[position + 2] - EXPONENT_OFFSET + EXPONENT_MIN
                sign = -1.0 if token == MINUS_TOKEN else 1.0
                row.append(sign * mantissa * 10.0**exponent)
        if rows:
            matrices.append(np.array(rows, dtype=np.float64))
        decoded.append(matrices)
    return decoded


# ---------------------------------------------------------------------------------------
# argument checks and rejection sampling


def _check_rng(rng: np.random.Generator) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_sizes(n: int, batch_size: int, n_max: int | None) -> int:
    check_int("n", n, 1)
    check_int("batch_size", batch_size, 1)
    return n if n_max is None else check_int("n_max", n_max, n)


def _split_evenly(total: int, parts: int, order: np.ndarray) -> np.ndarray:
    """``total`` split into ``parts`` counts differing by at most one; the larger counts go
    to the parts that come first in ``order``."""
    counts = np.full(parts, total // parts, dtype=np.int64)
    counts[order[: total % parts]] += 1
    return counts


def _fill_quotas(
    draw: Callable[[int], dict[str, np.ndarray]],
    quotas: np.ndarray,
    *,
    rng: np.random.Generator,
    chunk: int,
    what: str,
) -> dict[str, np.ndarray]:
    """Draw chunks until cell c (``draw(k)["cell"]``) has ``quotas[c]`` examples; shuffle.

    Raises ``RuntimeError`` if the quotas cannot be met within a generous number of draws
    (a cell that is impossible or extremely rare for these settings); ``what`` names the
    cells and the settings in the message. The stream builders check feasibility first
    (:func:`generator_feasibility`), so this is a last resort.
    """
    total = int(quotas.sum())
    max_draws = max(_MIN_MAX_DRAWS, _MAX_DRAW_FACTOR * total)
    need = quotas.copy()
    kept: list[dict[str, np.ndarray]] = []
    drawn = 0
    while need.any():
        if drawn >= max_draws:
            raise RuntimeError(
                f"could not fill the balanced batch after {drawn} draws: {what}; still "
                f"missing {need.tolist()} examples per cell, which these settings make "
                "(almost) impossible"
            )
        sample = draw(chunk)
        drawn += chunk
        keep = np.zeros(chunk, dtype=bool)
        for cell in np.flatnonzero(need):
            where = np.flatnonzero(sample["cell"] == cell)[: need[cell]]
            keep[where] = True
            need[cell] -= where.size
        kept.append({key: value[keep] for key, value in sample.items()})
    order = rng.permutation(total)
    return {key: np.concatenate([k[key] for k in kept])[order] for key in kept[0]}


# ---------------------------------------------------------------------------------------
# stability and Routh–Hurwitz


def stability_shift(n: int) -> float:
    """s_n, the median of max Re λ(G/√n) for an n×n standard Gaussian matrix G.

    With A = G/√n − s_n·I, P(A stable) ≈ 0.5. Uses the measured table for n in
    {2, 3, 4, 5, 6, 8, 10, 12, 16}; s_1 = 0 exactly (the median of a standard normal);
    other n are measured by Monte Carlo (20,000 matrices from ``default_rng(0)``, cached).
    """
    check_int("n", n, 1)
    if n == 1:
        return 0.0
    if n in _SHIFT_TABLE:
        return _SHIFT_TABLE[n]
    return _measured_shift(n)


@functools.cache
def _measured_shift(n: int, samples: int = 20_000, chunk: int = 1_000) -> float:
    rng = np.random.default_rng(0)
    maxima = []
    for start in range(0, samples, chunk):
        g = rng.standard_normal((min(chunk, samples - start), n, n)) / math.sqrt(n)
        maxima.append(np.linalg.eigvals(g).real.max(axis=-1))
    return float(np.median(np.concatenate(maxima)))


def _trace_edges(n: int, bins: int, shift_offset: float = 0.0) -> np.ndarray:
    """Inner edges of ``bins`` equal-probability bins of tr(A) for A = G/√n − s·I,
    s = s_n + shift_offset.

    tr(A) = tr(G)/√n − n·s is exactly normal with mean −n·s and variance 1, so the
    quantiles are computed exactly rather than from a calibration sample.
    """
    unit = NormalDist()
    offset = -n * (stability_shift(n) + shift_offset)
    return np.array([offset + unit.inv_cdf(i / bins) for i in range(1, bins)])


def _stable_systems(
    n: int,
    batch_size: int,
    *,
    rng: np.random.Generator,
    balance: str,
    trace_bins: int,
    shift_offset: float = 0.0,
) -> dict[str, np.ndarray]:
    """Draw systems balanced as asked: keys "a" (B, n, n), "eig" (B, n) complex, "label"
    (B,) bool (stable), "margin" (B,) float64. ``balance="matched"`` draws matched pairs
    (:mod:`ponderlife.tasks.spectra`); the others draw A = G/√n − (s_n + shift_offset)·I."""
    check_choice("balance", balance, STABILITY_BALANCES)
    check_int("trace_bins", trace_bins, 1)
    check_range("shift_offset", shift_offset, -10.0, 10.0)
    if balance == "trace" and n == 1:
        raise ValueError("balance='trace' needs n >= 2 (for n = 1 the trace is the eigenvalue)")
    if balance == "matched":
        return _matched_systems(n, batch_size, rng=rng, offset=shift_offset)
    shift = stability_shift(n) + shift_offset
    identity = np.eye(n)
    edges = _trace_edges(n, trace_bins, shift_offset) if balance == "trace" else None

    def draw(k: int) -> dict[str, np.ndarray]:
        a = rng.standard_normal((k, n, n)) / math.sqrt(n) - shift * identity
        eig = np.linalg.eigvals(a)
        top = eig.real.max(axis=-1)
        label = top < 0
        cell = label.astype(np.int64)
        if edges is not None:
            cell = cell + 2 * np.searchsorted(edges, np.trace(a, axis1=1, axis2=2))
        return {"a": a, "eig": eig, "label": label, "margin": np.abs(top), "cell": cell}

    if balance == "none":
        return draw(batch_size)
    stable = batch_size // 2
    if balance == "label":
        quotas = np.array([batch_size - stable, stable])
        what = f"stable and unstable matrices at n={n}, shift_offset={shift_offset:g}"
    else:
        order = rng.permutation(trace_bins)  # which bins get the remainders
        quotas = np.stack(
            [
                _split_evenly(batch_size - stable, trace_bins, order),
                _split_evenly(stable, trace_bins, order),
            ],
            axis=1,
        ).reshape(-1)  # cell = label + 2·bin
        what = (
            f"stable and unstable matrices in each of {trace_bins} trace bins at n={n}, "
            f"shift_offset={shift_offset:g}"
        )
    chunk = max(256, 4 * batch_size)
    return _fill_quotas(draw, quotas, rng=rng, chunk=chunk, what=what)


def _matched_systems(
    n: int, batch_size: int, *, rng: np.random.Generator, offset: float
) -> dict[str, np.ndarray]:
    """``batch_size − batch_size // 2`` unstable and ``batch_size // 2`` stable matrices from
    matched pairs, shuffled."""
    if n < 2:
        raise ValueError("balance='matched' needs n >= 2 (a 1×1 system is its eigenvalue)")
    return _matched_pairs(
        lambda k: matched_matrices(n, k, rng=rng, offset=offset),
        batch_size,
        rng=rng,
        what=f"matched pairs at n={n}, shift_offset={offset:g}",
        why=(
            "the construction (every eigenvalue but the leading block left of −margin, "
            "trace −n·(U(0.3, 0.9) + shift_offset))"
        ),
    )


def _matched_pairs(
    propose: Callable[[int], dict[str, np.ndarray]],
    batch_size: int,
    *,
    rng: np.random.Generator,
    what: str,
    why: str,
) -> dict[str, np.ndarray]:
    """Twins from ``propose(k)`` (up to k pairs, twins adjacent, unstable first) until
    ``batch_size − batch_size // 2`` pairs are kept; the last stable twin is dropped when
    ``batch_size`` is odd; shuffled."""
    pairs = batch_size - batch_size // 2
    kept: list[dict[str, np.ndarray]] = []
    have, proposed = 0, 0
    max_proposals = max(_MIN_MAX_DRAWS, _MAX_DRAW_FACTOR * pairs)
    while have < pairs:
        if proposed >= max_proposals:
            raise RuntimeError(
                f"could not draw {pairs} {what} after {proposed} proposals: {why} is "
                "(almost) impossible there"
            )
        chunk = max(64, 2 * (pairs - have))
        drawn = propose(chunk)
        proposed += chunk
        kept.append(drawn)
        have += drawn["label"].size // 2
    joined = {key: np.concatenate([k[key] for k in kept])[: 2 * pairs] for key in kept[0]}
    if batch_size % 2:  # one unstable twin more than stable ones: drop the last stable twin
        joined = {key: value[:-1] for key, value in joined.items()}
    order = rng.permutation(batch_size)
    return {key: value[order] for key, value in joined.items()}


@functools.cache
def _gaussian_ensemble_sample(n: int) -> tuple[np.ndarray, np.ndarray]:
    """max Re λ(G/√n) and tr(G)/√n of a fixed sample of n×n standard Gaussian matrices G
    (``default_rng(1)``), for the feasibility of shifted and trace-binned draws."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((_FEASIBILITY_SAMPLES, n, n)) / math.sqrt(n)
    return np.linalg.eigvals(g).real.max(axis=-1), np.trace(g, axis1=1, axis2=2)


@functools.lru_cache(maxsize=4096)
def _matched_acceptance(propose: Callable, n: int, offset: float) -> float:
    """Fraction of 4,000 fixed pair proposals of ``propose`` (:func:`matched_spectra` or
    :func:`matched_root_sets`) at (n, offset) that are kept."""
    proposed = propose(n, 4000, rng=np.random.default_rng(2), offset=offset)
    return float(proposed["valid"].mean())


def stability_feasibility(
    n: int, *, balance: str = "matched", shift_offset: float = 0.0, trace_bins: int = 4
) -> float:
    """The probability per draw of the rarest thing the stability generator must draw.

    For ``"label"`` and ``"trace"`` balance: the smallest probability of a cell (a label,
    or a label within a trace bin) of A = G/√n − (s_n + shift_offset)·I, estimated on a
    fixed sample of 20,000 Gaussian matrices (trace bins are equal-probability bins of the
    shifted trace, so a matrix's bin does not depend on the shift). For ``"matched"``: the
    acceptance rate of pair proposals. ``"none"`` needs nothing rare: 1.0. Rejection
    sampling needs about 1 / this many draws per example; the streams refuse settings
    below :data:`FEASIBLE_PROBABILITY`.
    """
    check_int("n", n, 1)
    check_choice("balance", balance, STABILITY_BALANCES)
    if balance == "none":
        return 1.0
    if balance == "matched":
        if n < 2:
            return 0.0
        return _matched_acceptance(matched_spectra, n, round(float(shift_offset), 6))
    top, trace = _gaussian_ensemble_sample(n)
    stable = top < stability_shift(n) + shift_offset
    if balance == "label":
        return float(min(stable.mean(), 1 - stable.mean()))
    # tr(A) = tr(G)/√n − n·(s_n + shift_offset), and the bins shift with it: a matrix's bin
    # is the one its unshifted trace falls in.
    bins = np.searchsorted(_trace_edges(n, trace_bins), trace - n * stability_shift(n))
    cells = [np.mean((bins == b) & (stable == s)) for b in range(trace_bins) for s in (0, 1)]
    return float(min(cells))


def stability_batch(
    n: int,
    batch_size: int,
    *,
    rng: np.random.Generator,
    n_max: int | None = None,
    balance: str = "matched",
    encoding: str = "matrix",
    trace_bins: int = 4,
    shift_offset: float = 0.0,
) -> SystemBatch:
    """A batch of the Hurwitz stability task (F1): label 1 if max Re λ(A) < 0.

    ``balance``:

    * ``"matched"`` (default; n ≥ 2): matched pairs from :mod:`ponderlife.tasks.spectra`,
      exactly ``batch_size // 2`` stable examples. Both classes have the same distribution
      of trace, determinant sign, Frobenius norm and diagonal (constant, tr/n), so none of
      them predicts the label (at n ≥ 3; at n = 2 the trace still does, as it must).
      ``shift_offset`` moves the bulk of the spectrum: −tr/n ~ U(0.3, 0.9) + shift_offset;

    The other modes draw the shifted-Gaussian ensemble A = G/√n − (s_n + shift_offset)·I
    with G an n×n standard Gaussian and s_n = :func:`stability_shift`; ``shift_offset``
    in [−10, 10] (default 0) drifts the generator: positive values move the spectrum left
    (stable examples get larger margins, unstable ones smaller). In this ensemble the sign
    of (−1)ⁿ·det A alone predicts the label for about 90% of examples (a stable matrix
    always has it positive; most unstable draws do not); see ``docs/shortcuts.md``.

    * ``"label"``: exactly ``batch_size // 2`` stable examples, the rest unstable;
    * ``"trace"``: as ``"label"``, and each label also split evenly over ``trace_bins``
      equal-probability bins of tr(A), so that the trace (sum of the eigenvalues, a cheap
      shortcut) carries much less information about the label; needs n ≥ 2. Within a bin
      the trace still correlates with the label (tr A > 0 implies unstable), so a little of
      the shortcut remains; more bins remove more of it at a higher rejection cost;
    * ``"none"``: independent draws (P(stable) ≈ 0.5).

    ``encoding``:

    * ``"matrix"``: float32 inputs (B, n_max²), the row-major flattening of
      block-diag(A, −3·I), which has the same label as A (−3 is a stable eigenvalue);
    * ``"tokens"``: int64 inputs (B, L) with L = n_max(3·n_max + 1), the number tokens of
      the n×n matrix A alone (see :func:`encode_tokens`), padded with ``PAD_TOKEN``;
      n_max ≤ 9 keeps L ≤ 256. Tokens round entries to three significant digits, which
      can flip the label of the rare examples with a margin below about 1e-2.

    ``margin`` is |max Re λ(A)|, the distance from the stability boundary.
    """
    n_max = _check_sizes(n, batch_size, n_max)
    check_choice("encoding", encoding, ENCODINGS)
    rng = _check_rng(rng)
    drawn = _stable_systems(
        n, batch_size, rng=rng, balance=balance, trace_bins=trace_bins, shift_offset=shift_offset
    )
    a = drawn["a"]
    if encoding == "tokens":
        inputs = encode_tokens(a, length=token_length([(n_max, n_max)]))
    else:
        padded = np.zeros((batch_size, n_max, n_max))
        padded[:, :n, :n] = a
        extra = np.arange(n, n_max)
        padded[:, extra, extra] = _PAD_EIGENVALUE
        inputs = torch.from_numpy(padded.reshape(batch_size, -1).astype(np.float32))
    return _system_batch(inputs, drawn["label"], n, drawn["margin"])


def routh_batch(
    n: int,
    batch_size: int,
    *,
    rng: np.random.Generator,
    n_max: int | None = None,
    balance: str = "matched",
    encoding: str = "log",
    trace_bins: int = 4,
    shift_offset: float = 0.0,
) -> SystemBatch:
    """A batch of the Routh–Hurwitz task (F1b): is the monic polynomial
    s^{n_max} + c_1 s^{n_max−1} + … + c_{n_max} Hurwitz stable (every root in Re s < 0)?

    ``balance``:

    * ``"matched"`` (default; n ≥ 3): matched pairs of polynomials
      (:func:`~ponderlife.tasks.spectra.matched_polynomials`): every coefficient of every
      example is positive, so the necessary condition "all coefficients positive" says
      nothing and only the Hurwitz determinants separate the classes; root magnitudes
      spread over decades and each polynomial has its own scale, so that the coefficients'
      signs and magnitudes predict the label no better than 0.56 at n = 3…8
      (``docs/shortcuts.md``). Exactly ``batch_size // 2`` stable examples. The padding
      root is −g, g the geometric mean of the root magnitudes. ``shift_offset`` moves the
      log-magnitudes of the roots other than the leading pair (drift); ``margin`` is the
      scale-free |max Re λ| / g. At n = 3 the Hurwitz condition c₁c₂ > c₃ is linear in
      log-magnitudes, so a linear model on the ``"log"`` encoding learns the task itself.
    * ``"label"``, ``"trace"``, ``"none"``: A is drawn as in :func:`stability_batch` from
      the shifted-Gaussian ensemble (``shift_offset`` too) and the input is its
      characteristic polynomial det(sI − A)·(s + 3)^(n_max − n) (the padding root −3 is
      stable). Known shortcut: "all coefficients positive" predicts 0.93–0.98 of the
      labels here; ``margin`` is |max Re λ(A)|.

    ``encoding``:

    * ``"log"`` (default): float32 (B, 2·n_max), the signs of c_1 … c_{n_max} then
      log10 |c_k| (clipped to [−30, 30]): comparable magnitudes whatever the degree and
      scale (raw coefficients reach 10^10 and more);
    * ``"coefficients"``: float32 (B, n_max), the raw coefficients.
    """
    n_max = _check_sizes(n, batch_size, n_max)
    check_choice("balance", balance, ROUTH_BALANCES)
    check_choice("encoding", encoding, ROUTH_ENCODINGS)
    check_int("trace_bins", trace_bins, 1)
    rng = _check_rng(rng)
    if balance == "matched":
        check_range("shift_offset", shift_offset, -10.0, 10.0)
        if n < 3:
            raise ValueError(
                f"routh balance='matched' needs n >= 3, got n={n}: up to degree 2 a "
                "polynomial with all coefficients positive is stable, so an unstable twin "
                "cannot match it (use balance='label' to study n = 2)"
            )
        drawn = _matched_pairs(
            lambda k: matched_polynomials(n, k, rng=rng, offset=shift_offset, n_max=n_max),
            batch_size,
            rng=rng,
            what=f"matched polynomial pairs at n={n}, shift_offset={shift_offset:g}",
            why="an unstable twin with every coefficient positive and every root magnitude "
            "within [1e-3, 1e3]",
        )
        coefficients = drawn["coefficients"]
    else:
        drawn = _stable_systems(
            n,
            batch_size,
            rng=rng,
            balance=balance,
            trace_bins=trace_bins,
            shift_offset=shift_offset,
        )
        pad = np.full((batch_size, n_max - n), _PAD_EIGENVALUE, dtype=np.complex128)
        coefficients = polynomial_from_roots(np.concatenate([drawn["eig"], pad], axis=1))[:, 1:]
    if encoding == "log":
        magnitude = np.log10(np.maximum(np.abs(coefficients), 1e-30))
        inputs = np.concatenate([np.sign(coefficients), np.clip(magnitude, -30, 30)], axis=1)
    else:
        inputs = coefficients
    inputs = torch.from_numpy(inputs.astype(np.float32))
    return _system_batch(inputs, drawn["label"], n, drawn["margin"])


def routh_feasibility(
    n: int, *, balance: str = "matched", shift_offset: float = 0.0, trace_bins: int = 4
) -> float:
    """The probability per draw of the rarest thing the Routh generator must draw: for
    ``"matched"`` the acceptance rate of pair proposals (the unstable twin keeps every
    coefficient positive), otherwise as :func:`stability_feasibility`."""
    check_int("n", n, 1)
    check_choice("balance", balance, ROUTH_BALANCES)
    if balance != "matched":
        return stability_feasibility(
            n, balance=balance, shift_offset=shift_offset, trace_bins=trace_bins
        )
    if n < 3:
        return 0.0
    return _matched_acceptance(matched_root_sets, n, round(float(shift_offset), 6))


def _system_batch(inputs: Tensor, label: np.ndarray, n: int, margin: np.ndarray) -> SystemBatch:
    targets = torch.from_numpy(label.astype(np.int64))
    dimension = torch.full((len(label),), n, dtype=torch.int64)
    return SystemBatch(inputs, targets, dimension, torch.from_numpy(margin.astype(np.float32)))


# ---------------------------------------------------------------------------------------
# controllability


def controllability_density(n: int) -> float:
    """ρ_n, the density of nonzero entries at which about half of the pairs (A, B) with
    m = 1 are controllable.

    Measured for n in {3, 4, 5, 6, 8, 10} (.528 .485 .436 .397 .336 .290); linearly
    interpolated in n in between, and clamped to the nearest measured value outside [3, 10]
    (so n = 1, 2 use .528 and n > 10 uses .290; expect the label balance of undrawn n, and
    of m > 1, to be off 50/50, which the ``balance="label"`` rejection corrects).
    """
    check_int("n", n, 1)
    known = sorted(_DENSITY_TABLE)
    return float(np.interp(n, known, [_DENSITY_TABLE[k] for k in known]))


def _is_prime(p: int) -> bool:
    if p < 2:
        return False
    return all(p % d for d in range(2, math.isqrt(p) + 1))


_MAX_PRIME = 2**31 - 1  # keeps every product of two residues, plus one, inside int64


@functools.lru_cache(maxsize=16)
def _check_prime(prime: int) -> int:
    check_int("prime", prime, 2, _MAX_PRIME)
    if not _is_prime(prime):
        raise ValueError(f"prime must be a prime number in [2, {_MAX_PRIME}], got {prime}")
    return prime


def _as_residues(matrix: np.ndarray, name: str, prime: int) -> np.ndarray:
    """Integer matrix → int64 residues in [0, prime)."""
    matrix = np.asarray(matrix)
    if matrix.dtype == object:
        try:
            return np.vectorize(lambda v: int(v) % prime, otypes=[np.int64])(matrix)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must hold integers") from error
    if matrix.dtype.kind == "b":
        return matrix.astype(np.int64)
    if matrix.dtype.kind == "u":
        return (matrix % np.uint64(prime)).astype(np.int64)
    if matrix.dtype.kind == "i":
        return matrix.astype(np.int64) % prime
    if matrix.dtype.kind == "f":
        if not np.all(np.isfinite(matrix)) or np.any(matrix != np.rint(matrix)):
            raise ValueError(f"{name} must hold integers, got non-integer floats")
        if np.any(np.abs(matrix) > 2**53):
            raise ValueError(f"{name} has float entries too large to be exact integers")
        return matrix.astype(np.int64) % prime
    raise ValueError(f"{name} must hold integers, got dtype {matrix.dtype}")


def _matmul_mod(a: np.ndarray, x: np.ndarray, prime: int) -> np.ndarray:
    """(a @ x) mod prime for residues a (…, n, n) and x (…, n, k) without int64 overflow:
    the inner sum is accumulated one term at a time, each term < prime²."""
    out = np.zeros(a.shape[:-1] + x.shape[-1:], dtype=np.int64)
    for j in range(a.shape[-1]):
        out = (out + a[..., :, j : j + 1] * x[..., j : j + 1, :]) % prime
    return out


def _kalman_residues(a: np.ndarray, b: np.ndarray, prime: int) -> np.ndarray:
    """The Kalman matrix [B, AB, …, A^{n−1}B] mod prime: (…, n, n·m) from residues."""
    blocks = [b]
    for _ in range(a.shape[-1] - 1):
        blocks.append(_matmul_mod(a, blocks[-1], prime))
    return np.concatenate(blocks, axis=-1)


def _ranks_mod_prime(matrices: np.ndarray, prime: int) -> np.ndarray:
    """Ranks over GF(prime) of a stack (B, r, c) of residues, by batched elimination.

    Fraction-free: a row below the pivot row p is replaced by row·p[col] − row[col]·p, which
    needs no modular inverse; every product stays below prime² < 2^62.
    """
    m = matrices.copy()
    batch, rows, cols = m.shape
    rank = np.zeros(batch, dtype=np.int64)
    row_index = np.arange(rows)
    for col in range(cols):
        open_rows = row_index[None, :] >= rank[:, None]
        candidates = (m[:, :, col] != 0) & open_rows
        has = candidates.any(axis=1)
        if not has.any():
            continue
        which = np.flatnonzero(has)
        top = rank[which]
        pivot = candidates[which].argmax(axis=1)
        swapped = m[which, top].copy()
        m[which, top] = m[which, pivot]
        m[which, pivot] = swapped
        pivot_row = m[which, top]  # (k, cols)
        block = m[which]  # (k, rows, cols)
        factor = block[:, :, col]  # (k, rows)
        eliminated = (
            block * pivot_row[:, None, col : col + 1] % prime
            - factor[:, :, None] * pivot_row[:, None, :] % prime
        ) % prime
        below = row_index[None, :] > top[:, None]
        m[which] = np.where(below[:, :, None], eliminated, block)
        rank[which] += 1
    return rank


def kalman_rank(a: np.ndarray, b: np.ndarray, prime: int = 2**31 - 1) -> int:
    """Exact rank of the Kalman matrix [B, AB, …, A^{n−1}B] of INTEGER matrices a (n, n)
    and b (n, m); (A, B) is controllable iff the rank is n.

    The rank is computed by Gaussian elimination over the integers modulo ``prime`` (a
    prime ≤ 2^31 − 1, so products fit in int64), which avoids the ill-conditioning of
    floating-point ranks. The rank mod p never exceeds the rational rank and equals it
    unless p divides every nonzero minor of maximal size, which for a large prime is
    vanishingly unlikely: with entries in {−1, 0, 1} and n ≤ 16, as in
    :func:`controllability_batch`, it is fine. Entries may be any integers (int arrays,
    integer-valued floats, or Python ints in object arrays); they are reduced mod p first.
    """
    prime = _check_prime(prime)
    a_res = _as_residues(a, "a", prime)
    b_res = _as_residues(b, "b", prime)
    if a_res.ndim != 2 or a_res.shape[0] != a_res.shape[1] or a_res.shape[0] < 1:
        raise ValueError(f"a must be a square (n, n) matrix with n >= 1, got {a_res.shape}")
    if b_res.ndim != 2 or b_res.shape[0] != a_res.shape[0] or b_res.shape[1] < 1:
        raise ValueError(f"b must have shape (n, m) = ({a_res.shape[0]}, m), got {b_res.shape}")
    kalman = _kalman_residues(a_res[None], b_res[None], prime)
    return int(_ranks_mod_prime(kalman, prime)[0])


def _controllability_draws(
    rng: np.random.Generator, k: int, n: int, inputs_m: int, density: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` integer pairs A (k, n, n), B (k, n, m) with entries nonzero with probability
    ``density`` (then ±1 with equal probability), and their exact Kalman ranks (k,)."""
    u = rng.random((k, n, n + inputs_m))
    entries = np.where(u < density / 2, -1, np.where(u < density, 1, 0)).astype(np.int64)
    a, b = entries[:, :, :n], entries[:, :, n:]
    kalman = _kalman_residues(a % _MAX_PRIME, b % _MAX_PRIME, _MAX_PRIME)
    return a, b, _ranks_mod_prime(kalman, _MAX_PRIME)


def controllability_batch(
    n: int,
    batch_size: int,
    *,
    rng: np.random.Generator,
    n_max: int | None = None,
    inputs_m: int = 1,
    density: float | None = None,
    encoding: str = "matrix",
    balance: str = "label",
) -> SystemBatch:
    """A batch of the controllability task (F2): label 1 if rank[B, AB, …, A^{n−1}B] = n.

    Entries of A (n×n) and B (n×m, m = ``inputs_m``) are independently nonzero with
    probability ``density`` (default :func:`controllability_density`, the measured 50/50
    density for m = 1, interpolated in n and clamped outside [3, 10]) and then ±1 with equal
    probability. The rank is exact (:func:`kalman_rank`).

    ``balance="label"``: exactly ``batch_size // 2`` controllable examples, by rejection;
    ``"none"``: independent draws.

    ``encoding``:

    * ``"matrix"``: float32 inputs (B, n_max² + n_max·m): A zero-padded to n_max×n_max,
      flattened row-major, then B zero-padded to n_max×m, flattened row-major. Zero padding
      adds uncontrollable states, so the label is that of the unpadded system (rank = n,
      not n_max); the padding is all zeros, so n can be read from the input;
    * ``"tokens"``: int64 inputs (B, L) with L = :func:`token_length` of
      [(n_max, n_max), (n_max, m)]: the tokens of A, ``MATRIX_SEP_TOKEN``, the tokens of B
      (unpadded matrices, so n is the number of rows), padded with ``PAD_TOKEN``.

    ``margin`` is the Kalman rank as a float (n for controllable pairs; smaller ranks are
    further from controllable).
    """
    n_max = _check_sizes(n, batch_size, n_max)
    check_int("inputs_m", inputs_m, 1)
    density = controllability_density(n) if density is None else density
    check_range("density", density, 0.0, 1.0, low_inclusive=False)
    check_choice("encoding", encoding, ENCODINGS)
    check_choice("balance", balance, CONTROLLABILITY_BALANCES)
    rng = _check_rng(rng)

    def draw(k: int) -> dict[str, np.ndarray]:
        a, b, rank = _controllability_draws(rng, k, n, inputs_m, density)
        label = rank == n
        return {"a": a, "b": b, "label": label, "rank": rank, "cell": label.astype(np.int64)}

    if balance == "none":
        drawn = draw(batch_size)
    else:
        controllable = batch_size // 2
        quotas = np.array([batch_size - controllable, controllable])
        what = (
            f"controllable and uncontrollable pairs at n={n}, inputs_m={inputs_m}, "
            f"density={density:g}"
        )
        chunk = max(256, 4 * batch_size)
        drawn = _fill_quotas(draw, quotas, rng=rng, chunk=chunk, what=what)
    a, b = drawn["a"], drawn["b"]
    if encoding == "tokens":
        length = token_length([(n_max, n_max), (n_max, inputs_m)])
        inputs = encode_tokens([a, b], length=length)
    else:
        padded_a = np.zeros((batch_size, n_max, n_max), dtype=np.float32)
        padded_a[:, :n, :n] = a
        padded_b = np.zeros((batch_size, n_max, inputs_m), dtype=np.float32)
        padded_b[:, :n] = b
        inputs = torch.from_numpy(
            np.concatenate(
                [padded_a.reshape(batch_size, -1), padded_b.reshape(batch_size, -1)], axis=1
            )
        )
    return _system_batch(inputs, drawn["label"], n, drawn["rank"].astype(np.float64))


@functools.lru_cache(maxsize=4096)
def controllability_feasibility(n: int, density: float, inputs_m: int = 1) -> float:
    """The smaller of P(controllable) and P(uncontrollable) per draw at this density,
    estimated from 4,000 draws of a fixed generator (cached)."""
    check_int("n", n, 1)
    check_range("density", density, 0.0, 1.0, low_inclusive=False)
    *_, rank = _controllability_draws(np.random.default_rng(3), 4000, n, inputs_m, density)
    controllable = float((rank == n).mean())
    return min(controllable, 1.0 - controllable)


# ---------------------------------------------------------------------------------------
# dispatch

_REGISTRY: dict[str, Callable[..., SystemBatch]] = {
    "stability": stability_batch,
    "routh": routh_batch,
    "controllability": controllability_batch,
}


def system_batch(
    task: str,
    n: int,
    batch_size: int,
    *,
    rng: np.random.Generator,
    n_max: int | None = None,
    **kwargs: object,
) -> SystemBatch:
    """A batch of ``task`` (one of :data:`SYSTEM_TASKS`); ``kwargs`` go to its function
    (:func:`stability_batch`, :func:`routh_batch` or :func:`controllability_batch`)."""
    check_choice("task", task, SYSTEM_TASKS)
    return _REGISTRY[task](n, batch_size, rng=rng, n_max=n_max, **kwargs)
