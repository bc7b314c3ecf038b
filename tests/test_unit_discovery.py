"""Unit discovery by tracing one forward (issue 11, items 1 and 2): chains follow the order
in which modules run, across submodules, views and multi-head classifiers; what cannot be
managed is an error naming the model, the modules and the ``units=`` call to write."""

from __future__ import annotations

import re

import pytest
import torch
from avalanche.models import IncrementalClassifier, MTSimpleMLP, SimpleCNN, SimpleMLP
from torch import nn

from ponderlife import (
    ACT,
    ContinualBackprop,
    FixedDepth,
    GRUStep,
    PonderNet,
    ResidualMLPStep,
    RNNStep,
    find_unit_layers,
    trace_unit_layers,
    unit_layer,
)
from ponderlife.units import UnitLayer

pytestmark = pytest.mark.filterwarnings("ignore")


def described(layers: list[UnitLayer]) -> list[tuple]:
    """What a layer list manages: name, size, axis, and the identity and layout of every
    incoming, bias and outgoing parameter slice."""

    def slices(parts):
        return [(id(p.param), p.dim, p.block, p.groups) for p in parts]

    return [
        (
            layer.name,
            layer.size,
            layer.unit_axis,
            id(layer.activation),
            slices(layer.incoming),
            slices(layer.incoming_bias),
            slices(layer.outgoing),
            [None if b is None else id(b) for b in layer.consumer_bias],
            [id(n) for n in layer.norms],
        )
        for layer in layers
    ]


def test_simple_mlp_units_cross_the_features_sequential_into_the_classifier():
    model = SimpleMLP(num_classes=4, input_size=8, hidden_size=16, hidden_layers=2)
    with pytest.raises(ValueError, match=r"features\.0 .*Sequential cannot be read.*example input"):
        find_unit_layers(model)  # the Sequential reading cannot see the classifier
    layers = find_unit_layers(model, torch.randn(3, 8))
    assert [(layer.name, layer.size) for layer in layers] == [
        ("features.0", 16),
        ("features.3.0", 16),
    ]
    assert layers[0].outgoing[0].param is model.features[3][0].weight
    assert layers[1].outgoing[0].param is model.classifier.weight
    assert layers[1].activation is model.features[3][1]


def test_simple_cnn_channels_are_followed_through_pooling_and_a_view():
    model = SimpleCNN(num_classes=4)
    layers = trace_unit_layers(model, torch.randn(2, 3, 10, 10))
    names = [layer.name for layer in layers]
    assert names == ["features.0", "features.2", "features.6", "features.8", "features.12"]
    last = layers[-1]
    # conv → ReLU → AdaptiveMaxPool2d(1) → Dropout → x.view(B, -1) → Linear: one column
    # per channel of the classifier
    assert last.unit_axis == 1 and last.outgoing[0].param is model.classifier[0].weight
    assert last.outgoing[0].dim == 1 and last.outgoing[0].block == 1


def test_conv_norm_pool_flatten_chain_keeps_its_norm_and_position_blocks():
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 2),
    )
    (layer,) = trace_unit_layers(model, torch.randn(2, 1, 8, 8))
    assert layer.norms == [model[1]] and layer.outgoing[0].block == 16
    assert described([layer]) == described(find_unit_layers(model))


class TwoHeads(nn.Module):
    """Features read by one head per task; a batch of task 0 runs only head "0"."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 6), nn.Tanh())
        self.heads = nn.ModuleDict({"0": nn.Linear(6, 2), "1": nn.Linear(6, 3)})

    def forward(self, x, task: int):
        return self.heads[str(task)](self.body(x))


def test_a_unit_read_by_one_task_head_is_read_by_every_task_head():
    model = TwoHeads()
    (layer,) = trace_unit_layers(model, (torch.randn(2, 5), 0))
    heads = [model.heads["0"], model.heads["1"]]
    assert [id(part.param) for part in layer.outgoing] == [id(h.weight) for h in heads]
    assert [id(bias) for bias in layer.consumer_bias] == [id(h.bias) for h in heads]


def test_mt_simple_mlp_heads_of_every_task_including_one_added_later():
    model = MTSimpleMLP(input_size=8, hidden_size=16)
    x, tasks = torch.randn(3, 8), torch.zeros(3, dtype=torch.long)
    (layer,) = trace_unit_layers(model, (x, tasks))
    head = model.classifier.classifiers["0"].classifier
    assert [id(part.param) for part in layer.outgoing] == [id(head.weight)]
    model.classifier.classifiers["1"] = IncrementalClassifier(16, initial_out_features=3)
    (layer,) = trace_unit_layers(model, (x, tasks))  # task 1's head did not run
    new = model.classifier.classifiers["1"].classifier
    assert [id(part.param) for part in layer.outgoing] == [id(head.weight), id(new.weight)]


@pytest.mark.parametrize(
    "build",
    [
        lambda: PonderNet(GRUStep(6, 8, 3), max_steps=3),
        lambda: PonderNet(RNNStep(6, 8, 3), max_steps=3),
        lambda: PonderNet(ResidualMLPStep(6, 8, 3), max_steps=3),
        lambda: ACT(GRUStep(6, 8, 3), max_steps=3),
        lambda: FixedDepth(ResidualMLPStep(6, 8, 3), num_steps=2),
        lambda: nn.Sequential(
            nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3)
        ),
    ],
    ids=["pondernet-gru", "pondernet-rnn", "pondernet-mlp", "act", "fixed", "sequential"],
)
def test_tracing_finds_exactly_what_the_static_reading_finds_on_our_models(build):
    model = build()
    assert described(trace_unit_layers(model, torch.randn(4, 6))) == described(
        find_unit_layers(model)
    )


def test_tracing_leaves_modes_batch_norm_statistics_and_the_rng_untouched():
    model = nn.Sequential(
        nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Dropout(0.5), nn.Linear(5, 2)
    )
    model.train()
    running, x = model[1].running_mean.clone(), torch.randn(6, 4) + 3
    state = torch.get_rng_state()
    trace_unit_layers(model, x)
    assert all(module.training for module in model.modules())
    assert torch.equal(model[1].running_mean, running)
    assert torch.equal(torch.get_rng_state(), state)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)) + x)


class Clamped(nn.Module):
    """The units reach fc2 through an elementwise clamp, which discovery does not follow."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.clamp(self.act(self.fc1(x)), max=6.0))


class FunctionalReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class NoChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x))


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Residual(), r"units of Residual\.fc1 \(fc1 \(Linear\) → act \(ReLU\)\).*function add"),
        (FunctionalReLU(), r"FunctionalReLU\.fc1 go through the function relu.*nn\.ReLU\(\)"),
        (
            NoChain(),
            r"found no hidden units to manage in NoChain.*modules run, in order: fc1 "
            r"\(Linear\), fc2 \(Linear\).*units=\[unit_layer\(",
        ),
    ],
    ids=["residual", "functional-activation", "no-chain"],
)
def test_what_tracing_cannot_manage_is_an_error_naming_model_and_modules(model, match):
    with pytest.raises(ValueError, match=match):
        trace_unit_layers(model, torch.randn(3, 4))


def test_the_units_call_in_the_error_works_once_its_readers_are_filled_in():
    model = Clamped()
    with pytest.raises(ValueError, match="function clamp") as error:
        trace_unit_layers(model, torch.randn(3, 4))
    call = re.search(r"units=(\[unit_layer\(.*\)\])", str(error.value)).group(1)
    call = call.replace("<the layers reading them>", 'model.get_submodule("fc2")')
    units = eval(call, {"unit_layer": unit_layer, "model": model})
    cbp = ContinualBackprop(model, None, units=units, replacement_rate=0.5, maturity_threshold=0)
    model.train()
    model(torch.randn(8, 4))
    assert cbp.step() == {"fc1": 3}
    assert bool((model.fc2.weight == 0).any(0).sum() == 3)


def test_tracing_a_pondernet_leaves_its_own_halting_generators_where_they_were():
    model = PonderNet(GRUStep(6, 8, 3), max_steps=4, halting="sample")
    states = [g.get_state() for g in model.halting_generators.values()]
    trace_unit_layers(model, torch.randn(5, 6))
    assert all(
        torch.equal(g.get_state(), state)
        for g, state in zip(model.halting_generators.values(), states, strict=True)
    )
