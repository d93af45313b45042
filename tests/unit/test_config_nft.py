"""The rendered nftables document, by structure (the netns test loads it into a kernel)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from carpsim.config import parse, render
from carpsim.lab import firewall, topology

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"


def ref(n: int) -> dict[str, Any]:
    return tomllib.loads((VECTORS / f"reference-node{n}.toml").read_text())


def chain(text: str, name: str) -> list[str]:
    body = text.split(f"chain {name} {{", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_document_replaces_the_table_atomically() -> None:
    text = render(parse(ref(1)))
    lines = text.splitlines()
    assert lines[1:4] == ["table ip carpsim", "delete table ip carpsim", "table ip carpsim {"]
    assert text.count("table ip carpsim {") == 1


def test_reference_config_renders_the_labs_nat_exactly() -> None:
    t = topology.load("reference")
    for n, node in ((1, t.host("node1")), (2, t.host("node2"))):
        ours = [r for r in chain(render(parse(ref(n))), "postrouting") if "snat" in r]
        lab = [r for r in chain(firewall.ruleset(t, node), "postrouting") if "snat" in r]
        assert ours == lab


def test_reference_forward_chain_is_pf_like() -> None:
    rules = chain(render(parse(ref(1))), "forward")
    assert "policy drop" in rules[0]
    assert rules[1:3] == ["ct state established,related accept", "ct state invalid drop"]
    assert rules[3].startswith("ct state new tcp flags & (fin | syn | rst | ack) != syn drop")
    accepts = [r for r in rules[4:] if " accept " in r]
    # new flows only from the inside subnets (tcp/udp and icmp), and the permissive SYNC link
    assert all(
        "ip saddr 192.168.110.0/24" in r
        or "ip saddr 192.168.120.0/24" in r
        or r.startswith('iifname "sync" accept')
        for r in accepts
    )
    assert not any("(self)" in r or "192.168.100.246" in r for r in rules)  # to-self: input only
    assert any(r.startswith('iifname "sync" accept') for r in rules)


def test_interface_matches_parent_and_its_carp_macvlans() -> None:
    c = parse(ref(1))
    default = chain(render(c), "forward")
    assert any(r.startswith('iifname { "lan", "carp1x*" }') for r in default)
    exact = chain(render(c, {"lan": ["carp1x7"]}), "forward")
    assert any(r.startswith('iifname { "lan", "carp1x7" }') for r in exact)


def test_actions_ports_aliases_and_negation() -> None:
    data = ref(1)
    data["aliases"]["WEB"] = {"type": "port", "address": ["80", "443"]}
    data["aliases"]["BAD"] = {"type": "host", "address": ["203.0.113.66", "203.0.113.67"]}
    data["filter"]["rule"][:0] = [
        {"interface": "lan", "action": "block", "protocol": "tcp", "source": "lan net",
         "destination": "BAD", "destination_port": "WEB", "descr": "no bad web", "log": True},
        {"interface": "lan", "action": "reject", "source": "!lan net", "descr": "spoofed"},
        {"interface": "lan", "action": "pass", "disabled": True, "descr": "off"},
    ]  # fmt: skip
    rules = chain(render(parse(data)), "forward")
    block = next(r for r in rules if "no bad web" in r)
    assert "meta l4proto tcp ip saddr 192.168.110.0/24" in block
    assert "ip daddr { 203.0.113.66, 203.0.113.67 } tcp dport { 80, 443 }" in block
    assert " log prefix " in block
    assert " drop " in block
    rejects = [r for r in rules if "spoofed" in r]
    assert len(rejects) == 2
    assert "ip saddr != 192.168.110.0/24" in rejects[0]
    assert "reject with tcp reset" in rejects[0]
    assert not any('"off"' in r for r in rules)
    # user rules keep their order, after the pf-like preamble
    assert rules.index(block) < rules.index(rejects[0])


def test_nat_modes() -> None:
    data = ref(1)
    data["nat"]["outbound"]["mode"] = "automatic"
    auto = [r for r in chain(render(parse(data)), "postrouting") if "snat" in r]
    # automatic: every other subnet out of the gateway interface to its *interface* address
    assert len(auto) == 3
    assert all("snat to 192.168.100.246 random" in r for r in auto)
    data["nat"]["outbound"]["mode"] = "hybrid"
    hybrid = [r for r in chain(render(parse(data)), "postrouting") if "snat" in r]
    assert hybrid[:2] == [r for r in chain(render(parse(ref(1))), "postrouting") if "snat" in r]
    assert len(hybrid) == 5
    data["nat"]["outbound"]["mode"] = "disabled"
    assert not [r for r in chain(render(parse(data)), "postrouting") if "snat" in r]
    data = ref(1)
    data["nat"]["outbound"]["rule"][0].update(target="", static_port=True)
    first = next(r for r in chain(render(parse(data)), "postrouting") if "snat" in r)
    assert "snat to 192.168.100.246 comment" in first  # the interface address, ports kept


def test_implicit_input_rules() -> None:
    rules = chain(render(parse(ref(1))), "input")
    assert rules[1:5] == [
        'iifname "lo" accept',
        "ct state established,related accept",
        "ct state invalid drop",
        'ip protocol 112 accept comment "CARP adverts (implicit)"',
    ]
    assert any("ip protocol 240 accept" in r and r.startswith('iifname "sync"') for r in rules)
    assert any("udp sport 68 udp dport 67" in r for r in rules)
    icmp = next(r for r in rules if "ICMP to the firewall" in r)
    assert "icmp type { echo-request, destination-unreachable, time-exceeded }" in icmp
    assert "192.168.100.254" in icmp  # "(self)" includes the VIPs


def test_comments_cannot_break_out_of_the_string() -> None:
    data = ref(1)
    data["filter"]["rule"][0]["descr"] = "x; drop; y"
    text = render(parse(data))
    assert 'comment "x; drop; y"' in text
