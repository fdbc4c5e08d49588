"""The whole journey with the keyboard, as the issue's "done when" puts it: pick three photos,
classify them, write a story from the labels, continue it, draw a picture from it, and find all
of it as ONE run in History. LLM and image API are REAL loopback HTTP servers."""

from __future__ import annotations

import pytest
from fakeimages import KEY, KEY_ENV, FakeImages, imagegen_settings
from fakeopenai import Reply, story_settings_text
from tui_helpers import make_app, screen_text, settle, type_path, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


@pytest.fixture
def fake():
    with FakeImages() as f:
        yield f


async def test_photos_to_story_to_picture_to_history(fake, workdir, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    path = workdir / "settings.toml"
    path.write_text(story_settings_text(fake.url, api_key_env="") + '\n[inference]\nbackend = "onnxruntime"\n'
                    'precision = "fp32"\n', encoding="utf-8")
    imagegen_settings(path, "openai", fake.url)
    fake.chat.push(Reply("A tabby cat sipped espresso among the daisies.", gap=0.005),
                   Reply("Then the cat fell asleep in the sun.", gap=0.005))
    app = make_app(path)
    async with app.run_test(size=(140, 44)) as pilot:
        for name in ("chelsea.jpg", "coffee.jpg", "flower.jpg"):
            await type_path(pilot, workdir / "pictures" / name)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.last_result is not None, timeout=60, what="classified")
        labels = list(app.last_labels)
        assert "espresso" in labels and "daisy" in labels

        await pilot.press("alt+3")  # the focus is in a text field: Alt+number switches
        await wait_for(pilot, lambda: type(app.screen).__name__ == "StoryScreen", what="story")
        assert app.screen.query_one("#story-labels").value == ", ".join(labels)
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.story_text.startswith("A tabby cat"), what="story written")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: "fell asleep" in app.story_text, what="story continued")
        first_call = str(fake.calls()[0].body["messages"])
        assert all(label in first_call for label in labels)  # the labels of the photos reached the LLM

        await pilot.press("4")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImagineScreen", what="imagine")
        area = app.screen.query_one("#imagine-prompt")
        await wait_for(pilot, lambda: area.text.strip(), what="prompt distilled on arrival")
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.picture_path, what="picture")
        run_id = app.run_id

        await pilot.press("f6")  # Imagine's prompt has the focus: a digit is text there
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="history")
        table = app.screen.query_one("#history-table")
        await wait_for(pilot, lambda: table.row_count == 1, what="one run")
        table.focus()
        await pilot.press("enter")
        md = app.screen.query_one("#history-md")
        await wait_for(pilot, lambda: "fell asleep" in md.source, what="run shows the story")
        assert "espresso" in screen_text(app)
        await settle(pilot)
        assert app.screen.open_id == run_id
        from ncanvas_tui import settings as s
        from ncanvas_tui.history.store import open_history

        run = open_history(s.load(path)).get_run(run_id)
        assert len(run["inferences"]) == 1 and len(run["stories"]) >= 1 and len(run["pictures"]) == 1
        assert run["pictures"][0]["path"] == app.picture_path
