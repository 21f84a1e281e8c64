"""The JSON API as a client meets it: real HTTP on loopback, every endpoint and role, and every
answer checked against the OpenAPI document the server itself serves."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jsonschema_rs
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from monitord.config import Settings, parse_config
from monitord.incidents import confirm_deliveries, intake, open_manual
from monitord.runtime.app import App, build_app
from monitord.runtime.delivery import deliver_alerts
from monitord.runtime.web import ROUTE_SETS, build_web_app
from monitord.runtime.web.api.openapi import document
from monitord.runtime.web.auth import new_token, token_hash
from monitord.store import Store
from monitord.store.findings import upsert_finding
from monitord.store.models import (
    AuditEntry,
    ComplianceResult,
    Finding,
    ProbeResultRow,
    QuarterlyReport,
    Scan,
    Service,
    ServiceState,
)
from monitord.timeutil import SHANGHAI
from monitord.types import FindingDraft
from tests.conftest import FakeClock, logged
from tests.receivers import Webhook, serve_webhook

TOKENS = {"viewer": new_token(), "oncall": new_token(), "admin": new_token()}
NAMES = {"viewer": "li.si", "oncall": "zhang.san", "admin": "wang.wu"}
PARTS = {
    "scope": "企业开办服务，覆盖全市",
    "harm": "约 300 家企业信息可能外泄",
    "measures": "已下线导出接口",
    "rectification": "修复越权漏洞并复测",
}


def api_settings(store_url: str, management: str) -> Settings:
    """Settings with a token of each role and a management channel."""
    return parse_config(
        {
            "store": {"url": store_url},
            "api": {
                "listen": "127.0.0.1:0",
                "tokens": [
                    {"name": NAMES[role], "role": role, "sha256": token_hash(token)}
                    for role, token in TOKENS.items()
                ],
            },
            "alerts": {"oncall": ["json://127.0.0.1:9/oncall"], "management": [management]},
        },
        "test",
        {},
    )


@dataclass
class World:
    """What the seeded store holds, by name."""

    security_incident: int
    availability_incident: int
    finding: int
    report: int
    report_path: Path


def seed(store: Store, settings: Settings, clock: FakeClock, folder: Path) -> World:
    """A small store: an up and a down service, probe results, findings, a security and an
    availability incident, a scan, a quarter's verdicts and a quarterly report with its PDF."""
    now = clock()
    with store.session() as session:
        for number, state in ((1, "up"), (2, "down"), (3, None)):
            sid = f"svc-000{number}"
            session.add(
                Service(
                    id=sid,
                    name=f"服务{number}",
                    status="online",
                    url=f"https://user:secret@svc{number}.test/api",
                    provider="苏州某公司",
                    first_seen=now,
                    last_seen=now,
                    filing_problems=["contacts: missing"] if number == 2 else [],
                )
            )
            if state:
                session.add(
                    ServiceState(
                        service_id=sid,
                        state=state,
                        since=now,
                        failures=3 if state == "down" else 0,
                        last_probe_at=now,
                        last_error="connect: refused" if state == "down" else None,
                    )
                )
        session.add(
            Service(
                id="svc-gone",
                name="下线",
                status="offline",
                gone=True,
                first_seen=now,
                last_seen=now,
            )
        )
        for minutes, success in ((-10, True), (-5, False)):
            session.add(
                ProbeResultRow(
                    service_id="svc-0002",
                    kind="availability",
                    target="https://svc2.test/api",
                    at=now + dt.timedelta(minutes=minutes),
                    success=success,
                    duration_ms=120.5,
                    facts={
                        "status": 200 if success else None,
                        "final_url": "https://u:s3cret@svc2.test/api?token=abcdef1234567890abcd",
                    },
                    error=None if success else "connect: refused",
                )
            )
        session.add(
            Scan(
                service_id="svc-0001",
                scan_key="svc-0001-2026q4",
                trigger="quarterly",
                state="finished",
                queued_at=now,
                next_attempt_at=now,
                started_at=now,
                finished_at=now,
                high=1,
                medium=1,
            )
        )
        for rule, passed in (("availability", True), ("scan_done", False)):
            session.add(
                ComplianceResult(
                    quarter="2026q4",
                    rule=rule,
                    clause="6.4",
                    subject="svc-0001",
                    passed=passed,
                    evidence={"uptime": 0.999},
                    evaluated_at=now,
                )
            )
        pdf = b"%PDF-1.4\n% monitord test report\n%%EOF\n"
        path = folder / "report-2026q3.pdf"
        path.write_bytes(pdf)
        report = QuarterlyReport(
            quarter="2026q3",
            generated_at=now,
            path=str(path),
            sha256=hashlib.sha256(pdf).hexdigest(),
            pages=1,
            sent_to=["management[0]"],
        )
        session.add(report)
    with store.session() as session:
        upsert_finding(
            session,
            FindingDraft(
                rule="zap:40012",
                clause="8.3 b",
                severity="high",
                subject_kind="service",
                subject="svc-0001 /search?q",
                summary="跨站脚本",
                service_id="svc-0001",
            ),
            now,
        )
        upsert_finding(
            session,
            FindingDraft(
                rule="tls_weak_protocol",
                clause="6.3.2",
                severity="low",
                subject_kind="service",
                subject="svc-0002",
                summary="仍接受 TLS 1.0",
                service_id="svc-0002",
            ),
            now,
        )
    with store.session() as session:
        security = intake(session, settings, now).opened[0]
        availability = open_manual(
            session, settings, "outage", ["svc-0002"], "服务2 无法访问", "tester", now
        ).id
        finding = session.scalars(select(Finding.id).where(Finding.rule == "zap:40012")).one()
        report_id = session.scalars(select(QuarterlyReport.id)).one()
    return World(security, availability, finding, report_id, path)


@dataclass
class Api:
    """A client of the API on loopback that checks every answer against the served document."""

    session: aiohttp.ClientSession
    base: str
    doc: dict[str, Any]

    def schema_of(self, method: str, path: str, status: int, media: str) -> dict[str, Any] | None:
        """The documented schema of the answer to `method path` with `status` (None for a body
        that is not JSON); fails the test when the document has no such operation, status or
        media type."""
        for template, operations in self.doc["paths"].items():
            pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, path) and method.lower() in operations:
                responses = operations[method.lower()]["responses"]
                assert str(status) in responses, f"{method} {path}: {status} is not documented"
                content = responses[str(status)]["content"]
                assert media in content, f"{method} {path} {status}: {media} is not documented"
                if media != "application/json":
                    return None
                # Named schemas are referred to as #/components/schemas/…: carried along.
                return {**content[media]["schema"], "components": self.doc["components"]}
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")

    async def call(
        self,
        method: str,
        path: str,
        role: str | None = "viewer",
        *,
        json: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """The status and JSON body of one request, the body validated against the document."""
        headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
        async with self.session.request(
            method, self.base + path, headers=headers, json=json, data=data, params=params
        ) as response:
            media, status = response.content_type, response.status
            body = await response.json() if media == "application/json" else await response.read()
        schema = self.schema_of(method, path, status, media)
        if schema is not None:
            errors = [
                f"{e.instance_path}: {e.message}"
                for e in jsonschema_rs.Draft202012Validator(
                    schema, validate_formats=True
                ).iter_errors(body)
            ]
            assert not errors, f"{method} {path} {status} does not match its schema: {errors}"
        return status, body


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    async with serve_webhook() as received:
        yield received


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock, hook: Webhook) -> Iterator[App]:
    settings = api_settings(f"sqlite:///{tmp_path / 'm.db'}", hook.apprise_url("management"))
    with build_app(settings, clock=clock) as built:
        yield built


@pytest.fixture
def world(app: App, clock: FakeClock, tmp_path: Path) -> World:
    return seed(app.store, app.settings, clock, tmp_path)


@pytest.fixture
async def api(app: App) -> AsyncIterator[Api]:
    server = TestServer(build_web_app(app), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {TOKENS['viewer']}"}
        async with session.get(f"{base}/api/v1/openapi.json", headers=headers) as response:
            doc = await response.json()
        yield Api(session, base, doc)
    await server.close()


def audit_lines(store: Store) -> list[tuple[str, str, str]]:
    with store.session() as session:
        return [
            (a.actor, a.action, a.subject)
            for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


# --- the document -------------------------------------------------------------------------


def test_every_api_route_carries_its_operation_and_the_document_lists_it() -> None:
    routes = [route for routes in ROUTE_SETS for route in routes]
    api_routes = [r for r in routes if r.path.startswith("/api/")]
    assert len(api_routes) >= 16
    missing = [f"{r.method} {r.path}" for r in api_routes if r.doc is None]
    assert not missing, f"API routes without their OpenAPI operation: {missing}"
    doc = document(routes)
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    for route in api_routes:
        path = re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", route.path)
        assert (route.method, path) in listed
    assert doc["openapi"] == "3.1.0"
    # The document's schemas are JSON Schema 2020-12 that a validator accepts.
    for ops in doc["paths"].values():
        for op in ops.values():
            for answer in op["responses"].values():
                for content in answer["content"].values():
                    schema = {**content["schema"], "components": doc["components"]}
                    jsonschema_rs.Draft202012Validator(schema)


def test_a_route_without_its_operation_is_left_out_of_the_document() -> None:
    from monitord.runtime.web.routes import Route

    async def handler(request: Any) -> Any:
        raise AssertionError

    # The test above fails for it; the served document still answers, without it.
    doc = document([Route("GET", "/api/v1/undocumented", handler)])
    assert doc["paths"] == {}


async def test_the_document_is_served_and_names_each_operations_role(
    api: Api, world: World
) -> None:
    status, doc = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    ack = doc["paths"]["/api/v1/incidents/{id}/ack"]["post"]
    assert ack["x-role"] == "oncall"
    assert {"401", "403", "404", "409", "422"} <= set(ack["responses"])
    assert doc["paths"]["/api/v1/scans"]["post"]["x-role"] == "admin"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    # Each kind of thing is one named schema, referred to wherever it appears.
    assert {"Incident", "IncidentDetail", "Finding", "Service", "Scan", "Error"} <= set(
        doc["components"]["schemas"]
    )
    assert ack["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IncidentDetail"
    }


async def test_the_document_describes_the_times_quarters_and_bodies_the_server_takes(
    api: Api, world: World
) -> None:
    # It said format: date-time, which refuses the 2027-01-01 the server takes; a quarter was
    # any text; a body over 1 MiB (413) was no answer it listed.
    _, doc = await api.call("GET", "/api/v1/openapi.json")
    schemas = doc["components"]["schemas"]
    until = schemas["Acceptance"]["properties"]["until"]
    assert "format" not in until and "2026-10-01T08:00" in until["description"]
    assert "format" not in schemas["OutOfBand"]["properties"]["at"]["anyOf"][0]
    for path in ("/api/v1/compliance", "/api/v1/reports"):
        [quarter] = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == "quarter"]
        assert re.fullmatch(quarter["schema"]["pattern"].strip("^$"), "2026q3")
        assert not re.fullmatch(quarter["schema"]["pattern"].strip("^$"), "2026Q5")
    assert "413" in doc["paths"]["/api/v1/findings/{id}/accept"]["post"]["responses"]


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("accept", {"reason": "误报", "until": 1900000000}, "until: expected an ISO 8601 time"),
        ("out-of-band", {"at": 12345}, "at: expected an ISO 8601 time"),
    ],
)
async def test_a_time_sent_as_a_number_is_a_422_naming_the_field(
    api: Api, world: World, path: str, body: dict[str, Any], error: str
) -> None:
    # It was read as Unix seconds: accepted until 2030-03-17, told by phone in 1970.
    if path == "accept":
        url, role = f"/api/v1/findings/{world.finding}/accept", "admin"
    else:
        four = {"scope": "s", "harm": "h", "measures": "m", "rectification": "r", "how": "电话"}
        url, role = f"/api/v1/incidents/{world.security_incident}/out-of-band", "oncall"
        body = {**four, **body}
    status, answer = await api.call("POST", url, role, json=body)
    assert status == 422
    assert answer["error"].startswith(error)


ARABIC_INDIC = str.maketrans(
    "0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"
)


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/api/v1/incidents/{}", "viewer"),
        ("POST", "/api/v1/incidents/{}/ack", "oncall"),
        ("POST", "/api/v1/findings/{}/accept", "admin"),
    ],
)
async def test_an_id_in_other_than_ascii_digits_is_not_found(
    api: Api, world: World, method: str, path: str, role: str
) -> None:
    # /api/v1/incidents/\u0663 answered incident 3: the router's \\d+ takes any script's digits.
    number = world.finding if "findings" in path else world.security_incident
    url = api.base + path.format(str(number).translate(ARABIC_INDIC))
    headers = {"Authorization": f"Bearer {TOKENS[role]}"}
    body = {"reason": "误报", "until": "2030-01-01"} if "accept" in path else {}
    async with api.session.request(method, url, headers=headers, json=body) as response:
        assert response.status == 404


# --- roles --------------------------------------------------------------------------------

ROLES = ("viewer", "oncall", "admin")


def _operations() -> list[tuple[str, str, str]]:
    """(method, concrete path, role needed) of every documented operation."""
    doc = document([route for routes in ROUTE_SETS for route in routes])
    found = []
    for template, ops in doc["paths"].items():
        path = template.replace("{id}", "svc-0001" if "/services/" in template else "1")
        found += [(method.upper(), path, op["x-role"]) for method, op in ops.items()]
    return found


@pytest.mark.parametrize(("method", "path", "needed"), _operations())
async def test_every_endpoint_refuses_no_token_and_a_lower_role_and_serves_its_role(
    api: Api, world: World, method: str, path: str, needed: str
) -> None:
    status, body = await api.call(method, path, role=None)
    assert status == 401 and "token" in body["error"]
    for role in ROLES:
        status, body = await api.call(method, path, role=role)
        if ROLES.index(role) < ROLES.index(needed):
            assert status == 403
            assert body["error"] == f"this needs the {needed} role; {NAMES[role]} is {role}"
        else:
            assert status not in (401, 403), (role, status, body)
            break  # an allowed write is done once: the same write twice is another story


# --- services -----------------------------------------------------------------------------


async def test_services_show_catalogue_status_probe_state_and_open_findings(
    api: Api, world: World
) -> None:
    status, page = await api.call("GET", "/api/v1/services")
    assert status == 200 and page["next"] is None
    by_id = {s["id"]: s for s in page["items"]}
    assert list(by_id) == ["svc-0001", "svc-0002", "svc-0003"]  # the gone one left out
    down = by_id["svc-0002"]
    assert (down["status"], down["state"], down["failures"]) == ("online", "down", 3)
    assert down["last_error"] == "connect: refused"
    assert (down["filing_problems"], down["open_findings"]) == (1, 1)
    assert by_id["svc-0003"]["state"] == "unknown"
    # A filed URL's password never leaves the store.
    assert "secret" not in by_id["svc-0001"]["url"] and "svc1.test" in by_id["svc-0001"]["url"]
    _, page = await api.call("GET", "/api/v1/services", params={"state": "down"})
    assert [s["id"] for s in page["items"]] == ["svc-0002"]
    _, page = await api.call("GET", "/api/v1/services", params={"gone": "true"})
    assert "svc-gone" in [s["id"] for s in page["items"]]
    _, page = await api.call("GET", "/api/v1/services", params={"state": "unknown"})
    assert [s["id"] for s in page["items"]] == ["svc-0003"]


async def test_a_service_in_detail_has_its_last_result_per_kind_and_its_findings(
    api: Api, world: World, clock: FakeClock
) -> None:
    status, service = await api.call("GET", "/api/v1/services/svc-0002")
    assert status == 200
    assert service["filing_problems"] == ["contacts: missing"]
    [last] = service["last_results"]
    assert (last["kind"], last["success"], last["error"]) == (
        "availability",
        False,
        "connect: refused",
    )
    assert last["at"] == (clock() - dt.timedelta(minutes=5)).isoformat()
    assert last["at"].endswith("+00:00")
    # Stored as probed; shown with the URL's password and token masked.
    assert last["facts"]["final_url"] == "https://u:***@svc2.test/api?token=***"
    assert [f["rule"] for f in service["findings"]] == ["tls_weak_protocol"]
    status, body = await api.call("GET", "/api/v1/services/svc-9999")
    assert (status, body) == (404, {"error": "no service 'svc-9999'"})


async def test_lists_are_pages_read_with_limit_and_after(api: Api, world: World) -> None:
    seen: list[str] = []
    params = {"limit": "2"}
    while True:
        status, page = await api.call("GET", "/api/v1/services", params=params)
        assert status == 200 and len(page["items"]) <= 2
        seen += [s["id"] for s in page["items"]]
        if page["next"] is None:
            break
        params = {"limit": "2", "after": page["next"]}
    assert seen == ["svc-0001", "svc-0002", "svc-0003"]
    _, first = await api.call("GET", "/api/v1/incidents", params={"limit": "1"})
    _, second = await api.call(
        "GET", "/api/v1/incidents", params={"limit": "1", "after": str(first["next"])}
    )
    assert [first["items"][0]["id"], second["items"][0]["id"]] == [
        world.availability_incident,
        world.security_incident,
    ]
    assert second["next"] is None


@pytest.mark.parametrize(
    "odd", ["\u00a0", "\u2028", "\t", "/"], ids=["no-break-space", "line-separator", "tab", "slash"]
)
async def test_every_service_the_catalogue_keeps_is_reached_by_its_id_and_its_pages(
    api: Api, world: World, app: App, clock: FakeClock, odd: str
) -> None:
    # A no-break space in an id the catalogue took: its `next` was refused back as `after`
    # ("expected printable text") and the service could not be fetched nor filtered on.
    odd_id = f"svc-0001{odd}A"
    with app.store.session() as session:
        session.add(
            Service(id=odd_id, name="怪名", status="online", first_seen=clock(), last_seen=clock())
        )
    status, page = await api.call("GET", "/api/v1/services", params={"limit": "1"})
    assert status == 200
    status, page = await api.call(
        "GET", "/api/v1/services", params={"limit": "1", "after": page["next"]}
    )
    assert (status, [s["id"] for s in page["items"]]) == (200, [odd_id])
    status, page = await api.call(
        "GET", "/api/v1/services", params={"limit": "1", "after": page["next"]}
    )
    assert (status, [s["id"] for s in page["items"]]) == (200, ["svc-0002"])
    status, service = await api.call("GET", f"/api/v1/services/{quote(odd_id, safe='')}")
    assert (status, service["id"]) == (200, odd_id)
    status, page = await api.call("GET", "/api/v1/findings", params={"service": odd_id})
    assert (status, page["items"]) == (200, [])


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("/api/v1/services", {"limit": "501"}, "limit: expected a whole number from 1 to 500"),
        ("/api/v1/services", {"limit": "0"}, "limit: expected a whole number from 1 to 500"),
        (
            "/api/v1/incidents",
            {"after": "abc"},
            "after: expected a whole number from 0 to 2147483647",
        ),
        ("/api/v1/incidents", {"state": "sleeping"}, "state: expected one of open, "),
        ("/api/v1/incidents", {"class": "other"}, "class: expected one of security, availability"),
        ("/api/v1/services", {"gone": "yes"}, "gone: expected true or false"),
        ("/api/v1/findings", {"severity": "urgent"}, "severity: expected one of info, "),
        ("/api/v1/compliance", {"quarter": "2026Q5"}, "quarter: '2026Q5' is not a quarter"),
        ("/api/v1/reports", {"quarter": "\u0662\u0660\u0662\u0666q3"}, "quarter: '"),
        ("/api/v1/scans", {"service": "a\x00b"}, "service: expected text of 1 to 200 characters"),
    ],
)
async def test_a_bad_query_parameter_is_a_422_naming_it(
    api: Api, world: World, path: str, params: dict[str, str], error: str
) -> None:
    status, body = await api.call("GET", path, params=params)
    assert status == 422
    assert body["error"].startswith(error)


# --- incidents ----------------------------------------------------------------------------


async def test_incidents_are_listed_with_their_clock_and_filtered_by_state_and_class(
    api: Api, world: World, clock: FakeClock
) -> None:
    clock.advance(minutes=30)
    status, page = await api.call("GET", "/api/v1/incidents", params={"class": "security"})
    assert status == 200
    [incident] = page["items"]
    assert incident["id"] == world.security_incident
    assert (incident["state"], incident["minutes_left"]) == ("open", 90)
    assert incident["notify_by"].endswith("+00:00")
    _, page = await api.call("GET", "/api/v1/incidents", params={"class": "availability"})
    assert [i["id"] for i in page["items"]] == [world.availability_incident]
    _, page = await api.call("GET", "/api/v1/incidents", params={"state": "resolved"})
    assert page["items"] == []
    _, page = await api.call("GET", "/api/v1/incidents", params={"state": "active"})
    assert len(page["items"]) == 2


async def test_an_incident_in_detail_has_its_findings_timeline_and_draft(
    api: Api, world: World
) -> None:
    status, incident = await api.call("GET", f"/api/v1/incidents/{world.security_incident}")
    assert status == 200
    assert [f["id"] for f in incident["findings"]] == [world.finding]
    assert [e["kind"] for e in incident["timeline"]] == ["opened"]
    assert incident["draft"]["services"][0]["id"] == "svc-0001"
    for missing in ("/api/v1/incidents/999", "/api/v1/incidents/2147483648"):
        status, body = await api.call("GET", missing)
        assert status == 404 and body["error"].startswith("no incident")


async def test_an_incident_keeps_its_findings_when_they_move_on_to_a_newer_incident(
    api: Api, app: App, clock: FakeClock
) -> None:
    # A service down twice: the finding's second episode belongs to the second incident, and
    # the first showed no findings (没有关联的发现) though `incidents show` listed them.
    down = FindingDraft(
        rule="service_down",
        clause="6.4 c",
        severity="high",
        subject_kind="service",
        subject="svc-0002",
        summary="服务2 无法访问",
        service_id="svc-0002",
    )
    incidents = []
    for _ in range(2):
        with app.store.session() as session:
            finding = upsert_finding(session, down, clock())
            incidents += intake(session, app.settings, clock()).opened
        clock.advance(minutes=10)
        with app.store.session() as session:
            session.get(Finding, finding.id).state = "resolved"  # type: ignore[union-attr]
            intake(session, app.settings, clock())
    first, second = incidents
    for incident_id in (first, second):
        _, detail = await api.call("GET", f"/api/v1/incidents/{incident_id}")
        assert [f["id"] for f in detail["findings"]] == [finding.id]
        assert [f["summary"] for f in detail["draft"]["findings"]] == ["服务2 无法访问"]


async def test_acknowledging_through_the_api_is_the_cli_s_ack_under_the_token_s_name(
    api: Api, world: World, app: App
) -> None:
    path = f"/api/v1/incidents/{world.security_incident}/ack"
    status, incident = await api.call("POST", path, "oncall", json={"note": "我来处理"})
    assert status == 200
    assert (incident["state"], incident["acknowledged_by"]) == ("acknowledged", "zhang.san")
    assert incident["timeline"][-1]["detail"]["note"] == "我来处理"
    assert ("zhang.san", "incident.ack", f"incident {world.security_incident}") in audit_lines(
        app.store
    )
    status, body = await api.call("POST", path, "oncall")  # no body: no note
    assert status == 409
    assert body["error"] == (
        f"incident {world.security_incident} was already acknowledged by zhang.san"
    )


async def test_a_notification_needs_its_four_parts_and_goes_to_the_management_unit(
    api: Api, world: World, app: App, hook: Webhook
) -> None:
    path = f"/api/v1/incidents/{world.security_incident}/notify"
    status, body = await api.call("POST", path, "oncall", json={**PARTS, "harm": "  "})
    assert status == 422
    assert body["error"] == "harm: String should have at least 1 character"
    status, body = await api.call("POST", path, "oncall", json={"scope": "x"})
    assert status == 422
    assert body["error"] == (
        "harm: Field required; measures: Field required; rectification: Field required"
    )
    status, incident = await api.call("POST", path, "oncall", json=PARTS)
    assert status == 202
    assert incident["state"] == "notified"
    assert incident["notification_sent_at"] is not None and incident["notified_at"] is None
    assert ("zhang.san", "incident.notify", f"incident {world.security_incident}") in audit_lines(
        app.store
    )
    # The daemon's delivery pass takes it to the management channel.
    await deliver_alerts(app, incident_id=world.security_incident)
    with app.store.session() as session:
        confirm_deliveries(session)
    [received] = [m for m in hook.received if m["path"] == "/management"]
    assert PARTS["harm"] in received["message"] and PARTS["rectification"] in received["message"]
    _, incident = await api.call("GET", f"/api/v1/incidents/{world.security_incident}")
    assert incident["notified_at"] is not None and incident["late"] is False


async def test_a_notification_made_by_phone_counts_at_its_time(
    api: Api, world: World, clock: FakeClock
) -> None:
    path = f"/api/v1/incidents/{world.security_incident}/out-of-band"
    clock.advance(minutes=150)
    made = clock() - dt.timedelta(minutes=40)  # 110 minutes after detection: on time
    status, body = await api.call(
        "POST",
        path,
        "oncall",
        json={**PARTS, "how": "电话：市数据局 王科长", "at": "yesterday at ten"},
    )
    assert (status, body["error"]) == (
        422,
        "at: 'yesterday at ten': expected an ISO 8601 time, such as 2026-10-01 or "
        "2026-10-01T08:00 (read as Asia/Shanghai) or 2026-10-01T08:00+08:00",
    )
    for beyond in ("0001-01-01T00:00:00+09:00", "9999-12-31T23:59:59-05:00"):  # it was a 500
        status, body = await api.call(
            "POST", path, "oncall", json={**PARTS, "how": "电话", "at": beyond}
        )
        assert status == 422 and body["error"].startswith("at: ")
        assert "expected a time from 1970 on" in body["error"]
    status, incident = await api.call(
        "POST",
        path,
        "oncall",
        json={
            **PARTS,
            "how": "电话：市数据局 王科长",
            # Without an offset, as the command line's --at: Beijing time (it was a 422).
            "at": made.astimezone(SHANGHAI).replace(tzinfo=None).isoformat(),
        },
    )
    assert status == 200
    # Given in Beijing time, answered in UTC: the same moment.
    assert incident["notified_at"] == made.isoformat() and made.isoformat().endswith("+00:00")
    assert incident["notified_via"] == "out of band: 电话：市数据局 王科长"
    assert incident["late"] is False
    for future in ((clock() + dt.timedelta(hours=1)).isoformat(), "9999-12-31T23:59+00:00"):
        # The last: past year 9999 in Beijing time, it was a 500 (OverflowError).
        status, body = await api.call(
            "POST", path, "oncall", json={**PARTS, "how": "电话", "at": future}
        )
        assert status == 409 and body["error"].startswith("at: ")  # not the CLI's "--at"
        assert body["error"].endswith(": is in the future")


async def test_resolving_marks_the_incident_resolved_once(api: Api, world: World) -> None:
    path = f"/api/v1/incidents/{world.availability_incident}/resolve"
    status, incident = await api.call("POST", path, "oncall", json={})
    assert status == 200
    assert incident["state"] == "resolved" and incident["resolved_at"] is not None
    status, body = await api.call("POST", path, "oncall")
    assert (status, body["error"]) == (
        409,
        f"incident {world.availability_incident} is already resolved",
    )
    status, body = await api.call("POST", "/api/v1/incidents/424242/resolve", "oncall")
    assert (status, body) == (404, {"error": "no incident 424242"})


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"{not json", 400, "the body is not JSON"),
        (b"\xff\xfe\x00", 400, "the body is not JSON"),
        (b"[1, 2]", 422, "body: expected a JSON object"),
        (b'{"note": 5}', 422, "note: Input should be a valid string"),
        (b'{"colour": "red"}', 422, "colour: Extra inputs are not permitted"),
        (b'{"note": "a\\u0000b"}', 422, "note: must not contain control characters"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "the body is not JSON"),
    ],
)
async def test_a_body_that_does_not_validate_is_refused_naming_what_is_wrong(
    api: Api, world: World, data: bytes, status: int, error: str
) -> None:
    path = f"/api/v1/incidents/{world.security_incident}/ack"
    answered, body = await api.call("POST", path, "oncall", data=data)
    assert (answered, body) == (status, {"error": error})


# --- findings -----------------------------------------------------------------------------


async def test_findings_are_listed_and_filtered(api: Api, world: World) -> None:
    status, page = await api.call("GET", "/api/v1/findings")
    assert status == 200
    assert [f["rule"] for f in page["items"]] == ["zap:40012", "tls_weak_protocol"]
    _, page = await api.call("GET", "/api/v1/findings", params={"severity": "high"})
    assert [f["id"] for f in page["items"]] == [world.finding]
    _, page = await api.call("GET", "/api/v1/findings", params={"service": "svc-0002"})
    assert [f["rule"] for f in page["items"]] == ["tls_weak_protocol"]
    _, page = await api.call("GET", "/api/v1/findings", params={"state": "accepted"})
    assert page["items"] == []


async def test_an_admin_accepts_a_finding_until_a_time_and_it_is_audited(
    api: Api, world: World, app: App, clock: FakeClock
) -> None:
    path = f"/api/v1/findings/{world.finding}/accept"
    until = (clock() + dt.timedelta(days=90)).isoformat()
    status, _ = await api.call("POST", path, "oncall", json={"reason": "误报", "until": until})
    assert status == 403
    status, body = await api.call("POST", path, "admin", json={"until": until})
    assert (status, body["error"]) == (422, "reason: Field required")
    past = (clock() - dt.timedelta(days=1)).isoformat()
    status, body = await api.call("POST", path, "admin", json={"reason": "误报", "until": past})
    assert status == 409 and "must be in the future" in body["error"]
    status, finding = await api.call("POST", path, "admin", json={"reason": "误报", "until": until})
    assert status == 200
    assert (finding["state"], finding["accepted_by"], finding["accepted_reason"]) == (
        "accepted",
        "wang.wu",
        "误报",
    )
    assert finding["accepted_until"] == until
    assert ("wang.wu", "finding.accept", f"finding {world.finding}") in audit_lines(app.store)
    status, body = await api.call(
        "POST", "/api/v1/findings/777/accept", "admin", json={"reason": "误报", "until": until}
    )
    assert (status, body) == (404, {"error": "no finding 777"})


async def test_a_date_alone_is_read_as_beijing_time_as_on_the_command_line(
    api: Api, world: World
) -> None:
    # `monitord findings --accept ID --until 2027-01-01` took it; the API answered 422 "Input should
    # have timezone info".
    path = f"/api/v1/findings/{world.finding}/accept"
    status, finding = await api.call(
        "POST", path, "admin", json={"reason": "误报", "until": "2027-01-01"}
    )
    assert status == 200
    assert finding["accepted_until"] == "2026-12-31T16:00:00+00:00"


async def test_a_past_acceptance_names_the_field_and_the_day_as_given(
    api: Api, world: World
) -> None:
    # It answered "--until 2019-12-31: must be in the future": a flag, and the UTC day before.
    path = f"/api/v1/findings/{world.finding}/accept"
    status, body = await api.call(
        "POST", path, "admin", json={"reason": "误报", "until": "2020-01-01"}
    )
    assert (status, body) == (409, {"error": "until: 2020-01-01: must be in the future"})


# --- scans --------------------------------------------------------------------------------


async def test_scans_are_listed_and_an_admin_queues_one_as_the_cli_does(
    api: Api, world: World, app: App
) -> None:
    status, page = await api.call("GET", "/api/v1/scans")
    assert status == 200
    assert [(s["service_id"], s["state"], s["high"]) for s in page["items"]] == [
        ("svc-0001", "finished", 1)
    ]
    with app.store.session() as session:
        # Nothing listens there: the check notes the service did not answer, and queues it.
        session.get(Service, "svc-0003").url = "http://127.0.0.1:9/"  # type: ignore[union-attr]
    status, scan = await api.call("POST", "/api/v1/scans", "admin", json={"service_id": "svc-0003"})
    assert status == 202
    assert (scan["service_id"], scan["trigger"], scan["state"]) == ("svc-0003", "manual", "queued")
    assert ("wang.wu", "scan.request", "svc-0003") in audit_lines(app.store)
    _, page = await api.call("GET", "/api/v1/scans", params={"state": "queued"})
    assert [s["id"] for s in page["items"]] == [scan["id"]]


async def test_a_scan_zap_must_not_run_or_of_no_service_is_refused(
    api: Api, world: World, app: App
) -> None:
    with app.store.session() as session:
        session.get(Service, "svc-0003").url = "http://169.254.169.254/latest"  # type: ignore[union-attr]
    status, body = await api.call("POST", "/api/v1/scans", "admin", json={"service_id": "svc-0003"})
    assert status == 409 and body["error"].startswith("not scanned:")
    status, body = await api.call("POST", "/api/v1/scans", "admin", json={"service_id": "svc-x"})
    assert (status, body) == (404, {"error": "no service 'svc-x'"})
    status, body = await api.call("POST", "/api/v1/scans", "admin", json={})
    assert (status, body) == (422, {"error": "service_id: Field required"})
    with app.store.session() as session:
        assert session.scalars(select(Scan).where(Scan.service_id == "svc-0003")).all() == []


# --- compliance and reports ---------------------------------------------------------------


async def test_compliance_verdicts_are_read_by_quarter(
    api: Api, world: World, clock: FakeClock
) -> None:
    status, page = await api.call("GET", "/api/v1/compliance")  # the current quarter: 2026q4
    assert status == 200
    assert [(r["rule"], r["passed"]) for r in page["items"]] == [
        ("availability", True),
        ("scan_done", False),
    ]
    _, page = await api.call("GET", "/api/v1/compliance", params={"passed": "false"})
    assert [r["rule"] for r in page["items"]] == ["scan_done"]
    _, page = await api.call("GET", "/api/v1/compliance", params={"quarter": "2026q3"})
    assert page["items"] == []


async def test_a_verdict_whose_duty_is_not_due_yet_reads_pending(
    api: Api, world: World, app: App, clock: FakeClock
) -> None:
    # The running quarter's log audit is stored passed (not failed) and pending: a reader of
    # `passed` alone took it for done.
    with app.store.session() as session:
        session.add(
            ComplianceResult(
                quarter="2026q4",
                rule="log_audit",
                clause="7.3.1",
                subject="",
                passed=True,
                evidence={"written": False, "pending": True},
                evaluated_at=clock.now,
            )
        )
    _, page = await api.call("GET", "/api/v1/compliance")
    assert [(r["rule"], r["passed"], r["pending"]) for r in page["items"]] == [
        ("availability", True, False),
        ("scan_done", False, False),
        ("log_audit", True, True),
    ]
    # As `monitord compliance` counts them: a pending verdict is not among the passed.
    _, page = await api.call("GET", "/api/v1/compliance", params={"passed": "true"})
    assert [r["rule"] for r in page["items"]] == ["availability"]
    _, page = await api.call("GET", "/api/v1/compliance", params={"pending": "true"})
    assert [r["rule"] for r in page["items"]] == ["log_audit"]
    _, page = await api.call("GET", "/api/v1/compliance", params={"pending": "false"})
    assert [r["rule"] for r in page["items"]] == ["availability", "scan_done"]


async def test_a_report_s_pdf_is_served_from_its_row_only_while_it_is_unchanged(
    api: Api, world: World
) -> None:
    status, page = await api.call("GET", "/api/v1/reports")
    assert status == 200
    [report] = page["items"]
    assert (report["quarter"], report["pdf"]) == (
        "2026q3",
        f"/api/v1/reports/{world.report}/pdf",
    )
    headers = {"Authorization": f"Bearer {TOKENS['viewer']}"}
    async with api.session.get(api.base + report["pdf"], headers=headers) as response:
        assert response.status == 200
        assert response.content_type == "application/pdf"
        assert response.headers["Content-Disposition"] == (
            'attachment; filename="monitord-2026q3.pdf"'
        )
        assert await response.read() == world.report_path.read_bytes()
    world.report_path.write_bytes(b"%PDF-1.4\n% changed\n")
    status, body = await api.call("GET", report["pdf"])
    assert status == 409 and "SHA-256 differs" in body["error"]
    world.report_path.unlink()
    status, body = await api.call("GET", report["pdf"])
    assert status == 409 and "no longer where it was written" in body["error"]
    status, body = await api.call("GET", "/api/v1/reports/55/pdf")
    assert (status, body) == (404, {"error": "no report 55"})


async def test_every_time_the_api_gives_is_utc_with_its_offset(api: Api, world: World) -> None:
    _, incident = await api.call("GET", f"/api/v1/incidents/{world.security_incident}")
    times = [incident["detected_at"], incident["notify_by"], incident["timeline"][0]["at"]]
    assert all(t.endswith("+00:00") for t in times), times
    # The schema's date-time format (RFC 3339) wants the offset, and every answer above was
    # validated with formats on: a naive time would have failed there.
    naive = jsonschema_rs.Draft202012Validator(
        {"type": "string", "format": "date-time"}, validate_formats=True
    )
    assert not naive.is_valid("2026-11-02T01:00:00")


async def test_a_store_that_does_not_answer_is_a_503_not_a_traceback(
    api: Api, app: App, tmp_path: Path
) -> None:
    # The database file replaced by a folder: no connection can be opened to it any more.
    database = tmp_path / "m.db"
    for path in tmp_path.glob("m.db*"):
        path.unlink()
    database.mkdir()
    app.store.engine.dispose()
    status, body = await api.call("GET", "/api/v1/incidents")
    assert (status, body) == (503, {"error": "the store does not answer now; try again shortly"})


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/api/v1/services", "viewer"),
        ("GET", "/api/v1/silences", "viewer"),
        ("POST", "/api/v1/silences", "oncall"),
        ("POST", "/api/v1/silences/1/expire", "oncall"),
        ("GET", "/metrics", "viewer"),
    ],
)
async def test_a_store_that_does_not_answer_is_a_503_and_one_warning_on_every_route(
    api: Api, app: App, tmp_path: Path, method: str, path: str, role: str
) -> None:
    # /metrics and the silences were a 500 with a traceback in the log for every request: a
    # Prometheus scrape every 15 s filled it.
    database = tmp_path / "m.db"
    for file in tmp_path.glob("m.db*"):
        file.unlink()
    database.mkdir()
    app.store.engine.dispose()
    headers = {"Authorization": f"Bearer {TOKENS[role]}"}
    body = {"services": ["svc-0001"], "reason": "维护", "for": "1h"}
    with logged("WARNING") as said:
        async with api.session.request(
            method, api.base + path, headers=headers, json=body if method == "POST" else None
        ) as response:
            assert response.status == 503
            assert await response.json() == {
                "error": "the store does not answer now; try again shortly"
            }
    assert said == [f"{method} {path}: the store does not answer\n"]


async def test_a_body_that_is_not_utf_8_is_a_400_for_a_handler_reading_it_itself(
    app: App,
) -> None:
    from monitord.runtime.web.routes import Route

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    server = TestServer(
        build_web_app(app, route_sets=[[Route("POST", "/echo", echo, role="viewer")]]),
        host="127.0.0.1",
    )
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                server.make_url("/echo"),
                data=b'{"note": "\x99"}',
                headers={"Authorization": f"Bearer {TOKENS['viewer']}"},
            ) as response,
        ):
            assert response.status == 400
            assert await response.json() == {
                "error": "the body is not text in its charset (UTF-8 unless said)"
            }
    finally:
        await server.close()


# --- cluster ------------------------------------------------------------------------------


async def test_the_cluster_lists_the_daemon_on_the_store_and_the_jobs_it_runs(
    api: Api, app: App, clock: FakeClock
) -> None:
    from monitord.cluster import make_coordinator

    status, members = await api.call("GET", "/api/v1/cluster")
    assert (status, members) == (200, [])  # no daemon ever ran on this store
    cluster = make_coordinator(app.store, app.settings.cluster, clock)
    cluster.join()
    cluster.record_round(3)
    status, members = await api.call("GET", "/api/v1/cluster")
    assert status == 200
    [member] = members
    assert member["name"] == app.settings.cluster.member_name()
    assert member["probe_share"] == 3 and member["stopped_at"] is None
    # On SQLite the daemon is alive while it holds the store's lock: this test holds none.
    assert member["alive"] is False and member["jobs"] == []
