"""The Prometheus endpoint listens on loopback unless an address is configured."""

from __future__ import annotations

import urllib.request

import pytest

from carpsim.errors import ConfigError
from carpsim.runtime.metrics import CarpMetrics
from carpsim.runtime.nodeconfig import parse

NODE = {
    "vhid": [
        {
            "vhid": 1,
            "interface": "lan",
            "srcip": "10.9.0.1",
            "vips": ["10.9.0.9/24"],
            "password": "p",
        }
    ]
}


def test_serve_binds_loopback_by_default() -> None:
    server = CarpMetrics().serve(0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"carp_" in body
    finally:
        server.shutdown()
        server.server_close()


def test_node_metrics_address_default_and_validation() -> None:
    assert parse({**NODE, "node": {"name": "n"}}).metrics_address == "127.0.0.1"
    cfg = parse({**NODE, "node": {"name": "n", "metrics_address": "0.0.0.0"}})
    assert cfg.metrics_address == "0.0.0.0"
    with pytest.raises(ConfigError) as err:
        parse({**NODE, "node": {"name": "n", "metrics_address": "everywhere"}})
    assert err.value.field == "node.metrics_address"
