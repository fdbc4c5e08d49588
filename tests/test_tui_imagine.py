"""Imagine screen against REAL loopback image + chat endpoints (tests/fakeimages.py): the prompt is
distilled from the story, the picture is previewed with its path, errors are banners, not crashes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakeimages import KEY, KEY_ENV, Error, FakeImages, NotImage, imagegen_settings
from fakeopenai import story_settings_text
from tui_helpers import make_app, notes, screen_text, settle, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")

STORY = "Once upon a time a daisy met a robot in a sunlit field. They talked until the stars came out."


@pytest.fixture
def fake():
    with FakeImages() as f:
        yield f


def settings_for(workdir, fake, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    p = workdir / "settings.toml"
    p.write_text(story_settings_text(fake.url, api_key_env=""), encoding="utf-8")
    return imagegen_settings(p, "openai", fake.url)


async def open_imagine(pilot, story=STORY):
    app = pilot.app
    app.story_text = story
    app.story_meta = {"labels": ["daisy", "robot"], "style": "Fantasy", "theme": "A Chance Encounter"}
    app.last_labels = ["daisy", "robot"]
    await pilot.press("4")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ImagineScreen", what="imagine screen")


async def test_prompt_distilled_then_picture_shown_with_its_path(fake, workdir, monkeypatch):
    app = make_app(settings_for(workdir, fake, monkeypatch))
    async with app.run_test(size=(120, 40)) as pilot:
        await open_imagine(pilot)
        area = app.screen.query_one("#imagine-prompt")
        await wait_for(pilot, lambda: "watercolor daisy" in area.text, what="distilled prompt")
        area.text = area.text + ", golden hour"  # the user edits it
        app.screen.query_one("#imagine-negative").value = "text, watermark"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.picture_path, what="picture")
        await settle(pilot)
        path = Path(app.picture_path)
        assert path.is_file() and path.parent == workdir / "output" / "images"
        text = screen_text(app)
        assert "saved:" in text and path.name in "".join(line.strip() for line in text.splitlines())
        sent = fake.image_calls()[-1].body
        assert "golden hour" in sent["prompt"] and sent["model"] == "gpt-image-1"
        await wait_for(pilot, lambda: app.run_id is not None, what="picture in history")
        assert KEY not in text and all(KEY not in n for n in notes(app))


async def test_image_api_errors_are_banners(fake, workdir, monkeypatch):
    fake.images.push(NotImage())
    app = make_app(settings_for(workdir, fake, monkeypatch), record_history=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_imagine(pilot)
        area = app.screen.query_one("#imagine-prompt")
        await wait_for(pilot, lambda: area.text, what="prompt")
        await pilot.press("ctrl+r")
        banner = app.screen.query_one("#imagine-banner")
        await wait_for(pilot, lambda: banner.has_class("error"), what="error banner")
        assert "not an image" in screen_text(app) or "not an image" in " ".join(notes(app))
        fake.images.push(Error(401, "bad key"))
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: any("401" in n for n in notes(app)), what="401 notification")
        assert app.picture_path is None and app.is_running
        assert not list((workdir / "output").rglob("*.png"))


async def test_without_key_says_what_to_set_and_distil_falls_back(settings_path):
    app = make_app(settings_path, record_history=False)  # no OPENAI_API_KEY in the environment
    async with app.run_test(size=(120, 40)) as pilot:
        await open_imagine(pilot)
        await wait_for(pilot, lambda: "No image API key" in screen_text(app), what="config banner")
        area = app.screen.query_one("#imagine-prompt")
        # the LLM cannot distil without a key: the prompt comes from the story's opening
        await wait_for(pilot, lambda: "daisy met a robot" in area.text, what="fallback prompt")
        await wait_for(pilot, lambda: any("could not distil" in n and "OPENAI_API_KEY" in n for n in notes(app)),
                       what="distil fallback notification")


async def test_seed_typed_then_regenerate_draws_with_a_new_seed(fake, workdir, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    p = workdir / "settings.toml"
    p.write_text(story_settings_text(fake.url, api_key_env=""), encoding="utf-8")
    app = make_app(imagegen_settings(p, "sdwebui", fake.root, seed=-1), record_history=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_imagine(pilot)
        area = app.screen.query_one("#imagine-prompt")
        await wait_for(pilot, lambda: area.text, what="prompt")
        app.screen.query_one("#imagine-seed").value = "42"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: app.picture_path, what="picture")
        await wait_for(pilot, lambda: "seed 42" in screen_text(app), what="seed shown")
        first = app.picture_path
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: app.picture_path != first, what="second picture")
        seeds = [c.body["seed"] for c in fake.image_calls()]
        assert seeds[0] == 42 and seeds[1] not in (42, -1)
        await wait_for(pilot, lambda: f"seed {seeds[1]}" in screen_text(app), what="new seed shown")
