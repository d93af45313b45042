"""dhcpd.leases text: a hand-written file in dhcpd's documented format, round trips, torn ends."""

from __future__ import annotations

import calendar
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.dhcp import leasefile
from carpsim.dhcp.lease import BindingState, Lease
from carpsim.dhcp.leasefile import FailoverStateRecord, fmt_time, format_file, parse

SAMPLE = Path(__file__).resolve().parents[1] / "vectors" / "isc-dhcpd" / "sample.leases"


def utc(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def test_sample_file_last_block_wins_and_unknowns_are_counted() -> None:
    got = parse(SAMPLE.read_text())
    a = got.leases[IPv4Address("192.168.110.150")]
    assert a.state is BindingState.ACTIVE
    assert a.starts == utc(2026, 12, 1, 14, 45, 13)
    assert a.ends == utc(2026, 12, 1, 14, 55, 13)
    assert a.tsfp == utc(2026, 12, 1, 15, 0, 13)
    assert a.hw_address == bytes.fromhex("020000000102")
    assert a.client_id == bytes.fromhex("01020000000102")
    assert a.hostname == "client-a"
    assert got.leases[IPv4Address("192.168.110.149")].state is BindingState.BACKUP
    abandoned = got.leases[IPv4Address("192.168.110.148")]
    assert abandoned.state is BindingState.ABANDONED
    assert abandoned.ends is None
    assert abandoned.starts == 1796136318
    rec = got.failover["dhcp_lan"]
    assert (rec.my_state, rec.partner_state) == ("normal", "normal")
    assert rec.partner_since == utc(2026, 12, 1, 14, 44, 55)
    assert got.skipped == 2  # "set ddns-fwd-name" and "frobnicate"


def test_time_format_matches_dhcpd() -> None:
    # 2026-12-01 was a Tuesday: dhcpd writes weekday 2.
    assert fmt_time(utc(2026, 12, 1, 14, 44, 59)) == "2 2026/12/01 14:44:59"
    assert fmt_time(0) == "4 1970/01/01 00:00:00"


times = st.integers(0, 2**31 - 1)
leases = st.builds(
    Lease,
    address=st.integers(0, 2**32 - 1).map(IPv4Address),
    state=st.sampled_from(list(BindingState)),
    starts=times,
    ends=st.none() | times,
    tstp=st.none() | times,
    tsfp=st.none() | times,
    cltt=st.none() | times,
    hw_type=st.sampled_from([1, 6]),
    hw_address=st.binary(min_size=0, max_size=16),
    client_id=st.none() | st.binary(min_size=1, max_size=20),
    hostname=st.none() | st.text(min_size=1, max_size=20),
    reserved=st.booleans(),
).map(lambda x: x if x.hw_address else replace(x, hw_type=1))  # no address: no type either


@given(st.lists(leases, max_size=10, unique_by=lambda x: x.address))
@settings(max_examples=200)
def test_round_trip(items: list[Lease]) -> None:
    rec = FailoverStateRecord("dhcp_lan", "normal", 5, "recover", None, 30)
    got = parse(format_file(items, [rec]))
    assert got.leases == {x.address: x for x in items}
    assert got.failover == {"dhcp_lan": rec}
    assert got.skipped == 0


@given(st.lists(leases, min_size=1, max_size=6, unique_by=lambda x: x.address), st.data())
@settings(max_examples=200)
def test_any_prefix_parses_to_a_subset(items: list[Lease], data: st.DataObject) -> None:
    text = format_file(items)
    cut = data.draw(st.integers(0, len(text)))
    got = parse(text[:cut])
    full = {x.address: x for x in items}
    for address, lease in got.leases.items():
        assert full[address] == lease


@given(st.text(max_size=400))
@settings(max_examples=300)
def test_garbage_never_raises(text: str) -> None:
    leasefile.parse(text)


def test_a_brace_inside_a_torn_string_does_not_close_the_block() -> None:
    # Found by the prefix property: a crash right after `client-hostname "}` used to close the
    # lease block at that brace and pass a lease without its hostname as complete.
    lease = Lease(
        IPv4Address("10.0.0.1"), BindingState.ACTIVE, hostname="}", hw_address=b"\x01" * 6
    )
    text = format_file([lease])
    for cut in range(len(text) + 1):
        for got in parse(text[:cut]).leases.values():
            assert got == lease, f"cut at {cut}"
