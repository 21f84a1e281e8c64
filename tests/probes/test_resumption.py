"""The availability probe resumes TLS sessions (`probes.tls_resume_minutes`), against real TLS
servers on loopback, on asyncio's event loop and on uvloop, the daemon's."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from aiohttp import web
from yarl import URL

import probes
from monitord import aio
from monitord.types import ProbeContext, ProbeResult, Target
from probes import availability, http, resumption
from rules.probe_rules import evaluate
from tests.probes.helpers import NOW, ServerCert, pipe, server_context, write_cert

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]
RUNNERS = [pytest.param(asyncio.run, id="asyncio"), pytest.param(aio.run, id="uvloop")]
SPEC = availability.AvailabilitySpec(timeout_s=5)


def leaf(ca: trustme.CA, certdir: Path, days: float) -> ServerCert:
    """A certificate for localhost from the test CA, valid `days` from NOW."""
    cert = ca.issue_cert(
        "localhost", not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=days)
    )
    pems = [p.bytes() for p in cert.cert_chain_pems]
    return write_cert(certdir, f"resume-{days}", cert.private_key_pem.bytes(), pems)


async def hello(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


@dataclass
class Clock:
    """The probe context's clock, moved by the test."""

    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Probing:
    """Probes of one loopback TLS server, each returning its facts."""

    ca: trustme.CA
    resume_s: float
    clock: Clock = field(default_factory=Clock)

    def context(self) -> ssl.SSLContext:
        client = ssl.create_default_context()
        self.ca.configure_trust(client)
        return client

    async def result(
        self,
        port: int,
        path: str = "/a",
        spec: availability.AvailabilitySpec = SPEC,
        host: str = "localhost",
    ) -> ProbeResult:
        """One availability probe of https://host:port/path."""
        async with probes.make_session() as session:
            ctx = ProbeContext(
                session=session,
                clock=self.clock,
                ssl_context=self.client,
                tls_resume_s=self.resume_s,
            )
            return await availability.probe(Target(f"https://{host}:{port}{path}"), spec, ctx)

    async def probe(self, port: int, path: str = "/a") -> dict[str, Any]:
        """One availability probe of https://localhost:port/path that succeeds: its facts."""
        result = await self.result(port, path)
        assert result.success, result.error
        return result.facts

    def __post_init__(self) -> None:
        # One trust context for the whole test, as a daemon keeps one (sessions belong to it).
        self.client = self.context()


async def start(context: ssl.SSLContext, port: int = 0) -> tuple[web.AppRunner, int]:
    """An aiohttp TLS server on 127.0.0.1 answering any path; its runner and port."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context, reuse_address=True)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def serving(
    context: ssl.SSLContext, then: Callable[[int], Awaitable[list[dict[str, Any]]]]
) -> list[dict[str, Any]]:
    """Run `then(port)` while a server with `context` listens."""
    runner, port = await start(context)
    try:
        return await then(port)
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("run", RUNNERS)
def test_the_next_probe_of_a_host_resumes_and_reports_the_certificate_checked_before(
    run: Runner[list[dict[str, Any]]], ca: trustme.CA, certdir: Path
) -> None:
    server = server_context(leaf(ca, certdir, 90))
    probing = Probing(ca, resume_s=300)

    async def probes_of(port: int) -> list[dict[str, Any]]:
        # Two services on the same host and port share its session.
        return [await probing.probe(port, "/a"), await probing.probe(port, "/b")]

    first, second = run(serving(server, probes_of))
    assert (first["tls_resumed"], second["tls_resumed"]) == (False, True)
    for fact in ("days_to_expiry", "cert_not_after", "cert_subject", "tls_version"):
        assert second[fact] == first[fact]
    assert first["days_to_expiry"] == 90


def test_with_resumption_off_every_probe_is_a_full_handshake(ca: trustme.CA, certdir: Path) -> None:
    server = server_context(leaf(ca, certdir, 90))
    probing = Probing(ca, resume_s=0)

    async def probes_of(port: int) -> list[dict[str, Any]]:
        return [await probing.probe(port) for _ in range(3)]

    assert [f["tls_resumed"] for f in aio.run(serving(server, probes_of))] == [False] * 3


def test_a_session_older_than_the_limit_gives_way_to_a_full_handshake(
    ca: trustme.CA, certdir: Path
) -> None:
    server = server_context(leaf(ca, certdir, 90))
    probing = Probing(ca, resume_s=300)

    async def probes_of(port: int) -> list[dict[str, Any]]:
        facts = [await probing.probe(port)]
        for seconds in (299, 301, 302):
            probing.clock.now = NOW + dt.timedelta(seconds=seconds)
            facts.append(await probing.probe(port))
        return facts

    resumed = [f["tls_resumed"] for f in aio.run(serving(server, probes_of))]
    # 301 s after the full handshake: a full one again, whose session the next probe resumes.
    assert resumed == [False, True, False, True]


def test_a_session_is_not_resumed_past_the_end_of_its_certificate(
    ca: trustme.CA, certdir: Path
) -> None:
    server = server_context(leaf(ca, certdir, 1))
    probing = Probing(ca, resume_s=10 * 86400)

    async def probes_of(port: int) -> list[dict[str, Any]]:
        first = await probing.probe(port)
        probing.clock.now = NOW + dt.timedelta(days=2)
        return [first, await probing.probe(port)]

    first, second = aio.run(serving(server, probes_of))
    assert (first["tls_resumed"], second["tls_resumed"]) == (False, False)
    assert second["days_to_expiry"] == -1  # the facts of a full handshake, by the probe's clock


@pytest.mark.parametrize("run", RUNNERS)
def test_a_server_restarted_with_a_new_certificate_is_seen_at_the_next_probe(
    run: Runner[list[dict[str, Any]]], ca: trustme.CA, certdir: Path
) -> None:
    probing = Probing(ca, resume_s=300)

    async def restart() -> list[dict[str, Any]]:
        runner, port = await start(server_context(leaf(ca, certdir, 90)))
        try:
            before = await probing.probe(port)
        finally:
            await runner.cleanup()
        # Its new context has new ticket keys: the old session is turned down.
        runner, _ = await start(server_context(leaf(ca, certdir, 10)), port)
        try:
            return [before, await probing.probe(port), await probing.probe(port)]
        finally:
            await runner.cleanup()

    before, after, next_one = run(restart())
    assert (before["days_to_expiry"], after["days_to_expiry"]) == (90, 10)
    assert [before["tls_resumed"], after["tls_resumed"], next_one["tls_resumed"]] == [
        False,
        False,
        True,
    ]
    assert next_one["days_to_expiry"] == 10


def test_a_server_that_issues_no_session_tickets_gets_full_handshakes_and_soon_no_offers(
    ca: trustme.CA, certdir: Path
) -> None:
    server = server_context(leaf(ca, certdir, 90))
    server.num_tickets = 0  # TLS 1.3 resumes only with a ticket
    probing = Probing(ca, resume_s=300)
    offers: list[bool] = []

    async def probes_of(port: int) -> list[dict[str, Any]]:
        facts = []
        for _ in range(4):
            facts.append(await probing.probe(port))
            sessions = resumption.resuming_client(probing.client).sessions
            offers.append(sessions.to_offer("localhost", port, NOW, 300) is not None)
        return facts

    assert [f["tls_resumed"] for f in aio.run(serving(server, probes_of))] == [False] * 4
    # Its sessions are turned down RESUME_MISSES times in a row: none is kept after that.
    assert offers == [True, True, False, False]


@dataclass
class FakeTls:
    """What `ResumableSessions` reads of a `ResumingConnection`."""

    session_reused: bool
    session: object = field(default_factory=object)

    def version(self) -> str:
        return "TLSv1.3"

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return None


def test_a_server_that_turns_down_two_offers_in_a_row_is_left_alone_until_they_age() -> None:
    sessions = resumption.ResumableSessions()

    def connect(at_s: float) -> bool:
        """A connection at `at_s` to a server that never resumes; whether a session was offered."""
        now = NOW + dt.timedelta(seconds=at_s)
        offer = sessions.to_offer("h", 443, now, 300)
        sessions.after("h", 443, FakeTls(session_reused=False), offer, now, 300)  # type: ignore[arg-type]
        return offer is not None

    # The first offer and the second are turned down; then none until 300 s after the second.
    offers = [connect(s) for s in (0, 60, 120, 180, 240, 419, 421, 480)]
    assert offers == [False, True, True, False, False, False, False, True]


def _offers_session(hello: bytes) -> bool:
    """Whether a TLS ClientHello (the handshake message, without its record header) offers a
    session: a TLS 1.3 pre_shared_key (41), a TLS 1.2 ticket (35) or session id."""
    at = 4 + 2 + 32  # handshake header, client_version, random
    session_id = hello[at]
    at += 1 + session_id
    at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher suites
    at += 1 + hello[at]  # compression methods
    end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
    at += 2
    while at < end:
        kind, size = (
            int.from_bytes(hello[at : at + 2], "big"),
            int.from_bytes(hello[at + 2 : at + 4], "big"),
        )
        if kind == 41 or (kind == 35 and size > 0):
            return True
        at += 4 + size
    return False


FATAL_HANDSHAKE_FAILURE = bytes([0x15, 3, 3, 0, 2, 2, 40])


@dataclass
class Gateway:
    """A TCP proxy in front of a TLS server (`breaking_on_offers`)."""

    port: int
    offers: list[bool]
    """For each connection, whether its ClientHello offered a session."""
    close: Callable[[], Awaitable[None]]


async def breaking_on_offers(backend: int, answer: str) -> Gateway:
    """A TCP proxy to `backend` that, as some gateways and WAFs do, breaks a handshake whose
    ClientHello offers a session: "alert" (a fatal handshake_failure) or "hang" (no answer
    until the proxy closes)."""
    offers: list[bool] = []
    handlers: set[asyncio.Task[None]] = set()
    closing = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await relay(reader, writer)
        finally:
            writer.close()
            handlers.discard(task)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(5)
        hello = await reader.readexactly(int.from_bytes(header[3:5], "big"))
        offers.append(_offers_session(hello))
        if offers[-1]:
            if answer == "hang":
                await closing.wait()
            if answer == "slow alert":
                await asyncio.sleep(1)
            writer.write(FATAL_HANDSHAKE_FAILURE)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        up_writer.write(header + hello)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    proxy = await asyncio.start_server(handle, "127.0.0.1", 0)

    async def close() -> None:
        closing.set()
        proxy.close()
        await asyncio.gather(*handlers, return_exceptions=True)

    return Gateway(proxy.sockets[0].getsockname()[1], offers, close)


@pytest.mark.parametrize("run", RUNNERS)
def test_a_gateway_that_breaks_on_resumption_gets_a_full_handshake_at_once_and_no_more_offers(
    run: Runner[tuple[list[bool], list[bool]]], ca: trustme.CA, certdir: Path
) -> None:
    # Some WAFs and TLS gateways refuse a ClientHello that offers a session: every probe but
    # the full ones failed ("connection reset by peer"), and the service was declared down.
    server = server_context(leaf(ca, certdir, 90))
    probing = Probing(ca, resume_s=300)

    async def through_the_gateway() -> tuple[list[bool], list[bool]]:
        runner, backend = await start(server)
        gateway = await breaking_on_offers(backend, "alert")
        try:
            resumed = []
            for _ in range(3):
                facts = await probing.probe(gateway.port)  # each asserts success
                resumed.append(facts["tls_resumed"])
            return resumed, gateway.offers
        finally:
            await gateway.close()
            await runner.cleanup()

    resumed, offers = run(through_the_gateway())
    assert resumed == [False, False, False]
    # The second probe offered, was refused and made a full handshake at once; none offers since.
    assert offers == [False, True, False, False]


def test_a_gateway_that_never_answers_an_offer_is_offered_nothing_after_its_second_silence(
    ca: trustme.CA, certdir: Path
) -> None:
    server = server_context(leaf(ca, certdir, 90))
    probing = Probing(ca, resume_s=300)
    short = availability.AvailabilitySpec(timeout_s=1)

    async def through_the_gateway() -> tuple[list[bool], list[bool]]:
        runner, backend = await start(server)
        gateway = await breaking_on_offers(backend, "hang")
        try:
            results = [await probing.result(gateway.port, spec=short) for _ in range(6)]
            return [r.success for r in results], gateway.offers
        finally:
            await gateway.close()
            await runner.cleanup()

    successes, offers = aio.run(through_the_gateway())
    # A probe whose offer goes unanswered runs out of its own time (the server may just have
    # been slow then), and the next makes a full one; after a second silence within a day,
    # nothing is offered.
    assert successes == [True, False, True, False, True, True]
    assert offers == [False, True, False, True, False, False]


def test_connections_turned_down_together_after_a_restart_count_one_miss() -> None:
    # Many services share a gateway's host and port: after its restart, the probes in flight
    # with the old session were all turned down, the second of them counted as a second miss
    # in a row, and the host got full handshakes for the whole window.
    sessions = resumption.ResumableSessions()
    sessions.after("h", 443, FakeTls(session_reused=False), None, NOW, 300)  # type: ignore[arg-type]
    stale = sessions.to_offer("h", 443, NOW, 300)
    assert stale is not None
    for _ in range(4):  # four connections offered it, the restarted server turned all down
        sessions.after("h", 443, FakeTls(session_reused=False), stale, NOW, 300)  # type: ignore[arg-type]
    fresh = sessions.to_offer("h", 443, NOW, 300)
    assert fresh is not None and fresh is not stale


def test_a_retried_handshake_leaves_the_failed_offer_out_of_the_services_time(
    ca: trustme.CA, certdir: Path
) -> None:
    # A gateway that took 1 s to refuse the offer: 1 s in no phase, judged as the service's
    # latency (service_slow, degraded).
    server = server_context(leaf(ca, certdir, 90))
    probing = Probing(ca, resume_s=300)
    spec = availability.AvailabilitySpec(timeout_s=5, slo_ms=800)

    async def through_the_gateway() -> list[tuple[float, ProbeResult]]:
        runner, backend = await start(server)
        gateway = await breaking_on_offers(backend, "slow alert")
        try:
            timed = []
            for _ in range(2):
                began = asyncio.get_running_loop().time()
                done = await probing.result(gateway.port, spec=spec)
                timed.append((asyncio.get_running_loop().time() - began, done))
            return timed
        finally:
            await gateway.close()
            await runner.cleanup()

    (_, first), (took, retried) = aio.run(through_the_gateway())
    assert first.success and retried.success
    assert took >= 1.0  # the refusal's second is real, and monitord's own
    assert retried.duration_ms < 800 and retried.facts["total_ms"] < 800
    assert [f.rule for f in evaluate(retried)] == []


def test_a_refused_certificate_is_left_to_the_ssl_module_until_fixed_then_resumed_again(
    ca: trustme.CA, certdir: Path
) -> None:
    probing = Probing(ca, resume_s=300)
    stranger = trustme.CA().issue_cert("localhost")
    untrusted = write_cert(
        certdir,
        "resume-untrusted",
        stranger.private_key_pem.bytes(),
        [p.bytes() for p in stranger.cert_chain_pems],
    )

    async def broken_then_fixed() -> list[dict[str, Any] | None]:
        good = server_context(leaf(ca, certdir, 90))
        seen: list[dict[str, Any] | None] = []
        port = 0
        for context in (good, good, server_context(untrusted), good, good, good):
            runner, port = await start(context, port)
            try:
                done = await probing.result(port)
                seen.append(done.facts if done.success else None)
            finally:
                await runner.cleanup()
        return seen

    seen = aio.run(broken_then_fixed())
    assert seen[2] is None  # the untrusted certificate fails the probe
    # The probe after a refused certificate is the ssl module's alone (no second failing
    # handshake); once one succeeds, resuming resumes. The good server keeps its ticket keys
    # across restarts (as nginx with a key file does): the session kept before the failure
    # resumes at the next probe, not in a day.
    assert [f and f["tls_resumed"] for f in seen] == [False, True, None, False, True, True]


def _verdict(result: ProbeResult) -> tuple[bool, str | None, Any, Any]:
    """What a user reads of a probe that may have failed on the certificate."""
    facts = result.facts
    return result.success, result.error, facts.get("chain_trusted"), facts.get("cert_problem")


def _problem_cert(ca: trustme.CA, certdir: Path, problem: str) -> ServerCert:
    """A certificate that the ssl module refuses: "expired", "wrong host" or "untrusted"."""
    if problem == "untrusted":
        ca = trustme.CA()
    host = "example.org" if problem == "wrong host" else "localhost"
    days = -1 if problem == "expired" else 90
    cert = ca.issue_cert(
        host,
        not_before=NOW - dt.timedelta(days=10),
        not_after=NOW + dt.timedelta(days=days),
    )
    pems = [p.bytes() for p in cert.cert_chain_pems]
    return write_cert(certdir, f"problem-{problem}", cert.private_key_pem.bytes(), pems)


@pytest.mark.parametrize("problem", ["expired", "wrong host", "untrusted"])
def test_a_refused_certificate_reads_the_same_with_resumption_on(
    problem: str, ca: trustme.CA, certdir: Path
) -> None:
    # The resuming connections are pyOpenSSL's: they must refuse what the ssl module refuses,
    # and the probe must say it in the same words.
    server = server_context(_problem_cert(ca, certdir, problem))
    on, off = Probing(ca, resume_s=300), Probing(ca, resume_s=0)

    async def both(port: int) -> list[ProbeResult]:
        return [await on.result(port), await on.result(port), await off.result(port)]

    first, again, reference = aio.run(serving(server, both))  # type: ignore[arg-type]
    assert not reference.success
    assert _verdict(first) == _verdict(again) == _verdict(reference)


def test_an_ip_address_is_checked_against_the_certificate_and_resumed(
    ca: trustme.CA, certdir: Path
) -> None:
    cert = ca.issue_cert("127.0.0.1", not_after=NOW + dt.timedelta(days=90))
    pems = [p.bytes() for p in cert.cert_chain_pems]
    by_address = server_context(write_cert(certdir, "ip", cert.private_key_pem.bytes(), pems))
    by_name = server_context(leaf(ca, certdir, 90))  # names localhost only
    on, off = Probing(ca, resume_s=300), Probing(ca, resume_s=0)

    async def probe_ip(port: int) -> list[ProbeResult]:
        return [await on.result(port, "/a", SPEC, "127.0.0.1") for _ in range(2)]

    async def wrong(port: int) -> list[ProbeResult]:
        return [
            await on.result(port, "/a", SPEC, "127.0.0.1"),
            await off.result(port, "/a", SPEC, "127.0.0.1"),
        ]

    first, second = aio.run(serving(by_address, probe_ip))  # type: ignore[arg-type]
    assert first.success and second.success
    assert (first.facts["tls_resumed"], second.facts["tls_resumed"]) == (False, True)
    refused, reference = aio.run(serving(by_name, wrong))  # type: ignore[arg-type]
    assert not reference.success
    assert _verdict(refused) == _verdict(reference)


def test_a_server_the_resuming_client_cannot_agree_with_is_probed_by_the_ssl_module(
    ca: trustme.CA, certdir: Path
) -> None:
    # A server whose only key exchange group the resuming client does not offer (P-521):
    # the ssl module's handshake follows at once, and the host gets only those for a day.
    server = server_context(leaf(ca, certdir, 90))
    server.set_ecdh_curve("secp521r1")
    probing = Probing(ca, resume_s=300)

    async def probes_of(port: int) -> list[dict[str, Any]]:
        facts = [await probing.probe(port) for _ in range(3)]
        sessions = resumption.resuming_client(probing.client).sessions
        assert sessions.resting("localhost", port, NOW)
        assert not sessions.resting("localhost", port, NOW + resumption.FAILED_OFFER_REST)
        return facts

    facts = aio.run(serving(server, probes_of))
    assert [f["tls_resumed"] for f in facts] == [False] * 3
    assert all(f["days_to_expiry"] == 90 for f in facts)


def test_a_trust_context_that_checks_no_host_names_is_followed(
    ca: trustme.CA, certdir: Path
) -> None:
    # The resuming client checks what the probe's context checks, no more: a context made
    # without host name checks accepts another host's certificate, and resumes it.
    server = server_context(_problem_cert(ca, certdir, "wrong host"))
    probing = Probing(ca, resume_s=300)
    probing.client.check_hostname = False

    async def probes_of(port: int) -> list[dict[str, Any]]:
        return [await probing.probe(port) for _ in range(2)]

    first, second = aio.run(serving(server, probes_of))
    assert (first["tls_resumed"], second["tls_resumed"]) == (False, True)


def test_after_a_refused_certificate_a_probe_makes_its_failing_handshake_once(
    ca: trustme.CA, certdir: Path
) -> None:
    # Each probe of a broken service made its failing handshake twice (the resuming client's,
    # then the ssl module's) within its one timeout: on a slow link it timed out instead of
    # saying what was wrong with the certificate.
    server = server_context(_problem_cert(ca, certdir, "expired"))
    hellos: list[str | None] = []
    server.sni_callback = lambda _sock, name, _ctx: hellos.append(name)  # type: ignore[assignment,func-returns-value]
    on, off = Probing(ca, resume_s=300), Probing(ca, resume_s=0)

    async def handshakes(port: int) -> list[int]:
        counts = []
        for probing in (on, on, on, off):
            before = len(hellos)
            assert not (await probing.result(port)).success
            counts.append(len(hellos) - before)
        return counts

    first, second, third, reference = aio.run(serving(server, handshakes))  # type: ignore[arg-type]
    assert first == reference + 1  # the resuming client's, refused, then the ssl module's
    assert second == third == reference


async def _read_request(reader: asyncio.StreamReader) -> None:
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass


@pytest.mark.parametrize("run", RUNNERS)
def test_a_body_that_runs_to_the_servers_close_notify_is_read_whole(
    run: Runner[list[ProbeResult]], ca: trustme.CA, certdir: Path
) -> None:
    # A server that sends no length, then close_notify, and waits for the client's before it
    # closes TCP: the resuming client decrypted the close with the body's last bytes and uvloop
    # never read it, so every probe timed out.
    context = server_context(leaf(ca, certdir, 90))
    spec = availability.AvailabilitySpec(timeout_s=5, keyword="NEEDLE")

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"a" * 5000 + b"NEEDLE"
        )
        writer.close()
        await writer.wait_closed()

    async def probes_of() -> list[ProbeResult]:
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        try:
            on, off = Probing(ca, resume_s=300), Probing(ca, resume_s=0)
            return [
                await on.result(port, spec=spec),
                await on.result(port, spec=spec),
                await off.result(port, spec=spec),
            ]
        finally:
            server.close()

    results = run(probes_of())
    assert [(r.success, r.error, r.facts.get("keyword_found")) for r in results] == [
        (True, None, True)
    ] * 3
    assert results[1].facts["tls_resumed"] is True


def _serve_body_then_broken_record(context: ssl.SSLContext) -> tuple[int, Callable[[], None]]:
    """A blocking TLS server that answers with a body and, in the same TCP segment, a record
    that fails its integrity check; it keeps the connection open a while. (port, stop)"""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def one(conn: socket.socket) -> None:
        with conn, context.wrap_socket(conn, server_side=True) as tls:
            while b"\r\n\r\n" not in tls.recv(4096):
                pass
            raw = socket.socket(fileno=os.dup(tls.fileno()))
            with raw:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"a" * 500)
                raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
                stop.wait(5)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()

    def close() -> None:
        stop.set()
        listener.close()

    return listener.getsockname()[1], close


@pytest.mark.parametrize("run", RUNNERS)
def test_a_broken_record_after_the_body_reads_as_the_ssl_module_says_it(
    run: Runner[list[ProbeResult]], ca: trustme.CA, certdir: Path
) -> None:
    # The resuming client said "('[]',)" on asyncio and timed out on uvloop: the real error
    # was replaced by an empty one, or never read.
    port, close = _serve_body_then_broken_record(server_context(leaf(ca, certdir, 90)))
    spec = availability.AvailabilitySpec(timeout_s=3)

    async def probes_of() -> list[ProbeResult]:
        on, off = Probing(ca, resume_s=300), Probing(ca, resume_s=0)
        return [await on.result(port, spec=spec), await off.result(port, spec=spec)]

    try:
        on, off = run(probes_of())
    finally:
        close()
    assert not on.success and not off.success
    # The same words, but for the ssl module's source line, "(_ssl.c:2580)".
    assert on.error is not None and off.error is not None
    assert off.error.startswith(on.error)
    assert "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]" in on.error


# Answers by path, each a shape of HTTP/1.1 the resuming connection reads itself (its own
# readline, readexactly and read), as asyncio's streams do for the ssl module's connections.
_BODY = b"<html>" + b"x" * 40_000 + b"NEEDLE</html>"
_SHAPES: dict[str, bytes] = {
    "/length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(_BODY) + _BODY,
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (_BODY[:9000], _BODY[9000:]))
    + b"0\r\n\r\n",
    "/to-close": b"HTTP/1.1 200 OK\r\n\r\n" + _BODY,
    "/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 6\n\nNEEDLE",
    "/interim": b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nNEEDLE",
    "/cut-length": b"HTTP/1.1 200 OK\r\nContent-Length: 90000\r\n\r\n" + _BODY[:500],
    "/cut-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9000\r\n" + _BODY[:500],
    "/cut-head": b"HTTP/1.1 200 OK\r\nContent-Le",
    "/long-status": b"HTTP/1.1 200 " + b"O" * 70_000 + b"\r\n\r\n",
    "/endless-status": b"HTTP/1.1 200 " + b"O" * 70_000,
    "/long-field": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\nNEEDLE",
    "/many-fields": b"HTTP/1.1 200 OK\r\n" + b"X-Field: 12345678901234567890\r\n" * 3000 + b"\r\n",
    "/not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "/nothing": b"",
}


async def _answer_shape(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        request = await reader.readline()
        await _read_request(reader)
        writer.write(_SHAPES[request.split(b" ")[1].decode()])
        await writer.drain()
    except ConnectionError:
        pass  # the probe stopped reading: a line past its limit
    finally:
        writer.close()


def _reading(result: ProbeResult) -> tuple[Any, ...]:
    """What a user reads of a probe's answer."""
    facts = result.facts
    return (
        result.success,
        result.error,
        facts.get("status"),
        facts.get("body_bytes"),
        facts.get("keyword_found"),
    )


@pytest.mark.parametrize("run", RUNNERS)
def test_every_shape_of_answer_reads_the_same_through_a_resumed_session(
    run: Runner[list[tuple[ProbeResult, ProbeResult, ProbeResult]]],
    ca: trustme.CA,
    certdir: Path,
) -> None:
    context = server_context(leaf(ca, certdir, 90))
    spec = availability.AvailabilitySpec(timeout_s=5, keyword="NEEDLE")

    async def probes_of() -> list[tuple[ProbeResult, ProbeResult, ProbeResult]]:
        server = await asyncio.start_server(_answer_shape, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        on, off = Probing(ca, resume_s=300), Probing(ca, resume_s=0)
        await on.result(port, "/length", spec)  # the session the others resume
        try:
            return [
                (
                    await on.result(port, path, spec),
                    await off.result(port, path, spec),
                    await on.result(port, path, spec),
                )
                for path in _SHAPES
            ]
        finally:
            server.close()
            await server.wait_closed()

    for path, (resumed, reference, again) in zip(_SHAPES, run(probes_of()), strict=True):
        if resumed.success:  # a failed probe reports no handshake facts
            assert resumed.facts["tls_resumed"] is True, path
        assert _reading(resumed) == _reading(reference) == _reading(again), path
    whole = dict(zip(_SHAPES, (_reading(r) for r, _, _ in run(probes_of())), strict=True))
    assert whole["/chunked"] == (True, None, 200, len(_BODY), True)
    assert whole["/to-close"] == (True, None, 200, len(_BODY), True)
    assert whole["/long-status"][1] == whole["/endless-status"][1]
    assert whole["/long-status"][1] == "bad response: status line too long"
    assert whole["/long-field"][1] == whole["/many-fields"][1] == "bad response: headers too large"
    assert not whole["/cut-length"][0] and not whole["/nothing"][0]


@pytest.mark.parametrize("run", RUNNERS)
@pytest.mark.parametrize("resume_s", [300, 0], ids=["resuming", "ssl module"])
def test_a_host_whose_first_address_refuses_is_reached_at_the_next(
    run: Runner[list[http.Fetched]], resume_s: float, ca: trustme.CA, certdir: Path
) -> None:
    # The server listens on 127.0.0.1 only: 127.0.0.2 refuses. Every refused socket is closed
    # and no longer watched, so the next connections, which reuse its descriptor, work.
    context = server_context(leaf(ca, certdir, 90))
    probing = Probing(ca, resume_s=resume_s)
    spec = availability.AvailabilitySpec(timeout_s=5)

    async def hops(port: int) -> list[http.Fetched]:
        async with probes.make_session() as session:
            ctx = ProbeContext(session=session, ssl_context=probing.client, tls_resume_s=resume_s)
            url = URL(f"https://localhost:{port}/a")
            fetched = []
            for _ in range(6):
                hop = await http._open_hop(
                    ctx, spec, "localhost", port, ["127.0.0.2", "127.0.0.1"], probing.client
                )
                hop.writer.close()
                fetched.append(await http.fetch_stream(ctx, spec, url))
            return fetched

    async def serve_then(port: int) -> list[http.Fetched]:
        runner, port = await start(context)
        try:
            return await hops(port)
        finally:
            await runner.cleanup()

    fetched = run(serve_then(0))
    assert [f.status for f in fetched] == [200] * 6
    assert [f.capture.resumed for f in fetched][1:] == [resume_s > 0] * 5
