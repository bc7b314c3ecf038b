"""The parity recipe page (experiments/benchmarks/parity_recipe.py): its table, reading and
commands come from the sweep's run folders and its ROUNDS."""

from __future__ import annotations

import shlex

import pytest
from run_folders import log_metric, write_run_folder

from experiments import sweep
from experiments.benchmarks import parity_recipe

BASE = {"size": 16, "split": "extrapolation", "hidden_size": 64, "learning_rate": 1e-3}


def sweep_run(root, name, seed, extrapolation, halting, **changes):
    metrics: dict = {}
    for step, scale in ((1000, 0.5), (2000, 1.0)):  # only the final evaluation counts
        for split, accuracy, steps in (
            ("interpolation", 1.0, 5.0),
            ("extrapolation", extrapolation, halting),
        ):
            log_metric(metrics, f"{split}.accuracy", step, accuracy * scale)
            log_metric(metrics, f"{split}.halting_step", step, steps)
            log_metric(metrics, f"{split}.expected_steps", step, steps)
    config = {**BASE, **changes, "seed": seed, "resume_from": None, "num_threads": 1}
    write_run_folder(root / name, "parity", config, metrics)


@pytest.fixture
def swept(tmp_path):
    root = tmp_path / "parity_sweep"
    sweep_run(root, "a", 0, 0.50, 4.0)
    sweep_run(root, "b", 1, 0.54, 4.0)
    sweep_run(root, "c", 0, 0.70, 7.0, learning_rate=3e-3)
    sweep_run(root, "d", 1, 0.80, 7.0, learning_rate=3e-3)
    sweep_run(root, "e", 0, 0.60, 4.2, beta=0.1)
    return root


def test_the_table_ranks_configurations_by_extrapolation_with_seed_spread(swept, capsys):
    assert parity_recipe.main(["--runs", str(swept)]) == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| learning_rate=0.003",
        "| beta=0.1",
        "| base",
    ]
    # learning rate 3e-3: 0.70 and 0.80 → 0.750 ± 0.071; halting 5.0 → 7.0 on k > 8
    assert "| learning_rate=0.003 | 2 | 1.000 | 0.750 ± 0.071 | 5.0 | 7.0 |" in printed
    assert "Best mean extrapolation accuracy: 0.750 ± 0.071 (learning_rate=0.003, 2 seeds)" in (
        printed
    )
    assert "No configuration reaches the goal of 0.90" in printed
    assert "rises by more than 0.5 steps from the trained to the untrained range in " in printed
    assert "learning_rate=0.003." in printed  # beta=0.1 rises by 0.2 only; base not at all


def test_runs_that_did_not_finish_are_named_not_averaged(swept, capsys):
    sweep_run(swept, "f", 2, 0.99, 9.0, learning_rate=3e-3)
    run = swept / "f" / "run.json"
    run.write_text(run.read_text().replace('"COMPLETED"', '"RUNNING"'))
    assert parity_recipe.main(["--runs", str(swept)]) == 0
    printed = capsys.readouterr().out
    assert "| learning_rate=0.003 | 2 |" in printed  # seeds 0 and 1 only
    assert "Not in the table (not finished): RUNNING: f." in printed


def test_the_page_holds_the_table_the_figure_and_commands_that_parse(swept, tmp_path):
    out = tmp_path / "docs" / "parity_recipe.md"
    out.parent.mkdir()
    assert parity_recipe.main(["--runs", str(swept), "--out", str(out)]) == 0
    text = out.read_text()
    assert (tmp_path / "docs" / "parity_recipe.png").stat().st_size > 0
    assert "![the sweep: accuracy and halting step per configuration](parity_recipe.png)" in text
    assert "5 run folders on" in text
    assert "Every run of the sweep finished." in text
    commands = [line for line in text.splitlines() if line.startswith(".venv/bin/python -m")]
    assert len(commands) == len(parity_recipe.ROUNDS) + 1
    for command in commands[:-1]:  # each round's sweep plans and validates
        arguments = shlex.split(command)[3:]  # after `-m experiments.sweep`
        assert arguments[0] == "parity"
        jobs = sweep.plan(
            "parity",
            _option(arguments, "--grid", many=True),
            [0],
            _option(arguments, "--with"),
            {
                k: sweep.parse_value(v)
                for k, v in (a.split("=") for a in _option(arguments, "--set"))
            },
        )
        assert sweep.resolve(jobs, tmp_path / "plan")


def _option(arguments: list[str], flag: str, many: bool = False):
    """The values after each ``flag`` up to the next option."""
    found = []
    for index, argument in enumerate(arguments):
        if argument == flag:
            values = []
            for value in arguments[index + 1 :]:
                if value.startswith("--"):
                    break
                values.append(value)
            found.append(values)
    if many:
        return found
    return found[0] if found else []
