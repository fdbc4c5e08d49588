"""Artefacts with identity: two int8 builds of one model (entropy2, minmax) are two artefacts; verify,
bench and infer act on the one the user chose; builds of one model in two processes at once both
succeed (the shared intermediates are made under a lock, each quantization in its own scratch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_factory import add_model, tiny_classifier

from ncanvas_tui import api
from ncanvas_tui.engines.artefacts import Selection, select
from ncanvas_tui.errors import EngineError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def two(settings, workdir):
    """The tiny model built for ONNX Runtime int8 with both calibrators."""
    add_model(workdir / "models", "tiny", tiny_classifier)
    return {c: api.plan_and_build(settings, api.BuildRequest("tiny", "int8", backend="onnxruntime",
                                                             calibrator=c)).artefact
            for c in ("entropy2", "minmax")}


def test_two_calibrators_are_two_artefacts_and_a_choice_is_needed(settings, two):
    e, m = two["entropy2"], two["minmax"]
    assert e.id != m.id and e.path != m.path and (e.calibrator, m.calibrator) == ("entropy2", "minmax")
    assert e.calibration_set == m.calibration_set  # same photos, another calibrator
    listed = {a.id: a for a in api.list_artefacts(settings)}
    assert set(listed) == {e.id, m.id} and all(a.problem is None for a in listed.values())
    with pytest.raises(EngineError) as ei:
        select(settings, Selection(model="tiny", backend="onnxruntime", precision="int8"))
    msg = str(ei.value)
    assert e.id in msg and m.id in msg and "--artefact ID" in msg and "--calibrator" in msg
    assert select(settings, Selection(model="tiny", backend="onnxruntime", precision="int8",
                                      calibrator="minmax")).path == m.path
    assert select(settings, Selection(artefact=e.id)).path == e.path
    assert select(settings, Selection(artefact=e.id[:5])).path == e.path  # a unique prefix is enough
    with pytest.raises(EngineError, match="no artefact 'ffffffffff'"):
        select(settings, Selection(artefact="ffffffffff"))


def test_cli_verify_bench_infer_act_on_the_chosen_artefact(cli, settings_path, workdir, two):
    e, m = two["entropy2"], two["minmax"]
    s = ("--settings", str(settings_path))
    photo = str(min((workdir / "pictures").glob("*.jpg")))
    # ambiguous: exit 2, one line listing both ids
    r = cli("verify", "tiny", "--precision", "int8", "--backend", "onnxruntime", *s)
    assert r.returncode == 2 and e.id in r.stderr and m.id in r.stderr and len(r.stderr.splitlines()) == 1
    r = cli("verify", "tiny", "--precision", "int8", "--backend", "onnxruntime", "--calibrator", "minmax",
            "--json", *s)
    assert r.returncode == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["id"] == m.id and v["calibrator"] == "minmax" and v["artefact"] == str(m.path)
    assert Path(v["stored"]) == m.path.with_name(m.path.name + ".verify.json")
    assert not e.path.with_name(e.path.name + ".verify.json").exists()   # the other one was not touched
    r = cli("verify", "--artefact", e.id, "--json", *s)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == e.id
    r = cli("bench", "--artefact", m.id, "--batch", "1", "--seconds", "0.1", "--images", photo, "--json", *s)
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert (b["id"], b["calibrator"], b["artefact"]) == (m.id, "minmax", str(m.path))
    r = cli("bench", "--model", "tiny", "--precision", "int8", "--calibrator", "entropy2", "--batch", "1",
            "--seconds", "0.1", "--images", photo, "--json", *s)
    assert r.returncode == 0, r.stderr and json.loads(r.stdout)["id"] == e.id
    r = cli("infer", photo, "--model", "tiny", "--precision", "int8", "--calibrator", "entropy2", "--json",
            "--no-history", *s)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["artefact"] == e.id
    r = cli("infer", photo, "--model", "tiny", "--precision", "int8", "--no-history", *s)
    assert r.returncode == 2 and "match" in r.stderr and e.id in r.stderr
    r = cli("engines", "list", "--json", *s)
    rows = {a["id"]: a for a in json.loads(r.stdout)["artefacts"]}
    assert set(rows) == {e.id, m.id} and rows[m.id]["calibrator"] == "minmax"


def test_the_sidecar_records_the_boards_conditions(settings, workdir, monkeypatch):
    """An artefact built on a (replayed) Orin Nano says which board, power mode and clocks built it."""
    monkeypatch.setenv("NCANVAS_SYSROOT", str(REPO / "tests" / "data" / "boards" / "orin-nano-jp6"))
    add_model(workdir / "models", "tiny", tiny_classifier)
    a = api.plan_and_build(settings, api.BuildRequest("tiny", "int8", backend="onnxruntime")).artefact
    side = json.loads(a.sidecar.read_text())
    assert "Orin" in (side["conditions"]["board"] or "") and side["conditions"]["nvpmodel"]


def test_a_changed_onnx_makes_its_artefacts_stale_not_silently_used(settings, workdir, two):
    add_model(workdir / "models", "tiny", lambda: tiny_classifier(foldable=False))  # the model was re-exported
    listed = api.list_artefacts(settings)
    assert all("changed ONNX" in (a.problem or "") for a in listed)
    with pytest.raises(EngineError, match="changed ONNX.*rebuild with `ncanvas build tiny"):
        select(settings, Selection(model="tiny", backend="onnxruntime", precision="int8", calibrator="minmax"))
    fresh = api.plan_and_build(settings, api.BuildRequest("tiny", "int8", backend="onnxruntime",
                                                          calibrator="minmax")).artefact
    assert fresh.id not in {a.id for a in listed}
    assert select(settings, Selection(model="tiny", backend="onnxruntime", precision="int8",
                                      calibrator="minmax")).id == fresh.id


def _build(settings_path: Path, calibrator: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ncanvas_tui", "build", "efficientnet_lite0", "--precision",
                             "int8", "--backend", "onnxruntime", "--calibrator", calibrator, "--json",
                             "--settings", str(settings_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_int8_builds_of_one_model_at_once_both_succeed(settings_path, workdir):
    """Two processes: entropy2 and minmax of the bundled model (both sanitize it and quantize it at the
    same time), then the same artefact twice (one builds it, the other waits and reuses it)."""
    procs = [_build(settings_path, "entropy2"), _build(settings_path, "minmax")]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    ids = {json.loads(out)["id"] for out, _ in outs}
    assert len(ids) == 2
    procs = [_build(settings_path, "minmax"), _build(settings_path, "minmax")]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    again = [json.loads(out) for out, _ in outs]
    assert {a["id"] for a in again} < ids and all(a["reused"] for a in again)
    procs = [_build(settings_path, "entropy2") for _ in range(2)]
    for p in procs:
        p.wait(timeout=600)
    engines = workdir / "engines"
    names = sorted(p.name for p in engines.iterdir())
    assert not [n for n in names if n.startswith(".ncanvas-tmp") or "-inferred" in n], names
    assert len([n for n in names if n.endswith(".onnx.json")]) == 2


def test_story_images_classify_with_the_chosen_artefact(settings, two):
    """``story --images --artefact ID``: the pictures are classified by that artefact."""
    from ncanvas_tui.story.images import labels_from_images

    photos = [str(p) for p in sorted((Path(settings.paths.images)).glob("*.jpg"))[:2]]
    labels, seen = labels_from_images(settings, photos, artefact=two["minmax"].id)
    assert labels and seen == photos
    with pytest.raises(EngineError, match="no artefact 'ffffffffff'"):
        labels_from_images(settings, photos, artefact="ffffffffff")


def test_build_precision_auto_is_fp32_on_onnxruntime_and_fp16_on_a_gpu_backend(settings, workdir):
    from ncanvas_tui.engines import compat
    from ncanvas_tui.engines.plan import BuildRequest, plan_build

    add_model(workdir / "models", "tiny", tiny_classifier)
    assert plan_build(settings, BuildRequest("tiny", "auto", backend="onnxruntime")).precision == "fp32"
    if compat.available("tensorrt-rtx"):
        assert plan_build(settings, BuildRequest("tiny", "auto", backend="tensorrt-rtx")).precision == "fp16"
