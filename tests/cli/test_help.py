"""`--help` on every option of every command, and shell completion scripts that shells accept."""

from __future__ import annotations

import argparse
import os
import pty
import select
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitord.cli import build_parser, common
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


README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_command_is_in_the_readmes_command_table() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Command line") : text.index("| exit status |")]
    top = [path.split()[1] for path, _ in commands(build_parser()) if path.count(" ") == 1]
    assert [name for name in top if f"`monitord {name}" not in table] == []


def test_the_upgrading_steps_read_the_installed_config_from_the_checkout_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Typed in the checkout after `sudo deploy/install.sh`, $M read the checkout's own
    # monitord.toml and said "no store at …/var/monitord.db".
    text = README.read_text(encoding="utf-8")
    upgrading = text[text.index("## Upgrading") :]
    line = next(x for x in upgrading.splitlines() if x.startswith('M="'))
    (value,) = shlex.split(line.removeprefix("M="))
    words = shlex.split(value)
    assert words[:3] == ["sudo", "-u", "monitord"]
    options = words[4:]  # after the monitord executable
    (tmp_path / "monitord.toml").write_text("", encoding="utf-8")  # the checkout's
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MONITORD_CONFIG", raising=False)
    args = build_parser().parse_args([*options, "migrate", "--check"])
    assert common.config_path(args) == common.SYSTEM_CONFIG


def completion_script(shell: str) -> str:
    """What `monitord completion SHELL` prints."""
    done = subprocess.run(
        [sys.executable, "-m", "monitord.cli", "completion", shell],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["inc"], ["incidents"]),
        (["incidents", ""], ["ack", "close", "list", "notify", "open", "resolve", "show"]),
        (["incidents", "open", "--occ"], ["--occurred-at"]),
    ],
)
def test_bash_completes_commands_and_options(
    tmp_path: Path, words: list[str], expected: list[str]
) -> None:
    script = tmp_path / "monitord.bash"
    script.write_text(completion_script("bash"), encoding="utf-8")
    # What bash sets before calling the completion function when the user presses Tab.
    line = " ".join(["monitord", *words])
    program = (
        f"source {shlex.quote(str(script))}\n"
        f"COMP_WORDS=(monitord {' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        f"COMP_LINE={shlex.quote(line)}\n"
        "COMP_POINT=${#COMP_LINE}\n"
        "_shtab_monitord\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == expected


def zsh_completion(fpath: Path, line: str, wanted: str) -> str:
    """What an interactive zsh shows after `line` and Tab, read until `wanted` or 20 seconds."""
    leader, follower = pty.openpty()
    shell = subprocess.Popen(
        ["zsh", "-f", "-i"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={"TERM": "dumb", "PATH": os.environ["PATH"], "HOME": str(fpath.parent)},
        start_new_session=True,
    )
    os.close(follower)

    def read_until(text: bytes) -> bytes:
        seen = b""
        deadline = time.monotonic() + 20
        while text not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    seen += os.read(leader, 4096)
                except OSError:  # the shell has gone
                    break
        return seen

    try:
        # The quotes keep the echoed command from matching: only the output says READY.
        setup = f"fpath=({fpath} $fpath); autoload -U compinit; compinit -u -D; echo RE''ADY\n"
        os.write(leader, setup.encode())
        read_until(b"READY\r")
        os.write(leader, f"{line}\t".encode())
        return read_until(wanted.encode()).decode(errors="replace")
    finally:
        shell.kill()
        shell.wait()
        os.close(leader)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here (.ci/run installs it)")
def test_zsh_completes_commands_and_options(tmp_path: Path) -> None:
    fpath = tmp_path / "site-functions"
    fpath.mkdir()
    (fpath / "_monitord").write_text(completion_script("zsh"), encoding="utf-8")
    shown = zsh_completion(fpath, "monitord incidents ", "show")
    for command in ("ack", "close", "list", "notify", "open", "resolve", "show"):
        assert command in shown
    assert "mark resolved" in shown  # with the description from --help
    shown = zsh_completion(fpath, "monitord incidents open --occ", "--occurred-at")
    assert "--occurred-at" in shown


INSTALL = Path(__file__).resolve().parents[2] / "deploy" / "install.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh makes a user and chowns: needs root")
@pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd (Debian's passwd)")
def test_the_install_script_installs_completion_for_bash_and_zsh(tmp_path: Path) -> None:
    root = tmp_path / "root"
    # The venv stands in for the one install.sh makes: pip is a no-op, monitord is this one.
    venv = root / "opt" / "monitord" / ".venv" / "bin"
    venv.mkdir(parents=True)
    for name, body in (
        ("python", f'exec {sys.executable} "$@"'),
        ("pip", "exit 0"),
        ("monitord", f'exec {sys.executable} -m monitord.cli "$@"'),
    ):
        (venv / name).write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        (venv / name).chmod(0o755)
    done = subprocess.run(
        ["sh", str(INSTALL), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "PYTHONPATH": str(INSTALL.parents[1])},
    )
    assert done.returncode == 0, done.stderr
    bash_script = root / "usr/share/bash-completion/completions/monitord"
    zsh_script = root / "usr/share/zsh/site-functions/_monitord"
    for script in (bash_script, zsh_script):
        assert stat.S_IMODE(script.stat().st_mode) == 0o644
        assert "--occurred-at" in script.read_text(encoding="utf-8")
    checked = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr
