"""Catalogue sync against a real portal on loopback that misbehaves in every way the spec lists."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import func, select

from monitord.catalogue import (
    SyncOutcome,
    read_catalogue_file,
    service_rows,
    sync_catalogue,
    sync_rows,
)
from monitord.catalogue.apply import apply_sync
from monitord.compliance import evaluate_quarter
from monitord.config import PortalSettings, Settings
from monitord.probing import load_targets
from monitord.store import Store
from monitord.store.history import catalogue_as_of, quiet_windows, service_periods
from monitord.store.models import (
    Finding,
    QuietWindow,
    Service,
    ServiceEvent,
    ServiceRevision,
)
from monitord.timeutil import SHANGHAI, UTC, parse_time, quarter_bounds
from tests.conftest import FakeClock, Serve
from tests.fakeportal import TOKEN, FakePortal, make_service, serve_portal

pytestmark = pytest.mark.timeout(60)


async def no_sleep(_seconds: float) -> None:
    """Backoff waits cost no time in tests."""


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    async with serve_portal(FakePortal(services=[make_service(n) for n in range(1, 8)])) as p:
        yield p


def settings_for(portal: FakePortal, **changes: Any) -> PortalSettings:
    values: dict[str, Any] = {
        "url": portal.url,
        "page_size": 3,
        "timeout_seconds": 0.5,
        "retries": 2,
        "backoff_seconds": 0.01,
    }
    values.update(changes)
    return PortalSettings(**values)


async def sync(store: Store, portal: FakePortal, clock: FakeClock, **changes: Any) -> Any:
    async with aiohttp.ClientSession() as session:
        return await sync_catalogue(
            store,
            settings_for(portal, **changes),
            SecretStr(TOKEN),
            clock,
            session=session,
            sleep=no_sleep,
        )


def snapshot(store: Store) -> tuple[list[dict[str, Any]], int, int]:
    with store.session() as session:
        events = session.scalar(select(func.count()).select_from(ServiceEvent)) or 0
        findings = session.scalar(select(func.count()).select_from(Finding)) or 0
    return service_rows(store), events, findings


def events_of(store: Store, service_id: str) -> list[str]:
    with store.session() as session:
        return list(
            session.scalars(
                select(ServiceEvent.kind)
                .where(ServiceEvent.service_id == service_id)
                .order_by(ServiceEvent.id)
            )
        )


async def test_whole_catalogue_is_read_page_by_page_with_the_token(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "ok"
    assert [r["page"] for r in portal.requests] == [1, 2, 3]
    assert all(r["headers"]["Authorization"] == f"Bearer {TOKEN}" for r in portal.requests)
    rows = service_rows(store)
    assert [r["id"] for r in rows] == [f"svc-{n:04d}" for n in range(1, 8)]
    assert rows[0]["name"] == "测试服务1" and rows[0]["status"] == "online"
    assert rows[0]["filing_problems"] == []
    assert sync_rows(store)[0]["outcome"] == "ok"
    assert sync_rows(store)[0]["services_seen"] == 7


async def test_unchanged_catalogue_answers_304_to_the_etag(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    await sync(store, portal, clock)
    portal.requests.clear()
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "unchanged"
    assert portal.requests[0]["headers"]["If-None-Match"] == portal.etag()
    assert len(portal.requests) == 1
    assert [r["outcome"] for r in sync_rows(store)] == ["unchanged", "ok"]


@pytest.mark.parametrize(
    ("fault", "page", "reason"),
    [
        ("timeout", 2, "page 2: no answer within 0.5 s (timeout) (after 3 tries)"),
        ("500", 1, "page 1: the portal answered HTTP 502 (after 3 tries)"),
        ("html", 3, "page 3: expected JSON, got text/html"),
        ("truncate", 2, "page 2: the connection closed before the whole page was read"),
        ("401", 2, "page 2: the portal refused the token (HTTP 401)"),
        ("bad-next", 1, "page 1: 'next' is 1, expected a later page or null"),
        ("ignore-page", 2, "page 2: the portal answered page 1 instead"),
    ],
)
async def test_a_failed_read_changes_nothing_and_records_why(
    store: Store, portal: FakePortal, clock: FakeClock, fault: str, page: int, reason: str
) -> None:
    await sync(store, portal, clock)
    before = snapshot(store)
    portal.services[0]["status"] = "suspended"  # a change that must not land
    portal.services[-1]["offline_notice"] = {"filed_at": "2026-11-02"}  # nor this notice
    portal.faults = {page: fault}
    clock.advance(minutes=15)
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "failed"
    assert snapshot(store) == before
    last = sync_rows(store)[0]
    assert last["outcome"] == "failed"
    assert reason in last["reason"]


async def test_a_redirect_is_a_failed_sync_and_is_not_followed(
    store: Store, portal: FakePortal, clock: FakeClock, serve: Serve
) -> None:
    # The portal's 302 was followed anywhere, into probes.denied_networks too, and the
    # catalogue served there was applied.
    elsewhere: list[str] = []

    async def catalogue(request: web.Request) -> web.Response:
        elsewhere.append(request.path_qs)
        return web.json_response({"total": 1, "next": None, "services": [make_service(1)]})

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{other}/api/v1/services?sign=abcdef1234567890")

    other_app, redirecting = web.Application(), web.Application()
    other_app.router.add_get("/api/v1/services", catalogue)
    redirecting.router.add_get("/api/v1/services", redirect)
    other = await serve(other_app)
    portal.url = f"http://127.0.0.1:{await serve(redirecting)}"
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "failed"
    assert outcome.reason == (
        f"page 1: the portal answered HTTP 302, a redirect to 'http://127.0.0.1:{other}/api/v1/"
        "services?sign=***'; monitord follows no redirect: set portal.url to the address that "
        "serves the catalogue"
    )
    assert elsewhere == [] and service_rows(store) == []


async def test_no_token_set_is_said_so_not_a_refused_token(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    async with aiohttp.ClientSession() as session:
        outcome = await sync_catalogue(
            store, settings_for(portal), None, clock, session=session, sleep=no_sleep
        )
    assert outcome.reason == (
        "page 1: the portal asks for a token (HTTP 401) and none is set: put it in "
        "$MONITORD_PORTAL_TOKEN or in the file portal.token_file names"
    )


@pytest.mark.parametrize(
    ("encoding", "said"),
    [
        ("gzip", "Can not decode content-encoding: gzip"),
        ("br", "Can not decode content-encoding: brotli (br)"),
    ],
)
async def test_a_page_not_in_its_content_encoding_is_said_so(
    store: Store, portal: FakePortal, clock: FakeClock, encoding: str, said: str
) -> None:
    # It read "the connection closed before the whole page was read" (gzip) and "cannot reach
    # the portal (ClientResponseError)" (br).
    portal.bodies[1] = page_body(portal, 1, 3)
    portal.headers = {"Content-Encoding": encoding}
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "failed"
    assert (outcome.reason or "").startswith(
        f"page 1: the page cannot be decoded from the Content-Encoding the portal names ({said}"
    )
    assert (outcome.reason or "").endswith(
        "; the portal should send it plain, or as gzip or deflate (after 3 tries)"
    )


async def test_a_file_listing_two_services_under_one_id_says_so(
    store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    file = tmp_path / "catalogue.json"
    services = [make_service(1), make_service(1, name="另一项服务")]
    file.write_text(json.dumps({"services": services}), encoding="utf-8")
    async with aiohttp.ClientSession() as session:
        outcome = await sync_catalogue(
            store, PortalSettings(), None, clock, session=session, file=file
        )
    assert outcome.reason == (
        f"{file}: service svc-0001 appears twice with different content; the file lists two "
        "services under one id"
    )


async def test_a_fault_that_passes_is_retried_with_backoff(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    portal.faults = {2: "500"}
    portal.fault_times = 2
    settings = settings_for(portal, backoff_seconds=1.0)
    async with aiohttp.ClientSession() as session:
        outcome = await sync_catalogue(
            store, settings, SecretStr(TOKEN), clock, session=session, sleep=record_sleep
        )
    assert outcome.outcome == "ok"
    assert waits == [1.0, 2.0]
    assert len(service_rows(store)) == 7


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p.services.clear(), "the catalogue is empty but 7 services are known"),
        (lambda p: setattr(p, "total_offset", 2), "read 7 services but the portal announced 9"),
        (
            lambda p: p.services.__setitem__(3, make_service(1, name="改了")),
            "service svc-0001 appears twice with different content",
        ),
        (lambda p: p.services.__delitem__(slice(0, 5)), "would mark 5 of 7 services gone"),
        (lambda p: p.services.insert(0, {"name": "无编号"}), "a service has no usable id"),
    ],
)
async def test_an_implausible_catalogue_is_refused(
    store: Store, portal: FakePortal, clock: FakeClock, mutate: Any, reason: str
) -> None:
    await sync(store, portal, clock)
    before = snapshot(store)
    portal.services[-1]["description"] = "变更"  # a new ETag: the portal must be read again
    mutate(portal)
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "failed"
    assert reason in (outcome.reason or "")
    assert snapshot(store) == before


async def test_a_repeated_identical_record_is_harmless(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    portal.services.insert(3, make_service(1))
    portal.total_offset = -1
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "ok"
    assert "svc-0001 listed twice" in sync_rows(store)[0]["warnings"][0]


async def test_lifecycle_changes_become_service_events(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    portal.services[1]["status"] = "approved"
    await sync(store, portal, clock)
    suspension = {"filed_at": "2026-11-01T09:00:00+08:00", "planned_resume": "2026-11-09"}
    portal.services[0].update(status="suspended", suspension=suspension)
    portal.services[1]["status"] = "online"
    portal.services[2]["offline_notice"] = {"filed_at": "2026-11-02", "planned_offline": "x"}
    portal.services[3]["updated_at"] = "2026-11-02T08:00:00+08:00"
    del portal.services[4]
    portal.services.append(make_service(9))  # published between two syncs: a go-live
    clock.advance(minutes=15)
    await sync(store, portal, clock)
    portal.services[0].update(status="online", suspension=None)
    portal.services.append(make_service(5))
    clock.advance(minutes=15)
    await sync(store, portal, clock)

    # On the first sync the services are only added: they went online before monitord
    # watched, and were judged by 7.2.1 as go-lives without approval or scan.
    assert events_of(store, "svc-0001") == ["added", "suspended", "suspension_filed", "resumed"]
    assert events_of(store, "svc-0002") == ["added", "went_online"]
    assert events_of(store, "svc-0003") == ["added", "offline_notice_filed"]
    assert events_of(store, "svc-0004") == ["added", "updated"]
    assert events_of(store, "svc-0005") == ["added", "gone", "returned"]
    assert events_of(store, "svc-0009") == ["added", "went_online"]
    row = next(r for r in service_rows(store) if r["id"] == "svc-0005")
    assert row["gone"] is False


async def test_two_syncs_at_once_apply_one_after_the_other(
    store: Store, portal: FakePortal, clock: FakeClock, tmp_path: Path
) -> None:
    # `monitord sync` while the daemon synced: both read the services, then both wrote them:
    # every change recorded twice, and a new service failed one with a duplicate id traceback.
    await sync(store, portal, clock)
    services = [make_service(n, description="新版") for n in range(1, 8)]
    services += [make_service(n) for n in range(8, 11)]
    file = tmp_path / "catalogue.json"
    file.write_text(json.dumps({"services": services}, ensure_ascii=False), encoding="utf-8")
    catalogue = read_catalogue_file(file, 64)
    both_read = threading.Barrier(2)

    def meet() -> dt.datetime:
        # Each sync reads the clock once it may apply: unserialised, both get here together.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait(timeout=3)
        return clock()

    def apply() -> SyncOutcome:
        return apply_sync(store, catalogue, str(file), clock(), meet, 0.5, None)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: apply(), range(2)))
    assert sorted((o.added, o.changed) for o in outcomes) == [(0, 0), (3, 7)]
    with store.session() as session:
        kinds = session.scalars(select(ServiceEvent.kind).where(ServiceEvent.id > 7)).all()
    assert sorted(kinds) == ["added"] * 3 + ["went_online"] * 3


async def test_a_service_missing_from_a_whole_catalogue_is_marked_gone_with_its_history(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    await sync(store, portal, clock)
    gone = portal.services.pop(2)
    clock.advance(hours=1)
    outcome = await sync(store, portal, clock)
    assert outcome.gone == 1
    row = next(r for r in service_rows(store) if r["id"] == gone["id"])
    assert row["gone"] is True
    assert row["name"] == gone["name"]
    assert events_of(store, gone["id"]) == ["added", "gone"]


async def test_a_service_never_seen_in_service_is_no_take_down(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # Each was recorded as went_offline or gone, which 7.2.4 failed as "no take-down notice".
    portal.services[0]["status"] = "pending"
    portal.services[1]["status"] = "approved"
    portal.services[2]["status"] = "pending"
    await sync(store, portal, clock)
    del portal.services[0:2]  # withdrawn before going online
    portal.services[0]["status"] = "offline"  # svc-0003, pending until now
    portal.services.append(make_service(9, status="offline"))  # new, and already offline
    portal.services[1]["offline_notice"] = None
    del portal.services[2]  # svc-0005 was online: a take-down without notice
    clock.advance(hours=1)
    outcome = await sync(store, portal, clock)
    assert outcome.gone == 3
    assert events_of(store, "svc-0001") == events_of(store, "svc-0002") == ["added"]
    assert events_of(store, "svc-0003") == ["added", "status_changed"]
    assert events_of(store, "svc-0009") == ["added"]
    assert events_of(store, "svc-0005") == ["added", "gone"]
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0001"]["gone"] and rows["svc-0002"]["gone"]
    with store.session() as session:
        verdicts = evaluate_quarter(session, Settings(), "2026q4", clock.advance(minutes=1))
    failed = {v.service_id for v in verdicts if v.rule == "offline_notice" and not v.passed}
    assert failed == {"svc-0005"}


async def test_the_catalogue_as_of_last_quarter_is_the_one_of_last_quarter(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # A report on 2026Q3 written in November must name the services, and give the lifecycle
    # states, they had then, not what the catalogue says today.
    clock.now = dt.datetime(2026, 8, 1, 1, 0, tzinfo=UTC)
    portal.services[0]["slo"] = {"uptime_percent": 99.5, "p95_ms": 800}
    await sync(store, portal, clock)
    clock.advance(days=20)
    await sync(store, portal, clock)  # nothing changed: no new revision
    clock.now = dt.datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    suspension = {"filed_at": "2026-11-01T09:00:00+08:00", "planned_resume": "2026-11-09"}
    portal.services[0].update(
        name="企业开办（新版）", status="suspended", suspension=suspension, slo={"p95_ms": 5000}
    )
    gone = portal.services.pop(2)["id"]
    await sync(store, portal, clock)
    clock.advance(hours=1)
    portal.services.append(make_service(3))  # it comes back
    await sync(store, portal, clock)

    start, _ = quarter_bounds("2026q3")
    with store.session() as session:
        then = catalogue_as_of(session, dt.datetime(2026, 9, 30, tzinfo=UTC))
        now = catalogue_as_of(session, clock())
        revisions = session.scalar(select(func.count()).select_from(ServiceRevision))
        periods = service_periods(session, start, clock() + dt.timedelta(minutes=1))
    assert len(then) == 7
    assert (then["svc-0001"]["name"], then["svc-0001"]["status"]) == ("测试服务1", "online")
    assert then["svc-0001"]["suspension"] is None
    assert then["svc-0001"]["url"] == "https://svc1.example.test/"
    # The targets a service filed then judge it for then (clause 6.4 a/b), not today's.
    assert then["svc-0001"]["slo"] == {"uptime_percent": 99.5, "p95_ms": 800}
    assert now["svc-0001"]["slo"] == {"p95_ms": 5000}
    assert (now["svc-0001"]["name"], now["svc-0001"]["status"]) == ("企业开办（新版）", "suspended")
    assert now["svc-0001"]["suspension"] == suspension
    with store.session() as session:
        assert gone not in catalogue_as_of(session, clock() - dt.timedelta(minutes=30))
    assert gone in now
    assert revisions == 7 + 1 + 2  # the first sync, svc-0001 changed, svc-0003 gone and back
    assert periods["svc-0001"] == [
        (dt.datetime(2026, 8, 1, 1, 0, tzinfo=UTC), clock() - dt.timedelta(hours=1), "online"),
        (clock() - dt.timedelta(hours=1), clock() + dt.timedelta(minutes=1), "suspended"),
    ]
    assert [status for _, _, status in periods[gone]] == ["online", "gone", "online"]


def windows(store: Store) -> list[tuple[str, str, str, str | None, str | None]]:
    """Every suspension window: service, starts, planned end, ended (Shanghai ISO times)."""

    def text(moment: dt.datetime | None) -> str | None:
        return None if moment is None else moment.astimezone(SHANGHAI).isoformat()

    with store.session() as session:
        rows = session.scalars(select(QuietWindow).order_by(QuietWindow.id)).all()
        return [
            (w.kind, w.service_id, str(text(w.starts_at)), text(w.ends_at), text(w.ended_at))
            for w in rows
        ]


async def test_a_filed_suspension_is_kept_as_a_quiet_window_until_the_service_resumes(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # A report on the quarter must judge an outage against the suspensions in force then, long
    # after the catalogue has forgotten them.
    await sync(store, portal, clock)  # 2026-11-02 09:00 Shanghai
    suspension = {
        "filed_at": "2026-11-02T09:00:00+08:00",
        "from": "2026-11-03T22:00:00+08:00",
        "planned_resume": "2026-11-04T06:00:00+08:00",
    }
    portal.services[0]["suspension"] = dict(suspension)  # filed ahead, still online
    portal.services[1].update(status="suspended", suspension=dict(suspension, **{"from": None}))
    clock.advance(hours=1)
    await sync(store, portal, clock)
    ahead = ("suspension", "svc-0001", "2026-11-03T22:00:00+08:00", "2026-11-04T06:00:00+08:00")
    at_once = ("suspension", "svc-0002", "2026-11-02T09:00:00+08:00", "2026-11-04T06:00:00+08:00")
    assert windows(store) == [(*ahead, None), (*at_once, None)]

    clock.now = parse_time("2026-11-03T22:05:00+08:00")
    portal.services[0]["status"] = "suspended"
    portal.services[0]["suspension"]["planned_resume"] = "2026-11-04T09:00:00+08:00"  # extended
    await sync(store, portal, clock)
    extended = (*ahead[:3], "2026-11-04T09:00:00+08:00")
    assert windows(store) == [(*extended, None), (*at_once, None)]

    clock.now = parse_time("2026-11-04T08:30:00+08:00")
    portal.services[0]["status"] = "online"  # resumed; the portal leaves the filing in place
    del portal.services[1]  # svc-0002 vanishes while suspended
    await sync(store, portal, clock)
    clock.advance(hours=1)
    portal.services[3]["name"] = "另一项变更"  # a later sync that reads the catalogue again
    await sync(store, portal, clock)
    assert windows(store) == [
        (*extended, "2026-11-04T08:30:00+08:00"),
        (*at_once, "2026-11-04T08:30:00+08:00"),
    ]
    with store.session() as session:
        since = parse_time("2026-11-01T00:00:00+08:00")
        assert len(quiet_windows(session, since, clock())) == 2
        assert quiet_windows(session, clock(), clock() + dt.timedelta(days=1)) == []


async def test_filing_problems_become_findings_not_rejections(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    portal.services[0].update(manual_url=None, review=None, max_concurrency="many")
    portal.services[1]["type"] = "enterprise"
    portal.services[2].update(access_method="http", url="http://svc3.example.test/")
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}
    assert len(rows) == 7
    assert rows["svc-0001"]["filing_problems"] == [
        "manual_url: missing (操作手册)",
        "max_concurrency: expected a positive integer, got 'many'",
        "review: missing (审核意见)",
    ]
    assert rows["svc-0002"]["unknown_values"] == ["type=enterprise"]
    assert rows["svc-0002"]["type"] == "enterprise"  # kept, and flagged
    with store.session() as session:
        open_findings = {
            (f.rule, f.subject, f.clause)
            for f in session.scalars(select(Finding).where(Finding.state == "open"))
        }
    assert open_findings == {
        ("appendix_a_incomplete", "svc-0001", "6.2.2"),
        ("catalogue_unknown_value", "svc-0002", "6.2.2"),
        ("plain_http_access", "svc-0003", "6.3.2 b"),
    }
    # The provider completes the filing: the finding resolves, and is not duplicated.
    portal.services[0] = make_service(1)
    clock.advance(hours=1)
    await sync(store, portal, clock)
    with store.session() as session:
        states = {f.subject: f.state for f in session.scalars(select(Finding))}
    assert states["svc-0001"] == "resolved"


async def test_a_field_of_only_whitespace_is_a_blank_filing(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # Spaces, an ideographic space, a newline or [""] passed as a filed value: no 6.2.2 finding.
    portal.services[0].update(
        name="   ",
        provider="\u3000",
        description="\n",
        coverage=[""],
        manual_url=" ",
        planned_release="  ",
        review={"opinion": " \u3000", "signed_by": "数据局", "signed_at": "2026-02-01T10:00:00"},
    )
    portal.services[1]["url"] = " \t"
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0001"]["filing_problems"] == [
        "coverage: blank (覆盖区域)",
        "description: blank (功能描述和特色亮点)",
        "manual_url: blank (操作手册)",
        "name: blank (服务名称)",
        "planned_release: blank (计划发布时间)",
        "provider: blank (服务提供单位)",
        "review: blank (审核意见)",
    ]
    assert rows["svc-0002"]["filing_problems"] == ["url: blank (正式地址)"]
    assert "svc-0002" not in {t.id for t in load_targets(store)}
    with store.session() as session:
        filing = session.scalars(
            select(Finding.subject).where(Finding.rule == "appendix_a_incomplete")
        ).all()
    assert sorted(filing) == ["svc-0001", "svc-0002"]


async def test_the_filing_is_checked_as_table_a_1_and_the_spec_ask(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # An unsigned review, a release date of "soon" and a coverage of "Mars" passed, and the
    # problems named the fields otherwise than the standard's form does.
    portal.services[0].update(review={"opinion": "同意"}, planned_release="soon")
    portal.services[1].update(
        review={"opinion": "同意", "signed_by": "数据局", "signed_at": "yesterday"},
        coverage=["姑苏区", "Mars"],
    )
    portal.services[2].update(security_plan_url=None, faq_url="", description=None)
    portal.services[3].update(coverage=["张家港市", "虎丘区"], planned_release="2026-03-01T09:00")
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0001"]["filing_problems"] == [
        "planned_release: expected a date such as 2026-03-01, got 'soon'",
        "review.signed_at: missing (审核意见签字时间)",
        "review.signed_by: missing (审核意见签字)",
    ]
    assert rows["svc-0002"]["filing_problems"] == [
        "coverage: 'Mars' is not one of 张家港市, 常熟市, 太仓市, 昆山市, 吴江区, 吴中区, 相城区, "
        "姑苏区, 苏州工业园区, 虎丘区 (or 'all' for all of them)",
        "review.signed_at: expected an ISO 8601 time, got 'yesterday'",
    ]
    assert rows["svc-0003"]["filing_problems"] == [
        "description: missing (功能描述和特色亮点)",
        "faq_url: blank (常见问答知识库)",
        "security_plan_url: missing (网络安全保障方案)",
    ]
    assert rows["svc-0004"]["filing_problems"] == []


async def test_a_take_down_notice_short_of_ten_working_days_is_a_7_2_4_finding(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # Filed on Thursday 24 September 2026 for Tuesday 13 October: twelve weekdays between, but
    # Mid-Autumn and National Day leave seven working days (with Saturday 10 October, a make-up
    # working day, among them).
    short = {"filed_at": "2026-09-24T10:00:00+08:00", "planned_offline": "2026-10-13T00:00+08:00"}
    portal.services[0]["offline_notice"] = short
    portal.services[1]["offline_notice"] = {**short, "filed_at": "2026-09-01T10:00:00+08:00"}
    portal.services[4]["offline_notice"] = {**short, "planned_offline": "9999-12-30T00:00+08:00"}
    portal.services[2]["offline_notice"] = {**short, "filed_at": "next week"}
    portal.services[3]["suspension"] = {"filed_at": "2026-10-01", "planned_resume": 20261101}
    await sync(store, portal, clock)
    with store.session() as session:
        found = {
            (f.rule, f.subject): f
            for f in session.scalars(select(Finding).where(Finding.state == "open"))
        }
    notice = found[("offline_notice_short", "svc-0001")]
    assert (notice.clause, notice.evidence["working_days"]) == ("7.2.4", 7)
    assert notice.summary == "下线通知仅提前 7 个工作日（应提前 10 个工作日）"
    assert {subject for rule, subject in found if rule == "offline_notice_short"} == {"svc-0001"}
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0003"]["filing_problems"] == [
        "offline_notice.filed_at: expected an ISO 8601 time, got 'next week'"
    ]
    assert rows["svc-0004"]["filing_problems"] == [
        "suspension.planned_resume: expected an ISO 8601 time, got 20261101"
    ]
    # The provider files the notice earlier: the finding resolves.
    portal.services[0]["offline_notice"] = portal.services[1]["offline_notice"]
    clock.advance(hours=1)
    await sync(store, portal, clock)
    with store.session() as session:
        notices = [
            f.state for f in session.scalars(select(Finding)) if f.rule == "offline_notice_short"
        ]
    assert notices == ["resolved"]


async def test_a_malformed_probe_filing_is_a_filing_problem_not_a_silent_default(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # The probes read `probe` leniently: "200" for [200] was probed as the default, unremarked.
    portal.services[0]["probe"] = {"path": "/health", "method": "FETCH", "expect_status": "200"}
    portal.services[1]["probe"] = {"expect_codes": ["code"], "mobile": "yes", "keyword": ""}
    portal.services[2]["probe"] = {"path": "health", "method": "post", "expect_status": [204]}
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}

    def said(key: str, what: str, got: str) -> str:
        return f"probe.{key}: expected {what}, got {got}; the default is probed instead"

    assert rows["svc-0001"]["filing_problems"] == [
        said("expect_status", "a list of HTTP status codes such as [200]", "'200'"),
        said("method", "one of GET, HEAD, OPTIONS, POST", "'FETCH'"),
    ]
    assert rows["svc-0002"]["filing_problems"] == [
        said("expect_codes", 'an object such as {"field": "code", "ok": ["0"]}', "['code']"),
        said("keyword", "a non-empty text", "''"),
        said("mobile", "true or false", "'yes'"),
    ]
    assert rows["svc-0003"]["filing_problems"] == []


async def test_a_head_probe_with_business_codes_is_a_filing_problem(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # A HEAD answer has no body: the probes found no business code and failed, unremarked.
    portal.services[0]["probe"] = {"method": "HEAD", "expect_codes": {"field": "code"}}
    portal.services[1]["probe"] = {"method": "head"}
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0001"]["filing_problems"] == [
        "probe.method: expected a method whose answer has a body, with expect_codes, got "
        "'HEAD'; the default is probed instead"
    ]
    assert rows["svc-0002"]["filing_problems"] == []


async def test_a_probe_path_naming_another_host_is_a_filing_problem(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # Probing another host's page would vouch for a service monitord never reached.
    portal.services[0]["probe"] = {"path": "http://other.example.cn/health"}
    portal.services[1]["probe"] = {"path": "//other.example.cn/health"}
    portal.services[2]["probe"] = {"path": "\\\\other.example.cn\\health"}
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}
    expected = "a path on the service's own host, such as /health"
    for service, got in (
        ("svc-0001", "'http://other.example.cn/health'"),
        ("svc-0002", "'//other.example.cn/health'"),
        ("svc-0003", "'\\\\\\\\other.example.cn\\\\health'"),
    ):
        assert rows[service]["filing_problems"] == [
            f"probe.path: expected {expected}, got {got}; the default is probed instead"
        ]


async def test_a_service_url_that_is_not_an_http_url_is_a_filing_problem_and_not_probed(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # A placeholder left in the filing was probed into a name error: "down", on-call paged.
    portal.services[0]["url"] = "{base}/svc/healthy/svc-0001/"
    portal.services[1]["url"] = "ftp://files.example.cn/svc-0002"
    portal.services[2]["url"] = "  https://svc-0003.example.cn/entry \n"
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}

    def said(got: str) -> str:
        return (
            f"url: expected an http:// or https:// URL with a host, got {got}; "
            "not probed until it is one"
        )

    assert rows["svc-0001"]["filing_problems"] == [said("'{base}/svc/healthy/svc-0001/'")]
    assert rows["svc-0002"]["filing_problems"] == [said("'ftp://files.example.cn/svc-0002'")]
    assert rows["svc-0001"]["url"] is None and rows["svc-0002"]["url"] is None
    assert rows["svc-0003"]["filing_problems"] == []
    assert rows["svc-0003"]["url"] == "https://svc-0003.example.cn/entry"
    probed = {t.id for t in load_targets(store)}
    assert {"svc-0001", "svc-0002"}.isdisjoint(probed) and "svc-0003" in probed


async def test_an_upper_case_http_url_is_plain_http_and_its_password_is_never_listed(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # "HTTP://" got past the plain-HTTP check (no high finding, no 7.3.3 clock), and `services`
    # printed the URL's password and token.
    portal.services[0]["url"] = (
        "HTTP://admin:S3cretPass@svc-0001.example.cn/?access_token=abcdef1234567890abcd"
    )
    await sync(store, portal, clock)
    (target,) = [t for t in load_targets(store) if t.id == "svc-0001"]
    assert target.url.startswith("http://admin:S3cretPass@")  # probed as filed
    listed = {r["id"]: r for r in service_rows(store)}["svc-0001"]["url"]
    assert listed == "http://admin:***@svc-0001.example.cn/?access_token=***"
    with store.session() as session:
        finding = session.scalars(select(Finding).where(Finding.rule == "plain_http_access")).one()
    assert finding.subject == "svc-0001" and finding.severity == "high"
    assert finding.evidence["url"] == listed


async def test_a_url_without_a_secret_is_listed_as_it_is_probed(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # `services` showed https://h?x as https://h?x= and https://H/ as https://h/: not the URL
    # monitord probes.
    portal.services[0]["url"] = "https://Svc-0001.Example.cn/entry?x#main"
    portal.services[1]["url"] = "https://svc-0002.example.cn?x&sign=abc"
    await sync(store, portal, clock)
    listed = {r["id"]: r["url"] for r in service_rows(store)}
    probed = {t.id: t.url for t in load_targets(store)}
    assert listed["svc-0001"] == probed["svc-0001"] == "https://Svc-0001.Example.cn/entry?x#main"
    assert listed["svc-0002"] == "https://svc-0002.example.cn?x&sign=***"


def page_body(portal: FakePortal, page: int, size: int, **fields: str) -> bytes:
    """Page `page` as the fake portal serves it, the n-th field written as raw JSON text into
    the n-th service of the page (for values json.dumps cannot write)."""
    document = portal._page(page, size)
    for number, name in enumerate(fields):
        document["services"][number][name] = f"@{name}@"
    body = json.dumps(document)
    for name, text in fields.items():
        body = body.replace(f'"@{name}@"', text)
    return body.encode()


async def test_numbers_no_store_can_hold_are_reported_on_their_service(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # A 5,000-digit integer stopped the sync with a traceback; NaN, Infinity and 1e400 crashed it
    # on PostgreSQL, whose JSON has no such numbers.
    portal.bodies[1] = page_body(
        portal, 1, 3, max_concurrency="9" * 5000, weight="1e400", return_codes='{"0": NaN}'
    )
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "ok"
    rows = {r["id"]: r for r in service_rows(store)}
    assert len(rows) == 7
    [problem] = rows["svc-0001"]["filing_problems"]
    assert problem.startswith("max_concurrency: expected a positive integer, got '999")
    assert len(problem) < 200  # cut short, not 5,000 digits in every listing
    assert rows["svc-0002"]["filing_problems"] == rows["svc-0003"]["filing_problems"] == []
    with store.session() as session:
        raw = {s.id: s.raw for s in session.scalars(select(Service))}
    assert raw["svc-0002"]["weight"] == "1e400"  # the portal's text, not lost
    assert raw["svc-0003"]["return_codes"] == {"0": "NaN"}


async def test_json_nested_too_deeply_is_a_failed_read_not_a_crash(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    await sync(store, portal, clock)
    before = snapshot(store)
    portal.services[0]["name"] = "改了"  # a change that must not land
    portal.bodies[2] = b'{"services": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "failed"
    assert "page 2: expected JSON" in (outcome.reason or "")
    assert "(nested too deeply) (after 3 tries)" in (outcome.reason or "")
    assert snapshot(store) == before


async def test_text_no_store_can_hold_is_kept_marked_and_reported(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # A lone surrogate (JSON's "\ud800") anywhere in a record stopped every sync with a
    # traceback, and a NUL character in a text field crashed it on PostgreSQL.
    portal.services[0]["name"] = "企业\x00开办"
    portal.services[1]["extra"] = {"note": "a\udc00b"}
    portal.services[2]["type"] = "\ud800"
    portal.services[5]["probe"] = {"\ud800path": "/health"}
    # Within what JSON reads, beyond what a recursive walk survives:
    deep = "[" * 500 + "]" * 500
    portal.bodies[2] = page_body(portal, 2, 3, extra=deep)
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "ok"
    rows = {r["id"]: r for r in service_rows(store)}
    assert len(rows) == 7
    assert rows["svc-0001"]["name"] == "企业\ufffd开办"
    said = "holds a NUL character or a lone surrogate, not text; kept with U+FFFD instead"
    assert rows["svc-0001"]["filing_problems"] == [f"name: {said}"]
    assert rows["svc-0002"]["filing_problems"] == [f"extra.note: {said}"]
    assert rows["svc-0003"]["filing_problems"] == [f"type: {said}"]
    assert rows["svc-0003"]["unknown_values"] == ["type=\ufffd"]
    assert rows["svc-0006"]["filing_problems"] == [f"probe.'\\ud800path' (a field name): {said}"]
    deep_at = "extra" + "[0]" * 19
    assert rows["svc-0004"]["filing_problems"] == [
        f"{deep_at}: nested more than 20 levels deep; kept as JSON text"
    ]
    with store.session() as session:
        raw = {s.id: s.raw for s in session.scalars(select(Service))}
    assert raw["svc-0002"]["extra"] == {"note": "a\ufffdb"}
    assert raw["svc-0006"]["probe"] == {"\ufffdpath": "/health"}
    kept, sent = raw["svc-0004"]["extra"], json.loads(deep)
    for _ in range(19):
        kept, sent = kept[0], sent[0]
    assert json.loads(kept) == sent  # the deep part kept whole, as text


@pytest.mark.parametrize(
    ("bad_id", "shown"), [("svc-\x00", "'svc-\\x00'"), ("s" * 201, "'sssssssss")]
)
async def test_an_id_no_store_can_hold_fails_the_sync_with_its_reason(
    store: Store, portal: FakePortal, clock: FakeClock, bad_id: str, shown: str
) -> None:
    # An id the store cannot hold crashed the sync on PostgreSQL (NUL, over 200 characters);
    # dropped, its service would look gone, so the whole sync is refused as for a missing id.
    await sync(store, portal, clock)
    before = snapshot(store)
    portal.services[4]["id"] = bad_id
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "failed"
    assert f"page 2, services[1]: service id {shown}" in (outcome.reason or "")
    assert "is not usable" in (outcome.reason or "")
    assert snapshot(store) == before


async def test_values_beyond_their_columns_are_reported_and_kept_in_the_record(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # Each crashed the sync: on PostgreSQL (a String(40) column, a 32-bit INTEGER), and for
    # 10**20 on SQLite too ("Python int too large to convert to SQLite INTEGER").
    release = "计划于2026年第三季度完成全部区县的上线工作，具体时间视各区县的网络改造进度而定"
    portal.services[0]["planned_release"] = release
    portal.services[1]["source"] = "municipal-big-data-bureau-of-suzhou-city-hall"
    portal.services[2]["max_concurrency"] = 2**31
    portal.services[3]["max_concurrency"] = 10**20
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "ok"
    rows = {r["id"]: r for r in service_rows(store)}
    assert len(rows) == 7
    assert rows["svc-0001"]["filing_problems"] == [
        f"planned_release: expected a date such as 2026-03-01, got {release!r}"
    ]
    assert rows["svc-0002"]["filing_problems"] == [
        "source: expected one of province, district, bureau, association, got "
        "'municipal-big-data-bureau-of-suzhou-city-hall'"
    ]
    assert rows["svc-0002"]["source"] is None
    assert rows["svc-0003"]["filing_problems"] == [
        "max_concurrency: 2147483648 is beyond the 2147483647 monitord stores"
    ]
    assert rows["svc-0004"]["filing_problems"] == [
        "max_concurrency: 100000000000000000000 is beyond the 2147483647 monitord stores"
    ]
    with store.session() as session:
        raw = {s.id: s.raw for s in session.scalars(select(Service))}
    assert raw["svc-0001"]["planned_release"] == release
    assert raw["svc-0004"]["max_concurrency"] == 10**20


@pytest.mark.parametrize(
    "updated_at", ["0001-01-01T00:00:00+08:00", "0001-01-01T00:00:00", "9999-12-31T23:00:00-08:00"]
)
async def test_a_time_beyond_the_calendar_in_utc_is_a_filing_problem(
    store: Store, portal: FakePortal, clock: FakeClock, updated_at: str
) -> None:
    # Moved to UTC, these fall outside years 1-9999: the sync stopped with an OverflowError.
    portal.services[1]["updated_at"] = updated_at
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "ok"
    rows = {r["id"]: r for r in service_rows(store)}
    assert len(rows) == 7
    assert rows["svc-0002"]["filing_problems"] == [
        f"updated_at: {updated_at!r} is outside years 1-9999 in UTC"
    ]
    assert rows["svc-0002"]["updated_at"] is None


async def test_a_missing_updated_at_is_a_filing_problem_and_its_first_time_an_update(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # Missing, it was no filing problem; missing or invalid, its first valid time was no update,
    # so the service was not scanned (8.3 b).
    portal.services[0]["updated_at"] = None
    portal.services[1]["updated_at"] = "garbage"
    await sync(store, portal, clock)
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0001"]["filing_problems"] == [
        "updated_at: missing (the time of the record's last change)"
    ]
    assert rows["svc-0002"]["filing_problems"] == [
        "updated_at: expected an ISO 8601 time, got 'garbage'"
    ]
    portal.services[0]["updated_at"] = portal.services[1]["updated_at"] = "2026-11-02T08:00+08:00"
    clock.advance(hours=1)
    await sync(store, portal, clock)
    assert events_of(store, "svc-0001") == events_of(store, "svc-0002") == ["added", "updated"]
    with store.session() as session:
        updated = session.scalars(select(ServiceEvent).where(ServiceEvent.kind == "updated"))
        assert [e.detail for e in updated] == [
            {"from": None, "to": "2026-11-02T00:00:00+00:00"}
        ] * 2


@pytest.mark.parametrize("status", [None, 3, "y" * 60])
async def test_a_record_without_a_usable_status_keeps_the_stored_one(
    store: Store, portal: FakePortal, clock: FakeClock, status: Any
) -> None:
    # The service became "pending" (probes stopped, a status_changed event), and when the
    # portal sent its status again it "went online" a second time, which triggers scans.
    await sync(store, portal, clock)
    if status is None:
        del portal.services[1]["status"]
    else:
        portal.services[1]["status"] = status
    portal.services.append(make_service(8, status=status))
    clock.advance(minutes=15)
    assert (await sync(store, portal, clock)).outcome == "ok"
    portal.services[1]["status"] = "online"
    clock.advance(minutes=15)
    assert (await sync(store, portal, clock)).outcome == "ok"
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0002"]["status"] == "online"
    assert events_of(store, "svc-0002") == ["added"]
    assert rows["svc-0008"]["status"] == "pending"  # new, and not known to be online
    assert events_of(store, "svc-0008") == ["added"]
    assert len(rows["svc-0008"]["filing_problems"]) == 1
    assert rows["svc-0008"]["filing_problems"][0].startswith("status: ")


async def test_a_status_the_standard_does_not_know_keeps_the_stored_one_and_is_flagged(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # "Stopped" for one sync: probes stopped (status_changed), then the service "went online"
    # again, which queued a ZAP scan and was judged as a go-live by 7.2.1.
    await sync(store, portal, clock)
    portal.services[1]["status"] = "Stopped"
    portal.services[2]["status"] = "Online"  # the known value in another case is that value
    clock.advance(minutes=15)
    assert (await sync(store, portal, clock)).outcome == "ok"
    rows = {r["id"]: r for r in service_rows(store)}
    assert rows["svc-0002"]["status"] == "online"
    assert rows["svc-0002"]["unknown_values"] == ["status=Stopped"]
    assert rows["svc-0003"]["status"] == "online" and rows["svc-0003"]["unknown_values"] == []
    portal.services[1]["status"] = "online"
    clock.advance(minutes=15)
    assert (await sync(store, portal, clock)).outcome == "ok"
    assert events_of(store, "svc-0002") == events_of(store, "svc-0003") == ["added"]


@pytest.mark.parametrize(
    ("total", "shown"), [("null", "None"), ("true", "True"), ('"7"', "'7'"), ("-1", "-1")]
)
async def test_a_total_that_is_not_a_count_is_a_warning_on_the_sync(
    store: Store, portal: FakePortal, clock: FakeClock, total: str, shown: str
) -> None:
    # The completeness check was skipped without a word (and `true` was read as 1).
    body = json.loads(page_body(portal, 1, 3))
    body["total"] = "@total@"
    portal.bodies[1] = json.dumps(body).replace('"@total@"', total).encode()
    outcome = await sync(store, portal, clock)
    assert outcome.outcome == "ok"
    assert len(service_rows(store)) == 7
    assert sync_rows(store)[0]["warnings"] == [
        f"page 1: 'total' is {shown}, not a count of services: whether the whole catalogue "
        "was read is not checked"
    ]


@pytest.mark.parametrize("fault", ["endless", "endless-gzip"])
async def test_a_page_that_never_ends_fails_the_sync_at_the_size_limit(
    store: Store, portal: FakePortal, clock: FakeClock, fault: str
) -> None:
    # A portal streaming an endless body took the daemon to 3.7 GB in 10 s; gzip-compressed,
    # each MiB of it is 3 KiB on the wire.
    await sync(store, portal, clock)
    before = snapshot(store)
    portal.services[0]["name"] = "改了"  # a change that must not land
    portal.faults = {2: fault}
    portal.requests.clear()
    outcome = await sync(store, portal, clock, max_page_mb=1, timeout_seconds=30)
    assert outcome.outcome == "failed"
    assert (outcome.reason or "").startswith(
        "page 2 is larger than 1 MiB (portal.max_page_mb) and was read no further; lower "
        "portal.page_size, or raise portal.max_page_mb"
    )
    assert [r["page"] for r in portal.requests] == [1, 2]  # not retried: it would be again
    assert snapshot(store) == before


async def test_a_page_announced_larger_than_the_limit_is_not_read(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    portal.bodies[1] = page_body(portal, 1, 3, padding=json.dumps("x" * (3 << 20)))
    outcome = await sync(store, portal, clock, max_page_mb=2.5)
    assert outcome.outcome == "failed"
    assert "page 1 is larger than 2.5 MiB (portal.max_page_mb)" in (outcome.reason or "")
    assert service_rows(store) == []


async def test_memory_stays_bounded_while_a_portal_streams_an_endless_page(
    portal: FakePortal, tmp_path: Path
) -> None:
    """`monitord sync` as a process, against a page that never ends and against the catalogue:
    its peak memory (RSS) differs by little more than portal.max_page_mb."""
    config = tmp_path / "monitord.toml"

    async def peak_mib(name: str) -> tuple[float, str]:
        db = tmp_path / f"{name}.db"
        config.write_text(
            f'[store]\nurl = "sqlite:///{db}"\n[logging]\nfile = "{tmp_path / name}.log"\n'
            f'[portal]\nurl = "{portal.url}"\nmax_page_mb = 1\nretries = 0\n'
            "timeout_seconds = 30\n",
            encoding="utf-8",
        )
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import resource, sys\n"
            "from monitord.cli import main\n"
            "status = main(['--config', sys.argv[1], 'sync'])\n"
            "print(status, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "MONITORD_PORTAL_TOKEN": TOKEN},
        )
        out, err = await child.communicate()
        status, peak = out.decode().splitlines()[-1].split()
        assert status == ("0" if name == "whole" else "1"), err.decode()
        return float(peak), err.decode()

    whole, _ = await peak_mib("whole")
    portal.faults = {1: "endless"}
    endless, said = await peak_mib("endless")
    assert "page 1 is larger than 1 MiB (portal.max_page_mb)" in said
    assert endless - whole < 16, (whole, endless)


async def test_a_field_over_the_size_limit_is_a_filing_problem_and_not_stored(
    store: Store, portal: FakePortal, clock: FakeClock
) -> None:
    # A 50 MB description was stored twice (its column and the raw record) at every sync.
    portal.services[0]["description"] = "很长的功能描述" * 5000  # 102.6 KiB in UTF-8
    portal.services[1]["return_codes"] = {str(code): "错误" * 20 for code in range(1000)}
    portal.services[2]["notes"] = "x" * (2 << 20)
    outcome = await sync(store, portal, clock, max_field_kb=100)
    assert outcome.outcome == "ok"
    rows = {r["id"]: r for r in service_rows(store)}
    assert len(rows) == 7
    said = "more than the 100 KiB a field may hold (portal.max_field_kb); not stored"
    assert rows["svc-0001"]["filing_problems"] == [f"description: 103 KiB, {said}"]
    assert rows["svc-0002"]["filing_problems"] == [f"return_codes: 128 KiB, {said}"]
    assert rows["svc-0003"]["filing_problems"] == [f"notes: 2.0 MiB, {said}"]
    with store.session() as session:
        kept = {s.id: s for s in session.scalars(select(Service))}
    assert kept["svc-0001"].description is None and "description" not in kept["svc-0001"].raw
    assert kept["svc-0001"].name == "测试服务1" and kept["svc-0001"].raw["name"] == "测试服务1"
    assert kept["svc-0002"].return_codes is None and "return_codes" not in kept["svc-0002"].raw
    assert "notes" not in kept["svc-0003"].raw and kept["svc-0003"].status == "online"
    with store.session() as session:
        filing = session.scalars(
            select(Finding).where(Finding.rule == "appendix_a_incomplete")
        ).all()
    assert {f.subject for f in filing} == {"svc-0001", "svc-0002", "svc-0003"}
