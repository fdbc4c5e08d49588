"""History: every saved run (images, labels, story, picture), newest first.

Enter opens a run (its Markdown export, the images and the picture), M / J export
it as Markdown / JSON into ``[paths].output/exports``, R reloads. The database is
read in a thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Label, Markdown, Static

from ncanvas_tui.files import write_new_file
from ncanvas_tui.tui import services
from ncanvas_tui.tui.screens.base import NcScreen
from ncanvas_tui.tui.widgets.preview import Preview


def _short(text: Any, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def run_images(run: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for inf in run.get("inferences", []):
        for r in inf.get("results", []):
            if r.get("image") and r["image"] not in out:
                out.append(r["image"])
    for pic in run.get("pictures", []):
        if pic.get("path"):
            out.append(pic["path"])
    return out


class HistoryScreen(NcScreen):
    MODE = "history"
    CSS_PATH = "history.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("m", "export('md')", "Export .md", id="history_export_md"),
        Binding("j", "export('json')", "Export .json", id="history_export_json"),
        Binding("r", "reload", "Reload", id="history_reload"),
        Binding("delete", "delete_run", "Delete run", id="history_delete"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[dict[str, Any]] = []
        self.open_id: Any = None
        self._armed: tuple[Any, float] | None = None  # (run id, when) of the first Delete press

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="history-main"):
            with Vertical(id="history-left"):
                yield Label("Runs (Enter opens)", classes="pane-title")
                yield DataTable(id="history-table", cursor_type="row", zebra_stripes=True)
                yield Static("", classes="hint", id="history-empty", markup=False)
            with VerticalScroll(id="history-detail"):
                yield Markdown("Open a run to see its images, labels, story and picture.", id="history-md")
                yield Horizontal(id="history-images")

    def on_mount(self) -> None:
        table = self.query_one("#history-table", DataTable)
        for label, width in (("id", 4), ("when", 16), ("imgs", 4), ("labels", 16), ("story", 5), ("picture", 7)):
            table.add_column(label, width=width)  # fixed: the layout never depends on what loaded first

    def on_screen_resume(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self._load_runs()

    @work(thread=True, exclusive=True, group="history-list", exit_on_error=False, description="history")
    def _load_runs(self) -> None:
        runs = services.history(self.settings).list_runs(limit=200)
        self.app.call_from_thread(self._show_runs, runs)

    def _show_runs(self, runs: list[dict[str, Any]]) -> None:
        self.runs = runs
        table = self.query_one("#history-table", DataTable)
        table.clear()
        for r in runs:
            table.add_row(str(r["id"]), str(r.get("created", ""))[:16].replace("T", " "), str(r.get("images", 0)),
                          _short(", ".join(r.get("labels", [])), 28),
                          "✓" if r.get("story") else ("refused" if r.get("refused") else ""),
                          "✓" if r.get("picture") else "", key=str(r["id"]))
        empty = self.query_one("#history-empty", Static)
        empty.update("" if runs else f"No runs yet: classify images on Infer ({self.key('screen_infer')}) "
                     "and they are saved here.")

    @on(DataTable.RowSelected, "#history-table")
    def _open(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self._load_run(int(event.row_key.value))

    @work(thread=True, exclusive=True, group="history-run", exit_on_error=False, description="history run")
    def _load_run(self, run_id: int) -> None:
        store = services.history(self.settings)
        run = store.get_run(run_id)
        md = store.export(run_id, "md")
        self.app.call_from_thread(self._show_run, run, md)  # type: ignore[arg-type]

    async def _show_run(self, run: dict[str, Any], md: str) -> None:
        self.open_id = run["id"]
        await self.query_one("#history-md", Markdown).update(md)
        box = self.query_one("#history-images", Horizontal)
        await box.remove_children()
        mode = getattr(self.app, "previews", "auto")
        images = [p for p in run_images(run) if Path(p).is_file()][:9]
        await box.mount_all([Preview(p, mode=mode) for p in images])

    def _selected_id(self) -> Any:
        table = self.query_one("#history-table", DataTable)
        if self.open_id is not None:
            return self.open_id
        if table.row_count and table.cursor_row is not None:
            return int(table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value or 0)
        return None

    def _cursor_id(self) -> Any:
        table = self.query_one("#history-table", DataTable)
        if table.row_count and table.cursor_row is not None:
            return int(table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value or 0)
        return None

    def action_delete_run(self) -> None:
        """Delete the highlighted run: the first press asks, a second within 5 s deletes."""
        import time

        run_id = self._cursor_id()
        if run_id is None:
            self.notify("no run to delete", severity="warning")
            return
        key = self.key("history_delete")
        if self._armed is None or self._armed[0] != run_id or time.monotonic() - self._armed[1] > 5:
            self._armed = (run_id, time.monotonic())
            self.notify(f"delete run {run_id} from the history? {key} again to delete (files stay)",
                        severity="warning")
            return
        self._armed = None
        self._delete(run_id)

    @work(thread=True, exit_on_error=False, group="history-delete", description="delete run")
    def _delete(self, run_id: int) -> None:
        services.history(self.settings).delete_run(run_id)
        app: Any = self.app
        if getattr(app, "run_id", None) == run_id:  # the next story / picture starts a new run
            app.call_from_thread(setattr, app, "run_id", None)
        if self.open_id == run_id:
            self.open_id = None
        app.call_from_thread(self.notify, f"run {run_id} deleted")
        runs = services.history(self.settings).list_runs(limit=200)
        app.call_from_thread(self._show_runs, runs)

    def action_export(self, fmt: str) -> None:
        run_id = self._selected_id()
        if run_id is None:
            self.notify(f"no run to export: classify images on Infer ({self.key('screen_infer')}) first",
                        severity="warning")
            return
        self._export(run_id, fmt)

    @work(thread=True, exit_on_error=False, group="history-export", description="export")
    def _export(self, run_id: int, fmt: str) -> None:
        text = services.history(self.settings).export(run_id, fmt)
        folder = Path(self.settings.paths.output) / "exports"
        try:
            path = write_export(folder, f"run-{run_id}", fmt, text)
        except OSError as e:  # disk full, read-only folder...: the user's to fix, not a bug
            self.app.call_from_thread(self.notify, f"run {run_id}: export to {folder} failed: "
                                      f"{e.strerror or e}", severity="error", timeout=10)
            return
        self.app.call_from_thread(self.notify, f"run {run_id} exported: {path}")


def write_export(folder: Path, stem: str, ext: str, text: str) -> Path:
    """Write an export atomically, never over an existing file (``stem-2.ext``, ...)."""
    return write_new_file(folder, stem, f".{ext}", text.encode("utf-8"))

