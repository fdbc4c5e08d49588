"""Is an OpenAI-compatible endpoint there, does it take our key, does it have our model?

One ``GET {base_url}/models`` through the openai client (short timeout, no retries), read as
one of: reachable (model listed) / refused or no answer / auth failed / model missing /
reachable without a model list. ``doctor`` prints it; Story and Imagine offer the list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ncanvas_tui.endpoints import redact, redact_url

TIMEOUT_S = 3.0


@dataclass
class Probe:
    reachable: bool | None           # None: not tried
    detail: str                      # one line: what the endpoint said
    models: list[str] = field(default_factory=list)   # what GET /models listed (empty: no list)
    status: str = ""                 # ok | refused | timeout | auth | model-missing | no-list | error


def probe(base_url: str, key: str, model: str, *, timeout: float = TIMEOUT_S) -> Probe:
    """Ask ``base_url`` for its model list (never raises)."""
    where = redact_url(base_url)
    try:
        import openai
    except ImportError:  # the core runs without the story extra: say so instead of failing doctor
        return Probe(None, f"not tried: the openai client is not installed (pip install 'ncanvas[story]') "
                     f"to check {where}", status="no-client")

    try:
        client = openai.OpenAI(base_url=base_url, api_key=key or "none", timeout=timeout, max_retries=0)
        page = client.models.list()
        models = sorted(str(m.id) for m in page.data)
    except openai.APITimeoutError:
        return Probe(False, f"no answer from {where} in {timeout:g} s", status="timeout")
    except openai.APIConnectionError as e:
        cause = e.__cause__ or e
        text = " ".join(str(cause).split())
        refused = isinstance(cause, ConnectionRefusedError) or "refused" in text.lower()
        return Probe(False, f"refused: nothing listening at {where}" if refused
                     else f"cannot connect to {where}: {redact(text, key)}",
                     status="refused" if refused else "error")
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        return Probe(True, f"auth failed (HTTP {e.status_code}): check the key", status="auth")
    except openai.NotFoundError:
        return Probe(True, "reachable (it lists no models: GET /models is HTTP 404)", status="no-list")
    except openai.APIStatusError as e:
        return Probe(True, f"reachable, but GET /models answered HTTP {e.status_code}", status="error")
    except Exception as e:  # noqa: BLE001 - a probe reports, it never fails doctor
        return Probe(False, f"{where}: {redact(' '.join(str(e).split()), key)}", status="error")
    if model in models:
        return Probe(True, f"reachable, model {model} is there", models, status="ok")
    shown = ", ".join(models[:5]) + (" …" if len(models) > 5 else "")
    return Probe(True, f"model missing: {model} is not among the {len(models)} it lists ({shown or 'none'})",
                 models, status="model-missing")


def probe_section(section: Any, *, timeout: float = TIMEOUT_S) -> Probe:
    """``probe`` for an [llm] / [imagegen] settings section; not tried (``reachable`` None) when a
    remote endpoint's key is not set: it could only say "auth failed"."""
    from ncanvas_tui.endpoints import is_local

    key = section.api_key().get()
    if section.api_key_env and not key and not is_local(section.base_url):
        return Probe(None, f"not tried: ${section.api_key_env} is not set", status="no-key")
    return probe(section.base_url, key, section.model, timeout=timeout)
