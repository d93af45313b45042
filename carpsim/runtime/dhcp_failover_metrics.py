"""Prometheus metrics of the failover peers, read from their machines at scrape time.

Names (label `relationship` = the peer block name, `dhcp_<if>` on pfSense):
- ``dhcp_failover_state{relationship, side, state}`` 1 for the current state of `side`
  (``me``/``peer``), as pfSense's Failover Status shows it;
- ``dhcp_failover_state_value{relationship, side}`` the wire value (2 normal, 3
  communications-interrupted, 4 partner-down, ...; 0 peer not yet heard);
- ``dhcp_failover_bndupd_queue`` queued BNDUPDs, ``dhcp_failover_bndupd_unacked`` in flight;
- ``dhcp_failover_bndupd_acked_total``, ``dhcp_failover_bndupd_rejected_total``;
- ``dhcp_failover_ack_latency_seconds{stat=last|max|avg}`` BNDUPD -> BNDACK;
- ``dhcp_failover_dropped_total{reason}`` malformed or refused input, by reason;
- ``dhcp_failover_messages_total{direction, type}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from carpsim.dhcp.failover.constants import FailoverState
from carpsim.dhcp.failover.machine import FailoverMachine

Machines = Callable[[], Mapping[str, FailoverMachine]]


class FailoverCollector(Collector):
    def __init__(self, machines: Machines) -> None:
        self.machines = machines

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = GaugeMetricFamily(
            "dhcp_failover_state", "Failover state (1 = current)",
            labels=["relationship", "side", "state"],
        )  # fmt: skip
        value = GaugeMetricFamily(
            "dhcp_failover_state_value", "Failover state wire value",
            labels=["relationship", "side"],
        )  # fmt: skip
        queue = GaugeMetricFamily(
            "dhcp_failover_bndupd_queue", "Queued BNDUPDs", labels=["relationship"]
        )
        unacked = GaugeMetricFamily(
            "dhcp_failover_bndupd_unacked", "BNDUPDs awaiting BNDACK", labels=["relationship"]
        )
        acked = CounterMetricFamily(
            "dhcp_failover_bndupd_acked", "BNDUPDs acknowledged", labels=["relationship"]
        )
        rejected = CounterMetricFamily(
            "dhcp_failover_bndupd_rejected", "BNDUPDs rejected by the peer", labels=["relationship"]
        )
        latency = GaugeMetricFamily(
            "dhcp_failover_ack_latency_seconds", "BNDUPD to BNDACK",
            labels=["relationship", "stat"],
        )  # fmt: skip
        drops = CounterMetricFamily(
            "dhcp_failover_dropped", "Failover input dropped, by reason",
            labels=["relationship", "reason"],
        )  # fmt: skip
        messages = CounterMetricFamily(
            "dhcp_failover_messages", "Failover messages, by direction and type",
            labels=["relationship", "direction", "type"],
        )  # fmt: skip
        for name, m in sorted(self.machines().items()):
            sides = {"me": m.state, "peer": m.peer_state}
            for side, current in sides.items():
                for s in FailoverState:
                    state.add_metric([name, side, s.word], 1.0 if s is current else 0.0)
                value.add_metric([name, side], float(current or 0))
            st = m.status()
            queue.add_metric([name], float(len(m.sync.queue)))
            unacked.add_metric([name], float(len(m.sync.inflight)))
            acked.add_metric([name], float(m.sync.acked))
            rejected.add_metric([name], float(m.sync.rejected))
            for stat in ("last", "max", "avg"):
                raw = st[f"ack_latency_{stat}"]
                assert isinstance(raw, float)
                latency.add_metric([name, stat], raw)
            for reason, n in sorted(m.drops.items()):
                drops.add_metric([name, reason], float(n))
            for direction, counts in (("in", m.messages_in), ("out", m.messages_out)):
                for kind, n in sorted(counts.items()):
                    messages.add_metric([name, direction, kind], float(n))
        yield from (state, value, queue, unacked, acked, rejected, latency, drops, messages)


def register(machines: Machines, registry: CollectorRegistry) -> FailoverCollector:
    collector = FailoverCollector(machines)
    registry.register(collector)
    return collector
