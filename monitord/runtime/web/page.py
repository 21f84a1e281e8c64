"""The status page for on-call staff: `/`, `/services/{id}`, `/incidents/{id}`, sign-in.

Server-rendered HTML (monitord.runtime.web.pageviews) from the same reading of the store as
`monitord status` (monitord.runtime.status). A browser signs in once with its token at /login
and then carries a session cookie (monitord.runtime.web.auth.SignIns); a Bearer header is
served directly. The buttons call the same functions as `monitord incidents ack|notify|resolve`,
which write the audit trail under the token's name.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections import defaultdict
from typing import Any
from urllib.parse import quote

from aiohttp import web
from loguru import logger
from sqlalchemy import func, select

from monitord.accesslog import forwarded
from monitord.errors import Outdated, Refused, UsageError
from monitord.incidents import (
    acknowledge,
    get_incident,
    incident_dict,
    notifications_made,
    notify_management,
    of_incident,
    resolve,
    timeline,
)
from monitord.incidents.silences import active_silences, expire_silence, is_active, silence_dict
from monitord.names import KIND_NAMES
from monitord.redact import mask_urls, one_line
from monitord.runtime.app import App
from monitord.runtime.status import Status, read_status
from monitord.runtime.web import pageviews
from monitord.runtime.web.auth import (
    CALLER,
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION,
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGN_INS,
    allows,
    identify,
    signed_in,
)
from monitord.runtime.web.charts import Bucket, latency_line, percentile, uptime, uptime_strip
from monitord.runtime.web.routes import APP, Route, in_web_thread, store_session
from monitord.runtime.web.silences import Invalid, add_from_body
from monitord.store import audit
from monitord.store.models import (
    Finding,
    ProbeResultRow,
    ProbeRollup,
    Service,
    ServiceState,
    Silence,
)
from monitord.timeutil import parse_time
from monitord.types import MAX_ID, ONE_LINE_BREAKERS

KIND = "availability"
"""The probe kind the charts show: the one that runs every round."""
DAY_BUCKET = dt.timedelta(minutes=30)
WEEK_BUCKET = dt.timedelta(hours=1)
ENDED_SHOWN = 20
"""Ended silences listed on /silences at most (the CLI's `silence list --all` has them all)."""
_LIST_SEPARATORS = re.compile(r"[\s,，、;；]+")
_LOGIN_CSRF = re.compile(r"[A-Za-z0-9_-]{32}")
"""The shape of the sign-in form's CSRF value (secrets.token_urlsafe(24))."""


def wants_page(request: web.Request) -> bool:
    """Whether a request is a browser asking for a page (sent to sign in, not answered 401)."""
    return (
        request.method in ("GET", "HEAD")
        and "text/html" in request.headers.get("Accept", "")
        and not request.path.startswith("/api/")
    )


def posts_form(request: web.Request) -> bool:
    """Whether a request is a browser sending a form of the page (answered with a page, not a
    JSON line, when its session ended or its form is stale)."""
    return (
        request.method == "POST"
        and "text/html" in request.headers.get("Accept", "")
        and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
        and not request.path.startswith("/api/")
    )


async def stale_form(request: web.Request, *, signed_out: bool) -> web.Response:
    """The answer to a form sent when its session had ended (`signed_out`) or with a CSRF
    token of an earlier sign-in: nothing was done; what was typed is shown to copy, with a link
    to sign in and come back to the form's page."""
    form = await request.post()
    back = local_path(str(form.get("back") or ""))  # every form of the page names its page
    body = pageviews.stale_form_page(
        signed_out, "/login?next=" + quote(back, safe=""), _typed(form)
    )
    return _page(
        request, "需要重新登录" if signed_out else "表单已过期", body, 401 if signed_out else 403
    )


def _typed(form: Any) -> list[tuple[str, str]]:
    """What a person typed in a form of the page, under its fields' names."""
    return [
        (name, str(value))
        for name, value in form.items()
        if name not in pageviews.FORM_PLUMBING and isinstance(value, str) and value.strip()
    ]


async def store_unavailable(request: web.Request, *, locked: bool) -> web.Response:
    """The 503 page answering a browser when the store did not answer, or a table the page
    needed stayed `locked` (maintenance): try again later; a form's work was not done, and
    what was typed is shown to copy."""
    if locked:
        why = "数据库正在维护（所需的数据表被锁定），暂时无法读取或保存，请稍后刷新重试。"
    else:
        why = "数据库暂时无法连接，请稍后刷新重试。"
    typed: list[tuple[str, str]] = []
    if posts_form(request):
        why += "本次操作未执行。"
        typed = _typed(await request.post())
    body = pageviews.message_page(why) + pageviews.typed_to_copy(typed)
    return _page(request, "暂时无法访问", body, 503)


def local_path(value: str | None, default: str = "/") -> str:
    """`value` when it is a path of this site (never another site: no open redirect).

    Browsers drop tabs and line breaks from a URL and read a backslash as a slash, so
    "/<tab>/evil.example" is "//evil.example" to them: a path holding any of those is refused.
    """
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or ONE_LINE_BREAKERS.search(value) is not None
    ):
        return default
    return value


def to_sign_in(request: web.Request) -> web.Response:
    """Send a browser to the sign-in form, which brings it back here afterwards."""
    target = "/login?next=" + quote(request.path_qs, safe="")
    return web.Response(status=303, headers={"Location": target})


def _html(body: str, status: int = 200) -> web.Response:
    response = web.Response(text=body, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(request: web.Request, title: str, body: str, status: int = 200) -> web.Response:
    """A whole page for the caller; it reloads itself only when it answers a GET (a page
    answering a form is at the form's address, which a reload would ask with GET: a 405)."""
    caller = request.get(CALLER)
    session = request.get(SESSION)
    who = f"{caller.name}（{caller.role}）" if caller else None
    csrf = session.csrf if session else ""
    refresh = request.method in ("GET", "HEAD")
    return _html(pageviews.layout(title, body, who=who, csrf=csrf, refresh=refresh), status)


def _csrf(request: web.Request) -> str:
    session = request.get(SESSION)
    return session.csrf if session else ""


def _can_act(request: web.Request) -> bool:
    return allows(request[CALLER].role, "oncall")


def _secure(request: web.Request, app: App) -> bool:
    return request.secure or (app.settings.api.public_url or "").startswith("https://")


async def stylesheet(request: web.Request) -> web.Response:
    """The page's CSS (served, not inline: the CSP allows 'self' only)."""
    response = web.Response(text=pageviews.CSS, content_type="text/css")
    response.headers["Cache-Control"] = "max-age=3600"
    return response


async def script(request: web.Request) -> web.Response:
    """The page's refresh script."""
    response = web.Response(text=pageviews.SCRIPT, content_type="text/javascript")
    response.headers["Cache-Control"] = "max-age=3600"
    return response


# --- signing in and out ---------------------------------------------------------------------


def _sign_in_form(
    request: web.Request, next_path: str, error: str | None, status: int = 200
) -> web.Response:
    """The sign-in form with its CSRF value, also set as the form's own cookie: the one the
    browser holds already, if any, so that two sign-in tabs (two alert links followed while
    signed out) both work, not only the last one opened."""
    held = request.cookies.get(LOGIN_COOKIE, "")
    csrf = held if _LOGIN_CSRF.fullmatch(held) else secrets.token_urlsafe(24)
    # Never reloaded: there is nothing new to show, and the form is what a person fills in.
    body = pageviews.layout(
        "登录", pageviews.sign_in_page(csrf, next_path, error), who=None, csrf="", refresh=False
    )
    response = _html(body, status)
    response.set_cookie(
        LOGIN_COOKIE,
        csrf,
        path="/login",
        httponly=True,
        samesite="Strict",
        secure=_secure(request, request.app[APP]),
    )
    return response


async def sign_in_form(request: web.Request) -> web.Response:
    """GET /login: the form (or straight on, for a browser already signed in)."""
    next_path = local_path(request.query.get("next"))
    if await signed_in(request, request.app[APP].settings.api) is not None:
        return web.Response(status=303, headers={"Location": next_path})
    return _sign_in_form(request, next_path, None)


async def sign_in(request: web.Request) -> web.Response:
    """POST /login: a valid token starts a session; failures are limited per address."""
    app = request.app[APP]
    sign_ins = request.app[SIGN_INS]
    # Every X-Forwarded-For line, in order, is one list (RFC 9110): a proxy that adds a line
    # of its own leaves the client's first, and reading that one alone let the client choose.
    hops = request.headers.getall("X-Forwarded-For", [])
    address = forwarded.client(
        request.remote or "unknown",
        ", ".join(hops) if hops else None,
        tuple(app.settings.api.trusted_proxies),
    )
    form = await request.post()
    next_path = local_path(str(form.get("next") or "/"))
    wait = sign_ins.wait_seconds(address)
    if wait:
        response = _sign_in_form(request, next_path, f"登录失败次数过多，请 {wait} 秒后再试。", 429)
        response.headers["Retry-After"] = str(wait)
        return response
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    sent = form.get(CSRF_FIELD)
    if not cookie or not isinstance(sent, str) or sent != cookie:
        return _sign_in_form(request, next_path, "表单已过期，请重新输入令牌。", 403)
    token = str(form.get("token") or "").strip()
    caller = identify(app.settings.api, token) if token else None
    if caller is None:
        sign_ins.failed(address)
        logger.warning("status page: a failed sign-in from {}", one_line(address))
        return _sign_in_form(request, next_path, "令牌无效。", 401)
    ident, _session = sign_ins.start(caller)
    await in_web_thread(request, _audit, app, caller.name, "page.sign_in", address)
    response = web.Response(status=303, headers={"Location": next_path})
    response.set_cookie(
        SESSION_COOKIE,
        ident,
        path="/",
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        secure=_secure(request, app),
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    return response


def _audit(app: App, actor: str, action: str, subject: str) -> None:
    with store_session(app) as session:
        audit(session, app.clock(), actor, action, subject)


async def sign_out(request: web.Request) -> web.Response:
    """POST /logout: end this browser's session."""
    ident = request.cookies.get(SESSION_COOKIE)
    if ident:
        request.app[SIGN_INS].end(ident)
    response = web.Response(status=303, headers={"Location": "/login"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# --- the pages ------------------------------------------------------------------------------


def _read_status(app: App) -> Status:
    with store_session(app) as session:
        return read_status(session, app.clock())


async def front(request: web.Request) -> web.Response:
    """GET /: what is wrong now."""
    status = await in_web_thread(request, _read_status, request.app[APP])
    notice = pageviews.NOTICES.get(request.query.get("done", ""))
    body = pageviews.front_page(
        status, can_act=_can_act(request), csrf=_csrf(request), notice=notice
    )
    return _page(request, "值班台", body)


def _finding_rows(findings: list[Finding]) -> list[dict[str, Any]]:
    return [
        {
            "service_id": f.service_id,
            "rule": f.rule,
            "clause": f.clause,
            "severity": f.severity,
            "summary": f.summary,
            "first_seen": f.first_seen.isoformat(),
        }
        for f in findings
    ]


def _listed_findings(session: Any, *where: Any) -> tuple[list[dict[str, Any]], int]:
    """The first LISTED findings matching `where` (by id) as the pages show them, and how many
    match in all."""
    findings = session.scalars(
        select(Finding).where(*where).order_by(Finding.id).limit(pageviews.LISTED)
    ).all()
    total = session.scalar(select(func.count()).select_from(Finding).where(*where))
    return _finding_rows(list(findings)), int(total or 0)


IncidentRead = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], int, int]
"""An incident's page as read: the incident, its timeline, its first findings and their count,
and how many notifications were submitted (the form's number is the next)."""


def _read_incident(app: App, incident_id: int) -> IncidentRead | None:
    with store_session(app) as session:
        try:
            incident = get_incident(session, incident_id)
        except UsageError:
            return None
        findings, total = _listed_findings(session, of_incident(incident_id))
        return (
            incident_dict(incident, app.clock()),
            timeline(session, incident_id),
            findings,
            total,
            notifications_made(session, incident_id),
        )


async def _incident_response(
    request: web.Request,
    incident_id: int,
    *,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> web.Response:
    read = await in_web_thread(request, _read_incident, request.app[APP], incident_id)
    if read is None:
        return _page(request, "未找到", pageviews.message_page(f"没有事件 #{incident_id}。"), 404)
    incident, events, findings, finding_count, notifications = read
    body = pageviews.incident_page(
        incident,
        events,
        findings,
        finding_count,
        notifications=notifications,
        can_act=_can_act(request),
        csrf=_csrf(request),
        notice=pageviews.NOTICES.get(request.query.get("done", "")),
        error=error,
        values=values or {},
    )
    return _page(request, f"事件 #{incident_id}", body, status)


async def incident(request: web.Request) -> web.Response:
    """GET /incidents/{id}: the incident, its findings and timeline, its buttons and form."""
    return await _incident_response(request, int(request.match_info["id"]))


def _buckets(
    rows: list[tuple[dt.datetime, bool, float]], start: dt.datetime, size: dt.timedelta, n: int
) -> list[Bucket]:
    """Raw results (at, success, duration) into n buckets of `size` from `start`."""
    groups: dict[int, list[tuple[bool, float]]] = defaultdict(list)
    for at, success, duration in rows:
        index = int((at - start) / size)
        if 0 <= index < n:
            groups[index].append((success, duration))
    buckets = []
    for index in range(n):
        values = groups.get(index, [])
        latencies = sorted(d for ok, d in values if ok)
        buckets.append(
            Bucket(
                start=start + index * size,
                total=len(values),
                failures=sum(1 for ok, _ in values if not ok),
                p95_ms=percentile(latencies, 0.95) if latencies else None,
            )
        )
    return buckets


def _raw(
    session: Any, service_id: str, since: dt.datetime
) -> list[tuple[dt.datetime, bool, float]]:
    rows = session.execute(
        select(ProbeResultRow.at, ProbeResultRow.success, ProbeResultRow.duration_ms).where(
            ProbeResultRow.service_id == service_id,
            ProbeResultRow.kind == KIND,
            ProbeResultRow.at >= since,
            ProbeResultRow.blind.is_(False),  # a blind round is no evidence about the service
        )
    ).all()
    return [(at, bool(ok), float(ms)) for at, ok, ms in rows]


def _week(session: Any, service_id: str, now: dt.datetime) -> list[Bucket]:
    """168 hours: the roll-ups, and raw results for the hours not rolled up yet."""
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    start = this_hour - 167 * WEEK_BUCKET
    rolled = {
        r.hour: Bucket(r.hour, r.count, r.failures, r.p95_ms)
        for r in session.scalars(
            select(ProbeRollup).where(
                ProbeRollup.service_id == service_id,
                ProbeRollup.kind == KIND,
                ProbeRollup.hour >= start,
            )
        )
    }
    since = max(rolled, default=start - WEEK_BUCKET) + WEEK_BUCKET
    raw = _buckets(_raw(session, service_id, since), start, WEEK_BUCKET, 168)
    return [rolled.get(b.start, b) for b in raw]


ServiceRead = tuple[
    dict[str, Any], list[tuple[str, float | None, str, str]], list[dict[str, Any]], int
]
"""A service's page as read: the service, its charts, its first open findings and their count."""


def _read_service(app: App, service_id: str) -> ServiceRead | None:
    now = app.clock()
    with store_session(app) as session:
        service = session.get(Service, service_id)
        if service is None:
            return None
        state = session.get(ServiceState, service_id)
        day_start = now - 48 * DAY_BUCKET
        day = _buckets(_raw(session, service_id, day_start), day_start, DAY_BUCKET, 48)
        week = _week(session, service_id, now)
        findings, finding_count = _listed_findings(
            session, Finding.service_id == service_id, Finding.state == "open"
        )
        view = {
            "id": service.id,
            "name": service.name,
            "status": "gone" if service.gone else service.status,
            "state": state.state if state else "unknown",
            "since": state.since.isoformat() if state else None,
            "last_error": one_line(mask_urls(state.last_error))
            if state and state.last_error
            else None,
        }
        charts = [
            (
                title,
                uptime(buckets),
                uptime_strip(buckets, f"{title}可用性"),
                latency_line(buckets, f"{title} p95 延迟"),
            )
            for title, buckets in (("最近 24 小时", day), ("最近 7 天", week))
        ]
        return view, charts, findings, finding_count


async def service(request: web.Request) -> web.Response:
    """GET /services/{id}: a service's state, uptime and latency charts, open findings."""
    service_id = request.match_info["id"]
    read = await in_web_thread(request, _read_service, request.app[APP], service_id)
    if read is None:
        body = pageviews.message_page(f"目录中没有服务 {service_id}。")
        return _page(request, "未找到", body, 404)
    view, charts, findings, finding_count = read
    body = pageviews.service_page(view, charts, findings, finding_count)
    return _page(request, f"{view['id']} {view['name']}", body)


# --- the buttons ----------------------------------------------------------------------------


async def _act(request: web.Request, done: str, change: Any, **extra: Any) -> web.Response:
    """Apply one incident action as the signed-in caller; back where the button was, or the
    incident's page saying in Chinese why it was refused."""
    app = request.app[APP]
    incident_id = int(request.match_info["id"])
    form = await request.post()
    back = local_path(str(form.get("back") or "/"))
    who = request[CALLER].name

    def apply() -> None:
        with store_session(app) as session:
            change(session, incident_id, who, app.clock(), **extra)

    try:
        await in_web_thread(request, apply)
    except UsageError as exc:
        error = pageviews.refusal_text(exc)
        return await _incident_response(request, incident_id, error=error, status=409)
    separator = "&" if "?" in back else "?"
    return web.Response(status=303, headers={"Location": f"{back}{separator}done={done}"})


async def ack(request: web.Request) -> web.Response:
    """POST /incidents/{id}/ack: somebody is on it (as `monitord incidents ack`)."""
    return await _act(request, "ack", acknowledge)


async def resolve_incident(request: web.Request) -> web.Response:
    """POST /incidents/{id}/resolve: as `monitord incidents resolve`."""
    return await _act(request, "resolve", resolve)


def _form_time(name: str, text: str) -> dt.datetime | None:
    """A time field of a form (datetime-local: Beijing time), or None when left empty; a
    Refused naming the field when it is no time."""
    if not text.strip():
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise Refused(
            f"{name} {text[:40]!r}: expected a time such as 2026-12-06T02:10",
            reason="not_a_time",
            field=name,
        ) from None


def _form_number(text: str) -> int | None:
    """The notification form's `number` (which one it sends: 1, then follow-ups 2, 3…), or None
    from a form without one."""
    if not text:
        return None
    if not text.isdecimal() or len(text) > 9:
        raise Refused(
            f"number {text[:20]!r}: expected the notification's number, 1 or more",
            reason="not_a_number",
            field="number",
        )
    return int(text)


async def notify(request: web.Request) -> web.Response:
    """POST /incidents/{id}/notify: the 7.3.3 notification's four parts (as `monitord incidents
    notify`), queued for the management unit's channels, or recorded as made by phone."""
    app = request.app[APP]
    incident_id = int(request.match_info["id"])
    form = await request.post()
    names = (*pageviews.PART_LABELS, "out_of_band", "at")
    values = {name: str(form.get(name) or "") for name in names}
    out_of_band = values["out_of_band"].strip() or None
    who = request[CALLER].name

    def apply() -> None:
        with store_session(app) as session:
            notify_management(
                session,
                app.settings,
                incident_id,
                {name: values[name] for name in pageviews.PART_LABELS},
                who,
                app.clock(),
                out_of_band=out_of_band,
                at=_form_time("at", values["at"]),
                number=_form_number(str(form.get("number") or "")),
            )

    try:
        await in_web_thread(request, apply)
    except Outdated:
        # Sent twice, or after someone else's: nothing went out; the form shown now is the
        # follow-up's, with what was typed, to send on purpose.
        return await _incident_response(
            request, incident_id, error=pageviews.OUTDATED_NOTIFICATION, values=values, status=409
        )
    except UsageError as exc:
        return await _incident_response(
            request, incident_id, error=pageviews.refusal_text(exc), values=values, status=422
        )
    done = "notify" if out_of_band is None else "notify_by_phone"
    return web.Response(status=303, headers={"Location": f"/incidents/{incident_id}?done={done}"})


# --- silences ------------------------------------------------------------------------------


def _read_silences(app: App) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """The silences in force, the latest ended ones, and the incident kinds a silence may name
    (code: Chinese name)."""
    now = app.clock()
    with store_session(app) as session:
        active = [silence_dict(s, now) for s in active_silences(session, now)]
        latest = session.scalars(
            select(Silence).order_by(Silence.id.desc()).limit(len(active) + ENDED_SHOWN)
        )
        ended = [silence_dict(s, now) for s in latest if not is_active(s, now)]
    incidents = app.settings.incidents
    kinds = [*incidents.availability_kinds, *incidents.security_kinds]
    return active, ended[:ENDED_SHOWN], {kind: KIND_NAMES.get(kind, kind) for kind in kinds}


async def _silences_response(
    request: web.Request,
    *,
    error: str | None = None,
    values: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    active, ended, kinds = await in_web_thread(request, _read_silences, request.app[APP])
    body = pageviews.silences_page(
        active,
        ended,
        kinds,
        can_act=_can_act(request),
        csrf=_csrf(request),
        notice=pageviews.NOTICES.get(request.query.get("done", "")),
        error=error,
        values=values or {},
    )
    return _page(request, "静默", body, status)


async def silences(request: web.Request) -> web.Response:
    """GET /silences: the silences in force and lately ended; for on-call, the form to add one
    and a button to end each."""
    return await _silences_response(request)


def _listed(text: str) -> list[str]:
    """A form field holding several values, separated by commas, spaces or 、."""
    return [part for part in _LIST_SEPARATORS.split(text) if part]


def silence_body(form: Any) -> dict[str, Any]:
    """The page's form as the fields of the API's body (an empty end field is left out)."""
    body: dict[str, Any] = {
        "services": _listed(str(form.get("services") or "")),
        "kinds": [str(kind) for kind in form.getall("kinds", [])],
        "rules": _listed(str(form.get("rules") or "")),
        "reason": str(form.get("reason") or ""),
    }
    for name in ("for", "ends_at"):
        value = str(form.get(name) or "").strip()
        if value:
            body[name] = value
    return body


async def add_silence(request: web.Request) -> web.Response:
    """POST /silences: add a silence as the signed-in caller (the checks are the API's and the
    CLI's: a refused one shows its one-line reason above the form, what was typed kept)."""
    form = await request.post()
    body = silence_body(form)
    try:
        await in_web_thread(request, add_from_body, request.app[APP], body, request[CALLER].name)
    except Invalid as exc:
        values = {name: str(form.get(name) or "") for name in ("services", "rules", "reason")}
        values.update({"for": body.get("for", ""), "ends_at": body.get("ends_at", "")})
        values["kinds"] = body["kinds"]
        error = pageviews.refusal_text(exc.refusal) if exc.refusal else f"操作未执行（{exc}）"
        return await _silences_response(request, error=error, values=values, status=422)
    return web.Response(status=303, headers={"Location": "/silences?done=silence"})


async def end_silence(request: web.Request) -> web.Response:
    """POST /silences/{id}/expire: end a silence now (as `monitord silence expire`)."""
    app = request.app[APP]
    silence_id = int(request.match_info["id"])
    form = await request.post()
    back = local_path(str(form.get("back") or "/silences"))
    who = request[CALLER].name

    def apply() -> None:
        if silence_id > MAX_ID:
            raise Refused(f"no silence {silence_id}", reason="no_such_silence", id=str(silence_id))
        with store_session(app) as session:
            expire_silence(session, silence_id, who, app.clock())

    try:
        await in_web_thread(request, apply)
    except UsageError as exc:
        return await _silences_response(request, error=pageviews.refusal_text(exc), status=409)
    separator = "&" if "?" in back else "?"
    return web.Response(status=303, headers={"Location": f"{back}{separator}done=expire"})


ROUTES = (
    Route("GET", "/static/page.css", stylesheet, role=None),
    Route("GET", "/static/page.js", script, role=None),
    Route("GET", "/login", sign_in_form, role=None),
    Route("POST", "/login", sign_in, role=None),
    Route("POST", "/logout", sign_out, role="viewer"),
    Route("GET", "/", front, role="viewer"),
    Route("GET", "/services/{id}", service, role="viewer"),
    Route("GET", r"/incidents/{id:[0-9]+}", incident, role="viewer"),
    Route("POST", r"/incidents/{id:[0-9]+}/ack", ack, role="oncall"),
    Route("POST", r"/incidents/{id:[0-9]+}/notify", notify, role="oncall"),
    Route("POST", r"/incidents/{id:[0-9]+}/resolve", resolve_incident, role="oncall"),
    Route("GET", "/silences", silences, role="viewer"),
    Route("POST", "/silences", add_silence, role="oncall"),
    Route("POST", r"/silences/{id:[0-9]+}/expire", end_silence, role="oncall"),
)
