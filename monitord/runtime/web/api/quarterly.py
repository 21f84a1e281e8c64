"""/api/v1/compliance and /api/v1/reports: a quarter's compliance verdicts, the quarterly
reports written, and each report's PDF (read from the path its row recorded, never from the
request, and served only while it still has the SHA-256 recorded when it was written)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import and_, not_

from monitord.runtime.app import App
from monitord.runtime.web.api.common import (
    PREFIX,
    Param,
    Refusal,
    api_route,
    in_store,
    not_found,
    page_params,
    page_query,
    paged,
    path_id,
    read_page,
    reply,
)
from monitord.runtime.web.api.openapi import (
    ANY_OBJECT,
    BOOL,
    INT,
    TEXT,
    TIME,
    array,
    named,
    nullable,
    operation,
    page_of,
    record,
)
from monitord.runtime.web.routes import store_session
from monitord.store.models import ComplianceResult, QuarterlyReport
from monitord.timeutil import QUARTER_PATTERN, quarter_bounds, quarter_start
from monitord.types import is_pending

RESULT = named(
    "ComplianceResult",
    record(
        id=INT,
        quarter=TEXT,
        rule=TEXT,
        clause=TEXT,
        subject=TEXT,
        passed=BOOL,
        pending=BOOL,
        evidence=ANY_OBJECT,
        evaluated_at=TIME,
    ),
)
"""One compliance rule's verdict on one service (subject: its id) or on the platform (subject
"") for a quarter; pending when its duty is not due yet (neither passed nor failed, whatever
`passed` says)."""
REPORT = named(
    "QuarterlyReport",
    record(
        id=INT,
        quarter=TEXT,
        generated_at=TIME,
        sha256=TEXT,
        pages=INT,
        sent_to=array(TEXT),
        delivered_at=nullable(TIME),
        pdf=TEXT,
    ),
)
"""A quarterly report as written: its PDF's SHA-256, where it was sent, and the API path of
the PDF."""

QUARTER = Param(
    "quarter", "a quarter such as 2026q3 (default: the current one)", pattern=QUARTER_PATTERN
)
RESULT_AFTER = Param(
    "after", "the `next` of the previous page: results with a larger id", kind="int"
)
PASSED = Param(
    "passed",
    "only the verdicts that passed (true) or failed (false); a pending one (a duty not due yet) "
    "is neither: ask for those with `pending=true`",
    kind="bool",
)
PENDING = Param(
    "pending", "only the verdicts pending (true: a duty not due yet) or not (false)", kind="bool"
)
REPORT_AFTER = Param(
    "after", "the `next` of the previous page: reports with a smaller id", kind="int"
)
REPORT_QUARTER = Param(
    "quarter", "only the reports of this quarter, such as 2026q3", pattern=QUARTER_PATTERN
)


_PENDING = and_(
    ComplianceResult.passed.is_(True),
    ComplianceResult.evidence["pending"].as_boolean().is_(True),
)
"""monitord.types.is_pending in SQL: a verdict stored passed whose duty is not due yet, which
`monitord compliance` counts as PENDING, not PASSED."""


def _quarter(request: web.Request, param: Param) -> str | None:
    """The quarter a parameter names, or a 422 naming the parameter."""
    label: str | None = param.read(request)
    if label is not None:
        try:
            quarter_bounds(label)
        except ValueError:
            raise Refusal(422, f"{param.name}: {label!r} is not a quarter such as 2026q3") from None
    return label


async def list_results(request: web.Request) -> web.Response:
    """A quarter's compliance verdicts, by id."""
    page = read_page(request, RESULT_AFTER)
    quarter, passed, pending = (
        _quarter(request, QUARTER),
        PASSED.read(request),
        PENDING.read(request),
    )

    def work(app: App) -> dict[str, Any]:
        label = quarter or quarter_start(app.clock())[0]
        query = page_query(ComplianceResult, page, quarter=label)
        if passed is not None:
            query = query.where(ComplianceResult.passed.is_(passed), not_(_PENDING))
        if pending is not None:
            query = query.where(_PENDING if pending else not_(_PENDING))
        with store_session(app) as session:
            items = [
                {
                    "id": r.id,
                    "quarter": r.quarter,
                    "rule": r.rule,
                    "clause": r.clause,
                    "subject": r.subject,
                    "passed": r.passed,
                    "pending": is_pending(r.passed, r.evidence),
                    "evidence": r.evidence or {},
                    "evaluated_at": r.evaluated_at.isoformat(),
                }
                for r in session.scalars(query)
            ]
        return paged(items, page)

    return reply(await in_store(request, work))


def _report(row: QuarterlyReport) -> dict[str, Any]:
    return {
        "id": row.id,
        "quarter": row.quarter,
        "generated_at": row.generated_at.isoformat(),
        "sha256": row.sha256,
        "pages": row.pages,
        "sent_to": list(row.sent_to or []),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
        "pdf": f"{PREFIX}/reports/{row.id}/pdf",
    }


async def list_reports(request: web.Request) -> web.Response:
    """The quarterly reports written, newest first."""
    page = read_page(request, REPORT_AFTER)
    quarter = _quarter(request, REPORT_QUARTER)

    def work(app: App) -> dict[str, Any]:
        query = page_query(QuarterlyReport, page, newest_first=True, quarter=quarter)
        with store_session(app) as session:
            return paged([_report(r) for r in session.scalars(query)], page)

    return reply(await in_store(request, work))


async def report_pdf(request: web.Request) -> web.Response:
    """A report's PDF, as it was written: refused when the file is gone or was changed since."""
    report_id = path_id(request, "report")

    def work(app: App) -> tuple[str, bytes]:
        with store_session(app) as session:
            row = session.get(QuarterlyReport, report_id)
            if row is None:
                raise not_found(f"report {report_id}")
            quarter, path, recorded = row.quarter, Path(row.path), row.sha256
        try:
            pdf = path.read_bytes()
        except OSError:
            raise Refusal(
                409, f"report {report_id}: its PDF is no longer where it was written"
            ) from None
        if hashlib.sha256(pdf).hexdigest() != recorded:
            raise Refusal(
                409,
                f"report {report_id}: its PDF was changed after it was written "
                "(its SHA-256 differs from the one recorded); not served",
            )
        return quarter, pdf

    quarter, pdf = await in_store(request, work)
    name = "".join(c for c in quarter if c.isascii() and c.isalnum())
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="monitord-{name}.pdf"'},
    )


ROUTES = (
    api_route(
        "GET",
        "/compliance",
        list_results,
        "viewer",
        operation(
            "a quarter's compliance verdicts",
            answer=page_of(RESULT, INT),
            query=(*page_params(RESULT_AFTER), QUARTER, PASSED, PENDING),
        ),
    ),
    api_route(
        "GET",
        "/reports",
        list_reports,
        "viewer",
        operation(
            "the quarterly reports written, newest first",
            answer=page_of(REPORT, INT),
            query=(*page_params(REPORT_AFTER), REPORT_QUARTER),
        ),
    ),
    api_route(
        "GET",
        r"/reports/{id:[0-9]+}/pdf",
        report_pdf,
        "viewer",
        operation(
            "a quarterly report's PDF",
            answer={"type": "string", "format": "binary"},
            media="application/pdf",
            refusals=(409,),
            description="409: the file is gone, or differs from the SHA-256 recorded when it "
            "was written.",
        ),
    ),
)
