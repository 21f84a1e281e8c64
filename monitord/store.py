"""Opening the store: engine, sessions, and Alembic migrations applied at start."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from monitord.errors import StoreError
from monitord.models import AuditEntry
from monitord.redact import mask_url, mask_urls

MIGRATIONS = Path(__file__).parent / "migrations"


def _normalise_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we install; SQLAlchemy's bare default would be psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return parsed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while the daemon writes; the busy timeout makes writers wait their
    # turn instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _reason(exc: SQLAlchemyError) -> str:
    """The first line of what the database said, URLs masked: "OperationalError: …"."""
    said = str(getattr(exc, "orig", None) or exc).splitlines()
    return f"{exc.__class__.__name__}: {mask_urls(said[0] if said else '')}"


class Store:
    """The database monitord writes everything to, and the sessions to reach it."""

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        self.engine: Engine = create_engine(self.url, pool_pre_ping=True)
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def display_url(self) -> str:
        """The URL with its password and secret-looking parts masked, for logs and messages."""
        return mask_url(self.url.render_as_string(hide_password=False))

    def migrate(self) -> None:
        """Bring the schema to the newest version, keeping every row. Safe to run every start."""
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open or migrate the store at {self.display_url}: {_reason(exc)}"
            ) from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def check_writable(self) -> None:
        """Raise StoreError naming the store when it cannot be written.

        A read-only file, mount or database opens and reads as usual: the daemon said it was
        running and then every job failed. One write, rolled back, tells at start.
        """
        try:
            with self.engine.connect() as connection, connection.begin() as transaction:
                connection.execute(text("update alembic_version set version_num = version_num"))
                transaction.rollback()
        except SQLAlchemyError as exc:
            raise StoreError(
                f"the store at {self.display_url} cannot be written: {_reason(exc)}"
            ) from None

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def open_store(url: str, for_daemon: bool = False) -> Store:
    """Open the store at url and apply pending migrations.

    for_daemon: also check, before any job runs, that the store can be written.
    Raises StoreError, one line naming the store.
    """
    store = Store(url)
    try:
        store.migrate()
        if for_daemon:
            store.check_writable()
    except BaseException:
        store.dispose()
        raise
    return store


def audit(
    session: Session,
    at: dt.datetime,
    actor: str,
    action: str,
    subject: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Add a line to the audit trail: who did what to which subject, and when."""
    session.add(AuditEntry(at=at, actor=actor, action=action, subject=subject, detail=detail or {}))
