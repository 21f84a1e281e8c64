"""What every `monitord` subcommand shares: which config to read, the App, who is acting, and
JSON output."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from monitord.errors import ConfigError, MonitordError, StoreError, UsageError
from monitord.redact import escaped
from monitord.textable import storable, written_text
from monitord.timeutil import EARLIEST, parse_time
from monitord.types import MAX_ID, MAX_NAME

if TYPE_CHECKING:
    from monitord.cluster import Member
    from monitord.config import Settings
    from monitord.runtime.app import App
    from monitord.store import Store


SYSTEM_CONFIG = Path("/etc/monitord/monitord.toml")
"""Where deploy/ installs the config: found from any folder, as the daemon's own."""
LOOKED_FOR = f"--config, $MONITORD_CONFIG, ./monitord.toml, {SYSTEM_CONFIG}"


def config_path(args: argparse.Namespace) -> Path | None:
    """The config file to read: --config, $MONITORD_CONFIG, ./monitord.toml, the system's
    (/etc/monitord/monitord.toml), or none (the built-in defaults). A ./monitord.toml or system
    file this user cannot read is passed over."""
    if args.config is not None:
        if not args.config:
            # `--config "$UNSET"`: reading ./monitord.toml instead would be a silent surprise.
            raise UsageError("--config: expected a file path, got an empty string")
        return Path(args.config)
    if os.environ.get("MONITORD_CONFIG"):
        return Path(os.environ["MONITORD_CONFIG"])
    for candidate in (Path("monitord.toml"), SYSTEM_CONFIG):
        # os.access, not exists(): run from a folder this user cannot read (`sudo -u monitord`
        # from one's home), exists() raises; a file that cannot be read is not the one meant.
        if os.access(candidate, os.R_OK):
            return candidate
    return None


def settings_for(args: argparse.Namespace) -> Settings:
    """The validated settings the command line points at."""
    # Imported here: pydantic costs `monitord analyse` 0.2 s and 20 MiB (see cli/logs.py).
    from monitord.runtime.settings import load_settings

    return load_settings(config_path(args))


def settings_with_credentials(args: argparse.Namespace, folder: str) -> Settings:
    """The settings as the systemd service reads them: its secrets from the config's *_file
    keys, else from the credentials in folder (its $CREDENTIALS_DIRECTORY), never from this
    shell's MONITORD_* variables, which the service does not have.

    Raises UsageError when the folder cannot be read, ConfigError as settings_for does.
    """
    # Imported here, as in settings_for.
    from monitord.config import SECRET_ENV
    from monitord.runtime.settings import load_settings

    if not os.path.isdir(folder) or not os.access(folder, os.R_OK | os.X_OK):
        raise UsageError(
            f"--credentials {folder}: expected a folder this user can read (the credentials "
            "folder is root's: run check-config as root)"
        )
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV.values()}
    env["CREDENTIALS_DIRECTORY"] = folder
    return load_settings(config_path(args), env)


def open_app(settings: Settings, *, for_daemon: bool = False) -> App:
    """The App for settings, the store opened and migrated (for the daemon: see open_store).

    Raises ConfigError naming store.url when the store's folder cannot be created.
    """
    # Imported here: the App brings sqlalchemy, alembic and aiohttp, which only store commands need.
    from monitord.runtime.app import build_app

    refuse_to_migrate_under_a_daemon(settings)
    try:
        return build_app(settings, for_daemon=True) if for_daemon else build_app(settings)
    except OSError as exc:
        # The SQLite file's folder is made on first use; a path under /proc or a read-only
        # mount fails there, before SQLite could say so.
        raise ConfigError(
            f"{settings.source}: store.url: cannot create {exc.filename} ({exc.strerror})"
        ) from None


def store_failure(args: argparse.Namespace, exc: Exception) -> str | None:
    """The one line that says the store failed a command, or None when exc is not the store's.

    A store that refuses a write (a read-only database or file, a lock held past its timeout)
    or stops answering once it was opened raises one of STORE_GONE_ERRORS from deep inside a
    command: a person is told which store and what it said, not shown a traceback. Any other
    error is a fault of monitord's own, whose traceback is kept.
    """
    if "sqlalchemy" not in sys.modules:
        return None  # the command never reached a store
    # _reason is the store's wording of what the database said, as at open.
    from monitord.store import STORE_GONE_ERRORS, Store, _reason

    if not isinstance(exc, STORE_GONE_ERRORS):
        return None
    try:
        store = Store(settings_for(args).store.url)
    except (MonitordError, OSError, ValueError):
        # The config changed since the command read it: its password cannot be known.
        return f"the store did not carry out the command: {_reason(exc)}"
    store.dispose()
    return (
        f"the store at {store.display_url} did not carry out the command: {_reason(exc, store.url)}"
    )


def live_cluster_members(store: Store, lease_seconds: float) -> list[Member]:
    """The daemons alive on a PostgreSQL store (none before the store knew of clusters)."""
    from sqlalchemy.exc import SQLAlchemyError

    from monitord.cluster import members
    from monitord.timeutil import system_clock

    try:
        return [m for m in members(store, lease_seconds, system_clock()) if m.alive]
    except SQLAlchemyError:  # no cluster_members table yet: migration 0009 is pending
        return []


def sqlite_store_exists(path: Path, settings: Settings) -> bool:
    """Whether the SQLite store file at path (settings' store.url) exists.

    Raises UsageError naming the store when this user cannot reach it: the folder it is in, or
    one above, is closed to them (a store under a 0700 folder, the command run by someone other
    than the daemon's user), where Path.exists() would raise PermissionError.
    """
    try:
        return path.exists()
    except PermissionError:
        raise UsageError(
            f"cannot reach the store at {path.absolute()} (store.url of {settings.source}): "
            f"this user may not enter {path.absolute().parent} or a folder above it (permission "
            "denied): run this as the store's owner, or change the folder's permissions"
        ) from None


def existing_sqlite(settings: Settings) -> Path | None:
    """The store's SQLite file (None for PostgreSQL); UsageError when it does not exist or this
    user cannot reach it."""
    from monitord.store import sqlite_file

    path = sqlite_file(settings.store.url)
    if path is not None and not sqlite_store_exists(path, settings):
        raise UsageError(
            f"no store at {path.absolute()} (store.url of {settings.source}). Is this the "
            f"daemon's config? Looked for {LOOKED_FOR}"
        )
    return path


def refuse_to_migrate_under_a_daemon(settings: Settings) -> None:
    """Raise StoreError when the store's schema is older than this version and a daemon runs on
    it.

    Every command migrates the store it opens, and so does `monitord run`. Between installing a
    new version and restarting the daemons, the old ones still run: migrated under them, the
    store would get rows written without the new columns. Only `monitord migrate`, once the
    daemons are stopped, or a new daemon's start with none running migrate such a store.
    """
    from monitord.store import DaemonClaim, Store, sqlite_file

    file = sqlite_file(settings.store.url)
    if file is not None and not sqlite_store_exists(file, settings):
        return  # a new store: `run`, `sync` or `demo` makes it, with no daemon on it
    store = Store(settings.store.url)
    try:
        pending = store.pending_migrations()
        if not pending or store.revision() is None:
            return
        if file is not None:
            running = ["a daemon on this machine"] if DaemonClaim(store).held_elsewhere() else []
        else:
            # Not their version: every release of monitord has said 0.1.0. The schema they
            # run is the store's: each daemon migrated it to its own at start.
            running = [m.name for m in live_cluster_members(store, settings.cluster.lease_seconds)]
        revision = store.revision()
    finally:
        store.dispose()
    if not running:
        return
    older = (
        f"the store at {store.display_url} is at schema {revision}, older than this version "
        f"of monitord ({len(pending)} migration(s) pending)"
    )
    if file is not None:
        raise StoreError(
            f"{older}, and a monitord daemon is running on it: stop the daemon and run "
            "`monitord migrate` (or restart the daemon, which migrates at start), then run "
            "this command again"
        )
    from monitord.cluster import UPGRADE_STEPS

    raise StoreError(
        f"{older}, and monitord daemons of the version before (schema {revision}) are running "
        f"on it: {', '.join(running)}. {UPGRADE_STEPS}"
    )


def app_for(args: argparse.Namespace) -> App:
    """The App (store opened and migrated) for the settings the command line points at; see
    existing_app."""
    return existing_app(settings_for(args))


def existing_app(settings: Settings) -> App:
    """The App for settings whose store already exists, opened and migrated.

    Only `run`, `sync` and `demo` create a store: any other command run against a SQLite file
    that does not exist is pointed at the wrong config (a folder without monitord.toml at
    3 a.m.), and says so rather than reporting on an empty store it just made.
    """
    from monitord.store import sqlite_file

    path = sqlite_file(settings.store.url)
    if path is not None and not sqlite_store_exists(path, settings):
        raise UsageError(
            f"no store at {path.absolute()} (store.url of {settings.source}): nothing was "
            f"ever recorded there. Is this the daemon's config? Looked for {LOOKED_FOR}"
        )
    return open_app(settings)


def add_by(parser: argparse.ArgumentParser) -> None:
    """Give a command that changes something the `--by NAME` option (see actor)."""
    parser.add_argument(
        "--by", metavar="NAME", help="who is doing this, for the audit trail (default: your login)"
    )


def add_json(parser: argparse.ArgumentParser, what: str = "print JSON instead of text") -> None:
    """Give a command the `--json` option; `what` says what it prints."""
    parser.add_argument("--json", action="store_true", help=what)


def add_wide(parser: argparse.ArgumentParser) -> None:
    """Give a command that prints a table the `--wide` option (see monitord.cli.main)."""
    parser.add_argument(
        "--wide",
        action="store_true",
        help="on a terminal, show every column whole (piped or redirected, they always are)",
    )


def progress_line(step: str) -> None:
    """Say a long command's progress on stderr, a line each: stdout keeps the result alone."""
    print(f"monitord: {step}…", file=sys.stderr, flush=True)


def file_path(text: str) -> str:
    """An argparse type for a file named on the command line that monitord reads or writes as a
    file: '-' is refused (only `analyse` reads standard input) rather than taken as a file
    called '-' in the working folder."""
    if text == "-":
        raise argparse.ArgumentTypeError(
            "'-' (standard input or output) is not taken here: give a file's path"
        )
    return text


def catalogue_id(text: str) -> str:
    """An argparse type for a service's id: what a non-UTF-8 terminal sent (GBK bytes) kept as
    U+FFFD, as every stored text is, so that a lookup says "no such service" rather than fail
    in the store."""
    return storable(text)


def quarter_arg(text: str) -> str:
    """An argparse type for every --quarter: the label as monitord spells it, whatever case a
    person typed (2026Q3 is 2026q3). The command checks it (bad, or not begun) in its words."""
    return text.strip().lower()


def positive_int(text: str) -> int:
    """An argparse type: a whole number from 1 to `MAX_ID` (a --limit of 0 or -1 shows all or
    none; one past what SQLite and PostgreSQL take in a query fails there)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    if value > MAX_ID:
        raise argparse.ArgumentTypeError(f"expected a number up to {MAX_ID}, got {value}")
    return value


def row_id(text: str) -> int:
    """An argparse type: the number of an incident, a finding, a silence… (1 to `MAX_ID`)."""
    return positive_int(text)


def time_arg(flag: str, value: str | None) -> dt.datetime | None:
    """A time given on the command line, read as Asia/Shanghai when it has no offset.

    Raises UsageError naming the flag when it is not ISO 8601.
    """
    if value is None:
        return None
    try:
        moment = parse_time(value)
    except ValueError:
        moment = None
    if moment is None or moment < EARLIEST:
        raise UsageError(
            f"{flag} {value!r}: expected an ISO 8601 time from 1970 on, such as 2026-10-01 or "
            "2026-10-01T08:00 (read as Asia/Shanghai)"
        ) from None
    return moment


def actor(args: argparse.Namespace) -> str:
    """Who is acting, for the audit trail: --by, else the sudo user, else the login.

    Raises UsageError naming --by when it is blank, over MAX_NAME characters or holds a control
    character; characters no store holds (a non-UTF-8 argument's) are kept as U+FFFD.
    """
    given = getattr(args, "by", None)
    if given is None:
        return storable(os.environ.get("SUDO_USER") or getpass.getuser())
    name = written_text("--by", str(given), MAX_NAME, one_line_only=True)
    if not name:
        raise UsageError("--by: empty; say who is doing this")
    return storable(name)


def print_json(value: Any) -> None:
    """Print a JSON document for people and scripts alike (Chinese text kept readable)."""
    print(json.dumps(value, ensure_ascii=False, indent=2))


class _EscapedOutput(io.TextIOBase):
    """A text stream writing to another with control characters escaped (redact.escaped)."""

    def __init__(self, inner: TextIO) -> None:
        super().__init__()
        self.inner = inner

    def write(self, text: str) -> int:
        """Write text, its control characters escaped; returns len(text) as a stream does."""
        self.inner.write(escaped(text))
        return len(text)

    def flush(self) -> None:
        """Flush the stream underneath."""
        self.inner.flush()

    def fileno(self) -> int:
        """The file descriptor of the stream underneath."""
        return self.inner.fileno()

    def isatty(self) -> bool:
        """Whether the stream underneath is a terminal."""
        return self.inner.isatty()


def tolerant_output() -> None:
    """Make stdout and stderr write what their encoding cannot hold as backslash escapes
    (\\u65e5) rather than fail.

    A terminal or a pipe set to ASCII or Latin-1 (LC_ALL=C, PYTHONIOENCODING=ascii) cannot hold
    the Chinese of a service's name or a help text: every command, its --help and its error
    lines must still print, not end in a UnicodeEncodeError.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


@contextmanager
def private_files() -> Iterator[None]:
    """Within it, the files monitord creates (the store, its -wal and -shm, the log and its
    rotations) are readable by their owner only, unless the umask already keeps others out.

    The store holds webhook tokens. A shell's umask (022) made them readable by every user;
    a umask that already denies others (systemd's UMask=0027 in deploy/monitord.service, which
    lets the monitord group read) was chosen on purpose and is kept.
    """
    previous = os.umask(0o077)
    if previous & 0o007 == 0o007:
        os.umask(previous)
    try:
        yield
    finally:
        os.umask(previous)


@contextmanager
def escaped_stdout() -> Iterator[None]:
    """Within it, everything a command prints to stdout has its control characters escaped.

    Commands print what service providers wrote in the catalogue (names, contacts, summaries)
    and what servers answered: an escape sequence in it must not clear the screen or reorder
    the text a person reads. One place for every command, tables, lines and JSON alike.
    """
    real = sys.stdout
    sys.stdout = _EscapedOutput(real)
    try:
        yield
    finally:
        sys.stdout = real
