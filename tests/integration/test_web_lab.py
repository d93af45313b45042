"""`carpsim lab web` in a real Chromium (Playwright): the seed's screens, live, during a failover.

A private reference lab (unique prefix, always torn down) and the real CLI server on a free
loopback port. The browser loads the lab page once and is never reloaded: node1 MASTER and node2
BACKUP on every VHID; Force Off node1 and node2 turns MASTER within its master-down interval
+ 2 s; Power On and node1 takes every VHID back. A screenshot of each step goes to the test's
tmp_path; the page's console must stay free of errors. Then cross-site and token-less POSTs are
refused with 403 and the nodes are untouched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from carpsim.lab import nodes
from carpsim.lab.session import Lab
from carpsim.net import netns
from carpsim.web.lab_source import master_down_s
from carpsim.web.security import TOKEN_HEADER

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
MARGIN_S = 2.0


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    the_lab = Lab.create("reference", prefix=netns.unique_prefix("web"))
    try:
        the_lab.up()
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="module")
def url(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`carpsim lab web --port 0` as a student runs it; its URL from its first line."""
    log = tmp_path_factory.mktemp("web") / "server.log"
    argv = [sys.executable, "-m", "carpsim", "lab", "--prefix", lab.paths.prefix, "web"]
    with open(log, "wb") as err:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            [*argv, "--port", "0"], stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert found, f"no URL in {line!r}: {log.read_text()}"
        yield found.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, log.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium; the Makefile does)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def vhids(lab: Lab) -> list[int]:
    return sorted(v.vhid for v in lab.topology.vips)


def carp_state(page: Any, node: str, vhid: int) -> Any:
    return page.locator(f'#carp-{node} tr[data-vhid="{vhid}"] .carp-state')


def expect_states(page: Any, lab: Lab, want: dict[str, str], timeout_s: float) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415 - imported once the fixture found it

    deadline = time.monotonic() + timeout_s
    for node, state in want.items():
        for vhid in vhids(lab):
            left = max(0.05, deadline - time.monotonic())
            expect(carp_state(page, node, vhid)).to_have_text(state, timeout=left * 1000)


def post(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def snapshot(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}api/snapshot", timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def test_dhcp_failover_normal_and_a_config_edit_synced_live_in_the_browser(
    lab: Lab, url: str, browser: Any, tmp_path: Path
) -> None:
    """Status > DHCP Leases says normal for every pool on both nodes; an edit on node1 (as a
    student makes it, `carpsim lab config`) shows on High Avail. Sync as node1's push OK to
    node2's xmlrpc.php and as node2's received sync from node1, without a reload."""
    from playwright.sync_api import expect  # noqa: PLC0415

    assert lab.wait_master("node1", timeout=15.0)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(url)
    expect(page.locator("#live")).to_have_text("live", timeout=10_000)
    # fromlab gives every inside segment with a VIP a dhcpd failover pool
    vip_segments = {v.segment for v in lab.topology.vips}
    pools = [s for s in lab.topology.firewall.inside if s in vip_segments]
    assert pools
    for node in ("node1", "node2"):
        rows = page.locator(f"#dhcp-{node} .dhcp-failover")
        expect(rows).to_have_count(len(pools), timeout=15_000)
        for i in range(len(pools)):
            cells = rows.nth(i).locator("td")
            expect(cells.nth(1)).to_have_text("normal", timeout=30_000)  # My State
            expect(cells.nth(3)).to_have_text("normal", timeout=30_000)  # Peer State

    ha1, ha2 = page.locator("#hasync-node1"), page.locator("#hasync-node2")
    peer = lab.topology.host("node2").addresses["sync"]
    me = lab.topology.host("node1").addresses["sync"]
    expect(ha1.locator(".hasync-peer")).to_have_text(
        re.compile(rf"^https://{re.escape(str(peer))}:\d+/xmlrpc\.php$")
    )
    expect(ha2.locator(".hasync-push-none")).to_be_visible()
    before = ha1.locator(".hasync-counts").text_content() or ""
    ok_before = int(before.split("/")[0])
    argv = [sys.executable, "-m", "carpsim", "lab", "--prefix", lab.paths.prefix, "config",
            "node1", "add-rule", "--interface", "lan", "--protocol", "tcp",
            "--destination-port", "8080", "--descr", "web test"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "xmlrpc.php" in done.stdout, done.stdout  # "pushing to https://.../xmlrpc.php"
    expect(ha1.locator(".hasync-counts")).to_have_text(f"{ok_before + 1} / 0", timeout=15_000)
    expect(ha1.locator(".hasync-push-result")).to_have_text("ok")
    expect(ha1.locator(".hasync-push-error")).to_have_text("-")
    expect(ha2.locator(".hasync-from")).to_have_text(str(me), timeout=5_000)
    expect(ha2.locator(".hasync-recv-result")).to_have_text("ok")
    page.locator("#hasync").screenshot(path=str(tmp_path / "0-ha-sync-after-edit.png"))
    assert errors == []
    page.close()


def test_failover_and_failback_live_in_the_browser(
    lab: Lab, url: str, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    loads: list[str] = []
    page.on("load", lambda _p: loads.append("load"))
    page.goto(url)
    expect(page.locator("#live")).to_have_text("live", timeout=10_000)

    # 1. The reference state: node1 MASTER, node2 BACKUP on every VHID; the topology agrees.
    expect_states(page, lab, {"node1": "MASTER", "node2": "BACKUP"}, 10.0)
    for vhid in vhids(lab):
        label = page.locator(f'#topo .vip-label[data-vhid="{vhid}"]')
        expect(label).to_have_attribute("data-holder", "node1")
    assert page.locator("#topo").get_by_text("SYNC 172.16.1.4/30").count() == 1
    # The lab's nodes serve DHCP on LAN/DMZ as a failover pair, router = the VIP.
    dhcp = page.locator("#dhcp-node1")
    expect(dhcp).to_contain_text("Failover Status")
    expect(dhcp).to_contain_text("the CARP VIP")
    expect(dhcp.locator(".dhcp-failover").first).to_contain_text("normal", timeout=15_000)
    page.screenshot(path=str(tmp_path / "1-node1-master.png"), full_page=True)

    # 2. Force Off node1 from the page: node2 takes every VHID within master-down + 2 s.
    budget = master_down_s(lab.topology, "node2") + MARGIN_S
    clicked = time.monotonic()
    page.locator('button[data-action="off"][data-node="node1"]').click()
    expect_states(page, lab, {"node2": "MASTER"}, budget)
    took = time.monotonic() - clicked
    assert took <= budget, f"node2 MASTER on the page after {took:.2f} s (budget {budget:.2f} s)"
    print(f"\nweb: node2 MASTER on the page {took:.2f} s after the click (budget {budget:.2f} s)")
    expect(page.locator("#power-state-node1")).to_have_text("off", timeout=5_000)
    expect(carp_state(page, "node1", vhids(lab)[0])).to_have_text("OFF")
    for vhid in vhids(lab):
        label = page.locator(f'#topo .vip-label[data-vhid="{vhid}"]')
        expect(label).to_have_attribute("data-holder", "node2")
    page.screenshot(path=str(tmp_path / "2-node1-off-node2-master.png"), full_page=True)

    # 3. Power On node1: preempt gives it every VHID back, node2 returns to BACKUP.
    expect(page.locator('button[data-action="on"][data-node="node1"]')).to_be_enabled()
    page.locator('button[data-action="on"][data-node="node1"]').click()
    expect_states(page, lab, {"node1": "MASTER", "node2": "BACKUP"}, 20.0)
    page.screenshot(path=str(tmp_path / "3-failback-node1-master.png"), full_page=True)

    assert loads == ["load"], "the page was reloaded"
    assert errors == []
    for name in (
        "1-node1-master.png",
        "2-node1-off-node2-master.png",
        "3-failback-node1-master.png",
    ):
        assert (tmp_path / name).stat().st_size > 10_000
    page.close()


def test_cross_site_and_token_less_posts_are_refused_and_nothing_happens(
    lab: Lab, url: str, browser: Any
) -> None:
    assert lab.wait_master("node1", timeout=15.0)
    pid = nodes.daemon_pid(lab.paths, "node1")
    assert pid is not None
    page = browser.new_page()
    page.goto(url)
    token = page.locator('meta[name="carpsim-token"]').get_attribute("content")
    assert token
    kill = f"{url}api/node/node1/off"
    before = snapshot(url)["action"]
    assert post(kill, {}) == 403
    assert post(kill, {TOKEN_HEADER: "not-the-token"}) == 403
    assert post(kill, {TOKEN_HEADER: token, "Origin": "http://evil.example"}) == 403
    assert post(kill, {"Host": "evil.example"}) == 403
    assert post(f"{url}api/unsinkable", {"Origin": "http://evil.example"}) == 403

    # A hostile page in the same browser: a "simple" cross-site POST needs no preflight.
    evil = browser.new_page()
    evil.set_content("<html><body>elsewhere</body></html>")
    evil.evaluate(
        "async (u) => { await fetch(u, {method: 'POST', mode: 'no-cors', body: 'x'}); }", kill
    )
    evil.close()

    time.sleep(1.0)
    assert nodes.daemon_pid(lab.paths, "node1") == pid
    assert set(lab.states()["node1"].values()) == {"MASTER"}
    assert snapshot(url)["action"] == before
    page.close()


def test_unsinkable_from_the_page_draws_its_probes_live_and_ends_with_the_verdict(
    lab: Lab, url: str, browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect  # noqa: PLC0415

    assert lab.wait_master("node1", timeout=15.0)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.goto(url)
    expect(page.locator("#live")).to_have_text("live", timeout=10_000)
    settle = master_down_s(lab.topology, "node2") + 1.5
    page.fill("#run-settle", f"{settle:.1f}")
    page.fill("#run-streams", "2")
    page.locator("#run-start").click()

    # While it runs: the ping curve, the lost probes and the kill mark appear, no reload.
    expect(page.locator("#run-state")).to_have_text("running", timeout=10_000)
    chart = page.locator("#run-chart svg")
    expect(chart.locator("polyline").first).to_be_visible(timeout=15_000)
    expect(chart.get_by_text("kill", exact=True)).to_be_visible(timeout=20_000)
    assert page.locator("#run-state").text_content() == "running"
    page.locator("#unsinkable").screenshot(path=str(tmp_path / "4-unsinkable-live.png"))

    # The end: the verdict, the power-on mark, the lab back in the reference state.
    expect(page.locator("#run-state")).to_contain_text("done", timeout=90_000)
    expect(page.locator("#run-verdict")).to_contain_text("UNSINKABLE:")
    expect(chart.get_by_text("power-on", exact=True)).to_be_visible()
    verdict = (page.locator("#run-state").text_content() or "").split(": ", 1)[1]
    assert verdict in {"IDEAL", "REALISTIC", "FAILURE"}
    page.locator("#unsinkable").screenshot(path=str(tmp_path / "5-unsinkable-verdict.png"))
    expect_states(page, lab, {"node1": "MASTER", "node2": "BACKUP"}, 15.0)
    assert errors == []
    page.close()
