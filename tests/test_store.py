"""The engine library: names, sidecars, atomic writes, stale / foreign / corrupt detection."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from ncanvas_tui import files as files_mod
from ncanvas_tui.engines import store as store_mod
from ncanvas_tui.engines.store import (
    NO_GPU,
    Artefact,
    ArtefactKey,
    EngineStore,
    artefact_file_name,
    atomic_write_bytes,
)
from ncanvas_tui.errors import EngineError
from ncanvas_tui.files import WriteError

KEY = {"model": "efficientnet_lite0", "model_sha256": "a" * 64, "backend": "tensorrt", "backend_version": "10.3.0",
       "precision": "fp16", "batch": (1, 4, 8), "gpu": "Orin (sm 8.7)"}


def _record(st: EngineStore, **kw) -> Artefact:
    """An artefact record whose id is the hash of its key (as a build makes it)."""
    key = ArtefactKey(**{**KEY, **{k: v for k, v in kw.items() if k in ArtefactKey.__dataclass_fields__}})
    rest = {k: v for k, v in kw.items() if k not in ArtefactKey.__dataclass_fields__}
    base = {"gpu_name": "Orin", "compute_capability": "8.7", "opt_level": 3, **rest}
    return Artefact(path=st.path_for(key), id=key.id, model=key.model, backend=key.backend,
                    precision=key.precision, batch=list(key.batch), backend_version=key.backend_version,
                    model_sha256=key.model_sha256, calibrator=key.calibrator, **base)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".locks")


def test_file_name_is_model_backend_precision_and_the_id_of_the_whole_key():
    key = ArtefactKey(**{**KEY, "backend": "tensorrt-rtx"})
    assert artefact_file_name(key) == f"efficientnet_lite0.tensorrt-rtx.fp16.{key.id}.plan"
    assert len(key.id) == 10 and int(key.id, 16) >= 0
    assert ArtefactKey(**{**KEY, "backend": "tensorrt-rtx"}).id == key.id  # the same key, the same id
    assert artefact_file_name(ArtefactKey(**{**KEY, "backend": "onnxruntime"})).endswith(".onnx")
    # every part of the key makes another artefact
    changes = [{"model_sha256": "b" * 64}, {"backend_version": "10.7.0"}, {"precision": "int8"},
               {"batch": (1, 8, 8)}, {"gpu": "AGX Xavier (sm 7.2)"}, {"calibrator": "minmax"},
               {"calibration_set": "0123456789"}, {"keep_float": ("conv1",)}, {"dla_core": 0},
               {"options": (("sparse", "1"),)}]
    ids = {ArtefactKey(**{**KEY, **c}).id for c in changes}
    assert len(ids) == len(changes) and ArtefactKey(**KEY).id not in ids


def test_save_writes_engine_and_sidecar_then_find_and_list(settings):
    st = EngineStore(settings)
    rec = st.save(_record(st), b"ENGINE" * 100)
    assert rec.path.read_bytes() == b"ENGINE" * 100
    side = json.loads(rec.sidecar.read_text())
    for key in ("model_sha256", "backend", "backend_version", "gpu_name", "compute_capability", "precision",
                "calibrator", "batch", "opt_level", "build_seconds", "size", "created", "engine_sha256"):
        assert key in side, key
    assert side["size"] == 600 and side["batch"] == [1, 4, 8]
    found = st.get(rec.id)
    assert found is not None and found.problem is None and found.gpu_name == "Orin" and found.id == rec.id
    assert st.get(rec.id[:4]) is not None  # a unique prefix is enough
    assert st.get("0000000000") is None
    assert [r.name for r in st.list()] == [rec.path.name]
    # files are readable like any other build output (not mkstemp's 0600)
    assert rec.path.stat().st_mode & 0o044 == 0o044
    st.check(found, trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", model_sha256="a" * 64)
    st.delete(found)
    assert _files(st.root) == []


@pytest.mark.parametrize("change, words", [
    ({"model_sha256": "b" * 64}, "changed ONNX"),
    ({"trt_version": "10.7.0"}, "TensorRT 10.3.0"),
    ({"gpu_name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}, "GPU Orin"),
])
def test_stale_or_foreign_engine_is_refused_with_the_rebuild_command(settings, change, words):
    st = EngineStore(settings)
    rec = st.save(_record(st), b"x" * 10)
    now = {"trt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "model_sha256": "a" * 64}
    now.update(change)
    with pytest.raises(EngineError) as ei:
        st.check(rec, **now)
    msg = str(ei.value)
    assert words in msg and str(rec.path) in msg
    assert "ncanvas build efficientnet_lite0 --precision fp16 --backend tensorrt --force" in msg
    assert "\n" not in msg


def test_rtx_engine_built_without_gpu_is_not_tied_to_a_gpu(settings):
    st = EngineStore(settings)
    rec = st.save(_record(st, backend="tensorrt-rtx", gpu_name=NO_GPU, compute_capability=""), b"x")
    st.check(rec, trt_version="10.3.0", gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9",
             model_sha256="a" * 64)


def test_corrupt_engine_file_detected_before_deserializing(settings):
    st = EngineStore(settings)
    rec = st.save(_record(st), b"GOOD" * 256)
    data = bytearray(rec.path.read_bytes())
    data[10] ^= 0xFF  # same size, one flipped byte
    rec.path.write_bytes(bytes(data))
    with pytest.raises(EngineError, match="corrupt"):
        st.check(st.list()[0], trt_version=None, gpu_name=None, compute_capability=None, model_sha256=None)


def test_truncated_engine_missing_sidecar_corrupt_sidecar_and_orphan_sidecar(settings):
    st = EngineStore(settings)
    a = st.save(_record(st, precision="fp16"), b"A" * 100)
    b = st.save(_record(st, precision="int8"), b"B" * 100)
    c = st.save(_record(st, precision="fp32"), b"C" * 100)
    d = st.save(_record(st, precision="fp16", batch=[1, 1, 1]), b"D" * 100)
    a.path.write_bytes(b"A" * 50)               # truncated
    b.sidecar.unlink()                           # missing sidecar
    c.sidecar.write_text("{not json")            # corrupt sidecar
    d.path.unlink()                              # sidecar without engine
    problems = {r.name: r.problem for r in st.list()}
    assert len(problems) == 4
    assert "truncated" in problems[a.name]
    assert "sidecar missing" in problems[b.name]
    assert "corrupt sidecar" in problems[c.name]
    assert "file missing" in problems[d.name]
    for r in st.list():
        with pytest.raises(EngineError, match="rebuild with `ncanvas build"):
            st.check(r, trt_version=None, gpu_name=None, compute_capability=None, model_sha256=None)


def test_disk_full_injected_at_the_write_layer_leaves_nothing(settings, monkeypatch):
    """ENOSPC from os.write (simulated at the atomic-write layer) -> EngineError, no temp, no engine."""
    st = EngineStore(settings)
    calls = {"n": 0}

    def full(fd, data):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data[: max(1, len(data) // 2)])

    monkeypatch.setattr(files_mod, "_os_write", full)
    with pytest.raises(WriteError, match="No space left on device"):
        st.save(_record(st), b"X" * 1000)
    assert _files(st.root) == []


def test_disk_full_on_a_real_tiny_tmpfs_leaves_nothing(settings, tmp_path):
    """A real full disk: a 64 KiB tmpfs (needs root + mount; skipped otherwise)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(check=False, args=["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        s2 = settings.replace("paths", engines=mnt)
        st = EngineStore(s2)
        with pytest.raises(WriteError, match="No space left"):
            st.save(_record(st), os.urandom(256 * 1024))
        assert _files(mnt) == []
        # and a small engine still fits afterwards: nothing leaked
        st.save(_record(st), b"small")
        assert len(_files(mnt)) == 2
    finally:
        subprocess.run(check=False, args=["umount", str(mnt)], capture_output=True)


def test_ctrl_c_during_write_leaves_nothing(tmp_path, monkeypatch):
    def interrupted(fd, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(files_mod, "_os_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "e.plan", b"data")
    assert _files(tmp_path) == []


def test_engines_list_cli_text_and_json(settings, settings_path, cli):
    st = EngineStore(settings)
    a = st.save(_record(st), b"x" * 2000)
    b = st.save(_record(st, precision="int8", calibrator="entropy2"), b"y" * 10)
    (st.root / "broken.tensorrt.fp32.0123456789.plan").write_bytes(b"zz")
    (st.root / "efficientnet_lite0.int8-trt.minmax.aaaa.bbbb.onnx").write_bytes(b"an intermediate")
    r = cli("engines", "list", "--json", "--settings", str(settings_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    rows = {e["id"]: e for e in data["artefacts"]}
    assert set(rows) == {a.id, b.id, "0123456789"}  # intermediates are not artefacts
    for row in rows.values():
        for field in ("id", "model", "backend", "precision", "calibrator", "keep_float", "dla_core", "path",
                      "problem"):
            assert field in row, field
    assert rows[a.id]["size"] == 2000 and rows[a.id]["calibrator"] is None
    assert rows[b.id]["calibrator"] == "entropy2" and rows[b.id]["keep_float"] == []
    assert "sidecar missing" in rows["0123456789"]["problem"]
    # these were "built" for an ONNX with another sha256 and a TensorRT that is not here: said, not hidden
    assert "not installed here" in rows[a.id]["problem"] or "changed ONNX" in rows[a.id]["problem"]
    r = cli("engines", "list", "--settings", str(settings_path))
    assert r.returncode == 0
    assert a.id in r.stdout and b.id in r.stdout and "entropy2" in r.stdout and "UNUSABLE" in r.stdout


def test_stale_temp_files_of_killed_writers_are_cleaned_but_fresh_ones_kept(settings):
    st = EngineStore(settings)
    old = st.root / f"{store_mod.TEMP_PREFIX}old.plan"
    fresh = st.root / f"{store_mod.TEMP_PREFIX}fresh.plan"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    os.utime(old, (0, 0))
    assert st.list() == []  # temp files are never listed as engines
    assert st.clean_temp_files() == 1
    assert not old.exists() and fresh.exists()
