"""The build form (a modal on Engines): precision, backend, calibrator, batch
profile, optimization level, sparse weights, force. Ctrl+S / Enter on Build
starts the build; Esc closes the form without building."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select

from ncanvas_tui.engines.plan import BuildRequest
from ncanvas_tui.profile import batch_profile
from ncanvas_tui.settings import BACKENDS, PRECISIONS


class BuildForm(ModalScreen[BuildRequest | None]):
    CSS_PATH = "build_form.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="build_form_close"),
        Binding("ctrl+s", "submit", "Build", id="build_form_submit"),
    ]

    def __init__(self, model: str, settings: Any, backend: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.backend = backend or settings.inference.backend

    def compose(self) -> ComposeResult:
        b = self.settings.build
        with Vertical(id="build-box"):
            yield Label(f"Build {self.model}", classes="pane-title")
            with Horizontal(classes="form-row"):
                yield Label("precision")
                built = [p for p in PRECISIONS if p != "auto"]  # a build is of one precision
                chosen = self.settings.inference.precision
                yield Select([(p, p) for p in built], value=chosen if chosen in built else "fp16",
                             allow_blank=False, id="build-precision")
                yield Label("backend")
                yield Select([(x, x) for x in BACKENDS], value=self.backend, allow_blank=False,
                             id="build-backend")
            with Horizontal(classes="form-row"):
                yield Label("calibrator (int8)")
                yield Select([("entropy2", "entropy2"), ("minmax", "minmax")], value=b.calibrator,
                             allow_blank=False, id="build-calibrator")
            with Horizontal(classes="form-row"):
                yield Label("batch min,opt,max")
                yield Input(",".join(map(str, b.batch)), id="build-batch")
                yield Label("opt level 0-5")
                yield Input(str(b.opt_level), id="build-opt", type="integer", max_length=1)
            with Horizontal(classes="form-row"):
                yield Checkbox("sparse weights (2:4)", b.sparse_weights, id="build-sparse")
                yield Checkbox("force rebuild", False, id="build-force")
            yield Label("", id="build-error", markup=False)
            with Horizontal(id="build-buttons"):
                yield Button("Build", variant="primary", id="build-go")
                yield Button("Cancel", id="build-cancel")

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#build-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#build-go")
    @on(Input.Submitted)
    def action_submit(self) -> None:
        try:
            batch = batch_profile(self.query_one("#build-batch", Input).value)
            opt = int(self.query_one("#build-opt", Input).value or self.settings.build.opt_level)
            if not 0 <= opt <= 5:
                raise ValueError("opt level must be 0..5")
        except ValueError as e:
            self.query_one("#build-error", Label).update(str(e))
            return
        self.dismiss(BuildRequest(
            model=self.model,
            precision=str(self.query_one("#build-precision", Select).value),
            backend=str(self.query_one("#build-backend", Select).value),
            calibrator=str(self.query_one("#build-calibrator", Select).value),
            batch=batch,
            opt_level=opt,
            sparse=self.query_one("#build-sparse", Checkbox).value,
            force=self.query_one("#build-force", Checkbox).value,
        ))
