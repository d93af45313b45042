"""A new DHCP client in the lab, and the check that both nodes' lease databases agree.

`take_lease` plugs a fresh MAC into a lab host's segment (a macvlan on the host's interface, so
the host's own static address and routes stay as they are) and runs the real ISC ``dhclient``
once on it, with a script that configures nothing: the answer is read from its lease file.
The macvlan and the dhclient are removed afterwards; the binding stays in the servers'
databases, where `databases` / `agreement` look for it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from carpsim.lab import nodes
from carpsim.lab.session import Lab
from carpsim.net import netns

DHCLIENT_CONF = "timeout {timeout};\nretry 1;\ninitial-interval 1;\n"
_counter = itertools.count(1)


def _lease_fields(text: str) -> dict[str, str]:
    """The last lease block of a dhclient lease file."""
    blocks = text.split("lease {")
    if len(blocks) < 2:
        return {}
    block = blocks[-1]
    out: dict[str, str] = {}
    for key, pattern in (
        ("ip", r"fixed-address ([\d.]+);"),
        ("router", r"option routers ([\d.]+)"),
        ("dns", r"option domain-name-servers ([\d., ]+);"),
        ("server", r"option dhcp-server-identifier ([\d.]+);"),
        ("lease_time", r"option dhcp-lease-time (\d+);"),
    ):
        m = re.search(pattern, block)
        if m:
            out[key] = m.group(1).strip()
    return out


def take_lease(lab: Lab, host: str, timeout: int = 40) -> dict[str, Any]:
    """One DORA from a new MAC on `host`'s first segment: the lease, or why there is none."""
    ns = lab.namespace_of(host)
    segment = next(iter(lab.topology.host(host).addresses))
    dev = f"dhc{os.getpid() % 1000}x{next(_counter)}"
    mac = "02:dc:%02x:%02x:%02x:%02x" % tuple(os.urandom(4))  # noqa: UP031 - a MAC's shape
    work = Path(tempfile.mkdtemp(prefix="carpsim-dhcp-"))
    (work / "dhclient.conf").write_text(DHCLIENT_CONF.format(timeout=timeout))
    pid_file, lease_file = work / "dhclient.pid", work / "dhclient.leases"
    result: dict[str, Any] = {"host": host, "mac": mac, "segment": segment}
    netns.run(ns, ["ip", "link", "add", dev, "link", segment, "address", mac,
                   "type", "macvlan", "mode", "bridge"])  # fmt: skip
    try:
        netns.run(ns, ["ip", "link", "set", dev, "up"])
        t0 = time.monotonic()
        argv = ["dhclient", "-1", "-v", "-sf", "/bin/true", "-cf", str(work / "dhclient.conf")]
        argv += ["-lf", str(lease_file), "-pf", str(pid_file), dev]
        proc = netns.run(ns, argv, check=False, timeout=timeout + 15)
        result["seconds"] = round(time.monotonic() - t0, 2)
        fields = _lease_fields(lease_file.read_text()) if lease_file.exists() else {}
        result.update(fields)
        if proc.returncode != 0 or "ip" not in fields:
            result["error"] = f"no lease (dhclient exit {proc.returncode})"
            result["log"] = proc.stderr.strip().splitlines()[-3:]
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        netns.run(ns, ["ip", "link", "del", dev], check=False)
    return result


def databases(lab: Lab) -> dict[str, dict[str, dict[str, Any]]]:
    """node -> interface -> {"leases": [...], "failover": {...}} from each node's status."""
    out: dict[str, dict[str, Any]] = {}
    for n in lab.topology.nodes:
        status = nodes.query_status(lab.paths, n.name) or {}
        servers = status.get("dhcp")
        out[n.name] = {}
        for s in servers if isinstance(servers, list) else []:
            out[n.name][str(s.get("interface"))] = {
                "leases": s.get("leases", []),
                "failover": s.get("failover") or {},
            }
    return out


def active(leases: list[dict[str, Any]]) -> dict[str, str]:
    return {x["ip"]: x["mac"] for x in leases if x.get("binding_state") == "active"}


def agreement(dbs: dict[str, dict[str, Any]], interface: str) -> dict[str, Any]:
    """Do all nodes hold the same active bindings, each address for one MAC only?"""
    views = {node: active(ifs.get(interface, {}).get("leases", [])) for node, ifs in dbs.items()}
    states = {
        node: (ifs.get(interface, {}).get("failover") or {}).get("my_state")
        for node, ifs in dbs.items()
    }
    held: dict[str, set[str]] = {}
    for view in views.values():
        for ip, mac in view.items():
            held.setdefault(ip, set()).add(mac)
    twice = sorted(ip for ip, macs in held.items() if len(macs) > 1)
    macs: dict[str, set[str]] = {}
    for ip, who in held.items():
        for mac in who:
            macs.setdefault(mac, set()).add(ip)
    agree = len({tuple(sorted(v.items())) for v in views.values()}) == 1
    return {
        "agree": agree,
        "held_twice": twice,
        "active": {node: len(v) for node, v in views.items()},
        "failover_states": states,
    }


def wait_agreement(
    lab: Lab, interface: str, must_hold: str | None, timeout: float
) -> dict[str, Any]:
    """Poll until every node is NORMAL, holds `must_hold` active, and the views agree."""
    deadline = time.monotonic() + timeout
    while True:
        dbs = databases(lab)
        verdict = agreement(dbs, interface)
        views = [active(ifs.get(interface, {}).get("leases", [])) for ifs in dbs.values()]
        holds = must_hold is None or all(must_hold in v for v in views)
        normal = all(s == "normal" for s in verdict["failover_states"].values())
        verdict["holds_probe_lease"] = holds
        if (verdict["agree"] and holds and normal) or time.monotonic() >= deadline:
            return verdict
        time.sleep(0.5)


def serving(lab: Lab) -> bool:
    """Does any node report a DHCP server?"""
    return any(dbs for dbs in databases(lab).values())


def verdict(
    lab: Lab, lease: dict[str, Any] | None, successor: str, timeout: float = 60.0
) -> dict[str, Any]:
    """`unsinkable`'s DHCP result: the lease taken with the master off, then the agreement."""
    if lease is None:
        return {"status": "not measured", "detail": "no failover phase ran"}
    topo = lab.topology
    seg = lease["segment"]
    vip = next((str(v.address) for v in topo.vips if v.segment == seg), None)
    server = str(topo.host(successor).addresses.get(seg))
    out: dict[str, Any] = {"lease": lease, "expected_router": vip, "expected_server": server}
    problems = []
    if "ip" not in lease:
        problems.append(lease.get("error", "no lease"))
    else:
        if lease.get("router") != vip:
            problems.append(f"router {lease.get('router')} is not the VIP {vip}")
        if lease.get("server") != server:
            problems.append(f"served by {lease.get('server')}, not {successor} ({server})")
    agree = wait_agreement(lab, seg, lease.get("ip"), timeout)
    out["after_failback"] = agree
    if not agree["agree"]:
        problems.append(f"lease databases differ after failback ({agree['active']} active)")
    if agree["held_twice"]:
        problems.append(f"addresses held twice: {agree['held_twice']}")
    if "ip" in lease and not agree["holds_probe_lease"]:
        problems.append(f"{lease['ip']} is not active on every node after failback")
    out["status"] = "failed" if problems else "ok"
    out["detail"] = "; ".join(problems) or (
        f"{lease['mac']} got {lease['ip']} router {vip} from {successor} while the master was "
        "off; after failback both databases agree"
    )
    return out


CONFIGURE_SCRIPT = """#!/bin/sh
# dhclient-script's work, without touching /etc/resolv.conf: address and default route only.
case "$reason" in BOUND|RENEW|REBIND|REBOOT)
  ip addr flush dev "$interface"
  ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
  for r in $new_routers; do ip route replace default via "$r" dev "$interface"; break; done
;; esac
exit 0
"""


def dhcp_host(lab: Lab, name: str, segment: str, mac: str, timeout: int = 40) -> dict[str, Any]:
    """A new lab host (namespace ``<prefix><name>``, plugged into `segment`) that configures
    itself from a real dhclient lease: address and default route = the offered router.
    `lab down` removes it with the lab's other namespaces."""
    ns = lab.paths.namespace(name)
    netns.create(ns)
    port = f"{name}-{segment}"[:15]
    netns.run(lab.paths.switch, ["ip", "link", "add", port, "type", "veth", "peer", "name",
                                 "eth0", "netns", ns])  # fmt: skip
    netns.run(lab.paths.switch, ["ip", "link", "set", port, "master", segment, "up"])
    netns.run(ns, ["ip", "link", "set", "eth0", "address", mac, "up"])
    netns.run(ns, ["ip", "link", "set", "lo", "up"])
    work = Path(tempfile.mkdtemp(prefix="carpsim-dhcp-"))
    script = work / "configure.sh"
    script.write_text(CONFIGURE_SCRIPT)
    script.chmod(0o755)
    (work / "dhclient.conf").write_text(DHCLIENT_CONF.format(timeout=timeout))
    pid_file, lease_file = work / "dhclient.pid", work / "dhclient.leases"
    argv = ["dhclient", "-1", "-v", "-sf", str(script), "-cf", str(work / "dhclient.conf")]
    argv += ["-lf", str(lease_file), "-pf", str(pid_file), "eth0"]
    proc = netns.run(ns, argv, check=False, timeout=timeout + 15)
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
    result: dict[str, Any] = {"host": name, "mac": mac, "segment": segment}
    result.update(_lease_fields(lease_file.read_text()) if lease_file.exists() else {})
    if proc.returncode != 0 or "ip" not in result:
        result["error"] = f"no lease (dhclient exit {proc.returncode})"
    return result
