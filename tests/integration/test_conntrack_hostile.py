"""A write batch with one record the kernel writer cannot encode: the rest still goes in."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from carpsim.net import netns
from carpsim.net.conntrack import KernelConntrackTable
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

A = socket.inet_aton


@pytest.fixture
def ns() -> Iterator[str]:
    name = netns.unique_prefix("hostile") + "ct"
    with netns.temporary([name]):
        yield name


def rec(i: int, zone: int = 0) -> StateRecord:
    key = FlowKey(6, A(f"10.77.0.{i}"), 40000 + i, A("192.0.2.7"), 443, zone)
    return StateRecord(key, tcp_state=TcpState.ESTABLISHED, timeout=600)


def test_out_of_range_zone_fails_alone(ns: str) -> None:
    batch = [rec(1), rec(2, zone=70000), rec(3), rec(4, zone=-5), rec(5)]
    with KernelConntrackTable(netns=ns) as table:
        result = table.apply_many(batch)
        assert sorted(code for _k, code in result.failed) == [errno.EINVAL, errno.EINVAL]
        assert {k.zone for k, _c in result.failed} == {70000, -5}
        assert result.created == 3
        assert {r.key for r in table.snapshot()} == {rec(i).key for i in (1, 3, 5)}
        again = table.apply_many(batch)  # the update pass too
        assert again.updated == 3
        assert len(again.failed) == 2
        gone = table.delete_many([rec(2, zone=70000).key, rec(1).key])
        assert gone.deleted == 1
        assert len(gone.failed) == 1
