"""Cost of a training iteration with continual backprop relative to a plain one.

Two networks, one thread, CPU time:

- ``bit_flipping``: the 20-5-1 ReLU learner of the bit-flipping problem (squared error,
  SGD 0.01, batch 1, adaptable-contribution utility), where the step's fixed cost per
  operation matters most;
- ``mnist``: the reference permuted-MNIST network 784-2000-2000-2000-10 (ReLU, cross
  entropy, SGD 0.003) at each of ``--batches``.

Two copies of the network start from the same weights: the plain one has no hooks at all,
the other carries ``ContinualBackprop`` (its forward hooks and its ``step()`` after every
update). Each round times a block of ``--updates`` updates of each, the order rotated
round by round; the overhead is the per-round ratio, reported as median and min–max over
``--rounds``. Both copies first run past the maturity threshold, so eligibility, ranking
and replacement are all exercised (the column ``replaced`` counts units replaced in the
timed rounds).

    python -m experiments.benchmarks.cbp_cost [--network bit_flipping mnist]
        [--batches 1 32 100] [--updates 2000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch import nn

from experiments.benchmarks._measure import Ratio, load, rotated_rounds
from ponderlife import ContinualBackprop, configure_threads

# Measured in an earlier session on this kind of machine (issue 15), not by this script:
# the reference implementation's iteration with continual backprop, relative to a plain one.
QUOTED_REFERENCE = {"bit_flipping": "1.70–1.88×", "mnist": "2.6–3.95× at batch 1"}


def bit_flipping_network() -> nn.Sequential:
    return nn.Sequential(nn.Linear(20, 5), nn.ReLU(), nn.Linear(5, 1))


def mnist_network() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(784, 2000),
        nn.ReLU(),
        nn.Linear(2000, 2000),
        nn.ReLU(),
        nn.Linear(2000, 2000),
        nn.ReLU(),
        nn.Linear(2000, 10),
    )


SETTINGS = {
    # network, loss, learning rate, utility, inputs and targets of a batch
    "bit_flipping": (
        bit_flipping_network,
        lambda out, y: (out - y).pow(2).mean(),
        0.01,
        "adaptable_contribution",
        lambda batch, g: (
            torch.randint(0, 2, (batch, 20), generator=g).float(),
            torch.randn(batch, 1, generator=g),
        ),
    ),
    "mnist": (
        mnist_network,
        F.cross_entropy,
        0.003,
        "contribution",
        lambda batch, g: (
            torch.randn(batch, 784, generator=g),
            torch.randint(0, 10, (batch,), generator=g),
        ),
    ),
}


def updates(model, optimizer, loss_fn, data, cbp: ContinualBackprop | None) -> None:
    for x, y in data:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cbp is not None:
            cbp.step()
        loss.item()  # as a training loop reads its loss


def measure(network: str, batch: int, args) -> tuple[Ratio, float, float, int]:
    """Per-round ratio, plain and continual-backprop ms per update (medians), replaced."""
    build, loss_fn, lr, utility, make_batch = SETTINGS[network]
    torch.manual_seed(0)
    plain_model = build()
    cbp_model = copy.deepcopy(plain_model)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=lr)
    cbp_opt = torch.optim.SGD(cbp_model.parameters(), lr=lr)
    cbp = ContinualBackprop(
        cbp_model,
        cbp_opt,
        replacement_rate=args.replacement_rate,
        maturity_threshold=100,
        utility=utility,
    )
    g = torch.Generator().manual_seed(0)
    data = [make_batch(batch, g) for _ in range(args.updates)]
    warm = data[: max(101, args.updates // 10)]  # past maturity before timing
    updates(plain_model, plain_opt, loss_fn, warm, None)
    updates(cbp_model, cbp_opt, loss_fn, warm, cbp)
    before = sum(cbp.replacements.values())
    times = rotated_rounds(
        {
            "plain": lambda: updates(plain_model, plain_opt, loss_fn, data, None),
            "cbp": lambda: updates(cbp_model, cbp_opt, loss_fn, data, cbp),
        },
        args.rounds,
    )
    ratio = Ratio.of(times["cbp"], times["plain"])
    per_update = {name: sorted(t)[len(t) // 2] / args.updates * 1e3 for name, t in times.items()}
    replaced = sum(cbp.replacements.values()) - before
    return ratio, per_update["plain"], per_update["cbp"], replaced


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--network", nargs="+", choices=sorted(SETTINGS), default=["bit_flipping", "mnist"]
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32, 100], help="mnist")
    parser.add_argument("--updates", type=int, default=None, help="updates per timed block")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--replacement-rate", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    print(
        f"{args.threads} thread(s), CPU time, {args.rounds} rotated rounds, "
        f"ρ {args.replacement_rate}"
    )
    header = ("network", "batch", "plain ms", "with CBP ms", "with CBP / plain", "replaced")
    print(
        f"{header[0]:<14}{header[1]:>6}{header[2]:>10}{header[3]:>13}   "
        f"{header[4]:<32}{header[5]:>8}"
    )
    for network in args.network:
        block = args.updates or (2000 if network == "bit_flipping" else 30)
        for batch in [1] if network == "bit_flipping" else args.batches:
            ratio, plain, with_cbp, replaced = measure(
                network, batch, argparse.Namespace(**{**vars(args), "updates": block})
            )
            print(
                f"{network:<14}{batch:>6}{plain:>10.3f}{with_cbp:>13.3f}   {ratio!s:<32}"
                f"{replaced:>8}"
            )
    print(load())
    print(
        "quoted, not measured here (issue 15, same kind of machine): the reference "
        + "; ".join(f"{k}: {v}" for k, v in QUOTED_REFERENCE.items())
    )


if __name__ == "__main__":
    main()
