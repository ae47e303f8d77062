"""A minimal headless-Chromium driver for the book's browser test: the DevTools protocol over a pipe.

Chromium started with --remote-debugging-pipe reads JSON commands on fd 3 and writes replies and events on
fd 4, each message ended by a NUL byte. That needs no websocket library and no downloaded browser build:
Debian's `chromium` package is enough.

References:
    Chrome DevTools Protocol, https://chromedevtools.github.io/devtools-protocol/ (Target, Page, Runtime,
    Input, Network domains; flattened sessions).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


# Chromium's answers to an evaluation whose page navigated away mid-call (it failed two local `make test` runs).
NAVIGATION_ERRORS = ("Inspected target navigated or closed", "Execution context was destroyed")


@contextlib.contextmanager
def serve_directory(directory):
    """Serve a folder over HTTP on a free local port (quietly, in a thread); yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """One headless Chromium with one page (a flattened DevTools session)."""

    def __init__(self, executable: str, width: int = 1280, height: int = 900, timeout: float = 60):
        self.timeout, self._next_id, self._buffer, self.events = timeout, 0, b"", []
        self.width, self.height = width, height
        self._profile = tempfile.mkdtemp(prefix="fedmed-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium expects the pipe on fds 3 and 4: the shell moves our two ends there before exec.
        command = " ".join([executable, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
                            f"3<&{to_chrome_r}", f"4>&{from_chrome_w}"])
        # Its own process group: a browser that will not close is stopped with all its helper processes.
        self.process = subprocess.Popen(["bash", "-c", f"exec {command}"], pass_fds=(to_chrome_r, from_chrome_w),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.set_viewport(width, height)

    def set_viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=int(width), height=int(height),
                  deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._from_chrome], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept in `events`."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for_event(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def goto(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", session=True, url=url)
        self.wait_for_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 30.0):
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError as error:
                # A redirect (index.html's meta refresh) can replace the page while the expression runs:
                # that evaluation is void, not an answer, so ask the new page instead.
                if not any(m in str(error) for m in NAVIGATION_ERRORS):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"never true in {timeout} s: {expression}")

    def screenshot(self, path, clip: dict | None = None, full_page: bool = False) -> bytes:
        params = dict(format="png", captureBeyondViewport=full_page)
        if clip:
            params["clip"] = dict(clip, scale=clip.get("scale", 1))
        data = base64.b64decode(self.send("Page.captureScreenshot", session=True, **params)["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data

    def full_page_screenshot(self, path, max_height: int = 30000) -> bytes:
        """The whole page, top to bottom, at the viewport's width.

        Scrolling to an anchor and capturing beyond the viewport gave blank images before: here the viewport
        itself is made as tall as the content for the capture (so nothing is left to lazy painting or to
        sticky elements that follow the scroll), then put back. Pages taller than max_height are cut there.
        """
        self.evaluate("window.scrollTo(0, 0)")
        size = self.send("Page.getLayoutMetrics", session=True)
        content = size.get("cssContentSize") or size["contentSize"]
        height = min(max_height, max(self.height, int(content["height"] + 0.999)))
        self.set_viewport(self.width, height)
        try:
            # Let the page lay itself out and paint at the new size before the capture.
            self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            return self.screenshot(path, clip=dict(x=0, y=0, width=self.width, height=height), full_page=True)
        finally:
            self.set_viewport(self.width, self.height)

    def mouse(self, kind: str, x: float, y: float) -> None:
        """kind: mousePressed | mouseMoved | mouseReleased, left button."""
        self.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left",
                  buttons=0 if kind == "mouseReleased" else 1, clickCount=1)

    def key(self, key: str, code: str, key_code: int) -> None:
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", session=True, type=kind, key=key, code=code,
                      windowsVirtualKeyCode=key_code)

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def failed_responses(self) -> list[tuple[int, str]]:
        return [(e["params"]["response"]["status"], e["params"]["response"]["url"]) for e in self.events
                if e.get("method") == "Network.responseReceived" and e["params"]["response"]["status"] >= 400]

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        shutil.rmtree(self._profile, ignore_errors=True)
