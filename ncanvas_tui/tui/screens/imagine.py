"""Imagine: the story distilled into a picture prompt (shown, editable), a style,
a negative prompt and the provider -> a picture, previewed when it arrives, with
the path it was saved at.

Ctrl+D distils the prompt from the story (the LLM, in a thread), Ctrl+R draws
(with the seed typed in, else ``[imagegen].seed``), Ctrl+G draws again with a new random
seed, Esc cancels. The seed used is shown with the path. Network calls run in thread workers; the UI never waits on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Select, Static, TextArea
from textual.worker import get_current_worker

from ncanvas_tui.errors import SettingsError
from ncanvas_tui.tui import services
from ncanvas_tui.tui.messages import PictureReady, PromptDistilled
from ncanvas_tui.tui.screens.base import NcScreen
from ncanvas_tui.tui.screens.story import RANDOM, style_theme_names
from ncanvas_tui.tui.widgets.preview import Preview

PROVIDERS = ("openai", "nvidia", "sdwebui")
NO_STYLE = "(none)"


class PromptArea(TextArea):
    """The picture prompt: a TextArea that leaves F6 (History's key, "select line" in TextArea)
    to the app, so the function keys switch screens from here too."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "select_line":
            return False  # the key goes on to the app's binding
        return super().check_action(action, parameters)


def simple_prompt(story: str, labels: list[str], limit: int = 300) -> str:
    """A picture prompt without the LLM: the labels and the story's opening sentences."""
    text = " ".join(story.replace("#", " ").split())
    out = ""
    for sentence in text.replace("!", ".").replace("?", ".").split("."):
        sentence = sentence.strip()
        if not sentence:
            continue
        if len(out) + len(sentence) > limit:
            break
        out += sentence + ". "
    lead = ", ".join(labels)
    return (f"{lead}. {out}" if lead else out).strip()


class ImagineScreen(NcScreen):
    MODE = "imagine"
    AUTO_FOCUS = "#imagine-prompt"  # what the user types on a first visit lands in the prompt
    CSS_PATH = "imagine.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "draw", "Draw", id="imagine_draw"),
        Binding("ctrl+g", "regenerate", "New seed", id="imagine_regenerate"),
        # priority: the prompt's TextArea binds Ctrl+D to "delete right"
        Binding("ctrl+d", "distil", "Distil prompt", id="imagine_distil", priority=True),
        Binding("ctrl+y", "copy", "Copy prompt", id="imagine_copy", priority=True),  # over the prompt's redo
        Binding("escape", "cancel", "Cancel", id="cancel"),
    ]

    def action_copy(self) -> None:
        from ncanvas_tui.tui import clipboard

        prompt = self.query_one("#imagine-prompt", TextArea).text.strip()
        if not prompt:
            self.notify("no prompt to copy yet", severity="warning")
            return
        clipboard.copy(self.app, prompt, "prompt", self.settings.paths.output)

    def __init__(self) -> None:
        super().__init__()
        self._story_seen = ""
        self._busy = False

    def compose_body(self) -> ComposeResult:
        styles, _themes = style_theme_names()
        styles = [NO_STYLE, *[x for x in styles if x != RANDOM]]
        s = self.settings
        yield Label(f"Picture prompt ({self.key('imagine_distil')} distils it from the story; edit freely)",
                    classes="pane-title")
        yield PromptArea("", id="imagine-prompt", soft_wrap=True)
        with Horizontal(classes="form-row", id="imagine-options"):
            yield Label("style", classes="select-label")
            yield Select([(x, x) for x in styles], value=NO_STYLE, allow_blank=False, compact=True, id="imagine-style")
            yield Label("provider", classes="select-label")
            yield Select([(p, p) for p in PROVIDERS], value=s.imagegen.provider, allow_blank=False, compact=True,
                         id="imagine-provider")
            yield Label("model", classes="select-label")
            yield Select([(s.imagegen.model, s.imagegen.model)], value=s.imagegen.model, allow_blank=False,
                         compact=True, id="imagine-model")
        with Horizontal(classes="form-row", id="imagine-inputs"):
            yield Input(placeholder="negative prompt (what to avoid)", value=s.imagegen.negative,
                        id="imagine-negative")
            yield Input(placeholder="random", restrict=r"[0-9]*", max_length=10, id="imagine-seed")
        yield Static("", classes="banner", id="imagine-banner", markup=False)
        yield Label("", id="imagine-status", markup=False)
        with Vertical(id="imagine-picture"):
            yield Static("The picture appears here.", classes="hint", id="imagine-empty")

    def on_mount(self) -> None:
        self.query_one("#imagine-negative", Input).border_title = "negative prompt"
        self.query_one("#imagine-seed", Input).border_title = "seed"
        self._check_config()
        self._list_models()

    @work(thread=True, exclusive=True, group="imagine-models", exit_on_error=False, description="model list")
    def _list_models(self) -> None:
        """The image endpoint's own models (GET /models) in the model select."""
        from ncanvas_tui.probe import probe_section
        from ncanvas_tui.tui.screens.story import _offer

        found = probe_section(self.settings.imagegen)
        if found.models:
            self.app.call_from_thread(_offer, self.query_one("#imagine-model", Select), found.models,
                                      self.settings.imagegen.model)

    def on_screen_resume(self) -> None:
        app: Any = self.app
        story = getattr(app, "story_text", "") or ""
        area = self.query_one("#imagine-prompt", TextArea)
        if story and story != self._story_seen:
            self._story_seen = story
            if not area.text.strip():
                self.action_distil()
        self._check_config()

    def _settings_for_provider(self) -> Any:
        provider = str(self.query_one("#imagine-provider", Select).value)
        model = self.query_one("#imagine-model", Select).value
        s = self.settings
        if provider != s.imagegen.provider:
            return s.replace("imagegen", provider=provider)
        return s if not isinstance(model, str) or model == s.imagegen.model else s.replace("imagegen", model=model)

    def _check_config(self) -> None:
        if self._busy:
            return
        problem = services.imagegen_problem(self._settings_for_provider())
        self.banner(problem or "", "warning" if problem else None)

    def banner(self, text: str, kind: str | None) -> None:
        b = self.query_one("#imagine-banner", Static)
        b.set_classes(f"banner shown {kind}" if kind and text else "banner")
        b.update(text)

    def status(self, text: str) -> None:
        self.query_one("#imagine-status", Label).update(text)

    @on(Select.Changed, "#imagine-provider")
    def _provider_changed(self) -> None:
        self._check_config()

    # -- distil ---------------------------------------------------------------------------------
    def action_distil(self) -> None:
        app: Any = self.app
        story = getattr(app, "story_text", "") or ""
        if not story.strip():
            self.notify(f"no story yet: write one on Story ({self.key('screen_story')}), or type a prompt here",
                        severity="warning")
            return
        self.status("distilling the story into a picture prompt…")
        self._distil(story, list(getattr(app, "last_labels", [])))

    @work(thread=True, exclusive=True, group="distil", exit_on_error=False, description="distil prompt")
    def _distil(self, story: str, labels: list[str]) -> None:
        """The LLM distils the story (on the app's StoryRunner); without it, the story's opening."""
        app: Any = self.app
        meta = dict(getattr(app, "story_meta", {}))
        try:
            problem = services.llm_problem(self.settings)
            if problem:
                raise SettingsError(problem)
            runner = app.story_runner()
            prompt = runner.distil(story, meta.get("labels") or labels, meta.get("style"),
                                   meta.get("theme")).result()
        except Exception as e:  # noqa: BLE001 - a prompt from the story itself still works
            prompt = simple_prompt(story, labels)
            self.post_message(PromptDistilled(prompt))
            self.app.call_from_thread(
                self.notify, f"the LLM could not distil the prompt ({' '.join(str(e).split())}); "
                "made one from the story's opening instead", severity="warning", timeout=10)
            return
        self.post_message(PromptDistilled(str(prompt)))

    @on(PromptDistilled)
    def _distilled(self, event: PromptDistilled) -> None:
        self.query_one("#imagine-prompt", TextArea).text = event.prompt
        self.status(f"prompt ready: edit it if you like, {self.key('imagine_draw')} draws")

    # -- draw -----------------------------------------------------------------------------------
    def action_regenerate(self) -> None:
        """Draw the same prompt again with a new random seed."""
        from ncanvas_tui.imagine.draw import new_seed

        self.action_draw(seed=new_seed())

    def action_draw(self, seed: int | None = None) -> None:
        if self._busy:
            self.notify(f"a picture is being drawn ({self.key('cancel')} cancels)", severity="warning")
            return
        prompt = self.query_one("#imagine-prompt", TextArea).text.strip()
        if not prompt:
            self.notify(f"the prompt is empty: {self.key('imagine_distil')} distils one from the story, or type one",
                        severity="warning")
            self.query_one("#imagine-prompt", TextArea).focus()
            return
        style = str(self.query_one("#imagine-style", Select).value)
        negative = self.query_one("#imagine-negative", Input).value.strip() or None
        typed = self.query_one("#imagine-seed", Input).value.strip()
        if seed is None and typed:
            seed = int(typed)
        self._busy = True
        self.banner("", None)
        settings = self._settings_for_provider()
        self.status(f"drawing with {settings.imagegen.provider} ({settings.imagegen.model})… {self.key('cancel')} cancels")
        self._draw(settings, prompt, None if style == NO_STYLE else style, negative, seed)

    def action_cancel(self) -> None:
        for w in self.workers:
            if w.group in ("draw", "distil"):
                w.cancel()
        if self._busy:
            self.status("cancelling… (the request in flight is abandoned)")

    @work(thread=True, exclusive=True, group="draw", exit_on_error=False, description="picture")
    def _draw(self, settings: Any, prompt: str, style: str | None, negative: str | None,
              seed: int | None = None) -> None:
        worker = get_current_worker()
        from ncanvas_tui.imagine import draw

        def say(line: str) -> None:  # a provider without seeds says so once, as a notification
            self.app.call_from_thread(self.notify, line.removeprefix("ncanvas: note: "), severity="warning")

        pic = draw(settings, prompt, negative=negative if negative is not None else "", style=style,
                   cancelled=lambda: worker.is_cancelled, seed=seed, say=say)
        if worker.is_cancelled:
            return
        self.post_message(PictureReady(pic.path, pic.prompt, pic.provider, pic.seed))
        app: Any = self.app
        if getattr(app, "record_history", False):
            run_id = services.attach(settings, "picture", getattr(app, "run_id", None), pic.as_dict())
            if run_id is not None:
                self.app.call_from_thread(setattr, app, "run_id", run_id)

    @on(PictureReady)
    async def _picture(self, event: PictureReady) -> None:
        self._busy = False
        app: Any = self.app
        app.picture_path = event.path
        app.picture_prompt = event.prompt
        box = self.query_one("#imagine-picture", Vertical)
        await box.remove_children()
        await box.mount(Preview(event.path, mode=getattr(app, "previews", "auto"), caption=event.path))
        seed = (f" · seed {event.seed} ({self.key('imagine_regenerate')}: another seed)"
                if event.seed is not None else "")
        self.status(f"saved: {event.path}{seed}")
        self.notify(f"picture saved: {Path(event.path).name}")

    def job_ended(self, worker: Any, failed: bool) -> None:
        if worker.group == "draw":
            self._busy = False
            if failed:
                self.status("no picture (see the notification)")
                if worker.error is not None:
                    self.banner(f"The picture failed: {' '.join(str(worker.error).split())}", "error")
            elif worker.is_cancelled:
                self.status("cancelled")
        elif worker.group == "distil" and failed:
            self.status("distilling failed (see the notification); type a prompt instead")
