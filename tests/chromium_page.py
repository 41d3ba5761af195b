"""Open a local HTML file in headless Chromium and report what happened, over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: no port, no network; messages are JSON
ended by a NUL byte, commands on the browser's fd 3, replies and events on its fd 4).

Used by tests/test_report.py: the page's console messages and uncaught exceptions, every
request it made (with its URL), and a PNG screenshot of one element.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def chromium() -> str | None:
    """The Chromium executable, if one is installed."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageVisit:
    console: list[dict[str, Any]] = field(default_factory=list)  # level, text
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    log_entries: list[dict[str, Any]] = field(default_factory=list)  # the browser's Log domain
    screenshot: bytes = b""

    @property
    def errors(self) -> list[str]:
        return ([m["text"] for m in self.console if m["level"] in ("error", "assert")]
                + self.exceptions
                + [e["text"] for e in self.log_entries if e.get("level") == "error"])


class _Pipe:
    def __init__(self, executable: str, profile: Path) -> None:
        # a file, not a pipe: a pipe nobody reads would stop a talkative browser
        profile.mkdir(parents=True, exist_ok=True)
        self.log_path = profile / "chromium-stderr.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def onto_fds_3_and_4() -> None:
            # the browser reads commands on fd 3 and writes to fd 4; the pipes' own numbers
            # may be 3 or 4, so both move above them first
            reading = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            writing = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--metrics-recording-only",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            pass_fds=(3, 4), preexec_fn=onto_fds_3_and_4)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 60) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method,
                                   "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 60) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    stderr = self.log_path.read_text(errors="replace")
                    raise RuntimeError(f"Chromium closed its DevTools pipe: {stderr[-2000:]}")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


def visit(executable: str, page: Path, profile: Path, element_id: str,
          width: int = 1200, height: int = 900) -> PageVisit:
    """Load ``page`` (a local file), wait for its load event and a quiet moment, and
    screenshot the element ``element_id``."""
    pipe = _Pipe(executable, profile)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = pipe.send("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        pipe.events.clear()
        pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        pipe.wait_for("Page.loadEventFired")
        time.sleep(1.0)  # late requests or errors, if the page made any
        box = pipe.send("Runtime.evaluate", {
            "expression": f"JSON.stringify((() => {{ const r = document.getElementById("
                          f"{json.dumps(element_id)}).getBoundingClientRect(); return "
                          f"[r.left + scrollX, r.top + scrollY, r.width, r.height]; }})())",
            "returnByValue": True}, session=session)["result"]["value"]
        x, y, w, h = json.loads(box)
        shot = pipe.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": x, "y": y, "width": w, "height": h, "scale": 1}}, session=session)
        result = PageVisit(screenshot=base64.b64decode(shot["data"]))
        for event in pipe.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", "")))
                                for a in params.get("args", []))
                result.console.append({"level": params.get("type"), "text": text})
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                result.exceptions.append(details.get("exception", {}).get(
                    "description", details.get("text", "")))
            elif method == "Network.requestWillBeSent":
                result.requests.append(params.get("request", {}).get("url", ""))
            elif method == "Log.entryAdded":
                result.log_entries.append(params.get("entry", {}))
        return result
    finally:
        pipe.close()
