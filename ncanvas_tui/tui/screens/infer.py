"""Infer: pick up to 8 images, preview them, classify them in one batch.

Left: the image picker (path input with completion, folder tree, selection).
Right: model / backend / precision, previews of the selected images, then per
image the top-k labels with probability bars (bad files marked, the rest still
classified) and the batch timing. The classification runs in the GPU thread;
Esc cancels it. Results go to History when the history store is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, ProgressBar, Select, Static

from ncanvas_tui.engines.artefacts import Selection
from ncanvas_tui.settings import BACKENDS, PRECISIONS
from ncanvas_tui.tui import jobs
from ncanvas_tui.tui.messages import InferFinished, JobProgress, SelectionChanged
from ncanvas_tui.tui.screens.base import NcScreen
from ncanvas_tui.tui.widgets.image_picker import ImagePicker
from ncanvas_tui.tui.widgets.preview import Preview
from ncanvas_tui.tui.widgets.prob_bars import ResultCard


def model_choices(settings: Any) -> list[tuple[str, str]]:
    """Models whose ONNX file is here (plus the configured one, so the user sees it)."""
    from ncanvas_tui.vision import catalog

    out: list[tuple[str, str]] = []
    for e in catalog.all_models(settings):
        if e.name == settings.inference.model or e.locate(settings) is not None:
            out.append((e.name if e.locate(settings) else f"{e.name} (file missing)", e.name))
    if not any(v == settings.inference.model for _l, v in out):
        out.insert(0, (f"{settings.inference.model} (not found)", settings.inference.model))
    return out


def timing_text(result: dict[str, Any]) -> str:
    t = result.get("timing_ms", {})
    n = len(result.get("results", []))
    bad = len(result.get("errors", []))
    batches = result.get("batches") or [n]
    per = t.get("infer", 0.0) / max(n, 1)
    return (f"{n} classified, {bad} failed · {result.get('model')} on {result.get('backend')} "
            f"{result.get('precision')} · batch {'+'.join(map(str, batches))}: "
            f"preprocess {t.get('preprocess', 0):.0f} ms, infer {t.get('infer', 0):.0f} ms "
            f"({per:.1f} ms/image), postprocess {t.get('postprocess', 0):.0f} ms")


class InferScreen(NcScreen):
    MODE = "infer"
    AUTO_FOCUS = "#picker-tree"
    CSS_PATH = "infer.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Classify", id="infer_run"),
        Binding("ctrl+l", "clear", "Clear", id="infer_clear"),
        Binding("ctrl+y", "copy", "Copy labels", id="infer_copy"),
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("ctrl+g", "capture", "Capture", id="infer_capture", show=False),
    ]

    def action_copy(self) -> None:
        """The labels of the last classification, one image a line (``name: label 87.1%, ...``)."""
        from pathlib import Path

        from ncanvas_tui.tui import clipboard

        result = getattr(self.app, "last_result", None) or {}
        lines = [f"{Path(str(r['image'])).name}: "
                 + ", ".join(f"{t['label']} {t['prob'] * 100:.1f}%" for t in r.get("top", []))
                 for r in result.get("results", [])]
        if not lines:
            self.notify(f"no labels to copy yet: {self.key('infer_run')} classifies", severity="warning")
            return
        clipboard.copy(self.app, "\n".join(lines) + "\n", "labels", self.settings.paths.output)

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []
        self._job: jobs.Job | None = None

    def compose_body(self) -> ComposeResult:
        s = self.settings
        with Horizontal(id="infer-main"):
            with Vertical(id="infer-left"):
                yield Label("Images", classes="pane-title")
                yield ImagePicker(s.paths.images, max_images=s.build.batch[2], id="picker")
            with Vertical(id="infer-right"):
                with Horizontal(classes="form-row", id="infer-options"):
                    yield Select(model_choices(s), value=s.inference.model, allow_blank=False, compact=True,
                                 id="infer-model", prompt="model")
                    yield Select([(b, b) for b in BACKENDS], value=s.inference.backend, allow_blank=False, compact=True,
                                 id="infer-backend")
                    yield Select([(p, p) for p in PRECISIONS], value=s.inference.precision,
                                 allow_blank=False, compact=True, id="infer-precision")
                with Horizontal(id="previews"):
                    yield Static("Pick images on the left (type a path, or Enter in the tree), "
                                 f"then {self.key('infer_run')} to classify.", classes="hint", id="previews-hint")
                with Horizontal(id="infer-progress-row"):
                    yield ProgressBar(total=None, show_eta=False, id="infer-progress")
                    yield Label("", id="infer-status", markup=False)
                yield VerticalScroll(id="results")

    # -- selection -------------------------------------------------------------
    @on(SelectionChanged)
    async def _selection(self, event: SelectionChanged) -> None:
        self.paths = list(event.paths)
        box = self.query_one("#previews", Horizontal)
        await box.remove_children()
        if not self.paths:
            await box.mount(Static("No images selected.", classes="hint"))
            return
        mode = getattr(self.app, "previews", "auto")
        await box.mount_all([Preview(p, mode=mode) for p in self.paths])

    # -- run ---------------------------------------------------------------------
    def action_run(self) -> None:
        if not self.paths:
            self.notify("select images first: type a path in the box on the left and press Enter",
                        severity="warning")
            return
        if self._job is not None:
            self.notify(f"a classification is already running ({self.key('cancel')} cancels it)", severity="warning")
            return
        model = str(self.query_one("#infer-model", Select).value)
        backend = str(self.query_one("#infer-backend", Select).value)
        precision = str(self.query_one("#infer-precision", Select).value)
        self._classify(list(self.paths), model, backend, precision)

    def action_capture(self) -> None:  # issue 16: frames from [capture].source, then classified
        from ncanvas_tui.tui.screens.capture import CaptureScreen

        def captured(paths: list[str] | None) -> None:
            if paths:
                picker = self.query_one(ImagePicker)
                picker.clear()
                for p in paths:
                    picker.add(p)
                self.paths = list(paths)
                self.action_run()

        self.app.push_screen(CaptureScreen(), captured)

    def action_cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.query_one("#infer-status", Label).update("cancelling…")

    def action_clear(self) -> None:
        self.query_one(ImagePicker).clear()
        self.query_one("#results", VerticalScroll).remove_children()
        self.query_one("#infer-status", Label).update("")

    @work(exclusive=True, group="infer", exit_on_error=False, description="classify")
    async def _classify(self, paths: list[str], model: str, backend: str, precision: str) -> None:
        settings = self.settings
        bar = self.query_one("#infer-progress", ProgressBar)
        bar.update(total=len(paths), progress=0)
        bar.add_class("running")
        self.query_one("#infer-status", Label).update(f"classifying {len(paths)} image(s) on {backend}…")

        def progress(done: int, total: int, phase: str) -> None:
            self.post_message(JobProgress("infer", done, total, phase))

        selection = Selection(model=model, backend=backend, precision=precision)
        self._job = jobs.submit("infer", jobs.classify, settings, selection, paths, progress=progress)
        try:
            result = await jobs.wait(self._job)
        finally:
            self._job = None
            bar.remove_class("running")
        self.post_message(InferFinished(result.as_dict(), paths))

    @on(JobProgress)
    def _progress(self, event: JobProgress) -> None:
        if event.job == "infer":
            self.query_one("#infer-progress", ProgressBar).update(total=event.total, progress=event.done)

    @on(InferFinished)
    async def _finished(self, event: InferFinished) -> None:
        result = event.result
        results = self.query_one("#results", VerticalScroll)
        by_image = {r["image"]: r for r in result.get("results", [])}
        errors = {e["image"]: e for e in result.get("errors", [])}
        items = [x for x in (by_image.get(p) or errors.get(p) for p in event.paths) if x is not None]
        cards = list(results.query(ResultCard))
        if len(cards) == len(items):  # same number of images: update the cards in place (no relayout)
            for card, item in zip(cards, items):
                card.set_item(item)
        else:
            await results.remove_children()
            await results.mount_all([ResultCard(item) for item in items])
        for prev in self.query(Preview):
            if prev.path in errors:
                prev.mark_bad("not classified")
        self.query_one("#infer-status", Label).update(timing_text(result))
        app: Any = self.app
        app.last_result = result
        labels: list[str] = []
        for r in result.get("results", []):
            if r.get("top"):
                lab = str(r["top"][0]["label"])
                if lab not in labels:
                    labels.append(lab)
        app.last_labels = labels
        if errors and by_image:
            self.notify(f"{len(errors)} file(s) could not be classified (marked ✗); "
                        f"the other {len(by_image)} were", severity="warning")
        elif errors:
            self.notify("none of the files could be classified (marked ✗)", severity="error")
        if by_image and getattr(app, "record_history", False):
            self._record(result)

    @work(thread=True, exit_on_error=False, group="history", description="history")
    def _record(self, result: dict[str, Any]) -> None:
        from ncanvas_tui.tui import services

        run_id = services.record_inference(self.settings, result)
        if run_id is not None:
            self.app.call_from_thread(setattr, self.app, "run_id", run_id)

    def job_ended(self, worker: Any, failed: bool) -> None:
        if worker.group == "infer" and failed:
            self.query_one("#infer-status", Label).update("classification failed (see the notification)")

    def results_text(self) -> str:
        """Plain text of what the results pane shows (for tests and copy)."""
        return "\n".join(str(Path(c.item["image"]).name) + " " + " ".join(
            t["label"] for t in c.item.get("top", [])) for c in self.query(ResultCard))
