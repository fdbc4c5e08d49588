"""``StoryRunner``: stories from threads on one long-lived loop (the rails are built once)."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeopenai import FakeOpenAI, Reply, story_settings_text

from ncanvas_tui import settings as settings_mod
from ncanvas_tui.story import StoryRequest, StoryResult, StoryToken
from ncanvas_tui.story.runner import StoryRunner

REQ = StoryRequest(labels=["daisy"], style="Fantasy", theme="Time Travel")


@pytest.fixture
def fake():
    with FakeOpenAI() as f:
        yield f


def load(tmp_path: Path, url: str, guardrails: bool):
    p = tmp_path / "s.toml"
    p.write_text(story_settings_text(url, guardrails=guardrails), encoding="utf-8")
    return settings_mod.load(p)


def test_two_guarded_stories_share_one_loop_and_one_rails(fake, tmp_path):
    pytest.importorskip("nemoguardrails")
    with StoryRunner(load(tmp_path, fake.url, guardrails=True)) as runner:
        threads: set[str] = set()
        tokens: list[str] = []

        def on_event(ev):
            threads.add(threading.current_thread().name)
            if isinstance(ev, StoryToken):
                tokens.append(ev.text)

        first = runner.submit(REQ, on_event).result(60)
        rails = runner.writer.guard._rails
        second = runner.submit(REQ, on_event).result(60)
        assert isinstance(first, StoryResult) and first.ok and second.ok
        assert runner.writer.guard._rails is rails  # built once, reused
        assert threads == {"ncanvas-story"} and "".join(tokens).startswith("Once upon a time")
        assert first.stats["check_calls"] == second.stats["check_calls"] >= 2  # input + output checks
        assert len(fake.check_calls("input")) == 2


def test_cancel_from_another_thread_keeps_the_partial_story(fake, tmp_path):
    fake.chat.push(Reply("one two three four five six seven eight", gap=0.2))
    with StoryRunner(load(tmp_path, fake.url, guardrails=False)) as runner:
        got: list[str] = []
        fut = runner.submit(REQ, lambda ev: got.append(ev.text) if isinstance(ev, StoryToken) else None)
        while len(got) < 2:
            time.sleep(0.01)
        fut.cancel()
        with pytest.raises(CancelledError):
            fut.result(5)
        deadline = time.time() + 5
        while (runner.last_result is None or not runner.last_result.cancelled) and time.time() < deadline:
            time.sleep(0.01)
        result = runner.last_result
        assert result is not None and result.cancelled and result.partial
        assert result.story.startswith("one two") and "eight" not in result.story


def test_distil_on_the_runner(fake, tmp_path):
    fake.chat.push(Reply("a daisy in a time machine"))
    with StoryRunner(load(tmp_path, fake.url, guardrails=False)) as runner:
        out = runner.distil("A daisy travels in time.", ["daisy"], "Fantasy", "Time Travel").result(10)
    assert out == "a daisy in a time machine, Fantasy style, theme: Time Travel"
