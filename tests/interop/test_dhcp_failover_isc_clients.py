"""Real dhclients on a LAN served by carpsim (DHCP server + failover) and a real ISC dhcpd.

Both roles: the pair reaches NORMAL, a client whose MAC hashes to the primary's buckets gets
its lease from the primary and one hashing to the secondary's from the secondary (RFC 3074,
split 128: 02:00:00:00:01:02 -> bucket 27, 02:00:00:00:01:01 -> bucket 141), router = the
VIP, and each side's binding reaches the other's database by BNDUPD. Then dhcpd is killed:
carpsim goes communications-interrupted, serves a new client from its own pool, goes
partner-down after auto-partner-down; dhcpd restarts and both lease databases agree.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from carpsim.dhcp import leasefile
from carpsim.dhcp.lease import BindingState
from carpsim.net import netns
from interop.conftest import Lan, need_tool, wait_for
from interop.test_dhcp_failover_isc import (
    FIRST,
    LAST,
    PEER,
    PRIMARY_IP,
    SECONDARY_IP,
    dhcpd_conf,
)

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(180)]

MACS = {"primary": "02:00:00:00:01:02", "secondary": "02:00:00:00:01:01"}
HOOK = """#!/bin/sh
echo "reason=$reason ip=$new_ip_address routers=$new_routers server=$new_dhcp_server_identifier \
lease=$new_dhcp_lease_time" >> "HOOK_LOG"
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/24" dev "$interface" ;;
esac
exit 0
"""


LONER = "02:00:00:00:01:05"
"""Bucket 97: the primary's in NORMAL; served by whoever is left alone."""


def start_client(lan: Lan, t: Path, host: str, mac: str) -> None:
    lan.plug(host, "eth0", None)
    ns = lan.host(host)
    lan.sh(ns, "ip", "link", "set", "eth0", "down")
    lan.sh(ns, "ip", "link", "set", "eth0", "address", mac)
    lan.sh(ns, "ip", "link", "set", "eth0", "up")
    hook = t / f"hook-{host}.sh"
    hook.write_text(HOOK.replace("HOOK_LOG", str(t / f"hook-{host}.log")))
    hook.chmod(0o755)
    argv = ["dhclient", "-d", "-1", "-v", "-sf", str(hook)]
    argv += ["-lf", str(t / f"{host}.leases"), "-pf", str(t / f"{host}.pid"), "eth0"]
    lan.procs.append(
        subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=open(t / f"{host}.log", "ab"),  # noqa: SIM115 - closed at teardown
            stderr=subprocess.STDOUT,
        )
    )


def bound_fields(t: Path, host: str) -> dict[str, str]:
    log = t / f"hook-{host}.log"

    def got() -> str | None:
        lines = log.read_text().splitlines() if log.exists() else []
        done = [x for x in lines if x.startswith("reason=BOUND")]
        return done[-1] if done else None

    line = wait_for(got, 40.0, 0.2, f"{host} bound")
    return dict(kv.split("=", 1) for kv in str(line).split() if "=" in kv)


def last_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            value: dict[str, Any] = json.loads(line)
            return value
    return None


@pytest.mark.parametrize("dhcpd_role", ["primary", "secondary"])
def test_clients_get_leases_from_both_sides_per_the_hash(tmp_path: Path, dhcpd_role: str) -> None:
    need_tool("dhcpd")
    need_tool("dhclient")
    lan = Lan(netns.unique_prefix("dhcpfo"), tmp_path)
    try:
        our_role = "secondary" if dhcpd_role == "primary" else "primary"
        ip = {"primary": PRIMARY_IP, "secondary": SECONDARY_IP}
        lan.plug("isc", "eth0", f"{ip[dhcpd_role]}/24")
        lan.plug("cs", "eth0", f"{ip[our_role]}/24")
        (tmp_path / "dhcpd.conf").write_text(dhcpd_conf(dhcpd_role))
        (tmp_path / "dhcpd.leases").write_text("")
        argv = [sys.executable, str(PEER), "--role", our_role, "--local", ip[our_role]]
        argv += ["--peer", ip[dhcpd_role], "--first", FIRST, "--last", LAST]
        argv += ["--serve", "eth0", "--lease-dir", str(tmp_path / "db")]
        argv += ["--auto-partner-down", "5"]
        lan.popen("cs", argv, "ours.log")
        t = tmp_path
        argv = ["dhcpd", "-4", "-d", "-f", "-cf", str(t / "dhcpd.conf")]
        argv += ["-lf", str(t / "dhcpd.leases"), "-pf", str(t / "dhcpd.pid"), "eth0"]
        dhcpd_argv = argv
        dhcpd = lan.popen("isc", dhcpd_argv, "dhcpd.log")

        def normal() -> bool:
            st = last_json(t / "ours.log")
            log = (t / "dhcpd.log").read_text(errors="replace")
            return bool(st and st["my_state"] == "normal" and st["peer_state"] == "normal"
                        and "Both servers normal" in log)  # fmt: skip

        wait_for(normal, 30.0, 0.2, "both servers normal")
        for side, mac in MACS.items():
            start_client(lan, t, f"cl{side[0]}", mac)
        bound: dict[str, dict[str, str]] = {}
        for side in MACS:
            bound[side] = bound_fields(t, f"cl{side[0]}")
        for side, fields in bound.items():
            assert fields["server"] == ip[side], (side, fields)  # the hash owner answered
            assert fields["routers"] == "192.168.110.254"
            assert fields["lease"] == "30"  # first lease capped at MCLT
        # Each binding reached the other side: dhcpd's lease file and carpsim's database.
        for side, mac in MACS.items():

            def in_dhcpd(mac: str = mac) -> bool:
                return mac in (t / "dhcpd.leases").read_text()

            def in_ours(mac: str = mac, want: str = bound[side]["ip"]) -> bool:
                leases = (last_json(t / "ours.log") or {}).get("leases", [])
                return any(x["mac"] == mac.replace(":", "") and x["ip"] == want for x in leases)

            wait_for(in_dhcpd, 10.0, 0.2, f"{side}'s client in dhcpd.leases")
            wait_for(in_ours, 10.0, 0.2, f"{side}'s client in carpsim's database")
        st = last_json(t / "ours.log")
        assert st is not None
        assert st["bndupd_acked"] >= 1
        assert "foreign_peer" not in st["edge_drops"]
        # dhcpd dies: carpsim serves a new client alone, from its own pool, then partner-down.
        dhcpd.send_signal(signal.SIGKILL)
        dhcpd.wait(timeout=5)

        def alone_now() -> bool:
            return (last_json(t / "ours.log") or {}).get("my_state") == "communications-interrupted"

        wait_for(alone_now, 15.0, 0.1, "communications-interrupted")
        start_client(lan, t, "cl3", LONER)
        alone = bound_fields(t, "cl3")
        assert alone["server"] == ip[our_role]
        assert alone["lease"] == "30"
        # dhcpd's own file says whose pool that address was in: ours.
        own = BindingState.BACKUP if our_role == "secondary" else BindingState.FREE
        theirs = leasefile.parse((t / "dhcpd.leases").read_text()).leases
        assert theirs[IPv4Address(alone["ip"])].state is own
        wait_for(lambda: (last_json(t / "ours.log") or {}).get("my_state") == "partner-down",
                 15.0, 0.1, "partner-down")  # fmt: skip
        # dhcpd restarts from its lease file: back to normal, and the databases agree.
        lan.popen("isc", dhcpd_argv, "dhcpd.log")  # a new log: the first one is truncated
        wait_for(normal, 60.0, 0.2, "normal after restart")

        def agree() -> bool:
            theirs = {
                (str(x.address), x.hw_address.hex())
                for x in leasefile.parse((t / "dhcpd.leases").read_text()).leases.values()
                if x.state is BindingState.ACTIVE
            }
            st = last_json(t / "ours.log") or {}
            ours = {(x["ip"], x["mac"]) for x in st.get("leases", [])}
            return theirs == ours and len(ours) >= 3

        wait_for(agree, 15.0, 0.2, "both lease databases hold the same active bindings")
    finally:
        lan.close()
