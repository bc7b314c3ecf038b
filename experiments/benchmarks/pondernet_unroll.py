"""What PonderNet's unroll rules cost, measured side by side in one run.

Two settings (``--setting``): ``parity8``, labml's parity-8 PonderNet (8 bits, GRU step of
64 units, N = 20, λ_p 0.2, β 0.01, Adam 3e-4, batch 128), and ``demo``, the model of
`make demo` (residual MLP step of 64 units, N = 8, λ_p 0.3, β 0.05, Adam 3e-3, batch 64)
on the first experience of its stability stream (n = 3 matrices padded to 6 × 6). The
model first trains ``--warmup-updates`` updates with the paper's rule, so that its
halting distribution is a trained one; each variant then continues from a copy of that
state.

1. Training, per update: the paper's batch rule (every sample steps until the slowest
   passes 1 − ε) with the heads run per step (the code before batched heads, kept as
   ``batched_heads = False``), the batch rule with batched heads, and the per-sample rule
   (each sample leaves at its own 1 − ε), all as ratios to the first. The per-sample
   rule's ideal is the mean number of steps computed per sample over the batch rule's
   unroll length; it is printed.
2. Evaluation (``halting="sample"``): early exit against the full N-step unroll, and how
   close the early-exit cost comes to the mean halting step's share of N (1.0 = cost
   exactly proportional to the steps computed). Evaluation runs without gradient, where
   the heads run per step whatever ``batched_heads`` says.

CPU time, one thread, variants in rotated order over ``--rounds`` rounds, ratios per
round as median and min–max (``experiments/benchmarks/_measure.py``).

    python -m experiments.benchmarks.pondernet_unroll [--setting parity8 demo]
        [--warmup-updates 3000] [--updates 20] [--rounds 9] [--hidden 256 --batch 512]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from experiments.benchmarks._measure import Ratio, load, rotated_rounds
from ponderlife import GRUStep, PonderNet, ResidualMLPStep, configure_threads, ponder_loss
from ponderlife.tasks import parity_batch
from strategies.template import per_sample_cross_entropy


def bce(prediction, target):
    return F.binary_cross_entropy_with_logits(prediction.squeeze(-1), target, reduction="none")


@dataclass(frozen=True)
class Setting:
    step: Callable[[], torch.nn.Module]
    max_steps: int
    lambda_p: float
    beta: float
    learning_rate: float
    loss: Callable[[Tensor, Tensor], Tensor]
    batches: Callable[[int, torch.Generator, int], list]  # (count, generator, batch size)
    batch_size: int


def parity8_batches(count: int, g: torch.Generator, size: int) -> list:
    return [parity_batch(size, 8, generator=g) for _ in range(count)]


def demo_batches(count: int, g: torch.Generator, size: int) -> list:
    """Minibatches drawn from the first experience of the `make demo` stream."""
    from strategies.datasets import tensor_source
    from strategies.streams import linear_system_stream

    stream = linear_system_stream(
        dimensions=[3, 4, 6],
        experiences=1,
        samples_per_experience=4096,
        test_samples=8,
        n_max=6,
        permute_inputs=True,
    )
    x, y = tensor_source(stream.train_stream[0].dataset)[:2]
    picks = torch.randint(0, len(x), (count, size), generator=g)
    return [SimpleNamespace(x=x[rows], y=y[rows]) for rows in picks]


SETTINGS = {
    "parity8": Setting(lambda: GRUStep(8, 64, 1), 20, 0.2, 0.01, 3e-4, bce, parity8_batches, 128),
    "demo": Setting(
        lambda: ResidualMLPStep(36, 64, 2),
        8,
        0.3,
        0.05,
        3e-3,
        per_sample_cross_entropy,
        demo_batches,
        64,
    ),
}


RULES = {
    "batch, per-step heads": "batch rule (paper), heads per step:",
    "batch": "batch rule, batched heads:",
    "per-sample": "per-sample rule, batched heads:",
}


def build(setting: Setting, unroll: str, state: dict | None = None, batched_heads: bool = True):
    torch.manual_seed(0)
    model = PonderNet(
        setting.step(), max_steps=setting.max_steps, training_unroll=unroll, halting_seed=0
    )
    model.step.batched_heads = batched_heads
    optimizer = torch.optim.Adam(model.parameters(), lr=setting.learning_rate)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    return model, optimizer


def train(setting: Setting, model, optimizer, batches, steps: list | None = None) -> None:
    model.train()
    for batch in batches:
        output = model(batch.x)
        loss = ponder_loss(
            output, batch.y, setting.loss, beta=setting.beta, lambda_p=setting.lambda_p
        ).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if steps is not None:  # steps computed per sample, and the unroll's length
            computed = (~torch.isnan(output.lambdas)).sum(0).float().mean()
            steps.append((float(computed), output.p.shape[0]))


def measure(name: str, args) -> None:
    setting = SETTINGS[name]
    if name == "parity8" and (args.hidden or args.batch):  # a wider or larger variant
        hidden, batch = args.hidden or 64, args.batch or setting.batch_size
        setting = replace(setting, step=lambda: GRUStep(8, hidden, 1), batch_size=batch)
        name = f"parity8 (GRU-{hidden}, batch {batch})"
    g = torch.Generator().manual_seed(0)
    model, optimizer = build(setting, "batch")
    print(f"\n== {name}: warm-up, {args.warmup_updates} updates with the batch rule ...")
    train(setting, model, optimizer, setting.batches(args.warmup_updates, g, setting.batch_size))
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    batches = setting.batches(args.updates, g, setting.batch_size)
    runs = {
        "batch, per-step heads": build(setting, "batch", state, batched_heads=False),
        "batch": build(setting, "batch", state),
        "per-sample": build(setting, "per_sample", state),
    }
    steps = {name: [] for name in runs}
    times = rotated_rounds(
        {name: (lambda k=name: train(setting, *runs[k], batches, steps[k])) for name in runs},
        args.rounds,
    )
    per_update = {k: statistics.median(v) / args.updates * 1e3 for k, v in times.items()}
    computed = statistics.mean(c for c, _ in steps["per-sample"])
    unrolled = statistics.mean(n for _, n in steps["batch"])
    before = times["batch, per-step heads"]
    print(
        f"training, batch {setting.batch_size}, {args.rounds} rounds of {args.updates} "
        f"updates ({args.threads} thread(s), CPU time), against the batch rule with the "
        "heads run per step (before batched heads):"
    )
    for name, label in RULES.items():
        extra = f", {computed:.1f} steps per sample" if name == "per-sample" else ""
        if name == "batch":
            extra = f", unroll {unrolled:.1f} steps"
        print(
            f"  {label:<36} {per_update[name]:6.2f} ms/update  "
            f"{Ratio.of(times[name], before)}{extra}"
        )
    print(f"  steps computed / unrolled (the per-sample rule's ideal): {computed / unrolled:.2f}")

    model.eval()
    model.halting = "sample"
    x = setting.batches(1, g, args.eval_batch)[0].x
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
    share = statistics.mean(halts) / setting.max_steps
    print(f"evaluation, halting='sample', batch {args.eval_batch}:")
    print(f"  mean halting step {statistics.mean(halts):.2f} of N = {setting.max_steps}")
    print(f"  early exit / full unroll: {ratio}")
    print(f"  cost over the mean halting step's share of N: {ratio.median / share:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setting", nargs="+", choices=sorted(SETTINGS), default=["parity8", "demo"]
    )
    parser.add_argument("--hidden", type=int, help="parity8: GRU units instead of 64")
    parser.add_argument("--batch", type=int, help="parity8: batch size instead of 128")
    parser.add_argument("--warmup-updates", type=int, default=3000)
    parser.add_argument("--updates", type=int, default=20, help="updates per timed block")
    parser.add_argument("--eval-batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    for name in args.setting:
        measure(name, args)
    print(load())


if __name__ == "__main__":
    main()
