"""`carpsim lab impair` without namespaces: targets, the loss ruleset, the spec's ranges."""

from __future__ import annotations

import pytest

from carpsim.errors import ConfigError
from carpsim.lab.impair import ImpairSpec, nft_ruleset, ports_of
from carpsim.lab.session import Lab


@pytest.fixture
def lab() -> Lab:
    return Lab.create("reference", prefix="faultsunit-")


def test_a_segment_target_is_every_port_inbound(lab: Lab) -> None:
    ports, directions = ports_of(lab, "lan")
    assert ports == [("node1", "lan"), ("node2", "lan"), ("client1", "lan"), ("client2", "lan")]
    assert directions == ("in",)


def test_a_host_target_is_one_port_both_ways(lab: Lab) -> None:
    assert ports_of(lab, "node1:sync") == ([("node1", "sync")], ("in", "out"))


@pytest.mark.parametrize(
    ("target", "message"),
    [("nosuch", "unknown segment"), ("ghost:lan", "unknown host"), ("server:lan", "no port")],
)
def test_bad_targets_are_one_config_error(lab: Lab, target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        ports_of(lab, target)
    assert err.value.field == "target"


def entry(loss: int, directions: list[str], *ports: str) -> dict[str, object]:
    return {
        "spec": {"loss": loss},
        "directions": directions,
        "ports": [{"bridge_port": p} for p in ports],
    }


def test_loss_rules_per_port_and_direction() -> None:
    text = nft_ruleset(
        {
            "node1:sync": entry(20, ["in", "out"], "iy10"),
            "lan": entry(5, ["in"], "node1-lan", "client1-lan"),
            "wan": entry(0, ["in"], "node1-wan"),
        }
    )
    rules = [line.strip() for line in text.splitlines() if "drop" in line]
    assert rules == [
        'iifname "iy10" numgen random mod 100 < 20 counter drop',
        'oifname "iy10" numgen random mod 100 < 20 counter drop',
        'iifname "node1-lan" numgen random mod 100 < 5 counter drop',
        'iifname "client1-lan" numgen random mod 100 < 5 counter drop',
    ]
    assert text.startswith("table bridge carpsim_impair {")
    assert "type filter hook forward priority 0; policy accept;" in text


def test_total_loss_is_a_plain_drop() -> None:
    text = nft_ruleset({"node2:lan": entry(100, ["in", "out"], "node2-lan")})
    assert 'iifname "node2-lan" counter drop' in text
    assert "numgen" not in text


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"loss": 20.5}, "loss"),
        ({"loss": 101}, "loss"),
        ({"delay": -0.1}, "delay"),
        ({"jitter": 11.0}, "jitter"),
        ({"duplicate": 1.5}, "impairment"),
        ({"max_bytes": 10}, "max_bytes"),
    ],
)
def test_spec_ranges(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ImpairSpec(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_only_timing_faults_need_a_relay() -> None:
    assert not ImpairSpec(loss=20).needs_relay
    assert ImpairSpec(jitter=0.05).needs_relay
    assert ImpairSpec(duplicate=0.05).model().loss == 0.0  # loss stays with nftables
