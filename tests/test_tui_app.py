"""The app as a whole: first paint imports nothing heavy, screens switch by number
keys and the command palette, ? lists binding ids, [tui].keys remaps, [tui].theme,
log lines reach the log panel, jobs can be cancelled."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest
from tui_helpers import make_app, notes, screen_text, settle, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")

HEAVY = ("tensorrt", "tensorrt_rtx", "onnxruntime", "openai", "nemoguardrails", "torch", "pycuda", "polygraphy")


def test_first_screen_imports_nothing_heavy(settings_path):
    """A fresh interpreter: start the app, wait for the first screen, look at sys.modules."""
    code = textwrap.dedent(f"""
        import asyncio, json, sys
        from ncanvas_tui import settings
        from ncanvas_tui.tui.app import NcanvasApp
        async def main():
            app = NcanvasApp(settings.load({str(settings_path)!r}), previews="halfcell")
            async with app.run_test(size=(100, 30)) as pilot:
                await pilot.pause()
                screen = type(app.screen).__name__
            heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
            sys.__stdout__.write(json.dumps({{"screen": screen, "heavy": heavy}}))
        asyncio.run(main())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["screen"] == "InferScreen"
    assert out["heavy"] == []


async def test_number_keys_and_palette_switch_screens(settings_path):
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(120, 36)) as pilot:
        expected = {"1": "EnginesScreen", "3": "StoryScreen", "4": "ImagineScreen", "5": "HistoryScreen",
                    "2": "InferScreen"}
        for key, name in expected.items():
            app.screen.set_focus(None)  # outside a text field (Imagine focuses its prompt on arrival)
            await pilot.press(key)
            await wait_for(pilot, lambda name=name: type(app.screen).__name__ == name, what=name)
        # inside a text field digits are text; F2-F6 (what every terminal sends) and Alt+number switch
        inp = app.screen.query_one("#picker-input")
        inp.focus()
        await pilot.press("end", "1")
        assert inp.value.endswith("1") and type(app.screen).__name__ == "InferScreen"
        assert " F2 Engines " in screen_text(app) and " F6 History " in screen_text(app)
        await pilot.press("f4")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="f4")
        for key, name in (("f2", "EnginesScreen"), ("f6", "HistoryScreen"), ("f5", "ImagineScreen"),
                          ("f3", "InferScreen")):
            fields = list(app.screen.query("Input, TextArea"))
            if fields:  # from a text field where the screen has one
                fields[0].focus()
                await pilot.pause()
            await pilot.press(key)
            await wait_for(pilot, lambda name=name: type(app.screen).__name__ == name, what=key)
        app.screen.query_one("#picker-input").focus()
        await pilot.press("alt+3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="alt+3")
        # the command palette
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Go to History")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="palette")
        # the footer shows the current screen's keys
        assert "Export .md" in screen_text(app)


async def test_help_lists_binding_ids(settings_path):
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        text = screen_text(app)
        for bid in ("screen_engines", "infer_run", "story_write", "story_continue", "imagine_draw",
                    "engines_build", "history_export_md", "cancel"):
            assert bid in text, bid
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "InferScreen", what="help closed")


async def test_keys_remapped_from_settings(settings_path):
    app = make_app(settings_path, record_history=False,
                   extra='[tui]\nkeys = { screen_history = "f5", infer_run = "f9" }')
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert " f5 History " in screen_text(app)       # the navigation strip shows the new key
        await pilot.press("f9")                          # infer_run moved to F9
        await wait_for(pilot, lambda: any("select images first" in n for n in notes(app)), what="f9 run")
        await pilot.press("f5")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="f5")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: "HelpScreen" == type(app.screen).__name__, what="help")
        assert "f5" in screen_text(app)


async def test_unknown_key_id_and_theme_are_warnings(settings_path):
    app = make_app(settings_path, record_history=False,
                   extra='[tui]\ntheme = "no-such-theme"\nkeys = { infer_runn = "f9" }')
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        msgs = " ".join(notes(app))
        assert "[tui].theme" in msgs and "no-such-theme" in msgs
        assert "[tui].keys" in msgs and "infer_runn" in msgs


async def test_theme_setting(settings_path):
    app = make_app(settings_path, record_history=False, extra='[tui]\ntheme = "nord"')
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.theme == "nord"


async def test_log_lines_and_prints_reach_the_log_panel(settings_path):
    app = make_app(settings_path, record_history=False, start="engines")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        logging.getLogger("polygraphy.test").warning("[W] a polygraphy warning line")
        print("a stray print from a library")
        await pilot.pause(0.2)
        panel = app.screen.query_one("#engines-log")
        lines = "\n".join(str(line.text) for line in panel.lines)
        assert "a polygraphy warning line" in lines
        assert "a stray print from a library" in lines


async def test_guardrails_info_chatter_stays_out_of_the_log_panel(settings_path):
    app = make_app(settings_path, record_history=False, start="engines")
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        assert logging.getLogger("nemoguardrails").level == logging.WARNING
        logging.getLogger("nemoguardrails").info("Event UtteranceUserActionFinished")
        chatty = logging.getLogger("nemoguardrails.actions.llm")
        chatty.setLevel(logging.INFO)  # a library may set its own loggers' levels
        chatty.info("Invocation Params {...}")
        logging.getLogger("nemoguardrails.rails").warning("a guardrails warning")
        logging.getLogger("ncanvas_tui.tui").info("our own info line")
        await pilot.pause(0.2)
        lines = "\n".join(str(line.text) for line in app.screen.query_one("#engines-log").lines)
        assert "a guardrails warning" in lines and "our own info line" in lines
        assert "UtteranceUserActionFinished" not in lines and "Invocation Params" not in lines
        chatty.setLevel(logging.NOTSET)


def test_jobs_cancel_and_errors():
    from ncanvas_tui.errors import CancelledError
    from ncanvas_tui.tui import jobs

    started = __import__("threading").Event()

    def loop(*, cancel):
        import time

        started.set()
        while not cancel():
            time.sleep(0.01)
        raise CancelledError("stopped")

    job = jobs.submit("loop", loop)
    assert started.wait(10)
    job.cancel()  # sets the token the job was given
    with pytest.raises(CancelledError, match="stopped"):
        job.future.result(timeout=10)
    ok = jobs.submit("ok", lambda *, cancel: 41 + 1)
    assert ok.future.result(timeout=10) == 42
