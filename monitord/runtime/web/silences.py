"""Silences through the API: list them (viewer), add and expire them (oncall), audited under
the token's name. The logic is monitord.incidents.silences, as the CLI's."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from monitord.errors import Refused, UsageError
from monitord.incidents.silences import (
    add_silence,
    expire_silence,
    get_silence,
    list_silences,
    parse_duration,
    silence_dict,
)
from monitord.runtime.app import App
from monitord.runtime.web.api.common import Param, api_route, read_object
from monitord.runtime.web.api.openapi import (
    BOOL,
    INT,
    TEXT,
    TIME,
    array,
    named,
    nullable,
    operation,
    record,
)
from monitord.runtime.web.auth import CALLER
from monitord.runtime.web.routes import APP, in_web_thread, store_session
from monitord.timeutil import parse_time
from monitord.types import MAX_ID

FIELDS = ("services", "kinds", "rules", "reason", "ends_at", "for")


class Invalid(Exception):
    """A request body that does not validate; answered 422 with its message. `refusal` says
    why as codes, for the status page to word it in Chinese."""

    def __init__(self, message: str, refusal: Refused | None = None) -> None:
        super().__init__(message)
        self.refusal = refusal


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(f"{name}: expected a list of strings")
    return value


def _ends_at(body: dict[str, Any], now: dt.datetime) -> dt.datetime:
    """The end a body asks for: `ends_at` (ISO 8601, Asia/Shanghai without an offset) or
    `for` (90m, 2h, 1d), exactly one."""
    ends, duration = body.get("ends_at"), body.get("for")
    if (ends is None) == (duration is None):
        message = "ends_at or for: give exactly one (an ISO 8601 time, or a duration: 2h)"
        raise Invalid(message, Refused(message, reason="one_end"))
    if duration is not None:
        if not isinstance(duration, str):
            raise Invalid("for: expected a duration such as 90m, 2h or 1d")
        try:
            return now + parse_duration(duration)
        except Refused as exc:
            raise Invalid(f"for: {exc}", exc) from None
    try:
        if not isinstance(ends, str):
            raise ValueError
        return parse_time(ends)
    except ValueError:
        message = "ends_at: expected an ISO 8601 time such as 2026-12-01T08:00"
        raise Invalid(message, Refused(message, reason="not_a_time", field="ends_at")) from None


def add_from_body(app: App, body: dict[str, Any], actor: str) -> dict[str, Any]:
    """Add the silence a body (the API's JSON, or the page's form as the same fields) asks
    for, as `actor`; raises Invalid with the one-line reason it was refused."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise Invalid(f"{unknown[0]}: not a field of a silence (expected {', '.join(FIELDS)})")
    reason = body.get("reason")
    if not isinstance(reason, str):
        raise Invalid("reason: expected a string saying why")
    now = app.clock()
    ends_at = _ends_at(body, now)
    with store_session(app) as session:
        try:
            made = add_silence(
                session,
                app.settings.incidents,
                services=_strings(body, "services"),
                kinds=_strings(body, "kinds"),
                rule_names=_strings(body, "rules"),
                reason=reason,
                ends_at=ends_at,
                actor=actor,
                now=now,
            )
        except UsageError as exc:
            raise Invalid(str(exc), exc if isinstance(exc, Refused) else None) from None
        return silence_dict(made, now)


async def post_silence(request: web.Request) -> web.Response:
    """Add a silence: {"services"|"kinds"|"rules": [...], "reason": ..., "ends_at"|"for": ...}."""
    body = await read_object(request)
    try:
        caller = request[CALLER].name
        made = await in_web_thread(request, add_from_body, request.app[APP], body, caller)
    except Invalid as exc:
        return web.json_response({"error": str(exc)}, status=422)
    return web.json_response(made, status=201)


def _list(app: App, ended: bool) -> list[dict[str, Any]]:
    now = app.clock()
    with store_session(app) as session:
        return [silence_dict(s, now) for s in list_silences(session, now, include_ended=ended)]


async def get_silences(request: web.Request) -> web.Response:
    """The silences in force; ?all=true: every one ever added, newest first."""
    ended = ALL.read(request) is True
    rows = await in_web_thread(request, _list, request.app[APP], ended)
    return web.json_response(rows)


def _expire(app: App, silence_id: int, actor: str) -> dict[str, Any] | None:
    now = app.clock()
    with store_session(app) as session:
        try:
            get_silence(session, silence_id)
        except UsageError:
            return None
        return silence_dict(expire_silence(session, silence_id, actor, now), now)


async def post_expire(request: web.Request) -> web.Response:
    """End a silence now."""
    try:
        silence_id = int(request.match_info["id"])
        if silence_id > MAX_ID:
            raise ValueError
    except ValueError:
        return web.json_response({"error": "id: expected a silence's number"}, status=404)
    try:
        caller = request[CALLER].name
        ended = await in_web_thread(request, _expire, request.app[APP], silence_id, caller)
    except UsageError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    if ended is None:
        return web.json_response({"error": f"no silence {silence_id}"}, status=404)
    return web.json_response(ended)


SILENCE = named(
    "Silence",
    record(
        id=INT,
        services=array(TEXT),
        kinds=array(TEXT),
        rules=array(TEXT),
        reason=TEXT,
        created_by=TEXT,
        created_at=TIME,
        starts_at=TIME,
        ends_at=TIME,
        expired_at=nullable(TIME),
        expired_by=nullable(TEXT),
        active=BOOL,
    ),
)
NEW_SILENCE = named(
    "NewSilence",
    {
        "type": "object",
        "properties": {
            "services": array(TEXT),
            "kinds": array(TEXT),
            "rules": array(TEXT),
            "reason": TEXT,
            "ends_at": {"type": "string", "description": "ISO 8601; Asia/Shanghai without offset"},
            "for": {"type": "string", "description": "a duration: 90m, 2h, 1d; at most 3650d"},
        },
        "required": ["reason"],
        "additionalProperties": False,
    },
)
ALL = Param("all", "every silence ever added, newest first (default: those in force)", kind="bool")

ROUTES = (
    api_route(
        "GET",
        "/silences",
        get_silences,
        "viewer",
        operation("the silences in force", answer=array(SILENCE), query=(ALL,)),
    ),
    api_route(
        "POST",
        "/silences",
        post_silence,
        "oncall",
        operation("add a silence", answer=SILENCE, status=201, body=NEW_SILENCE),
    ),
    api_route(
        "POST",
        r"/silences/{id:[0-9]+}/expire",
        post_expire,
        "oncall",
        operation("end a silence now", answer=SILENCE, refusals=(409,)),
    ),
)
