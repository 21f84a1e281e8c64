"""A fake OWASP ZAP that answers the JSON API the way ZAP does, for the endpoints monitord uses.

It is reached the way the `zaproxy` client reaches ZAP: as an HTTP *proxy*, with every call a
GET for the absolute URL `http://zap/JSON/<component>/<view|action>/<name>/?<params>` and the
key in the `X-ZAP-API-Key` header (zapv2/__init__.py, `_request_api`).

It does not crawl or attack anything: the sites tree, the alerts and the pace of every scan come
from a `Scenario`. What it reproduces is ZAP's *answers*. Where each behaviour comes from is
noted beside it; the sources are ZAP's own code (zaproxy/zaproxy, zap/src/main/java/org/zaproxy/
zap/extension/...) and the client's (zaproxy 0.6.0, zapv2/*.py):

- API.java `handleApiRequest`: a wrong or missing key on a view or action (with the default
  `noKeyForSafeOps` off) is BAD_API_KEY, which is answered by "Fail silently" — an empty
  HttpMessage, i.e. the connection is closed without any HTTP answer.
- API.java `handleException`: any other ApiException is HTTP 400, INTERNAL_ERROR is 500, with
  the body `ApiException.toJSON`: `{"code": "<type lower-case>", "message": "<Messages.properties
  api.error.*>"}` (no detail unless `incErrorDetails` is on; ZAP's default is off).
- ApiResponseElement/ApiResponseList `toJSON`: `{"<name>": "<string>"}` and `{"<name>": [...]}`;
  every scalar is a string (`{"scan": "0"}`, `{"status": "57"}`), `ApiResponseElement.OK` is
  `{"Result": "OK"}`. AlertAPI's `alertsSummary` is the exception: its counts are integers.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

# Messages.properties, api.error.* — the "message" ZAP puts beside each code.
MESSAGES = {
    "already_exists": "Already Exists",
    "bad_action": "Bad Action",
    "bad_view": "Bad View",
    "bad_type": "Bad Type",
    "context_not_found": "No Context found that matches parameter",
    "does_not_exist": "Does Not Exist",
    "illegal_parameter": "Provided parameter has illegal or unrecognized value",
    "internal_error": "Internal Error",
    "missing_parameter": "Missing Parameter",
    "no_implementor": "No Implementor",
    "scan_in_progress": "Scan In Progress",
    "url_not_found": "URL Not Found in the Scan Tree",
    "url_not_in_context": "The provided url is not in the required context",
}

RISKS = ("Informational", "Low", "Medium", "High")  # Alert.MSG_RISK, by risk id 0..3


class ApiError(Exception):
    """An ApiException inside the fake: its code becomes the JSON answer."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class FakeAlert:
    """One alert instance ZAP would hold, and when it becomes visible."""

    plugin_id: str
    alert_ref: str
    name: str
    risk: str
    confidence: str
    url: str
    param: str = ""
    evidence: str = ""
    cweid: str = "-1"
    wascid: str = "-1"
    source: str = "passive"
    """"passive": visible once the passive queue drains after the spider; "active": raised
    progressively by the active scan (so a scan stopped at 57% has raised about 57% of them)."""
    method: str = "GET"

    def to_api(self, alert_id: int) -> dict[str, Any]:
        """The alert as AlertAPI.alertToSet renders it: every value a string."""
        return {
            "sourceid": "3" if self.source == "passive" else "1",
            "other": "",
            "method": self.method,
            "evidence": self.evidence,
            "pluginId": self.plugin_id,
            "cweid": self.cweid,
            "confidence": self.confidence,
            "wascid": self.wascid,
            "description": f"<p>{self.name} description.</p>",
            "messageId": str(100 + alert_id),
            "inputVector": "queryparam" if self.param else "",
            "url": self.url,
            "tags": {},
            "reference": "https://owasp.org/www-project-top-ten/",
            "solution": f"Fix {self.name}.",
            "alert": self.name,  # "Deprecated in 2.5.0, maintain for compatibility"
            "param": self.param,
            "attack": "",
            "name": self.name,
            "risk": self.risk,
            "id": str(alert_id),
            "alertRef": self.alert_ref,
        }


@dataclass(frozen=True)
class RawAnswer:
    """An answer real ZAP would not give, sent in place of its own to test monitord against it.

    `hang_up` closes the connection without any answer (ZAP crashing or restarting mid-call);
    otherwise `status`, `body` and `content_type` are sent as they are, then `padding` spaces
    (valid JSON whitespace) streamed without a Content-Length, the end of the answer told by
    closing the connection: an answer of hundreds of MiB that the fake never holds.
    """

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    hang_up: bool = False
    padding: int = 0


@dataclass
class Scenario:
    """How this fake ZAP behaves for one test."""

    api_key: str = "fake-zap-key"
    site_urls: list[str] = field(default_factory=list)
    """URLs the spider "finds" (added to the sites tree when the spider completes)."""
    alerts: list[FakeAlert] = field(default_factory=list)
    spider_polls: int = 2
    """Status polls until the spider reports 100."""
    passive_backlog: int = 2
    passive_stuck: bool = False
    ascan_step: int = 25
    """Percent the active scan advances per status poll."""
    ascan_stuck_at: int | None = None
    """The active scan never gets past this percentage (ZAP stuck on a slow rule)."""
    restart_after_ascan_polls: int | None = None
    """ZAP restarts (forgetting every scan and the session) before answering this poll."""
    restart_on: str | None = None
    """ZAP restarts just before answering the first call to this endpoint."""
    ajax_polls: int = 2
    ajax_busy: bool = False
    """An AJAX spider started by someone else is already running."""
    access_fails: bool = False
    """accessUrl fails to reach the target: ZAP answers internal_error (HTTP 500)."""
    policies: set[str] = field(default_factory=lambda: {"Default Policy"})
    delay_s: dict[str, float] = field(default_factory=dict)
    """Seconds to wait before answering an endpoint ("ascan/view/status"), to test timeouts."""
    raw_answers: dict[str, list[RawAnswer]] = field(default_factory=dict)
    """Misbehaviour on request: the next calls to an endpoint get these answers, one per call,
    instead of ZAP's (the call is not carried out); once used up, ZAP's answers resume."""


@dataclass
class _Scan:
    progress: int = 0
    stopped: bool = False
    polls: int = 0


class FakeZap:
    """The state of one fake ZAP process, and its API handlers."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict[str, str]]] = []
        """Every answered call: ("ascan/view/status", {"scanId": "0"})."""
        self.rejected_keys: list[str | None] = []
        self.replacer_rules: dict[str, dict[str, str]] = {}
        self.session_files: set[str] = set()
        self.ascan_polls_total = 0
        self.restarts = 0
        self._untitled = 0
        self._fresh_session(None)

    # ---- session state ------------------------------------------------------------------

    def _fresh_session(self, name: str | None) -> None:
        # Everything below belongs to the session: Control.newSession discards the site tree,
        # contexts, alerts and the scan controllers, so spider and ascan ids restart at 0.
        if name is None:
            self._untitled += 1
            self.session_location = f"/zap/.ZAP/session/untitled{self._untitled}.session"
        else:
            # CoreAPI getSessionPath → SessionUtils.getSessionPath: relative names resolve
            # under ZAP home's "session" directory, ".session" appended.
            self.session_location = f"/zap/.ZAP/session/{name}.session"
        self.tree: set[str] = set()
        self.contexts: dict[str, dict[str, Any]] = {}
        self.next_context_id = 1
        self.spiders: dict[int, _Scan] = {}
        self.ascans: dict[int, _Scan] = {}
        self.backlog = 0
        self.passive_ready = False
        self.ajax_left = -1 if self.scenario.ajax_busy else 0

    def restart(self) -> None:
        """ZAP was restarted: a new untitled session, every scan id forgotten."""
        self.restarts += 1
        self._fresh_session(None)

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _need(params: dict[str, str], name: str) -> str:
        # API.java validateMandatoryParams: absent or empty → missing_parameter.
        value = params.get(name, "")
        if not value:
            raise ApiError("missing_parameter")
        return value

    @staticmethod
    def _int(params: dict[str, str], name: str, default: int) -> int:
        # ApiImplementor.getParam(int): a value that is not an integer → illegal_parameter.
        value = params.get(name, "")
        if value == "":
            return default
        if not re.fullmatch(r"-?\d+", value):
            raise ApiError("illegal_parameter")
        return int(value)

    @staticmethod
    def _bool(params: dict[str, str], name: str, default: bool) -> bool:
        # ApiImplementor.getParam(boolean): JSONObject.getBoolean takes "true"/"false" in any
        # case; anything else (or nothing) is the default, not an error.
        value = params.get(name, "").lower()
        return {"true": True, "false": False}.get(value, default)

    def _context_by_name(self, name: str) -> dict[str, Any]:
        # ApiUtils.getContextByName → context_not_found.
        if name not in self.contexts:
            raise ApiError("context_not_found")
        return self.contexts[name]

    def _context_by_id(self, cid: str) -> dict[str, Any]:
        for ctx in self.contexts.values():
            if str(ctx["id"]) == cid:
                return ctx
        raise ApiError("context_not_found")

    @staticmethod
    def _in_context(ctx: dict[str, Any], url: str) -> bool:
        # Context.isInContext: the URL must match (Java `matches`, i.e. the whole URL) an
        # include regex. Python's re stands in for java.util.regex here.
        return any(re.fullmatch(rx, url) for rx in ctx["include"])

    def _node_exists(self, url: str) -> bool:
        # SessionStructure.find: the exact node, or a non-leaf node (a URL that has children
        # in the tree) for the same path.
        stripped = url.rstrip("/")
        return any(
            u in (url, stripped, stripped + "/") or u.startswith(stripped + "/") for u in self.tree
        )

    def _visible_alerts(self) -> list[tuple[int, FakeAlert]]:
        alerts = list(enumerate(self.scenario.alerts, start=1))
        passive = [(i, a) for i, a in alerts if a.source == "passive" and self.passive_ready]
        active = [(i, a) for i, a in alerts if a.source == "active"]
        progress = max((s.progress for s in self.ascans.values()), default=0)
        raised = active[: len(active) * progress // 100]
        return sorted(passive + raised)

    def _filtered(self, params: dict[str, str], include_fp: bool) -> list[tuple[int, FakeAlert]]:
        # AlertAPI.processAlerts: skips confidence False Positive, keeps alerts whose URL
        # *starts with* baseurl (a prefix, not a path match), and filters by riskId.
        base = params.get("baseurl") or None
        risk = self._int(params, "riskId", -1)
        if risk not in (-1, 0, 1, 2, 3):
            raise ApiError("illegal_parameter")
        out = []
        for alert_id, alert in self._visible_alerts():
            if alert.confidence == "False Positive" and not include_fp:
                continue
            if base is not None and not alert.url.startswith(base):
                continue
            if risk != -1 and RISKS.index(alert.risk) != risk:
                continue
            out.append((alert_id, alert))
        return out

    @staticmethod
    def _page(items: list[Any], start: int, count: int) -> list[Any]:
        # AlertAPI.PaginationConstraintsChecker, ported as is: records are counted from 1; a
        # start of 0 (or less) begins at the first record, and so does a start of 1; the
        # page ends at record start+count-1 (or at `count` when start <= 0). So start=0 and
        # start=1 return the same page, and paging 0, N, 2N repeats record N.
        page_started = start <= 0
        start_record = start if start > 0 else 0
        has_end = count > 0
        final = (start + count - 1 if not page_started else count) if has_end else 0
        out: list[Any] = []
        processed = 0
        page_ended = False
        for item in items:
            processed += 1
            if not page_started:
                page_started = processed >= start_record
            if has_end and not page_ended:
                page_ended = processed >= final
            if not page_started:
                continue
            out.append(item)
            if page_ended:
                break
        return out

    # ---- handlers -----------------------------------------------------------------------

    def handle(self, component: str, kind: str, name: str, params: dict[str, str]) -> Any:
        """Answer one API call with its JSON value, or raise ApiError."""
        if self.scenario.restart_on == f"{component}/{kind}/{name}":
            self.scenario.restart_on = None
            self.restart()
        handler: Callable[[dict[str, str]], Any] | None = getattr(
            self, f"{component}__{kind}__{name}", None
        )
        if handler is None:
            # API.java: unknown component → no_implementor; ApiImplementor: unknown view →
            # bad_view, unknown action → bad_action.
            known = any(n.startswith(f"{component}__") for n in dir(self))
            if not known:
                raise ApiError("no_implementor")
            raise ApiError("bad_view" if kind == "view" else "bad_action")
        return handler(params)

    OK: ClassVar[dict[str, str]] = {"Result": "OK"}  # ApiResponseElement.OK

    # core — CoreAPI.java
    def core__view__version(self, p: dict[str, str]) -> Any:
        return {"version": "2.15.0"}

    def core__view__sessionLocation(self, p: dict[str, str]) -> Any:
        return {"sessionLocation": self.session_location}

    def core__action__newSession(self, p: dict[str, str]) -> Any:
        # CoreAPI ACTION_NEW_SESSION: a named session whose file exists needs overwrite=true,
        # else already_exists.
        name = p.get("name", "")
        if name:
            path = f"/zap/.ZAP/session/{name}.session"
            if path in self.session_files and p.get("overwrite", "").lower() != "true":
                raise ApiError("already_exists")
            self.session_files.add(path)
        self._fresh_session(name or None)
        return self.OK

    def core__action__accessUrl(self, p: dict[str, str]) -> Any:
        # CoreAPI ACTION_ACCESS_URL: sends a GET and returns the messages as an
        # ApiResponseList named "accessUrl"; a send failure is internal_error (HTTP 500).
        # followRedirects (default false) is read; the fake fetches nothing, so follows nothing.
        url = self._need(p, "url")
        self._bool(p, "followRedirects", False)
        if urlsplit(url).scheme not in ("http", "https"):
            raise ApiError("illegal_parameter")
        if self.scenario.access_fails:
            raise ApiError("internal_error")
        self.tree.add(url)
        self.backlog += 1
        return {
            "accessUrl": [
                {
                    "id": "1",
                    "type": "1",
                    "requestHeader": f"GET {url} HTTP/1.1\r\n",
                    "responseHeader": "HTTP/1.1 200 OK\r\n",
                    "rtt": "3",
                }
            ]
        }

    def core__view__numberOfAlerts(self, p: dict[str, str]) -> Any:
        return {"numberOfAlerts": str(len(self._filtered(p, include_fp=False)))}

    def core__view__alerts(self, p: dict[str, str]) -> Any:
        # CoreAPI VIEW_ALERTS (deprecated) delegates to AlertAPI: False Positives hidden.
        items = self._filtered(p, include_fp=False)
        page = self._page(items, self._int(p, "start", -1), self._int(p, "count", -1))
        return {"alerts": [a.to_api(i) for i, a in page]}

    def core__view__alertsSummary(self, p: dict[str, str]) -> Any:
        # AlertAPI VIEW_ALERTS_SUMMARY: the one view whose values are integers.
        counts = dict.fromkeys(RISKS, 0)
        for _, alert in self._filtered(p, include_fp=False):
            counts[alert.risk] += 1
        return {"alertsSummary": counts}

    # alert — AlertAPI.java; `falsePositive` is the parameter zapv2 0.6 alert.alerts() sends.
    def alert__view__alerts(self, p: dict[str, str]) -> Any:
        include_fp = p.get("falsePositive", "").lower() == "true"
        items = self._filtered(p, include_fp=include_fp)
        page = self._page(items, self._int(p, "start", -1), self._int(p, "count", -1))
        return {"alerts": [a.to_api(i) for i, a in page]}

    # context — ContextAPI.java
    def context__action__newContext(self, p: dict[str, str]) -> Any:
        name = self._need(p, "contextName")
        if name in self.contexts:
            raise ApiError("already_exists")
        cid = self.next_context_id
        self.next_context_id += 1
        self.contexts[name] = {"id": cid, "include": []}
        return {"contextId": str(cid)}

    def context__action__includeInContext(self, p: dict[str, str]) -> Any:
        ctx = self._context_by_name(self._need(p, "contextName"))
        regex = self._need(p, "regex")
        try:
            re.compile(regex)
        except re.error:
            raise ApiError("illegal_parameter") from None
        ctx["include"].append(regex)
        return self.OK

    # replacer — the Replacer add-on's ReplacerAPI (zapv2/replacer.py add_rule parameters)
    def replacer__action__addRule(self, p: dict[str, str]) -> Any:
        desc = self._need(p, "description")
        for required in ("enabled", "matchType", "matchRegex", "matchString"):
            self._need(p, required)
        if p["matchType"] not in {
            "REQ_HEADER",
            "REQ_HEADER_STR",
            "REQ_BODY_STR",
            "RESP_HEADER",
            "RESP_HEADER_STR",
            "RESP_BODY_STR",
        }:
            raise ApiError("illegal_parameter")
        if desc in self.replacer_rules:
            raise ApiError("already_exists")
        self.replacer_rules[desc] = dict(p)
        return self.OK

    def replacer__action__removeRule(self, p: dict[str, str]) -> Any:
        desc = self._need(p, "description")
        if desc not in self.replacer_rules:
            raise ApiError("does_not_exist")
        del self.replacer_rules[desc]
        return self.OK

    # spider — SpiderAPI.java
    def spider__action__setOptionMaxDepth(self, p: dict[str, str]) -> Any:
        self._need(p, "Integer")
        self._int(p, "Integer", 0)
        return self.OK

    def spider__action__setOptionMaxDuration(self, p: dict[str, str]) -> Any:
        self._need(p, "Integer")
        self._int(p, "Integer", 0)
        return self.OK

    def spider__action__scan(self, p: dict[str, str]) -> Any:
        # SpiderAPI ACTION_START_SCAN / scanURL: maxChildren must be an integer; a named
        # context must exist; the URL must be in it (url_not_in_context).
        self._int(p, "maxChildren", -1)
        url = p.get("url", "")
        ctx = self._context_by_name(p["contextName"]) if p.get("contextName") else None
        if not url and ctx is None:
            raise ApiError("missing_parameter")
        if ctx is not None and url and not self._in_context(ctx, url):
            raise ApiError("url_not_in_context")
        sid = len(self.spiders)
        self.spiders[sid] = _Scan()
        return {"scan": str(sid)}

    def _spider(self, p: dict[str, str]) -> _Scan:
        # SpiderAPI.getSpiderScan: no scanId → the last scan; unknown → does_not_exist.
        sid = self._int(p, "scanId", -1)
        if sid == -1:
            sid = len(self.spiders) - 1
        if sid not in self.spiders:
            raise ApiError("does_not_exist")
        return self.spiders[sid]

    def spider__view__status(self, p: dict[str, str]) -> Any:
        # As ActiveScanAPI VIEW_STATUS: a stopped scan reports 100.
        scan = self._spider(p)
        if not scan.stopped and scan.progress < 100:
            scan.progress = min(100, scan.progress + max(1, 100 // self.scenario.spider_polls))
            if scan.progress >= 100:
                self.tree.update(self.scenario.site_urls)
                self.backlog += self.scenario.passive_backlog
        return {"status": "100" if scan.stopped else str(scan.progress)}

    def spider__action__stop(self, p: dict[str, str]) -> Any:
        self._spider(p).stopped = True
        return self.OK

    # ajaxSpider — zap-extensions spiderAjax AjaxSpiderAPI.java
    def ajaxSpider__action__setOptionMaxDuration(self, p: dict[str, str]) -> Any:
        self._need(p, "Integer")
        self._int(p, "Integer", 0)
        return self.OK

    def ajaxSpider__action__scan(self, p: dict[str, str]) -> Any:
        # ACTION_START_SCAN: `if (extension.isSpiderRunning()) throw SCAN_IN_PROGRESS`.
        if self.ajax_left != 0:
            raise ApiError("scan_in_progress")
        url = p.get("url", "")
        ctx = self._context_by_name(p["contextName"]) if p.get("contextName") else None
        if ctx is not None and url and not self._in_context(ctx, url):
            raise ApiError("url_not_in_context")
        self.ajax_left = self.scenario.ajax_polls
        return self.OK  # the action answers OK, not a scan id

    def ajaxSpider__view__status(self, p: dict[str, str]) -> Any:
        # VIEW_STATUS: SpiderStatus RUNNING / STOPPED as "running" / "stopped".
        if self.ajax_left > 0:
            self.ajax_left -= 1
            return {"status": "running"}
        if self.ajax_left < 0:
            return {"status": "running"}
        self.tree.update(self.scenario.site_urls)
        return {"status": "stopped"}

    def ajaxSpider__action__stop(self, p: dict[str, str]) -> Any:
        self.ajax_left = 0
        return self.OK

    # pscan — the pscan add-on's PassiveScanAPI, VIEW_RECORDS_TO_SCAN
    def pscan__view__recordsToScan(self, p: dict[str, str]) -> Any:
        left = self.backlog
        if not self.scenario.passive_stuck and self.backlog > 0:
            self.backlog -= 1
        if left == 0 and self.spiders and any(s.progress >= 100 for s in self.spiders.values()):
            self.passive_ready = True
        return {"recordsToScan": str(left)}

    # ascan — ActiveScanAPI.java
    def ascan__action__scan(self, p: dict[str, str]) -> Any:
        ctx = self._context_by_id(p["contextId"]) if p.get("contextId") else None
        policy = p.get("scanPolicyName", "")
        if policy and policy not in self.scenario.policies:
            raise ApiError("does_not_exist")  # PolicyManager.getPolicy ConfigurationException
        url = p.get("url", "")
        if not url and ctx is None:
            raise ApiError("missing_parameter")
        if ctx is not None and url and not self._in_context(ctx, url):
            raise ApiError("url_not_in_context")
        recurse = p.get("recurse", "true").lower() != "false"
        if url:
            if recurse and url.endswith("/"):
                url = url[:-1]  # "Always choose the non leaf node if scanChildren"
            if not self._node_exists(url):
                raise ApiError("url_not_found")
        aid = len(self.ascans)
        self.ascans[aid] = _Scan()
        return {"scan": str(aid)}

    def _ascan(self, p: dict[str, str]) -> _Scan:
        # getActiveScan: no scanId → the last scan; unknown id → does_not_exist.
        aid = self._int(p, "scanId", -1)
        if aid == -1:
            aid = len(self.ascans) - 1
        if aid not in self.ascans:
            raise ApiError("does_not_exist")
        return self.ascans[aid]

    def ascan__view__status(self, p: dict[str, str]) -> Any:
        self.ascan_polls_total += 1
        limit = self.scenario.restart_after_ascan_polls
        if limit is not None and self.ascan_polls_total == limit:
            self.restart()
        scan = self._ascan(p)
        if not scan.stopped:
            cap = self.scenario.ascan_stuck_at
            nxt = min(100, scan.progress + self.scenario.ascan_step)
            scan.progress = min(nxt, cap) if cap is not None else nxt
        # VIEW_STATUS: `if (activeScan.isStopped()) progress = 100;`
        return {"status": "100" if scan.stopped else str(scan.progress)}

    def ascan__action__stop(self, p: dict[str, str]) -> Any:
        self._need(p, "scanId")
        self._ascan(p).stopped = True
        return self.OK

    def ascan__view__scans(self, p: dict[str, str]) -> Any:
        # VIEW_SCANS: ActiveScan.getState() is FINISHED for a stopped scan too.
        return {
            "scans": [
                {
                    "id": str(i),
                    "progress": str(s.progress),
                    "state": "FINISHED" if s.stopped or s.progress >= 100 else "RUNNING",
                    "reqCount": "0",
                    "alertCount": "0",
                    "newAlertCount": "0",
                }
                for i, s in self.ascans.items()
            ]
        }


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # silence the test output
        return

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        # ZAP closes the connection after every API answer (API.java: httpOut.close()).
        self.close_connection = True
        zap = self.server.zap
        target = urlsplit(self.path)  # absolute-form: the client talks to us as a proxy
        params = dict(parse_qsl(target.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            params.update(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        parts = target.path.strip("/").split("/")
        if target.hostname != "zap" or len(parts) != 4 or parts[0] != "JSON":
            self._send(404, {"code": "bad_type", "message": MESSAGES["bad_type"]})
            return
        _, component, kind, name = parts
        endpoint = f"{component}/{kind}/{name}"
        delay = zap.scenario.delay_s.get(endpoint)
        if delay:
            threading.Event().wait(delay)
        with zap.lock:
            key = self.headers.get("X-ZAP-API-Key") or params.get("apikey")
            if key != zap.scenario.api_key:
                # API.java: BAD_API_KEY → "Fail silently": no HTTP answer at all.
                zap.rejected_keys.append(key)
                return
            queued = zap.scenario.raw_answers.get(endpoint)
            raw = queued.pop(0) if queued else None
            if raw is None:
                zap.calls.append((endpoint, params))
                try:
                    body: Any = zap.handle(component, kind, name, params)
                    status = 200
                except ApiError as exc:
                    body = {"code": exc.code, "message": MESSAGES.get(exc.code, exc.code)}
                    status = 500 if exc.code == "internal_error" else 400
        if raw is None:
            self._send(status, body)
        elif raw.padding:
            self._send_padded(raw)
        elif not raw.hang_up:
            self._send_raw(raw.status, raw.body, raw.content_type)

    def _send(self, status: int, body: Any) -> None:
        self._send_raw(status, json.dumps(body).encode(), "application/json; charset=UTF-8")

    def _send_raw(self, status: int, data: bytes, content_type: str) -> None:
        self._send_headers(status, content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_headers(self, status: int, content_type: str) -> None:
        self.send_response(status)
        # API.getDefaultResponseHeader, in part.
        self.send_header("Pragma", "no-cache")
        self.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Type", content_type)

    def _send_padded(self, raw: RawAnswer) -> None:
        self._send_headers(raw.status, raw.content_type)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(raw.body)
        spaces = b" " * (64 << 10)
        left = raw.padding
        while left > 0:
            self.wfile.write(spaces[:left])
            left -= len(spaces)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, zap: FakeZap) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.zap = zap

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout) leaves a broken pipe behind; that is the test's
        # point, not an error of the fake.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class FakeZapServer:
    """A running fake ZAP on a loopback port; `url` is what monitord's `[zap] url` would be."""

    def __init__(self, scenario: Scenario) -> None:
        self.zap = FakeZap(scenario)
        self._server = _Server(self.zap)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> FakeZapServer:
        """Start answering in a background thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop answering and free the port."""
        with contextlib.suppress(Exception):
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def calls(self, endpoint: str) -> list[dict[str, str]]:
        """The parameters of every answered call to `endpoint`."""
        return [p for e, p in self.zap.calls if e == endpoint]


# ---- scenarios --------------------------------------------------------------------------------


def clean_site(base: str) -> Scenario:
    """A service with nothing to report."""
    return Scenario(site_urls=[base, base + "index.html", base + "about.html"])


def alert_storm(base: str, total: int = 1200) -> Scenario:
    """High and Medium alerts (and Low, Informational, False Positives and another site's)."""
    plugins = [
        # (pluginId, alertRef, name, risk, cweid, wascid, source, has param)
        ("40018", "40018", "SQL Injection", "High", "89", "19", "active", True),
        ("40012", "40012", "Cross Site Scripting (Reflected)", "High", "79", "8", "active", True),
        ("10020", "10020-1", "Missing Anti-clickjacking Header", "Medium", "1021", "15",
         "passive", False),
        ("10038", "10038-1", "Content Security Policy (CSP) Header Not Set", "Medium", "693",
         "15", "passive", False),
        ("10021", "10021", "X-Content-Type-Options Header Missing", "Low", "693", "15",
         "passive", False),
        ("10027", "10027", "Information Disclosure - Suspicious Comments", "Informational",
         "200", "13", "passive", False),
    ]  # fmt: skip
    alerts: list[FakeAlert] = []
    for i in range(total):
        plugin, ref, name, risk, cwe, wasc, source, has_param = plugins[i % len(plugins)]
        page = f"page{(i // len(plugins)) % 40}.html"
        alerts.append(
            FakeAlert(
                plugin_id=plugin,
                alert_ref=ref,
                name=name,
                risk=risk,
                confidence="Medium" if i % 5 else "High",
                url=f"{base}{page}?id={i}",
                param="id" if has_param else "",
                evidence=f"evidence-{i}",
                cweid=cwe,
                wascid=wasc,
                source=source,
            )
        )
    # A user marked some as False Positive; ZAP hides them from the alert views.
    for alert in alerts[7::50]:
        alert.confidence = "False Positive"
    # Another site scanned in the same ZAP: outside the baseurl prefix.
    alerts += [
        FakeAlert("40018", "40018", "SQL Injection", "High", "High", f"http://other.test/x{i}",
                  "q", source="passive")
        for i in range(5)
    ]  # fmt: skip
    return Scenario(site_urls=[base] + [f"{base}page{n}.html" for n in range(40)], alerts=alerts)
