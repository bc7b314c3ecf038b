"""The run-time benchmark runs and extrapolates (a smoke test at tiny prefixes; its
figures are measured by running it, never asserted here)."""

from __future__ import annotations

import re

from experiments.benchmarks import run_times


def test_run_times_prints_a_row_per_config_with_an_extrapolated_full_run(capsys, tmp_path):
    out = tmp_path / "times.md"
    configs = ["--configs", "default", "linear"]
    run_times.main(["--experiments", "bit_flipping", *configs, "--bin", "50", "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| bit_flipping")]
    assert [row.split("|")[2].strip() for row in rows] == ["default", "`linear`"]
    for row in rows:
        assert "1,000,000 examples" in row
        # 20,000 bins of 50 examples: the full run is far longer than the two prefixes.
        measured, full = (cell.strip() for cell in row.split("|")[4:6])
        assert re.fullmatch(r"\d+ (s|min \d\d s|h \d\d min)", full), full
        assert full != measured
    assert "load average" in out.read_text()


def test_fixed_depth_parity_gets_no_unroll_bound():
    estimate = run_times.parity_estimate(["fixed"], updates=4)
    assert estimate.upper_s is None  # fixed depth always unrolls fixed_steps
    assert run_times.parity_estimate([], updates=4).upper_s is not None  # PonderNet
