"""The DHCP, state-table and HA-sync panels in Chromium, fed a node status that has them all.

DHCP and config sync land in the node status as ``dhcp`` and ``configsync`` sections; the page
must render them when present (and say "not configured" when absent, see test_web_node). This
serves `node_app` in-process on loopback with a status callable, so it needs no namespace, and
changes the status under the open page to show the panels follow it live.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from carpsim.web import node_app, security

pytestmark = [pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def node_status() -> dict[str, Any]:
    now = time.time()
    return {
        "node": "fw1",
        "demote": 32,
        "admin_demote": 0,
        "vhids": [
            {"vhid": 1, "interface": "lan", "vips": ["192.0.2.254/24"], "state": "BACKUP",
             "advbase": 1, "advskew": 100, "master_down_s": 3.39},
            {"vhid": 2, "interface": "dmz", "vips": ["198.51.100.254/24"], "state": "INIT",
             "advbase": 1, "advskew": 100, "master_down_s": 3.39},
        ],
        "statesync": {
            "enabled": True, "ready": False, "reason": "bulk_pending", "demote": 32,
            "interface": "sync", "peer": "192.0.2.6", "link_up": True, "bulk_phase": "requested",
            "states": {"kernel": 12, "mirror": 40, "own": 12, "peer": 28},
            "bulk": {"count": 0, "served": 0, "gave_up": 0}, "frames": {"tx": 3, "rx": 9},
            "drops": {"bad_checksum": 2},
            "recent": [{"proto": "tcp", "src": "192.0.2.10:40312", "dst": "203.0.113.10:5001",
                        "state": "ESTABLISHED"}],
        },
        "dhcp": [
            {
                "interface": "lan", "gateway": "192.0.2.254", "gateway_is_physical": False,
                "pool": {"range": "192.0.2.100 - 192.0.2.199", "lease_time": 7200},
                "leases": [
                    {"ip": "192.0.2.100", "mac": "02:00:00:00:00:10", "hostname": "client1",
                     "start": now - 60, "end": now + 7140, "binding_state": "active"},
                ],
                "failover": {"my_state": "normal", "peer_state": "normal", "mclt": 300},
            }
        ],
        "configsync": {
            "peer_url": "http://192.0.2.6:8443/xmlrpc", "last_sync": now - 5, "result": "ok",
            "last_error": None, "syncs_ok": 4, "syncs_failed": 1,
        },
    }  # fmt: skip


class Served:
    """node_app on 127.0.0.1 in a thread of its own (the browser drives the main thread)."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = node_app.build(
            lambda: self.status, "fw1", allowed_hosts=security.allowed_hosts_for("127.0.0.1")
        )
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"

    def __enter__(self) -> Served:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium; the Makefile does)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser.new_page(viewport={"width": 1200, "height": 1200})
        finally:
            browser.close()


def test_dhcp_states_and_ha_sync_panels_render_and_follow_the_status(
    page: Any, tmp_path: Any
) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    with Served(node_status()) as served:
        page.goto(served.url)
        expect(page.locator('#carp-fw1 tr[data-vhid="1"] .carp-state')).to_have_text("BACKUP")
        init = page.locator('#carp-fw1 tr[data-vhid="2"] .carp-state')
        expect(init).to_have_text("INIT")
        assert "st-INIT" in (init.get_attribute("class") or "")
        carp = page.locator("#carp-fw1")
        expect(carp).to_contain_text("CARP demoted by 32")
        expect(carp).to_contain_text("state sync 32 (not ready: bulk_pending)")

        dhcp = page.locator("#dhcp-fw1")
        expect(dhcp).to_contain_text("Failover Status")
        expect(dhcp.locator(".dhcp-failover")).to_contain_text("normal")
        expect(dhcp).to_contain_text("mclt: 300")
        expect(dhcp).to_contain_text("02:00:00:00:00:10")
        expect(dhcp).to_contain_text("client1")
        expect(dhcp).to_contain_text("the CARP VIP")
        expect(dhcp).to_contain_text("192.0.2.100 - 192.0.2.199")

        states = page.locator("#states-fw1")
        expect(states).to_contain_text("12 / 40")
        expect(states).to_contain_text("NOT READY")
        expect(states).to_contain_text("203.0.113.10:5001")
        expect(states).to_contain_text("bad_checksum 2")

        ha = page.locator("#hasync-fw1")
        expect(ha).to_contain_text("http://192.0.2.6:8443/xmlrpc")
        expect(ha).to_contain_text("4 / 1")
        page.screenshot(path=str(tmp_path / "panels.png"), full_page=True)

        # The peer goes away: the status changes under the open page, which follows it.
        changed = node_status()
        changed["dhcp"][0]["failover"] = {"my_state": "communications-interrupted",
                                          "peer_state": "unknown-state"}  # fmt: skip
        changed["configsync"].update(result="failed", last_error="connection refused")
        changed["vhids"][0]["state"] = "MASTER"
        served.status = changed
        expect(dhcp.locator(".dhcp-failover")).to_contain_text("communications-interrupted")
        expect(ha).to_contain_text("connection refused")
        expect(page.locator('#carp-fw1 tr[data-vhid="1"] .carp-state')).to_have_text("MASTER")

        # And the sections disappear again: "not configured", not stale data.
        bare = node_status()
        del bare["dhcp"], bare["configsync"]
        served.status = bare
        expect(dhcp).to_contain_text("DHCP server: not configured on this node")
        expect(ha).to_contain_text("not configured on this node")
    assert errors == []
