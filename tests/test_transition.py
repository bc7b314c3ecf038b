"""Gradual task transitions (issue 10, item 4): every stream can mix the previous task into
the first ``window`` training samples of each experience, and the study trains such streams
in stream order."""

import json

import numpy as np
import pytest
import torch
from avalanche.core import SupervisedPlugin
from tiny_configs import STREAM

from experiments import stream as stream_experiment
from ponderlife.tasks import BitFlippingStream, write_idx
from strategies.datasets import tensor_source
from strategies.streams import (
    bit_flipping_stream,
    linear_system_stream,
    parity_shift_stream,
    permuted_fashion_mnist,
    split_fashion_mnist,
)

GRADUAL = {"transition": "gradual"}


def train_tensors(bench, index):
    return tensor_source(bench.train_stream[index].dataset)


def eval_tensors(bench, index):
    return tensor_source(bench.test_stream[index].dataset)


@pytest.fixture
def fashion_root(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 40), ("t10k", 20)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(count, dtype=np.uint8) % 10)
    return tmp_path


def builders(root):
    """One small call per stream builder, taking extra keyword arguments."""
    return {
        "parity": lambda **kw: parity_shift_stream(
            size=8, samples_per_experience=64, test_samples=16, seed=3, **kw
        ),
        "bit_flipping": lambda **kw: bit_flipping_stream(
            experiences=3, period=64, test_samples=16, seed=2, **kw
        ),
        "stability": lambda **kw: linear_system_stream(
            dimensions=[3, 4],
            experiences=3,
            samples_per_experience=64,
            test_samples=16,
            permute_inputs=True,
            seed=1,
            **kw,
        ),
        "permuted_fashion": lambda **kw: permuted_fashion_mnist(
            experiences=3, samples_per_experience=20, test_samples=10, root=root, seed=1, **kw
        ),
        "split_fashion": lambda **kw: split_fashion_mnist(experiences=5, root=root, seed=1, **kw),
    }


STREAMS = ["parity", "bit_flipping", "stability", "permuted_fashion", "split_fashion"]


# ---- the mixture ---------------------------------------------------------------------------


def test_the_share_of_new_task_samples_rises_linearly_over_the_window():
    # Parity easy (k ≤ 8) → hard (k > 8): each sample's own k tells its task, independently
    # of the stream's bookkeeping. With w = N = 4000, the expected new share of quarter q is
    # the mean of (t + 1)/(w + 1) over it: 1/8, 3/8, 5/8, 7/8 (binomial std ≤ 0.016).
    sizes = {"samples_per_experience": 4000, "test_samples": 64}
    bench = parity_shift_stream(size=16, schedule=["easy", "hard"], **sizes, **GRADUAL, window=4000)
    _, _, k, _ = train_tensors(bench, 1)
    new = (k > 8).float()
    shares = [float(quarter.mean()) for quarter in new.chunk(4)]
    assert shares == pytest.approx([1 / 8, 3 / 8, 5 / 8, 7 / 8], abs=0.04)
    assert torch.equal(bench.from_previous[1], k <= 8)
    assert float(new.mean()) == pytest.approx(0.5, abs=0.03)


def test_after_the_window_every_sample_is_the_new_tasks_own_draw_in_order():
    kw = {"size": 8, "schedule": ["easy", "hard", "easy"], "samples_per_experience": 300}
    abrupt = parity_shift_stream(**kw, test_samples=32, seed=7)
    gradual = parity_shift_stream(**kw, test_samples=32, seed=7, **GRADUAL, window=100)
    assert gradual.transition == "gradual" and gradual.window == 100
    for index in (1, 2):
        mixed, old = train_tensors(gradual, index), gradual.from_previous[index]
        assert not bool(old[100:].any()) and 0 < int(old.sum()) < 100
        # The new positions hold the abrupt stream's draws in order; the last ones drop out.
        for a, b in zip(mixed, train_tensors(abrupt, index), strict=True):
            assert len(a) == len(b) == 300
            assert torch.equal(a[~old], b[: int((~old).sum())])


def test_experience_zero_and_every_test_set_are_those_of_the_abrupt_stream(fashion_root):
    for name, build in builders(fashion_root).items():
        abrupt, gradual = build(), build(**GRADUAL, window=8)
        assert not bool(gradual.from_previous[0].any()), name
        for a, b in zip(train_tensors(abrupt, 0), train_tensors(gradual, 0), strict=True):
            assert torch.equal(a, b), name
        for index in range(len(abrupt.test_stream)):
            pairs = zip(eval_tensors(abrupt, index), eval_tensors(gradual, index), strict=True)
            assert all(torch.equal(a, b) for a, b in pairs), (name, index)
        assert all(bool(m.any()) for m in gradual.from_previous[1:]), name


def test_old_parity_samples_keep_their_own_labels_and_difficulty():
    bench = parity_shift_stream(
        size=8, schedule=["easy", "hard"], samples_per_experience=200, **GRADUAL, window=200
    )
    x, y, k, _ = train_tensors(bench, 1)
    old = bench.from_previous[1]
    assert torch.equal(y, (x > 0).sum(1) % 2)
    assert torch.equal(k, (x != 0).sum(1))
    assert int(k[old].max()) <= 4 < int(k[~old].min())


def test_old_linear_system_samples_keep_the_previous_dimension_and_permutation():
    # n = 2, 3, 4 padded to 4 × 4, each experience after the first with its own permutation:
    # an n = 3 input is zero at 7 fixed positions, which the permutation moves.
    kw = {"dimensions": [2, 3, 4], "samples_per_experience": 64, "permute_inputs": True}
    abrupt = linear_system_stream(**kw, seed=5)
    gradual = linear_system_stream(**kw, seed=5, **GRADUAL, window=64)

    def zero_positions(inputs):
        return (inputs == 0).all(0)

    x, y, n, _ = train_tensors(gradual, 2)
    old = gradual.from_previous[2]
    assert torch.equal(n[old], torch.full((int(old.sum()),), 3))
    assert torch.equal(n[~old], torch.full((int((~old).sum()),), 4))
    before = train_tensors(abrupt, 1)[0]
    assert torch.equal(zero_positions(x[old]), zero_positions(before))
    assert not torch.equal(zero_positions(before), zero_positions(train_tensors(abrupt, 0)[0]))
    assert set(y[old].tolist()) == {0, 1}
    assert gradual.test_overlap == [0.0, 0.0, 0.0]


def test_old_bit_flipping_samples_keep_the_previous_slow_bits_and_the_target_net():
    sizes = {"experiences": 3, "period": 80, "test_samples": 8}
    bench = bit_flipping_stream(**sizes, seed=4, **GRADUAL, window=80)
    net = BitFlippingStream(period=80, seed=4)
    for index in (1, 2):
        x, y, segment, _ = train_tensors(bench, index)
        old = bench.from_previous[index]
        slow = [train_tensors(bench, j)[0][~bench.from_previous[j]][0, :15] for j in range(3)]
        assert torch.all(x[old, :15] == slow[index - 1]) and torch.all(x[~old, :15] == slow[index])
        assert torch.equal(segment[old], torch.full((int(old.sum()),), index - 1))
        assert torch.equal(y, net.target(x)[:, 0])


def test_old_fashion_samples_are_the_previous_permutation_or_class_group(fashion_root):
    sizes = {"experiences": 2, "samples_per_experience": 40, "test_samples": 10}
    permuted = permuted_fashion_mnist(**sizes, root=fashion_root, **GRADUAL, window=40)
    file_images, file_labels, _, _ = train_tensors(permuted, 0)  # the file, unpermuted
    label_of = dict(zip(map(tuple, file_images.tolist()), file_labels.tolist(), strict=True))
    x, y, _, _ = train_tensors(permuted, 1)
    old = permuted.from_previous[1]
    assert [label_of[tuple(r)] for r in x[old].tolist()] == y[old].tolist()
    assert not any(tuple(r) in label_of for r in x[~old].tolist())
    split = split_fashion_mnist(experiences=5, root=fashion_root, **GRADUAL, window=8)
    for index in range(1, 5):
        old = split.from_previous[index]
        labels = train_tensors(split, index)[1]
        previous = set(train_tensors(split, index - 1)[1][~split.from_previous[index - 1]].tolist())
        assert set(labels[old].tolist()) <= previous
        assert not set(labels[~old].tolist()) & previous


def test_gradual_streams_are_deterministic_per_seed():
    def build(seed):
        return linear_system_stream(
            dimensions=[3, 4], samples_per_experience=64, seed=seed, **GRADUAL, window=64
        )

    a, b, c = build(1), build(1), build(2)
    assert torch.equal(a.from_previous[1], b.from_previous[1])
    for u, v in zip(train_tensors(a, 1), train_tensors(b, 1), strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(a.from_previous[1], c.from_previous[1])


@pytest.mark.parametrize("name", STREAMS)
def test_an_abrupt_stream_is_the_stream_built_without_the_new_arguments(name, fashion_root):
    build = builders(fashion_root)[name]
    plain, abrupt = build(), build(transition="abrupt", window=3)
    assert abrupt.transition == "abrupt" and abrupt.window is None
    assert not any(bool(m.any()) for m in abrupt.from_previous)
    assert plain.test_overlap == abrupt.test_overlap
    for stream in ("train_stream", "test_stream"):
        for e, f in zip(getattr(plain, stream), getattr(abrupt, stream), strict=True):
            for u, v in zip(tensor_source(e.dataset), tensor_source(f.dataset), strict=True):
                assert u.dtype == v.dtype and torch.equal(u, v)


@pytest.mark.parametrize("name", STREAMS)
@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"transition": "smooth"}, r"transition must be one of 'abrupt', 'gradual'"),
        ({"transition": "gradual", "window": 0}, r"window must be in \[1, inf\)"),
        ({"transition": "gradual", "window": 2.5}, r"window must be an integer"),
        ({"transition": "abrupt", "window": -1}, r"window must be in \[1, inf\)"),
        ({"transition": "gradual", "window": 10_000}, r"window must be in \[1, .* = \d+\]"),
    ],
)
def test_bad_transition_arguments_are_refused_naming_them(name, updates, message, fashion_root):
    with pytest.raises(ValueError, match=message):
        builders(fashion_root)[name](**updates)


# ---- the study -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ({"transition": "linear"}, r"config 'transition' must be one of 'abrupt', 'gradual'"),
        ({"window": 0}, r"config 'window' must be in \[1, inf\)"),
        (
            {"transition": "gradual", "window": 65},
            r"config 'window' must be in \[1, samples_per_experience = 64\]",
        ),
    ],
)
def test_the_study_refuses_a_bad_transition_before_any_work(updates, message, monkeypatch):
    monkeypatch.setattr(stream_experiment, "build_stream", pytest.fail)
    with pytest.raises(ValueError, match=message):
        stream_experiment.ex.run(config_updates={**STREAM, **updates})


class BatchRecorder(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.inputs = []

    def before_forward(self, strategy, **kwargs):
        if strategy.is_training:
            self.inputs.append(strategy.mb_x.clone())


@pytest.mark.parametrize("transition", ["gradual", "abrupt"])
def test_the_study_trains_gradual_streams_in_stream_order(transition, monkeypatch):
    recorders, benchmarks = [], []
    build_method, build_stream = stream_experiment.build_method, stream_experiment.build_stream

    def with_recorder(cfg):
        recorders.append(BatchRecorder())
        return [*build_method(cfg), recorders[-1]]

    def keep(cfg, seed):
        benchmarks.append(build_stream(cfg, seed))
        return benchmarks[-1]

    monkeypatch.setattr(stream_experiment, "build_method", with_recorder)
    monkeypatch.setattr(stream_experiment, "build_stream", keep)
    config = {**STREAM, "epochs": 2, "transition": transition, "window": 48, "seed": 3}
    stream_experiment.ex.run(config_updates=config)
    seen = torch.cat(recorders[0].inputs)
    experiences = [train_tensors(benchmarks[0], i)[0] for i in range(2)]
    in_order = torch.cat([x for x in experiences for _ in range(2)])  # 2 epochs each
    assert torch.equal(seen, in_order) == (transition == "gradual")


def test_a_tiny_gradual_study_runs_and_logs_the_mixture(observe):
    root = observe(stream_experiment.ex)
    config = {**STREAM, "transition": "gradual", "window": 64, "experiences": 3}
    run = stream_experiment.ex.run(named_configs=["cbp"], config_updates=config)
    assert run.status == "COMPLETED"
    (folder,) = [p for p in root.iterdir() if p.name.isdigit()]
    metrics = json.loads((folder / "metrics.json").read_text())
    # The experience's own n, though its window holds the previous n's samples.
    assert metrics["stream.difficulty"]["values"] == [3.0, 4.0, 3.0]
    shares = metrics["stream.previous_fraction"]["values"]
    assert shares[0] == 0.0 and all(0.2 < share < 0.8 for share in shares[1:])
    assert "eval.accuracy.exp002" in metrics
    assert json.loads((folder / "config.json").read_text())["transition"] == "gradual"


def test_the_comparison_script_tables_and_plots_tiny_runs(observe, tmp_path):
    from analysis import load_runs
    from experiments.benchmarks import transition as comparison

    root = observe(stream_experiment.ex)
    config = {**STREAM, "window": 32, "experiences": 6}
    for method in comparison.METHODS:
        for transition in comparison.TRANSITIONS:
            updates = {**config, "transition": transition, "seed": 1}
            stream_experiment.ex.run(named_configs=[method], config_updates=updates)
    table = comparison.new_accuracy(load_runs(root))
    rows = comparison.summary_rows(table)
    assert [(r["method"], r["transition"], r["runs"]) for r in rows] == [
        ("bp", "abrupt", 1),
        ("bp", "gradual", 1),
        ("cbp", "abrupt", 1),
        ("cbp", "gradual", 1),
    ]
    lines = comparison.table_lines(rows)
    assert len(lines) == 6 and lines[2].startswith("| bp | abrupt | 1 | 0.")
    comparison.figure(table, rows).savefig(tmp_path / "transition.png")
    text = comparison.page(rows, "python -m ...", {"window": 32}, [1], 60.0, 2, "t.png")
    assert "`window=32`" in text and "1.0 min" in text
