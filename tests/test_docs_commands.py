"""The commands on the training page are accepted by their scripts, and its console output has the scripts' form.

The page's ``console`` blocks run minutes-long trainings, so they are not run here: each ``python`` or
``torchrun`` command's arguments go through the script's own argument parser (a renamed or removed flag, or a
value the script refuses, fails this test), and the pasted output of the tutorial loop is compared line by line,
numbers aside, with what the script prints after a few steps.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from _scripts import ROOT, load_example, load_script

PAGE = ROOT / "docs" / "tutorials" / "training.rst"


def console_commands(page: Path) -> list[list[str]]:
    """The ``$ ...`` commands of the page's console blocks (backslash continuations joined, comments dropped)."""
    commands, current = [], None
    for line in page.read_text().splitlines():
        text = line.strip()
        if current is not None:
            current += " " + text
        elif text.startswith("$ "):
            current = text[2:]
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1]
            continue
        commands.append(shlex.split(current, comments=True))
        current = None
    return commands


def script_and_arguments(words: list[str]) -> tuple[str, list[str]]:
    index = next(i for i, w in enumerate(words) if w.endswith(".py"))
    return words[index], words[index + 1:]


COMMANDS = [script_and_arguments(words) for words in console_commands(PAGE)]


def test_the_page_has_the_commands_it_documents():
    scripts = {script for script, _ in COMMANDS}
    assert {"examples/toy_train.py", "examples/train_images.py", "examples/sample_images.py",
            "examples/evaluate_images.py", "docs/tutorials/toy_training_loop.py"} <= scripts
    assert any(args and "--resume" in args for script, args in COMMANDS if script == "examples/train_images.py")


@pytest.mark.parametrize("script, arguments", COMMANDS, ids=[" ".join([s, *a])[:60] for s, a in COMMANDS])
def test_every_command_on_the_page_parses(script, arguments, monkeypatch):
    assert (ROOT / script).is_file(), script
    name = Path(script).stem
    module = load_example(name) if script.startswith("examples/") else load_script(Path(script))
    if hasattr(module, "build_parser"):
        module.build_parser().parse_args(arguments)
    elif hasattr(module, "parse_args"):
        module.parse_args(arguments)
    elif name == "train_digits_classifier":
        monkeypatch.setattr(module, "_train", lambda args: 0)
        assert module.main(arguments) == 0
    else:  # the tutorial loop: its main parses --steps
        assert name == "toy_training_loop" and arguments == []


def test_the_tutorial_loop_prints_what_the_page_shows(capsys, monkeypatch):
    block = PAGE.read_text().split("$ python docs/tutorials/toy_training_loop.py", 1)[1]
    shown = [line.strip() for line in block.splitlines()[1:3]]
    module = load_script(Path("docs/tutorials/toy_training_loop.py"))
    evaluate = module.evaluate  # fewer samples and steps than the page's run: the form is checked, not the value
    monkeypatch.setattr(module, "evaluate", lambda cld, model: evaluate(cld, model, n_samples=200, n_steps=3))
    with torch.random.fork_rng():
        module.main(["--steps", "3"])
    printed = capsys.readouterr().out.strip().splitlines()

    def form(line: str) -> str:
        return re.sub(r"\d+(\.\d+)?", "<n>", line)

    assert [form(line) for line in printed] == [form(line) for line in shown]
