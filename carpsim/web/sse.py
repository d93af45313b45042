"""Server-sent events: a topic snapshot, its diff, and a hub fanning changes out to browsers.

The server polls its sources into one snapshot (topic -> JSON-able value). `diff` finds the
topics that changed; only those go out, as one ``update`` event. A browser that connects (or
reconnects: EventSource does so on its own) first gets the whole snapshot, so a change missed
while it was away is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

QUEUE_DEPTH = 32
"""Updates buffered per browser; a browser that falls this far behind is dropped (it reconnects
and gets a fresh snapshot), so a stalled tab cannot make the server hold memory without bound."""
KEEPALIVE_S = 15.0


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """topic -> new value for every topic that changed or appeared; a removed topic maps to None."""
    out = {k: v for k, v in new.items() if k not in old or old[k] != v}
    out.update({k: None for k in old if k not in new})
    return out


def encode(event: str, data: Any) -> bytes:
    """One SSE frame (compact JSON on a single data line: JSON never needs a raw newline)."""
    body = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return f"event: {event}\ndata: {body}\n\n".encode()


class Hub:
    def __init__(self) -> None:
        self.current: dict[str, Any] = {}
        self._clients: set[asyncio.Queue[bytes | None]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, snapshot: Mapping[str, Any]) -> dict[str, Any]:
        """Take a full snapshot; push what changed to every browser. Returns the change."""
        changes = diff(self.current, snapshot)
        if not changes:
            return changes
        self.current = dict(snapshot)
        frame = encode("update", changes)
        for q in list(self._clients):
            try:
                q.put_nowait(frame)
            except asyncio.QueueFull:
                self._clients.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.get_nowait()
                    q.put_nowait(None)
        return changes

    def close(self) -> None:
        for q in list(self._clients):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        self._clients.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /events: the snapshot, then updates until the browser goes away."""
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        q: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_DEPTH)
        self._clients.add(q)
        try:
            await resp.write(b"retry: 1000\n\n" + encode("snapshot", self.current))
            while True:
                try:
                    frame = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    frame = b": keepalive\n\n"
                if frame is None:
                    break
                await resp.write(frame)
        except ConnectionError:
            pass
        finally:
            self._clients.discard(q)
        return resp
