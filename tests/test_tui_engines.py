"""Engines screen: catalog and engine tables, prep with its log line, build (the form) an int8
model for ONNX Runtime with progress, verify it against fp32, delete it; a backend that is not
installed here is a notification; Esc cancels a build."""

from __future__ import annotations

import pytest
from tui_helpers import make_app, notes, screen_text, settle, wait_for

pytestmark = pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")


async def open_build_form(pilot, precision: str, backend: str):
    from textual.widgets import Select

    app = pilot.app
    app.screen.query_one("#catalog-table").focus()
    await pilot.press("b")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "BuildForm", what="build form")
    app.screen.query_one("#build-precision", Select).value = precision
    app.screen.query_one("#build-backend", Select).value = backend
    app.screen.query_one("#build-batch").value = "1,4,8"
    await pilot.pause()


async def test_tables_and_prep(settings_path, workdir):
    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "efficientnet_lite0" in text and "resnet50" in text.lower()
        assert "No engines in" in text  # says how to get one
        await pilot.press("p")
        await wait_for(pilot, lambda: any("prep efficientnet_lite0" in n for n in notes(app)), timeout=60,
                       what="prep finished")
        def log() -> str:
            return "\n".join(str(line.text) for line in app.screen.query_one("#engines-log").lines)

        await wait_for(pilot, lambda: "nodes" in log(), what="the result in the log panel")
        assert list((workdir / "models").glob("efficientnet_lite0.prep.onnx"))


@pytest.mark.slow
async def test_build_int8_for_onnxruntime_verify_and_delete(settings_path, workdir):
    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        phases: list[str] = []
        await open_build_form(pilot, "int8", "onnxruntime")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "EnginesScreen", what="form closed")
        phase = app.screen.query_one("#engines-phase")

        def done():
            phases.append(str(phase.render()))
            return any(n.startswith("built ") for n in notes(app))

        await wait_for(pilot, done, timeout=120, what="int8 build")
        assert any("build:" in p for p in phases)  # progress was shown while it ran
        log = "\n".join(str(line.text) for line in app.screen.query_one("#engines-log").lines)
        assert "build: " in log  # and each phase went to the log panel
        table = app.screen.query_one("#engines-table")
        await wait_for(pilot, lambda: table.row_count == 1, what="engine row")
        assert "onnxruntime" in screen_text(app) and "int8" in screen_text(app)
        table.focus()
        await pilot.press("v")
        await wait_for(pilot, lambda: any(n.startswith("verify ") for n in notes(app)), timeout=120,
                       what="verify")
        line = next(n for n in notes(app) if n.startswith("verify "))
        agreement = line.split("top-1 agreement ")[1].split("%")[0]  # 86-100: a near tie may flip at int8
        await wait_for(pilot, lambda: f"{agreement}% top1" in screen_text(app), what="verify column")
        assert int(agreement) >= 80
        await pilot.press("d")
        assert any("press D again" in n for n in notes(app))
        await pilot.press("d")
        await wait_for(pilot, lambda: table.row_count == 0, what="deleted")
        assert not list((workdir / "engines").glob("*.onnx"))


async def test_tensorrt_not_here_is_a_notification(settings_path):
    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await open_build_form(pilot, "fp16", "tensorrt")
        app.screen.query_one("#build-batch").value = "8,4,1"  # a bad profile is caught in the form
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "min <= opt <= max" in screen_text(app)
        app.screen.query_one("#build-batch").value = "1,4,8"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("tensorrt" in n.lower() for n in notes(app) if "build" in n.lower()
                                          or "tensorrt" in n.lower()), timeout=60, what="backend error")
        assert app.is_running and "failed" in screen_text(app)


async def test_escape_cancels_a_build(settings_path):
    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await open_build_form(pilot, "int8", "onnxruntime")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen.query_one("#engines-progress").has_class("running"),
                       what="build running")
        await pilot.press("escape")
        await wait_for(pilot, lambda: any("cancelled" in n for n in notes(app)), timeout=60, what="cancelled")
        await settle(pilot)
        assert not any(n.startswith("built ") for n in notes(app))
        phase = str(app.screen.query_one("#engines-phase").render())
        assert "build cancelled" in phase and "failed" not in phase


async def test_escape_cancels_a_bench(settings_path):
    import time

    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        app.screen.query_one("#catalog-table").focus()
        await pilot.press("n")
        phase = app.screen.query_one("#engines-phase")
        await wait_for(pilot, lambda: "measuring" in str(phase.render()), timeout=60, what="bench measuring")
        t0 = time.monotonic()
        await pilot.press("escape")
        await wait_for(pilot, lambda: any(n.startswith(("bench cancelled", "bench ")) for n in notes(app)),
                       timeout=60, what="bench ended")
        assert time.monotonic() - t0 < 3  # uncancelled, batches 1, 4, 8 take ~2 s each
        assert "bench cancelled" in notes(app) and "bench cancelled" in str(phase.render())
        assert not app.screen.query_one("#engines-progress").has_class("running")


@pytest.mark.slow
async def test_verify_and_bench_act_on_the_highlighted_artefact(settings, settings_path, workdir):
    """Two int8 artefacts of one model (entropy2, minmax): V and N act on the row under the cursor."""
    from onnx_factory import add_model, tiny_classifier

    from ncanvas_tui import api

    add_model(workdir / "models", "tiny", tiny_classifier)
    built = {c: api.plan_and_build(settings, api.BuildRequest("tiny", "int8", backend="onnxruntime",
                                                               calibrator=c)).artefact
             for c in ("entropy2", "minmax")}
    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#engines-table")
        await wait_for(pilot, lambda: table.row_count == 2, what="two artefact rows")
        text = screen_text(app)
        assert built["entropy2"].id in text and built["minmax"].id in text and "minmax" in text
        table.focus()
        rows = [r.artefact.id for r in app.screen.rows]
        table.move_cursor(row=rows.index(built["minmax"].id))
        await pilot.press("v")
        await wait_for(pilot, lambda: any(n.startswith("verify ") for n in notes(app)), timeout=120,
                       what="verify")
        line = next(n for n in notes(app) if n.startswith("verify "))
        assert "minmax" in line and built["minmax"].id in line and "entropy2" not in line
        verdicts = sorted(p.name for p in (workdir / "engines").glob("*.verify.json"))
        assert verdicts == [built["minmax"].path.name + ".verify.json"]
        table.move_cursor(row=rows.index(built["entropy2"].id))
        await pilot.press("n")
        await wait_for(pilot, lambda: any(n.startswith("bench ") for n in notes(app)), timeout=120,
                       what="bench")
        line = next(n for n in notes(app) if n.startswith("bench "))
        assert "entropy2" in line and built["entropy2"].id in line


@pytest.mark.slow
async def test_verify_offers_recover_and_l_shows_the_layer_table(settings, settings_path, workdir):
    """Issue 14: an int8 artefact that loses top-1 (outlier model): its verify result offers R, which
    recovers with [build].recover_target; L shows per-layer times named after the model's nodes."""
    from onnx_factory import add_model, outlier_classifier

    from ncanvas_tui import api

    add_model(workdir / "models", "outlier", outlier_classifier)
    api.build(api.plan_build(settings, api.BuildRequest("outlier", "int8", backend="onnxruntime")))
    app = make_app(settings_path, start="engines", record_history=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#engines-table")
        await wait_for(pilot, lambda: table.row_count == 1, what="engine row")
        table.focus()
        await pilot.press("v")
        await wait_for(pilot, lambda: any(n.startswith("verify ") for n in notes(app)), timeout=120, what="verify")
        assert any("R recovers to 99%" in n for n in notes(app))
        await pilot.press("r")
        await wait_for(pilot, lambda: any(n.startswith("recovered ") for n in notes(app)), timeout=180,
                       what="recover")
        line = next(n for n in notes(app) if n.startswith("recovered "))
        assert "1 layer(s) float: mix" in line and "top-1 agreement 100.0%" in line and "speed cost" in line
        layers = app.screen.query_one("#layers-table")
        assert layers.display and layers.row_count == 2 and "mix" in screen_text(app)
        await wait_for(pilot, lambda: table.row_count == 2, what="the recovered artefact listed")
        table.focus()
        await pilot.press("l")
        await wait_for(pilot, lambda: any(n.startswith("layers of outlier") for n in notes(app)), timeout=120,
                       what="layer profile")
        assert layers.row_count >= 4 and "stem" in screen_text(app)
