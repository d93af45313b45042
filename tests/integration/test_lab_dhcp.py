"""DHCP failover in the reference lab, with the real `carpsim node` daemons and real dhclients.

Both nodes serve LAN and DMZ as a failover pair over their own LAN/DMZ addresses (TCP 519/520),
handing out router = DNS = the segment's VIP. A new client is answered by its RFC 3074 hash
owner; with node1 forced off, node2 goes communications-interrupted and serves a new client
from its own pool; node1 powered on again -> both NORMAL and the lease databases agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from carpsim.dhcp.failover.loadbal import hba_from_split, primary_serves
from carpsim.lab import dhcp_probe, nodes
from carpsim.lab.session import Lab
from carpsim.net import netns
from carpsim.runtime import control

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

LAN_VIP = "192.168.110.254"
NODE_LAN = {"node1": "192.168.110.251", "node2": "192.168.110.252"}


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    lab = Lab.create("reference", prefix=netns.unique_prefix("dhn"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def failover_state(lab: Lab, node: str, interface: str = "lan") -> str | None:
    dbs = dhcp_probe.databases(lab)
    fo = dbs.get(node, {}).get(interface, {}).get("failover") or {}
    state = fo.get("my_state")
    return None if state is None else str(state)


def wait_state(lab: Lab, node: str, want: str, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        got = failover_state(lab, node)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def cli(lab: Lab, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "carpsim", "lab", *args, "--prefix", lab.paths.prefix],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return proc.stdout


def lan_total(lab: Lab, node: str) -> object:
    status = nodes.query_status(lab.paths, node) or {}
    lan = [s for s in status.get("dhcp") or [] if s.get("interface") == "lan"]
    return lan[0]["pool"]["total"] if lan else None


def owner(mac: str) -> str:
    """The node that answers this client while the pair is NORMAL (node1 is primary)."""
    key = bytes.fromhex(mac.replace(":", ""))
    return "node1" if primary_serves(hba_from_split(128), key) else "node2"


def test_dhcp_failover_pair_in_the_lab(lab: Lab) -> None:
    for iface in ("lan", "dmz"):
        pair = dhcp_probe.wait_agreement(lab, iface, None, 30.0)
        assert set(pair["failover_states"].values()) == {"normal"}, pair

    first = dhcp_probe.take_lease(lab, "client1")
    assert "error" not in first, first
    assert (first["router"], first["dns"]) == (LAN_VIP, LAN_VIP)
    assert first["server"] == NODE_LAN[owner(first["mac"])], first
    agreed = dhcp_probe.wait_agreement(lab, "lan", first["ip"], 20.0)
    assert agreed["agree"], agreed
    assert agreed["holds_probe_lease"], agreed

    text = cli(lab, "status")
    assert "Failover Status (my state / peer state): normal / normal" in text
    assert first["ip"] in text
    assert first["mac"] in text
    data = json.loads(cli(lab, "status", "--json"))
    lan: dict[str, Any] = next(s for s in data["nodes"]["node2"]["dhcp"] if s["interface"] == "lan")
    assert lan["gateway"] == LAN_VIP
    assert lan["gateway_is_physical"] is False
    assert lan["failover"]["peer_state"] == "normal"
    assert any(x["ip"] == first["ip"] for x in lan["leases"])

    metrics = control.query(str(lab.paths.control("node1")), {"cmd": "metrics"})["text"]
    assert 'dhcp_leases{interface="lan",state="active"} 1.0' in metrics
    assert 'dhcp_failover_state{relationship="dhcp_lan",side="me",state="normal"} 1.0' in metrics

    lab.kill("node1")
    assert wait_state(lab, "node2", "communications-interrupted", 40.0) == (
        "communications-interrupted"
    )
    second = dhcp_probe.take_lease(lab, "client2")
    assert "error" not in second, second
    assert second["server"] == NODE_LAN["node2"], second
    assert second["router"] == LAN_VIP
    assert second["ip"] != first["ip"]

    lab.start("node1")
    after = dhcp_probe.wait_agreement(lab, "lan", second["ip"], 90.0)
    assert set(after["failover_states"].values()) == {"normal"}, after
    assert after["agree"], after
    assert after["holds_probe_lease"], after
    assert after["held_twice"] == [], after
    views = {
        n: dhcp_probe.active(ifs["lan"]["leases"]) for n, ifs in dhcp_probe.databases(lab).items()
    }
    for view in views.values():
        assert view[first["ip"]] == first["mac"]
        assert view[second["ip"]] == second["mac"]

    # A config edit on the master (range shrunk) restarts its servers from their lease files;
    # the XML-RPC sync carries the dhcpd section to node2, which restarts too.
    edit = {"cmd": "config", "op": "set-dhcp",
            "args": {"interface": "lan", "settings": {"range.to": "192.168.110.160"}}}  # fmt: skip
    reply = control.query(str(lab.paths.control("node1")), edit, timeout=10)
    assert "dhcpd" in json.dumps(reply), reply
    deadline = time.monotonic() + 60
    totals: dict[str, object] = {}
    while time.monotonic() < deadline:
        totals = {n: lan_total(lab, n) for n in ("node1", "node2")}
        if set(totals.values()) == {61}:
            break
        time.sleep(0.5)
    assert totals == {"node1": 61, "node2": 61}, totals
    again = dhcp_probe.wait_agreement(lab, "lan", second["ip"], 60.0)
    assert set(again["failover_states"].values()) == {"normal"}, (again, totals)
    assert again["agree"], again
