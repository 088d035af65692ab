"""The reports in a real headless Chromium, driven through the DevTools protocol (CDP).

Each report must load with no console error and no request other than ``file:``, ``data:`` or
``blob:``; the rating widget must save (and survive a reload), export a ratings file, and the
group level must read that file back. Needs ``chromium`` (Debian: chromium) and the
``websocket-client`` package; skipped with the reason when either is absent.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from records import make_results

LOGGER = logging.getLogger(__name__)

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


def chromium_binary() -> str | None:
    for name in (os.environ.get("BIDSAPP_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Chromium:
    """A headless Chromium and one page, over the DevTools protocol (flat sessions)."""

    def __init__(self, binary: str, download_dir: Path, width: int = 1280, height: int = 900):
        import websocket

        self.profile = Path(tempfile.mkdtemp(prefix="bidsapp-chromium-"))
        self.download_dir = Path(download_dir)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(self.profile / "stderr.log", "wb")
        self.process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self._stderr)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if self.process.poll() is not None or time.time() > deadline:
                self.close()
                raise RuntimeError("chromium did not start; see its stderr: "
                                   + (self.profile / "stderr.log").read_text(errors="replace"))
            time.sleep(0.1)
        port, path = port_file.read_text().split()[:2]
        self.socket = websocket.create_connection(f"ws://127.0.0.1:{port}{path}",
                                                  suppress_origin=True, timeout=60)
        self._socket_errors = websocket.WebSocketException
        self._id = 0
        self._downloads: set[str] = set()
        self.events: list[dict] = []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=True)
        self.send("Browser.setDownloadBehavior", {"behavior": "allow", "eventsEnabled": True,
                                                  "downloadPath": str(self.download_dir)})
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                                                         "deviceScaleFactor": 1,
                                                         "mobile": False}, session=True)

    # -- protocol --
    def send(self, method: str, params: dict | None = None, *, session: bool = False,
             timeout: float = 60) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        deadline = time.time() + timeout
        while time.time() < deadline:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)
        raise TimeoutError(method)

    def wait_for(self, method: str, predicate=lambda params: True, timeout: float = 60) -> dict:
        seen = 0
        deadline = time.time() + timeout
        while time.time() < deadline:
            for event in self.events[seen:]:
                if event["method"] == method and predicate(event.get("params", {})):
                    return event["params"]
            seen = len(self.events)
            self.socket.settimeout(max(0.1, deadline - time.time()))
            try:
                self.events.append(json.loads(self.socket.recv()))
            except (self._socket_errors, OSError, ValueError):
                break
        raise TimeoutError(f"no {method} event")

    # -- page helpers --
    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")
        self.evaluate("new Promise(r => setTimeout(r, 300))")  # let late requests show up

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (scrolled into view)."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1},
                      session=True)

    def type_text(self, selector: str, text: str) -> None:
        self.click(selector)
        self.send("Input.insertText", {"text": text}, session=True)

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]

    def blocked(self) -> list[str]:
        """Why requests were blocked by the browser (e.g. "csp"), one entry per request."""
        return [e["params"]["blockedReason"] for e in self.events
                if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason")]

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif event["method"] == "Runtime.consoleAPICalled" and \
                    params.get("type") in ("error", "assert"):
                errors.append(json.dumps(params.get("args", []))[:500])
            elif event["method"] == "Log.entryAdded" and \
                    params.get("entry", {}).get("level") == "error":
                errors.append(params["entry"].get("text", "")[:500])
        return errors

    def broken_images(self) -> int:
        """Load every image (also lazy ones) and count those that cannot be decoded."""
        return self.evaluate(
            "Promise.all(Array.from(document.images).map(i => { i.loading = 'eager';"
            " return i.decode().then(() => 0, () => 1); })).then(r => r.reduce((a, b) => a + b,"
            " 0))")

    def screenshot(self, path: Path, max_height: int = 12000) -> Path:
        metrics = self.send("Page.getLayoutMetrics", session=True)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"],
                "height": min(size["height"], max_height), "scale": 1}
        shot = self.send("Page.captureScreenshot", {"format": "png", "clip": clip,
                                                    "captureBeyondViewport": True},
                         session=True)
        import base64

        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)

    def wait_download(self, timeout: float = 30) -> Path:
        begin = self.wait_for("Browser.downloadWillBegin",
                              lambda p: p.get("guid") not in self._downloads, timeout=timeout)
        self._downloads.add(begin["guid"])
        self.wait_for("Browser.downloadProgress",
                      lambda p: p.get("guid") == begin["guid"] and p.get("state") == "completed",
                      timeout=timeout)
        return self.download_dir / begin["suggestedFilename"]

    def close(self) -> None:
        try:
            self.socket.close()
        except OSError:
            LOGGER.debug("the DevTools socket was already closed")
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def local_references(html: str) -> list[str]:
    """Every src/href value of a page that is not local (relative, fragment, data:, blob:)."""
    bad = []
    for value in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html, re.IGNORECASE):
        if re.match(r"^[a-z][a-z0-9+.-]*:", value, re.IGNORECASE) and \
                not value.lower().startswith(("data:", "blob:")) or value.startswith("//"):
            bad.append(value)
    bad += re.findall(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", html)
    bad += re.findall(r"@import", html)
    return bad


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    pytest.importorskip("websocket", reason="websocket-client is not installed "
                                            "(pip install websocket-client)")
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); set BIDSAPP_CHROMIUM")
    chromium = Chromium(binary, tmp_path_factory.mktemp("downloads"))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A synthetic output folder with images, participant reports and a group report."""
    from bidsapp.reports.participant import write_participant_report

    root = tmp_path_factory.mktemp("out")
    make_results(root, subjects=("01", "02"), defacers=("quickshear", "facemask"),
                 fail=[("02", "facemask")])
    for subject in ("01", "02"):
        write_participant_report(root, subject)
    return root


def _run_group(root: Path) -> int:
    from bidsapp.group import run_group
    from bidsapp.settings import Settings

    return run_group(Settings(bids_dir=root, output_dir=root, analysis_level="group",
                              work_dir=root / "work"))


def _assert_clean(chromium: Chromium, root: Path, page: Path) -> None:
    requests = chromium.requests()
    assert requests, "the page load was not seen"
    outside = [u for u in requests if not u.startswith(LOCAL_SCHEMES)]
    assert outside == [], f"{page.name} made non-local requests: {outside}"
    foreign = [u for u in requests if u.startswith("file:")
               and not u.startswith(root.resolve().as_uri())]
    assert foreign == [], f"{page.name} read files outside the output folder: {foreign}"
    assert chromium.console_errors() == [], f"{page.name}: console errors"
    assert local_references(page.read_text()) == []


@pytest.mark.slow
def test_participant_report_loads_offline_without_errors(browser, reported):
    page = reported / "sub-01.html"
    browser.open(page.as_uri())
    _assert_clean(browser, reported, page)
    assert browser.evaluate("document.querySelectorAll('.rating[data-image]').length") == 2
    assert browser.evaluate("document.querySelectorAll('img').length") == 4
    assert browser.broken_images() == 0


@pytest.mark.slow
def test_rating_saves_exports_and_reaches_the_group_level(browser, reported):
    page = reported / "sub-01.html"
    browser.open(page.as_uri())
    browser.type_text("#rater", "AB")
    selector = '.rating[data-defacer="facemask"] input[value="face-remains"]'
    browser.click(selector)
    browser.type_text('.rating[data-defacer="facemask"] textarea', "nose visible")
    assert browser.evaluate(f"document.querySelector('{selector}').checked") is True
    browser.open(page.as_uri())  # reload: the rating comes back from localStorage
    assert browser.evaluate(f"document.querySelector('{selector}').checked") is True
    assert browser.evaluate("document.querySelector('.rating[data-defacer=\"facemask\"] "
                            "textarea').value") == "nose visible"
    assert "1 of 2 rated" in browser.evaluate("document.getElementById('rating-status')"
                                              ".textContent")
    browser.click("#export-json")
    exported = browser.wait_download()
    assert re.fullmatch(r"bidsapp_ratings_\d{8}T\d{6}\.json", exported.name)
    payload = json.loads(exported.read_text())
    assert payload["format"] == "bidsapp-ratings" and payload["rater"] == "AB"
    assert payload["ratings"] == [{
        "image": "sub-01_T1w", "defacer": "facemask", "rating": "face-remains",
        "notes": "nose visible", "rater": "AB", "time": payload["ratings"][0]["time"]}]
    browser.click("#export-tsv")
    tsv = browser.wait_download()
    assert tsv.read_text().splitlines()[1].startswith("sub-01_T1w\tfacemask\tface-remains\t")
    assert browser.console_errors() == []

    (reported / "ratings").mkdir(exist_ok=True)
    shutil.copy(exported, reported / "ratings" / exported.name)
    assert _run_group(reported) == 0
    import pandas as pd

    table = pd.read_csv(reported / "group_T1w.tsv", sep="\t", na_values="n/a")
    row = table[(table["image"] == "sub-01_T1w") & (table["defacer"] == "facemask")].iloc[0]
    assert row["rating"] == "face-remains" and row["rating_notes"] == "nose visible"
    assert row["rater"] == "AB"
    summary = pd.read_csv(reported / "group_summary.tsv", sep="\t", na_values="n/a")
    facemask = summary[summary["defacer"] == "facemask"].iloc[0]
    assert facemask["n_rated_problem"] == 1 and not facemask["recommended"]


@pytest.mark.slow
def test_rating_import_restores_an_export(browser, reported, tmp_path):
    page = reported / "sub-02.html"
    export = tmp_path / "mine.json"
    export.write_text(json.dumps({"format": "bidsapp-ratings", "version": 1, "ratings": [
        {"image": "sub-02_T1w", "defacer": "quickshear", "rating": "brain-cut", "notes": "",
         "rater": "CD", "time": "2030-01-01T00:00:00.000Z"}]}))
    browser.open(page.as_uri())
    browser.send("DOM.enable", session=True)
    document = browser.send("DOM.getDocument", session=True)
    node = browser.send("DOM.querySelector", {"nodeId": document["root"]["nodeId"],
                                              "selector": "#import-json"}, session=True)
    browser.send("DOM.setFileInputFiles", {"files": [str(export)], "nodeId": node["nodeId"]},
                 session=True)
    browser.evaluate("new Promise(r => setTimeout(r, 300))")
    assert browser.evaluate(
        "document.querySelector('.rating[data-defacer=\"quickshear\"] "
        "input[value=\"brain-cut\"]').checked") is True
    assert browser.console_errors() == []


@pytest.mark.slow
def test_group_report_loads_offline_without_errors(browser, reported):
    assert _run_group(reported) == 0
    page = reported / "group_report.html"
    browser.open(page.as_uri())
    _assert_clean(browser, reported, page)
    thumbs = browser.evaluate("document.querySelectorAll('.gallery img').length")
    assert thumbs == 3  # 2 subjects x 2 defacers, but the failed one has no figure
    assert browser.broken_images() == 0
    outside = [u for u in browser.requests() if not u.startswith(LOCAL_SCHEMES)]
    assert outside == [] and browser.console_errors() == []  # the thumbnails too
    links = browser.evaluate("Array.from(document.querySelectorAll('a[href]'))"
                             ".map(a => a.getAttribute('href'))")
    assert "sub-01.html" in links and "group_T1w.tsv" in links


@pytest.mark.slow
def test_the_checks_catch_external_requests_and_errors(browser, tmp_path):
    """Negative control: a page that breaks both rules is caught by both checks."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="http://bidsapp.invalid/x.png">'
                    '<script>console.error("boom"); undefined_function();</script></body></html>')
    browser.open(page.as_uri())
    assert "http://bidsapp.invalid/x.png" in browser.requests()
    assert len(browser.console_errors()) >= 2
    assert local_references(page.read_text()) == ["http://bidsapp.invalid/x.png"]
    csp = tmp_path / "csp.html"  # our pages' policy blocks such a request, and says so
    csp.write_text(_page_with_policy().replace(
        "<body>", '<body><img src="http://bidsapp.invalid/y.png">'))
    browser.open(csp.as_uri())
    assert "http://bidsapp.invalid/y.png" in browser.requests()  # attempted: a test failure
    assert browser.blocked() == ["csp"]  # but never sent
    assert any("Content Security Policy" in e for e in browser.console_errors())


def _page_with_policy() -> str:
    from bidsapp.reports import asset

    head = re.search(r"<head>.*?</head>", asset("participant.html"), re.DOTALL).group(0)
    head = re.sub(r"\{\{.*?\}\}", "", head)
    return f"<html>{head}<body></body></html>"
