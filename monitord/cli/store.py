"""`monitord migrate` and `monitord backup`: the store's side of an upgrade.

Neither goes through `app_for`, which migrates the store as it opens it: a check must change
nothing, and a backup is taken before the new version's migrations run.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitord.cli.common import (
    existing_sqlite,
    file_path,
    live_cluster_members,
    settings_for,
)
from monitord.errors import StoreError

if TYPE_CHECKING:
    from monitord.store import Migration, Store


def _listed(migrations: list[Migration]) -> str:
    return "\n".join(f"  {m.revision}  {m.title}" for m in migrations)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the pending migrations (what `run` does at start), or with --check only list them."""
    from monitord.store import Store

    settings = settings_for(args)
    existing_sqlite(settings)
    store = Store(settings.store.url)
    try:
        return _check(store) if args.check else _migrate(store, settings.cluster.lease_seconds)
    finally:
        store.dispose()


def _check(store: Store) -> int:
    pending = store.pending_migrations()
    if not pending:
        print(f"the store at {store.display_url} is up to date (schema {store.revision()})")
        return 0
    print(
        f"the store at {store.display_url} is at schema {store.revision() or '(none)'}; "
        f"`monitord migrate` (or the daemon's next start) would apply {len(pending)} "
        f"migration(s):\n{_listed(pending)}"
    )
    return 1


def _migrate(store: Store, lease_seconds: float) -> int:
    # As the daemon does: refused while a daemon runs on the store, which would write to
    # tables as they change under it.
    try:
        store.take_for_daemon()
    except StoreError:
        raise StoreError(
            f"a monitord daemon is running on the store at {store.display_url}: stop it first "
            "(it would write to the tables as they change under it), then migrate"
        ) from None
    if store.url.get_backend_name() == "postgresql":
        alive = live_cluster_members(store, lease_seconds)
        if alive:
            raise StoreError(
                f"monitord daemons are running on the store at {store.display_url}: "
                f"{', '.join(m.name for m in alive)}; stop every one of them first "
                "(`monitord cluster` lists them), then migrate"
            )
    applied = store.migrate()
    if not applied:
        print(f"the store at {store.display_url} was up to date (schema {store.revision()})")
    else:
        print(
            f"applied {len(applied)} migration(s) to the store at {store.display_url}:\n"
            f"{_listed(applied)}"
        )
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy a SQLite store to FILE while the daemon runs; print the pg_dump line for PostgreSQL."""
    from monitord.store import backup_sqlite

    settings = settings_for(args)
    file = existing_sqlite(settings)
    target = Path(args.file)
    if file is None:
        # monitord copies only a SQLite file; a PostgreSQL store is PostgreSQL's to dump.
        print("# the store is PostgreSQL: back it up with pg_dump, as a user it lets in")
        if _has_password(settings.store.url):
            # A command line is seen by every user of the machine (ps): the password never is.
            print("# the password of store.url is left out: pg_dump asks for it, or give it in")
            print("# PGPASSWORD or ~/.pgpass")
        print(pg_dump_line(settings.store.url, target))
        return 0
    size = backup_sqlite(file, target)
    print(f"backed up the store {file} to {target} ({size:,} bytes, mode 0600)")
    print(f"to restore: stop the daemon, copy {target} to {file}, remove {file}-wal and {file}-shm")
    return 0


def pg_dump_line(store_url: str, target: Path) -> str:
    """The pg_dump command that backs up the PostgreSQL store at store_url into target, reaching
    the server as the daemon does (a socket folder given as host= stays a socket, the port and
    the user only when the URL names them) and never holding the URL's password."""
    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    params = {
        key: _one_value(value) for key, value in url.query.items() if key != _PASSWORD_PARAMETER
    }
    options = {
        "--host": url.host or params.pop("host", None),
        "--port": str(url.port) if url.port else params.pop("port", None),
        "--username": url.username or params.pop("user", None),
    }
    database = url.database or params.pop("dbname", None) or ""
    if params:  # sslmode and the like: pg_dump takes them in a connection string
        database = " ".join(f"{k}={v}" for k, v in {"dbname": database, **params}.items())
    words = ["pg_dump", "--format=custom", "--file", str(target)]
    for option, value in options.items():
        if value:
            words += [option, value]
    return shlex.join([*words, database] if database else words)


_PASSWORD_PARAMETER = "password"
"""libpq's connection parameter for the password (`?password=` in store.url)."""


def _has_password(store_url: str) -> bool:
    """Whether store_url holds a password, in its user part or as `?password=`."""
    from sqlalchemy.engine import make_url

    url = make_url(store_url)
    return bool(url.password) or _PASSWORD_PARAMETER in url.query


def _one_value(value: str | tuple[str, ...]) -> str:
    # A key given twice in the URL (host=a&host=b): libpq takes the list comma-separated.
    return value if isinstance(value, str) else ",".join(value)


def add_store_commands(sub: Any) -> None:
    """Register `migrate` and `backup` on the main parser's subparsers."""
    text = "apply the store's pending schema migrations (what `run` does at start)"
    p = sub.add_parser("migrate", help=text, description=text)
    p.add_argument(
        "--check",
        action="store_true",
        help="only list the pending migrations, changing nothing; exit 1 when there are some",
    )
    p.set_defaults(handler=cmd_migrate)
    text = "copy the SQLite store to FILE, consistently, while the daemon runs"
    p = sub.add_parser("backup", help=text, description=text)
    p.add_argument(
        "file", metavar="FILE", type=file_path, help="the backup to write (replaced atomically)"
    )
    p.set_defaults(handler=cmd_backup)
