"""Cost of running PonderNet + continual backprop inside Avalanche, and memory over a long
stream.

1. Overhead: ``PonderTemplate`` + ``ContinualBackpropPlugin`` training one experience,
   against a plain PyTorch loop doing the same work on the same tensors (same model, loss,
   optimizer, shuffling, ``ContinualBackprop.step`` with reach-probability weights). Two
   Avalanche variants: no metrics, and ponderlife's per-experience metrics (pondering,
   plasticity, difficulty) plus Avalanche's accuracy / loss. Repeats alternate the three
   (A B C A B C ...) so drift on a shared machine hits all; reported as ratios of medians.
2. Memory: a stream of ``--experiences`` small experiences, trained and evaluated on the
   current experience with every metric on; resident memory after each experience and
   its growth per experience over the second half (a leak shows as a steady slope).

    python -m experiments.benchmarks.avalanche_overhead [--samples 2048] [--repeats 5]
        [--experiences 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.training.plugins import EvaluationPlugin

from ponderlife import (
    AdamPerElement,
    ContinualBackprop,
    PonderNet,
    ResidualMLPStep,
    configure_threads,
    ponder_loss,
    reach_probabilities,
)
from strategies import (
    ContinualBackpropPlugin,
    DifficultyMetrics,
    PlasticityMetrics,
    PonderingMetrics,
    PonderTemplate,
)
from strategies.datasets import tensor_source
from strategies.streams import linear_system_stream
from strategies.template import per_sample_cross_entropy

BATCH, HIDDEN, STEPS = 64, 64, 8
CBP = {"replacement_rate": 1e-3, "maturity_threshold": 100}


def model(inputs: int) -> PonderNet:
    torch.manual_seed(0)
    return PonderNet(ResidualMLPStep(inputs, HIDDEN, 2), max_steps=STEPS)


def plain_loop(x: torch.Tensor, y: torch.Tensor) -> float:
    net = model(x.shape[1])
    optimizer = AdamPerElement(net.parameters(), lr=1e-3)
    cbp = ContinualBackprop(net, optimizer, **CBP)
    start = time.perf_counter()
    order = torch.randperm(len(x))
    for first in range(0, len(x), BATCH):
        chosen = order[first : first + BATCH]
        output = net(x[chosen])
        loss = ponder_loss(output, y[chosen], per_sample_cross_entropy, beta=0.01, lambda_p=0.2)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        cbp.step(reach_probabilities(output))
    return time.perf_counter() - start


def avalanche(experience, inputs: int, with_metrics: bool) -> float:
    net = model(inputs)
    metrics = (
        [
            accuracy_metrics(experience=True, stream=True),
            loss_metrics(epoch=True, experience=True),
            PonderingMetrics(),
            DifficultyMetrics(),
            PlasticityMetrics(),
        ]
        if with_metrics
        else []
    )
    strategy = PonderTemplate(
        model=net,
        optimizer=AdamPerElement(net.parameters(), lr=1e-3),
        beta=0.01,
        lambda_p=0.2,
        train_mb_size=BATCH,
        plugins=[ContinualBackpropPlugin(**CBP)],
        evaluator=EvaluationPlugin(*metrics, loggers=[]),
    )
    start = time.perf_counter()
    strategy.train(experience)
    return time.perf_counter() - start


def overhead(samples: int, repeats: int) -> None:
    bench = linear_system_stream(dimensions=[4], samples_per_experience=samples, test_samples=8)
    experience = bench.train_stream[0]
    x, y = tensor_source(experience.dataset)[:2]  # the same data the strategy trains on
    times: dict[str, list[float]] = {"plain": [], "avalanche": [], "avalanche+metrics": []}
    plain_loop(x, y)  # warm-up
    for _ in range(repeats):
        times["plain"].append(plain_loop(x, y))
        times["avalanche"].append(avalanche(experience, x.shape[1], with_metrics=False))
        times["avalanche+metrics"].append(avalanche(experience, x.shape[1], with_metrics=True))
    base = statistics.median(times["plain"])
    updates = -(-samples // BATCH)
    print(
        f"one experience: {samples} samples, batch {BATCH}, {updates} updates, "
        f"PonderNet (residual MLP {HIDDEN}, N {STEPS}) + CBP, 1 thread, {repeats} repeats"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<18} median {median * 1000:8.1f} ms  ({median / updates * 1000:.2f} "
            f"ms/update)  ratio to plain {median / base:.2f}x"
        )


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory(experiences: int) -> None:
    bench = linear_system_stream(
        dimensions=[2, 3, 4],
        experiences=experiences,
        samples_per_experience=256,
        test_samples=64,
    )
    net = model(16)
    strategy = PonderTemplate(
        model=net,
        optimizer=AdamPerElement(net.parameters(), lr=1e-3),
        train_mb_size=BATCH,
        plugins=[ContinualBackpropPlugin(**CBP)],
        evaluator=EvaluationPlugin(
            accuracy_metrics(experience=True, stream=True),
            loss_metrics(experience=True),
            PonderingMetrics(),
            DifficultyMetrics(),
            PlasticityMetrics(),
            loggers=[],
        ),
    )
    usage = []
    start = time.perf_counter()
    for index, experience in enumerate(bench.train_stream):
        strategy.train(experience)
        strategy.eval([bench.test_stream[index]])
        usage.append(rss_mib())
    half = usage[len(usage) // 2 :]
    slope = (half[-1] - half[0]) / max(1, len(half) - 1)
    print(
        f"memory over {experiences} experiences ({time.perf_counter() - start:.0f} s): "
        f"RSS {usage[0]:.1f} MiB after the first, {usage[len(usage) // 2]:.1f} MiB at the "
        f"middle, {usage[-1]:.1f} MiB at the end; growth over the second half "
        f"{slope * 1024:.1f} KiB per experience"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--experiences", type=int, default=200)
    args = parser.parse_args()
    configure_threads(1)
    warnings.filterwarnings("ignore")
    overhead(args.samples, args.repeats)
    memory(args.experiences)


if __name__ == "__main__":
    main()
