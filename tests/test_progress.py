"""The time left on a progress line: durations, the ETA arithmetic, resumed runs."""

import math

import pytest

from experiments._progress import duration, timing


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0 s"),
        (42.4, "42 s"),
        (59.6, "1 min 00 s"),  # rounded first, so never "60 s"
        (200.0, "3 min 20 s"),
        (3599.4, "59 min 59 s"),
        (7500.0, "2 h 05 min"),
        (math.nan, "?"),
        (math.inf, "?"),
        (-1.0, "?"),
    ],
)
def test_durations_read_in_the_largest_sensible_units(seconds, shown):
    assert duration(seconds) == shown


def test_eta_is_the_mean_time_per_unit_times_the_units_left():
    # 10 s for 2 of 10 units: 5 s per unit, 8 units left.
    assert timing(2, 10, 10.0) == "10 s, ETA 40 s"


def test_a_resumed_run_times_only_the_units_it_did_itself():
    # Resumed at unit 6 of 10; 2 units in 10 s since: 5 s per unit, 2 left.
    assert timing(8, 10, 10.0, start=6) == "10 s, ETA 10 s"
    # Counting the restored units too would claim 1.25 s per unit.
    assert timing(8, 10, 10.0) == "10 s, ETA 2 s"


def test_before_the_first_timed_unit_the_eta_is_unknown():
    assert timing(6, 10, 3.0, start=6) == "3 s, ETA ?"


@pytest.mark.parametrize("done", [10, 11])
def test_once_everything_is_done_only_the_elapsed_time_is_shown(done):
    assert timing(done, 10, 125.0) == "2 min 05 s"
