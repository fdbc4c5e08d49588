"""``StoryWriter``: the story as an async stream of events, for the TUI and the CLI.

    writer = StoryWriter(settings)                      # keep it: it holds the clients
    async for ev in writer.write(StoryRequest(labels=["daisy"], style="Fantasy")):
        if isinstance(ev, StoryToken): show(ev.text)
        elif isinstance(ev, StoryStatus): status(ev.message)
        elif isinstance(ev, StoryResult): done(ev)      # always the last event

Nothing blocks the loop. Cancel the task that iterates to stop: ``writer.last_result``
then holds what had arrived (``cancelled=True``). Endpoint failures do not raise:
they end in a ``StoryResult`` with ``error`` set and the partial text kept;
``result.raise_for_status()`` turns it into the NcanvasError (or GuardrailRefusal).
A bad request (unknown style, no labels) raises ``StoryInputError`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ncanvas_tui.errors import EndpointError, GuardrailRefusal, NcanvasError
from ncanvas_tui.settings import Settings
from ncanvas_tui.story import prompts
from ncanvas_tui.story.catalog import StoryInputError, parse_labels, resolve_style, resolve_theme
from ncanvas_tui.story.llm import LlmClient, StreamBroken, check_key
from ncanvas_tui.story.model import StoryRequest, StoryResult, StoryStatus, StoryToken

log = logging.getLogger(__name__)

Event = StoryToken | StoryStatus | StoryResult


class _End:
    pass


def _prefetch(source: AsyncIterator[str]) -> tuple[asyncio.Task, AsyncIterator[str]]:
    """Start consuming ``source`` now; return the task and an iterator over what it got
    (errors of ``source`` are re-raised by the iterator, in order)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for piece in source:
                queue.put_nowait(piece)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(_End)

    async def consume() -> AsyncIterator[str]:
        while True:
            item = await queue.get()
            if item is _End:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    return asyncio.ensure_future(produce()), consume()


async def _nothing() -> AsyncIterator[str]:
    return
    yield ""  # an empty async generator


def join_story(before: str, after: str, language: str) -> str:
    """The story so far + its continuation, with sensible spacing."""
    if not before:
        return after
    if not after:
        return before
    if before[-1].isspace() or after[0].isspace() or language == "zh":
        return before + after
    return before + "\n\n" + after


class StoryWriter:
    """Writes (and continues) stories; one per app, reused for every request."""

    def __init__(self, settings: Settings, *, on_status: Callable[[str], Any] | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.client = LlmClient(settings)
        self.guard: Any = None
        if settings.guardrails.enabled:
            from ncanvas_tui.story.guard import Guard

            self.guard = Guard(settings)
        self.on_status = on_status
        self.rng = rng or random.Random()
        self.last_result: StoryResult | None = None

    def _status(self, message: str) -> StoryStatus:
        if self.on_status is not None:
            self.on_status(message)
        return StoryStatus(message)

    def prepare(self, request: StoryRequest) -> StoryResult:
        """Validate and resolve a request (random style/theme picked here)."""
        prior = request.continue_from
        labels = parse_labels(request.labels or (prior.labels if prior else []))
        if not labels and prior is None:  # a plain-text story to continue may have none
            raise StoryInputError("no labels: give at least one (e.g. --labels \"daisy,robot\"), or pictures "
                                  "to take them from (--images PATH...)")
        style = resolve_style(request.style or (prior.style if prior else None), self.rng)
        theme = resolve_theme(request.theme or (prior.theme if prior else None), self.rng)
        language = request.language or (prior.language if prior and prior.language else None) \
            or self.settings.llm.language
        if language not in ("en", "zh"):
            raise StoryInputError(f"unknown language {language!r}; choose en or zh")
        if prior is not None and not prior.text.strip():
            raise StoryInputError("the story to continue is empty")
        check_key(self.settings)
        prompt = (request.prompt or "").strip() or None
        if prompt and len(prompt) > 4000:
            raise StoryInputError(f"the prompt is {len(prompt)} characters long; keep it under 4000")
        images = [str(p) for p in (request.images or [])]
        return StoryResult(labels=labels, style=style, theme=theme, language=language, prompt=prompt,
                           model=self.settings.llm.model, guardrails=self.guard is not None,
                           story=prior.text if prior else "", images=images,
                           vision=bool(images) and self.settings.llm.vision)

    async def write(self, request: StoryRequest) -> AsyncIterator[Event]:
        """Stream one story (or continuation). See the module docstring."""
        result = self.prepare(request)
        self.last_result = result
        prior = request.continue_from.text if request.continue_from else None
        messages = prompts.story_messages(result.labels, result.style or "", result.theme or "",
                                          result.prompt, result.language, story_so_far=prior)
        if result.vision:  # the pictures go to the model as image parts; the rails see only the words
            from ncanvas_tui.story.images import image_parts

            first_user: dict[str, Any] = next(m for m in messages if m["role"] == "user")
            first_user["content"] = [{"type": "text", "text": first_user["content"]},
                                     *image_parts(result.images)]
        rails_text = prompts.rails_user_text(result.labels, result.style or "", result.theme or "",
                                             result.prompt)
        released: list[str] = []   # text the user has seen (checked, when guardrails are on)
        raw: list[str] = []        # everything the LLM sent
        statuses: list[str] = []
        t0 = time.perf_counter()
        calls0, retries0 = self.client.calls, self.client.retries_done

        def on_retry(note: str) -> None:
            statuses.append(note)
            if self.on_status is not None:
                self.on_status(note)

        cap = self.settings.llm.max_story_chars
        cut: list[int] = []  # [cap] once the story was cut at [llm].max_story_chars

        async def llm_tokens() -> AsyncIterator[str]:
            size = 0
            stream = self.client.stream(messages, on_retry=on_retry)
            try:
                async for piece in stream:
                    if size + len(piece) > cap:  # keep what fits, stop the stream
                        piece = piece[: cap - size]
                        if piece:
                            raw.append(piece)
                            yield piece
                        cut.append(cap)
                        return
                    size += len(piece)
                    raw.append(piece)
                    yield piece
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

        producer: asyncio.Task | None = None
        checker: asyncio.Future | None = None
        checks0 = self.guard.check_calls if self.guard is not None else 0
        direct: Any = None  # the LLM stream when we iterate it ourselves (closed at the end)
        try:
            if self.guard is not None:
                yield self._status("checking the request (input and dialog rails)")
                tokens: AsyncIterator[str]
                gate: asyncio.Future | None = None
                if self.settings.guardrails.speculative:
                    # the story starts now, before the rails are even built (their build runs in a
                    # thread); its text is checked chunk by chunk as it comes and released only once
                    # the request passed the input rail and the chunk passed the output rail
                    self.client.warm()  # imports openai in this thread before the rails' thread does
                    producer, tokens = _prefetch(llm_tokens())
                    gate = asyncio.ensure_future(self._check_input(result, rails_text))
                    checker = gate
                else:
                    from ncanvas_tui.story.guard import InputRefused

                    verdict = await self._check_input(result, rails_text)
                    if not verdict.allowed:
                        raise InputRefused(verdict)
                    tokens = direct = llm_tokens()
                yield self._status("writing (the output rail checks the text in chunks)")
                source = self.guard.stream_output(rails_text, tokens, gate=gate)
            else:
                yield self._status("writing")
                source = direct = llm_tokens()
            async for piece in source or _nothing():
                if not released:
                    piece = piece.lstrip()
                    if not piece:
                        continue
                    result.stats["ttft_ms"] = (time.perf_counter() - t0) * 1000
                released.append(piece)
                yield StoryToken(piece)
        except GuardrailRefusal as refusal:
            result.blocked, result.rail, result.message = True, refusal.rail, str(refusal)
            verdict = getattr(refusal, "verdict", None)
            if verdict is not None:
                result.message = verdict.message
                result.stats["flow"] = verdict.flow or ""  # type: ignore[assignment]
            released.clear()
        except StreamBroken as broken:
            await self._keep_partial(result, broken, released, raw, rails_text)
        except NcanvasError as err:
            result.error, result.exc = str(err), err
            result.partial = bool(released)
        except asyncio.CancelledError:
            result.cancelled = True
            result.partial = bool(released)
            self._finish(result, released, prior, t0, calls0, retries0, checks0)
            raise
        finally:
            if checker is not None and not checker.done():
                checker.cancel()
            if producer is not None and not producer.done():
                producer.cancel()  # refused, blocked or failed: stop the speculative story
            if direct is not None:
                try:
                    await direct.aclose()  # a stopped story must not keep its HTTP stream open
                except (RuntimeError, NcanvasError):
                    log.debug("closing the story stream", exc_info=True)
        if cut and not result.blocked:
            result.partial = True
            result.stats["cut_at_chars"] = cut[0]
            note = (f"the story reached [llm].max_story_chars ({cut[0]} characters): kept what came, "
                    "marked partial")
            log.info(note)
            yield self._status(note)
        self._finish(result, released, prior, t0, calls0, retries0, checks0)
        yield result

    async def _check_input(self, result: StoryResult, rails_text: str) -> Any:
        """The input and dialog rails on the request (after the rails are built); timed in stats."""
        assert self.guard is not None
        await self.guard.rails()
        t_in = time.perf_counter()
        verdict = await self.guard.check_input(rails_text, result.prompt)
        result.stats["input_check_ms"] = (time.perf_counter() - t_in) * 1000
        return verdict

    async def _keep_partial(self, result: StoryResult, broken: StreamBroken, released: list[str],
                            raw: list[str], rails_text: str) -> None:
        """The stream broke: keep what arrived. With guardrails, unchecked text must pass the
        output rail first; if that check cannot run, only the checked text is kept."""
        result.error, result.exc, result.partial = str(broken), broken, True
        seen = "".join(released)
        everything = "".join(raw).lstrip()
        if self.guard is None or len(everything) <= len(seen):
            if self.guard is None:
                released[:] = [everything]
            return
        try:
            verdict = await self.guard.check_output(rails_text, everything)
        except EndpointError as e:
            log.info("partial story: unchecked tail dropped (%s)", e)
            return
        if verdict.allowed:
            released[:] = [everything]
        else:
            result.blocked, result.rail, result.message = True, "output", verdict.message
            result.error, result.exc, result.partial = None, None, False
            released.clear()

    def _finish(self, result: StoryResult, released: list[str], prior: str | None, t0: float,
                calls0: int, retries0: int, checks0: int = 0) -> None:
        text = "".join(released).rstrip()
        result.text = "" if result.blocked else text
        result.story = (prior or "") if result.blocked else join_story(prior or "", text, result.language)
        result.stats["total_ms"] = (time.perf_counter() - t0) * 1000
        result.stats["llm_calls"] = self.client.calls - calls0
        result.stats["retries"] = self.client.retries_done - retries0
        if self.guard is not None:
            result.stats["check_calls"] = self.guard.check_calls - checks0
        self.last_result = result

    async def run(self, request: StoryRequest, on_token: Callable[[str], Any] | None = None) -> StoryResult:
        """Write a story and return its result (tokens go to ``on_token`` as they come)."""
        result: StoryResult | None = None
        async for ev in self.write(request):
            if isinstance(ev, StoryToken) and on_token is not None:
                on_token(ev.text)
            elif isinstance(ev, StoryResult):
                result = ev
        assert result is not None
        return result

    async def aclose(self) -> None:
        await self.client.aclose()


async def distil(settings: Settings, story: Any, labels: list[str] | None = None, style: str | None = None,
                 theme: str | None = None, *, client: LlmClient | None = None) -> str:
    """The story (text or ``Story``) as a short English text-to-image prompt carrying the
    labels, style and theme."""
    labels = list(labels if labels is not None else getattr(story, "labels", None) or [])
    style = style or getattr(story, "style", None)
    theme = theme or getattr(story, "theme", None)
    story = getattr(story, "text", story)
    if not story or not story.strip():
        raise StoryInputError("no story to turn into a picture prompt")
    check_key(settings)
    client = client or LlmClient(settings)
    raw = await client.complete(prompts.distil_messages(story[:12000], labels, style, theme),
                                max_tokens=160, temperature=0.4)
    prompt = prompts.finish_image_prompt(raw, labels, style, theme)
    if not prompt:
        raise EndpointError(f"{client.endpoint}: the distilled picture prompt came back empty")
    return prompt


def distil_prompt(settings: Settings, story: Any, labels: list[str] | None = None, style: str | None = None,
                  theme: str | None = None) -> str:
    """Sync wrapper of ``distil`` (for the CLI and worker threads). Inside a running loop it
    runs in a helper thread with its own loop, so it never blocks that loop's state."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(distil(settings, story, labels, style, theme))
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, distil(settings, story, labels, style, theme)).result()
