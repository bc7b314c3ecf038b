"""Metrics mirrored to TensorBoard: one series per Sacred metric name, the experience index
as the step, from `ex.run`, every experiment's command line and sweeps."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_configs import BIT_FLIPPING, STREAM

from experiments import _runs, sweep
from experiments import bit_flipping as bit_flipping_experiment
from experiments import stream as stream_experiment

TINY = {**STREAM, "experiences": 3, "seed": 4}


def series(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in ``folder``: its (step, value) points."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


def test_a_stream_run_writes_one_series_per_metric_with_experiences_as_steps(observe, tmp_path):
    root = observe(stream_experiment.ex)
    board = tmp_path / "tensorboard"
    run = stream_experiment.ex.run(config_updates=TINY, options={"--tensorboard": str(board)})
    logged = json.loads((root / str(run._id) / "metrics.json").read_text())
    shown = series(board / str(run._id))
    assert [step for step, _ in shown["train.accuracy"]] == [0, 1, 2]
    assert [step for step, _ in shown["eval.accuracy.exp000"]] == [0, 1, 2]
    assert [step for step, _ in shown["eval.accuracy.exp002"]] == [2]
    assert set(shown) == set(logged)  # every Sacred metric, nothing else
    for name, entry in logged.items():
        assert [step for step, _ in shown[name]] == entry["steps"], name
        assert [value for _, value in shown[name]] == pytest.approx(entry["values"], nan_ok=True)


def test_every_experiments_command_line_takes_the_tensorboard_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDERLIFE_RUNS", str(tmp_path / "runs"))
    board = tmp_path / "tensorboard"
    updates = [f"{key}={json.dumps(value)}" for key, value in BIT_FLIPPING.items()]
    argv = ["bit_flipping", "--tensorboard", str(board), "with", *updates]
    run = _runs.main(bit_flipping_experiment.ex, argv)
    assert run.status == "COMPLETED"
    (folder,) = board.iterdir()
    assert folder.name == str(run._id)  # named like the run folder
    logged = json.loads(
        (tmp_path / "runs" / "bit_flipping" / folder.name / "metrics.json").read_text()
    )
    assert set(series(folder)) == set(logged)


def test_a_sweep_run_writes_under_its_run_folders_name(tmp_path):
    job = sweep.plan("stream", [], [1], updates=dict(STREAM))[0]
    identity = _runs.identity("stream", sweep.full_config(job))
    board = tmp_path / "tensorboard"
    outcome = sweep.execute(job, identity, str(tmp_path / "runs"), tensorboard=str(board))
    assert outcome["status"] == "COMPLETED"
    assert [p.name for p in board.iterdir()] == [identity[:12]]
    assert [step for step, _ in series(board / identity[:12])["eval.accuracy.exp000"]] == [0, 1]


def test_the_sweep_command_line_passes_the_folder_on(tmp_path, monkeypatch):
    seen = {}

    def fake_run_sweep(jobs, workers, **options):
        seen.update(options)
        return []

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    assert sweep.main(["stream", "--tensorboard", str(tmp_path / "tb"), "--no-progress"]) == 0
    assert seen["tensorboard"] == str(tmp_path / "tb")
