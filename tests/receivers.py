"""Real alert receivers on loopback: a webhook for apprise's json://, and an SMTP server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import free_port


@dataclass
class Webhook:
    """What a chat webhook received; `failing` makes it answer 500 like a channel that is down,
    `redirect_to` a 307 to that URL."""

    received: list[dict[str, Any]] = field(default_factory=list)
    failing: bool = False
    refused: int = 0
    url: str = ""
    redirect_to: str = ""

    def apprise_url(self, path: str = "hook") -> str:
        """The json:// URL that points apprise at this endpoint."""
        return self.url.replace("http://", "json://") + "/" + path

    async def handle(self, request: web.Request) -> web.Response:
        if self.redirect_to:
            raise web.HTTPTemporaryRedirect(self.redirect_to)
        if self.failing:
            self.refused += 1
            return web.Response(status=500, text="down")
        body = json.loads(await request.read())
        self.received.append(
            {
                "path": request.path,
                "title": body.get("title"),
                "message": body.get("message"),
                "key": request.headers.get("X-Monitord-Key"),
            }
        )
        return web.json_response({"errcode": 0})


@asynccontextmanager
async def serve_webhook(
    hook: Webhook | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[Webhook]:
    """Serve a Webhook on a free port of a loopback address (127.0.0.1 unless told)."""
    hook = hook or Webhook()
    app = web.Application()
    app.router.add_post("/{tail:.*}", hook.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    hook.url = f"http://{host}:{runner.addresses[0][1]}"
    try:
        yield hook
    finally:
        await runner.cleanup()


@dataclass
class Mailbox:
    """Messages an SMTP server on loopback received, with the login it saw."""

    messages: list[Message] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    def subjects(self) -> list[str]:
        return [str(make_header(decode_header(m["Subject"]))) for m in self.messages]

    def bodies(self) -> list[str]:
        out = []
        for m in self.messages:
            part = m.get_payload(0) if m.is_multipart() else m
            assert isinstance(part, Message)
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out.append(payload.decode(part.get_content_charset() or "utf-8"))
        return out

    def parts(self, content_type: str) -> list[str]:
        """The decoded parts of this type (text/plain, text/html) of every message, in order."""
        out = []
        for m in self.messages:
            for part in m.walk():
                if part.get_content_type() == content_type:
                    payload = part.get_payload(decode=True)
                    assert isinstance(payload, bytes)
                    out.append(payload.decode(part.get_content_charset() or "utf-8"))
        return out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


@contextmanager
def serve_smtp(port: int | None = None) -> Iterator[tuple[Mailbox, int]]:
    """Serve an SMTP server that takes any login on a loopback port (a free one unless given):
    its mailbox, its port."""
    mailbox = Mailbox()

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        mailbox.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=True)

    port = port or free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=authenticate, auth_require_tls=False
    )
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()
