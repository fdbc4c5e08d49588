"""The board strip: one line on every screen with power, GPU load/clock, hottest temperature, RAM and a
THROTTLED mark, refreshed about once a second from a thread worker; only known parts; hidden with nothing
known; off with [tui].board_strip = false. Board state comes from replayed trees (tests/data/boards)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tui_helpers import make_app, screen_text, settle, wait_for

BOARDS = Path(__file__).resolve().parent / "data" / "boards"

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


def _strip_line(app) -> str:
    return next((line for line in screen_text(app).splitlines() if line.startswith(" board ")), "")


async def test_strip_on_every_screen_and_live(settings_path, tmp_path, monkeypatch) -> None:
    tree = tmp_path / "orin"
    shutil.copytree(BOARDS / "orin-nano-jp6", tree)
    monkeypatch.setenv("NCANVAS_SYSROOT", str(tree))
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_for(pilot, lambda: _strip_line(app), what="board strip")
        assert _strip_line(app).split() == ["board", "8.0", "W", "·", "GPU", "47%", "·", "612", "MHz", "·",
                                            "52.3°C", "gpu-thermal", "·", "RAM", "3.0/7.4", "GiB"]
        for key, screen in (("f2", "EnginesScreen"), ("f4", "StoryScreen"), ("f5", "ImagineScreen"),
                            ("f6", "HistoryScreen"), ("f3", "InferScreen")):
            await pilot.press(key)
            await wait_for(pilot, lambda screen=screen: type(app.screen).__name__ == screen, what=screen)
            await wait_for(pilot, lambda: "8.0 W" in _strip_line(app), what=f"strip on {screen}")
        # the board changes: the strip follows within about a second, from its worker
        (tree / "sys/bus/i2c/devices/1-0040/hwmon/hwmon1/curr1_input").write_text("2500\n")  # 12.5 W
        (tree / "sys/class/devfreq/17000000.gpu/device/load").write_text("991\n")
        await wait_for(pilot, lambda: "12.5 W · GPU 99%" in _strip_line(app), timeout=10, what="new reading")
        # the strip's reads never turn into notifications
        assert not [n for n in app.notified if "board" in n.lower()]


async def test_strip_marks_throttling(settings_path, monkeypatch) -> None:
    monkeypatch.setenv("NCANVAS_SYSROOT", str(BOARDS / "xavier-agx-jp5"))
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_for(pilot, lambda: "THROTTLED" in _strip_line(app), what="throttle mark")
        assert "11.0 W" in _strip_line(app) and "96.0°C GPU-therm" in _strip_line(app)


async def test_strip_shows_only_what_is_known_and_hides_with_nothing(settings_path, tmp_path, monkeypatch) -> None:
    from ncanvas_tui.tui.widgets.board_strip import BoardStrip

    only_ram = tmp_path / "ram"
    shutil.copytree(BOARDS / "orin-nano-jp6" / "proc", only_ram / "proc")
    monkeypatch.setenv("NCANVAS_SYSROOT", str(only_ram))
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_for(pilot, lambda: _strip_line(app), what="board strip")
        assert _strip_line(app).strip() == "board RAM 3.0/7.4 GiB"
    monkeypatch.setenv("NCANVAS_SYSROOT", str(BOARDS / "empty"))
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(120, 32)) as pilot:
        strip = app.screen.query_one(BoardStrip)
        await wait_for(pilot, lambda: strip.updates > 0, what="a reading")
        await settle(pilot)
        assert not strip.display and _strip_line(app) == ""


async def test_strip_can_be_turned_off(settings_path, monkeypatch) -> None:
    from ncanvas_tui.tui.widgets.board_strip import BoardStrip

    monkeypatch.setenv("NCANVAS_SYSROOT", str(BOARDS / "orin-nano-jp6"))
    app = make_app(settings_path, record_history=False, extra="[tui]\nboard_strip = false")
    async with app.run_test(size=(120, 32)) as pilot:
        await settle(pilot)
        assert not app.screen.query(BoardStrip) and _strip_line(app) == ""
