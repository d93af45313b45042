"""The failover collector exposes a machine's state and queue as Prometheus text."""

from __future__ import annotations

from ipaddress import IPv4Address

from prometheus_client import CollectorRegistry, generate_latest

from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.lease import LeaseDB
from carpsim.dhcp.settings import FailoverRole, FailoverSettings
from carpsim.runtime.dhcp_failover_metrics import register


def test_scrape_shows_state_queue_and_drops() -> None:
    settings = FailoverSettings(peer=IPv4Address("192.168.110.3"), role=FailoverRole.PRIMARY,
                                name="dhcp_lan")  # fmt: skip
    m = FailoverMachine(settings, LeaseDB(), [IPv4Address("192.168.110.100")])
    m.start(0.0, 1_790_000_000)
    m.connection_up(0.0, 1_790_000_000)
    m.data_received(0.1, 1_790_000_000, b"\x00\x05")  # a length below 12 poisons the stream
    registry = CollectorRegistry()
    register(lambda: {"dhcp_lan": m}, registry)
    text = generate_latest(registry).decode()
    assert 'dhcp_failover_state{relationship="dhcp_lan",side="me",state="startup"} 1.0' in text
    assert 'dhcp_failover_state_value{relationship="dhcp_lan",side="peer"} 0.0' in text
    assert 'dhcp_failover_dropped_total{reason="short_length",relationship="dhcp_lan"} 1.0' in text
    assert (
        'dhcp_failover_messages_total{direction="out",relationship="dhcp_lan",type="CONNECT"} 1.0'
        in text
    )
    assert 'dhcp_failover_bndupd_queue{relationship="dhcp_lan"} 0.0' in text
