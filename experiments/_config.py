"""Validation of Sacred config values: each check names the key and its allowed values.

Experiments call these at the top of their main function, before any work, so a bad
value stops the run with a message like ``config 'size' must be in [2, inf), got 1``.

Two checks must run before Sacred's own handling of the config, so :func:`guard` installs
them as a config hook (which runs before Sacred seeds its RNGs and before it rejects
unknown keys): a key that is no key of the experiment fails with the closest valid key
suggested, and ``seed`` must be an integer in :data:`SEED_RANGE` (Sacred fails on other
values inside numpy, or with an ``AssertionError``, without naming the key).

:func:`guard` also makes the config scope the whole documentation: ``print_config`` shows
each key's whole comment (Sacred shows only the line of the key, and our scopes continue
long comments on lines starting ``#   ``), and ``print_named_configs`` describes every
named config (Sacred shows only docstrings; ours have leading comments, and those
:func:`choice_configs` makes get a description of the value they set).
"""

from __future__ import annotations

import ast
import difflib
import inspect
import io
import math
import os
import pprint
import textwrap
import tokenize
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace

import torch
from sacred import Experiment
from sacred import commands as sacred_commands
from sacred.config.config_scope import ConfigScope
from sacred.utils import ConfigAddedError

from experiments._runs import check_resumable
from ponderlife._checks import check_choice, check_int, check_range
from ponderlife.checkpoint import load_checkpoint

#: Learning rates every experiment accepts: (0, 1e3]. A step size beyond float32's range
#: (3.4e38) crashes inside the optimizer ("value cannot be converted to type float without
#: overflow"), far smaller ones overflow the weights within a few updates, and 1e3 is well
#: above any useful step for these models.
LEARNING_RATE_MAX = 1e3

#: Seeds every experiment accepts: the integers in [0, 2**32 − 1], what numpy's legacy
#: ``np.random.seed`` (which Sacred seeds) takes; torch and Python take a superset.
SEED_RANGE = (0, 2**32 - 1)


def _name(key: str) -> str:
    return f"config '{key}'"


def _number(cfg: dict, key: str, low=None, high=None, *, low_open=False, high_open=False):
    """A finite number in the interval (no config value of ours means anything at ±inf)."""
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{_name(key)} must be a number, got {value!r}")
    check_range(
        _name(key), value, low, high, low_inclusive=not low_open, high_inclusive=not high_open
    )
    if isinstance(value, float) and math.isinf(value):  # in an interval open on that side
        raise ValueError(f"{_name(key)} must be a finite number, got {value!r}")
    return value


def _optional_number(cfg: dict, key: str):
    return None if cfg[key] is None else _number(cfg, key)


def _integer(cfg: dict, key: str, low: int | None = None, high: int | None = None) -> int:
    return check_int(_name(key), cfg[key], low, high)


def _choice(cfg: dict, key: str, choices: Iterable[str]) -> str:
    return check_choice(_name(key), cfg[key], choices)


def _learning_rate(cfg: dict, key: str = "learning_rate") -> float:
    """A finite step size in (0, :data:`LEARNING_RATE_MAX`]."""
    return _number(cfg, key, 0.0, LEARNING_RATE_MAX, low_open=True)


def _seed(cfg: dict, key: str = "seed", *, optional: bool = False) -> int | None:
    """An integer in :data:`SEED_RANGE` (or None when ``optional``)."""
    value = cfg[key]
    if optional and value is None:
        return None
    low, high = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        allowed = f"an integer in [0, 2**32 - 1] = [{low}, {high}]"
        raise ValueError(
            f"{_name(key)} must be {allowed}{' or None' if optional else ''}, got {value!r}"
        )
    return value


def _boolean(cfg: dict, key: str) -> bool:
    """True or False itself (``'no'``, 0 or 1 are refused, not read as truth values)."""
    value = cfg[key]
    if not isinstance(value, bool):
        raise ValueError(f"{_name(key)} must be true or false, got {value!r}")
    return value


def _entries(cfg: dict, key: str, check_entry: Callable[[dict, str], object]) -> list:
    """A non-empty list whose every entry passes ``check_entry({name: entry}, name)``
    (e.g. ``lambda c, k: check.choice(c, k, ("easy", "hard"))``), with the entries named
    ``'<key> entry'`` in messages."""
    value = cfg[key]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{_name(key)} must be a non-empty list, got {value!r}")
    name = f"{key} entry"
    for entry in value:
        check_entry({name: entry}, name)
    return list(value)


def available_devices() -> list[str]:
    """The torch devices a model can be put on here: ``cpu``, and ``cuda``, ``cuda:<i>``
    for each visible GPU (``mps`` on Apple silicon)."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def _device(cfg: dict, key: str = "device") -> str:
    """A torch device that exists on this machine (``cuda:3`` needs four GPUs)."""
    value = cfg[key]
    available = available_devices()
    listed = ", ".join(repr(d) for d in available)
    if "cuda" not in available:
        listed += " (no CUDA GPU is visible)"
    problem = None
    if not isinstance(value, str):
        problem = "is no device name"
    else:
        try:
            device = torch.device(value)
        except RuntimeError:
            problem = "cannot be parsed as a torch device"
        else:
            known = device.type == "cpu" or (
                device.type in available
                and (device.index is None or f"{device.type}:{device.index}" in available)
            )
            problem = None if known else "does not exist on this machine"
    if problem is not None:
        raise ValueError(
            f"{_name(key)} must be a device of this machine, one of {listed}; got {value!r}, "
            f"which {problem}"
        )
    return value


def _resume_from(cfg: dict, experiment: str, key: str = "resume_from") -> Path | None:
    """None, or a run folder / checkpoint file of ``experiment`` that may be continued
    with ``cfg`` (:func:`experiments._runs.check_resumable`) and whose checkpoint is
    intact: a run of another experiment, a live or finished run, or a checkpoint that is
    missing, corrupt or unreadable, fails now rather than after the stream and model are
    built."""
    value = cfg[key]
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise ValueError(
            f"{_name(key)} must be a run folder or a checkpoint file (a path), got {value!r}"
        )
    if not Path(value).exists():
        raise ValueError(f"{_name(key)}: {value!r} does not exist")
    try:
        load_checkpoint(check_resumable(value, experiment, cfg), experiment=experiment)
    except (ValueError, OSError) as error:
        raise type(error)(f"{_name(key)}: {error}") from error
    return Path(value)


check = SimpleNamespace(
    number=_number,
    optional_number=_optional_number,
    integer=_integer,
    choice=_choice,
    learning_rate=_learning_rate,
    seed=_seed,
    boolean=_boolean,
    entries=_entries,
    device=_device,
    resume_from=_resume_from,
)


# ---- checks before Sacred's own --------------------------------------------------------


class UnknownConfigKeyError(ConfigAddedError, ValueError):
    """A config key the experiment does not have; the message suggests the closest ones.

    A ``ConfigAddedError`` (what Sacred raises for unknown keys, printed without a
    traceback on the command line) and a ``ValueError`` (like every other config check)."""

    def __init__(self, keys: list[str], message: str, config: dict):
        super().__init__(keys, message=message, config=config, print_suggestions=False)


def declared_keys(ex: Experiment) -> set[str]:
    """Every key ``ex`` accepts: those its config scopes set, the arguments of its
    captured functions (what Sacred accepts as added keys) and ``seed``."""
    keys = {"seed"}
    for scope in ex.configurations:
        keys.update(scope())
    for function in ex.captured_functions:
        keys.update(function.signature.arguments)
    return keys - ConfigAddedError.SPECIAL_ARGS


def unknown_keys_message(ex: Experiment, keys: Iterable[str]) -> str:
    """``config 'lerning_rate' is not a key of experiment 'parity'; did you mean
    'learning_rate'?``, one line per unknown key."""
    known = sorted(declared_keys(ex))
    lines = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = (
            "did you mean " + " or ".join(repr(k) for k in close) + "?"
            if close
            else "no key is close"
        )
        lines.append(f"{_name(key)} is not a key of experiment {ex.path!r}; {hint}")
    lines.append(f"(`python -m experiments.{ex.path} print_config` lists every key)")
    return "\n".join(lines)


def _pre_sacred_checks(ex: Experiment) -> Callable:
    def config_hook(config, command_name, logger):
        unknown = sorted(set(config) - declared_keys(ex))
        if unknown:
            raise UnknownConfigKeyError(unknown, unknown_keys_message(ex, unknown), config)
        if config.get("seed") is not None:
            _seed(config)
        return {}

    return config_hook


def guard(ex: Experiment) -> Experiment:
    """Install, once, the checks that must precede Sacred's handling of the config (see
    the module docstring): they then apply to the command line, ``ex.run(...)``, ``resume``
    and sweeps alike; and replace ``print_config`` and ``print_named_configs`` by versions
    that show whole comments. Returns ``ex``."""
    if not getattr(ex, "_ponderlife_guarded", False):
        ex.config_hook(_pre_sacred_checks(ex))
        _document_commands(ex)
        ex._ponderlife_guarded = True
    return ex


#: What each value of a key that :func:`choice_configs` makes named configs of means, for
#: ``print_named_configs`` (shared: stream, parity and bit_flipping use the same names).
CHOICES = {
    "method": {
        "bp": "plain backprop, no plasticity method",
        "cbp": "continual backprop: replace mature low-utility units (Dohare et al.)",
        "l2": "decoupled weight decay towards zero after every update",
        "shrink_perturb": "shrink the weights and add Gaussian noise after every update "
        "(Ash & Adams)",
        "l2_init": "decoupled pull towards the initial weights (Kumar et al.)",
        "redo": "recycle τ-dormant units every redo_every updates (ReDo, Sokar et al.)",
        "upgd": "utility-gated perturbed gradient descent, its own optimizer (Elsayed & Mahmood)",
        "weight_clipping": "clip every weight into ±clip_scale × its initial distribution's "
        "bound after every update (Elsayed et al. 2024)",
        "layer_norm_l2": "l2 on a layer-normalised step function (Lyle et al. 2024)",
    },
    "model": {
        "pondernet": "PonderNet, a learned halting distribution over the steps (Banino et al.)",
        "act": "Adaptive Computation Time (Graves)",
        "fixed": "the step function unrolled fixed_steps times, no halting",
    },
}


def choice_configs(ex, key: str, choices: Iterable[str], extra: dict | None = None) -> None:
    """One named config per allowed value of ``key`` (``with cbp`` sets ``method="cbp"``),
    plus any ``extra`` settings for a value (``{"upgd": {"learning_rate": 1e-2}}``). Each
    is described for ``print_named_configs`` as ``method = cbp: <what it is>`` (from
    :data:`CHOICES`), with the extra settings it adds."""
    for value in choices:
        settings = (extra or {}).get(value, {})
        ex.add_named_config(value, {key: value, **settings})
        meaning = CHOICES.get(key, {}).get(value)
        doc = f"{key} = {value}" + (f": {meaning}" if meaning else "")
        if settings:
            doc += "; also " + ", ".join(f"{k} = {v!r}" for k, v in settings.items())
        # Sacred prints a named config's __doc__; a ConfigDict has none of its own.
        ex.named_configs[value].__doc__ = doc


# ---- print_config and print_named_configs: whole comments -------------------------------

#: How our config scopes continue a key's comment on the lines below it.
CONTINUATION = "#   "
#: Sacred's print_config puts a short key's comment in this column.
_DOC_COLUMN = 37


def _source(function: Callable) -> tuple[ast.FunctionDef, list[str], dict[int, str]]:
    """A function's definition, its source lines and its comments by line (1-based)."""
    source = textwrap.dedent(inspect.getsource(function))
    comments = {
        token.start[0]: token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    return ast.parse(source).body[0], source.splitlines(), comments


def _continued(lines: list[str], after: int) -> list[str]:
    """The ``#   `` comment lines right below line ``after`` (1-based), as text."""
    found = []
    for line in lines[after:]:
        if not line.strip().startswith(CONTINUATION):
            break
        found.append(line.strip()[1:].strip())
    return found


def key_comments(scope: ConfigScope) -> dict[str, list[str]]:
    """Every key's whole comment in a config scope, one entry per source line: the line
    Sacred takes (the comment on the key's line), then the ``#   `` lines below it. A
    standalone ``# seed ...`` comment documents Sacred's own key ``seed``, which no scope
    assigns (Sacred's doc for it is generic)."""
    # ConfigScope keeps its function and Sacred's docs (the first lines) in private
    # attributes, with no public accessor (Sacred 0.8.7, pinned in constraints.txt).
    function, lines, comments = _source(scope._func)
    documented: dict[str, list[str]] = {}
    for statement in function.body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                name = getattr(target, "id", None)
                if name is None or name in documented or name not in scope._var_docs:
                    continue  # only the first assignment, as Sacred; undocumented: as is
                first = scope._var_docs[name]
                # The continuation follows the whole statement (a value may span lines).
                documented[name] = [first, *_continued(lines, statement.end_lineno)]
    for number, comment in comments.items():
        text = comment[1:].strip()
        if text.split(" ", 1)[0] == "seed" and lines[number - 1].strip() == comment:
            documented["seed"] = [text, *_continued(lines, number)]
    return documented


def _multiline_doc(comment: list[str], key: str, value) -> str:
    """``comment`` as Sacred's print_config doc: the first line where Sacred puts it, the
    others below it, aligned and marked ``#   `` as in the source."""
    assign = f"  {key} = {pprint.PrettyPrinter().pformat(value)}"
    column = _DOC_COLUMN if len(assign) <= _DOC_COLUMN - 2 else len(assign) + 4
    return comment[0] + "".join(f"\n{' ' * column}{CONTINUATION}{line}" for line in comment[1:])


def leading_comment(scope: ConfigScope) -> str:
    """The comment lines that open a named config's body, joined into one line."""
    function, lines, _ = _source(scope._func)
    head = [line.strip() for line in lines[function.lineno : function.body[0].lineno - 1]]
    return " ".join(line.lstrip("#").strip() for line in head if line.startswith("#"))


def _document_commands(ex: Experiment) -> None:
    """Replace Sacred's print_config and print_named_configs (registered by Experiment)
    by versions that show the whole comments. Both read the scopes when they run, so they
    see every scope and named config added after :func:`guard`."""

    def print_config(_run):
        """Print the configuration, each key with its whole comment, and exit."""
        docs = _run.config_modifications.docs
        for scope in ex.configurations:
            for key, comment in key_comments(scope).items():
                if key in _run.config:
                    docs[key] = _multiline_doc(comment, key, _run.config[key])
        sacred_commands.print_config(_run)

    def print_named_configs():
        """Print the named configs, each with its description, and exit."""
        for named in ex.named_configs.values():
            if not (named.__doc__ or "").strip() and isinstance(named, ConfigScope):
                named.__doc__ = leading_comment(named)
        sacred_commands.print_named_configs(ex)()

    ex.command(print_config, unobserved=True)
    ex.command(print_named_configs, unobserved=True)
