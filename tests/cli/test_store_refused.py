"""A store that refuses a write once it is open (a read-only database or file, a row held past
the lock timeout): every command says so in one line naming the store, exit 1, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from monitord.cli import main
from monitord.store import Store
from tests.conftest import PostgresServer
from tests.fakeportal import make_service


def write_config(folder: Path, url: str) -> Path:
    path = folder / f"monitord-{len(list(folder.glob('monitord-*.toml')))}.toml"
    path.write_text(
        f'[store]\nurl = "{url}"\nfiles_dir = "{folder / "evidence"}"\n', encoding="utf-8"
    )
    return path


def filled_store(folder: Path, url: str) -> None:
    """A store with one service and incident 1 open on it."""
    catalogue = folder / "catalogue.json"
    catalogue.write_text(json.dumps({"services": [make_service(1)]}), encoding="utf-8")
    config = str(write_config(folder, url))
    assert main(["--config", config, "sync", "--file", str(catalogue)]) == 0
    opened = ["incidents", "open", "--kind", "data_exposure", "--service", "svc-0001"]
    assert main(["--config", config, *opened, "--summary", "泄露"]) == 0


def made_read_only(url: str) -> str:
    """The URL of the store at url as a reader that may not write it sees it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Run as root, a file's mode keeps no one out: SQLite's read-only mode does.
        return f"sqlite:///file:{parsed.database}?mode=ro&uri=true"
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        connection.execute(
            text(f"alter database {parsed.database} set default_transaction_read_only = on")
        )
        connection.commit()
    engine.dispose()
    return url


WRITES = {
    "ack": ["incidents", "ack", "1"],
    "resolve": ["incidents", "resolve", "1"],
    "silence": ["silence", "add", "--service", "svc-0001", "--for", "1h", "--reason", "测试"],
    "sync": ["sync", "--file", "catalogue.json"],
    "evidence": ["evidence", "add", "--clause", "7.3.2", "--kind", "pentest", "--file", "doc.txt"],
}


@pytest.mark.parametrize("command", WRITES)
def test_a_read_only_store_refuses_a_write_in_one_line(
    tmp_path: Path,
    store_url: str,
    command: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    filled_store(tmp_path, store_url)
    (tmp_path / "doc.txt").write_text("渗透测试报告", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    url = made_read_only(store_url)
    config = write_config(tmp_path, url)
    args = [*WRITES[command], *(["--date", "2026-01-01"] if command == "evidence" else [])]
    assert main(["--config", str(config), *args]) == 1
    err = capsys.readouterr().err
    said = "attempt to write a readonly database" if "sqlite" in url else "read-only transaction"
    shown = Store(url).display_url
    assert err.startswith(f"monitord: the store at {shown} did not carry out the command: ")
    assert err.endswith(f"{said}\n")
    assert err.count("\n") == 1
    # Nothing filed: no document is left in the evidence folder without its record.
    assert [p for p in tmp_path.glob("evidence/**/*") if p.is_file()] == []


def test_a_row_held_past_the_lock_timeout_is_one_line(
    tmp_path: Path, postgres: PostgresServer | None, capsys: pytest.CaptureFixture[str]
) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = postgres.new_database()
    filled_store(tmp_path, url)
    capsys.readouterr()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        name = make_url(url).database
        connection.execute(text(f"alter database {name} set lock_timeout = '200ms'"))
        connection.commit()
        # Another session holds the incident's row, as a second person's ack does.
        connection.execute(text("select id from incidents where id = 1 for update"))
        status = main(["--config", str(write_config(tmp_path, url)), "incidents", "ack", "1"])
        connection.rollback()
    engine.dispose()
    assert status == 1
    err = capsys.readouterr().err
    assert err == (
        f"monitord: the store at {Store(url).display_url} did not carry out the command: "
        "OperationalError: canceling statement due to lock timeout\n"
    )
