"""`carpsim lint`: one test per HA mistake, each on the clean reference pair with one edit."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from carpsim.cli import main
from carpsim.config import fromlab, lint, parse, render
from carpsim.lab import firewall, topology

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"
Edit = Callable[[dict[str, Any], dict[str, Any]], None]


def ref(n: int) -> dict[str, Any]:
    return tomllib.loads((VECTORS / f"reference-node{n}.toml").read_text())


def findings(edit: Edit) -> list[lint.Finding]:
    a, b = ref(1), ref(2)
    edit(a, b)
    raw = lint.raw_findings("node1", a) + lint.raw_findings("node2", b)
    if raw:
        return raw
    return lint.lint([parse(a), parse(b)])


def fields(edit: Edit) -> set[tuple[str, str]]:
    return {(f.node, f.field) for f in findings(edit)}


def test_reference_pair_is_clean() -> None:
    assert lint.lint([parse(ref(1)), parse(ref(2))]) == []


def test_lab_reference_topology_configs_are_clean_and_render_the_labs_nat() -> None:
    t = topology.load("reference")
    configs = fromlab.node_configs(t)
    assert lint.lint(list(configs.values())) == []
    for name, cfg in configs.items():
        ours = [x.strip() for x in render(cfg).splitlines() if "snat" in x]
        lab = [x.strip() for x in firewall.ruleset(t, t.host(name)).splitlines() if "snat" in x]
        assert ours == lab
    assert configs["node1"].hasync.synchronizetoip is not None
    assert configs["node2"].hasync.synchronizetoip is None


def _set(path: str, value: Any, node: int = 1) -> Edit:
    def edit(a: dict[str, Any], b: dict[str, Any]) -> None:
        target: Any = (a, b)[node - 1]
        keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return edit


def test_pfsync_peer_pointing_at_the_seeds_wrong_addresses() -> None:
    found = findings(_set("hasync.pfsyncpeerip", "172.16.1.2"))
    (f,) = [f for f in found if f.field == "hasync.pfsyncpeerip"]
    assert f.node == "node1"
    assert "172.16.1.6" in f.message
    assert "not on the SYNC subnet 172.16.1.4/30" in f.message


def test_statesync_peer_checked_when_hasync_has_none() -> None:
    def edit(a: dict[str, Any], b: dict[str, Any]) -> None:
        del a["hasync"]["pfsyncpeerip"]
        a["hasync"]["pfsyncenabled"] = False
        del a["hasync"]["pfsyncinterface"]
        a["statesync"] = {"interface": "sync", "peer": "172.16.1.1"}

    assert ("node1", "statesync.peer") in fields(edit)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("gateway", None, "dhcpd.lan.gateway"),
        ("gateway", "192.168.110.251", "dhcpd.lan.gateway"),
        ("dnsserver", [], "dhcpd.lan.dnsserver"),
        ("dnsserver", ["192.168.110.252"], "dhcpd.lan.dnsserver"),
    ],
)
def test_dhcp_gateway_and_dns_must_be_the_vip(key: str, value: Any, field: str) -> None:
    def edit(a: dict[str, Any], b: dict[str, Any]) -> None:
        if value is None:
            del a["dhcpd"]["lan"][key]
        else:
            a["dhcpd"]["lan"][key] = value

    assert ("node1", field) in fields(edit)


def test_nat_to_the_interface_address() -> None:
    found = findings(_set("nat.outbound.rule.0.target", ""))
    (f,) = [f for f in found if f.field == "nat.outbound.rule[0].target"]
    assert "interface address" in f.message
    assert "WAN VIP" in f.fix


def test_automatic_nat_mode_on_a_cluster() -> None:
    assert ("node2", "nat.outbound.mode") in fields(_set("nat.outbound.mode", "automatic", 2))


def test_nat_source_any() -> None:
    found = findings(_set("nat.outbound.rule.1.source", "any"))
    (f,) = [f for f in found if f.field == "nat.outbound.rule[1].source"]
    assert f.severity == "warning"


def test_duplicate_vhid_with_different_addresses() -> None:
    assert ("node2", "virtualip.vip[1].subnet") in fields(
        _set("virtualip.vip.1.subnet", "192.168.110.253", 2)
    )


def test_vip_missing_on_the_backup() -> None:
    def edit(a: dict[str, Any], b: dict[str, Any]) -> None:
        del b["virtualip"]["vip"][2]

    assert ("node2", "virtualip.vip") in fields(edit)


@pytest.mark.parametrize("skew", [0, -1])
def test_backup_advskew_not_above_the_master(skew: int) -> None:
    edit = _set("carp.advskew", 0, 2) if skew == 0 else _set("virtualip.vip.0.advskew", 0, 2)
    assert ("node2", "virtualip.vip[0].advskew") in fields(edit)


def test_vip_password_too_long() -> None:
    found = findings(_set("virtualip.vip.0.password", "K33p_It_S3cr3t!-longer", 2))
    assert [(f.node, f.field) for f in found] == [("node2", "virtualip.vip[0].password")]
    assert "19" in found[0].message


def test_vip_password_differs_between_nodes() -> None:
    assert ("node2", "virtualip.vip[2].password") in fields(
        _set("virtualip.vip.2.password", "other", 2)
    )


def test_dhcp_failover_peer_not_the_other_node() -> None:
    found = fields(_set("dhcpd.lan.failover_peerip", "192.168.110.254", 2))
    assert ("node2", "dhcpd.lan.failover_peerip") in found


def test_config_sync_pointing_at_itself() -> None:
    found = findings(_set("hasync.synchronizetoip", "172.16.1.5"))
    (f,) = [f for f in found if f.field == "hasync.synchronizetoip"]
    assert "this node itself" in f.message


def test_backup_configured_to_push_back() -> None:
    found = findings(_set("hasync.synchronizetoip", "172.16.1.5", 2))
    assert any(f.node == "node2" and f.field == "hasync.synchronizetoip" for f in found)


def test_sync_interface_without_a_permissive_rule() -> None:
    def edit(a: dict[str, Any], b: dict[str, Any]) -> None:
        b["filter"]["rule"][-1]["protocol"] = "tcp"  # only TCP: pfsync (240) is blocked

    assert ("node2", "filter.rule") in fields(edit)

    def blocked_first(a: dict[str, Any], b: dict[str, Any]) -> None:
        b["filter"]["rule"].insert(0, {"interface": "sync", "action": "block", "protocol": "udp"})

    assert ("node2", "filter.rule") in fields(blocked_first)


def write_pair(tmp: Path, edit: Edit | None = None) -> list[str]:
    a, b = ref(1), ref(2)
    if edit:
        edit(a, b)
    paths = []
    for n, data in ((1, a), (2, b)):
        p = tmp / f"node{n}.toml"
        p.write_text(tomli_w.dumps(data))
        paths.append(str(p))
    return paths


def test_cli_exit_status_and_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", *write_pair(tmp_path)]) == 0
    assert main(["lint", *write_pair(tmp_path, _set("hasync.pfsyncpeerip", "172.16.1.2"))]) == 1
    out = capsys.readouterr().out
    assert "node1: hasync.pfsyncpeerip: error:" in out
    assert "    why: " in out
    assert "    fix: " in out
    assert main(["lint", "--topology", "reference"]) == 0


def _dup_lan_vhid(a: dict[str, Any], b: dict[str, Any]) -> None:
    lan = a["virtualip"]["vip"][1]
    assert (lan["interface"], lan["vhid"]) == ("lan", 1)
    a["virtualip"]["vip"].append({**lan, "subnet": "192.168.110.250", "descr": "second"})


def test_duplicate_vhid_on_one_interface_is_one_specific_finding() -> None:
    a, b = ref(1), ref(2)
    _dup_lan_vhid(a, b)
    assert lint.duplicate_vhids(a) == {3: 1}
    (f,) = lint.raw_findings("node1", a)
    assert (f.node, f.field, f.severity) == ("node1", "virtualip.vip[3].vhid", "error")
    assert f.message == "VHID 1 on lan is already virtualip.vip[1]"
    assert "00:00:5e:00:01:01" in f.why
    assert "MASTER" in f.why
    assert "own VHID (VHID 4 is free)" in f.fix
    # without the duplicate the node loads, and the pair is otherwise clean
    assert lint.lint([parse(lint.loadable(a)), parse(b)]) == []


def test_cli_duplicate_vhid_keeps_the_cluster_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def both(a: dict[str, Any], b: dict[str, Any]) -> None:
        _dup_lan_vhid(a, b)
        a["hasync"]["pfsyncpeerip"] = "172.16.1.2"  # the seed's own mistake, a cluster check

    assert main(["lint", *write_pair(tmp_path, both)]) == 1
    out = capsys.readouterr().out
    assert "node1: virtualip.vip[3].vhid: error: VHID 1 on lan is already" in out
    assert "the node refuses this config" not in out  # not the loader's generic text
    assert "node1: hasync.pfsyncpeerip: error:" in out
    assert "2 node(s): 2 error(s)" in out
