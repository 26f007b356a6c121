"""A headless Chromium driven over the Chrome DevTools protocol on a pipe (``--remote-debugging-pipe``).

Why a pipe and not selenium or a websocket: the browser reads commands from fd 3 and writes replies
to fd 4 as NUL-terminated JSON, so the test needs no driver binary, no port and no extra package.
``open_page`` loads one file and records what a trader's browser would show going wrong: console
errors, uncaught exceptions, log errors, and every network request (a self-contained report makes
exactly one: the file itself).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",
)


def chromium_path() -> str:
    """The Chromium binary; under CI=true its absence is a failure, elsewhere the test is skipped."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path:
        return path
    message = f"headless Chromium not found at {CHROMIUM} (apt-get install -y chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PageLog:
    """What happened while a page loaded."""

    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Browser:
    """One headless Chromium process with a fresh profile, spoken to over the DevTools pipe."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self._profile = tempfile.mkdtemp(prefix="gridctl-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # The child must see the command pipe on fd 3 and the reply pipe on fd 4.
        r_hi, w_hi = os.dup(to_child_r), os.dup(from_child_w)
        os.close(to_child_r)
        os.close(from_child_w)

        def wire() -> None:
            os.dup2(r_hi, 3)
            os.dup2(w_hi, 4)

        self._proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self._profile}", f"--window-size={width},{height}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Kept open by number: fds 3 and 4 are what ``wire`` made them in the child.
            pass_fds=(3, 4),
            preexec_fn=wire,
        )
        os.close(r_hi)
        os.close(w_hi)
        self._buf = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:
            self._proc.kill()
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\0")
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=60.0):
        """Send one command and return its result; events arriving meanwhile are queued."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _wait_event(self, method: str, session: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    return self._events.pop(i)
            self._events.append(self._read_message(deadline))

    def open_page(self, path: Path, timeout: float = 90.0) -> tuple[str, PageLog]:
        """Load ``path`` in a new tab; returns (session id, what the page did while loading)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self._events.clear()
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        self._wait_event("Page.loadEventFired", session, timeout)
        return session, self._log(session)

    def _log(self, session: str) -> PageLog:
        log = PageLog()
        for ev in self._events:
            if ev.get("sessionId") != session:
                continue
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                log.requests.append(p["request"]["url"])
            elif method == "Network.loadingFailed":
                log.failed.append(f"{p.get('errorText')} ({p.get('requestId')})")
            elif method == "Runtime.exceptionThrown":
                log.errors.append(json.dumps(p["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                log.errors.append(json.dumps(p.get("args"))[:500])
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                log.errors.append(p["entry"].get("text", "")[:500])
        return log

    def more_log(self, session: str) -> PageLog:
        """Everything logged since the page loaded (call after waiting for charts)."""
        return self._log(session)

    def evaluate(self, session: str, expression: str, timeout: float = 60.0) -> Any:
        """Value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, session: str, expression: str, timeout: float = 60.0) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(session, expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"page never satisfied: {expression}")
            time.sleep(0.2)
