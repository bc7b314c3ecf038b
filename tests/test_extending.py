"""docs/extending.md's example, run as written: a user's own stream, plasticity method and
extra Avalanche metric registered with the study, validated, documented and run."""

import json
import re
from pathlib import Path

import pytest
from tiny_configs import STREAM

from experiments import _runs
from experiments import stream as study

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NAMES = ((study.STREAMS, "drifting_blobs"), (study.METHODS, "boundary_noise"))


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The namespace after every python block of the doc but the last, which undoes the
    registrations (run at teardown, so nothing leaks into other tests)."""
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) >= 5  # stream, method, metric, run, undo
    namespace: dict = {}
    for registry, name in (*NAMES, (study.METRICS, "bwt")):
        if name in registry:  # left over by a failed run of the docs' own test
            registry.unregister(name)
    try:
        for block in blocks[:-1]:
            exec(compile(block, str(DOC), "exec"), namespace)
        yield namespace
    finally:
        exec(compile(blocks[-1], str(DOC), "exec"), namespace)


def test_the_registered_parts_are_choices_and_named_configs(example):
    assert "drifting_blobs" in study.STREAMS.names
    assert "boundary_noise" in study.METHODS.names
    for registry, name in NAMES:
        assert registry.chosen({registry.key: name}).name == name
        assert study.ex.named_configs[name] is not None
    config = study.ex._create_run(named_configs=["drifting_blobs", "boundary_noise"]).config
    assert (config["stream"], config["method"]) == ("drifting_blobs", "boundary_noise")
    assert (config["blob_shift"], config["boundary_noise_std"]) == (0.5, 0.01)


def test_the_example_run_logs_the_metric_scheme_and_the_extra_metric(example):
    run, metrics = example["run"], example["metrics"]
    assert run.status == "COMPLETED"
    assert metrics["eval.accuracy.exp002"]["steps"] == [2]
    assert metrics["eval.accuracy.exp000"]["steps"] == [0, 1, 2]
    assert metrics["train.loss"]["steps"] == [0, 1, 2]
    # Avalanche's own BWT, which the study does not use: under the scheme, not dropped.
    assert metrics["eval.experiencebwt.exp000"]["steps"] == [1, 2]
    assert "eval.streambwt" in metrics
    assert metrics["stream.test_overlap"]["values"] == [0.0, 0.0, 0.0]  # measured


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"blob_shift": -1.0}, r"config 'blob_shift' must be in \[0"),
        ({"blob_dimensions": 1}, r"config 'blob_dimensions' must be in \[2"),
        ({"boundary_noise_std": "high"}, "config 'boundary_noise_std' must be a number"),
        ({"transition": "gradual"}, r"config 'transition' must be one of \('abrupt',\)"),
        ({"stream": "drifting_blob"}, "config 'stream' must be one of .*'drifting_blobs'"),
    ],
)
def test_the_parts_keys_are_checked_before_any_work(example, updates, message, monkeypatch):
    monkeypatch.setattr(study, "build_stream", pytest.fail)
    named = ["drifting_blobs", "boundary_noise"]
    with pytest.raises(ValueError, match=message):
        study.ex.run(named_configs=named, config_updates={**STREAM, **updates})


def test_print_config_lists_the_new_keys_with_their_comments(example, capsys):
    study.ex.run("print_config", named_configs=["drifting_blobs", "boundary_noise"])
    lines = ANSI.sub("", capsys.readouterr().out).splitlines()

    def line_of(key: str) -> str:
        (line,) = [x for x in lines if x.startswith(f"  {key} = ")]
        return line

    assert "# drifting_blobs: rotation of the blob centres per experience" in line_of("blob_shift")
    assert "# boundary_noise: std of the noise added to every weight" in line_of(
        "boundary_noise_std"
    )
    assert '"drifting_blobs"' in line_of("stream")  # the choice key lists the new name


def test_the_command_line_runs_the_users_parts(example, tmp_path, monkeypatch):
    monkeypatch.setenv("PONDERLIFE_RUNS", str(tmp_path / "cli"))
    updates = [f"{key}={json.dumps(value)}" for key, value in STREAM.items()]
    argv = ["my_study.py", "with", "drifting_blobs", "boundary_noise", "blob_shift=0.3"]
    run = _runs.main(study.ex, argv + updates)
    assert run.status == "COMPLETED" and run.config["blob_shift"] == 0.3
    folder = tmp_path / "cli" / "stream" / str(run._id)
    assert "eval.accuracy.exp001" in json.loads((folder / "metrics.json").read_text())


def test_unregistering_removes_the_parts_and_their_keys():
    def blobs(cfg, seed):
        raise AssertionError("never built")

    key = study.Key(1, "mine: a key; int", None)
    study.STREAMS.register("mine", blobs, keys={"mine_key": key})
    try:
        assert "mine_key" in study.ex._create_run().config
        with pytest.raises(ValueError, match="stream 'mine' is registered already"):
            study.STREAMS.register("mine", blobs)
    finally:
        study.STREAMS.unregister("mine")
    assert "mine_key" not in study.ex._create_run().config
    assert "mine" not in study.ex.named_configs


@pytest.mark.parametrize(
    ("name", "keys", "message"),
    [
        ("cbp", {}, "named config of that name"),
        ("other", {"learning_rate": 1}, "config 'learning_rate' of stream 'other' is a key"),
        ("other", {"init": 1}, "declared by another part"),
        ("not-a-name", {}, "must be a Python identifier"),
    ],
)
def test_a_registration_that_clashes_is_refused(name, keys, message):
    keys = {key: study.Key(value, "doc") for key, value in keys.items()}
    with pytest.raises(ValueError, match=message):
        study.STREAMS.register(name, list, keys=keys)
    assert name not in study.STREAMS


def test_a_gradual_config_on_a_stream_that_built_no_mixture_is_refused(example):
    """A registration that claims gradual transitions but builds a plain benchmark would
    otherwise run a gradual config as an abrupt one."""
    study.STREAMS.register(
        "claims_gradual", example["drifting_blobs"], transitions=("abrupt", "gradual")
    )
    try:
        config = {**STREAM, "stream": "claims_gradual", "transition": "gradual", "window": 8}
        config = {**study.ex._create_run(config_updates=config).config}
        with pytest.raises(ValueError, match=r"config 'transition' = 'gradual'.*claims_gradual"):
            study.build_stream(config, seed=0)
        config["transition"] = "abrupt"
        assert study.build_stream(config, seed=0).transition == "abrupt"
    finally:
        study.STREAMS.unregister("claims_gradual")


def test_a_step_function_of_your_own_is_one_registration():
    from ponderlife import GRUStep

    built = []

    def wide_gru(cfg, example, outputs):
        built.append((example.numel(), outputs))
        return GRUStep(example.numel(), 2 * cfg["hidden_size"], outputs)

    study.STEPS.register("wide_gru", wide_gru, doc="a GRU twice as wide", units=False)
    try:
        config = {**STREAM, "step": "wide_gru"}
        config = {**study.ex._create_run(config_updates=config).config}
        study.validate(config)
        model = study.build_model(config, study.build_stream(config, seed=0))
        assert isinstance(model.step, GRUStep) and built == [(16, 2)]  # 4 × 4 matrices
        assert model.step.cell.hidden_size == 2 * STREAM["hidden_size"]
        with pytest.raises(ValueError, match="config 'method' = 'cbp' needs unit layers"):
            study.validate({**config, "method": "cbp"})
        assert study.ex._create_run(named_configs=["wide_gru"]).config["step"] == "wide_gru"
    finally:
        study.STEPS.unregister("wide_gru")
