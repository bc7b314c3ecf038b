"""The smallest configs of the three experiments that still exercise every code path; tests
extend them with the keys they vary (``{**STREAM, "seed": 5}``)."""

STREAM = {
    "experiences": 2,
    "samples_per_experience": 64,
    "test_samples": 32,
    "batch_size": 32,
    "hidden_size": 8,
    "max_steps": 3,
    "probe_size": 16,
    "dimensions": [3, 4],
}
PARITY = {
    "size": 6,
    "hidden_size": 8,
    "max_steps": 4,
    "batch_size": 16,
    "train_steps": 4,
    "eval_every": 2,
    "eval_samples": 32,
}
BIT_FLIPPING = {"examples": 60, "bin_size": 20, "probe_size": 16, "period": 25}
