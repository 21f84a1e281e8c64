"""`monitord evidence …`, `monitord review admins` and `monitord complaints import`: what the
standard asks for that monitord does not measure itself."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from monitord.cli.common import (
    actor,
    add_wide,
    app_for,
    catalogue_id,
    file_path,
    print_json,
    quarter_arg,
)
from monitord.errors import UsageError
from monitord.textable import format_table
from monitord.timeutil import local_text, parse_time, quarter_start

# sqlalchemy and the models are imported by each handler: registering these commands must not
# load them into every `monitord` process (see monitord.cli).


def cmd_evidence_add(args: argparse.Namespace) -> int:
    """File a document in the evidence register."""
    from monitord.evidence import NewDocument, add_document, document_date

    new = NewDocument(
        clause=args.clause,
        kind=args.kind,
        source=Path(args.file),
        document_date=document_date(args.date),
        filed_by=actor(args),
        service_id=args.service,
        note=args.note or "",
    )
    with app_for(args) as app, app.store.session() as session:
        files_dir = Path(app.settings.store.files_dir)
        document, filed = add_document(session, files_dir, new, app.clock())
        text = (
            f"evidence {document.id}: {document.kind} for clause {document.clause}, dated "
            f"{document.document_date.isoformat()}, sha256 {document.sha256}"
        )
    if filed == "added":
        print(f"filed {text}, stored in {files_dir / document.stored_as}")
    elif filed == "corrected":
        print(
            f"already in the register as {text}: corrected to this filing's kind and date (audited)"
        )
    else:
        print(f"already in the register as {text}: nothing added")
    return 0


def cmd_evidence_list(args: argparse.Namespace) -> int:
    """List the evidence register."""
    from monitord.evidence import KINDS, documents
    from monitord.evidence.register import clause_named

    clause = args.clause
    if clause is not None and clause_named(clause) is None:
        raise UsageError(f"--clause {clause!r}: not a clause of DB3205/T 1129-2024")
    if args.kind is not None and args.kind not in KINDS:
        raise UsageError(f"--kind {args.kind!r}: expected one of {', '.join(KINDS)}")
    with app_for(args) as app, app.store.session() as session:
        rows: list[dict[str, Any]] = [
            {
                "id": d.id,
                "clause": d.clause,
                "kind": d.kind,
                "service_id": d.service_id,
                "document_date": d.document_date.isoformat(),
                "filed_by": d.filed_by,
                "filed_at": d.filed_at.isoformat(),
                "file_name": d.file_name,
                "stored_as": d.stored_as,
                "sha256": d.sha256,
                "size": d.size,
                "note": d.note,
            }
            for d in documents(session, clause=clause, kind=args.kind)
        ]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        filtered = args.clause is not None or args.kind is not None
        print("no evidence matches" if filtered else "no evidence filed yet: see `evidence add`")
        return 0
    table = [
        [
            str(r["id"]),
            r["clause"],
            r["kind"],
            r["service_id"] or "-",
            r["document_date"],
            local_text(parse_time(r["filed_at"])),
            r["filed_by"],
            r["file_name"],
            r["sha256"][:12],
        ]
        for r in rows
    ]
    headers = ["ID", "CLAUSE", "KIND", "SERVICE", "DATE", "FILED (CST)", "BY", "FILE", "SHA-256"]
    print(format_table(headers, table))
    return 0


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    """Re-hash every stored document; exit 1 when one is missing or changed."""
    from monitord.evidence import verify_documents

    with app_for(args) as app, app.store.session() as session:
        files_dir = Path(app.settings.store.files_dir)
        checked, problems = verify_documents(session, files_dir)
    for problem in problems:
        print(f"evidence {problem.document_id}: {files_dir / problem.stored_as}: {problem.problem}")
    if problems:
        print(f"{len(problems)} of {checked} document(s) are not as they were filed")
        return 1
    print(f"{checked} document(s) checked: every file is as it was filed")
    return 0


def cmd_review_admins(args: argparse.Namespace) -> int:
    """Record the quarterly admin-rights review of an accounts export, and print its flags."""
    from monitord.evidence import PROBLEMS, review_admins

    with app_for(args) as app, app.store.session() as session:
        now = app.clock()
        review = review_admins(
            session,
            Path(args.file),
            quarter=args.quarter or quarter_start(now)[0],
            reviewed_by=actor(args),
            now=now,
            dormant_days=app.settings.review.dormant_days,
        )
        review_id, quarter = review.id, review.quarter
        accounts, flags = len(review.accounts), list(review.flags)
    print(f"admin review {review_id} of {quarter}: {accounts} account(s), {len(flags)} flag(s)")
    if flags:
        table = [[f["account"], f["problem"], PROBLEMS[f["problem"]], f["detail"]] for f in flags]
        print(format_table(["ACCOUNT", "PROBLEM", "问题", "DETAIL"], table, 60))
    return 0


def cmd_complaints_import(args: argparse.Namespace) -> int:
    """Import the portal's complaint export; exit 1 when a row could not be read."""
    from monitord.evidence import import_complaints

    path = Path(args.file)
    with app_for(args) as app, app.store.session() as session:
        result = import_complaints(session, path, app.clock(), actor(args))
    for reason in result.bad:
        print(f"monitord: {path}: {reason}: skipped", file=sys.stderr)
    total = result.added + result.updated + result.unchanged
    print(
        f"{total} complaint(s): {result.added} added, {result.updated} updated, "
        f"{result.unchanged} unchanged"
        + (f"; {len(result.bad)} bad row(s) skipped" if result.bad else "")
    )
    return 1 if result.bad else 0


def add_evidence_commands(sub: Any) -> None:
    """Register `evidence`, `review` and `complaints` on the main parser's subparsers."""
    kinds = "pentest, risk_assessment, security_plan, drill or other"
    evidence = sub.add_parser(
        "evidence",
        help="the evidence register: documents filed for a clause",
        description="the evidence register: documents filed for a clause",
    )
    esub = evidence.add_subparsers(dest="evidence_command", required=True, metavar="ACTION")
    p = esub.add_parser("add", help="file a document (copied into store.files_dir)")
    p.add_argument("--clause", required=True, help="the clause it serves, e.g. 7.3.2 or 8.2")
    p.add_argument("--kind", required=True, help=kinds)
    p.add_argument(
        "--file", required=True, metavar="PATH", type=file_path, help="the document to file"
    )
    p.add_argument("--date", required=True, help="the date the document bears (YYYY-MM-DD)")
    p.add_argument("--by", metavar="NAME", help="who files it (default: your login)")
    p.add_argument(
        "--service",
        metavar="ID",
        type=catalogue_id,
        help="the service it is about (default: the portal)",
    )
    p.add_argument("--note", help="a note kept with it")
    p.set_defaults(handler=cmd_evidence_add)
    p = esub.add_parser("list", help="the register, oldest document first")
    p.add_argument("--clause", help="only the documents for this clause, e.g. 7.3.2")
    p.add_argument("--kind", help=kinds)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_wide(p)
    p.set_defaults(handler=cmd_evidence_list)
    p = esub.add_parser("verify", help="re-hash the stored files: which are missing or changed")
    p.set_defaults(handler=cmd_evidence_verify)

    review = sub.add_parser(
        "review",
        help="record the quarterly admin-rights review (7.3.2)",
        description="record the quarterly admin-rights review (7.3.2)",
    )
    rsub = review.add_subparsers(dest="review_command", required=True, metavar="WHAT")
    p = rsub.add_parser("admins", help="review an export of the platform's accounts (CSV)")
    p.add_argument(
        "--file",
        required=True,
        metavar="CSV",
        type=file_path,
        help="columns account, role, vendor, last_login, granted_by, end_date",
    )
    p.add_argument(
        "--quarter", type=quarter_arg, metavar="YYYYqN", help="default: the current quarter"
    )
    p.add_argument("--by", metavar="NAME", help="who reviewed (default: your login)")
    add_wide(p)
    p.set_defaults(handler=cmd_review_admins)

    complaints = sub.add_parser(
        "complaints",
        help="users' complaints from the portal's export (9.1)",
        description="users' complaints from the portal's export (9.1)",
    )
    csub = complaints.add_subparsers(dest="complaints_command", required=True, metavar="ACTION")
    p = csub.add_parser("import", help="import the export (CSV or JSON lines); twice adds nothing")
    p.add_argument("file", metavar="FILE", type=file_path, help="the portal's complaint export")
    p.add_argument("--by", metavar="NAME", help="who imports it (default: your login)")
    p.set_defaults(handler=cmd_complaints_import)
