"""Failures a fault campaign found in the picture path, against REAL loopback image servers through
the real entry point (``ncanvas imagine`` in a subprocess)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from fakeimages import KEY, KEY_ENV, Error, FakeImages, Raw, base_url_for, imagegen_settings

PROVIDERS = ["openai", "nvidia", "sdwebui"]


@pytest.fixture
def fake():
    with FakeImages() as f:
        yield f


@pytest.fixture
def run(cli, workdir):
    def go(*args: str):
        return cli(*args, env={"PYTHONPATH": str(REPO), KEY_ENV: KEY}, cwd=workdir, timeout=60)
    return go


def route(fake, provider):
    return {"openai": fake.images, "nvidia": fake.genai, "sdwebui": fake.txt2img}[provider]


def only_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_truncated_json_answer_is_one_line_exit_2_and_the_prompt_is_kept(provider, fake, run, settings_path):
    route(fake, provider).push(Raw(b'{"created": 1, "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAA'))
    imagegen_settings(settings_path, provider, base_url_for(fake, provider))
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a lighthouse in a storm")
    assert r.returncode == 2, r.stderr
    line = only_line(r.stderr)
    assert "answer is not JSON" in line and "internal error" not in line and "(this is a bug)" not in line
    assert "prompt kept in history run" in line
    run_id = line.rsplit("ncanvas history show ", 1)[1].rstrip(")")
    shown = run("history", "show", run_id, "--settings", str(settings_path), "--json")
    assert shown.returncode == 0, shown.stderr
    assert "a lighthouse in a storm" in shown.stdout


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_401_text_is_redacted_like_the_llms(provider, fake, run, settings_path):
    other = "sk-proj-SOMEONE-ELSES-KEY-0123456789"
    route(fake, provider).push(Error(401, f"Incorrect API key provided: {other}; see "
                                          "https://admin:SERVER-PASSWORD@auth.example/help"))
    imagegen_settings(settings_path, provider, base_url_for(fake, provider))
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a fox")
    assert r.returncode == 2
    line = only_line(r.stderr)
    assert "401" in line and other not in line and "SERVER-PASSWORD" not in line, line
    from ncanvas_tui.endpoints import redact
    from ncanvas_tui.story.llm import scrub

    assert scrub is redact  # the story and imagine paths share one redaction
    assert redact(f"key {other} at https://admin:SERVER-PASSWORD@auth.example/help") == \
        "key *** at https://***@auth.example/help"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_password_in_the_image_base_url_is_never_printed_or_stored(provider, fake, run, settings_path,
                                                                    workdir):
    base = base_url_for(fake, provider).replace("http://", "http://dave:IMG-PASSWORD@")
    imagegen_settings(settings_path, provider, base)
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a fox", "--json")
    assert r.returncode == 0, r.stderr
    assert "IMG-PASSWORD" not in r.stdout + r.stderr
    assert json.loads(r.stdout)["endpoint"].startswith("http://***@127.0.0.1:")
    route(fake, provider).push(Error(500, "boom"))
    r = run("imagine", "--settings", str(settings_path), "--prompt", "a fox")
    assert r.returncode == 2 and "IMG-PASSWORD" not in r.stderr and "http://***@" in r.stderr
    for f in (workdir / "output").rglob("*"):
        if f.is_file() and f.suffix != ".png":
            assert b"IMG-PASSWORD" not in f.read_bytes(), f
