"""The master's transformations and the receiver's merge (pfSense's HA sync)."""

from __future__ import annotations

import contextlib
import tomllib
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.config import dump, parse
from carpsim.config.model import Config
from carpsim.configsync import apply, pfsense, policy
from carpsim.errors import ConfigError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"


def ref(n: int) -> dict[str, Any]:
    return tomllib.loads((VECTORS / f"reference-node{n}.toml").read_text())


def edited(n: int, **changes: Any) -> Config:
    data = ref(n)
    for key, fn in changes.items():
        fn(data[key])
    return parse(data)


def test_toggles_pick_the_sections() -> None:
    c = parse(ref(1))
    assert policy.sections_to_send(c) == (
        "filter", "nat", "aliases", "dhcpd", "staticroutes", "gateways", "virtualip",
    )  # fmt: skip
    only_rules = replace(c, hasync=replace(c.hasync, toggles=frozenset({"synchronizerules"})))
    payload = policy.build_payload(only_rules)
    assert payload is not None
    assert list(payload) == ["filter"]
    none = replace(c, hasync=replace(c.hasync, toggles=frozenset()))
    assert policy.build_payload(none) is None


def test_empty_sections_are_sent_so_deleting_the_last_item_propagates() -> None:
    c = parse(ref(1))
    empty = replace(c, aliases=(), staticroutes=())
    payload = policy.build_payload(empty)
    assert payload is not None
    assert payload["aliases"] == {"alias": []}
    assert payload["staticroutes"] == {"route": []}
    merged = policy.merge(parse(ref(2)), payload)
    assert merged.aliases == ()


def test_nosync_items_are_stripped() -> None:
    def add(f: dict[str, Any]) -> None:
        f["rule"].append({"interface": "lan", "action": "block", "nosync": True, "descr": "local"})

    c = edited(1, filter=add)
    payload = policy.build_payload(c)
    assert payload is not None
    assert not any(r["descr"] == "local" for r in payload["filter"]["rule"])
    assert len(payload["filter"]["rule"]) == len(c.filter.rules) - 1
    # and the receiver, which replaces the section, loses its own copy of such a rule
    n2 = edited(2, filter=add)
    assert not any(r.descr == "local" for r in policy.merge(n2, payload).filter.rules)


@pytest.mark.parametrize(("skew", "sent"), [(0, 100), (1, 101), (154, 254), (200, 254)])
def test_advskew_plus_100_capped(skew: int, sent: int) -> None:
    def set_skew(v: dict[str, Any]) -> None:
        v["vip"][0]["advskew"] = skew

    payload = policy.build_payload(edited(1, virtualip=set_skew))
    assert payload is not None
    assert payload["virtualip"]["vip"][0]["advskew"] == str(sent)
    assert payload["virtualip"]["vip"][1]["advskew"] == "100"


def test_dhcp_failover_peer_becomes_the_masters_own_address() -> None:
    payload = policy.build_payload(parse(ref(1)))
    assert payload is not None
    assert payload["dhcpd"]["lan"]["failover_peerip"] == "192.168.110.251"
    merged = policy.merge(parse(ref(2)), payload)
    assert merged.dhcpd[0].failover_peerip == IPv4Address("192.168.110.251")


def test_receiver_keeps_its_own_hasync_interfaces_and_node() -> None:
    n1, n2 = parse(ref(1)), parse(ref(2))
    payload = policy.build_payload(n1)
    assert payload is not None
    merged = policy.merge(n2, payload)
    assert merged.hasync == n2.hasync
    assert merged.interfaces == n2.interfaces
    assert merged.node == n2.node
    assert merged.statesync == n2.statesync
    assert merged.system == n2.system
    assert [v.advskew for v in merged.virtualip] == [100, 100, 100]
    assert [r.descr for r in merged.filter.rules] == [r.descr for r in n1.filter.rules]
    assert merged.nat == n1.nat
    # the reference backup's file is exactly what a sync from the master produces
    assert policy.receive(n2, payload, "172.16.1.5").diff.empty


def test_sync_loop_is_refused_without_applying() -> None:
    n2 = parse(ref(2))
    looped = replace(n2, hasync=replace(n2.hasync, synchronizetoip=IPv4Address("172.16.1.5")))
    payload = policy.build_payload(parse(ref(1)))
    assert payload is not None
    got = policy.receive(looped, payload, "172.16.1.5")
    assert got.loop
    assert got.config is None
    assert not policy.receive(n2, payload, "172.16.1.5").loop


@pytest.mark.parametrize(
    ("remote", "ok"),
    [("23.3", True), ("23.30", True), (23.3, True), ("24.5", False), (None, False)],
)
def test_version_check(remote: object, ok: bool) -> None:
    reply = {} if remote is None else {"config_version": remote}
    assert (policy.check_version(reply, "23.3") is None) is ok


def test_invalid_payload_is_refused_naming_the_field() -> None:
    n2 = parse(ref(2))
    payload = policy.build_payload(parse(ref(1)))
    assert payload is not None
    payload["filter"]["rule"][0]["interface"] = "opt7"
    with pytest.raises(ConfigError) as info:
        policy.merge(n2, payload)
    assert info.value.field == "filter.rule[0].interface"
    with pytest.raises(ConfigError):
        policy.merge(n2, {"filter": {"rule": "x"}})
    with pytest.raises(ConfigError):
        policy.merge(n2, {"system": {}})


leaf = st.one_of(st.text(max_size=8), st.integers(), st.booleans())
tree = st.recursive(
    leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(section=st.sampled_from(pfsense.SECTIONS), body=tree)
def test_garbage_sections_only_raise_config_error(section: str, body: object) -> None:
    n2 = parse(ref(2))
    with contextlib.suppress(ConfigError):
        policy.merge(n2, {section: body})


def test_model_to_pfsense_and_back_is_identity() -> None:
    data = ref(1)
    data["aliases"]["WEB"] = {"type": "port", "address": ["80", "443"]}
    data["filter"]["rule"].append(
        {"interface": "lan", "action": "reject", "protocol": "tcp", "source": "!INSIDE_NETS",
         "destination": "wan address", "destination_port": "WEB", "log": True, "disabled": True}
    )  # fmt: skip
    data["staticroutes"] = {"route": [{"network": "10.20.0.0/16", "gateway": "192.168.120.1"}]}
    c = parse(data)
    sections = {s: pfsense.to_pfsense(c, s) for s in pfsense.SECTIONS}
    assert policy.merge(c, sections) == c


def test_apply_plan_touches_only_what_changed() -> None:
    old = parse(ref(2))

    def skew(v: dict[str, Any]) -> None:
        v["vip"][1]["advskew"] = 120
        v["vip"][0]["descr"] = "relabelled"

    new = edited(2, virtualip=skew)
    p = apply.plan(old, new)
    assert [v.carp.vhid for v in p.vhids_update] == [1]
    assert not p.vhids_add
    assert not p.vhids_remove
    assert p.nftables is not None  # the VIP set feeds "(self)"
    assert p.statesync_changed is False
    assert [s.interface for s in p.dhcp_start] == []  # role stays secondary: server unchanged
    assert apply.plan(old, old).empty
    assert apply.plan(old, old).steps() == []


def test_apply_plan_fails_before_touching_anything() -> None:
    old = parse(ref(2))
    bad = replace(old, virtualip=(replace(old.virtualip[0], password=""),))
    with pytest.raises(ConfigError):
        apply.plan(old, bad)


def test_dump_of_a_merged_config_is_a_valid_file() -> None:
    payload = policy.build_payload(parse(ref(1)))
    assert payload is not None
    merged = policy.merge(parse(ref(2)), payload)
    assert parse(tomllib.loads(dump.dumps(merged))) == merged
