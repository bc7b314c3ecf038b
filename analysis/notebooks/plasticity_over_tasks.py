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
# `$PONDERLIFE_RUNS_DIR` (default `runs/stream`, relative to the repository root), only
# calls `analysis/` functions, and writes every figure it shows to
# `$PONDERLIFE_FIGURES_DIR` (default `figures/plasticity_over_tasks`) as PNG.
#
# Only finished runs are read, and a run that a resumed run continued is left out; the
# first cell prints what was left out. Runs are grouped by every config key that differs
# between them, seed aside (a method whose named config changes its learning rate, like
# `upgd`, shows it in its label); legends say how many runs each group holds. To look at a
# subset, filter the frame, e.g. `frame = where(frame, "stream=stability")`.
#
# What to look for:
#
# * **Accuracy on each new experience**: plain backprop (`bp`) losing plasticity shows
#   as a curve that falls along the stream; a method that maintains plasticity stays flat.
#   When the stream cycles through a few difficulty levels, there is one panel per level
#   (the level in the title), so the fall is read within a level, not across the zig-zag.
# * **Diagnostics**, measured on a probe batch after each experience: loss of plasticity
#   usually comes with a growing fraction of dormant units, a falling effective rank of the
#   features and growing weights; continual backprop's replaced units (cumulative) show
#   when and how much it intervenes.
# * **Table**: the same diagnostics at the last experience, mean ± std over seeds.

# %%
# %matplotlib inline

from analysis import (
    load_configs,
    notebook_runs,
    plasticity_curve,
    plasticity_diagnostics,
    save_figure,
    summarise,
)

frame, RUNS_DIR, FIGURES_DIR = notebook_runs("runs/stream", "figures/plasticity_over_tasks")
load_configs(RUNS_DIR)

# %% [markdown]
# ## Accuracy on each new experience, right after training on it

# %%
save_figure(plasticity_curve(frame), FIGURES_DIR, "plasticity_curve")

# %% [markdown]
# ## Plasticity diagnostics on a probe batch after each experience

# %%
save_figure(plasticity_diagnostics(frame), FIGURES_DIR, "plasticity_diagnostics")

# %%
save_figure(
    plasticity_diagnostics(
        frame, metrics=("dead_fraction", "stable_rank", "feature_norm", "gradient_norm")
    ),
    FIGURES_DIR,
    "plasticity_diagnostics_more",
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
)
