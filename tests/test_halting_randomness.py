"""PonderNet's "sample" halting draws from generators of its own, so evaluation settings
never shift a run's other randomness and early exit halts like the full unroll."""

import copy
import io
import itertools

import pytest
import torch
import torch.nn.functional as F

from ponderlife import ContinualBackprop, PonderNet, RNNStep, ponder_loss, reach_probabilities
from ponderlife.baselines import ShrinkPerturb


def tiny_model(halting_bias: float = -1.0, **kwargs) -> PonderNet:
    return PonderNet(RNNStep(8, 16, 1, halting_bias=halting_bias), max_steps=6, **kwargs)


def squared_error(prediction, target):
    return F.mse_loss(prediction.squeeze(-1), target, reduction="none")


def weights_only(model: PonderNet) -> dict:
    """``model``'s state_dict without the generators' states (as saved before they existed)."""
    return {k: v for k, v in model.state_dict().items() if k != "_extra_state"}


def train_with_evaluations(halting: str, early_exit: bool):
    """Four updates, each followed by continual backprop (new weights from the global RNG),
    shrink-and-perturb (noise from the global RNG) and an evaluation forward."""
    torch.manual_seed(0)
    model = tiny_model(halting_bias=0.0, halting=halting, early_exit=early_exit)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cbp = ContinualBackprop(model, optimizer, replacement_rate=0.5, maturity_threshold=0)
    perturb = ShrinkPerturb(model, noise_std=1e-2)
    data = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(16, 8, generator=data), torch.randn(16, generator=data)
        model.train()
        output = model(x)
        loss = ponder_loss(output, y, squared_error, beta=0.01, lambda_p=0.3).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        cbp.step(step_weights=reach_probabilities(output))
        perturb.step()
        model.eval()
        with torch.no_grad():
            # A small batch, so early exit often stops before max_steps.
            model(torch.randn(4, 8, generator=data))
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    # Which units were replaced, and when: their ages and utilities.
    weights.update({f"cbp.{name}": value.clone() for name, value in cbp.state_dict().items()})
    return weights, cbp.replacements


def test_training_is_the_same_whatever_the_evaluation_halting_and_early_exit():
    runs = {
        (halting, early_exit): train_with_evaluations(halting, early_exit)
        for halting, early_exit in itertools.product(("sample", "threshold"), (True, False))
    }
    reference_weights, reference_replacements = runs["sample", True]
    assert sum(reference_replacements.values()) > 0  # the global RNG was drawn from
    for setting, (weights, replacements) in runs.items():
        assert replacements == reference_replacements, setting
        for name, value in weights.items():
            assert torch.equal(value, reference_weights[name]), (setting, name)


def test_early_exit_and_full_unroll_halt_alike_over_consecutive_batches():
    def outputs(early_exit: bool) -> list:
        torch.manual_seed(0)
        model = tiny_model(halting_bias=0.0, halting="sample", early_exit=early_exit).eval()
        data = torch.Generator().manual_seed(2)
        with torch.no_grad():
            return [model(torch.randn(8, 8, generator=data)) for _ in range(5)]

    early, full = outputs(early_exit=True), outputs(early_exit=False)
    for batch, (a, b) in enumerate(zip(early, full, strict=True)):
        assert torch.equal(a.halting_step, b.halting_step), batch
    # The check means something: halting steps vary, and some batch stopped before
    # max_steps with early exit (where the old per-step draws fell out of step).
    assert len(torch.cat([out.halting_step for out in early]).unique()) > 2
    assert any(out.predictions.shape[0] < 6 for out in early[:-1])


@pytest.mark.parametrize("halting", ["sample", "threshold", "expected"])
@pytest.mark.parametrize("early_exit", [True, False])
def test_forwards_leave_the_global_rng_untouched(halting, early_exit):
    model = tiny_model(halting=halting, early_exit=early_exit)
    x = torch.randn(8, 8)
    before = torch.get_rng_state()
    model.train()(x)
    with torch.no_grad():
        model.eval()(x)
    assert torch.equal(torch.get_rng_state(), before)


def test_training_and_evaluation_draw_from_separate_generators():
    # Evaluation forwards in between do not change what training draws next.
    x = torch.randn(64, 8)
    a, b = tiny_model(halting_seed=3), tiny_model(halting_seed=3)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.eval()(x)
        b.eval()(x)
    assert torch.equal(a.train()(x).halting_step, b.train()(x).halting_step)


def test_halting_seed_decides_the_draws():
    x = torch.randn(256, 8)
    torch.manual_seed(4)
    default = tiny_model().eval()
    same, other = tiny_model(halting_seed=4).eval(), tiny_model(halting_seed=5).eval()
    for model in (same, other):
        model.load_state_dict(weights_only(default))
    with torch.no_grad():
        steps = [model(x).halting_step for model in (default, same, other)]
    assert default.halting_seed == 4
    assert torch.equal(steps[0], steps[1])
    assert not torch.equal(steps[0], steps[2])
    with pytest.raises(ValueError, match=r"halting_seed must be in \[0, inf\)"):
        tiny_model(halting_seed=-1)


def test_an_explicit_generator_drives_the_draws_and_spares_the_models_own():
    model = tiny_model(halting_seed=0).eval()
    twin = copy.deepcopy(model)
    x = torch.randn(64, 8)
    with torch.no_grad():
        first = model(x, generator=torch.Generator().manual_seed(9)).halting_step
        again = model(x, generator=torch.Generator().manual_seed(9)).halting_step
        assert torch.equal(first, again)
        assert torch.equal(model(x).halting_step, twin(x).halting_step)


def next_halting_steps(model: PonderNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The next halting steps of a training and an evaluation forward."""
    steps = [model.train()(x).halting_step]
    with torch.no_grad():
        steps.append(model.eval()(x).halting_step)
    return steps


def test_state_dict_round_trip_restores_the_generators():
    x = torch.randn(64, 8)
    model = tiny_model(halting_seed=0)
    next_halting_steps(model, x)  # advance both generators
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    restored = tiny_model(halting_seed=1)
    restored.load_state_dict(state)
    for a, b in zip(next_halting_steps(model, x), next_halting_steps(restored, x), strict=True):
        assert torch.equal(a, b)


def test_a_state_dict_without_generator_states_still_loads():
    model, fresh = tiny_model(halting_seed=0), tiny_model(halting_seed=0)
    next_halting_steps(model, torch.randn(4, 8))
    old = weights_only(model)
    fresh.load_state_dict(old)  # strict
    for name, value in model.named_parameters():
        assert torch.equal(value, fresh.get_parameter(name))
    # The generators stay as seeded.
    assert torch.equal(fresh.get_extra_state(), tiny_model(halting_seed=0).get_extra_state())
    assert not torch.equal(fresh.get_extra_state(), model.get_extra_state())


def test_a_deep_copy_continues_the_draws_independently():
    x = torch.randn(64, 8)
    model = tiny_model(halting_seed=0)
    next_halting_steps(model, x)
    twin = copy.deepcopy(model)
    expected = next_halting_steps(model, x)
    for a, b in zip(expected, next_halting_steps(twin, x), strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_draws_do_not_depend_on_the_device():
    x = torch.randn(64, 8)
    model = tiny_model(halting_seed=0)
    on_gpu = copy.deepcopy(model).to("cuda")
    cpu, gpu = next_halting_steps(model, x), next_halting_steps(on_gpu, x.cuda())
    for a, b in zip(cpu, gpu, strict=True):
        assert torch.equal(a, b.cpu())
