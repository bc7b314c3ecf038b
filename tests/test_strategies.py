"""The Avalanche adapters: plugins, PonderTemplate, metrics and strategy checkpoints."""

import copy
import math

import pytest
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics, loss_metrics
from avalanche.training import EWC, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from ponderlife import AdamPerElement, PonderNet, RNNStep, ponder_loss, reach_probabilities
from strategies import (
    ContinualBackpropPlugin,
    DifficultyMetrics,
    FullResetPlugin,
    HeadResetPlugin,
    L2InitPlugin,
    L2Plugin,
    PlasticityMetrics,
    PonderingMetrics,
    PonderTemplate,
    ReDoPlugin,
    ShrinkPerturbPlugin,
    WeightClippingPlugin,
)
from strategies.checkpoint import load_strategy, save_strategy
from strategies.datasets import tagged_dataset
from strategies.template import per_sample_cross_entropy

FEATURES, CLASSES, SAMPLES, BATCH = 8, 2, 64, 16


def stream(experiences=3, seed=0):
    """Linearly separable experiences whose rule changes; difficulty tags 1..3."""
    generator = torch.Generator().manual_seed(seed)

    def experience(index, count):
        x = torch.randn(count, FEATURES, generator=generator)
        y = (x[:, index % FEATURES] > 0).long()
        difficulty = torch.randint(1, 4, (count,), generator=generator)
        return tagged_dataset(x, y, difficulty)

    train = [experience(i, SAMPLES) for i in range(experiences)]
    test = [experience(i, 32) for i in range(experiences)]
    return benchmark_from_datasets(train=train, test=test)


def mlp():
    return nn.Sequential(
        nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, CLASSES)
    )


def pondernet():
    return PonderNet(RNNStep(FEATURES, 16, CLASSES), max_steps=5)


def evaluator(*extra):
    return EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        loss_metrics(experience=True),
        forgetting_metrics(experience=True),
        *extra,
        loggers=[],
    )


def naive(model, plugins, lr=0.1, **kwargs):
    """Avalanche's Naive with SGD on ``model``, the test evaluator and ``plugins``."""
    return Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        train_mb_size=BATCH,
        plugins=plugins,
        evaluator=kwargs.pop("evaluator", evaluator()),
        **kwargs,
    )


def run_stream(strategy, benchmark):
    results = []
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results.append(strategy.eval(benchmark.test_stream))
    return results


class CallbackRecorder(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __getattribute__(self, name):
        attribute = super().__getattribute__(name)
        if name.startswith(("before_", "after_")):

            def record(*args, **kwargs):
                self.seen.append(name)
                return attribute(*args, **kwargs)

            return record
        return attribute


def test_a_mock_plugin_sees_every_training_and_eval_callback_of_the_ponder_template():
    torch.manual_seed(0)
    recorder = CallbackRecorder()
    model = pondernet()
    strategy = PonderTemplate(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        train_mb_size=BATCH,
        plugins=[recorder],
        evaluator=evaluator(),
    )
    benchmark = stream(1)
    strategy.train(benchmark.train_stream[0])
    strategy.eval(benchmark.test_stream)
    expected = {
        "before_training",
        "before_training_exp",
        "before_training_epoch",
        "before_training_iteration",
        "before_forward",
        "after_forward",
        "before_backward",
        "after_backward",
        "before_update",
        "after_update",
        "after_training_iteration",
        "after_training_epoch",
        "after_training_exp",
        "after_training",
        "before_eval",
        "before_eval_exp",
        "before_eval_forward",
        "after_eval_forward",
        "after_eval_exp",
        "after_eval",
    }
    assert expected <= set(recorder.seen)
    assert recorder.seen.count("after_update") == SAMPLES // BATCH


@pytest.mark.parametrize("strategy_class", [Naive, EWC, Replay, LwF])
def test_cbp_plugin_replaces_units_at_the_configured_rate_in_avalanche_strategies(strategy_class):
    torch.manual_seed(0)
    model = mlp()
    rate = 0.05
    plugin = ContinualBackpropPlugin(replacement_rate=rate, maturity_threshold=0)
    extra = {
        EWC: {"ewc_lambda": 1.0},
        Replay: {"mem_size": 32},
        LwF: {"alpha": 1.0, "temperature": 2.0},
    }.get(strategy_class, {})
    strategy = strategy_class(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=BATCH,
        plugins=[plugin],
        evaluator=evaluator(),
        **extra,
    )
    benchmark = stream(3)
    results = run_stream(strategy, benchmark)
    updates = strategy.clock.train_iterations
    # every unit is eligible from the first step: ⌊ρ · 16 · t⌋ replacements per layer
    assert plugin.replacements == {"0": math.floor(rate * 16 * updates)} | {
        "2": math.floor(rate * 16 * updates)
    }
    final = results[-1]
    assert 0.0 <= final["Top1_Acc_Stream/eval_phase/test_stream"] <= 1.0
    assert math.isfinite(final["ExperienceForgetting/eval_phase/test_stream/Exp000"])


def test_cbp_plugin_survives_avalanche_resetting_the_optimizer_state():
    torch.manual_seed(0)
    model = mlp()
    optimizer = AdamPerElement(model.parameters(), lr=1e-2)
    plugin = ContinualBackpropPlugin(replacement_rate=0.05, maturity_threshold=0)
    strategy = Naive(
        model=model,
        optimizer=optimizer,
        train_mb_size=BATCH,
        plugins=[plugin],
        evaluator=evaluator(),
    )
    parameters = [id(p) for p in model.parameters()]
    benchmark = stream(2)
    run_stream(strategy, benchmark)
    assert [id(p) for p in model.parameters()] == parameters  # never swapped
    assert plugin.core.optimizer is strategy.optimizer
    assert sum(plugin.replacements.values()) > 0
    # the state Avalanche installed is the one continual backprop resets
    assert all(p in optimizer.state for p in model.parameters())


def test_cbp_plugin_ignores_evaluation_forwards():
    torch.manual_seed(0)
    model = mlp()
    plugin = ContinualBackpropPlugin(replacement_rate=0.0)
    strategy = naive(model, [plugin], lr=0.1)
    benchmark = stream(1)
    strategy.train(benchmark.train_stream[0])
    ages = {k: s.age.clone() for k, s in plugin.core.states.items()}
    strategy.eval(benchmark.test_stream)
    assert all(plugin.core.recorder.pop(layer.name) == [] for layer in plugin.core.layers)
    assert all(torch.equal(ages[k], s.age) for k, s in plugin.core.states.items())
    assert int(next(iter(ages.values()))[0]) == SAMPLES // BATCH


def test_cbp_plugin_rejects_bad_hyperparameters_when_created():
    with pytest.raises(ValueError, match="replacement_rate"):
        ContinualBackpropPlugin(replacement_rate=-1.0)
    with pytest.raises(ValueError, match="decay_rate"):
        ContinualBackpropPlugin(decay_rate=1.0)


def test_ponder_template_returns_logits_and_trains_with_the_ponder_loss():
    torch.manual_seed(0)
    model = pondernet()
    seen = {}

    class Check(SupervisedPlugin):
        def after_forward(self, strategy, **kwargs):
            seen["output"] = strategy.mb_output
            seen["ponder"] = strategy.ponder_output

        def before_backward(self, strategy, **kwargs):
            seen["loss"] = strategy.loss.detach().clone()
            seen["y"] = strategy.mb_y

    strategy = PonderTemplate(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        beta=0.05,
        lambda_p=0.3,
        train_mb_size=BATCH,
        plugins=[Check()],
        evaluator=evaluator(),
    )
    benchmark = stream(1)
    strategy.train(benchmark.train_stream[0])
    assert seen["output"].shape == (BATCH, CLASSES)
    expected = ponder_loss(
        seen["ponder"], seen["y"], per_sample_cross_entropy, beta=0.05, lambda_p=0.3
    ).total
    assert torch.allclose(seen["loss"].reshape(()), expected.detach())
    results = strategy.eval(benchmark.test_stream)
    assert 0.0 <= results["Top1_Acc_Stream/eval_phase/test_stream"] <= 1.0


def test_ponder_template_rejects_models_it_cannot_train_and_bad_arguments():
    with pytest.raises(TypeError, match="PonderNet"):
        PonderTemplate(model=mlp(), optimizer=torch.optim.SGD(mlp().parameters(), lr=0.1))
    model = pondernet()
    with pytest.raises(ValueError, match="lambda_p"):
        PonderTemplate(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), lambda_p=0.0
        )
    with pytest.raises(ValueError, match="eval_halting"):
        PonderTemplate(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), eval_halting="x"
        )


def train_capturing_step_weights(model):
    """One experience with a frozen model (lr 0) and a CBP plugin of decay 0; returns the
    strategy, the plugin, and the step weights and recorded cell activations of the last
    update (captured before the plugin's step consumes them)."""
    plugin = ContinualBackpropPlugin(replacement_rate=0.0, decay_rate=0.0)
    captured = {}

    class Capture(SupervisedPlugin):
        def after_update(self, strategy, **kwargs):
            captured["weights"] = strategy.unit_step_weights()
            captured["records"] = [r.clone() for r in plugin.core.recorder._records["step.cell"]]

    strategy = PonderTemplate(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        train_mb_size=BATCH,
        plugins=[Capture(), plugin],
        evaluator=evaluator(),
    )
    strategy.train(stream(1).train_stream[0])
    return strategy, plugin, captured["weights"], captured["records"]


def test_cbp_plugin_weights_ponder_steps_by_reach_probability():
    torch.manual_seed(0)
    strategy, plugin, weights, records = train_capturing_step_weights(pondernet())
    assert torch.allclose(weights, reach_probabilities(strategy.ponder_output))
    assert weights.shape[0] == len(records)
    # decay 0: the running mean is exactly this step's reach-weighted mean activation
    stacked = torch.stack(records)  # (N, B, units)
    normalised = weights / weights.sum()
    expected = (normalised.unsqueeze(-1) * stacked).sum((0, 1))
    assert torch.allclose(plugin.core.states["step__cell"].mean, expected, atol=1e-6)


def test_cbp_plugin_follows_the_per_sample_unroll_whose_forwards_shrink():
    """PonderNet's per-sample training unroll runs the step function on fewer rows as
    samples stop; the plugin weighs each row of each forward by its reach."""
    torch.manual_seed(0)
    step = RNNStep(FEATURES, 16, CLASSES)
    with torch.no_grad():
        step.halting.weight.mul_(20)  # samples stop at different steps
    model = PonderNet(step, max_steps=5, epsilon=0.2, training_unroll="per_sample")
    _, plugin, weights, records = train_capturing_step_weights(model)
    sizes = [len(r) for r in records]
    assert [len(w) for w in weights] == sizes and min(sizes) < max(sizes) == BATCH
    total = sum(float(w.sum()) for w in weights)
    expected = sum((w[:, None] * r).sum(0) for w, r in zip(weights, records, strict=True))
    mean = plugin.core.states["step__cell"].mean
    assert torch.allclose(mean, expected / total, atol=1e-6)


def test_pondering_and_difficulty_metrics_are_emitted_per_experience():
    torch.manual_seed(0)
    model = pondernet()
    strategy = PonderTemplate(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        train_mb_size=BATCH,
        evaluator=evaluator(PonderingMetrics(), DifficultyMetrics(), PlasticityMetrics()),
    )
    benchmark = stream(2)
    strategy.train(benchmark.train_stream[0])
    train_metrics = strategy.evaluator.get_last_metrics()
    results = strategy.eval(benchmark.test_stream)
    distribution = ("expected_steps", "halting_entropy", "kl")
    for phase in ("train_phase/train_stream", "eval_phase/test_stream"):
        for key in ("halting_step_mean", "halting_step_p90", *distribution):
            name = f"Ponder/{key}/{phase}/Exp000"
            value = train_metrics.get(name, results.get(name))
            if phase.startswith("eval") and key in distribution:
                # early exit truncates each sample's p at its halt: not emitted
                assert value is None, name
                continue
            assert value is not None and math.isfinite(value), name
            assert isinstance(value, float)
    mean = results["Ponder/halting_step_mean/eval_phase/test_stream/Exp001"]
    assert 1.0 <= mean <= 5.0
    levels = [
        results[f"Difficulty/halting_step/d{k}/eval_phase/test_stream/Exp001"] for k in (1, 2, 3)
    ]
    assert all(1.0 <= v <= 5.0 for v in levels)
    assert -1.0 <= results["Difficulty/halting_step_spearman/eval_phase/test_stream/Exp001"] <= 1
    for key in (
        "dead_fraction",
        "dormant_fraction",
        "effective_rank",
        "approximate_rank",
        "stable_rank",
        "weight_magnitude",
        "gradient_norm",
        "feature_norm",
    ):
        assert math.isfinite(train_metrics[f"Plasticity/{key}/train_phase/train_stream/Exp000"])


def test_plasticity_metrics_count_units_replaced_and_dead_units_on_the_probe():
    torch.manual_seed(0)
    model = mlp()
    with torch.no_grad():
        model[0].bias[:4] = -100.0  # four units of the first layer never fire
    plugin = ContinualBackpropPlugin(replacement_rate=0.05, maturity_threshold=0)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        train_mb_size=BATCH,
        plugins=[plugin],
        evaluator=evaluator(PlasticityMetrics(probe_size=64)),
    )
    strategy.train(stream(1).train_stream[0])
    metrics = strategy.evaluator.get_last_metrics()
    prefix = "Plasticity/{}/train_phase/train_stream/Exp000"
    assert metrics[prefix.format("units_replaced")] == sum(plugin.replacements.values()) > 0
    assert metrics[prefix.format("units_replaced/0")] == plugin.replacements["0"]
    # lr 0 and bias transfer off the replaced units: at least the dead units not yet
    # replaced show up, averaged with the second layer (16 units each)
    assert metrics[prefix.format("dead_fraction")] > 0


@pytest.mark.parametrize(
    "make_plugin",
    [
        lambda: L2Plugin(weight_decay=1e-2),
        lambda: ShrinkPerturbPlugin(shrink=1e-2, noise_std=1e-3),
        lambda: L2InitPlugin(strength=1e-1),
        lambda: ReDoPlugin(tau=0.5, every=2),
    ],
)
def test_baseline_plugins_change_weights_after_updates(make_plugin):
    torch.manual_seed(0)
    model = mlp()
    plain = copy.deepcopy(model)
    for m, plugins in ((model, [make_plugin()]), (plain, [])):
        torch.manual_seed(1)
        strategy = Naive(
            model=m,
            optimizer=torch.optim.SGD(m.parameters(), lr=0.1),
            train_mb_size=BATCH,
            plugins=plugins,
            evaluator=evaluator(),
        )
        strategy.train(stream(1).train_stream[0])
    pairs = zip(model.parameters(), plain.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)


def test_reset_plugins_act_at_experience_boundaries_only():
    torch.manual_seed(0)
    model = mlp()
    plugin = HeadResetPlugin("4")
    strategy = naive(model, [plugin], lr=0.1)
    benchmark = stream(2)
    strategy.train(benchmark.train_stream[0])
    body, head = model[0].weight.clone(), model[4].weight.clone()
    torch.manual_seed(5)
    expected = nn.Linear(16, CLASSES).weight.detach()
    torch.manual_seed(5)
    plugin.before_training_exp(strategy)  # the boundary before experience 1
    assert torch.equal(model[4].weight, expected) and not torch.equal(model[4].weight, head)
    assert torch.equal(model[0].weight, body)

    full = FullResetPlugin()
    model2 = mlp()
    strategy2 = naive(model2, [full], lr=0.1)
    strategy2.train(benchmark.train_stream[0])
    trained = model2[0].weight.clone()
    strategy2.train(benchmark.train_stream[1])
    assert full.boundaries == 2
    assert not torch.equal(model2[0].weight, trained)


def build_ponder_strategy(seed):
    torch.manual_seed(seed)
    model = pondernet()
    strategy = PonderTemplate(
        model=model,
        optimizer=AdamPerElement(model.parameters(), lr=1e-2),
        train_mb_size=BATCH,
        plugins=[ContinualBackpropPlugin(replacement_rate=0.02, maturity_threshold=2)],
        evaluator=evaluator(PonderingMetrics()),
    )
    return strategy


def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path):
    benchmark = stream(4, seed=3)
    straight = build_ponder_strategy(0)
    expected = run_stream(straight, benchmark)

    first = build_ponder_strategy(0)
    for experience in benchmark.train_stream[:2]:
        first.train(experience)
        first.eval(benchmark.test_stream)
    save_strategy(tmp_path / "checkpoint.pt", first, next_experience=2, history={"a": [1.0]})
    del first

    resumed = build_ponder_strategy(123)  # different init: everything must come from disk
    state = load_strategy(tmp_path / "checkpoint.pt", resumed)
    assert state["next_experience"] == 2 and state["history"] == {"a": [1.0]}
    results = []
    for experience in benchmark.train_stream[state["next_experience"] :]:
        resumed.train(experience)
        results.append(resumed.eval(benchmark.test_stream))

    compared = 0
    for name, value in expected[-1].items():
        if "Forgetting" in name or ("train_phase" in name and name not in results[-1]):
            # Avalanche's forgetting state is not in a checkpoint (experiments compute
            # forgetting from their accuracy history); the resumed strategy never
            # trained the experiences before the checkpoint.
            continue
        assert results[-1][name] == pytest.approx(value, abs=1e-12), name
        compared += 1
    assert compared >= 12
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert straight.plugins[0].replacements == resumed.plugins[0].replacements


def test_loading_a_checkpoint_into_a_different_strategy_fails_clearly(tmp_path):
    strategy = build_ponder_strategy(0)
    strategy.train(stream(1).train_stream[0])
    save_strategy(tmp_path / "c.pt", strategy, next_experience=1)
    model = pondernet()
    other = PonderTemplate(model=model, optimizer=AdamPerElement(model.parameters(), lr=1e-2))
    with pytest.raises(ValueError, match="plugins"):
        load_strategy(tmp_path / "c.pt", other)


def test_without_early_exit_evaluation_reports_the_full_halting_distribution():
    torch.manual_seed(0)
    model = PonderNet(RNNStep(FEATURES, 16, CLASSES), max_steps=5, early_exit=False)
    strategy = PonderTemplate(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        train_mb_size=BATCH,
        eval_mb_size=7,  # odd minibatches: the values must not depend on them
        evaluator=evaluator(PonderingMetrics()),
    )
    benchmark = stream(1)
    strategy.train(benchmark.train_stream[0])
    results = strategy.eval(benchmark.test_stream)
    name = "Ponder/expected_steps/eval_phase/test_stream/Exp000"
    model.eval()
    x = torch.stack([benchmark.test_stream[0].dataset[i][0] for i in range(32)])
    with torch.no_grad():
        expected = float(strategy.full_output(x).expected_steps.mean())
    assert results[name] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("arguments", "batches"),
    [
        ({"train_mb_size": BATCH}, [256, 44]),  # Avalanche's default would be 300 batches of 1
        ({"train_mb_size": 512}, [300]),  # never smaller than the training minibatch
        ({"train_mb_size": BATCH, "eval_mb_size": 100}, [100, 100, 100]),  # the caller's
    ],
)
def test_ponder_template_evaluates_in_large_minibatches_unless_told_otherwise(arguments, batches):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, FEATURES, generator=generator)
    data = tagged_dataset(x, (x[:, 0] > 0).long(), torch.ones(300, dtype=torch.long))
    benchmark = benchmark_from_datasets(train=[data], test=[data])
    model = pondernet()
    strategy = PonderTemplate(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), **arguments
    )
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    strategy.eval(benchmark.test_stream)
    assert seen == batches


def test_a_periodic_evaluation_does_not_wipe_the_training_metrics():
    torch.manual_seed(0)
    model = pondernet()
    benchmark = stream(1)
    strategy = PonderTemplate(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        train_mb_size=BATCH,
        train_epochs=2,
        eval_every=1,
        evaluator=evaluator(PonderingMetrics()),
    )
    strategy.train(benchmark.train_stream[0], eval_streams=[benchmark.test_stream])
    metrics = strategy.evaluator.get_all_metrics()
    name = "Ponder/halting_step_mean/train_phase/train_stream/Exp000"
    assert name in metrics and len(metrics[name][1]) == 1


def test_the_stream_experiment_logs_only_values_emitted_now():
    from experiments.stream import emitted_by

    torch.manual_seed(0)
    model = mlp()
    strategy = naive(model, [])
    benchmark = stream(2)
    strategy.train(benchmark.train_stream[0])
    first = emitted_by(strategy.evaluator, strategy.eval, benchmark.test_stream[:1])
    later = emitted_by(strategy.evaluator, strategy.eval, benchmark.test_stream[1:])
    assert "Top1_Acc_Exp/eval_phase/test_stream/Exp000" in first
    assert "Top1_Acc_Exp/eval_phase/test_stream/Exp000" not in later  # stale, not re-logged
    assert "Top1_Acc_Exp/eval_phase/test_stream/Exp001" in later


@pytest.mark.parametrize(
    "make",
    [
        lambda: ContinualBackpropPlugin(replacement_rate=1e-3),
        lambda: ReDoPlugin(),
        lambda: L2Plugin(),
        lambda: ShrinkPerturbPlugin(),
        lambda: L2InitPlugin(),
        lambda: WeightClippingPlugin(),
    ],
    ids=["cbp", "redo", "l2", "shrink_perturb", "l2_init", "weight_clipping"],
)
def test_creating_a_plugin_leaves_the_global_rng_as_it_was(make):
    # Plugins validate their hyperparameters on a throwaway network, whose initial
    # weights are drawn: the draws must not shift the run's other randomness.
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    make()
    assert torch.equal(torch.random.get_rng_state(), before)
