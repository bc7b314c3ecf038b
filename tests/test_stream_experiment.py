"""Smoke runs of experiments/stream.py in-process, with tiny configs."""

import json
import math
import re

import numpy as np
import pytest
import torch
from sacred.utils import ConfigAddedError
from tiny_configs import STREAM

from experiments import stream as stream_experiment
from experiments.stream import ex, scheme_name
from ponderlife.checkpoint import load_checkpoint
from ponderlife.tasks import write_idx
from strategies import PonderTemplate

TINY = {**STREAM, "dimensions": [2, 3]}


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def only_run(root):
    (run,) = [p for p in root.iterdir() if p.name.isdigit()]
    return run


@pytest.mark.parametrize(
    "named", [["bp"], ["cbp"], ["l2"], ["shrink_perturb"], ["l2_init"], ["redo"], ["upgd"]]
)
def test_every_method_runs_and_logs_the_metric_scheme(named, observe):
    root = observe(ex)
    config = {**TINY, "maturity_threshold": 1, "replacement_rate": 0.2}
    run = ex.run(named_configs=named, config_updates=config)
    assert run.status == "COMPLETED"
    metrics = metrics_of(only_run(root))
    for name in (
        "eval.accuracy.exp000",
        "eval.accuracy.exp001",
        "eval.forgetting.exp000",
        "eval.halting_step_mean.exp001",
        "eval.halting_step.d3.exp001",
        "train.kl",
        "train.loss",
        "plasticity.effective_rank",
        "plasticity.gradient_norm",
        "stream.difficulty",
    ):
        assert name in metrics, name
    assert metrics["stream.difficulty"]["values"] == [2.0, 3.0]
    assert metrics["eval.accuracy.exp000"]["steps"] == [0, 1]
    assert all(isinstance(v, float) for v in metrics["eval.accuracy"]["values"])
    if named == ["cbp"]:
        assert metrics["plasticity.units_replaced"]["values"][-1] > 0


@pytest.fixture
def fashion_root(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 40), ("t10k", 20)):
        write_idx(
            tmp_path / f"{prefix}-images-idx3-ubyte",
            rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
        )
        write_idx(
            tmp_path / f"{prefix}-labels-idx1-ubyte", (np.arange(count) % 10).astype(np.uint8)
        )
    return tmp_path


@pytest.mark.parametrize(
    ("named", "updates"),
    [
        (["routh"], {"dimensions": [3, 4]}),
        (["controllability"], {"dimensions": [3, 4]}),
        (["parity"], {"parity_size": 6}),
        (["bit_flipping"], {"samples_per_experience": 40, "batch_size": 8}),
        (["stability", "act"], {}),
        (["stability", "fixed"], {"fixed_steps": 2}),
        (["stability"], {"step": "transformer", "hidden_size": 16}),
        (["stability"], {"step": "gru"}),
        (["permuted_fashion"], {"samples_per_experience": 20, "test_samples": 10}),
        (["split_fashion"], {"experiences": 2}),
    ],
)
def test_every_stream_and_model_runs(named, updates, observe, fashion_root):
    root = observe(ex)
    config = {**TINY, "fashion_root": str(fashion_root), **updates}
    run = ex.run(named_configs=named, config_updates=config)
    assert run.status == "COMPLETED"
    metrics = metrics_of(only_run(root))
    assert "eval.loss.exp001" in metrics
    if "bit_flipping" not in named:
        assert 0.0 <= metrics["eval.accuracy"]["values"][-1] <= 1.0


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"stream": "weather"}, "config 'stream'"),
        ({"beta": -1.0}, "config 'beta'"),
        ({"lambda_p": 0.0}, "config 'lambda_p'"),
        ({"experiences": 0}, "config 'experiences'"),
        ({"dimensions": [2, 40]}, "dimensions entry"),
        ({"decay_rate": 1.0}, "config 'decay_rate'"),
        ({"step": "transformer", "stream": "parity"}, "config 'step'"),
        ({"step": "transformer", "method": "cbp"}, "config 'method'"),
        (
            {"stream": "routh", "dimensions": [2, 3]},
            r"config 'dimensions' entries must be >= 3 for stream 'routh'",
        ),
        (
            {"dimensions": [6], "experiences": 45, "drift": 0.05, "balance": "label"},
            r"config 'drift' = 0.05 is infeasible.*largest feasible config 'drift' is 0\.02",
        ),
        (
            {"dimensions": [2, 3, 4, 5, 6], "experiences": 10, "drift": 0.2},
            r"config 'drift' = 0.2 is infeasible.*matched-pair",
        ),
    ],
)
def test_invalid_config_stops_before_training_naming_the_key(updates, message, observe):
    root = observe(ex)
    with pytest.raises(ValueError, match=message):
        ex.run(config_updates={**TINY, **updates})
    assert not (only_run(root) / "checkpoint.pt").exists()
    assert metrics_of(only_run(root)) == {}


def test_unknown_config_keys_fail():
    with pytest.raises(ConfigAddedError):
        ex.run(config_updates={**TINY, "replacment_rate": 0.1})


def test_a_non_finite_loss_stops_the_run_and_resume_finishes_it_like_an_unbroken_run(
    observe, monkeypatch
):
    config = {**TINY, "experiences": 3, "seed": 5}
    root = observe(ex)
    straight = ex.run(named_configs=["cbp"], config_updates={**config, "maturity_threshold": 1})
    expected = metrics_of(root / straight._id)

    original = PonderTemplate.criterion

    def poisoned(self):
        loss = original(self)
        if self.is_training and self.experience.current_experience == 2:
            return loss * math.nan
        return loss

    monkeypatch.setattr(PonderTemplate, "criterion", poisoned)
    with pytest.raises(FloatingPointError, match="experience 2, iteration 1"):
        ex.run(named_configs=["cbp"], config_updates={**config, "maturity_threshold": 1})
    crashed = max((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert json.loads((crashed / "run.json").read_text())["status"] == "FAILED"
    kept = metrics_of(crashed)
    assert kept["eval.accuracy"]["steps"] == [0, 1]  # everything logged before the crash
    assert load_checkpoint(crashed / "checkpoint.pt")["next_experience"] == 2

    monkeypatch.setattr(PonderTemplate, "criterion", original)
    resumed = stream_experiment._runs.resume(ex, str(crashed))
    assert resumed.status == "COMPLETED"
    final = metrics_of(root / str(resumed._id))
    assert final.keys() == expected.keys()
    for name, entry in expected.items():
        assert final[name]["steps"] == entry["steps"], name
        assert final[name]["values"] == pytest.approx(entry["values"], abs=1e-9, nan_ok=True), name


def test_scheme_names_map_avalanche_metrics_and_drop_stale_ones():
    assert scheme_name("Top1_Acc_Exp/eval_phase/test_stream/Exp003", 4) == "eval.accuracy.exp003"
    assert scheme_name("Top1_Acc_Stream/eval_phase/test_stream", 4) == "eval.accuracy"
    assert scheme_name("Loss_Epoch/train_phase/train_stream", 4) == "train.loss"
    assert scheme_name("Ponder/kl/train_phase/train_stream/Exp004", 4) == "train.kl"
    assert scheme_name("Ponder/kl/train_phase/train_stream/Exp003", 4) is None
    assert (
        scheme_name("Difficulty/halting_step/d5/eval_phase/test_stream/Exp001", 4)
        == "eval.halting_step.d5.exp001"
    )
    assert (
        scheme_name("Plasticity/units_replaced/step_fc1/train_phase/train_stream/Exp004", 4)
        == "plasticity.units_replaced_step_fc1"
    )


def test_checkpoints_load_with_weights_only(observe):
    root = observe(ex)
    run = ex.run(config_updates=TINY)
    state = load_checkpoint(root / str(run._id) / "checkpoint.pt")
    assert state["next_experience"] == 2
    assert isinstance(state["model"], dict) and torch.is_tensor(state["rng"]["torch"])


@pytest.mark.parametrize(
    ("avalanche_name", "scheme"),
    [
        ("MyMetric/eval_phase/test_stream/Task000/Exp003", "eval.mymetric.exp003"),
        ("Top1_Acc_MB/train_phase/train_stream/Task000", "train.top1_acc_mb"),
        ("Time_Epoch/train_phase/train_stream/Task000", "train.time_epoch"),
        ("StreamBWT/eval_phase/test_stream", "eval.streambwt"),
        ("My Metric/top-5/eval_phase/test_stream/Task002/Exp010", "eval.my_metric_top_5.exp010"),
        ("TaskLoss/eval_phase/test_stream/Task000/Exp001", "eval.taskloss.exp001"),
    ],
)
def test_unknown_metric_families_map_into_the_scheme_instead_of_being_dropped(
    avalanche_name, scheme
):
    assert scheme_name(avalanche_name, 4) == scheme
    assert stream_experiment.scheme_values({avalanche_name: 0.5}, 4, scheme[:5].rstrip(".")) == {
        scheme: 0.5
    }


def test_values_that_are_no_number_are_left_out_with_a_warning_and_clashes_fail():
    emitted = {"Confusion/eval_phase/test_stream/Exp000": torch.zeros(2, 2)}
    with pytest.warns(UserWarning, match="'Confusion/eval_phase/test_stream/Exp000' emitted"):
        assert stream_experiment.scheme_values(emitted, 0, "eval") == {}
    clash = {
        "Top1_Acc_Exp/eval_phase/test_stream/Exp000": 0.5,
        "Accuracy/eval_phase/test_stream/Task000/Exp000": 0.4,
    }
    with pytest.raises(ValueError, match=r"both map to 'eval\.accuracy\.exp000'"):
        stream_experiment.scheme_values(clash, 0, "eval")


def test_progress_lines_end_with_elapsed_time_and_eta(capsys):
    ex.run(config_updates={**TINY, "experiences": 3})
    lines = [x for x in capsys.readouterr().out.splitlines() if "experience " in x]
    assert len(lines) == 3
    assert re.search(r"\(\d+ s, ETA \d+ s\)$", lines[0]), lines[0]
    assert re.search(r"\(\d+ s\)$", lines[-1]), lines[-1]  # nothing left: no ETA


def test_a_resumed_runs_eta_times_only_its_own_experiences():
    # Restored at experience 2 of 6; experiences 2 and 3 took 20 s: 10 s each, 2 left.
    line = stream_experiment.progress_line(3, 6, {}, 20.0, start=2)
    assert line.endswith("(20 s, ETA 20 s)")
