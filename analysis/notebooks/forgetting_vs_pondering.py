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
# # Forgetting vs pondering
#
# Does an experience that the network thought longer about (a higher halting step when it
# was learned) get forgotten less, or more, by the end of the stream? This notebook reads
# the Sacred runs of the `stream` experiment from `$PONDERLIFE_RUNS_DIR` (default
# `runs/stream`, relative to the repository root) and only calls `analysis/` functions.
#
# What to look for:
#
# * **Final table**: mean ± std over seeds of the stream-level accuracy, forgetting and
#   backward transfer (BWT) at the last experience, per model and method.
# * **Halting over the stream**: does the halting step follow the difficulty of each new
#   experience (dashed grey)? A model that stops adapting its depth to difficulty ponders
#   the same everywhere.
# * **Forgetting vs pondering**: one point per run × experience. A negative slope
#   (Spearman ρ < 0) means experiences learned with more steps were forgotten less; a
#   method whose points sit lower forgets less overall. Correlation is not cause: hard
#   experiences get both more steps and, often, more forgetting.
# * **Halting vs difficulty**: at the end of the stream, is the depth still ordered by
#   difficulty level?

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
    forgetting_vs_pondering,
    halting_over_stream,
    halting_vs_difficulty,
    load_configs,
    load_runs,
    summarise,
)

RUNS_DIR = ROOT / os.environ.get("PONDERLIFE_RUNS_DIR", "runs/stream")
HUE = "config.method"
frame = load_runs(RUNS_DIR)
load_configs(RUNS_DIR)

# %% [markdown]
# ## Stream-level results at the last experience (mean ± std over seeds)

# %%
summarise(
    frame,
    ["eval.accuracy", "eval.forgetting", "eval.bwt"],
    by=("config.model", "config.method"),
)

# %% [markdown]
# ## Halting step on each new experience, and the stream's difficulty

# %%
halting_over_stream(frame, hue=HUE)

# %% [markdown]
# ## Forgetting at the end vs halting step when learned

# %%
forgetting_vs_pondering(frame, hue=HUE)

# %% [markdown]
# ## Halting step per difficulty level at the end of the stream

# %%
halting_vs_difficulty(frame, hue=HUE)
