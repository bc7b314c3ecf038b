"""Registries of an experiment's interchangeable parts: each part is one registration.

A study has axes (the stream, the plasticity method, the model) whose values are named
parts. Each part is registered once, with everything the experiment needs to know about it
next to its builder::

    @STREAMS.register(
        "parity",
        doc="parity whose range of nonzero entries alternates easy / hard",
        keys={"parity_size": Key(16, "parity: P, length of the vectors; int ≥ 2", ...)},
        check=check_parity,                # cross-key checks, run when the part is chosen
        named_config={"step": "rnn"},      # `with parity` also sets these
    )
    def parity(cfg, seed): ...

and the experiment only looks names up: the choice key (``stream``) accepts exactly the
registered names, its documentation lists them, ``with <name>`` is a named config that
selects the part, and the part's own keys become config keys of the experiment, documented
in ``print_config`` and checked before any work. A user's script can register its own
parts the same way before it calls ``ex.run(...)`` or ``experiments._runs.main(ex)``.

Keys are :class:`Key` values (default, documentation, check) rather than commented
assignments in a config function: Sacred reads comments from a function's source file, and
a part registered from a notebook or an ``exec``-ed snippet has none.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sacred import Experiment
from sacred.config.config_dict import ConfigDict
from sacred.config.config_scope import ConfigScope

from experiments import _runs
from ponderlife._checks import check_choice

__all__ = ["Entry", "Key", "RegisteredKeys", "Registry"]


@dataclass(frozen=True)
class Key:
    """One config key of a registered part.

    ``default`` is its value unless a config update or named config sets it; ``doc`` what
    ``print_config`` shows beside it (meaning, unit, range); ``check(cfg, key)`` raises
    ``ValueError`` naming the key when ``cfg[key]`` is not allowed (the helpers of
    ``experiments._config.check`` have that signature, e.g. ``lambda c, k: check.number(c,
    k, 0.0)``). Keys are checked whichever part is chosen: a bad value fails even where it
    is unused, so no typo waits for the run that needs it.
    """

    default: Any
    doc: str
    check: Callable[[dict, str], object] | None = None
    #: True for a key added after runs of the experiment were made, whose default keeps
    #: what those runs computed: at its default it is left out of a run's identity
    #: (:func:`experiments._runs.added_key`), so their folders still match.
    added: bool = False


@dataclass(frozen=True)
class Entry:
    """A registered part: its name, builder, keys, check, named-config settings, one-line
    description and the registry's options (e.g. a stream's ``transitions``)."""

    name: str
    build: Callable
    keys: Mapping[str, Key]
    check: Callable[[dict], None] | None
    named_config: Mapping[str, Any]
    doc: str
    options: Mapping[str, Any] = field(default_factory=dict)


class _NamedConfig(ConfigDict):
    """A named config with a description, which ``print_named_configs`` shows: what it
    sets, ``stream = parity: <doc>; also step = 'rnn', hidden_size = 128``."""

    def __init__(self, key: str, name: str, doc: str, settings: Mapping[str, Any]):
        super().__init__({key: name, **settings})
        text = f"{key} = {name}" + (f": {doc}" if doc else "")
        if settings:
            text += "; also " + ", ".join(f"{k} = {v!r}" for k, v in settings.items())
        self.__doc__ = text


def _no_assignments():
    """The body of :class:`RegisteredKeys` as Sacred sees it: its keys are not assignments."""


class RegisteredKeys(ConfigScope):
    """The Sacred config scope of an experiment's registries: every choice key and every
    key of every registered part, with its documentation. Evaluated when a run's config is
    built, so parts registered after the experiment was defined are included.

    A ConfigScope over an empty function, so that code reading every scope of an
    experiment as a ConfigScope (its source, its comments) accepts it and finds no
    assignments there; the keys and their docs come from :meth:`__call__`."""

    def __init__(self):
        super().__init__(_no_assignments)
        self.registries: list[Registry] = []

    def keys(self) -> dict[str, Key]:
        found: dict[str, Key] = {}
        for registry in self.registries:
            found.update(registry.declared_keys())
        return found

    def __call__(self, fixed=None, preset=None, fallback=None):
        keys = self.keys()
        summary = ConfigDict({k: copy.deepcopy(v.default) for k, v in keys.items()})(
            fixed, preset, fallback
        )
        summary.docs.update({name: key.doc for name, key in keys.items()})
        return summary


def _scope_of(ex: Experiment) -> RegisteredKeys:
    """The experiment's :class:`RegisteredKeys` scope, added to its configurations once."""
    for scope in ex.configurations:
        if isinstance(scope, RegisteredKeys):
            return scope
    scope = RegisteredKeys()
    ex.configurations.append(scope)
    return scope


def _other_keys(ex: Experiment) -> set[str]:
    """Keys the experiment's own config scopes (not the registries) declare."""
    keys: set[str] = set()
    for scope in ex.configurations:
        if not isinstance(scope, RegisteredKeys):
            keys.update(scope())
    return keys


class Registry:
    """The parts of one axis of an experiment.

    Args:
        ex: the Sacred experiment the parts belong to.
        key: the config key that chooses a part (``"stream"``); None for a registry whose
            every part applies to every run (extra metrics), which has no choice key and no
            named configs.
        what: what a part is, for documentation and messages (``"stream"``).
        default: the part chosen by default (registered before the first run).
        options: the options a part may declare at registration, with their defaults
            (``{"transitions": ("abrupt",)}``); any other option is refused.
    """

    def __init__(
        self,
        ex: Experiment,
        key: str | None,
        *,
        what: str,
        default: str | None = None,
        options: Mapping[str, Any] | None = None,
    ):
        self.ex, self.key, self.what, self.default = ex, key, what, default
        self.option_defaults = dict(options or {})
        self._entries: dict[str, Entry] = {}
        self._scope = _scope_of(ex)
        self._scope.registries.append(self)

    # ---- registering ------------------------------------------------------------------------

    def register(
        self,
        name: str,
        build: Callable | None = None,
        *,
        doc: str = "",
        keys: Mapping[str, Key] | None = None,
        check: Callable[[dict], None] | None = None,
        named_config: Mapping[str, Any] | None = None,
        **options,
    ):
        """Register ``build`` as the part ``name`` (usable as a decorator when ``build`` is
        left out). ``keys`` are the part's own config keys (a key object shared by several
        parts, e.g. ``init`` of cbp and redo, is declared once); ``check(cfg)`` runs its
        cross-key checks when the part is chosen; ``named_config`` holds what ``with
        <name>`` sets besides the choice key. Returns ``build``."""
        if build is None:
            return lambda function: self.register(
                name,
                function,
                doc=doc,
                keys=keys,
                check=check,
                named_config=named_config,
                **options,
            )
        self._refuse_clashes(name, dict(keys or {}), options)
        entry = Entry(
            name=name,
            build=build,
            keys=dict(keys or {}),
            check=check,
            named_config=dict(named_config or {}),
            doc=doc,
            options={**self.option_defaults, **options},
        )
        self._entries[name] = entry
        for key, spec in entry.keys.items():
            if spec.added:
                _runs.added_key(self.ex.path, key, spec.default)
        if self.key is not None:
            self.ex.named_configs[name] = _NamedConfig(self.key, name, doc, entry.named_config)
        return build

    def _refuse_clashes(self, name: str, keys: dict[str, Key], options: dict) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{self.what} name must be a Python identifier, got {name!r}")
        if name in self._entries:
            raise ValueError(
                f"{self.what} {name!r} is registered already; unregister it first "
                f"(`{type(self).__name__}.unregister({name!r})`) to replace it"
            )
        if self.key is not None and name in self.ex.named_configs:
            raise ValueError(
                f"{self.what} name {name!r} is taken: experiment {self.ex.path!r} has a named "
                "config of that name; pick another name"
            )
        unknown = sorted(set(options) - set(self.option_defaults))
        if unknown:
            allowed = ", ".join(sorted(self.option_defaults)) or "none"
            raise TypeError(f"unknown {self.what} option(s) {unknown}; allowed: {allowed}")
        mine = self._scope.keys()
        fixed = _other_keys(self.ex)
        for key, spec in keys.items():
            if not isinstance(spec, Key):
                raise TypeError(
                    f"config '{key}' of {self.what} {name!r} must be a Key, got {spec!r}"
                )
            if key in fixed or key in {r.key for r in self._scope.registries}:
                raise ValueError(
                    f"config '{key}' of {self.what} {name!r} is a key of experiment "
                    f"{self.ex.path!r} already; name the part's key differently"
                )
            if key in mine and mine[key] is not spec:
                raise ValueError(
                    f"config '{key}' of {self.what} {name!r} is declared by another part "
                    "with another default or doc; share that part's Key object or rename it"
                )

    def unregister(self, name: str) -> None:
        """Remove the part ``name``, its named config and the keys no other part shares."""
        self._entries.pop(self._known(name))
        if self.key is not None:
            self.ex.named_configs.pop(name, None)

    # ---- looking up ------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def _known(self, name: str) -> str:
        if name not in self._entries:
            listed = ", ".join(repr(n) for n in self._entries)
            raise ValueError(f"{self.what} {name!r} is not registered; registered: {listed}")
        return name

    def __getitem__(self, name: str) -> Entry:
        return self._entries[self._known(name)]

    def chosen(self, cfg: dict) -> Entry:
        """The part ``cfg`` chooses; ``ValueError`` naming the choice key and the registered
        names otherwise."""
        return self._entries[check_choice(f"config '{self.key}'", cfg[self.key], self.names)]

    # ---- config ----------------------------------------------------------------------------

    def choice_doc(self) -> str:
        """The documentation of the choice key: the registered names (their descriptions
        are the named configs', which ``print_named_configs`` shows)."""
        names = ", ".join(f'"{name}"' for name in self._entries)
        return (
            f"the {self.what}: {names}; `with <{self.what}>` chooses one and sets what it "
            "needs (print_named_configs describes each)"
        )

    def declared_keys(self) -> dict[str, Key]:
        """The choice key (when there is one) and every registered part's keys."""
        keys: dict[str, Key] = {}
        if self.key is not None:
            keys[self.key] = Key(self.default, self.choice_doc())
        for entry in self.entries():
            keys.update(entry.keys)
        return keys

    def check_keys(self, cfg: dict) -> None:
        """Every registered part's key checks (whichever part is chosen)."""
        checked = set()
        for entry in self.entries():
            for key, spec in entry.keys.items():
                if spec.check is not None and key not in checked:
                    spec.check(cfg, key)
                    checked.add(key)

    def check_chosen(self, cfg: dict) -> Entry:
        """The chosen part (:meth:`chosen`), after its own cross-key check."""
        entry = self.chosen(cfg)
        if entry.check is not None:
            entry.check(cfg)
        return entry
