"""Opening the store: engine, sessions, and Alembic migrations applied at start; the claim that
keeps a second daemon off a store."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InterfaceError, InternalError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from monitord.errors import StoreError, UsageError
from monitord.files import write_problem
from monitord.redact import mask_secret, mask_url, mask_urls
from monitord.store.models import AuditEntry

MIGRATIONS = Path(__file__).parent / "migrations"


CLAIM_KEY = int.from_bytes(b"monitord", "big")
"""The PostgreSQL advisory lock taken while the store is migrated (advisory locks are per
database)."""

LOCK_WAIT_SECONDS = 10.0
"""How long a probe recording, or a request to the web app, waits for a lock another transaction
holds (VACUUM FULL, ALTER TABLE, a CREATE INDEX on its table) before it counts the store as not
answering: as long as SQLite's busy timeout."""

SQLITE_BUSY_SECONDS = 10.0
"""How long a SQLite connection waits for another writer's lock (its busy timeout) before it
fails with "database is locked"."""

MIN_FREE_BYTES = 1 << 20
"""Free space below which the disk of a SQLite store counts as full (see unreachable_reason)."""


STORE_GONE_ERRORS = (OperationalError, InterfaceError, InternalError)
"""What the store raises when it did not answer, or ended the session (PostgreSQL ends one a
paused daemon left waiting in a leased job's commit): nothing wrong with the work itself, which
runs again later."""


def sqlite_file(url: URL | str) -> Path | None:
    """The database file of a SQLite URL (also in its file: URI form); None for other stores."""
    url = make_url(url) if isinstance(url, str) else url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    database = url.database
    if database.startswith("file:"):  # sqlite:///file:/var/m.db?mode=ro&uri=true
        database = urlsplit(database).path
    return Path(database)


def _normalise_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we install; SQLAlchemy's bare default would be psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    file = sqlite_file(parsed)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    return parsed


def _connect_args(url: URL) -> dict[str, Any]:
    if url.get_backend_name() != "postgresql":
        return {}
    # An unreachable server fails a connection in seconds, and a dead one is noticed within a
    # minute (TCP keepalives), rather than after the kernel's two hours. A query sent into a cut
    # network fails once its data has gone unacknowledged for 20 s (tcp_user_timeout), not after
    # the kernel's fifteen minutes of retransmissions. The server, for its part, ends a
    # transaction whose daemon stopped talking mid-way after five minutes, so its row locks do
    # not hold the other daemons of a cluster up for ever.
    return {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 20_000,
        "options": "-c idle_in_transaction_session_timeout=300000",
    }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while the daemon writes; the busy timeout makes writers wait their
    # turn instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={round(SQLITE_BUSY_SECONDS * 1000)}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_migration_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 begins a transaction only before an INSERT, UPDATE or DELETE: a
    # migration's ALTER TABLE and CREATE INDEX were committed as they ran, and one that failed
    # or was killed mid-way left a store half migrated that no later migration could finish.
    # With the driver's own transaction handling off, _sqlite_begin's BEGIN holds them all.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # A migration that rebuilds a table (Alembic's batch mode: copy, drop, rename) drops a table
    # other tables refer to; with foreign keys on, the drop failed. SQLite takes this pragma
    # outside a transaction only; Store.migrate checks the keys itself before it commits.
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # IMMEDIATE: the write lock from the start, so no other writer commits while the schema
    # changes under it.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_broken_keys(connection: Connection) -> str | None:
    """None when every foreign key of the SQLite store behind connection names a row that
    exists; otherwise which rows do not, in one line."""
    rows = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if not rows:
        return None
    shown = ", ".join(f"{table} row {rowid} (→ {parent})" for table, rowid, parent, _ in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"{len(rows)} row(s) refer to rows that do not exist: {shown}{more}"


def _written_password(url: URL) -> str:
    """The password of url as its user wrote it: make_url ends a password at its first @ and
    takes the rest of it for the host (mon:p@ssW0rd@db has the password p, the host ssW0rd@db)."""
    password = url.password or ""
    host_head, at, _ = (url.host or "").rpartition("@")
    return f"{password}@{host_head}" if at else password


def _reason(exc: SQLAlchemyError, url: URL | None = None) -> str:
    """The first line of what the database said, URLs masked, and the password of url, the
    store's, masked wherever the driver quoted it: "OperationalError: …"."""
    said = str(getattr(exc, "orig", None) or exc).splitlines()
    shown = mask_urls(said[0] if said else "")
    if url is not None:
        shown = mask_secret(shown, _written_password(url))
    return f"{exc.__class__.__name__}: {shown}"


@dataclass(frozen=True)
class Migration:
    """One schema migration: its Alembic revision id and the first paragraph of its docstring."""

    revision: str
    title: str


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _pending(connection: Connection) -> list[Migration]:
    """The migrations not yet applied to the store behind connection, oldest first.

    Raises RevisionError when the store is at a revision these migrations do not know.
    """
    scripts = ScriptDirectory.from_config(_alembic_config())
    current = MigrationContext.configure(connection).get_current_heads()
    lower = current[0] if current else "base"
    newest_first = scripts.iterate_revisions("heads", lower)
    return [
        Migration(script.revision, " ".join(script.doc.split()))
        for script in reversed(list(newest_first))
        if script.revision not in current
    ]


_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def json_text(value: Any) -> str:
    """The text of a value in a JSON column. orjson writes a probe result's facts in a tenth of
    json.dumps's time (a round's results are 2,000 of them); what it refuses (an integer over
    64 bits; a datetime or dataclass, which json refuses too) goes to json."""
    try:
        return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value)


class Store:
    """The database monitord writes everything to, and the sessions to reach it."""

    def __init__(self, url: str) -> None:
        self.url = _normalise_url(url)
        self.engine: Engine = create_engine(
            self.url,
            pool_pre_ping=True,
            connect_args=_connect_args(self.url),
            json_serializer=json_text,
        )
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._checks = self._check_engine()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.claim: DaemonClaim | None = None

    def _check_engine(self) -> Engine:
        """The engine unreachable_reason checks the store on. PostgreSQL: a connection made
        for each check, never a pooled one, which answers while no new connection can be made
        (max_connections reached): the daemon then said the store was back every few seconds
        while every job that needed a connection failed. SQLite: the store's own engine (a
        new connection to a file is never refused for want of a slot)."""
        if self.url.get_backend_name() != "postgresql":
            return self.engine
        return create_engine(self.url, poolclass=NullPool, connect_args=_connect_args(self.url))

    @property
    def display_url(self) -> str:
        """The URL with its password and secret-looking parts masked, for logs and messages."""
        return mask_url(self.url.render_as_string(hide_password=False))

    def migrate(self) -> list[Migration]:
        """Bring the schema to the newest version, keeping every row. Safe to run every start:
        the migrations run in one transaction, and one that fails or is killed leaves the
        store as it was.

        Returns the migrations it applied, oldest first (none when the store was up to date).
        Raises StoreError naming the store when they cannot be applied.
        """
        cfg = _alembic_config()
        engine = self._migration_engine()
        try:
            with engine.begin() as connection:
                if self.url.get_backend_name() == "postgresql":
                    # Daemons of a cluster start together: one migrates, the others wait for
                    # it and then find nothing pending.
                    connection.execute(
                        text("select pg_advisory_xact_lock(:key)"), {"key": CLAIM_KEY}
                    )
                applied = _pending(connection)
                if applied:
                    self._check_keys(connection, migrated=False)
                    cfg.attributes["connection"] = connection
                    command.upgrade(cfg, "head")
                    self._check_keys(connection, migrated=True)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open or migrate the store at {self.display_url}: {_reason(exc, self.url)}"
            ) from None
        except (CommandError, RevisionError):
            raise self._too_new() from None
        finally:
            if engine is not self.engine:
                engine.dispose()
        return applied

    def _migration_engine(self) -> Engine:
        """The engine Store.migrate runs on. PostgreSQL: the store's own, whose transactions
        hold DDL too. SQLite: one of its own (its connections are never handed to other
        work), whose connections hold DDL in their transactions and keep foreign keys off;
        see _sqlite_migration_pragmas."""
        if self.url.get_backend_name() != "sqlite":
            return self.engine
        engine = create_engine(self.url, poolclass=NullPool, json_serializer=json_text)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", _sqlite_migration_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine

    def _check_keys(self, connection: Connection, *, migrated: bool) -> None:
        """Refuse (raise StoreError) to migrate a SQLite store where a foreign key names no
        row. Before the migrations (`migrated` False): rows broken already (written with
        foreign keys off, by hand or another program), which only a person can mend. After
        them: what the migrations left, as they ran with foreign keys off."""
        if self.url.get_backend_name() != "sqlite":
            return
        broken = _sqlite_broken_keys(connection)
        if broken is None:
            return
        if migrated:
            raise StoreError(
                f"cannot migrate the store at {self.display_url}: after the migrations, "
                f"{broken}; nothing was changed"
            )
        raise StoreError(
            f"cannot migrate the store at {self.display_url}: before any migration, {broken} "
            "(written with foreign keys off, by hand or by another program). Back the store "
            "up (`monitord backup FILE`), then delete or correct those rows (the sqlite3 "
            "shell's `PRAGMA foreign_key_check` lists them) and start again; nothing was "
            "changed"
        )

    def pending_migrations(self) -> list[Migration]:
        """The migrations `migrate` would apply, oldest first, changing nothing in the store.

        Raises StoreError when the store cannot be read or is newer than this version.
        """
        try:
            with self.engine.connect() as connection:
                return _pending(connection)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot read the store at {self.display_url}: {self._file_reason(exc)}"
            ) from None
        except (CommandError, RevisionError):
            raise self._too_new() from None

    def _file_reason(self, exc: SQLAlchemyError) -> str:
        """Why the store failed, in one line: for a SQLite file, what is wrong with it or its
        folder when that is the cause ("attempt to write a readonly database" names neither
        the -wal and -shm files SQLite must make beside it nor the folder that refuses them);
        otherwise what the database said."""
        file = sqlite_file(self.url)
        if file is not None and file.exists():
            problem = _sqlite_file_problem(file)
            if problem is not None:
                return problem
        return _reason(exc, self.url)

    def revision(self) -> str | None:
        """The schema revision the store is at; None for a store never migrated."""
        with self.engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
        return heads[0] if heads else None

    def _too_new(self) -> StoreError:
        # A newer monitord migrated this store and the code was then rolled back: Alembic
        # only said "Can't locate revision", with a traceback.
        return StoreError(
            f"the store at {self.display_url} is at schema revision {self.revision()!r}, which "
            "this version of monitord does not know: a newer version migrated it. Run "
            "that version, or restore the backup taken before the upgrade"
        )

    def before_commit(self, check: Callable[[Session], None]) -> None:
        """Call `check` with every session of this store as it commits (once, however often
        asked); an exception it raises refuses the commit, and the session rolls back."""
        if not event.contains(self._sessions, "before_commit", check):
            event.listen(self._sessions, "before_commit", check)

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
            said = f"the store at {self.display_url} cannot be written: {self._file_reason(exc)}"
            if isinstance(exc, OperationalError) and lock_wait_given_up(exc):
                raise StoreBusy(said) from None
            raise StoreError(said) from None

    def unreachable_reason(self) -> str | None:
        """None when the store answers and takes a write now, on a new connection (see
        _check_engine); otherwise why not, in one line.

        A store that reads but cannot be written (a full disk, a read-only file or database)
        counts as unreachable too: nothing the daemon learns could be kept. A SQLite store's
        disk counts as full below MIN_FREE_BYTES free, since a small write may still fit in the
        space a failed large one left in its WAL file.
        """
        try:
            with self._checks.begin() as connection:
                connection.execute(text("update alembic_version set version_num = version_num"))
        except SQLAlchemyError as exc:
            return _reason(exc, self.url)
        return self._disk_full_reason()

    def _disk_full_reason(self) -> str | None:
        """Why a SQLite store's disk takes no write (below MIN_FREE_BYTES free); else None."""
        file = sqlite_file(self.url)
        if file is None:
            return None
        try:
            free = shutil.disk_usage(file.parent).free
        except OSError as exc:
            return f"its folder {file.parent} cannot be read: {exc.strerror}"
        if free < MIN_FREE_BYTES:
            return f"its disk is full: {free // 1024} KiB free in {file.parent}"
        return None

    def write_blocked_reason(self, tables: Sequence[str], wait_seconds: float) -> str | None:
        """None when a transaction could write `tables` now, without waiting out another
        transaction's lock for longer than `wait_seconds`; otherwise why not, in one line
        naming the table or what stops the write. Leaves nothing in the store.

        A readiness check asked every few seconds: the store may answer while a table the
        daemon records to is locked (VACUUM FULL, ALTER TABLE), and then nothing is recorded.
        Raises StoreUnreachable when no connection is made or the store does not answer.
        """
        try:
            with Session(self._checks) as session:
                bound_lock_wait(session, wait_seconds)
                if self.url.get_backend_name() == "postgresql":
                    reason = _postgres_write_blocked(session, tables, wait_seconds)
                else:
                    reason = _sqlite_write_blocked(session, wait_seconds)
                session.rollback()
        except SQLAlchemyError as exc:
            raise StoreUnreachable(_reason(exc, self.url)) from None
        if reason is None and self._disk_full_reason() is not None:
            reason = "the store's disk is full"  # without its folder: readiness is public
        return reason

    def take_for_daemon(self) -> None:
        """Take the store for this daemon until dispose(); see DaemonClaim.

        Raises StoreError when another daemon has it.
        """
        claim = DaemonClaim(self)
        claim.take()
        self.claim = claim

    def dispose(self) -> None:
        """Close every pooled connection, and give up the daemon's claim."""
        self.engine.dispose()
        self._checks.dispose()
        if self.claim is not None:
            self.claim.release()
            self.claim = None


class StoreBusy(StoreError):
    """Another writer held the store's write lock past the busy timeout: a command or daemon
    still running, not a store that cannot be written."""


class StoreUnreachable(Exception):
    """The store gave no connection, or did not answer; its text says what it said."""


def lock_wait_given_up(exc: OperationalError) -> bool:
    """Whether the store gave up waiting for a lock another transaction holds: PostgreSQL's
    lock_timeout (SQLSTATE 55P03, see bound_lock_wait), SQLite's busy timeout."""
    if getattr(exc.orig, "sqlstate", None) == "55P03":
        return True
    return "database is locked" in str(exc.orig)


def _postgres_write_blocked(
    session: Session, tables: Sequence[str], wait_seconds: float
) -> str | None:
    # Not a write rolled back: on PostgreSQL that still leaves a dead row version, a WAL record
    # and a transaction id at every check. The lock an INSERT takes (ROW EXCLUSIVE, which
    # VACUUM FULL, ALTER TABLE, CREATE INDEX and LOCK TABLE hold off) and the transaction's
    # read-only flag (a standby, default_transaction_read_only) tell the same without one.
    for table in tables:
        try:
            session.execute(text(f'lock table "{table}" in row exclusive mode'))
        except OperationalError as exc:
            if not lock_wait_given_up(exc):
                raise
            return (
                f"table {table} is locked by another transaction: a write to it waited "
                f"{wait_seconds:g} s"
            )
    if session.scalar(text("select current_setting('transaction_read_only')")) == "on":
        return "the database is read-only"
    return None


def _sqlite_write_blocked(session: Session, wait_seconds: float) -> str | None:
    # A write rolled back: SQLite writes nothing of it (its pages stay in the connection's
    # cache). It waits for the write lock `wait_seconds`, not the store's busy timeout: a
    # readiness check waited 10 s behind a long writer, past a load balancer's timeout.
    connection = session.connection()
    connection.exec_driver_sql(f"PRAGMA busy_timeout={round(wait_seconds * 1000)}")
    try:
        session.execute(text("update alembic_version set version_num = version_num"))
    except OperationalError as exc:
        if lock_wait_given_up(exc):
            return f"the store is locked by another writer: a write to it waited {wait_seconds:g} s"
        if "readonly" in str(exc.orig):
            return "the store is read-only"
        raise
    finally:  # the pooled connection goes back with the store's own timeout
        connection.exec_driver_sql(f"PRAGMA busy_timeout={round(SQLITE_BUSY_SECONDS * 1000)}")
    return None


def gone_from_this_host(host: str | None, pid: int | None) -> bool:
    """Whether a process that last said it ran as `pid` on `host` is this machine's and gone
    (killed, crashed): what a row it left behind can be taken over on."""
    if host != socket.gethostname() or not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a process of another user has that pid now: not provably gone
    return False


class DaemonClaim:
    """A SQLite store taken by one `monitord run`, which a second daemon is refused.

    Two daemons on one SQLite file would send every alert twice and probe every service twice:
    several daemons need PostgreSQL, where monitord.cluster shares the work. The claim is an
    flock on the database file: SQLite's own locks are POSIX locks, which flock does not
    touch, so the CLI reads and writes as before. On PostgreSQL there is no claim: the daemons
    of a cluster register in it (monitord.cluster).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._file: int | None = None

    def _busy(self) -> StoreError:
        return StoreError(
            f"another monitord daemon is running on the store at {self.store.display_url}: "
            "stop it first (two daemons on one SQLite store would send every alert twice; "
            "several daemons share the work on a PostgreSQL store)"
        )

    def take(self) -> None:
        """Take a SQLite store; raises StoreError when another daemon has it."""
        file = sqlite_file(self.store.url)
        if file is not None:
            self._take_file(file)

    def _take_file(self, file: Path) -> None:
        try:
            # Read-only is enough for flock, and works on a read-only mount too (which the
            # write check at start then reports as such).
            self._file = os.open(file, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise StoreError(
                f"cannot open the store at {self.store.display_url}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.release()
            raise self._busy() from None

    def lost_reason(self) -> str | None:
        """None while the store's path still names the file this claim holds (or there is no
        file); otherwise what became of it, in one line. A file removed under the daemon is
        still written, and lost at its stop, while a second daemon may start at the path."""
        file = sqlite_file(self.store.url)
        if file is None or self._file is None:
            return None
        held = os.fstat(self._file)
        try:
            named = os.stat(file)
        except FileNotFoundError:
            return f"the store file {file} was removed"
        except OSError as exc:
            return f"the store file {file} cannot be looked at: {exc.strerror}"
        if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            return f"the store file {file} was replaced by another file"
        return None

    def held_elsewhere(self) -> bool:
        """Whether a daemon holds this SQLite store now (its flock is taken)."""
        file = sqlite_file(self.store.url)
        if file is None or not file.exists():
            return False
        handle = _checking_handle(file)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def release(self) -> None:
        """Give the store up (closing the locked file)."""
        if self._file is not None:
            os.close(self._file)
            self._file = None


_checking_handles: dict[tuple[int, int], int] = {}


def _checking_handle(file: Path) -> int:
    """A read-only descriptor of the store file for `held_elsewhere`'s flock test, opened once
    per file and process and never closed.

    Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    own among them: SQLite in another process then takes its closing connection for the last
    one and deletes the write-ahead log under this process's connections (a daemon's, when its
    API lists the cluster), and the store is corrupted.
    """
    named = os.stat(file)
    key = (named.st_dev, named.st_ino)
    if key not in _checking_handles:
        _checking_handles[key] = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    return _checking_handles[key]


def open_store(url: str, *, for_daemon: bool = False) -> Store:
    """Open the store at url and apply pending migrations.

    for_daemon: also take the store for this daemon (see DaemonClaim) and check, before any
    job runs, that it can be written.
    Raises StoreError, one line naming the store.
    """
    store = Store(url)
    try:
        if for_daemon:
            store.take_for_daemon()  # before migrating: two daemons must not migrate at once
        store.migrate()
        if for_daemon:
            store.check_writable()
    except BaseException:
        store.dispose()
        raise
    return store


@dataclass(frozen=True)
class StoreCheck:
    """What check_store found: a line saying what the daemon's start will find, and what may
    yet hold that start up (another writer holding the store now), or None."""

    found: str
    warning: str | None = None


def check_store(url: str) -> StoreCheck:
    """Whether `open_store(url, for_daemon=True)` would open the store, found without creating,
    migrating or writing anything: what the daemon's start will find.

    Raises StoreError, one line naming the store (its password masked), for what that start
    would refuse: a SQLite file that cannot be made (its folder unwritable) or read or written,
    a server that does not answer or refuses the login, a schema newer than this version.
    """
    file = sqlite_file(url)
    if file is not None:
        missing = True  # until it is seen: a folder on the way may not be searched
        try:
            missing = not file.exists()
            problem = write_problem(file) if missing else _sqlite_file_problem(file)
        except OSError as exc:  # a folder on the way this user cannot search
            problem = f"cannot reach {file.absolute()} ({(exc.strerror or str(exc)).lower()})"
        if problem is not None:
            doing = "create" if missing else "open"
            raise StoreError(f"cannot {doing} the store at {mask_url(url)}: {problem}")
        if missing:
            # A relative path is the daemon's folder's: say which file that is from here.
            where = "" if file.is_absolute() else f" ({file.absolute()} from here)"
            return StoreCheck(
                f"{mask_url(url)}{where}: no such file yet; the daemon creates it at start"
            )
    store = Store(url)  # its SQLite file's folder exists: nothing is made
    busy = None
    try:
        pending = store.pending_migrations()
        if store.revision() is None:
            return StoreCheck(f"{store.display_url}: empty; the daemon creates its tables at start")
        if pending:
            with store.engine.connect() as connection:  # PRAGMA foreign_key_check only reads
                store._check_keys(connection, migrated=False)
        try:
            store.check_writable()
        except StoreBusy:
            busy = (
                f"the store at {store.display_url} is busy: another writer held it past the "
                f"{SQLITE_BUSY_SECONDS:g} s wait (another daemon or command still running?); "
                "the daemon's start waits as long, and fails if it is held still"
            )
    finally:
        store.dispose()
    if pending:
        found = f"{store.display_url}: {len(pending)} migration(s) pending, applied at start"
    else:
        found = f"{store.display_url}: up to date"
    return StoreCheck(found, busy)


def _sqlite_file_problem(file: Path) -> str | None:
    """Why the daemon could not run on the existing SQLite store `file`, found before SQLite
    says only "disk I/O error" (a device such as /dev/null) or "attempt to write a readonly
    database" (a folder it cannot make the store's -wal and -shm files in); else None."""
    if not file.is_file():
        return f"{file} is not a regular file"
    if not os.access(file, os.W_OK):
        return None  # the write check names it
    for beside in (f"{file.name}-wal", f"{file.name}-shm"):
        problem = write_problem(file.with_name(beside))
        if problem is not None:
            return f"SQLite must write {beside} beside it: {problem}"
    return None


def backup_sqlite(file: Path, target: Path) -> int:
    """Copy the SQLite store `file` to `target`, consistent even while the daemon writes.

    SQLite's online backup API copies a snapshot; the copy is written beside `target` (mode
    0600: the store holds webhook tokens), checked, and renamed over it, so that `target` is
    never half written. Returns the size of the copy in bytes.
    Raises UsageError when target is something other than a regular file (a folder, a device,
    a FIFO, a symbolic link: replaced, it would be lost), its name cannot be used, or it is
    the store or one of its own files; StoreError naming what could not be read or written.
    """
    _refuse_what_is_not_a_file(target)
    _refuse_the_stores_own_files(file, target)
    try:
        handle, part_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise StoreError(f"cannot write the backup in {target.parent}: {exc.strerror}") from None
    os.close(handle)
    part = Path(part_name)
    try:
        _copy_sqlite(file, part)
        with open(part, "rb") as written:
            os.fsync(written.fileno())
        os.replace(part, target)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up the store {file} to {target}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"cannot write the backup {target}: {exc.strerror}") from None
    finally:
        part.unlink(missing_ok=True)
    _sync_folder(target.parent)
    return target.stat().st_size


# What a backup's target may already be besides a regular file, in the words a refusal uses.
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


def _refuse_what_is_not_a_file(target: Path) -> None:
    # The copy is renamed over target: a device (/dev/null as root), a FIFO or a symbolic link
    # there would be replaced by a regular file, and whatever it was lost.
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(
            f"{target}: cannot be used as the backup's name ({exc.strerror})"
        ) from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "of an unknown kind")
        raise UsageError(
            f"{target} is {kind}, not a regular file: give the backup's file name (a backup "
            "replaces only a regular file)"
        )


# The files SQLite keeps beside a store: replacing one under a running daemon corrupts it.
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _refuse_the_stores_own_files(file: Path, target: Path) -> None:
    store = file.resolve()
    if target.resolve() == store or (target.exists() and target.samefile(store)):
        raise UsageError(f"{target} is the store itself: give the backup another name")
    for suffix in _SQLITE_COMPANIONS:
        if target.resolve() == store.with_name(store.name + suffix):
            raise UsageError(
                f"{target} is the store's own {suffix} file, which SQLite writes beside it: "
                "give the backup another name"
            )


def _copy_sqlite(file: Path, part: Path) -> None:
    # mode=rw: the store must exist; a missing one is never created by a backup.
    source = sqlite3.connect(f"file:{quote(str(file))}?mode=rw", uri=True)
    with closing(source), closing(sqlite3.connect(part)) as copy:
        source.execute("PRAGMA busy_timeout=10000")
        source.backup(copy)
        # One self-contained file (the store's WAL mode would come with -wal and -shm files).
        copy.execute("PRAGMA journal_mode=DELETE")
        checked = copy.execute("PRAGMA quick_check").fetchone()[0]
        if checked != "ok":
            raise sqlite3.DatabaseError(f"the copy fails SQLite's quick_check: {checked}")


def _sync_folder(folder: Path) -> None:
    # The rename is durable once the folder is: a crash right after must not lose it.
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def hold_alone(session: Session, key: int) -> None:
    """Begin the session's transaction holding the store against every other transaction that
    holds `key`, until it ends: two processes doing the same read-then-write (a sync, a scan's
    start) then do it one after the other. SQLite: its write lock, taken at once (BEGIN
    IMMEDIATE), waiting as the store's busy timeout says; PostgreSQL: the transaction-level
    advisory lock `key`. Raises OperationalError when SQLite stays busy past its timeout."""
    backend = session.get_bind().dialect.name
    if backend == "sqlite":
        session.execute(text("BEGIN IMMEDIATE"))
    elif backend == "postgresql":
        session.execute(text("select pg_advisory_xact_lock(:key)"), {"key": key})


def bound_lock_wait(session: Session, seconds: float | None = None) -> None:
    """Begin the session's transaction giving up, after `seconds` (LOCK_WAIT_SECONDS when
    None), any lock it waits for (an OperationalError, which the caller takes for a store that
    does not answer).
    PostgreSQL otherwise waits for ever: a table locked for two minutes held the probes for
    two minutes, and their results were then judged as if measured at once. SQLite: its busy
    timeout already bounds the wait."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("select set_config('lock_timeout', :wait, true)"),
            {"wait": f"{round((seconds or LOCK_WAIT_SECONDS) * 1000)}ms"},
        )


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
