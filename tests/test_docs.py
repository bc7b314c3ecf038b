"""Every code block of the READMEs and docs/*.md runs as written; each block is one test,
named ``<file>:<line of its opening fence>``.

``python`` blocks run in file order, one namespace per file (a block may use what an
earlier block of its file defined), with matplotlib's Agg backend, in a temporary working
directory per file; a file that mentions ``runs/`` finds there a ``runs/stream`` of four
COMPLETED runs of the real stream experiment (made once per session). Tracebacks point at
the Markdown file and line.

``bash`` blocks are checked command by command, as far as possible without long runs:

* ``.venv/bin/python -m experiments.<name> [print_config] [with named configs key=value]``
  (a Sacred experiment): the command line parses with Sacred's own parser, the command
  exists, and the config resolves (unknown keys fail) and passes the experiment's
  ``validate``. ``resume <run folder> [Sacred flags]``: only that the command parses.
* other ``-m`` modules: ``--help`` works and the arguments parse with the module's own
  ``argparse`` parser (nothing runs: the parse is intercepted); ``analysis.report`` also
  runs for real on the fixture runs. A ``...`` argument marks arguments left out.
* ``make <target>``: the target exists in the Makefile.
* ``jupytext`` / ``jupyter``: skipped with the reason below.
* bare ``python`` fails: README commands run from the repository root with the project
  venv (``.venv/bin/python``). Only blocks in a section about running on a cluster (its
  heading says "cluster"), where the project is installed into the cluster's own
  environment, may use ``python``.

A block opts out only with a visible marker as the last non-blank line before its fence,
``<!-- docs-test: skip (the reason) -->``; its test is then skipped with that reason
(``pytest -rs`` lists them). Commands in indented (unfenced) code blocks would escape all
this, so they fail too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import runpy
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_PROGRAMS = {
    "jupytext": "converts a notebook; tests/test_analysis.py executes the notebooks",
    "jupyter": "needs a Jupyter kernel; tests/test_analysis.py executes the notebooks",
}
RUN_FOR_REAL = {"analysis.report"}  # fast, and the fixture has the runs it reads
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")
SKIP_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*\((?P<reason>.+)\)\s*-->\s*$")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
BARE_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
VENV_PYTHON = ".venv/bin/python"


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    section: str  # the nearest heading above the block
    skip: str | None = None  # the reason given by a skip marker

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_files() -> list[Path]:
    """The READMEs (the repository's and each top-level folder's) and docs/*.md."""
    readmes = [
        path
        for path in sorted(ROOT.glob("*/README.md"))
        if not path.parent.name.startswith(".") and path.parent.name not in {"runs", "figures"}
    ]
    return [ROOT / "README.md", *readmes, *sorted((ROOT / "docs").glob("*.md"))]


def parse_blocks(path: Path) -> list[Block]:
    """Fenced code blocks of ``path`` (fences may be indented, as in list items)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, section, index = [], "", 0
    while index < len(lines):
        line = lines[index]
        opening = FENCE.match(line)
        if not opening:
            heading = HEADING.match(line)
            if heading:
                section = heading["title"]
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: code block never closed")
        body = [
            text[len(indent) :] if text.startswith(indent) else text
            for text in lines[index + 1 : end]
        ]
        previous = next((text for text in reversed(lines[:index]) if text.strip()), "")
        marker = SKIP_MARKER.match(previous)
        blocks.append(
            Block(
                path=path,
                line=index + 1,
                lang=opening["lang"].lower(),
                code="\n".join(body) + "\n",
                section=section,
                skip=marker["reason"] if marker else None,
            )
        )
        index = end + 1
    return blocks


ALL_BLOCKS = [block for path in doc_files() for block in parse_blocks(path)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang in {"python", "py"}]
BASH_BLOCKS = [block for block in ALL_BLOCKS if block.lang in {"bash", "sh", "shell"}]


# ---- fixtures: a working directory with a few finished stream runs ------------------------


@pytest.fixture(scope="session")
def docs_workdir(tmp_path_factory) -> Path:
    """The working directory of every block, with torch on one thread while they run: on 2
    busy cores torch's default of one thread per core made the Avalanche example of the
    README 12× slower (46 s instead of 3.8 s, measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path_factory.mktemp("docs")
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def stream_runs(tmp_path_factory) -> Path:
    """A ``runs/stream`` folder: bp and cbp × seeds 0 and 1, each a COMPLETED run of the
    real stream experiment (tiny config), so that figures have groups."""
    from sacred.observers import FileStorageObserver
    from tiny_configs import STREAM

    from experiments.stream import ex

    root = tmp_path_factory.mktemp("stream_runs") / "runs" / "stream"
    observer = FileStorageObserver(str(root))
    ex.observers.append(observer)
    try:
        for method in ("bp", "cbp"):
            for seed in (0, 1):
                run = ex.run(named_configs=[method], config_updates={**STREAM, "seed": seed})
                assert run.status == "COMPLETED"
    finally:
        ex.observers.remove(observer)
    return root


@pytest.fixture
def in_workdir(docs_workdir, monkeypatch, request):
    """``enter(block)``: work in the block's file's own directory (shared by the blocks of
    one file, apart from other files' outputs), holding a copy of the stream runs when the
    file mentions ``runs/``; with the Agg backend, and every figure closed afterwards."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    def enter(block: Block) -> Path:
        folder = docs_workdir / re.sub(r"\W+", "_", str(block.path.relative_to(ROOT)))
        if not folder.exists():
            folder.mkdir()
            if "runs/" in block.path.read_text(encoding="utf-8"):
                shutil.copytree(request.getfixturevalue("stream_runs"), folder / "runs/stream")
        monkeypatch.chdir(folder)
        return folder

    yield enter
    plt.close("all")


# ---- python blocks ------------------------------------------------------------------------


@dataclass
class FileRun:
    """The shared namespace of one file's python blocks and what happened to each."""

    namespace: dict = field(default_factory=dict)
    outcome: dict[int, BaseException | None] = field(default_factory=dict)  # line → error
    reported: set[int] = field(default_factory=set)  # lines whose own test has run


_FILE_RUNS: dict[Path, FileRun] = {}


def execute(block: Block, state: FileRun) -> None:
    # Padding with newlines makes the compiled line numbers those of the Markdown file.
    source = "\n" * block.line + block.code
    exec(compile(source, str(block.path), "exec"), state.namespace)


def run_in_order(block: Block) -> None:
    """Run ``block`` after every earlier python block of its file that has not run yet."""
    state = _FILE_RUNS.setdefault(
        block.path, FileRun(namespace={"__name__": f"docs:{block.path.name}"})
    )
    earlier = [b for b in PYTHON_BLOCKS if b.path == block.path and b.line < block.line]
    for other in earlier:
        if other.skip is None and other.line not in state.outcome:
            try:
                execute(other, state)
                state.outcome[other.line] = None
            except Exception as error:
                state.outcome[other.line] = error
        error = state.outcome.get(other.line)
        if error is not None:
            message = f"needs {other.name}, which fails: {type(error).__name__}: {error}"
            if other.line in state.reported:
                pytest.skip(message)  # its own test has already failed
            pytest.fail(message)
    state.reported.add(block.line)
    try:
        execute(block, state)
    except BaseException as error:
        state.outcome[block.line] = error
        raise
    state.outcome[block.line] = None


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.name)
def test_python_block_runs(block, in_workdir):
    if block.skip:
        pytest.skip(block.skip)
    in_workdir(block)
    run_in_order(block)


# ---- bash blocks --------------------------------------------------------------------------


def commands(block: Block) -> list[list[str]]:
    """The block's command lines as argument lists: continuation lines joined, comments and
    leading ``NAME=value`` environment assignments dropped."""
    joined = block.code.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words and ENV_ASSIGNMENT.match(words[0]):
            words = words[1:]
        if words:
            lines.append(words)
    return lines


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE))


class _Parsed(Exception):
    """Raised instead of returning from ``ArgumentParser.parse_args``: nothing runs."""


def run_module(module: str, args: list[str]) -> tuple[int, str]:
    """Run ``python -m module args`` in this process; (exit status, output)."""
    output = io.StringIO()
    saved = sys.argv
    sys.argv = [module, *args]
    try:
        with (
            contextlib.redirect_stdout(output),
            contextlib.redirect_stderr(output),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # runpy's "found in sys.modules" warning
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0, output.getvalue()
    except SystemExit as exit_:
        code = exit_.code
        return (code if isinstance(code, int) else (0 if code is None else 1)), (
            output.getvalue() + ("" if isinstance(code, int | None) else str(code))
        )
    finally:
        sys.argv = saved


def parse_with_argparse(module: str, args: list[str], monkeypatch) -> str:
    """Check that ``--help`` works and ``args`` parse, with the module's own parser."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    assert "ArgumentParser" in source, (
        f"{module} has no argparse command line; teach tests/test_docs.py to check it"
    )
    original = argparse.ArgumentParser.parse_args

    def intercept(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", intercept)
        status, text = run_module(module, ["--help"])
        assert status == 0 and "usage:" in text, f"{module} --help failed:\n{text}"
        try:
            status, text = run_module(module, args)
        except _Parsed as parsed:
            return f"parsed: {parsed.args[0]}"
    raise AssertionError(
        f"python -m {module} {shlex.join(args)}: the arguments do not parse "
        f"(exit {status}):\n{text}"
    )


def check_sacred(module, args: list[str]) -> str:
    """Parse a Sacred experiment's command line; resolve and validate its config."""
    from docopt import DocoptExit, docopt
    from sacred.arg_parser import get_config_updates

    ex = module.ex
    _, _, internal_usage = ex.get_usage(program_name=module.__name__)
    resume = args[:1] == ["resume"]
    if resume:
        # Only the shape: the run folder in the README is an example.
        assert len(args) >= 2 and not args[1].startswith("-"), "resume needs a run folder"
        assert "with" not in args[2:], "resume takes Sacred flags, not config updates"
        args = args[2:]
    try:
        parsed = docopt(internal_usage, args, default_help=False)
    except DocoptExit as error:
        raise AssertionError(f"Sacred cannot parse {shlex.join(args)}: {error}") from None
    command = parsed.get("COMMAND")
    assert command is None or command in dict(ex.gather_commands()), f"no command {command!r}"
    if resume:
        return "resume command parses (its run folder is an example)"
    updates, named = get_config_updates(parsed["UPDATE"])
    run = ex._create_run(named_configs=named, config_updates=updates)  # as the sweep does
    config = dict(run.config)
    on_gpu = str(config.get("device", "cpu")).startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        config["device"] = "cpu"  # a command for a GPU machine: its device is checked there
    module.validate(config)
    return f"config of {shlex.join(args)} resolves and validates"


def check_module(module: str, args: list[str], monkeypatch) -> str:
    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    args = [arg for arg in args if arg != "..."]  # "..." marks arguments left out
    loaded = importlib.import_module(module)
    if hasattr(loaded, "ex") and hasattr(loaded, "validate"):
        return check_sacred(loaded, args)
    result = parse_with_argparse(module, args, monkeypatch)
    if module in RUN_FOR_REAL:
        status, text = run_module(module, args)
        assert status == 0, f"python -m {module} {shlex.join(args)} failed:\n{text}"
        result += "; ran"
    return result


def check_command(words: list[str], block: Block, monkeypatch) -> str:
    program = words[0]
    if program in SKIPPED_PROGRAMS:
        return f"skipped ({SKIPPED_PROGRAMS[program]})"
    if program == "make":
        missing = [w for w in words[1:] if "=" not in w and w not in make_targets()]
        assert not missing, f"no Makefile target {missing}"
        return "make target exists"
    if BARE_PYTHON.match(program):
        assert "cluster" in block.section.lower(), (
            f"{shlex.join(words)}: README commands run from the repository root with the "
            f"project's venv; write {VENV_PYTHON} instead of {program}"
        )
    elif program != VENV_PYTHON:
        raise AssertionError(
            f"tests/test_docs.py does not know how to check {program!r}; teach it, or mark "
            "the block with <!-- docs-test: skip (reason) -->"
        )
    if words[1:2] == ["-m"] and len(words) > 2:
        return check_module(words[2], words[3:], monkeypatch)
    if len(words) > 1 and words[1].endswith(".py"):
        # A script of the repository, or one that the page's python blocks wrote.
        assert (ROOT / words[1]).is_file() or Path(words[1]).is_file(), f"no script {words[1]}"
        return "script exists"
    raise AssertionError(f"{shlex.join(words)}: expected python -m <module> or a script")


@pytest.mark.parametrize("block", BASH_BLOCKS, ids=lambda block: block.name)
def test_bash_block_commands_parse(block, in_workdir, monkeypatch):
    if block.skip:
        pytest.skip(block.skip)
    in_workdir(block)
    results = []
    for words in commands(block):
        results.append(f"{shlex.join(words)}: {check_command(words, block, monkeypatch)}")
    print("\n".join(results))  # in the test's captured output: pytest -rA shows them
    if results and all(": skipped (" in line for line in results):
        pytest.skip("; ".join(results))


# ---- commands outside fenced blocks ------------------------------------------------------

INDENTED_COMMAND = re.compile(
    r"^ {4,}(?:[A-Za-z_][A-Za-z0-9_]*=\S+\s+)*"  # environment assignments, then a program
    r"(?:python3?|\.venv/bin/python|make|jupytext|jupyter)\b"
)


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_commands_are_in_fenced_blocks_that_this_test_checks(path):
    """An indented code block is invisible to the checks above; commands go in ```bash."""
    fenced, unchecked = False, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opening = FENCE.match(line)
        if opening:
            fenced = not fenced
        elif not fenced and INDENTED_COMMAND.match(line):
            unchecked.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not unchecked, "commands in indented blocks:\n" + "\n".join(unchecked)


# ---- the collection itself ----------------------------------------------------------------


def test_the_docs_test_sees_every_file_and_block_kind():
    names = {path.relative_to(ROOT).as_posix() for path in doc_files()}
    assert {"README.md", "strategies/README.md", "analysis/README.md"} <= names
    assert any(name.startswith("docs/") for name in names)
    assert {b.path.name for b in PYTHON_BLOCKS} >= {"README.md"}
    assert BASH_BLOCKS


def test_blocks_fences_and_skip_markers_are_parsed(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n```python\nx = 1\n```\n\n## Running on a cluster\n"
        "<!-- docs-test: skip (needs a GPU) -->\n\n   ```bash\n   python -m a \\\n"
        "       --flag 1  # comment\n   ```\n"
    )
    first, second = parse_blocks(page)
    assert (first.line, first.lang, first.code, first.skip) == (3, "python", "x = 1\n", None)
    assert (second.line, second.section, second.skip) == (10, "Running on a cluster", "needs a GPU")
    assert commands(second) == [["python", "-m", "a", "--flag", "1"]]


def test_bare_python_outside_a_cluster_section_fails(monkeypatch):
    block = Block(ROOT / "README.md", 1, "bash", "", section="Figures")
    with pytest.raises(AssertionError, match=r"\.venv/bin/python instead of python"):
        check_command(["python", "-m", "analysis.report", "--help"], block, monkeypatch)


def test_unknown_flags_and_config_keys_fail(monkeypatch):
    block = Block(ROOT / "README.md", 1, "bash", "", section="Figures")
    with pytest.raises(AssertionError, match="do not parse"):
        check_command([VENV_PYTHON, "-m", "analysis.report", "--no-such-flag"], block, monkeypatch)
    with pytest.raises(Exception, match="no_such_key"):
        check_command(
            [VENV_PYTHON, "-m", "experiments.parity", "with", "no_such_key=1"], block, monkeypatch
        )
    with pytest.raises(AssertionError, match="no Makefile target"):
        check_command(["make", "no-such-target"], block, monkeypatch)
