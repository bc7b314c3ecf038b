"""Every experiment refuses a bad config before any work, naming the key (issue 10).

Learning rates outside (0, 1e3], seeds outside the integers in [0, 2**32 − 1], devices this
machine lacks, non-boolean booleans, empty lists and misspelt keys (with the closest key
suggested) fail with a ``ValueError`` naming the key and what it allows.
"""

import pytest
import torch
from sacred.utils import ConfigAddedError
from tiny_configs import BIT_FLIPPING, PARITY, STREAM

from experiments import bit_flipping, parity, stream, sweep

EXPERIMENTS = {
    "stream": (stream.ex, STREAM),
    "parity": (parity.ex, PARITY),
    "bit_flipping": (bit_flipping.ex, BIT_FLIPPING),
}


def refuse(name: str, updates: dict, match: str, observe=None):
    """Run experiment ``name`` on its tiny config with ``updates``, expecting a
    ValueError matching ``match`` before any training (no metric, no checkpoint)."""
    ex, tiny = EXPERIMENTS[name]
    root = observe(ex) if observe is not None else None
    with pytest.raises(ValueError, match=match) as caught:
        ex.run(config_updates={"seed": 1, **tiny, **updates})
    if root is not None and root.exists():
        for run in (p for p in root.iterdir() if p.name.isdigit()):
            assert not (run / "checkpoint.pt").exists()
            assert (run / "metrics.json").read_text().strip() in ("", "{}")
    return caught.value


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("rate", [1e308, 1001.0, float("inf"), float("nan")])
def test_a_learning_rate_outside_the_documented_range_is_refused(name, rate, observe):
    refuse(name, {"learning_rate": rate}, r"config 'learning_rate' must be in \(0, 1000\]", observe)


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("parity", "halting_bias", float("inf")),
        ("parity", "halting_bias", float("-inf")),
        ("stream", "halting_bias", float("-inf")),
        ("parity", "beta", float("inf")),  # in [0, inf) by its range, but not inf itself
    ],
)
def test_a_number_key_refuses_infinity(name, key, value, observe):
    refuse(name, {key: value}, rf"config '{key}' must be a finite number, got -?inf", observe)


def test_the_halting_head_refuses_a_bias_that_is_not_finite():
    from ponderlife import GRUStep

    for bias in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="halting_bias must be a finite number or None"):
            GRUStep(2, 4, 1, halting_bias=bias)
    assert GRUStep(2, 4, 1, halting_bias=-3.0).halting.bias.item() == -3.0


@pytest.mark.parametrize("module", [parity, bit_flipping])
def test_print_config_documents_the_learning_rate_range(module, capsys):
    module.ex.run("print_config")
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "learning_rate =" in line]
    assert "in (0, 1000]" in line


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("seed", [-1, 1.5, "x", 2**70, 2**32, True])
def test_a_seed_outside_the_integers_numpy_accepts_fails_before_sacred_uses_it(name, seed, observe):
    ex, tiny = EXPERIMENTS[name]
    root = observe(ex)
    match = r"config 'seed' must be an integer in \[0, 2\*\*32 - 1\]"
    with pytest.raises(ValueError, match=match):
        ex.run(config_updates={**tiny, "seed": seed})
    assert not root.exists() or not any(p.name.isdigit() for p in root.iterdir())


def test_the_largest_seed_is_accepted():
    # The seed passes; validation then stops the run at size=1, before any training.
    ex, tiny = EXPERIMENTS["parity"]
    with pytest.raises(ValueError, match="config 'size'"):
        ex.run(config_updates={**tiny, "seed": 2**32 - 1, "size": 1})


@pytest.mark.parametrize("value", [-1, 2**32, 1.5, "x", True])
def test_a_stream_seed_outside_the_range_is_refused(value, observe):
    match = r"config 'stream_seed' must be an integer in \[0, 2\*\*32 - 1\].* or None"
    refuse("stream", {"stream_seed": value}, match, observe)


@pytest.mark.parametrize(
    "device",
    ["cuda", "cuda:3", "gpu", "", "cuda:x", 0, "meta"],
)
def test_a_device_this_machine_lacks_is_refused_listing_the_available_ones(device, observe):
    if device in ("cuda", "cuda:3") and torch.cuda.device_count() > 3:
        pytest.skip("this machine has that device")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    error = refuse("stream", {"device": device}, "config 'device' must be a device of", observe)
    assert "'cpu'" in str(error) and repr(device) in str(error)


def boolean_keys(ex) -> list[str]:
    """The keys whose default is True or False."""
    defaults = {}
    for scope in ex.configurations:
        defaults.update(scope())
    return sorted(key for key, value in defaults.items() if isinstance(value, bool))


def test_the_boolean_keys_are_found():
    assert boolean_keys(bit_flipping.ex) == ["bias_transfer"]
    assert "permute_inputs" in boolean_keys(stream.ex)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
@pytest.mark.parametrize("value", ["no", "false", 0, 1, None])
def test_every_boolean_key_refuses_anything_but_true_or_false(name, value):
    ex, _ = EXPERIMENTS[name]
    for key in boolean_keys(ex):
        refuse(name, {key: value}, f"config '{key}' must be true or false, got {value!r}")


@pytest.mark.parametrize(
    ("updates", "match"),
    [
        ({"parity_schedule": []}, "config 'parity_schedule' must be a non-empty list, got"),
        ({"parity_schedule": "easy"}, "config 'parity_schedule' must be a non-empty list"),
        ({"dimensions": []}, "config 'dimensions' must be a non-empty list, got"),
        ({"dimensions": 4}, "config 'dimensions' must be a non-empty list, got 4"),
    ],
)
def test_a_list_key_must_be_a_non_empty_list(updates, match, observe):
    refuse("stream", {"stream": "parity", **updates}, match, observe)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_misspelt_key_suggests_the_closest_one(name):
    ex, tiny = EXPERIMENTS[name]
    with pytest.raises(ConfigAddedError) as caught:
        ex.run(config_updates={**tiny, "lerning_rate": 0.1})
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert f"config 'lerning_rate' is not a key of experiment '{name}'" in message
    assert "did you mean 'learning_rate'?" in message


def test_a_misspelt_key_on_the_command_line_suggests_the_closest_one(capsys):
    with pytest.raises(SystemExit) as exited:
        parity.ex.run_commandline(["parity", "with", "lerning_rate=0.1", "seed=1"])
    assert exited.value.code == 1
    assert "did you mean 'learning_rate'?" in capsys.readouterr().err


def test_a_misspelt_key_in_a_sweep_is_reported_with_the_suggestion_before_any_run(tmp_path):
    jobs = sweep.plan("parity", [["lamda_p=0.3"]], [0], updates=dict(PARITY))
    with pytest.raises(sweep.SweepConfigError, match=r"run 'lamda_p=0.3 seed=0'") as caught:
        sweep.run_sweep(jobs, 1, root=tmp_path, log=lambda _: None)
    assert "did you mean 'lambda_p'?" in str(caught.value)
    assert not any(tmp_path.iterdir())


def test_a_key_far_from_every_key_is_still_refused():
    with pytest.raises(ConfigAddedError, match=r"config 'zzzz' is not a key .* no key is close"):
        parity.ex.run(config_updates={**PARITY, "zzzz": 1})
