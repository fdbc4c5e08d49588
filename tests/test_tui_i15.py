"""Issue 15: the rough edges a new user hit in the terminal app, each reproduced here."""

from __future__ import annotations

import json

import pytest
from fakeopenai import FakeOpenAI, Reply, story_settings_text
from tui_helpers import make_app, notes, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


@pytest.fixture
def fake():
    with FakeOpenAI() as f:
        yield f


def story_settings(workdir, url, **kw):
    p = workdir / "settings.toml"
    p.write_text(story_settings_text(url, api_key_env="", **kw), encoding="utf-8")
    return p


def status_text(app, wid: str) -> str:
    return str(app.screen.query_one(wid).render())


# 1 -------------------------------------------------------------------------------------------------
async def test_tab_in_the_path_field_accepts_the_suggestion(settings_path, workdir):
    app = make_app(settings_path, start="infer")
    async with app.run_test(size=(160, 48)) as pilot:
        inp = app.screen.query_one("#picker-input")
        inp.focus()
        inp.value = str(workdir / "pictures" / "chel")
        inp.cursor_position = len(inp.value)
        await wait_for(pilot, lambda: inp._suggestion.endswith("chelsea.jpg"), what="suggestion")
        await pilot.press("tab")
        assert inp.value == str(workdir / "pictures" / "chelsea.jpg")
        assert app.focused is inp  # Tab completed, it did not move the focus away
        await pilot.press("tab")   # nothing more to complete: Tab moves on as everywhere else
        assert app.focused is not inp


# 2, 3 ---------------------------------------------------------------------------------------------
async def test_imagine_focuses_the_prompt_and_ctrl_d_distils_there(fake, workdir):
    fake.chat.push(Reply("a daisy and a robot in a sunlit field, watercolour"))
    app = make_app(story_settings(workdir, fake.url), record_history=False)
    async with app.run_test(size=(120, 36)) as pilot:
        app.story_text = "Once upon a time a daisy met a robot."
        app.story_meta = {"labels": ["daisy"], "style": "Fantasy", "theme": "A Chance Encounter"}
        app.last_labels = ["daisy"]
        await pilot.press("4")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImagineScreen", what="imagine")
        area = app.screen.query_one("#imagine-prompt")
        await wait_for(pilot, lambda: area.text, what="distilled prompt")
        assert app.focused is area  # first visit: typing goes into the prompt
        area.text = "abc"
        area.move_cursor((0, 0))
        fake.chat.push(Reply("a second prompt"))
        await pilot.press("ctrl+d")  # distils; it does not delete the character under the cursor
        await wait_for(pilot, lambda: area.text != "abc", what=f"distilled again: {area.text!r}")
        assert "second prompt" in area.text, area.text


# 4, 5 ---------------------------------------------------------------------------------------------
async def test_continue_keeps_a_random_style_and_theme(fake, workdir, monkeypatch):
    import random

    picks = iter(range(1000))
    monkeypatch.setattr(random.Random, "choice", lambda self, seq: seq[next(picks) % len(seq)])
    fake.chat.push(Reply("Once upon a time a daisy met a robot."), Reply("Years later they met again."))
    app = make_app(story_settings(workdir, fake.url), record_history=False)
    async with app.run_test(size=(120, 36)) as pilot:
        app.last_labels = ["daisy"]
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        assert str(app.screen.query_one("#story-style").value) == "(random)"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "words" in status_text(app, "#story-status"), what="story")
        first = (app.story_meta["style"], app.story_meta["theme"])
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: "met again" in app.story_text, what="continuation")
        assert (app.story_meta["style"], app.story_meta["theme"]) == first


async def test_escape_before_any_words_does_not_offer_to_continue(fake, workdir):
    fake.chat.push(Reply("Too late.", delay=3.0))
    app = make_app(story_settings(workdir, fake.url), record_history=False)
    async with app.run_test(size=(120, 36)) as pilot:
        app.last_labels = ["daisy"]
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.screen._writing, what="writing")
        await pilot.press("escape")
        await wait_for(pilot, lambda: "cancelled" in status_text(app, "#story-status"), what="cancelled")
        status = status_text(app, "#story-status")
        assert "Ctrl+N" not in status and "Ctrl+R" in status
        await pilot.press("ctrl+n")
        assert any("nothing to continue" in n for n in notes(app))


# 10 ------------------------------------------------------------------------------------------------
async def test_palette_has_every_action_and_runs_it(settings_path):
    app = make_app(settings_path, start="infer")
    async with app.run_test(size=(160, 48)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for want in ("Engines: Build", "Engines: Verify", "Engines: Bench", "History: Export .md",
                     "Story: Continue", "Imagine: Distil prompt", "Infer: Classify"):
            assert want in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"export .md")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="history screen")
        await wait_for(pilot, lambda: any("no run to export" in n for n in notes(app)), what="export ran")


# 12 ------------------------------------------------------------------------------------------------
async def test_hints_follow_the_keys_in_force(fake, workdir):
    fake.chat.push(Reply("Once upon a time a daisy met a robot."))
    path = story_settings(workdir, fake.url, extra='[tui]\nkeys = { story_continue = "ctrl+t", screen_imagine = "f9" }')
    app = make_app(path, record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        app.last_labels = ["daisy"]
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        assert "Ctrl+T continues" in status_text(app, "#story-status")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "words" in status_text(app, "#story-status"), what="story")
        status = status_text(app, "#story-status")
        assert "Ctrl+T continues" in status and "then F9 for a picture" in status
        assert "Ctrl+N" not in status


# 11 ------------------------------------------------------------------------------------------------
async def test_story_and_imagine_selects_are_labelled(settings_path):
    from tui_helpers import screen_text

    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        row = next(line for line in screen_text(app).splitlines() if "(random)" in line)
        assert row.index("style") < row.index("(random)") < row.index("theme") < row.index("language")
        await pilot.press("f5")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImagineScreen", what="imagine")
        row = next(line for line in screen_text(app).splitlines() if "(none)" in line)
        assert row.index("style") < row.index("(none)") < row.index("provider") < row.index("openai")


# copy over SSH ---------------------------------------------------------------------------------------
def fake_tmux(tmp_path, monkeypatch, clipboard_option: str) -> None:
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tmux = bin_dir / "tmux"
    tmux.write_text(f"#!/bin/sh\necho {clipboard_option}\n", encoding="utf-8")
    tmux.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TMUX", "/tmp/tmux-1000/default,1234,0")


@pytest.mark.parametrize("option", ["on", "off"])
async def test_copy_uses_osc52_or_says_tmux_refuses_and_saves_a_file(settings_path, workdir, tmp_path,
                                                                    monkeypatch, option):
    fake_tmux(tmp_path, monkeypatch, option)
    app = make_app(settings_path, record_history=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        app.screen.text = "Once upon a time a daisy met a robot."
        sent: list[str] = []
        app.copy_to_clipboard = sent.append  # the OSC 52 sequence would go to the terminal here
        await pilot.press("ctrl+y")
        await pilot.pause()
        saved = list((workdir / "output" / "copied").glob("story-*.txt"))
        if option == "on":
            assert sent == [app.screen.text] and not saved
            assert any("story copied" in n for n in notes(app))
        else:
            assert sent == [] and len(saved) == 1
            assert saved[0].read_text(encoding="utf-8") == app.screen.text
            assert any("set-clipboard off" in n and str(saved[0]) in n for n in notes(app))


async def test_infer_copies_the_labels(settings_path):
    app = make_app(settings_path, record_history=False, start="infer")
    async with app.run_test(size=(120, 36)) as pilot:
        app.last_result = {"results": [{"image": "/x/chelsea.jpg", "top": [{"label": "tabby", "prob": 0.871}]}]}
        sent: list[str] = []
        app.copy_to_clipboard = sent.append
        app.screen.set_focus(None)
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert sent == ["chelsea.jpg: tabby 87.1%\n"]


# 14 ------------------------------------------------------------------------------------------------
def history_of(settings_path):
    from ncanvas_tui import settings as s
    from ncanvas_tui.history.store import open_history

    return open_history(s.load(settings_path))


async def test_history_rows_for_story_only_and_refused_runs_and_delete(settings_path):
    store = history_of(settings_path)
    told = store.attach_story(None, {"story": "A daisy met a robot.", "labels": ["daisy", "robot"]})
    refused = store.attach_story(None, {"story": "", "blocked": True, "rail": "input", "labels": ["bomb"]})
    app = make_app(settings_path, start="history")
    async with app.run_test(size=(160, 48)) as pilot:
        table = app.screen.query_one("#history-table")
        await wait_for(pilot, lambda: table.row_count == 2, what="two runs")
        rows = {int(table.get_row_at(i)[0]): table.get_row_at(i) for i in range(2)}
        assert "daisy, robot" in rows[told][3] and rows[told][4] == "✓"
        assert "bomb" in rows[refused][3] and rows[refused][4] == "refused"
        table.focus()
        table.move_cursor(row=0)  # newest first: the refused run
        await pilot.press("delete")
        assert table.row_count == 2 and any("again to delete" in n for n in notes(app))
        await pilot.press("delete")
        await wait_for(pilot, lambda: table.row_count == 1, what="run deleted")
    assert [r["id"] for r in history_of(settings_path).list_runs()] == [told]


async def test_a_saved_story_records_its_path_in_the_history(fake, workdir):
    fake.chat.push(Reply("Once upon a time a daisy met a robot."))
    path = story_settings(workdir, fake.url)
    app = make_app(path)
    async with app.run_test(size=(120, 36)) as pilot:
        app.last_labels = ["daisy"]
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.run_id is not None, what="story in history")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("story saved" in n for n in notes(app)), what="saved")
    saved = list((workdir / "output" / "stories").glob("*"))
    run = history_of(path).get_run(app.run_id)
    assert run["stories"][-1]["path"] == str(saved[0])


def test_cli_story_step_records_the_saved_path(cli, fake, workdir):
    fake.chat.push(Reply("Once upon a time a daisy met a robot."))
    path = story_settings(workdir, fake.url)
    r = cli("story", "--labels", "daisy", "--json", "--settings", str(path))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    run = history_of(path).get_run(doc["run_id"])
    assert run["stories"][-1]["path"] == doc["path"] and doc["path"]


# 15 (the screens' side) ----------------------------------------------------------------------------
async def test_story_offers_the_endpoints_own_models(fake, workdir):
    @fake.route("GET", "/v1/models")
    def models(h, req):
        h.send_json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"},
                                                     {"id": "tiny-llm", "object": "model"}]})

    fake.chat.push(Reply("Once upon a time a daisy met a robot."))
    app = make_app(story_settings(workdir, fake.url), record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        app.last_labels = ["daisy"]
        await pilot.press("3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        select = app.screen.query_one("#story-model")
        await wait_for(pilot, lambda: len(select._options) == 2, what="model list")
        assert select.value == "fake-model"
        select.value = "tiny-llm"
        await pilot.pause()
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "words" in status_text(app, "#story-status"), what="story")
        chat = [c for c in fake.calls() if c.path.endswith("/chat/completions")]
        assert chat[-1].body["model"] == "tiny-llm"


# 17 ------------------------------------------------------------------------------------------------
def test_kitty_without_unicode_placeholders_gets_half_blocks():
    from ncanvas_tui.tui.terminal import choose_previews, parse_version

    kitty = {"TERM": "xterm-kitty", "KITTY_WINDOW_ID": "1", "SSH_CONNECTION": "x"}
    assert parse_version("\x1bP>|kitty(0.26.5)\x1b\\") == (0, 26, 5)
    assert parse_version("kitty 0.32.2 created by Kovid Goyal") == (0, 32, 2)
    assert choose_previews("auto", kitty, lambda: "\x1bP>|kitty(0.26.5)\x1b\\") == "halfcell"
    assert choose_previews("auto", kitty, lambda: "\x1bP>|kitty(0.28.1)\x1b\\") == "tgp"
    assert choose_previews("auto", kitty, lambda: "") == "halfcell"  # no answer: the safe choice
    assert choose_previews("tgp", kitty, lambda: "\x1bP>|kitty(0.26.5)\x1b\\") == "tgp"  # forced
    assert choose_previews("auto", {"TERM": "xterm"}, lambda: "") == "auto"  # textual-image probes Sixel


async def test_file_tree_has_plain_icons_where_emoji_are_not_known(settings_path, workdir, monkeypatch):
    from tui_helpers import screen_text

    (workdir / "pictures" / "holiday").mkdir()
    monkeypatch.setenv("TERM", "xterm")
    for var in ("TERM_PROGRAM", "KITTY_WINDOW_ID"):
        monkeypatch.delenv(var, raising=False)
    app = make_app(settings_path, start="infer")
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        text = screen_text(app)
        assert "📁" not in text and "📄" not in text and "▸ holiday" in text
    app = make_app(settings_path, start="infer", extra='[tui]\nicons = "emoji"')
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause(0.5)
        assert "📁 holiday" in screen_text(app)


# 13 ------------------------------------------------------------------------------------------------
async def test_infer_at_80x24_shows_every_selected_preview(settings_path, workdir):
    import shutil

    from tui_helpers import settle, type_path

    pics = sorted((workdir / "pictures").glob("*.jpg"))
    for i, p in enumerate(pics):
        shutil.copy(p, workdir / "pictures" / f"copy-{i}.jpg")
    app = make_app(settings_path, start="infer", record_history=False)
    async with app.run_test(size=(80, 24)) as pilot:
        for p in sorted((workdir / "pictures").glob("*.jpg"))[:8]:
            await type_path(pilot, p)
        await settle(pilot)
        previews = list(app.screen.query("#previews > Preview"))
        assert len(previews) == 8
        for p in previews:
            assert p.region.width >= 4 and p.region.right <= 80, p.region


# 8 (the log panel's part) ---------------------------------------------------------------------------
def test_log_lines_show_level_names_not_numbers():
    import logging

    from ncanvas_tui.tui.widgets.log_panel import TuiLogHandler

    class App:
        def __init__(self):
            self.lines = []

        def post_message(self, m):
            self.lines.append(m)

    app = App()
    handler = TuiLogHandler(app, level=logging.DEBUG)
    log = logging.getLogger("ncanvas_tui.test_i15")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        log.log(22, "[I] [TRT] building")
        log.log(35, "[W] something odd")
    finally:
        log.removeHandler(handler)
    assert [m.level for m in app.lines] == ["INFO", "WARNING"]


# 6 -------------------------------------------------------------------------------------------------
async def test_engines_models_table_is_whole_at_160x48(settings_path):
    from tui_helpers import screen_text, settle

    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        header = next(line for line in screen_text(app).splitlines() if "family" in line)
        for col in ("model", "family", "top-1", "input", "file"):
            assert col in header.split("▏")[0], header


async def test_engines_hint_follows_a_remapped_key(settings_path):
    app = make_app(settings_path, start="engines", record_history=False,
                   extra='[tui]\nkeys = { engines_build = "ctrl+b" }')
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        assert "Ctrl+B build" in status_text(app, "#engines-phase")
