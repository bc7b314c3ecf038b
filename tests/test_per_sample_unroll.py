"""PonderNet's per-sample training unroll (issue 15): each sample stops at its own
1 − ε point, and the loss and its gradients stay within the ε mass of the paper's batch
rule."""

import copy

import pytest
import torch
import torch.nn.functional as F

from ponderlife import (
    ContinualBackprop,
    GRUStep,
    PonderNet,
    RNNStep,
    ponder_loss,
    ponder_step_weights,
    reach_probabilities,
)


def bce(prediction, target):
    return F.binary_cross_entropy_with_logits(prediction.squeeze(-1), target, reduction="none")


def spread_model(step_class, unroll, epsilon=0.05, seed=0):
    """A step whose halting head is scaled up, so samples stop at very different steps."""
    torch.manual_seed(seed)
    step = step_class(8, 16, 1)
    with torch.no_grad():
        step.halting.weight.mul_(8)
    return PonderNet(step, max_steps=20, epsilon=epsilon, training_unroll=unroll, halting_seed=0)


def batch_data(seed=1, size=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 8, generator=g)
    return x, (x.sum(1) > 0).float()


def loss_and_gradient(model, x, y):
    output = model(x)
    loss = ponder_loss(output, y, bce, beta=0.01, lambda_p=0.2, reduction="none")
    loss.total.mean().backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    return output, loss, gradient


def computed_steps(output):
    return (~torch.isnan(output.lambdas)).sum(0)


@pytest.mark.parametrize("epsilon", [0.05, 0.01])
@pytest.mark.parametrize("step_class", [GRUStep, RNNStep])
def test_loss_and_gradients_stay_within_the_epsilon_mass_of_the_batch_rule(step_class, epsilon):
    x, y = batch_data()
    batch_out, batch_loss, batch_grad = loss_and_gradient(
        spread_model(step_class, "batch", epsilon), x, y
    )
    out, loss, grad = loss_and_gradient(spread_model(step_class, "per_sample", epsilon), x, y)
    lengths = computed_steps(out)
    assert lengths.min() < lengths.max() == batch_out.p.shape[0]  # samples did stop apart
    # The mass the batch rule puts after a sample's own stop: below ε by construction.
    steps = torch.arange(1, batch_out.p.shape[0] + 1)[:, None]
    leftover = (batch_out.p.detach() * (steps > lengths)).sum(0)
    assert (leftover < epsilon).all()
    # Reconstruction: the two differ only in where that mass sits, so per sample the
    # difference is at most leftover · (largest per-step loss).
    per_step = torch.stack([bce(p, y) for p in batch_out.predictions]).detach()
    difference = (loss.reconstruction - batch_loss.reconstruction).abs().detach()
    assert (difference <= leftover * per_step.max(0).values + 1e-6).all()
    # The whole loss and the gradient: within ε (relative for the gradient).
    assert abs(float(loss.total.mean() - batch_loss.total.mean())) < epsilon * 0.1
    assert float((grad - batch_grad).norm() / batch_grad.norm()) < epsilon
    assert torch.isfinite(grad).all()


def test_each_sample_stops_at_its_own_one_minus_epsilon_point():
    x, _ = batch_data()
    model = spread_model(GRUStep, "per_sample")
    computed = []
    original = model.step.advance  # the GRU step splits its forward: advance, then heads

    def counting(inputs, state):
        computed.append(inputs.shape[0])
        return original(inputs, state)

    model.step.advance = counting
    out = model(x)
    lengths = computed_steps(out)
    # Own stop: the first n with P(not halted after n) < ε, from the computed λ.
    logits = torch.logit(out.lambdas.detach().nan_to_num(0.5))
    survival = torch.cumsum(F.logsigmoid(-logits), 0).exp()
    steps = torch.arange(1, out.p.shape[0] + 1)[:, None]
    below = (survival < 0.05) & (steps <= lengths)
    first = torch.where(below.any(0), below.int().argmax(0) + 1, torch.full_like(lengths, 20))
    assert torch.equal(first, lengths)
    # Stopped samples leave the working batch once they are a quarter of it: the step
    # function computes each sample's own steps and at most a third more in all.
    assert int(lengths.sum()) <= sum(computed) <= 4 / 3 * int(lengths.sum())
    assert sum(computed) < 0.8 * out.p.shape[0] * x.shape[0]
    assert [len(rows) for rows in out.step_rows] == computed
    p = out.p.detach()
    assert torch.allclose(p.sum(0), torch.ones(len(x)))
    assert (p[steps > lengths] == 0).all() and (out.predictions[steps > lengths] == 0).all()
    assert torch.isnan(out.lambdas[steps > lengths]).all()
    assert ((out.halting_step >= 1) & (out.halting_step <= lengths)).all()


def test_halting_steps_match_the_batch_rule_where_both_computed():
    """The same uniforms decide the halting step; a sample's halt before its own stop is
    the same in both unrolls."""
    x, _ = batch_data(seed=3)
    batch_out = spread_model(GRUStep, "batch")(x)
    out = spread_model(GRUStep, "per_sample")(x)
    lengths = computed_steps(out)
    halted_early = batch_out.halting_step <= lengths
    assert halted_early.sum() > 10
    assert torch.equal(out.halting_step[halted_early], batch_out.halting_step[halted_early])


def test_continual_backprop_reads_the_shrinking_forwards_with_their_reach():
    """Forwards on fewer samples carry exactly the samples with non-zero reach: the
    utilities equal those from full-batch records of the same steps with the same weights."""
    x, _ = batch_data()
    per_sample = spread_model(GRUStep, "per_sample")
    full = copy.deepcopy(per_sample)
    full.training_unroll = "batch"
    cbp_a = ContinualBackprop(per_sample, torch.optim.SGD(per_sample.parameters(), lr=0.0))
    cbp_b = ContinualBackprop(full, torch.optim.SGD(full.parameters(), lr=0.0))
    out = per_sample(x)
    full_out = full(x)
    weights = ponder_step_weights(out)  # one vector per forward, 0 after a sample's stop
    assert [len(w) for w in weights] != [len(x)] * len(weights)  # the forwards shrank
    padded = torch.zeros(full_out.p.shape[0], len(x))
    padded[: out.p.shape[0]] = reach_probabilities(out)
    cbp_a.step(step_weights=weights)
    cbp_b.step(step_weights=padded)
    for key, state in cbp_a.states.items():
        torch.testing.assert_close(state.mean, cbp_b.states[key].mean)
        torch.testing.assert_close(state.utility, cbp_b.states[key].utility)


def test_weights_that_do_not_match_a_shrunken_forward_are_an_error():
    x, _ = batch_data()
    model = spread_model(GRUStep, "per_sample")
    cbp = ContinualBackprop(model, torch.optim.SGD(model.parameters(), lr=0.0))
    out = model(x)
    with pytest.raises(ValueError, match=r"step_weights of shape \(\d+, 64\) do not match"):
        cbp.step(step_weights=reach_probabilities(out))  # (N, B) for forwards that shrank
    cbp.recorder.clear()
    out = model(x)
    weights = ponder_step_weights(out)
    with pytest.raises(ValueError, match=r"step_weights of sizes .* do not match"):
        cbp.step(step_weights=weights[:-1])


@pytest.mark.parametrize("experiment", ["parity", "stream"])
def test_both_experiments_train_with_the_per_sample_unroll(experiment, observe):
    from tiny_configs import PARITY, STREAM

    from experiments import parity, stream

    module, tiny = {"parity": (parity, PARITY), "stream": (stream, STREAM)}[experiment]
    observe(module.ex)
    run = module.ex.run(config_updates={**tiny, "training_unroll": "per_sample"})
    assert run.status == "COMPLETED"
    assert run.config["training_unroll"] == "per_sample"


def test_training_unroll_is_validated():
    with pytest.raises(ValueError, match="training_unroll"):
        PonderNet(GRUStep(2, 4, 1), training_unroll="each")
