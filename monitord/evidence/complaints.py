"""User complaints from the portal's export (clause 9.1), for the service evaluation (9.2).

`monitord complaints import FILE` reads either form of the export, UTF-8 (a byte order mark is
allowed) or GB18030 (Excel's plain CSV on a Chinese Windows):

- CSV with a header line (columns in any order, others ignored), when the file name ends in
  `.csv`, or its first character is not `{`;
- JSON lines, one object per line (blank lines skipped), when the name ends in `.jsonl`,
  `.ndjson` or `.json`, or its first character is `{`.

Fields: `id` (required; the portal's id, a string or a number), `received_at` (required; ISO
8601, read as Asia/Shanghai when it has no offset), `service_id` (empty: the portal as a whole),
`category`, `status`, `summary`. Importing is idempotent by id: a complaint already in the store
is updated when the export changed it (its status, typically) and left alone otherwise. A row
that cannot be read is reported by its line and skipped; the others are imported.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.errors import UsageError
from monitord.evidence.exported import exported_text
from monitord.files import read_bounded
from monitord.store import audit
from monitord.store.models import Complaint
from monitord.textable import shortened, storable
from monitord.timeutil import parse_time

MAX_COMPLAINTS_FILE_MB = 64
"""The largest complaint export `complaints import` reads: a quarter's complaints take a few MiB."""

FIELDS = ("id", "service_id", "received_at", "category", "status", "summary")
REQUIRED = ("id", "received_at")
LIMITS = {"id": 200, "service_id": 200, "category": 100, "status": 40, "summary": 10_000}
"""The longest value each field may have, in characters (the store's columns)."""


@dataclass
class ImportResult:
    """What an import did: counts, and the bad rows as "line N: reason"."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: list[str] = field(default_factory=list)


def rows_of(data: bytes, name: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, fields) for each row of an export, or (line, reason) for one that cannot be read.

    Raises UsageError when the file as a whole cannot be read: neither UTF-8 nor GB18030, a
    CSV header without the required columns.
    """
    text = exported_text(data, name)
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json") or (
        suffix != ".csv" and text.lstrip().startswith("{")
    ):
        yield from _json_rows(text)
    else:
        yield from _csv_rows(text, name)


def _json_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    # split("\n"), not splitlines(): a summary may hold U+2028, which JSON allows unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            yield number, "not a JSON object"
            continue
        if isinstance(value, list):
            yield number, "a JSON array; expected one JSON object per line (JSON lines)"
        else:
            yield number, value if isinstance(value, dict) else "not a JSON object"


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [column.strip() for column in reader.fieldnames or []]
    if not header:
        return  # an empty export: no complaints this time
    missing = [column for column in REQUIRED if column not in header]
    if missing:
        raise UsageError(
            f"{name}: line 1: the header lacks column(s) {', '.join(missing)}; "
            f"expected {','.join(FIELDS)}"
        )
    reader.fieldnames = header
    try:
        for row in reader:
            if None in row:
                yield reader.line_num, "more values than the header has columns"
            else:
                yield reader.line_num, row
    except csv.Error as exc:
        yield reader.line_num, f"not CSV ({exc}); the rest of the file was not read"


def complaint_fields(row: dict[str, Any]) -> dict[str, Any]:
    """A row's fields as the store keeps them; ValueError naming the field that is wrong."""
    values: dict[str, str] = {}
    for name in FIELDS:
        value = row.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and name == "id":
            value = str(value)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{name}: expected text, got {type(value).__name__}")
        value = storable(value.strip())
        if len(value) > LIMITS.get(name, 1 << 30):
            raise ValueError(f"{name}: longer than {LIMITS[name]} characters")
        values[name] = value
    for name in REQUIRED:
        if not values[name]:
            raise ValueError(f"{name}: missing")
    try:
        received_at = parse_time(values["received_at"])
    except ValueError:
        shown = shortened(values["received_at"], 40)
        raise ValueError(
            f"received_at {shown!r}: expected an ISO 8601 time such as 2026-09-20T10:30"
        ) from None
    return {
        "external_id": values["id"],
        "service_id": values["service_id"] or None,
        "received_at": received_at,
        "category": values["category"],
        "status": values["status"],
        "summary": values["summary"],
    }


def import_complaints(session: Session, path: Path, now: dt.datetime, actor: str) -> ImportResult:
    """Import the portal's complaint export at path (see the module's docstring), and audit it.

    Raises UsageError when the file cannot be read at all or is over MAX_COMPLAINTS_FILE_MB
    (InputTooLarge); bad rows are in the result.
    """
    try:
        data = read_bounded(path, MAX_COMPLAINTS_FILE_MB << 20, "a complaint export's limit")
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    result = ImportResult()
    known = {c.external_id: c for c in session.scalars(select(Complaint))}
    for line, row in rows_of(data, path.name):
        if isinstance(row, str):
            result.bad.append(f"line {line}: {row}")
            continue
        try:
            values = complaint_fields(row)
        except ValueError as exc:
            result.bad.append(f"line {line}: {exc}")
            continue
        existing = known.get(values["external_id"])
        if existing is None:
            known[values["external_id"]] = complaint = Complaint(
                **values, imported_at=now, source_file=storable(path.name)
            )
            session.add(complaint)
            result.added += 1
        elif _update(existing, values):
            existing.imported_at = now
            existing.source_file = storable(path.name)
            result.updated += 1
        else:
            result.unchanged += 1
    audit(
        session,
        now,
        actor,
        "complaints.import",
        storable(path.name),
        {
            "added": result.added,
            "updated": result.updated,
            "unchanged": result.unchanged,
            "bad": len(result.bad),
        },
    )
    return result


def _update(complaint: Complaint, values: dict[str, Any]) -> bool:
    """Set the values that changed; whether any did."""
    changed = False
    for name, value in values.items():
        if getattr(complaint, name) != value:
            setattr(complaint, name, value)
            changed = True
    return changed


def complaints_in(session: Session, start: dt.datetime, end: dt.datetime) -> list[Complaint]:
    """The complaints received in [start, end), oldest first."""
    query = (
        select(Complaint)
        .where(Complaint.received_at >= start, Complaint.received_at < end)
        .order_by(Complaint.received_at, Complaint.id)
    )
    return list(session.scalars(query))
