"""From Sacred run folders to tables and figures: :mod:`analysis.runs` loads runs into
tidy pandas frames, selects (:func:`where`) and groups them (:func:`run_groups`: one group
per configuration, seed aside), :mod:`analysis.plots` turns frames into matplotlib figures
and :mod:`analysis.report` writes them all (``write_report``, ``save_figure`` and
``notebook_runs`` are also importable from here). Only pandas, numpy and matplotlib are
imported (and scipy by ``confidence_interval`` when called), so this loads without torch."""

from analysis.plots import (
    bit_flipping_error,
    forgetting_vs_pondering,
    halting_over_stream,
    halting_vs_difficulty,
    parity_by_difficulty,
    parity_sweep,
    parity_training,
    plasticity_curve,
    plasticity_diagnostics,
)
from analysis.runs import (
    NOT_A_DIFFERENCE,
    MissingMetricError,
    accuracy_matrix,
    final_forgetting,
    group_label,
    left_out,
    load_configs,
    load_runs,
    mongo_runs,
    parse_metric_name,
    per_experience,
    run_groups,
    summarise,
    varying_keys,
    where,
    with_difficulty,
)

__all__ = [
    "NOT_A_DIFFERENCE",
    "MissingMetricError",
    "accuracy_matrix",
    "bit_flipping_error",
    "final_forgetting",
    "forgetting_vs_pondering",
    "group_label",
    "halting_over_stream",
    "halting_vs_difficulty",
    "left_out",
    "load_configs",
    "load_runs",
    "mongo_runs",
    "notebook_runs",
    "parity_by_difficulty",
    "parity_sweep",
    "parity_training",
    "parse_metric_name",
    "per_experience",
    "plasticity_curve",
    "plasticity_diagnostics",
    "run_groups",
    "save_figure",
    "summarise",
    "varying_keys",
    "where",
    "with_difficulty",
    "write_report",
]


def __getattr__(name: str):
    # analysis.report is imported on first use only: importing it here would make
    # `python -m analysis.report` warn that the module was imported before it ran.
    if name in ("write_report", "save_figure", "notebook_runs"):
        from analysis import report

        return getattr(report, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
