"""The matched ensembles: stable and unstable systems (and polynomials) that look alike to
cheap features.

In the shifted-Gaussian ensemble of :func:`~ponderlife.tasks.stability_batch` a learner can
predict stability without looking at the spectrum: a stable matrix always has a negative
trace and (−1)ⁿ·det A > 0, and most unstable draws have neither, so the sign of the
determinant alone is right for about 90% of examples. Here every example is drawn as one
twin of a *pair*: a stable and an unstable system that share every statistic a shortcut
could read, and differ only where the label lives.

A pair shares

* the margin m ~ U(0.05, 0.5): the rightmost eigenvalue has real part −m (stable twin) or
  +m (unstable twin), so |max Re λ| = m for both;
* the kind of the leading block: a complex pair a ± iω (ω ~ U(0.2, 1.5)), or two real
  eigenvalues; an unstable real lead is two positive eigenvalues (m and m·U(0.1, 1)), so
  that (−1)ⁿ·det A > 0 in both classes: it is positive for every example;
* the trace T = −n·(U(0.3, 0.9) + offset): the other n − 2 eigenvalues (real, or complex
  pairs in a shared pattern) have a shared shape, scaled in each twin so that the trace is
  exactly T; each lies left of −m;
* the Frobenius norm ‖A‖_F = r with r²/n ~ U(2.5, 4): the strictly upper-triangular part
  of the Schur form (the non-normal part) is scaled to make up the difference.

Each twin is then A = Q S Qᵀ with its own Haar-random orthogonal Q (trace, norm and spectrum
are invariant), followed by a sequence of Givens rotations that make the diagonal constant
(every real matrix is orthogonally similar to one whose diagonal entries all equal tr A / n)
and a random signed permutation. So trace, det sign, Frobenius norm and the diagonal's mean,
min and max have the same distribution in both classes; they say nothing about the label.
Labels are recomputed from the eigenvalues (float64) of the float32 matrix the learner sees;
a pair whose recomputed labels disagree with its construction is dropped.

At n = 2 nothing can be matched: a 2×2 matrix is stable exactly when its trace is negative
and its determinant positive, so with the determinant sign fixed the trace decides the
label. The pairs are still drawn (both twins have (−1)ⁿ·det > 0) but their traces differ;
n = 2 measures whether a learner finds the sign of the trace.

The Routh task's polynomials are matched the same way (:func:`matched_polynomials`, at
the end of this module): twins share every root but the sign of a leading complex pair, and
every coefficient is positive in both classes.
"""

from __future__ import annotations

import numpy as np

MARGIN_RANGE = (0.05, 0.5)  # |max Re λ|, shared by the twins of a pair
FREQUENCY_RANGE = (0.2, 1.5)  # ω of every complex pair
TRACE_RANGE = (0.3, 0.9)  # −tr(A)/n before drift
FROBENIUS_RANGE = (2.5, 4.0)  # ‖A‖_F² / n


def _haar_orthogonal(rng: np.random.Generator, count: int, n: int) -> np.ndarray:
    """``count`` Haar-random n×n orthogonal matrices (QR of a Gaussian, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((count, n, n)))
    return q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]


def equalise_diagonal(a: np.ndarray) -> np.ndarray:
    """An orthogonal similarity of each matrix in ``a`` (B, n, n) whose diagonal entries all
    equal tr/n.

    Each Givens rotation in a plane (i, j) with a_ii above and a_jj below the mean moves
    a_ii continuously towards a_jj; the angle where it equals the mean solves a quadratic
    in tan θ with real roots (p·q < 0). n − 1 rotations fix every entry. Spectrum, trace and
    Frobenius norm are unchanged.
    """
    a = np.array(a, dtype=np.float64, copy=True)
    count, n, _ = a.shape
    mean = np.trace(a, axis1=1, axis2=2) / n
    rows = np.arange(count)
    for _ in range(n - 1):
        excess = np.diagonal(a, axis1=1, axis2=2) - mean[:, None]
        i, j = excess.argmax(axis=1), excess.argmin(axis=1)
        p, q = excess[rows, i], excess[rows, j]
        r = 0.5 * (a[rows, i, j] + a[rows, j, i])
        active = (p > 0) & (q < 0)
        # new a_ii − mean = cos²θ (p + 2 r t + q t²), t = tan θ; the root of smaller size:
        root = np.sqrt(r * r - p * np.where(active, q, -1.0))
        big = -(r + np.where(r >= 0, 1.0, -1.0) * root)
        t = np.where(active, p / np.where(big == 0, 1.0, big), 0.0)
        c = 1.0 / np.sqrt(1.0 + t * t)
        s = t * c
        for axis in (1, 2):  # rows i, j, then columns i, j
            take = (rows, i, slice(None)) if axis == 1 else (rows, slice(None), i)
            other = (rows, j, slice(None)) if axis == 1 else (rows, slice(None), j)
            first, second = a[take].copy(), a[other].copy()
            a[take] = c[:, None] * first + s[:, None] * second
            a[other] = -s[:, None] * first + c[:, None] * second
    return a


def _signed_permutation(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """P D A D Pᵀ for a random permutation P and random signs D, per matrix."""
    count, n, _ = a.shape
    order = rng.random((count, n)).argsort(axis=1)
    signs = rng.choice([-1.0, 1.0], size=(count, n))
    rows = np.arange(count)[:, None, None]
    permuted = a[rows, order[:, :, None], order[:, None, :]]
    flip = signs[rows[:, :, 0], order]
    return permuted * flip[:, :, None] * flip[:, None, :]


def matched_spectra(
    n: int,
    pairs: int,
    *,
    rng: np.random.Generator,
    complex_lead: float = 0.5,
    offset: float = 0.0,
) -> dict[str, np.ndarray]:
    """Propose ``pairs`` twin spectra (index 0: unstable twin, 1: stable twin).

    Returns ``real`` (2, pairs, n) real parts in Schur order, ``omega`` (2, pairs, n) the
    ω of a complex pair at the index where its 2×2 block starts (0 elsewhere),
    ``frobenius2`` (pairs,) the shared ‖A‖_F², ``margin`` (pairs,) and ``valid`` (pairs,):
    whether both twins satisfy the construction (every other eigenvalue left of −m, the
    norm large enough for the Schur form's normal part). ``complex_lead`` is the
    probability that the leading block is a complex pair; ``offset`` shifts −tr/n.
    """
    margin = rng.uniform(*MARGIN_RANGE, pairs)
    lead_complex = rng.random(pairs) < complex_lead
    lead_omega = rng.uniform(*FREQUENCY_RANGE, pairs)
    gap = rng.uniform(0.0, 0.5, pairs)
    ratio = rng.uniform(0.1, 1.0, pairs)
    trace = -n * (rng.uniform(*TRACE_RANGE, pairs) + offset)
    frobenius2 = n * rng.uniform(*FROBENIUS_RANGE, pairs)
    slots = n - 2
    shape = -(rng.exponential(1.0, (pairs, slots)) + 0.05)
    paired = rng.random((pairs, slots)) < 0.5
    block_start = np.zeros((pairs, slots), dtype=bool)
    for i in range(0, slots - 1, 2):
        block_start[:, i] = paired[:, i]
        shape[paired[:, i], i + 1] = shape[paired[:, i], i]
    rest_omega = np.where(block_start, rng.uniform(*FREQUENCY_RANGE, (pairs, slots)), 0.0)

    real = np.zeros((2, pairs, n))
    omega = np.zeros((2, pairs, n))
    valid = np.ones(pairs, dtype=bool)
    for twin, sign in ((0, 1.0), (1, -1.0)):  # unstable lead at +m, stable at −m
        lead = sign * margin
        second = np.where(sign > 0, margin * ratio, -margin - gap)
        second = np.where(lead_complex, lead, second)
        real[twin, :, 0], real[twin, :, 1] = lead, second
        omega[twin, :, 0] = np.where(lead_complex, lead_omega, 0.0)
        if slots:
            rest_sum = trace - lead - second
            rest = shape * (rest_sum / shape.sum(axis=1))[:, None]
            real[twin, :, 2:] = rest
            omega[twin, :, 2:] = rest_omega
            valid &= np.all(rest < -margin[:, None], axis=1)
        normal2 = (real[twin] ** 2).sum(axis=1) + 2 * (omega[twin] ** 2).sum(axis=1)
        valid &= frobenius2 > normal2
    return {
        "real": real,
        "omega": omega,
        "frobenius2": frobenius2,
        "margin": margin,
        "valid": valid,
    }


def _schur_forms(real: np.ndarray, omega: np.ndarray, frobenius2: np.ndarray, rng) -> np.ndarray:
    """Real Schur forms (B, n, n) with the given blocks and a random strictly upper part
    scaled so that ‖S‖_F² = frobenius2."""
    count, n = real.shape
    index = np.arange(n)
    schur = np.zeros((count, n, n))
    schur[:, index, index] = real
    batch, start = np.nonzero(omega)
    schur[batch, start, start + 1] = omega[batch, start]
    schur[batch, start + 1, start] = -omega[batch, start]
    upper = np.triu(rng.standard_normal((count, n, n)), 1)
    upper[batch, start, start + 1] = 0.0
    missing = np.maximum(frobenius2 - (schur**2).sum(axis=(1, 2)), 0.0)
    scale = np.sqrt(missing / np.maximum((upper**2).sum(axis=(1, 2)), 1e-300))
    return schur + scale[:, None, None] * upper


def matched_matrices(
    n: int, pairs: int, *, rng: np.random.Generator, offset: float = 0.0
) -> dict[str, np.ndarray]:
    """Up to ``pairs`` matched pairs of n×n matrices (n ≥ 2), both twins of every kept pair.

    Returns ``a`` (2k, n, n) float64 holding float32-representable values (what the learner
    sees), ``eig`` (2k, n) their eigenvalues, ``label`` (2k,) bool (stable) and ``margin``
    (2k,) |max Re λ|, twins adjacent (unstable first). k ≤ ``pairs``: proposals that fail
    the construction or whose recomputed labels disagree are dropped.
    """
    spectra = matched_spectra(n, pairs, rng=rng, offset=offset)
    keep = np.flatnonzero(spectra["valid"])
    k = keep.size
    real = spectra["real"][:, keep].transpose(1, 0, 2).reshape(2 * k, n)
    omega = spectra["omega"][:, keep].transpose(1, 0, 2).reshape(2 * k, n)
    frobenius2 = np.repeat(spectra["frobenius2"][keep], 2)
    schur = _schur_forms(real, omega, frobenius2, rng)
    q = _haar_orthogonal(rng, 2 * k, n)
    a = equalise_diagonal(q @ schur @ q.transpose(0, 2, 1))
    a = _signed_permutation(a, rng).astype(np.float32).astype(np.float64)
    eig = np.linalg.eigvals(a) if k else np.zeros((0, n), dtype=np.complex128)
    top = eig.real.max(axis=-1) if k else np.zeros(0)
    label = top < 0
    intended = np.tile([False, True], k)
    agree = (label == intended).reshape(k, 2).all(axis=1).repeat(2)
    return {"a": a[agree], "eig": eig[agree], "label": label[agree], "margin": np.abs(top)[agree]}


# ---- matched polynomials (the Routh task) -----------------------------------------------
#
# A polynomial with all coefficients positive can still be unstable, but only through a
# complex pair of roots in the right half-plane (a real positive root would make some
# coefficient negative). So every pair here shares a leading complex pair ρ₀·(±m ± iω) and
# the same other roots, and the unstable twin is kept only when its coefficients are all
# positive, like the stable twin's. Three things keep the coefficients from telling the
# classes apart: the relative margin m is small, the roots' magnitudes spread over decades
# (so that c_k c_{k+1} against c_{k-1} c_{k+2}, where the label lives, varies along the
# stability boundary far more than across it), and each polynomial gets its own overall
# scale σ (the label is invariant under s → s/σ, which maps c_k to σᵏ c_k).

POLYNOMIAL_MARGIN_RANGE = (0.01, 0.1)  # m: real part of the leading pair over ρ₀
ROOT_SPREAD = 2.0  # log ρ of every root block ~ U(−2, 2) (the others' shifted by offset)
SCALE_RANGE = (0.1, 10.0)  # σ, log-uniform per polynomial
ROOT_LIMIT = 1e3  # proposals with a root magnitude outside [1/ROOT_LIMIT, ROOT_LIMIT] are
#   dropped, so that the coefficients stay inside float32 (this is what bounds the drift)


def polynomial_from_roots(roots: np.ndarray) -> np.ndarray:
    """Monic coefficients (..., k + 1), highest power first, of roots (..., k) closed under
    conjugation (the real part is returned)."""
    coefficients = np.zeros((*roots.shape[:-1], roots.shape[-1] + 1), dtype=np.complex128)
    coefficients[..., 0] = 1.0
    for j in range(roots.shape[-1]):
        shifted = coefficients[..., :-1] * roots[..., j : j + 1]
        coefficients[..., 1:] = coefficients[..., 1:] - shifted
    return coefficients.real


def polynomial_roots(coefficients: np.ndarray) -> np.ndarray:
    """Roots (B, k) of monic polynomials given as (B, k + 1) coefficients, highest power
    first: eigenvalues of the companion matrices, in float64."""
    c = np.asarray(coefficients, dtype=np.float64)
    count, k = c.shape[0], c.shape[1] - 1
    companion = np.zeros((count, k, k))
    companion[:, 0, :] = -c[:, 1:] / c[:, :1]
    companion[:, np.arange(1, k), np.arange(k - 1)] = 1.0
    return np.linalg.eigvals(companion) if count else np.zeros((0, k), dtype=np.complex128)


def matched_root_sets(
    n: int, pairs: int, *, rng: np.random.Generator, offset: float = 0.0
) -> dict[str, np.ndarray]:
    """Propose ``pairs`` twin root sets of degree n ≥ 2 (index 0 unstable, 1 stable).

    Returns ``roots`` (2, pairs, n) complex, ``valid`` (pairs,): whether the unstable
    twin's coefficients are all positive (the stable twin's always are), and ``margin``
    (pairs,) the relative margin m. ``offset`` shifts the log-magnitudes of the roots other
    than the leading pair (offset > 0 moves them away from the origin)."""
    margin = rng.uniform(*POLYNOMIAL_MARGIN_RANGE, pairs)
    lead_omega = rng.uniform(*FREQUENCY_RANGE, pairs)
    lead_scale = np.exp(rng.uniform(-ROOT_SPREAD, ROOT_SPREAD, pairs))
    slots = n - 2
    scale = np.exp(rng.uniform(-ROOT_SPREAD, ROOT_SPREAD, (pairs, slots)) + offset)
    real = -(rng.exponential(1.0, (pairs, slots)) + 0.05 + margin[:, None]) * scale
    omega = rng.uniform(*FREQUENCY_RANGE, (pairs, slots)) * scale
    rest = real.astype(np.complex128)
    paired = rng.random((pairs, slots)) < 0.5
    for i in range(0, slots - 1, 2):
        both = paired[:, i]
        rest[both, i] = real[both, i] + 1j * omega[both, i]
        rest[both, i + 1] = real[both, i] - 1j * omega[both, i]
    roots = np.empty((2, pairs, n), dtype=np.complex128)
    for twin, sign in ((0, 1.0), (1, -1.0)):
        lead = (sign * margin + 1j * lead_omega) * lead_scale
        roots[twin, :, 0], roots[twin, :, 1] = lead, lead.conj()
        roots[twin, :, 2:] = rest
    magnitude = np.abs(roots[0])
    valid = np.all(polynomial_from_roots(roots[0])[:, 1:] > 0, axis=1)
    valid &= np.all((magnitude <= ROOT_LIMIT) & (magnitude >= 1 / ROOT_LIMIT), axis=1)
    return {"roots": roots, "valid": valid, "margin": margin}


def matched_polynomials(
    n: int,
    pairs: int,
    *,
    rng: np.random.Generator,
    offset: float = 0.0,
    n_max: int | None = None,
) -> dict[str, np.ndarray]:
    """Up to ``pairs`` matched pairs of monic polynomials of degree n ≥ 2, both twins of
    every kept pair, adjacent (unstable first).

    Each polynomial is scaled by its own σ (roots σ·λ) and padded to degree ``n_max`` with
    the stable root −g (g = |c_n|^{1/n}, the geometric mean of its root magnitudes).
    Returns ``coefficients`` (2k, n_max) c_1 … c_{n_max} (float64 holding float32 values,
    what the learner sees), ``label`` (2k,) bool (stable), recomputed from the roots of
    those float32 coefficients (pairs that disagree with the construction are dropped), and
    ``margin`` (2k,) the scale-free distance from the boundary |max Re λ| / g.
    """
    n_max = n if n_max is None else n_max
    proposed = matched_root_sets(n, pairs, rng=rng, offset=offset)
    keep = np.flatnonzero(proposed["valid"])
    k = keep.size
    roots = proposed["roots"][:, keep].transpose(1, 0, 2).reshape(2 * k, n)
    sigma = np.exp(rng.uniform(*np.log(SCALE_RANGE), 2 * k))
    roots = roots * sigma[:, None]
    geometric = np.exp(np.log(np.abs(roots)).mean(axis=1))
    padding = np.repeat(-geometric[:, None], n_max - n, axis=1)
    full = polynomial_from_roots(np.concatenate([roots, padding], axis=1))
    with np.errstate(over="ignore"):
        full = full.astype(np.float32).astype(np.float64)
    finite = np.where(np.isfinite(full), full, 1.0)
    top = polynomial_roots(finite).real.max(axis=-1) if k else np.zeros(0)
    label = top < 0
    agree = (label == np.tile([False, True], k)) & np.isfinite(full).all(axis=1)
    agree = agree.reshape(k, 2).all(axis=1).repeat(2)
    return {
        "coefficients": full[agree, 1:],
        "label": label[agree],
        "margin": (np.abs(top) / np.maximum(geometric, 1e-300))[agree],
    }
