"""The [web] section of a node config: absent means off, present means serve, bad means one
ConfigError naming the field."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from carpsim.errors import ConfigError
from carpsim.runtime import nodeconfig
from carpsim.web import config, node_app

NODE: dict[str, Any] = {
    "node": {"name": "n1"},
    "carp": {"password": "pw"},
    "vhid": [{"vhid": 1, "interface": "lan", "srcip": "10.0.0.1", "vips": ["10.0.0.254/24"]}],
}


def test_web_section_values() -> None:
    assert config.parse(None) is None
    assert config.parse({}) == config.WebConfig("127.0.0.1", 8080)
    assert config.parse({"listen": "192.168.110.251:8443"}) == config.WebConfig(
        "192.168.110.251", 8443
    )
    assert config.parse({"listen": "[::1]:80"}) == config.WebConfig("::1", 80)
    assert config.parse({"enabled": False, "listen": "127.0.0.1:1"}) is None
    for bad, field in (
        ({"listen": "localhost:80"}, "web.listen"),
        ({"listen": "127.0.0.1"}, "web.listen"),
        ({"listen": "127.0.0.1:0"}, "web.listen"),
        ({"listen": 8080}, "web.listen"),
        ({"enabled": "yes"}, "web.enabled"),
        ({"port": 1}, "web.port"),
    ):
        with pytest.raises(ConfigError) as exc:
            config.parse(bad)
        assert exc.value.field == field


def test_node_config_has_no_pages_unless_it_asks() -> None:
    assert nodeconfig.parse(NODE).web is None
    on = nodeconfig.parse({**NODE, "web": {"listen": "127.0.0.1:9090"}})
    assert on.web == config.WebConfig("127.0.0.1", 9090)
    assert on.web.listen == "127.0.0.1:9090"
    with pytest.raises(ConfigError) as exc:
        nodeconfig.parse({**NODE, "web": {"listen": "127.0.0.1:9090", "tls": True}})
    assert exc.value.field == "web.tls"


async def test_a_busy_listen_address_is_a_config_error_naming_web_listen() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as exc:
            await node_app.serve(config.WebConfig("127.0.0.1", port), lambda: {}, "n1")
    assert exc.value.field == "web.listen"
    assert f"127.0.0.1:{port}" in exc.value.message
