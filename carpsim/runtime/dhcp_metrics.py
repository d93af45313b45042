"""Prometheus metrics of the DHCP service, read live from its machines at scrape time.

A custom collector rather than counters updated on every packet: the machines already count
drops by reason and the lease database knows its states, so a scrape reads them directly.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from carpsim.runtime.dhcp_service import DhcpService


class DhcpCollector(Collector):
    def __init__(self, service: DhcpService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        leases = GaugeMetricFamily(
            "dhcp_leases", "Leases by binding state", labels=["interface", "state"]
        )
        for (ifname, state), n in sorted(self.service.lease_counts().items()):
            leases.add_metric([ifname, state], n)
        yield leases
        drops = CounterMetricFamily(
            "dhcp_rx_dropped", "DHCP messages dropped, by reason", labels=["interface", "reason"]
        )
        sent = CounterMetricFamily(
            "dhcp_tx_messages", "DHCP replies sent, by type", labels=["interface", "type"]
        )
        for ifname, svc in self.service.interfaces.items():
            for reason, n in sorted(svc.server.drops.items()):
                drops.add_metric([ifname, reason], n)
            for kind, n in sorted(svc.sent.items()):
                sent.add_metric([ifname, kind], n)
        yield drops
        yield sent


def register(service: DhcpService, registry: CollectorRegistry) -> DhcpCollector:
    collector = DhcpCollector(service)
    registry.register(collector)
    return collector
