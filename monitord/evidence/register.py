"""The evidence register: documents the standard asks for that monitord does not measure itself
(a penetration test report, the yearly risk assessment, a security assurance plan, an emergency
drill), each kept as a file in the evidence folder with its SHA-256, date, clause and filer.

The folder (`store.files_dir`) is content-addressed: a file is stored once, as
`<first two hex digits>/<sha256>`, readable by its owner only, and written whole or not at all
(a temporary file, fsync, rename), so the same file filed twice takes the room of one and a crash
never leaves half a document under a real name.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.errors import UsageError
from monitord.names import EVIDENCE_KIND_NAMES
from monitord.store import audit
from monitord.store.models import EvidenceDocument, Service
from monitord.textable import shortened, storable
from monitord.timeutil import SHANGHAI

CLAUSES = (
    "6.1",
    "6.2.2",
    "6.2.6",
    "6.3.2 a",
    "6.3.2 b",
    "6.3.2 c",
    "6.4",
    "6.4 a",
    "6.4 b",
    "6.4 c",
    "6.4 d",
    "7.1.1",
    "7.1.2",
    "7.2.1",
    "7.2.2",
    "7.2.3",
    "7.2.4",
    "7.3.1",
    "7.3.2",
    "7.3.3",
    "8.1.2",
    "8.2",
    "8.3 b",
    "8.3 c",
    "9.1",
    "9.2",
)
"""The clauses of DB3205/T 1129-2024 monitord serves (spec/CLAUSES.md): evidence names one."""

KINDS = EVIDENCE_KIND_NAMES
"""The kinds of document the register takes, with their Chinese names for the report."""

_CHUNK = 1 << 20


@dataclass(frozen=True)
class NewDocument:
    """What a person files: checked by `checked_document` before anything is written."""

    clause: str
    kind: str
    source: Path
    document_date: dt.date
    filed_by: str
    service_id: str | None = None
    note: str = ""


def clause_named(text: str) -> str | None:
    """The clause `text` names ("7.3.2", "8.3b", "8.3 B"), as CLAUSES spells it; None if none."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)*)\s*([a-dA-D])?\s*", text)
    if match is None:
        return None
    number, letter = match.groups()
    clause = f"{number} {letter.lower()}" if letter else number
    return clause if clause in CLAUSES else None


def document_date(text: str) -> dt.date:
    """The --date of a document, YYYY-MM-DD; UsageError naming --date when it is not one."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--date {text!r}: expected a date such as 2026-09-20") from None


def checked_document(session: Session, new: NewDocument, now: dt.datetime) -> NewDocument:
    """new with its clause spelt as CLAUSES does, once every part of it is usable.

    Raises UsageError naming the flag and its value: an unknown clause or kind, a file that is
    missing, unreadable, empty or not a regular file, a service the store does not know, a
    document dated after today (in Asia/Shanghai).
    """
    clause = clause_named(new.clause)
    if clause is None:
        raise UsageError(
            f"--clause {new.clause!r}: not a clause of DB3205/T 1129-2024; expected one of "
            + ", ".join(CLAUSES)
        )
    if new.kind not in KINDS:
        raise UsageError(f"--kind {new.kind!r}: expected one of {', '.join(KINDS)}")
    today = now.astimezone(SHANGHAI).date()
    if new.document_date > today:
        raise UsageError(
            f"--date {new.document_date.isoformat()}: is in the future "
            f"(today is {today.isoformat()} CST)"
        )
    _check_readable(new.source)
    if new.service_id is not None and session.get(Service, new.service_id) is None:
        raise UsageError(f"--service {new.service_id!r}: no such service in the store")
    if not new.filed_by.strip():
        raise UsageError("--by: say who files the document")
    return NewDocument(
        clause=clause,
        kind=new.kind,
        source=new.source,
        document_date=new.document_date,
        filed_by=storable(new.filed_by.strip()),
        service_id=new.service_id,
        note=storable(new.note.strip()),
    )


def _check_readable(path: Path) -> None:
    """UsageError naming --file unless path is a non-empty regular file this process can read."""
    shown = f"--file {str(path)!r}"
    try:
        if path.is_dir():
            raise UsageError(f"{shown}: is a folder, not a file")
        if path.exists() and not path.is_file():
            # A pipe or a device: opening it could wait for ever, or read without end.
            raise UsageError(f"{shown}: not a regular file")
        with path.open("rb") as handle:
            if not handle.read(1):
                raise UsageError(f"{shown}: the file is empty")
    except OSError as exc:
        raise UsageError(f"{shown}: cannot be read ({exc.strerror})") from None


def store_file(source: Path, files_dir: Path) -> tuple[str, str, int]:
    """Copy source into the evidence folder under its SHA-256; (stored_as, sha256, size).

    The copy is hashed as it is written, to a temporary file beside its final name, flushed to
    disk and renamed into place: the folder only ever holds whole files whose name is their hash.
    """
    files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle, temp_name = tempfile.mkstemp(dir=files_dir, prefix=".incoming-")  # mode 0600
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, source.open("rb") as inp:
            while chunk := inp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        stored_as = f"{sha[:2]}/{sha}"
        final = files_dir / stored_as
        final.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(temp, final)  # the same bytes filed again replace themselves: stored once
        _fsync_folder(final.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return stored_as, sha, size


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries to disk, so that a rename survives a power cut."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


Filed = Literal["added", "corrected", "unchanged"]
"""What filing a document did: a new row; a row already there (the same file for the same
clause and service) given the new filing's kind and date; or nothing."""


def add_document(
    session: Session, files_dir: Path, new: NewDocument, now: dt.datetime
) -> tuple[EvidenceDocument, Filed]:
    """File a document: check it, copy it into the folder, record it and audit it.

    Returns the row and what was done: the same file filed again for the same clause and
    service is the row already there, corrected when the new filing gives it another kind or
    date (the audit trail keeps what it said before). Raises UsageError (see checked_document)
    before anything is written; when the row cannot be inserted, the copy this filing made is
    removed before the error goes on.
    """
    new = checked_document(session, new, now)
    try:
        stored_as, sha, size = store_file(new.source, files_dir)
    except OSError as exc:
        where = exc.filename or files_dir
        raise UsageError(
            f"store.files_dir: cannot write the document into {where} ({exc.strerror})"
        ) from None
    same = session.scalars(
        select(EvidenceDocument).where(
            EvidenceDocument.sha256 == sha,
            EvidenceDocument.clause == new.clause,
            EvidenceDocument.service_id.is_(None)
            if new.service_id is None
            else EvidenceDocument.service_id == new.service_id,
        )
    ).first()
    if same is not None:
        return same, "corrected" if _correct(session, same, new, now) else "unchanged"
    shared = session.scalar(
        select(EvidenceDocument.id).where(EvidenceDocument.stored_as == stored_as).limit(1)
    )
    try:
        return _record(session, new, stored_as, sha, size, now), "added"
    except BaseException:
        if shared is None:  # the copy is this filing's alone: no row names it
            (files_dir / stored_as).unlink(missing_ok=True)
        raise


def _record(
    session: Session, new: NewDocument, stored_as: str, sha: str, size: int, now: dt.datetime
) -> EvidenceDocument:
    """Insert a filed document's row and its audit entry (flushed: a refusal raises here)."""
    document = EvidenceDocument(
        clause=new.clause,
        kind=new.kind,
        service_id=new.service_id,
        document_date=new.document_date,
        filed_by=new.filed_by,
        filed_at=now,
        file_name=storable(shortened(new.source.name, 255)),
        stored_as=stored_as,
        sha256=sha,
        size=size,
        note=new.note,
    )
    session.add(document)
    session.flush()
    audit(
        session,
        now,
        new.filed_by,
        "evidence.add",
        f"evidence {document.id}",
        {"clause": new.clause, "kind": new.kind, "sha256": sha, "file": document.file_name},
    )
    session.flush()
    return document


def _correct(
    session: Session, document: EvidenceDocument, new: NewDocument, now: dt.datetime
) -> bool:
    """Give a document filed again the kind and date of the new filing, audited with both (a
    mistyped --kind or --date is corrected by filing the file again); whether they differed."""
    before = {"kind": document.kind, "document_date": document.document_date.isoformat()}
    after = {"kind": new.kind, "document_date": new.document_date.isoformat()}
    if before == after:
        return False
    document.kind, document.document_date = new.kind, new.document_date
    audit(
        session,
        now,
        new.filed_by,
        "evidence.correct",
        f"evidence {document.id}",
        {"before": before, "after": after},
    )
    return True


def documents(
    session: Session,
    *,
    clause: str | None = None,
    kind: str | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> list[EvidenceDocument]:
    """The register's documents, oldest document date first, filtered by clause, kind, and
    document date: since <= date < until. A datetime bound counts by its Asia/Shanghai date, so
    a quarter's bounds (timeutil.quarter_bounds) take the documents dated in that quarter."""
    query = select(EvidenceDocument)
    if clause is not None:
        query = query.where(EvidenceDocument.clause == (clause_named(clause) or clause))
    if kind is not None:
        query = query.where(EvidenceDocument.kind == kind)
    if since is not None:
        query = query.where(EvidenceDocument.document_date >= _local_date(since))
    if until is not None:
        query = query.where(EvidenceDocument.document_date < _local_date(until))
    order = (EvidenceDocument.document_date, EvidenceDocument.id)
    return list(session.scalars(query.order_by(*order)))


def _local_date(moment: dt.date) -> dt.date:
    """A date as given; a datetime as its date in Asia/Shanghai."""
    if isinstance(moment, dt.datetime):
        return moment.astimezone(SHANGHAI).date()
    return moment


@dataclass(frozen=True)
class StoredProblem:
    """A registered document whose file is not as it was filed."""

    document_id: int
    stored_as: str
    problem: str  # "missing", "changed", "not a regular file (…)", or "unreadable (reason)"


def verify_documents(session: Session, files_dir: Path) -> tuple[int, list[StoredProblem]]:
    """Re-hash every registered document's file: (files checked, those missing or changed)."""
    problems = []
    rows = session.scalars(select(EvidenceDocument).order_by(EvidenceDocument.id)).all()
    for row in rows:
        path = files_dir / row.stored_as
        try:
            sha = _file_sha256(path)
        except FileNotFoundError:
            problems.append(StoredProblem(row.id, row.stored_as, "missing"))
            continue
        except _NotRegularFile as exc:
            problems.append(StoredProblem(row.id, row.stored_as, f"not a regular file ({exc})"))
            continue
        except OSError as exc:
            problems.append(StoredProblem(row.id, row.stored_as, f"unreadable ({exc.strerror})"))
            continue
        if sha != row.sha256:
            problems.append(StoredProblem(row.id, row.stored_as, "changed"))
    return len(rows), problems


class _NotRegularFile(Exception):
    """A stored document's path is a symlink, FIFO, device or folder: never read (a FIFO or
    /dev/zero would hang verify, a symlink to a copy elsewhere would pass it)."""


def _file_sha256(path: Path) -> str:
    """The SHA-256 of a regular file at path; _NotRegularFile when it is anything else."""
    try:
        # O_NOFOLLOW: a symlink is refused, not followed; O_NONBLOCK: opening a FIFO returns.
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRegularFile("a symbolic link") from None
        raise
    with os.fdopen(handle, "rb") as stream:
        mode = os.fstat(stream.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _NotRegularFile(_file_type(mode))
        digest = hashlib.sha256()
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_type(mode: int) -> str:
    """What a file that is not a regular one is, in words."""
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket or other special file"
