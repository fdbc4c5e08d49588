"""The one exception family for what a user can fix.

Every ``NcanvasError`` carries a one-line message that names the file, key or
endpoint at fault. The CLI prints it on stderr and exits 2 (3 for a guardrail
refusal); the TUI shows it as a notification. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class NcanvasError(Exception):
    """Something the user can fix. ``str(err)`` is one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        # Keep it to one line whatever the cause looked like.
        super().__init__(" ".join(str(message).split()))


class SettingsError(NcanvasError):
    """settings.toml: syntax error, unknown key, wrong type, bad value, missing env var."""


class ModelError(NcanvasError):
    """A model name not in the catalog, an ONNX that does not parse or has an unexpected input."""


class ImageError(NcanvasError):
    """An image that cannot be classified (missing, empty, truncated, not an image, too big)."""


class BackendError(NcanvasError):
    """A backend that is not available here, or failed to load."""


class EngineError(NcanvasError):
    """An engine that is missing, stale, foreign or corrupt; a build that failed."""


class CancelledError(NcanvasError):
    """Work the user cancelled (Esc, Ctrl-C)."""

    exit_code = 130


class EndpointError(NcanvasError):
    """An LLM / image endpoint that refused, failed, timed out or answered nonsense."""


class GuardrailRefusal(NcanvasError):
    """A guardrail refused the request or the answer; ``rail`` says which."""

    exit_code = 3

    def __init__(self, message: str, rail: str) -> None:
        super().__init__(message)
        self.rail = rail


def exception_chain(exc: BaseException | None, *, context: bool = True, limit: int = 20) -> list[BaseException]:
    """``exc`` and what caused it, outermost first: ``__cause__`` (and ``__context__`` unless
    ``context=False``), stopping at a cycle or after ``limit`` links. The one walker of cause chains
    (finding the OS reason of a connection error, a timeout deep in a library, the root cause)."""
    out: list[BaseException] = []
    cur = exc
    while cur is not None and cur not in out and len(out) < limit:
        out.append(cur)
        cur = cur.__cause__ or (cur.__context__ if context else None)
    return out
