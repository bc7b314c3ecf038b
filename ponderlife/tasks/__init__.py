"""Task generators: seeded, framework-free sources of (input, target, difficulty) batches."""

from ponderlife.tasks.bit_flipping import BitFlippingStream, RegressionBatch
from ponderlife.tasks.parity import PARITY_SPLITS, ParityBatch, parity_batch, parity_nonzero_range

__all__ = [
    "PARITY_SPLITS",
    "BitFlippingStream",
    "ParityBatch",
    "RegressionBatch",
    "parity_batch",
    "parity_nonzero_range",
]
