"""Task generators: seeded, framework-free sources of (input, target, difficulty) batches."""

from ponderlife.tasks.bit_flipping import BitFlippingStream, RegressionBatch
from ponderlife.tasks.idx import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    ImageSet,
    load_fashion_mnist,
    permuted,
    read_idx,
    write_idx,
)
from ponderlife.tasks.linear_systems import (
    PAD_TOKEN,
    SYSTEM_TASKS,
    VOCAB_SIZE,
    SystemBatch,
    controllability_batch,
    controllability_density,
    decode_tokens,
    encode_tokens,
    kalman_rank,
    routh_batch,
    stability_batch,
    stability_shift,
    system_batch,
    token_length,
)
from ponderlife.tasks.parity import PARITY_SPLITS, ParityBatch, parity_batch, parity_nonzero_range

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_FILES",
    "PAD_TOKEN",
    "PARITY_SPLITS",
    "SYSTEM_TASKS",
    "VOCAB_SIZE",
    "BitFlippingStream",
    "ImageSet",
    "ParityBatch",
    "RegressionBatch",
    "SystemBatch",
    "controllability_batch",
    "controllability_density",
    "decode_tokens",
    "encode_tokens",
    "kalman_rank",
    "load_fashion_mnist",
    "parity_batch",
    "parity_nonzero_range",
    "permuted",
    "read_idx",
    "routh_batch",
    "stability_batch",
    "stability_shift",
    "system_batch",
    "token_length",
    "write_idx",
]
