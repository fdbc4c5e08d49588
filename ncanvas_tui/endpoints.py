"""Endpoint rules shared by the story LLM ([llm]) and the picture provider ([imagegen]).

``redact_url`` / ``redact``: the one redaction used wherever an endpoint or a server's
answer is shown or stored (errors, logs, doctor, the history's settings): a URL loses its
``user:password@`` and the values of secret-looking query parameters (``key``, ``token``,
``sig``...), and a text loses the given secrets and anything that looks like an API key.

``require_key``: when ``api_key_env`` names an environment variable that is not set, a
remote endpoint is a one-line settings error before any request; a local, loopback or
private-network endpoint (Ollama, vLLM, llama.cpp, AUTOMATIC1111...) goes ahead without a
key, and says so once per process as a one-line warning on stderr.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable

from ncanvas_tui.errors import SettingsError

_warned: set[tuple[str, str, str]] = set()
MASK = "***"
_KEYLIKE = re.compile(r"\b(sk|nvapi|key)-[A-Za-z0-9_\-*.]{6,}")
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|pwd|sig|signature|auth|credential|session)",
                           re.IGNORECASE)


def redact_url(url: str) -> str:
    """``http://user:pass@host/v1?api-key=abc&x=1`` -> ``http://***@host/v1?api-key=***&x=1``."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return _URL.sub(MASK, url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(k) for k, _ in pairs):
            query = urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, *secrets: str) -> str:
    """One line with the given secrets, anything key-like and every URL's credentials masked."""
    text = str(text)
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, MASK)
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return " ".join(_KEYLIKE.sub(MASK, text).split())

_lock = threading.Lock()


def is_local(url: str) -> bool:
    """A server on this machine or the LAN (Ollama, vLLM, llama.cpp...): no key needed."""
    import ipaddress
    from urllib.parse import urlparse

    host = (urlparse(url).hostname or "").lower()
    if host in ("localhost", "") or host.endswith((".local", ".lan", ".internal")) or "." not in host:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def require_key(section: str, api_key_env: str, key: str, base_url: str,
                warn: Callable[[str], object] | None = None) -> str:
    """The key to send ("" for none). Raises SettingsError for a remote endpoint whose key's
    env var is unset; warns once (per section, variable and URL) for a local one."""
    if not api_key_env or key:
        return key
    if not is_local(base_url):
        raise SettingsError(f"[{section}].api_key_env: environment variable {api_key_env} is not set (the key "
                            f"for {redact_url(base_url)}); export it, or set [{section}].api_key_env = \"\" for a server "
                            "that needs none")
    with _lock:
        first = (section, api_key_env, base_url) not in _warned
        _warned.add((section, api_key_env, base_url))
    if first:
        (warn or _stderr)(f"ncanvas: warning: ${api_key_env} is not set; calling {redact_url(base_url)} without a key "
                          f"(set [{section}].api_key_env = \"\" for a server that needs none)")
    return key
