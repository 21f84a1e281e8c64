"""Real headless Chromium driven over its DevTools protocol (a websocket, aiohttp's client).

No browser is downloaded: the test uses Debian's /usr/bin/chromium (or $CHROMIUM), and skips
with a message where there is none.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp


def chromium_path() -> str | None:
    """The Chromium to drive: $CHROMIUM, else chromium on PATH, else None."""
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


class Tab:
    """One page of the browser: send DevTools commands, evaluate script, wait for text."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events in between are skipped)."""
        ident = next(self.ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a script expression in the page."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20) -> None:
        """Wait until a script expression is true in a loaded page."""
        deadline = time.monotonic() + timeout
        check = f"document.readyState === 'complete' && !!({expression})"
        while time.monotonic() < deadline:
            try:
                if await self.evaluate(check):
                    return
            except RuntimeError:
                pass  # the page was navigating away while asked
            await asyncio.sleep(0.1)
        text = await self.evaluate("document.body ? document.body.innerText : ''")
        raise AssertionError(f"the page never showed {expression}; it shows:\n{text}")

    async def text(self) -> str:
        """What a person reads on the page."""
        value = await self.evaluate("document.body.innerText")
        return str(value)

    async def screenshot(self, path: Path, width: int, height: int) -> None:
        """A PNG of the page at this size in CSS pixels."""
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,  # a phone: no scrollbar taking its width
        )
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_tab(program: str, folder: Path) -> AsyncIterator[Tab]:
    """Start headless Chromium with a profile in `folder` and attach to its first tab."""
    process = await asyncio.create_subprocess_exec(
        program,
        "--headless",
        "--no-sandbox",  # tests may run as root in a container
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--remote-debugging-port=0",
        f"--user-data-dir={folder}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        active = folder / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not active.exists() or not active.read_text().strip():
            if time.monotonic() > deadline or process.returncode is not None:
                raise AssertionError("Chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = active.read_text().split()[0]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = json.loads(await answer.text())
            page = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tab = Tab(ws)
                await tab.send("Page.enable")
                await tab.send("Runtime.enable")
                yield tab
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
