"""Lease store on a real file: journal, compaction, failover state blocks, reload."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from carpsim.dhcp.lease import BindingState, Lease
from carpsim.dhcp.leasefile import FailoverStateRecord, parse
from carpsim.runtime.leasestore import LeaseStore

A = IPv4Address("10.5.0.10")


def lease(n: int, address: IPv4Address = A) -> Lease:
    return Lease(address, BindingState.ACTIVE, starts=n, ends=n + 60, hw_address=b"\x02" * 6)


def test_journal_appends_then_compacts_to_one_block_per_address(tmp_path: Path) -> None:
    path = tmp_path / "dhcpd.leases"
    store = LeaseStore(path, compact_bytes=2000)
    store.load()
    for n in range(5):
        store.append([lease(n)])
    assert path.read_text().count(f"lease {A} {{") == 5  # journal: every version appended
    assert parse(path.read_text()).leases[A].starts == 4  # the last one wins
    for n in range(5, 40):
        store.append([lease(n)])
    assert store.compactions >= 2  # the one at load, and at least one from size
    text = path.read_text()
    assert text.count(f"lease {A} {{") < 10
    assert parse(text).leases[A].starts == 39
    assert not (tmp_path / "dhcpd.leases.tmp").exists()
    store.close()


def test_failover_state_survives_reload_and_peek_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dhcpd.leases"
    store = LeaseStore(path)
    store.load()
    rec = FailoverStateRecord("dhcp_lan", "communications-interrupted", 100, "normal", 90)
    store.append([lease(1)], [rec])
    store.close()
    before = path.read_text()
    assert LeaseStore(path).peek().failover == {"dhcp_lan": rec}
    assert path.read_text() == before
    again = LeaseStore(path)
    got = again.load()
    assert got.failover == {"dhcp_lan": rec}
    assert got.leases[A] == lease(1)
    assert parse(path.read_text()).failover == {"dhcp_lan": rec}  # kept by the compaction
    again.close()


def test_torn_tail_is_skipped_at_load(tmp_path: Path) -> None:
    path = tmp_path / "dhcpd.leases"
    store = LeaseStore(path)
    store.load()
    store.append([lease(1), lease(2, A + 1)])
    store.close()
    with path.open("a") as f:
        f.write(f"lease {A} {{\n  starts 4 2027/01/14 ")  # a write cut short by a crash
    got = LeaseStore(path).load()
    assert got.leases[A] == lease(1)
    assert got.skipped == 1
