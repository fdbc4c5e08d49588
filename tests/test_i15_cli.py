"""Issue 15, the command-line side: precision "auto", `infer --jsonl` and progress, doctor probing endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_settings

SETTINGS = """
[paths]
models = "models"
engines = "engines"
images = "pictures"
calibration = "calibdata"
output = "output"

[inference]
backend = "onnxruntime"
{extra}

[guardrails]
enabled = false
"""


def settings_file(workdir: Path, extra: str = "") -> Path:
    return write_settings(workdir / "settings.toml", SETTINGS.format(extra=extra))


# 9 -------------------------------------------------------------------------------------------------
def test_precision_auto_is_the_default_and_says_nothing_on_the_cpu(cli, workdir):
    from ncanvas_tui import settings as s

    path = settings_file(workdir)
    assert s.load(path).inference.precision == "auto"
    photo = str(workdir / "pictures" / "chelsea.jpg")
    for extra in ([], ["--precision", "auto"]):
        r = cli("infer", photo, "--no-history", "--settings", str(path), *extra)
        assert r.returncode == 0, r.stderr
        assert "note:" not in r.stdout and "fp16" not in r.stdout + r.stderr
        assert "onnxruntime fp32" in r.stdout


def test_precision_auto_is_fp16_on_tensorrt(workdir):
    from ncanvas_tui import settings as s
    from ncanvas_tui.engines.artefacts import Selection, select
    from ncanvas_tui.errors import NcanvasError

    settings = s.load(settings_file(workdir))
    with pytest.raises(NcanvasError) as e:  # nothing built here: the message names what auto chose
        select(settings, Selection(backend="tensorrt"))
    assert "tensorrt fp16" in str(e.value)
    # an explicit fp16 on the CPU is surprising: that one still says so
    assert select(settings, Selection(precision="fp16")).notes
    assert not select(settings, Selection()).notes
