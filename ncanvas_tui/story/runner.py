"""``StoryRunner``: one long-lived event loop in a background thread for every story.

For callers that live in threads (a Textual thread worker, a script): NeMo
Guardrails wants one event loop for its whole lifetime, and building the rails
costs ~0.5-1 s, so don't ``asyncio.run`` a fresh ``StoryWriter`` per story::

    runner = StoryRunner(settings)                     # once per app
    fut = runner.submit(request, on_event)             # on_event runs in the runner's thread
    fut.cancel()                                       # stops the story; partial text in runner.last_result
    result = fut.result()                              # StoryResult
    runner.close()

``on_event`` gets every ``StoryToken`` / ``StoryStatus`` / ``StoryResult``; in a
Textual app hand them on with ``post_message`` (thread-safe). Code that already runs
on an event loop can use ``StoryWriter.write`` directly instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
from collections.abc import Callable
from typing import Any

from ncanvas_tui.settings import Settings
from ncanvas_tui.story.model import StoryRequest, StoryResult
from ncanvas_tui.story.writer import StoryWriter, distil

#: how often the interpreter lock changes hands while the story writer is set up in the background
WARM_SWITCH_INTERVAL_S = 0.001


class StoryRunner:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ncanvas-story", daemon=True)
        self._thread.start()
        self._writer: StoryWriter | None = None

    @property
    def writer(self) -> StoryWriter:
        if self._writer is None:
            self._writer = StoryWriter(self.settings)
        return self._writer

    @property
    def last_result(self) -> StoryResult | None:
        return self._writer.last_result if self._writer is not None else None

    def warm(self) -> concurrent.futures.Future[None]:
        """Set up what the first story needs now, in the background (the ``openai`` client and,
        with guardrails on, the rails: ~1 s of imports and parsing), so it starts at once.

        The garbage collector is paused meanwhile and what was made is frozen afterwards: the
        imports make a few hundred thousand long-lived objects, and the full collections they set
        off would stop every thread (a UI's event loop too) for 50-150 ms each. The interpreter
        lock changes hands every millisecond meanwhile (not every 5): the set-up is CPU work in
        two threads, and a UI's loop waiting for the lock behind both would stall for tens of ms."""
        async def job() -> None:
            was_enabled, interval = gc.isenabled(), sys.getswitchinterval()
            gc.disable()
            sys.setswitchinterval(min(interval, WARM_SWITCH_INTERVAL_S))
            try:
                self.writer.client.warm()
                if self.writer.guard is not None:
                    await self.writer.guard.rails()
            finally:
                sys.setswitchinterval(interval)
                gc.freeze()
                if was_enabled:
                    gc.enable()

        return asyncio.run_coroutine_threadsafe(job(), self._loop)

    def submit(self, request: StoryRequest, on_event: Callable[[Any], Any] | None = None
               ) -> concurrent.futures.Future[StoryResult]:
        """Write a story on the runner's loop; the future's result is the ``StoryResult``."""
        async def job() -> StoryResult:
            result: StoryResult | None = None
            async for ev in self.writer.write(request):
                if on_event is not None:
                    on_event(ev)
                if isinstance(ev, StoryResult):
                    result = ev
            assert result is not None
            return result

        return asyncio.run_coroutine_threadsafe(job(), self._loop)

    def distil(self, story: Any, labels: list[str] | None = None, style: str | None = None,
               theme: str | None = None) -> concurrent.futures.Future[str]:
        """``distil`` on the runner's loop (reuses the writer's LLM client)."""
        return asyncio.run_coroutine_threadsafe(
            distil(self.settings, story, labels, style, theme, client=self.writer.client), self._loop)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what runs, close the clients, stop the loop and its thread."""
        if not self._loop.is_running():
            return

        async def shutdown() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            if self._writer is not None:
                await self._writer.aclose()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> StoryRunner:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
