"""What the lab app and a node's app share: the page, its static files, the poll loop.

The page is one HTML file for both (the ``meta`` topic says which), its token (if any) put in a
``<meta>`` tag at serve time. Static files are package data read once; a strict CSP keeps the
page on this server alone (no CDN, no inline script: the lab has no internet anyway).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from carpsim.web import security
from carpsim.web.sse import Hub

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.22
"""~4.5 polls a second: a takeover shows within a quarter second of the daemon reporting it."""
STATIC = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)

Snapshot = Callable[[], Awaitable[dict[str, Any]]]


def _read(name: str) -> bytes:
    return resources.files("carpsim.web").joinpath("static", name).read_bytes()


@web.middleware
async def _headers(request: web.Request, handler: security.Handler) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers.setdefault("Content-Security-Policy", CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def make_app(
    snapshot: Snapshot,
    *,
    token: str | None,
    allowed_hosts: frozenset[str],
    interval: float = POLL_INTERVAL_S,
) -> web.Application:
    """The shared skeleton: guard, page, static files, /events and /api/snapshot.

    `snapshot` is awaited every `interval` s; what changed is pushed to every browser.
    """
    app = web.Application(middlewares=[security.guard(token, allowed_hosts), _headers])
    hub = Hub()
    app[HUB] = hub
    page = _read("index.html").decode()
    page = page.replace("{{TOKEN}}", html.escape(token or "", quote=True))
    files = {name: (_read(name), ctype) for name, ctype in STATIC.items()}

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def static(request: web.Request) -> web.Response:
        entry = files.get(request.match_info["name"])
        if entry is None:
            raise web.HTTPNotFound()
        return web.Response(body=entry[0], content_type=entry[1])

    async def current(_request: web.Request) -> web.Response:
        return web.json_response(hub.current)

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/events", hub.handle)
    app.router.add_get("/api/snapshot", current)

    async def poller(_app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    hub.publish(await snapshot())
                except Exception:  # a failed poll must not end the live view
                    log.exception("web: status poll failed")
                await asyncio.sleep(interval)

        hub.publish(await snapshot())
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_streams(_app: web.Application) -> None:
        # Before the server waits for open handlers: end every event stream first.
        hub.close()

    app.cleanup_ctx.append(poller)
    app.on_shutdown.append(close_streams)
    return app
