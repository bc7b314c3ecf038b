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
# # Bit-flipping: loss of plasticity on a slowly changing regression
#
# The continual-backprop papers' first problem: a target network whose inputs hold a few
# slowly flipping bits, learned online one example at a time. Does plain backprop (`bp`)
# lose its ability to track the target as the stream goes on, and does continual backprop
# (`cbp`) keep it? A linear learner (`activation=linear`, no hidden layer) is the lower
# bar. This notebook reads the Sacred runs of the `bit_flipping` experiment from
# `$PONDERLIFE_RUNS_DIR` (default `runs/bit_flipping`, relative to the repository root),
# only calls `analysis/` functions, and writes every figure it shows to
# `$PONDERLIFE_FIGURES_DIR` (default `figures/bit_flipping`) as PNG.
#
# Only finished runs are read (the first cell prints what was left out). Runs are grouped
# by every config key that differs between them, seed aside (`method=bp, activation=relu`,
# `method=bp, activation=linear`, ...); legends say how many runs each group holds.
#
# What to look for:
#
# * **Squared error per bin** (`train.squared_error`, the mean online error over each bin
#   of `bin_size` examples, against the examples seen): a learner that keeps its plasticity
#   holds a low error; plain backprop's error creeping up along the stream, towards or past
#   the linear learner's, is loss of plasticity.
# * **Diagnostics** of the hidden layer on a fixed probe batch every bin: dormant units
#   growing, effective rank falling and weights growing usually come with that loss;
#   `units_replaced` (cumulative) shows how often continual backprop intervened.
# * **Tables**: the error over the whole stream and in its last bin, mean ± std over seeds.

# %%
# %matplotlib inline

from analysis import (
    bit_flipping_error,
    load_configs,
    notebook_runs,
    plasticity_diagnostics,
    save_figure,
    summarise,
)

frame, RUNS_DIR, FIGURES_DIR = notebook_runs("runs/bit_flipping", "figures/bit_flipping")
load_configs(RUNS_DIR)

# %% [markdown]
# ## Online squared error per bin over the stream

# %%
save_figure(bit_flipping_error(frame), FIGURES_DIR, "bit_flipping_error")

# %% [markdown]
# ## Plasticity diagnostics of the hidden layer over the stream

# %%
save_figure(plasticity_diagnostics(frame), FIGURES_DIR, "bit_flipping_diagnostics")

# %% [markdown]
# ## Squared error over the whole stream (mean ± std over seeds of each run's mean)

# %%
summarise(frame, "train.squared_error", at="mean")

# %% [markdown]
# ## Squared error in the last bin (mean ± std over seeds)

# %%
summarise(frame, "train.squared_error", at="final")
