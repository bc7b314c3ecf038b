"""Weight clipping (Elsayed et al. 2024) and layer normalisation with weight decay (Lyle et al.
2024): the core, the step functions' ``layer_norm`` option, and both as study methods."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_configs import STREAM
from torch import nn

from experiments import _runs, stream, sweep
from ponderlife import ContinualBackprop, GRUStep, PonderNet, ResidualMLPStep, RNNStep
from ponderlife.baselines import WeightClipping, initial_bound
from ponderlife.units import ActivationRecorder


def reference_limits(model: nn.Sequential, beta: float) -> list[float]:
    """A transcription of the authors' bounds (weight-clipping repository, rl_experiments):
    walking the parameters in order, a weight's bound is 1/√fan_in of that weight and a
    bias takes the bound of the weight before it; the clip range is ±beta·bound."""
    limits, previous = [], None
    for p in model.parameters():
        if p.dim() == 1:
            fan_in = previous.shape[1]
        else:
            previous, fan_in = p, p.shape[1]
        limits.append(beta / math.sqrt(fan_in))
    return limits


def test_limits_on_an_mlp_match_a_transcription_of_the_authors_bounds():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 7), nn.ReLU(), nn.Linear(7, 3), nn.ReLU(), nn.Linear(3, 1))
    clipper = WeightClipping(model, scale=2.5)
    assert list(clipper.limits().values()) == pytest.approx(reference_limits(model, 2.5))


def test_bounds_follow_each_module_s_initialisation():
    gru, norm, conv = nn.GRUCell(5, 9), nn.LayerNorm(9), nn.Conv2d(3, 4, 3)
    assert initial_bound(gru, gru.weight_ih) == pytest.approx(1 / 3)  # U(±1/√hidden)
    assert initial_bound(norm, norm.bias) == 1.0
    assert initial_bound(conv, conv.bias) == pytest.approx(1 / math.sqrt(27))
    assert initial_bound(nn.Embedding(3, 2), torch.zeros(1)) is None
    # A halting head initialised far outside its Linear's range keeps room for its start.
    step = GRUStep(5, 9, 2, halting_bias=-3.0)
    limits = WeightClipping(step, scale=2.0).limits()
    assert limits["halting.bias"] == 6.0
    assert limits["halting.weight"] == pytest.approx(2 / 3)
    assert limits["cell.weight_hh"] == pytest.approx(2 / 3)


def test_step_clamps_exactly_the_weights_outside_their_range():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    clipper = WeightClipping(model, scale=1.0)
    limits = clipper.limits()
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)  # large steps leave the range
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(32, 4)).pow(2).mean().neg().backward()
        optimizer.step()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        clipper.step()
        outside = 0
        for name, p in model.named_parameters():
            limit = limits[name]
            assert torch.equal(p, before[name].clamp(-limit, limit))
            outside += int((before[name].abs() > limit).sum())
        assert outside > 0  # the test means something: some weights were clipped


def test_bad_arguments_and_unbounded_parameters_are_refused():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.zeros(3))

    with pytest.raises(ValueError, match="scale must be in"):
        WeightClipping(nn.Linear(2, 2), scale=0.0)
    with pytest.raises(ValueError, match=r"no initial bound for 'gain'.*bounds=") as error:
        WeightClipping(Scale())
    assert "Scale" in str(error.value)
    assert WeightClipping(Scale(), scale=3.0, bounds={"gain": 0.5}).limits() == {"gain": 1.5}
    with pytest.raises(ValueError, match=r"does not have: \['nope'\]"):
        WeightClipping(nn.Linear(2, 2), bounds={"nope": 1.0})


def test_bounds_carry_over_and_round_trip_through_state():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    first = WeightClipping(model, scale=2.0, bounds={"2.bias": 0.01})
    with torch.no_grad():  # trained weights outside the initial range
        model[0].weight.fill_(5.0)
    rebuilt = WeightClipping(model, scale=2.0)
    assert rebuilt.limits()["0.weight"] == 10.0  # measured on trained weights: too wide
    rebuilt.carry_from(first)
    assert rebuilt.limits() == first.limits()
    restored = WeightClipping(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    restored.load_state_dict(first.state_dict())
    assert restored.limits() == first.limits()
    with pytest.raises(ValueError, match="not for this model's parameters"):
        WeightClipping(nn.Linear(3, 4)).load_state_dict(first.state_dict())


# ---- layer normalisation in the step functions -------------------------------------------


def test_layer_norm_mlp_normalises_the_hidden_pre_activations():
    torch.manual_seed(3)
    step = ResidualMLPStep(5, 8, 2, layer_norm=True)
    x, state = torch.randn(4, 5), torch.randn(4, 8)
    pre = step.fc1(torch.cat([x, step.norm(state)], dim=-1))
    mean, var = pre.mean(-1, keepdim=True), pre.var(-1, unbiased=False, keepdim=True)
    hidden = torch.relu((pre - mean) / torch.sqrt(var + 1e-5))  # unit gain, zero bias
    expected = state + step.fc2(hidden)
    torch.testing.assert_close(step(x, state).state, expected)
    assert ResidualMLPStep(5, 8, 2).hidden_norm is None  # off by default


@pytest.mark.parametrize("step_class", [RNNStep, GRUStep])
def test_layer_norm_cells_normalise_the_new_state(step_class):
    torch.manual_seed(4)
    step = step_class(5, 8, 2, layer_norm=True)
    x, state = torch.randn(4, 5), torch.randn(4, 8)
    expected = nn.functional.layer_norm(step.cell(x, state), (8,))
    out = step(x, state)
    torch.testing.assert_close(out.state, expected)
    torch.testing.assert_close(out.prediction, step.output(expected))
    assert step_class(5, 8, 2).norm is None


@pytest.mark.parametrize("step_class", [ResidualMLPStep, RNNStep, GRUStep])
def test_continual_backprop_on_a_layer_normed_step_resets_the_replaced_units_norm(step_class):
    torch.manual_seed(5)
    step = step_class(5, 8, 2, layer_norm=True)
    model = PonderNet(step, max_steps=3)
    norm = step.hidden_norm if step_class is ResidualMLPStep else step.norm
    (layer,) = step.unit_layers()
    assert layer.norms == [norm]
    if step_class is not ResidualMLPStep:  # a cell's units are read through the norm
        assert layer.activation is norm
    with torch.no_grad():
        norm.weight.fill_(3.0)
        norm.bias.fill_(0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=0.25, maturity_threshold=0)
    model.train()
    model(torch.randn(16, 5))
    replaced = cbp.step()
    assert sum(replaced.values()) == 2  # a quarter of the 8 units
    reset = norm.weight.eq(1.0)
    assert int(reset.sum()) == 2 and torch.equal(norm.bias.eq(0.0), reset)
    assert norm.weight[~reset].eq(3.0).all()


def test_recorded_cell_activations_are_the_normalised_state():
    torch.manual_seed(6)
    step = RNNStep(5, 8, 2, layer_norm=True)
    recorder = ActivationRecorder(step.unit_layers(), training_only=False)
    out = step(torch.randn(3, 5), torch.zeros(3, 8))
    (record,) = recorder.pop("cell")
    torch.testing.assert_close(record, out.state)
    recorder.remove()


# ---- both as methods of the study --------------------------------------------------------


@pytest.mark.parametrize("method", ["weight_clipping", "layer_norm_l2"])
def test_the_study_runs_each_method_as_a_named_config(method, monkeypatch, tmp_path):
    monkeypatch.setenv("PONDERLIFE_RUNS", str(tmp_path))
    built = []
    original = stream.build_step

    def keep(cfg, example, outputs):
        built.append(original(cfg, example, outputs))
        return built[-1]

    monkeypatch.setattr(stream, "build_step", keep)
    run = stream.ex.run(
        named_configs=[method], config_updates=STREAM, options={"--loglevel": "ERROR"}
    )
    assert run.status == "COMPLETED"
    assert run.config["method"] == method
    step = built[0]
    assert (step.hidden_norm is not None) == (method == "layer_norm_l2")
    if method == "weight_clipping":
        limit = 2.0 / math.sqrt(step.fc2.weight.shape[1])
        assert float(step.fc2.weight.abs().max()) <= limit


def test_layer_norm_key_and_clip_scale_are_checked_before_any_work():
    config = sweep.full_config(sweep.Job("stream", (), {"seed": 0}))
    stream.validate(config)
    with pytest.raises(ValueError, match=r"'clip_scale' must be in \(0, inf\), got 0.0"):
        stream.validate({**config, "clip_scale": 0.0})
    with pytest.raises(ValueError, match="'layer_norm' must be true or false, got 'yes'"):
        stream.validate({**config, "layer_norm": "yes"})


def test_the_added_keys_keep_the_identities_of_runs_made_before_them():
    # The demo's folder names, computed before `layer_norm` and `clip_scale` existed: a
    # rerun of `make demo` still finds (and skips) the runs it made then.
    for grid, before in [
        (("demo", "bp"), "000e3f82977a2a514f3cf52e1ec68642ed92638d91c8f181bd78137b4d056923"),
        (("demo", "cbp"), "409ce7b3cc16d5c4a6beb17c49c6b9a29055d78deae8a806df5de58792331211"),
    ]:
        config = sweep.full_config(sweep.Job("stream", grid, {"seed": 0}))
        assert config["layer_norm"] is False and config["clip_scale"] == 2.0
        assert _runs.identity("stream", config) == before
        changed = _runs.identity("stream", {**config, "layer_norm": True})
        assert changed != before
