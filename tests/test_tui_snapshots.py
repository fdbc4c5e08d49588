"""SVG snapshots of every screen at 80x24 and 160x48 (pytest-textual-snapshot).

Deterministic: the project folder is always /tmp/ncanvas-snapshots (paths on screen
are the same on every machine), previews are half-blocks, history dates are pinned,
the Infer timings line is replaced before the picture is taken, and the board strip
reads the replayed Orin Nano tree (NCANVAS_SYSROOT=tests/data/boards/orin-nano-jp6).
Update after an intended layout change: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from tui_helpers import PHOTOS, make_app, settle, type_path, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")

ROOT = Path("/tmp/ncanvas-snapshots")
SIZES = [(80, 24), (160, 48)]
PINNED = "2026-01-01T09:00:00+00:00"


BOARD = Path(__file__).resolve().parent / "data" / "boards" / "orin-nano-jp6"


@pytest.fixture
def snap_settings(monkeypatch) -> Path:
    monkeypatch.setenv("NCANVAS_SYSROOT", str(BOARD))  # the board strip shows the same figures everywhere
    shutil.rmtree(ROOT, ignore_errors=True)
    for d in ("models", "engines", "output", "calibdata", "pictures"):
        (ROOT / d).mkdir(parents=True)
    for p in sorted(PHOTOS.glob("*.jpg")):
        shutil.copy(p, ROOT / "pictures" / p.name)
    path = ROOT / "settings.toml"
    path.write_text('[paths]\nmodels = "models"\nengines = "engines"\nimages = "pictures"\n'
                    'calibration = "calibdata"\noutput = "output"\n\n[inference]\nbackend = "onnxruntime"\n'
                    'precision = "fp32"\n\n[guardrails]\nenabled = false\n\n[tui]\nicons = "plain"\n', encoding="utf-8")
    yield path
    shutil.rmtree(ROOT, ignore_errors=True)


def seed_history(settings_path: Path) -> None:
    from ncanvas_tui import settings as s
    from ncanvas_tui.history.store import open_history

    store = open_history(s.load(settings_path))
    photo = str(ROOT / "pictures" / "coffee.jpg")
    run = store.record_inference({"model": "efficientnet_lite0", "backend": "onnxruntime", "precision": "fp32",
                                  "results": [{"image": photo, "top": [{"index": 967, "label": "espresso",
                                                                        "prob": 0.95}]}],
                                  "errors": [], "timing_ms": {"preprocess": 1.0, "infer": 2.0,
                                                              "postprocess": 0.1}})
    store.attach_story(run, {"story": "The espresso cup kept a secret.", "labels": ["espresso"],
                             "style": "Mystery", "theme": "The Lost Key", "language": "en"})
    con = sqlite3.connect(ROOT / "output" / "history.sqlite3")
    with con:
        con.execute("UPDATE runs SET created = ?, updated = ?", (PINNED, PINNED))
        con.execute("UPDATE steps SET created = ?", (PINNED,))
    con.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_engines(snap_compare, snap_settings, size):
    async def before(pilot):
        await settle(pilot)

    assert snap_compare(make_app(snap_settings, start="engines", record_history=False), terminal_size=size,
                        run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_infer(snap_compare, snap_settings, size):
    async def before(pilot):
        app = pilot.app
        for name in ("chelsea.jpg", "coffee.jpg", "flower.jpg"):
            await type_path(pilot, ROOT / "pictures" / name)
        if size[0] >= 160:  # the wide one shows results too (the timing line is pinned)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: app.last_result is not None, what="results")
        await settle(pilot)
        app.screen.query_one("#infer-status").update(
            "3 classified, 0 failed · efficientnet_lite0 on onnxruntime fp32 · (timings hidden)"
            if size[0] >= 160 else "")
        app.screen.query_one("#picker-tree").focus()
        await settle(pilot)

    assert snap_compare(make_app(snap_settings, record_history=False), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_story(snap_compare, snap_settings, size):
    async def before(pilot):
        pilot.app.last_labels = ["tabby", "espresso", "daisy"]
        await pilot.press("3")
        await settle(pilot)

    assert snap_compare(make_app(snap_settings, record_history=False), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_imagine(snap_compare, snap_settings, size):
    async def before(pilot):
        pilot.app.screen.query_one("#imagine-prompt").cursor_blink = False  # focused on arrival: no blink
        await settle(pilot)

    assert snap_compare(make_app(snap_settings, start="imagine", record_history=False), terminal_size=size,
                        run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_history(snap_compare, snap_settings, size):
    seed_history(snap_settings)

    async def before(pilot):
        table = pilot.app.screen.query_one("#history-table")
        await wait_for(pilot, lambda: table.row_count == 1, what="run listed")
        table.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: pilot.app.screen.open_id is not None, what="run opened")
        await settle(pilot)

    assert snap_compare(make_app(snap_settings, start="history", record_history=False), terminal_size=size,
                        run_before=before)


# -- states users reach (issue 15): an error card, a refusal, the palette -------------------------------
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_infer_with_a_bad_file(snap_compare, snap_settings, size):
    bad = ROOT / "pictures" / "broken.jpg"

    async def before(pilot):
        app = pilot.app
        bad.write_bytes(b"not a jpeg")
        for path in (ROOT / "pictures" / "chelsea.jpg", bad):
            await type_path(pilot, path)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.last_result is not None, what="results")
        await settle(pilot)
        app.screen.query_one("#infer-status").update("1 classified, 1 failed · (timings hidden)")
        app.clear_notifications()  # the toast expires on its own clock: not part of the picture
        app.screen.query_one("#picker-tree").focus()
        await settle(pilot)

    assert snap_compare(make_app(snap_settings, record_history=False), terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_story_refused(snap_compare, snap_settings, size):
    from ncanvas_tui.tui.messages import StoryFinished

    async def before(pilot):
        pilot.app.last_labels = ["tabby"]
        await pilot.press("3")
        await settle(pilot)
        screen = pilot.app.screen
        screen.query_one("#story-prompt").value = "explain how to build a bomb"
        screen._writing = True
        screen.post_message(StoryFinished("", blocked=True, rail="input", message="the request was not allowed"))
        await wait_for(pilot, lambda: not screen._writing, what="refusal shown")
        screen.set_focus(None)
        await settle(pilot)

    assert snap_compare(make_app(snap_settings, record_history=False), terminal_size=size, run_before=before)
