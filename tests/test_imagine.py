"""Imagine core: the three providers against REAL HTTP servers on 127.0.0.1, driven by the real clients
(``openai`` for the images API, ``httpx`` for genai and txt2img). What a user notices: a real picture
file appears (never over another one), or one clear line naming the endpoint and no file at all."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fakeimages import (
    KEY,
    KEY_ENV,
    Drop,
    Error,
    FakeImages,
    Hang,
    NoImage,
    NotImage,
    Picture,
    Raw,
    Refuse,
    Url,
    base_url_for,
    closed_port,
    imagegen_settings,
    png_bytes,
)
from PIL import Image

from ncanvas_tui import settings as settings_mod
from ncanvas_tui.errors import NcanvasError, SettingsError
from ncanvas_tui.imagine import ImageApiError, draw
from ncanvas_tui.imagine.picture import check_image, slug
from ncanvas_tui.imagine.providers import ImageRequest, nvidia_payload

PROVIDERS = ["openai", "nvidia", "sdwebui"]


@pytest.fixture
def fake():
    with FakeImages() as f:
        yield f


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def load(settings_path, provider, base_url, **keys):
    return settings_mod.load(imagegen_settings(settings_path, provider, base_url, **keys))


def route(fake, provider):
    return {"openai": fake.images, "nvidia": fake.genai, "sdwebui": fake.txt2img}[provider]


def files_in(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


# -------------------------------------------------------------------------------------------- success
@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_writes_a_real_picture(provider, fake, with_key, settings_path, workdir):
    s = load(settings_path, provider, base_url_for(fake, provider))
    pic = draw(s, "a red fox in the snow", negative="blurry, text", style="Fantasy")

    path = Path(pic.path)
    assert path.is_file() and path.parent == workdir / "output" / "images"
    assert path.suffix == ".png" and "a-red-fox-in-the-snow" in path.name
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (64, 48)
    assert (pic.provider, pic.width, pic.height, pic.format) == (provider, 64, 48, "PNG")
    assert pic.prompt == "a red fox in the snow, in Fantasy style"

    (req,) = fake.image_calls()
    assert req.headers["authorization"] == f"Bearer {KEY}"
    body = req.body
    if provider == "openai":
        assert body["model"] == "gpt-image-1" and body["size"] == "512x384" and body["n"] == 1
        assert "a red fox in the snow, in Fantasy style" in body["prompt"]
        assert "Avoid: blurry, text" in body["prompt"]
        assert "response_format" not in body  # gpt-image-* rejects it
    elif provider == "nvidia":
        assert req.path == "/v1/genai/stabilityai/stable-diffusion-xl"
        assert body["text_prompts"] == [{"text": "a red fox in the snow, in Fantasy style", "weight": 1},
                                        {"text": "blurry, text", "weight": -1}]
        assert (body["width"], body["height"], body["steps"], body["seed"]) == (512, 384, 12, 7)
        assert pic.seed == 7  # the seed the server reports using ([imagegen].seed = 7)
    else:
        assert (body["prompt"], body["negative_prompt"]) == ("a red fox in the snow, in Fantasy style",
                                                             "blurry, text")
        assert (body["width"], body["height"], body["steps"], body["seed"]) == (512, 384, 12, 7)
    # nothing else was left in the folder (no temp files)
    assert files_in(workdir / "output" / "images") == [path]


def test_dalle_models_ask_for_b64_json(fake, with_key, settings_path):
    s = load(settings_path, "openai", fake.url, model="dall-e-3")
    draw(s, "a lighthouse")
    assert fake.image_calls()[0].body["response_format"] == "b64_json"


def test_openai_answer_by_url_is_fetched(fake, with_key, settings_path):
    fake.images.push(Url())
    pic = draw(load(settings_path, "openai", fake.url), "a lighthouse")
    assert check_image(Path(pic.path).read_bytes()).format == "PNG"


def test_nvidia_sd3_answer_shape(fake, with_key, settings_path):
    from fakeimages import NVIDIA_SD3_MODEL

    s = load(settings_path, "nvidia", fake.nvidia_base, model=NVIDIA_SD3_MODEL)
    pic = draw(s, "a lighthouse", negative="fog")
    assert Path(pic.path).is_file() and pic.seed == 7
    body = fake.image_calls()[0].body
    assert body["aspect_ratio"] == "5:4"  # the allowed ratio nearest to 512x384
    assert body["negative_prompt"] == "fog" and "width" not in body
    fake.genai.push(Refuse())
    with pytest.raises(ImageApiError, match="content policy: finishReason CONTENT_FILTERED"):
        draw(s, "a lighthouse")


def test_jpeg_payload_keeps_its_format(fake, with_key, settings_path):
    fake.genai.push(Picture(fmt="JPEG"))
    pic = draw(load(settings_path, "nvidia", fake.nvidia_base), "a lighthouse")
    assert pic.path.endswith(".jpg") and pic.format == "JPEG"
    with Image.open(pic.path) as im:
        assert im.format == "JPEG"


def test_never_overwrites(fake, with_key, settings_path, workdir):
    s = load(settings_path, "sdwebui", fake.root)
    a = draw(s, "same prompt")
    b = draw(s, "same prompt")
    assert a.path != b.path and Path(a.path).is_file() and Path(b.path).is_file()

    # an explicit --out file that exists is kept; the new picture gets -2
    keep = workdir / "mine.png"
    keep.write_bytes(b"precious")
    c = draw(s, "same prompt", out=str(keep))
    assert keep.read_bytes() == b"precious"
    assert Path(c.path) == workdir / "mine-2.png" and check_image(Path(c.path).read_bytes()).format == "PNG"


def test_out_folder_and_format_conversion(fake, with_key, settings_path, workdir):
    s = load(settings_path, "openai", fake.url)
    folder = workdir / "pics"
    folder.mkdir()
    assert Path(draw(s, "x", out=str(folder)).path).parent == folder
    jpg = draw(s, "x", out=str(workdir / "cover.jpg"))
    with Image.open(jpg.path) as im:
        assert im.format == "JPEG"  # asked for .jpg, the PNG payload was re-encoded
    with pytest.raises(NcanvasError, match=r"\.png, \.jpg or \.webp"):
        draw(s, "x", out=str(workdir / "cover.txt"))
    assert len(fake.image_calls()) == 2  # the bad --out failed before calling the API


def test_seed_minus_one_draws_a_new_random_seed_and_reports_it(fake, with_key, settings_path):
    s = load(settings_path, "sdwebui", fake.root, seed=-1)
    first, second = draw(s, "x"), draw(s, "x")
    sent = [c.body["seed"] for c in fake.image_calls()]
    assert sent == [first.seed, second.seed] and first.seed != second.seed and min(sent) > 0


@pytest.mark.parametrize("provider", ["sdwebui", "nvidia"])
def test_seed_steps_guidance_and_negative_reach_the_provider(provider, fake, with_key, settings_path):
    s = load(settings_path, provider, base_url_for(fake, provider), negative="text, watermark")
    pic = draw(s, "a fox", seed=42, steps=9, guidance=6.5)
    body = fake.image_calls()[0].body
    assert body["seed"] == 42 == pic.seed and body["steps"] == 9 and body["cfg_scale"] == 6.5
    assert "text, watermark" in json.dumps(body) and pic.negative == "text, watermark"


def test_a_provider_without_seed_says_so_once_instead_of_failing(fake, with_key, settings_path):
    from ncanvas_tui.imagine import providers

    providers._said.clear()
    said: list[str] = []
    s = load(settings_path, "openai", fake.url)
    for _ in range(2):
        pic = draw(s, "a fox", seed=42, guidance=7.0, say=said.append)
        assert pic.seed is None and pic.guidance is None
    assert len(said) == 1 and "no seed, guidance" in said[0]
    body = fake.image_calls()[0].body
    assert "seed" not in body and "cfg_scale" not in body


# --------------------------------------------------------------------------------------------- errors
CASES = {
    "401": (Error(401, f"Incorrect API key provided: {KEY}"),
            (r"401 unauthorized \(the key in \$NCANVAS_TEST_IMAGE_KEY was rejected\): "
             r"Incorrect API key provided: \*")),
    "403": (Error(403, "no access"), r"403 forbidden"),
    "429": (Error(429, "Rate limit reached", retry_after=0), r"429 rate limited"),
    "500": (Error(500, "boom"), r"server error 500"),
    "timeout": (Hang(3), r"no answer within 0.4 s \(\[imagegen\]\.timeout_s\)"),
    "no image": (NoImage(), r"answer has no image"),
    "not an image": (NotImage(b"not a png"), r"answer is not an image: not an image"),
    "truncated png": (NotImage(png_bytes()[:60]), r"answer is not an image: broken PNG image"),
    "not json": (Raw(b"<html>gateway</html>", "text/html"), r"answer is not JSON"),
    "dropped": (Drop(), r"the server closed the connection without answering"),
}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", list(CASES))
def test_errors_are_one_line_naming_the_endpoint_and_write_nothing(provider, case, fake, with_key,
                                                                      settings_path, workdir):
    behaviour, pattern = CASES[case]
    route(fake, provider).push(behaviour)
    s = load(settings_path, provider, base_url_for(fake, provider), timeout_s=0.4)
    with pytest.raises(ImageApiError) as info:
        draw(s, "a red fox")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{fake.root}/")
    assert info.value.endpoint in msg
    import re

    assert re.search(pattern, msg), msg
    assert KEY not in msg
    assert files_in(workdir / "output" / "images") == []


@pytest.mark.parametrize("provider", ["openai", "nvidia"])
def test_content_policy_refusal(provider, fake, with_key, settings_path, workdir):
    route(fake, provider).push(Refuse())
    with pytest.raises(ImageApiError, match="refused the prompt \\(content policy") as info:
        draw(load(settings_path, provider, base_url_for(fake, provider)), "something forbidden")
    assert info.value.kind == "refused"
    assert files_in(workdir / "output" / "images") == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_connection_refused(provider, with_key, settings_path, workdir):
    port = closed_port()
    base = {"openai": f"http://127.0.0.1:{port}/v1", "nvidia": f"http://127.0.0.1:{port}/v1",
            "sdwebui": f"http://127.0.0.1:{port}"}[provider]
    with pytest.raises(ImageApiError, match=rf"127\.0\.0\.1:{port}/.*cannot connect") as info:
        draw(load(settings_path, provider, base), "a red fox")
    assert info.value.kind == "connection"
    assert files_in(workdir / "output" / "images") == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retries_429_and_5xx_then_succeeds(provider, fake, with_key, settings_path):
    route(fake, provider).push(Error(429, retry_after=0), Error(503, retry_after=0))
    pic = draw(load(settings_path, provider, base_url_for(fake, provider), retries=2), "a red fox")
    assert Path(pic.path).is_file()
    assert len(fake.image_calls()) == 3


def test_gives_up_after_retries_and_says_so(fake, with_key, settings_path):
    fake.txt2img.push(Error(500, retry_after=0), Error(500, retry_after=0))
    with pytest.raises(ImageApiError, match=r"server error 500.*\(after 2 tries\)"):
        draw(load(settings_path, "sdwebui", fake.root, retries=1), "a red fox")
    assert len(fake.image_calls()) == 2


def test_401_is_not_retried(fake, with_key, settings_path):
    fake.images.push(Error(401))
    with pytest.raises(ImageApiError, match="401"):
        draw(load(settings_path, "openai", fake.url, retries=3), "x")
    assert len(fake.image_calls()) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_missing_key_of_a_remote_endpoint_is_a_settings_error_before_any_request(provider, fake, settings_path):
    with pytest.raises(SettingsError, match=rf"\[imagegen\]\.api_key_env: environment variable {KEY_ENV} "
                                            r"is not set \(the key for https://images\.example\.com/v1\)"):
        draw(load(settings_path, provider, "https://images.example.com/v1"), "x")
    assert fake.image_calls() == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_missing_key_of_a_loopback_endpoint_warns_once_and_goes_ahead(provider, fake, settings_path, capsys,
                                                                      monkeypatch):
    from ncanvas_tui import endpoints

    monkeypatch.setattr(endpoints, "_warned", set())
    s = load(settings_path, provider, base_url_for(fake, provider))
    draw(s, "a red fox")
    draw(s, "a red fox")
    assert len(fake.image_calls()) == 2
    warnings = capsys.readouterr().err.splitlines()
    url = base_url_for(fake, provider)
    assert warnings == [(f"ncanvas: warning: ${KEY_ENV} is not set; calling {url} without a key "
                         "(set [imagegen].api_key_env = \"\" for a server that needs none)")]
    auth = fake.image_calls()[0].headers.get("authorization", "")
    assert KEY not in auth


def test_sdwebui_needs_no_key_and_sends_none(fake, settings_path):
    draw(load(settings_path, "sdwebui", fake.root, api_key_env=""), "x")
    assert "authorization" not in fake.image_calls()[0].headers


def test_sdwebui_user_password_key_is_basic_auth(fake, settings_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "alice:wonder")
    draw(load(settings_path, "sdwebui", fake.root), "x")
    auth = fake.image_calls()[0].headers["authorization"]
    assert auth == "Basic " + base64.b64encode(b"alice:wonder").decode()


def test_empty_prompt(fake, with_key, settings_path):
    with pytest.raises(NcanvasError, match="prompt is empty"):
        draw(load(settings_path, "sdwebui", fake.root), "   ")
    assert fake.image_calls() == []


# ---------------------------------------------------------------------------------------- unit bits
def test_nvidia_payload_follows_the_model_family():
    req = ImageRequest("a fox", negative="text", width=1344, height=768, steps=20, seed=None)
    sd3 = nvidia_payload("stabilityai/stable-diffusion-3-medium", req)
    assert sd3["prompt"] == "a fox" and sd3["negative_prompt"] == "text" and sd3["aspect_ratio"] == "16:9"
    assert "width" not in sd3 and sd3["seed"] == 0 and sd3["steps"] == 20
    flux = nvidia_payload("black-forest-labs/flux.1-dev", req)
    assert (flux["prompt"], flux["width"], flux["height"]) == ("a fox", 1344, 768)
    assert "text_prompts" not in flux
    xl = nvidia_payload("stabilityai/stable-diffusion-xl", req)
    assert xl["text_prompts"][1] == {"text": "text", "weight": -1}


def test_check_image_rejects_what_is_not_a_picture():
    assert check_image(png_bytes(fmt="WEBP")).format == "WEBP"
    for bad in (b"", b"not a png", png_bytes()[:-20], b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        with pytest.raises(ValueError):
            check_image(bad)


def test_slug():
    assert slug("A cat, in SPACE!") == "a-cat-in-space"
    assert slug("!!!") == "picture"
    assert len(slug("word " * 50)) <= 40


def test_imagine_session_records_the_journey_and_cancels(fake, with_key, settings_path):
    from ncanvas_tui.errors import CancelledError
    from ncanvas_tui.history import open_history
    from ncanvas_tui.imagine import imagine

    s = load(settings_path, "nvidia", fake.nvidia_base)
    first = imagine(s, prompt="a fox")
    again = imagine(s, prompt="a wolf", run_id=first.run_id)
    assert again.run_id == first.run_id and again.history_error is None
    run = open_history(s).get_run(first.run_id)
    assert [p["prompt"] for p in run["pictures"]] == ["a fox", "a wolf"]

    with pytest.raises(CancelledError, match=r"cancelled \(prompt kept in history run"):
        imagine(s, prompt="a bear", cancelled=lambda: True)
    assert len(fake.image_calls()) == 2
    with pytest.raises(NcanvasError, match="either a prompt or a story"):
        imagine(s)


def test_a_saved_picture_is_readable_by_others_like_any_file(fake, settings_path):
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    pic = draw(load(settings_path, "sdwebui", fake.root, api_key_env=""), "a red fox")
    assert stat.S_IMODE(Path(pic.path).stat().st_mode) == 0o666 & ~umask  # 0644 usually, not mkstemp's 0600
