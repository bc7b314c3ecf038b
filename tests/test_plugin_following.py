"""Plugins follow the strategy (issue 11, items 3 and 7): refusals that say why, units
given for a model the strategy replaces, and checkpoints of plugins whose units are found
on the first training batch."""

from __future__ import annotations

import warnings

import pytest
import torch
from avalanche.models import SimpleMLP
from avalanche.training import MER, GDumb, Naive
from avalanche.training.plugins import EvaluationPlugin
from test_avalanche_matrix import benchmark
from torch import nn

from ponderlife import unit_layer
from strategies import ContinualBackpropPlugin, L2InitPlugin, L2Plugin, ReDoPlugin
from strategies.checkpoint import load_strategy, save_strategy

pytestmark = pytest.mark.filterwarnings("ignore")


def simple_mlp() -> SimpleMLP:
    return SimpleMLP(num_classes=4, input_size=8, hidden_size=16, hidden_layers=2)


def kwargs(model: nn.Module, plugins: list) -> dict:
    return {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.05),
        "criterion": nn.CrossEntropyLoss(),
        "train_mb_size": 8,
        "plugins": plugins,
        "evaluator": EvaluationPlugin(loggers=[]),
        "eval_every": -1,
    }


@pytest.mark.parametrize(
    "make",
    [L2Plugin, L2InitPlugin, lambda: ReDoPlugin(every=1), ContinualBackpropPlugin],
    ids=["l2", "l2init", "redo", "cbp"],
)
def test_per_update_plugins_refuse_mer_before_training_saying_why(make):
    model = simple_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    strategy = MER(mem_size=16, batch_size_mem=2, n_inner_steps=1, **kwargs(model, [make()]))
    with pytest.raises(RuntimeError, match=r"cannot run in MER.*before_forward/after_update"):
        strategy.train(benchmark().train_stream[0])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


class SkipsAfterUpdate(Naive):
    """A strategy of some other library that updates without the after_update callback."""

    def _after_update(self, **kwargs):
        pass


def test_an_iteration_without_after_update_is_an_error_not_silence():
    strategy = SkipsAfterUpdate(**kwargs(simple_mlp(), [L2Plugin()]))
    with pytest.raises(RuntimeError, match=r"SkipsAfterUpdate ended a training iteration"):
        strategy.train(benchmark().train_stream[0])


def layers_of(model: SimpleMLP) -> list:
    return [
        unit_layer("features.0", model.features[0], model.features[1], [model.features[3][0]]),
        unit_layer("features.3.0", model.features[3][0], model.features[3][1], [model.classifier]),
    ]


def test_units_given_as_a_list_for_a_model_gdumb_replaces_are_refused_clearly():
    model = simple_mlp()
    plugin = ContinualBackpropPlugin(units=layers_of(model), maturity_threshold=1)
    strategy = GDumb(mem_size=16, **kwargs(model, [plugin]))
    stream = benchmark().train_stream
    strategy.train(stream[0])  # the model it was given: fine
    with pytest.raises(ValueError, match=r"not part of this SimpleMLP.*units=lambda model"):
        strategy.train(stream[1])  # GDumb trains a fresh copy


def test_units_given_as_a_function_of_the_model_follow_gdumb():
    model = simple_mlp()
    plugin = ContinualBackpropPlugin(units=layers_of, replacement_rate=0.25, maturity_threshold=1)
    strategy = GDumb(mem_size=16, **kwargs(model, [plugin]))
    stream = benchmark().train_stream
    strategy.train(stream[0])
    first = sum(plugin.replacements.values())
    strategy.train(stream[1])
    assert strategy.model is not model and plugin.core.layers[0].activation in list(
        strategy.model.modules()
    )
    assert first > 0 and sum(plugin.replacements.values()) > first


def test_a_checkpoint_loaded_before_the_units_are_found_is_applied_when_they_are(tmp_path):
    """SimpleMLP's units are found by tracing the first training batch, after the
    checkpoint was loaded: the loaded utilities and ages must be the ones continued."""
    stream = benchmark().train_stream

    def build():
        torch.manual_seed(0)
        plugin = ContinualBackpropPlugin(replacement_rate=0.25, maturity_threshold=1)
        return Naive(**kwargs(simple_mlp(), [plugin])), plugin

    strategy, plugin = build()
    strategy.train(stream[0])
    save_strategy(tmp_path / "checkpoint.pt", strategy, next_experience=1)
    saved = {k: v.clone() for k, v in plugin.core.state_dict().items()}

    resumed, fresh = build()
    load_strategy(tmp_path / "checkpoint.pt", resumed)
    assert fresh.core is None  # SimpleMLP cannot be read without a forward
    ages = {}

    class Spy(L2Plugin):  # listed after the plugin: sees its core right after binding
        def before_forward(self, strategy, *args, **kwargs):
            if not ages:
                ages.update({k: v.clone() for k, v in fresh.core.state_dict().items()})
            super().before_forward(strategy)

    resumed.plugins.append(Spy(weight_decay=0.0))
    resumed.train(stream[1])
    assert ages.keys() == saved.keys()
    assert all(torch.equal(ages[k], saved[k]) for k in saved)
    saved_total = sum(int(v) for k, v in saved.items() if k.endswith(".replaced"))
    assert sum(fresh.replacements.values()) > saved_total > 0  # counting continued


def test_plasticity_metrics_warn_once_when_the_model_has_no_hidden_units():
    from strategies import PlasticityMetrics

    model = nn.Linear(8, 4)  # no hidden layer: nothing for the unit diagnostics
    settings = {**kwargs(model, []), "evaluator": EvaluationPlugin(PlasticityMetrics(), loggers=[])}
    strategy = Naive(**settings)
    with pytest.warns(UserWarning, match="PlasticityMetrics logs no unit diagnostics: no hidden"):
        strategy.train(benchmark().train_stream[0])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "PlasticityMetrics")  # once, not per experience
        strategy.train(benchmark().train_stream[1])
    names = [name for name in strategy.evaluator.get_last_metrics() if "Plasticity/" in name]
    assert any(name.startswith("Plasticity/weight_magnitude/") for name in names), names
    assert not any("dormant_fraction" in name for name in names)


def test_plasticity_metrics_find_simple_mlp_units_by_tracing_the_probe():
    from strategies import PlasticityMetrics

    model = simple_mlp()
    settings = {**kwargs(model, []), "evaluator": EvaluationPlugin(PlasticityMetrics(), loggers=[])}
    strategy = Naive(**settings)
    strategy.train(benchmark().train_stream[0])
    names = [name for name in strategy.evaluator.get_last_metrics() if "Plasticity/" in name]
    # probe diagnostics exist only where hidden units were found
    assert any(name.startswith("Plasticity/dead_fraction/") for name in names), names
