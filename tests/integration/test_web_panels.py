"""The CARP, DHCP, state-table and HA-sync panels in Chromium, fed real node statuses.

tests/vectors/status/ holds what node1 and node2 of a running reference lab answered on their
control sockets (DHCP failover, a config sync pushed by node1, a client flow; its README says
how it was captured). They are served side by side through the pages' real app (`node_topic` +
`pages.make_app`) on loopback, so this needs no namespace; then the statuses change under the
open page, which must follow them live, and lose sections, which must read "not configured".
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from carpsim.web import pages, security
from carpsim.web.lab_source import node_topic

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
VECTORS = Path(__file__).parents[1] / "vectors" / "status"
NODES = ("node1", "node2")


def captured() -> dict[str, dict[str, Any]]:
    return {n: json.loads((VECTORS / f"{n}.json").read_text()) for n in NODES}


class Served:
    """The pages' app on 127.0.0.1 in a thread of its own (the browser drives the main thread)."""

    def __init__(self, statuses: dict[str, dict[str, Any]]) -> None:
        self.statuses = statuses
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
        meta = {"mode": "node", "title": "captured", "nodes": list(NODES), "topology": None}

        async def snapshot() -> dict[str, Any]:
            current = self.statuses
            return {"meta": meta, **{f"node:{n}": node_topic(n, current.get(n)) for n in NODES}}

        app = pages.make_app(
            snapshot, token=None, allowed_hosts=security.allowed_hosts_for("127.0.0.1")
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


def test_panels_show_the_captured_statuses_and_follow_them(page: Any, tmp_path: Any) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    real = captured()
    with Served(copy.deepcopy(real)) as served:
        page.goto(served.url)
        for vhid in (1, 2, 3):
            for name, want in (("node1", "MASTER"), ("node2", "BACKUP")):
                row = page.locator(f'#carp-{name} tr[data-vhid="{vhid}"] .carp-state')
                expect(row).to_have_text(want)
        expect(page.locator("#carp-node2")).to_contain_text("192.168.110.251")  # advert source

        # Status > DHCP Leases: both pools in failover state normal on both nodes, one lease.
        for name, role in (("node1", "primary"), ("node2", "secondary")):
            dhcp = page.locator(f"#dhcp-{name}")
            fo = dhcp.locator(".dhcp-failover")
            expect(fo).to_have_count(2)
            for i, pool in enumerate(("dhcp_lan", "dhcp_dmz")):
                expect(fo.nth(i).locator("td").nth(0)).to_have_text(pool)
                expect(fo.nth(i).locator("td").nth(1)).to_have_text("normal")
                expect(fo.nth(i).locator("td").nth(3)).to_have_text("normal")
            expect(dhcp).to_contain_text(f"role: {role}")
            expect(dhcp).to_contain_text("mclt: 600")
            lease = real[name]["dhcp"][0]["leases"][0]
            expect(dhcp).to_contain_text(lease["mac"])
            expect(dhcp).to_contain_text(lease["ip"])
            expect(dhcp).to_contain_text("the CARP VIP")
            expect(dhcp).not_to_contain_text("messages_in")  # counters stay in the JSON

        # Diagnostics > States: the client flow, node1's own and node2's from the peer.
        (sport,) = [r["src"] for r in real["node1"]["statesync"]["recent"]
                    if r["dst"] == "203.0.113.10:5001"]  # fmt: skip
        flow = f"{sport} -> 203.0.113.10:5001"
        assert sport.startswith("192.168.110.10:")  # client1's flow, before the outbound NAT
        for name, origin in (("node1", "this node"), ("node2", "the peer (synced)")):
            states = page.locator(f"#states-{name}")
            row = states.locator("tr.recent-state", has_text=flow)
            expect(row).to_have_count(1)
            expect(row).to_contain_text("ESTABLISHED")
            expect(row).to_contain_text(origin)
            expect(states).to_contain_text("ready")
            expect(states.locator("tr.recent-state")).to_have_count(
                len(real[name]["statesync"]["recent"])
            )

        # High Avail. Sync: node1 pushed (to the peer's xmlrpc.php), node2 received it.
        ha1, ha2 = page.locator("#hasync-node1"), page.locator("#hasync-node2")
        expect(ha1.locator(".hasync-peer")).to_have_text("https://172.16.1.6:443/xmlrpc.php")
        expect(ha1.locator(".hasync-push-result")).to_have_text("ok")
        expect(ha1).to_contain_text("XMLRPC sync successfully completed")
        expect(ha1.locator(".hasync-recv-none")).to_have_text("nothing received yet")
        expect(ha2.locator(".hasync-push-none")).to_contain_text(
            "Synchronize Config to IP: not set"
        )
        expect(ha2.locator(".hasync-from")).to_have_text("172.16.1.5")
        expect(ha2.locator(".hasync-recv-result")).to_have_text("ok")
        expect(ha2).to_contain_text("Merged in config from XMLRPC client")
        page.screenshot(path=str(tmp_path / "panels.png"), full_page=True)

        # node1 is forced off: node2 takes over, its pools stop hearing the peer, node1's next
        # push would fail, and a wrong-password call reaches node2. The page follows.
        changed = copy.deepcopy(real)
        n2 = changed["node2"]
        for v in n2["vhids"]:
            v["state"] = "MASTER"
        for pool in n2["dhcp"]:
            pool["failover"].update(my_state="communications-interrupted", link="connecting")
        rx = n2["configsync"]["received"]
        rx.update(result="fault", faults=1, last_error="Authentication failed: Invalid username")
        n2["configsync"]["faults"] = {"-1": 1}
        n2["statesync"]["recent"].insert(0, {
            "proto": "tcp", "src": "192.168.110.11:50000", "dst": "203.0.113.10:5001",
            "state": "SYN_SENT", "origin": "own",
        })  # fmt: skip
        n1 = changed["node1"]["configsync"]
        n1.update(result="failed", syncs_failed=1, last_error="A communications error occurred")
        served.statuses = changed
        expect(page.locator('#carp-node2 tr[data-vhid="1"] .carp-state')).to_have_text("MASTER")
        fo2 = page.locator("#dhcp-node2 .dhcp-failover").nth(0)
        expect(fo2.locator("td").nth(1)).to_have_text("communications-interrupted")
        expect(ha2.locator(".hasync-recv-result")).to_have_text("fault")
        expect(ha2.locator(".hasync-recv-error")).to_contain_text("Authentication failed")
        expect(ha2.locator(".hasync-faults")).to_contain_text("-1 (bad username or password) x1")
        expect(ha1.locator(".hasync-push-result")).to_have_text("failed")
        expect(ha1.locator(".hasync-push-error")).to_have_text("A communications error occurred")
        new = page.locator("#states-node2 tr.recent-state").nth(0)
        expect(new).to_contain_text("192.168.110.11:50000 -> 203.0.113.10:5001")
        expect(new).to_contain_text("SYN_SENT")
        page.screenshot(path=str(tmp_path / "panels-changed.png"), full_page=True)

        # And sections disappear again: "not configured", not stale data.
        bare = copy.deepcopy(real)
        del bare["node1"]["dhcp"], bare["node1"]["configsync"]
        bare["node1"]["statesync"]["recent"] = []
        served.statuses = bare
        expect(page.locator("#dhcp-node1")).to_contain_text(
            "DHCP server: not configured on this node"
        )
        expect(ha1).to_contain_text("not configured on this node")
        expect(page.locator("#states-node1")).to_contain_text("no state seen or installed yet")
        expect(ha2.locator(".hasync-recv-result")).to_have_text("ok")
    assert errors == []
