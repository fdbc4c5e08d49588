"""One imagine step of a journey, shared by the CLI and the TUI: get the prompt (given, or distilled from
a story by the LLM), draw, and record the picture (or the failed attempt with its prompt) in the history.

    res = imagine(settings, prompt="a fox in the snow", style="Fantasy")            # or story="story.md"
    res.picture.path, res.run_id

A failure raises the ``NcanvasError`` of the step that failed; when the attempt was recorded, its message
ends with the history run that keeps the prompt, so nothing the user (or the LLM) wrote is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncanvas_tui.errors import NcanvasError
from ncanvas_tui.imagine.draw import Picture, compose_prompt, draw
from ncanvas_tui.settings import Settings


@dataclass
class ImagineResult:
    picture: Picture
    run_id: int | None = None           # the history run the picture was attached to (None: not recorded)
    source: str = "prompt"              # prompt | story
    info: dict[str, Any] = field(default_factory=dict)   # story_file, labels, ... when from a story
    history_error: str | None = None    # why the picture is not in the history (it is still saved)

    def as_dict(self) -> dict[str, Any]:
        return {**self.picture.as_dict(), "source": self.source, **self.info, "run_id": self.run_id}


def prompt_from_story(settings: Settings, story: Any, style: str | None = None) -> tuple[str, dict[str, Any]]:
    """A story file path (or a loaded ``Story``) -> (picture prompt distilled by the LLM, facts to record:
    story_file, labels, story_style, story_theme, and run_id when the story belongs to a history run)."""
    try:
        from ncanvas_tui.story import distil_prompt
        from ncanvas_tui.story.storyfile import load_story
    except ImportError as e:
        raise NcanvasError(f"pictures from stories need the story module, which is not available here ({e}); "
                           "give the prompt itself") from None
    if isinstance(story, (str, Path)):
        story = load_story(story)
    labels = [str(x) for x in (getattr(story, "labels", None) or [])]
    prompt = distil_prompt(settings, story, labels, style or getattr(story, "style", None),
                           getattr(story, "theme", None))
    path = getattr(story, "path", None)
    info: dict[str, Any] = {"story_file": str(Path(path).resolve()) if path else None, "labels": labels,
                            "story_style": getattr(story, "style", None),
                            "story_theme": getattr(story, "theme", None)}
    run_id = getattr(story, "run_id", None)
    if isinstance(run_id, int):
        info["run_id"] = run_id
    return str(prompt), info


def _record(settings: Settings, run_id: int | None, picture: dict[str, Any]) -> tuple[int | None, str | None]:
    from ncanvas_tui.history.store import open_history

    try:
        with open_history(settings) as h:
            return h.attach_picture(run_id, picture), None
    except NcanvasError as e:
        return None, str(e)


def imagine(settings: Settings, *, prompt: str | None = None, story: Any = None, negative: str | None = None,
            style: str | None = None, out: str | Path | None = None, run_id: int | None = None,
            history: bool = True, cancelled: Callable[[], bool] | None = None, seed: int | None = None,
            steps: int | None = None, guidance: float | None = None) -> ImagineResult:
    """Draw from ``prompt`` or from ``story`` (a story file or ``Story``), attach to ``run_id`` (default:
    the story's run, else a new run) unless ``history`` is false."""
    if (prompt is None) == (story is None):
        raise NcanvasError("give either a prompt or a story to draw")
    from ncanvas_tui.imagine.providers import check_key

    check_key(settings.imagegen)  # a remote provider without its key: an error before any request
    info: dict[str, Any] = {}
    source = "prompt"
    if story is not None:
        prompt, info = prompt_from_story(settings, story, style)
        source, style = "story", None  # the distilled prompt already carries the style
        if not prompt.strip():
            raise NcanvasError("the LLM distilled an empty picture prompt")
    assert prompt is not None
    if not prompt.strip():
        raise NcanvasError("the picture prompt is empty: say what the picture should show")
    story_run = info.pop("run_id", None)
    if run_id is None:
        run_id = story_run
    elif history:
        from ncanvas_tui.history.store import open_history

        open_history(settings).get_run(run_id)  # an unknown run is an error before any money is spent
    try:
        pic = draw(settings, prompt, negative=negative, style=style, out=out, cancelled=cancelled, seed=seed,
                   steps=steps, guidance=guidance)
    except NcanvasError as e:
        full = compose_prompt(prompt, style)
        rid = None
        if history:
            cfg = settings.imagegen
            rid, _ = _record(settings, run_id, {
                "prompt": full, "negative": negative, "style": style, "provider": cfg.provider,
                "model": cfg.model, "size": cfg.size, "path": None, "error": str(e), "source": source,
                "seed": seed,
                **info})
        if rid is not None:
            e.args = (f"{e} (prompt kept in history run {rid}: ncanvas history show {rid})",)
        elif source == "story":  # the distilled prompt exists nowhere else: say it
            e.args = (f"{e} (prompt was: {full})",)
        raise
    res = ImagineResult(picture=pic, source=source, info=info)
    if history:
        res.run_id, res.history_error = _record(settings, run_id, {**pic.as_dict(), "source": source, **info})
    return res
