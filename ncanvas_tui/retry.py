"""One retry policy for every remote call: the story LLM ([llm]) and the picture providers ([imagegen]).

Built on ``tenacity``: up to ``retries`` more attempts of a call that failed in a way worth
another try (429, 5xx, connection refused: the caller says which), waiting what the server asked
for (``Retry-After``, at most ``max_wait_s``) or else ``backoff_s``, doubling each time (at most
20 s), with +-25 % jitter. ``on_retry(exc, attempt, wait_s)`` hears of each retry (progress lines);
``fail(exc, attempts)`` turns the last error into the one the caller raises.

    policy = RetryPolicy(retries=3, backoff_s=1.0)
    resp = await policy.acall(make, retryable=is_transient, retry_after=server_wait, fail=one_line)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
Retryable = Callable[[BaseException], bool]
RetryAfter = Callable[[BaseException], "float | None"]
OnRetry = Callable[[BaseException, int, float], Any]
Fail = Callable[[BaseException, int], BaseException]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int                 # attempts after the first
    backoff_s: float = 1.0       # first wait without a Retry-After; doubles each retry
    max_wait_s: float = 30.0     # the longest wait a Retry-After may ask for
    max_backoff_s: float = 20.0  # the longest computed wait

    def wait_s(self, attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return max(0.0, min(float(retry_after), self.max_wait_s))
        jitter = 0.75 + (rng or random).random() * 0.5
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s) * jitter

    def _tenacity_args(self, retryable: Retryable, retry_after: RetryAfter | None,
                       on_retry: OnRetry | None) -> dict[str, Any]:
        from tenacity import retry_if_exception, stop_after_attempt

        def wait(state: Any) -> float:
            exc = state.outcome.exception()
            return self.wait_s(state.attempt_number, retry_after(exc) if retry_after else None)

        def before_sleep(state: Any) -> None:
            if on_retry is not None:
                on_retry(state.outcome.exception(), state.attempt_number, state.next_action.sleep)

        return {"stop": stop_after_attempt(1 + max(0, self.retries)), "wait": wait,
                "retry": retry_if_exception(retryable), "before_sleep": before_sleep, "reraise": True}

    async def acall(self, make: Callable[[], Awaitable[T]], *, retryable: Retryable,
                    retry_after: RetryAfter | None = None, on_retry: OnRetry | None = None,
                    fail: Fail | None = None, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> T:
        """``await make()`` under this policy (asyncio)."""
        from tenacity import AsyncRetrying

        attempts = 0

        async def once() -> T:
            nonlocal attempts
            attempts += 1
            return await make()

        try:
            return await AsyncRetrying(sleep=sleep, **self._tenacity_args(retryable, retry_after, on_retry))(once)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if fail is None:
                raise
            raise fail(exc, attempts) from exc

    def call(self, make: Callable[[], T], *, retryable: Retryable, retry_after: RetryAfter | None = None,
             on_retry: OnRetry | None = None, fail: Fail | None = None,
             sleep: Callable[[float], Any] = time.sleep) -> T:
        """``make()`` under this policy (a thread)."""
        from tenacity import Retrying

        attempts = 0

        def once() -> T:
            nonlocal attempts
            attempts += 1
            return make()

        try:
            return Retrying(sleep=sleep, **self._tenacity_args(retryable, retry_after, on_retry))(once)
        except Exception as exc:
            if fail is None:
                raise
            raise fail(exc, attempts) from exc
