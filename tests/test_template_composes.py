"""PonderTemplate composes with Avalanche (issue 11, items 8-10).

* Avalanche's regularisation plugins (EWC, AGEM, GEM, RWalk, MAS, LwF) call the model
  themselves and see the answer's logits, while the template keeps the full output;
* the fast tensor path yields what Avalanche's own loader yields, task labels included;
* the fast path fails loudly, naming the Avalanche version, when the dataset internals it
  reads are gone, and really is the path our streams take.
"""

import copy
import gc
import pickle

import avalanche
import pytest
import torch
from avalanche.benchmarks import tensors_benchmark
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import (
    TaskAwareSupervisedClassificationDataset,
)
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import (
    AGEMPlugin,
    EvaluationPlugin,
    EWCPlugin,
    GEMPlugin,
    LwFPlugin,
    MASPlugin,
    RWalkPlugin,
)
from torch.utils.data import DataLoader, TensorDataset

from ponderlife import ACT, FixedDepth, PonderNet, PonderOutput, RNNStep
from strategies.datasets import TensorBatches, tagged_dataset, tensor_source
from strategies.streams import bit_flipping_stream, linear_system_stream, parity_shift_stream
from strategies.template import PonderTemplate

FEATURES, CLASSES, SAMPLES, BATCH = 6, 2, 32, 8


# ---- tiny streams and strategies --------------------------------------------------------


def _inputs(count: int, generator: torch.Generator) -> torch.Tensor:
    """Random inputs whose first feature is the sample's index (to find it in a batch)."""
    x = torch.randn(count, FEATURES, generator=generator)
    x[:, 0] = torch.arange(count, dtype=torch.float32)
    return x


def tagged_stream(experiences: int = 2, seed: int = 0):
    """Our own ``(x, y, difficulty, task)`` datasets; the rule changes per experience."""
    generator = torch.Generator().manual_seed(seed)

    def experience(index: int, count: int):
        x = _inputs(count, generator)
        y = (x[:, 1 + index % (FEATURES - 1)] > 0).long()
        return tagged_dataset(x, y, torch.randint(1, 4, (count,), generator=generator))

    train = [experience(i, SAMPLES) for i in range(experiences)]
    test = [experience(i, 16) for i in range(experiences)]
    return benchmark_from_datasets(train=train, test=test)


def plain_dataset(x, y, task_labels):
    """An Avalanche ``(x, y, t)`` dataset over a plain TensorDataset(x, y): the task label
    comes from the dataset's ``targets_task_labels`` attribute, as Avalanche builds them."""
    return TaskAwareSupervisedClassificationDataset(
        [TensorDataset(x, y)],
        data_attributes=[
            DataAttribute(y.tolist(), "targets"),
            DataAttribute(list(task_labels), "targets_task_labels", use_in_getitem=True),
        ],
    )


def plain_stream(experiences: int = 2, seed: int = 0, task_labels=lambda index, count: 0):
    generator = torch.Generator().manual_seed(seed)

    def experience(index: int, count: int):
        x = _inputs(count, generator)
        y = (x[:, 1 + index % (FEATURES - 1)] > 0).long()
        return plain_dataset(x, y, [task_labels(index, i) for i in range(count)])

    train = [experience(i, SAMPLES) for i in range(experiences)]
    test = [experience(i, 16) for i in range(experiences)]
    return benchmark_from_datasets(train=train, test=test)


def pondernet():
    return PonderNet(RNNStep(FEATURES, 8, CLASSES), max_steps=3)


def template(model, plugins=(), **kwargs):
    return PonderTemplate(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        train_mb_size=BATCH,
        eval_mb_size=BATCH,
        plugins=list(plugins),
        evaluator=EvaluationPlugin(loggers=[]),
        **kwargs,
    )


class Spy(SupervisedPlugin):
    """Records, per training iteration, the loss as this plugin sees it in
    ``before_backward`` and what the template holds after its forward."""

    def __init__(self):
        super().__init__()
        self.losses: list[tuple[int, float]] = []
        self.forwards: list[dict] = []
        self.after_backward_checks: list[bool] = []

    def after_forward(self, strategy, **kwargs):
        self.forwards.append(
            {
                "experience": strategy.clock.train_exp_counter,
                "model_training": strategy.model.training,
                "output": strategy.mb_output,
                "ponder": strategy.ponder_output,
            }
        )

    def before_backward(self, strategy, **kwargs):
        self.losses.append((strategy.clock.train_exp_counter, float(strategy.loss.detach())))

    def after_backward(self, strategy, **kwargs):
        # Plugins that run the model (or a copy) between the template's forward and here
        # must not replace what the template keeps.
        self.after_backward_checks.append(strategy.ponder_output.prediction is strategy.mb_output)


def train_with(plugin, benchmark=None, model=None, outputs=CLASSES, **kwargs):
    """Two experiences of PonderTemplate with ``plugin`` between two spies; returns the
    strategy, the spies and the penalty the plugin added per iteration of experience 2."""
    torch.manual_seed(0)
    benchmark = benchmark or tagged_stream()
    model = model or pondernet()
    before, after = Spy(), Spy()
    strategy = template(model, [before, plugin, after], **kwargs)
    for experience in benchmark.train_stream:
        strategy.train(experience)
    penalties = [
        a - b for (exp, b), (_, a) in zip(before.losses, after.losses, strict=True) if exp == 1
    ]
    for record in after.forwards:
        assert isinstance(record["ponder"], PonderOutput)
        assert torch.is_tensor(record["output"])
        assert record["output"].shape == (BATCH, outputs)
        assert record["model_training"], "the template's training forward ran in eval mode"
    assert all(after.after_backward_checks)
    assert all(torch.isfinite(torch.tensor([loss for _, loss in after.losses])))
    return strategy, after, penalties


def _total(tensors) -> float:
    return float(sum(t.abs().sum() for t in tensors))


# ---- 8. Avalanche's regularisation plugins on top of PonderTemplate ---------------------


def test_ewc_computes_importances_through_the_template_and_penalises_the_second_experience():
    plugin = EWCPlugin(ewc_lambda=10.0)
    strategy, _, penalties = train_with(plugin)
    assert set(plugin.importances) == {0, 1}
    for importances in plugin.importances.values():
        names = {name for name, _ in strategy.model.named_parameters()}
        assert set(importances) == names
        assert _total(p.data for p in importances.values()) > 0
    assert max(penalties) > 0


def test_ewc_uses_the_templates_task_loss_on_a_regression_stream():
    # Plugins call strategy._criterion on the logits: the template's default is the mean
    # task loss (here MSE), not Avalanche's cross-entropy.
    plugin = EWCPlugin(ewc_lambda=10.0)
    bench = bit_flipping_stream(experiences=2, period=16, test_samples=8)
    inputs = bench.train_stream[0].dataset[0][0].numel()
    model = PonderNet(RNNStep(inputs, 8, 1), max_steps=3)

    def mse(prediction, target):
        return (prediction.squeeze(-1) - target).pow(2)

    _, _, penalties = train_with(plugin, bench, model, outputs=1, task_loss=mse)
    assert set(plugin.importances) == {0, 1}
    assert all(_total(p.data for p in i.values()) > 0 for i in plugin.importances.values())
    assert max(penalties) > 0


def test_agem_stores_memory_and_projects_with_reference_gradients_of_the_template_model():
    plugin = AGEMPlugin(patterns_per_experience=8, sample_size=8)
    strategy, _, _ = train_with(plugin)
    assert [len(buffer) for buffer in plugin.buffers] == [8, 8]
    count = sum(p.numel() for p in strategy.model.parameters())
    assert plugin.reference_gradients.shape == (count,)
    assert float(plugin.reference_gradients.abs().sum()) > 0


def test_gem_stores_memory_and_computes_gradient_constraints_on_it():
    plugin = GEMPlugin(patterns_per_experience=8, memory_strength=0.5)
    strategy, _, _ = train_with(plugin)
    assert {t: len(x) for t, x in plugin.memory_x.items()} == {0: 8, 1: 8}
    count = sum(p.numel() for p in strategy.model.parameters())
    assert plugin.G.shape == (1, count)
    assert float(plugin.G.abs().sum()) > 0


def test_rwalk_scores_parameters_and_the_template_still_trains_in_training_mode():
    # RWalk leaves the model in eval mode after its own forward; the template's training
    # forward must still run the training unroll (checked in train_with).
    plugin = RWalkPlugin(ewc_lambda=10.0, delta_t=2)
    _, _, penalties = train_with(plugin)
    assert plugin.exp_penalties is not None
    assert _total(p.data for p in plugin.exp_penalties.values()) > 0
    assert max(penalties) > 0


def test_mas_computes_importances_on_an_avalanche_tensor_stream():
    # MAS accepts (x, y) or (x, y, t) batches only: an (x, y, t) stream built from plain
    # tensors (our difficulty-tagged 4-tuples are refused by MAS itself).
    plugin = MASPlugin(lambda_reg=10.0, alpha=0.5)
    _, _, penalties = train_with(plugin, benchmark=plain_stream())
    assert plugin.importance is not None
    assert _total(p.data for p in plugin.importance.values()) > 0
    assert max(penalties) > 0


def test_lwf_distils_from_the_previous_model_and_keeps_the_templates_own_output():
    plugin = LwFPlugin(alpha=1.0, temperature=2.0)
    strategy, _, penalties = train_with(plugin)
    assert plugin.lwf.prev_model is not None
    assert max(penalties) > 0  # the teacher's logits entered the loss
    teacher_output = plugin.lwf.prev_model(torch.zeros(3, FEATURES))
    assert torch.is_tensor(teacher_output) and teacher_output.shape == (3, CLASSES)
    assert isinstance(strategy.ponder_output, PonderOutput)
    # after_backward_checks (in train_with): the teacher's forward did not replace the
    # template's full output


# ---- the hook: what callers of the model see -------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        pondernet,
        lambda: ACT(RNNStep(FEATURES, 8, CLASSES), max_steps=3),
        lambda: FixedDepth(RNNStep(FEATURES, 8, CLASSES), num_steps=2),
    ],
    ids=["pondernet", "act", "fixed"],
)
def test_callers_of_the_model_get_logits_and_the_model_object_is_unchanged(build):
    torch.manual_seed(0)
    model = build()
    keys, model_type = list(model.state_dict()), type(model)
    names = [name for name, _ in model.named_parameters()]
    strategy = template(model)
    assert strategy.model is model and type(model) is model_type
    assert list(model.state_dict()) == keys
    assert [name for name, _ in model.named_parameters()] == names
    model.eval()
    if isinstance(model, PonderNet):
        model.halting = "threshold"  # deterministic, to compare two forwards
    x = torch.randn(5, FEATURES)
    logits = model(x)
    full = strategy.full_output(x)
    assert torch.is_tensor(logits) and logits.shape == (5, CLASSES)
    assert type(full).__name__.endswith("Output") and torch.equal(full.prediction, logits)
    assert torch.equal(copy.deepcopy(model)(x), logits)  # LwF-style teachers too


def test_the_hook_follows_a_replaced_model_and_ends_with_the_template():
    torch.manual_seed(0)
    first, second = pondernet(), pondernet()
    strategy = template(first)
    x = torch.randn(4, FEATURES)
    assert torch.is_tensor(first(x))
    strategy.model = second
    assert torch.is_tensor(second(x))
    assert isinstance(first(x), PonderOutput)  # no longer the strategy's model
    strategy.optimizer = torch.optim.SGD(second.parameters(), lr=0.1)
    spy = Spy()
    strategy.plugins.append(spy)
    strategy.train(tagged_stream(1).train_stream[0])
    assert isinstance(spy.forwards[0]["ponder"], PonderOutput)
    # pickling the model does not drag the strategy along, and a copy loaded elsewhere
    # returns the full output again
    loaded = pickle.loads(pickle.dumps(second))
    assert isinstance(loaded(x), PonderOutput)
    del strategy, spy
    gc.collect()
    assert isinstance(second(x), PonderOutput)  # the template is gone: plain model again


# ---- 9. the fast path keeps the task labels ---------------------------------------------


class BatchRecorder(SupervisedPlugin):
    """The (x, y, t) minibatches and the loader types seen in training and evaluation
    (Avalanche drops its loader when a phase ends)."""

    def __init__(self):
        super().__init__()
        self.train: list[tuple] = []
        self.eval: list[tuple] = []
        self.loaders = {"train": set(), "eval": set()}

    def after_training_iteration(self, strategy, **kwargs):
        self.train.append((strategy.mb_x, strategy.mb_y, strategy.mb_task_id))
        self.loaders["train"].add(type(strategy.dataloader))

    def after_eval_iteration(self, strategy, **kwargs):
        self.eval.append((strategy.mb_x, strategy.mb_y, strategy.mb_task_id))
        self.loaders["eval"].add(type(strategy.dataloader))


def _check_batches(batches, dataset) -> int:
    """Every recorded (x, y, t) batch holds the dataset's samples with their labels."""
    x, y, t = (
        torch.stack([torch.as_tensor(dataset[i][k]) for i in range(len(dataset))])
        for k in (0, 1, -1)
    )
    seen = 0
    for mb_x, mb_y, mb_t in batches:
        index = mb_x[:, 0].long()
        assert torch.equal(mb_x, x[index])
        assert torch.equal(mb_y, y[index])
        assert torch.equal(mb_t, t[index]), "mb_task_id is not the batch's task labels"
        seen += len(index)
    return seen


@pytest.mark.parametrize("strategy_class", ["ponder", "naive"])
def test_mb_task_id_is_the_batchs_task_labels_on_a_plain_tensor_dataset(strategy_class):
    torch.manual_seed(0)
    # one task label per training experience (3), two in the test experience (0 and 5)
    train = plain_stream(1, task_labels=lambda index, i: 3).train_stream[0]
    test = plain_stream(1, task_labels=lambda index, i: 5 * (i % 2)).test_stream[0]
    recorder = BatchRecorder()
    if strategy_class == "ponder":
        strategy = template(pondernet(), [recorder])
    else:
        model = torch.nn.Linear(FEATURES, CLASSES)
        strategy = Naive(
            model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            train_mb_size=BATCH,
            eval_mb_size=BATCH,
            plugins=[recorder],
            evaluator=EvaluationPlugin(loggers=[]),
        )
    strategy.train(train)
    assert _check_batches(recorder.train, train.dataset) == SAMPLES
    strategy.eval([test])
    if strategy_class == "ponder":
        assert recorder.loaders == {"train": {TensorBatches}, "eval": {TensorBatches}}
    assert _check_batches(recorder.eval, test.dataset) == len(test.dataset)
    assert {int(t) for _, _, batch in recorder.eval for t in batch} == {0, 5}


def _datasets_built_from_tensors():
    generator = torch.Generator().manual_seed(1)
    x = _inputs(10, generator)
    y = (x[:, 1] > 0).long()
    tagged = tagged_dataset(x, y, torch.arange(10) % 3, task_label=2)
    regression = tagged_dataset(x, x[:, 2], torch.arange(10) % 3)
    plain = plain_dataset(x, y, [i % 2 for i in range(10)])
    bench = tensors_benchmark([(x, y)], [(x, y)], task_labels=[4])
    nested = bench.train_stream[0].dataset  # Avalanche's own tensor dataset, nested
    return {
        "tagged": tagged,
        "tagged.subset.eval": tagged.subset([7, 1, 3, 3]).eval(),
        "regression": regression,
        "plain": plain,
        "plain.subset.train": plain.subset([9, 0, 4]).train(),
        "tensors_benchmark": nested,
        "tensors_benchmark.subset": nested.subset([5, 2, 8]).eval(),
    }


@pytest.mark.parametrize("name", list(_datasets_built_from_tensors()))
def test_tensor_batches_yield_what_avalanches_loader_yields(name):
    dataset = _datasets_built_from_tensors()[name]
    tensors = tensor_source(dataset)
    assert tensors is not None, f"{name}: not recognised as tensors"
    fast = list(TensorBatches(tensors, 4, shuffle=False))
    slow = list(DataLoader(dataset, batch_size=4, collate_fn=dataset.collate_fn))
    assert len(fast) == len(slow)
    for fast_batch, slow_batch in zip(fast, slow, strict=True):
        assert len(fast_batch) == len(slow_batch)
        for a, b in zip(fast_batch, slow_batch, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


def test_datasets_that_are_not_plain_tensors_take_avalanches_loaders():
    datasets = _datasets_built_from_tensors()
    tagged = datasets["tagged"]
    transformed = tagged.replace_current_transform_group(lambda x: 2 * x)
    assert tensor_source(transformed) is None
    assert tensor_source(tagged.concat(datasets["regression"])) is None  # e.g. replay
    assert tensor_source(TensorDataset(torch.zeros(3, 2))) is None  # not Avalanche's
    recorder = BatchRecorder()
    strategy = template(pondernet(), [recorder])
    torch.manual_seed(0)
    strategy.train(benchmark_from_datasets(train=[transformed], test=[tagged]).train_stream[0])
    assert recorder.loaders["train"] and TensorBatches not in recorder.loaders["train"]


# ---- 10. the fast path is the one our streams take, and fails loudly ---------------------


def _our_streams():
    return {
        "parity": parity_shift_stream(size=4, samples_per_experience=16, test_samples=8),
        "parity.gradual": parity_shift_stream(
            size=4, samples_per_experience=16, test_samples=8, transition="gradual", window=8
        ),
        "linear_system": linear_system_stream(
            dimensions=[3, 4], samples_per_experience=16, test_samples=8
        ),
        "bit_flipping": bit_flipping_stream(experiences=2, period=16, test_samples=8),
    }


def test_our_streams_take_the_fast_path_and_the_template_uses_it():
    streams = _our_streams()
    for name, bench in streams.items():
        for experience in [*bench.train_stream, *bench.test_stream]:
            dataset = experience.dataset
            tensors = tensor_source(dataset)
            assert tensors is not None, f"{name}: fell back from the fast path"
            assert len(tensors) == 4 and len(tensors[0]) == len(dataset)
            (slow,) = DataLoader(dataset, batch_size=len(dataset), collate_fn=dataset.collate_fn)
            for a, b in zip(tensors, slow, strict=True):
                assert a.dtype == b.dtype and torch.equal(a, b)
    bench = streams["parity"]
    torch.manual_seed(0)
    model = PonderNet(RNNStep(4, 8, 2), max_steps=3)
    recorder = BatchRecorder()
    strategy = template(model, [recorder])
    strategy.train(bench.train_stream[0])
    strategy.eval(bench.test_stream[:1])
    assert recorder.loaders == {"train": {TensorBatches}, "eval": {TensorBatches}}


@pytest.mark.parametrize(
    "where, attribute",
    [
        ("dataset", "_flat_data"),
        ("dataset", "_data_attributes"),
        ("flat", "_datasets"),
        ("flat", "_indices"),
        ("flat", "_transform_groups"),
        ("flat", "_frozen_transform_groups"),
    ],
)
def test_missing_avalanche_internals_raise_naming_the_version_and_attribute(where, attribute):
    dataset = tagged_stream(1).train_stream[0].dataset
    broken = copy.copy(dataset)
    if where == "dataset":
        delattr(broken, attribute)
    else:
        flat = copy.copy(dataset._flat_data)
        delattr(flat, attribute)
        broken._flat_data = flat
    with pytest.raises(RuntimeError, match=attribute) as raised:
        tensor_source(broken)
    assert f"Avalanche {avalanche.__version__}" in str(raised.value)
    strategy = template(pondernet())
    strategy.adapted_dataset = broken
    with pytest.raises(RuntimeError, match=attribute):
        strategy.make_train_dataloader()  # no silent fallback to the slow path
