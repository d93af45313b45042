"""`carpsim import-pfsense`: config.xml built from the documented structure -> carpsim configs."""

from __future__ import annotations

import tomllib
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from carpsim.cli import main
from carpsim.config import lint, loads, pfsense_xml, render
from carpsim.configsync import policy
from carpsim.errors import ConfigError
from carpsim.lab import topology

PF = Path(__file__).resolve().parents[1] / "vectors" / "pfsense"


def imported(n: int) -> pfsense_xml.Imported:
    return pfsense_xml.import_xml((PF / f"reference-node{n}.xml").read_bytes())


def test_reference_cluster_imports_with_its_sections() -> None:
    c = imported(1).config
    assert c.node.name == "node1"
    assert [(i.name, i.device, str(i.address)) for i in c.interfaces] == [
        ("wan", "wan", "192.168.100.246/24"),
        ("lan", "lan", "192.168.110.251/24"),
        ("opt1", "dmz", "192.168.120.251/24"),
        ("opt2", "sync", "172.16.1.5/30"),
    ]
    assert c.interface("wan").gateway == IPv4Address("192.168.100.1")  # type: ignore[union-attr]
    assert [(v.interface, v.vhid, v.advskew) for v in c.virtualip] == [
        ("wan", 3, 0), ("lan", 1, 0), ("opt1", 2, 0),
    ]  # fmt: skip
    assert {v.password for v in c.virtualip} == {"K33p_It_S3cr3t!"}
    assert [r.tracker for r in c.filter.rules] == [1700000001, 1700000002, 1700000003, 1700000004]
    assert c.filter.rules[3].nosync
    assert c.filter.rules[3].destination.text() == "wan address"
    assert c.nat.mode.value == "manual"
    assert [str(r.target) for r in c.nat.rules] == ["192.168.100.254"] * 2
    assert c.dhcpd[0].failover_peerip == IPv4Address("192.168.110.252")
    assert c.hasync.pfsyncinterface == "opt2"
    assert c.hasync.synchronizetoip == IPv4Address("172.16.1.6")
    assert c.statesync is not None
    assert c.statesync.interface == "sync"
    assert c.system.version == "23.3"


def test_what_is_not_imported_is_reported() -> None:
    report = "\n".join(imported(1).report)
    for expected in ("unbound:", "syslog:", "nat/rule:", "virtualip/vip[3]: mode 'ipalias'",
                     "ipprotocol inet6", "hasync/synchronizeusers", "system/user"):  # fmt: skip
        assert expected in report
    assert "synchronizetoip" not in report


def test_imported_pair_is_lint_clean_renders_and_syncs() -> None:
    a, b = imported(1).config, imported(2).config
    assert lint.lint([a, b]) == []
    assert "snat to 192.168.100.254 random" in render(a)
    payload = policy.build_payload(a)
    assert payload is not None
    merged = policy.merge(b, payload)
    assert [r.tracker for r in merged.filter.rules] == [1700000001, 1700000002, 1700000003]
    assert [v.advskew for v in merged.virtualip] == [100, 100, 100]


def test_topology_is_accepted_by_the_lab_loader() -> None:
    data = pfsense_xml.topology_data([imported(1), imported(2)], "seed")
    t = topology.parse(data)
    assert [n.name for n in t.nodes] == ["node1", "node2"]
    assert [n.advskew for n in t.nodes] == [0, 100]
    assert (t.firewall.wan, t.firewall.inside, t.firewall.sync) == ("wan", ("lan", "dmz"), "sync")
    assert sorted((v.segment, v.vhid) for v in t.vips) == [("dmz", 2), ("lan", 1), ("wan", 3)]
    assert t.carp.password == "K33p_It_S3cr3t!"


@pytest.mark.parametrize(
    ("xml", "field"),
    [
        (b"<notpfsense/>", "config.xml"),
        (b"<pfsense><interfaces>", "config.xml"),
        (
            b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x "y">]><pfsense>&x;</pfsense>',
            "config.xml",
        ),
    ],
)
def test_bad_or_hostile_xml_is_a_config_error(xml: bytes, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        pfsense_xml.import_xml(xml)
    assert info.value.field == field


def test_invalid_item_names_its_pfsense_path() -> None:
    text = (
        (PF / "reference-node1.xml")
        .read_text()
        .replace(
            "<interface>opt1</interface>\n\t\t\t<vhid>2",
            "<interface>opt7</interface>\n\t\t\t<vhid>2",
        )
    )
    with pytest.raises(ConfigError) as info:
        pfsense_xml.import_xml(text.encode())
    assert info.value.field == "config.xml virtualip.vip[2].interface"


def test_cli_writes_node_configs_and_topology(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [str(PF / "reference-node1.xml"), str(PF / "reference-node2.xml")]
    assert main(["import-pfsense", *files, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "not imported: unbound" in out
    node1 = loads((tmp_path / "node1.toml").read_text())
    assert node1 == imported(1).config
    topology.parse(tomllib.loads((tmp_path / "topology.toml").read_text()))
    assert main(["lint", str(tmp_path / "node1.toml"), str(tmp_path / "node2.toml")]) == 0
