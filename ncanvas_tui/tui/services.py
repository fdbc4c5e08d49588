"""Small helpers the screens share around the history and the endpoints' configuration.

Everything here is called from a worker thread, never from the event loop, unless it says
otherwise. Core modules are imported directly (lazily, where they pull in heavy libraries).
"""

from __future__ import annotations

import logging
from typing import Any

from ncanvas_tui.errors import NcanvasError

log = logging.getLogger("ncanvas_tui.tui")


# -- history -----------------------------------------------------------------------------
def history(settings: Any) -> Any:
    from ncanvas_tui.history.store import open_history

    return open_history(settings)


def record_inference(settings: Any, result: dict[str, Any]) -> Any:
    """Save a classification as a new run; None (logged) when history is not there or fails."""
    try:
        return history(settings).record_inference(result)
    except NcanvasError as e:
        log.warning("history: %s", e)
        return None


def attach(settings: Any, kind: str, run_id: Any, data: dict[str, Any]) -> Any:
    """Add a story / picture to ``run_id`` (None: a new run); the run id, or None when it failed."""
    try:
        store = history(settings)
        fn = store.attach_story if kind == "story" else store.attach_picture
        try:
            return fn(run_id, data)
        except NcanvasError:
            if run_id is None:
                raise
            return fn(None, data)  # the run was deleted meanwhile: start a new one
    except NcanvasError as e:
        log.warning("history: %s", e)
        return None


# -- configuration hints -------------------------------------------------------------------
def llm_problem(settings: Any) -> str | None:
    """What to put in settings.toml before a story can be written (None: looks configured)."""
    llm = settings.llm
    if llm.api_key_env and not llm.api_key():
        return (f"No LLM key: export {llm.api_key_env}=... before starting ncanvas, or point [llm].base_url "
                f"at a local OpenAI-compatible server and set [llm].api_key_env = \"\" in settings.toml.")
    return None


def imagegen_problem(settings: Any) -> str | None:
    cfg = settings.imagegen
    if cfg.api_key_env and not cfg.api_key():
        return (f"No image API key: export {cfg.api_key_env}=... before starting ncanvas, or use "
                f"[imagegen].provider = \"sdwebui\" with a local server and api_key_env = \"\".")
    return None
