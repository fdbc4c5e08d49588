"""Stories that see the pictures: ``ncanvas story --images`` through the real entry point, the real
classifier (bundled model, ONNX Runtime) and a loopback OpenAI server that checks the image parts."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeopenai import Error, FakeOpenAI, Reply, default_chat, is_self_check, story_settings_text

REPO = Path(__file__).resolve().parent.parent
STORY = "A tabby cat found a rocket in the garden."


def check_parts(body: dict) -> object:
    """The fake's story answer: a 400 unless every image part is a JPEG data URL of at most 512 px."""
    from PIL import Image

    if is_self_check(body):
        return default_chat(body)
    user = next(m for m in body["messages"] if m["role"] == "user")
    content = user["content"]
    if isinstance(content, str):
        return Reply(STORY)
    texts = [p["text"] for p in content if p.get("type") == "text"]
    urls = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    if len(texts) != 1 or not urls:
        return Error(400, "expected one text part and image parts", type="invalid_request_error")
    for url in urls:
        if not url.startswith("data:image/jpeg;base64,"):
            return Error(400, f"not a JPEG data URL: {url[:40]}", type="invalid_request_error")
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as im:
            if im.format != "JPEG" or max(im.size) > 512:
                return Error(400, f"bad picture {im.format} {im.size}", type="invalid_request_error")
    return Reply(STORY)


@pytest.fixture
def fake():
    with FakeOpenAI() as f:
        f.chat.default = check_parts
        yield f


def settings(workdir: Path, url: str, *, vision: bool, guardrails: bool = False) -> Path:
    p = workdir / "story-settings.toml"
    p.write_text(story_settings_text(url, api_key_env="", guardrails=guardrails,
                                     llm_extra=f"vision = {str(vision).lower()}")
                 + '\n[inference]\nbackend = "onnxruntime"\nprecision = "fp32"\n', encoding="utf-8")
    return p


def photos(workdir: Path) -> list[str]:
    return [str(workdir / "pictures" / n) for n in ("chelsea.jpg", "rocket.jpg")]


def story(cli, path: Path, *args: str):
    return cli("story", "--settings", str(path), "--style", "Comedy", "--theme", "Time Travel", *args,
               cwd=REPO, timeout=120)


def story_requests(fake) -> list[dict]:
    return [r.body for r in fake.story_calls()]


def test_images_give_the_labels_and_the_story_without_vision_sends_no_pictures(cli, fake, workdir):
    r = story(cli, settings(workdir, fake.url, vision=False), "--images", *photos(workdir), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["labels"] and out["images"] == photos(workdir) and out["vision"] is False
    assert "labels from the pictures: " + ", ".join(out["labels"]) in r.stderr
    (body,) = story_requests(fake)
    text = json.dumps(body)
    assert all(label in text for label in out["labels"]) and "data:image" not in text


def test_vision_sends_downscaled_jpegs_and_keeps_them_out_of_rails_logs_and_history(cli, fake, workdir):
    r = story(cli, settings(workdir, fake.url, vision=True, guardrails=True), "--images", *photos(workdir),
              "--json", "--debug")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["story"] == STORY and out["vision"] is True
    (body,) = story_requests(fake)
    parts = next(m for m in body["messages"] if m["role"] == "user")["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert all(label in parts[0]["text"] for label in out["labels"])
    assert len(json.dumps(body)) < 1_000_000
    assert fake.check_calls("input") and fake.check_calls("output")
    assert all("data:image" not in json.dumps(c.body) for c in fake.check_calls())  # never in rail prompts
    assert "data:image" not in r.stderr and "base64," not in r.stderr  # nor in the logs
    db = next((workdir / "output").glob("history.sqlite*"))
    with sqlite3.connect(db) as con:
        dump = "\n".join(con.iterdump())
    assert "data:image" not in dump and "chelsea.jpg" in dump  # the history keeps the paths
    saved = Path(out["path"]).read_text(encoding="utf-8")
    assert "data:image" not in saved


def test_a_server_that_rejects_pictures_is_one_line_naming_llm_vision(cli, fake, workdir):
    fake.story.push(Error(400, "Invalid content type. image_url is only supported by certain models.",
                          type="invalid_request_error"))
    r = story(cli, settings(workdir, fake.url, vision=True), "--images", *photos(workdir))
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("ncanvas: labels")]
    assert len(lines) == 1 and "[llm].vision" in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_labels_win_over_the_classifier_and_are_required_without_images(cli, fake, workdir):
    path = settings(workdir, fake.url, vision=False)
    r = story(cli, path, "--images", *photos(workdir), "--labels", "daisy", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["labels"] == ["daisy"]
    r = story(cli, path)
    assert r.returncode == 2 and "--images" in r.stderr and "--labels" in r.stderr


def test_images_that_cannot_be_classified_are_one_line(cli, fake, workdir):
    bad = workdir / "not-a-picture.jpg"
    bad.write_bytes(b"hello")
    r = story(cli, settings(workdir, fake.url, vision=False), "--images", str(bad))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not-a-picture.jpg" in r.stderr, r.stderr
    assert not fake.story_calls()
