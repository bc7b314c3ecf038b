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
# `runs/stream`, relative to the repository root), only calls `analysis/` functions, and
# writes every figure it shows to `$PONDERLIFE_FIGURES_DIR` (default
# `figures/forgetting_vs_pondering`) as PNG.
#
# Only finished runs are read, and a run that a resumed run continued is left out (the
# resumed run holds its whole history); the first cell prints what was left out. Runs are
# grouped by every config key that differs between them, seed aside, so no curve averages
# different configurations; legends say how many runs (seeds) each group holds. To look at
# a subset, filter the frame, e.g. `frame = where(frame, "stream=stability")`.
#
# What to look for:
#
# * **Final table**: mean ± std over seeds of the stream-level accuracy, forgetting and
#   backward transfer (BWT) at the last experience, one row per configuration.
# * **Halting over the stream**: does the halting step follow the difficulty of each new
#   experience? When the stream cycles through a few difficulty levels, the figure has one
#   panel per level (the level in the panel's title): the curves should sit higher in the
#   panels of harder levels, and a curve drifting within a panel is the depth for that level
#   changing along the stream. Otherwise one panel shows the stream's difficulty dashed grey
#   on a second axis. A model that stops adapting its depth ponders the same everywhere.
# * **Forgetting vs pondering**: one point per run × experience. A negative slope
#   (Spearman ρ < 0) means experiences learned with more steps were forgotten less; a
#   group whose points sit lower forgets less overall. Correlation is not cause: hard
#   experiences get both more steps and, often, more forgetting.
# * **Halting vs difficulty**: at the end of the stream, is the depth still ordered by
#   difficulty level?

# %%
# %matplotlib inline

from analysis import (
    forgetting_vs_pondering,
    halting_over_stream,
    halting_vs_difficulty,
    load_configs,
    notebook_runs,
    save_figure,
    summarise,
)

frame, RUNS_DIR, FIGURES_DIR = notebook_runs("runs/stream", "figures/forgetting_vs_pondering")
load_configs(RUNS_DIR)

# %% [markdown]
# ## Stream-level results at the last experience (mean ± std over seeds)

# %%
summarise(frame, ["eval.accuracy", "eval.forgetting", "eval.bwt"])

# %% [markdown]
# ## Halting step on each new experience, and the stream's difficulty

# %%
save_figure(halting_over_stream(frame), FIGURES_DIR, "halting_over_stream")

# %% [markdown]
# ## Forgetting at the end vs halting step when learned

# %%
save_figure(forgetting_vs_pondering(frame), FIGURES_DIR, "forgetting_vs_pondering")

# %% [markdown]
# ## Halting step per difficulty level at the end of the stream

# %%
save_figure(halting_vs_difficulty(frame), FIGURES_DIR, "halting_vs_difficulty")
