"""What the unroll rules cost: measured side by side in one run, reported as ratios.

1. Training throughput on parity with the ε-stopped unroll (the paper's rule) versus
   always unrolling ``max_steps``.
2. Evaluation cost with batched early exit versus the full unroll, for the ``sample`` and
   ``threshold`` halting modes.

The model is first trained briefly so its halting distribution is not the initial one;
timings interleave the variants (A B A B ...) so drift on a shared machine hits both.

    python -m experiments.benchmarks.pondernet_unroll [--size 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ponderlife import PonderNet, RNNStep, configure_threads, ponder_loss
from ponderlife.tasks import parity_batch


def bce(prediction, target):
    return F.binary_cross_entropy_with_logits(prediction.squeeze(-1), target, reduction="none")


def train_updates(model, optimizer, batches, epsilon: float) -> float:
    """Seconds for one pass of updates over ``batches`` with the given stopping ε."""
    model.epsilon = epsilon
    start = time.perf_counter()
    for batch in batches:
        loss = ponder_loss(model(batch.x), batch.y, bce, beta=0.01, lambda_p=0.2).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


@torch.no_grad()
def evaluate(model, x, early_exit: bool, seed: int) -> tuple[float, float]:
    model.early_exit = early_exit
    start = time.perf_counter()
    output = model(x, generator=torch.Generator().manual_seed(seed))
    return time.perf_counter() - start, float(output.halting_step.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--warmup-updates", type=int, default=1500)
    parser.add_argument("--updates", type=int, default=100, help="updates per timed repeat")
    parser.add_argument("--eval-batch", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    model = PonderNet(RNNStep(args.size, args.hidden, 1), max_steps=args.max_steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    warmup = [parity_batch(128, args.size, generator=g) for _ in range(args.warmup_updates)]
    print(f"warm-up: {args.warmup_updates} updates ...", flush=True)
    train_updates(model, optimizer, warmup, epsilon=0.05)
    batches = [parity_batch(128, args.size, generator=g) for _ in range(args.updates)]

    # Always unrolling max_steps = an ε so small that no sample's remaining mass reaches it.
    timings: dict[str, list[float]] = {"epsilon": [], "max_steps": []}
    unroll = []
    for _ in range(args.repeats):
        timings["epsilon"].append(train_updates(model, optimizer, batches, epsilon=0.05))
        timings["max_steps"].append(train_updates(model, optimizer, batches, epsilon=1e-30))
        with torch.no_grad():
            model.epsilon = 0.05
            unroll.append(model.train()(batches[0].x).p.shape[0])
    eps, full = statistics.median(timings["epsilon"]), statistics.median(timings["max_steps"])
    print(f"\ntraining, {args.updates} updates of batch 128 (median of {args.repeats}):")
    print(f"  ε-stopped unroll (ε=0.05, ~{statistics.median(unroll):.0f} steps): {eps:.3f} s")
    print(f"  always {args.max_steps} steps:                     {full:.3f} s")
    print(f"  throughput ratio ε-stopped / full: {full / eps:.2f}x")

    model.eval()
    x = parity_batch(args.eval_batch, args.size, generator=g).x
    for mode in ("sample", "threshold"):
        model.halting = mode
        early, full_t, steps = [], [], 0.0
        for repeat in range(args.repeats):
            seconds, steps = evaluate(model, x, early_exit=True, seed=repeat)
            early.append(seconds)
            full_t.append(evaluate(model, x, early_exit=False, seed=repeat)[0])
        e, f = statistics.median(early), statistics.median(full_t)
        print(f"\nevaluation, halting={mode!r}, batch {args.eval_batch}, mean halt {steps:.2f}:")
        print(
            f"  early exit {e * 1000:.1f} ms, full {args.max_steps}-step unroll {f * 1000:.1f} ms"
        )
        print(f"  cost ratio early exit / full: {e / f:.2f}  (speed-up {f / e:.2f}x)")


if __name__ == "__main__":
    main()
