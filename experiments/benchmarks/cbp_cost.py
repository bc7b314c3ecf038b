"""Cost of ``ContinualBackprop.step()`` relative to a plain training step.

The reference permuted-MNIST network (784-2000-2000-2000-10, ReLU, SGD lr 0.003), one
thread, batch 1, 32 and 100. Each repeat times a block of plain updates and a block of
updates followed by ``cbp.step()``, alternating (A B A B ...) so that drift on a shared
machine hits both; the overhead is the ratio of the medians minus one. The reference
implementation adds about +90–115% at batch 1 and +12–16% at batch 100 on CPU.

    python -m experiments.benchmarks.cbp_cost [--batches 1 32 100] [--updates 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from ponderlife import ContinualBackprop, configure_threads


def network() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(784, 2000),
        nn.ReLU(),
        nn.Linear(2000, 2000),
        nn.ReLU(),
        nn.Linear(2000, 2000),
        nn.ReLU(),
        nn.Linear(2000, 10),
    )


def timed_updates(model, optimizer, data, cbp: ContinualBackprop | None) -> float:
    start = time.perf_counter()
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cbp is not None:
            cbp.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32, 100])
    parser.add_argument("--updates", type=int, default=30, help="updates per timed block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--replacement-rate", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    print(
        f"784-2000-2000-2000-10 ReLU, SGD 0.003, {args.threads} thread(s), "
        f"rho {args.replacement_rate}"
    )
    header = ("batch", "plain ms/update", "with CBP ms/update", "overhead", "replaced")
    print(f"{header[0]:>6}{header[1]:>18}{header[2]:>21}{header[3]:>11}{header[4]:>10}")
    for batch in args.batches:
        model = network()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.003)
        cbp = ContinualBackprop(
            model, optimizer, replacement_rate=args.replacement_rate, maturity_threshold=100
        )
        data = [
            (torch.randn(batch, 784, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(args.updates)
        ]
        # Past maturity, so eligibility, ranking and replacement are all exercised.
        for _ in range(4):
            timed_updates(model, optimizer, data, cbp)
        plain, with_cbp = [], []
        for _ in range(args.repeats):
            plain.append(timed_updates(model, optimizer, data, None))
            # A plain block records activations nobody consumes: drop them.
            for layer in cbp.layers:
                cbp.recorder.pop(layer.name)
            with_cbp.append(timed_updates(model, optimizer, data, cbp))
        p, c = statistics.median(plain), statistics.median(with_cbp)
        replaced = sum(cbp.replacements.values())
        print(
            f"{batch:>6}{p / args.updates * 1e3:>18.2f}{c / args.updates * 1e3:>21.2f}"
            f"{(c / p - 1) * 100:>+10.1f}%{replaced:>10}"
        )


if __name__ == "__main__":
    main()
