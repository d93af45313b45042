"""Who may talk to the pages: the Host and Origin checks and the per-run token.

A page on 127.0.0.1 is still reachable from any site the student's browser opens: a hostile
page can POST to http://127.0.0.1:PORT/ (a "simple" cross-site request needs no preflight) or
rebind its own DNS name to 127.0.0.1. So every request must name an allowed host (defeats DNS
rebinding), and every mutating request must carry the token embedded in the page (a foreign
site cannot read it) and, when the browser sends an Origin, come from the page's own origin.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

TOKEN_HEADER = "X-Carpsim-Token"  # noqa: S105 - a header name, not a secret
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def host_name(host_header: str) -> str:
    """The host part of a Host header value, lower-cased ('[::1]:80' -> '[::1]')."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def refusal(request: web.Request, token: str | None, allowed_hosts: frozenset[str]) -> str | None:
    """Why this request must be refused (None: let it through)."""
    host = request.headers.get("Host", "")
    if host_name(host) not in allowed_hosts:
        return f"host {host!r} is not served here"
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme != "http" or parts.netloc.lower() != host.strip().lower():
            return f"cross-origin request from {origin!r}"
    if token is None:
        return "this server takes no actions"
    given = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return f"missing or wrong {TOKEN_HEADER} header"
    return None


def guard(
    token: str | None, allowed_hosts: Iterable[str]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """aiohttp middleware applying `refusal` to every request (403 with the reason)."""
    hosts = frozenset(h.lower() for h in allowed_hosts)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        why = refusal(request, token, hosts)
        if why is not None:
            return web.json_response({"ok": False, "error": why}, status=403)
        return await handler(request)

    return middleware


def allowed_hosts_for(bind_host: str) -> frozenset[str]:
    """Names a browser may use for a server bound to `bind_host`."""
    names = {bind_host.lower(), f"[{bind_host.lower()}]" if ":" in bind_host else bind_host}
    if bind_host in LOOPBACK_NAMES or bind_host.startswith("127."):
        names |= LOOPBACK_NAMES
    return frozenset(names)
