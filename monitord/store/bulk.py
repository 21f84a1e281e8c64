"""Writing many rows of one table in one statement (an insert, an update by key), and
choosing rows among thousands of keys.

On SQLite a list of rows is one executemany, run by SQLite's own C loop. psycopg would send
PostgreSQL the same list row by row through its pipeline, some 15 µs of Python a row; there
each column's values travel as one array, and the statement unnests them: one statement and
one round trip whatever the number of rows. Either way each value goes through its column's
type (an aware datetime becomes naive UTC, a dict JSON) exactly as in a one-row insert.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import QueryableAttribute, Session

from monitord.store import json_text
from monitord.store.models import Base


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _table(model: type[Base]) -> Table:
    # Core's statements on the table: the ORM's would go over each row in Python first.
    return typing.cast(Table, model.__table__)


def _unnested(table: Table, name: str, rows: Sequence[dict[str, Any]]) -> ColumnElement[Any]:
    """The column `name` of `rows` as one parameter, unnested back into rows.

    A JSON column's values go as one JSON array (psycopg would escape every quote of every
    document to put them in an array); any other column's as an array, cast to name its type
    (an array of nothing but NULLs has none of its own)."""
    column = table.c[name]
    values = [row[name] for row in rows]
    if isinstance(column.type, JSON):
        document = bindparam(f"{name}_values", json_text(values), type_=Text)
        return func.json_array_elements(cast(document, JSON)).label(name)
    array = bindparam(f"{name}_values", values, type_=ARRAY(column.type))
    return func.unnest(cast(array, ARRAY(column.type))).label(name)


def among(
    session: Session, column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> ColumnElement[bool]:
    """`column IN values`, for a list of thousands: on PostgreSQL as one array parameter
    (`= ANY`), one statement it parses and plans once, not one with a parameter per value."""
    element = column.expression if isinstance(column, QueryableAttribute) else column
    if not _on_postgresql(session):
        return element.in_(list(values))
    array = bindparam(None, list(values), type_=ARRAY(element.type))
    return element == any_(cast(array, ARRAY(element.type)))


def insert_rows(session: Session, model: type[Base], rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (each with the same columns) into `model`'s table in one statement."""
    if not rows:
        return
    table = _table(model)
    if not _on_postgresql(session):
        session.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    source = select(*(_unnested(table, name, rows) for name in names))
    session.execute(insert(table).from_select(names, source))


def update_rows(
    session: Session, model: type[Base], key: str, rows: Sequence[dict[str, Any]]
) -> None:
    """Update the rows of `model`'s table whose column `key` has each row's value there, setting
    the row's other columns (every row names the same ones), in one statement."""
    if not rows:
        return
    table = _table(model)
    names = [name for name in rows[0] if name != key]
    if not _on_postgresql(session):
        by_key = update(table).where(table.c[key] == bindparam("key_value"))
        session.execute(
            by_key, [{"key_value": row[key], **{n: row[n] for n in names}} for row in rows]
        )
        return
    source = select(*(_unnested(table, name, rows) for name in [key, *names])).subquery("moved")
    moved = update(table).where(table.c[key] == source.c[key])
    session.execute(moved.values({name: source.c[name] for name in names}))
