"""The sweep command and the `make demo` pipeline, on tiny configs."""

import json

import pytest

from experiments import demo, sweep

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


def test_a_failing_run_is_reported_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PONDERLIFE_RUNS", str(tmp_path))
    jobs = [
        sweep.Job("stream", ("bp",), {"seed": 0, "beta": -1.0}),
        sweep.Job(
            "stream",
            ("bp",),
            {
                "seed": 0,
                **{k: sweep.parse_value(v) for k, _, v in (s.partition("=") for s in TINY)},
            },
        ),
    ]
    results = [sweep.run_job(job) for job in jobs]  # in-process: same code as a worker
    assert results[0]["status"] == "FAILED" and "config 'beta'" in results[0]["error"]
    assert results[1]["status"] == "COMPLETED"
    assert (tmp_path / "stream" / str(results[1]["id"]) / "metrics.json").is_file()


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
    runs = [p for p in (tmp_path / "runs" / "stream").iterdir() if p.name.isdigit()]
    assert len(runs) == 2
    methods = {json.loads((p / "config.json").read_text())["method"] for p in runs}
    assert methods == {"bp", "cbp"}


@pytest.mark.parametrize("workers", [0, -1])
def test_sweep_rejects_no_workers(workers):
    with pytest.raises(ValueError, match="workers"):
        sweep.run_sweep([], workers)
