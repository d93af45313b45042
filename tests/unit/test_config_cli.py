"""``carpsim config`` on files, and the compatibility of today's generated node configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carpsim.cli import main
from carpsim.config import derive, loads
from carpsim.lab import nodes, topology
from carpsim.lab.state import LabPaths
from carpsim.runtime import node_config

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"
N1, N2 = str(VECTORS / "reference-node1.toml"), str(VECTORS / "reference-node2.toml")


@pytest.mark.parametrize("name", ["reference", "three-node"])
def test_the_labs_generated_node_configs_load_as_the_same_vhids(name: str) -> None:
    t = topology.load(name)
    for node in t.nodes:
        text = nodes.node_config(t, LabPaths("cfgtest-"), node)
        new = loads(text)
        runtime = node_config.node_config(new)
        assert [(v.carp, v.interface, v.real_mac, v.peer) for v in runtime.vhids] == [
            (v.carp, v.interface, v.real_mac, v.peer) for v in derive.carp_vhids(new)
        ]
        assert [(v.carp.vhid, v.carp.srcip) for v in runtime.vhids] == [
            (v.vhid, node.addresses[v.segment]) for v in t.vips
        ]
        assert new.node.control == runtime.control
        assert new.statesync is not None
        assert runtime.sync is not None
        assert new.statesync.peer == runtime.sync.peer


def test_check_show_render_diff_payload(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", N1]) == 0
    assert "3 vhid(s)" in capsys.readouterr().out
    assert main(["config", "show", N1, "nat", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["nat"]["outbound"]["mode"] == "manual"
    assert main(["config", "render", N1]) == 0
    assert "snat to 192.168.100.254 random" in capsys.readouterr().out
    assert main(["config", "diff", N1, N1]) == 0
    assert capsys.readouterr().out.strip() == "no change"
    assert main(["config", "payload", N1]) == 0
    assert json.loads(capsys.readouterr().out)["virtualip"]["vip"][0]["advskew"] == "100"
    assert main(["config", "payload", N2]) == 1  # the backup pushes nothing


def test_bad_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(N1).read_text().replace('source = "lan net"', 'source = "lanx net"', 1))
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        'carpsim: config error: filter.rule[1].source: unknown interface "lanx" in "lanx net"'
    )
