"""Failures a fault campaign found in the story path, each against a real server on 127.0.0.1
through the real entry point (``ncanvas story`` in a subprocess) or the real writer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeopenai import FakeOpenAI, Hang, Reply, story_settings_text

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake():
    with FakeOpenAI() as f:
        yield f


def write_settings(workdir: Path, url: str, **kw) -> Path:
    kw.setdefault("api_key_env", "")
    p = workdir / "story-settings.toml"
    p.write_text(story_settings_text(url, **kw), encoding="utf-8")
    return p


def story(cli, settings: Path, *args: str, env: dict[str, str] | None = None):
    return cli("story", "--settings", str(settings), "--labels", "daisy,robot", "--style", "Comedy",
               "--theme", "Time Travel", *args, env=env, cwd=REPO)


def saved_meta(path: str) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    return json.loads(text.split("\n")[1])


def test_a_stream_that_just_stops_is_partial_in_json_and_in_the_file(cli, fake, workdir):
    # no finish_reason, no [DONE]: the HTTP body simply ends
    fake.chat.push(Reply("A daisy met a robot and then", finish_reason=None, done=False))
    r = story(cli, write_settings(workdir, fake.url), "--json")
    assert r.returncode == 2, r.stderr
    out = json.loads(r.stdout)
    assert out["partial"] is True and out["story"] == "A daisy met a robot and then"
    assert "ended before it finished" in out["error"]
    assert saved_meta(out["path"])["partial"] is True
    assert r.stderr.count("\n") == 1 and "partial story was saved" in r.stderr


def test_a_finished_stream_is_not_partial(cli, fake, workdir):
    fake.chat.push(Reply("A daisy met a robot."))
    r = story(cli, write_settings(workdir, fake.url), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["partial"] is False and saved_meta(out["path"])["partial"] is False


def test_a_stream_without_done_but_with_a_finish_reason_is_complete(cli, fake, workdir):
    fake.chat.push(Reply("A daisy met a robot.", done=False))
    r = story(cli, write_settings(workdir, fake.url), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["partial"] is False


def test_a_huge_story_is_cut_at_max_story_chars_and_kept_as_partial(cli, fake, workdir):
    fake.chat.push(Reply("word " * 5000))  # 25,000 characters
    r = story(cli, write_settings(workdir, fake.url, extra="", llm_extra="max_story_chars = 1000"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["partial"] is True and 900 <= len(out["story"]) <= 1000
    assert saved_meta(out["path"])["partial"] is True
    assert "max_story_chars" in r.stderr


def test_guarded_endpoint_that_never_answers_says_it_timed_out(cli, fake, workdir):
    fake.checks.push(Hang(8), Hang(8), Hang(8))  # accepts the checks and never answers
    r = story(cli, write_settings(workdir, fake.url, guardrails=True, timeout_s=1, retries=0))
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "guardrails input check" in line and "timed out after 1 s" in line, line
    assert f"{fake.url}/chat/completions" in line and "[llm].timeout_s" in line
    assert not line.rstrip().endswith(":")


def test_a_password_in_base_url_is_never_printed_or_stored(cli, fake, workdir):
    url = fake.url.replace("http://", "http://alice:hunter2-SECRET@") + "?api-key=QUERY-SECRET"
    fake.chat.push(Reply("A daisy met a robot."))
    settings = write_settings(workdir, url)
    r = story(cli, settings, "--json")
    assert "hunter2" not in r.stdout + r.stderr and "QUERY-SECRET" not in r.stdout + r.stderr
    from ncanvas_tui.endpoints import redact_url

    assert redact_url(url) == fake.url.replace("http://", "http://***@") + "?api-key=***"
    db = workdir / "output" / "history.sqlite"
    for f in (workdir / "output").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert b"hunter2" not in data and b"QUERY-SECRET" not in data, f
    del db


def test_a_refused_endpoint_error_never_shows_the_password(cli, workdir):
    settings = write_settings(workdir, "http://bob:pa55word-SECRET@127.0.0.1:9/v1", retries=0)
    r = story(cli, settings)
    assert r.returncode == 2
    assert "pa55word" not in r.stderr and "http://***@127.0.0.1:9/v1" in r.stderr


def test_doctor_never_prints_the_password(cli, workdir):
    settings = write_settings(workdir, "http://carol:s3cret-SECRET@127.0.0.1:9/v1")
    r = cli("doctor", "--json", "--settings", str(settings), cwd=REPO)
    assert "s3cret" not in r.stdout + r.stderr
    r = cli("doctor", "--settings", str(settings), cwd=REPO)
    assert "s3cret" not in r.stdout + r.stderr and "***@127.0.0.1:9/v1" in r.stdout


def test_nemoguardrails_warnings_go_to_the_log_not_stderr(cli, fake, workdir):
    # a key over plain HTTP to a non-loopback name: nemoguardrails warns (UserWarning) at set-up
    url = fake.url.replace("127.0.0.1", "127.0.0.2")  # loopback, but not a name nemoguardrails knows
    settings = write_settings(workdir, url, guardrails=True, api_key_env="NCANVAS_TEST_KEY", retries=0)
    r = story(cli, settings, env={"NCANVAS_TEST_KEY": "sk-test-abcdefghijklmnop"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr  # 127.0.0.2 refuses: one line
    assert "UserWarning" not in r.stderr and "plaintext HTTP" not in r.stderr, r.stderr
