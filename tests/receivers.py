"""Real alert receivers on loopback: a webhook for apprise's json://, an SMTP server, and the
chat robots' APIs (DingTalk, WeCom, Feishu) behind a CONNECT proxy, for apprise's dingtalk://,
wecombot:// and feishu://, which post to fixed https hosts."""

from __future__ import annotations

import asyncio
import json
import ssl
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
from trustme import CA

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
    delay: float = 0.0
    """Seconds it takes to answer (after it has the message), as a slow receiver does."""
    hold: asyncio.Event | None = None
    """When given, it answers only once this is set (after it has the message), as a receiver
    that hangs does."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a message has arrived."""

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
        self.arrived.set()
        await asyncio.sleep(self.delay)
        if self.hold is not None:
            await self.hold.wait()
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


ROBOT_HOSTS = ("oapi.dingtalk.com", "qyapi.weixin.qq.com", "open.feishu.cn")


@dataclass
class Robots:
    """What the chat robots' APIs received (host and JSON body, in order); `answers` are the
    bodies they answer next with HTTP 200 (then {"errcode": 0, "errmsg": "ok"}), as DingTalk and
    WeCom say a refusal; a WeCom message past 2,048 bytes is refused (40058) as WeCom does.
    Reached by a CONNECT proxy: `env` is what points requests at it."""

    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)
    host_answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Bodies one host answers next, before `answers`: channels are sent to at once, so which
    robot is asked first is not known."""
    env: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def content(said: dict[str, Any]) -> str:
        """The text of a DingTalk or WeCom robot's message (title and body, as apprise joins)."""
        return str(said.get("text", {}).get("content", ""))

    def contents(self) -> list[str]:
        """The text of each message received, in order."""
        return [self.content(said) for _, said in self.received]

    async def _exchange(self, host: str, reader: asyncio.StreamReader) -> bytes | None:
        """Read one HTTP request through the tunnel and the answer it gets; None at the end."""
        if not await reader.readline():
            return None
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        said = json.loads(body)
        self.received.append((host, said))
        mine = self.host_answers.get(host)
        if mine:
            answer = mine.pop(0)
        else:
            answer = self.answers.pop(0) if self.answers else {"errcode": 0, "errmsg": "ok"}
        if host == "qyapi.weixin.qq.com" and len(self.content(said).encode()) > 2048:
            answer = {"errcode": 40058, "errmsg": "content exceed max length 2048"}
        out = json.dumps(answer).encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(out)}"
        return head.encode() + b"\r\n\r\n" + out

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tls: ssl.SSLContext
    ) -> None:
        """Open the CONNECT tunnel, play the robot's host in TLS, answer each request."""
        request = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        host = request.decode().split(" ")[1].partition(":")[0]
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await writer.start_tls(tls)
        while (out := await self._exchange(host, reader)) is not None:
            writer.write(out)
            await writer.drain()
        writer.close()


@asynccontextmanager
async def serve_robots(folder: str) -> AsyncIterator[Robots]:
    """The chat robots' APIs behind a CONNECT proxy on loopback, their CA written in `folder`."""
    ca = CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*ROBOT_HOSTS).configure_cert(tls)
    bundle = f"{folder}/robots-ca.pem"
    ca.cert_pem.write_to_path(bundle)
    robots = Robots()
    server = await asyncio.start_server(lambda r, w: robots.handle(r, w, tls), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    robots.env = {
        "HTTPS_PROXY": f"http://127.0.0.1:{port}",
        "REQUESTS_CA_BUNDLE": bundle,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    try:
        yield robots
    finally:
        server.close()
