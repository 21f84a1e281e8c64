"""`monitord check-config` opens the store as `monitord run` does at start, writing nothing, and
names the followed access logs the daemon could not read."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import text

import monitord.store
from monitord.cli import main
from monitord.cluster import SharedCoordinator
from monitord.config import ClusterSettings
from monitord.store import Store, open_store
from tests.conftest import FakeClock, PostgresServer, free_port, store_at


def check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, *extra: str
) -> tuple[int, str, str]:
    """`monitord check-config` on a config holding toml: its status, stdout and stderr."""
    config = tmp_path / "site.toml"
    config.write_text(toml, encoding="utf-8")
    status = main(["--config", str(config), "check-config", *extra])
    out, err = capsys.readouterr()
    return status, out.replace(str(config), "site.toml"), err.replace(str(config), "site.toml")


def test_a_store_folder_no_file_can_be_made_in_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # check-config said OK and `monitord run` then refused the store at start.
    status, out, err = check(tmp_path, capsys, '[store]\nurl = "sqlite:////proc/m.db"\n')
    assert (status, out) == (2, "")
    assert err == (
        "monitord: site.toml: store.url: cannot create the store at sqlite:////proc/m.db: "
        "cannot write in /proc (no such file or directory)\n"
    )


def test_a_relative_store_path_is_said_as_the_file_it_is_from_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # sqlite:///var/monitord.db (the built-in default) read as /var/monitord.db.
    monkeypatch.chdir(tmp_path)
    status, out, err = check(tmp_path, capsys, '[store]\nurl = "sqlite:///var/m.db"\n')
    assert (status, err) == (0, "")
    assert out.endswith(
        f"store OK: sqlite:///var/m.db ({tmp_path}/var/m.db from here): no such file yet; "
        "the daemon creates it at start\n"
    )


def test_a_new_sqlite_store_is_said_to_be_made_at_start_and_nothing_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/new/m.db"
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, err) == (0, "")
    assert out == (
        f"config OK: site.toml\nstore OK: {url}: no such file yet; the daemon creates it at start\n"
    )
    assert not (tmp_path / "new").exists()


def test_an_existing_store_is_opened_and_one_newer_than_this_version_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    open_store(url).dispose()
    status, out, _ = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, out) == (0, f"config OK: site.toml\nstore OK: {url}: up to date\n")
    store = open_store(url)
    with store.session() as session:
        session.execute(text("update alembic_version set version_num = 'f00dcafe'"))
    store.dispose()
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, out) == (2, "")
    assert err.startswith(
        f"monitord: site.toml: store.url: the store at {url} is at schema revision "
        "'f00dcafe', which this version of monitord does not know"
    )
    assert err.count("\n") == 1


def test_a_postgresql_server_not_listening_is_refused_its_password_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://monitord:s3cret@127.0.0.1:{port}/monitord"
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, out) == (2, "")
    assert err.startswith(
        f"monitord: site.toml: store.url: cannot read the store at "
        f"postgresql+psycopg://monitord:***@127.0.0.1:{port}/monitord: OperationalError: "
        "connection failed"
    )
    assert "s3cret" not in err
    assert err.count("\n") == 1


def test_a_postgresql_login_the_server_refuses_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres: PostgresServer | None
) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = postgres.new_database().rsplit("/", 1)[0] + "/no_such_database"
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, out) == (2, "")
    assert 'database "no_such_database" does not exist' in err
    assert err.count("\n") == 1
    # An empty database the daemon's start migrates passes.
    url = postgres.new_database()
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, err) == (0, "")
    assert out.endswith(": empty; the daemon creates its tables at start\n")


def test_the_reload_check_leaves_the_store_to_the_running_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A reload keeps the store the daemon runs on (store.url takes effect at restart).
    status, out, err = check(
        tmp_path, capsys, '[store]\nurl = "sqlite:////proc/m.db"\n', "--for-reload"
    )
    assert (status, out, err) == (0, "config OK: site.toml\n", "")


def test_followed_logs_that_cannot_be_read_are_warned_of_by_their_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The daemon said so once at run time; check-config said nothing.
    there = tmp_path / "access.log"
    there.write_text("", encoding="utf-8")
    missing = tmp_path / "nginx" / "other.log"
    toml = (
        f'[store]\nurl = "sqlite:///{tmp_path}/m.db"\n[logs]\n'
        f'follow = [{{path = "{there}"}}, {{path = "{missing}"}}, {{path = "{tmp_path}"}}]\n'
    )
    status, out, err = check(tmp_path, capsys, toml)
    assert status == 0
    assert out.startswith("config OK: site.toml\n")
    assert err.splitlines() == [
        f'warning: site.toml: logs.follow[1].path = "{missing}": no such file; the daemon '
        "reads it once it is there",
        f'warning: site.toml: logs.follow[2].path = "{tmp_path}": it is a folder, not a log file',
    ]


def test_a_store_or_log_path_that_is_a_link_into_a_missing_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # check-config said the store would be made at start, and `monitord run` then failed with
    # "No such file or directory"; a JSON log so linked passed the reload check.
    (tmp_path / "m.db").symlink_to(tmp_path / "gone" / "m.db")
    (tmp_path / "m.log").symlink_to(tmp_path / "gone" / "m.log")
    url = f"sqlite:///{tmp_path}/m.db"
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, out) == (2, "")
    assert err == (
        f"monitord: site.toml: store.url: cannot create the store at {url}: cannot write it (it "
        f"is a symbolic link to a file in a folder that does not exist: {tmp_path}/gone/m.db)\n"
    )
    toml = f'[logging]\nfile = "{tmp_path}/m.log"\n'
    status, out, err = check(tmp_path, capsys, toml, "--for-reload")
    assert (status, out) == (2, "")
    assert "it is a symbolic link to a file in a folder that does not exist" in err
    assert "the daemon would refuse to reload with it" in err
    # A link whose target's folder is there is followed: the daemon makes the target.
    (tmp_path / "gone").mkdir()
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n' + toml)
    assert (status, err) == (0, "")
    assert out.endswith(f"store OK: {url}: no such file yet; the daemon creates it at start\n")
    assert not (tmp_path / "gone" / "m.db").exists()


def test_a_store_path_that_is_a_link_to_itself_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.db").symlink_to(tmp_path / "b.db")
    (tmp_path / "b.db").symlink_to(tmp_path / "a.db")
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "sqlite:///{tmp_path}/a.db"\n')
    assert (status, out) == (2, "")
    assert err.endswith("cannot write it (it is a symbolic link that leads back to itself)\n")


def test_a_store_to_migrate_under_daemons_of_the_version_before_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres: PostgresServer | None
) -> None:
    # check-config said "migration(s) pending, applied at start", and `monitord run` then
    # refused to migrate the store under the daemons still running on it.
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = postgres.new_database()
    store_at(url, "0015")
    old_daemon = Store(url)
    try:
        settings = ClusterSettings(name="old-a", lease_seconds=60.0)
        SharedCoordinator(old_daemon, settings, FakeClock(), lambda: 0.0).join()
        status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    finally:
        old_daemon.dispose()
    assert (status, out) == (2, "")
    assert "monitord: site.toml: store.url: the store at " in err
    assert "daemons of the version before (schema 0015) are running on it: old-a." in err
    assert err.count("\n") == 1


def test_a_sqlite_store_to_migrate_with_a_key_naming_no_row_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # check-config said the migrations would be applied at start, and every start then failed
    # on a row that named no row before any migration ran.
    url = f"sqlite:///{tmp_path}/m.db"
    store_at(url, "0015")
    with closing(sqlite3.connect(tmp_path / "m.db")) as connection, connection:
        connection.execute(
            "insert into incident_events (incident_id, at, kind, actor, detail)"
            " values (9999, '2026-11-02 01:00:00', 'opened', 'monitord', '{}')"
        )
    status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, out) == (2, "")
    assert err.startswith(
        f"monitord: site.toml: store.url: cannot migrate the store at {url}: before any "
        "migration, 1 row(s) refer to rows that do not exist: incident_events row 1 "
        "(→ incidents) (written with foreign keys off"
    )
    assert err.count("\n") == 1


def test_a_store_another_writer_holds_is_a_warning_not_an_invalid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # check-config said "cannot be written: database is locked" and exit 2 (invalid) while a
    # command held the store's write lock a little longer than the busy timeout.
    monkeypatch.setattr(monitord.store, "SQLITE_BUSY_SECONDS", 0.2)
    url = f"sqlite:///{tmp_path}/m.db"
    open_store(url).dispose()
    with closing(sqlite3.connect(tmp_path / "m.db", isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        status, out, err = check(tmp_path, capsys, f'[store]\nurl = "{url}"\n')
    assert (status, out) == (0, f"config OK: site.toml\nstore OK: {url}: up to date\n")
    assert err == (
        f"warning: site.toml: store.url: the store at {url} is busy: another writer held it "
        "past the 0.2 s wait (another daemon or command still running?); the daemon's start "
        "waits as long, and fails if it is held still\n"
    )


def test_a_store_path_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # check-config said "empty; the daemon creates its tables at start", and `monitord run`
    # then failed with "disk I/O error".
    status, out, err = check(tmp_path, capsys, '[store]\nurl = "sqlite:////dev/null"\n')
    assert (status, out) == (2, "")
    assert err == (
        "monitord: site.toml: store.url: cannot open the store at sqlite:////dev/null: "
        "/dev/null is not a regular file\n"
    )
