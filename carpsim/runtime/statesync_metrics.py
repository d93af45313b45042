"""Prometheus view of the state-sync service (``carpsim_statesync_*``) on the daemon's registry.

A collector reads the service's status at scrape time instead of mirroring every counter into
prometheus objects: the numbers have exactly one home (the service), and a scrape from the HTTP
thread only copies dicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from carpsim.runtime.statesync_service import StateSyncService

P = "carpsim_statesync_"


class StateSyncCollector(Collector):
    def __init__(self, service: StateSyncService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        st: dict[str, Any] = self._service.status()
        yield GaugeMetricFamily(
            P + "ready",
            "1 when the replicator is ready (CARP undemoted)",
            value=1 if st["ready"] else 0,
        )
        yield GaugeMetricFamily(
            P + "demote", "CARP demotion added by state sync", value=st["demote"]
        )
        states = GaugeMetricFamily(P + "states", "States held", labels=["where"])
        for where, n in st["states"].items():
            states.add_metric([where], n)
        yield states
        frames = CounterMetricFamily(P + "frames", "Sync frames on the wire", labels=["dir"])
        frames.add_metric(["tx"], st["frames"]["tx"])
        frames.add_metric(["rx"], st["frames"]["rx"])
        yield frames
        octets = CounterMetricFamily(P + "bytes", "Sync payload bytes", labels=["dir"])
        octets.add_metric(["tx"], st["frames"]["tx_bytes"])
        octets.add_metric(["rx"], st["frames"]["rx_bytes"])
        yield octets
        rep = CounterMetricFamily(
            P + "replicator_events",
            "Replicator counters (acks, nacks, resends, refreshes ...)",
            labels=["event"],
        )
        for name, n in st["replicator"].items():
            rep.add_metric([name], n)
        yield rep
        kern = CounterMetricFamily(
            P + "kernel_ops", "Conntrack events read and states installed/removed", labels=["op"]
        )
        for name, n in st["kernel"].items():
            kern.add_metric([name], n)
        yield kern
        drops = CounterMetricFamily(P + "rx_dropped", "Sync frames dropped", labels=["reason"])
        for reason, n in st["drops"].items():
            drops.add_metric([reason], n)
        yield drops
        bulk = st["bulk"]
        yield CounterMetricFamily(
            P + "bulk_updates", "Bulk updates received (completed or given up)", value=bulk["count"]
        )
        yield CounterMetricFamily(
            P + "bulk_gave_up", "Bulk updates given up", value=bulk["gave_up"]
        )
        yield CounterMetricFamily(
            P + "bulk_served", "Bulk updates served to the peer", value=bulk["served"]
        )
        last = bulk["last_duration_s"]
        yield GaugeMetricFamily(
            P + "bulk_last_duration_seconds",
            "Duration of the last received bulk update (-1: none)",
            value=-1.0 if last is None else last,
        )


def register(registry: CollectorRegistry, service: StateSyncService) -> None:
    registry.register(StateSyncCollector(service))
