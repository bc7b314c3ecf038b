# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Plasticity over tasks
#
# Does the network keep its ability to learn new experiences as the stream goes on, and
# which maintenance method (continual backprop, L2, shrink-and-perturb, ReDo, UPGD) keeps
# it? This notebook reads the Sacred runs of the `stream` experiment from
# `$PONDERLIFE_RUNS_DIR` (default `runs/stream`, relative to the repository root) and only
# calls `analysis/` functions.
#
# What to look for:
#
# * **Accuracy on each new experience**: plain backprop (`bp`) losing plasticity shows
#   as a curve that falls along the stream; a method that maintains plasticity stays flat.
# * **Diagnostics**: loss of plasticity usually comes with a growing fraction of dormant
#   units, a falling effective rank of the features and growing weights; continual
#   backprop's replaced units show when and how much it intervenes.
# * **Table**: the same diagnostics at the last experience, mean ± std over seeds.

# %%
# %matplotlib inline
import os
import sys
from pathlib import Path

# The repository root holds analysis/: search up from this script, or from the notebook's
# working folder (Jupyter starts a notebook in its own folder, where __file__ is undefined).
HERE = Path(globals().get("__file__", ".")).resolve()
ROOT = next(p for p in [HERE, *HERE.parents] if (p / "analysis" / "runs.py").exists())
sys.path.insert(0, str(ROOT))

from analysis import (  # noqa: E402
    load_configs,
    load_runs,
    plasticity_curve,
    plasticity_diagnostics,
    summarise,
)

RUNS_DIR = ROOT / os.environ.get("PONDERLIFE_RUNS_DIR", "runs/stream")
HUE = "config.method"
frame = load_runs(RUNS_DIR)
load_configs(RUNS_DIR)

# %% [markdown]
# ## Accuracy on each new experience, right after training on it

# %%
plasticity_curve(frame, hue=HUE)

# %% [markdown]
# ## Plasticity diagnostics on a probe batch after each experience

# %%
plasticity_diagnostics(frame, hue=HUE)

# %%
plasticity_diagnostics(
    frame,
    hue=HUE,
    metrics=("dead_fraction", "stable_rank", "feature_norm", "gradient_norm"),
)

# %% [markdown]
# ## Diagnostics at the last experience (mean ± std over seeds)

# %%
summarise(
    frame,
    [
        "plasticity.dormant_fraction",
        "plasticity.effective_rank",
        "plasticity.weight_magnitude",
        "plasticity.units_replaced",
    ],
    by=("config.model", "config.method"),
)
