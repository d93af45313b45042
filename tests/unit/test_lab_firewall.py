"""The generated nftables ruleset (pure text; the netns tests load it into a real kernel)."""

from __future__ import annotations

import re

from carpsim.lab import firewall, topology


def _rules(text: str, chain: str) -> list[str]:
    # anonymous sets contain braces: split on the chain's own closing-brace line
    body = text.split(f"chain {chain} {{", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in body.strip().splitlines()]


def test_outbound_nat_is_one_explicit_rule_per_inside_subnet_to_the_wan_vip() -> None:
    t = topology.load("reference")
    for node in t.nodes:
        text = firewall.ruleset(t, node)
        nat = [r for r in _rules(text, "postrouting") if "snat" in r]
        assert nat == [
            'oifname "wan" ip saddr 192.168.110.0/24 snat to 192.168.100.254 random'
            ' comment "outbound NAT lan -> WAN VIP"',
            'oifname "wan" ip saddr 192.168.120.0/24 snat to 192.168.100.254 random'
            ' comment "outbound NAT dmz -> WAN VIP"',
        ]
        assert "masquerade" not in text
        assert "0.0.0.0/0" not in text


def test_forward_is_pf_like() -> None:
    t = topology.load("reference")
    rules = _rules(firewall.ruleset(t, t.host("node1")), "forward")
    assert "policy drop" in rules[0]
    assert rules[1] == "ct state established,related accept"
    syn = next(i for i, r in enumerate(rules) if "tcp flags" in r)
    assert rules[syn].startswith("ct state new tcp flags & (fin | syn | rst | ack) != syn drop")
    news = [i for i, r in enumerate(rules) if "ct state new meta l4proto" in r]
    assert len(news) == 2
    assert min(news) > syn
    assert all("{ tcp, udp, icmp } accept" in rules[i] for i in news)
    # nothing new is accepted from the WAN: only inside subnets and the sync link
    accepts = [r for r in rules if r.endswith("accept") or "accept comment" in r]
    for r in accepts:
        assert (
            "established" in r
            or "192.168.110.0/24" in r
            or "192.168.120.0/24" in r
            or ('iifname "sync"' in r)
        )


def test_sync_link_is_permissive_and_carp_is_accepted() -> None:
    t = topology.load("reference")
    inp = _rules(firewall.ruleset(t, t.host("node2")), "input")
    assert "policy drop" in inp[0]
    assert any(r.startswith('iifname "sync" accept') for r in inp)
    assert any(r.startswith("ip protocol 112 accept") for r in inp)


def test_ruleset_is_deterministic_and_replaces_itself() -> None:
    t = topology.load("three-node")
    a = firewall.ruleset(t, t.host("node3"))
    assert a == firewall.ruleset(t, t.host("node3"))
    # "table; delete table; table {...}" makes a reload atomic and idempotent
    assert re.search(r"^table ip carpsim\ndelete table ip carpsim\ntable ip carpsim \{", a, re.M)
