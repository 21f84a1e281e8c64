"""The ZAP scan driver against the fake ZAP, through the real zaproxy client on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest
from zaphelpers import SERVICE, ListLogger, Recorder, SleepClock
from zapv2 import ZAPv2

from monitord.config import ZapSettings
from monitord.demo.fakezap import FakeZapServer, RawAnswer, Scenario, alert_storm, clean_site
from monitord.errors import (
    ZapAnswerTooLarge,
    ZapApiError,
    ZapAuthRejected,
    ZapBadAnswer,
    ZapBusy,
    ZapDeadline,
    ZapError,
    ZapScanForgotten,
    ZapScanStuck,
    ZapTargetRefused,
    ZapTimeout,
    ZapUnavailable,
    ZapUrlNotFound,
)
from monitord.scans.client import default_client
from monitord.scans.state import STEPS, ScanState, Step, ZapDriverSettings, state_json
from monitord.scans.zap import ZapScanner

Start = Callable[[Scenario], FakeZapServer]
Make = Callable[..., ZapScanner]
WebService = Callable[[dict[str, tuple[int, str]]], Awaitable[str]]


def _plain_client(settings: ZapDriverSettings) -> ZAPv2:
    """zaproxy exactly as shipped: errors come back as their code string, as if a value."""
    url = settings.zap.url
    return ZAPv2(proxies={"http": url, "https": url}, apikey=settings.api_key)


async def test_clean_service(fake_zap: Start, make_scanner: Make) -> None:
    server = fake_zap(clean_site(SERVICE))
    progress = Recorder()
    outcome = await make_scanner(server).scan(
        SERVICE, scan_key="42", service_id="svc-1", on_progress=progress
    )

    assert outcome.state.status == "finished"
    assert outcome.findings == ()
    assert outcome.alerts_read == outcome.alerts_expected == 0
    assert outcome.reason is None
    state = outcome.state
    assert state.step is Step.DONE and state.percent == 100
    assert Step.ACTIVE in state.steps_done and Step.ALERTS in state.steps_done
    assert state.session_name == "monitord-42"
    assert (state.spider_scan_id, state.active_scan_id, state.context_id) == ("0", "0", "1")

    # Every reported state survives the store's JSON round trip unchanged.
    for seen in progress.states:
        assert ScanState.from_dict(json.loads(state_json(seen))) == seen
    assert [s.step for s in progress.states].index(Step.SPIDER) < [
        s.step for s in progress.states
    ].index(Step.ACTIVE)

    # What ZAP was asked: a fresh session, a context scoped to the service, a spider bounded
    # and kept in the context, the URL fetched (no redirect followed) before the active scan,
    # the scan in context.
    assert server.calls("core/action/newSession") == [{"name": "monitord-42", "overwrite": "True"}]
    (include,) = server.calls("context/action/includeInContext")
    assert include["contextName"] == "monitord-42"
    assert server.calls("spider/action/setOptionMaxDepth") == [{"Integer": "5"}]
    (spider,) = server.calls("spider/action/scan")
    assert spider == {"url": SERVICE, "contextName": "monitord-42", "subtreeOnly": "true"}
    (ascan,) = server.calls("ascan/action/scan")
    assert ascan == {"url": SERVICE, "recurse": "true", "contextId": "1"}
    assert server.calls("core/action/accessUrl") == [{"url": SERVICE, "followRedirects": "false"}]
    order = [e for e, _ in server.zap.calls]
    assert order.index("core/action/accessUrl") < order.index("ascan/action/scan")
    assert order.index("pscan/view/recordsToScan") < order.index("ascan/action/scan")
    assert server.calls("core/view/alerts")[0]["start"] == "1"


async def test_scope_regex_keeps_siblings_out(fake_zap: Start, make_scanner: Make) -> None:
    import re

    server = fake_zap(clean_site(SERVICE))
    await make_scanner(server).scan(SERVICE, scan_key="1")
    regex = server.calls("context/action/includeInContext")[0]["regex"]
    assert re.fullmatch(regex, SERVICE + "login?x=1")
    assert not re.fullmatch(regex, SERVICE.removesuffix("/") + "-old/")
    assert not re.fullmatch(regex, "http://evil.test/?u=" + SERVICE)


async def test_high_and_medium_alerts_over_many_pages(fake_zap: Start, make_scanner: Make) -> None:
    scenario = alert_storm(SERVICE, total=1200)
    server = fake_zap(scenario)
    outcome = await make_scanner(server, page_size=100).scan(
        SERVICE, scan_key="7", service_id="svc-7"
    )
    assert outcome.state.status == "finished"

    # What ZAP holds for this service, worked out from the scenario independently of the
    # driver: no False Positive, only URLs under the service.
    visible = [
        a for a in scenario.alerts if a.confidence != "False Positive" and a.url.startswith(SERVICE)
    ]
    assert len(visible) == 1176  # 1,200 minus 24 marked False Positive
    assert outcome.alerts_expected == len(visible)
    assert outcome.alerts_read == len(visible)  # none read twice, none missed

    # Pages asked for from 1, then 101, 201... — never 0, 100, 200.
    starts = [int(p["start"]) for p in server.calls("core/view/alerts")]
    assert starts == list(range(1, len(visible) + 2, 100))[: len(starts)]
    assert len(starts) == 12
    assert all(p["count"] == "100" for p in server.calls("core/view/alerts"))

    expected_groups: dict[tuple[str, str, str], int] = {}
    for a in visible:
        key = (a.alert_ref, urlsplit(a.url).path, a.param)
        expected_groups[key] = expected_groups.get(key, 0) + 1
    got = {
        (f.evidence["alert_ref"], f.evidence["path"], f.evidence["param"]): f.evidence["instances"]
        for f in outcome.findings
    }
    assert got == expected_groups
    assert sum(got.values()) == len(visible)

    by_rule = {f.rule for f in outcome.findings}
    assert by_rule == {"zap:40018", "zap:40012", "zap:10020", "zap:10038", "zap:10021", "zap:10027"}
    sqli = next(f for f in outcome.findings if f.rule == "zap:40018")
    assert sqli.severity == "high" and sqli.clause == "8.3 b" and sqli.service_id == "svc-7"
    assert sqli.subject_kind == "web_path" and sqli.subject.startswith("40018 /app/page")
    assert sqli.evidence["cwe"] == 89 and sqli.evidence["wasc"] == 19
    assert sqli.evidence["risk"] == "High" and sqli.evidence["solution"]
    assert len(sqli.evidence["sample_urls"]) <= 5
    severities = {f.rule: f.severity for f in outcome.findings}
    assert severities["zap:10020"] == "medium"
    assert severities["zap:10021"] == "low"
    assert severities["zap:10027"] == "info"
    assert all(f.evidence["confidence"] != "False Positive" for f in outcome.findings)
    assert not any("other.test" in u for f in outcome.findings for u in f.evidence["sample_urls"])


async def test_scan_that_never_finishes_is_stopped_at_its_deadline(
    fake_zap: Start, make_scanner: Make, sleep_clock: SleepClock
) -> None:
    scenario = alert_storm(SERVICE, total=120)
    scenario.ascan_stuck_at = 57
    server = fake_zap(scenario)
    progress = Recorder()
    outcome = await make_scanner(server, scan_deadline_minutes=10).scan(
        SERVICE, scan_key="9", on_progress=progress
    )

    assert outcome.timed_out and outcome.state.status == "timed_out"
    assert isinstance(outcome.reason, ZapDeadline) and outcome.reason.retryable
    assert "deadline" in (outcome.state.message or "")
    assert server.calls("ascan/action/stop") == [{"scanId": "0"}]
    assert server.zap.ascans[0].stopped
    # What was found so far is kept: the passive alerts and the active ones raised up to 57%.
    rules = {f.rule for f in outcome.findings}
    assert {"zap:10020", "zap:10038"} <= rules
    assert {"zap:40018", "zap:40012"} & rules
    assert outcome.alerts_read < 120
    assert 600 <= sleep_clock.slept <= 700
    assert any(s.percent == 57 for s in progress.states)


async def test_stuck_percentage_is_detected_before_the_deadline(
    fake_zap: Start, make_scanner: Make
) -> None:
    scenario = clean_site(SERVICE)
    scenario.ascan_stuck_at = 57
    server = fake_zap(scenario)
    outcome = await make_scanner(server, stuck_polls=4).scan(SERVICE, scan_key="s")
    assert outcome.state.status == "timed_out"
    assert isinstance(outcome.reason, ZapScanStuck)
    assert "57%" in str(outcome.reason)
    assert server.calls("ascan/action/stop") == [{"scanId": "0"}]


async def test_zap_restart_mid_scan(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.restart_after_ascan_polls = 2
    server = fake_zap(scenario)
    progress = Recorder()
    scanner = make_scanner(server)
    with pytest.raises(ZapScanForgotten) as caught:
        await scanner.scan(SERVICE, scan_key="r", on_progress=progress)
    assert caught.value.retryable
    assert "restarted" in str(caught.value)
    assert progress.last.status == "interrupted"
    assert progress.last.active_scan_id == "0"
    assert server.zap.restarts == 1

    verdict = await scanner.reconcile(progress.last)
    assert verdict.verdict == "interrupted"
    assert "untitled" in verdict.reason


async def test_restart_seen_through_the_plain_client(fake_zap: Start, make_scanner: Make) -> None:
    """With zaproxy as shipped, ZAP's error code comes back as the value: still caught."""
    scenario = clean_site(SERVICE)
    scenario.restart_after_ascan_polls = 1
    server = fake_zap(scenario)
    scanner = make_scanner(server, client_factory=_plain_client)
    with pytest.raises(ZapScanForgotten, match="does_not_exist"):
        await scanner.scan(SERVICE, scan_key="p")


async def test_reconcile_and_resume_after_a_daemon_crash(
    fake_zap: Start, make_scanner: Make
) -> None:
    scenario = alert_storm(SERVICE, total=60)
    server = fake_zap(scenario)

    class Crash(BaseException):
        """The process dies (SIGKILL, power): none of monitord's error handling runs."""

    saved: list[ScanState] = []

    async def crash_once_active(state: ScanState) -> None:
        saved.append(state)
        if state.active_scan_id is not None:
            raise Crash  # the daemon dies; nothing is stopped in ZAP

    with pytest.raises(Crash):
        await make_scanner(server).scan(SERVICE, scan_key="c", on_progress=crash_once_active)
    stored = ScanState.from_dict(json.loads(state_json(saved[-1])))
    assert stored.step is Step.ACTIVE and stored.status == "running"
    assert server.calls("ascan/action/stop") == []

    restarted_daemon = make_scanner(server)
    verdict = await restarted_daemon.reconcile(stored)
    assert verdict.verdict == "resumable", verdict.reason

    outcome = await restarted_daemon.scan(SERVICE, scan_key="c", resume=stored)
    assert outcome.state.status == "finished"
    assert len(server.calls("ascan/action/scan")) == 1  # polled again, not started again
    assert len(server.calls("core/action/newSession")) == 1
    assert outcome.alerts_read == 58  # 60, less the two marked False Positive


async def test_shutdown_stops_the_scan_in_zap(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.ascan_stuck_at = 30
    server = fake_zap(scenario)
    progress = Recorder()
    started = asyncio.Event()

    async def watch(state: ScanState) -> None:
        await progress(state)
        if state.percent == 30:
            started.set()

    task = asyncio.create_task(make_scanner(server).scan(SERVICE, scan_key="x", on_progress=watch))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.calls("ascan/action/stop") == [{"scanId": "0"}]
    assert progress.last.status == "interrupted"


async def test_bad_key(fake_zap: Start, make_scanner: Make, logs: ListLogger) -> None:
    server = fake_zap(clean_site(SERVICE))
    scanner = make_scanner(server, api_key="wrong-key-123")
    progress = Recorder()
    with pytest.raises(ZapAuthRejected) as caught:
        await scanner.scan(SERVICE, scan_key="k", on_progress=progress)
    assert not caught.value.retryable
    assert "API key" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "wrong-key-123" not in str(caught.value)
    assert not any("wrong-key-123" in line for line in logs.lines)
    assert progress.last.status == "failed" and progress.last.retryable is False
    assert server.zap.rejected_keys and server.zap.rejected_keys[0] == "wrong-key-123"
    assert server.zap.calls == []
    assert "wrong-key-123" not in repr(scanner.settings)

    no_key = make_scanner(server, api_key="")
    with pytest.raises(ZapAuthRejected):
        await no_key.version()


async def test_zap_down(make_scanner: Make, closed_port: int) -> None:
    scanner = make_scanner(f"http://127.0.0.1:{closed_port}")
    progress = Recorder()
    with pytest.raises(ZapUnavailable) as caught:
        await scanner.scan(SERVICE, scan_key="d", on_progress=progress)
    assert caught.value.retryable
    assert (
        str(caught.value)
        == f"ZAP is not reachable at http://127.0.0.1:{closed_port} (connection refused)"
    )
    assert progress.last.status == "failed"

    verdict = await scanner.reconcile(progress.last)
    assert verdict.verdict == "unknown"
    assert isinstance(verdict.error, ZapUnavailable)


async def test_call_timeout(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.delay_s = {"core/view/version": 1.0}
    server = fake_zap(scenario)
    with pytest.raises(ZapTimeout, match=r"within 0.2 s"):
        await make_scanner(server, call_timeout_seconds=0.2).version()


async def test_internal_error_is_http_500(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.access_fails = True
    server = fake_zap(scenario)
    with pytest.raises(ZapApiError) as caught:
        await make_scanner(server).scan(SERVICE, scan_key="e")
    assert caught.value.code == "internal_error" and caught.value.http_status == 500
    assert caught.value.retryable
    assert str(caught.value) == "ZAP refused core/action/accessUrl (internal_error: Internal Error)"


async def test_internal_error_through_the_plain_client(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.access_fails = True
    server = fake_zap(scenario)
    with pytest.raises(ZapApiError) as caught:
        await make_scanner(server, client_factory=_plain_client).scan(SERVICE, scan_key="e")
    assert caught.value.code == "internal_error" and caught.value.http_status is None


async def test_unknown_scan_policy(fake_zap: Start, make_scanner: Make) -> None:
    server = fake_zap(clean_site(SERVICE))
    with pytest.raises(ZapApiError, match="no scan policy named 'Gov'") as caught:
        await make_scanner(server, scan_policy="Gov").scan(SERVICE, scan_key="g")
    assert not caught.value.retryable


async def test_named_policy_is_sent(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.policies.add("Gov")
    server = fake_zap(scenario)
    await make_scanner(server, scan_policy="Gov").scan(SERVICE, scan_key="g")
    assert server.calls("ascan/action/scan")[0]["scanPolicyName"] == "Gov"


async def test_url_not_in_tree_is_refused(fake_zap: Start) -> None:
    """ZAP refuses to attack a URL it never saw; the driver's client says ZapUrlNotFound."""
    server = fake_zap(clean_site(SERVICE))
    settings = ZapDriverSettings(
        zap=ZapSettings(url=server.url), api_key=server.zap.scenario.api_key
    )
    plain = _plain_client(settings)
    assert await asyncio.to_thread(plain.ascan.scan, SERVICE) == "url_not_found"

    client = default_client(settings)
    with pytest.raises(ZapUrlNotFound, match="sites tree"):
        await asyncio.to_thread(client.ascan.scan, SERVICE)


async def test_ajax_spider(fake_zap: Start, make_scanner: Make) -> None:
    server = fake_zap(clean_site(SERVICE))
    outcome = await make_scanner(server, ajax_spider=True).scan(SERVICE, scan_key="a")
    assert outcome.state.status == "finished"
    assert Step.AJAX_SPIDER in outcome.state.steps_done
    assert server.calls("ajaxSpider/action/scan") == [
        {"url": SERVICE, "contextName": "monitord-a", "subtreeOnly": "true"}
    ]
    assert len(server.calls("ajaxSpider/view/status")) == 3


async def test_only_one_ajax_spider_at_a_time(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.ajax_busy = True
    server = fake_zap(scenario)
    with pytest.raises(ZapBusy) as caught:
        await make_scanner(server, ajax_spider=True).scan(SERVICE, scan_key="b")
    assert caught.value.retryable and caught.value.code == "scan_in_progress"


async def test_bearer_token_is_scoped_and_removed(
    fake_zap: Start, make_scanner: Make, logs: ListLogger
) -> None:
    import re

    server = fake_zap(clean_site(SERVICE))
    progress = Recorder()
    token = "eyJhbGciOi.secret-token.sig"
    await make_scanner(server).scan(SERVICE, scan_key="t", bearer_token=token, on_progress=progress)
    (rule,) = server.calls("replacer/action/addRule")
    assert rule["matchType"] == "REQ_HEADER" and rule["matchString"] == "Authorization"
    assert rule["replacement"] == f"Bearer {token}"
    assert re.fullmatch(rule["url"], SERVICE + "x") and not re.fullmatch(rule["url"], "http://a/")
    assert server.zap.replacer_rules == {}  # removed when the scan ended
    assert not any(token in json.dumps(s.to_dict()) for s in progress.states)
    assert not any(token in line for line in logs.lines)


async def test_token_removed_after_failure(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.access_fails = True
    server = fake_zap(scenario)
    with pytest.raises(ZapApiError):
        await make_scanner(server).scan(SERVICE, scan_key="t", bearer_token="tok")
    assert len(server.calls("replacer/action/addRule")) == 1
    assert server.zap.replacer_rules == {}


async def test_passive_queue_that_never_drains(fake_zap: Start, make_scanner: Make) -> None:
    scenario = clean_site(SERVICE)
    scenario.passive_stuck = True
    server = fake_zap(scenario)
    outcome = await make_scanner(server, passive_deadline_seconds=30).scan(SERVICE, scan_key="q")
    assert outcome.state.status == "finished"
    assert "passive scanner still had" in (outcome.state.message or "")


async def test_new_session_restarts_scan_ids(fake_zap: Start, make_scanner: Make) -> None:
    server = fake_zap(clean_site(SERVICE))
    scanner = make_scanner(server)
    first = await scanner.scan(SERVICE, scan_key="1")
    second = await scanner.scan(SERVICE, scan_key="2")
    assert first.state.active_scan_id == second.state.active_scan_id == "0"
    # The first scan's id now names nothing ZAP remembers under that session.
    verdict = await scanner.reconcile(dataclasses_replace(first.state, step=Step.ACTIVE))
    assert verdict.verdict == "interrupted"


def dataclasses_replace(state: ScanState, **changes: object) -> ScanState:
    import dataclasses

    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def test_steps_are_in_order() -> None:
    assert STEPS[0] is Step.SESSION and STEPS[-1] is Step.DONE
    assert STEPS.index(Step.PASSIVE) < STEPS.index(Step.ACCESS) < STEPS.index(Step.ACTIVE)


async def test_failure_while_reading_alerts_after_a_timeout(
    fake_zap: Start, make_scanner: Make
) -> None:
    scenario = clean_site(SERVICE)
    scenario.ascan_stuck_at = 10
    scenario.delay_s = {"core/view/numberOfAlerts": 1.0}
    server = fake_zap(scenario)
    progress = Recorder()
    scanner = make_scanner(server, stuck_polls=2, call_timeout_seconds=0.2)
    with pytest.raises(ZapTimeout):
        await scanner.scan(SERVICE, scan_key="f", on_progress=progress)
    assert server.calls("ascan/action/stop") == [{"scanId": "0"}]
    assert progress.last.status == "failed" and progress.last.retryable is True


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("", "not scanned: the service has no URL to scan"),
        ("file:///etc/passwd", "not scanned: file:///etc/passwd is not an http(s) URL"),
        ("javascript:alert(1)", "not scanned: javascript:alert(1) is not an http(s) URL"),
        ("http:///app/", "not scanned: http:///app/ has no host"),
        ("http://a.gov.cn:99999/", "not scanned: http://a.gov.cn:99999/ is not a valid URL"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "not scanned: http://169.254.169.254/latest/meta-data/: 169.254.169.254 is inside "
            "denied network 169.254.0.0/16 (probes.denied_networks)",
        ),
        ("http://100.100.100.200/", "inside denied network 100.100.100.200/32"),
        ("http://[::ffff:169.254.169.254]/", "inside denied network 169.254.0.0/16"),
        ("http://[64:ff9b::a9fe:a9fe]/", "inside denied network 169.254.0.0/16"),
        ("http://[2002:a9fe:a9fe::1]/", "inside denied network 169.254.0.0/16"),
        # The system resolver reads this name as 169.254.169.254, as ZAP's host may.
        ("http://0xa9fea9fe/", "0xa9fea9fe resolves to 169.254.169.254, inside denied network"),
    ],
)
async def test_a_target_zap_must_not_scan_never_reaches_zap(
    fake_zap: Start, make_scanner: Make, target: str, said: str
) -> None:
    server = fake_zap(clean_site(SERVICE))
    progress = Recorder()
    with pytest.raises(ZapTargetRefused) as refused:
        await make_scanner(server).scan(target, scan_key="m", on_progress=progress)
    assert said in str(refused.value)
    assert not refused.value.retryable
    assert server.zap.calls == []  # ZAP never heard of it
    assert progress.last.status == "failed" and progress.last.retryable is False
    assert progress.last.message == str(refused.value)


async def test_a_name_resolving_into_a_denied_network_is_refused(
    fake_zap: Start, make_scanner: Make
) -> None:
    server = fake_zap(clean_site(SERVICE))
    scanner = make_scanner(server, denied_networks=("127.0.0.0/8",))
    with pytest.raises(ZapTargetRefused) as refused:
        await scanner.scan("http://localhost:9/app/", scan_key="n")
    assert str(refused.value) == (
        "not scanned: http://localhost:9/app/: localhost resolves to 127.0.0.1, "
        "inside denied network 127.0.0.0/8 (probes.denied_networks)"
    )
    assert server.zap.calls == []


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        (
            {"/app/": (302, "http://169.254.169.254/latest/meta-data/")},
            "redirects to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is inside "
            "denied network 169.254.0.0/16 (probes.denied_networks)",
        ),
        (
            # A relative redirect first, then one to the metadata address over NAT64.
            {"/app/": (301, "../login"), "/login": (307, "http://[64:ff9b::a9fe:a9fe]/x")},
            "redirects to http://[64:ff9b::a9fe:a9fe]/x: 64:ff9b::a9fe:a9fe is inside denied "
            "network 169.254.0.0/16 (probes.denied_networks)",
        ),
        (
            # Three hops, one through a name: each is followed and checked.
            {
                "/app/": (302, "/app/login"),
                "/app/login": (303, "http://localhost:{port}/home"),
                "/home": (308, "http://100.100.100.200/"),
            },
            "redirects to http://100.100.100.200/: 100.100.100.200 is inside denied network "
            "100.100.100.200/32 (probes.denied_networks)",
        ),
        (
            {"/app/": (302, "http://0xa9fea9fe/")},
            "redirects to http://0xa9fea9fe/: 0xa9fea9fe resolves to 169.254.169.254, inside "
            "denied network 169.254.0.0/16 (probes.denied_networks)",
        ),
    ],
)
async def test_a_service_redirecting_into_a_denied_network_is_refused(
    fake_zap: Start,
    make_scanner: Make,
    web_service: WebService,
    answers: dict[str, tuple[int, str]],
    said: str,
) -> None:
    base = await web_service(answers)
    server = fake_zap(clean_site(base + "/app/"))
    with pytest.raises(ZapTargetRefused) as refused:
        await make_scanner(server).scan(base + "/app/", scan_key="r")
    assert str(refused.value) == f"not scanned: {base}/app/ {said}"
    assert server.zap.calls == []


async def test_a_service_redirecting_to_itself_is_scanned(
    fake_zap: Start, make_scanner: Make, web_service: WebService, logs: ListLogger
) -> None:
    base = await web_service(
        {"/app/": (302, "/app/login"), "/app/login": (303, "http://localhost:{port}/home")}
    )
    server = fake_zap(clean_site(base + "/app/"))
    outcome = await make_scanner(server).scan(base + "/app/", scan_key="s")
    assert outcome.state.status == "finished" and outcome.state.message is None
    assert not any("redirect" in line for line in logs.lines)


async def test_a_service_whose_name_does_not_resolve_waits(
    fake_zap: Start, make_scanner: Make
) -> None:
    server = fake_zap(clean_site(SERVICE))
    with pytest.raises(ZapError) as caught:
        await make_scanner(server, call_timeout_seconds=2.0).scan(
            "https://nowhere.invalid/app/", scan_key="u"
        )
    assert caught.value.retryable
    assert str(caught.value).startswith(
        "cannot check https://nowhere.invalid/app/ against probes.denied_networks: "
        "nowhere.invalid does not resolve ("
    )
    assert server.zap.calls == []


async def test_an_answer_over_the_size_cap_is_refused_unread_in_bounded_memory(
    fake_zap: Start, make_scanner: Make
) -> None:
    import tracemalloc

    # 64 MiB of valid JSON, streamed without a Content-Length: read whole, it took ~8x that.
    scenario = clean_site(SERVICE)
    padded = RawAnswer(body=b'{"version": "2.15.0"}', padding=64 << 20)
    scenario.raw_answers = {"core/view/version": [padded]}
    server = fake_zap(scenario)
    scanner = make_scanner(server, max_answer_mb=1)
    tracemalloc.start()
    try:
        with pytest.raises(ZapAnswerTooLarge) as caught:
            await scanner.version()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    assert not caught.value.retryable
    assert str(caught.value) == (
        "ZAP's answer to core/view/version is larger than zap.max_answer_mb (1 MiB); "
        "the rest was not read"
    )


async def test_an_answer_declaring_a_size_over_the_cap_is_not_read_at_all(
    fake_zap: Start, make_scanner: Make
) -> None:
    scenario = clean_site(SERVICE)
    scenario.raw_answers = {"core/view/version": [RawAnswer(body=b" " * (2 << 20) + b"{}")]}
    server = fake_zap(scenario)
    with pytest.raises(ZapAnswerTooLarge) as caught:
        await make_scanner(server, max_answer_mb=1).version()
    assert str(caught.value) == (
        "ZAP's answer to core/view/version is larger than zap.max_answer_mb (1 MiB); "
        "it was not read"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"version": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"version": ' + b"[" * 100_000,  # never closed: json recursed all the same
        b'{"version": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001,
    ],
)
async def test_an_answer_nested_too_deeply_is_a_bad_answer(
    fake_zap: Start, make_scanner: Make, body: bytes
) -> None:
    scenario = clean_site(SERVICE)
    scenario.raw_answers = {"core/view/version": [RawAnswer(body=body)]}
    server = fake_zap(scenario)
    with pytest.raises(ZapBadAnswer) as caught:
        await make_scanner(server).version()
    assert str(caught.value) == "ZAP's answer to core/view/version nests more than 32 levels deep"


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        (b'{"a": [1, {"b": [2, 3]}], "c": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', False),
        (b'"\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\\\"', False),
        (b"[" * 32 + b"]" * 32, False),
        (b"[" * 33 + b"]" * 33, True),
        (b"[]" * 10_000, False),
        (b"[" * 33 + b"1" + b"]" * 32, True),
        (b"]" * 40 + b"[" * 3, False),  # unpaired, not deep: json.loads says where
    ],
)
def test_json_nesting(text: bytes, deep: bool) -> None:
    from monitord.scans.client import json_nesting_problem

    assert (json_nesting_problem(text, 32) is not None) == deep


async def test_an_unexpected_error_stops_the_scan_in_zap(
    fake_zap: Start, make_scanner: Make
) -> None:
    server = fake_zap(clean_site(SERVICE))

    async def store_fails(state: ScanState) -> None:
        if state.active_scan_id is not None:
            raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError):
        await make_scanner(server).scan(SERVICE, scan_key="e", on_progress=store_fails)
    assert server.calls("ascan/action/stop") == [{"scanId": "0"}]


async def test_reconcile_tells_a_session_from_one_whose_name_starts_alike(
    fake_zap: Start, make_scanner: Make
) -> None:
    server = fake_zap(clean_site(SERVICE))
    server.zap.handle("core", "action", "newSession", {"name": "monitord-svc-0001-12"})
    scanner = make_scanner(server)
    state = ScanState(
        scan_key="svc-0001-1",
        target_url=SERVICE,
        status="running",
        step=Step.ACTIVE,
        session_name="monitord-svc-0001-1",
        active_scan_id=0,
    )
    verdict = await scanner.reconcile(state)
    assert verdict.verdict == "interrupted"
    assert "not 'monitord-svc-0001-1'" in verdict.reason


async def test_a_cancelled_scan_waits_for_a_silent_zap_only_the_grace(
    fake_zap: Start, make_scanner: Make
) -> None:
    # Ctrl-C during the active scan of a ZAP that no longer answered waited for each stop call's
    # whole timeout before monitord exited.
    scenario = clean_site(SERVICE)
    scenario.ascan_stuck_at = 30
    scenario.delay_s = {"ascan/action/stop": 30.0}
    server = fake_zap(scenario)
    scanner = make_scanner(server, call_timeout_seconds=20.0)
    scanner.shutdown_grace_seconds = 0.2
    started = asyncio.Event()

    async def watch(state: ScanState) -> None:
        if state.percent == 30:
            started.set()

    task = asyncio.create_task(
        scanner.scan(SERVICE, scan_key="x", bearer_token="t0ken", on_progress=watch)
    )
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 5)
