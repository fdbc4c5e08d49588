"""Image providers: ``openai`` (images API), ``nvidia`` (build.nvidia.com / NIM genai), ``sdwebui``
(AUTOMATIC1111 / stable-diffusion.cpp ``/sdapi/v1/txt2img``).

Each provider turns an ``ImageRequest`` into the provider's HTTP request and its answer into base64
image bytes, and every failure into one ``ImageApiError`` line naming the endpoint. ``openai`` and
``httpx`` are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ncanvas_tui.endpoints import redact, redact_url, require_key
from ncanvas_tui.errors import CancelledError, EndpointError, SettingsError, exception_chain
from ncanvas_tui.settings import ImagegenSettings

PROVIDERS = ("openai", "nvidia", "sdwebui")
_RETRY_STATUS = {429, 500, 502, 503, 504}
#: the first wait between two tries of a picture (no Retry-After); doubles each retry (ncanvas_tui.retry)
IMAGE_BACKOFF_S = 0.75


class ImageApiError(EndpointError):
    """An image endpoint that refused, failed, timed out or answered something that is not a picture.
    ``retryable``: worth another try (429, 5xx, connection refused)."""

    def __init__(self, message: str, *, endpoint: str, kind: str, status: int | None = None,
                 retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.kind = kind          # auth | rate_limit | server | timeout | connection | no_image | not_image |
        self.status = status      # refused | bad_request | bad_answer | network
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class ImageRequest:
    prompt: str
    negative: str | None = None
    width: int = 1024
    height: int = 1024
    steps: int | None = None
    seed: int | None = None          # None: the provider's own random one
    guidance: float | None = None    # classifier-free guidance (cfg_scale); None: the provider's default


@dataclass
class ImageAnswer:
    b64: str
    endpoint: str
    seed: int | None = None
    revised_prompt: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _short(text: Any, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _server_message(body: Any) -> str:
    """The human part of an error body: {"error": {"message"}}, {"detail"}, {"message"}, plain text."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return _short(body)
    if isinstance(body, dict):
        err = body.get("error")
        for d in ((err, body) if isinstance(err, dict) else (body,)):
            for k in ("message", "detail", "title"):
                if d.get(k):
                    return _short(d[k] if isinstance(d[k], str) else json.dumps(d[k]))
        if isinstance(err, str) and err:
            return _short(err)
    return _short(body) if body else ""


_REFUSAL_WORDS = ("content_policy", "content policy", "moderation", "safety system", "content_filtered",
                  "nsfw", "unsafe content")


def status_error(endpoint: str, status: int, body: Any, key_env: str, has_key: bool,
                 retry_after: float | None = None) -> ImageApiError:
    """The one-line error for an HTTP error status."""
    msg = redact(_server_message(body))
    detail = f": {msg}" if msg else ""
    if status in (401, 403):
        hint = (f"the key in ${key_env} was rejected" if has_key else
                f"no key sent: set ${key_env}" if key_env else "no key sent: set [imagegen].api_key_env")
        return ImageApiError(f"{endpoint}: {status} {'unauthorized' if status == 401 else 'forbidden'} "
                             f"({hint}){detail}", endpoint=endpoint, kind="auth", status=status)
    if status == 429:
        return ImageApiError(f"{endpoint}: 429 rate limited or out of quota{detail}", endpoint=endpoint,
                             kind="rate_limit", status=status, retryable=True, retry_after=retry_after)
    if status >= 500:
        return ImageApiError(f"{endpoint}: server error {status}{detail}", endpoint=endpoint, kind="server",
                             status=status, retryable=status in _RETRY_STATUS, retry_after=retry_after)
    if any(w in msg.lower() for w in _REFUSAL_WORDS):
        return ImageApiError(f"{endpoint}: the provider refused the prompt (content policy){detail}",
                             endpoint=endpoint, kind="refused", status=status)
    if status == 404:
        return ImageApiError(f"{endpoint}: 404 not found (check [imagegen].base_url and model){detail}",
                             endpoint=endpoint, kind="bad_request", status=status)
    return ImageApiError(f"{endpoint}: {status} request rejected{detail}", endpoint=endpoint,
                         kind="bad_request", status=status)


def timeout_error(endpoint: str, timeout_s: float) -> ImageApiError:
    return ImageApiError(f"{endpoint}: no answer within {timeout_s:g} s ([imagegen].timeout_s)",
                         endpoint=endpoint, kind="timeout")


def connection_error(endpoint: str, err: BaseException) -> ImageApiError:
    chain = exception_chain(err)
    if any(type(e).__name__ == "RemoteProtocolError" for e in chain):
        return ImageApiError(f"{endpoint}: the server closed the connection without answering",
                             endpoint=endpoint, kind="connection", retryable=True)
    cause = chain[-1]  # the OS-level reason
    reason = _short(cause) or type(cause).__name__
    return ImageApiError(f"{endpoint}: cannot connect ({reason}); is the server running and "
                         f"[imagegen].base_url right?", endpoint=endpoint, kind="connection", retryable=True)


def _retry_after(headers: Any) -> float | None:
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000.0
        s = headers.get("retry-after")
        return float(s) if s is not None else None
    except (TypeError, ValueError):
        return None


def check_key(cfg: ImagegenSettings) -> str:
    """The key to send; its env var unset is a settings error for a remote endpoint and a one-time
    warning for a local one (the same rule as [llm]: ``endpoints.require_key``)."""
    return require_key("imagegen", cfg.api_key_env, cfg.api_key().get(), cfg.base_url)


# -- openai ----------------------------------------------------------------------------------------------


def _openai(cfg: ImagegenSettings, req: ImageRequest) -> ImageAnswer:
    try:
        import openai
    except ImportError as e:
        raise EndpointError(f"the openai image provider needs the openai package ({e}): "
                            "pip install 'ncanvas[story]'") from None

    endpoint = f"{redact_url(cfg.base_url)}/images/generations"
    key = check_key(cfg)
    client = openai.OpenAI(api_key=key or "unused", base_url=cfg.base_url, timeout=cfg.timeout_s,
                           max_retries=0)
    prompt = req.prompt
    if req.negative:  # the images API has no negative prompt: say it in words
        prompt = f"{prompt}\n\nAvoid: {req.negative}"
    kwargs: dict[str, Any] = {"model": cfg.model, "prompt": prompt, "n": 1,
                              "size": f"{req.width}x{req.height}"}
    if cfg.model.startswith("dall-e"):
        kwargs["response_format"] = "b64_json"  # gpt-image-* always answer b64_json and reject this field
    try:
        resp = client.images.generate(**kwargs)
    except openai.APITimeoutError:
        raise timeout_error(endpoint, cfg.timeout_s) from None
    except openai.APIConnectionError as e:
        raise connection_error(endpoint, e) from None
    except openai.APIStatusError as e:
        body = e.body if e.body is not None else e.message
        code = ""
        if isinstance(e.body, dict):
            code = str(e.body.get("code") or (e.body.get("error") or {}).get("code") or "")
        err = status_error(endpoint, e.status_code, body, cfg.api_key_env, bool(key),
                           _retry_after(e.response.headers))
        if code in ("content_policy_violation", "moderation_blocked") and err.kind != "refused":
            err = ImageApiError(f"{endpoint}: the provider refused the prompt (content policy): "
                                f"{_server_message(body)}", endpoint=endpoint, kind="refused",
                                status=e.status_code)
        raise err from None
    except openai.APIResponseValidationError as e:
        raise ImageApiError(f"{endpoint}: answer is not an images API response ({_short(e.message)})",
                            endpoint=endpoint, kind="bad_answer") from None
    except ValueError as e:  # a body cut short or otherwise not JSON (json.JSONDecodeError)
        raise ImageApiError(f"{endpoint}: answer is not JSON ({_short(e, 80)})", endpoint=endpoint,
                            kind="bad_answer") from None
    if isinstance(resp, (str, bytes)):  # the client hands back a body it could not parse as JSON
        raise ImageApiError(f"{endpoint}: answer is not JSON ({_short(resp, 60)!r})", endpoint=endpoint,
                            kind="bad_answer")
    data = getattr(resp, "data", None)
    if not isinstance(data, list):
        raise ImageApiError(f"{endpoint}: answer has no image (no \"data\" list; is this an OpenAI images "
                            "endpoint?)", endpoint=endpoint, kind="no_image")
    if not data:
        raise ImageApiError(f"{endpoint}: answer has no image (empty \"data\")", endpoint=endpoint,
                            kind="no_image")
    item = data[0]
    b64 = getattr(item, "b64_json", None)
    revised = getattr(item, "revised_prompt", None)
    if not b64 and getattr(item, "url", None):
        b64 = _fetch_url(item.url, cfg.timeout_s, endpoint)
    if not b64 or not isinstance(b64, str):
        raise ImageApiError(f"{endpoint}: answer has no image (data[0] has neither b64_json nor url)",
                            endpoint=endpoint, kind="no_image")
    return ImageAnswer(b64=b64, endpoint=endpoint, revised_prompt=revised)


def _fetch_url(url: str, timeout_s: float, endpoint: str) -> str:
    """Some OpenAI-compatible servers answer a URL even when asked for b64_json: fetch it."""
    import base64

    import httpx

    try:
        r = httpx.get(url, timeout=timeout_s, follow_redirects=True)
    except httpx.TimeoutException:
        raise timeout_error(url, timeout_s) from None
    except httpx.HTTPError as e:
        raise connection_error(url, e) from None
    if r.status_code != 200:
        raise ImageApiError(f"{endpoint}: the picture URL it answered gave {r.status_code}: {url}",
                            endpoint=endpoint, kind="no_image", status=r.status_code)
    return base64.b64encode(r.content).decode("ascii")


# -- HTTP JSON providers (nvidia, sdwebui) ---------------------------------------------------------------


def _post_json(url: str, payload: dict[str, Any], headers: dict[str, str], cfg: ImagegenSettings,
               has_key: bool, auth: Any = None) -> Any:
    import httpx

    endpoint = redact_url(url)  # what messages show
    try:
        r = httpx.post(url, json=payload, headers={"Accept": "application/json", **headers},
                       timeout=cfg.timeout_s, auth=auth)
    except httpx.TimeoutException:
        raise timeout_error(endpoint, cfg.timeout_s) from None
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
        raise connection_error(endpoint, e) from None
    except httpx.HTTPError as e:
        raise ImageApiError(f"{endpoint}: network error: {_short(e)}", endpoint=endpoint,
                            kind="network") from None
    if r.status_code >= 400:
        raise status_error(endpoint, r.status_code, r.content, cfg.api_key_env, has_key,
                           _retry_after(r.headers))
    try:
        return r.json()
    except ValueError:
        ctype = r.headers.get("content-type", "?")
        raise ImageApiError(f"{endpoint}: answer is not JSON ({ctype}, {len(r.content)} bytes)",
                            endpoint=endpoint, kind="bad_answer") from None


_SD3_RATIOS = {"1:1": 1.0, "16:9": 16 / 9, "9:16": 9 / 16, "5:4": 5 / 4, "4:5": 4 / 5, "3:2": 3 / 2,
               "2:3": 2 / 3}


def nvidia_payload(model: str, req: ImageRequest) -> dict[str, Any]:
    """The genai request body for a model family (build.nvidia.com API reference):
    SDXL takes ``text_prompts`` with weights; SD3 ``prompt`` + ``aspect_ratio``; FLUX and others
    ``prompt`` + ``width``/``height``. ``seed`` 0 means random there."""
    seed = req.seed if req.seed is not None and req.seed >= 0 else 0
    m = model.lower()
    body: dict[str, Any]
    if "xl" in m and "stable-diffusion" in m or "sdxl" in m:
        prompts = [{"text": req.prompt, "weight": 1}]
        if req.negative:
            prompts.append({"text": req.negative, "weight": -1})
        body = {"text_prompts": prompts, "width": req.width, "height": req.height,
                "cfg_scale": req.guidance or 5, "sampler": "K_DPM_2_ANCESTRAL", "seed": seed}
    elif "stable-diffusion-3" in m or "sd3" in m:
        want = req.width / req.height
        ratio = min(_SD3_RATIOS, key=lambda k: abs(_SD3_RATIOS[k] - want))
        body = {"prompt": req.prompt, "mode": "text-to-image", "aspect_ratio": ratio,
                "cfg_scale": req.guidance or 5, "seed": seed, "output_format": "jpeg"}
        if req.negative:
            body["negative_prompt"] = req.negative
    else:
        body = {"prompt": req.prompt, "width": req.width, "height": req.height, "seed": seed}
        if req.negative:
            body["negative_prompt"] = req.negative
    if req.steps is not None:
        body["steps"] = req.steps
    return body


def _nvidia(cfg: ImagegenSettings, req: ImageRequest) -> ImageAnswer:
    url = cfg.base_url if "/genai/" in cfg.base_url else f"{cfg.base_url}/genai/{cfg.model.strip('/')}"
    endpoint = redact_url(url)
    key = check_key(cfg)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = _post_json(url, nvidia_payload(cfg.model, req), headers, cfg, bool(key))
    if not isinstance(data, dict):
        raise ImageApiError(f"{endpoint}: answer has no image (expected a JSON object with \"artifacts\")",
                            endpoint=endpoint, kind="no_image")
    arts = data.get("artifacts")
    # SDXL and FLUX answer {"artifacts": [{"base64", "finishReason", "seed"}]}; SD3 {"image", "finish_reason"}
    item = arts[0] if isinstance(arts, list) and arts and isinstance(arts[0], dict) else data
    b64 = item.get("base64") if item is not data else data.get("image")
    reason = item.get("finishReason") or item.get("finish_reason")
    seed = item.get("seed")
    if reason and str(reason).upper() in ("CONTENT_FILTERED", "FILTERED", "BLOCKED"):
        raise ImageApiError(f"{endpoint}: the provider refused the prompt (content policy: finishReason "
                            f"{reason})", endpoint=endpoint, kind="refused")
    if not b64 or not isinstance(b64, str):
        why = f"finishReason {reason}" if reason and str(reason).upper() != "SUCCESS" else \
            "no \"artifacts\"[0].base64 or \"image\""
        raise ImageApiError(f"{endpoint}: answer has no image ({why})", endpoint=endpoint, kind="no_image")
    return ImageAnswer(b64=b64, endpoint=endpoint, seed=seed if isinstance(seed, int) else None)


def _sdwebui(cfg: ImagegenSettings, req: ImageRequest) -> ImageAnswer:
    url = f"{cfg.base_url}/sdapi/v1/txt2img"
    endpoint = redact_url(url)
    key = check_key(cfg)
    headers: dict[str, str] = {}
    auth = None
    if key and ":" in key:  # AUTOMATIC1111 --api-auth user:password
        user, _, password = key.partition(":")
        auth = (user, password)
    elif key:
        headers["Authorization"] = f"Bearer {key}"
    payload: dict[str, Any] = {"prompt": req.prompt, "negative_prompt": req.negative or "",
                               "width": req.width, "height": req.height,
                               "seed": req.seed if req.seed is not None else -1, "batch_size": 1, "n_iter": 1}
    if req.steps is not None:
        payload["steps"] = req.steps
    if req.guidance:
        payload["cfg_scale"] = req.guidance
    data = _post_json(url, payload, headers, cfg, bool(key), auth=auth)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images or not isinstance(images[0], str) or not images[0]:
        raise ImageApiError(f"{endpoint}: answer has no image (no \"images\" list of base64)",
                            endpoint=endpoint, kind="no_image")
    seed = None
    info = data.get("info")
    try:
        info = json.loads(info) if isinstance(info, str) else info
        seed = info.get("seed") if isinstance(info, dict) else None
    except ValueError:
        pass
    return ImageAnswer(b64=images[0], endpoint=endpoint, seed=seed if isinstance(seed, int) else None)


_CALLS: dict[str, Callable[[ImagegenSettings, ImageRequest], ImageAnswer]] = {
    "openai": _openai, "nvidia": _nvidia, "sdwebui": _sdwebui}


#: what each provider's API takes besides the prompt (the rest is said once, then left out)
def supports(provider: str, model: str = "") -> set[str]:
    if provider == "openai":
        return {"negative"}  # folded into the prompt as "Avoid: ..."; no seed, steps or guidance
    if provider == "nvidia":
        m = model.lower()
        return {"negative", "seed", "steps"} | ({"guidance"} if ("xl" in m or "sd3" in m
                                                              or "stable-diffusion-3" in m) else set())
    return {"negative", "seed", "steps", "guidance"}


_said: set[tuple[str, str]] = set()


def unsupported_note(provider: str, model: str, asked: dict[str, Any],
                     say: Callable[[str], Any] | None = None) -> list[str]:
    """Options asked for (non-None values) that the provider has no field for: returns their names
    and, the first time per provider and option in this process, says so in one line."""
    missing = [k for k, v in asked.items() if v is not None and k not in supports(provider, model)]
    fresh = [k for k in missing if (provider, k) not in _said]
    if fresh:
        _said.update((provider, k) for k in fresh)
        line = (f"ncanvas: note: the {provider} image API ({model}) has no {', '.join(fresh)}; "
                "left out of the request")
        if say is not None:
            say(line)
        else:
            import sys

            print(line, file=sys.stderr, flush=True)
    return missing


def endpoint_of(cfg: ImagegenSettings) -> str:
    """The endpoint as shown and stored (credentials redacted)."""
    base = redact_url(cfg.base_url)
    if cfg.provider == "openai":
        return f"{base}/images/generations"
    if cfg.provider == "nvidia":
        return base if "/genai/" in base else f"{base}/genai/{cfg.model.strip('/')}"
    return f"{base}/sdapi/v1/txt2img"


def request_image(cfg: ImagegenSettings, req: ImageRequest, *, retries: int | None = None,
                  cancelled: Callable[[], bool] | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> ImageAnswer:
    """Ask the configured provider for one picture; 429 / 5xx / connection refused are retried
    under the app's one retry policy (``ncanvas_tui.retry``: Retry-After honoured, at most 30 s a
    wait, else exponential backoff with jitter)."""
    call = _CALLS.get(cfg.provider)
    if call is None:
        raise SettingsError(f"[imagegen].provider must be one of {' | '.join(PROVIDERS)}, "
                            f"got {cfg.provider!r}")
    from ncanvas_tui.retry import RetryPolicy

    def once() -> ImageAnswer:
        if cancelled and cancelled():
            raise CancelledError("picture cancelled")
        return call(cfg, req)

    def fail(e: BaseException, attempts: int) -> BaseException:
        if not isinstance(e, ImageApiError):
            return e
        # a server that echoes the key back never gets it into our messages (the LLM's redaction)
        text = redact(str(e), cfg.api_key().get()) + (f" (after {attempts} tries)" if attempts > 1 else "")
        return ImageApiError(text, endpoint=e.endpoint, kind=e.kind, status=e.status)

    policy = RetryPolicy(retries=cfg.retries if retries is None else retries, backoff_s=IMAGE_BACKOFF_S)
    return policy.call(once, retryable=lambda e: isinstance(e, ImageApiError) and e.retryable,
                       retry_after=lambda e: getattr(e, "retry_after", None), fail=fail, sleep=sleep)
