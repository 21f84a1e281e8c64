"""The `monitord` command: parses arguments and calls into the core; no logic of its own."""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

# Only light modules at the top: each command imports the store, aiohttp, pyarrow and the rest
# inside its handler, so `monitord analyse` (benchmarked for peak memory) and `--help` never
# load what other commands need. tests/cli/test_imports.py keeps it so.
from monitord import __version__
from monitord.cli.cluster import add_cluster_command
from monitord.cli.common import (
    add_wide,
    app_for,
    config_path,
    escaped_stdout,
    file_path,
    open_app,
    positive_int,
    print_json,
    private_files,
    refuse_to_migrate_under_a_daemon,
    settings_for,
    settings_with_credentials,
    store_failure,
    tolerant_output,
)
from monitord.cli.compliance import add_compliance_commands
from monitord.cli.evidence import add_evidence_commands
from monitord.cli.incidents import add_incident_commands
from monitord.cli.logs import add_log_commands
from monitord.cli.probe import add_probe_command
from monitord.cli.report import add_report_commands
from monitord.cli.scan import add_scan_commands
from monitord.cli.silence import add_silence_commands
from monitord.cli.status import add_status_command
from monitord.cli.store import add_store_commands
from monitord.cli.token import add_token_command
from monitord.errors import ConfigError, MonitordError, StoreError, UsageError
from monitord.redact import one_line, printable
from monitord.textable import format_table, show_whole_cells
from monitord.timeutil import local_text, parse_time

if TYPE_CHECKING:
    from monitord.config import Settings
    from monitord.store import StoreCheck

Handler = Callable[[argparse.Namespace], int]

# What writing to stdout fails with when it is a full disk, a quota or a dead terminal.
_OUTPUT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the config and say which file was read.

    The daemon's own start-up checks are made too: the unit's reload runs this first (with
    --for-reload), and a config it passes must not be refused by the daemon it is sent to. The
    store is opened as `monitord run` opens it at start, writing nothing; not for a reload,
    which keeps the store the daemon runs on (store.url takes effect at the next start).
    """
    from monitord.accesslog.work import followed_log_problems
    from monitord.config import check_daemon_secrets, secret_file_warnings
    from monitord.runtime.logsetup import log_file_problem

    if args.credentials is None:
        settings = settings_for(args)
    else:
        settings = settings_with_credentials(args, args.credentials)
    check_daemon_secrets(settings)
    unwritable = log_file_problem(settings.logging.file)
    where = f"{settings.source}: logging.file = {json.dumps(settings.logging.file)}"
    if unwritable is not None and args.for_reload:
        # Run by the unit's ExecReload as the daemon's user: the daemon would refuse this file.
        raise ConfigError(
            f"{where}: {unwritable} as this user; the daemon would refuse to reload with it"
        )
    store = None if args.for_reload else _store_at_start(settings)
    print(f"config OK: {settings.source}")
    if store is not None:
        print(f"store OK: {store.found}")
    if store is not None and store.warning is not None:
        print(f"warning: {settings.source}: store.url: {store.warning}", file=sys.stderr)
    for exposed in secret_file_warnings(settings):
        print(f"warning: {exposed}", file=sys.stderr)
    if unwritable is not None:
        # A warning, not a refusal: the user running this may not be the daemon's.
        print(
            f"warning: {where}: {unwritable} as this user; the daemon refuses to start or "
            "reload with a log it cannot write",
            file=sys.stderr,
        )
    for unread in followed_log_problems(settings):
        # A warning: a log may appear later (nginx not yet started), and the daemon waits.
        print(f"warning: {settings.source}: {unread}", file=sys.stderr)
    return 0


def _store_at_start(settings: Settings) -> StoreCheck:
    """What `monitord run` will find of the store at start, found writing nothing.

    Raises ConfigError naming store.url and the cause when the start would refuse it.
    """
    from monitord.store import check_store, sqlite_file

    try:
        found = check_store(settings.store.url)
        if sqlite_file(settings.store.url) is None:
            # A SQLite store's daemon is this machine's, which the restart stops before it
            # starts; a PostgreSQL store's old daemons run on other machines too.
            refuse_to_migrate_under_a_daemon(settings)
        return found
    except StoreError as exc:
        raise ConfigError(f"{settings.source}: store.url: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    reload_requested: threading.Event = args.reload_requested  # set by main's SIGHUP handler
    from monitord.runtime.heap import limit_arenas, tune_collector

    limit_arenas()  # before any thread of the daemon's starts
    from monitord import aio
    from monitord.config import check_daemon_secrets
    from monitord.runtime.daemon import Daemon
    from monitord.runtime.logsetup import setup_logging

    settings = settings_for(args)
    check_daemon_secrets(settings)
    try:
        setup_logging(settings.logging)
    except OSError as exc:
        raise ConfigError(
            f"{settings.source}: logging.file = {json.dumps(settings.logging.file)}: cannot "
            f"write {exc.filename} ({exc.strerror})"
        ) from None
    from monitord.runtime import sdnotify

    # Migrating a large store can outlast systemd's start timeout: ask for ten minutes more.
    sdnotify.notify("EXTEND_TIMEOUT_USEC=600000000\nSTATUS=opening and migrating the store")
    app = open_app(settings, for_daemon=True)
    daemon = Daemon(app, config_path(args), reload_requested=reload_requested, hard_exit=os._exit)
    tune_collector()  # the process is the daemon's from here on
    try:
        return aio.run(daemon.run())
    finally:
        daemon.disarm_stop_deadline()


def cmd_sync(args: argparse.Namespace) -> int:
    """Run one catalogue sync, from the portal or from --file: the daemon's job, run once."""
    from monitord import aio
    from monitord.runtime.jobs import sync_once
    from monitord.runtime.logsetup import setup_logging

    settings = settings_for(args)
    setup_logging(settings.logging, to_file=False)
    outcome = aio.run(sync_once(open_app(settings), file=args.file))
    if outcome.outcome == "failed":
        print(f"sync failed: {one_line(outcome.reason or '')}", file=sys.stderr)
        return 1
    if outcome.outcome == "unchanged":
        print("catalogue unchanged")
    else:
        warned = len(outcome.warnings)
        print(
            f"synced {outcome.services_seen} services: {outcome.added} added, "
            f"{outcome.changed} changed, {outcome.gone} gone, {outcome.events} events"
            + (f", {warned} warning{'s' if warned > 1 else ''}" if warned else "")
        )
        for warning in outcome.warnings:
            print(f"  warning: {one_line(warning)}")
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    """List the services the store holds."""
    from monitord.catalogue import service_rows

    with app_for(args) as app:
        rows = service_rows(app.store)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no services yet: run `monitord sync` first")
        return 0
    table = [
        [
            r["id"],
            r["name"],
            "gone" if r["gone"] else r["status"],
            r["url"] or "-",
            "; ".join(r["filing_problems"]) or "-",
        ]
        for r in rows
    ]
    print(format_table(["ID", "NAME", "STATUS", "URL", "FILING PROBLEMS"], table))
    return 0


def cmd_syncs(args: argparse.Namespace) -> int:
    """List the recent sync runs, newest first."""
    from monitord.catalogue import sync_rows

    with app_for(args) as app:
        rows = sync_rows(app.store, args.limit)
    if args.json:
        print_json(rows)
        return 0
    table = [
        [
            local_text(parse_time(r["started_at"])),
            r["outcome"],
            str(r["services_seen"]),
            f"+{r['added']} ~{r['changed']} -{r['gone']}",
            str(len(r["warnings"] or [])),
            r["reason"] or "",
        ]
        for r in rows
    ]
    # The warnings themselves are long: `syncs --json` gives them.
    headers = ["STARTED (CST)", "OUTCOME", "SERVICES", "CHANGES", "WARNINGS", "REASON"]
    print(format_table(headers, table, 90))
    return 0


def demo_interval(text: str) -> int:
    """An argparse type: the demo's seconds between catalogue syncs, 1 to a day (86,400)."""
    value = positive_int(text)
    if value > 86_400:  # portal.sync_interval_seconds' own bound
        raise argparse.ArgumentTypeError(f"expected at most 86400 (a day), got {value}")
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo portal and the daemon against it until Ctrl-C."""
    from monitord.demo.run import run_demo

    return run_demo(interval=args.interval)


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the shell completion script for bash or zsh (made by shtab from this parser)."""
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="monitord",
        description="Service monitoring and DB3205/T 1129-2024 compliance for the portal.",
    )
    parser.add_argument("--version", action="version", version=f"monitord {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $MONITORD_CONFIG, else ./monitord.toml, else "
        "/etc/monitord/monitord.toml, else built-in)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("run", cmd_run, "run the daemon until SIGTERM or SIGINT")
    p = add("check-config", cmd_check_config, "validate the config file and exit")
    p.add_argument(
        "--for-reload",
        action="store_true",
        help="run as the daemon's user before a reload (the unit's ExecReload): what would make "
        "the daemon refuse the config, such as a log file it cannot write, is an error (exit 2), "
        "not a warning",
    )
    p.add_argument(
        "--credentials",
        metavar="DIR",
        help="read the secrets as the systemd service will: from the credentials in DIR (its "
        "LoadCredential= files, /etc/monitord/credentials), not from this shell's environment",
    )
    p = add("sync", cmd_sync, "sync the service catalogue once")
    p.add_argument(
        "--file", metavar="JSON", type=file_path, help="read the catalogue from a file instead"
    )
    p = add("services", cmd_services, "list the services in the store")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_wide(p)
    p = add("syncs", cmd_syncs, "list recent catalogue sync runs")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--limit", type=positive_int, default=20, help="how many runs (default 20)")
    add_wide(p)
    add_incident_commands(sub)
    add_probe_command(sub)
    add_scan_commands(sub)
    add_log_commands(sub)
    add_token_command(sub)
    add_status_command(sub)
    add_cluster_command(sub)
    add_evidence_commands(sub)
    add_compliance_commands(sub)
    add_report_commands(sub)
    add_silence_commands(sub)
    add_store_commands(sub)
    p = add("completion", cmd_completion, "print the shell completion script for bash or zsh")
    p.add_argument(
        "shell",
        choices=["bash", "zsh"],
        help="%(choices)s; deploy/install.sh installs both, else e.g. "
        "`monitord completion bash > /usr/share/bash-completion/completions/monitord`, or in "
        'this shell `source <(monitord completion bash)` or `eval "$(monitord completion zsh)"` '
        "(zsh does not take it through source)",
    )
    p.set_defaults(logs=False)
    p = add("demo", cmd_demo, "run a demo portal on loopback and the daemon against it")
    p.add_argument(
        "--interval",
        type=demo_interval,
        default=20,
        help="seconds between catalogue syncs, 1 to 86400 (default 20)",
    )
    return parser


def _drop_stdout() -> None:
    # Standard output failed: what is still buffered goes nowhere, so that Python's final flush
    # at exit does not complain with a traceback of its own.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand argv names, read before the parser is built: the first word that is not
    an option or the value of --config (the one global option that takes a value)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _keep_sighup() -> threading.Event:
    """From now on a SIGHUP sets the returned event instead of ending the process."""
    requested = threading.Event()
    signal.signal(signal.SIGHUP, lambda _signal, _frame: requested.set())
    return requested


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `monitord` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    # SIGHUP's default is to end the process: one sent while the daemon starts (the imports,
    # then the store opened and migrated: minutes, for a large store) is kept for the daemon,
    # which reloads once it runs. So the handler comes first, before the imports of the
    # parser's work and of the config.
    reload_requested = _keep_sighup() if _command_of(argv) == "run" else None
    tolerant_output()  # before parsing: --help and argparse's errors print Chinese too
    args = build_parser().parse_args(argv, argparse.Namespace(reload_requested=reload_requested))
    handler: Handler = args.handler
    # Readable lines on stderr for every command that logs; `run` and `demo` add the JSON log
    # file. `analyse` logs nothing, and spares its memory budget the logging library.
    if getattr(args, "logs", True):
        from monitord.config import LoggingSettings
        from monitord.runtime.logsetup import setup_logging

        setup_logging(LoggingSettings(), to_file=False)
    # A column is cut to fit a terminal only: a script or a file reading it gets every character.
    show_whole_cells(getattr(args, "wide", False) or not sys.stdout.isatty())
    try:
        with private_files(), escaped_stdout():
            status = handler(args)
            # Flushed here, not at exit, so that a full disk is reported below, not a traceback.
            sys.stdout.flush()
        return status
    except BrokenPipeError:
        # The reader went away (`monitord incidents list | head -1`): nothing more to say.
        _drop_stdout()
        return 1
    except OSError as exc:
        if exc.filename is not None or exc.errno not in _OUTPUT_ERRORS:
            raise
        _drop_stdout()
        print(f"monitord: cannot write the output ({exc.strerror})", file=sys.stderr)
        return 1
    except (ConfigError, UsageError) as exc:
        for line in str(exc).splitlines():
            print(f"monitord: {printable(line)}", file=sys.stderr)
        return 2
    except MonitordError as exc:
        print(f"monitord: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        failure = store_failure(args, exc)
        if failure is None:
            raise
        print(f"monitord: {failure}", file=sys.stderr)
        return 1
