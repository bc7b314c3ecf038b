"""Split steps (issue 15): PonderNet runs the output and halting heads once over all
steps' states after the loop. Every unroll rule gives the outputs and gradients of the
per-step heads, and each head runs once per forward."""

import copy

import pytest
import torch
import torch.nn.functional as F

from ponderlife import (
    FixedDepth,
    GRUStep,
    PonderNet,
    ResidualMLPStep,
    RNNStep,
    SplitStep,
    fixed_depth_loss,
    ponder_loss,
)

STEPS = {
    "gru": lambda: GRUStep(8, 16, 1),
    "rnn-layer-norm": lambda: RNNStep(8, 16, 1, layer_norm=True),
    "residual-mlp": lambda: ResidualMLPStep(8, 16, 1, state_size=12),
}
# (mode, PonderNet settings): the training rules and every evaluation path.
MODES = {
    "train batch": (True, {}),
    "train per-sample": (True, {"training_unroll": "per_sample"}),
    "eval sample, early exit": (False, {"halting": "sample"}),
    "eval threshold, early exit": (False, {"halting": "threshold"}),
    "eval sample, full unroll": (False, {"halting": "sample", "early_exit": False}),
    "eval expected": (False, {"halting": "expected"}),
}


def bce(prediction, target):
    return F.binary_cross_entropy_with_logits(prediction.squeeze(-1), target, reduction="none")


def model(step_name: str, settings: dict) -> PonderNet:
    """A step whose halting head is scaled up, so samples halt at very different steps."""
    torch.manual_seed(0)
    step = STEPS[step_name]()
    with torch.no_grad():
        step.halting.weight.mul_(8)
    return PonderNet(step, max_steps=12, halting_seed=0, **settings)


def run(net: PonderNet, training: bool, x, y):
    net.train(training)
    net.zero_grad()
    output = net(x, generator=torch.Generator().manual_seed(3))
    loss = ponder_loss(output, y, bce, beta=0.01, lambda_p=0.2)
    loss.total.backward()
    return output, [p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("step_name", sorted(STEPS))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_batched_heads_give_the_per_step_heads_outputs_and_gradients(step_name, mode):
    training, settings = MODES[mode]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 8, generator=g)
    y = (x.sum(1) > 0).float()
    net = model(step_name, settings)
    assert isinstance(net.step, SplitStep) and net.step.batched_heads
    batched, batched_grads = run(net, training, x, y)
    net.step.batched_heads = False  # the instance falls back to forward per step
    per_step, per_step_grads = run(net, training, x, y)
    # The halting decisions agree exactly; the values to float rounding.
    assert torch.equal(batched.halting_step, per_step.halting_step)
    assert batched.p.shape == per_step.p.shape
    # Samples halt at very different steps.
    assert len(set(batched.expected_steps.round().tolist())) > 3
    for name in ("predictions", "lambdas", "p", "prediction", "expected_steps"):
        a, b = getattr(batched, name), getattr(per_step, name)
        assert torch.equal(a.isnan(), b.isnan()), name
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, equal_nan=True, msg=name)
    for a, b in zip(batched_grads, per_step_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert (batched.step_rows is None) == (per_step.step_rows is None)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("grad", [True, False])
def test_each_head_runs_once_per_forward_when_batched_with_gradient(batched, grad):
    net = model("gru", {})
    net.step.batched_heads = batched
    calls = {"output": 0, "halting": 0}
    for name in calls:

        def count(module, args, output, name=name):
            calls[name] += 1

        getattr(net.step, name).register_forward_hook(count)
    with torch.set_grad_enabled(grad):
        steps = net(torch.randn(32, 8)).p.shape[0]
    assert steps > 1
    # Batched: the halting head also runs per step, without gradient, for the decisions.
    # Without gradient the heads run per step: batching them would only add a copy.
    per_step = dict.fromkeys(calls, steps)
    assert calls == ({"output": 1, "halting": steps + 1} if batched and grad else per_step)


@pytest.mark.parametrize("step_name", sorted(STEPS))
def test_fixed_depth_runs_the_output_head_once_and_the_halting_head_never(step_name):
    torch.manual_seed(0)
    net = FixedDepth(STEPS[step_name](), num_steps=4)
    calls = {"output": 0, "halting": 0}
    for name in calls:

        def count(module, args, output, name=name):
            calls[name] += 1

        getattr(net.step, name).register_forward_hook(count)
    x = torch.randn(16, 8)
    y = (x.sum(1) > 0).float()
    results = {}
    for batched in (True, False):
        net.step.batched_heads = batched
        net.zero_grad()
        output = net(x)
        fixed_depth_loss(output, y, bce).total.backward()
        results[batched] = (
            output,
            [p.grad.clone() for p in net.parameters() if p.grad is not None],
        )
    assert calls == {"output": 1 + 4, "halting": 0 + 4}  # batched, then per step
    (a, grads_a), (b, grads_b) = results[True], results[False]
    torch.testing.assert_close(a.predictions, b.predictions, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a.prediction, b.prediction, rtol=1e-6, atol=1e-7)
    for g, h in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_unroll_rule_gives_the_cpus_results_on_the_gpu(mode):
    """The CUDA path of the batched heads and of the row selection (index_select,
    index_copy, scatter_reduce): the CPU's halting steps (the draws come from a CPU
    generator on either device), and its outputs and gradients to float rounding."""
    training, settings = MODES[mode]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 8, generator=g)
    y = (x.sum(1) > 0).float()
    cpu = model("gru", settings)
    gpu = copy.deepcopy(cpu).to("cuda")
    on_cpu, cpu_grads = run(cpu, training, x, y)
    on_gpu, gpu_grads = run(gpu, training, x.cuda(), y.cuda())
    assert on_gpu.prediction.device.type == "cuda"
    assert torch.equal(on_cpu.halting_step, on_gpu.halting_step.cpu())
    for name in ("predictions", "lambdas", "p", "prediction", "expected_steps"):
        a, b = getattr(on_cpu, name), getattr(on_gpu, name).cpu()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, equal_nan=True, msg=name)
    for a, b in zip(cpu_grads, gpu_grads, strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-4, atol=1e-5)
