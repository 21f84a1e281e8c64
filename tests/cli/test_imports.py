"""The `monitord` CLI loads only what the chosen command needs.

`monitord analyse` is benchmarked for peak memory, so building the parser and printing help must
not import the store, aiohttp, pyarrow or the probes: each command imports those in its handler.
The checks run in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import probes
from monitord.types import PROBE_KINDS

HEAVY = (
    "sqlalchemy",
    "alembic",
    "aiohttp",
    "pyarrow",
    "numpy",
    "apprise",
    "zaproxy",
    "probes",
)

# Every command's help, nested ones included, so a top-level import in any cli_* module shows.
HELP_ARGVS = [
    ["--help"],
    *(
        [command, "--help"]
        for command in (
            "run",
            "check-config",
            "sync",
            "services",
            "syncs",
            "incidents",
            "probe",
            "scan",
            "findings",
            "analyse",
            "usage",
            "log-audit",
            "compliance",
            "evaluation",
            "status",
            "demo",
        )
    ),
    *(
        ["incidents", action, "--help"]
        for action in ("list", "show", "open", "ack", "notify", "close", "resolve")
    ),
]


def _run_python(
    code: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


def _loaded_after(code: str) -> list[str]:
    """Which HEAVY modules a fresh interpreter holds after running `code`."""
    done = _run_python(
        textwrap.dedent(code)
        + textwrap.dedent(
            f"""
            import json, sys
            print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
            """
        )
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_building_the_parser_imports_no_heavy_module() -> None:
    assert _loaded_after("import monitord.cli\nmonitord.cli.build_parser()\n") == []


def test_the_synthetic_logs_load_none_of_the_demo_s_servers() -> None:
    # The log bench's measured process imports them: the demo's portal, TLS and store code cost
    # it 66 MiB of its peak when they came along.
    assert _loaded_after("import monitord.demo.synth\n") == []


def test_help_imports_no_heavy_module() -> None:
    code = f"""
        import contextlib, io
        import monitord.cli

        for argv in {HELP_ARGVS!r}:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                try:
                    monitord.cli.main(argv)
                except SystemExit as exc:
                    assert exc.code == 0, (argv, exc.code)
            assert out.getvalue().startswith("usage: monitord"), argv
        """
    assert _loaded_after(code) == []


def test_analyse_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "monitord.cli", "analyse", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: monitord analyse")
    assert "--format {auto,nginx,json}" in done.stdout
    assert done.stderr == ""


def test_probe_kind_choices_match_the_registry() -> None:
    # The CLI keeps its own copy of the kinds so that `--kind` needs no import of the probes;
    # same kinds in the same order, since the order shows in `monitord probe --help`.
    assert tuple(probes.PROBES) == PROBE_KINDS


def _modules_after_analyse(
    tmp_path: Path,
    check: str,
    modules: tuple[str, ...],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> list[str]:
    """Run `monitord analyse --json` on a one-line log in a fresh process; `check` asserts on
    its parsed output (`result`); which of `modules` the process had imported by its end."""
    log = tmp_path / "access.log"
    log.write_text(
        '1.2.3.4 - - [02/Nov/2026:09:00:00 +0800] "GET /svc/svc-0042/ HTTP/1.1" 200 5 "-" "-"\n'
    )
    code = f"""
        import contextlib, io, json, sys
        import monitord.cli

        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert monitord.cli.main(["analyse", "--json", {str(log)!r}]) == 0
        result = json.loads(out.getvalue())
        {check}
        print(json.dumps([m for m in {modules!r} if m in sys.modules]))
        """
    done = _run_python(textwrap.dedent(code), cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


def test_monitord_analyse_loads_no_pandas_store_http_tls_or_logger(tmp_path: Path) -> None:
    # pandas alone would cost `monitord analyse` 36 MiB of its memory budget: pyarrow pulls it
    # in on its first conversion of a Python value unless prepare_process() ran first, so an
    # import-time pa.array() anywhere in the analysis path brings it back. ssl costs 4 MiB more.
    heavy = ("pandas", "sqlalchemy", "aiohttp", "loguru", "ssl")
    assert _modules_after_analyse(tmp_path, 'assert result["lines"] == 1', heavy) == []


def test_monitord_analyse_without_a_config_file_loads_no_config_models(tmp_path: Path) -> None:
    # Without a config file `[logs]` is the built-in one, and pydantic with the config's models
    # would cost `monitord analyse` 0.15 s of CPU and 15 MiB before the first line. The process
    # runs in a folder without monitord.toml and no $MONITORD_CONFIG, as a new user's would.
    env = {k: v for k, v in os.environ.items() if k != "MONITORD_CONFIG"}
    check = 'assert [r["service"] for r in result["stats"]] == ["svc-0042"]'
    models = ("pydantic", "monitord.config")
    assert _modules_after_analyse(tmp_path, check, models, cwd=tmp_path, env=env) == []
