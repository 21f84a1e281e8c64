"""Synthetic portal traffic: the nginx edge log and the JSON audit log of the same requests.

The tests plant each abnormal behaviour of spec/access-log.md among normal traffic and check that
its rule finds it; the benchmark writes a million lines of the normal kind. Normal traffic is
built to be innocent by construction: working-hours weighted, companies with one legal person,
one admin and handlers, each person on one or two addresses, privileged actions only in working
time, grants only along 法人 → 管理员/办事人 and 管理员 → 办事人, and no vendor staff.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from monitord.timeutil import SHANGHAI

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

UAS = {
    "desktop": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36",
    "phone": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "wechat": "Mozilla/5.0 (Linux; Android 14; V2307A) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/116.0 Mobile Safari/537.36 MicroMessenger/8.0.49.2600 NetType/WIFI",
    "alipay": "Mozilla/5.0 (Linux; Android 13; PGT-AN10) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/109.0 Mobile Safari/537.36 AlipayClient/10.5.96.8000 Language/zh-Hans",
}
UA_WEIGHTS = (("desktop", 55), ("phone", 15), ("wechat", 20), ("alipay", 10))
# Hour-of-day weights for working days: people use the portal at the office.
HOUR_WEIGHTS = (1, 1, 1, 1, 1, 1, 2, 4, 12, 20, 22, 18, 8, 10, 20, 22, 20, 14, 6, 4, 3, 2, 2, 1)


@dataclass(slots=True)
class Event:
    """One request as both logs see it."""

    ts: dt.datetime
    ip: str
    service_id: str
    action: str
    method: str = "GET"
    path: str = "/"
    status: int = 200
    bytes: int = 2048
    duration_ms: float = 40.0
    ua: str = UAS["desktop"]
    user_id: str | None = None
    level: str | None = None
    role: str | None = None
    company: str | None = None
    vendor: str | None = None
    target_user: str | None = None
    target_role: str | None = None
    edge_only: bool = False
    label: str | None = None
    """The behaviour this event was planted for (None for normal traffic)."""


@dataclass(frozen=True, slots=True)
class Person:
    """A portal account: who it is, for which company, from where."""

    user_id: str
    level: str
    role: str | None
    company: str | None
    ips: tuple[str, ...]
    ua: str
    vendor: str | None = None


@dataclass
class World:
    """Services, companies and the people acting for them."""

    services: list[str]
    companies: list[str]
    people: list[Person]
    by_company: dict[str, list[Person]] = field(default_factory=dict)


def make_world(rng: random.Random, services: int = 40, companies: int = 300) -> World:
    """Build services and companies, each company with a legal person, an admin and handlers."""
    svc = [f"svc-{i:04d}" for i in range(1, services + 1)]
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    codes = [
        "91320500" + "".join(rng.choice(alphabet) for _ in range(10)) for _ in range(companies)
    ]
    people: list[Person] = []
    by_company: dict[str, list[Person]] = {}
    n = 0

    def person(level: str, role: str | None, company: str | None) -> Person:
        nonlocal n
        n += 1
        net = rng.choice((58, 61, 114, 117, 180, 222))
        home = f"{net}.{rng.randrange(1, 255)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        ips = (home,) if rng.random() < 0.6 else (home, f"{net}.{rng.randrange(1, 255)}.0.9")
        kind = rng.choices([k for k, _ in UA_WEIGHTS], [w for _, w in UA_WEIGHTS])[0]
        return Person(f"u-{n:05d}", level, role, company, ips, UAS[kind])

    for code in codes:
        staff = [person("L3", "legal_person", code), person("L3", "admin", code)]
        staff += [person("L3", "handler", code) for _ in range(rng.randrange(1, 4))]
        by_company[code] = staff
        people += staff
    # Citizens and unbound accounts: they log in and look, never act for a company.
    people += [person(rng.choice(("L1", "L2")), None, None) for _ in range(companies)]
    return World(svc, codes, people, by_company)


def _working_moment(rng: random.Random, day: dt.datetime, night_ok: bool = True) -> dt.datetime:
    weights = (
        HOUR_WEIGHTS if night_ok else [w if 9 <= h < 17 else 0 for h, w in enumerate(HOUR_WEIGHTS)]
    )
    hour = rng.choices(range(24), weights)[0]
    return day + dt.timedelta(hours=hour, seconds=rng.randrange(3600))


def _working_days(start: dt.datetime, days: int) -> list[dt.datetime]:
    # Monday to Friday; the planted days are chosen by the tests to avoid statutory holidays.
    out = [start + dt.timedelta(days=i) for i in range(days)]
    return [d for d in out if d.weekday() < 5]


def normal_traffic(
    world: World, rng: random.Random, n: int, start: dt.datetime, days: int = 1
) -> list[Event]:
    """About `n` innocent events over `days` days from local midnight `start`, sorted by time."""
    workdays = _working_days(start, days)
    all_days = [start + dt.timedelta(days=i) for i in range(days)]
    events: list[Event] = []
    citizens = [p for p in world.people if p.company is None]
    staff = [p for p in world.people if p.company is not None]
    while len(events) < n:
        roll = rng.random()
        if roll < 0.25:
            # Anonymous visitor reading public pages, any day.
            day = rng.choice(all_days)
            ts = _working_moment(rng, day)
            net = rng.choice((36, 39, 42, 101, 112, 183))
            ip = f"{net}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            ua = UAS[rng.choices([k for k, _ in UA_WEIGHTS], [w for _, w in UA_WEIGHTS])[0]]
            svc = rng.choice(world.services)
            for i in range(rng.randrange(1, 5)):
                path = rng.choice(
                    (
                        f"/svc/{svc}/",
                        f"/svc/{svc}/guide",
                        f"/svc/{svc}/static/app.js",
                        "/favicon.ico",
                    )
                )
                status = 404 if path == "/favicon.ico" and rng.random() < 0.3 else 200
                events.append(
                    Event(
                        ts + dt.timedelta(seconds=2 * i),
                        ip,
                        svc,
                        "view",
                        path=path,
                        status=status,
                        ua=ua,
                        bytes=rng.randrange(300, 90000),
                        duration_ms=rng.lognormvariate(3.2, 0.7),
                    )
                )
            continue
        person = rng.choice(citizens if roll < 0.4 or not workdays else staff)
        day = rng.choice(workdays if person.company else all_days)
        ts = _working_moment(rng, day, night_ok=person.company is None)
        events += _session(world, rng, person, ts)
    events.sort(key=lambda e: e.ts)
    return events


def _session(world: World, rng: random.Random, p: Person, ts: dt.datetime) -> list[Event]:
    """A login, a few views or acts for the person's company, spread over a few minutes."""
    svc = rng.choice(world.services)
    ip = rng.choice(p.ips)
    base: dict[str, Any] = {
        "ip": ip,
        "service_id": svc,
        "ua": p.ua,
        "user_id": p.user_id,
        "level": p.level,
        "role": p.role,
        "company": p.company,
    }
    out: list[Event] = []
    if rng.random() < 0.03:
        out.append(
            Event(ts, action="login_failed", method="POST", path="/auth/login", status=401, **base)
        )
        ts += dt.timedelta(seconds=20)
    out.append(Event(ts, action="login", method="POST", path="/auth/login", **base))
    for _ in range(rng.randrange(1, 8)):
        ts += dt.timedelta(seconds=rng.randrange(5, 60))
        if p.company and rng.random() < 0.3:
            action = rng.choice(("handle", "handle", "key", "export"))
            path = f"/svc/{svc}/apply/{rng.randrange(10**6)}"
            method = "POST"
        else:
            action, method = "view", "GET"
            path = (
                f"/svc/{svc}/company/{p.company}" if p.company else f"/svc/{svc}/guide?q=%E4%BC%81"
            )
        status = 500 if rng.random() < 0.004 else 200
        out.append(
            Event(
                ts,
                action=action,
                method=method,
                path=path,
                status=status,
                bytes=rng.randrange(500, 40000),
                duration_ms=rng.lognormvariate(3.5, 0.8),
                **base,
            )
        )
    if p.role == "legal_person" and rng.random() < 0.05:
        handler = next((q for q in world.by_company[p.company or ""] if q.role == "handler"), None)
        if handler:
            ts += dt.timedelta(seconds=30)
            out.append(
                Event(
                    ts,
                    action="grant_role",
                    method="POST",
                    path=f"/svc/{svc}/roles",
                    target_user=handler.user_id,
                    target_role="handler",
                    **base,
                )
            )
    if p.role == "admin" and rng.random() < 0.1:
        ts += dt.timedelta(seconds=30)
        out.append(Event(ts, action="admin", method="POST", path=f"/svc/{svc}/settings", **base))
    return out


# -- the behaviours of spec/access-log.md, and an address failing logins at the edge ---------------


def plant_all(
    world: World, rng: random.Random, day: dt.datetime, night: dt.datetime
) -> list[Event]:
    """Every behaviour once. `day` is a working day at 10:00, `night` a time off working hours."""
    staff = [p for p in world.people if p.role == "handler"]
    admins = [p for p in world.people if p.role == "admin"]
    ev: list[Event] = []

    # brute_force_login: 14 failures on one account in 4 minutes, then a success.
    victim = staff[0]
    for i in range(14):
        ev.append(
            Event(
                day + dt.timedelta(seconds=17 * i),
                "45.83.1.20",
                "svc-0001",
                "login_failed",
                method="POST",
                path="/auth/login",
                status=401,
                user_id=victim.user_id,
                level=victim.level,
                label="brute_force_login",
            )
        )
    # brute_force_ip: one address failing 120 logins in 10 minutes, seen only at the edge (a
    # login gateway answers them before the portal writes its audit log).
    for i in range(120):
        ev.append(
            Event(
                day + dt.timedelta(hours=7, seconds=5 * i),
                "45.95.147.9",
                "svc-0001",
                "login_failed",
                method="POST",
                path="/auth/login",
                status=401,
                edge_only=True,
                label="brute_force_ip",
            )
        )
    # credential_stuffing: one address, 40 accounts, one or two tries each, in 8 minutes.
    for i, p in enumerate(world.people[10:50]):
        ev.append(
            Event(
                day + dt.timedelta(minutes=30, seconds=12 * i),
                "185.220.101.4",
                "svc-0001",
                "login_failed",
                method="POST",
                path="/auth/login",
                status=401,
                user_id=p.user_id,
                level=p.level,
                label="credential_stuffing",
            )
        )
    # scanner_probing: sensitive files and missing pages, edge only.
    probes = [
        "/.env",
        "/.git/config",
        "/wp-admin/",
        "/phpmyadmin/",
        "/admin.php",
        "/.svn/entries",
        "/config.php.bak",
        "/backup.sql",
        "/actuator/env",
        "/server-status",
    ]
    probes += [f"/old/{i}.php" for i in range(50)]
    for i, path in enumerate(probes):
        ev.append(
            Event(
                day + dt.timedelta(hours=1, seconds=i),
                "198.51.100.7",
                "svc-0002",
                "view",
                path=path,
                status=404,
                bytes=150,
                edge_only=True,
                label="scanner_probing",
                ua="Mozilla/5.0 zgrab/0.x",
            )
        )
    # request_flood: one address, 3,000 requests in 5 minutes.
    for i in range(3000):
        ev.append(
            Event(
                day + dt.timedelta(hours=2, seconds=i // 10),
                "192.0.2.50",
                "svc-0003",
                "view",
                path=f"/svc/svc-0003/guide?p={i % 7}",
                label="request_flood",
                ua="python-requests/2.31",
            )
        )
    # scraping: one handler viewing 400 companies in an hour and a half.
    scr = staff[1]
    for i, code in enumerate(world.companies[:300] * 2):
        ev.append(
            Event(
                day + dt.timedelta(hours=3, seconds=9 * i),
                scr.ips[0],
                "svc-0004",
                "view",
                path=f"/svc/svc-0004/company/{code}",
                user_id=scr.user_id,
                level=scr.level,
                role=scr.role,
                company=code,
                label="scraping",
                ua=scr.ua,
            )
        )
    # account_sharing: one account from 8 networks in 20 minutes.
    sh = staff[2]
    for i in range(8):
        ev.append(
            Event(
                day + dt.timedelta(hours=4, minutes=2 * i),
                f"{20 + 13 * i}.{i + 7}.3.4",
                "svc-0005",
                "login",
                method="POST",
                path="/auth/login",
                user_id=sh.user_id,
                level=sh.level,
                role=sh.role,
                company=sh.company,
                label="account_sharing",
            )
        )
    # off_hours_privileged: an admin changing settings and granting at night.
    ad = admins[0]
    handler = world.by_company[ad.company or ""][-1]
    for i, action in enumerate(("admin", "admin", "grant_role")):
        ev.append(
            Event(
                night + dt.timedelta(minutes=i),
                ad.ips[0],
                "svc-0006",
                action,
                method="POST",
                path="/svc/svc-0006/settings",
                user_id=ad.user_id,
                level=ad.level,
                role=ad.role,
                company=ad.company,
                target_user=handler.user_id if action == "grant_role" else None,
                target_role="handler" if action == "grant_role" else None,
                label="off_hours_privileged",
            )
        )
    # role_grant_violation: a handler making someone an admin.
    h = staff[3]
    ev.append(
        Event(
            day + dt.timedelta(hours=5),
            h.ips[0],
            "svc-0006",
            "grant_role",
            method="POST",
            path="/svc/svc-0006/roles",
            user_id=h.user_id,
            level=h.level,
            role="handler",
            company=h.company,
            target_user=staff[4].user_id,
            target_role="admin",
            label="role_grant_violation",
        )
    )
    # level_violation: an L2 account handling business for a company.
    low = next(p for p in world.people if p.level == "L2")
    for i in range(3):
        ev.append(
            Event(
                day + dt.timedelta(hours=5, minutes=10 + i),
                low.ips[0],
                "svc-0007",
                "handle",
                method="POST",
                path="/svc/svc-0007/apply/1",
                user_id=low.user_id,
                level="L2",
                role="handler",
                company=world.companies[5],
                label="level_violation",
            )
        )
    # vendor_activity: vendor staff working on the portal.
    for i in range(5):
        ev.append(
            Event(
                day + dt.timedelta(hours=6, minutes=i),
                "10.20.0.8",
                "svc-0008",
                "admin",
                method="POST",
                path="/svc/svc-0008/ops/deploy",
                user_id="u-vendor-1",
                level="L3",
                role="admin",
                vendor="acme-it",
                label="vendor_activity",
            )
        )
    # error_burst: svc-0009 failing a third of 600 requests in ten minutes.
    for i in range(600):
        ev.append(
            Event(
                day + dt.timedelta(hours=6, minutes=30, seconds=i),
                f"112.1.{i % 200}.9",
                "svc-0009",
                "view",
                path="/svc/svc-0009/guide",
                status=502 if i % 3 == 0 else 200,
                label="error_burst",
            )
        )
    return ev


# -- writing the two formats ----------------------------------------------------------------------


def _escape_nginx(text: str) -> str:
    # nginx escapes ", \ and every byte outside 32..126 as \xXX (escape=default).
    out = []
    for b in text.encode():
        out.append(chr(b) if 32 <= b <= 126 and b not in (0x22, 0x5C) else f"\\x{b:02X}")
    return "".join(out)


ESCAPED_WORD = "办事指南"
"""The Chinese word `with_escapes` puts in a request target (nginx writes it as `\\xE5\\x8A…`)."""


def with_escapes(e: Event) -> Event:
    """The event as it would be with what nginx escapes: a user agent holding a quoted word
    (written `\\x22`) and raw UTF-8 in the request target (written `\\xE5\\x8A…`).

    A GET under /svc/ gets the word as a path segment after the service's (the service stays
    the same); other requests get it as a query parameter, so that their paths (and the rules
    that read them, such as failed logins at /auth/login) stay the same.
    """
    path, query = e.path.partition("?")[::2]
    if e.method == "GET" and path.startswith("/svc/"):
        path = path + ("" if path.endswith("/") else "/") + ESCAPED_WORD
    else:
        query = f"{query}&kw={ESCAPED_WORD}" if query else f"kw={ESCAPED_WORD}"
    target = f"{path}?{query}" if query else path
    return replace(e, path=target, ua=f'{e.ua} Channel/"portal"')


def nginx_time(ts: dt.datetime) -> str:
    """Format a time the way nginx writes $time_local (here in Asia/Shanghai)."""
    t = ts.astimezone(SHANGHAI)
    clock = f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    return f"{t.day:02d}/{MONTHS[t.month - 1]}/{t.year}:{clock} +0800"


def nginx_line(e: Event) -> str:
    """One nginx `combined` line with request time and X-Forwarded-For."""
    ua = e.ua if e.ua.isascii() and '"' not in e.ua else _escape_nginx(e.ua)
    path = e.path if e.path.isascii() else _escape_nginx(e.path)
    return (
        f'{e.ip} - - [{nginx_time(e.ts)}] "{e.method} {path} HTTP/1.1" {e.status} {e.bytes} '
        f'"-" "{ua}" {e.duration_ms / 1000:.3f} "-"\n'
    )


def json_line(e: Event) -> str:
    """One line of the portal's JSON audit log."""
    obj: dict[str, Any] = {
        "ts": e.ts.astimezone(SHANGHAI).isoformat(timespec="milliseconds"),
        "ip": e.ip,
        "user_id": e.user_id,
        "level": e.level,
        "role": e.role,
        "company": e.company,
        "vendor": e.vendor,
        "service_id": e.service_id,
        "action": e.action,
        "method": e.method,
        "path": e.path,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": round(e.duration_ms, 1),
        "ua": e.ua,
    }
    if e.target_user:
        obj["target_user"] = e.target_user
        obj["target_role"] = e.target_role
    return json.dumps(obj, ensure_ascii=False) + "\n"


def write_logs(events: Iterable[Event], nginx: Path | None, audit: Path | None) -> None:
    """Write the events to an nginx log and a JSON audit log (gzip when the name ends .gz)."""

    def opener(path: Path) -> Any:
        return (
            gzip.open(path, "wt", encoding="utf-8")
            if path.suffix == ".gz"
            else path.open("w", encoding="utf-8")
        )

    ng = opener(nginx) if nginx else None
    js = opener(audit) if audit else None
    try:
        for e in events:
            if ng:
                ng.write(nginx_line(e))
            if js and not e.edge_only:
                js.write(json_line(e))
    finally:
        for f in (ng, js):
            if f:
                f.close()


def local(y: int, m: int, d: int, h: int = 0, mi: int = 0) -> dt.datetime:
    """A time in Asia/Shanghai."""
    return dt.datetime(y, m, d, h, mi, tzinfo=SHANGHAI)


def merged(*parts: Sequence[Event]) -> list[Event]:
    """All events of the parts, sorted by time."""
    out = [e for part in parts for e in part]
    out.sort(key=lambda e: e.ts)
    return out


def stream(
    world: World,
    rng: random.Random,
    n: int,
    start: dt.datetime,
    days: int,
    escaped: float = 0.0,
) -> Iterator[Event]:
    """Normal traffic in day-sized slices, so a million events never sit in memory at once.

    `escaped` is the share of events (0 to 1) given what nginx escapes (`with_escapes`).
    """
    per_day = max(1, n // days)
    for i in range(days):
        day = start + dt.timedelta(days=i)
        # Weekends are quieter; normal_traffic keeps company staff to working days.
        events = normal_traffic(world, rng, per_day if day.weekday() < 5 else per_day // 3, day)
        if escaped <= 0:  # no draws: the plain stream stays the same for a seed
            yield from events
            continue
        for e in events:
            yield with_escapes(e) if rng.random() < escaped else e
