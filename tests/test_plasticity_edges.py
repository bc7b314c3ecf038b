"""Continual backprop, ReDo, resets and penalties at the edges of what the README promises:
signed conv activations, shared activation modules, Linear layers on sequences, pondering
models (PonderNet and ACT), recurrent bias transfer, full resets of attention models, and
the two forms of each weight-space regulariser."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from ponderlife import (
    ACT,
    ContinualBackprop,
    PonderNet,
    RNNStep,
    TransformerStep,
    ponder_step_weights,
)
from ponderlife.baselines import L2, UPGD, FullReset, HeadReset, L2Init, ReDo


def sgd_update(model, optimizer, loss):
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


# -- 1. conv units: |h| per position, then the mean -----------------------------------------


def test_a_conv_channel_whose_signed_responses_cancel_over_positions_is_not_useless():
    conv = nn.Conv2d(1, 2, 1, bias=False)
    model = nn.Sequential(conv, nn.Tanh(), nn.Conv2d(2, 1, 1))
    with torch.no_grad():
        conv.weight[:] = torch.tensor([1.0, 0.2]).view(2, 1, 1, 1)
        model[2].weight.fill_(1.0)
    cbp = ContinualBackprop(model, None, decay_rate=0.0, maturity_threshold=100)
    # Channel 0 sees +1 and −1 at its two positions: large |h|, zero mean over positions.
    x = torch.tensor([1.0, -1.0]).view(1, 1, 1, 2).repeat(4, 1, 1, 1)
    model(x)
    cbp.step()
    utility = cbp.states["0"].utility
    torch.testing.assert_close(utility, torch.tanh(torch.tensor([1.0, 0.2])))
    assert utility[0] > utility[1]


# -- 2. one activation module at several places ---------------------------------------------


@pytest.mark.parametrize("method", [ContinualBackprop, ReDo])
def test_an_activation_module_reused_at_two_places_is_refused_naming_them(method):
    act = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 4), act, nn.Linear(4, 5), act, nn.Linear(5, 1))
    with pytest.raises(ValueError, match=r"several places \(1, 3\).*its own module"):
        method(model, None)


def test_two_unit_layers_sharing_an_activation_module_are_refused():
    from ponderlife.units import find_unit_layers

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    layer = find_unit_layers(model)[0]
    twin = copy.copy(layer)
    twin.name = "twin"
    with pytest.raises(ValueError, match="layers '0' and 'twin'"):
        ContinualBackprop(model, None, units=[layer, twin])


# -- 3. Linear layers on sequences ----------------------------------------------------------


def test_linear_units_on_sequences_are_the_last_axis_averaged_over_batch_and_positions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    cbp = ContinualBackprop(
        model, None, decay_rate=0.0, maturity_threshold=100, utility="mean_corrected_contribution"
    )
    x = torch.randn(5, 7, 4)  # (B, L, D)
    model(x)
    cbp.step()
    h = torch.tanh(model[0](x)).detach()  # (5, 7, 6)
    state = cbp.states["0"]
    # decay 0: the running mean is this step's mean over every leading axis
    torch.testing.assert_close(state.mean, h.mean(dim=(0, 1)))
    deviation = (h - h.mean(dim=(0, 1))).abs().mean(dim=(0, 1))
    expected = deviation * model[2].weight.detach().abs().sum(0)
    torch.testing.assert_close(state.utility, expected)


def test_an_activation_of_the_wrong_width_is_a_clear_error():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    cbp = ContinualBackprop(model, None)
    model[1](torch.randn(2, 5))  # something else pushed through the layer's activation
    with pytest.raises(ValueError, match=r"4 units on axis -1.*shape \(2, 5\)"):
        cbp.step()


# -- 4. ReDo over every ponder step ---------------------------------------------------------


def test_redo_scores_dormancy_over_all_recorded_forwards_with_their_weights():
    model = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight[:, 0] = torch.tensor([1.0, -1.0, 1.0])
        model[0].bias.zero_()
    redo = ReDo(model, None, tau=0.1, every=1)
    model(torch.ones(4, 1))  # "step 1": unit 1 silent
    model(-torch.ones(4, 1))  # "step 2": units 0 and 2 silent
    only_first = torch.tensor([[1.0] * 4, [0.0] * 4])
    assert redo.step(step_weights=only_first) == {"0": 1}
    assert model[0].bias[1] == 0 and (model[2].weight[:, 1] == 0).all()
    assert torch.equal(model[0].weight[[0, 2], 0], torch.tensor([1.0, 1.0]))


def test_redo_on_pondernet_equals_a_reach_weighted_transcription(cell_states):
    torch.manual_seed(1)
    step = RNNStep(2, 8, 1)
    model = PonderNet(step, max_steps=5)
    redo = ReDo(model, None, tau=0.6, every=1)
    x = torch.randn(16, 2)
    out = model(x)
    weights = ponder_step_weights(out)
    hidden = cell_states(step.cell, x, weights.shape[0])  # (N, B, units)
    w = (weights / weights.sum())[..., None]
    magnitude = (w * hidden.abs()).sum(dim=(0, 1))
    expected = torch.nonzero(magnitude / magnitude.mean() <= 0.6).flatten().tolist()
    last_only = hidden[-1].abs().mean(0)
    last_step_rule = torch.nonzero(last_only / last_only.mean() <= 0.6).flatten().tolist()
    assert expected and expected != last_step_rule  # this input tells the rules apart
    assert redo.step(step_weights=weights) == {"step.cell": len(expected)}
    recycled = torch.nonzero((step.output.weight == 0).all(0)).flatten().tolist()
    assert recycled == expected


# -- 5. ACT's steps weighted by ACT's own reach ---------------------------------------------


def test_act_step_weights_are_one_up_to_each_samples_halting_step():
    torch.manual_seed(0)
    model = ACT(RNNStep(3, 5, 1, halting_bias=0.0), max_steps=6, epsilon=0.01)
    out = model(torch.randn(32, 3))
    assert out.halting_step.unique().numel() > 1  # samples halt at different steps
    weights = ponder_step_weights(out)
    steps = torch.arange(1, weights.shape[0] + 1)[:, None]
    torch.testing.assert_close(weights, (steps <= out.halting_step).float())


def test_continual_backprop_on_act_ignores_steps_after_a_samples_halt(cell_states):
    torch.manual_seed(0)
    step = RNNStep(3, 5, 1, halting_bias=0.0)
    model = ACT(step, max_steps=6)
    cbp = ContinualBackprop(model, None, decay_rate=0.0, maturity_threshold=100)
    x = torch.randn(32, 3)
    out = model(x)
    cbp.step(step_weights=ponder_step_weights(out))
    hidden = cell_states(step.cell, x, out.weights.shape[0])
    reached = torch.arange(1, len(hidden) + 1)[:, None] <= out.halting_step
    expected = hidden[reached].mean(0)  # every (step, sample) the sample computed
    torch.testing.assert_close(cbp.states["step__cell"].mean, expected)


# -- 6. bias transfer and the recurrence's first step ---------------------------------------


def test_bias_transfer_keeps_the_heads_on_the_mean_and_the_first_step_unchanged(cell_states):
    torch.manual_seed(0)
    step = RNNStep(3, 6, 2)
    model = PonderNet(step, max_steps=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    # decay 0: the mean a replaced unit transfers is this update's reach-weighted mean
    cbp = ContinualBackprop(
        model, optimizer, replacement_rate=0.2, maturity_threshold=3, decay_rate=0.0
    )
    cell = step.cell
    for _ in range(50):
        x = torch.randn(8, 3)
        out = model(x)
        weights = ponder_step_weights(out)
        hidden = cell_states(cell, x, weights.shape[0])  # the recorded forward's weights
        sgd_update(model, optimizer, out.prediction.pow(2).mean())
        w = (weights / weights.sum())[..., None]
        mean_hidden = (w * hidden).sum(dim=(0, 1))
        # Step 1 reads the zero initial state: its pre-activations are W_ih x + b_ih + b_hh.
        first_step = (x @ cell.weight_ih.T + cell.bias_ih + cell.bias_hh).detach().clone()
        heads = [head(mean_hidden).detach().clone() for head in (step.output, step.halting)]
        if sum(cbp.step(step_weights=weights).values()):
            break
    replaced = torch.nonzero(cbp.states["step__cell"].age == 0).flatten().tolist()
    assert replaced
    others = [i for i in range(6) if i not in replaced]
    after = (x @ cell.weight_ih.T + cell.bias_ih + cell.bias_hh).detach()
    torch.testing.assert_close(after[:, others], first_step[:, others])
    for head, before in zip((step.output, step.halting), heads, strict=True):
        assert (head.weight[:, replaced] == 0).all()
        torch.testing.assert_close(head(mean_hidden).detach(), before)


# -- 7. full reset gives the model it was built as ------------------------------------------


def test_full_reset_redraws_every_parameter_from_its_construction_distribution():
    torch.manual_seed(0)
    model = PonderNet(
        TransformerStep(
            2, input_size=3, d_model=16, nhead=2, dim_feedforward=32, halting_bias=-3.0
        ),
        max_steps=3,
    )
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(5.0)  # as if trained far away
    trained = {name: p.detach().clone() for name, p in model.named_parameters()}
    FullReset(model).task_boundary()
    fresh_params = dict(fresh.named_parameters())
    for name, p in model.named_parameters():
        reference = fresh_params[name].detach()
        if (reference == reference.flatten()[0]).all():  # constant at construction
            assert torch.equal(p, reference), name
        else:  # random at construction: redrawn, same scale
            assert not torch.equal(p, trained[name]), name
            assert p.abs().max() <= reference.abs().max() * 1.5, name
            if p.numel() >= 64:
                assert float(p.detach().std()) == pytest.approx(float(reference.std()), rel=0.35), (
                    name
                )
    assert model.step.halting.bias.item() == -3.0
    assert not torch.equal(
        model.step.block.self_attn.in_proj_weight, fresh.step.block.self_attn.in_proj_weight
    )


def test_head_reset_keeps_the_halting_bias_it_was_built_with():
    torch.manual_seed(0)
    step = RNNStep(3, 4, 1, halting_bias=-3.0)
    with torch.no_grad():
        step.halting.bias.fill_(2.0)
    HeadReset(step.halting).task_boundary()
    assert step.halting.bias.item() == -3.0


def test_a_parameter_no_module_initialises_is_refused_by_full_reset():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))
            self.linear = nn.Linear(3, 1)

    with pytest.raises(ValueError, match="cannot re-initialise scale"):
        FullReset(Scaled())


# -- 8. the two forms of each regulariser are one regulariser -------------------------------


@pytest.mark.parametrize(
    "build", [lambda m: L2(m, weight_decay=0.1), lambda m: L2Init(m, strength=0.25)]
)
def test_step_is_one_unit_learning_rate_gradient_step_of_the_penalty(build):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    regulariser = build(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    coupled = copy.deepcopy(model)
    coupled_regulariser = build(coupled)
    if isinstance(regulariser, L2Init):
        coupled_regulariser.initial = [p.clone() for p in regulariser.initial]
    optimizer = torch.optim.SGD(coupled.parameters(), lr=1.0)
    optimizer.zero_grad()
    coupled_regulariser.penalty().backward()
    optimizer.step()
    regulariser.step()
    for p, q in zip(model.parameters(), coupled.parameters(), strict=True):
        torch.testing.assert_close(p, q)


# -- UPGD against the authors' update rule ------------------------------------------------


def authors_upgd_step(params, states, *, lr, weight_decay, beta, sigma, generator, t):
    """Elsayed & Mahmood's FirstOrderGlobalUPGD step, transcribed from their rule."""
    largest = -float("inf")
    for p, state in zip(params, states, strict=True):
        state.mul_(beta).add_(-p.grad * p.detach(), alpha=1 - beta)
        largest = max(largest, float(state.max()))
    new = []
    for p, state in zip(params, states, strict=True):
        noise = torch.randn(p.shape, generator=generator) * sigma
        gate = torch.sigmoid(state / (1 - beta**t) / largest)
        new.append(p.detach() * (1 - lr * weight_decay) - lr * (p.grad + noise) * (1 - gate))
    return new, largest


def test_upgd_equals_the_authors_rule_while_some_utility_is_positive():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(4))]
    optimizer = UPGD(
        params,
        lr=0.1,
        weight_decay=0.01,
        beta_utility=0.9,
        sigma=0.05,
        generator=torch.Generator().manual_seed(5),
    )
    reference_noise = torch.Generator().manual_seed(5)
    states = [torch.zeros_like(p) for p in params]
    targets = [torch.randn(3, 2), torch.randn(4)]
    for t in range(1, 8):
        loss = sum(((p - y) ** 2).sum() for p, y in zip(params, targets, strict=True))
        optimizer.zero_grad()
        loss.backward()
        expected, largest = authors_upgd_step(
            params,
            states,
            lr=0.1,
            weight_decay=0.01,
            beta=0.9,
            sigma=0.05,
            generator=reference_noise,
            t=t,
        )
        assert largest > 0
        optimizer.step()
        for p, e in zip(params, expected, strict=True):
            torch.testing.assert_close(p.detach(), e)


def test_upgd_with_every_utility_negative_gates_at_one_half_not_the_authors_flipped_gate():
    params = [nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.1]))]
    optimizer = UPGD(params, lr=0.1, weight_decay=0.0, beta_utility=0.5, sigma=0.0)
    # loss = ‖θ‖²/2: g = θ, so the utility −g·θ = −θ² < 0 for every weight
    loss = 0.5 * params[0].pow(2).sum()
    loss.backward()
    before = params[0].detach().clone()
    authors, largest = authors_upgd_step(
        params,
        [torch.zeros(4)],
        lr=0.1,
        weight_decay=0.0,
        beta=0.5,
        sigma=0.0,
        generator=torch.Generator(),
        t=1,
    )
    assert largest < 0
    optimizer.step()
    ours = params[0].detach()
    torch.testing.assert_close(ours, before - 0.1 * before * 0.5)  # gate 1/2 everywhere
    # The authors' gate would protect the least useful weight (θ = 2) the most.
    assert not torch.allclose(ours, authors[0])


# -- discovery refuses, naming the layer, what it cannot manage ------------------------------


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (
            nn.Sequential(
                nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.ReLU()),
                nn.Linear(5, 1),
            ),
            r"layer 0\.2 \(Linear → ReLU\).*outside this nn.Sequential",
        ),
        (
            nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1)),
            r"layer 0 \(Conv1d → ReLU → Flatten → Linear\): only Linear and Conv2d",
        ),
        (
            nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4), nn.Linear(4, 1)),
            r"layer 0 \(Linear → ReLU → LayerNorm\): LayerNorm cannot be read",
        ),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(4, 1)),
            r"layer 0 \(Conv2d → ReLU → Linear\): Linear cannot be read",
        ),
    ],
    ids=["reader-outside", "conv1d", "norm-after-activation", "conv-without-flatten"],
)
def test_discovery_refuses_hidden_units_it_cannot_manage_naming_the_layer(model, match):
    with pytest.raises(ValueError, match=match):
        ContinualBackprop(model, None)


def test_the_models_own_final_activation_is_not_a_hidden_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid())
    cbp = ContinualBackprop(model, None)
    assert [layer.name for layer in cbp.layers] == ["0"]


def test_dormant_threshold_is_documented_as_a_fraction_of_probe_inputs():
    import experiments.stream
    from strategies.metrics import PlasticityMetrics

    source = Path(experiments.stream.__file__).read_text()
    line = next(x for x in source.splitlines() if x.strip().startswith("dormant_threshold ="))
    assert "fraction of probe inputs" in line
    assert "fraction of inputs, not an activation magnitude" in " ".join(
        PlasticityMetrics.__doc__.split()
    )
