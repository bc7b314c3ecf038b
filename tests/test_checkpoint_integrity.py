"""Checkpoints prove their integrity, and non-finite weights never reach them (issue 10).

Checkpoints carry a SHA-256 of their contents and the experiment they belong to; a
corrupt, empty, truncated or foreign file fails with one clear error naming it (and the
run's previous checkpoint, kept beside it). Weights are checked after every update (after
every bin of updates in bit-flipping, whose batch-1 iteration is too cheap for a check
each), so a run whose weights turn non-finite stops with a ``FloatingPointError`` naming
the update (the bin), keeping its last finite checkpoint.
"""

import json
import math
import os
import re

import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from tiny_configs import BIT_FLIPPING, PARITY, STREAM
from torch import nn

from experiments import _runs
from experiments import bit_flipping as bit_flipping_experiment
from experiments import parity as parity_experiment
from experiments import stream as stream_experiment
from ponderlife.checkpoint import load_checkpoint, save_checkpoint
from strategies import FiniteLossPlugin
from strategies.checkpoint import load_strategy, save_strategy
from strategies.datasets import tagged_dataset

STREAM_TINY = {**STREAM, "seed": 5}
PARITY_TINY = {**PARITY, "seed": 7}
BIT_FLIPPING_TINY = {**BIT_FLIPPING, "seed": 3}


def run_folders(root):
    return sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def small_state(seed=0):
    """Model and Adam state of a small network after one step, plus a counter."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(4, 6)).pow(2).mean().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 3}


def assert_same(a, b):
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif torch.is_tensor(a):
        assert torch.equal(a, b)
    else:
        assert a == b


# ---- item 8: checksums, rotation, clear errors -------------------------------------------


def test_a_flipped_byte_is_detected_and_no_flip_loads_different_values(tmp_path):
    path = tmp_path / "checkpoint.pt"
    state = small_state()
    save_checkpoint(path, state)
    original = path.read_bytes()
    # The middle of the file lies in the stored weights: the checksum catches the flip.
    corrupted = bytearray(original)
    corrupted[len(original) // 2] ^= 0x01
    path.write_bytes(bytes(corrupted))
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {path} is corrupt: the SHA-256")):
        load_checkpoint(path)
    # Anywhere else: an error naming the file, or (a byte the format does not read, such
    # as zip padding) exactly the saved values.
    detected = 0
    for position in range(0, len(original), max(1, len(original) // 400)):
        corrupted = bytearray(original)
        corrupted[position] ^= 0x10
        path.write_bytes(bytes(corrupted))
        try:
            loaded = load_checkpoint(path)
        except ValueError as error:  # a CheckpointError
            assert type(error).__name__ == "CheckpointError"
            assert str(path) in str(error)
            detected += 1
        else:
            assert_same(loaded, state)
    assert detected > 0


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_an_empty_truncated_or_random_file_gives_one_clear_error_naming_the_previous(
    tmp_path, damage
):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {**small_state(), "step": 1})
    save_checkpoint(path, {**small_state(), "step": 2})
    data = path.read_bytes()
    damaged = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "random": torch.randint(
            0, 256, (len(data),), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        .numpy()
        .tobytes(),
    }[damage]
    path.write_bytes(damaged)
    with pytest.raises(ValueError, match="checkpoint") as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert type(caught.value).__name__ == "CheckpointError"
    assert str(path) in message
    assert str(tmp_path / "checkpoint.previous.pt") in message
    assert load_checkpoint(tmp_path / "checkpoint.previous.pt")["step"] == 1


def test_the_last_two_checkpoints_are_kept_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for step in (1, 2, 3):
        save_checkpoint(path, {**small_state(), "step": step})
    assert load_checkpoint(path)["step"] == 3
    assert load_checkpoint(tmp_path / "checkpoint.previous.pt")["step"] == 2
    assert {p.name for p in tmp_path.iterdir()} == {"checkpoint.pt", "checkpoint.previous.pt"}


def test_checkpoints_still_load_with_weights_only_and_carry_their_checksum(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, small_state())
    envelope = torch.load(path, weights_only=True)
    assert len(envelope["sha256"]) == 64 and isinstance(envelope["payload"], bytes)


def test_a_checkpoint_written_before_checksums_is_refused_saying_so(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save(small_state(), path)  # what save_checkpoint wrote before checksums
    with pytest.raises(ValueError, match="predates checksums"):
        load_checkpoint(path)


def test_a_checkpoint_of_another_experiment_is_refused_naming_it(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", small_state(), experiment="bit_flipping")
    with pytest.raises(ValueError, match="belongs to experiment 'bit_flipping', not 'parity'"):
        load_checkpoint(path, experiment="parity")


@pytest.fixture
def bit_flipping_run(observe):
    root = observe(bit_flipping_experiment.ex)
    run = bit_flipping_experiment.ex.run(config_updates=BIT_FLIPPING_TINY)
    return root / str(run._id)


def test_resuming_a_run_folder_of_another_experiment_says_whose_it_is(
    bit_flipping_run, observe, monkeypatch
):
    ex = parity_experiment.ex
    monkeypatch.setattr(ex, "run", lambda *a, **k: pytest.fail("started a run"))
    with pytest.raises(ValueError, match="is a run of experiment 'bit_flipping', not 'parity'"):
        _runs.resume(ex, str(bit_flipping_run))


def test_resume_from_a_run_of_another_experiment_fails_before_any_work(bit_flipping_run):
    message = "config 'resume_from': .* is a run of experiment 'bit_flipping', not 'parity'"
    with pytest.raises(ValueError, match=message):
        parity_experiment.ex.run(
            config_updates={**PARITY_TINY, "resume_from": str(bit_flipping_run)}
        )


def test_a_corrupt_checkpoint_stops_resume_and_the_previous_one_continues_the_run(observe):
    ex = parity_experiment.ex
    root = observe(ex)
    whole = ex.run(config_updates=PARITY_TINY)  # checkpoints at updates 2 and 4
    folder = root / str(whole._id)
    latest = folder / "checkpoint.pt"
    assert load_checkpoint(latest)["update"] == 4
    # As if the run had been killed after writing its last checkpoint.
    record = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**record, "status": "RUNNING"}))
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0x01
    latest.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoint\.previous\.pt") as caught:
        _runs.resume(ex, str(folder))
    assert type(caught.value).__name__ == "CheckpointError"
    resumed = _runs.resume(ex, str(folder / "checkpoint.previous.pt"))
    assert resumed.status == "COMPLETED" and resumed.result == whole.result


# ---- item 7: non-finite weights after an update whose loss was finite --------------------


def test_the_finite_loss_plugin_stops_at_an_update_that_makes_weights_non_finite():
    generator = torch.Generator().manual_seed(0)
    x = 1000 * torch.randn(8, 4, generator=generator)  # gradients of order 100
    data = tagged_dataset(x, (x[:, 0] > 0).long(), torch.ones(8, dtype=torch.long))
    benchmark = benchmark_from_datasets(train=[data], test=[data])
    model = nn.Linear(4, 2)
    strategy = Naive(
        model=model,
        # A finite loss and gradient, times a step of 1e38: the float32 weights overflow.
        optimizer=torch.optim.SGD(model.parameters(), lr=1e38),
        train_mb_size=8,  # a single update: no later loss would reveal it
        plugins=[FiniteLossPlugin()],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    with pytest.raises(FloatingPointError, match="non-finite weights") as caught:
        strategy.train(benchmark.train_stream[0])
    message = str(caught.value)
    assert "experience 0, iteration 1 of that experience" in message
    assert "the loss before it was finite" in message


class PoisonLastUpdate(SupervisedPlugin):
    """Writes inf into a weight after the last update of experience 1 (its loss was
    finite): no later training loss can reveal it."""

    def after_update(self, strategy, *args, **kwargs):
        last = strategy.clock.train_epoch_iterations + 1 == len(strategy.dataloader)
        if strategy.experience.current_experience == 1 and last:
            with torch.no_grad():
                next(strategy.model.parameters()).view(-1)[0] = math.inf


def test_stream_stops_at_non_finite_weights_and_keeps_the_last_finite_checkpoint(
    observe, monkeypatch
):
    ex = stream_experiment.ex
    root = observe(ex)
    original = stream_experiment.build_method
    monkeypatch.setattr(
        stream_experiment, "build_method", lambda cfg: [*original(cfg), PoisonLastUpdate()]
    )
    with pytest.raises(FloatingPointError, match=r"non-finite weights \(.*\) after the update"):
        ex.run(config_updates=STREAM_TINY)
    (crashed,) = run_folders(root)
    assert json.loads((crashed / "run.json").read_text())["status"] == "FAILED"
    state = load_checkpoint(crashed / "checkpoint.pt", experiment="stream")
    assert state["next_experience"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


class PoisonedAdam(torch.optim.Adam):
    """Adam whose third step leaves an inf in the first parameter."""

    def step(self, closure=None):
        result = super().step(closure)
        self.steps = getattr(self, "steps", 0) + 1
        if self.steps == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = math.inf
        return result


def test_parity_stops_at_non_finite_weights_naming_the_update(observe, monkeypatch):
    ex = parity_experiment.ex
    root = observe(ex)
    monkeypatch.setattr(torch.optim, "Adam", PoisonedAdam)
    with pytest.raises(FloatingPointError, match=r"non-finite weights \(.*\) after update 3"):
        ex.run(config_updates=PARITY_TINY)
    (crashed,) = run_folders(root)
    assert load_checkpoint(crashed / "checkpoint.pt", experiment="parity")["update"] == 2


def test_bit_flipping_stops_at_non_finite_weights_naming_the_bin(observe, monkeypatch):
    ex = bit_flipping_experiment.ex
    root = observe(ex)
    original = bit_flipping_experiment.build_optimizer

    def poisoned(cfg, model):
        optimizer = original(cfg, model)
        step, count = optimizer.step, [0]

        def poisoned_step(*args, **kwargs):
            result = step(*args, **kwargs)
            count[0] += 1
            if count[0] == 40:  # the last update of the second bin
                with torch.no_grad():
                    model[0].weight.view(-1)[0] = math.nan
            return result

        optimizer.step = poisoned_step
        return optimizer

    monkeypatch.setattr(bit_flipping_experiment, "build_optimizer", poisoned)
    expected = r"non-finite weights \(0.weight\) after an update among examples 21–40"
    with pytest.raises(FloatingPointError, match=expected):
        ex.run(config_updates=BIT_FLIPPING_TINY)
    (crashed,) = run_folders(root)
    state = load_checkpoint(crashed / "checkpoint.pt", experiment="bit_flipping")
    assert state["examples"] == 20
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_strategy_checkpoints_name_their_experiment(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, generator=generator)
    data = tagged_dataset(x, (x[:, 0] > 0).long(), torch.ones(8, dtype=torch.long))
    benchmark = benchmark_from_datasets(train=[data], test=[data])

    def naive():
        model = nn.Linear(4, 2)
        return Naive(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            train_mb_size=8,
            evaluator=EvaluationPlugin(loggers=[]),
        )

    strategy = naive()
    strategy.train(benchmark.train_stream[0])
    path = tmp_path / "checkpoint.pt"
    save_strategy(path, strategy, next_experience=1, experiment="stream")
    assert load_strategy(path, naive(), experiment="stream")["next_experience"] == 1
    with pytest.raises(ValueError, match="belongs to experiment 'stream', not 'parity'"):
        load_strategy(path, naive(), experiment="parity")
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
