"""A REAL HTTP server on 127.0.0.1 that speaks the OpenAI API, for tests and benchmarks.

It answers ``POST /v1/chat/completions`` (plain JSON and SSE streaming) and
``POST /v1/embeddings``, records every request, and lets a test script what
comes next::

    with FakeOpenAI() as fake:
        fake.chat.push(Error(429, retry_after=0), Reply("Once upon a time..."))
        client = openai.OpenAI(base_url=fake.url, api_key="sk-test")
        ...
        assert fake.requests[-1].path == "/v1/chat/completions"

Scripted behaviours are consumed in order, one per request to that route; when a
route's queue is empty its ``default`` (a callable ``body -> behaviour``) answers.
The default chat responder plays a small "story LLM" that also answers NeMo
Guardrails' self-check prompts (``Yes`` = block when the checked text holds a word
of ``UNSAFE_WORDS``), so guardrails tests run the real ``nemoguardrails`` package
with the project's ``rails/`` against it. Embeddings are a deterministic hashed
bag of words, so texts that share words are close.

Other engineers add routes (e.g. images) with ``fake.route("POST", "/v1/images/generations")``
or by subclassing: ``_dispatch`` looks the path up in ``self.routes``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: words that make the default responder's self-check answer "Yes" (block)
UNSAFE_WORDS = ("bomb", "explosive", "detonator", "nerve agent", "kill yourself", "meth")
#: in a generated story, this word makes the default story responder produce unsafe text
UNSAFE_STORY_TRIGGER = "villain-recipe"
UNSAFE_STORY = ("The villain explained how to build a bomb: first mix the explosive powder, "
                "then wire the detonator.")


# ----------------------------------------------------------------------------- behaviours
@dataclass
class Reply:
    """A completion. Streamed as SSE when the request asks for ``stream``.

    ``chunks``: the pieces to stream (default: word by word); ``delay``: seconds
    before the first byte; ``gap``: seconds between streamed chunks.
    """

    text: str
    chunks: list[str] | None = None
    delay: float = 0.0
    gap: float = 0.0
    finish_reason: str | None = "stop"   # None: no final chunk with a finish_reason
    done: bool = True                    # False: no ``data: [DONE]`` (the stream just stops)


@dataclass
class Error:
    """An HTTP error with an OpenAI-style error body."""

    status: int
    message: str = "scripted error"
    retry_after: float | None = None
    type: str = "server_error"


@dataclass
class Hang:
    """Accept the request and answer nothing for ``seconds`` (client timeouts)."""

    seconds: float = 30.0


@dataclass
class Raw:
    """Send these bytes as the body of a 200 response (malformed JSON and the like)."""

    body: bytes
    content_type: str = "application/json"


@dataclass
class EmptyChoices:
    """A 200 completion with ``choices: []`` (streamed: one chunk with no choices, then [DONE])."""


@dataclass
class BreakStream:
    """Stream ``text`` (word by word), then drop the connection without finishing."""

    text: str
    gap: float = 0.0


@dataclass
class Drop:
    """Close the connection without sending anything."""


Behaviour = Any  # one of the dataclasses above, a str (-> Reply), or a dict (-> JSON 200)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.perf_counter)

    @property
    def text(self) -> str:
        """All message contents of a chat request joined (for assertions)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return "\n".join(str(m.get("content", "")) for m in self.body["messages"])
        return json.dumps(self.body)


class Route:
    """A queue of scripted behaviours plus a default responder."""

    def __init__(self, default: Callable[[Any], Behaviour]) -> None:
        self.queue: deque[Behaviour] = deque()
        self.default = default
        self.lock = threading.Lock()

    def push(self, *behaviours: Behaviour) -> Route:
        with self.lock:
            self.queue.extend(behaviours)
        return self

    def next(self, body: Any) -> Behaviour:
        with self.lock:
            if self.queue:
                item = self.queue.popleft()
                return item(body) if callable(item) and not isinstance(item, type) else item
        return self.default(body)


# ----------------------------------------------------------------------------- default answers
def _last_user(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def is_self_check(body: dict) -> str | None:
    """'input' / 'output' when the request is one of the project's self-check prompts."""
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
    if "Should the user message be blocked" in text:
        return "input"
    if "Should the story text be blocked" in text:
        return "output"
    return None


def default_chat(body: dict) -> Behaviour:
    check = is_self_check(body)
    text = "\n".join(str(m.get("content", "")) for m in body.get("messages") or [])
    if check:
        # only look at the checked text, not at the policy wording of the prompt
        m = re.search(r'(?:User message|Story text): "(.*?)"\s*\n\s*\nQuestion', text, re.DOTALL)
        checked = (m.group(1) if m else text).lower()
        return Reply("Yes" if any(w in checked for w in UNSAFE_WORDS) else "No")
    if "text-to-image prompt" in text.lower():
        return Reply("A watercolor daisy field at dawn, fantasy style, a chance encounter, soft light")
    if UNSAFE_STORY_TRIGGER in _last_user(body):
        return Reply(UNSAFE_STORY)
    return Reply("Once upon a time a daisy met a curious robot in a sunlit field. "
                 "They talked until the stars came out, and neither was lonely again.")


def bag_of_words(text: str, dim: int = 256) -> list[float]:
    """Deterministic hashed bag-of-words embedding, L2-normalised."""
    vec = [0.0] * dim
    for word in re.findall(r"[a-z0-9']+", text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
        vec[h % dim] += 1.0
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def default_embeddings(body: dict) -> Behaviour:
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    return {"object": "list", "model": body.get("model", "fake-embed"),
            "data": [{"object": "embedding", "index": i, "embedding": bag_of_words(str(t))}
                     for i, t in enumerate(inputs or [])],
            "usage": {"prompt_tokens": 1, "total_tokens": 1}}


def split_words(text: str) -> list[str]:
    """'a b c' -> ['a', ' b', ' c'] (how the fake streams by default)."""
    return re.findall(r"\s*\S+", text) or [text]


# ----------------------------------------------------------------------------- the server
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # like real servers (uvicorn, vLLM...): no Nagle delay between small SSE writes
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        path = self.path.split("?", 1)[0]
        fake = self.server.fake
        req = Request(method, path, {k.lower(): v for k, v in self.headers.items()}, body)
        with fake.lock:
            fake.requests.append(req)
        fake._dispatch(self, req)

    # -- writers --------------------------------------------------------------------
    def send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def sse(self, data: Any) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        payload = f"data: {text}\n\n".encode()
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOpenAI


class FakeOpenAI:
    """The fake endpoint. Use as a context manager (or ``start()`` / ``stop()``)."""

    def __init__(self, model: str = "fake-model") -> None:
        self.model = model
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.chat = Route(default_chat)
        #: scripted answers for story requests only / for guardrails self-checks only (used before
        #: ``chat``'s queue): tests stay deterministic when a story and a check run concurrently
        self.story = Route(default_chat)
        self.checks = Route(default_chat)
        self.embeddings = Route(default_embeddings)
        #: (method, path) -> handler(handler, request); add more with ``route``
        self.routes: dict[tuple[str, str], Callable[[_Handler, Request], None]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): lambda h, r: h.send_json(200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "owned_by": "fake"}]}),
        }
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._id = 0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (``.../v1``)."""
        return f"{self.root}/v1"

    def reset(self) -> None:
        """Forget recorded requests and scripted behaviours (between tests sharing one server)."""
        with self.lock:
            self.requests.clear()
        for route in (self.chat, self.story, self.checks, self.embeddings):
            with route.lock:
                route.queue.clear()

    # -- inspection -----------------------------------------------------------------------
    def calls(self, path_suffix: str = "/chat/completions") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    def story_calls(self) -> list[Request]:
        """Chat requests that are not guardrails self-checks."""
        return [r for r in self.calls() if isinstance(r.body, dict) and not is_self_check(r.body)]

    def check_calls(self, kind: str | None = None) -> list[Request]:
        return [r for r in self.calls() if isinstance(r.body, dict) and is_self_check(r.body)
                and (kind is None or is_self_check(r.body) == kind)]

    def route(self, method: str, path: str) -> Callable[[Callable[[_Handler, Request], None]], Any]:
        """Decorator: ``@fake.route("POST", "/v1/images/generations")`` def handler(h, req): ..."""
        def deco(func: Callable[[_Handler, Request], None]) -> Any:
            self.routes[(method, path)] = func
            return func
        return deco

    # -- dispatch -------------------------------------------------------------------------
    def _dispatch(self, h: _Handler, req: Request) -> None:
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            h.send_json(404, {"error": {"message": f"no route {req.method} {req.path}", "type": "not_found"}})
            return
        try:
            handler(h, req)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _next_id(self) -> str:
        with self.lock:
            self._id += 1
            return f"chatcmpl-fake{self._id}"

    def _common(self, h: _Handler, b: Behaviour) -> bool:
        """Behaviours shared by every route; True when handled."""
        if isinstance(b, Error):
            headers = {}
            if b.retry_after is not None:
                headers["Retry-After"] = f"{b.retry_after:g}"
            h.send_json(b.status, {"error": {"message": b.message, "type": b.type, "code": None}}, headers)
        elif isinstance(b, Hang):
            time.sleep(b.seconds)
            h.drop()
        elif isinstance(b, Raw):
            h.send_response(200)
            h.send_header("Content-Type", b.content_type)
            h.send_header("Content-Length", str(len(b.body)))
            h.end_headers()
            h.wfile.write(b.body)
        elif isinstance(b, Drop):
            h.drop()
        elif isinstance(b, dict):
            h.send_json(200, b)
        else:
            return False
        return True

    def _chat(self, h: _Handler, req: Request) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        specific = self.checks if is_self_check(body) else self.story
        with specific.lock:
            scripted = specific.queue.popleft() if specific.queue else None
        b = scripted if scripted is not None else self.chat.next(body)
        if isinstance(b, str):
            b = Reply(b)
        if self._common(h, b):
            return
        stream = bool(body.get("stream"))
        cid, created, model = self._next_id(), int(time.time()), body.get("model", self.model)

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        if isinstance(b, EmptyChoices):
            if stream:
                h.start_sse()
                h.sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": []})
                h.sse("[DONE]")
                h.end_chunked()
            else:
                h.send_json(200, {"id": cid, "object": "chat.completion", "created": created, "model": model,
                                  "choices": []})
            return
        if isinstance(b, BreakStream):
            h.start_sse()
            h.sse(chunk({"role": "assistant", "content": ""}))
            for piece in split_words(b.text):
                h.sse(chunk({"content": piece}))
                if b.gap:
                    time.sleep(b.gap)
            h.drop()
            return
        if not isinstance(b, Reply):
            raise TypeError(f"unknown behaviour {b!r}")
        if b.delay:
            time.sleep(b.delay)
        if not stream:
            words = len(b.text.split())
            h.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": b.text},
                             "finish_reason": b.finish_reason}],
                "usage": {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}})
            return
        h.start_sse()
        h.sse(chunk({"role": "assistant", "content": ""}))
        for piece in (b.chunks if b.chunks is not None else split_words(b.text)):
            h.sse(chunk({"content": piece}))
            if b.gap:
                time.sleep(b.gap)
        if b.finish_reason is not None:
            h.sse(chunk({}, b.finish_reason))
        if b.done:
            h.sse("[DONE]")
        h.end_chunked()

    def _embeddings(self, h: _Handler, req: Request) -> None:
        body = req.body if isinstance(req.body, dict) else {}
        b = self.embeddings.next(body)
        if not self._common(h, b):
            raise TypeError(f"unknown embeddings behaviour {b!r}")


def loopback_only_hook(event: str, args: tuple) -> None:
    """``sys.addaudithook`` target: any socket.connect to a non-loopback address fails the test."""
    if event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and addr:
            host = str(addr[0])
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise RuntimeError(f"test tried to reach the network: {addr!r}")


def story_settings_text(url: str, *, guardrails: bool = False, rails_dir: str | None = None,
                        timeout_s: float = 10.0, retries: int = 2, backoff_s: float = 0.01,
                        api_key_env: str = "OPENAI_API_KEY", language: str = "en", extra: str = "",
                        llm_extra: str = "") -> str:
    """A settings.toml body pointing [llm] at a fake server (paths relative to the file)."""
    from pathlib import Path

    rails = rails_dir or str(Path(__file__).resolve().parent.parent / "rails")
    return f"""
[paths]
models = "models"
engines = "engines"
images = "pictures"
calibration = "calibdata"
output = "output"

[llm]
base_url = "{url}"
model = "fake-model"
api_key_env = "{api_key_env}"
language = "{language}"
timeout_s = {timeout_s}
retries = {retries}
retry_backoff_s = {backoff_s}
{llm_extra}

[guardrails]
enabled = {"true" if guardrails else "false"}
config = "{rails}"
embedding_model = "fake-embed"
{extra}
"""


#: a sitecustomize.py that records every attempt to reach a non-loopback host (for CLI subprocesses)
SITECUSTOMIZE = '''
import os, sys
_LOG = os.environ.get("NCANVAS_TEST_NET_LOG")

def _hook(event, args):
    if not _LOG:
        return
    host = None
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1]:
        host = str(args[1][0])
    elif event == "socket.getaddrinfo":
        host = str(args[0])
    if host is None or host.startswith("127.") or host in ("::1", "localhost", "None", ""):
        return
    with open(_LOG, "a") as f:
        f.write(f"{event} {host}\\n")
    raise OSError(f"network access in a test: {host}")

sys.addaudithook(_hook)
'''
