"""Plasticity baselines: each update equals its formula; ReDo recycles only dormant units."""

import math

import pytest
import torch
from torch import nn

from ponderlife.baselines import L2, UPGD, FullReset, HeadReset, L2Init, ReDo, ShrinkPerturb


def small_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))


def snapshot(model):
    return [p.detach().clone() for p in model.parameters()]


def test_l2_shrinks_every_weight_and_penalty_is_half_the_squared_norm():
    model = small_net()
    before = snapshot(model)
    regulariser = L2(model, weight_decay=0.1)
    regulariser.step()
    for p, q in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p, 0.9 * q)
    expected = 0.05 * sum(float((p.detach() ** 2).sum()) for p in model.parameters())
    assert regulariser.penalty().item() == pytest.approx(expected)


def test_shrink_and_perturb_shrinks_then_adds_noise_of_the_given_scale():
    model = nn.Linear(200, 100)
    before = snapshot(model)
    ShrinkPerturb(model, shrink=0.5, noise_std=0.0).step()
    torch.testing.assert_close(model.weight, 0.5 * before[0])
    before = snapshot(model)
    ShrinkPerturb(model, shrink=0.0, noise_std=0.01, generator=torch.Generator()).step()
    noise = model.weight - before[0]
    assert noise.std().item() == pytest.approx(0.01, rel=0.05)


def test_l2_init_pulls_weights_towards_their_initial_values():
    model = small_net()
    regulariser = L2Init(model, strength=0.25)
    initial = snapshot(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    regulariser.step()
    for p, p0 in zip(model.parameters(), initial, strict=True):
        torch.testing.assert_close(p, p0 + 0.75)
    expected = 0.5 * 0.25 * sum(p.numel() * 0.75**2 for p in model.parameters())
    assert regulariser.penalty().item() == pytest.approx(expected)


def test_redo_recycles_only_tau_dormant_units_every_f_steps():
    model = small_net()
    with torch.no_grad():
        model[0].bias[2] = -100.0  # unit 2 never fires: τ-dormant
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    redo = ReDo(model, optimizer, tau=0.1, every=3)
    before = None
    for step in range(1, 4):
        optimizer.zero_grad()
        model(torch.randn(16, 3)).pow(2).mean().backward()
        optimizer.step()
        before = snapshot(model)
        recycled = redo.step()
        assert recycled == {"0": 0 if step < 3 else 1}
    assert model[0].bias[2] == 0
    assert (model[2].weight[:, 2] == 0).all()
    assert not torch.equal(model[0].weight[2], before[0][2])
    others = [0, 1, 3, 4, 5]
    assert torch.equal(model[0].weight[others], before[0][others])
    assert torch.equal(model[2].weight[:, others], before[2][:, others])
    assert (optimizer.state[model[0].weight]["exp_avg"][2] == 0).all()
    assert (optimizer.state[model[2].weight]["exp_avg_sq"][:, 2] == 0).all()
    assert redo.replaced == {"0": 1}


def test_upgd_update_equals_a_transcription_of_its_formula():
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(3, 2))
    optimizer = UPGD([weight], lr=0.1, weight_decay=0.01, beta_utility=0.9, sigma=0.0)
    utility = torch.zeros(3, 2)
    positive_max_seen = False
    for t in range(1, 7):
        target = torch.randn(3, 2)
        loss = ((weight - target) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        grad, value = weight.grad.clone(), weight.detach().clone()
        utility = 0.9 * utility + 0.1 * (-grad * value)
        largest = float(utility.max())
        positive_max_seen |= largest > 0
        scale = 1 / largest if largest > 0 else 0.0
        gate = torch.sigmoid(utility / (1 - 0.9**t) * scale)
        expected = value * (1 - 0.1 * 0.01) - 0.1 * grad * (1 - gate)
        optimizer.step()
        torch.testing.assert_close(weight.detach(), expected)
    assert positive_max_seen


def test_upgd_without_positive_utility_gates_everything_at_one_half():
    weight = nn.Parameter(torch.zeros(400, 50))
    optimizer = UPGD([weight], lr=1.0, weight_decay=0.0, sigma=0.5, generator=torch.Generator())
    weight.grad = torch.zeros_like(weight)
    optimizer.step()  # utility −g·θ is 0 everywhere: gate 1/2, so the noise std is 0.5·0.5
    assert torch.isfinite(weight).all()
    assert weight.std().item() == pytest.approx(0.25, rel=0.05)


def test_head_and_full_reset_reinitialise_and_drop_optimizer_state():
    model = small_net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).pow(2).mean().backward()
        optimizer.step()
    trained = snapshot(model)
    HeadReset(model[2], optimizer).task_boundary()
    assert torch.equal(model[0].weight, trained[0])
    assert not torch.equal(model[2].weight, trained[2])
    assert model[2].weight.abs().max() <= 1 / math.sqrt(6)
    assert model[2].weight not in optimizer.state and model[0].weight in optimizer.state
    FullReset(model, optimizer).task_boundary()
    assert not torch.equal(model[0].weight, trained[0])
    assert len(optimizer.state) == 0


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda m: L2(m, weight_decay=-1.0), "weight_decay"),
        (lambda m: ShrinkPerturb(m, shrink=2.0), "shrink"),
        (lambda m: ShrinkPerturb(m, noise_std=-1.0), "noise_std"),
        (lambda m: L2Init(m, strength=-0.1), "strength"),
        (lambda m: ReDo(m, None, tau=-1.0), "tau"),
        (lambda m: ReDo(m, None, every=0), "every"),
        (lambda m: UPGD(m.parameters(), beta_utility=1.0), "beta_utility"),
        (lambda m: UPGD(m.parameters(), sigma=-1.0), "sigma"),
    ],
)
def test_invalid_arguments_name_the_argument(build, name):
    with pytest.raises(ValueError, match=name):
        build(small_net())


def test_l2_init_moves_its_initial_weights_with_to():
    model = nn.Linear(3, 2)
    method = L2Init(model, strength=0.5)
    assert method.to(torch.float64) is method  # any .to() argument a tensor accepts
    assert all(p0.dtype == torch.float64 for p0 in method.initial)


def test_an_unrestricted_recorder_also_records_evaluation_forwards():
    from ponderlife.units import ActivationRecorder, find_unit_layers

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    layers = find_unit_layers(model)
    training_only = ActivationRecorder(layers)
    every = ActivationRecorder(layers, training_only=False)
    model.eval()
    model(torch.randn(5, 3))
    assert training_only.pop("0") == []
    (record,) = every.pop("0")
    assert record.shape == (5, 4)
