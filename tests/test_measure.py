"""The timing rules every benchmark shares (experiments/benchmarks/_measure.py)."""

import pytest

from experiments.benchmarks._measure import Ratio, load, rotated_rounds


def test_rounds_rotate_the_order_of_the_variants():
    calls = []
    variants = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    clock = iter(range(1, 100))
    times = rotated_rounds(variants, 4, clock=lambda call: (call(), next(clock))[1])
    assert calls == list("abcbcacababc")
    assert times == {"a": [1, 6, 8, 10], "b": [2, 4, 9, 11], "c": [3, 5, 7, 12]}


def test_ratio_is_the_median_and_range_of_per_round_ratios():
    ratio = Ratio.of([2.0, 3.0, 8.0], [1.0, 2.0, 2.0])  # 2, 1.5, 4
    assert (ratio.median, ratio.low, ratio.high) == (2.0, 1.5, 4.0)
    assert str(ratio) == "2.00× (min–max 1.50–4.00)"
    with pytest.raises(ValueError, match="same, non-zero number of rounds"):
        Ratio.of([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="rounds must be ≥ 1"):
        rotated_rounds({"a": lambda: None}, 0)


def test_the_load_line_names_the_cpus():
    assert "load average" in load() and "CPUs" in load()


def test_cbp_cost_runs_at_a_tiny_size(capsys):
    from experiments.benchmarks import cbp_cost

    cbp_cost.main(["--network", "bit_flipping", "--updates", "150", "--rounds", "2"])
    out = capsys.readouterr().out
    assert "bit_flipping" in out and "×" in out and "load average" in out
    assert "quoted, not measured here" in out


def test_avalanche_overhead_and_pondernet_unroll_run_at_a_tiny_size(capsys):
    from experiments.benchmarks import avalanche_overhead, pondernet_unroll

    avalanche_overhead.overhead(samples=128, rounds=1)
    out = capsys.readouterr().out
    assert "units replaced" in out and "/ plain" in out and "load average" in out
    pondernet_unroll.main(
        ["--warmup-updates", "2", "--updates", "1", "--rounds", "1", "--eval-batch", "16"]
    )  # both settings: parity-8 and the demo's model
    out = capsys.readouterr().out
    assert "per-sample rule, batched heads" in out and "early exit / full unroll" in out
    assert "heads per step" in out and "mean halting step's share of N" in out


def test_the_parity_device_benchmark_times_each_device_on_the_same_batches(capsys):
    """Two trainers of one config start from the same model and train it on the same
    batches, and the command prints a line per device measured."""
    import torch

    from experiments.benchmarks import parity_device

    cfg = parity_device.config("small", "pondernet")
    cfg.update(size=6, hidden_size=8, max_steps=4, batch_size=4)
    first, second = (parity_device.trainer(cfg, "cpu", updates=2) for _ in range(2))
    before = [p.detach().clone() for p in first.model.parameters()]
    first()
    second()
    after = list(first.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    for a, b in zip(after, second.model.parameters(), strict=True):
        assert torch.equal(a, b)

    assert parity_device.main(["--config", "small", "--updates", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "parity small, pondernet: P = " in out
    assert "  cpu " in out and "ms per update" in out
    assert ("GPU / CPU time" in out) == torch.cuda.is_available()
