"""`monitord demo`: a portal and its services on loopback, and the daemon working against them.

Everything runs in one process on 127.0.0.1: a demo portal serving the bundled catalogue (about
30 services of every type, tier and state, a few with broken filings), an HTTPS server for the
services behind it (certificates made at start by a demo CA), and the daemon itself on a SQLite
store in ./var/demo, which outlasts the demo so that a newcomer can try the commands on what they
just saw. The portal changes its catalogue a little at each sync so that the lifecycle events show.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import ipaddress
import json
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from loguru import logger
from sqlalchemy import select

from monitord import aio
from monitord.config import Secrets, parse_config
from monitord.demo.fakezap import FakeAlert, FakeZapServer, Scenario
from monitord.errors import StoreError, UsageError
from monitord.runtime.app import App
from monitord.runtime.logsetup import setup_logging
from monitord.runtime.web.auth import new_token, token_hash
from monitord.store import Store, open_store
from monitord.timeutil import UTC, ScaledClock, local_text, quarter_start

DEMO_SPEED = 120.0  # the demo's clock: two hours pass in a minute
DEMO_TOKEN = "demo-token"  # the demo portal's own bearer token; not a secret of any real system
PAGE_PORT = 8321  # the status page's usual port; another free one when it is taken
KEPT = Path("var/demo")
"""Where the demo keeps its store, its log and a config to read them with (working folder)."""


def _page_address() -> str:
    """Where the demo serves the status page: 127.0.0.1:8321, or a free port when taken."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", PAGE_PORT))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def load_demo_catalogue() -> list[dict[str, Any]]:
    """The bundled demo catalogue's services, with {base} placeholders in their URLs."""
    text = resources.files("monitord.demo").joinpath("data/catalogue.json").read_text("utf-8")
    services: list[dict[str, Any]] = json.loads(text)["services"]
    return services


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass(frozen=True)
class DemoCA:
    """A throw-away certificate authority for the demo's HTTPS services."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls) -> DemoCA:
        """Make a new CA key and self-signed certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("monitord demo CA"))
            .issuer_name(_name("monitord demo CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def server_context(self, valid_days: float, folder: Path, label: str) -> ssl.SSLContext:
        """A server SSL context for 127.0.0.1/localhost whose certificate ends in valid_days."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = folder / f"{label}.pem"
        key_file = folder / f"{label}.key"
        cert_file.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + self.cert.public_bytes(serialization.Encoding.PEM)
        )
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context

    def write_bundle(self, path: Path) -> Path:
        """Write the CA certificate as a PEM bundle (for [probes] ca_file)."""
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


# The catalogue changes the demo portal makes, one per sync after the first.
Change = Callable[[dict[str, dict[str, Any]]], str]


def _suspend(services: dict[str, dict[str, Any]]) -> str:
    s = services["svc-0006"]
    s["status"] = "suspended"
    s["suspension"] = {
        "filed_at": "2026-11-28T09:00:00+08:00",
        "from": "2026-11-28T12:00:00+08:00",
        "planned_resume": "2026-11-30T08:00:00+08:00",
        "announced": True,
    }
    return "svc-0006 filed a suspension"


def _go_online(services: dict[str, dict[str, Any]]) -> str:
    services["svc-0022"]["status"] = "online"
    return "svc-0022 went online"


def _resume(services: dict[str, dict[str, Any]]) -> str:
    services["svc-0023"]["status"] = "online"
    services["svc-0023"]["suspension"] = None
    return "svc-0023 resumed"


def _notice(services: dict[str, dict[str, Any]]) -> str:
    services["svc-0030"]["offline_notice"] = {
        "filed_at": "2026-11-27T09:00:00+08:00",
        "planned_offline": "2026-12-04T00:00:00+08:00",
    }
    return "svc-0030 filed a take-down notice"


def _remove(services: dict[str, dict[str, Any]]) -> str:
    del services["svc-0029"]
    return "svc-0029 disappeared from the catalogue"


def _update(services: dict[str, dict[str, Any]]) -> str:
    services["svc-0015"]["updated_at"] = "2026-11-29T08:00:00+08:00"
    return "svc-0015 deployed a new version"


SCRIPT: tuple[Change, ...] = (_suspend, _go_online, _resume, _notice, _remove, _update)


@dataclass
class DemoPortal:
    """The demo portal's catalogue interface, per spec/catalogue-api.md, with ETag and paging."""

    services: dict[str, dict[str, Any]]
    page_size: int = 10
    step: int = 0
    served_version: int = -1
    log: list[str] = field(default_factory=list)

    def etag(self) -> str:
        """The ETag of the current catalogue."""
        body = json.dumps(self.services, sort_keys=True, ensure_ascii=False).encode()
        return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'

    def advance(self) -> None:
        """Apply the next scripted change, if any is left."""
        if self.step < len(SCRIPT):
            what = SCRIPT[self.step](self.services)
            self.step += 1
            logger.info("demo portal: {}", what)

    async def handle(self, request: web.Request) -> web.Response:
        """GET /api/v1/services?page=N&page_size=M."""
        if request.headers.get("Authorization") != f"Bearer {DEMO_TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("page_size", str(self.page_size)))
        if page == 1:
            # Each new sync sees the next change, so the demo shows every kind of event.
            if self.served_version >= 0:
                self.advance()
            self.served_version += 1
            if request.headers.get("If-None-Match") == self.etag():
                return web.Response(status=304, headers={"ETag": self.etag()})
        items = list(self.services.values())
        chunk = items[(page - 1) * size : page * size]
        more = page * size < len(items)
        return web.json_response(
            {
                "page": page,
                "page_size": size,
                "total": len(items),
                "next": page + 1 if more else None,
                "services": chunk,
            },
            headers={"ETag": self.etag()},
            dumps=lambda v: json.dumps(v, ensure_ascii=False),
        )


async def _service_handler(request: web.Request) -> web.StreamResponse:
    """The local services behind the catalogue, each behaving as its URL says."""
    behaviour = request.match_info["behaviour"]
    if behaviour == "slow":
        await asyncio.sleep(2.5)
    if behaviour == "down":
        return web.json_response({"code": "5000", "msg": "系统繁忙"}, status=503)
    if behaviour == "html":
        return web.Response(text="<html><body>维护中</body></html>", content_type="text/html")
    if behaviour == "bizerror":
        return web.json_response({"code": "9999", "msg": "未知错误"})
    headers = {"Strict-Transport-Security": "max-age=31536000"}
    return web.json_response({"code": "0", "msg": "成功"}, headers=headers)


CHANNEL_NAMES = {
    "/oncall": "值班群",
    "/lead": "值班组长",
    "/director": "运营主任",
    "/management": "管理单位（市数据局）",
}


async def _chat_handler(request: web.Request) -> web.Response:
    """A stand-in for the chat groups: shows each alert apprise delivers to it."""
    body = json.loads(await request.read())
    who = CHANNEL_NAMES.get(request.path, request.path)
    logger.info("📨 {} received: {}", who, body.get("title"))
    return web.json_response({"errcode": 0})


@dataclass
class DemoSite:
    """The running demo servers: the portal (HTTP), the services (HTTPS, one expiring) and a
    stand-in for the chat groups that alerts go to."""

    portal_url: str
    ca_file: Path
    chat_url: str
    services: list[dict[str, Any]]
    runners: list[web.AppRunner]

    async def close(self) -> None:
        """Stop every demo server."""
        for runner in self.runners:
            await runner.cleanup()


async def _serve(app: web.Application, context: ssl.SSLContext | None = None) -> tuple[str, Any]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "https" if context else "http"
    return f"{scheme}://127.0.0.1:{port}", runner


async def start_demo_site(folder: Path) -> DemoSite:
    """Start the demo portal and services on loopback ports chosen by the system."""
    ca = DemoCA.create()
    services_app = web.Application()
    services_app.router.add_route("*", "/svc/{behaviour}/{tail:.*}", _service_handler)
    https_base, https_runner = await _serve(services_app, ca.server_context(365, folder, "svc"))
    expiring_app = web.Application()
    expiring_app.router.add_route("*", "/svc/{behaviour}/{tail:.*}", _service_handler)
    expiring_base, expiring_runner = await _serve(
        expiring_app, ca.server_context(5, folder, "expiring")
    )
    plain_app = web.Application()
    plain_app.router.add_route("*", "/svc/{behaviour}/{tail:.*}", _service_handler)
    plain_base, plain_runner = await _serve(plain_app)

    services: dict[str, dict[str, Any]] = {}
    for raw in load_demo_catalogue():
        service = copy.deepcopy(raw)
        url: str = service["url"]
        base = expiring_base if "/svc/expiring/" in url else https_base
        service["url"] = url.replace("{base}", base).replace("{plainbase}", plain_base)
        services[service["id"]] = service
    portal = DemoPortal(services)
    portal_app = web.Application()
    portal_app.router.add_get("/api/v1/services", portal.handle)
    portal_url, portal_runner = await _serve(portal_app)
    chat_app = web.Application()
    chat_app.router.add_post("/{tail:.*}", _chat_handler)
    chat_url, chat_runner = await _serve(chat_app)
    return DemoSite(
        portal_url=portal_url,
        ca_file=ca.write_bundle(folder / "demo-ca.pem"),
        chat_url=chat_url,
        services=list(services.values()),
        runners=[portal_runner, https_runner, expiring_runner, plain_runner, chat_runner],
    )


async def _demo_operator(app: App) -> None:
    """Plays the on-call person: acknowledges the first incident, notifies the management unit
    before its deadline, and leaves a phoned-in incident unnotified so it goes late."""
    from monitord.incidents import acknowledge, notify_management, open_manual
    from monitord.store.models import Incident

    def step(at_minutes: float, action: str) -> bool:
        with app.store.session() as session:
            first = session.scalars(select(Incident).order_by(Incident.id)).first()
            if first is None or app.clock() - first.detected_at < dt.timedelta(minutes=at_minutes):
                return False
            now = app.clock()
            if action == "phone":
                phoned = open_manual(
                    session,
                    app.settings,
                    "data_exposure",
                    ["svc-0011"],
                    "服务商电话报告：疑似企业信息泄露",
                    "demo-operator",
                    now,
                )
                logger.info(
                    "demo operator: monitord incidents open --kind data_exposure "
                    "--service svc-0011 … → incident {}",
                    phoned.id,
                )
            elif action == "ack":
                acknowledge(session, first.id, "demo-operator", now)
                logger.info("demo operator: monitord incidents ack {}", first.id)
            else:
                notify_management(
                    session,
                    app.settings,
                    first.id,
                    {
                        "scope": "该服务接口（全市企业）",
                        "harm": "接口未加密，凭据可能被窃听",
                        "measures": "已通知服务提供单位停用明文接口",
                        "rectification": "改用 HTTPS 并复测",
                    },
                    "demo-operator",
                    now,
                )
                logger.info(
                    "demo operator: monitord incidents notify {} --scope … → "
                    "notification queued for the management unit",
                    first.id,
                )
        return True

    plan = [(5.0, "phone"), (40.0, "ack"), (100.0, "notify")]
    while plan:
        at, action = plan[0]
        if await asyncio.to_thread(step, at, action):
            plan.pop(0)
        await asyncio.sleep(0.5)


REPORT_AFTER_SECONDS = 20.0
"""When the demo writes its quarter's report: 40 demo minutes in, once incidents have opened."""


async def _demo_report(app: App) -> None:
    """Write the report of the demo's quarter (its made-up data, up to now) into var/reports,
    where it outlasts the demo, and queue it for the management unit's chat group."""
    from monitord.errors import MonitordError
    from monitord.runtime.reporting import write_report

    await asyncio.sleep(REPORT_AFTER_SECONDS)
    now = app.clock()
    quarter, _start = quarter_start(now)
    try:
        written = await asyncio.to_thread(
            write_report, app.store, app.settings, quarter, now, send=True
        )
    except MonitordError as exc:
        logger.error("demo: the quarterly report could not be written: {}", exc)
        return
    logger.info(
        "demo: the {} compliance report (its data up to now) is written: {} ({} pages, "
        "SHA-256 {}…); open it with a PDF viewer",
        quarter,
        written.path,
        written.pages,
        written.sha256[:12],
    )


def _demo_zap(services: list[dict[str, Any]]) -> FakeZapServer:
    """The demo's stand-in for OWASP ZAP: one service has findings, the others are clean."""
    target = next(s for s in services if s["id"] == "svc-0001")["url"]
    alerts = [
        FakeAlert("40012", "40012", "Cross Site Scripting (Reflected)", "High", "Medium",
                  f"{target}search?q=1", param="q", cweid="79", wascid="8", source="active"),
        FakeAlert("10020", "10020-1", "Missing Anti-clickjacking Header", "Medium", "Medium",
                  target, cweid="1021", wascid="15"),
    ]  # fmt: skip
    return FakeZapServer(Scenario(site_urls=[target, f"{target}search"], alerts=alerts)).start()


def _demo_logs(folder: Path) -> tuple[Path, Path]:
    """Two days of synthetic portal traffic with every abnormal behaviour planted once."""
    import random

    from monitord.demo import synth

    rng = random.Random(1129)
    world = synth.make_world(rng, services=30, companies=60)
    start = synth.local(2026, 11, 26)
    events = synth.merged(
        synth.normal_traffic(world, rng, 4000, start, days=2),
        synth.plant_all(world, rng, synth.local(2026, 11, 27, 10), synth.local(2026, 11, 28, 23)),
    )
    edge, audit = folder / "access.log", folder / "audit.jsonl"
    synth.write_logs(events, edge, audit)
    return edge, audit


def _fresh_store(kept: Path) -> str:
    """The URL of an empty demo store in kept, the previous demo's removed.

    The previous store's times ran on the demo's fast clock, hours ahead of this run's: a new
    demo on it would find incidents from its future. Raises StoreError when a demo still runs.
    """
    database = kept.absolute() / "monitord.db"
    url = f"sqlite:///{database}"
    if database.exists():
        previous = Store(url)
        try:
            previous.take_for_daemon()
        except StoreError:
            raise StoreError(
                f"a demo is running on {kept}/ already: stop it (Ctrl-C), or start this one "
                "from another folder"
            ) from None
        finally:
            previous.dispose()
    try:
        kept.mkdir(parents=True, exist_ok=True)
        for name in ("monitord.db", "monitord.db-wal", "monitord.db-shm", "monitord.log.jsonl"):
            (kept / name).unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(
            f"{kept}: cannot write the demo's store there ({exc.strerror}): run the demo from a "
            "folder you can write"
        ) from None
    return url


def _write_kept_config(kept: Path, store_url: str) -> Path:
    """A config for the CLI on the demo's store: `monitord --config … incidents list`."""
    config = kept / "monitord.toml"
    reports = Path("var/reports").absolute()
    config.write_text(
        "# Written by `monitord demo`: the commands read the demo's store with it.\n"
        f"[store]\nurl = {json.dumps(store_url)}\n\n[report]\ndir = {json.dumps(str(reports))}\n",
        encoding="utf-8",
    )
    return config


def _say_where_kept(config: Path, clock: ScaledClock) -> None:
    """After Ctrl-C: where the demo's store is, how its times read now, and a command ready
    to paste."""
    program = _program()
    print(
        f"\nThe demo's store is kept in {config.parent}/ (replaced by the next demo). Its clock "
        f"ran {clock.factor:g}x fast, to {local_text(clock())}: read now, minutes left and "
        "lateness are counted from the real time. Try:\n"
        f"  {program} --config {config.absolute()} incidents list\n"
        f"  {program} --config {config.absolute()} services",
        file=sys.stderr,
    )


def _program() -> str:
    """How to type monitord here: its name when the shell finds this one (make run's
    .venv/bin is rarely on the PATH), else the path it was started by."""
    started = Path(sys.argv[0])
    if started.name != "monitord":
        return "monitord"
    found = shutil.which("monitord")
    if found is not None and Path(found).resolve() == started.resolve():
        return "monitord"
    return str(started)


async def _demo(folder: Path, interval: int, store_url: str, clock: ScaledClock) -> int:
    from monitord.runtime.daemon import Daemon
    from monitord.runtime.jobs import JOBS

    site = await start_demo_site(folder)
    fake_zap = _demo_zap(site.services)
    edge_log, audit_log = _demo_logs(folder)
    chat = site.chat_url.replace("http://", "json://")
    page = _page_address()
    page_token = new_token()  # made for this run; printed below for the newcomer to sign in
    settings = parse_config(
        {
            "store": {"url": store_url},
            "portal": {"url": site.portal_url, "sync_interval_seconds": interval, "page_size": 10},
            "logging": {"file": str(KEPT.absolute() / "monitord.log.jsonl")},
            "daemon": {"grace_seconds": 5.0},
            "alerts": {
                "oncall": [f"{chat}/oncall"],
                "management": [f"{chat}/management"],
                "escalation": [
                    {"name": "值班组长", "urls": [f"{chat}/lead"]},
                    {"name": "运营主任", "urls": [f"{chat}/director"]},
                ],
                "service_contacts": False,
                "delivery_interval_seconds": 1.0,
            },
            "incidents": {"check_interval_seconds": 1.0},
            # Relative to the working folder, so that the report outlasts the demo.
            "report": {"dir": "var/reports"},
            "api": {
                "listen": page,
                "public_url": f"http://{page}",
                "tokens": [
                    {"name": "demo-oncall", "role": "oncall", "sha256": token_hash(page_token)}
                ],
            },
            "logs": {
                "follow": [
                    {"path": str(edge_log), "format": "nginx"},
                    {"path": str(audit_log), "format": "json"},
                ],
                "follow_interval_seconds": 5.0,
            },
            "zap": {
                "url": fake_zap.url,
                "check_interval_seconds": 3.0,
                "poll_interval_seconds": 0.1,
            },
            "probes": {
                "interval_seconds": 10.0,
                "timeout_seconds": 5.0,
                "slo_ms": 2000.0,
                "ca_file": str(site.ca_file),
                # The demo's services live on loopback; keep only the metadata addresses denied.
                "denied_networks": ["169.254.0.0/16", "100.100.100.200/32"],
            },
        },
        "(demo)",
        env={},
    )
    settings = settings.model_copy(
        update={
            "secrets": Secrets.model_validate(
                {"portal_token": DEMO_TOKEN, "zap_api_key": fake_zap.zap.scenario.api_key}
            )
        }
    )
    setup_logging(settings.logging)
    logger.info("demo portal at {}; store and log kept in {}/", site.portal_url, KEPT)
    logger.info(
        "the demo clock runs {}× fast: the two-hour notification clock passes in {:.0f} s",
        DEMO_SPEED,
        7200 / DEMO_SPEED,
    )
    logger.info(
        "security scans go to a FAKE ZAP at {} (not OWASP ZAP: it answers as ZAP's API "
        "does, with made-up alerts)",
        fake_zap.url,
    )
    logger.info(
        "status page: http://{}/ (sign in with the demo on-call token {}; scripts send it as "
        "Authorization: Bearer)",
        page,
        page_token,
    )
    logger.info("press Ctrl-C to stop")
    app = App(
        settings=settings,
        # Taken as a daemon takes its store: a second demo in this folder is refused, not
        # let delete this one's store under it.
        store=await asyncio.to_thread(open_store, settings.store.url, for_daemon=True),
        clock=clock,
    )
    operator = asyncio.create_task(_demo_operator(app))
    report = asyncio.create_task(_demo_report(app))
    try:
        # The demo's store holds no earlier quarter: it writes the report of its own instead.
        jobs = tuple(job for job in JOBS if job.name != "quarterly-report")
        return await Daemon(app, None, jobs).run()
    finally:
        operator.cancel()
        report.cancel()
        fake_zap.close()
        await site.close()


def run_demo(interval: int = 20) -> int:
    """Run the demo until Ctrl-C (SIGINT) or SIGTERM; returns the exit status."""
    store_url = _fresh_store(KEPT)
    config = _write_kept_config(KEPT, store_url)
    clock = ScaledClock(DEMO_SPEED)
    try:
        with tempfile.TemporaryDirectory(prefix="monitord-demo-") as folder:
            return aio.run(_demo(Path(folder), interval, store_url, clock))
    finally:
        _say_where_kept(config, clock)
