"""What PonderNet's unroll rules cost, measured side by side in one run.

The setting is labml's parity-8 PonderNet (8 bits, GRU step of 64 units, N = 20,
λ_p 0.2, β 0.01, Adam 3e-4, batch 128). The model first trains ``--warmup-updates``
updates with the paper's rule, so that its halting distribution is a trained one; each
variant then continues from a copy of that state.

1. Training, per update: the paper's batch rule (every sample steps until the slowest
   passes 1 − ε) against the per-sample rule (each sample leaves at its own 1 − ε). The
   ideal ratio is the mean number of steps computed per sample over the batch rule's
   unroll length; both are printed.
2. Evaluation (``halting="sample"``): early exit against the full N-step unroll, and how
   close the early-exit cost comes to the mean halting step's share of N (1.0 = cost
   exactly proportional to the steps computed).

CPU time, one thread, variants in rotated order over ``--rounds`` rounds, ratios per
round as median and min–max (``experiments/benchmarks/_measure.py``).

    python -m experiments.benchmarks.pondernet_unroll [--warmup-updates 3000]
        [--updates 20] [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from experiments.benchmarks._measure import Ratio, load, rotated_rounds
from ponderlife import GRUStep, PonderNet, configure_threads, ponder_loss
from ponderlife.tasks import parity_batch


def bce(prediction, target):
    return F.binary_cross_entropy_with_logits(prediction.squeeze(-1), target, reduction="none")


def build(args, unroll: str, state: dict | None = None):
    torch.manual_seed(0)
    model = PonderNet(
        GRUStep(args.size, args.hidden, 1),
        max_steps=args.max_steps,
        training_unroll=unroll,
        halting_seed=0,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    return model, optimizer


def train(model, optimizer, batches, steps: list[float] | None = None) -> None:
    model.train()
    for batch in batches:
        output = model(batch.x)
        loss = ponder_loss(output, batch.y, bce, beta=0.01, lambda_p=0.2).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if steps is not None:  # steps computed per sample, and the unroll's length
            computed = (~torch.isnan(output.lambdas)).sum(0).float().mean()
            steps.append((float(computed), output.p.shape[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--warmup-updates", type=int, default=3000)
    parser.add_argument("--updates", type=int, default=20, help="updates per timed block")
    parser.add_argument("--eval-batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    g = torch.Generator().manual_seed(0)

    model, optimizer = build(args, "batch")
    print(f"warm-up: {args.warmup_updates} updates with the batch rule ...", flush=True)
    train(
        model,
        optimizer,
        [parity_batch(128, args.size, generator=g) for _ in range(args.warmup_updates)],
    )
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    batches = [parity_batch(128, args.size, generator=g) for _ in range(args.updates)]
    runs = {unroll: build(args, unroll, state) for unroll in ("batch", "per_sample")}
    steps = {unroll: [] for unroll in runs}
    times = rotated_rounds(
        {
            unroll: (lambda unroll=unroll: train(*runs[unroll], batches, steps[unroll]))
            for unroll in runs
        },
        args.rounds,
    )
    per_update = {k: statistics.median(v) / args.updates * 1e3 for k, v in times.items()}
    computed = statistics.mean(c for c, _ in steps["per_sample"])
    unrolled = statistics.mean(n for _, n in steps["batch"])
    print(
        f"\ntraining, batch 128, {args.rounds} rounds of {args.updates} updates "
        f"({args.threads} thread(s), CPU time):"
    )
    print(
        f"  batch rule (paper):  {per_update['batch']:.2f} ms/update, unroll {unrolled:.1f} steps"
    )
    print(
        f"  per-sample rule:     {per_update['per_sample']:.2f} ms/update, "
        f"{computed:.1f} steps per sample"
    )
    print(f"  per-sample / batch:  {Ratio.of(times['per_sample'], times['batch'])}")
    print(f"  steps computed / unrolled (the ideal ratio): {computed / unrolled:.2f}")

    model.eval()
    model.halting = "sample"
    x = parity_batch(args.eval_batch, args.size, generator=g).x
    halts: list[float] = []

    def evaluate(early_exit: bool) -> None:
        model.early_exit = early_exit
        with torch.no_grad():
            out = model(x, generator=torch.Generator().manual_seed(len(halts)))
        if early_exit:
            halts.append(float(out.halting_step.float().mean()))

    times = rotated_rounds(
        {"early exit": lambda: evaluate(True), "full": lambda: evaluate(False)}, args.rounds
    )
    ratio = Ratio.of(times["early exit"], times["full"])
    share = statistics.mean(halts) / args.max_steps
    print(f"\nevaluation, halting='sample', batch {args.eval_batch}:")
    print(f"  mean halting step {statistics.mean(halts):.2f} of N = {args.max_steps}")
    print(f"  early exit / full unroll: {ratio}")
    print(f"  cost over the mean halting step's share of N: {ratio.median / share:.2f}")
    print(load())


if __name__ == "__main__":
    main()
