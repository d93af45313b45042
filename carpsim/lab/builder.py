"""Build and tear down a lab: namespaces, bridges, veth pairs, addresses, routes, sysctls.

The host namespace gets nothing: each veth pair is created inside the switch namespace with its
peer created directly in the host's namespace, so no interface ever appears on the real machine.
Every segment is a bridge in the switch namespace (STP off, multicast snooping off so CARP
adverts to 224.0.0.18 reach every port at once).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from carpsim.errors import EnvironmentProblem
from carpsim.lab.state import LabPaths
from carpsim.lab.topology import Host, Topology
from carpsim.net import netns

Progress = Callable[[str], None]
REQUIRED_TOOLS = {"ip": "iproute2", "nft": "nftables"}


def check_environment() -> None:
    netns.require_root()
    for tool, package in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"{tool} not found: install it (apt-get install {package})")


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run a block in another network namespace (for /proc/sys/net, which is per-netns)."""
    pr_netns.pushns(namespace)
    try:
        yield
    finally:
        pr_netns.popns()


def set_sysctls(namespace: str, values: dict[str, str | int]) -> None:
    with inside(namespace):
        for key, value in values.items():
            Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")


def node_sysctls() -> dict[str, str | int]:
    return {
        "net.ipv4.ip_forward": 1,
        # Replies to the VIP arrive on the CARP macvlan while the route back points at the
        # parent: strict reverse-path filtering would drop them.
        "net.ipv4.conf.all.rp_filter": 0,
        "net.ipv4.conf.default.rp_filter": 0,
        # No pickup of mid-stream TCP: a backup without replicated state must not fake it.
        "net.netfilter.nf_conntrack_tcp_loose": 0,
        # State sync: every entry reports updates/destroy (not only those created while a
        # listener existed), and packet counters drive the replicator's liveness refresh.
        "net.netfilter.nf_conntrack_events": 1,
        "net.netfilter.nf_conntrack_acct": 1,
    }


def build(topology: Topology, paths: LabPaths, progress: Progress) -> None:
    """Create everything; the caller tears down on any exception (see `teardown`)."""
    switch = paths.switch
    netns.create(switch)
    with IPRoute(netns=switch) as sw:
        for seg in topology.segments.values():
            sw.link(
                "add",
                ifname=seg.name,
                kind="bridge",
                br_stp_state=0,
                br_mcast_snooping=0,
                br_forward_delay=0,
            )
            sw.link("set", index=sw.link_lookup(ifname=seg.name)[0], state="up")
    progress(f"switch namespace {switch}: bridges " + ", ".join(topology.segments))

    for host in topology.hosts:
        _build_host(topology, paths, host)
        addrs = ", ".join(f"{s} {a}" for s, a in host.addresses.items())
        progress(f"{host.name:<8} {paths.namespace(host.name)}: {addrs}")


def _build_host(topology: Topology, paths: LabPaths, host: Host) -> None:
    ns = paths.namespace(host.name)
    netns.create(ns)
    with IPRoute(netns=paths.switch) as sw:
        for seg in host.addresses:
            port = host.switch_port(seg)
            sw.link(
                "add",
                ifname=port,
                kind="veth",
                peer={"ifname": host.interface(seg), "net_ns_fd": f"{netns.NETNS_DIR}/{ns}"},
            )
            idx = sw.link_lookup(ifname=port)[0]
            bridge = sw.link_lookup(ifname=seg)[0]
            sw.link("set", index=idx, master=bridge, state="up")
    if host.is_node:
        # no ruleset: the node's daemon renders and loads its own from its config
        set_sysctls(ns, node_sysctls())
    elif host.forwarding:
        set_sysctls(ns, {"net.ipv4.ip_forward": 1})
    with IPRoute(netns=ns) as ipr:
        for seg, addr in host.addresses.items():
            idx = ipr.link_lookup(ifname=host.interface(seg))[0]
            ipr.addr(
                "add",
                index=idx,
                address=str(addr),
                prefixlen=topology.segments[seg].subnet.prefixlen,
            )
            ipr.link("set", index=idx, state="up")
    add_routes(paths, host)


def add_routes(paths: LabPaths, host: Host) -> None:
    """The default route; again after power-on, since an interface going down drops its routes."""
    if host.gateway is None:
        return
    with IPRoute(netns=paths.namespace(host.name)) as ipr:
        ipr.route("replace", dst="0.0.0.0/0", gateway=str(host.gateway))


def set_links(topology: Topology, paths: LabPaths, host: Host, up: bool) -> None:
    """Both ends of every link of a host. Down: switch side first, so not one frame escapes."""
    state = "up" if up else "down"
    ends = [
        (paths.switch, [host.switch_port(s) for s in host.addresses]),
        (paths.namespace(host.name), [host.interface(s) for s in host.addresses]),
    ]
    if not up:
        ends.reverse()
    for ns, names in reversed(ends):
        with IPRoute(netns=ns) as ipr:
            for name in names:
                found = ipr.link_lookup(ifname=name)
                if found:
                    ipr.link("set", index=found[0], state=state)


def link_states(paths: LabPaths, host: Host) -> dict[str, str]:
    """segment -> "up" / "down" as seen from both ends (down if either end is down)."""
    out: dict[str, str] = {}
    try:
        with IPRoute(netns=paths.switch) as sw, IPRoute(netns=paths.namespace(host.name)) as hn:
            for seg in host.addresses:
                up = True
                for ipr, name in ((sw, host.switch_port(seg)), (hn, host.interface(seg))):
                    found = ipr.link_lookup(ifname=name)
                    up = up and bool(found) and bool(ipr.get_links(found[0])[0]["flags"] & 1)
                out[seg] = "up" if up else "down"
    except OSError:
        return dict.fromkeys(host.addresses, "missing")
    return out


def wipe_runtime_state(paths: LabPaths, host: Host) -> None:
    """What a power cycle loses: the daemon's macvlans (and their VIPs) and conntrack entries.

    The builder's own configuration (addresses, routes, nft ruleset, sysctls) is the node's
    "boot config" and stays.
    """
    ns = paths.namespace(host.name)
    with IPRoute(netns=ns) as ipr:
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            if info is not None and info.get_attr("IFLA_INFO_KIND") == "macvlan":
                ipr.link("del", index=link["index"])
    if shutil.which("conntrack"):
        netns.run(ns, ["conntrack", "-F"], check=False)


def teardown(paths: LabPaths) -> list[str]:
    """Remove every namespace carrying the prefix (processes first); idempotent."""
    return netns.remove_all(paths.prefix)
