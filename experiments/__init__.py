"""Sacred experiments, one file each, run from the repository root (``python -m experiments.X``)."""
