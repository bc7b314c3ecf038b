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
# # Parity: PonderNet vs ACT vs fixed depth
#
# PonderNet's parity benchmark (§3.1): the parity of a vector of P entries with k nonzero
# ones (k is the difficulty). Does the model take more steps for larger k, and, when it
# was trained on k ≤ P/2 only (`split=extrapolation`), does it still answer for k > P/2?
# This notebook reads the Sacred runs of the `parity` experiment from
# `$PONDERLIFE_RUNS_DIR` (default `runs/parity`, relative to the repository root), only
# calls `analysis/` functions, and writes every figure it shows to
# `$PONDERLIFE_FIGURES_DIR` (default `figures/parity`) as PNG.
#
# Only finished runs are read (the first cell prints what was left out). Runs are grouped
# by every config key that differs between them, seed aside (`model=pondernet`,
# `model=act`, ...; the size P and the split too when runs of several are mixed); legends
# say how many runs each group holds.
#
# What to look for:
#
# * **Per k at the final evaluation**: accuracy (left) and halting step (right) against
#   the number of nonzero entries k, one row per P and split. With `split=extrapolation`
#   the range k > P/2 is shaded "not trained": PonderNet's halting step should keep growing
#   with k there and its accuracy stay high, where a fixed-depth model's depth cannot grow.
# * **Training curves**: accuracy on the trained range (`interpolation`) and, for
#   extrapolation runs, on the untrained range (`extrapolation`) over the updates.
# * **Table**: the final accuracies and halting steps, mean ± std over seeds.

# %%
# %matplotlib inline

from analysis import (
    load_configs,
    notebook_runs,
    parity_by_difficulty,
    parity_training,
    save_figure,
    summarise,
)

frame, RUNS_DIR, FIGURES_DIR = notebook_runs("runs/parity", "figures/parity")
load_configs(RUNS_DIR)

# %% [markdown]
# ## Accuracy and halting step per number of nonzero entries k, final evaluation

# %%
save_figure(parity_by_difficulty(frame), FIGURES_DIR, "parity_by_difficulty")

# %% [markdown]
# ## Test accuracy over the updates

# %%
save_figure(parity_training(frame), FIGURES_DIR, "parity_training")

# %% [markdown]
# ## Final results (mean ± std over seeds)
#
# `extrapolation.*` exists only for runs with `split=extrapolation`.

# %%
logged = set(frame["name"])
summarise(
    frame,
    [
        name
        for split in ("interpolation", "extrapolation")
        for name in (f"{split}.accuracy", f"{split}.halting_step")
        if name in logged
    ],
)
