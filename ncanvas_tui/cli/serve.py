"""``ncanvas serve [--host H] [--port P] [--public-url URL]``: the same app in a browser.

textual-serve runs one ``ncanvas`` app process (same settings file) per browser tab and streams it
over a websocket. It has no authentication of its own, so this adds it: a random token in the
printed URL; the first request with it gets a cookie (and is redirected to the bare URL, so the
token leaves the address bar); every request (``/``, ``/ws``, static files) without that cookie is
refused (401 none, 403 wrong). The access log shows paths without query strings, so never the
token. ``[serve].max_sessions`` (default 1) tabs at once: each runs its own app and GPU context;
the next tab is told so.
"""

from __future__ import annotations

import argparse
import hmac
import secrets
import shlex
import sys
from typing import Any

from ncanvas_tui.cli.common import command, load_settings
from ncanvas_tui.errors import NcanvasError

COOKIE = "ncanvas_token"
LOOPBACK = "127.0.0.1"


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "serve", "serve the app to a browser (textual-serve; a token in the printed URL)", run,
                json_flag=False)
    p.add_argument("--host", default=LOOPBACK, metavar="H",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 opens it to the LAN)")
    p.add_argument("--port", type=port_number, default=8000, metavar="P", help="port (default 8000)")
    p.add_argument("--public-url", metavar="URL", default=None,
                   help="the URL browsers use (behind a proxy, or a name a phone resolves); "
                   "default: the LAN address with --host 0.0.0.0, else http://HOST:PORT")


def port_number(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be 1..65535, got {n}")
    return n


def lan_address() -> str:
    """This machine's address on the LAN (the one its default route leaves from); no packet is sent."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def public_url(host: str, port: int, given: str | None) -> str:
    if given:
        if not given.startswith(("http://", "https://")):
            raise NcanvasError(f"--public-url must be an http(s) URL, got {given!r}")
        return given.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = lan_address()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def app_command(settings: Any) -> str:
    """The command each tab runs: this ncanvas, with the same settings file."""
    cmd = [sys.executable, "-m", "ncanvas_tui"]
    if settings.source is not None:
        cmd += ["--settings", str(settings.source.resolve())]
    return shlex.join(cmd)


def make_server(settings: Any, host: str, port: int, url: str, token: str) -> Any:
    try:
        from aiohttp import web
        from aiohttp.abc import AbstractAccessLogger
        from textual_serve.server import Server
    except ImportError:
        raise NcanvasError("serve needs textual-serve: pip install 'ncanvas[serve]'") from None

    max_sessions = settings.serve.max_sessions
    busy_text = (f"ncanvas is already open in {max_sessions} browser tab(s) ([serve].max_sessions = "
                 f"{max_sessions}): each tab runs its own app and GPU context. Close the other tab, "
                 f"then reload this one.\n")

    def good(value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), token.encode())

    @web.middleware
    async def require_token(request: Any, handler: Any) -> Any:
        given = request.query.get("token")
        if given is not None:
            if not good(given):
                raise web.HTTPForbidden(text="ncanvas serve: wrong token\n")
            resp = web.HTTPSeeOther(request.rel_url.with_query(
                {k: v for k, v in request.query.items() if k != "token"}))
            resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
            return resp
        cookie = request.cookies.get(COOKIE)
        if cookie is None:
            raise web.HTTPUnauthorized(text="ncanvas serve: open the URL with its token (ncanvas serve "
                                            "printed it)\n")
        if not good(cookie):
            raise web.HTTPForbidden(text="ncanvas serve: wrong token\n")
        return await handler(request)

    class PathOnlyAccessLogger(AbstractAccessLogger):
        """``127.0.0.1 GET /ws 101``: the path, never the query string (the token)."""

        def log(self, request: Any, response: Any, time: float) -> None:
            print(f"{request.remote} {request.method} {request.path} {response.status}", file=sys.stderr,
                  flush=True)

    class NcanvasServer(Server):  # type: ignore[misc]
        sessions = 0

        async def _make_app(self) -> Any:
            app = await super()._make_app()
            app.middlewares.append(require_token)
            return app

        async def on_startup(self, app: Any) -> None:
            """textual-serve prints a banner here; the URL is printed once the port listens."""

        async def handle_index(self, request: Any) -> Any:
            if self.sessions >= max_sessions:
                return web.Response(status=503, text=busy_text)
            return await super().handle_index(request)

        async def handle_websocket(self, request: Any) -> Any:
            if self.sessions >= max_sessions:
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                await ws.close(code=1013, message=b"ncanvas: another tab has the app open")
                return ws
            NcanvasServer.sessions += 1
            try:
                return await super().handle_websocket(request)
            finally:
                NcanvasServer.sessions -= 1

        def serve(self, debug: bool = False) -> None:
            import asyncio
            import logging
            import signal

            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

            async def main() -> None:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                runner = web.AppRunner(await self._make_app(), access_log_class=PathOnlyAccessLogger,
                                       access_log=logging.getLogger("ncanvas.serve"))
                await runner.setup()
                try:
                    try:
                        await web.TCPSite(runner, host, port).start()
                    except OSError as e:
                        raise NcanvasError(f"serve: cannot listen on {host}:{port}: "
                                           f"{str(e).rsplit(': ', 1)[-1]}") from None
                    # only now that the port listens: the URL (a test or a user may open it at once)
                    print(f"ncanvas serve: open {url}/?token={token}", flush=True)
                    print(f"ncanvas serve: {max_sessions} session(s) at a time; Ctrl+C stops", flush=True)
                    await stop.wait()
                finally:
                    await runner.cleanup()

            asyncio.run(main())

    server = NcanvasServer(app_command(settings), host=host, port=port, title="ncanvas", public_url=url)
    return server


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"ncanvas: warning: serving on {args.host}: anyone on the network who has the URL (with its "
              f"token) can use the app and this machine's GPU", file=sys.stderr, flush=True)
    url = public_url(args.host, args.port, args.public_url)
    token = secrets.token_urlsafe(24)
    make_server(settings, args.host, args.port, url, token).serve()
    return 0
