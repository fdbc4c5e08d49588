"""Keep a finished story: its file under [paths].output/stories/ and its history entry."""

from __future__ import annotations

import logging
from pathlib import Path

from ncanvas_tui.errors import NcanvasError
from ncanvas_tui.settings import Settings
from ncanvas_tui.story.model import StoryResult
from ncanvas_tui.story.storyfile import save_story

log = logging.getLogger(__name__)


def record_history(settings: Settings, result: StoryResult, run_id: int | None = None) -> int | None:
    """Add the story (or the refusal) to the history; returns the run id. A history problem is
    logged and returns None: it never loses the story (the file is already saved)."""
    try:
        from ncanvas_tui.history.store import open_history
    except ImportError:  # history not part of this install
        return None
    data = result.to_json()
    data["story"] = result.story
    try:
        with open_history(settings) as h:
            return int(h.attach_story(run_id, data))
    except NcanvasError as e:
        log.warning("story not saved to history: %s", e)
        result.stats["history_error"] = str(e)  # type: ignore[assignment]
        return None


def keep(settings: Settings, result: StoryResult, *, history: bool = True,
         run_id: int | None = None) -> Path | None:
    """Save a story that has text (complete or partial) and record it; sets ``result.path``.
    Refusals are recorded in the history but write no file."""
    if history:
        run_id = record_history(settings, result, run_id) or run_id
        result.run_id = run_id
    if result.blocked or not result.story.strip() or not result.text.strip():
        return None
    story = result.to_story()
    story.run_id = run_id
    result.path = save_story(settings, story)
    if history and run_id is not None:  # the step was written before the file: record where it went
        set_story_path(settings, run_id, result.path)
    return result.path


def set_story_path(settings: Settings, run_id: int, path: Path | str) -> None:
    """Best effort, like ``record_history``: a history problem is logged, never fatal."""
    try:
        from ncanvas_tui.history.store import open_history

        with open_history(settings) as h:
            h.set_story_path(run_id, path)
    except (ImportError, NcanvasError) as e:
        log.warning("story path not saved to history: %s", e)
