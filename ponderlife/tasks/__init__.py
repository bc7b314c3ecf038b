"""Task generators: seeded, framework-free sources of (input, target, difficulty) batches."""

from ponderlife.tasks.parity import PARITY_SPLITS, ParityBatch, parity_batch, parity_nonzero_range

__all__ = ["PARITY_SPLITS", "ParityBatch", "parity_batch", "parity_nonzero_range"]
