"""Every numeric knob has a range and nonsense addresses are refused, naming the dotted field.

Each case here was accepted before (issue 14): it passed ``--check`` and then broke the running
daemon (an MTU above 64 KiB made every large flush raise; a 1 µs flush interval made a busy
timer; a broadcast CARP peer or a VIP of 0.0.0.0/0 configured nonsense on the host).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carpsim.errors import ConfigError
from carpsim.runtime.nodeconfig import load, parse


def vhid(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vhid": 1,
        "interface": "lan",
        "srcip": "192.168.110.251",
        "vips": ["192.168.110.254/24"],
        "password": "pw",
    }
    return {**base, **over}


def config(*vhids: dict[str, Any], **sync: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"node": {"name": "node1"}, "vhid": list(vhids) or [vhid()]}
    if sync:
        data["statesync"] = {"interface": "sync", **sync}
    return data


@pytest.mark.parametrize(
    ("sync", "field"),
    [
        ({"mtu": 100_000}, "statesync.mtu"),
        ({"mtu": 65_536}, "statesync.mtu"),
        ({"flush_interval": 1e-6}, "statesync.flush_interval"),
        ({"bulk_tick": 1e-5}, "statesync.bulk_tick"),
        ({"flush_interval": 7200.0}, "statesync.flush_interval"),
        ({"ack_delay": 1e-9}, "statesync.ack_delay"),
        ({"resend_timeout": 0.0001}, "statesync.resend_timeout"),
        ({"bulk_frames_per_tick": 1_000_000}, "statesync.bulk_frames_per_tick"),
        ({"bulk_max_tries": 10_000}, "statesync.bulk_max_tries"),
        ({"sweep_per_interval": 10**9}, "statesync.sweep_per_interval"),
        ({"creatorid": 2**32}, "statesync.creatorid"),
    ],
)
def test_statesync_knobs_have_ranges(sync: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(config(**sync))
    assert err.value.field == field


def test_documented_extremes_are_accepted() -> None:
    cfg = parse(config(mtu=9000, flush_interval=0.001, bulk_tick=0.001, bulk_max_tries=100))
    assert cfg.sync is not None
    assert cfg.sync.replicator.mtu == 9000


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"peer": "255.255.255.255"}, "vhid[1].peer"),
        ({"peer": "0.0.0.0"}, "vhid[1].peer"),
        ({"vips": ["0.0.0.0/0"]}, "vhid[1].vips"),
        ({"vips": ["224.0.0.18/32"]}, "vhid[1].vips"),
        ({"vips": ["127.0.0.1/8"]}, "vhid[1].vips"),
        ({"vips": ["255.255.255.255/32"]}, "vhid[1].vips"),
        ({"srcip": "224.0.0.18"}, "vhid[1].srcip"),
        ({"srcip": "0.0.0.0"}, "vhid[1].srcip"),
        ({"srcip": "255.255.255.255"}, "vhid[1].srcip"),
    ],
)
def test_nonsense_carp_addresses_are_refused(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(config(vhid(**over)))
    assert err.value.field == field


def test_the_same_vip_on_two_vhids_is_refused() -> None:
    two = config(vhid(), vhid(vhid=2, vips=["192.168.110.254/24"]))
    with pytest.raises(ConfigError) as err:
        parse(two)
    assert err.value.field == "vhid[2].vips"
    assert "vhid 1" in err.value.message


def test_a_deeply_nested_toml_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.field == "config"
    assert "\n" not in str(err.value)
