"""The README's commands name real things: every input file exists in a fresh clone, every
command is one molpipe knows, and the tour walker reads them all (it runs them:
benchmarks/walk_tour.py)."""

import shlex
from pathlib import Path

import pytest

from benchmarks.walk_tour import readme_commands
from cli import app

REPO = Path(__file__).resolve().parents[1]
COMMANDS = readme_commands((REPO / "README.md").read_text(encoding="utf-8"))
OUTPUT_OPTIONS = {"-o", "--output", "--out", "--plot", "--json-out"}


def test_walker_finds_setup_and_tour():
    assert COMMANDS[0].startswith("pip install -e .") and "molpipe train esol" in COMMANDS[0]
    assert any("pytest" in c for c in COMMANDS)
    assert sum(c.startswith("molpipe ") for c in COMMANDS) >= 10
    assert not any("#" in c for c in COMMANDS)              # comments are stripped


def _molpipe_args(command):
    for part in command.split("&&"):
        words = shlex.split(part)
        if "molpipe" in words:
            yield words[words.index("molpipe") + 1:]


@pytest.mark.parametrize("command", COMMANDS)
def test_inputs_exist_and_subcommand_is_known(command):
    known = {c.name or c.callback.__name__ for c in app.registered_commands}
    for args in _molpipe_args(command):
        assert args and args[0] in known, (command, sorted(known))
        for before, word in zip([""] + args, args):
            if before in OUTPUT_OPTIONS:
                continue
            if word.endswith((".csv", ".sdf", ".csv.gz")):
                assert (REPO / word).is_file(), f"{command}: {word} is not in the repository"
