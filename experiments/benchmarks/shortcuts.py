"""How much of a stream's label can a learner get from cheap features, without the task?

For each generator, balance mode and n this fits two simple classifiers on cheap features
of a training draw and scores them on a separate test draw (2,000 examples by default):

* a logistic regression (standardised features) and a depth-3 decision tree;
* each single feature as a depth-1 stump, to name the strongest shortcut.

Features: for ``stability``, {trace, sign of (−1)ⁿ·det A, Frobenius norm, diagonal
mean / min / max} of A; for ``routh``, {sign and magnitude of each coefficient}, and for
the matched Routh ensemble two more views: the network's own input (signs and log10
magnitudes) and the scale-normalised magnitudes c_k / g^k (g = |c_n|^{1/n}). A value near
0.5 means the features say nothing about the label; the shifted-Gaussian ensembles reach
0.87–1.00, which a network can find long before it learns stability.

    python -m experiments.benchmarks.shortcuts                    # print the table
    python -m experiments.benchmarks.shortcuts --out docs/shortcuts.md  # docs/shortcuts.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from ponderlife.tasks import routh_batch, stability_batch

STABILITY_FEATURES = ("trace", "sign_det", "frobenius", "diag_mean", "diag_min", "diag_max")
GENERATORS = {
    "stability": ("matched", "label", "trace", "none"),
    "routh": ("matched", "label", "trace"),
}
ROUTH_VIEWS = ("magnitudes", "log", "normalised")  # the matched Routh ensemble gets all three


def stability_features(inputs: np.ndarray, n: int) -> np.ndarray:
    """Cheap features (B, 6) of n×n matrices given as flattened rows (B, n²) or (B, n, n)."""
    a = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), n, n)
    diagonal = np.diagonal(a, axis1=1, axis2=2)
    sign = np.sign(np.linalg.det(a) * (-1.0) ** n)
    return np.stack(
        [
            diagonal.sum(axis=1),
            sign,
            np.linalg.norm(a, axis=(1, 2)),
            diagonal.mean(axis=1),
            diagonal.min(axis=1),
            diagonal.max(axis=1),
        ],
        axis=1,
    )


def routh_features(coefficients: np.ndarray, view: str = "magnitudes") -> np.ndarray:
    """Signs of the coefficients (B, k) and their magnitudes (``"magnitudes"``), log10
    magnitudes (``"log"``) or scale-normalised magnitudes |c_j| / g^j with g = |c_k|^{1/k}
    (``"normalised"``): (B, 2k)."""
    c = np.asarray(coefficients, dtype=np.float64)
    magnitude = np.abs(c)
    if view == "log":
        magnitude = np.log10(np.maximum(magnitude, 1e-30))
    elif view == "normalised":
        powers = np.arange(1, c.shape[1] + 1) / c.shape[1]
        magnitude = magnitude / np.maximum(magnitude[:, -1:], 1e-300) ** powers
    return np.concatenate([np.sign(c), magnitude], axis=1)


def draw_features(task: str, balance: str, n: int, count: int, seed: int, view: str = "cheap"):
    """(features, labels, feature names) of ``count`` examples of ``task`` at n; ``view``
    picks the Routh features (:func:`routh_features`)."""
    rng = np.random.default_rng(seed)
    if task == "stability":
        batch = stability_batch(n, count, rng=rng, balance=balance)
        return (
            stability_features(batch.inputs.numpy(), n),
            batch.targets.numpy(),
            STABILITY_FEATURES,
        )
    batch = routh_batch(n, count, rng=rng, balance=balance, encoding="coefficients")
    view = "magnitudes" if view == "cheap" else view
    prefix = {"magnitudes": "abs", "log": "log_abs", "normalised": "scaled"}[view]
    names = tuple(f"sign_c{k}" for k in range(1, n + 1)) + tuple(
        f"{prefix}_c{k}" for k in range(1, n + 1)
    )
    return routh_features(batch.inputs.numpy(), view), batch.targets.numpy(), names


def shortcut_accuracies(
    task: str,
    balance: str,
    n: int,
    *,
    train: int = 4000,
    test: int = 2000,
    seed: int = 0,
    view: str = "cheap",
) -> dict:
    """Test accuracy of a logistic regression, a depth-3 tree and the best single-feature
    stump on cheap features; training and test examples come from separate draws."""
    x_train, y_train, names = draw_features(task, balance, n, train, seed, view)
    x_test, y_test, _ = draw_features(task, balance, n, test, seed + 1, view)
    logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    tree = DecisionTreeClassifier(max_depth=3, random_state=0)
    stumps = [
        DecisionTreeClassifier(max_depth=1, random_state=0)
        .fit(x_train[:, [i]], y_train)
        .score(x_test[:, [i]], y_test)
        for i in range(x_train.shape[1])
    ]
    best = int(np.argmax(stumps))
    return {
        "task": task,
        "balance": balance,
        "features": _VIEW_NAMES[task if view == "cheap" else view],
        "n": n,
        "logistic": logistic.fit(x_train, y_train).score(x_test, y_test),
        "tree": tree.fit(x_train, y_train).score(x_test, y_test),
        "best_feature": names[best],
        "best_stump": stumps[best],
    }


_VIEW_NAMES = {
    "stability": "cheap matrix features",
    "routh": "signs, magnitudes",
    "magnitudes": "signs, magnitudes",
    "log": "signs, log10 magnitudes (the network's input)",
    "normalised": "signs, scale-normalised magnitudes",
}


HEADER = """# Shortcuts in the linear-system streams

What a learner can get from cheap features without learning stability. Each row fits a
logistic regression and a depth-3 decision tree on cheap features of one draw and scores
them on a separate draw; "best single feature" is the strongest depth-1 stump. 0.50 is
chance (every batch is 50/50).

* stability features: trace, sign of (−1)ⁿ·det A, Frobenius norm, diagonal mean/min/max.
* routh features: sign and magnitude of each characteristic-polynomial coefficient.
* `matched` is the default ensemble of the study and of `make demo`
  (`ponderlife/tasks/spectra.py`); `label`, `trace` and `none` are the shifted-Gaussian
  ensemble A = G/√n − s_n·I, kept as named options. At n = 2 no ensemble can hide the
  label from these features: a 2×2 matrix is stable exactly when its trace is negative and
  its determinant positive, so n = 2 measures whether a learner finds the trace's sign.
* routh `matched` (the default, n ≥ 3; `ponderlife/tasks/spectra.py`): every coefficient
  of every example is positive, so "all coefficients positive" (necessary for stability,
  and the shortcut of the Gaussian ensembles: sign_c stumps) says nothing. Two more views
  of it are measured. The network's input, log10 magnitudes: at n = 3 the Hurwitz
  condition c₁c₂ > c₃ is *linear* in log-magnitudes, so the logistic regression there is
  the task itself, not a shortcut; from n = 4 on the conditions are not linear and it
  falls towards chance. Scale-normalised magnitudes c_k / g^k: the depth-3 tree finds
  part of c₁c₂ > c₃ (a Hurwitz condition) at n = 3 and 4.
* At n = 2 positive coefficients are equivalent to stability, so no Routh ensemble can
  hide the label: the matched ensemble refuses n = 2 and the study's streams start at 3.

"""


def table(rows: list[dict]) -> str:
    lines = [
        "| task | balance | features | n | logistic | depth-3 tree | best single feature (stump) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['balance']} | {row['features']} | {row['n']} | "
            f"{row['logistic']:.2f} | "
            f"{row['tree']:.2f} | {row['best_feature']} {row['best_stump']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dimensions", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    rows = []
    for task, balances in GENERATORS.items():
        for balance in balances:
            views = ROUTH_VIEWS if (task, balance) == ("routh", "matched") else ("cheap",)
            for view in views:
                for n in args.dimensions:
                    if (task, balance, n) == ("routh", "matched", 2):
                        continue  # refused: positive coefficients decide degree 2
                    row = shortcut_accuracies(
                        task,
                        balance,
                        n,
                        train=args.train,
                        test=args.test,
                        seed=args.seed,
                        view=view,
                    )
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
    text = table(rows)
    command = (
        f".venv/bin/python -m experiments.benchmarks.shortcuts --dimensions "
        f"{' '.join(map(str, args.dimensions))} --train {args.train} --test {args.test} "
        f"--seed {args.seed}"
    )
    footer = f"\n\n{args.train} training and {args.test} test examples per row, seed {args.seed}; "
    footer += f"`{command}` (CPU, {time.perf_counter() - began:.0f} s).\n"
    if args.out is not None:
        args.out.write_text(HEADER + text + footer)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
