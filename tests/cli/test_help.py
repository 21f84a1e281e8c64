"""`--help` on every option of every command, and shell completion scripts that shells accept."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from monitord.cli import build_parser
from monitord.types import AVAILABILITY_KINDS, SECURITY_KINDS


def commands(
    parser: argparse.ArgumentParser, path: str = "monitord"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser under parser, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, f"{path} {name}")


def test_every_option_of_every_command_says_what_it_does() -> None:
    missing = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in commands(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and not (action.help and action.help.strip())
    ]
    assert missing == []


def test_every_command_has_a_description_in_its_parents_list() -> None:
    missing = [
        f"{path} {choice.dest}"
        for path, parser in commands(build_parser())
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for choice in action._choices_actions
        if not choice.help
    ]
    assert missing == []


def test_options_taking_an_incident_kind_list_the_kinds() -> None:
    parsers = dict(commands(build_parser()))
    for path in ("monitord incidents open", "monitord silence add"):
        text = " ".join(parsers[path].format_help().split())
        for kind in (*SECURITY_KINDS, *AVAILABILITY_KINDS):
            assert kind in text, (path, kind)
    assert "abnormal_behaviour 用户异常行为" in " ".join(
        parsers["monitord incidents open"].format_help().split()
    )


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_a_script_the_shell_accepts(shell: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitord.cli", "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "incidents" in done.stdout and "--occurred-at" in done.stdout
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} here to check the syntax")
    checked = subprocess.run(
        [shell, "-n"], input=done.stdout, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
