"""Edits of a running node's config (carpsim.config.edit): each yields a whole validated config,
and a bad one names the field and leaves the input untouched."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from carpsim.config import diff, edit, parse, render
from carpsim.config.limits import SYNC_RANGES
from carpsim.config.model import Action, Config
from carpsim.errors import ConfigError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"


def node1() -> Config:
    return parse(tomllib.loads((VECTORS / "reference-node1.toml").read_text()))


BLOCK = {"interface": "lan", "action": "block", "protocol": "tcp", "source": "lan net",
         "destination": "203.0.113.10", "destination_port": "8080", "descr": "no 8080"}  # fmt: skip


def test_add_rule_on_top_and_delete_it_by_descr() -> None:
    old = node1()
    new = edit.edit(old, "add-rule", {"rule": BLOCK, "position": 0})
    assert new.filter.rules[0].action is Action.BLOCK
    assert new.filter.rules[1:] == old.filter.rules
    d = diff(old, new)
    assert d.ruleset_changed
    assert not d.vhids_changed
    assert not d.vhids_added
    assert "tcp dport 8080 drop" in render(new)
    back = edit.edit(new, "delete-rule", {"descr": "no 8080"})
    assert back == old


def test_added_rule_goes_last_by_default_and_index_delete() -> None:
    old = node1()
    new = edit.edit(old, "add-rule", {"rule": BLOCK})
    assert new.filter.rules[-1].descr == "no 8080"
    assert edit.edit(new, "delete-rule", {"index": len(new.filter.rules) - 1}) == old


@pytest.mark.parametrize(
    ("op", "args", "field"),
    [
        ("add-rule", {"rule": {**BLOCK, "source": "NOPE"}}, "filter.rule[8].source"),
        ("add-rule", {"rule": {**BLOCK, "interface": "opt9"}}, "filter.rule[8].interface"),
        ("add-rule", {"rule": BLOCK, "position": 99}, "filter.rule.position"),
        ("delete-rule", {"index": 99}, "filter.rule.index"),
        ("delete-rule", {"descr": "nothing like it"}, "filter.rule.descr"),
        (
            "add-nat",
            {"rule": {"interface": "wan", "source": "lan net", "target": "10.9.9.9"}},
            "nat.outbound.rule[2].target",
        ),
        ("delete-vip", {"interface": "wan", "vhid": 77}, "virtualip.vip"),
        ("delete-alias", {"name": "NOPE"}, "aliases.NOPE"),
        ("set-dhcp", {"interface": "opt7", "settings": {"enable": True}}, "dhcpd.opt7"),
        ("apply", {"text": "[interfaces.lan]\naddress = '10.0.0.1/24'"}, "interfaces"),
        ("apply", {"text": "[filter\n"}, "fragment"),
        ("bogus", {}, "op"),
    ],
)
def test_bad_edits_name_the_field(op: str, args: dict[str, Any], field: str) -> None:
    old = node1()
    with pytest.raises(ConfigError) as exc:
        edit.edit(old, op, args)
    assert exc.value.field.startswith(field), exc.value.field
    assert old == node1()


def test_alias_add_use_delete() -> None:
    c = edit.edit(
        node1(),
        "add-alias",
        {"name": "BAD", "alias": {"type": "host", "address": ["203.0.113.66"]}},
    )
    c = edit.edit(c, "add-rule", {"rule": {**BLOCK, "destination": "BAD"}, "position": 0})
    assert "ip daddr 203.0.113.66" in render(c)
    with pytest.raises(ConfigError, match="alias"):
        edit.edit(c, "delete-alias", {"name": "BAD"})  # still used by the rule


def test_vip_add_delete_and_nat() -> None:
    old = node1()
    c = edit.edit(
        old, "add-vip", {"vip": {"interface": "lan", "vhid": 9, "subnet": "192.168.110.200"}}
    )
    assert diff(old, c).vhids_added == (("lan", 9),)
    assert edit.edit(c, "delete-vip", {"interface": "lan", "vhid": 9}) == old
    n = edit.edit(
        old,
        "add-nat",
        {"rule": {"interface": "wan", "source": "10.9.0.0/16", "target": "192.168.100.254"}},
    )
    assert "ip saddr 10.9.0.0/16 snat to 192.168.100.254 random" in render(n)


def test_set_dhcp_dotted_keys_and_apply_fragment() -> None:
    c = edit.edit(node1(), "set-dhcp", {"interface": "lan", "settings": {"defaultleasetime": 600}})
    assert next(d for d in c.dhcpd if d.interface == "lan").defaultleasetime == 600
    c = edit.edit(c, "set-dhcp", {"interface": "lan", "settings": {"range.to": "192.168.110.150"}})
    assert str(next(d for d in c.dhcpd if d.interface == "lan").range_to) == "192.168.110.150"
    f = edit.edit(c, "apply", {"text": '[aliases.WEB]\ntype = "port"\naddress = ["80", "443"]\n'})
    assert f.alias("WEB") is not None
    assert c.alias("WEB") is None


@pytest.mark.parametrize(("key", "value"), [("mtu", 100_000), ("flush_interval", 1e-6),
                                            ("creatorid", 2**32), ("bulk_tick", 5.0)])  # fmt: skip
def test_sectioned_loader_enforces_the_same_statesync_ranges(key: str, value: float) -> None:
    assert key in SYNC_RANGES
    data = tomllib.loads((VECTORS / "reference-node1.toml").read_text())
    data["statesync"] = {"interface": "sync", key: value}
    with pytest.raises(ConfigError) as exc:
        parse(data)
    assert exc.value.field == f"statesync.{key}"


def test_carp_only_from_the_cluster_where_peers_are_named() -> None:
    data = tomllib.loads((VECTORS / "reference-node1.toml").read_text())
    data["interfaces"]["lan"]["carp_peers"] = ["192.168.110.252"]
    text = render(parse(data))
    inp = text.split("chain input")[1].split("chain forward")[0]
    allow = inp.index("ip protocol 112 ip saddr { 192.168.110.251, 192.168.110.252 } accept")
    drop = inp.index("ip protocol 112 counter drop")
    assert allow < drop < inp.index('ip protocol 112 accept comment "CARP adverts (implicit)"')
    data["interfaces"]["lan"]["carp_peers"] = ["10.1.1.1"]
    with pytest.raises(ConfigError, match="not on"):
        parse(data)
