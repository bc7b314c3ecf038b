"""Run plumbing shared by the Sacred experiments: where runs live, run folders and their
locks, a run's identity, metric histories that checkpoints carry, and ``resume``.

Resume is a property of the run folder, the same for every experiment:

- A checkpoint carries the run's whole metric history (:class:`History`), and the run that
  continues it re-logs that history first, so the newest run of a chain holds everything.
- The continuing run is stored beside the one it continues, as ``<name>.r1``, ``<name>.r2``
  … (the *chain* of ``<name>``), and marks it ``"superseded_by"`` in its ``run.json``;
  analysis leaves superseded runs out.
- A run that died before its own first checkpoint continues from the nearest earlier
  checkpoint of its chain. Continuing a COMPLETED or superseded run with its own config,
  or a run that is still alive, is refused before any work.
- While a run lives, its process holds an exclusive lock on ``<run folder>/.lock`` (which
  names the process): the kernel drops it when the process dies, however it died, so a
  folder whose status is RUNNING but whose lock is free belongs to a dead run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from sacred import Experiment
from sacred.observers import FileStorageObserver

from experiments import _tensorboard
from ponderlife import configure_threads

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no run locks, every RUNNING run is dead
    fcntl = None

#: The config key through which every experiment continues a run.
RESUME_KEY = "resume_from"


def start(config: dict, seed: int, validate: Callable[[dict], None]) -> dict:
    """The opening of every experiment's main: the config as a plain dict, validated before
    any work, torch's thread count set and its global RNG seeded."""
    cfg = dict(config)
    validate(cfg)
    configure_threads(cfg["num_threads"])
    torch.manual_seed(seed)
    return cfg


def runs_root(experiment: str) -> Path:
    """``runs/<experiment>`` (or ``$PONDERLIFE_RUNS/<experiment>``), absolute."""
    return (Path(os.environ.get("PONDERLIFE_RUNS", "runs")) / experiment).absolute()


def run_directory(run) -> Path | None:
    """The FileStorageObserver folder of a running Sacred run, if it has one."""
    for observer in run.observers:
        if isinstance(observer, FileStorageObserver):
            return Path(observer.dir)
    return None


def checkpoint_path(resume_from: str | os.PathLike) -> Path:
    """A run folder's ``checkpoint.pt``, or the file itself (e.g. the run's
    ``checkpoint.previous.pt``)."""
    path = Path(resume_from)
    return path / "checkpoint.pt" if path.is_dir() else path


def run_folder(resume_from: str | os.PathLike) -> Path:
    """The run folder of a run folder or of a checkpoint file in one."""
    path = Path(resume_from)
    return path if path.is_dir() else path.parent


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: Path, value: dict) -> None:
    """Replace ``path`` atomically (a reader never sees half a file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2))
    os.replace(temporary, path)


def experiment_of(resume_from: str | os.PathLike) -> str | None:
    """The experiment a run folder (or a checkpoint file in one) belongs to, from Sacred's
    ``run.json``; None when there is no readable ``run.json``."""
    record = _read_json(run_folder(resume_from) / "run.json") or {}
    try:
        return record["experiment"]["name"]
    except (KeyError, TypeError):
        return None


def check_owner(resume_from: str | os.PathLike, experiment: str) -> None:
    """Raise ``ValueError`` when ``resume_from`` is a run of another experiment, saying
    which one and how to continue it."""
    owner = experiment_of(resume_from)
    if owner is not None and owner != experiment:
        raise ValueError(
            f"{resume_from} is a run of experiment {owner!r}, not {experiment!r}: continue "
            f"it with `python -m experiments.{owner} resume {resume_from}`"
        )


# ---- a run's identity and its chain of folders --------------------------------------------


#: Per experiment, the keys added after runs of it existed, with the default under which
#: a run computes what it computed before the key existed (see :func:`added_key`).
ADDED_KEYS: dict[str, dict[str, object]] = {}


def added_key(experiment: str, key: str, default: object) -> None:
    """Declare ``key`` of ``experiment`` as added to a config that runs were made with: a
    run whose ``key`` holds ``default`` keeps the identity it had before the key existed, so
    sweeps still find (and skip or resume) the runs made before."""
    ADDED_KEYS.setdefault(experiment, {})[key] = default


def _added_keys(experiment: str) -> dict[str, object]:
    """The :func:`added_key` keys of ``experiment``, declared when its module is imported:
    imported here if it is one of ``experiments/`` (a fresh worker process computes
    identities before it runs anything)."""
    if experiment not in ADDED_KEYS and importlib.util.find_spec(f"experiments.{experiment}"):
        importlib.import_module(f"experiments.{experiment}")
    return ADDED_KEYS.get(experiment, {})


def identity(experiment: str, config: dict) -> str:
    """The SHA-256 of (experiment, full config with its seed, less ``resume_from`` and the
    :func:`added_key` keys at their defaults): two runs with one identity compute the same
    thing."""
    added = _added_keys(experiment)
    body = {
        key: value
        for key, value in config.items()
        if key != RESUME_KEY and not (key in added and value == added[key])
    }
    text = json.dumps(
        {"experiment": experiment, "config": body}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def stored_config(folder: Path) -> dict | None:
    return _read_json(Path(folder) / "config.json")


def status_of(folder: Path) -> str:
    """Sacred's status of a run folder (``RUNNING`` … ``COMPLETED``), ``UNKNOWN`` without
    a readable ``run.json``."""
    return (_read_json(Path(folder) / "run.json") or {}).get("status", "UNKNOWN")


def superseded_by(folder: Path) -> str | None:
    """The name of the run that continued this one, if one did."""
    return (_read_json(Path(folder) / "run.json") or {}).get("superseded_by")


def mark_superseded(folder: Path, by: str) -> None:
    """Record in ``folder``'s ``run.json`` that run ``by`` continues it. A run still marked
    RUNNING there died without saying so (no live process holds its lock, or it would not
    be continued): it becomes INTERRUPTED, stopped at its last heartbeat."""
    path = Path(folder) / "run.json"
    record = _read_json(path) or {}
    record["superseded_by"] = by
    if record.get("status") == "RUNNING":
        record["status"] = "INTERRUPTED"
        record["stop_time"] = record.get("heartbeat")
    _write_json(path, record)


def chain_base(name: str) -> str:
    """``7.r2`` → ``7``: the first run of a chain."""
    base, sep, suffix = name.rpartition(".r")
    return base if sep and suffix.isdigit() else name


def chain(root: Path, base: str) -> list[Path]:
    """The existing folders of ``base``'s chain under ``root``, oldest first."""
    root = Path(root)
    found = [root / base] if (root / base).is_dir() else []
    numbered = []
    for path in root.glob(f"{base}.r*") if root.is_dir() else ():
        suffix = path.name[len(base) + 2 :]
        if path.is_dir() and suffix.isdigit():
            numbered.append((int(suffix), path))
    return found + [path for _, path in sorted(numbered)]


def next_in_chain(folder: Path) -> str:
    """The name of the run that continues ``folder`` (``7`` → ``7.r1``, ``7.r1`` → ``7.r2``;
    past the newest existing one)."""
    folder = Path(folder)
    base = chain_base(folder.name)
    links = chain(folder.parent, base)
    last = max((int(p.name.rpartition(".r")[2]) for p in links if p.name != base), default=0)
    return f"{base}.r{last + 1}"


# ---- run locks ----------------------------------------------------------------------------


def _lock_file(folder: Path) -> Path:
    return Path(folder) / ".lock"


def lock_holder(folder: Path) -> dict | None:
    """Who holds ``folder``'s run lock (``{"pid", "host", "since"}``), None when no live
    process does."""
    path = _lock_file(folder)
    if fcntl is None or not path.exists():
        return None
    with open(path, "r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(handle.read() or "{}")
            except ValueError:
                return {}
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


class RunLock:
    """The exclusive lock a live run holds on its folder (see the module docstring)."""

    def __init__(self, folder: Path):
        self.handle = open(_lock_file(folder), "a+")  # noqa: SIM115 - held for the run
        if fcntl is not None:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.handle.seek(0)
        self.handle.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        self.handle.write(json.dumps(holder))
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()  # closing drops the flock


class RunFolderObserver(FileStorageObserver):
    """Sacred's FileStorageObserver, plus the run lock: held from the run's start to its
    end (completed, failed or interrupted), or until its process dies."""

    lock: RunLock | None = None

    def started_event(self, *args, **kwargs):
        run_id = super().started_event(*args, **kwargs)
        self.lock = RunLock(Path(self.dir))
        return run_id

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def completed_event(self, *args, **kwargs):
        try:
            super().completed_event(*args, **kwargs)
        finally:
            self._release()

    def failed_event(self, *args, **kwargs):
        try:
            super().failed_event(*args, **kwargs)
        finally:
            self._release()

    def interrupted_event(self, *args, **kwargs):
        try:
            super().interrupted_event(*args, **kwargs)
        finally:
            self._release()


# ---- continuing a run ---------------------------------------------------------------------


def _earlier(folder: Path) -> Path | None:
    """The run (folder or checkpoint file) that ``folder``'s run continued, if any; a path
    that moved with its runs folder is looked up beside ``folder``."""
    previous = (stored_config(folder) or {}).get(RESUME_KEY)
    if previous is None:
        return None
    path = Path(previous)
    if path.exists():
        return path
    moved = folder.parent / run_folder(path).name
    if not moved.exists():
        return None
    return moved if path.name == run_folder(path).name else moved / path.name


def resume_checkpoint(resume_from: str | os.PathLike) -> Path:
    """The checkpoint that continuing ``resume_from`` starts from: the file itself, the
    folder's ``checkpoint.pt``, or, for a run that died before its first checkpoint, the
    nearest earlier checkpoint of its chain (the ``resume_from`` of the run it continued,
    and so on). ``ValueError`` when the chain has none."""
    path, visited = Path(resume_from), []
    while True:
        if path.is_file():
            return path
        if (path / "checkpoint.pt").exists():
            return path / "checkpoint.pt"
        visited.append(str(path))
        earlier = _earlier(path)
        if earlier is None or str(earlier) in visited:
            runs = " ← ".join(visited)
            raise ValueError(
                f"no checkpoint in {runs}: the run died before its first checkpoint and "
                "continues none that had one; start it again instead"
            )
        path = earlier


def check_resumable(resume_from: str | os.PathLike, experiment: str, config: dict) -> Path:
    """Refuse, before any work, to continue ``resume_from`` with ``config``:

    - when it is a run of another experiment;
    - when its run is alive (its process holds the run lock);
    - when it is a run folder whose run COMPLETED, or was already continued, with this same
      config (that would duplicate the run; a checkpoint *file* may still be named to redo
      a run from there, and a changed config, e.g. a longer stream, continues a finished
      run as a new one).

    Returns the checkpoint to load (:func:`resume_checkpoint`)."""
    check_owner(resume_from, experiment)
    folder = run_folder(resume_from)
    holder = lock_holder(folder)
    if holder is not None:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        raise ValueError(
            f"{folder} is still running ({who}): stop that process, or wait for it, first"
        )
    same = identity(experiment, stored_config(folder) or {}) == identity(experiment, config)
    if Path(resume_from).is_dir() and same:
        successor = superseded_by(folder)
        if successor is not None:
            raise ValueError(
                f"{folder} was already continued by run {successor!r}: resume "
                f"{folder.parent / successor} instead"
            )
        if status_of(folder) == "COMPLETED":
            raise ValueError(
                f"{folder} is COMPLETED: there is nothing to resume (continuing it with a "
                "changed config, e.g. more experiences or updates, starts a new run from "
                "its checkpoint)"
            )
    return resume_checkpoint(resume_from)


def continued(run, config: dict, experiment: str) -> None:
    """Called by a run once it has restored the state of ``config["resume_from"]``: mark
    that run superseded by this one when both have the same config (a resume; a changed
    config is a new run that starts from the checkpoint), and note where it came from."""
    previous = run_folder(config[RESUME_KEY])
    run.info["resumed_from"] = str(config[RESUME_KEY])
    directory = run_directory(run)
    same = identity(experiment, stored_config(previous) or {}) == identity(experiment, config)
    if directory is not None and same and previous.resolve() != directory.resolve():
        mark_superseded(previous, directory.name)


class History:
    """Every scalar a run logs, kept so that its checkpoints carry the whole history and
    the run that continues it re-logs that history first."""

    def __init__(self, run):
        self.run = run
        self.entries: dict[str, dict[str, list]] = {}

    def log(self, name: str, value: float, step: int) -> None:
        self.run.log_scalar(name, float(value), step)
        entry = self.entries.setdefault(name, {"steps": [], "values": []})
        entry["steps"].append(step)
        entry["values"].append(float(value))

    def replay(self, entries: dict[str, dict[str, list]]) -> None:
        """Re-log a checkpoint's history into this run."""
        for name, entry in entries.items():
            for step, value in zip(entry["steps"], entry["values"], strict=True):
                self.log(name, value, step)


def _continuation(experiment: str, target: str | os.PathLike) -> tuple[dict, str]:
    """What continuing ``target`` (a run folder, or a checkpoint file in one) runs: the
    run's stored config with ``resume_from`` set to ``target``, and the name of the next
    run of its chain (``7`` → ``7.r1``). ``ValueError`` when it cannot be continued
    (:func:`check_resumable`)."""
    target = Path(target)
    if not target.exists():
        raise ValueError(f"{target} does not exist")
    config = stored_config(run_folder(target))
    if config is None:
        check_owner(target, experiment)
        raise ValueError(f"{target}: no readable config.json; is it a run folder?")
    config[RESUME_KEY] = str(target.absolute())
    check_resumable(target, experiment, config)
    return config, next_in_chain(run_folder(target))


def resume(ex: Experiment, run_dir: str, options: dict | None = None):
    """Continue ``run_dir`` (a run folder, or a checkpoint file in one) as a new run with
    its stored config, stored beside it as the next run of its chain (``7`` → ``7.r1``).
    Refused before anything runs when :func:`check_resumable` refuses it."""
    config, name = _continuation(ex.path, run_dir)
    added = None
    if not any(isinstance(o, FileStorageObserver) for o in ex.observers):
        added = RunFolderObserver(str(run_folder(run_dir).absolute().parent))
        ex.observers.append(added)
    try:
        return ex.run(
            config_updates=config,
            options={"--id": name, **(options or {})},
        )
    finally:
        if added is not None:
            ex.observers.remove(added)


RESUME_USAGE = (
    "usage: python -m experiments.{name} resume <run folder or checkpoint> [Sacred flags]\n"
    "  continues the run with its stored config; Sacred flags such as -F <dir>, -m <url>, "
    "-u, -l <level> apply (config updates do not: a changed config is a new run, "
    "`with resume_from=<run folder> key=value ...`)"
)


def resume_command(ex: Experiment, argv: list[str]) -> list[str]:
    """The Sacred command line that continues ``argv[2]`` (``<prog> resume <run> [flags]``)
    with the run's stored config, in the run's own runs folder, as the next run of its
    chain; ``ValueError`` (before anything runs) when it cannot be continued."""
    if len(argv) < 3 or argv[2].startswith("-"):
        raise ValueError(RESUME_USAGE.format(name=ex.path))
    target, flags = Path(argv[2]), argv[3:]
    if "with" in flags:
        raise ValueError(RESUME_USAGE.format(name=ex.path))
    config, name = _continuation(ex.path, target)
    return [
        argv[0],
        "with",
        str((run_folder(target) / "config.json").absolute()),
        f"{RESUME_KEY}={config[RESUME_KEY]!r}",
        f"--id={name}",
        *flags,
    ]


def main(ex: Experiment, argv: list[str] | None = None) -> None:
    """Command line: ``resume <run> [Sacred flags]``, or Sacred's own commands, with runs
    stored under :func:`runs_root` (a resumed run beside the run it continues). Every
    experiment's command line also takes ``--tensorboard DIR`` (:mod:`experiments._tensorboard`)."""
    _tensorboard.add_option(ex)
    argv = list(sys.argv if argv is None else argv)
    root = runs_root(ex.path)
    if len(argv) >= 2 and argv[1] == "resume":
        try:
            command = resume_command(ex, argv)
        except ValueError as error:
            sys.exit(f"error: {error}")
        root, argv = run_folder(argv[2]).absolute().parent, command
    observer = RunFolderObserver(str(root))
    ex.observers.append(observer)
    try:
        return ex.run_commandline(argv)
    finally:
        ex.observers.remove(observer)
