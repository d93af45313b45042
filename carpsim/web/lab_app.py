"""The lab's status pages: both nodes side by side, the topology, Force Off / Power On and a
live `unsinkable` run.

It only reads the nodes' control sockets and runs the lab's own actions (the code paths of
`carpsim lab kill/start` and `carpsim.lab.unsinkable.run`); it binds loopback in the host's
namespace and never puts a lab address there.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from aiohttp import web

from carpsim.errors import CarpsimError
from carpsim.lab import builder
from carpsim.lab.session import Lab
from carpsim.web import pages, security
from carpsim.web.lab_source import LabSource
from carpsim.web.live_run import LiveRun, RunRequest

log = logging.getLogger(__name__)


class LabActions:
    """Force Off, Power On and unsinkable, one at a time (the ``action`` topic says which)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.busy: str | None = None
        self.last: dict[str, Any] | None = None
        self.run = LiveRun()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def topic(self) -> dict[str, Any]:
        return {"busy": self.busy, "last": self.last}

    def _record(self, action: str, ok: bool, message: str) -> None:
        self.last = {"action": action, "ok": ok, "message": message, "at": time.time()}

    async def power(self, node: str, on: bool) -> web.Response:
        if self._lock.locked() or self.run.running:
            return web.json_response({"ok": False, "error": f"busy: {self.busy}"}, status=409)
        try:
            self.lab.node(node)
        except CarpsimError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=404)
        action = f"{'power on' if on else 'force off'} {node}"
        async with self._lock:
            self.busy = action
            loop = asyncio.get_running_loop()
            try:
                if on:
                    pid = await loop.run_in_executor(None, self.lab.start, node)
                    message = f"{node}: powered on (carpsim node pid {pid})"
                else:
                    await loop.run_in_executor(None, self.lab.kill, node)
                    message = f"{node}: forced off (SIGKILL, every link down, no goodbye)"
            except (CarpsimError, OSError) as exc:
                self._record(action, False, str(exc))
                return web.json_response({"ok": False, "error": str(exc)}, status=500)
            finally:
                self.busy = None
        self._record(action, True, message)
        return web.json_response({"ok": True, "message": message})

    async def unsinkable(self, body: Any) -> web.Response:
        if self._lock.locked() or self.run.running:
            return web.json_response({"ok": False, "error": f"busy: {self.busy}"}, status=409)
        try:
            req = RunRequest.from_json(body)
        except ValueError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        self.run.begin(req)
        self.busy = "unsinkable"
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, self.run.execute, self.lab.paths.prefix, req)

        async def wait() -> None:
            try:
                await fut
            except Exception:
                log.exception("web: unsinkable run failed")
            finally:
                self.busy = None
                self._record("unsinkable", self.run.state == "done", self.run.verdict or "")

        self._task = asyncio.create_task(wait())
        return web.json_response({"ok": True, "message": "unsinkable started"}, status=202)


def build(
    lab: Lab,
    *,
    token: str,
    allowed_hosts: frozenset[str],
    source: LabSource | None = None,
    interval: float = pages.POLL_INTERVAL_S,
) -> web.Application:
    """The lab's app (`source`: what is polled, by default the lab's own sockets and links)."""
    source = source or LabSource(lab)
    actions = LabActions(lab)
    meta = source.meta()

    async def snapshot() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        out: dict[str, Any] = await loop.run_in_executor(None, source.poll)
        out["meta"] = meta
        out["action"] = actions.topic()
        out["run"] = actions.run.snapshot()
        return out

    app = pages.make_app(snapshot, token=token, allowed_hosts=allowed_hosts, interval=interval)

    async def power(request: web.Request, on: bool) -> web.Response:
        return await actions.power(request.match_info["node"], on)

    async def unsinkable(request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"ok": False, "error": "body is not JSON"}, status=400)
        return await actions.unsinkable(body)

    app.router.add_post("/api/node/{node}/off", functools.partial(power, on=False))
    app.router.add_post("/api/node/{node}/on", functools.partial(power, on=True))
    app.router.add_post("/api/unsinkable", unsinkable)
    return app


async def serve(
    prefix: str | None, port: int, host: str = "127.0.0.1"
) -> tuple[web.AppRunner, str, str]:
    """Start the lab's pages; returns (runner, url, token). Binds loopback only."""
    if not (host.startswith("127.") or host in ("::1", "localhost")):
        raise CarpsimError(f"carpsim lab web binds loopback only, not {host!r}")
    builder.check_environment()
    lab = Lab.attach(prefix)
    token = security.new_token()
    app = build(lab, token=token, allowed_hosts=security.allowed_hosts_for(host))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = port
    if port == 0 and runner.addresses:
        bound = int(runner.addresses[0][1])
    return runner, f"http://{host}:{bound}/", token
