"""A headless Chromium driven over the Chrome DevTools Protocol (CDP), for the browser tests.

Only what the tests need: launch Debian's chromium with a fake microphone that plays a WAV
file, attach to its page over the DevTools WebSocket with the ``websockets`` package, send
commands, evaluate JavaScript, collect console errors and (after ``Network.enable``) the text
the page's WebSockets received.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str | None:
    """Debian's chromium if installed (``.ci/run`` installs it), else any chromium on PATH."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


# The marks of every browser test module: `pytestmark = BROWSER_TEST`.
BROWSER_TEST = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None,
        reason="chromium is not installed (apt-get install chromium; .ci/run installs it)",
    ),
]


class DevToolsError(RuntimeError):
    """A CDP command failed or the browser did not answer in time."""


class Page:
    """One page target: ``send`` a CDP command, ``evaluate`` JavaScript, gather errors."""

    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console_errors: list[str] = []
        self.websocket_received: list[str] = []  # text frames, in order, once Network is enabled
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._socket:
            message = json.loads(raw)
            if "id" in message:
                future = self._waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self._on_event(message["method"], message.get("params", {}))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.console_errors.append(
                details.get("exception", {}).get("description", details.get("text", ""))
            )
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(" ".join(str(a.get("value", "")) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.console_errors.append(params["entry"].get("text", ""))
        elif method == "Network.webSocketFrameReceived" and params["response"]["opcode"] == 1:
            self.websocket_received.append(params["response"]["payloadData"])

    async def send(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        await self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        try:
            reply = await asyncio.wait_for(future, timeout_s)
        except TimeoutError as e:
            raise DevToolsError(f"{method} got no answer in {timeout_s:g} s") from e
        if "error" in reply:
            raise DevToolsError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    async def evaluate(self, expression: str, user_gesture: bool = False) -> Any:
        """Value of a JavaScript expression (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
            userGesture=user_gesture,
        )
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30.0, poll_s: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise DevToolsError(f"{expression!r} stayed falsy for {timeout_s:g} s")
            await asyncio.sleep(poll_s)

    async def screenshot(self, path: Path) -> Path:
        result = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._socket.close()


def _debugging_port(profile: Path, process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Chromium started with ``--remote-debugging-port=0`` writes its port to this file."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevToolsError(f"chromium exited with code {process.returncode}")
        if port_file.exists():
            lines = port_file.read_text().splitlines()
            if lines and lines[0].isdigit():
                return int(lines[0])
        time.sleep(0.1)
    raise DevToolsError(f"chromium wrote no DevToolsActivePort in {timeout_s:g} s")


def _page_socket_url(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
        targets = json.load(response)
    pages = [t for t in targets if t.get("type") == "page"]
    if not pages:
        raise DevToolsError(f"chromium has no page target: {targets}")
    return pages[0]["webSocketDebuggerUrl"]


@contextlib.asynccontextmanager
async def chromium_page(
    fake_microphone_wav: Path,
    profile: Path,
    log_path: Path,
    window: str = "1000,1300",
    offline: bool = False,
) -> AsyncIterator[Page]:
    """A headless chromium whose microphone plays ``fake_microphone_wav`` (looped); with
    ``offline``, no host name resolves except loopback addresses, as on a machine without
    internet (a CDN's script then fails to load)."""
    binary = chromium_path()
    if binary is None:
        raise DevToolsError("chromium is not installed")
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_microphone_wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        "--remote-debugging-port=0",
        *(["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"] if offline else []),
        "about:blank",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        port = await asyncio.to_thread(_debugging_port, profile, process, 30.0)
        url = await asyncio.to_thread(_page_socket_url, port)
        socket = await websockets.connect(url, max_size=64 * 2**20)
        page = Page(socket)
        try:
            for domain in ("Page", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            yield page
        finally:
            await page.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
