"""The pondering × plasticity study: a model, a plasticity method and a shifting stream.

    python -m experiments.stream                                  # PonderNet + bp, stability
    python -m experiments.stream with cbp seed=1                  # continual backprop
    python -m experiments.stream with parity act redo             # stream, model, method
    python -m experiments.stream print_config with cbp            # every key, documented
    python -m experiments.stream print_named_configs              # every part, described
    python -m experiments.stream resume runs/stream/7             # continue a killed run
    python -m experiments.stream -m localhost:27017:ponderlife with cbp  # + MongoDB (Omniboard)
    python -m experiments.stream --tensorboard runs/tensorboard with cbp  # + TensorBoard

Streams, plasticity methods and models are registered parts (:data:`STREAMS`,
:data:`METHODS`, :data:`MODELS`; ``experiments/_registry.py``): each is one registration
of its builder with its name, its own config keys (documented and checked), its cross-key
check and its named config, so adding one touches one place, and a user's script can add
its own (docs/extending.md). Methods ``bp cbp l2 shrink_perturb l2_init redo upgd``;
models ``pondernet act fixed``; streams ``stability routh controllability parity
bit_flipping permuted_fashion split_fashion``; ``demo`` (the `make demo` size) and
``permuted_reproduction`` (the reproduction table's permuted Fashion-MNIST row). Unknown
keys fail.

After training experience i (0-based, the step of every metric) the run evaluates every
experience seen so far and logs plain floats named ``<group>.<metric>[.d<level>][.exp<j>]``:
``train.*`` (accuracy, loss and pondering on experience i), ``eval.*.exp<j>`` (accuracy,
loss, forgetting and pondering on experience j; ``eval.halting_step.d<k>.exp<j>`` per
difficulty level k; ``eval.difficulty_spearman.exp<j>``), stream averages ``eval.accuracy``,
``eval.forgetting``, ``eval.bwt``, plasticity diagnostics ``plasticity.*`` on a probe batch,
``stream.difficulty`` (mean difficulty of experience i's own samples) and
``stream.previous_fraction`` (fraction of its training samples from experience i − 1's
task: 0 unless ``transition="gradual"``). Any other Avalanche metric, a registered extra
metric (:data:`METRICS`) included, is logged under the same scheme
(:func:`strategies.metrics.scheme_name`). A checkpoint is written after every experience;
``resume`` restores it into a new run that first re-logs the history.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
import torch.nn.functional as F
from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
from avalanche.training.plugins import EvaluationPlugin
from sacred import Experiment
from sacred.utils import apply_backspaces_and_linefeeds

from experiments import _runs, _tensorboard
from experiments._config import CHOICES, check, guard
from experiments._progress import timing
from experiments._registry import Key, Registry
from experiments._runs import run_directory
from ponderlife import (
    ACT,
    AdamPerElement,
    FixedDepth,
    GRUStep,
    PonderNet,
    ResidualMLPStep,
    RNNStep,
    TransformerStep,
)
from ponderlife.baselines import UPGD
from ponderlife.tasks import PAD_TOKEN, VOCAB_SIZE
from strategies import (
    ContinualBackpropPlugin,
    DifficultyMetrics,
    FiniteLossPlugin,
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
from strategies.datasets import tensor_source
from strategies.metrics import scheme_name
from strategies.streams import (
    TRANSITIONS,
    bit_flipping_stream,
    check_drift,
    experience_difficulty,
    linear_system_stream,
    overlap_fraction,
    parity_shift_stream,
    permuted_fashion_mnist,
    split_fashion_mnist,
)

# Metrics go to Sacred, not to Avalanche loggers; the warning about that is noise here.
warnings.filterwarnings("ignore", message="No loggers specified")

ex = guard(Experiment("stream", save_git_info=False))  # unknown keys, seed: see _config
ex.captured_out_filter = apply_backspaces_and_linefeeds
_tensorboard.add_option(ex)  # `--tensorboard DIR`, also through ex.run(options=...)


@ex.config
def config():
    # The keys every stream, model and method shares. The choice keys `stream`, `model` and
    # `method`, and each registered part's own keys, are declared with the part (below).

    # ---- stream ----------------------------------------------------------------------------
    experiences = 10  # number of experiences; int ≥ 1 (split_fashion: 1, 2, 5 or 10)
    samples_per_experience = 2048  # training samples per experience; int ≥ 1
    test_samples = 512  # test samples per experience; int ≥ 1
    stream_seed = None  # seed of the stream's data; int in [0, 2**32 − 1], or None: use `seed`
    transition = "abrupt"  # how each experience after the first begins: "abrupt" (the new
    #   task from its first sample) or "gradual" (a linear mixture over its first `window`
    #   training samples: sample t is the new task's with probability (t + 1)/(window + 1),
    #   else the previous experience's; test sets stay the new task's). Gradual streams
    #   are trained in stream order, unshuffled, so with epochs > 1 every epoch replays the
    #   window (and the same minibatches); abrupt ones are shuffled every epoch
    window = 512  # gradual: training samples of the mixture; int in [1,
    #   samples_per_experience] (split_fashion: the smallest experience's training set)

    # ---- model -----------------------------------------------------------------------------
    hidden_size = 64  # units of the step function; int ≥ 1
    halting_bias = None  # initial halting-head bias (None: PyTorch's default init)
    beta = 0.05  # PonderNet: weight of KL(p ‖ p_G); ≥ 0
    lambda_p = 0.3  # PonderNet: prior halting probability (prior mean 1/λ_p steps); (0, 1]
    tau = 0.01  # ACT: ponder-cost weight; ≥ 0

    # ---- optimisation ----------------------------------------------------------------------
    optimizer = "adam"  # "adam" (per-element-step Adam, exact for CBP resets) or "sgd";
    #   method "upgd" brings its own optimizer
    learning_rate = 1e-3  # step size; in (0, 1000]
    batch_size = 64  # minibatch size; int ≥ 1
    epochs = 1  # passes over each experience; int ≥ 1

    # ---- logging and runtime ---------------------------------------------------------------
    probe_size = 256  # samples of the probe batch for plasticity diagnostics; int ≥ 1
    dormant_threshold = 0.01  # dormant unit: nonzero on < this fraction of probe inputs; [0, 1]
    device = "cpu"  # torch device for the model: "cpu", or "cuda" / "cuda:<i>" when this
    #   machine has that GPU (checked before the run)
    num_threads = 1  # torch CPU threads; int ≥ 1
    resume_from = None  # run folder or checkpoint to continue from (see `resume`)


# ---- registries -----------------------------------------------------------------------------

#: Streams: ``build(cfg, seed) -> benchmark`` (an Avalanche benchmark whose samples are
#: ``(x, y, difficulty, task)``, e.g. from :func:`strategies.datasets.tagged_dataset`).
#: Options: ``tokens`` (can encode inputs as tokens for the transformer step) and
#: ``transitions`` (the values of ``transition`` its builder implements).
STREAMS = Registry(
    ex,
    "stream",
    what="stream",
    default="stability",
    options={"tokens": False, "transitions": ("abrupt",)},
)
#: Step functions: ``build(cfg, example, outputs) -> step`` for inputs like ``example`` (one
#: sample) and ``outputs`` logits (see ponderlife.steps for what a step is). Options:
#: ``tokens`` (reads token inputs, which only streams registered with ``tokens`` provide)
#: and ``units`` (declares the unit layers continual backprop and ReDo manage).
STEPS = Registry(
    ex, "step", what="step function", default="mlp", options={"tokens": False, "units": True}
)
#: Models: ``build(cfg, step) -> model`` around the step function the study builds for the
#: stream's inputs (a PonderNet, ACT or FixedDepth: what PonderTemplate trains).
MODELS = Registry(ex, "model", what="model", default="pondernet")
#: Plasticity methods: ``build(cfg) -> list of Avalanche plugins``. Options: ``units``
#: (needs the unit layers the transformer step does not declare), ``optimizer``
#: (``optimizer(cfg, model)`` when the method brings its own, replacing `optimizer`) and
#: ``layer_norm`` (the method includes the step's layer normalisation, as if
#: `layer_norm=True`).
METHODS = Registry(
    ex,
    "method",
    what="method",
    default="bp",
    options={"units": False, "optimizer": None, "layer_norm": False},
)
#: Extra Avalanche metrics, added to every run: ``build(cfg) -> metric or list of metrics``
#: (what EvaluationPlugin takes). No choice key: each registered entry applies.
METRICS = Registry(ex, None, what="metric")


def _list_of(check_entry):
    """A Key check: a non-empty list whose entries pass ``check_entry(entry_cfg, key)``."""
    return lambda cfg, key: check.entries(cfg, key, check_entry)


def _at_least(low: float):
    return lambda cfg, key: check.number(cfg, key, low)


def _unit_interval(*, high_open: bool = False):
    return lambda cfg, key: check.number(cfg, key, 0.0, 1.0, high_open=high_open)


def _integer(low: int):
    return lambda cfg, key: check.integer(cfg, key, low)


def _one_of(*choices: str):
    return lambda cfg, key: check.choice(cfg, key, choices)


# ---- streams ------------------------------------------------------------------------------


def _sized(cfg: dict) -> dict:
    return {
        "experiences": cfg["experiences"],
        "samples_per_experience": cfg["samples_per_experience"],
        "test_samples": cfg["test_samples"],
    }


def _transition(cfg: dict, seed: int) -> dict:
    return {"seed": seed, "transition": cfg["transition"], "window": cfg["window"]}


def _window_fits(cfg: dict) -> None:
    """A gradual window mixes training samples, so it cannot exceed the training set."""
    if cfg["transition"] == "gradual" and cfg["window"] > cfg["samples_per_experience"]:
        raise ValueError(
            f"config 'window' must be in [1, samples_per_experience = "
            f"{cfg['samples_per_experience']}] for transition 'gradual', got {cfg['window']}"
        )


LINEAR_SYSTEM_KEYS = {
    "dimensions": Key(
        [3, 4, 5, 6],
        "linear systems: n per experience (cycled), each in 1..16; at n = 2 trace and "
        "determinant sign decide stability, so the study starts at 3",
        _list_of(lambda entry, key: check.integer(entry, key, 1, 16)),
    ),
    "balance": Key(
        "matched",
        'stability / routh: "matched" (stable and unstable twins with the same cheap '
        "features: trace, det sign, norms and diagonal for matrices; coefficient signs and "
        "magnitudes for polynomials, so routh needs n ≥ 3), or the shifted-Gaussian ensemble "
        '"label" (50/50), "trace" (50/50 within trace bins), "none"; docs/shortcuts.md tables '
        "what cheap features predict under each",
        _one_of("matched", "label", "trace", "none"),
    ),
    "permute_inputs": Key(
        False,
        "linear systems: a fixed random permutation of the input features per experience "
        "after the first (Permuted-MNIST protocol; matrix inputs)",
        check.boolean,
    ),
    "drift": Key(
        0.0,
        "linear systems: generator drift per experience (stability / Routh: spectrum shift "
        "drift·i; controllability: density × (1 + drift·i)); |drift| ≤ 0.5, and small enough "
        "that every experience can still draw both classes (checked up front)",
        lambda cfg, key: check.number(cfg, key, -0.5, 0.5),
    ),
}


def _linear_system_options(cfg: dict) -> dict:
    # Controllability has no balance: its classes come from the rank test itself.
    return {} if cfg["stream"] == "controllability" else {"balance": cfg["balance"]}


def _check_linear_system(cfg: dict) -> None:
    _window_fits(cfg)
    if cfg["stream"] == "routh" and cfg["balance"] == "matched" and min(cfg["dimensions"]) < 3:
        raise ValueError(
            f"config 'dimensions' entries must be >= 3 for stream 'routh' with balance "
            f"'matched', got {min(cfg['dimensions'])}: up to degree 2 all coefficients "
            "positive means stable, so no unstable twin can match (balance 'label' allows n = 2)"
        )
    check_drift(
        cfg["stream"],
        cfg["dimensions"],
        cfg["drift"],
        experiences=cfg["experiences"],
        name="config 'drift'",
        **_linear_system_options(cfg),
    )


def linear_system(cfg: dict, seed: int):
    """Stability, Routh–Hurwitz or controllability of linear systems, n shifting."""
    options = _linear_system_options(cfg)
    options["permute_inputs"] = bool(cfg["permute_inputs"])
    options["drift"] = cfg["drift"]
    if STEPS.chosen(cfg).options["tokens"]:
        options["encoding"] = "tokens"
    return linear_system_stream(
        task=cfg["stream"],
        dimensions=list(cfg["dimensions"]),
        **_sized(cfg),
        **_transition(cfg, seed),
        **options,
    )


for _name, _doc, _tokens, _named in (
    ("stability", "Hurwitz stability of x' = Ax, n shifting 3 → 6 (the default)", True, {}),
    (
        "routh",
        "stability from the characteristic polynomial's coefficients (matched polynomial "
        "pairs: only the Hurwitz conditions separate the classes; log-encoded coefficients)",
        False,
        {},
    ),
    (
        "controllability",
        "controllability of (A, b): Kalman rank = n?",
        True,
        {"dimensions": [3, 4, 5, 6]},
    ),
):
    STREAMS.register(
        _name,
        linear_system,
        doc=_doc,
        keys=LINEAR_SYSTEM_KEYS,
        check=_check_linear_system,
        named_config=_named,
        tokens=_tokens,
        transitions=TRANSITIONS,
    )


@STREAMS.register(
    "parity",
    doc="parity whose range of nonzero entries alternates easy / hard",
    keys={
        "parity_size": Key(16, "parity: P, length of the vectors; int ≥ 2", _integer(2)),
        "parity_schedule": Key(
            ["easy", "hard"],
            'parity: per experience (cycled) "easy" (k ≤ P/2), "hard" (k > P/2) or "all"',
            _list_of(lambda entry, key: check.choice(entry, key, ("easy", "hard", "all"))),
        ),
    },
    check=_window_fits,
    named_config={"step": "rnn", "hidden_size": 128},
    transitions=TRANSITIONS,
)
def parity(cfg: dict, seed: int):
    return parity_shift_stream(
        size=cfg["parity_size"],
        schedule=list(cfg["parity_schedule"]),
        **_sized(cfg),
        **_transition(cfg, seed),
    )


@STREAMS.register(
    "bit_flipping",
    doc="the slowly-changing regression problem, one experience per 10,000 examples",
    check=_window_fits,
    named_config={
        "samples_per_experience": 10_000,
        "batch_size": 1,
        "optimizer": "sgd",
        "learning_rate": 0.01,
    },
    transitions=TRANSITIONS,
)
def bit_flipping(cfg: dict, seed: int):
    return bit_flipping_stream(
        experiences=cfg["experiences"],
        test_samples=cfg["test_samples"],
        period=cfg["samples_per_experience"],
        **_transition(cfg, seed),
    )


FASHION_KEYS = {
    "fashion_root": Key(
        None,
        "Fashion-MNIST IDX folder (None: $PONDERLIFE_FASHION_MNIST or "
        "/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist)",
    ),
}


@STREAMS.register(
    "permuted_fashion",
    doc="Permuted Fashion-MNIST (10 classes, a new pixel permutation per experience)",
    keys=FASHION_KEYS,
    check=_window_fits,
    named_config={"samples_per_experience": 10_000, "test_samples": 2000},
    transitions=TRANSITIONS,
)
def permuted_fashion(cfg: dict, seed: int):
    return permuted_fashion_mnist(**_sized(cfg), root=cfg["fashion_root"], **_transition(cfg, seed))


@STREAMS.register(
    "split_fashion",
    doc="Split Fashion-MNIST (2 classes per experience)",
    keys=FASHION_KEYS,
    # No window check here: its sizes come from the data, checked by the builder.
    named_config={"experiences": 5},
    transitions=TRANSITIONS,
)
def split_fashion(cfg: dict, seed: int):
    return split_fashion_mnist(
        experiences=cfg["experiences"], root=cfg["fashion_root"], **_transition(cfg, seed)
    )


# ---- models -------------------------------------------------------------------------------


def _cell(step_class):
    """The builder of a step function that reads a flat input of ``example.numel()``
    features."""

    def build(cfg: dict, example: torch.Tensor, outputs: int) -> torch.nn.Module:
        return step_class(
            example.numel(),
            cfg["hidden_size"],
            outputs,
            halting_bias=cfg["halting_bias"],
            layer_norm=cfg["layer_norm"],
        )

    return build


LAYER_NORM = Key(
    False,
    "layer-normalise the step: mlp its hidden pre-activations, rnn / gru their new state "
    "(method layer_norm_l2 sets it; the transformer step always is); true or false",
    check.boolean,
    added=True,
)
STEPS.register(
    "mlp",
    _cell(ResidualMLPStep),
    doc="residual MLP step (the default)",
    keys={"layer_norm": LAYER_NORM},
)
STEPS.register(
    "rnn",
    _cell(RNNStep),
    doc="tanh RNN cell (the PonderNet paper's parity model)",
    keys={"layer_norm": LAYER_NORM},
)
STEPS.register("gru", _cell(GRUStep), doc="GRU cell", keys={"layer_norm": LAYER_NORM})


@STEPS.register(
    "transformer",
    doc="transformer encoder over token inputs (streams that encode tokens: stability, "
    "controllability)",
    tokens=True,
    units=False,  # no unit layers: cbp and redo are refused with it
)
def transformer(cfg: dict, example: torch.Tensor, outputs: int) -> torch.nn.Module:
    return TransformerStep(
        outputs,
        d_model=cfg["hidden_size"],
        vocab_size=VOCAB_SIZE,
        pad_token=PAD_TOKEN,
        max_len=max(256, example.numel()),
        halting_bias=cfg["halting_bias"],
    )


MAX_STEPS = Key(10, "most ponder steps N; int ≥ 1", _integer(1))


@MODELS.register(
    "pondernet",
    doc=CHOICES["model"]["pondernet"],
    keys={
        "max_steps": MAX_STEPS,
        "epsilon": Key(
            0.05,
            "PonderNet: training unroll stops at cumulative p > 1 − ε; (0, 1)",
            lambda cfg, key: check.number(cfg, key, 0.0, 1.0, low_open=True, high_open=True),
        ),
        "eval_halting": Key(
            "sample",
            'PonderNet evaluation halting: "sample", "threshold", "expected"',
            _one_of("sample", "threshold", "expected"),
        ),
        "training_unroll": Key(
            "batch",
            'PonderNet training unroll: "batch" (every sample until the last passes 1 − ε, '
            'the paper\'s) or "per_sample" (each leaves at its own 1 − ε)',
            _one_of("batch", "per_sample"),
            added=True,
        ),
    },
)
def pondernet(cfg: dict, step: torch.nn.Module) -> torch.nn.Module:
    return PonderNet(
        step,
        max_steps=cfg["max_steps"],
        epsilon=cfg["epsilon"],
        halting=cfg["eval_halting"],
        training_unroll=cfg["training_unroll"],
        # Halting draws come from the model's own generators (saved in its state_dict),
        # so the evaluation halting mode never shifts the run's other randomness.
        halting_seed=cfg["seed"],
    )


@MODELS.register(
    "act",
    doc=CHOICES["model"]["act"],
    keys={"max_steps": MAX_STEPS},
)
def act(cfg: dict, step: torch.nn.Module) -> torch.nn.Module:
    return ACT(step, max_steps=cfg["max_steps"])


@MODELS.register(
    "fixed",
    doc=CHOICES["model"]["fixed"],
    keys={"fixed_steps": Key(4, "steps of the fixed-depth model; int ≥ 1", _integer(1))},
)
def fixed(cfg: dict, step: torch.nn.Module) -> torch.nn.Module:
    return FixedDepth(step, num_steps=cfg["fixed_steps"])


# ---- plasticity methods -------------------------------------------------------------------

INIT = Key(
    "default",
    'cbp / redo: new weights from the layer\'s own init, or "kaiming"',
    _one_of("default", "kaiming"),
)

METHODS.register("bp", list, doc=CHOICES["method"]["bp"])


@METHODS.register(
    "cbp",
    doc=CHOICES["method"]["cbp"],
    keys={
        "replacement_rate": Key(
            1e-3, "cbp: fraction of eligible units replaced per update; [0, 1]", _unit_interval()
        ),
        "maturity_threshold": Key(
            100, "cbp: updates before a unit may be replaced; int ≥ 0", _integer(0)
        ),
        "decay_rate": Key(
            0.99, "cbp: running-average decay; [0, 1)", _unit_interval(high_open=True)
        ),
        "utility": Key(
            "contribution",
            'cbp: "contribution", "mean_corrected_contribution", "adaptable_contribution"',
            _one_of("contribution", "mean_corrected_contribution", "adaptable_contribution"),
        ),
        "init": INIT,
    },
    units=True,
)
def cbp(cfg: dict) -> list:
    return [
        ContinualBackpropPlugin(
            replacement_rate=cfg["replacement_rate"],
            maturity_threshold=cfg["maturity_threshold"],
            decay_rate=cfg["decay_rate"],
            utility=cfg["utility"],
            init=cfg["init"],
        )
    ]


WEIGHT_DECAY = Key(1e-4, "l2, layer_norm_l2: per-update decoupled decay; [0, 1]", _unit_interval())


@METHODS.register("l2", doc=CHOICES["method"]["l2"], keys={"weight_decay": WEIGHT_DECAY})
def l2(cfg: dict) -> list:
    return [L2Plugin(weight_decay=cfg["weight_decay"])]


METHODS.register(
    "layer_norm_l2",
    l2,  # the same plugin, on a layer-normalised step
    doc=CHOICES["method"]["layer_norm_l2"],
    keys={"weight_decay": WEIGHT_DECAY},
    layer_norm=True,
)


@METHODS.register(
    "weight_clipping",
    doc=CHOICES["method"]["weight_clipping"],
    keys={
        "clip_scale": Key(
            2.0,
            "weight_clipping: κ, each weight kept in ±κ·(its initial distribution's bound); "
            "> 0 (the authors sweep 1 to 5)",
            lambda cfg, key: check.number(cfg, key, 0.0, low_open=True),
            added=True,
        )
    },
)
def weight_clipping(cfg: dict) -> list:
    return [WeightClippingPlugin(scale=cfg["clip_scale"])]


@METHODS.register(
    "shrink_perturb",
    doc=CHOICES["method"]["shrink_perturb"],
    keys={
        "shrink": Key(1e-4, "shrink_perturb: per-update shrink; [0, 1]", _unit_interval()),
        "noise_std": Key(
            1e-5, "shrink_perturb: std of the per-update perturbation; ≥ 0", _at_least(0.0)
        ),
    },
)
def shrink_perturb(cfg: dict) -> list:
    return [ShrinkPerturbPlugin(shrink=cfg["shrink"], noise_std=cfg["noise_std"])]


@METHODS.register(
    "l2_init",
    doc=CHOICES["method"]["l2_init"],
    keys={
        "l2_init_strength": Key(
            1e-2,
            "l2_init: per-update pull towards the initial weights; [0, 1]",
            _unit_interval(),
        )
    },
)
def l2_init(cfg: dict) -> list:
    return [L2InitPlugin(strength=cfg["l2_init_strength"])]


@METHODS.register(
    "redo",
    doc=CHOICES["method"]["redo"],
    keys={
        "redo_tau": Key(0.1, "redo: τ-dormancy threshold; ≥ 0", _at_least(0.0)),
        "redo_every": Key(100, "redo: updates between recycling rounds; int ≥ 1", _integer(1)),
        "init": INIT,
    },
    units=True,
)
def redo(cfg: dict) -> list:
    return [ReDoPlugin(tau=cfg["redo_tau"], every=cfg["redo_every"], init=cfg["init"])]


def _upgd_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    return UPGD(
        model.parameters(),
        lr=cfg["learning_rate"],
        weight_decay=cfg["upgd_weight_decay"],
        sigma=cfg["upgd_sigma"],
        beta_utility=cfg["upgd_beta_utility"],
    )


METHODS.register(
    "upgd",
    list,  # an optimizer, no plugin
    doc=CHOICES["method"]["upgd"],
    keys={
        "upgd_weight_decay": Key(1e-3, "upgd: weight decay; ≥ 0", _at_least(0.0)),
        "upgd_sigma": Key(1e-3, "upgd: perturbation std; ≥ 0", _at_least(0.0)),
        "upgd_beta_utility": Key(
            0.999, "upgd: utility decay; [0, 1)", _unit_interval(high_open=True)
        ),
    },
    named_config={"learning_rate": 1e-2},
    optimizer=_upgd_optimizer,
)


@ex.named_config
def demo():
    # `make demo`: PonderNet on the (matched) stability stream, n = 3, 4, 6, 3, 4, 6, ...
    # with a new input permutation per experience, 45 experiences x 5 epochs of 2048
    # samples, Adam 3e-3: long and sharp enough for backprop to lose plasticity.
    stream = "stability"
    dimensions = [3, 4, 6]
    permute_inputs = True
    experiences = 45
    samples_per_experience = 2048
    test_samples = 512
    epochs = 5
    learning_rate = 3e-3
    hidden_size = 64
    max_steps = 8


@ex.named_config
def permuted_reproduction():
    # The reproduction table's permuted Fashion-MNIST row (the online permuted-MNIST
    # protocol of the continual-backprop papers at CPU size): a one-hidden-layer ReLU
    # network (the residual MLP step run once: 784 inputs, 256 hidden units, 10 outputs),
    # 100 permutations x 10,000 training images seen once, Adam 1e-3, batch 64. Combine with
    # a method: `with permuted_reproduction cbp`.
    stream = "permuted_fashion"
    model = "fixed"
    fixed_steps = 1
    hidden_size = 256
    experiences = 100
    samples_per_experience = 10_000
    test_samples = 1000


# ---- validation and building --------------------------------------------------------------

REGISTRIES = (STREAMS, STEPS, MODELS, METHODS, METRICS)


def validate(cfg: dict) -> None:
    """Fail before any work with a message naming the bad key and its allowed values: the
    shared keys here, then every registered part's keys, then the chosen parts' checks."""
    check.choice(cfg, "optimizer", ("adam", "sgd"))
    for key in (
        "experiences",
        "samples_per_experience",
        "test_samples",
        "hidden_size",
        "batch_size",
        "epochs",
        "probe_size",
        "num_threads",
    ):
        check.integer(cfg, key, 1)
    check.choice(cfg, "transition", TRANSITIONS)
    check.integer(cfg, "window", 1)
    check.optional_number(cfg, "halting_bias")
    for key in ("beta", "tau"):
        check.number(cfg, key, 0.0)
    check.number(cfg, "lambda_p", 0.0, 1.0, low_open=True)
    check.learning_rate(cfg)
    check.number(cfg, "dormant_threshold", 0.0, 1.0)
    check.seed(cfg, "stream_seed", optional=True)  # `seed` itself: before Sacred, see guard
    check.device(cfg, "device")
    for registry in REGISTRIES:
        registry.check_keys(cfg)
    stream = STREAMS.check_chosen(cfg)
    step = STEPS.check_chosen(cfg)
    MODELS.check_chosen(cfg)
    method = METHODS.check_chosen(cfg)
    if cfg["transition"] not in stream.options["transitions"]:
        raise ValueError(
            f"config 'transition' must be one of {stream.options['transitions']} for stream "
            f"{cfg['stream']!r} (what its builder implements), got {cfg['transition']!r}"
        )
    if step.options["tokens"] and not stream.options["tokens"]:
        tokens = tuple(name for name in STREAMS if STREAMS[name].options["tokens"])
        raise ValueError(
            f"config 'step' = {cfg['step']!r} reads token inputs, which only the streams "
            f"{tokens} provide; got stream {cfg['stream']!r}"
        )
    if method.options["units"] and not step.options["units"]:
        with_units = tuple(name for name in STEPS if STEPS[name].options["units"])
        raise ValueError(
            f"config 'method' = {cfg['method']!r} needs unit layers, which the "
            f"{cfg['step']!r} step does not declare; use a step of {with_units}"
        )
    check.resume_from(cfg, ex.path)  # exists, is a run of this experiment, intact checkpoint


def build_stream(cfg: dict, seed: int):
    """The Avalanche benchmark of the config (all of it is drawn up front, seeded)."""
    return _with_stream_facts(STREAMS.chosen(cfg).build(cfg, seed), cfg)


def _with_stream_facts(benchmark, cfg: dict):
    """The facts the study logs per experience, for a benchmark built without
    :mod:`strategies.streams` (which records them): an abrupt stream has no samples from
    the previous task, and its test overlap is measured here. A gradual config whose
    stream built no mixture is refused rather than run as an abrupt one."""
    if not hasattr(benchmark, "transition"):
        if cfg["transition"] != "abrupt":
            raise ValueError(
                f"config 'transition' = {cfg['transition']!r}, but the stream "
                f"{cfg['stream']!r} built a benchmark without `transition` and "
                "`from_previous`: build it with strategies.streams (transition=..., "
                "window=...) or register the stream with transitions=('abrupt',)"
            )
        benchmark.transition = "abrupt"
    if not hasattr(benchmark, "from_previous"):
        benchmark.from_previous = [
            torch.zeros(len(e.dataset), dtype=torch.bool) for e in benchmark.train_stream
        ]
    if not hasattr(benchmark, "test_overlap"):
        benchmark.test_overlap = [
            overlap_fraction(_inputs(train), _inputs(test))
            for train, test in zip(benchmark.train_stream, benchmark.test_stream, strict=True)
        ]
    return benchmark


def _inputs(experience) -> torch.Tensor:
    tensors = tensor_source(experience.dataset)
    if tensors is not None:
        return tensors[0]
    return torch.stack([experience.dataset[i][0] for i in range(len(experience.dataset))])


def build_step(cfg: dict, example: torch.Tensor, outputs: int) -> torch.nn.Module:
    """The step function for inputs like ``example`` (one sample) and ``outputs`` logits,
    layer-normalised when `layer_norm` is set or the method includes it."""
    layer_norm = cfg["layer_norm"] or METHODS.chosen(cfg).options["layer_norm"]
    return STEPS.chosen(cfg).build({**cfg, "layer_norm": layer_norm}, example, outputs)


def build_model(cfg: dict, benchmark) -> torch.nn.Module:
    x, y = benchmark.train_stream[0].dataset[0][:2]
    outputs = 1 if y.is_floating_point() else _classes(benchmark)  # regression: one output
    return MODELS.chosen(cfg).build(cfg, build_step(cfg, x, outputs))


def _classes(benchmark) -> int:
    return 1 + max(int(max(experience.dataset.targets)) for experience in benchmark.train_stream)


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    own = METHODS.chosen(cfg).options["optimizer"]
    if own is not None:
        return own(cfg, model)
    if cfg["optimizer"] == "adam":
        return AdamPerElement(model.parameters(), lr=cfg["learning_rate"])
    return torch.optim.SGD(model.parameters(), lr=cfg["learning_rate"])


def build_method(cfg: dict) -> list:
    """The plasticity method's plugins (none for bp and upgd)."""
    return list(METHODS.chosen(cfg).build(cfg))


def mse_per_sample(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(prediction.squeeze(-1), target, reduction="none")


def build_strategy(cfg: dict, benchmark, metrics=()):
    """The PonderTemplate of the config. ``metrics``: Avalanche metrics to add to the
    study's own and the registered extra ones (:data:`METRICS`); the run logs every value
    they emit under the metric scheme (:func:`strategies.metrics.scheme_name`)."""
    model = build_model(cfg, benchmark)
    regression = benchmark.train_stream[0].dataset[0][1].is_floating_point()
    own = [loss_metrics(epoch=True, experience=True, stream=True)]
    if not regression:
        own.append(accuracy_metrics(epoch=True, experience=True, stream=True))
    extra = [entry.build(cfg) for entry in METRICS.entries()]
    evaluator = EvaluationPlugin(
        *own,
        PonderingMetrics(),
        DifficultyMetrics(),
        PlasticityMetrics(probe_size=cfg["probe_size"], dormant_threshold=cfg["dormant_threshold"]),
        *extra,
        *metrics,
        loggers=[],
    )
    strategy = PonderTemplate(
        model=model,
        optimizer=build_optimizer(cfg, model),
        beta=cfg["beta"],
        lambda_p=cfg["lambda_p"],
        tau=cfg["tau"],
        **({"task_loss": mse_per_sample} if regression else {}),
        train_mb_size=cfg["batch_size"],
        train_epochs=cfg["epochs"],
        device=cfg["device"],
        plugins=[*build_method(cfg), FiniteLossPlugin()],
        evaluator=evaluator,
    )
    for plugin in strategy.plugins:
        if hasattr(plugin, "build"):
            plugin.build(strategy)  # unit discovery errors surface before training
    return strategy


# ---- metric names -------------------------------------------------------------------------


def scheme_values(emitted: dict, experience: int, phase: str) -> dict[str, float]:
    """The values ``emitted`` (Avalanche name → value) during the ``phase`` ("train" or
    "eval") of ``experience``, under their scheme names. Values of the other phase and
    stale training values are left out; so are values that are no number (an image, a
    confusion matrix), with a warning, since Sacred logs plain floats; two metrics that
    would share a scheme name are an error naming both."""
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for avalanche_name, value in emitted.items():
        if "_phase/" in avalanche_name and f"{phase}_phase/" not in avalanche_name:
            continue
        name = scheme_name(avalanche_name, experience, phase)
        if name is None:
            continue
        if torch.is_tensor(value) and value.numel() == 1:
            value = value.item()
        if not isinstance(value, float | int):
            # Python's default warning filter shows each message once per call site.
            warnings.warn(
                f"metric {avalanche_name!r} emitted a {type(value).__name__}, not a number: "
                "Sacred logs plain floats, so the study leaves it out",
                stacklevel=2,
            )
            continue
        if name in sources:
            raise ValueError(
                f"Avalanche metrics {sources[name]!r} and {avalanche_name!r} both map to "
                f"{name!r}: rename one (strategies.metrics.scheme_name gives the mapping)"
            )
        values[name], sources[name] = value, avalanche_name
    return values


def forgetting(history: dict, experience: int) -> dict[str, float]:
    """Forgetting of each earlier experience j: accuracy right after learning it minus
    accuracy now; BWT (Lopez-Paz & Ranzato) is minus their mean."""
    values = {}
    for j in range(experience):
        learned = history.get(f"eval.accuracy.exp{j:03d}")
        if learned is None:
            continue
        after = dict(zip(learned["steps"], learned["values"], strict=True))
        if j in after and experience in after:
            values[f"eval.forgetting.exp{j:03d}"] = after[j] - after[experience]
    if values:
        mean = sum(values.values()) / len(values)
        values["eval.forgetting"] = mean
        values["eval.bwt"] = -mean
    return values


# ---- the run ------------------------------------------------------------------------------


@ex.main
def main(_config: dict, _run, seed: int) -> dict:
    cfg = _runs.start(_config, seed, validate)
    benchmark = build_stream(cfg, seed if cfg["stream_seed"] is None else cfg["stream_seed"])
    strategy = build_strategy(cfg, benchmark)
    directory = run_directory(_run)
    history = _runs.History(_run)
    log = history.log

    start = 0
    if cfg["resume_from"] is not None:
        source = _runs.resume_checkpoint(cfg["resume_from"])
        state = load_strategy(source, strategy, experiment=ex.path)
        start = state["next_experience"]
        history.replay(state["history"])
        _runs.continued(_run, cfg, ex.path)
        print(f"resumed from {source} before experience {start}")

    total = len(benchmark.train_stream)
    # A gradual window is a mixture in stream order: shuffling would spread it out.
    order = {"shuffle": False} if benchmark.transition == "gradual" else {}
    began = time.perf_counter()  # the ETA times only this process's experiences
    for index in range(start, total):
        experience = benchmark.train_stream[index]
        trained = emitted_by(strategy.evaluator, strategy.train, experience, **order)
        evaluated = emitted_by(
            strategy.evaluator, strategy.eval, benchmark.test_stream[: index + 1]
        )
        values = scheme_values(trained, index, "train")
        for name, value in scheme_values(evaluated, index, "eval").items():
            if name in values:
                raise ValueError(f"metric {name!r} was emitted in training and evaluation")
            values[name] = value
        # The experience's own difficulty: a gradual window's old samples keep theirs.
        new = ~benchmark.from_previous[index]
        values["stream.difficulty"] = float(experience_difficulty(experience)[new].float().mean())
        values["stream.previous_fraction"] = float(benchmark.from_previous[index].float().mean())
        values["stream.test_overlap"] = benchmark.test_overlap[index]
        for name, value in sorted(values.items()):
            log(name, value, index)
        for name, value in forgetting(history.entries, index).items():
            log(name, value, index)
        if directory is not None:
            save_strategy(
                directory / "checkpoint.pt",
                strategy,
                next_experience=index + 1,
                history=history.entries,
                experiment=ex.path,
            )
        elapsed = time.perf_counter() - began
        label = f"[{cfg['method']} seed {seed}] "
        line = progress_line(index, total, values, elapsed, start=start)
        print(label + line, flush=True)

    final = {
        name: entry["values"][-1]
        for name, entry in history.entries.items()
        if name.count(".") == 1 and name.startswith("eval.")
    }
    _run.info["final"] = final
    return final


def emitted_by(evaluator, call, *args, **kwargs) -> dict:
    """The metric values the evaluator received while ``call(*args, **kwargs)`` ran (the
    last of each): ``get_last_metrics()`` would also return values of earlier calls for
    metrics that emitted nothing this time."""
    before = {name: len(values) for name, (_, values) in evaluator.all_metric_results.items()}
    call(*args, **kwargs)
    return {
        name: values[-1]
        for name, (_, values) in evaluator.all_metric_results.items()
        if len(values) > before.get(name, 0)
    }


def progress_line(index: int, total: int, values: dict, elapsed: float, *, start: int = 0) -> str:
    """The line printed after experience ``index``: its figures, then the time since this
    process began training at experience ``start`` and the time left."""

    def show(name: str, fmt: str = ".3f") -> str:
        value = values.get(name)
        return "   -  " if value is None or math.isnan(value) else format(value, fmt)

    new = f"eval.accuracy.exp{index:03d}"
    return (
        f"experience {index + 1}/{total}  difficulty {show('stream.difficulty', '.1f')}  "
        f"accuracy new {show(new)} seen {show('eval.accuracy')}  "
        f"halting {show(f'eval.halting_step_mean.exp{index:03d}', '.2f')}  "
        f"replaced {show('plasticity.units_replaced', '.0f')}  "
        f"({timing(index + 1, total, elapsed, start=start)})"
    )


if __name__ == "__main__":
    _runs.main(ex)
