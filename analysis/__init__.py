"""From Sacred run folders to tables and figures: :mod:`analysis.runs` loads runs into
tidy pandas frames, :mod:`analysis.plots` turns frames into matplotlib figures and
:mod:`analysis.report` writes them all (``write_report`` is also importable from here).
Only pandas, numpy and matplotlib are imported, so this loads without torch."""

from analysis.plots import (
    forgetting_vs_pondering,
    halting_over_stream,
    halting_vs_difficulty,
    plasticity_curve,
    plasticity_diagnostics,
)
from analysis.runs import (
    MissingMetricError,
    accuracy_matrix,
    final_forgetting,
    left_out,
    load_configs,
    load_runs,
    mongo_runs,
    parse_metric_name,
    per_experience,
    summarise,
    with_difficulty,
)

__all__ = [
    "MissingMetricError",
    "accuracy_matrix",
    "final_forgetting",
    "forgetting_vs_pondering",
    "halting_over_stream",
    "halting_vs_difficulty",
    "left_out",
    "load_configs",
    "load_runs",
    "mongo_runs",
    "parse_metric_name",
    "per_experience",
    "plasticity_curve",
    "plasticity_diagnostics",
    "summarise",
    "with_difficulty",
    "write_report",
]


def __getattr__(name: str):
    # analysis.report is imported on first use only: importing it here would make
    # `python -m analysis.report` warn that the module was imported before it ran.
    if name == "write_report":
        from analysis.report import write_report

        return write_report
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
