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


# 16 ------------------------------------------------------------------------------------------------
def photo_folder(workdir: Path, copies: int) -> Path:
    import shutil

    folder = workdir / "many"
    folder.mkdir()
    photos = sorted((workdir / "pictures").glob("*.jpg"))
    for i in range(copies):
        shutil.copy(photos[i % len(photos)], folder / f"{i:05d}.jpg")
    return folder


def test_infer_jsonl_prints_one_object_per_image_and_no_summary(cli, workdir):
    path = settings_file(workdir)
    folder = photo_folder(workdir, 5)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    r = cli("infer", str(folder), str(workdir / "missing"), "--jsonl", "--settings", str(path))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 7  # 5 photos, the broken file, the missing path
    assert sum("top" in x for x in lines) == 5 and all(set(x) <= {"image", "top", "error"} for x in lines)
    assert {x["image"] for x in lines if "error" in x} == {str(folder / "broken.jpg"), str(workdir / "missing")}
    assert "classifying" not in r.stderr  # stderr is not a terminal: no progress line


def test_infer_jsonl_streams_and_ctrl_c_keeps_every_line_whole(workdir):
    import os
    import signal
    import subprocess
    import sys

    path = settings_file(workdir)
    folder = photo_folder(workdir, 400)
    p = subprocess.Popen([sys.executable, "-m", "ncanvas_tui", "infer", str(folder), "--jsonl", "--no-history",
                          "--settings", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ})
    first = p.stdout.readline()  # arrives long before the folder is done
    assert json.loads(first)["image"].endswith("00000.jpg")
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    lines = [first, *rest.splitlines()]
    assert len(lines) < 400
    for line in lines:
        assert "top" in json.loads(line)


def test_infer_shows_progress_on_a_terminal(workdir):
    import os
    import pty
    import subprocess
    import sys

    path = settings_file(workdir)
    folder = photo_folder(workdir, 20)
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "ncanvas_tui", "infer", str(folder), "--no-history", "--json",
                          "--settings", str(path)], stdout=subprocess.PIPE, stderr=slave, env={**os.environ})
    os.close(slave)
    out, _ = p.communicate(timeout=120)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    assert p.returncode == 0
    assert len(json.loads(out)["results"]) == 20  # stdout stays clean JSON
    text = err.decode()
    assert "classifying 20/20" in text and "images/s" in text and "ETA" in text


def test_progress_line_reads_done_total_rate_and_eta():
    from ncanvas_tui.cli.infer import progress_line

    assert progress_line(250, 1000, 10.0) == "classifying 250/1000 · 25.0 images/s · ETA 30 s"


# 15 ------------------------------------------------------------------------------------------------
def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_doctor_tries_each_endpoint(cli, workdir):
    from fakeopenai import FakeOpenAI

    port = closed_port()
    with FakeOpenAI() as fake:
        def settings(model: str) -> Path:
            return write_settings(workdir / "settings.toml", f"""
[llm]
base_url = "{fake.url}"
model = "{model}"
api_key_env = ""
[imagegen]
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = ""
""")
        r = cli("doctor", "--json", "--settings", str(settings(fake.model)))
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout)
        assert rep["llm"]["reachable"] is True and "model fake-model is there" in rep["llm"]["detail"]
        assert rep["imagegen"]["reachable"] is False and rep["imagegen"]["detail"].startswith("refused")
        text = cli("doctor", "--settings", str(settings("no-such-model")))
        assert text.returncode == 0
        assert "model missing: no-such-model" in text.stdout and "refused" in text.stdout

        @fake.route("GET", "/v1/models")
        def deny(h, req):
            h.send_json(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})

        rep = json.loads(cli("doctor", "--json", "--settings", str(settings(fake.model))).stdout)
        assert rep["llm"]["reachable"] is True and rep["llm"]["detail"].startswith("auth failed (HTTP 401)")
