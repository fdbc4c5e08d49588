"""Messages the screens and jobs exchange: small dataclasses, posted thread-safely.

Jobs running off the event loop never touch a widget: they ``post_message`` one of
these, and the screen updates itself in its handler on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass
class LogLine(Message):
    """A log record for the log panel (from logging, Polygraphy, TensorRT or captured print)."""

    level: str
    name: str
    text: str


@dataclass
class JobProgress(Message):
    """Progress of a long job: ``done`` of ``total`` in ``phase`` (total 0: indeterminate)."""

    job: str
    done: float
    total: float
    phase: str = ""


@dataclass
class InferFinished(Message):
    """A classification finished: ``result`` is ``InferResult.as_dict()``."""

    result: dict[str, Any]
    paths: list[str] = field(default_factory=list)


@dataclass
class SelectionChanged(Message):
    """The image picker's selection changed."""

    paths: list[str]


@dataclass
class StoryChunk(Message):
    """Some more text of the story being streamed."""

    text: str


@dataclass
class StoryFinished(Message):
    """The story (or its continuation) ended: ``story`` is the full text so far."""

    story: str
    blocked: bool = False
    rail: str | None = None
    message: str = ""
    cancelled: bool = False


@dataclass
class PictureReady(Message):
    """The image API answered: the picture is saved at ``path``."""

    path: str
    prompt: str
    provider: str
    seed: int | None = None


@dataclass
class PromptDistilled(Message):
    """The LLM distilled the story into an image prompt."""

    prompt: str


@dataclass
class EnginesChanged(Message):
    """Something was built, verified or deleted: tables should reload."""

    note: str = ""


@dataclass
class BoardUpdate(Message):
    """A reading of the board for the strip (``board.LiveReader().read()``), from its thread worker."""

    state: dict[str, Any]
