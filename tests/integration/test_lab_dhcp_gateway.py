"""The seed's warning in the lab: a DHCP gateway left empty hands out a node's own address.

With ``--dhcp-gateway empty`` each node's DHCP server gives its clients its own LAN address as
router (pfSense's behaviour for an empty gateway). A client configured from such a lease
reaches the internet through node1 until node1 is forced off; then CARP moves every VIP to
node2, but the client still sends to node1's dead address and stays cut off. The same client
with the default (router = the LAN VIP) keeps its internet across the same kill.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from carpsim.dhcp.failover.loadbal import hba_from_split, primary_serves
from carpsim.lab.dhcp_probe import dhcp_host, wait_agreement
from carpsim.lab.session import Lab
from carpsim.net import netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

SERVER = "203.0.113.10"
NODE1_LAN = "192.168.110.251"
LAN_VIP = "192.168.110.254"


def primary_mac() -> str:
    """A MAC node1 (the failover primary) answers while the pair is NORMAL."""
    for n in range(1, 512):
        mac = f"02:dd:00:00:{n >> 8:02x}:{n & 0xFF:02x}"
        if primary_serves(hba_from_split(128), bytes.fromhex(mac.replace(":", ""))):
            return mac
    raise AssertionError("no MAC hashes to the primary")


@pytest.fixture(params=["empty", "vip"])
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    lab = Lab.create("reference", prefix=netns.unique_prefix("dhg"), dhcp=request.param)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def pings(lab: Lab, ns_host: str) -> bool:
    ns = lab.paths.namespace(ns_host)
    return netns.run(ns, ["ping", "-c", "1", "-W", "1", SERVER], check=False).returncode == 0


def reachable_within(lab: Lab, host: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pings(lab, host):
            return True
    return False


def test_router_from_dhcp_across_a_forced_off_master(lab: Lab) -> None:
    assert set(wait_agreement(lab, "lan", None, 30.0)["failover_states"].values()) == {"normal"}
    lease = dhcp_host(lab, "dhc", "lan", primary_mac())
    assert "error" not in lease, lease
    assert lease["server"] == NODE1_LAN
    want = NODE1_LAN if lab.dhcp == "empty" else LAN_VIP
    assert lease["router"] == want, lease
    assert reachable_within(lab, "dhc", 10.0), "the internet through the offered router"

    lab.kill("node1")
    assert lab.wait_master("node2", timeout=10.0, down=["node1"])
    if lab.dhcp == "empty":
        # Every VIP is on node2 now, but this client's router was node1 itself.
        assert not reachable_within(lab, "dhc", 8.0), "router = node1's own address is dead"
    else:
        assert reachable_within(lab, "dhc", 10.0), "the VIP moved to node2 with the gateway"
