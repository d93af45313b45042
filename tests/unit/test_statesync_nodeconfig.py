"""[statesync] in the node TOML: defaults, disabled, and errors that name the field."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest

from carpsim.errors import ConfigError
from carpsim.runtime.nodeconfig import default_creatorid, parse

BASE: dict[str, Any] = {
    "node": {"name": "node1"},
    "vhid": [
        {
            "vhid": 1,
            "interface": "lan",
            "srcip": "192.168.110.251",
            "vips": ["192.168.110.254/24"],
            "password": "pw",
        }
    ],
}


def with_sync(**sync: Any) -> dict[str, Any]:
    return {**BASE, "statesync": sync}


def test_no_section_no_sync() -> None:
    assert parse(BASE).sync is None


def test_lab_section_defaults() -> None:
    cfg = parse(with_sync(interface="sync", peer="172.16.1.6", enabled=True))
    assert cfg.sync is not None
    assert cfg.sync.interface == "sync"
    assert cfg.sync.peer == IPv4Address("172.16.1.6")
    assert cfg.sync.demote == 32
    assert cfg.sync.replicator.creatorid == default_creatorid("node1")
    assert cfg.statesync["peer"] == "172.16.1.6"  # the raw table is still passed through


def test_disabled_section_is_no_sync() -> None:
    assert parse(with_sync(interface="sync", enabled=False)).sync is None


def test_group_is_the_default_destination() -> None:
    cfg = parse(with_sync(interface="sync"))
    assert cfg.sync is not None
    assert cfg.sync.peer is None


def test_tuning_reaches_the_replicator() -> None:
    cfg = parse(with_sync(interface="sync", flush_interval=0.5, bulk_max_tries=3, reliable=False))
    assert cfg.sync is not None
    rc = cfg.sync.replicator
    assert (rc.flush_interval, rc.bulk_max_tries, rc.reliable) == (0.5, 3, False)


@pytest.mark.parametrize(
    ("sync", "field"),
    [
        ({"peer": "172.16.1.6"}, "statesync.interface"),
        ({"interface": "sync", "peer": "224.0.0.240"}, "statesync.peer"),
        ({"interface": "sync", "peer": "not-an-ip"}, "statesync.peer"),
        ({"interface": "sync", "peer": "172.16.1.6", "group": True}, "statesync.group"),
        ({"interface": "sync", "demote": 300}, "statesync.demote"),
        ({"interface": "sync", "flush_interval": 0}, "statesync.flush_interval"),
        ({"interface": "sync", "flush_interval": "fast"}, "statesync.flush_interval"),
        ({"interface": "sync", "mtu": 200}, "statesync.mtu"),
        ({"interface": "sync", "creatorid": 0}, "statesync.creatorid"),
        ({"interface": "sync", "enabled": "yes"}, "statesync.enabled"),
        ({"interface": "sync", "bogus": 1}, "statesync.bogus"),
    ],
)
def test_errors_name_the_field(sync: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(with_sync(**sync))
    assert err.value.field == field


@pytest.mark.parametrize("key", ["refresh_interval", "bulk_timeout", "resend_timeout"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_timings_are_config_errors(key: str, value: float) -> None:
    # TOML has `nan` and `inf`; NaN passes a `<= 0` check and either one later crashes the
    # daemon's timer arming (call_later(nan), timerfd round(inf)) instead of exiting 2.
    with pytest.raises(ConfigError) as err:
        parse(with_sync(interface="sync", **{key: value}))
    assert err.value.field == f"statesync.{key}"
