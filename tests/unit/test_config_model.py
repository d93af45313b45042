"""The sectioned node config: loading, one-line dotted errors, cross-section checks, diff."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from carpsim.config import derive, diff, dump, loads, parse
from carpsim.config.model import Action, NatMode
from carpsim.dhcp.settings import FailoverRole
from carpsim.errors import ConfigError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"


def ref(n: int) -> dict[str, Any]:
    return tomllib.loads((VECTORS / f"reference-node{n}.toml").read_text())


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return info.value


def test_reference_node_loads_with_its_sections() -> None:
    c = parse(ref(1))
    assert [i.name for i in c.interfaces] == ["wan", "lan", "dmz", "sync"]
    assert [(v.interface, v.vhid, str(v.subnet)) for v in c.virtualip] == [
        ("wan", 3, "192.168.100.254/24"),
        ("lan", 1, "192.168.110.254/24"),
        ("dmz", 2, "192.168.120.254/24"),
    ]
    assert all(v.password == "K33p_It_S3cr3t!" and v.advskew == 0 for v in c.virtualip)
    assert c.nat.mode is NatMode.MANUAL
    assert [str(r.target) for r in c.nat.rules] == ["192.168.100.254"] * 2
    assert c.filter.rules[-1].interface == "sync"
    assert c.filter.rules[-1].action is Action.PASS
    assert c.statesync is not None
    assert c.statesync.peer == IPv4Address("172.16.1.6")
    assert c.hasync.synchronizetoip == IPv4Address("172.16.1.6")
    assert len({r.tracker for r in c.filter.rules}) == len(c.filter.rules)


def test_old_node_config_files_still_load() -> None:
    text = """
    [node]
    name = "node1"
    metrics_address = "10.0.0.1"
    [web]
    listen = "127.0.0.1:8081"
    [carp]
    password = "K33p_It_S3cr3t!"
    advskew = 100
    [[vhid]]
    vhid = 1
    interface = "lan"
    srcip = "192.168.110.251"
    vips = ["192.168.110.254/24"]
    advskew = 7
    [statesync]
    interface = "sync"
    peer = "172.16.1.6"
    """
    c = loads(text)
    (vip,) = c.virtualip
    assert (vip.interface, vip.vhid, vip.advskew, str(vip.subnet)) == (
        "lan", 1, 7, "192.168.110.254/24",
    )  # fmt: skip
    assert c.interface("lan") is not None
    assert c.node.metrics_address == "10.0.0.1"
    assert c.web is not None
    assert c.web.port == 8081
    assert str(c.interface("lan").address) == "192.168.110.251/24"  # type: ignore[union-attr]
    (carp,) = derive.carp_vhids(c)
    assert carp.interface == "lan"
    assert carp.carp.srcip == IPv4Address("192.168.110.251")
    # and the dump of an old file is a new-format file describing the same node
    assert loads(dump.dumps(c)) == c


@pytest.mark.parametrize("n", [1, 2])
def test_dump_round_trips(n: int) -> None:
    c = parse(ref(n))
    assert parse(dump.to_data(c)) == c
    assert loads(dump.dumps(c, header="written by a test")) == c


def test_unknown_alias_names_the_rule_field() -> None:
    data = ref(1)
    data["filter"]["rule"][3]["source"] = "LANX"
    e = error(data)
    assert str(e) == 'filter.rule[3].source: unknown alias "LANX"'


def test_alias_resolves_nested_and_is_type_checked() -> None:
    data = ref(1)
    data["aliases"]["ALL"] = {"type": "network", "address": ["INSIDE_NETS", "10.9.0.0/16"]}
    data["aliases"]["WEB"] = {"type": "port", "address": ["80", "443", "8000-8080"]}
    data["filter"]["rule"].append(
        {"interface": "lan", "protocol": "tcp", "source": "ALL", "destination_port": "WEB"}
    )
    c = parse(data)
    assert derive.resolve_alias(c, "ALL", "x", derive.ADDRESS_ALIASES) == (
        "192.168.110.0/24", "192.168.120.0/24", "10.9.0.0/16",
    )  # fmt: skip
    data["filter"]["rule"][-1]["source"] = "WEB"
    assert "is a port alias" in error(data).message


def test_alias_loop_is_refused() -> None:
    data = ref(1)
    data["aliases"]["A"] = {"type": "network", "address": ["B"]}
    data["aliases"]["B"] = {"type": "network", "address": ["A"]}
    assert error(data).field.startswith("aliases.A")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("virtualip", "vip", 1, "interface"), "lanx", "virtualip.vip[1].interface"),
        (("virtualip", "vip", 1, "password"), "x" * 20, "virtualip.vip[1].password"),
        (("virtualip", "vip", 0, "subnet"), "10.0.0.1/24", "virtualip.vip[0].subnet"),
        (("filter", "rule", 0, "action"), "allow", "filter.rule[0].action"),
        (("filter", "rule", 0, "destination"), "dmx net", "filter.rule[0].destination"),
        (("filter", "rule", 2, "destination_port"), "70000", "filter.rule[2].destination_port"),
        (
            ("nat", "outbound", "rule", 0, "target"),
            "192.168.100.246",
            "nat.outbound.rule[0].target",
        ),
        (("dhcpd", "lan", "range", "to"), "192.168.120.9", "dhcpd.lan.range.to"),
        (("interfaces", "lan", "address"), "192.168.110.0/24", "interfaces.lan.address"),
        (("hasync", "pfsyncinterface"), "syncx", "hasync.pfsyncinterface"),
    ],
)
def test_bad_values_raise_one_dotted_error(path: tuple[Any, ...], value: Any, field: str) -> None:
    data = ref(1)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    e = error(data)
    assert e.field == field, str(e)
    assert "\n" not in str(e)


def test_same_vhid_on_another_interface_is_fine_but_not_twice_on_one() -> None:
    data = ref(1)
    data["virtualip"]["vip"][2]["vhid"] = 3  # dmz vhid 3 next to wan vhid 3: allowed
    parse(data)
    data["virtualip"]["vip"].append(
        {"interface": "dmz", "vhid": 3, "subnet": "192.168.120.253", "descr": "dup"}
    )
    assert "already virtualip.vip[2]" in error(data).message


def test_interface_names_ending_in_ip_are_refused() -> None:
    data = ref(1)
    data["interfaces"]["voip"] = {"address": "10.50.0.1/24"}
    assert error(data).field == "interfaces.voip"


def test_unknown_keys_are_errors() -> None:
    data = ref(1)
    data["filter"]["rule"][0]["sorce"] = "any"
    assert error(data).field == "filter.rule[0].sorce"
    data = ref(1)
    data["hasync"]["synchronizeipsec"] = True
    assert error(data).field == "hasync.synchronizeipsec"


def test_statesync_must_agree_with_hasync_pfsync() -> None:
    data = ref(1)
    data["statesync"] = {"interface": "sync", "peer": "172.16.1.9"}
    assert error(data).field == "statesync.peer"
    del data["statesync"]
    assert parse(data).statesync is not None  # derived from hasync.pfsync*


def test_dhcpd_section_produces_the_server_settings() -> None:
    (s1,) = derive.dhcp_servers(parse(ref(1)))
    (s2,) = derive.dhcp_servers(parse(ref(2)))
    assert s1.interface == "lan"
    assert str(s1.subnet) == "192.168.110.0/24"
    assert s1.router == IPv4Address("192.168.110.254")
    assert not s1.gateway_is_physical
    assert s1.failover is not None
    assert s2.failover is not None
    assert (s1.failover.role, s2.failover.role) == (FailoverRole.PRIMARY, FailoverRole.SECONDARY)
    assert s1.failover.peer == IPv4Address("192.168.110.252")
    assert s1.failover.name == "dhcp_lan"


def test_diff_names_sections_vhids_and_rules() -> None:
    old = parse(ref(1))
    assert diff(old, old).empty
    data = ref(1)
    data["virtualip"]["vip"][0]["descr"] = "renamed"  # no CARP change: must not flap
    data["virtualip"]["vip"][1]["advskew"] = 50
    data["filter"]["rule"].insert(0, {"interface": "lan", "action": "block", "descr": "new"})
    data["filter"]["rule"][2]["descr"] = "edited"
    new = parse(data)
    d = diff(old, new)
    assert d.sections == {"virtualip", "filter"}
    assert d.vhids_changed == (("lan", 1),)
    assert not d.vhids_added
    assert not d.vhids_removed
    # the file gives no trackers: an edited rule is a new one (removed + added)
    assert len(d.rules_added) == 2
    assert len(d.rules_removed) == 1
    assert not d.rules_changed
    assert d.ruleset_changed
    assert d.dhcpd_changed == ("lan",)  # the failover role depends on the VIP skew


def test_diff_tracks_an_explicitly_tracked_rule_through_an_edit() -> None:
    old = parse(ref(1))
    data = dump.to_data(old)
    data["filter"]["rule"][1]["descr"] = "edited"
    data["filter"]["rule"][0], data["filter"]["rule"][2] = (
        data["filter"]["rule"][2], data["filter"]["rule"][0],
    )  # fmt: skip
    d = diff(old, parse(data))
    assert d.rules_changed == (old.filter.rules[1].tracker,)
    assert d.rules_reordered
    assert not d.rules_added


def test_vhid_removed_and_added() -> None:
    old = parse(ref(1))
    new = replace(old, virtualip=(*old.virtualip[1:], replace(old.virtualip[0], vhid=9)))
    d = diff(old, new)
    assert d.vhids_removed == (("wan", 3),)
    assert d.vhids_added == (("wan", 9),)
