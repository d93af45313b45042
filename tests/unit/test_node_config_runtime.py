"""`carpsim node` reads its file through carpsim.config (runtime/node_config.py): an original node
config gives exactly the NodeConfig the original loader gives; the CLI side of live edits."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from carpsim.cli import config_live
from carpsim.cli.status import render
from carpsim.config import loads
from carpsim.errors import ConfigError
from carpsim.runtime import node_config, nodeconfig

OLD = """
[node]
name = "node1"
control = "/run/carpsim/x.sock"
events_json = "/tmp/e.jsonl"
metrics_port = 9100
upscript = "/bin/true"
neutral = true
[carp]
password = "K33p_It_S3cr3t!"
advskew = 100
preempt = true
master_down_formula = "openbsd"
[[vhid]]
vhid = 1
interface = "lan"
srcip = "192.168.110.251"
vips = ["192.168.110.254/24", "192.168.110.253/24"]
advskew = 7
[[vhid]]
vhid = 2
interface = "dmz"
srcip = "192.168.120.251"
vips = ["192.168.120.254/24"]
peer = "192.168.120.252"
real_mac = true
[statesync]
interface = "sync"
peer = "172.16.1.6"
mtu = 9000
flush_interval = 0.05
"""


def test_an_original_node_config_gives_the_same_node_config(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(OLD)
    got, doc = node_config.load(path)
    want = nodeconfig.parse(tomllib.loads(OLD))
    assert got.vhids == want.vhids
    assert got.sync == want.sync
    for key in ("name", "control", "events_json", "metrics_port", "upscript", "neutral"):
        assert getattr(got, key) == getattr(want, key), key
    # no filter or NAT rules: the node loads no ruleset
    assert not node_config.has_ruleset(doc)
    assert not node_config.sync_configured(doc)


def test_the_reference_configs_have_rules_and_sync() -> None:
    vectors = Path(__file__).resolve().parents[1] / "vectors" / "config"
    doc = loads((vectors / "reference-node1.toml").read_text())
    assert node_config.has_ruleset(doc)
    assert node_config.sync_configured(doc)
    nc = node_config.node_config(doc)
    assert [v.carp.vhid for v in nc.vhids] == [v.vhid for v in doc.virtualip]


def test_an_unreadable_or_bad_file_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        node_config.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text(OLD.replace("mtu = 9000", "mtu = 100000"))
    with pytest.raises(ConfigError) as exc:
        node_config.load(bad)
    assert exc.value.field == "statesync.mtu"


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    config_live.add_commands(p.add_subparsers(dest="config_cmd"))
    return p.parse_args(argv)


def test_cli_requests() -> None:
    req = config_live.request(parse("add-rule", "--interface", "lan", "--action", "block",
                                    "--destination-port", "22", "--nosync", "--top"))  # fmt: skip
    rule = {"interface": "lan", "action": "block", "destination_port": "22", "nosync": True}
    assert req == {"cmd": "config", "op": "add-rule", "args": {"position": 0, "rule": rule}}
    nat = config_live.request(parse("add-nat", "--interface", "wan", "--source", "lan net",
                                    "--target", ""))  # fmt: skip
    assert nat["args"]["rule"]["target"] == ""
    dhcp = config_live.request(parse("set-dhcp", "lan", "defaultleasetime=600",
                                     "dnsserver=[\"192.168.110.254\"]", "domain=lab"))  # fmt: skip
    want = {"defaultleasetime": 600, "dnsserver": ["192.168.110.254"], "domain": "lab"}
    assert dhcp["args"]["settings"] == want
    assert config_live.request(parse("delete-rule", "3"))["args"] == {"index": 3}
    assert config_live.request(parse("show", "filter")) == {
        "cmd": "config", "op": "show", "section": "filter"}  # fmt: skip
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config_live.request(parse("set-dhcp", "lan", "novalue"))


def test_status_shows_the_sync_in_pfsense_words() -> None:
    status = {"node": "node1", "pid": 1, "vhids": [], "configsync": {
        "peer_url": "https://172.16.1.6:443/xmlrpc.php", "last_sync": 0.0, "result": "failed",
        "last_error": "Exception calling XMLRPC method pfsense.host_firmware_version #-1 : x",
        "syncs_ok": 2, "syncs_failed": 1, "received": {}, "faults": {}}}  # fmt: skip
    out = render(status)
    assert "config sync: to https://172.16.1.6:443/xmlrpc.php: failed" in out
    assert "(2 ok, 1 failed); last error: Exception calling XMLRPC method" in out


def test_carpsim_config_control_talks_to_a_control_socket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio  # noqa: PLC0415
    import json  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from carpsim.cli import main  # noqa: PLC0415
    from carpsim.runtime.control import ControlServer  # noqa: PLC0415

    seen: list[dict[str, object]] = []

    def config(req: dict[str, object]) -> dict[str, object]:
        seen.append(req)
        if req.get("op") == "show":
            return {"config": {"filter": {"rule": []}}}
        if req.get("op") == "add-rule":
            raise ValueError('filter.rule[0].source: unknown alias "X"')
        return {"changed": "aliases", "steps": [], "pushing": None}

    path = str(tmp_path / "c.sock")
    loop = asyncio.new_event_loop()
    server = ControlServer(path, lambda: {"node": "n"})
    server.add_command("config", config)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert main(["config", "--control", path, "show", "filter", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"filter": {"rule": []}}
        assert main(["config", "--control", path, "add-rule", "--interface", "lan",
                     "--source", "X"]) == 2  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f'carpsim: {path}: filter.rule[0].source: unknown alias "X"']
        assert main(["config", "--control", path, "delete-alias", "X"]) == 0
        assert seen[-1] == {"cmd": "config", "op": "delete-alias", "args": {"name": "X"}}
        assert main(["config", "delete-alias", "X"]) == 2  # an edit needs --control
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(server.close())
        loop.close()
