"""Stories on disk: ``[paths].output``/stories/*.md, read back by ``story --continue``
and ``imagine --story``.

Format: Markdown with a front matter block that is one JSON object (JSON is valid
YAML flow style, so Markdown tools show it as ordinary front matter)::

    ---
    {"ncanvas_story": 1, "labels": ["daisy"], "style": "Fantasy", "theme": "...", "language": "en", ...}
    ---
    Once upon a time...

Writes are atomic (temp file + hard link) and never overwrite: a clash gets a
``-2``, ``-3``... suffix. Plain .txt/.md files load too (text only).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ncanvas_tui.files import read_regular_file, write_new_file
from ncanvas_tui.settings import Settings
from ncanvas_tui.story.catalog import StoryInputError
from ncanvas_tui.story.model import Story

FORMAT_VERSION = 1
MAX_BYTES = 2 * 1024 * 1024
_FIELDS = ("labels", "style", "theme", "language", "created", "prompt", "model", "partial", "run_id")



def stories_dir(settings: Settings) -> Path:
    return settings.paths.output / "stories"


def _slug(story: Story) -> str:
    words = "-".join(story.labels[:3]) if story.labels else (story.style or "story")
    slug = re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")[:40]
    return slug or "story"


def render(story: Story) -> str:
    meta = {"ncanvas_story": FORMAT_VERSION, **story.meta()}
    return "---\n" + json.dumps(meta, ensure_ascii=False) + "\n---\n" + story.text.rstrip() + "\n"


def save_story(settings: Settings, story: Story, *, directory: Path | None = None) -> Path:
    """Write ``story`` to a new file under [paths].output/stories/ and return its path."""
    folder = directory or stories_dir(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoryInputError(f"{folder}: cannot create the stories folder ([paths].output): "
                              f"{e.strerror or e}") from None
    stamp = re.sub(r"[^0-9T]", "", story.created.split("+")[0])[:15] or "story"
    base = f"{stamp}-{_slug(story)}"
    data = render(story).encode("utf-8")
    try:
        path = write_new_file(folder, base, ".md", data)
    except FileExistsError:
        raise StoryInputError(f"{folder}: too many stories named {base}*.md") from None
    except OSError as e:
        raise StoryInputError(f"{folder}: cannot save the story: {e.strerror or e}") from None
    story.path = path
    return path


def load_story(path: str | os.PathLike[str]) -> Story:
    """Read a story file written by ``save_story`` (or any .txt/.md: text only)."""
    p = Path(path).expanduser()
    # a FIFO, socket or device is refused (never waited on); folders, size, permissions: one line
    raw = read_regular_file(p, what="story file", limit=MAX_BYTES, error=StoryInputError)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StoryInputError(f"{p}: not a text file (not UTF-8)") from None
    if "\x00" in text:
        raise StoryInputError(f"{p}: not a text file (binary data)")
    text = text.replace("\r\n", "\n")
    story = Story(text="")
    m = re.match(r"---\n(\{.*?\})\n---\n?", text, re.DOTALL)
    if m:
        try:
            meta = json.loads(m.group(1))
        except ValueError:
            raise StoryInputError(f"{p}: the story header (front matter) is not valid JSON") from None
        if isinstance(meta, dict) and "ncanvas_story" in meta:
            for k in _FIELDS:
                if k in meta and meta[k] is not None:
                    setattr(story, k, meta[k])
            if not isinstance(story.labels, list):
                story.labels = [str(story.labels)]
            story.labels = [str(x) for x in story.labels]
            text = text[m.end():]
    story.text = text.strip()
    if not story.text:
        raise StoryInputError(f"{p}: the story file has no text")
    story.path = p
    return story
