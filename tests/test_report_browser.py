"""The report in a real browser: headless Chromium, driven over the DevTools protocol on a pipe.

Chromium comes from Debian (`apt-get install chromium`); the session fixture installs it where it
is missing and apt can run, and skips with the reason where it cannot. The page must load with no
console error and no network request, every chart must draw, the tables must hold the run's
numbers, and a full-page screenshot is kept in artifacts/report.png.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from test_report_fixtures import MODELS, run_result, write_bench, write_compare
from seqarena.report import write_report

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TIMEOUT_S = 30.0
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-extensions", "--hide-scrollbars", "--remote-debugging-pipe"]


def _install_chromium() -> str | None:
    """Install Debian's chromium; None on success, else why it could not be installed."""
    if not shutil.which("apt-get"):
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "apt-get needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
            r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                return f"apt-get install chromium failed: {r.stderr.strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        return "apt-get install chromium timed out"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        why = _install_chromium()
        path = shutil.which("chromium") or "/usr/bin/chromium"
        if not os.path.exists(path):
            pytest.skip(f"headless Chromium unavailable: {why or 'not found after install'}")
    return path


class DevTools:
    """A minimal DevTools-protocol client over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, chromium: str, profile: Path):
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def child_fds():
            # Move both ends above 4 first: a pipe end may itself be fd 3 or 4.
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w)]
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target, inheritable=True)

        self.proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=child_fds, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.deadline = time.monotonic() + TIMEOUT_S

    def _read_message(self) -> dict:
        while b"\0" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read_message()
            if e.get("method") == method:
                return e
            self.events.append(e)

    def close(self) -> None:
        try:
            os.write(self._w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=5)
        finally:
            os.close(self._w)
            os.close(self._r)


PAGE_FACTS = """JSON.stringify({
  charts: [...document.querySelectorAll('figure svg.chart')].map(s => {
    const r = s.getBoundingClientRect();
    return {w: r.width, h: r.height, shapes: s.querySelectorAll('path, use, image').length};
  }),
  summary: [...document.querySelectorAll('table.summary tbody tr')].map(tr =>
    [...tr.querySelectorAll('td')].map(td => ({text: td.innerText.trim(),
                                               value: td.dataset.value ?? null}))),
  scripts: document.scripts.length,
  title: document.title,
})"""


def test_report_in_headless_chromium_loads_offline_and_draws_every_chart(chromium, tmp_path):
    compare = write_compare(tmp_path / "cmp", lengths=[32, 128])
    bench = write_bench(tmp_path / "bench")
    page = write_report([compare, bench], tmp_path / "report.html", log=None)

    browser = DevTools(chromium, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target,
                                                         "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900,
                                                            "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        facts = json.loads(browser.send("Runtime.evaluate", {"expression": PAGE_FACTS,
                                                             "returnByValue": True},
                                        session=session)["result"]["value"])
        size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = browser.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": size["height"], "scale": 1}},
            session=session)
        events = list(browser.events)
    finally:
        browser.close()

    png = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report.png").write_bytes(png)
    assert png.startswith(b"\x89PNG")

    errors = [e["params"] for e in events
              if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    requests = [e["params"]["request"]["url"] for e in events
                if e.get("method") == "Network.requestWillBeSent"]
    page_url = page.resolve().as_uri()
    assert [u for u in requests if u != page_url and not u.startswith("data:")] == []

    assert facts["scripts"] == 0
    assert len(facts["charts"]) >= 6  # curves x2, metric vs L, throughput, memory, MFU, decode
    for chart in facts["charts"]:
        assert chart["w"] > 300 and chart["h"] > 100 and chart["shapes"] > 10

    rows = facts["summary"]
    assert len(rows) == len(MODELS) * 2
    for L in (32, 128):
        for m in MODELS:
            want = run_result(m, L)
            row = next(r for r in rows if r[0]["text"] == m and r[2]["value"] == str(L))
            assert float(row[3]["value"]) == want.params
            assert float(row[4]["value"]) == want.metric
            assert f"{want.params:,}" in row[3]["text"]
