"""Continual backprop on a step function whose units discovery refuses (docs/own_units.md):
the refusal, and units declared by hand with ``unit_layer`` or ``UnitLayer``/``ParamSlice``
getting utilities, being replaced under PonderNet, and resetting exactly their slices."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ponderlife import (
    AdamPerElement,
    ContinualBackprop,
    ParamSlice,
    PonderNet,
    StepOutput,
    UnitLayer,
    find_unit_layers,
    ponder_loss,
    ponder_step_weights,
    unit_layer,
)
from ponderlife.tasks import parity_batch
from ponderlife.units import producer_slices

INPUTS, HIDDEN = 6, 16


class ResidualTanhStep(nn.Module):
    """h' = h + tanh(fc(h + embed(x))): the units are added to the state (a residual)."""

    def __init__(self, outputs: int = 1):
        super().__init__()
        self.embed = nn.Linear(INPUTS, HIDDEN)
        self.fc = nn.Linear(HIDDEN, HIDDEN)
        self.act = nn.Tanh()
        self.output = nn.Linear(HIDDEN, outputs)
        self.halting = nn.Linear(HIDDEN, 1)

    def initial_state(self, x):
        return x.new_zeros(x.shape[0], HIDDEN)

    def forward(self, x, h):
        h = h + self.act(self.fc(h + self.embed(x)))
        return StepOutput(self.output(h), h, self.halting(h).squeeze(-1))


def with_unit_layer(model):
    step = model.step
    return [unit_layer("step.fc", step.fc, step.act, [step.fc, step.output, step.halting])]


def with_param_slices(model):
    step = model.step
    rows, bias = producer_slices(step.fc)
    consumers = [step.fc, step.output, step.halting]
    return [
        UnitLayer(
            name="step.fc",
            size=HIDDEN,
            activation=step.act,
            incoming=rows,
            incoming_bias=bias,
            outgoing=[ParamSlice(consumer.weight, 1) for consumer in consumers],
            consumer_bias=[None, step.output.bias, step.halting.bias],
        )
    ]


DECLARATIONS = pytest.mark.parametrize("declare", [with_unit_layer, with_param_slices])
CONSUMERS = ("fc", "output", "halting")


def model_and_batch(seed=0, outputs=1):
    torch.manual_seed(seed)
    model = PonderNet(ResidualTanhStep(outputs), max_steps=5)
    batch = parity_batch(32, INPUTS, generator=torch.Generator().manual_seed(seed))
    return model, batch


def bce(logits, target):
    return F.binary_cross_entropy_with_logits(logits.squeeze(-1), target, reduction="none")


def recorded(model):
    """A list that receives every output of the step's activation module (our own hook,
    independent of the recorder under test)."""
    outputs = []
    model.step.act.register_forward_hook(lambda m, i, out: outputs.append(out.detach()))
    return outputs


def test_discovery_refuses_the_residual_step_naming_the_layer_and_the_call_to_write():
    model, batch = model_and_batch()
    with pytest.raises(ValueError, match=r"step\.fc.*read by the function add.*unit_layer\("):
        find_unit_layers(model, batch.x)
    # Without an example only nn.Sequential chains are read: none here.
    with pytest.raises(ValueError, match="found no hidden units to manage in PonderNet"):
        ContinualBackprop(model, None)


@DECLARATIONS
def test_declared_units_get_the_contribution_weighted_by_each_steps_reach(declare):
    model, batch = model_and_batch()
    outputs = recorded(model)
    decay = 0.9
    cbp = ContinualBackprop(model, None, units=declare, decay_rate=decay, maturity_threshold=1000)
    out = model(batch.x)
    weights = ponder_step_weights(out)  # (N, B): P(sample reached step n)
    cbp.step(step_weights=weights)

    activations = torch.stack(outputs)  # (N, B, HIDDEN)
    assert activations.shape[:2] == weights.shape
    share = (weights / weights.sum())[..., None]
    outgoing = sum(getattr(model.step, name).weight.detach().abs().sum(0) for name in CONSUMERS)
    expected = (1 - decay) * (share * activations.abs()).sum((0, 1)) * outgoing
    utility = cbp.states["step__fc"].utility
    torch.testing.assert_close(utility, expected)
    assert (utility > 0).all()
    assert cbp.states["step__fc"].age.tolist() == [1] * HIDDEN


def replace_once(declare, *, bias_transfer):
    """One update (so the optimizer has state), then a cbp.step that replaces a quarter
    of the units; returns the model, the optimizer, the parameters and the step's
    activations before the replacement, and the replaced units."""
    model, batch = model_and_batch()
    outputs = recorded(model)
    optimizer = AdamPerElement(model.parameters(), lr=1e-2)
    cbp = ContinualBackprop(
        model,
        optimizer,
        units=declare,
        replacement_rate=0.25,
        maturity_threshold=0,
        bias_transfer=bias_transfer,
        generator=torch.Generator().manual_seed(1),
    )
    out = model(batch.x)
    ponder_loss(out, batch.y, bce, beta=0.01, lambda_p=0.2).total.backward()
    optimizer.step()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    share = ponder_step_weights(out)
    mean = ((share / share.sum())[..., None] * torch.stack(outputs)).sum((0, 1))
    cbp.step(step_weights=share)
    replaced = torch.nonzero(cbp.states["step__fc"].age == 0).flatten()
    assert len(replaced) == HIDDEN // 4
    return model, optimizer, before, mean, replaced


@DECLARATIONS
def test_replacement_resets_exactly_the_producers_rows_and_the_consumers_columns(declare):
    model, optimizer, before, _, units = replace_once(declare, bias_transfer=False)
    after = dict(model.named_parameters())
    kept = torch.ones(HIDDEN, dtype=torch.bool)
    kept[units] = False

    fc_before, fc_after = before["step.fc.weight"], after["step.fc.weight"].detach()
    assert (fc_after[:, units] == 0).all()  # fc reads the state at the next step: columns
    redrawn = fc_after[units][:, kept]  # the producer's rows, outside the zeroed columns
    assert (redrawn != fc_before[units][:, kept]).all()
    assert redrawn.abs().max() <= HIDDEN**-0.5  # U(±1/√fan_in): the layer's own init
    assert torch.equal(fc_after[kept][:, kept], fc_before[kept][:, kept])
    fc_bias = after["step.fc.bias"].detach()
    assert (fc_bias[units] == 0).all() and torch.equal(fc_bias[kept], before["step.fc.bias"][kept])
    for head in ("output", "halting"):
        weight = after[f"step.{head}.weight"].detach()
        assert (weight[:, units] == 0).all()
        assert torch.equal(weight[:, kept], before[f"step.{head}.weight"][:, kept])
    for name in ("embed.weight", "embed.bias", "output.bias", "halting.bias"):
        assert torch.equal(after[f"step.{name}"], before[f"step.{name}"]), name

    # The optimizer forgets exactly the touched slices.
    fc_state = optimizer.state[model.step.fc.weight]
    assert (fc_state["exp_avg"][units] == 0).all() and (fc_state["step"][units] == 0).all()
    assert (fc_state["exp_avg"][:, units] == 0).all()
    assert (fc_state["step"][kept][:, kept] == 1).all()
    head_state = optimizer.state[model.step.output.weight]
    assert (head_state["step"][:, units] == 0).all() and (head_state["step"][:, kept] == 1).all()
    assert (optimizer.state[model.step.embed.weight]["step"] == 1).all()


@pytest.mark.parametrize(
    ("declare", "recurrence_gets_the_transfer"),
    [(with_unit_layer, True), (with_param_slices, False)],
)
def test_bias_transfer_reaches_the_recurrence_only_when_it_is_declared_a_consumer_bias(
    declare, recurrence_gets_the_transfer
):
    model, _, before, mean, units = replace_once(declare, bias_transfer=True)
    step = model.step
    kept = torch.ones(HIDDEN, dtype=torch.bool)
    kept[units] = False
    for head in ("output", "halting"):
        moved = before[f"step.{head}.weight"][:, units] @ mean[units]
        torch.testing.assert_close(
            getattr(step, head).bias.detach(), before[f"step.{head}.bias"] + moved
        )
    fc_moved = before["step.fc.weight"][:, units] @ mean[units]
    expected = before["step.fc.bias"] + (fc_moved if recurrence_gets_the_transfer else 0)
    torch.testing.assert_close(step.fc.bias.detach()[kept], expected[kept])


@DECLARATIONS
def test_declared_units_are_replaced_while_training_under_pondernet(declare):
    model, _ = model_and_batch()
    optimizer = AdamPerElement(model.parameters(), lr=1e-3)
    cbp = ContinualBackprop(
        model, optimizer, units=declare, replacement_rate=0.05, maturity_threshold=5
    )
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        batch = parity_batch(32, INPUTS, generator=generator)
        out = model(batch.x)
        loss = ponder_loss(out, batch.y, bce, beta=0.01, lambda_p=0.2)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        cbp.step(step_weights=ponder_step_weights(out))
    # 16 units × 0.05 per update once mature (after 5 updates): about 12 replaced.
    assert 8 <= cbp.replacements["step.fc"] <= 16
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_function_of_the_model_declares_the_units_for_the_avalanche_plugin():
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.training.plugins import EvaluationPlugin

    from strategies import ContinualBackpropPlugin, PonderTemplate
    from strategies.datasets import tagged_dataset

    model, batch = model_and_batch(outputs=2)  # two logits: the template's cross-entropy
    data = tagged_dataset(batch.x, batch.y.long(), torch.ones(len(batch.y), dtype=torch.long))
    benchmark = benchmark_from_datasets(train=[data], test=[data])
    plugin = ContinualBackpropPlugin(
        units=with_param_slices, replacement_rate=0.5, maturity_threshold=1
    )
    strategy = PonderTemplate(
        model=model,
        optimizer=AdamPerElement(model.parameters(), lr=1e-3),
        train_mb_size=8,
        train_epochs=2,
        plugins=[plugin],
        evaluator=EvaluationPlugin(loggers=[]),
    )
    strategy.train(benchmark.train_stream[0])
    assert plugin.replacements["step.fc"] > 0
    layer = plugin.core.layers[0]
    assert layer.activation is model.step.act
    assert [part.param for part in layer.outgoing][1] is model.step.output.weight
