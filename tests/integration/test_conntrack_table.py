"""KernelConntrackTable against a real kernel: injection, read-back, updates, deletes, events."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from carpsim.net import netns
from carpsim.net.conntrack import (
    CtEvent,
    KernelConntrackTable,
    SyncExclusion,
    enable_events,
    get_sysctl,
)
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.wire.ctnetlink import IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, IPS_SRC_NAT

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

A = socket.inet_aton
VIP = A("203.0.113.1")
RULES = """
table ip t {
  chain pre {
    type filter hook prerouting priority 0;
    ct state new counter
  }
}
table ip nat {
  chain post {
    type nat hook postrouting priority 100;
  }
}
"""


@pytest.fixture
def ns() -> Iterator[str]:
    name = netns.unique_prefix("ctt") + "n"
    with netns.temporary([name]):
        subprocess.run(
            netns.exec_argv(name, ["nft", "-f", "-"]), input=RULES, text=True, check=True
        )
        yield name


TCP_STATES = (TcpState.ESTABLISHED, TcpState.SYN_RECV, TcpState.TIME_WAIT)
SYNCED = IPS_SEEN_REPLY | IPS_ASSURED


def synthetic(n: int) -> list[StateRecord]:
    """A mix of SNATed TCP (various states), UDP with DNAT, and ICMP echo entries."""
    out: list[StateRecord] = []
    for i in range(n):
        src = bytes((10, 1 + (i >> 16), (i >> 8) & 255, i & 255))
        kind = i % 3
        if kind == 0:
            out.append(
                StateRecord(
                    FlowKey(6, src, 1024 + i % 60000, bytes((192, 0, 2, 1 + i % 200)), 443),
                    nat_src=(VIP, 1024 + i % 60000),
                    tcp_state=TCP_STATES[i % 9 // 3],
                    timeout=3000 + i % 100,
                    status=IPS_SEEN_REPLY | IPS_ASSURED,
                    mark=i % 7,
                )
            )
        elif kind == 1:
            out.append(
                StateRecord(
                    FlowKey(17, src, 5000 + i % 50000, VIP, 53),
                    nat_dst=(A("192.168.50.5"), 5353),
                    timeout=600,
                    status=IPS_SEEN_REPLY,
                )
            )
        else:
            out.append(
                StateRecord(FlowKey(1, src, i & 0xFFFF, A("198.51.100.9"), 8 << 8), timeout=30)
            )
    return out


def comparable(r: StateRecord) -> tuple[object, ...]:
    return (r.key, r.nat_src, r.nat_dst, r.tcp_state, r.mark, r.status & SYNCED)


def test_inject_10k_and_read_back_equal(ns: str) -> None:
    records = synthetic(10_000)
    with KernelConntrackTable(netns=ns) as table:
        result = table.apply_many(records)
        assert result.failed == []
        assert result.created == 10_000
        assert len(table) == 10_000
        dumped = {r.key: r for r in table.snapshot()}
    assert len(dumped) == 10_000
    for rec in records:
        got = dumped[rec.key]
        assert comparable(got) == comparable(rec)
        assert rec.timeout - 10 <= got.timeout <= rec.timeout
        assert got.status & IPS_CONFIRMED
        # The recipe makes the kernel set up NAT itself (conntrackd's way: SRC_NAT bit present).
        assert bool(got.status & IPS_SRC_NAT) == (rec.nat_src is not None)


def test_reapply_updates_and_delete_reports_presence(ns: str) -> None:
    key = FlowKey(6, A("10.0.1.10"), 40000, A("192.0.2.100"), 5201)
    first = StateRecord(key, nat_src=(VIP, 40000), tcp_state=TcpState.SYN_RECV, timeout=60)
    later = StateRecord(
        key,
        nat_src=(VIP, 40000),
        tcp_state=TcpState.ESTABLISHED,
        timeout=5000,
        status=IPS_SEEN_REPLY | IPS_ASSURED,
        mark=42,
    )
    with KernelConntrackTable(netns=ns) as table:
        assert table.get(key) is None
        assert table.apply(first)
        assert table.apply(later)
        got = table.get(key)
        assert got is not None
        assert comparable(got) == comparable(later)
        assert got.timeout > 4000
        assert got.status & IPS_SRC_NAT  # update kept the NAT set up at creation
        other = FlowKey(17, A("10.0.1.10"), 1, A("192.0.2.100"), 2)
        res = table.delete_many([key, other])
        assert (res.deleted, res.missing, res.failed) == (1, 1, [])
        assert not table.delete(key)
        assert len(table) == 0


def test_ipv6_entries_round_trip(ns: str) -> None:
    v6 = socket.inet_pton
    client, server, nat = (
        v6(socket.AF_INET6, "fd00::10"),
        v6(socket.AF_INET6, "2001:db8::1"),
        v6(socket.AF_INET6, "2001:db8:ffff::1"),
    )
    tcp = StateRecord(
        FlowKey(6, client, 40000, server, 443),
        nat_src=(nat, 40001),
        tcp_state=TcpState.ESTABLISHED,
        timeout=300,
        status=SYNCED,
    )
    ping = StateRecord(FlowKey(58, client, 7, server, 128 << 8), timeout=30)
    with KernelConntrackTable(netns=ns) as table:
        assert table.apply_many([tcp, ping]).created == 2
        got = {r.key: r for r in table.snapshot()}
    assert comparable(got[tcp.key]) == comparable(tcp)
    assert comparable(got[ping.key]) == comparable(ping)


def _wait_events(table: KernelConntrackTable, want: int, timeout: float = 2.0) -> list[CtEvent]:
    got: list[CtEvent] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        select.select([table.fileno()], [], [], 0.1)
        got += table.read_events()
    return got


def test_events_new_update_destroy_and_sync_link_excluded(ns: str) -> None:
    enable_events(ns)
    assert get_sysctl("nf_conntrack_events", ns) == "1"
    sync_peer = A("10.9.9.2")
    exclude = SyncExclusion(addresses=frozenset({sync_peer}))
    key = FlowKey(17, A("10.0.1.10"), 5000, A("192.0.2.100"), 53)
    sync_flow = FlowKey(17, A("10.9.9.1"), 6000, sync_peer, 6000)
    with KernelConntrackTable(netns=ns, exclude=exclude) as table:
        os.set_blocking(table.fileno(), False)
        table.apply(StateRecord(sync_flow, timeout=30))
        table.apply(StateRecord(key, timeout=30))
        table.apply(StateRecord(key, timeout=90, status=IPS_SEEN_REPLY))
        table.delete(key)
        table.delete(sync_flow)
        events = _wait_events(table, 3)
        assert table.read_events() == []
        assert [kind for kind, _ in events] == ["new", "update", "destroy"]
        new, update, destroy = (ev for _, ev in events)
        assert isinstance(new, StateRecord)
        assert new.key == key
        assert isinstance(update, StateRecord)
        assert update.status & IPS_SEEN_REPLY
        assert destroy == key
        assert [r.key for r in table.snapshot()] == []


def test_event_overrun_is_reported(ns: str) -> None:
    with KernelConntrackTable(netns=ns, event_rcvbuf=4096) as table:
        table.subscribe()
        table.apply_many(synthetic(3000))
        events = table.read_events(max_reads=10_000)
        assert ("overrun", None) in events
        assert table.overruns >= 1
