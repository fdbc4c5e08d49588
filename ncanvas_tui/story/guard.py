"""NeMo Guardrails around the story: input rail, dialog flows, output rail.

Loaded from ``[guardrails].config`` (the repo's ``rails/``) with the model entries
filled in from our settings (config files have no env substitution):

* main model: ``[llm].base_url`` / ``[llm].model``; the key is read by nemoguardrails
  from the env var named by ``[llm].api_key_env`` (never put into the config object,
  which nemoguardrails prints in its error logs);
* embeddings: the same endpoint's ``/embeddings`` with ``[guardrails].embedding_model``,
  through our own small provider (``engine: ncanvas``): no model download (the default
  FastEmbed engine downloads one and stalls offline), and its failures are reported
  with their real cause instead of nemoguardrails' canned "internal error" answer.

Usage telemetry to NVIDIA is switched off (``NEMO_GUARDRAILS_NO_USAGE_STATS=1``)
before nemoguardrails is imported. One ``LLMRails`` per event loop: the CLI runs one
``asyncio.run``, the TUI runs on Textual's loop for its whole life.

The flow per story (``StoryWriter``): ``check_input`` runs the input rail and the
dialog rails on the user's request (off-topic requests get a polite answer and no
story); the story itself is streamed by our own ``LlmClient`` and passed through
``stream_output``, which runs the output rail on chunks and releases only checked text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncanvas_tui.endpoints import redact_url
from ncanvas_tui.errors import EndpointError, GuardrailRefusal, NcanvasError, exception_chain
from ncanvas_tui.settings import Settings
from ncanvas_tui.story.llm import PLACEHOLDER_KEY, scrub

log = logging.getLogger(__name__)

#: what the "request story" dialog flow answers (rails/story.co): go ahead and write
ACCEPTED = "NCANVAS_STORY_ACCEPTED"
#: nemoguardrails' answer when an action (e.g. embeddings) raised
INTERNAL_ERROR = "I'm sorry, an internal error has occurred."
OUTPUT_BLOCKED = "The story was stopped by the output rail (self check output): the text went against the story policy."
EMBEDDING_ENGINE = "ncanvas"


class GuardrailsConfigError(NcanvasError):
    """The guardrails folder is missing or does not load."""


@dataclass
class Verdict:
    allowed: bool
    rail: str | None = None        # input | dialog
    message: str | None = None     # what the rail answered (shown to the user)
    flow: str | None = None        # the Colang flow or rail that decided


def disable_telemetry() -> None:
    """nemoguardrails reports usage to an NVIDIA server unless this is set: always set it."""
    os.environ["NEMO_GUARDRAILS_NO_USAGE_STATS"] = "1"


class _Capture(logging.Handler):
    """Keeps the last error nemoguardrails logged (its rails swallow exceptions)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: BaseException | None = None
        self.last_text: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.last = record.exc_info[1]
        self.last_text = record.getMessage()[:500]

    def take(self) -> tuple[BaseException | None, str | None]:
        out = (self.last, self.last_text)
        self.last, self.last_text = None, None
        return out


_CAPTURE = _Capture()
_EMBED_ERRORS: dict[str, str] = {}
_lock = threading.Lock()


def _install_logging() -> None:
    """Route nemoguardrails' logs: capture errors; show them only with --debug (they are huge)."""
    nlog = logging.getLogger("nemoguardrails")
    if _CAPTURE not in nlog.handlers:
        nlog.addHandler(_CAPTURE)
    debug = logging.getLogger().isEnabledFor(logging.DEBUG)
    nlog.propagate = debug


def _root_cause(exc: BaseException | None) -> BaseException | None:
    chain = exception_chain(exc, context=False, limit=11)
    return chain[-1] if chain else None


def colang_cache_dir() -> Path:
    """Where parsed Colang files are kept: ``$XDG_CACHE_HOME/ncanvas/colang`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ncanvas" / "colang"


def _cache_colang_parsing() -> None:
    """``LLMRails`` parses NeMo Guardrails' whole flow library (~60 .co files, 0.2-0.4 s of CPU) each
    time it starts, i.e. in every CLI process: keep the parsed form (plain JSON) on disk, keyed by
    the nemoguardrails version and the file's name and text, and parse only what changed."""
    import hashlib

    import nemoguardrails
    from nemoguardrails.rails.llm import llmrails

    original = llmrails.parse_colang_file
    if getattr(original, "ncanvas_cached", False):
        return
    folder = colang_cache_dir() / str(getattr(nemoguardrails, "__version__", "unknown"))

    def parse(filename: str, content: str, include_source_mapping: bool = True, version: str = "1.0") -> Any:
        key = hashlib.sha256(json.dumps([filename, content, include_source_mapping, version]).encode()).hexdigest()
        path = folder / f"{key[:40]}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        result = original(filename, content, include_source_mapping=include_source_mapping, version=version)
        try:
            from ncanvas_tui.files import atomic_write_bytes

            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(result).encode("utf-8"))  # key order kept as parsed
        except (OSError, TypeError, ValueError):  # a read-only home: parse every time, as before
            log.debug("colang cache not written", exc_info=True)
        return result

    parse.ncanvas_cached = True  # type: ignore[attr-defined]
    llmrails.parse_colang_file = parse


def _register_embedding_provider() -> None:
    from nemoguardrails.embeddings.providers import register_embedding_provider
    from nemoguardrails.embeddings.providers.base import EmbeddingModel
    from nemoguardrails.embeddings.providers.registry import EmbeddingProviderRegistry

    try:
        if EmbeddingProviderRegistry().get(EMBEDDING_ENGINE) is not None:
            return
    except Exception:  # noqa: BLE001 - not registered yet
        log.debug("registering the %s embedding engine", EMBEDDING_ENGINE)

    class NcanvasEmbeddings(EmbeddingModel):
        """OpenAI-compatible ``/embeddings`` of [llm].base_url through the ``openai`` client."""

        engine_name = EMBEDDING_ENGINE

        def __init__(self, embedding_model: str, base_url: str = "", api_key_env: str = "",
                     timeout: float = 60.0, max_retries: int = 2, token: str = "", **_: Any) -> None:
            self.model = embedding_model
            self.base_url = base_url
            self.api_key_env = api_key_env
            self.timeout = timeout
            self.max_retries = max_retries
            self.token = token
            self._clients: dict[int, Any] = {}

        def _key(self) -> str:
            return (os.environ.get(self.api_key_env, "") if self.api_key_env else "") or PLACEHOLDER_KEY

        def _fail(self, exc: BaseException) -> EndpointError:
            status = getattr(exc, "status_code", None)
            what = f"{status} " if status else ""
            msg = scrub(f"{what}{type(exc).__name__}: {exc}", self._key())[:200]
            text = (f"{redact_url(self.base_url)}/embeddings (dialog rails, [guardrails].embedding_model "
                    f"{self.model!r}) failed: {msg}; an endpoint without embeddings: set "
                    f"[guardrails].embedding_model = \"\" to skip the dialog flows")
            with _lock:
                _EMBED_ERRORS[self.token] = text
            return EndpointError(text)

        async def encode_async(self, documents: list[str]) -> list[list[float]]:
            import openai

            if not self.model:
                raise self._fail(RuntimeError("no embeddings model: [guardrails].embedding_model is empty"))

            loop = asyncio.get_running_loop()
            client = self._clients.get(id(loop))
            if client is None:
                client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key(),
                                            timeout=self.timeout, max_retries=self.max_retries)
                self._clients = {id(loop): client}
            try:
                res = await client.embeddings.create(input=documents, model=self.model)
                out = [list(d.embedding) for d in res.data]
            except Exception as exc:
                raise self._fail(exc) from exc
            if len(out) != len(documents) or not all(out):
                raise self._fail(ValueError(f"{len(out)} embeddings for {len(documents)} texts"))
            return out

        def encode(self, documents: list[str]) -> list[list[float]]:
            import openai

            client = openai.OpenAI(base_url=self.base_url, api_key=self._key(), timeout=self.timeout,
                                   max_retries=self.max_retries)
            try:
                return [list(d.embedding) for d in client.embeddings.create(input=documents, model=self.model).data]
            except Exception as exc:
                raise self._fail(exc) from exc

    register_embedding_provider(NcanvasEmbeddings, EMBEDDING_ENGINE)


class Guard:
    """The guardrails of one settings object. Create once, use from one event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config_dir = settings.guardrails.config
        self.endpoint = f"{redact_url(settings.llm.base_url)}/chat/completions"
        self._rails: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._building: asyncio.Future | None = None
        self._token = f"guard-{id(self)}"
        #: guardrails LLM calls made (input, dialog and output checks), for stats and benchmarks
        self.check_calls = 0

    # -- loading -------------------------------------------------------------------------------
    def _build(self) -> Any:
        disable_telemetry()
        cfg_dir = self.config_dir
        if not cfg_dir.is_dir():
            raise GuardrailsConfigError(f"{cfg_dir}: guardrails config folder not found ([guardrails].config); "
                                        "set [guardrails].enabled = false to run without guardrails")
        if not (cfg_dir / "config.yml").is_file() and not (cfg_dir / "config.yaml").is_file():
            raise GuardrailsConfigError(f"{cfg_dir}: no config.yml in the guardrails folder ([guardrails].config)")
        try:
            from nemoguardrails import LLMRails, RailsConfig
        except ImportError as e:
            raise GuardrailsConfigError(
                f"nemoguardrails is not installed ({e.name}): pip install 'ncanvas[story]', "
                "or set [guardrails].enabled = false") from None
        _install_logging()
        _register_embedding_provider()
        _cache_colang_parsing()
        try:
            config = RailsConfig.from_path(str(cfg_dir))
        except Exception as e:
            raise GuardrailsConfigError(f"{cfg_dir}: guardrails config does not load: "
                                        f"{' '.join(str(e).split())[:300]}") from e
        llm = self.settings.llm
        key = llm.api_key().get()
        found_main = False
        for m in config.models:
            if m.type == "main":
                found_main = True
                m.engine = "openai"
                m.model = llm.model
                params = dict(m.parameters or {})
                params.update(base_url=llm.base_url, timeout=llm.timeout_s, max_retries=llm.retries)
                params.pop("api_key", None)
                if key:
                    m.api_key_env_var = llm.api_key_env
                else:
                    m.api_key_env_var = None
                    params["api_key"] = PLACEHOLDER_KEY  # never fall back to some other key in the env
                m.parameters = params
            elif m.type == "embeddings":
                m.engine = EMBEDDING_ENGINE
                m.model = self.settings.guardrails.embedding_model
                m.api_key_env_var = None
                m.parameters = {"base_url": llm.base_url, "api_key_env": llm.api_key_env,
                                "timeout": llm.timeout_s, "max_retries": llm.retries, "token": self._token}
        if not found_main:
            raise GuardrailsConfigError(f"{cfg_dir}/config.yml: needs a model entry with type: main")
        try:
            with warnings.catch_warnings(record=True) as caught:  # to the log, not the user's stderr
                warnings.simplefilter("always")
                rails = LLMRails(config)
            for w in caught:
                log.info("nemoguardrails: %s: %s", w.category.__name__,
                         scrub(str(w.message), self.settings.llm.api_key().get()))
        except NcanvasError:
            raise
        except Exception as e:
            raise GuardrailsConfigError(f"{cfg_dir}: guardrails do not start: {' '.join(str(e).split())[:300]}") from e
        # nemoguardrails copies the key from api_key_env_var into the model's parameters, and it
        # prints its whole config in error logs: the clients are built by now, drop the key.
        for cfg in {id(config): config, id(rails.config): rails.config}.values():
            for m in cfg.models:
                if isinstance(m.parameters, dict) and m.parameters.get("api_key") not in (None, PLACEHOLDER_KEY):
                    m.parameters.pop("api_key", None)
        return rails

    async def rails(self) -> Any:
        """The ``LLMRails`` of the running loop, built once (in a thread: the loop keeps serving the
        story stream and the UI keeps drawing); callers that come while it is being built wait for
        the same build."""
        loop = asyncio.get_running_loop()
        if self._rails is not None and self._loop is loop:
            return self._rails
        building = self._building
        if building is None or building.get_loop() is not loop or (
                building.done() and (building.cancelled() or building.exception() is not None)):
            building = self._building = asyncio.ensure_future(asyncio.to_thread(self._build))
        rails = await asyncio.shield(building)
        self._rails, self._loop = rails, loop
        return rails

    # -- errors --------------------------------------------------------------------------------
    def _internal_error(self, what: str) -> EndpointError:
        with _lock:
            embed = _EMBED_ERRORS.pop(self._token, None)
        exc, text = _CAPTURE.take()
        if embed:
            return EndpointError(embed)
        root = _root_cause(exc)
        if isinstance(root, EndpointError):
            return root
        timed_out = self._timed_out(exc, what)
        if timed_out is not None:
            return timed_out
        cause = scrub(str(root) if root is not None else (text or ""), self.settings.llm.api_key().get())[:240]
        cause = cause or (type(root).__name__ if root is not None else "unknown cause")
        return EndpointError(f"{self.endpoint}: guardrails {what} failed: {cause}")

    def _llm_failure(self, exc: BaseException, what: str) -> EndpointError:
        root = _root_cause(exc) or exc
        if isinstance(root, EndpointError):
            return root
        timed_out = self._timed_out(exc, what)
        if timed_out is not None:
            return timed_out
        cause = scrub(str(root), self.settings.llm.api_key().get())[:240] or type(root).__name__
        return EndpointError(f"{self.endpoint}: guardrails {what} failed: {cause}")

    def _timed_out(self, exc: BaseException | None, what: str) -> EndpointError | None:
        """A timeout anywhere in the chain: say so, after how long, and where."""
        for e in exception_chain(exc, limit=12):
            if isinstance(e, (TimeoutError, asyncio.TimeoutError)) or "timeout" in type(e).__name__.lower():
                return EndpointError(f"{self.endpoint}: guardrails {what} timed out after "
                                     f"{self.settings.llm.timeout_s:g} s without an answer ([llm].timeout_s)")
        return None

    # -- the rails -----------------------------------------------------------------------------
    async def _generate(self, messages: list[dict[str, str]], rails: list[str], what: str) -> tuple[str, list]:
        engine = await self.rails()
        try:
            res = await engine.generate_async(messages=messages,
                                              options={"rails": rails, "log": {"activated_rails": True}})
        except NcanvasError:
            raise
        except Exception as e:
            raise self._llm_failure(e, what) from e
        activated = list(getattr(getattr(res, "log", None), "activated_rails", None) or [])
        return _response_text(res), activated

    async def check_input(self, text: str, user_words: str | None = None) -> Verdict:
        """The input rail on the whole request (``text``: the user's words + the labels) and,
        at the same time, the dialog flows on the user's own words (a request made only of
        labels, style and theme is a story request by construction)."""
        await self.rails()
        _CAPTURE.take()
        with _lock:
            _EMBED_ERRORS.pop(self._token, None)
        jobs = [self._generate([{"role": "user", "content": text}], ["input"], "input check")]
        self.check_calls += 1
        if user_words and user_words.strip() and self.settings.guardrails.embedding_model:
            jobs.append(self._generate([{"role": "user", "content": user_words.strip()}], ["dialog"],
                                       "dialog check"))
        done = await asyncio.gather(*jobs, return_exceptions=True)
        first = done[0]
        if isinstance(first, BaseException):
            raise first
        reply, activated = first
        for a in activated:
            if a.type == "input" and a.stop:
                return Verdict(False, "input", reply or "The request was blocked by the input rail.", a.name)
        if reply.strip() == INTERNAL_ERROR:
            raise self._internal_error("input check")
        if len(done) == 1:
            return Verdict(True)
        second = done[1]
        if isinstance(second, BaseException):
            raise second
        reply, activated = second
        if reply.strip() == ACCEPTED:
            return Verdict(True)
        if reply.strip() == INTERNAL_ERROR or not reply.strip():
            raise self._internal_error("dialog check")
        flow = next((a.name for a in activated if a.type == "dialog" and a.name != "generate user intent"), None)
        return Verdict(False, "dialog", reply, flow)

    async def check_output(self, user_text: str, story: str, *, fresh: bool = True) -> Verdict:
        """NeMo Guardrails' output rails on a text (a whole story, or one chunk of a stream)."""
        if fresh:
            _CAPTURE.take()
        self.check_calls += 1
        reply, activated = await self._generate(
            [{"role": "user", "content": user_text}, {"role": "assistant", "content": story}], ["output"],
            "output check")
        for a in activated:
            if a.type == "output" and a.stop:
                return Verdict(False, "output", OUTPUT_BLOCKED, a.name)
        if reply.strip() == INTERNAL_ERROR:
            raise self._internal_error("output check")
        return Verdict(True)

    async def _check_chunk(self, user_text: str, text: str, limit: asyncio.Semaphore) -> None:
        """NeMo Guardrails' output rails on one chunk (with its context); raises when blocked."""
        async with limit:
            verdict = await self.check_output(user_text, text, fresh=False)
        if not verdict.allowed:
            raise GuardrailRefusal(OUTPUT_BLOCKED, "output")

    async def stream_output(self, user_text: str, tokens: AsyncIterator[str],
                            gate: Awaitable[Verdict] | None = None) -> AsyncIterator[str]:
        """Checked story text from ``tokens``; raises GuardrailRefusal('output') when blocked.

        The text is cut into chunks (``ChunkPlan``: a small first one, then doubling up to
        ``chunk_size``) and each chunk, with ``context_size`` tokens of the one before, goes
        through NeMo Guardrails' output rails (``check_output``) as soon as it is complete, while
        the story goes on; chunks are released in order, each only after its check passed (and,
        with ``gate``, after the input check passed: a refusal there raises ``InputRefused``).
        Errors of ``tokens`` itself (e.g. ``StreamBroken``) propagate unchanged, after the chunks
        that passed before them.
        """
        rails = await self.rails()
        plan = ChunkPlan.from_config(rails.config)
        _CAPTURE.take()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        limit = asyncio.Semaphore(MAX_CHECKS_IN_FLIGHT)
        checks: list[asyncio.Future] = []

        def launch(pieces: list[str], context: list[str]) -> None:
            text = "".join(pieces)
            if not text.strip():  # whitespace only: nothing to check
                queue.put_nowait((pieces, None))
                return
            task = asyncio.ensure_future(self._check_chunk(user_text, "".join(context) + text, limit))
            checks.append(task)
            queue.put_nowait((pieces, task))

        async def pump() -> None:
            sizes = plan.sizes()
            want = next(sizes)
            buf: list[str] = []
            before: list[str] = []  # the previous chunk's tokens (context)
            try:
                async for piece in tokens:
                    buf.append(piece)
                    if len(buf) >= want:
                        launch(buf, before[-plan.context:] if plan.context else [])
                        before, buf, want = buf, [], next(sizes)
                if buf:
                    launch(buf, before[-plan.context:] if plan.context else [])
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, in order
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(_END)

        pumping = asyncio.ensure_future(pump())
        gated = gate is None
        try:
            while True:
                item = await queue.get()
                if not gated:  # nothing (not even an error of the story) before the request passed
                    verdict = await gate  # type: ignore[misc]
                    gated = True
                    if not verdict.allowed:
                        raise InputRefused(verdict)
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                pieces, check = item
                if check is not None:
                    await check
                for piece in pieces:  # as the LLM sent them: the text still streams in
                    yield piece
        finally:
            pumping.cancel()
            for task in checks:
                task.cancel()
            await asyncio.gather(pumping, *checks, return_exceptions=True)


class InputRefused(GuardrailRefusal):
    """The input (or dialog) rail refused the request while the story was already being written."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message or "The request was blocked.", verdict.rail or "input")
        self.verdict = verdict


class _End:
    pass


_END = _End()
#: output checks running at once on one story (chunk k is checked while k+1, k+2 are written)
MAX_CHECKS_IN_FLIGHT = 3


@dataclass
class ChunkPlan:
    """How the streamed story is cut for the output rail, from ``rails.output.streaming`` in
    config.yml: ``first_chunk_size`` tokens first (the first text shows up soon), then each chunk
    twice the one before, up to ``chunk_size``; ``context_size`` tokens of the previous chunk go
    along with each check."""

    first: int
    largest: int
    context: int

    @classmethod
    def from_config(cls, config: Any) -> ChunkPlan:
        streaming = config.rails.output.streaming
        largest = max(1, int(streaming.chunk_size))
        extra = getattr(streaming, "model_extra", None) or {}
        first = int(extra.get("first_chunk_size") or DEFAULT_FIRST_CHUNK)
        return cls(first=max(1, min(first, largest)), largest=largest, context=max(0, int(streaming.context_size)))

    def sizes(self) -> Iterator[int]:
        n = self.first
        while True:
            yield n
            n = min(self.largest, n * 2)


#: tokens in the first checked chunk when config.yml does not say (``first_chunk_size``)
DEFAULT_FIRST_CHUNK = 16


def _response_text(res: Any) -> str:
    resp = getattr(res, "response", res)
    if isinstance(resp, list) and resp:
        last = resp[-1]
        return str(last.get("content", "") if isinstance(last, dict) else last)
    if isinstance(resp, dict):
        return str(resp.get("content", ""))
    return str(resp or "")


def _error_chunk(chunk: str) -> dict | None:
    """nemoguardrails ends a blocked/failed stream with one JSON chunk {"error": {...}}."""
    s = chunk.lstrip()
    if not s.startswith('{"error"'):
        return None
    try:
        data = json.loads(s)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    return err if isinstance(err, dict) else None
