"""``ncanvas serve`` in a real headless browser (Debian's chromium + chromium-driver through Selenium;
nothing downloaded at run time). The page draws the app on a canvas, so results are read through
the app's own records (History), not the DOM. The token is checked on every path; without it the
server refuses; a second tab is told the one session is taken. Loopback only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

#: CI (.ci/run) sets this: a missing browser, driver or library is then a failure, never a skip
REQUIRED = os.environ.get("NCANVAS_REQUIRE_BROWSER") == "1"
if REQUIRED:
    import textual_serve  # noqa: F401
    from selenium import webdriver
else:
    pytest.importorskip("textual_serve")
    webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, settings_path: Path, tmp: Path) -> None:
        self.port = free_port()
        self.err = tmp / "serve.err"
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ncanvas_tui", "serve", "--port", str(self.port),
             "--settings", str(settings_path)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=self.err.open("wb"), text=True, env=env,
            start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        self.url = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "ncanvas serve: open " in line:
                self.url = line.split("open ", 1)[1].strip()
                break
            if not line and self.proc.poll() is not None:
                break
        assert self.url, f"serve printed no URL: {self.err.read_text()}"
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = self.url.split("token=", 1)[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def status(url: str, cookie: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def served(settings_path, tmp_path):
    s = Served(settings_path, tmp_path)
    yield s
    s.stop()


def test_token_is_required_on_every_path_and_never_logged(served):
    for path in ("/", "/ws", "/static/js/textual.js", "/static/css/xterm.css"):
        code, _ = status(served.base + path)
        assert code == 401, path
        code, _ = status(served.base + path, cookie="ncanvas_token=not-the-token")
        assert code == 403, path
    code, _ = status(served.base + "/?token=wrong")
    assert code == 403
    code, _ = status(served.url)  # the printed URL: a cookie, and the token leaves the address bar
    assert code == 303
    code, page = status(served.base + "/", cookie=f"ncanvas_token={served.token}")
    assert code == 200 and f"ws://127.0.0.1:{served.port}/ws" in page
    code, _ = status(served.base + "/static/js/textual.js", cookie=f"ncanvas_token={served.token}")
    assert code == 200
    served.stop()
    log = served.err.read_text()
    assert "GET / 401" in log and "GET /static/js/textual.js 401" in log
    assert served.token not in log


def history_runs(settings) -> list[dict]:
    from ncanvas_tui.history import open_history

    with open_history(settings) as h:
        return [json.loads(json.dumps(r, default=str)) for r in h.list_runs()]


def wait_until_painted(driver, timeout: float = 90) -> None:
    """The app process starts behind the page: keys sent before it draws its first screen are lost
    or, worse, taken by another screen. Wait for the page's own mark that the app has sent output
    (``body.-first-byte``, textual-serve's JS), then until the drawing holds still for 2 s."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, "body.-first-byte"))
    deadline = time.monotonic() + timeout
    last = b""
    still = 0
    while time.monotonic() < deadline:
        time.sleep(1)
        shot = driver.get_screenshot_as_png()
        still = still + 1 if shot == last else 0
        if still >= 2:
            return
        last = shot
    raise AssertionError("the app's drawing never held still in the browser")


@pytest.mark.skipif(not (CHROMIUM and DRIVER) and not REQUIRED, reason="needs Debian's chromium and chromium-driver "
                    "(scripts/dev-setup.sh and .ci/run install them)")
def test_browser_classifies_with_the_keyboard_and_the_run_is_in_history(served, settings, workdir, tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    assert CHROMIUM and DRIVER, "chromium and chromedriver are required (NCANVAS_REQUIRE_BROWSER=1)"
    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chrome'}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    try:
        driver.set_page_load_timeout(30)
        # without the token: refused, and the browser gets no app
        driver.get(served.base + "/")
        assert "open the URL with its token" in driver.page_source
        driver.get(served.url)
        assert "?token" not in driver.current_url  # redirected to the bare URL, the cookie kept
        box = WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.CSS_SELECTOR, "textarea.xterm-helper-textarea"))
        photo = workdir / "pictures" / "coffee.jpg"
        wait_until_painted(driver)
        # the Infer screen (the start screen), focus on the folder tree: Shift+Tab to the path input,
        # a path, Enter adds it, Ctrl+R classifies (F-keys are the browser's own: F3 finds, F5 reloads)
        box.send_keys(Keys.SHIFT, Keys.TAB)
        runs: list = []
        deadline = time.monotonic() + 150
        while not runs and time.monotonic() < deadline:
            # again after a while (focus stays on the path input; the same path is added once):
            # a key lost while a loaded machine starts the app is then harmless
            for keys in ((Keys.CONTROL, "u"), (str(photo),), (Keys.ENTER,), (Keys.CONTROL, "r")):
                time.sleep(0.5)
                box.send_keys(*keys)
            until = time.monotonic() + 30
            while not runs and time.monotonic() < until:
                time.sleep(1)
                runs = history_runs(settings) if (workdir / "output" / "history.sqlite3").exists() else []
        shot = tmp_path / "serve.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
        assert runs, f"no run reached History through the browser; server log:\n{served.err.read_text()}"
        assert "espresso" in json.dumps(runs)
        # one session at a time: a second tab is told so
        code, page = status(served.base + "/", cookie=f"ncanvas_token={served.token}")
        assert code == 503 and "max_sessions" in page
    finally:
        driver.quit()


def test_all_interfaces_prints_an_address_a_phone_can_open(monkeypatch):
    from ncanvas_tui.cli import serve
    from ncanvas_tui.cli.serve import public_url

    # the LAN address itself comes from the routing table (a UDP connect, no packet): not here
    monkeypatch.setattr(serve, "lan_address", lambda: "192.168.1.23")
    assert public_url("0.0.0.0", 8123, None) == "http://192.168.1.23:8123"
    assert public_url("0.0.0.0", 8123, "https://nc.example.lan/") == "https://nc.example.lan"
    assert public_url("127.0.0.1", 8123, None) == "http://127.0.0.1:8123"


def test_a_port_in_use_is_one_line(cli, settings_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("serve", "--port", str(port), "--settings", str(settings_path), timeout=30)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [f"ncanvas: error: serve: cannot listen on 127.0.0.1:{port}: address already in use"], r.stderr
