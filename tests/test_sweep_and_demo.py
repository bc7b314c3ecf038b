"""The sweep command and the `make demo` pipeline, on tiny configs."""

import json

import pytest

from experiments import _runs, demo, sweep

TINY = [
    "experiences=2",
    "samples_per_experience=64",
    "test_samples=32",
    "batch_size=32",
    "hidden_size=8",
    "max_steps=3",
    "probe_size=16",
    "dimensions=[2,3]",
]


def test_plan_is_the_cartesian_product_of_the_grid_times_seeds():
    jobs = sweep.plan(
        "stream", [["bp", "cbp"], ["pondernet", "act"]], [0, 1], ["demo"], {"experiences": 3}
    )
    assert len(jobs) == 8
    assert jobs[0].named_configs == ("demo", "bp", "pondernet")
    assert {job.config_updates["seed"] for job in jobs} == {0, 1}
    assert all(job.config_updates["experiences"] == 3 for job in jobs)


def test_set_values_parse_as_json_or_strings():
    assert sweep.parse_value("3e-4") == 3e-4
    assert sweep.parse_value("[2,3]") == [2, 3]
    assert sweep.parse_value("null") is None
    assert sweep.parse_value("stability") == "stability"


def test_grid_alternatives_may_be_config_values():
    jobs = sweep.plan("stream", [["bp", "cbp"], ["learning_rate=1e-3", "step=gru"]], [0])
    assert [(j.named_configs, j.config_updates) for j in jobs] == [
        (("bp",), {"learning_rate": 1e-3, "seed": 0}),
        (("bp",), {"step": "gru", "seed": 0}),
        (("cbp",), {"learning_rate": 1e-3, "seed": 0}),
        (("cbp",), {"step": "gru", "seed": 0}),
    ]
    assert jobs[1].label == "bp step=gru seed=0"


def test_a_key_on_two_axes_or_in_set_and_grid_is_refused():
    with pytest.raises(sweep.SweepConfigError, match="config 'learning_rate' is set twice"):
        sweep.plan("stream", [["learning_rate=1e-3"]], [0], updates={"learning_rate": 0.1})
    with pytest.raises(sweep.SweepConfigError, match="config 'beta' is set twice"):
        sweep.plan("stream", [["beta=0.1"], ["beta=0.2"]], [0])


def test_one_run_written_two_ways_is_planned_once(tmp_path):
    jobs = sweep.plan("stream", [["cbp", "method=cbp"]], [0])
    assert len(jobs) == 2
    assert len(sweep.resolve(jobs, tmp_path)) == 1


def test_a_run_that_fails_in_its_worker_is_reported_and_never_raises(tmp_path):
    """The body of every Ray task, in-process: a run that raises is FAILED with its error."""
    updates = {
        "seed": 0,
        **{k: sweep.parse_value(v) for k, _, v in (s.partition("=") for s in TINY)},
    }
    jobs = [
        sweep.Job("stream", ("bp",), {**updates, "beta": -1.0}),
        sweep.Job("stream", ("bp",), updates),
    ]
    results = []
    for job in jobs:
        identity = _runs.identity("stream", sweep.full_config(job))
        results.append(sweep.execute(job, identity, str(tmp_path)))
    assert results[0]["status"] == "FAILED" and "config 'beta'" in results[0]["error"]
    assert results[1]["status"] == "COMPLETED"
    assert (results[1]["run_dir"] / "metrics.json").is_file()
    # Run again, the finished run is skipped and the failed one started again beside it.
    again = [
        sweep.execute(job, _runs.identity("stream", sweep.full_config(job)), str(tmp_path))
        for job in jobs
    ]
    assert again[1]["action"] == "skip" and again[1]["run_dir"] == results[1]["run_dir"]
    assert again[0]["action"] == "start"
    assert again[0]["run_dir"].name == f"{results[0]['run_dir'].name}.r1"
    assert _runs.superseded_by(results[0]["run_dir"]) == again[0]["run_dir"].name


def test_the_demo_runs_the_study_writes_figures_and_prints_a_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PONDERLIFE_RUNS", str(tmp_path / "runs"))
    figures = tmp_path / "figures"
    code = demo.main(["--seeds", "0", "--workers", "1", "--figures", str(figures), "--set", *TINY])
    out = capsys.readouterr().out
    assert code == 0, out
    written = sorted(p.name for p in figures.iterdir())
    for name in (
        "plasticity_curve.png",
        "halting_over_stream.png",
        "forgetting_vs_pondering.png",
        "plasticity_diagnostics.png",
        "halting_vs_difficulty.png",
    ):
        assert name in written, (name, written, out)
    assert "bp" in out and "cbp" in out and "halting step by n" in out
    runs = [p for p in (tmp_path / "runs" / "stream").iterdir() if not p.name.startswith("_")]
    assert len(runs) == 2
    methods = {json.loads((p / "config.json").read_text())["method"] for p in runs}
    assert methods == {"bp", "cbp"}


@pytest.mark.parametrize("workers", [0, -1])
def test_sweep_rejects_no_workers(workers):
    with pytest.raises(ValueError, match="workers"):
        sweep.run_sweep([], workers)
