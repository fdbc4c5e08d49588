"""Engines: the model catalog and the built engines, and what to do with them.

Keys: P prep (Polygraphy sanitize), B build (a small form), V verify against ONNX
Runtime fp32, N bench, D delete (press twice), Esc cancels the running job;
L layer profile (per-layer times of the highlighted artefact, slowest first, in a table),
R recover (after an int8 verify: the fewest float layers that reach ``[build].recover_target``).
Builds report phases and calibration batches i/N on the progress bar; Polygraphy
and TensorRT log lines go to the log panel (through Python logging, never raw
stdout). Every job runs in the GPU thread; nothing here blocks the UI.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Label, ProgressBar

from ncanvas_tui import api
from ncanvas_tui.engines.artefacts import Selection
from ncanvas_tui.engines.store import Artefact
from ncanvas_tui.settings import Settings
from ncanvas_tui.tui import jobs
from ncanvas_tui.tui.messages import EnginesChanged, JobProgress, LogLine
from ncanvas_tui.tui.screens.base import NcScreen
from ncanvas_tui.tui.widgets.log_panel import LogPanel


def human_size(n: int) -> str:
    if n <= 0:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _verify_text(a: Artefact) -> str:
    from ncanvas_tui.engines.verify import load_verify

    v = load_verify(a.path)
    return f"{v.get('top1_agreement', 0):.0%} top1" if v else ""  # top-1 agreement with fp32 ONNX Runtime


@dataclass(frozen=True)
class EngineRow:
    """One row of the Built engines table: an artefact and what the table shows of it."""

    artefact: Artefact
    verify: str

    @property
    def cells(self) -> tuple[str, ...]:
        a = self.artefact
        return (a.id, a.model, f"{a.backend} {a.backend_version}".strip(), a.precision, a.calibrator or "-",
                self.verify, "-".join(map(str, a.batch)) if any(a.batch) else "dynamic", human_size(a.size),
                a.gpu_name if a.dla_core is None else f"DLA{a.dla_core} {a.gpu_name}",
                f"{a.build_seconds:.0f} s" if a.build_seconds else "",
                "✗ " + a.problem if a.problem else "ok")


def engine_rows(settings: Settings) -> list[EngineRow]:
    """Rows for the engines table (worker thread only: reads sidecars, hashes for the checks)."""
    return [EngineRow(a, "" if a.problem else _verify_text(a)) for a in api.list_artefacts(settings)]


class EnginesScreen(NcScreen):
    MODE = "engines"
    CSS_PATH = "engines.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "prep", "Prep", id="engines_prep"),
        Binding("b", "build", "Build", id="engines_build"),
        Binding("v", "verify", "Verify", id="engines_verify"),
        Binding("n", "bench", "Bench", id="engines_bench"),
        Binding("d", "delete", "Delete", id="engines_delete"),
        Binding("l", "layers", "Layers", id="engines_layers", show=False),
        Binding("r", "recover", "Recover", id="engines_recover", show=False),
        Binding("escape", "cancel", "Cancel", id="cancel"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[EngineRow] = []
        self._job: jobs.Job | None = None
        self._delete_armed: tuple[str, float] | None = None
        self._last_phase = ""
        self._recover_from: Artefact | None = None   # the int8 artefact the last verify was of

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="engines-tables"):
            with Vertical(id="catalog-pane"):
                yield Label("Models (catalog + your ONNX files)", classes="pane-title")
                yield DataTable(id="catalog-table", cursor_type="row", zebra_stripes=True)
            with Vertical(id="engines-pane"):
                yield Label("Built engines (artefacts)", classes="pane-title")
                yield DataTable(id="engines-table", cursor_type="row", zebra_stripes=True)
                yield Label("", classes="hint", id="engines-empty", markup=False)
                layers: DataTable[str] = DataTable(id="layers-table", cursor_type="row", zebra_stripes=True)
                layers.display = False   # shown by L (per-layer times) and R (the sensitivity ranking)
                yield layers
        with Horizontal(id="engines-progress-row"):
            yield ProgressBar(total=100, show_eta=False, id="engines-progress")
            k = self.key
            yield Label(f"{k('engines_prep')} prep · {k('engines_build')} build · {k('engines_verify')} verify · "
                        f"{k('engines_bench')} bench · {k('engines_delete')} delete · {k('cancel')} cancels",
                        id="engines-phase", markup=False)
        yield LogPanel(id="engines-log")

    def on_mount(self) -> None:
        cat = self.query_one("#catalog-table", DataTable)
        for label, width in (("model", 20), ("family", 14), ("top-1", 5), ("input", 5), ("file", 7)):
            cat.add_column(label, width=width)
        eng = self.query_one("#engines-table", DataTable)
        for label, width in (("id", 10), ("model", 18), ("backend", 16), ("prec", 4), ("calibrator", 10),
                             ("verify", 10), ("batch", 7), ("size", 9), ("GPU", 16), ("build", 6),
                             ("status", 30)):
            eng.add_column(label, width=width)
        lay = self.query_one("#layers-table", DataTable)
        for label, width in (("layer", 48), ("op", 16), ("value", 10), ("share", 6)):
            lay.add_column(label, width=width)
        self._load_catalog()
        self._load_engines()

    def on_screen_resume(self) -> None:
        self._load_engines()

    # -- tables -----------------------------------------------------------------------------------
    def _load_catalog(self) -> None:
        from ncanvas_tui.vision import catalog

        table = self.query_one("#catalog-table", DataTable)
        table.clear()
        for e in catalog.all_models(self.settings):
            present = e.locate(self.settings) is not None
            table.add_row(e.name, e.family or ("your model" if e.user else ""),
                          f"{e.top1:.1f}" if e.top1 else "", str(e.preprocess.input_size),
                          "✓" if present else "missing", key=e.name)

    @work(thread=True, exclusive=True, group="engines-list", exit_on_error=False, description="engine list")
    def _load_engines(self) -> None:
        rows = engine_rows(self.settings)
        self.app.call_from_thread(self._show_engines, rows)

    def _show_engines(self, rows: list[EngineRow]) -> None:
        self.rows = rows
        table = self.query_one("#engines-table", DataTable)
        table.clear()
        for r in rows:
            table.add_row(*r.cells, key=str(r.artefact.path))
        hint = "" if rows else f"No engines in {self.settings.paths.engines} yet: pick a model, press B to build."
        self.query_one("#engines-empty", Label).update(hint)

    @on(EnginesChanged)
    def _changed(self, event: EnginesChanged) -> None:
        self._load_engines()

    def _highlighted(self) -> Artefact | None:
        """The artefact under the cursor of the Built engines table, when that table has focus."""
        eng = self.query_one("#engines-table", DataTable)
        if self.focused is eng and eng.row_count and self.rows:
            return self.rows[min(eng.cursor_row, len(self.rows) - 1)].artefact
        return None

    def _model(self) -> str | None:
        """The model an action works on: the highlighted artefact's, else the catalog's cursor row."""
        a = self._highlighted()
        if a is not None:
            return a.model
        cat = self.query_one("#catalog-table", DataTable)
        if not cat.row_count:
            return None
        return str(cat.coordinate_to_cell_key(Coordinate(cat.cursor_row, 0)).row_key.value)

    def _selection(self) -> Selection | None:
        """What V and N act on: the highlighted artefact (by id), else the catalog model with the
        settings' backend and precision."""
        a = self._highlighted()
        if a is not None:
            return Selection(artefact=a.id)
        model = self._model()
        return None if model is None else Selection(model=model)

    # -- actions ----------------------------------------------------------------------------------
    def _busy(self) -> bool:
        if self._job is not None:
            self.notify(f"{self._job.name} is running ({self.key('cancel')} cancels it)", severity="warning")
            return True
        return False

    def action_prep(self) -> None:
        model = self._model()
        if model is None or self._busy():
            return
        self._run_job("prep", api.prep, self.settings, model)

    def action_build(self) -> None:
        model = self._model()
        if model is None or self._busy():
            return
        from ncanvas_tui.tui.screens.build_form import BuildForm

        a = self._highlighted()
        backend = a.backend if a is not None else self.settings.inference.backend
        self.app.push_screen(BuildForm(model, self.settings, backend), self._build_chosen)

    def _build_chosen(self, request: api.BuildRequest | None) -> None:
        if request is not None:
            self._run_job("build", api.plan_and_build, self.settings, request)

    def action_verify(self) -> None:
        sel = self._selection()
        if sel is None or self._busy():
            return
        self._run_job("verify", api.verify, self.settings, sel)

    def action_bench(self) -> None:
        sel = self._selection()
        if sel is None or self._busy():
            return
        batches = [b for b in (1, 4, 8) if b <= self.settings.build.batch[2]]
        self._run_job("bench", api.bench, self.settings, sel, batches=batches, seconds=1.0)

    def action_layers(self) -> None:
        sel = self._selection()
        if sel is None or self._busy():
            return
        self._run_job("layers", api.bench, self.settings, sel, batches=[1], seconds=0.5, layers=True)

    def action_recover(self) -> None:
        a = self._recover_from
        if a is None:
            self.notify("verify an int8 artefact first (V): recover takes its accuracy back", severity="warning")
            return
        if self._busy():
            return
        target = self.settings.build.recover_target
        request = api.BuildRequest(a.model, "int8", backend=a.backend, calibrator=a.calibrator)
        self._run_job("recover", api.recover, self.settings, request, target)

    def show_layers(self, layers: list[dict[str, Any]], value: str) -> None:
        """Fill the layers table (slowest / most sensitive first) and show it."""
        table = self.query_one("#layers-table", DataTable)
        table.clear()
        total = sum(float(x[value]) for x in layers) or 1.0
        for x in layers[:200]:
            v = float(x[value])
            table.add_row(x["name"], x["op"], f"{v:.4f}", f"{v / total:.0%}")
        table.display = bool(layers)

    def action_delete(self) -> None:
        a = self._highlighted()
        if a is None:
            self.notify("highlight an engine in the Built engines table first (Tab moves there)",
                        severity="warning")
            return
        now = time.monotonic()
        if self._delete_armed is None or self._delete_armed[0] != str(a.path) or now - self._delete_armed[1] > 4:
            self._delete_armed = (str(a.path), now)
            self.notify(f"press D again to delete {a.path.name} ({a.id})", severity="warning")
            return
        self._delete_armed = None
        self._delete(a)

    @work(thread=True, exit_on_error=False, group="engines-delete", description="delete engine")
    def _delete(self, a: Artefact) -> None:
        jobs.submit("forget", jobs.forget_classifiers).future.result(timeout=60)
        if a.id:
            api.delete_artefact(self.settings, a.id)
        else:  # a file that does not even have an id (a plan without sidecar from an older ncanvas)
            for p in (a.path, a.sidecar):
                p.unlink(missing_ok=True)
        self.post_message(EnginesChanged(f"deleted {a.path.name}"))
        self.app.call_from_thread(self.notify, f"deleted {a.path.name}")

    def action_cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.query_one("#engines-phase", Label).update(f"cancelling {self._job.name}…")

    # -- running jobs -----------------------------------------------------------------------------
    def _progress_cb(self, job: str) -> Any:
        def cb(done: float, total: float, phase: str = "") -> None:
            self.post_message(JobProgress(job, done, total, phase))
        return cb

    def _run_job(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        from ncanvas_tui.engines.compat import route_polygraphy_logging

        try:  # Polygraphy prints to stdout; under the app its lines go through logging to the log panel
            route_polygraphy_logging()
        except ImportError:
            logging.getLogger("ncanvas_tui.tui").debug("no Polygraphy logging to route", exc_info=True)
        self._job = jobs.submit(name, fn, *args, progress=self._progress_cb(name), **kwargs)
        bar = self.query_one("#engines-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.add_class("running")
        self.query_one("#engines-phase", Label).update(f"{name}: starting… ({self.key('cancel')} cancels)")
        self._await_job(self._job)

    @work(exit_on_error=False, group="engines-job", description="engine job")
    async def _await_job(self, job: jobs.Job) -> None:
        from ncanvas_tui.bench import summary_line
        from ncanvas_tui.errors import CancelledError

        try:
            res = await jobs.wait(job)
        except CancelledError:
            line = f"{job.name} cancelled"
            self.query_one("#engines-phase", Label).update(line)
            logging.getLogger("ncanvas_tui.tui").info(line)
            self.notify(line, severity="warning")
            return
        finally:
            self._job = None
            bar = self.query_one("#engines-progress", ProgressBar)
            bar.remove_class("running")
        if job.name == "layers" and isinstance(res, dict):
            self.show_layers(res.get("layers") or [], "ms")
            line = f"layers of {res['model']} {res['backend']} {res['precision']}: {res.get('layers_source', '')}"
        elif job.name == "recover" and isinstance(res, dict):
            from ncanvas_tui.engines.recover import format_recover

            self.show_layers(res.get("layers") or [], "sensitivity")
            line = format_recover(res).splitlines()[0] + f"; top-1 agreement {res['agreement']:.1%}" + (
                f"; speed cost {res['speed']['cost']:.2f}x vs plain int8" if res["speed"].get("cost") else "")
        else:
            line = summary_line(res) if isinstance(res, dict) else str(res.summary)
        if job.name == "verify" and getattr(res, "precision", "") == "int8" and getattr(res, "id", None):
            from ncanvas_tui.engines.store import EngineStore

            self._recover_from = EngineStore(self.settings).get(res.id)
            if res.top1_agreement < self.settings.build.recover_target:
                line += (f" · R recovers to {self.settings.build.recover_target:.0%} "
                         "(the fewest layers kept float)")
        self.query_one("#engines-phase", Label).update(line)
        logging.getLogger("ncanvas_tui.tui").info(line)
        if job.name in ("build", "verify", "prep", "recover"):
            jobs.submit("forget", jobs.forget_classifiers)
            self.post_message(EnginesChanged(line))
        self.notify(line)

    @on(JobProgress)
    def _on_progress(self, event: JobProgress) -> None:
        bar = self.query_one("#engines-progress", ProgressBar)
        if event.total:
            bar.update(total=event.total, progress=event.done)
        phase = event.phase or ""
        if phase and phase != self._last_phase:  # every phase / Polygraphy line also goes to the log panel
            self._last_phase = phase
            self.app.post_message(LogLine("INFO", event.job, f"{event.job}: {phase}"))
        label = f"{event.job}: {phase}"
        if event.total:
            label += f" ({event.done:.0f}/{event.total:.0f})"
        self.query_one("#engines-phase", Label).update(label + f"  · {self.key('cancel')} cancels")

    def job_ended(self, worker: Any, failed: bool) -> None:
        if worker.group == "engines-job" and failed:
            self.query_one("#engines-phase", Label).update("failed (see the notification and the log)")
