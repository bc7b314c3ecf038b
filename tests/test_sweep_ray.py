"""Sweeps on a real Ray (a local one, on loopback): runs equal runs started one by one, a
worker killed mid-run is retried and resumed to the same end, a killed sweep run again
skips what finished and resumes the rest, and a bad grid value fails before any task."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from run_folders import assert_same_metrics, metrics, record
from tiny_configs import BIT_FLIPPING, STREAM

from experiments import _runs, sweep
from experiments import bit_flipping as bit_flipping_experiment
from experiments import stream as stream_experiment

ray = pytest.importorskip("ray")

# Long enough (6 experiences of 256 samples, about 0.3 s each) to be killed in the middle.
STREAM_LONG = {**STREAM, "experiences": 6, "samples_per_experience": 256}
# Six bins of 1,000 examples, about 0.3 s each.
BIT_FLIPPING_LONG = {**BIT_FLIPPING, "examples": 6000, "bin_size": 1000}


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def one_by_one(ex, job: sweep.Job, root: Path) -> Path:
    run = ex.run(named_configs=list(job.named_configs), config_updates=dict(job.config_updates))
    assert run.status == "COMPLETED"
    return root / str(run._id)


def test_a_sweep_of_four_runs_equals_the_runs_started_one_by_one(local_ray, tmp_path, observe):
    grid = [["bp", "cbp"], ["learning_rate=0.01", "learning_rate=0.02"]]
    jobs = sweep.plan("bit_flipping", grid, [3], updates=dict(BIT_FLIPPING))
    outcomes = sweep.run_sweep(jobs, 2, root=tmp_path / "sweep", log=lambda _: None)
    assert [o["status"] for o in outcomes] == ["COMPLETED"] * 4
    assert len({o["run_dir"] for o in outcomes}) == 4
    alone_root = observe(bit_flipping_experiment.ex)
    for job, outcome in zip(jobs, outcomes, strict=True):
        folder = Path(outcome["run_dir"])
        alone = one_by_one(bit_flipping_experiment.ex, job, alone_root)
        assert json.loads((folder / "config.json").read_text()) == json.loads(
            (alone / "config.json").read_text()
        )
        assert metrics(folder) == metrics(alone)
        assert record(folder)["result"] == record(alone)["result"]
        # The folder's name is the run's identity.
        config = json.loads((folder / "config.json").read_text())
        assert folder.name == _runs.identity("bit_flipping", config)[:12]

    again = sweep.run_sweep(jobs, 2, root=tmp_path / "sweep", log=lambda _: None)
    assert [o["action"] for o in again] == ["skip"] * 4
    assert sorted(
        p.name for p in (tmp_path / "sweep").iterdir() if not p.name.startswith("_")
    ) == sorted(Path(o["run_dir"]).name for o in outcomes)


def test_a_worker_killed_mid_run_is_retried_and_ends_like_an_unbroken_run(
    local_ray, tmp_path, observe
):
    jobs = sweep.plan("stream", [["cbp"]], [4], updates=dict(STREAM_LONG))
    root = tmp_path / "sweep"
    (planned,) = sweep.resolve(jobs, root)
    first = root / planned.name
    killed = {}

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            holder = _runs.lock_holder(first) if first.is_dir() else None
            if holder and (first / "checkpoint.pt").exists():
                os.kill(holder["pid"], signal.SIGKILL)
                killed["pid"] = holder["pid"]
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    (outcome,) = sweep.run_sweep(jobs, 1, root=root, log=lambda _: None, progress=False)
    killer.join()
    assert killed, "the run ended before it could be killed"
    assert outcome["status"] == "COMPLETED"
    resumed = Path(outcome["run_dir"])
    assert resumed.name == f"{planned.name}.r1"
    # A killed run is left RUNNING; its resume marks it INTERRUPTED and superseded.
    assert record(first)["status"] == "INTERRUPTED"
    assert record(first)["stop_time"] == record(first)["heartbeat"]
    assert record(first)["superseded_by"] == resumed.name
    alone = one_by_one(stream_experiment.ex, jobs[0], observe(stream_experiment.ex))
    assert_same_metrics(metrics(resumed), metrics(alone))
    assert record(resumed)["result"] == pytest.approx(record(alone)["result"], abs=1e-9)


def kill_session(session: int) -> None:
    """SIGKILL every process of a session (Ray's workers have process groups of their
    own, so killing the sweep's group would leave them running)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # pid (comm) state ppid pgrp session ...
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads sessions from /proc")
def test_a_killed_sweep_run_again_skips_finished_runs_and_resumes_the_rest(tmp_path, observe):
    sets = [f"{k}={json.dumps(v)}" for k, v in BIT_FLIPPING_LONG.items()]
    command = [sys.executable, "-m", "experiments.sweep", "bit_flipping", "--seeds", "0", "1", "2"]
    command += ["--workers", "1", "--no-progress", "--runs", str(tmp_path), "--set", *sets]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    root = Path(__file__).resolve().parents[1]
    sweep_process = subprocess.Popen(
        command,
        cwd=root,
        env=environment,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def folders() -> list[Path]:
        return [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("_")]

    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline:
            done = [p for p in folders() if _runs.status_of(p) == "COMPLETED"]
            started = [p for p in folders() if (p / "checkpoint.pt").exists() and p not in done]
            if done and started:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the sweep never had one run finished and one in flight")
    finally:
        # The whole sweep goes, its Ray and its workers with it (as when its job is killed).
        kill_session(sweep_process.pid)
        sweep_process.wait()
    time.sleep(1.0)
    (interrupted,) = started
    assert _runs.status_of(interrupted) == "RUNNING"
    before = {p.name for p in folders()}

    subprocess.run(command, cwd=root, env=environment, check=True, capture_output=True)
    after = {p.name: _runs.status_of(p) for p in folders()}
    assert set(before) <= set(after)
    for name in done:
        assert after[name.name] == "COMPLETED"
    assert after[f"{interrupted.name}.r1"] == "COMPLETED"
    assert _runs.superseded_by(interrupted) == f"{interrupted.name}.r1"
    assert after[interrupted.name] == "INTERRUPTED"  # no longer RUNNING
    # Three seeds: three finished runs, one per identity, nothing twice.
    finished = [
        n for n, s in after.items() if s == "COMPLETED" and not _runs.superseded_by(tmp_path / n)
    ]
    assert len(finished) == 3
    assert len({_runs.chain_base(n) for n in finished}) == 3
    # The resumed run ends as if it had never been interrupted.
    resumed = tmp_path / f"{interrupted.name}.r1"
    config = json.loads((resumed / "config.json").read_text())
    alone_root = observe(bit_flipping_experiment.ex)
    job = sweep.Job("bit_flipping", (), {**BIT_FLIPPING_LONG, "seed": config["seed"]})
    assert_same_metrics(
        metrics(resumed), metrics(one_by_one(bit_flipping_experiment.ex, job, alone_root))
    )


def test_a_run_that_raises_is_failed_and_reported_while_the_others_go_on(local_ray, tmp_path):
    # learning_rate 1000 is valid but sends the loss to inf within a few examples.
    jobs = sweep.plan(
        "bit_flipping", [["learning_rate=1000", "learning_rate=0.01"]], [0], updates=BIT_FLIPPING
    )
    lines = []
    failed, finished = sweep.run_sweep(jobs, 2, root=tmp_path, log=lines.append, progress=False)
    assert failed["status"] == "FAILED"
    assert "FloatingPointError: non-finite training loss" in failed["error"]
    assert _runs.status_of(failed["run_dir"]) == "FAILED"
    assert finished["status"] == "COMPLETED"
    table = "\n".join(lines)
    assert "learning_rate=1000 seed=0" in table and "FloatingPointError" in table
    assert "1 completed, 1 not" in table


def test_a_bad_grid_value_fails_before_any_task_naming_the_run_and_key(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "_run_on_ray", lambda *a, **k: pytest.fail("submitted tasks"))
    jobs = sweep.plan(
        "stream",
        [["bp", "cbp"], ["replacement_rate=1e-4", "replacement_rate=2"]],
        [0],
        updates=dict(STREAM),
    )
    with pytest.raises(
        sweep.SweepConfigError, match=r"run 'bp replacement_rate=2 seed=0'.*'replacement_rate'"
    ):
        sweep.run_sweep(jobs, 2, root=tmp_path, log=lambda _: None)
    assert not any(tmp_path.iterdir())


def test_every_run_gets_a_worker_process_of_its_own(local_ray, tmp_path):
    # Memory a finished run leaves in its process must not add up over a sweep's runs.
    jobs = sweep.plan("bit_flipping", [], [0, 1, 2], updates=BIT_FLIPPING)
    outcomes = sweep.run_sweep(jobs, 1, root=tmp_path, log=lambda line: None, progress=False)
    assert [o["status"] for o in outcomes] == ["COMPLETED"] * 3
    pids = {o["pid"] for o in outcomes}
    assert len(pids) == 3 and os.getpid() not in pids
