"""Parity training on the CPU against a GPU, measured side by side in one run.

Times ``--updates`` training updates (batch, forward, loss, backward, optimizer step) of a
parity config (default ``paper_extrapolation``: P = 96, RNN-128, batch 128, N = 20) on the
CPU with one torch thread, as every run of the sweeps uses, and on CUDA when there is one.
Each device starts from the same fresh model and the same batches; the variants run in
rotated order over ``--rounds`` rounds, each timed by the wall clock after a CUDA
synchronise (CPU time would leave out the GPU's work), and the per-round ratio GPU / CPU is
given as median and min–max (``experiments/benchmarks/_measure.py``). A fresh PonderNet
unrolls about as many steps as one trained at P = 96 (it halts after about 3.5 steps from
the first update to the last; README, Parity), so the fresh model's cost is the run's.

    python -m experiments.benchmarks.parity_device [--config paper_extrapolation]
        [--model pondernet] [--updates 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import time

import torch

from experiments import parity
from experiments.benchmarks._measure import Ratio, load, rotated_rounds
from ponderlife.tasks import parity_batch


def config(named: str, model: str) -> dict:
    """The full config of the named parity config with ``model``, as a run builds it."""
    run = parity.ex._create_run(named_configs=[named], config_updates={"model": model})
    return dict(run.config)


def trainer(cfg: dict, device: str, updates: int):
    """A call that trains a fresh model (its ``model``) ``updates`` updates on ``device``
    and waits for the device to finish; every call draws the same batches."""
    torch.manual_seed(cfg["seed"])
    model = parity.build_model(cfg).to(device)
    optimizer = parity.build_optimizer(cfg, model)
    low, high = parity.training_range(cfg)

    def train() -> None:
        generator = torch.Generator().manual_seed(cfg["seed"])
        for _ in range(updates):
            batch = parity_batch(
                cfg["batch_size"], cfg["size"], min_nonzero=low, max_nonzero=high,
                generator=generator,
            )  # fmt: skip
            output = model(batch.x.to(device))
            loss, _ = parity.objective(cfg, output, batch.y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    train.model = model
    return train


def wall_seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper_extrapolation", help="named parity config")
    parser.add_argument("--model", default="pondernet", choices=("pondernet", "act", "fixed"))
    parser.add_argument("--updates", type=int, default=50, help="updates per timing")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.updates < 1 or args.rounds < 1:
        parser.error("--updates and --rounds must be ≥ 1")

    torch.set_num_threads(1)
    cfg = config(args.config, args.model)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    variants = {device: trainer(cfg, device, args.updates) for device in devices}
    for call in variants.values():  # warm-up: allocator, kernels, first-call costs
        call()
    times = rotated_rounds(variants, args.rounds, clock=wall_seconds)
    print(
        f"parity {args.config}, {args.model}: P = {cfg['size']}, {cfg['step']}-"
        f"{cfg['hidden_size']}, batch {cfg['batch_size']}, N = {cfg['max_steps']}; "
        f"{args.updates} updates × {args.rounds} rounds"
    )
    for device in devices:
        per_update = sorted(times[device])[len(times[device]) // 2] / args.updates
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU, one torch thread"
        print(f"  {device:<5} {per_update * 1e3:6.2f} ms per update (median round; {name})")
    if "cuda" in times:
        print(f"  GPU / CPU time: {Ratio.of(times['cuda'], times['cpu'])}")
    else:
        print("  no CUDA device here: CPU only")
    print(load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
