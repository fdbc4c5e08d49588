"""Infer's capture key (Ctrl+G): a preview refreshing from a video file, Enter grabs a burst that is
saved under output/captures, classified and recorded in History; a bad source is one notification."""

from __future__ import annotations

import pytest
from test_capture import EXPECTED, write_video
from tui_helpers import make_app, notes, screen_text, wait_for

pytest.importorskip("cv2")
pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


async def test_capture_key_previews_grabs_classifies_and_records(settings_path, workdir):
    from ncanvas_tui.tui.screens.capture import CaptureScreen
    from ncanvas_tui.tui.widgets.prob_bars import ResultCard

    # the preview reads frames too: a long clip (the three photos over and over) keeps it open
    video = write_video(workdir / "clip.avi", [n for n, _ in EXPECTED] * 20)
    settings_path.write_text(settings_path.read_text()
                             + f'\n[capture]\nsource = "{video}"\nframes = 3\npreview_fps = 20.0\n')
    app = make_app(settings_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, CaptureScreen), what="the capture screen")
        await wait_for(pilot, lambda: app.screen.frames_shown >= 3, what="a refreshing preview")
        assert "live · frame" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(list(app.screen.query(ResultCard))) == 3, what="3 result cards")
        await wait_for(pilot, lambda: app.run_id is not None, what="history run id")
        assert "3 classified, 0 failed" in screen_text(app)
    saved = sorted((workdir / "output" / "captures").glob("*.jpg"))
    assert len(saved) == 3
    from ncanvas_tui import settings as s
    from ncanvas_tui.history.store import open_history

    runs = open_history(s.load(settings_path)).list_runs()
    assert len(runs) == 1 and runs[0]["images"] == 3


async def test_a_source_that_does_not_open_is_one_notification(settings_path, workdir):
    from ncanvas_tui.tui.screens.capture import CaptureScreen

    settings_path.write_text(settings_path.read_text() + f'\n[capture]\nsource = "{workdir / "nope.mp4"}"\n')
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: any("no such video file" in n for n in notes(app)), what="the error")
        await wait_for(pilot, lambda: not isinstance(app.screen, CaptureScreen), what="the screen closed")
    assert not (workdir / "output" / "captures").exists()
