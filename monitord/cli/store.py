"""`monitord migrate` and `monitord backup`: the store's side of an upgrade.

Neither goes through `app_for`, which migrates the store as it opens it: a check must change
nothing, and a backup is taken before the new version's migrations run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitord.cli.common import LOOKED_FOR, file_path, live_cluster_members, settings_for
from monitord.errors import StoreError, UsageError

if TYPE_CHECKING:
    from monitord.config import Settings
    from monitord.store import Migration, Store


def _existing_sqlite(settings: Settings) -> Path | None:
    """The store's SQLite file (None for PostgreSQL); UsageError when it does not exist."""
    from monitord.store import sqlite_file

    path = sqlite_file(settings.store.url)
    if path is not None and not path.exists():
        raise UsageError(
            f"no store at {path.absolute()} (store.url of {settings.source}). Is this the "
            f"daemon's config? Looked for {LOOKED_FOR}"
        )
    return path


def _listed(migrations: list[Migration]) -> str:
    return "\n".join(f"  {m.revision}  {m.title}" for m in migrations)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the pending migrations (what `run` does at start), or with --check only list them."""
    from monitord.store import Store

    settings = settings_for(args)
    _existing_sqlite(settings)
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
    """Copy a SQLite store to FILE while the daemon runs; say how for PostgreSQL."""
    from monitord.store import Store, backup_sqlite

    settings = settings_for(args)
    file = _existing_sqlite(settings)
    target = Path(args.file)
    if file is None:
        url = Store(settings.store.url).url
        raise UsageError(
            f"the store is PostgreSQL (database {url.database!r} on {url.host or 'localhost'}): "
            f"back it up with pg_dump, e.g. pg_dump --format=custom --file {target} "
            f"--host {url.host or 'localhost'} --port {url.port or 5432} "
            f"--username {url.username or 'monitord'} {url.database}"
        )
    if target.is_dir():
        raise UsageError(f"{target} is a folder: give the backup's file name")
    size = backup_sqlite(file, target)
    print(f"backed up the store {file} to {target} ({size:,} bytes, mode 0600)")
    print(f"to restore: stop the daemon, copy {target} to {file}, remove {file}-wal and {file}-shm")
    return 0


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
