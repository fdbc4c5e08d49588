"""The ncanvas terminal app: five screens (Engines, Infer, Story, Imagine, History).

Screens are Textual *modes*, created lazily the first time they are shown, so the
first paint imports nothing heavy (no tensorrt, onnxruntime, openai,
nemoguardrails, torch). F2-F6 (anywhere), number keys (outside text fields) and the
command palette switch screens; every
binding has an id that ``[tui].keys`` in settings.toml can remap; ``?`` lists them.
What one screen produces (labels, story, picture) is kept on the app for the next.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from ncanvas_tui.settings import Settings
from ncanvas_tui.tui.messages import LogLine
from ncanvas_tui.tui.navigation import SCREENS, fkey, pretty_key

LOGGERS = ("ncanvas_tui", "Polygraphy", "polygraphy", "tensorrt", "nemoguardrails")  # Polygraphy: G_LOGGER's name
#: the least level of a logger (and its children) that reaches the log panel; INFO for the rest
#: (NeMo Guardrails logs every rail and LLM call at INFO: that would flood the panel)
LOG_LEVELS = {"nemoguardrails": logging.WARNING}
#: seconds after the first paint before the guardrails are set up in the background
STORY_WARM_AFTER_S = 1.0


def _panel_level(name: str) -> int:
    for prefix, level in LOG_LEVELS.items():
        if name == prefix or name.startswith(prefix + "."):
            return level
    return logging.INFO


def _engines() -> type[Screen]:
    from ncanvas_tui.tui.screens.engines import EnginesScreen

    return EnginesScreen


def _infer() -> type[Screen]:
    from ncanvas_tui.tui.screens.infer import InferScreen

    return InferScreen


def _story() -> type[Screen]:
    from ncanvas_tui.tui.screens.story import StoryScreen

    return StoryScreen


def _imagine() -> type[Screen]:
    from ncanvas_tui.tui.screens.imagine import ImagineScreen

    return ImagineScreen


def _history() -> type[Screen]:
    from ncanvas_tui.tui.screens.history import HistoryScreen

    return HistoryScreen


#: mode -> the screen's class, imported the first time it is shown (the first paint stays light)
SCREEN_CLASSES: dict[str, Callable[[], type[Screen]]] = {
    "engines": _engines, "infer": _infer, "story": _story, "imagine": _imagine, "history": _history}


def screen_class(mode: str) -> type[Screen]:
    return SCREEN_CLASSES[mode]()


def _lazy(mode: str) -> Callable[[], Screen]:
    def make() -> Screen:
        return screen_class(mode)()

    return make


class NcanvasApp(App[int]):
    """``NcanvasApp(settings).run()``; ``previews`` overrides ``[tui].previews`` (tests: halfcell)."""

    TITLE = "ncanvas"
    SUB_TITLE = "Narrative Canvas"
    CSS_PATH = "app.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # noqa: RUF012 - Textual declares it
    MODES: ClassVar[dict[str, Any]] = {mode: _lazy(mode) for mode in SCREENS}
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(f"{key},{fkey(mode)},alt+{key}", f"show('{mode}')", title, id=f"screen_{mode}", show=False)
          for mode, (title, key) in SCREENS.items()),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("f1", "help", "Help", id="help_f1", show=False),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]

    def __init__(self, settings: Settings, *, previews: str | None = None, start: str | None = None,
                 record_history: bool = True) -> None:
        super().__init__()
        self.settings = settings
        self.previews = previews or getattr(settings.tui, "previews", "auto")
        self.start_mode = start or getattr(settings.tui, "start_screen", "infer")
        self.record_history = record_history
        # what screens hand to each other
        self.last_result: dict[str, Any] | None = None
        self.last_labels: list[str] = []
        self.story_text: str = ""
        self.story_meta: dict[str, Any] = {}
        self.picture_path: str | None = None
        self.picture_prompt: str = ""
        self.run_id: Any = None
        self._story_runner: Any = None
        self._runner_lock = threading.Lock()
        # log panel plumbing
        self.log_lines: deque[LogLine] = deque(maxlen=2000)
        self.log_panels: set[Any] = set()
        self._log_handler: logging.Handler | None = None
        keys = dict(settings.tui.keys)
        known = self.binding_ids() if keys else {}
        self.unknown_key_ids = sorted(k for k in keys if k not in known)
        self.set_keymap({k: v for k, v in keys.items() if k not in self.unknown_key_ids})

    # -- ids ---------------------------------------------------------------
    @classmethod
    def binding_ids(cls) -> dict[str, tuple[str, str, str]]:
        """Every remappable binding: id -> (screen title, default key, description)."""
        out: dict[str, tuple[str, str, str]] = {}
        for b in cls.BINDINGS:
            if isinstance(b, Binding) and b.id:
                out[b.id] = ("all screens", b.key, b.description)
        for mode, (title, _k) in SCREENS.items():
            for b in getattr(screen_class(mode), "BINDINGS", []):
                if isinstance(b, Binding) and b.id:
                    if b.id in out and title not in out[b.id][0]:  # one id on several screens (cancel)
                        where, key, desc = out[b.id]
                        out[b.id] = (f"{where}, {title}", key, desc)
                    else:
                        out.setdefault(b.id, (title, b.key, b.description))
        from ncanvas_tui.tui.widgets.image_picker import SelectedList

        for b in SelectedList.BINDINGS:
            if isinstance(b, Binding) and b.id:
                out.setdefault(b.id, ("Infer", b.key, b.description))
        return out

    def key_for(self, binding_id: str) -> str:
        """The key that runs ``binding_id`` now (remapped with [tui].keys, else the default), for hints:
        "Ctrl+N"; a screen switch is its function key (F3), as on the navigation strip."""
        mapped = self._keymap.get(binding_id)
        if mapped:
            key = mapped.split(",")[0]
        elif binding_id.startswith("screen_") and binding_id[7:] in SCREENS:
            key = fkey(binding_id[7:])
        else:
            ids = getattr(self, "_binding_ids", None)
            if ids is None:
                ids = self._binding_ids = self.binding_ids()
            key = ids.get(binding_id, ("", binding_id, ""))[1].split(",")[0]
        return pretty_key(key)

    # -- life cycle ----------------------------------------------------------
    def on_mount(self) -> None:
        theme = self.settings.tui.theme
        if theme == self.theme:
            pass  # the default: setting it again would re-apply every style (slower first paint)
        elif theme in self.available_themes:
            self.theme = theme
        else:
            self.notify(f"[tui].theme: unknown theme {theme!r}; using textual-dark "
                        f"(e.g. {', '.join(sorted(self.available_themes)[:5])}, ...)",
                        severity="warning", timeout=8)
        if self.unknown_key_ids:
            self.notify(f"[tui].keys: unknown binding id(s) {', '.join(self.unknown_key_ids)} "
                        f"(press ? for the list)", severity="warning", timeout=8)
        self._install_logging()
        self.switch_mode(self.start_mode if self.start_mode in SCREENS else "infer")
        self.call_after_refresh(_freeze_heap)
        if self.settings.guardrails.enabled:  # rails built once, in the background, before the first story
            self.set_timer(STORY_WARM_AFTER_S, self.warm_story)

    def warm_story(self) -> Any:
        """Set the story writer up (openai client, guardrails) on its own thread; the future, or None."""
        try:
            return self.story_runner().warm()
        except Exception:  # the story screen reports it when it is used
            logging.getLogger(__name__).info("story set-up skipped", exc_info=True)
            return None

    def story_runner(self) -> Any:
        """The app's one StoryRunner (created on first use, from a worker thread)."""
        with self._runner_lock:
            if self._story_runner is None:
                from ncanvas_tui.story.runner import StoryRunner

                self._story_runner = StoryRunner(self.settings)
            return self._story_runner

    def use_llm_model(self, model: str) -> None:
        """Write stories with ``model`` (chosen from the endpoint's own list) for the rest of the session."""
        if model == self.settings.llm.model:
            return
        self.settings = self.settings.replace("llm", model=model)
        with self._runner_lock:
            old, self._story_runner = self._story_runner, None
        if old is not None:
            threading.Thread(target=old.close, daemon=True, name="story-runner-close").start()

    def on_unmount(self) -> None:
        if self._story_runner is not None:
            self._story_runner.close(timeout=2.0)
        if self._log_handler is not None:
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)

    def _install_logging(self) -> None:
        from ncanvas_tui.tui.widgets.log_panel import TuiLogHandler

        self._log_handler = TuiLogHandler(self)
        # a child logger with its own level (a library may set one) still stops at the panel's level
        self._log_handler.addFilter(lambda record: record.levelno >= _panel_level(record.name))
        for name in LOGGERS:
            lg = logging.getLogger(name)
            lg.addHandler(self._log_handler)
            if name in LOG_LEVELS:
                lg.setLevel(LOG_LEVELS[name])
            elif lg.level == logging.NOTSET or lg.level > logging.INFO:
                lg.setLevel(logging.INFO)
            lg.propagate = False  # never to stderr under the app
        # print() from libraries goes to the log panel, not over the screen
        self.begin_capture_print(self, stdout=True, stderr=True)

    def on_print(self, event: Any) -> None:
        text = event.text.rstrip("\n")
        if text.strip():
            self.post_message(LogLine("PRINT", "stdout" if not event.stderr else "stderr", text))

    def on_log_line(self, message: LogLine) -> None:
        self.log_lines.append(message)
        for panel in list(self.log_panels):
            panel.add(message)

    # -- actions -------------------------------------------------------------
    def action_show(self, mode: str) -> None:
        if mode in SCREENS and self.current_mode != mode:
            self.switch_mode(mode)
            self.call_after_refresh(_freeze_heap)

    def action_help(self) -> None:
        from ncanvas_tui.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.binding_ids()))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for mode, (title, key) in SCREENS.items():
            yield SystemCommand(f"Go to {title}", f"Switch to the {title} screen ({fkey(mode).upper()}, or {key} "
                                "outside a text field)",
                                lambda mode=mode: self.action_show(mode))
        yield SystemCommand("Help", "Keys and how the screens fit together (?)", self.action_help)
        yield from self._action_commands()
        yield from super().get_system_commands(screen)

    def _action_commands(self) -> Iterable[SystemCommand]:
        """Every screen's actions (build, verify, export, ...): the palette goes to the screen and runs it."""
        for mode, (title, _digit) in SCREENS.items():
            for b in getattr(screen_class(mode), "BINDINGS", []):
                if not isinstance(b, Binding) or not b.id or b.id == "cancel":
                    continue
                yield SystemCommand(f"{title}: {b.description}", f"{b.description} on {title} "
                                    f"({self.key_for(b.id)} there)",
                                    lambda mode=mode, action=b.action: self._run_on(mode, action))

    def _run_on(self, mode: str, action: str) -> None:
        self.action_show(mode)

        async def run() -> None:
            await self.run_action(action, self.screen)

        self.call_after_refresh(run)

    # -- errors ----------------------------------------------------------------
    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Notifications are plain text: messages name settings keys like ``[llm].base_url``."""
        super().notify(str(message), title=title, severity=severity, timeout=timeout, markup=False)

    def report(self, exc: BaseException, what: str = "") -> None:
        """An exception from a job as a notification (NcanvasError: its one line; else a bug)."""
        from ncanvas_tui.errors import CancelledError, NcanvasError

        prefix = f"{what}: " if what else ""
        if isinstance(exc, CancelledError):
            self.notify(f"{prefix}cancelled", severity="warning")
        elif isinstance(exc, NcanvasError):
            self.notify(f"{prefix}{exc}", severity="error", timeout=10)
        else:
            logging.getLogger("ncanvas_tui.tui").error("%s%s: %s", prefix, type(exc).__name__, exc,
                                                       exc_info=exc)
            self.notify(f"{prefix}internal error {type(exc).__name__}: {' '.join(str(exc).split())} "
                        f"(a bug; details in the Engines log panel)", severity="error", timeout=12)


def _freeze_heap() -> None:
    """Move what exists now (modules, widgets, styles) out of the garbage collector's sight.

    A full collection walks every object Textual made; on a 2-core Jetson that is a
    70-100 ms pause of the event loop in the middle of a run. Frozen objects are never
    scanned again (they are long-lived anyway), so collections stay short."""
    gc.freeze()


def run_app(settings: Settings) -> int:
    """Open the app on this terminal; returns the exit code."""
    from ncanvas_tui.tui.terminal import choose_previews

    previews = choose_previews(getattr(settings.tui, "previews", "auto"))
    if previews != "off":
        # textual-image asks the terminal for its cell size and graphics support;
        # that has to happen before Textual owns the terminal.
        try:
            import textual_image.widget  # noqa: F401
        except Exception:  # noqa: BLE001 - no previews is better than no app
            previews = "off"
    app = NcanvasApp(settings, previews=previews)
    app.run()
    return int(app.return_code or 0)
