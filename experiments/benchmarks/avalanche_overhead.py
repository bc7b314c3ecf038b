"""Cost of running PonderNet + continual backprop inside Avalanche, and memory over a long
stream.

1. Overhead: ``PonderTemplate`` + ``ContinualBackpropPlugin`` training one experience,
   against a plain PyTorch loop doing the same work on the same tensors (same model, loss,
   optimizer, shuffling, ``ContinualBackprop.step`` with reach-probability weights). Two
   Avalanche variants: no metrics, and ponderlife's per-experience metrics (pondering,
   plasticity, difficulty) plus Avalanche's accuracy / loss. The experience is long enough
   (320 updates by default) that continual backprop replaces units in every variant (the
   counts are printed). CPU time of the training alone, the three in rotated order over
   ``--rounds`` rounds, each ratio to the plain loop per round as median and min–max
   (``experiments/benchmarks/_measure.py``).
2. Memory: a stream of ``--experiences`` small experiences, trained and evaluated on the
   current experience with every metric on; resident memory after each experience and
   its growth per experience over the second half (a leak shows as a steady slope).

    python -m experiments.benchmarks.avalanche_overhead [--samples 20480] [--rounds 9]
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

from experiments.benchmarks._measure import Ratio, load, rotated_rounds
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


def plain_loop(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
    """CPU seconds of one pass, and the units continual backprop replaced in it."""
    net = model(x.shape[1])
    optimizer = AdamPerElement(net.parameters(), lr=1e-3)
    cbp = ContinualBackprop(net, optimizer, **CBP)
    start = time.process_time()
    order = torch.randperm(len(x))
    for first in range(0, len(x), BATCH):
        chosen = order[first : first + BATCH]
        output = net(x[chosen])
        loss = ponder_loss(output, y[chosen], per_sample_cross_entropy, beta=0.01, lambda_p=0.2)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        cbp.step(reach_probabilities(output))
    return time.process_time() - start, sum(cbp.replacements.values())


def avalanche(experience, inputs: int, with_metrics: bool) -> tuple[float, int]:
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
    plugin = ContinualBackpropPlugin(**CBP)
    strategy = PonderTemplate(
        model=net,
        optimizer=AdamPerElement(net.parameters(), lr=1e-3),
        beta=0.01,
        lambda_p=0.2,
        train_mb_size=BATCH,
        plugins=[plugin],
        evaluator=EvaluationPlugin(*metrics, loggers=[]),
    )
    start = time.process_time()
    strategy.train(experience)
    return time.process_time() - start, sum(plugin.core.replacements.values())


def overhead(samples: int, rounds: int) -> None:
    bench = linear_system_stream(dimensions=[4], samples_per_experience=samples, test_samples=8)
    experience = bench.train_stream[0]
    x, y = tensor_source(experience.dataset)[:2]  # the same data the strategy trains on
    replaced: dict[str, int] = {}

    def variant(name: str, run):
        def timed() -> float:
            seconds, replaced[name] = run()
            return seconds

        return timed

    plain_loop(x, y)  # warm-up
    times = rotated_rounds(
        {
            "plain": variant("plain", lambda: plain_loop(x, y)),
            "avalanche": variant("avalanche", lambda: avalanche(experience, x.shape[1], False)),
            "avalanche+metrics": variant(
                "avalanche+metrics", lambda: avalanche(experience, x.shape[1], True)
            ),
        },
        rounds,
        clock=lambda timed: timed(),  # each variant times its own training, CPU time
    )
    updates = -(-samples // BATCH)
    print(
        f"one experience: {samples} samples, batch {BATCH}, {updates} updates, "
        f"PonderNet (residual MLP {HIDDEN}, N {STEPS}) + CBP (ρ {CBP['replacement_rate']}, "
        f"maturity {CBP['maturity_threshold']}), 1 thread, CPU time, {rounds} rotated rounds"
    )
    for name, values in times.items():
        median = statistics.median(values)
        ratio = "" if name == "plain" else f"  / plain {Ratio.of(values, times['plain'])}"
        print(
            f"  {name:<18} {median / updates * 1000:6.2f} ms/update  "
            f"units replaced {replaced[name]:>3}{ratio}"
        )
    print(f"  {load()}")


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
    parser.add_argument(
        "--samples", type=int, default=20480, help="320 updates: continual backprop replaces"
    )
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--experiences", type=int, default=200)
    args = parser.parse_args()
    configure_threads(1)
    warnings.filterwarnings("ignore")
    overhead(args.samples, args.rounds)
    memory(args.experiences)


if __name__ == "__main__":
    main()
