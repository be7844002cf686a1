"""A real headless Chromium (Debian's `chromium`, installed by hack/chromium/install.sh) driven
over the Chrome DevTools Protocol with aiohttp's WebSocket client: open a page, evaluate
JavaScript in it, click, take screenshots, and collect every console error and uncaught
exception the page raises."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "hack" / "chromium" / "install.sh"


def chromium_binary() -> str:
    """chromium's path, installed by the project's script when missing."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{INSTALL_SCRIPT} failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return result.stdout.strip().splitlines()[-1]


@dataclass
class Chromium:
    """The browser process, with its DevTools endpoint on a free loopback port."""

    profile: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> None:
        self.profile.mkdir(parents=True, exist_ok=True)
        log = (self.profile.parent / "chromium.log").open("ab")
        self.process = subprocess.Popen(
            [
                chromium_binary(),
                "--headless=new",
                "--no-sandbox",  # the tests run as root, where chromium's sandbox refuses to start
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "--window-size=1280,900",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if active.exists() and active.read_text().strip():
                self.port = int(active.read_text().splitlines()[0])
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"chromium did not start; see {self.profile.parent / 'chromium.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Page:
    """One browser tab over its DevTools WebSocket."""

    session: aiohttp.ClientSession
    ws: aiohttp.ClientWebSocketResponse
    target_id: str
    port: int
    errors: list[str] = field(default_factory=list)
    # Answers with an HTTP error status (Chrome logs each): a refusal a test provoked on
    # purpose lands here, and the test says which it expects.
    failed_requests: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _listeners: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int) -> Page:
        session = aiohttp.ClientSession()
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
            target = await response.json(content_type=None)
        ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = cls(session, ws, target["id"], port)
        page._reader = asyncio.create_task(page._read())
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with self.session.get(
                f"http://127.0.0.1:{self.port}/json/close/{self.target_id}"
            ):
                pass
        await self.ws.close()
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.session.close()

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._waiting.pop(data["id"], None)
                if future and not future.done():
                    future.set_result(data)
                continue
            method, params = data.get("method", ""), data.get("params", {})
            self._note_error(method, params)
            for listener in list(self._listeners):
                listener(method, params)

    def _note_error(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append("console: " + " ".join(args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = (details.get("exception") or {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            if entry.get("source") == "network":
                self.failed_requests.append(f"{entry.get('url')}: {entry.get('text')}")
                return
            where = f"{entry.get('source')} {entry.get('url', '')}"
            self.errors.append(f"log ({where}): {entry.get('text')}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 60)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    async def goto(self, url: str) -> None:
        loaded = asyncio.get_running_loop().create_future()

        def on_event(method: str, _: dict[str, Any]) -> None:
            if method == "Page.loadEventFired" and not loaded.done():
                loaded.set_result(None)

        self._listeners.append(on_event)
        try:
            await self.send("Page.navigate", url=url)
            await asyncio.wait_for(loaded, 30)
        finally:
            self._listeners.remove(on_event)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, what: str, seconds: float = 60) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + seconds
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.eval(expression)
            if last:
                return last
            await asyncio.sleep(0.3)
        raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}; last {last!r}")

    async def click(self, selector: str) -> None:
        await self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    async def text(self, selector: str) -> str:
        return str(
            await self.eval(
                f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
            )
        )

    async def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=mobile,
        )

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = await self.eval(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        shot = await self.send("Page.captureScreenshot", **params)
        await asyncio.to_thread(_write, path, base64.b64decode(shot["data"]))
        return path


async def eventually(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}; last {last!r}")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
