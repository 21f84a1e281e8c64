"""A portal on loopback that serves a catalogue per spec/catalogue-api.md and misbehaves on cue."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "s3cret-portal-token"
MIB = 1024 * 1024
ENDLESS_MIB = 256
"""How long an "endless" answer goes on before the connection drops."""


def make_service(number: int, **changes: Any) -> dict[str, Any]:
    """A complete, valid SERVICE record with an Appendix A filing."""
    sid = f"svc-{number:04d}"
    service: dict[str, Any] = {
        "id": sid,
        "name": f"测试服务{number}",
        "type": "government",
        "permission": "handle",
        "source": "bureau",
        "provider": "苏州市测试局",
        "developer": "测试开发公司",
        "coverage": ["all"],
        "access_method": "https",
        "max_concurrency": 100,
        "url": f"https://svc{number}.example.test/",
        "probe": {"path": "/health", "method": "GET", "expect_status": [200]},
        "return_codes": {"0": "成功", "1001": "令牌无效"},
        "manual_url": "https://docs.example.test/manual.pdf",
        "flowchart_url": "https://docs.example.test/flow.png",
        "security_plan_url": "https://docs.example.test/sec.pdf",
        "faq_url": "https://docs.example.test/faq",
        "emergency_plan_url": "https://docs.example.test/emergency.pdf",
        "description": "测试用服务",
        "planned_release": "2026-03-01",
        "review": {"opinion": "同意", "signed_by": "数据局", "signed_at": "2026-02-01T10:00:00"},
        "status": "online",
        "suspension": None,
        "offline_notice": None,
        "updated_at": "2026-10-01T09:00:00+08:00",
        "contacts": [{"name": "张三", "role": "oncall", "apprise": "mailto://a@example.test"}],
    }
    service.update(changes)
    return service


@dataclass
class FakePortal:
    """State and misbehaviour of the fake portal.

    `faults` maps a page number to what goes wrong there: "timeout", "500", "html",
    "truncate", "401", "bad-next", "ignore-page" (from that page on, page 1 is served again with
    a later page named next, whatever was asked for), "endless" (a body that goes on and on),
    "endless-gzip" (the same, gzip-compressed); `fault_times` says how many requests it lasts
    (default: all).
    `bodies` maps a page number to the exact bytes served for it (status 200, `content_type`,
    `headers`), for answers json.dumps cannot write.
    """

    services: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[int, str] = field(default_factory=dict)
    fault_times: int = 10_000
    total_offset: int = 0
    delay: float = 0.0
    bodies: dict[int, bytes] = field(default_factory=dict)
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def etag(self) -> str:
        body = json.dumps(self.services, sort_keys=True).encode()
        return '"' + hashlib.sha256(body).hexdigest()[:12] + '"'

    async def handle(self, request: web.Request) -> web.StreamResponse:
        page = int(request.query["page"])
        size = int(request.query["page_size"])
        self.requests.append({"page": page, "headers": dict(request.headers)})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.delay:
            await asyncio.sleep(self.delay)
        fault = self.faults.get(page)
        if fault is None and "ignore-page" in self.faults.values():
            fault = "ignore-page" if page > min(self.faults) else None
        if fault and self.fault_times > 0:
            self.fault_times -= 1
            if fault == "timeout":
                await asyncio.sleep(5)
            elif fault == "500":
                return web.Response(status=502, text="Bad Gateway")
            elif fault == "html":
                return web.Response(
                    text="<!DOCTYPE html><html><body>维护中</body></html>", content_type="text/html"
                )
            elif fault == "401":
                return web.json_response({"error": "unauthorized"}, status=401)
            elif fault == "truncate":
                body = json.dumps(self._page(page, size)).encode()
                response = web.StreamResponse(headers={"Content-Type": "application/json"})
                response.content_length = len(body)
                await response.prepare(request)
                await response.write(body[: len(body) // 2])
                assert request.transport is not None
                request.transport.close()
                return response
            elif fault == "ignore-page":
                document = self._page(1, size)
                document["next"] = page + 1
                return web.json_response(document)
            elif fault in ("endless", "endless-gzip"):
                return await self._endless(request, compressed=fault == "endless-gzip")
            elif fault == "bad-next":
                document = self._page(page, size)
                document["next"] = page
                return web.json_response(document)
        if page in self.bodies:
            headers = {"Content-Type": self.content_type, **self.headers}
            return web.Response(body=self.bodies[page], headers=headers)
        if page == 1 and request.headers.get("If-None-Match") == self.etag():
            return web.Response(status=304, headers={"ETag": self.etag()})
        return web.json_response(self._page(page, size), headers={"ETag": self.etag()})

    async def _endless(self, request: web.Request, compressed: bool) -> web.StreamResponse:
        """A 200 JSON answer that goes on until the client hangs up, or for ENDLESS_MIB (then
        the connection drops: a client that reads it all fails, but does not exhaust the test
        machine's memory); gzip-compressed, each MiB of it is 3 KiB sent."""
        record = json.dumps(make_service(1)).encode() + b", "
        head, piece = b'{"page": 1, "services": [', record * (MIB // len(record))
        headers = {"Content-Type": "application/json"}
        if compressed:
            # Each piece is compressed on its own (a full flush forgets what came before), so
            # the same compressed bytes may be sent again and again.
            packer = zlib.compressobj(9, zlib.DEFLATED, 31)
            head = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
            piece = packer.compress(piece) + packer.flush(zlib.Z_FULL_FLUSH)
            headers["Content-Encoding"] = "gzip"
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await response.write(head)
        with contextlib.suppress(ConnectionError):  # the client hung up
            for _ in range(ENDLESS_MIB):
                await response.write(piece)
            assert request.transport is not None
            request.transport.close()
        return response

    def _page(self, page: int, size: int) -> dict[str, Any]:
        chunk = self.services[(page - 1) * size : page * size]
        more = page * size < len(self.services)
        return {
            "page": page,
            "page_size": size,
            "total": len(self.services) + self.total_offset,
            "next": page + 1 if more else None,
            "services": copy.deepcopy(chunk),
        }


@asynccontextmanager
async def serve_portal(portal: FakePortal) -> AsyncIterator[FakePortal]:
    """Serve the fake portal on a free loopback port; portal.url is set while it runs."""
    app = web.Application()
    app.router.add_get("/api/v1/services", portal.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    portal.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield portal
    finally:
        await runner.cleanup()
