"""The bit-flipping stream and its Sacred experiment."""

import json
import re

import pytest
import torch
from tiny_configs import BIT_FLIPPING

from analysis.runs import METRIC_NAME
from experiments import bit_flipping
from experiments._progress import timing
from experiments.bit_flipping import ex
from ponderlife.tasks import BitFlippingStream


def test_target_is_the_threshold_network_of_the_reference():
    stream = BitFlippingStream(num_slow=3, num_random=2, num_features=4, seed=0)
    x = torch.randint(0, 2, (50, 5), generator=torch.Generator().manual_seed(1)).float()
    m = 5
    expected = []
    for row in x.tolist():
        total = float(stream.out_bias)
        for i in range(4):
            w, b = stream.weight[i].tolist(), float(stream.bias[i])
            negatives = (m - sum(w) + b) / 2
            pre = sum(wj * xj for wj, xj in zip(w, row, strict=True)) + b
            total += float(stream.out_weight[0, i]) * (pre > 0.7 * (m + 1) - negatives)
        expected.append([total])
    torch.testing.assert_close(stream.target(x), torch.tensor(expected))
    assert set(stream.weight.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("flip", ["one", "all"])
def test_slow_bits_change_only_at_period_boundaries(flip):
    stream = BitFlippingStream(period=4, flip=flip, seed=3)
    batch = stream.next(40)
    slow = batch.x[:, :15]
    for start in range(0, 40, 4):
        assert (slow[start : start + 4] == slow[start]).all()
    changes = [(slow[s] != slow[s - 4]).sum().item() for s in range(4, 40, 4)]
    if flip == "one":
        assert changes == [1] * 9
    else:
        assert max(changes) > 1
    assert batch.step.tolist() == list(range(40))


def test_stream_is_seeded_chunk_independent_and_restorable():
    whole = BitFlippingStream(period=7, seed=5).next(30)
    stream = BitFlippingStream(period=7, seed=5)
    first = stream.next(11)
    saved = stream.state_dict()
    rest = stream.next(19)
    torch.testing.assert_close(torch.cat([first.x, rest.x]), whole.x)
    restored = BitFlippingStream(period=7, seed=5)
    restored.load_state_dict(saved)
    torch.testing.assert_close(restored.next(19).x, rest.x)
    other = BitFlippingStream(period=7, seed=6).next(30)
    assert not torch.equal(other.x, whole.x)


def test_bad_stream_arguments_name_the_argument():
    with pytest.raises(ValueError, match="flip must be one of 'one', 'all'"):
        BitFlippingStream(flip="some")
    with pytest.raises(ValueError, match="period"):
        BitFlippingStream(period=0)


TINY = {**BIT_FLIPPING, "seed": 3}


@pytest.fixture
def observed(observe):
    return observe(ex)


@pytest.mark.parametrize(
    "named", ["bp", "cbp", "l2", "shrink_perturb", "l2_init", "redo", "upgd", "linear"]
)
def test_every_method_runs_and_logs_binned_error(observed, named):
    updates = {**TINY, "maturity_threshold": 5, "replacement_rate": 0.05, "redo_every": 10}
    run = ex.run(named_configs=[named], config_updates=updates)
    metrics = json.loads((observed / str(run._id) / "metrics.json").read_text())
    assert metrics["train.squared_error"]["steps"] == [20, 40, 60]
    assert "plasticity.weight_magnitude" in metrics
    if named != "linear":
        assert len(metrics["plasticity.effective_rank"]["values"]) == 3
    if named == "cbp":
        assert metrics["plasticity.units_replaced"]["values"][-1] > 0


HIDDEN_LAYER = {
    f"plasticity.{name}"
    for name in (
        "dead_fraction",
        "dormant_fraction",
        "effective_rank",
        "approximate_rank",
        "stable_rank",
        "feature_norm",
    )
}
WHOLE_MODEL = {
    "train.squared_error",
    "plasticity.weight_magnitude",
    "plasticity.gradient_norm",
    "plasticity.units_replaced",
}


@pytest.mark.parametrize(
    ("named", "names"), [("cbp", WHOLE_MODEL | HIDDEN_LAYER), ("linear", WHOLE_MODEL)]
)
def test_metric_names_follow_the_stream_studys_scheme(observed, named, names):
    run = ex.run(named_configs=[named], config_updates=TINY)
    metrics = json.loads((observed / str(run._id) / "metrics.json").read_text())
    assert set(metrics) == names
    assert all(METRIC_NAME.match(name) for name in metrics)
    # Steps are examples seen so far, one point per bin.
    assert all(entry["steps"] == [20, 40, 60] for entry in metrics.values())


def test_progress_lines_end_with_elapsed_time_and_eta(capsys):
    ex.run(config_updates=TINY)
    lines = [line for line in capsys.readouterr().out.splitlines() if "] example " in line]
    assert len(lines) == 3
    for line in lines[:-1]:
        assert re.search(r"\(\d+ s, ETA \d+ s\)$", line), line
    assert re.search(r"example 60/60 .*\(\d+ s\)$", lines[-1]), lines[-1]  # done: no ETA


def test_a_resumed_run_times_only_its_own_examples(observed, monkeypatch):
    half = ex.run(config_updates={**TINY, "examples": 40})
    calls = []

    def recording(done, total, elapsed, start=0):
        calls.append((done, total, start))
        return timing(done, total, elapsed, start)

    monkeypatch.setattr(bit_flipping, "timing", recording)
    ex.run(config_updates={**TINY, "resume_from": str(observed / str(half._id))})
    assert calls == [(60, 60, 40)]


def test_resumed_cbp_run_ends_like_an_uninterrupted_one(observed):
    updates = {**TINY, "maturity_threshold": 5, "replacement_rate": 0.05}
    whole = ex.run(named_configs=["cbp"], config_updates=updates)
    half = ex.run(named_configs=["cbp"], config_updates={**updates, "examples": 40})
    resumed = ex.run(
        named_configs=["cbp"],
        config_updates={**updates, "resume_from": str(observed / str(half._id))},
    )
    assert resumed.result == whole.result  # first and last bin, across the resume


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"method": "sgd"}, "config 'method' must be one of"),
        ({"replacement_rate": 2.0}, r"config 'replacement_rate' must be in \[0, 1\]"),
        ({"activation": "linear", "method": "cbp"}, "needs hidden units"),
        ({"decay_rate": 1.0}, r"config 'decay_rate' must be in \[0, 1\)"),
    ],
)
def test_invalid_config_stops_before_training(updates, message):
    with pytest.raises(ValueError, match=message):
        ex.run(config_updates={**TINY, **updates})
