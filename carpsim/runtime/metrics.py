"""Prometheus metrics for one CARP daemon (BSD carpstats counter names), on its own registry.

A per-daemon `CollectorRegistry` keeps tests and several in-process nodes from colliding in
the global registry.
"""

from __future__ import annotations

from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

STATE_VALUE = {"INIT": 0, "BACKUP": 1, "MASTER": 2}


class CarpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rx_packets = Counter("carp_rx_packets", "CARP packets received", ["af"], registry=r)
        self.rx_dropped = Counter(
            "carp_rx_dropped", "Received CARP packets dropped", ["reason"], registry=r
        )
        self.tx_packets = Counter("carp_tx_packets", "CARP adverts sent", ["af"], registry=r)
        self.tx_errors = Counter(
            "carp_tx_errors", "CARP/GARP send failures", ["reason"], registry=r
        )
        self.transitions = Counter(
            "carp_transitions", "CARP state transitions", ["vhid", "from", "to"], registry=r
        )
        self.state = Gauge("carp_state", "0 INIT, 1 BACKUP, 2 MASTER", ["vhid"], registry=r)
        self.demote = Gauge("carp_demote", "Demotion counter advertised", registry=r)
        self.advert_interval = Gauge(
            "carp_advert_interval_seconds", "Own advert interval", ["vhid"], registry=r
        )
        self.master_down = Gauge(
            "carp_master_down_seconds", "Own master-down interval", ["vhid"], registry=r
        )
        self.last_advert_age = Gauge(
            "carp_last_advert_age_seconds",
            "Seconds since the last accepted advert from a peer (-1 if never)",
            ["vhid"],
            registry=r,
        )

    def track_age(self, vhid: int, age: Callable[[], float | None]) -> None:
        def read() -> float:
            value = age()
            return -1.0 if value is None else value

        self.last_advert_age.labels(vhid=str(vhid)).set_function(read)

    def serve(self, port: int, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve /metrics; loopback unless the operator names an address (node.metrics_address)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
