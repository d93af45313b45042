"""`carpsim node --config`: several VHIDs on several parents in one process.

Covers group demotion (one parent's link down fails over the VHIDs on the *other* parent too),
the status JSON, the demote control command, Prometheus metrics and config errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Lan, read_events, status, try_status, wait_for

from carpsim.errors import ConfigError
from carpsim.runtime import nodeconfig

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

PASSWORD = "K33p_It_S3cr3t!"


def node_toml(tmp: Path, name: str, last: int, skew: int, metrics_port: int = 0) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f"""
[node]
name = "{name}"
control = "{tmp / (name + ".sock")}"
events_json = "{tmp / (name + ".jsonl")}"
metrics_port = {metrics_port}

[carp]
password = "{PASSWORD}"
advbase = 1
advskew = {skew}
preempt = true

[[vhid]]
vhid = 1
interface = "lan"
srcip = "10.51.0.{last}"
vips = ["10.51.0.254/24"]

[[vhid]]
vhid = 2
interface = "dmz"
srcip = "10.52.0.{last}"
vips = ["10.52.0.254/24"]

[statesync]
enabled = false
interface = "sync"
peer = "172.16.1.6"
""")
    return path


def states(control: str) -> dict[int, str]:
    st = try_status(control)
    return {} if st is None else {v["vhid"]: v["state"] for v in st["vhids"]}


def test_link_down_fails_over_the_whole_group(lan: Lan) -> None:
    for host, last in (("n1", 1), ("n2", 2)):
        lan.plug(host, "lan", f"10.51.0.{last}/24", bridge="br0")
        lan.plug(host, "dmz", f"10.52.0.{last}/24", bridge="br1")
    c1, c2 = str(lan.tmp / "n1.sock"), str(lan.tmp / "n2.sock")
    lan.carpsim("n1", "node", "--config", str(node_toml(lan.tmp, "n1", 1, 0, 9101)), log="n1.log")
    lan.carpsim("n2", "node", "--config", str(node_toml(lan.tmp, "n2", 2, 100)), log="n2.log")
    wait_for(lambda: states(c1) == {1: "MASTER", 2: "MASTER"}, 8, what="n1 master on both")
    wait_for(lambda: states(c2) == {1: "BACKUP", 2: "BACKUP"}, 3, what="n2 backup on both")

    st = status(c1)
    assert st["node"] == "n1"
    assert isinstance(st["pid"], int)
    v1 = st["vhids"][0]
    assert v1["interface"] == "lan"
    assert v1["vips"] == ["10.51.0.254/24"]
    assert v1["master_down_s"] == 3.0
    assert v1["advert_interval_s"] == 1.0
    assert st["tx_packets"] > 0
    backup = status(c2)["vhids"][1]
    assert backup["last_advert_src"] == "10.52.0.1"
    assert backup["last_advert_age_s"] is not None
    assert backup["last_advert_age_s"] < 1.5

    metrics = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lan.host("n1"),
            sys.executable,
            "-c",
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9101/metrics')"
            ".read().decode())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'carp_state{vhid="1"} 2.0' in metrics
    assert 'carp_transitions_total{from="BACKUP",to="MASTER",vhid="2"} 1.0' in metrics
    assert "carp_tx_packets_total" in metrics
    assert "carp_master_down_seconds" in metrics

    # Cut node1's LAN cable only: vhid 1 times out on node2 (3.39 s); vhid 2 follows at once
    # because node1 now advertises demote 1 on the DMZ.
    t_cut = time.monotonic()
    lan.port_down("n1", "lan")
    wait_for(lambda: states(c2) == {1: "MASTER", 2: "MASTER"}, 6, what="n2 master on both")
    ev = {
        e["vhid"]: e["mono"]
        for e in read_events(lan.tmp / "n2.jsonl")
        if e["to"] == "MASTER" and e["mono"] >= t_cut
    }
    print(
        f"after lan cut: vhid2 (demotion) {ev[2] - t_cut:.3f}s, vhid1 (timeout) "
        f"{ev[1] - t_cut:.3f}s"
    )
    assert ev[2] - t_cut < 0.5
    assert ev[1] - t_cut < 3 + 100 / 256 + 0.6
    assert states(c1) == {1: "INIT", 2: "BACKUP"}
    assert status(c1)["demote"] == 1

    # Cable back: demotion cleared, node1 preempts both.
    lan.port_up("n1", "lan")
    wait_for(lambda: states(c1) == {1: "MASTER", 2: "MASTER"}, 8, what="n1 failback")

    # Administrative demotion through the control socket hands everything to node2.
    reply = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import json;from carpsim.runtime.control import query;"
                f"print(json.dumps(query({c1!r}, {{'cmd': 'demote', 'value': 5}})))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert reply == {"ok": True, "demote": 5}
    wait_for(lambda: states(c2) == {1: "MASTER", 2: "MASTER"}, 3, what="n2 after demote")

    out = subprocess.run(
        [sys.executable, "-m", "carpsim", "status", "--control", c2],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "MASTER" in out
    assert "10.51.0.254/24" in out


def test_bad_config_exits_2_naming_the_field(lan: Lan, tmp_path: Path) -> None:
    host = lan.host("n1")
    lan.plug("n1", "lan", "10.51.0.1/24")
    cases = {
        "vhid[1].advskew": ("advskew = 300", "advskew = 0"),
        "vhid[1].interface": ('interface = "nope0"', 'interface = "lan"'),
        "node.bogus": ("bogus = 1", None),
    }
    for field, (bad, good) in cases.items():
        text = f"""
[node]
name = "n1"
control = "{tmp_path / "x.sock"}"
{bad if good is None else ""}
[[vhid]]
vhid = 1
{bad if good is not None else ""}
{'interface = "lan"' if good != 'interface = "lan"' else ""}
srcip = "10.51.0.1"
vips = ["10.51.0.254/24"]
password = "pw"
"""
        path = tmp_path / "bad.toml"
        path.write_text(text)
        run = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                host,
                sys.executable,
                "-m",
                "carpsim",
                "node",
                "--config",
                str(path),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=20,
        )
        assert run.returncode == 2, run.stderr
        assert field in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        # Nothing changed on the host: no macvlan, no control socket.
        assert lan.sh(host, "ip", "-o", "link", "show", "type", "macvlan") == ""
        assert not (tmp_path / "x.sock").exists()


def test_nodeconfig_parse_defaults_and_overrides() -> None:
    cfg = nodeconfig.parse(
        {
            "node": {"name": "n"},
            "carp": {"password": "pw", "advskew": 100, "preempt": True},
            "vhid": [
                {
                    "vhid": 3,
                    "interface": "wan",
                    "srcip": "192.168.100.246",
                    "vips": ["192.168.100.254/24"],
                    "advskew": 7,
                    "peer": "192.168.100.248",
                },
                {
                    "vhid": 1,
                    "interface": "lan",
                    "srcip": "192.168.110.251",
                    "vips": ["192.168.110.254/24"],
                },
            ],
            "statesync": {"enabled": False, "interface": "sync"},
        }
    )
    assert cfg.control == nodeconfig.DEFAULT_CONTROL
    assert cfg.metrics_port == 0
    assert [v.carp.advskew for v in cfg.vhids] == [7, 100]
    assert cfg.vhids[0].peer is not None
    assert str(cfg.vhids[0].carp.dst) == "192.168.100.248"
    assert cfg.vhids[1].carp.preempt
    assert cfg.statesync == {"enabled": False, "interface": "sync"}
    assert cfg.sync is None
    with pytest.raises(ConfigError) as err:
        nodeconfig.parse(
            {
                "node": {"name": "n"},
                "vhid": [
                    {
                        "vhid": 1,
                        "interface": "lan",
                        "srcip": "x",
                        "vips": ["1.2.3.4/24"],
                        "password": "pw",
                    }
                ],
            }
        )
    assert err.value.field == "vhid[1].srcip"


def test_a_second_daemon_on_a_busy_control_socket_leaves_the_first_alone(lan: Lan) -> None:
    lan.plug("n1", "lan", "10.51.0.1/24", bridge="br0")
    lan.plug("n1", "dmz", "10.52.0.1/24", bridge="br1")
    config = node_toml(lan.tmp, "n1", 1, 0)
    control = str(lan.tmp / "n1.sock")
    lan.carpsim("n1", "node", "--config", str(config), log="n1.log")
    wait_for(lambda: states(control) == {1: "MASTER", 2: "MASTER"}, 8, what="n1 master")
    macvlans = lan.sh(lan.host("n1"), "ip", "-o", "link", "show", "type", "macvlan")
    second = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lan.host("n1"),
            sys.executable,
            "-m",
            "carpsim",
            "node",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )
    assert second.returncode == 2, second.stderr
    assert "node.control" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    # The running daemon kept its VIPs, macvlans and mastership.
    assert lan.sh(lan.host("n1"), "ip", "-o", "link", "show", "type", "macvlan") == macvlans
    assert "10.51.0.254/24" in lan.sh(lan.host("n1"), "ip", "-o", "addr", "show")
    time.sleep(1.5)
    assert states(control) == {1: "MASTER", 2: "MASTER"}
