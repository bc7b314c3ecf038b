"""The config scope is the documentation: Sacred's ``print_config`` shows every key's whole
comment (continuation lines included) and ``print_named_configs`` describes every named
config, for every experiment."""

import inspect
import re

import pytest
from sacred import Experiment

from experiments import bit_flipping, parity, stream
from experiments._config import choice_configs, guard

EXPERIMENTS = {"stream": stream, "parity": parity, "bit_flipping": bit_flipping}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def scope_comments(module) -> dict[str, str]:
    """Each key of the module's ``config()`` scope and its whole comment, read from the
    source text: the comment on the key's line, then the ``#   `` lines below it, joined
    by spaces."""
    scope = inspect.getsource(module).split("\ndef config():\n", 1)[1]
    comments, key = {}, None
    for line in scope.splitlines():
        if line and not line.startswith(" "):
            break  # the end of the scope's body
        assignment = re.match(r"^    (\w+) = .*?  # (.*)$", line)
        continued = re.match(r"^    #   (.*)$", line)
        if assignment:
            key = assignment.group(1)
            comments[key] = assignment.group(2).strip()
        elif continued and key is not None:
            comments[key] += " " + continued.group(1).strip()
        else:
            key = None
    return comments


def command_output(ex, command: str, capsys) -> str:
    """What Sacred's command prints, run in-process, colours removed."""
    ex.run(command)
    return ANSI.sub("", capsys.readouterr().out)


def joined(output: str) -> dict[str, str]:
    """print_config's output as {key: its comment}, continuation lines joined by spaces."""
    flat = re.sub(r"\n +#   ", " ", output)
    entries = (re.match(r"^  (\w+) = .*?  # (.*)$", line) for line in flat.splitlines())
    return {entry.group(1): entry.group(2) for entry in entries if entry}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_print_config_shows_every_keys_whole_comment(name, capsys):
    module = EXPERIMENTS[name]
    expected = scope_comments(module)
    assert len(expected) > 10  # the reader above found the scope's keys
    shown = joined(command_output(module.ex, "print_config", capsys))
    for key, comment in expected.items():
        assert shown.get(key) == comment, key


@pytest.mark.parametrize(
    ("name", "key", "tail"),
    [
        ("stream", "transition", "abrupt ones are shuffled every epoch"),
        ("stream", "window", "(split_fashion: the smallest experience's training set)"),
        ("parity", "split", "test on k ∈ 1..P/2 and k ∈ P/2+1..P"),
        ("bit_flipping", "bias_transfer", "true or false"),
        # Sacred's own key: documented by the scope's closing comment, not Sacred's phrase.
        ("bit_flipping", "seed", "seeds the stream, the learner and the probe"),
        ("parity", "seed", "seeds the model, the data and the test sets"),
    ],
)
def test_continued_comments_end_where_the_source_does(name, key, tail, capsys):
    shown = joined(command_output(EXPERIMENTS[name].ex, "print_config", capsys))
    assert shown[key].endswith(tail)


def test_continuation_lines_are_aligned_under_the_first(capsys):
    output = command_output(stream.ex, "print_config", capsys).splitlines()
    (first,) = [i for i, line in enumerate(output) if line.startswith("  transition = ")]
    column = output[first].index("# ")
    assert output[first + 1].index("#   ") == column


def named_config_docs(output: str) -> dict[str, str]:
    """print_named_configs' output as {name: description}."""
    lines = output.split("Named Configurations (doc):", 1)[1].splitlines()
    entries = (re.match(r"^  (\w+)(?:   # (.*))?$", line) for line in lines if line.strip())
    return {entry.group(1): (entry.group(2) or "").strip() for entry in entries if entry}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_named_config_has_a_one_line_description(name, capsys):
    ex = EXPERIMENTS[name].ex
    docs = named_config_docs(command_output(ex, "print_named_configs", capsys))
    assert set(docs) == set(ex.named_configs)
    assert all(docs.values()), [n for n, doc in docs.items() if not doc]


@pytest.mark.parametrize(
    ("name", "named", "description"),
    [
        ("bit_flipping", "cbp", "method = cbp: continual backprop"),
        ("bit_flipping", "redo", "method = redo: recycle τ-dormant units"),
        ("parity", "act", "model = act: Adaptive Computation Time"),
        ("parity", "fixed", "model = fixed: the step function unrolled fixed_steps times"),
        # Leading comments, every line of them.
        ("parity", "small", "The 2-core parity setting that experiments.parity_demo runs"),
        ("parity", "small", "pondering has to depend on the input)."),
        ("bit_flipping", "linear", "A linear learner (no hidden layer)"),
    ],
)
def test_named_config_descriptions_say_what_they_set(name, named, description, capsys):
    docs = named_config_docs(command_output(EXPERIMENTS[name].ex, "print_named_configs", capsys))
    assert description in docs[named]


def test_a_choice_configs_extra_settings_are_part_of_its_description(capsys):
    ex = guard(Experiment("choices", save_git_info=False))
    choice_configs(ex, "method", ["bp", "upgd", "new"], extra={"upgd": {"learning_rate": 0.01}})
    docs = named_config_docs(command_output(ex, "print_named_configs", capsys))
    assert docs == {
        "bp": "method = bp: plain backprop, no plasticity method",
        "upgd": "method = upgd: utility-gated perturbed gradient descent, its own optimizer "
        "(Elsayed & Mahmood); also learning_rate = 0.01",
        "new": "method = new",  # a value without a description still says what it sets
    }


def test_the_small_parity_config_is_not_described_as_make_demo(capsys):
    docs = named_config_docs(command_output(parity.ex, "print_named_configs", capsys))
    assert "make demo" not in docs["small"] and "P = 16" in docs["small"]
