"""Topology loading and validation (pure: no namespaces)."""

from __future__ import annotations

import tomllib
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from carpsim.config import loads
from carpsim.errors import ConfigError
from carpsim.lab import topology
from carpsim.lab.nodes import node_config
from carpsim.lab.state import LabPaths
from carpsim.runtime import node_config as node_config_mod

REPO = Path(__file__).resolve().parents[2]


def reference_data() -> dict[str, Any]:
    return tomllib.loads(topology.resolve("reference")[1])


def test_reference_matches_the_architecture_table() -> None:
    t = topology.load("reference")
    n1, n2 = t.nodes
    assert (n1.name, n1.advskew, n2.name, n2.advskew) == ("node1", 0, "node2", 100)
    assert {s: str(a) for s, a in n1.addresses.items()} == {
        "wan": "192.168.100.246",
        "lan": "192.168.110.251",
        "dmz": "192.168.120.251",
        "sync": "172.16.1.5",
    }
    assert {s: str(a) for s, a in n2.addresses.items()} == {
        "wan": "192.168.100.248",
        "lan": "192.168.110.252",
        "dmz": "192.168.120.252",
        "sync": "172.16.1.6",
    }
    assert {(v.segment, v.vhid, str(v.address)) for v in t.vips} == {
        ("wan", 3, "192.168.100.254"),
        ("lan", 1, "192.168.110.254"),
        ("dmz", 2, "192.168.120.254"),
    }
    assert str(t.segments["sync"].subnet) == "172.16.1.4/30"
    assert t.carp.password == "K33p_It_S3cr3t!"
    assert t.carp.advbase == 1
    assert t.carp.preempt
    assert t.host("server").addresses["internet"] == IPv4Address("203.0.113.10")
    assert t.host("client1").gateway == IPv4Address("192.168.110.254")
    assert t.host("router").forwarding


def test_lab_netns_file_is_the_packaged_one() -> None:
    lab_file = REPO / "lab" / "netns" / "reference.toml"
    assert lab_file.read_text() == topology.resolve("reference")[1]
    assert topology.load(str(lab_file)) == topology.load("reference")


def test_three_node_example_loads() -> None:
    t = topology.load("three-node")
    assert [(n.name, n.advskew) for n in t.nodes] == [("node1", 0), ("node2", 100), ("node3", 200)]
    assert set(topology.builtin_names()) >= {"reference", "three-node"}


def test_interface_names_fit_the_kernel_limit() -> None:
    for name in topology.builtin_names():
        for host in topology.load(name).hosts:
            for seg in host.addresses:
                assert len(host.switch_port(seg)) <= 15
                assert len(host.interface(seg)) <= 15


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *keys, last = path.split("/")
    cur: Any = data
    for k in keys:
        cur = cur[int(k)] if k.isdigit() else cur[k]
    cur[last] = value


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("node/1/addresses/lan", "192.168.111.252", "node[1].addresses.lan"),
        ("node/1/addresses/lan", "192.168.110.255", "node[1].addresses.lan"),
        ("node/1/name", "node1", "node[1].name"),
        ("host/0/name", "node2", "host[0].name"),
        ("node/1/addresses/wan", "192.168.100.246", "node[1].addresses.wan"),
        ("vip/1/vhid", 3, None),  # different segment: allowed
        ("vip/2/segment", "lan", "vip[2].address"),
        ("vip/1/address", "192.168.110.10", "vip[1].address"),  # client1's address
        ("node/0/advskew", 255, "node[0].advskew"),
        ("carp/password", "x" * 20, "carp.password"),
        ("segments/dmz/subnet", "192.168.110.0/25", "segments.dmz.subnet"),
        ("segments/dmz/subnet", "192.168.120.1/24", "segments.dmz.subnet"),
        ("firewall/inside", ["lan", "nope"], "firewall.inside[1]"),
        ("host/0/gateway", "10.0.0.1", "host[0].gateway"),
        ("host/0/addresses", {"nope": "1.2.3.4"}, "host[0].addresses.nope"),
        ("host/4/name", "serverlonger", "host[4].addresses.internet"),
        ("carp/master_down_formula", "vrrp", "carp.master_down_formula"),
        ("lab/name", "Bad Name", "lab.name"),
    ],
)
def test_validation_names_the_field(path: str, value: Any, field: str | None) -> None:
    data = reference_data()
    _set(data, path, value)
    if field is None:
        topology.parse(data)
        return
    with pytest.raises(ConfigError) as err:
        topology.parse(data)
    assert err.value.field == field


def test_duplicate_vhid_on_one_segment_is_rejected() -> None:
    data = reference_data()
    data["vip"].append({"segment": "lan", "vhid": 1, "address": "192.168.110.253"})
    with pytest.raises(ConfigError) as err:
        topology.parse(data)
    assert err.value.field == "vip[3].vhid"


def test_vip_on_a_segment_a_node_lacks_is_rejected() -> None:
    data = reference_data()
    data["vip"].append({"segment": "internet", "vhid": 9, "address": "203.0.113.254"})
    with pytest.raises(ConfigError) as err:
        topology.parse(data)
    assert err.value.field == "vip[3].segment"


def test_bad_toml_and_unknown_topology() -> None:
    with pytest.raises(ConfigError) as err:
        topology.loads("[lab\n", "x.toml")
    assert err.value.field == "x.toml"
    with pytest.raises(ConfigError) as err:
        topology.load("no-such-topology")
    assert err.value.field == "topology"


def test_generated_node_config_is_what_carpsim_node_reads() -> None:
    t = topology.load("reference")
    paths = LabPaths("cstest-")
    text = node_config(t, paths, t.host("node2"))
    cfg, doc = node_config_mod.node_config(loads(text)), loads(text)
    assert cfg.control == str(paths.control("node2"))
    assert cfg.name == "node2"
    assert [
        (v.carp.vhid, v.interface, str(v.carp.srcip), [str(x) for x in v.carp.vips])
        for v in cfg.vhids
    ] == [
        (3, "wan", "192.168.100.248", ["192.168.100.254/24"]),
        (1, "lan", "192.168.110.252", ["192.168.110.254/24"]),
        (2, "dmz", "192.168.120.252", ["192.168.120.254/24"]),
    ]
    assert [(v.carp.advskew, v.carp.password, v.carp.preempt) for v in cfg.vhids] == [
        (100, b"K33p_It_S3cr3t!", True)
    ] * 3
    assert cfg.sync is not None
    assert str(cfg.sync.peer) == "172.16.1.5"
    assert cfg.sync.interface == "sync"
    # the node renders its own firewall from it: the lab programs none
    assert doc.filter.rules
    assert doc.nat.rules
    # hasync as the seed configures it: node2 receives, node1 pushes to node2's SYNC address
    assert doc.hasync.synchronizetoip is None
    assert str(doc.hasync.pfsyncpeerip) == "172.16.1.5"
    node1 = loads(node_config(t, paths, t.host("node1")))
    assert str(node1.hasync.synchronizetoip) == "172.16.1.6"
    assert node1.hasync.password == doc.hasync.password != ""
    off = node_config_mod.node_config(
        loads(node_config(t, paths, t.host("node2"), statesync=False))
    )
    assert off.sync is None
