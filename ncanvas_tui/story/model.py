"""What goes into a story and what comes out: plain dataclasses shared by the CLI and the TUI."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ncanvas_tui.errors import GuardrailRefusal, NcanvasError


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Story:
    """A story as saved on disk (``storyfile.save_story`` / ``load_story``)."""

    text: str
    labels: list[str] = field(default_factory=list)
    style: str | None = None
    theme: str | None = None
    language: str = "en"
    created: str = field(default_factory=now_iso)
    prompt: str | None = None        # the user's custom prompt, if any
    model: str | None = None         # the LLM that wrote it
    partial: bool = False            # True when the stream broke or was cancelled
    run_id: int | None = None        # the history run this story belongs to
    path: Path | None = None         # where it was loaded from / saved to (not stored in the file)

    def meta(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("text")
        d.pop("path")
        return d


@dataclass
class StoryRequest:
    """One request to the writer. ``style``/``theme`` None or "(random)" pick one at random."""

    labels: list[str]
    style: str | None = None
    theme: str | None = None
    prompt: str | None = None               # the user's own words, added to the request
    continue_from: Story | None = None      # continue this story instead of starting one
    language: str | None = None             # en | zh; None: [llm].language
    images: list[str] | None = None         # the pictures the labels came from ([llm].vision sends them)


@dataclass
class StoryToken:
    """A piece of the story, in order. Already checked by the output rail when guardrails are on."""

    text: str


@dataclass
class StoryStatus:
    """Progress worth showing: 'checking the request', 'retrying after 429 in 1.0 s'..."""

    message: str


@dataclass
class StoryResult:
    """The end of one ``StoryWriter.write``: always the last event, also ``writer.last_result``.

    ``text`` is the new text (for a continuation: only the continuation) and ``story``
    the whole story so far. ``blocked``: a guardrail refused (``rail`` = input |
    output | dialog, ``message`` = what it said). ``error``: a one-line message when
    the endpoint failed; ``text`` then keeps what had arrived (``partial``).
    """

    text: str = ""
    story: str = ""
    blocked: bool = False
    rail: str | None = None
    message: str | None = None
    error: str | None = None
    partial: bool = False
    cancelled: bool = False
    labels: list[str] = field(default_factory=list)
    style: str | None = None
    theme: str | None = None
    language: str = "en"
    prompt: str | None = None
    model: str | None = None
    guardrails: bool = False
    images: list[str] = field(default_factory=list)   # paths of the pictures (never their data)
    vision: bool = False                               # the pictures themselves went to the model
    #: timings and counters: ttft_ms, total_ms, llm_calls, check_calls, retries
    stats: dict[str, float] = field(default_factory=dict)
    path: Path | None = None
    run_id: int | None = None        # the history run it was recorded in
    exc: NcanvasError | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return not self.blocked and self.error is None and not self.cancelled

    def to_story(self) -> Story:
        return Story(text=self.story, labels=list(self.labels), style=self.style, theme=self.theme,
                     language=self.language, prompt=self.prompt, model=self.model,
                     partial=self.partial or self.cancelled)

    def raise_for_status(self) -> None:
        """GuardrailRefusal when blocked, the endpoint's NcanvasError when it failed."""
        if self.blocked:
            raise GuardrailRefusal(self.message or f"blocked by the {self.rail} rail", self.rail or "input")
        if self.error is not None:
            raise self.exc if self.exc is not None else NcanvasError(self.error)

    def to_json(self) -> dict[str, Any]:
        """The ``ncanvas story --json`` document."""
        if self.blocked:
            out: dict[str, Any] = {"story": "", "blocked": True, "rail": self.rail, "message": self.message}
        else:
            out = {"story": self.story, "blocked": False, "rail": None,
                   "partial": bool(self.partial or self.cancelled or self.error is not None)}
            if self.error is not None:
                out["error"] = self.error
        if self.images:
            out["images"] = list(self.images)
            out["vision"] = self.vision
        out.update({"labels": list(self.labels), "style": self.style, "theme": self.theme,
                    "language": self.language, "guardrails": self.guardrails,
                    "path": str(self.path) if self.path else None, "run_id": self.run_id,
                    "stats": {k: (round(v, 2) if isinstance(v, float) else v) for k, v in self.stats.items()}})
        if self.text != self.story and not self.blocked:
            out["continuation"] = self.text
        return out
