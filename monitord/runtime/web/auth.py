"""Who is asking: API tokens, their roles, and the check every protected handler makes.

Tokens live in the config only as their SHA-256 (`[[api.tokens]]`), so the config file never
holds a secret; a client sends the token itself as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from monitord.config import API_ROLES, ApiRole, ApiSettings, ApiToken

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER = web.RequestKey("caller", ApiToken)
"""The token a request was authenticated with, set by `require`."""


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The hex SHA-256 of a token, as `[[api.tokens]] sha256` holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


def identify(settings: ApiSettings, token: str) -> ApiToken | None:
    """The configured token that `token` is, or None. Compares every hash in constant time."""
    digest = token_hash(token)
    found = None
    for candidate in settings.tokens:
        if hmac.compare_digest(candidate.sha256, digest):
            found = candidate
    return found


def bearer(request: web.Request) -> str | None:
    """The token of a request's `Authorization: Bearer …` header, if it has one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def allows(role: ApiRole, needed: ApiRole) -> bool:
    """Whether a token of `role` may do what needs `needed` (viewer < oncall < admin)."""
    return API_ROLES.index(role) >= API_ROLES.index(needed)


# Browsers sign in once with their token (the page's /login form) and then carry a session
# cookie. Sessions live in the daemon's memory, keyed by a random id: nothing to forge, nothing
# to sign, and a restart signs everyone out (they sign in again with their token).

SESSION_COOKIE = "monitord_session"
LOGIN_COOKIE = "monitord_login"
"""The sign-in form's own CSRF token, submitted twice (cookie and form), before any session."""
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
"""Sessions kept at most; past it, the oldest is signed out first (memory stays bounded)."""
FAILED_SIGN_INS = 5
"""Failed sign-ins allowed per client address in FAILED_WINDOW seconds; more get 429."""
FAILED_WINDOW = 60.0
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class BrowserSession:
    """A signed-in browser: whose token (its hash, so a token removed from the config ends
    its sessions at once), the CSRF token its forms carry, and when it ends."""

    sha256: str
    csrf: str
    expires: float


class SignIns:
    """The signed-in browsers and the failed sign-ins per client address, in memory.

    `now` is a monotonic clock in seconds (injected by tests).
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.sessions: dict[str, BrowserSession] = {}
        self.failures: dict[str, deque[float]] = {}

    def start(self, caller: ApiToken) -> tuple[str, BrowserSession]:
        """A new session for `caller`: its id (the cookie's value) and the session."""
        now = self.now()
        for ident in [i for i, s in self.sessions.items() if s.expires <= now]:
            del self.sessions[ident]
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]  # the oldest (dicts keep order)
        ident = secrets.token_urlsafe(32)
        session = BrowserSession(caller.sha256, secrets.token_urlsafe(32), now + SESSION_SECONDS)
        self.sessions[ident] = session
        return ident, session

    def find(self, ident: str) -> BrowserSession | None:
        """The live session of a cookie's value, or None (unknown or expired)."""
        session = self.sessions.get(ident)
        if session is not None and session.expires <= self.now():
            del self.sessions[ident]
            return None
        return session

    def end(self, ident: str) -> None:
        """Sign a session out."""
        self.sessions.pop(ident, None)

    def wait_seconds(self, address: str) -> int:
        """How long `address` must wait before trying again (0: it may try now)."""
        now = self.now()
        recent = self.failures.get(address)
        while recent and recent[0] <= now - FAILED_WINDOW:
            recent.popleft()
        if not recent:
            self.failures.pop(address, None)
            return 0
        if len(recent) < FAILED_SIGN_INS:
            return 0
        return max(1, math.ceil(recent[0] + FAILED_WINDOW - now))

    def failed(self, address: str) -> None:
        """Count a failed sign-in from `address`."""
        if len(self.failures) >= MAX_SESSIONS and address not in self.failures:
            self.failures.pop(next(iter(self.failures)))
        self.failures.setdefault(address, deque()).append(self.now())


SIGN_INS = web.AppKey("monitord_sign_ins", SignIns)
SESSION = web.RequestKey("browser_session", BrowserSession)
"""The browser session a request came with (set when its cookie signed it in)."""


async def signed_in(request: web.Request, settings: ApiSettings) -> ApiToken | None:
    """The token a request's session cookie stands for, or None.

    A request that changes something (not GET or HEAD) must also carry the session's CSRF
    token, as the form field `csrf` or the X-CSRF-Token header: without it, 403.
    """
    ident = request.cookies.get(SESSION_COOKIE)
    sign_ins = request.app.get(SIGN_INS)
    if not ident or sign_ins is None:
        return None
    session = sign_ins.find(ident)
    if session is None:
        return None
    caller = next((t for t in settings.tokens if t.sha256 == session.sha256), None)
    if caller is None:
        sign_ins.end(ident)  # its token was taken out of the config
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            field = (await request.post()).get(CSRF_FIELD)
            sent = field if isinstance(field, str) else None
        if sent is None or not hmac.compare_digest(sent, session.csrf):
            raise web.HTTPForbidden(
                reason="the form's CSRF token is missing or wrong: reload the page and try again"
            )
    request[SESSION] = session
    return caller
