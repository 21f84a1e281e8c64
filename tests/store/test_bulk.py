"""Many rows in one statement, on each backend: what is written reads back exactly as the ORM
would have written it, whatever the values hold."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import event, select

from monitord.store import Store
from monitord.store.bulk import among, insert_rows, update_rows
from monitord.store.models import ProbeResultRow, Service, ServiceState

CST = dt.timezone(dt.timedelta(hours=8))


def result_rows(count: int, at: dt.datetime) -> list[dict[str, Any]]:
    """Rows with what is awkward to carry: quotes, backslashes, Chinese, NULLs, nested JSON."""
    return [
        {
            "service_id": f"svc-{i:04d}",
            "kind": "availability",
            "target": f'https://svc.example/a"b\\c/{i}',
            "at": at + dt.timedelta(seconds=i),
            "success": i % 2 == 0,
            "duration_ms": i / 3,
            "facts": {"cert_subject": 'CN="苏商通"', "list": [1, None], "n": i} if i else {},
            "error": None if i % 2 == 0 else "连接被拒绝 \\ 'refused'",
            "blind": False,
            "zone": None,
            "late": False,
        }
        for i in range(count)
    ]


def statements(store: Store) -> list[str]:
    """The SQL statements the store sends from now on (executemany counted once)."""
    sent: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: sent.append(a[2]))
    return sent


def test_inserted_rows_read_back_exactly_in_one_statement(store: Store) -> None:
    at = dt.datetime(2026, 12, 5, 14, 30, tzinfo=CST)  # an aware time off UTC
    rows = result_rows(300, at)
    sent = statements(store)
    with store.session() as session:
        insert_rows(session, ProbeResultRow, rows)
    assert len([s for s in sent if s.lstrip().upper().startswith("INSERT")]) == 1
    with store.session() as session:
        stored = session.scalars(select(ProbeResultRow).order_by(ProbeResultRow.service_id)).all()
    assert [
        {name: getattr(row, name) for name in rows[0]} for row in stored
    ] == rows  # times come back as the same instants (in UTC), every value whole
    assert stored[0].daemon is not None  # the column's default applies as in a one-row insert


def test_updated_rows_change_only_the_columns_given_in_one_statement(store: Store) -> None:
    now = dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC)
    with store.session() as session:
        session.add_all(
            Service(id=f"svc-{i}", name="办事", status="online", first_seen=now, last_seen=now)
            for i in range(3)
        )
        session.add_all(
            ServiceState(service_id=f"svc-{i}", state="up", since=now, last_error="old")
            for i in range(3)
        )
    later = now + dt.timedelta(minutes=1)
    sent = statements(store)
    with store.session() as session:
        update_rows(
            session,
            ServiceState,
            "service_id",
            [
                {"service_id": "svc-0", "successes": 5, "last_probe_at": later},
                {"service_id": "svc-2", "successes": 7, "last_probe_at": None},
            ],
        )
    assert len([s for s in sent if s.lstrip().upper().startswith("UPDATE")]) == 1
    with store.session() as session:
        states = session.scalars(select(ServiceState).order_by(ServiceState.service_id)).all()
    assert [(s.successes, s.last_probe_at, s.last_error) for s in states] == [
        (5, later, "old"),
        (0, None, "old"),  # not named: untouched
        (7, None, "old"),
    ]


def test_nothing_to_write_sends_nothing(store: Store) -> None:
    sent = statements(store)
    with store.session() as session:
        insert_rows(session, ProbeResultRow, [])
        update_rows(session, ServiceState, "service_id", [])
    assert not [s for s in sent if s.lstrip().upper().startswith(("INSERT", "UPDATE"))]


def test_among_thousands_of_keys_finds_exactly_those(store: Store) -> None:
    at = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    with store.session() as session:
        insert_rows(session, ProbeResultRow, result_rows(50, at))
        wanted = [f"svc-{i:04d}" for i in range(0, 5000, 7)]  # 715 keys, 8 of them stored
        found = session.scalars(
            select(ProbeResultRow.service_id).where(
                among(session, ProbeResultRow.service_id, wanted)
            )
        ).all()
        none = session.scalars(
            select(ProbeResultRow.id).where(among(session, ProbeResultRow.service_id, []))
        ).all()
    assert sorted(found) == [f"svc-{i:04d}" for i in range(0, 50, 7)]
    assert none == []
