"""`ncanvas models prep`: Polygraphy sanitize -> NAME.prep.onnx with unchanged outputs."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx_factory import SIZE, add_model, not_onnx_bytes, run, tiny_classifier, wrong_rank

from ncanvas_tui.engines.plan import load_source
from ncanvas_tui.engines.prep import prep_model, sanitized_model_for
from ncanvas_tui.errors import ModelError
from ncanvas_tui.vision import catalog

DEFAULT_ONNX = catalog.BUNDLED_DIR / "efficientnet_lite0.onnx"


def test_prep_folds_constants_removes_dead_nodes_and_keeps_outputs(settings, workdir):
    src = add_model(workdir / "models", "tiny", tiny_classifier)
    entry = catalog.find(settings, "tiny")
    steps = []
    res = prep_model(settings, entry, progress=lambda d, t, m: steps.append(m))
    assert res.output == workdir / "models" / "tiny.prep.onnx" and res.output.is_file()
    assert res.nodes_before == 13 and res.nodes_after == 7  # 5 constant nodes folded, 1 dead node gone
    assert res.max_abs_diff < 1e-5
    assert "calibdata" in res.compared_on  # real images, not noise
    clean = onnx.load(str(res.output))
    assert not any(n.op_type == "Constant" for n in clean.graph.node)
    x = np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    np.testing.assert_allclose(run(src, x), run(res.output, x), atol=1e-5)
    assert any("comparing outputs" in s for s in steps)
    assert [p.name for p in (workdir / "models").iterdir() if p.name.startswith(".ncanvas-tmp")] == []


def test_bundled_default_model_prep_goes_to_paths_models(settings, workdir):
    if not DEFAULT_ONNX.is_file():
        pytest.skip("bundled model not present")
    entry = catalog.find(settings, "efficientnet_lite0")
    res = prep_model(settings, entry)
    # the bundled folder is not touched: the copy lands in [paths].models
    assert res.output == workdir / "models" / "efficientnet_lite0.prep.onnx"
    assert res.nodes_after <= res.nodes_before
    assert res.max_abs_diff < 1e-4
    # reused by builds while the source is unchanged
    assert sanitized_model_for(settings, load_source(settings, entry)) == res.output


def test_read_only_source_folder_writes_to_paths_models(settings, workdir, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    ro = tmp_path / "ro"
    src = add_model(ro, "tiny", tiny_classifier)
    ro.chmod(0o555)
    try:
        entry = catalog.find(settings, str(src))
        assert prep_model(settings, entry).output.parent == workdir / "models"
    finally:
        ro.chmod(0o755)


def test_sanitized_copy_is_redone_when_the_source_changes(settings, workdir):
    src = add_model(workdir / "models", "tiny", tiny_classifier)
    entry = catalog.find(settings, "tiny")
    first = sanitized_model_for(settings, load_source(settings, entry))
    mtime = first.stat().st_mtime_ns
    assert sanitized_model_for(settings, load_source(settings, entry)).stat().st_mtime_ns == mtime  # reused
    onnx.save(tiny_classifier(foldable=False), str(src))
    again = sanitized_model_for(settings, load_source(settings, entry))
    assert again == first and len(onnx.load(str(again)).graph.node) == 7
    s2 = settings.replace("build", sanitize=False)
    assert sanitized_model_for(s2, load_source(s2, entry)) == src


@pytest.mark.parametrize("make, words", [(not_onnx_bytes(), "not a valid ONNX file"),
                                          (wrong_rank, "rank 2")])
def test_bad_onnx_is_one_line_naming_the_file(settings, workdir, make, words):
    src = add_model(workdir / "models", "bad", make)
    with pytest.raises(ModelError) as ei:
        prep_model(settings, catalog.find(settings, "bad"))
    assert str(src) in str(ei.value) and words in str(ei.value)
    assert not (workdir / "models" / "bad.prep.onnx").exists()


def test_models_prep_cli(settings_path, workdir, cli):
    add_model(workdir / "models", "tiny", tiny_classifier)
    r = cli("models", "prep", "tiny", "--settings", str(settings_path))
    if "invalid choice" in r.stderr:
        pytest.skip("`models` command not registered yet")
    assert r.returncode == 0, r.stderr
    assert "nodes: 13 -> 7, max abs diff" in r.stdout
    r = cli("models", "prep", "tiny", "--json", "--settings", str(settings_path))
    data = json.loads(r.stdout)
    assert data["nodes_before"] == 13 and data["nodes_after"] == 7 and data["max_abs_diff"] < 1e-5
    (workdir / "models" / "junk.onnx").write_bytes(b"garbage")
    r = cli("models", "prep", "junk", "--settings", str(settings_path))
    assert r.returncode == 2 and "junk.onnx" in r.stderr and "Traceback" not in r.stderr


def test_prep_sanitizes_in_a_child_process_with_the_same_steps(settings, workdir, caplog):
    import logging
    import re

    add_model(workdir / "models", "tiny", tiny_classifier)
    steps = []
    with caplog.at_level(logging.DEBUG, logger="ncanvas.engines"):
        res = prep_model(settings, catalog.find(settings, "tiny"), progress=lambda d, t, m: steps.append((d, t, m)))
    assert steps == [(1, 4, "loading ONNX"), (2, 4, "folding constants, cleanup, toposort"),
                     (3, 4, "comparing outputs with ONNX Runtime"), (4, 4, "done")]
    pids = [int(m.group(1)) for r in caplog.records
            if (m := re.search(r"sanitize: running in child process (\d+)", r.getMessage()))]
    assert pids and pids[0] != os.getpid()
    assert res.nodes_before == 13 and res.nodes_after == 7


def test_prep_without_the_engines_extra_says_what_to_install(cli, settings_path, tmp_path) -> None:
    """`make run` without the engines extra: a one-line hint, not an internal error."""
    shim = tmp_path / "shim" / "onnx_graphsurgeon"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnx_graphsurgeon'\", name='onnx_graphsurgeon')\n")
    import os

    env = {"PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}
    r = cli("models", "prep", "efficientnet_lite0", "--settings", str(settings_path), env=env)
    assert r.returncode == 2, r.stderr
    assert "sanitize needs the onnx_graphsurgeon package: pip install -e '.[engines]'" in r.stderr
    assert r.stderr.count("error") == 1 and "Traceback" not in r.stderr  # progress lines come first
