"""The node's DHCP wiring that needs no namespace: settings from the node config file, the
lab's dhcpd sections (and the empty-gateway variant `carpsim lint` flags), status rendering,
and the lab probe's lease-file reading and database agreement."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from carpsim.cli import dhcp_render
from carpsim.config import fromlab, lint
from carpsim.config.derive import dhcp_servers
from carpsim.dhcp.settings import FailoverRole
from carpsim.errors import ConfigError
from carpsim.lab import dhcp_probe, nodes
from carpsim.lab.state import LabPaths
from carpsim.lab.topology import load
from carpsim.runtime import node_config
from carpsim.runtime.node_dhcp import settings_from_file, state_dir_for

VIP = IPv4Address("192.168.110.254")


def lab_file(tmp_path: Path, node: str, dhcp: str = "vip") -> Path:
    topo = load("reference")
    path = tmp_path / f"{node}.toml"
    path.write_text(nodes.node_config(topo, LabPaths("unit-"), topo.host(node), dhcp=dhcp))
    return path


def test_lab_node_file_gives_a_failover_pair_with_the_vip_as_router(tmp_path: Path) -> None:
    one = {s.interface: s for s in settings_from_file(lab_file(tmp_path, "node1"))}
    two = {s.interface: s for s in settings_from_file(lab_file(tmp_path, "node2"))}
    assert set(one) == set(two) == {"lan", "dmz"}
    assert one["lan"].router == two["lan"].router == VIP
    assert one["lan"].dns == (VIP,)
    assert not one["lan"].gateway_is_physical
    fo1, fo2 = one["lan"].failover, two["lan"].failover
    assert fo1 is not None
    assert fo2 is not None
    # pfSense: primary where the VIP's advskew < 20; each peers with the other's LAN address.
    assert (fo1.role, fo2.role) == (FailoverRole.PRIMARY, FailoverRole.SECONDARY)
    assert (fo1.peer, fo2.peer) == (two["lan"].interface_address, one["lan"].interface_address)
    assert (fo1.my_port, fo2.my_port) == (519, 520)
    assert one["lan"].range_start == IPv4Address("192.168.110.100")
    # the CARP daemon still loads the same file
    assert len(node_config.load(lab_file(tmp_path, "node1"))[0].vhids) == 3


def test_empty_gateway_hands_out_the_node_address_and_lint_flags_it(tmp_path: Path) -> None:
    s = {x.interface: x for x in settings_from_file(lab_file(tmp_path, "node1", "empty"))}
    assert s["lan"].gateway_is_physical
    assert s["lan"].router == IPv4Address("192.168.110.251")
    topo = load("reference")
    bad = lint.lint(list(fromlab.node_configs(topo, dhcp="empty").values()))
    assert {(f.node, f.field) for f in bad if f.severity == "error"} >= {
        ("node1", "dhcpd.lan.gateway"),
        ("node2", "dhcpd.lan.gateway"),
        ("node1", "dhcpd.lan.dnsserver"),
    }
    assert lint.lint(list(fromlab.node_configs(topo).values())) == []


def test_dhcp_off_and_bad_mode() -> None:
    topo = load("reference")
    assert all(not dhcp_servers(c) for c in fromlab.node_configs(topo, dhcp="off").values())
    with pytest.raises(ValueError, match="dhcp mode"):
        fromlab.node_configs(topo, dhcp="maybe")


def test_a_bad_dhcpd_section_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    path = lab_file(tmp_path, "node1")
    path.write_text(path.read_text().replace('to = "192.168.110.199"', 'to = "10.0.0.9"', 1))
    with pytest.raises(ConfigError) as err:
        settings_from_file(path)
    assert err.value.field.startswith("dhcpd.lan.range")


def test_state_dir_is_beside_the_control_socket() -> None:
    assert state_dir_for("/run/carpsim/lab/node1.sock") == Path("/run/carpsim/lab/node1.state")


STATUS = [
    {
        "interface": "lan",
        "gateway": "192.168.110.254",
        "gateway_is_physical": False,
        "pool": {"total": 100, "active": 1, "free": 49, "backup": 50},
        "leases": [
            {
                "ip": "192.168.110.150",
                "mac": "02:dc:00:00:00:01",
                "hostname": "c1",
                "start": "2026/12/01 20:00:00",
                "end": "2026/12/01 20:10:00",
                "binding_state": "active",
            },
        ],
        "failover": {"name": "dhcp_lan", "my_state": "normal", "peer_state": "normal"},
    }
]


def test_render_shows_pfsense_words() -> None:
    text = "\n".join(dhcp_render.render(STATUS))
    assert "Failover Status (my state / peer state): normal / normal" in text
    assert "gateway 192.168.110.254 (the CARP VIP)" in text
    assert "192.168.110.150" in text
    assert "active" in text
    assert dhcp_render.servers({"lan": {"pool": {}}}) == [{"interface": "lan", "pool": {}}]
    assert dhcp_render.servers(None) == []


DHCLIENT_LEASES = """lease {
  interface "dhc1";
  fixed-address 192.168.110.120;
  option subnet-mask 255.255.255.0;
  option routers 192.168.110.254;
  option dhcp-lease-time 600;
  option dhcp-message-type 5;
  option domain-name-servers 192.168.110.254;
  option dhcp-server-identifier 192.168.110.252;
}
"""


def test_probe_reads_the_dhclient_lease_file() -> None:
    assert dhcp_probe._lease_fields(DHCLIENT_LEASES) == {
        "ip": "192.168.110.120",
        "router": "192.168.110.254",
        "dns": "192.168.110.254",
        "server": "192.168.110.252",
        "lease_time": "600",
    }
    assert dhcp_probe._lease_fields("") == {}


def _db(*pairs: tuple[str, str]) -> dict[str, object]:
    leases = [{"ip": ip, "mac": mac, "binding_state": "active"} for ip, mac in pairs]
    return {"lan": {"leases": leases, "failover": {"my_state": "normal"}}}


def test_agreement_finds_disagreement_and_addresses_held_twice() -> None:
    same = dhcp_probe.agreement({"a": _db(("10.0.0.5", "m1")), "b": _db(("10.0.0.5", "m1"))}, "lan")
    assert same["agree"]
    assert same["held_twice"] == []
    twice = dhcp_probe.agreement(
        {"a": _db(("10.0.0.5", "m1")), "b": _db(("10.0.0.5", "m2"))}, "lan"
    )
    assert not twice["agree"]
    assert twice["held_twice"] == ["10.0.0.5"]
    missing = dhcp_probe.agreement({"a": _db(("10.0.0.5", "m1")), "b": _db()}, "lan")
    assert not missing["agree"]
