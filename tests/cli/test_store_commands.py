"""`monitord migrate [--check]` and `monitord backup`: the store's side of an upgrade."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from monitord.cli import main
from monitord.cluster import SharedCoordinator
from monitord.config import ClusterSettings
from monitord.errors import StoreError
from monitord.store import Store, audit, open_store
from monitord.store.models import AuditEntry
from monitord.timeutil import UTC
from tests.conftest import FakeClock, PostgresServer, store_at

NOW = dt.datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def write_config(folder: Path, url: str) -> Path:
    path = folder / "monitord.toml"
    path.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    return path


def revision_of(url: str) -> str | None:
    store = Store(url)
    try:
        return store.revision()
    finally:
        store.dispose()


def test_migrate_check_lists_what_would_change_then_migrate_applies_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    store_at(url, "0006")

    assert main(["--config", config, "migrate", "--check"]) == 1
    out = capsys.readouterr().out
    assert "is at schema 0006" in out and "would apply 13 migration(s)" in out
    assert "  0007  alert outbox: claims" in out
    assert "  0008  evidence that lasts: catalogue revisions" in out
    assert "  0009  several daemons on one store: cluster members" in out
    assert "  0011  who runs a scan: its machine and process" in out
    assert "  0012  the store's first sync: no went_online events" in out
    assert "  0013  what an early 0008 left out: the silences table" in out
    assert "  0014  log audits: whether an audit covers its whole quarter" in out
    assert "  0015  evidence documents: sizes past 2 GiB" in out
    assert "  0016  probe roll-ups: results written after their hour was rolled up" in out
    assert "  0017  probe results: purged along an index of (success, at)" in out
    assert "  0018  scan keys and incident group keys: long enough for the longest" in out
    assert "  0019  alert outbox: a channel's last minute read along an index" in out
    assert revision_of(url) == "0006"  # the check changed nothing

    assert main(["--config", config, "migrate"]) == 0
    out = capsys.readouterr().out
    assert "applied 13 migration(s)" in out and "  0008  evidence that lasts" in out
    assert revision_of(url) == "0019"

    assert main(["--config", config, "migrate", "--check"]) == 0
    assert "is up to date (schema 0019)" in capsys.readouterr().out
    assert main(["--config", config, "migrate"]) == 0
    assert "was up to date" in capsys.readouterr().out


def test_migrate_is_refused_while_a_daemon_holds_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    store_at(url, "0007")
    daemon = open_store(url, for_daemon=True)  # an old daemon still running: it migrated
    try:
        assert main(["--config", config, "migrate"]) == 1
    finally:
        daemon.dispose()
    # Not the text that refuses a second daemon ("two daemons on one SQLite store would send
    # every alert twice"): it is a migration that waits for the daemon.
    assert capsys.readouterr().err == (
        f"monitord: a monitord daemon is running on the store at {url}: stop it "
        "first (it would write to the tables as they change under it), then migrate\n"
    )


def test_a_read_command_does_not_migrate_the_store_under_a_running_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `monitord status` between installing a new version and restarting the old daemon moved
    # the store to the new schema under that daemon, which then wrote rows without new columns.
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    store_at(url, "0007")
    old_daemon = Store(url)
    old_daemon.take_for_daemon()
    try:
        assert main(["--config", config, "status"]) == 1
    finally:
        old_daemon.dispose()
    said = capsys.readouterr().err
    assert said.count("\n") == 1
    assert "is at schema 0007, older than this version of monitord" in said
    assert "stop the daemon and run `monitord migrate`" in said
    assert revision_of(url) == "0007"
    # With the daemon stopped, the command migrates the store as it opens it, as before.
    assert main(["--config", config, "status"]) == 0
    assert revision_of(url) == "0019"


def test_monitord_cluster_lists_the_daemons_of_the_version_before_it_says_to_stop(
    postgres: PostgresServer | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The refusal says "stop every daemon (`monitord cluster` lists them)", and `monitord
    # cluster` was itself refused with the same line; the daemons were named by a version
    # every release reports (0.1.0).
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = postgres.new_database()
    config = str(write_config(tmp_path, url))
    store_at(url, "0015")
    old_daemons = Store(url)
    try:
        for name in ("a", "b"):
            settings = ClusterSettings(name=name, lease_seconds=60.0)
            SharedCoordinator(old_daemons, settings, FakeClock(), lambda: 0.0).join()

        assert main(["--config", config, "status"]) == 1
        refused = capsys.readouterr().err
        assert "daemons of the version before (schema 0015) are running on it: a, b." in refused
        assert "0.1.0" not in refused
        assert main(["--config", config, "cluster"]) == 0
        listed = capsys.readouterr().out
    finally:
        old_daemons.dispose()
    assert [line.split()[0] for line in listed.splitlines()[1:3]] == ["a", "b"]
    assert "2 of 2 daemon(s) alive" in listed
    assert revision_of(url) == "0015"  # listing them migrated nothing under them


def test_monitord_cluster_json_is_json_on_a_store_from_before_registration_or_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --json printed a line of text; an empty store was said to be from before registration.
    old = f"sqlite:///{tmp_path / 'old.db'}"
    store_at(old, "0008")
    (tmp_path / "empty.db").touch()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    for url in (old, empty):
        config = str(write_config(tmp_path, url))
        assert main(["--config", config, "cluster", "--json"]) == 1
        assert capsys.readouterr().out == "[]\n"
    assert main(["--config", config, "cluster"]) == 1
    assert capsys.readouterr().out == (
        "no daemon has run on this store yet (start one with `monitord run`)\n"
    )
    config = str(write_config(tmp_path, old))
    assert main(["--config", config, "cluster"]) == 1
    assert "is at schema 0008, from before daemons registered in it" in capsys.readouterr().out
    assert revision_of(old) == "0008"
    assert revision_of(empty) is None


def test_migrate_never_creates_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, f"sqlite:///{tmp_path / 'none.db'}"))
    assert main(["--config", config, "migrate", "--check"]) == 2
    assert f"no store at {tmp_path / 'none.db'}" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_a_store_migrated_by_a_newer_version_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    open_store(url).dispose()
    store = Store(url)
    with store.engine.begin() as connection:
        connection.execute(text("update alembic_version set version_num = '0099'"))
    store.dispose()

    assert main(["--config", config, "migrate", "--check"]) == 1
    said = capsys.readouterr().err
    assert "is at schema revision '0099', which this version of monitord does not know" in said
    with pytest.raises(StoreError, match="restore the backup taken before the upgrade"):
        open_store(url)


def test_a_backup_taken_while_the_daemon_writes_restores_every_committed_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    daemon = open_store(url, for_daemon=True)
    try:
        with daemon.session() as session:
            for n in range(50):
                audit(session, NOW, "daemon", "probe", f"svc-{n}")
        # A write in progress (not committed) while the backup runs: WAL lets both go on.
        writer = sqlite3.connect(tmp_path / "m.db")
        writer.execute("begin immediate")
        writer.execute(
            "insert into audit_trail (at, actor, action, subject, detail) "
            "values ('2026-12-04 02:00:00', 'daemon', 'half-done', '', '{}')"
        )
        backup = tmp_path / "backups" / "monitord.db"
        backup.parent.mkdir()
        assert main(["--config", config, "backup", str(backup)]) == 0
        writer.rollback()
        writer.close()
    finally:
        daemon.dispose()
    assert f"backed up the store {tmp_path / 'm.db'} to {backup}" in capsys.readouterr().out
    assert backup.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in backup.parent.iterdir()] == ["monitord.db"]  # no part left behind

    # Restore: the backup is a store of its own that monitord opens as it is.
    restored = open_store(f"sqlite:///{backup}")
    try:
        with restored.session() as session:
            actions = session.scalars(select(AuditEntry.action)).all()
    finally:
        restored.dispose()
    assert actions == ["probe"] * 50


def test_a_backup_replaces_an_older_one_but_never_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    open_store(url).dispose()
    older = tmp_path / "b.db"
    older.write_bytes(b"yesterday's backup")
    assert main(["--config", config, "backup", str(older)]) == 0
    assert older.read_bytes().startswith(b"SQLite format 3\0")
    capsys.readouterr()
    # The store itself was a failure (exit 1), and its -wal was taken and replaced under the
    # daemon: each is a backup name that cannot be used, nothing written.
    assert main(["--config", config, "backup", str(tmp_path / "m.db")]) == 2
    assert capsys.readouterr().err == (
        f"monitord: {tmp_path / 'm.db'} is the store itself: give the backup another name\n"
    )
    store_bytes = (tmp_path / "m.db").read_bytes()
    for suffix in ("-wal", "-shm", "-journal"):
        own = tmp_path / f"m.db{suffix}"
        before = own.read_bytes() if own.exists() else None
        assert main(["--config", config, "backup", str(own)]) == 2
        assert capsys.readouterr().err == (
            f"monitord: {own} is the store's own {suffix} file, which SQLite writes beside it: "
            "give the backup another name\n"
        )
        assert (own.read_bytes() if own.exists() else None) == before
    assert (tmp_path / "m.db").read_bytes() == store_bytes


def _make_character_device(path: Path) -> None:
    # A null device of its own (never the system's /dev/null): mknod needs root.
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def _make_symbolic_link(path: Path) -> None:
    (path.parent / "real.db").write_bytes(b"kept")
    path.symlink_to("real.db")


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_make_character_device, "a character device"),
        (os.mkfifo, "a FIFO"),
        (_make_symbolic_link, "a symbolic link"),
        (Path.mkdir, "a folder"),
    ],
)
def test_a_backup_never_replaces_what_is_not_a_regular_file(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], object],
    kind: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    open_store(url).dispose()
    target = tmp_path / "backups" / "monitord.db"
    target.parent.mkdir()
    make(target)
    before = target.lstat()

    assert main(["--config", config, "backup", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"monitord: {target} is {kind}, not a regular file: give the backup's file name (a "
        "backup replaces only a regular file)\n"
    )
    after = target.lstat()
    assert (after.st_mode, after.st_ino, after.st_rdev) == (
        before.st_mode,
        before.st_ino,
        before.st_rdev,
    )
    if kind == "a symbolic link":
        assert (target.parent / "real.db").read_bytes() == b"kept"


def test_a_backup_name_too_long_for_the_file_system_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = str(write_config(tmp_path, url))
    open_store(url).dispose()
    target = tmp_path / ("日" * 100 + ".db")  # 303 bytes: over the file system's 255
    assert main(["--config", config, "backup", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"monitord: {target}: cannot be used as the backup's name (File name too long)\n"
    )


def test_a_postgresql_store_is_pointed_at_pg_dump(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "postgresql://monitord:secret@db.internal:5433/monitord_prod")
    assert main(["--config", str(config), "backup", str(tmp_path / "b.dump")]) == 0
    said = capsys.readouterr()
    assert said.out == (
        "# the store is PostgreSQL: back it up with pg_dump, as a user it lets in\n"
        "# the password of store.url is left out: pg_dump asks for it, or give it in\n"
        "# PGPASSWORD or ~/.pgpass\n"
        f"pg_dump --format=custom --file {tmp_path / 'b.dump'} --host db.internal --port 5433 "
        "--username monitord monitord_prod\n"
    )
    assert said.err == ""
    assert not (tmp_path / "b.dump").exists()


def test_the_pg_dump_line_never_shows_a_password_given_as_a_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ?password= was copied into the connection string pg_dump was given, in the clear.
    url = "postgresql://mon@127.0.0.1:55511/mon?password=Sup3rSecretXYZ&sslmode=require"
    config = write_config(tmp_path, url)
    assert main(["--config", str(config), "backup", str(tmp_path / "b.dump")]) == 0
    out = capsys.readouterr().out
    assert "Sup3rSecretXYZ" not in out
    assert out.splitlines()[-1] == (
        f"pg_dump --format=custom --file {tmp_path / 'b.dump'} --host 127.0.0.1 --port 55511 "
        "--username mon 'dbname=mon sslmode=require'"
    )
    assert "left out: pg_dump asks for it, or give it in\n# PGPASSWORD or ~/.pgpass" in out


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="needs pg_dump (postgresql-client)")
def test_the_pg_dump_line_of_a_socket_store_backs_it_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres: PostgresServer | None
) -> None:
    # For a store reached through PostgreSQL's socket, the line said --host localhost --port
    # 5432 (TCP, which peer authentication refuses), on stderr with exit 2.
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    tcp = make_url(postgres.new_database())
    url = f"postgresql:///{tcp.database}?host={postgres.folder}&port={tcp.port}&user=monitord"
    open_store(url).dispose()
    config = write_config(tmp_path, url)
    dump = tmp_path / "store.dump"
    assert main(["--config", str(config), "backup", str(dump)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert f"--host {postgres.folder} --port {tcp.port} --username monitord" in line
    subprocess.run(shlex.split(line), check=True, capture_output=True, timeout=120)
    assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
