"""carpsim's DHCP service in a namespace, real dhclient and a scapy client on the same LAN.

- dhclient (Debian isc-dhcp-client) gets a lease with router = DNS = the configured VIP, and
  server-identifier = the server's own address;
- scapy: broadcast-flag OFFER/ACK to ff:ff:ff:ff:ff:ff, DECLINE abandons, INFORM is unicast to
  ciaddr without a lease, INIT-REBOOT for a foreign address is NAKed, RELEASE frees;
- SIGKILL the server, restart it on the same lease file: the lease is still there and the same
  client renews the same address.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Lan, wait_for

pytestmark = pytest.mark.netns

VIP = "192.168.110.254"
SERVER = "192.168.110.2"
HERE = Path(__file__).parent
HOOK = """#!/bin/sh
echo "reason=$reason ip=$new_ip_address routers=$new_routers dns=$new_domain_name_servers \
lease=$new_dhcp_lease_time server=$new_dhcp_server_identifier" >> "HOOK_LOG"
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/24" dev "$interface" ;;
esac
exit 0
"""


def start_server(lan: Lan, tmp: Path, n: int) -> subprocess.Popen[bytes]:
    settings = [
        {
            "interface": "eth0",
            "subnet": "192.168.110.0/24",
            "interface_address": SERVER,
            "range_start": "192.168.110.100",
            "range_end": "192.168.110.199",
            "gateway": VIP,
            "dns_servers": [VIP],
            "default_lease_time": 600,
            "max_lease_time": 7200,
            "ping_check": True,
        }
    ]
    (tmp / "settings.json").write_text(json.dumps(settings))
    argv = [sys.executable, "-m", "carpsim.runtime.dhcp_service"]
    argv += ["--settings", str(tmp / "settings.json"), "--lease-dir", str(tmp / "db")]
    argv += ["--status", str(tmp / "status.json")]
    proc = lan.popen("srv", argv, f"server{n}.log")
    wait_for((tmp / "status.json").exists, 10, what="dhcp service up")
    return proc


def status(tmp: Path) -> dict[str, Any]:
    return json.loads((tmp / "status.json").read_text())[0]  # type: ignore[no-any-return]


def lease_of(tmp: Path, ip: str) -> dict[str, Any] | None:
    try:
        leases = status(tmp)["leases"]
    except (OSError, ValueError):
        return None
    return next((x for x in leases if x["ip"] == ip), None)


def dhclient(lan: Lan, tmp: Path) -> str:
    hook = tmp / "hook.sh"
    # dhclient runs its script with a clean environment: the log path is written in.
    hook.write_text(HOOK.replace("HOOK_LOG", str(tmp / "hook.log")))
    hook.chmod(0o755)
    argv = ["dhclient", "-d", "-1", "-v", "-sf", str(hook), "-lf", str(tmp / "dhclient.leases")]
    argv += ["-pf", str(tmp / "dhclient.pid"), "eth0"]
    lan.procs.append(
        subprocess.Popen(
            ["ip", "netns", "exec", lan.host("cli"), *argv],
            stdout=open(tmp / "dhclient.log", "ab"),  # noqa: SIM115 - closed at teardown
            stderr=subprocess.STDOUT,
        )
    )

    def bound() -> str | None:
        log = tmp / "hook.log"
        lines = log.read_text().splitlines() if log.exists() else []
        done = [x for x in lines if x.startswith(("reason=BOUND", "reason=REBOOT"))]
        return done[-1] if done else None

    line = wait_for(bound, 30, interval=0.2, what="dhclient bound")
    return str(line)


def test_dhclient_scapy_and_restart(lan: Lan, tmp_path: Path) -> None:
    lan.plug("srv", "eth0", f"{SERVER}/24")
    lan.plug("cli", "eth0", None)
    lan.plug("sc", "eth0", "192.168.110.50/24")
    # A second interface the service is not configured for: it must stay silent there.
    lan.plug("srv", "eth1", "192.168.111.2/24", bridge="br1")
    lan.plug("other", "eth0", None, bridge="br1")
    server = start_server(lan, tmp_path, 1)

    line = dhclient(lan, tmp_path)
    fields = dict(kv.split("=", 1) for kv in line.split())
    ip = fields["ip"]
    assert fields["routers"] == VIP
    assert fields["dns"] == VIP
    assert fields["server"] == SERVER
    assert fields["lease"] == "600"
    got = wait_for(lambda: lease_of(tmp_path, ip), 5, what="lease in status")
    assert got["binding_state"] == "active"
    st = status(tmp_path)
    assert st["gateway"] == VIP
    assert st["gateway_is_physical"] is False

    out = tmp_path / "scapy.json"
    lan.sh(
        lan.host("sc"),
        sys.executable,
        str(HERE / "dhcp_scapy_client.py"),
        "eth0",
        str(out),
        "192.168.110.50",
    )
    res = json.loads(out.read_text())
    assert res["offer_bcast"]["type"] == "OFFER"
    assert res["offer_bcast"]["eth_dst"] == "ff:ff:ff:ff:ff:ff"
    assert res["offer_bcast"]["ip_dst"] == "255.255.255.255"
    assert res["ack_bcast"]["type"] == "ACK"
    assert res["offer2"]["eth_dst"] != "ff:ff:ff:ff:ff:ff"  # flag clear: unicast to chaddr
    assert res["offer2"]["yiaddr"] != res["declined"]
    assert res["ack2"]["router"] == VIP
    assert res["nak"]["type"] == "NAK"
    assert res["nak"]["ip_dst"] == "255.255.255.255"
    assert res["inform"]["type"] == "ACK"
    assert res["inform"]["ip_dst"] == "192.168.110.50"
    assert res["inform"]["yiaddr"] == "0.0.0.0"
    assert res["inform"]["lease_time"] is None
    assert wait_for(
        lambda: (lease_of(tmp_path, res["declined"]) or {}).get("binding_state") == "abandoned",
        5,
        what="declined abandoned",
    )
    assert wait_for(
        lambda: (lease_of(tmp_path, res["released"]) or {}).get("binding_state") == "released",
        5,
        what="released",
    )

    silent = tmp_path / "silent.json"
    other = lan.host("other")
    lan.sh(other, sys.executable, str(HERE / "dhcp_scapy_client.py"), "eth0", str(silent), "silent")
    assert json.loads(silent.read_text())["reply"] is None
    # The reply would leave through eth0 anyway: the proof is that the server never saw it.
    other_mac = lan.sh(other, "cat", "/sys/class/net/eth0/address").strip()
    sc_mac = lan.sh(lan.host("sc"), "cat", "/sys/class/net/eth0/address").strip()
    log = (tmp_path / "server1.log").read_text()
    assert f"DHCPDISCOVER from {sc_mac} via eth0" in log
    assert other_mac not in log

    # Crash the server: the lease file still holds the acknowledged lease.
    server.send_signal(signal.SIGKILL)
    server.wait(5)
    (tmp_path / "status.json").unlink()
    client = lan.procs[-1]  # the dhclient started last
    client.send_signal(signal.SIGKILL)
    client.wait(5)
    start_server(lan, tmp_path, 2)
    again = wait_for(lambda: lease_of(tmp_path, ip), 5, what="lease survived SIGKILL")
    assert again["binding_state"] == "active"
    (tmp_path / "hook.log").unlink()
    renewed = dict(kv.split("=", 1) for kv in dhclient(lan, tmp_path).split())
    assert renewed["ip"] == ip  # INIT-REBOOT of the same client, same address
    assert renewed["routers"] == VIP
