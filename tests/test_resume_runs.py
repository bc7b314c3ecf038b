"""Resume is a property of the run folder, the same for every experiment: the resumed run
holds the whole history, a chain of resumes falls back to the nearest checkpoint, finished,
continued and live runs are refused, and Sacred's flags apply to ``resume``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from run_folders import assert_same_metrics, metrics, record
from tiny_configs import BIT_FLIPPING, PARITY, STREAM

from experiments import _runs
from experiments import bit_flipping as bit_flipping_experiment
from experiments import parity as parity_experiment
from experiments import stream as stream_experiment

EXPERIMENTS = {
    "stream": (stream_experiment.ex, {**STREAM, "experiences": 3, "seed": 2}),
    "parity": (parity_experiment.ex, {**PARITY, "train_steps": 6, "seed": 2}),
    "bit_flipping": (bit_flipping_experiment.ex, {**BIT_FLIPPING, "seed": 2}),
}


def killed_copy(folder: Path, name: str) -> Path:
    """``folder``'s run as a kill would have left it one checkpoint before its end: status
    RUNNING, the previous checkpoint its last, and the metrics logged after that
    checkpoint not yet flushed to ``metrics.json``."""
    copy = folder.parent / name
    shutil.copytree(folder, copy)
    (copy / "checkpoint.previous.pt").replace(copy / "checkpoint.pt")
    (copy / "run.json").write_text(json.dumps({**record(folder), "status": "RUNNING"}))
    logged = json.loads((copy / "metrics.json").read_text())
    for entry in logged.values():
        for key in ("steps", "values", "timestamps"):
            entry[key] = entry[key][:1]
    (copy / "metrics.json").write_text(json.dumps(logged))
    return copy


@pytest.fixture(params=list(EXPERIMENTS))
def finished(request, observe):
    """(experiment, its tiny config, the folder of an uninterrupted run)."""
    ex, config = EXPERIMENTS[request.param]
    root = observe(ex)
    run = ex.run(config_updates=config)
    assert run.status == "COMPLETED"
    return ex, config, root / str(run._id)


def test_a_resumed_run_holds_the_whole_history_and_ends_like_an_unbroken_run(finished):
    ex, _, whole = finished
    killed = killed_copy(whole, "killed")
    resumed = _runs.resume(ex, str(killed))
    folder = killed.parent / "killed.r1"
    assert resumed.status == "COMPLETED" and Path(resumed.observers[0].dir) == folder
    assert_same_metrics(metrics(folder), metrics(whole))
    assert record(folder)["result"] == pytest.approx(record(whole)["result"], nan_ok=True)
    assert _runs.superseded_by(killed) == "killed.r1"
    assert _runs.status_of(killed) == "INTERRUPTED"  # it was RUNNING, with no live process
    assert _runs.superseded_by(folder) is None
    assert json.loads((folder / "info.json").read_text())["resumed_from"] == str(killed)


def test_a_resume_that_died_before_its_first_checkpoint_continues_from_the_chain(finished):
    ex, _, whole = finished
    killed = killed_copy(whole, "killed")
    _runs.resume(ex, str(killed))
    # As if killed.r1 had been killed before writing a checkpoint of its own.
    first_resume = killed.parent / "killed.r1"
    for name in ("checkpoint.pt", "checkpoint.previous.pt"):
        (first_resume / name).unlink(missing_ok=True)
    (first_resume / "run.json").write_text(
        json.dumps({**record(first_resume), "status": "RUNNING"})
    )
    assert _runs.resume_checkpoint(first_resume) == killed / "checkpoint.pt"
    again = _runs.resume(ex, str(first_resume))
    assert again.status == "COMPLETED"
    assert_same_metrics(metrics(killed.parent / "killed.r2"), metrics(whole))
    assert _runs.superseded_by(first_resume) == "killed.r2"


def test_a_chain_without_any_checkpoint_says_so(finished, tmp_path):
    ex, _, whole = finished
    killed = killed_copy(whole, "killed")
    for name in ("checkpoint.pt", "checkpoint.previous.pt"):
        (killed / name).unlink(missing_ok=True)
    with pytest.raises(ValueError, match=r"no checkpoint in .*killed"):
        _runs.resume(ex, str(killed))
    assert not (killed.parent / "killed.r1").exists()


def test_finished_continued_and_live_runs_are_refused_before_any_work(finished, monkeypatch):
    ex, config, whole = finished
    count = len(list(whole.parent.iterdir()))
    with pytest.raises(ValueError, match="is COMPLETED: there is nothing to resume"):
        _runs.resume(ex, str(whole))
    killed = killed_copy(whole, "killed")
    _runs.resume(ex, str(killed))
    with pytest.raises(
        ValueError, match=r"already continued by run 'killed\.r1': resume .*killed\.r1"
    ):
        _runs.resume(ex, str(killed))
    # The config key refuses the same, for runs started with resume_from= by hand.
    with pytest.raises(ValueError, match=r"config 'resume_from'.*already continued"):
        ex.run(config_updates={**config, "resume_from": str(killed)})
    alive = killed_copy(whole, "alive")
    lock = _runs.RunLock(alive)
    try:
        with pytest.raises(ValueError, match=r"alive is still running \(pid \d+ on "):
            _runs.resume(ex, str(alive))
    finally:
        lock.release()
    assert _runs.lock_holder(alive) is None
    # Only the copies and the one resume were made; the refused resumes made no folder
    # (a run started by hand with a bad resume_from is a FAILED run, like any bad value).
    made = {p.name for p in whole.parent.iterdir()} - {"_sources"}
    assert {"killed", "killed.r1", "alive"} <= made and not {"killed.r2", "alive.r1"} & made
    assert len(made) <= count + 4


def test_a_changed_config_continues_a_finished_run_as_a_new_run(observe):
    ex, config = EXPERIMENTS["parity"]
    root = observe(ex)
    short = ex.run(config_updates={**config, "train_steps": 2})
    longer = ex.run(config_updates={**config, "resume_from": str(root / str(short._id))})
    assert longer.status == "COMPLETED"
    assert _runs.superseded_by(root / str(short._id)) is None  # another config: kept


def test_resume_on_the_command_line_takes_sacreds_flags(finished, tmp_path, monkeypatch):
    ex, _, whole = finished
    monkeypatch.setattr(ex, "observers", [])  # as on a command line: only main's observer
    killed = killed_copy(whole, "killed")
    mirror = tmp_path / "mirror"
    run = _runs.main(ex, ["prog", "resume", str(killed), "-F", str(mirror), "-c", "a note"])
    assert run.status == "COMPLETED"
    assert (killed.parent / "killed.r1" / "metrics.json").is_file()
    (copy,) = [p for p in mirror.iterdir() if p.name != "_sources"]
    assert copy.name == "killed.r1" and record(copy)["meta"]["comment"] == "a note"
    assert_same_metrics(metrics(killed.parent / "killed.r1"), metrics(whole))
    assert ex.observers == []  # main's observer is detached again


def test_resume_on_the_command_line_refuses_config_updates_and_finished_runs(finished, monkeypatch):
    ex, _, whole = finished
    monkeypatch.setattr(ex, "observers", [])
    with pytest.raises(SystemExit, match="config updates do not"):
        _runs.main(ex, ["prog", "resume", str(whole), "with", "seed=3"])
    with pytest.raises(SystemExit, match="is COMPLETED"):
        _runs.main(ex, ["prog", "resume", str(whole)])
    unobserved = killed_copy(whole, "killed")
    run = _runs.main(ex, ["prog", "resume", str(unobserved), "-u"])
    assert run.status == "COMPLETED" and not (whole.parent / "killed.r1").exists()
