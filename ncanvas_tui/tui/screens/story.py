"""Story: the labels from the last inference (editable), a style and a theme (or
random), a language and the user's own words -> a story streamed as Markdown.

Ctrl+R writes, Ctrl+N continues the story so far, Esc cancels (what arrived is
kept), Ctrl+S saves it under ``[paths].output/stories``, Ctrl+Y copies
it. A guardrail refusal is a red banner naming the rail. The LLM runs on the app's
``StoryRunner`` (one long-lived loop in a thread, rails built once), so a slow
endpoint or guardrails start-up never blocks the UI; tokens come back as
``StoryChunk`` messages.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Markdown, Select, Static

from ncanvas_tui.tui import services
from ncanvas_tui.tui.messages import JobProgress, StoryChunk, StoryFinished
from ncanvas_tui.tui.screens.base import NcScreen

RANDOM = "(random)"


def style_theme_names() -> tuple[list[str], list[str]]:
    try:
        from ncanvas_tui.story.catalog import STYLE_NAMES, THEME_NAMES

        return list(STYLE_NAMES), list(THEME_NAMES)
    except ImportError:  # pragma: no cover - the catalog ships with the core
        return [RANDOM], [RANDOM]


class StoryScreen(NcScreen):
    MODE = "story"
    AUTO_FOCUS = "#story-scroll"
    CSS_PATH = "story.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "write", "Write", id="story_write"),
        Binding("ctrl+n", "continue_story", "Continue", id="story_continue"),
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("ctrl+s", "save", "Save", id="story_save"),
        Binding("ctrl+y", "copy", "Copy", id="story_copy"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self._labels_seen: tuple[str, ...] = ()
        self._stream: Any = None
        self._writing = False
        self._future: Any = None

    def compose_body(self) -> ComposeResult:
        styles, themes = style_theme_names()
        s = self.settings
        with Horizontal(classes="form-row", id="story-choices"):
            yield Label("style", classes="select-label")
            yield Select([(x, x) for x in styles], value=RANDOM if RANDOM in styles else styles[0],
                         allow_blank=False, compact=True, id="story-style")
            yield Label("theme", classes="select-label")
            yield Select([(x, x) for x in themes], value=RANDOM if RANDOM in themes else themes[0],
                         allow_blank=False, compact=True, id="story-theme")
            yield Label("language", classes="select-label")
            yield Select([("English", "en"), ("中文", "zh")], value=s.llm.language, allow_blank=False, compact=True,
                         id="story-language")
            yield Label("model", classes="select-label")
            yield Select([(s.llm.model, s.llm.model)], value=s.llm.model, allow_blank=False, compact=True,
                         id="story-model")
        yield Input(placeholder="labels, comma-separated (from the last inference)", id="story-labels")
        yield Input(placeholder="your own words for the story (optional)", id="story-prompt")
        yield Static("", classes="banner", id="story-banner", markup=False)
        yield Label(f"{self.key('story_write')} writes a story from the labels; {self.key('story_continue')} "
                    "continues it.", id="story-status",
                    markup=False)
        with VerticalScroll(id="story-scroll"):
            yield Markdown("", id="story-md")

    def on_mount(self) -> None:
        self.query_one("#story-labels", Input).border_title = "labels (from the last inference; edit freely)"
        self.query_one("#story-prompt", Input).border_title = "your words (optional)"
        self._check_config()
        self._list_models()

    @work(thread=True, exclusive=True, group="story-models", exit_on_error=False, description="model list")
    def _list_models(self) -> None:
        """The endpoint's own models (GET /models) in the model select; the current one stays chosen."""
        from ncanvas_tui.probe import probe_section

        found = probe_section(self.settings.llm)
        if found.models:
            self.app.call_from_thread(_offer, self.query_one("#story-model", Select), found.models,
                                      self.settings.llm.model)

    @on(Select.Changed, "#story-model")
    def _model_chosen(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.app.use_llm_model(event.value)  # type: ignore[attr-defined]

    def on_screen_resume(self) -> None:
        labels = tuple(getattr(self.app, "last_labels", []) or [])
        if labels and labels != self._labels_seen:
            self._labels_seen = labels
            self.query_one("#story-labels", Input).value = ", ".join(labels)
        self._check_config()

    def _check_config(self) -> None:
        if self._writing:
            return
        problem = services.llm_problem(self.settings)
        if problem:
            self.banner(problem, "warning")
        else:
            self.banner("", None)

    def banner(self, text: str, kind: str | None) -> None:
        b = self.query_one("#story-banner", Static)
        b.set_classes(f"banner shown {kind}" if kind and text else "banner")
        b.update(text)

    def status(self, text: str) -> None:
        self.query_one("#story-status", Label).update(text)

    # -- actions ------------------------------------------------------------------------------
    def action_write(self) -> None:
        self._start(continuing=False)

    def action_continue_story(self) -> None:
        if not self.text.strip():
            self.notify(f"nothing to continue yet: {self.key('story_write')} writes a story first", severity="warning")
            return
        self._start(continuing=True)

    def action_cancel(self) -> None:
        if self._writing:
            fut = self._future
            if fut is not None:
                fut.cancel()
            self.status("cancelling… (what arrived is kept)")

    def action_copy(self) -> None:
        if not self.text.strip():
            self.notify("no story to copy yet", severity="warning")
            return
        from ncanvas_tui.tui import clipboard

        clipboard.copy(self.app, self.text, "story", self.settings.paths.output)

    def action_save(self) -> None:
        if not self.text.strip():
            self.notify("no story to save yet", severity="warning")
            return
        self._save(self.text, dict(getattr(self.app, "story_meta", {})))

    @work(thread=True, exit_on_error=False, group="story-save", description="save story")
    def _save(self, text: str, meta: dict[str, Any]) -> None:
        from ncanvas_tui.story import storyfile
        from ncanvas_tui.story.model import Story

        story = Story(text=text, labels=list(meta.get("labels") or []), style=meta.get("style"),
                      theme=meta.get("theme"), language=meta.get("language") or "en",
                      prompt=meta.get("prompt"), model=meta.get("model"))
        path = storyfile.save_story(self.settings, story)
        run_id = getattr(self.app, "run_id", None)
        if getattr(self.app, "record_history", False) and run_id is not None:
            from ncanvas_tui.story.record import set_story_path

            set_story_path(self.settings, run_id, path)  # the history's story step says where it went
        self.app.call_from_thread(self.notify, f"story saved: {path}")

    def _start(self, continuing: bool) -> None:
        if self._writing:
            self.notify(f"a story is being written ({self.key('cancel')} cancels it)", severity="warning")
            return
        labels_text = self.query_one("#story-labels", Input).value
        labels = [x.strip() for x in labels_text.split(",") if x.strip()]
        if not labels and not continuing:
            self.notify(f"no labels: classify some images on Infer ({self.key('screen_infer')}), or type labels here",
                        severity="warning")
            self.query_one("#story-labels", Input).focus()
            return
        problem = services.llm_problem(self.settings)
        if problem:
            self.banner(problem, "warning")
            self.notify(problem, severity="error", timeout=10)
            return
        style = str(self.query_one("#story-style", Select).value)
        theme = str(self.query_one("#story-theme", Select).value)
        if continuing:  # the continuation keeps the story's style and theme ("(random)" is not re-rolled)
            meta = dict(getattr(self.app, "story_meta", {}) or {})
            style = str(meta.get("style") or style)
            theme = str(meta.get("theme") or theme)
        req = {
            "labels": labels,
            "style": style,
            "theme": theme,
            "language": str(self.query_one("#story-language", Select).value),
            "prompt": self.query_one("#story-prompt", Input).value.strip() or None,
            # the pictures of the last classification ([llm].vision sends them; the history keeps their paths)
            "images": [str(r["image"]) for r in (getattr(self.app, "last_result", None) or {}).get("results", [])
                       if r.get("image")],
        }
        self._writing = True
        self.banner("", None)
        md = self.query_one("#story-md", Markdown)
        if continuing:
            self.text = self.text.rstrip() + "\n\n"
            md.update(self.text)
        else:
            self.text = ""
            md.update("")
        self._stream = Markdown.get_stream(md)
        self.status(f"{'continuing' if continuing else 'writing'}… ({self.key('cancel')} cancels)")
        self._write(req, self.text if continuing else None)

    @work(thread=True, exclusive=True, group="story", exit_on_error=False, description="story")
    def _write(self, req: dict[str, Any], story_so_far: str | None) -> None:
        """In a thread: hand the request to the app's StoryRunner (one long-lived loop with the
        rails built once) and wait; tokens arrive through ``on_event`` as messages."""
        import concurrent.futures

        from ncanvas_tui.story.model import Story, StoryRequest, StoryStatus, StoryToken

        app: Any = self.app
        runner = app.story_runner()
        cont = None
        if story_so_far is not None:
            meta = dict(getattr(app, "story_meta", {}))
            cont = Story(text=story_so_far.rstrip(), labels=req["labels"] or list(meta.get("labels") or []),
                         style=meta.get("style"), theme=meta.get("theme"), language=req["language"])
        request = StoryRequest(labels=req["labels"], style=req["style"], theme=req["theme"],
                               prompt=req["prompt"], continue_from=cont, language=req["language"],
                               images=req["images"] or None)

        def on_event(ev: Any) -> None:
            if isinstance(ev, StoryToken):
                self.post_message(StoryChunk(ev.text))
            elif isinstance(ev, StoryStatus):
                self.post_message(JobProgress("story", 0, 0, ev.message))

        fut = runner.submit(request, on_event)
        self._future = fut
        cancelled = False
        try:
            result = fut.result()
        except concurrent.futures.CancelledError:
            cancelled = True
            result = runner.last_result
        except BaseException as e:
            self.post_message(StoryFinished("", message=_one_line(e)))
            raise
        finally:
            self._future = None
        if result is None:
            self.post_message(StoryFinished("", cancelled=cancelled,
                                            message="" if cancelled else "the writer ended without a result"))
            return
        cancelled = cancelled or bool(result.cancelled)
        meta = {"labels": list(result.labels), "style": result.style, "theme": result.theme,
                "language": result.language, "model": result.model, "prompt": result.prompt,
                "images": list(result.images), "partial": bool(result.partial)}
        story = result.story if not cancelled else ""
        self.post_message(StoryFinished(story, blocked=result.blocked, rail=result.rail,
                                        message=(result.message or result.error or "") if not cancelled else "",
                                        cancelled=cancelled))
        if not result.blocked and ((result.story or "").strip() or cancelled):
            self.app.call_from_thread(self._remember, result.story if not cancelled else None, meta)
        elif result.blocked and getattr(app, "record_history", False):  # a refusal is in the history too
            self.app.call_from_thread(self._record, {**meta, "story": "", "blocked": True, "rail": result.rail,
                                                     "message": result.message})

    def _remember(self, story: str | None, meta: dict[str, Any]) -> None:
        app: Any = self.app
        story = story if story is not None else self.text  # cancelled: keep what arrived
        if not story.strip():
            return
        app.story_text = story
        app.story_meta = meta
        if getattr(app, "record_history", False):
            self._record({"story": story, **meta})

    @work(thread=True, exit_on_error=False, group="history", description="history")
    def _record(self, data: dict[str, Any]) -> None:
        run_id = services.attach(self.settings, "story", getattr(self.app, "run_id", None), data)
        if run_id is not None:
            self.app.call_from_thread(setattr, self.app, "run_id", run_id)

    # -- messages from the writer -----------------------------------------------------------------
    @on(StoryChunk)
    async def _chunk(self, event: StoryChunk) -> None:
        self.text += event.text
        if self._stream is not None:
            await self._stream.write(event.text)
        self.query_one("#story-scroll", VerticalScroll).scroll_end(animate=False)

    @on(JobProgress)
    def _status(self, event: JobProgress) -> None:
        if event.job == "story" and event.phase:
            self.status(event.phase)

    @on(StoryFinished)
    async def _finished(self, event: StoryFinished) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self._writing = False
        md = self.query_one("#story-md", Markdown)
        if event.blocked:
            self.banner(f"⛔ Refused by the {event.rail or 'input'} rail (NeMo Guardrails): "
                        f"{event.message or 'the request or the answer was not allowed'}", "error")
            self.status("refused by a guardrail; change the labels or your words and try again")
            if not event.story:
                await md.update(self.text)
            return
        if event.story:
            self.text = event.story
            await md.update(self.text)
        if event.cancelled and not self.text.strip():
            self.status(f"cancelled before any words arrived; {self.key('story_write')} writes a story")
        elif event.cancelled:
            self.status(f"cancelled; kept {len(self.text.split())} words ({self.key('story_continue')} continues)")
        elif event.message:
            self.banner(f"The story stopped: {event.message}"
                        + (" (what arrived is kept)" if self.text.strip() else ""), "error")
            self.status("failed (see the banner)")
        else:
            k = self.key
            self.status(f"{len(self.text.split())} words · {k('story_continue')} continues, {k('story_save')} saves, "
                        f"{k('story_copy')} copies, then {k('screen_imagine')} for a picture")

    def job_ended(self, worker: Any, failed: bool) -> None:
        if worker.group == "story" and failed:
            self._writing = False


def _offer(select: Select, models: list[str], current: str) -> None:
    """Fill ``select`` with ``models`` (the current one first when the endpoint does not list it)."""
    names = models if current in models else [current, *models]
    select.set_options([(m, m) for m in names])
    select.value = current


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
