"""The pondering × plasticity study: a model, a plasticity method and a shifting stream.

    python -m experiments.stream                                  # PonderNet + bp, stability
    python -m experiments.stream with cbp seed=1                  # continual backprop
    python -m experiments.stream with parity act redo             # stream, model, method
    python -m experiments.stream print_config with cbp            # every key, documented
    python -m experiments.stream resume runs/stream/7             # continue a killed run
    python -m experiments.stream -m localhost:27017:ponderlife with cbp  # + MongoDB (Omniboard)

Named configs: methods ``bp cbp l2 shrink_perturb l2_init redo upgd``; models
``pondernet act fixed``; streams ``stability routh controllability parity bit_flipping
permuted_fashion split_fashion``; ``demo`` (the `make demo` size). Unknown keys fail.

After training experience i (0-based, the step of every metric) the run evaluates every
experience seen so far and logs plain floats named ``<group>.<metric>[.d<level>][.exp<j>]``:
``train.*`` (accuracy, loss and pondering on experience i), ``eval.*.exp<j>`` (accuracy,
loss, forgetting and pondering on experience j; ``eval.halting_step.d<k>.exp<j>`` per
difficulty level k; ``eval.difficulty_spearman.exp<j>``), stream averages ``eval.accuracy``,
``eval.forgetting``, ``eval.bwt``, plasticity diagnostics ``plasticity.*`` on a probe batch,
``stream.difficulty`` (mean difficulty of experience i's own samples) and
``stream.previous_fraction`` (fraction of its training samples from experience i − 1's
task: 0 unless ``transition="gradual"``). A checkpoint is written after
every experience; ``resume`` restores it into a new run that first re-logs the history.
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

from experiments import _runs
from experiments._config import check, choice_configs, guard
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
)
from strategies.checkpoint import load_strategy, save_strategy
from strategies.streams import (
    TRANSITIONS,
    bit_flipping_stream,
    check_drift,
    experience_difficulty,
    linear_system_stream,
    parity_shift_stream,
    permuted_fashion_mnist,
    split_fashion_mnist,
)

# Metrics go to Sacred, not to Avalanche loggers; the warning about that is noise here.
warnings.filterwarnings("ignore", message="No loggers specified")

ex = guard(Experiment("stream", save_git_info=False))  # unknown keys, seed: see _config
METHODS = ("bp", "cbp", "l2", "shrink_perturb", "l2_init", "redo", "upgd")
ex.captured_out_filter = apply_backspaces_and_linefeeds


@ex.config
def config():
    # ---- stream ----------------------------------------------------------------------------
    stream = "stability"  # "stability", "routh", "controllability" (linear systems, n shifts),
    #   "parity" (range of nonzeros shifts), "bit_flipping" (regression segments),
    #   "permuted_fashion", "split_fashion" (real data from IDX files)
    experiences = 10  # number of experiences; int ≥ 1 (split_fashion: 1, 2, 5 or 10)
    samples_per_experience = 2048  # training samples per experience; int ≥ 1
    test_samples = 512  # test samples per experience; int ≥ 1
    dimensions = [3, 4, 5, 6]  # linear systems: n per experience (cycled), each in 1..16; at
    #   n = 2 trace and determinant sign decide stability, so the study starts at 3
    balance = "matched"  # stability / routh: "matched" (stable and unstable twins with the
    #   same cheap features: trace, det sign, norms and diagonal for matrices; coefficient
    #   signs and magnitudes for polynomials, so routh needs n ≥ 3), or the shifted-Gaussian
    #   ensemble "label" (50/50), "trace" (50/50 within trace bins), "none";
    #   docs/shortcuts.md tables what cheap features predict under each
    permute_inputs = False  # linear systems: a fixed random permutation of the input
    #   features per experience after the first (Permuted-MNIST protocol; matrix inputs)
    drift = 0.0  # linear systems: generator drift per experience (stability / Routh: spectrum
    #   shift drift·i; controllability: density × (1 + drift·i)); |drift| ≤ 0.5, and small
    #   enough that every experience can still draw both classes (checked up front)
    parity_size = 16  # parity: P, length of the vectors; int ≥ 2
    parity_schedule = ["easy", "hard"]  # parity: per experience (cycled) "easy" (k ≤ P/2),
    #   "hard" (k > P/2) or "all"
    fashion_root = None  # Fashion-MNIST IDX folder (None: $PONDERLIFE_FASHION_MNIST or
    #   /usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist)
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
    model = "pondernet"  # "pondernet", "act" or "fixed" (fixed-depth recurrence)
    step = "mlp"  # step function: "mlp" (residual MLP), "rnn" (tanh cell), "gru", or
    #   "transformer" (token inputs; linear-system streams stability / controllability)
    hidden_size = 64  # units of the step function; int ≥ 1
    max_steps = 10  # most ponder steps N; int ≥ 1
    fixed_steps = 4  # steps of the fixed-depth model; int ≥ 1
    halting_bias = None  # initial halting-head bias (None: PyTorch's default init)
    beta = 0.05  # PonderNet: weight of KL(p ‖ p_G); ≥ 0
    lambda_p = 0.3  # PonderNet: prior halting probability (prior mean 1/λ_p steps); (0, 1]
    epsilon = 0.05  # PonderNet: training unroll stops at cumulative p > 1 − ε; (0, 1)
    eval_halting = "sample"  # PonderNet evaluation halting: "sample", "threshold", "expected"
    tau = 0.01  # ACT: ponder-cost weight; ≥ 0

    # ---- optimisation ----------------------------------------------------------------------
    optimizer = "adam"  # "adam" (per-element-step Adam, exact for CBP resets) or "sgd";
    #   method "upgd" brings its own optimizer
    learning_rate = 1e-3  # step size; in (0, 1000]
    batch_size = 64  # minibatch size; int ≥ 1
    epochs = 1  # passes over each experience; int ≥ 1

    # ---- plasticity method -----------------------------------------------------------------
    method = "bp"  # "bp", "cbp", "l2", "shrink_perturb", "l2_init", "redo" or "upgd"
    replacement_rate = 1e-3  # cbp: fraction of eligible units replaced per update; [0, 1]
    maturity_threshold = 100  # cbp: updates before a unit may be replaced; int ≥ 0
    decay_rate = 0.99  # cbp: running-average decay; [0, 1)
    utility = "contribution"  # cbp: "contribution", "mean_corrected_contribution",
    #   "adaptable_contribution"
    init = "default"  # cbp / redo: new weights from the layer's own init, or "kaiming"
    weight_decay = 1e-4  # l2: per-update decoupled decay; [0, 1]
    shrink = 1e-4  # shrink_perturb: per-update shrink; [0, 1]
    noise_std = 1e-5  # shrink_perturb: std of the per-update perturbation; ≥ 0
    l2_init_strength = 1e-2  # l2_init: per-update pull towards the initial weights; [0, 1]
    redo_tau = 0.1  # redo: τ-dormancy threshold; ≥ 0
    redo_every = 100  # redo: updates between recycling rounds; int ≥ 1
    upgd_weight_decay = 1e-3  # upgd: weight decay; ≥ 0
    upgd_sigma = 1e-3  # upgd: perturbation std; ≥ 0
    upgd_beta_utility = 0.999  # upgd: utility decay; [0, 1)

    # ---- logging and runtime ---------------------------------------------------------------
    probe_size = 256  # samples of the probe batch for plasticity diagnostics; int ≥ 1
    dormant_threshold = 0.01  # dormant unit: nonzero on < this fraction of probe inputs; [0, 1]
    device = "cpu"  # torch device for the model: "cpu", or "cuda" / "cuda:<i>" when this
    #   machine has that GPU (checked before the run)
    num_threads = 1  # torch CPU threads; int ≥ 1
    resume_from = None  # run folder or checkpoint to continue from (see `resume`)


# ---- named configs -------------------------------------------------------------------------
# Methods (bp, cbp, l2, shrink_perturb, l2_init, redo, upgd) and models (pondernet, act,
# fixed) each set their key; their hyperparameters are the documented keys above.
choice_configs(ex, "method", METHODS, extra={"upgd": {"learning_rate": 1e-2}})
choice_configs(ex, "model", ("pondernet", "act", "fixed"))


@ex.named_config
def stability():
    # Hurwitz stability of x' = Ax, n shifting 2 → 6 (the default).
    stream = "stability"


@ex.named_config
def routh():
    # Stability from the characteristic polynomial's coefficients (matched polynomial pairs:
    #   only the Hurwitz conditions separate the classes; log-encoded coefficients).
    stream = "routh"


@ex.named_config
def controllability():
    # Controllability of (A, b): Kalman rank = n?
    stream = "controllability"
    dimensions = [3, 4, 5, 6]


@ex.named_config
def parity():
    # Parity whose range of nonzero entries alternates easy / hard.
    stream = "parity"
    step = "rnn"
    hidden_size = 128


@ex.named_config
def bit_flipping():
    # The slowly-changing regression problem, one experience per 10,000 examples.
    stream = "bit_flipping"
    samples_per_experience = 10_000
    batch_size = 1
    optimizer = "sgd"
    learning_rate = 0.01


@ex.named_config
def permuted_fashion():
    # Permuted Fashion-MNIST (10 classes, a new pixel permutation per experience).
    stream = "permuted_fashion"
    samples_per_experience = 10_000
    test_samples = 2000


@ex.named_config
def split_fashion():
    # Split Fashion-MNIST (2 classes per experience).
    stream = "split_fashion"
    experiences = 5


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


# ---- building blocks ----------------------------------------------------------------------

STREAM_NAMES = (
    "stability",
    "routh",
    "controllability",
    "parity",
    "bit_flipping",
    "permuted_fashion",
    "split_fashion",
)
TOKEN_STREAMS = ("stability", "controllability")
STEPS = {"mlp": ResidualMLPStep, "rnn": RNNStep, "gru": GRUStep, "transformer": TransformerStep}


def validate(cfg: dict) -> None:
    """Fail before any work with a message naming the bad key and its allowed values."""
    check.choice(cfg, "stream", STREAM_NAMES)
    check.choice(cfg, "model", ("pondernet", "act", "fixed"))
    check.choice(cfg, "step", tuple(STEPS))
    check.choice(cfg, "method", METHODS)
    check.choice(cfg, "optimizer", ("adam", "sgd"))
    check.choice(cfg, "balance", ("matched", "label", "trace", "none"))
    check.choice(cfg, "eval_halting", ("sample", "threshold", "expected"))
    check.choice(
        cfg, "utility", ("contribution", "mean_corrected_contribution", "adaptable_contribution")
    )
    check.choice(cfg, "init", ("default", "kaiming"))
    for key in (
        "experiences",
        "samples_per_experience",
        "test_samples",
        "hidden_size",
        "max_steps",
        "fixed_steps",
        "batch_size",
        "epochs",
        "redo_every",
        "probe_size",
        "num_threads",
    ):
        check.integer(cfg, key, 1)
    check.integer(cfg, "parity_size", 2)
    check.choice(cfg, "transition", TRANSITIONS)
    check.integer(cfg, "window", 1)
    if (
        cfg["transition"] == "gradual"
        and cfg["stream"] != "split_fashion"  # its sizes come from the data: checked there
        and cfg["window"] > cfg["samples_per_experience"]
    ):
        raise ValueError(
            f"config 'window' must be in [1, samples_per_experience = "
            f"{cfg['samples_per_experience']}] for transition 'gradual', got {cfg['window']}"
        )
    check.integer(cfg, "maturity_threshold", 0)
    check.entries(cfg, "dimensions", lambda entry, key: check.integer(entry, key, 1, 16))
    check.entries(
        cfg, "parity_schedule", lambda entry, key: check.choice(entry, key, ("easy", "hard", "all"))
    )
    check.optional_number(cfg, "halting_bias")
    for key in ("beta", "tau", "noise_std", "redo_tau", "upgd_weight_decay", "upgd_sigma"):
        check.number(cfg, key, 0.0)
    check.number(cfg, "lambda_p", 0.0, 1.0, low_open=True)
    check.number(cfg, "drift", -0.5, 0.5)
    if cfg["stream"] == "routh" and cfg["balance"] == "matched" and min(cfg["dimensions"]) < 3:
        raise ValueError(
            f"config 'dimensions' entries must be >= 3 for stream 'routh' with balance "
            f"'matched', got {min(cfg['dimensions'])}: up to degree 2 all coefficients "
            "positive means stable, so no unstable twin can match (balance 'label' allows n = 2)"
        )
    check.number(cfg, "epsilon", 0.0, 1.0, low_open=True, high_open=True)
    check.learning_rate(cfg)
    for key in (
        "replacement_rate",
        "weight_decay",
        "shrink",
        "l2_init_strength",
        "dormant_threshold",
    ):
        check.number(cfg, key, 0.0, 1.0)
    for key in ("decay_rate", "upgd_beta_utility"):
        check.number(cfg, key, 0.0, 1.0, high_open=True)
    check.boolean(cfg, "permute_inputs")
    check.seed(cfg, "stream_seed", optional=True)  # `seed` itself: before Sacred, see guard
    check.device(cfg, "device")
    if cfg["step"] == "transformer" and cfg["stream"] not in TOKEN_STREAMS:
        raise ValueError(
            f"config 'step' = 'transformer' reads token inputs, which only the streams "
            f"{TOKEN_STREAMS} provide; got stream {cfg['stream']!r}"
        )
    if cfg["step"] == "transformer" and cfg["method"] in ("cbp", "redo"):
        raise ValueError(
            f"config 'method' = {cfg['method']!r} needs unit layers, which the transformer "
            "step does not declare; use step 'mlp', 'rnn' or 'gru'"
        )
    if cfg["stream"] in ("stability", "routh", "controllability"):
        options = {} if cfg["stream"] == "controllability" else {"balance": cfg["balance"]}
        check_drift(
            cfg["stream"],
            cfg["dimensions"],
            cfg["drift"],
            experiences=cfg["experiences"],
            name="config 'drift'",
            **options,
        )
    check.resume_from(cfg, ex.path)  # exists, is a run of this experiment, intact checkpoint


def build_stream(cfg: dict, seed: int):
    """The Avalanche benchmark of the config (all of it is drawn up front, seeded)."""
    common = {"seed": seed, "transition": cfg["transition"], "window": cfg["window"]}
    name = cfg["stream"]
    sized = {
        "experiences": cfg["experiences"],
        "samples_per_experience": cfg["samples_per_experience"],
        "test_samples": cfg["test_samples"],
    }
    if name in ("stability", "routh", "controllability"):
        options = {} if name == "controllability" else {"balance": cfg["balance"]}
        options["permute_inputs"] = bool(cfg["permute_inputs"])
        options["drift"] = cfg["drift"]
        if cfg["step"] == "transformer":
            options["encoding"] = "tokens"
        return linear_system_stream(
            task=name, dimensions=list(cfg["dimensions"]), **sized, **common, **options
        )
    if name == "parity":
        return parity_shift_stream(
            size=cfg["parity_size"], schedule=list(cfg["parity_schedule"]), **sized, **common
        )
    if name == "bit_flipping":
        return bit_flipping_stream(
            experiences=cfg["experiences"],
            test_samples=cfg["test_samples"],
            period=cfg["samples_per_experience"],
            **common,
        )
    if name == "permuted_fashion":
        return permuted_fashion_mnist(**sized, root=cfg["fashion_root"], **common)
    return split_fashion_mnist(experiences=cfg["experiences"], root=cfg["fashion_root"], **common)


def build_model(cfg: dict, benchmark) -> torch.nn.Module:
    x, y = benchmark.train_stream[0].dataset[0][:2]
    regression = y.is_floating_point()
    outputs = 1 if regression else _classes(benchmark)
    if cfg["step"] == "transformer":
        step = TransformerStep(
            outputs,
            d_model=cfg["hidden_size"],
            vocab_size=VOCAB_SIZE,
            pad_token=PAD_TOKEN,
            max_len=max(256, x.numel()),
            halting_bias=cfg["halting_bias"],
        )
    else:
        step = STEPS[cfg["step"]](
            x.numel(), cfg["hidden_size"], outputs, halting_bias=cfg["halting_bias"]
        )
    if cfg["model"] == "pondernet":
        return PonderNet(
            step,
            max_steps=cfg["max_steps"],
            epsilon=cfg["epsilon"],
            halting=cfg["eval_halting"],
            # Halting draws come from the model's own generators (saved in its state_dict),
            # so the evaluation halting mode never shifts the run's other randomness.
            halting_seed=cfg["seed"],
        )
    if cfg["model"] == "act":
        return ACT(step, max_steps=cfg["max_steps"])
    return FixedDepth(step, num_steps=cfg["fixed_steps"])


def _classes(benchmark) -> int:
    return 1 + max(int(max(experience.dataset.targets)) for experience in benchmark.train_stream)


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg["method"] == "upgd":
        return UPGD(
            model.parameters(),
            lr=cfg["learning_rate"],
            weight_decay=cfg["upgd_weight_decay"],
            sigma=cfg["upgd_sigma"],
            beta_utility=cfg["upgd_beta_utility"],
        )
    if cfg["optimizer"] == "adam":
        return AdamPerElement(model.parameters(), lr=cfg["learning_rate"])
    return torch.optim.SGD(model.parameters(), lr=cfg["learning_rate"])


def build_method(cfg: dict) -> list:
    """The plasticity method's plugins (none for bp and upgd)."""
    plugins = {
        "bp": list,
        "upgd": list,
        "cbp": lambda: [
            ContinualBackpropPlugin(
                replacement_rate=cfg["replacement_rate"],
                maturity_threshold=cfg["maturity_threshold"],
                decay_rate=cfg["decay_rate"],
                utility=cfg["utility"],
                init=cfg["init"],
            )
        ],
        "l2": lambda: [L2Plugin(weight_decay=cfg["weight_decay"])],
        "shrink_perturb": lambda: [
            ShrinkPerturbPlugin(shrink=cfg["shrink"], noise_std=cfg["noise_std"])
        ],
        "l2_init": lambda: [L2InitPlugin(strength=cfg["l2_init_strength"])],
        "redo": lambda: [
            ReDoPlugin(tau=cfg["redo_tau"], every=cfg["redo_every"], init=cfg["init"])
        ],
    }
    return plugins[cfg["method"]]()


def mse_per_sample(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(prediction.squeeze(-1), target, reduction="none")


def build_strategy(cfg: dict, benchmark):
    model = build_model(cfg, benchmark)
    regression = benchmark.train_stream[0].dataset[0][1].is_floating_point()
    metrics = [loss_metrics(epoch=True, experience=True, stream=True)]
    if not regression:
        metrics.append(accuracy_metrics(epoch=True, experience=True, stream=True))
    evaluator = EvaluationPlugin(
        *metrics,
        PonderingMetrics(),
        DifficultyMetrics(),
        PlasticityMetrics(probe_size=cfg["probe_size"], dormant_threshold=cfg["dormant_threshold"]),
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
        eval_mb_size=max(cfg["batch_size"], 256),
        device=cfg["device"],
        plugins=[*build_method(cfg), FiniteLossPlugin()],
        evaluator=evaluator,
    )
    for plugin in strategy.plugins:
        if hasattr(plugin, "build"):
            plugin.build(strategy)  # unit discovery errors surface before training
    return strategy


# ---- metric names -------------------------------------------------------------------------

_AVALANCHE = {
    "Top1_Acc_Exp": "accuracy",
    "Top1_Acc_Stream": "accuracy",
    "Top1_Acc_Epoch": "accuracy",
    "Loss_Exp": "loss",
    "Loss_Stream": "loss",
    "Loss_Epoch": "loss",
}


def scheme_name(name: str, experience: int) -> str | None:
    """Our name for an Avalanche metric name, or None when it is not current (a train
    metric of an earlier experience) or not ours to log."""
    parts = name.split("/")
    phase = next((p for p in parts if p.endswith("_phase")), None)
    exp = next((p for p in parts if p.startswith("Exp") and p[3:].isdigit()), None)
    core = [
        p
        for p in parts
        if p not in (phase, exp) and not p.endswith("_stream") and not p.startswith("Task")
    ]
    if phase == "train_phase":
        if exp is not None and int(exp[3:]) != experience:
            return None
        suffix, group = "", "train"
    else:
        suffix, group = (f".exp{int(exp[3:]):03d}" if exp else ""), "eval"
    family, rest = core[0], core[1:]
    if family in _AVALANCHE:
        return f"{group}.{_AVALANCHE[family]}{suffix}"
    if family == "Ponder":
        return f"{group}.{rest[0]}{suffix}"
    if family == "Difficulty" and group == "eval":
        if rest[0] == "halting_step":
            return f"eval.halting_step.{rest[1]}{suffix}"
        if rest[0] == "halting_step_spearman":
            return f"eval.difficulty_spearman{suffix}"
        return None
    if family == "Plasticity" and group == "train":
        return "plasticity." + "_".join(rest)
    return None


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
    for index in range(start, total):
        began = time.perf_counter()
        experience = benchmark.train_stream[index]
        trained = emitted_by(strategy.evaluator, strategy.train, experience, **order)
        evaluated = emitted_by(
            strategy.evaluator, strategy.eval, benchmark.test_stream[: index + 1]
        )
        values = {}
        for source, phase in ((trained, "train_phase"), (evaluated, "eval_phase")):
            for avalanche_name, value in source.items():
                if phase in avalanche_name and isinstance(value, float | int):
                    name = scheme_name(avalanche_name, index)
                    if name is not None:
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
        label = f"[{cfg['method']} seed {seed}] "
        print(label + progress_line(index, total, values, time.perf_counter() - began), flush=True)

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


def progress_line(index: int, total: int, values: dict, seconds: float) -> str:
    def show(name: str, fmt: str = ".3f") -> str:
        value = values.get(name)
        return "   -  " if value is None or math.isnan(value) else format(value, fmt)

    new = f"eval.accuracy.exp{index:03d}"
    return (
        f"experience {index + 1}/{total}  difficulty {show('stream.difficulty', '.1f')}  "
        f"accuracy new {show(new)} seen {show('eval.accuracy')}  "
        f"halting {show(f'eval.halting_step_mean.exp{index:03d}', '.2f')}  "
        f"replaced {show('plasticity.units_replaced', '.0f')}  ({seconds:.1f} s)"
    )


if __name__ == "__main__":
    _runs.main(ex)
