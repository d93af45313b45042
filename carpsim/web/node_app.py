"""A running node's own status pages (``carpsim node`` with a ``[web]`` section).

Self-contained: it takes a callable returning the node's status (the same dict its control
socket answers to ``status``) and serves the pages for that node alone. Read-only: a node's
page has no actions, so there is no token and every POST is refused.

    runner = await node_app.serve(cfg.web, control.status, cfg.name)   # in node start()
    await runner.cleanup()                                             # in node stop()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from carpsim.errors import ConfigError
from carpsim.web import pages, security
from carpsim.web.config import WebConfig
from carpsim.web.lab_source import node_topic

StatusFn = Callable[[], dict[str, Any]]


def build(
    status: StatusFn,
    name: str,
    *,
    allowed_hosts: frozenset[str],
    interval: float = pages.POLL_INTERVAL_S,
) -> web.Application:
    meta = {"mode": "node", "title": f"node {name}", "nodes": [name], "topology": None}

    async def snapshot() -> dict[str, Any]:
        try:
            current: dict[str, Any] | None = status()
        except Exception:  # a status that cannot be built reads as a silent node
            current = None
        return {"meta": meta, f"node:{name}": node_topic(name, current)}

    return pages.make_app(snapshot, token=None, allowed_hosts=allowed_hosts, interval=interval)


async def serve(cfg: WebConfig, status: StatusFn, name: str) -> web.AppRunner:
    """Start serving on cfg.host:cfg.port (inside the node's own namespace)."""
    app = build(status, name, allowed_hosts=security.allowed_hosts_for(cfg.host))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError("web.listen", f"cannot listen on {cfg.listen}: {exc.strerror}") from None
    return runner
