"""The parity Sacred experiment runs in-process on a tiny config, validates, and resumes."""

import json
import re

import pytest
import torch
from sacred.utils import ConfigAddedError
from tiny_configs import PARITY

from analysis.runs import METRIC_NAME
from experiments import parity
from experiments._progress import timing
from experiments.parity import ex

TINY = {**PARITY, "fixed_steps": 2, "seed": 7}


@pytest.fixture
def observed(observe):
    return observe(ex)


def read_run(directory):
    metrics = json.loads((directory / "metrics.json").read_text())
    info = json.loads((directory / "info.json").read_text())
    return metrics, info


@pytest.mark.parametrize("model", ["pondernet", "act", "fixed"])
def test_each_model_runs_and_logs_per_split_metrics(observed, model):
    run = ex.run(named_configs=[model], config_updates=TINY)
    assert run.status == "COMPLETED"
    metrics, info = read_run(observed / str(run._id))
    for split in ("interpolation", "extrapolation"):
        for name in ("accuracy", "halting_step", "expected_steps"):
            assert metrics[f"{split}.{name}"]["steps"] == [2, 4]
            assert all(isinstance(v, float) for v in metrics[f"{split}.{name}"]["values"])
        assert set(info["by_nonzero"][split]) == (
            {"1", "2", "3"} if split == "interpolation" else {"4", "5", "6"}
        )
    assert metrics["train.loss"]["steps"] == [2, 4]
    assert (observed / str(run._id) / "checkpoint.pt").is_file()
    assert 0.0 <= run.result["interpolation.accuracy"] <= 1.0


@pytest.mark.parametrize("model", ["pondernet", "act"])
def test_every_evaluation_logs_each_metric_per_number_of_nonzero_entries(observed, model):
    run = ex.run(named_configs=[model], config_updates=TINY)
    metrics, info = read_run(observed / str(run._id))
    levels = {
        f"eval.{name}.d{k}"
        for name in ("accuracy", "halting_step", "expected_steps")
        for k in range(1, 7)  # P = 6: k ≤ 3 (interpolation) and k > 3 (extrapolation)
    }
    assert {name for name in metrics if name.startswith("eval.")} == levels
    assert all(METRIC_NAME.match(name) for name in metrics)
    assert all(metrics[name]["steps"] == [2, 4] for name in levels)
    if model == "act":  # deterministic: the last evaluation is the final one of info.json
        for by_k in info["by_nonzero"].values():
            for k, means in by_k.items():
                for name, value in means.items():
                    assert metrics[f"eval.{name}.d{k}"]["values"][-1] == pytest.approx(value)


def test_progress_lines_end_with_elapsed_time_and_eta(capsys):
    ex.run(config_updates=TINY)
    lines = [line for line in capsys.readouterr().out.splitlines() if "] update " in line]
    assert len(lines) == 2
    assert re.search(r"update 2/4 .*\(\d+ s, ETA \d+ s\)$", lines[0]), lines[0]
    assert re.search(r"update 4/4 .*\(\d+ s\)$", lines[1]), lines[1]  # done: no ETA


def test_a_resumed_run_times_only_its_own_updates(observed, monkeypatch):
    half = ex.run(config_updates={**TINY, "train_steps": 2})
    calls = []

    def recording(done, total, elapsed, start=0):
        calls.append((done, total, start))
        return timing(done, total, elapsed, start)

    monkeypatch.setattr(parity, "timing", recording)
    ex.run(config_updates={**TINY, "resume_from": str(observed / str(half._id))})
    assert calls == [(4, 4, 2)]


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"lambda_p": 0.0}, r"config 'lambda_p' must be in \(0, 1\]"),
        ({"size": 1}, r"config 'size' must be in \[2, inf\)"),
        ({"model": "lstm"}, "config 'model' must be one of 'pondernet', 'act', 'fixed'"),
        ({"learning_rate": "fast"}, "config 'learning_rate' must be a number"),
        ({"resume_from": "/no/such/run"}, "resume_from"),
        ({"layer_norm": 1}, "config 'layer_norm' must be true or false, got 1"),
        ({"weight_decay": -0.1}, r"config 'weight_decay' must be in \[0, inf\)"),
        ({"device": "cuda:7"}, "config 'device' must be a device of this machine"),
        ({"training_unroll": "each"}, "config 'training_unroll' must be one of 'batch'"),
    ],
)
def test_invalid_config_stops_before_training_naming_the_key(updates, message):
    with pytest.raises(ValueError, match=message):
        ex.run(config_updates={**TINY, **updates})


def test_unknown_config_keys_fail():
    with pytest.raises(ConfigAddedError):
        ex.run(config_updates={**TINY, "lamda_p": 0.3})


def test_resumed_run_ends_like_an_uninterrupted_one(observed):
    whole = ex.run(config_updates=TINY)
    first_half = ex.run(config_updates={**TINY, "train_steps": 2})
    resumed = ex.run(config_updates={**TINY, "resume_from": str(observed / str(first_half._id))})
    assert resumed.result == whole.result
    whole_metrics, _ = read_run(observed / str(whole._id))
    resumed_metrics, _ = read_run(observed / str(resumed._id))
    # The resumed run holds the whole history: what the first half logged, then its own.
    assert resumed_metrics.keys() == whole_metrics.keys()
    for name, entry in whole_metrics.items():
        assert resumed_metrics[name]["steps"] == entry["steps"] == [2, 4], name
        assert resumed_metrics[name]["values"] == entry["values"], name


def test_layer_norm_and_weight_decay_build_what_they_say(monkeypatch):
    built = {}
    original = parity.build_model

    def keep(cfg):
        built["model"] = original(cfg)
        return built["model"]

    monkeypatch.setattr(parity, "build_model", keep)
    steps = []
    monkeypatch.setattr(parity.torch.optim.AdamW, "step", _counting(steps))
    run = ex.run(config_updates={**TINY, "layer_norm": True, "weight_decay": 0.1})
    assert run.status == "COMPLETED"
    assert built["model"].step.norm is not None
    assert len(steps) == TINY["train_steps"]  # AdamW took every update


def _counting(calls):
    step = parity.torch.optim.AdamW.step

    def counted(self, *args, **kwargs):
        calls.append(1)
        return step(self, *args, **kwargs)

    return counted


def test_the_added_keys_keep_the_identities_of_earlier_runs():
    from experiments import _runs, sweep

    config = sweep.full_config(sweep.Job("parity", ("small",), {"seed": 0}))
    assert config["layer_norm"] is False and config["weight_decay"] == 0.0
    earlier = {k: v for k, v in config.items() if k not in ("layer_norm", "weight_decay")}
    assert _runs.identity("parity", config) == _runs.identity("parity", earlier)
    assert _runs.identity("parity", {**config, "weight_decay": 0.1}) != _runs.identity(
        "parity", earlier
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model", ["pondernet", "act"])
def test_a_run_on_the_gpu_matches_the_same_run_on_the_cpu(observed, model):
    """Data and halting draws come from CPU generators, so only float rounding differs."""
    runs = {
        device: ex.run(config_updates={**TINY, "model": model, "device": device})
        for device in ("cpu", "cuda")
    }
    assert all(run.status == "COMPLETED" for run in runs.values())
    for name, value in runs["cpu"].result.items():
        assert runs["cuda"].result[name] == pytest.approx(value, abs=0.05), name
