"""The LLM client: the ``openai`` library (async, streaming) against any
OpenAI-compatible ``[llm].base_url``.

Retries with exponential backoff (or the server's Retry-After) on 429, 5xx and
connection errors, up to ``[llm].retries``, but only before the first token: a
stream that breaks after text arrived raises ``StreamBroken`` carrying the text,
so nothing is lost. Every error is an ``EndpointError`` with one line naming the
endpoint; the key never appears in one (``scrub``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ncanvas_tui.endpoints import redact, redact_url, require_key
from ncanvas_tui.errors import EndpointError, exception_chain
from ncanvas_tui.settings import Settings

log = logging.getLogger(__name__)

#: sent when no key is configured (local servers: Ollama, vLLM, llama.cpp ignore it)
PLACEHOLDER_KEY = "not-needed"


class StreamBroken(EndpointError):
    """The stream stopped after some text had arrived; ``partial`` keeps that text."""

    def __init__(self, message: str, partial: str) -> None:
        super().__init__(message)
        self.partial = partial


#: the one redaction of the app (endpoints.redact): secrets, key-like words, URL credentials
scrub = redact


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)
    msg = getattr(exc, "message", None) or str(exc)
    return str(msg)


def check_key(settings: Settings) -> None:
    """A remote endpoint with its key's env var unset is a settings error (before any request); a
    local one goes ahead without a key and says so once on stderr (``endpoints.require_key``)."""
    llm = settings.llm
    require_key("llm", llm.api_key_env, llm.api_key().get(), llm.base_url)


class LlmClient:
    """One client per settings; safe to use from one asyncio loop at a time (it re-creates
    its HTTP client when the loop changes, e.g. between two ``asyncio.run`` calls)."""

    def __init__(self, settings: Settings, *, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.settings = settings
        self.llm = settings.llm
        self.endpoint = f"{redact_url(self.llm.base_url)}/chat/completions"
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleep = sleep
        self.retries_done = 0
        self.calls = 0

    # -- plumbing ------------------------------------------------------------------------------
    def _key(self) -> str:
        return self.llm.api_key().get()

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self.llm.base_url, api_key=self._key() or PLACEHOLDER_KEY, max_retries=0,
                timeout=self.llm.timeout_s)
            self._loop = loop
        return self._client

    def warm(self) -> None:
        """Import ``openai`` and make the client now, in this thread (the guardrails' build imports
        in another thread; two threads importing openai at once break its imports)."""
        self.client().chat.completions  # noqa: B018 - the resource modules are imported lazily

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = None

    def error(self, exc: BaseException, *, after_retries: int = 0, partial: str = "",
              vision: bool = False) -> EndpointError:
        """Map any client exception to one clear line naming the endpoint."""
        import openai

        ep, key_env = self.endpoint, self.llm.api_key_env
        tried = f" after {after_retries + 1} attempts" if after_retries else ""
        if isinstance(exc, EndpointError):
            return exc
        if isinstance(exc, openai.APIStatusError):
            code, msg = exc.status_code, scrub(_server_message(exc), self._key())[:200]
            if code in (401, 403):
                if not self._key():
                    hint = (f"no key: set the env var {key_env} ([llm].api_key_env)" if key_env
                            else "this endpoint needs a key: set [llm].api_key_env")
                else:
                    hint = f"the key in ${key_env} was refused"
                text = f"{ep}: {code} {'Unauthorized' if code == 401 else 'Forbidden'}: {hint} ({msg})"
            elif vision and code in (400, 404, 415, 422, 501):
                text = (f"{ep}: {code}: the model rejected the pictures ({msg}); [llm].vision = true needs a "
                        f"multimodal [llm].model (GPT-4o, Llama 3.2 Vision, LLaVA...): choose one or set "
                        f"[llm].vision = false")
            elif code == 404:
                text = f"{ep}: 404 Not Found: is [llm].model {self.llm.model!r} served there? ({msg})"
            elif code == 429:
                text = f"{ep}: 429 rate limited{tried}: {msg}"
            elif code >= 500:
                text = f"{ep}: server error {code}{tried}: {msg}"
            else:
                text = f"{ep}: {code} error: {msg}"
        elif isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)):
            text = f"{ep}: no answer within {self.llm.timeout_s:g} s ([llm].timeout_s){tried}"
        elif isinstance(exc, (openai.APIConnectionError, OSError)):
            chain = exception_chain(exc, limit=12)
            cause = chain[1] if len(chain) > 1 else exc
            detail = scrub(str(cause), self._key())
            if any(isinstance(e, ConnectionRefusedError) for e in chain):
                text = f"{ep}: connection refused{tried}: is the server running? ([llm].base_url)"
            elif partial:
                text = f"{ep}: the connection broke mid-stream ({detail or type(exc).__name__})"
            else:
                text = f"{ep}: cannot connect{tried}: {detail or type(exc).__name__} ([llm].base_url)"
        elif isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError, ValueError,
                              KeyError, TypeError, AttributeError)):
            text = f"{ep}: malformed response (not OpenAI chat-completions JSON): {scrub(str(exc))[:120]}"
        else:
            text = f"{ep}: {type(exc).__name__}: {scrub(str(exc), self._key())[:200]}"
        if partial:
            return StreamBroken(f"{text}; kept the {len(partial)} characters that had arrived", partial)
        return EndpointError(text)

    def _retryable(self, exc: BaseException) -> bool:
        import openai

        if isinstance(exc, openai.APITimeoutError):
            return False  # a slow server stays slow: fail after one timeout, don't multiply it
        if isinstance(exc, openai.APIStatusError):
            return exc.status_code == 429 or exc.status_code >= 500
        return isinstance(exc, openai.APIConnectionError)

    def _retry_after(self, exc: BaseException) -> float | None:
        response = getattr(exc, "response", None)
        header = response.headers.get("retry-after") if response is not None else None
        try:
            return float(header) if header is not None else None
        except ValueError:
            return None

    async def _with_retries(self, make: Callable[[], Any], on_retry: Callable[[str], Any] | None,
                            vision: bool = False) -> Any:
        """``make()`` under the app's one retry policy (``ncanvas_tui.retry``)."""
        from ncanvas_tui.retry import RetryPolicy

        async def counted() -> Any:
            self.calls += 1
            return await make()

        def retrying(exc: BaseException, attempt: int, delay: float) -> None:
            self.retries_done += 1
            what = f"{exc.status_code}" if hasattr(exc, "status_code") else type(exc).__name__
            note = f"{self.endpoint}: {what}, retrying in {delay:.1f} s ({attempt}/{self.llm.retries})"
            log.info(note)
            if on_retry is not None:
                on_retry(note)

        policy = RetryPolicy(retries=self.llm.retries, backoff_s=self.llm.retry_backoff_s)
        return await policy.acall(counted, retryable=self._retryable, retry_after=self._retry_after,
                                  on_retry=retrying, fail=lambda exc, n: self.error(exc, after_retries=n - 1, vision=vision),
                                  sleep=self._sleep)

    # -- API ---------------------------------------------------------------------------------------
    def params(self, max_tokens: int | None = None, temperature: float | None = None) -> dict[str, Any]:
        return {"model": self.llm.model,
                "max_tokens": max_tokens or self.llm.max_tokens,
                "temperature": self.llm.temperature if temperature is None else temperature}

    async def complete(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
                       temperature: float | None = None,
                       on_retry: Callable[[str], Any] | None = None) -> str:
        """One non-streamed completion; the text of the first choice."""
        client = self.client()

        async def make() -> Any:
            return await client.chat.completions.create(messages=messages, **self.params(max_tokens, temperature))

        resp = await self._with_retries(make, on_retry)
        choices = getattr(resp, "choices", None)
        if not choices:
            raise EndpointError(f"{self.endpoint}: empty response (no choices)")
        content = choices[0].message.content if choices[0].message is not None else None
        if not content or not content.strip():
            raise EndpointError(f"{self.endpoint}: empty response (the answer had no text)")
        return content

    async def stream(self, messages: list[dict[str, Any]], *, max_tokens: int | None = None,
                     temperature: float | None = None,
                     on_retry: Callable[[str], Any] | None = None) -> AsyncIterator[str]:
        """Text deltas as they arrive. Retries only until the stream has started."""
        vision = any(isinstance(m.get("content"), list) for m in messages)
        client = self.client()

        async def make() -> Any:
            return await client.chat.completions.create(messages=messages, stream=True,
                                                        **self.params(max_tokens, temperature))

        stream = await self._with_retries(make, on_retry, vision)
        got: list[str] = []
        finished = False
        saw_choices = False
        try:
            async for chunk in stream:
                choices = getattr(chunk, "choices", None)
                if not choices:
                    continue
                saw_choices = True
                choice = choices[0]
                delta = getattr(choice, "delta", None)
                piece = getattr(delta, "content", None) if delta is not None else None
                if piece:
                    got.append(piece)
                    yield piece
                if getattr(choice, "finish_reason", None):
                    finished = True
        except asyncio.CancelledError:
            raise
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self.error(exc, partial="".join(got)) from exc
        finally:
            try:
                await stream.close()
            except Exception:
                log.debug("closing the stream failed", exc_info=True)
        if not got:
            what = "no choices" if not saw_choices else "no text"
            raise EndpointError(f"{self.endpoint}: empty or malformed response ({what} in the stream)")
        if not finished:  # the body just ended: no finish_reason (and no [DONE]); the story is cut
            text = "".join(got)
            raise StreamBroken(f"{self.endpoint}: the stream ended before it finished (no finish_reason); "
                               f"kept the {len(text)} characters that had arrived", text)


def elapsed_ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0
