"""PonderNet, ACT and fixed depth: unroll rules, halting decisions and output contracts."""

import math

import pytest
import torch
from torch import nn

from ponderlife import (
    ACT,
    FixedDepth,
    GRUStep,
    PonderNet,
    PonderOutput,
    ResidualMLPStep,
    RNNStep,
    StepFunction,
    StepOutput,
    TransformerStep,
    act_loss,
    fixed_depth_loss,
    ponder_loss,
)


class ConstantHalting(StepFunction):
    """λ_n fixed per step (a schedule), prediction = step index; counts samples computed."""

    def __init__(self, lambdas: list[float]):
        super().__init__()
        self.logits = torch.logit(torch.tensor(lambdas, dtype=torch.float64)).float()
        self.samples_computed = 0

    def initial_state(self, x):
        return torch.zeros(x.shape[0], 1)

    def forward(self, x, state):
        self.samples_computed += x.shape[0]
        n = int(state[0, 0]) if state.numel() else 0
        logit = self.logits[min(n, len(self.logits) - 1)].expand(x.shape[0])
        prediction = (state + 1.0).clone()
        return StepOutput(prediction, state + 1.0, logit)


def bce(prediction, target):
    return nn.functional.binary_cross_entropy_with_logits(
        prediction.squeeze(-1), target, reduction="none"
    )


def test_evaluation_samples_lambda_not_p():
    # λ_n = 0.5 at every step: halting at n has probability 0.5^n (geometric). Sampling
    # Bernoulli(p_n) instead would halt at step 2 with probability 0.5·0.25 = 0.125, not 0.25.
    model = PonderNet(ConstantHalting([0.5]), max_steps=30, halting="sample").eval()
    out = model(torch.zeros(20000, 1), generator=torch.Generator().manual_seed(0))
    frequencies = torch.bincount(out.halting_step, minlength=5)[1:5].float() / 20000
    expected = torch.tensor([0.5, 0.25, 0.125, 0.0625])
    # 4 standard errors at n = 20000 is ≤ 0.0142; the p_n-sampling bug is 0.125 off at n = 2.
    torch.testing.assert_close(frequencies, expected, atol=0.0142, rtol=0)


def test_threshold_halting_is_the_first_step_with_cumulative_p_above_q():
    # cumulative p: 0.2, 0.2 + 0.8·0.3 = 0.44, 0.44 + 0.56·0.5 = 0.72
    model = PonderNet(ConstantHalting([0.2, 0.3, 0.5]), halting="threshold", threshold=0.5)
    out = model.eval()(torch.zeros(3, 1))
    assert out.halting_step.tolist() == [3, 3, 3]
    model.threshold = 0.4
    assert model(torch.zeros(3, 1)).halting_step.tolist() == [2, 2, 2]


@pytest.mark.parametrize("halting", ["sample", "threshold"])
def test_early_exit_returns_the_full_unrolls_prediction_at_the_halting_step(halting):
    torch.manual_seed(0)
    model = PonderNet(RNNStep(6, 16, 3, halting_bias=-1.0), max_steps=12, halting=halting).eval()
    x = torch.randn(64, 6)
    with torch.no_grad():
        early = model(x, generator=torch.Generator().manual_seed(5))
        model.early_exit = False
        full = model(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(early.halting_step, full.halting_step)
    assert len(set(early.halting_step.tolist())) > 2  # the check means something
    torch.testing.assert_close(early.prediction, full.prediction)
    # Computed steps agree; skipped steps are NaN, and p sums to 1 within each sample's steps.
    computed = ~torch.isnan(early.lambdas)
    steps = torch.arange(1, early.lambdas.shape[0] + 1)[:, None]
    assert torch.equal(computed, steps <= early.halting_step)
    torch.testing.assert_close(early.lambdas[computed], full.lambdas[: len(steps)][computed])
    torch.testing.assert_close(early.p.sum(0), torch.ones(64))


def test_early_exit_stops_computing_halted_samples():
    step = ConstantHalting([0.99])
    model = PonderNet(step, max_steps=20, halting="threshold", threshold=0.5).eval()
    out = model(torch.zeros(8, 1))
    assert out.halting_step.tolist() == [1] * 8
    assert step.samples_computed == 8
    model.early_exit = False
    step.samples_computed = 0
    model(torch.zeros(8, 1))
    assert step.samples_computed == 8 * 20


def test_training_unroll_stops_once_every_sample_passes_one_minus_epsilon():
    # λ = 0.5: cumulative p after n steps is 1 − 0.5^n, above 0.95 first at n = 5.
    model = PonderNet(ConstantHalting([0.5]), max_steps=20, epsilon=0.05).train()
    assert model(torch.zeros(4, 1)).p.shape == (5, 4)
    model.epsilon = 0.2  # 1 − 0.5^n > 0.8 first at n = 3
    assert model(torch.zeros(4, 1)).p.shape == (3, 4)
    assert (
        PonderNet(ConstantHalting([0.01]), max_steps=7).train()(torch.zeros(2, 1)).p.shape[0] == 7
    )


def test_the_input_reaches_the_first_step():
    torch.manual_seed(0)
    for step in (RNNStep(4, 8, 2), GRUStep(4, 8, 2), ResidualMLPStep(4, 8, 2)):
        model = PonderNet(step, max_steps=3).train()
        out_a, out_b = model(torch.zeros(1, 4)), model(torch.ones(1, 4))
        assert not torch.allclose(out_a.predictions[0], out_b.predictions[0])
        assert not torch.allclose(out_a.lambdas[0], out_b.lambdas[0])


STEPS = {
    "rnn": lambda: (RNNStep(5, 8, 2), torch.randn(6, 5)),
    "gru": lambda: (GRUStep(5, 8, 2), torch.randn(6, 5)),
    "mlp": lambda: (ResidualMLPStep(5, 8, 2), torch.randn(6, 5)),
    "transformer_tokens": lambda: (
        TransformerStep(2, vocab_size=11, pad_token=0, d_model=16, nhead=2, dim_feedforward=32),
        torch.randint(0, 11, (6, 7)),
    ),
    "transformer_features": lambda: (
        TransformerStep(2, input_size=3, d_model=16, nhead=2, dim_feedforward=32),
        torch.randn(6, 7, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(STEPS))
@pytest.mark.parametrize("halting", ["sample", "threshold", "expected"])
def test_output_type_and_shapes_match_in_training_and_evaluation(name, halting):
    torch.manual_seed(0)
    step, x = STEPS[name]()
    model = PonderNet(step, max_steps=4, halting=halting)
    outputs = {}
    for training in (True, False):
        model.train(training)
        outputs[training] = model(x)
    train, evaluate = outputs[True], outputs[False]
    assert type(train) is type(evaluate) is PonderOutput
    per_step = {"predictions", "lambdas", "p", "log_p"}  # (N, B, ...): N may differ
    assert train.step_rows is evaluate.step_rows is None  # only a per-sample unroll has them
    for field in set(PonderOutput._fields) - {"step_rows"}:
        a, b = getattr(train, field), getattr(evaluate, field)
        assert a.dtype == b.dtype, field
        if field in per_step:
            assert a.shape[1:] == b.shape[1:], field
        else:
            assert a.shape == b.shape, field
    assert train.prediction.shape == (6, 2)
    assert train.halting_step.shape == (6,)
    loss = ponder_loss(
        train, torch.zeros(6, 2), lambda a, b: ((a - b) ** 2).sum(-1), beta=0.01, lambda_p=0.3
    )
    loss.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_expected_mode_answers_with_the_p_weighted_prediction():
    model = PonderNet(ConstantHalting([0.5]), max_steps=3, halting="expected").eval()
    out = model(torch.zeros(2, 1))
    # predictions are 1, 2, 3 with p = 0.5, 0.25, 0.25
    torch.testing.assert_close(out.prediction, torch.full((2, 1), 1.75))
    torch.testing.assert_close(out.expected_steps, torch.full((2,), 1.75))


def test_halting_bias_sets_the_initial_halting_probability():
    step = RNNStep(3, 4, 1, halting_bias=-3.0)
    torch.testing.assert_close(step.halting.bias, torch.tensor([-3.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_steps": 0}, r"max_steps must be in \[1, inf\)"),
        ({"epsilon": 0.0}, r"epsilon must be in \(0, 1\)"),
        ({"epsilon": 1.0}, r"epsilon must be in \(0, 1\)"),
        ({"halting": "bernoulli"}, "halting must be one of 'sample', 'threshold', 'expected'"),
        ({"threshold": 1.0}, r"threshold must be in \(0, 1\)"),
        ({"truncation": "drop"}, "truncation must be one of"),
    ],
)
def test_bad_pondernet_arguments_raise_with_the_allowed_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PonderNet(RNNStep(2, 3, 1), **kwargs)


def test_act_weights_use_the_remainder_and_sum_to_one():
    # h = 0.4 each step, ϵ = 0.01: Σh reaches 0.8 at n = 2 and 1.2 ≥ 0.99 at n = 3.
    model = ACT(ConstantHalting([0.4]), max_steps=10, epsilon=0.01)
    out = model(torch.zeros(3, 1))
    torch.testing.assert_close(out.weights[:, 0], torch.tensor([0.4, 0.4, 0.2]))
    assert out.halting_step.tolist() == [3, 3, 3]
    torch.testing.assert_close(out.remainder, torch.full((3,), 0.2))
    torch.testing.assert_close(out.ponder_cost, torch.full((3,), 3.2))
    torch.testing.assert_close(out.prediction, torch.full((3, 1), 0.4 * 1 + 0.4 * 2 + 0.2 * 3))


def test_act_forces_a_halt_at_max_steps_and_loss_adds_tau_times_ponder_cost():
    out = ACT(ConstantHalting([0.01]), max_steps=4)(torch.zeros(2, 1))
    assert out.halting_step.tolist() == [4, 4]
    torch.testing.assert_close(out.remainder, torch.full((2,), 0.97))
    loss = act_loss(out, torch.zeros(2, 1), lambda a, b: ((a - b) ** 2).sum(-1), tau=0.1)
    task = (out.prediction**2).sum(-1).mean()
    torch.testing.assert_close(loss.total, task + 0.1 * 4.97)


def test_act_per_sample_halting_and_gradient_through_the_remainder():
    torch.manual_seed(0)
    model = ACT(RNNStep(4, 8, 1, halting_bias=-1.0), max_steps=6)
    out = model(torch.randn(32, 4))
    torch.testing.assert_close(out.weights.sum(0), torch.ones(32))
    steps = torch.arange(1, out.weights.shape[0] + 1)[:, None]
    assert (out.weights[steps > out.halting_step] == 0).all()
    act_loss(out, torch.ones(32), bce, tau=0.01).total.backward()
    assert model.step.halting.weight.grad.abs().sum() > 0


def test_fixed_depth_runs_exactly_its_steps():
    step = ConstantHalting([0.9])
    out = FixedDepth(step, num_steps=4)(torch.zeros(3, 1))
    assert out.predictions.shape == (4, 3, 1)
    assert out.halting_step.tolist() == [4, 4, 4]
    torch.testing.assert_close(out.prediction, torch.full((3, 1), 4.0))
    loss = fixed_depth_loss(out, torch.zeros(3, 1), lambda a, b: ((a - b) ** 2).sum(-1))
    torch.testing.assert_close(loss.total, torch.tensor(16.0))
    with pytest.raises(ValueError, match="num_steps"):
        FixedDepth(step, num_steps=0)


def test_act_and_fixed_depth_validate_arguments():
    with pytest.raises(ValueError, match="tau"):
        out = ACT(ConstantHalting([0.5]))(torch.zeros(1, 1))
        act_loss(out, torch.zeros(1, 1), lambda a, b: a.sum(-1), tau=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        ACT(ConstantHalting([0.5]), epsilon=math.nan)


def test_model_loss_picks_each_models_own_loss():
    from ponderlife import (
        ACT,
        FixedDepth,
        PonderNet,
        RNNStep,
        act_loss,
        fixed_depth_loss,
        model_loss,
        ponder_loss,
    )

    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))

    def task(prediction, target):
        return torch.nn.functional.cross_entropy(prediction, target, reduction="none")

    def step():
        return RNNStep(4, 8, 2)

    ponder = PonderNet(step(), max_steps=4)(x)
    act = ACT(step(), max_steps=4)(x)
    fixed = FixedDepth(step(), num_steps=3)(x)
    assert model_loss(ponder, y, task, beta=0.1, lambda_p=0.3) == ponder_loss(
        ponder, y, task, beta=0.1, lambda_p=0.3
    )
    assert model_loss(act, y, task, tau=0.05) == act_loss(act, y, task, tau=0.05)
    assert model_loss(fixed, y, task) == fixed_depth_loss(fixed, y, task)
    with pytest.raises(TypeError, match="PonderOutput"):
        model_loss(torch.zeros(3), y, task)


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("step_class", [RNNStep, GRUStep])
def test_a_prepared_input_steps_exactly_like_the_cell_and_is_recorded_the_same(
    step_class, layer_norm
):
    """Cell steps compute their input projection once per unroll (prepare); every step
    after that must equal the cell's own update (up to rounding: at some sizes the cell's
    kernels round differently, by one unit in the last place), and plasticity methods must
    record the same activations either way."""
    from ponderlife import ContinualBackprop
    from ponderlife.steps import PreparedInput, prepare

    torch.manual_seed(0)
    step = step_class(5, 12, 2, layer_norm=layer_norm)
    x = torch.randn(9, 5)
    prepared = prepare(step, x)
    assert isinstance(prepared, PreparedInput) and prepared.shape == x.shape
    assert torch.equal(prepared[[0, 3]].x, x[[0, 3]])
    cbp = ContinualBackprop(step, torch.optim.SGD(step.parameters(), lr=0.0))
    raw_state = prepared_state = step.initial_state(x)
    for _ in range(6):
        raw = step(x, raw_state)
        ready = step(prepared, prepared_state)
        raw_state, prepared_state = raw.state, ready.state
        for a, b in zip(raw, ready, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    records = cbp.recorder.pop("cell")
    assert len(records) == 12  # both paths recorded, once per forward
    for first, second in zip(records[0::2], records[1::2], strict=True):
        torch.testing.assert_close(first, second, rtol=1e-6, atol=1e-6)


def test_unrolls_prepare_the_input_once_per_forward():
    from ponderlife import ACT, FixedDepth

    calls = []
    step = GRUStep(4, 8, 1)
    original = step.prepare

    def counting(x):
        calls.append(len(x))
        return original(x)

    step.prepare = counting
    x = torch.randn(6, 4)
    for model in (
        PonderNet(step, max_steps=5),
        ACT(step, max_steps=5),
        FixedDepth(step, num_steps=3),
    ):
        calls.clear()
        model(x)
        assert calls == [6]
