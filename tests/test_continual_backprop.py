"""Continual backprop pinned against a loop transcription of the equations and its contract."""

import copy
import math

import pytest
import torch
from torch import nn

from ponderlife import (
    AdamPerElement,
    ContinualBackprop,
    GRUStep,
    PonderNet,
    RNNStep,
    reach_probabilities,
    reset_optimizer_state,
)


def two_layer(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


def train_step(model, optimizer, cbp, x, **step_kwargs):
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return cbp.step(**step_kwargs)


@pytest.mark.parametrize(
    "utility", ["contribution", "mean_corrected_contribution", "adaptable_contribution"]
)
def test_utility_and_bias_correction_equal_a_loop_transcription(utility):
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    decay = 0.8
    cbp = ContinualBackprop(
        model, optimizer, decay_rate=decay, maturity_threshold=1000, utility=utility
    )
    g = torch.Generator().manual_seed(1)
    mean, util = [0.0] * 5, [0.0] * 5
    for t in range(1, 7):
        x = torch.randn(4, 3, generator=g)
        h = torch.relu(model[0](x)).detach()  # what the forward will record
        train_step(model, optimizer, cbp, x)
        w_in, w_out = model[0].weight.detach(), model[2].weight.detach()
        for i in range(5):
            column = [float(h[b, i]) for b in range(4)]
            mean[i] = decay * mean[i] + (1 - decay) * sum(column) / 4
            corrected_mean = mean[i] / (1 - decay**t)
            if utility == "contribution":
                magnitude = sum(abs(v) for v in column) / 4
            else:
                magnitude = sum(abs(v - corrected_mean) for v in column) / 4
            value = magnitude * sum(abs(float(w_out[k, i])) for k in range(2))
            if utility == "adaptable_contribution":
                value /= sum(abs(float(w_in[i, j])) for j in range(3))
            util[i] = decay * util[i] + (1 - decay) * value
        state = cbp.states["0"]
        torch.testing.assert_close(state.mean, torch.tensor(mean), rtol=1e-5, atol=1e-7)
        corrected = state.utility / (1 - decay**t)
        expected = torch.tensor(util) / (1 - decay**t)
        torch.testing.assert_close(corrected, expected, rtol=1e-5, atol=1e-7)
    assert state.age.tolist() == [6] * 5


def replacement_totals(maturity: int, steps: int, rate: float) -> list[int]:
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=rate, maturity_threshold=maturity)
    totals, total = [], 0
    for _ in range(steps):
        total += train_step(model, optimizer, cbp, torch.randn(4, 3))["0"]
        totals.append(total)
    assert cbp.replacements == {"0": total}
    return totals


def test_accumulator_yields_floor_of_rate_times_units_times_steps():
    # Maturity 0: every unit is eligible at every step, so n = 5 throughout.
    rate = 3 / 128  # ρ·n = 15/128, exact in binary
    totals = replacement_totals(maturity=0, steps=300, rate=rate)
    assert totals == [math.floor(rate * 5 * t) for t in range(1, 301)]


def test_no_burst_of_replacements_when_units_mature():
    # Had the accumulator filled during the first m = 20 steps it would hold 20·15/128 ≈ 2.3
    # at maturity and replace 2 units at once. It only fills once units are eligible:
    # the first replacement comes when ρ·n·(t − m) reaches 1, at t = m + 9.
    totals = replacement_totals(maturity=20, steps=29, rate=3 / 128)
    assert totals[:28] == [0] * 28
    assert totals[28] == 1


def test_only_mature_units_are_ever_replaced():
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=0.5, maturity_threshold=3)
    state = cbp.states["0"]
    for _ in range(40):
        ages_at_step = state.age + 1  # step() ages every unit first
        train_step(model, optimizer, cbp, torch.randn(4, 3))
        replaced = state.age == 0
        assert (ages_at_step[replaced] > 3).all()
    assert cbp.replacements["0"] > 0


def force_one_replacement(model, optimizer, x, **kwargs):
    """Run until the first replacement; return the unit and the parameters just before it."""
    cbp = ContinualBackprop(model, optimizer, replacement_rate=0.2, maturity_threshold=4, **kwargs)
    for _ in range(50):
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        state_before = copy.deepcopy(optimizer.state_dict())
        if sum(cbp.step().values()):
            break
    unit = int(torch.nonzero(cbp.states["0"].age == 0)[0])
    return cbp, unit, before, state_before


def test_replacement_changes_only_the_chosen_rows_and_columns():
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the optimizer changes nothing
    cbp, unit, before, _ = force_one_replacement(model, optimizer, torch.randn(8, 3))
    assert cbp.replacements == {"0": 1}
    others = [i for i in range(5) if i != unit]
    w_in, b_in, w_out = model[0].weight, model[0].bias, model[2].weight
    assert torch.equal(w_in[others], before["0.weight"][others])
    assert not torch.equal(w_in[unit], before["0.weight"][unit])
    assert torch.equal(b_in[others], before["0.bias"][others]) and b_in[unit] == 0
    assert torch.equal(w_out[:, others], before["2.weight"][:, others])
    assert (w_out[:, unit] == 0).all()  # outgoing weights exactly zero


def test_new_incoming_weights_come_from_the_layers_initial_distribution():
    model = nn.Sequential(nn.Linear(400, 50), nn.ReLU(), nn.Linear(50, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=1.0, maturity_threshold=0)
    train_step(model, optimizer, cbp, torch.randn(2, 400))
    bound = 1 / math.sqrt(400)
    weights = model[0].weight
    assert weights.abs().max() <= bound
    assert weights.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(±b)


def tanh_two_layer() -> nn.Sequential:
    # tanh: the least useful unit still has a nonzero mean (a ReLU one is usually dead).
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))


def test_bias_transfer_preserves_the_next_layers_output_on_the_mean_activation():
    model = tanh_two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randn(8, 3)
    # decay 0: the running mean is this batch's mean activation.
    _, unit, before, _ = force_one_replacement(model, optimizer, x, decay_rate=0.0)
    mean_activation = torch.tanh(x @ before["0.weight"].T + before["0.bias"]).mean(0)
    out_before = mean_activation @ before["2.weight"].T + before["2.bias"]
    out_after = mean_activation @ model[2].weight.T + model[2].bias
    assert mean_activation[unit] != 0  # otherwise the test proves nothing
    torch.testing.assert_close(out_after, out_before)

    model = tanh_two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    _, _, before, _ = force_one_replacement(
        model, optimizer, x, decay_rate=0.0, bias_transfer=False
    )
    assert torch.equal(model[2].bias, before["2.bias"])


@pytest.mark.parametrize("optimizer_class", [torch.optim.Adam, AdamPerElement])
def test_optimizer_moments_of_replaced_units_are_zero_and_others_untouched(optimizer_class):
    model = two_layer()
    optimizer = optimizer_class(model.parameters(), lr=1e-3)
    _, unit, _, state_before = force_one_replacement(model, optimizer, torch.randn(8, 3))
    others = [i for i in range(5) if i != unit]
    params = dict(model.named_parameters())
    for name, rows_or_columns in (("0.weight", 0), ("0.bias", 0), ("2.weight", 1)):
        index = list(model.state_dict()).index(name)
        for key in ("exp_avg", "exp_avg_sq"):
            now = optimizer.state[params[name]][key]
            then = state_before["state"][index][key]
            now_unit, now_others = (
                now.select(rows_or_columns, unit),
                now.index_select(rows_or_columns, torch.tensor(others)),
            )
            assert (now_unit == 0).all(), (name, key)
            assert torch.equal(now_others, then.index_select(rows_or_columns, torch.tensor(others)))


def test_missing_optimizer_state_is_tolerated():
    model = two_layer()
    optimizer = torch.optim.Adam(model.parameters())
    cbp = ContinualBackprop(model, optimizer, replacement_rate=1.0, maturity_threshold=0)
    model(torch.randn(2, 3))  # a forward, no optimizer step: no state exists yet
    assert cbp.step() == {"0": 5}


def test_recurrent_units_with_several_consumers_are_replaced_everywhere():
    torch.manual_seed(0)
    model = PonderNet(GRUStep(3, 6, 2), max_steps=4)
    optimizer = AdamPerElement(model.parameters(), lr=1e-3)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=0.2, maturity_threshold=2)
    for _ in range(30):
        out = model(torch.randn(5, 3))
        optimizer.zero_grad()
        out.predictions.pow(2).mean().backward()
        optimizer.step()
        if sum(cbp.step(step_weights=reach_probabilities(out)).values()):
            break
    unit = int(torch.nonzero(cbp.states["step__cell"].age == 0)[0])
    step = model.step
    for head in (step.output, step.halting):
        assert (head.weight[:, unit] == 0).all()
    assert (step.cell.weight_hh[:, unit] == 0).all()
    gate_rows = [unit, 6 + unit, 12 + unit]
    assert (step.cell.bias_ih[gate_rows] == 0).all() and (step.cell.bias_hh[gate_rows] == 0).all()
    for param in (step.cell.weight_ih, step.cell.weight_hh):
        moments = optimizer.state[param]["exp_avg"]
        assert (moments[gate_rows] == 0).all()
    # The utility sums all three consumers: with the heads zeroed the unit's outgoing
    # magnitude is its recurrent column only, which is zero too.
    outgoing = sum(part.abs_sum_per_unit(6) for part in cbp.layers[0].outgoing)
    assert outgoing[unit] == 0


def test_reach_probabilities_weight_each_ponder_steps_activations():
    torch.manual_seed(0)
    step = RNNStep(3, 4, 1)
    model = PonderNet(step, max_steps=3, epsilon=1e-6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    cbp = ContinualBackprop(model, optimizer, decay_rate=0.0, maturity_threshold=100)
    x = torch.randn(6, 3)
    out = model(x)
    weights = torch.zeros(3, 6)
    weights[0] = 1.0  # only the first step counts
    cbp.step(step_weights=weights)
    first_hidden = step.cell(x, torch.zeros(6, 4)).detach()
    torch.testing.assert_close(cbp.states["step__cell"].mean, first_hidden.mean(0))
    reach = reach_probabilities(out)
    torch.testing.assert_close(reach[0], torch.ones(6))
    torch.testing.assert_close(reach[1], 1 - out.p[0].detach())


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize(
    "utility", ["contribution", "mean_corrected_contribution", "adaptable_contribution"]
)
def test_the_dense_shortcut_equals_the_general_update(utility, batch):
    """Dense layers recorded once take a shorter path (fewer tensor operations); it must
    give the general path's utilities, means, ages and replacements."""
    runs = []
    for shortcut in (True, False):
        model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4), nn.ReLU())
        model.append(nn.Linear(4, 2))
        torch.manual_seed(0)
        for parameter in model.parameters():
            nn.init.uniform_(parameter, -0.7, 0.7)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        cbp = ContinualBackprop(
            model, optimizer, utility=utility, replacement_rate=0.2, maturity_threshold=3
        )
        if not shortcut:
            cbp._dense = dict.fromkeys(cbp._dense)  # every layer takes the general path
        assert all(cbp._dense.values()) == shortcut
        generator = torch.Generator().manual_seed(1)
        replaced = 0
        for _ in range(30):
            x = torch.randn(batch, 3, generator=generator)
            replaced += sum(train_step(model, optimizer, cbp, x).values())
        runs.append((replaced, copy.deepcopy(cbp.state_dict())))
    (replaced, shortcut_state), (general_replaced, general_state) = runs
    assert replaced == general_replaced >= 5
    for key, value in general_state.items():
        torch.testing.assert_close(shortcut_state[key], value, rtol=1e-5, atol=1e-7, msg=key)


def test_mirrors_follow_loaded_and_carried_states():
    """The Python mirrors of the youngest age and the accumulator are read again from the
    buffers after load_state_dict and carry_from, so eligibility follows the loaded ages."""
    model = two_layer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=0.5, maturity_threshold=2)
    run_steps(model, optimizer, cbp, torch.Generator().manual_seed(0), 5)
    state = copy.deepcopy(cbp.state_dict())
    state["states.0.age"].fill_(0)  # nobody eligible any more
    state["states.0.accumulator"].fill_(0.75)
    cbp.load_state_dict(state)
    assert train_step(model, optimizer, cbp, torch.randn(4, 3)) == {"0": 0}  # age 1 ≤ 2
    assert float(cbp.states["0"].accumulator) == 0.75
    other = ContinualBackprop(model, optimizer, replacement_rate=0.5, maturity_threshold=2)
    other.carry_from(cbp)
    cbp.remove()
    assert train_step(model, optimizer, other, torch.randn(4, 3)) == {"0": 0}  # age 2 ≤ 2
    # Age 3: all 5 eligible, 0.75 + 0.5·5 = 3.25 → 3 replaced, 0.25 left.
    assert train_step(model, optimizer, other, torch.randn(4, 3)) == {"0": 3}
    assert float(other.states["0"].accumulator) == pytest.approx(0.25)


def run_steps(model, optimizer, cbp, generator, steps):
    for _ in range(steps):
        train_step(model, optimizer, cbp, torch.randn(4, 3, generator=generator))


def test_save_load_continue_equals_an_uninterrupted_run():
    def fresh():
        model = two_layer(seed=3)
        optimizer = AdamPerElement(model.parameters(), lr=1e-2)
        cbp = ContinualBackprop(model, optimizer, replacement_rate=0.1, maturity_threshold=3)
        return model, optimizer, cbp

    torch.manual_seed(11)
    model, optimizer, cbp = fresh()
    run_steps(model, optimizer, cbp, torch.Generator().manual_seed(5), 40)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(11)
    model, optimizer, cbp = fresh()
    data = torch.Generator().manual_seed(5)
    run_steps(model, optimizer, cbp, data, 20)
    saved = {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "cbp": copy.deepcopy(cbp.state_dict()),
        "rng": torch.get_rng_state(),
    }
    assert sum(cbp.replacements.values()) > 0
    cbp.remove()
    torch.manual_seed(999)  # scramble everything
    model, optimizer, cbp = fresh()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    cbp.load_state_dict(saved["cbp"])
    torch.set_rng_state(saved["rng"])
    run_steps(model, optimizer, cbp, data, 20)
    for key, value in model.state_dict().items():
        assert torch.equal(value, uninterrupted[key]), key


def test_adam_per_element_equals_torch_adam_when_nothing_is_reset():
    a, b = two_layer(seed=4), two_layer(seed=4)
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2, weight_decay=1e-3)
    opt_b = AdamPerElement(b.parameters(), lr=1e-2, weight_decay=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        x = torch.randn(8, 3, generator=g)
        for model, optimizer in ((a, opt_a), (b, opt_b)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def first_update_after_reset(optimizer_class, steps_before: int) -> float:
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(4, 3))
    optimizer = optimizer_class([weight], lr=1e-3)
    for _ in range(steps_before):
        optimizer.zero_grad()
        (weight * torch.randn(4, 3)).sum().backward()
        optimizer.step()
    reset_optimizer_state(optimizer, weight, torch.tensor([1]), dim=0)
    before = weight.detach().clone()
    optimizer.zero_grad()
    (weight * torch.full((4, 3), 0.5)).sum().backward()
    optimizer.step()
    return float((weight.detach() - before)[1].abs().max())


@pytest.mark.parametrize("steps_before", [50, 5000])
def test_reset_unit_gets_a_fresh_adams_first_update(steps_before):
    lr, beta1, beta2 = 1e-3, 0.9, 0.999
    fresh_first_update = lr * 0.5 / (0.5 + 1e-8)  # lr · g / (|g| + eps)
    measured = first_update_after_reset(AdamPerElement, steps_before)
    assert measured == pytest.approx(fresh_first_update, rel=1e-4)
    # torch's Adam keeps its scalar step t: the reset row moves by
    # lr·((1 − β1)/(1 − β1^t)) / √((1 − β2)/(1 − β2^t)), ≈ 3.2·lr once t is large.
    t = steps_before + 1
    scalar_step = lr * ((1 - beta1) / (1 - beta1**t)) / math.sqrt((1 - beta2) / (1 - beta2**t))
    assert first_update_after_reset(torch.optim.Adam, steps_before) == pytest.approx(
        scalar_step, rel=1e-3
    )


def test_sgd_momentum_buffers_of_replaced_slices_are_zeroed():
    weight = nn.Parameter(torch.ones(3, 2))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    weight.grad = torch.ones(3, 2)
    optimizer.step()
    reset_optimizer_state(optimizer, weight, torch.tensor([0]), dim=1)
    buffer = optimizer.state[weight]["momentum_buffer"]
    assert (buffer[:, 0] == 0).all() and (buffer[:, 1] == 1).all()


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"replacement_rate": -0.1}, "replacement_rate"),
        ({"replacement_rate": 1.5}, "replacement_rate"),
        ({"maturity_threshold": -1}, "maturity_threshold"),
        ({"decay_rate": 1.0}, "decay_rate"),
        ({"decay_rate": -0.5}, "decay_rate"),
        ({"utility": "magnitude"}, "utility"),
        ({"init": "orthogonal"}, "init"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(kwargs, name):
    model = two_layer()
    with pytest.raises(ValueError, match=name):
        ContinualBackprop(model, torch.optim.SGD(model.parameters(), lr=0.1), **kwargs)


def test_a_model_with_nothing_to_manage_is_an_error():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="found no hidden units"):
        ContinualBackprop(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_step_without_a_recorded_training_forward_is_an_error():
    model = two_layer()
    cbp = ContinualBackprop(model, torch.optim.SGD(model.parameters(), lr=0.1))
    model.eval()
    model(torch.randn(2, 3))  # evaluation forwards are not recorded
    with pytest.raises(RuntimeError, match="no training forward recorded"):
        cbp.step()


def test_conv_channels_feeding_a_linear_through_flatten():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=0.25, maturity_threshold=0)
    train_step(model, optimizer, cbp, torch.randn(3, 1, 6, 6))
    unit = int(torch.nonzero(cbp.states["0"].age == 0)[0])
    assert (model[4].weight[:, unit * 16 : (unit + 1) * 16] == 0).all()
    assert model[0].bias[unit] == 0
    assert model[1].running_mean[unit] == 0 and model[1].running_var[unit] == 1


@pytest.mark.parametrize(
    ("shape", "dim"),
    [((7, 5), 0), ((7, 5), 1), ((3, 4, 2, 2), 1), ((600, 1000), 1), ((900, 700), 0)],
)
def test_chunked_weight_magnitude_sums_equal_the_direct_sum(shape, dim):
    from ponderlife.units import abs_sum_along

    tensor = torch.randn(shape, dtype=torch.float64)
    others = [d for d in range(len(shape)) if d != dim]
    torch.testing.assert_close(abs_sum_along(tensor, dim), tensor.abs().sum(dim=others))
