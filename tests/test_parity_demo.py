"""`python -m experiments.parity_demo`: the parity runs as a Ray sweep, a table beside the
paper's numbers, and a rerun that skips the finished runs (tiny config, real local Ray)."""

import json
import re

import pytest
from tiny_configs import PARITY

from experiments import _runs, parity_demo

pytest.importorskip("ray")

TINY = [f"{key}={json.dumps(value)}" for key, value in PARITY.items()]


def run_folders(root):
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))


def test_the_demo_prints_a_row_per_model_and_a_rerun_skips_finished_runs(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("PONDERLIFE_RUNS", str(tmp_path))
    argv = ["--seeds", "0", "--models", "pondernet", "act", "--workers", "2", "--set", *TINY]
    assert parity_demo.main(argv) == 0
    out = capsys.readouterr().out
    number = r"\d\.\d+"
    for model in ("pondernet", "act"):
        # Accuracy on both splits, then halting steps on both splits.
        assert re.search(rf"^{model} \(here\)\s+{number}(\s+{number}){{3}}$", out, re.M), out
        assert re.search(rf"^{model} \(paper\)\s+", out, re.M), out
    assert "parity, P = 6: train k ≤ 3" in out
    root = tmp_path / "parity"
    folders = run_folders(root)
    assert len(folders) == 2
    for name in folders:  # named by the run's identity: the `small` config, the --set values
        config = json.loads((root / name / "config.json").read_text())
        assert name == _runs.identity("parity", config)[:12]
        assert config["size"] == 6 and config["learning_rate"] == 1e-3  # small's, not set

    assert parity_demo.main(argv) == 0
    again = capsys.readouterr().out
    assert "2 COMPLETED before, skipped), 0 to run" in again
    assert again.count("(finished before, skipped)") == 2
    assert run_folders(root) == folders
    # The table is rebuilt from the finished runs' results.
    table = [line for line in out.splitlines() if "(here)" in line]
    assert [line for line in again.splitlines() if "(here)" in line] == table


def test_set_needs_key_equals_value():
    with pytest.raises(SystemExit):
        parity_demo.main(["--set", "train_steps"])
