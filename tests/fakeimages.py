"""REAL HTTP image endpoints on 127.0.0.1 for tests: the three providers ncanvas draws with.

``FakeImages`` is the story engineer's ``FakeOpenAI`` (chat + embeddings, so ``imagine --story`` can
distil its prompt against the same server) plus:

- ``POST /v1/images/generations``          OpenAI images API   -> {"created", "data": [{"b64_json"}]}
- ``POST /v1/genai/<publisher>/<model>``   build.nvidia.com    -> {"artifacts": [{"base64", "finishReason"}]}
- ``POST /sdapi/v1/txt2img``               AUTOMATIC1111/sd.cpp -> {"images": [base64], "info": "{...}"}
- ``GET  /files/<name>``                   pictures answered by URL (``Url()``)

Each image route has its own queue (``fake.images``, ``fake.genai``, ``fake.txt2img``) of scripted
behaviours, consumed one per request; when empty, it answers a real PNG. Behaviours: ``Picture``,
``NoImage``, ``NotImage``, ``Refuse``, ``Url`` (here), and ``Error``, ``Hang``, ``Raw``, ``Drop`` from
``fakeopenai``.
"""

from __future__ import annotations

import base64
import io
import json
import socket
from dataclasses import dataclass

from fakeopenai import Drop, Error, FakeOpenAI, Hang, Raw, Request, Route, _Handler

__all__ = ["KEY", "KEY_ENV", "Drop", "Error", "FakeImages", "Hang", "NoImage", "NotImage", "Picture", "Raw",
           "Refuse", "Url", "base_url_for", "closed_port", "imagegen_settings", "png_bytes"]

NVIDIA_MODEL = "stabilityai/stable-diffusion-xl"
#: answers in the SD3 shape {"image", "finish_reason", "seed"} instead of "artifacts"
NVIDIA_SD3_MODEL = "stabilityai/stable-diffusion-3-medium"


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 60, 30),
              fmt: str = "PNG") -> bytes:
    """A small real image, made with Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class Picture:
    """A real image of this format and size."""

    fmt: str = "PNG"
    size: tuple[int, int] = (64, 48)
    seed: int = 1234


@dataclass
class NoImage:
    """A 200 JSON answer with no image in it."""


@dataclass
class NotImage:
    """A 200 answer whose "image" is valid base64 of bytes that are not an image."""

    data: bytes = b"not a png"


@dataclass
class Refuse:
    """The provider's content-policy refusal."""


@dataclass
class Url:
    """OpenAI only: answer a URL (served by this fake) instead of b64_json."""


def closed_port() -> int:
    """A loopback port where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class FakeImages(FakeOpenAI):
    def __init__(self, nvidia_model: str = NVIDIA_MODEL) -> None:
        super().__init__()
        self.nvidia_model = nvidia_model
        self.images = Route(lambda body: Picture())
        self.genai = Route(lambda body: Picture())
        self.txt2img = Route(lambda body: Picture())
        self.files: dict[str, bytes] = {}
        self.routes[("POST", "/v1/images/generations")] = self._openai_images
        self.routes[("POST", f"/v1/genai/{nvidia_model}")] = self._genai
        self.routes[("POST", f"/v1/genai/{NVIDIA_SD3_MODEL}")] = self._genai
        self.routes[("POST", "/sdapi/v1/txt2img")] = self._txt2img

    @property
    def nvidia_base(self) -> str:
        return f"{self.root}/v1"

    def image_calls(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path in ("/v1/images/generations", "/sdapi/v1/txt2img")
                    or r.path.startswith("/v1/genai/")]

    def _dispatch(self, h: _Handler, req: Request) -> None:
        if req.method == "GET" and req.path.startswith("/files/"):
            data = self.files.get(req.path[len("/files/"):])
            if data is None:
                h.send_json(404, {"error": {"message": "no such file"}})
                return
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        super()._dispatch(h, req)

    # -- the three APIs ---------------------------------------------------------------------------
    def _openai_images(self, h: _Handler, req: Request) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        b = self.images.next(body)
        if self._common(h, b):
            return
        if isinstance(b, Picture):
            data = png_bytes(b.size, fmt=b.fmt)
            h.send_json(200, {"created": 1, "data": [{"b64_json": base64.b64encode(data).decode(),
                                                       "revised_prompt": None}]})
        elif isinstance(b, Url):
            name = f"pic{len(self.files) + 1}.png"
            self.files[name] = png_bytes()
            h.send_json(200, {"created": 1, "data": [{"url": f"{self.root}/files/{name}"}]})
        elif isinstance(b, NoImage):
            h.send_json(200, {"created": 1, "data": []})
        elif isinstance(b, NotImage):
            h.send_json(200, {"created": 1, "data": [{"b64_json": base64.b64encode(b.data).decode()}]})
        elif isinstance(b, Refuse):
            msg = "Your request was rejected as a result of our safety system."
            h.send_json(400, {"error": {"message": msg,
                                        "type": "invalid_request_error", "param": None,
                                        "code": "content_policy_violation"}})
        else:  # pragma: no cover - a test scripted something this route does not know
            raise TypeError(f"images route cannot play {b!r}")

    def _genai(self, h: _Handler, req: Request) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        b = self.genai.next(body)
        if isinstance(b, Error):  # NVCF answers errors as {"status", "title", "detail"}
            headers = {"Retry-After": f"{b.retry_after:g}"} if b.retry_after is not None else {}
            h.send_json(b.status, {"type": "about:blank", "status": b.status, "title": "Error",
                                   "detail": b.message}, headers)
            return
        if self._common(h, b):
            return
        sd3 = req.path.endswith(NVIDIA_SD3_MODEL)
        asked = (req.body or {}).get("seed") if isinstance(req.body, dict) else None
        if isinstance(b, Picture) and isinstance(asked, int) and asked > 0:  # like the real API: the seed used
            b = Picture(b.fmt, b.size, asked)
        if isinstance(b, Picture) and sd3:
            data = png_bytes(b.size, fmt=b.fmt)
            h.send_json(200, {"image": base64.b64encode(data).decode(), "finish_reason": "SUCCESS",
                              "seed": b.seed})
        elif isinstance(b, Refuse) and sd3:
            h.send_json(200, {"image": "", "finish_reason": "CONTENT_FILTERED", "seed": 1})
        elif isinstance(b, Picture):
            data = png_bytes(b.size, fmt=b.fmt)
            h.send_json(200, {"artifacts": [{"base64": base64.b64encode(data).decode(),
                                             "finishReason": "SUCCESS", "seed": b.seed}]})
        elif isinstance(b, NoImage):
            h.send_json(200, {"artifacts": []})
        elif isinstance(b, NotImage):
            h.send_json(200, {"artifacts": [{"base64": base64.b64encode(b.data).decode(),
                                             "finishReason": "SUCCESS", "seed": 1}]})
        elif isinstance(b, Refuse):
            h.send_json(200, {"artifacts": [{"base64": "", "finishReason": "CONTENT_FILTERED", "seed": 1}]})
        else:  # pragma: no cover
            raise TypeError(f"genai route cannot play {b!r}")

    def _txt2img(self, h: _Handler, req: Request) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        b = self.txt2img.next(body)
        if isinstance(b, Error):  # FastAPI style
            headers = {"Retry-After": f"{b.retry_after:g}"} if b.retry_after is not None else {}
            h.send_json(b.status, {"detail": b.message, "error": "HTTPException", "body": "", "errors": ""},
                        headers)
            return
        if self._common(h, b):
            return
        asked = body.get("seed")  # AUTOMATIC1111 reports the seed it used: the one asked for, unless -1
        used = asked if isinstance(asked, int) and asked >= 0 else getattr(b, "seed", 1)
        info = json.dumps({"prompt": body.get("prompt"), "seed": used})
        if isinstance(b, Picture):
            data = png_bytes(b.size, fmt=b.fmt)
            h.send_json(200, {"images": [base64.b64encode(data).decode()], "parameters": body, "info": info})
        elif isinstance(b, NoImage):
            h.send_json(200, {"images": [], "parameters": body, "info": info})
        elif isinstance(b, NotImage):
            h.send_json(200, {"images": [base64.b64encode(b.data).decode()], "parameters": body,
                              "info": info})
        else:  # pragma: no cover
            raise TypeError(f"txt2img route cannot play {b!r}")



KEY_ENV = "NCANVAS_TEST_IMAGE_KEY"
KEY = "sk-test-image-key-DO-NOT-LEAK-4242"


def base_url_for(fake: FakeImages, provider: str) -> str:
    return {"openai": fake.url, "nvidia": fake.nvidia_base, "sdwebui": fake.root}[provider]


def imagegen_settings(settings_path, provider: str, base_url: str, **keys: object):
    """Append an [imagegen] section for ``provider`` at ``base_url`` to the conftest settings file
    (retries 0, short timeout, key from ``KEY_ENV``); ``keys`` override. Returns the path."""
    model = {"openai": "gpt-image-1", "nvidia": NVIDIA_MODEL, "sdwebui": "sd"}[provider]
    values: dict[str, object] = {"provider": provider, "base_url": base_url, "model": model,
                                 "api_key_env": KEY_ENV, "size": "512x384", "steps": 12, "seed": 7,
                                 "timeout_s": 5, "retries": 0, **keys}
    lines = ["", "[imagegen]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    with open(settings_path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return settings_path
