"""Config sync in the reference lab, through the real `carpsim node` daemons (issue 11).

The seed's step: a rule created on the master appears on the backup (and is enforced there after
a failover); the backup's VIPs carry advskew 100; a nosync rule stays home; a wrong sync
password is refused with pfSense's -1 fault and leaves the backup's config as it was. One lab
with a unique prefix, always torn down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import tomli_w

from carpsim.lab.session import Lab
from carpsim.net import netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

SERVER = "203.0.113.10"


def cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carpsim", "lab", "--prefix", lab.paths.prefix, *args],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def show(lab: Lab, node: str, section: str) -> dict[str, Any]:
    proc = cli(lab, "config", node, "show", section, "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)[section]
    return data


def descrs(lab: Lab, node: str) -> list[str]:
    return [r.get("descr", "") for r in show(lab, node, "filter").get("rule", [])]


def whoami(lab: Lab, host: str) -> bool:
    """TCP to the internet server's port 8080 through the firewall."""
    argv = [sys.executable, "-m", "carpsim.lab.whoami", "ask", SERVER]
    return lab.run(host, argv, timeout=15).returncode == 0


def until(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def configsync(lab: Lab, node: str) -> dict[str, Any]:
    proc = cli(lab, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)["nodes"][node]["configsync"]
    return data


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    lab = Lab.create("reference", prefix=netns.unique_prefix("cfs"))
    try:
        lab.up()
        netns.popen(
            lab.namespace_of("server"),
            [sys.executable, "-m", "carpsim.lab.whoami", "serve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.3)
        yield lab
    finally:
        lab.down()


def test_the_lab_configures_hasync_as_the_seed_does(lab: Lab) -> None:
    node1, node2 = show(lab, "node1", "hasync"), show(lab, "node2", "hasync")
    assert node1["synchronizetoip"] == "172.16.1.6"
    assert "synchronizetoip" not in node2
    assert node1["password"] == "********"  # shown masked
    st = configsync(lab, "node1")
    assert st["peer_url"] == "https://172.16.1.6:443/xmlrpc.php"
    assert configsync(lab, "node2")["peer_url"] is None
    # the backup's VIPs: the master's skew + 100, as the seed says to check
    assert {v["advskew"] for v in show(lab, "node2", "virtualip")["vip"]} == {100}


def test_block_rule_on_the_master_appears_on_the_backup_and_is_enforced_there(lab: Lab) -> None:
    assert whoami(lab, "client1")
    add = cli(lab, "config", "node1", "add-rule", "--interface", "lan", "--action", "block",
              "--protocol", "tcp", "--source", "lan net", "--destination", SERVER,
              "--destination-port", "8080", "--descr", "block whoami", "--top")  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert "pushing to https://172.16.1.6:443/xmlrpc.php" in add.stdout
    t0 = time.monotonic()
    assert until(lambda: descrs(lab, "node2")[:1] == ["block whoami"], 1.0)
    assert time.monotonic() - t0 < 1.0
    assert configsync(lab, "node1")["result"] == "ok"
    # and in node2's kernel: after a failover the probe that passed fails through node2
    lab.kill("node1")
    try:
        assert lab.wait_master("node2", 10, down=["node1"])
        assert not whoami(lab, "client1")
        assert whoami(lab, "dmzsrv")  # only the LAN rule blocks: node2 forwards otherwise
    finally:
        lab.start("node1")
        assert lab.wait_master("node1", 15)
    drop = cli(lab, "config", "node1", "delete-rule", "--descr", "block whoami")
    assert drop.returncode == 0, drop.stderr
    assert until(lambda: "block whoami" not in descrs(lab, "node2"), 1.0)
    assert until(lambda: whoami(lab, "client1"), 5.0)


def test_a_nosync_rule_stays_on_the_master(lab: Lab) -> None:
    before = configsync(lab, "node1")["syncs_ok"]
    add = cli(lab, "config", "node1", "add-rule", "--interface", "dmz", "--protocol", "udp",
              "--destination-port", "5353", "--descr", "local only", "--nosync")  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert until(lambda: configsync(lab, "node1")["syncs_ok"] > before, 3.0)
    assert "local only" in descrs(lab, "node1")
    assert "local only" not in descrs(lab, "node2")


def test_a_bad_edit_names_the_field_and_changes_nothing(lab: Lab) -> None:
    before = show(lab, "node1", "filter")
    bad = cli(lab, "config", "node1", "add-rule", "--interface", "lan", "--source", "NOALIAS")
    assert bad.returncode == 2
    assert 'source: unknown alias "NOALIAS"' in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert show(lab, "node1", "filter") == before


def test_wrong_sync_password_gets_fault_1_and_the_backup_is_untouched(
    lab: Lab, tmp_path: Any
) -> None:
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[hasync]\npassword = "not-the-peers"\n')
    assert cli(lab, "config", "node1", "apply", str(wrong)).returncode == 0
    add = cli(lab, "config", "node1", "add-rule", "--interface", "lan", "--action", "block",
              "--destination", "198.51.100.7", "--descr", "never arrives")  # fmt: skip
    assert add.returncode == 0, add.stderr

    def failed() -> bool:
        st = configsync(lab, "node1")
        return st["result"] == "failed" and "#-1" in (st["last_error"] or "")

    assert until(failed, 12.0), configsync(lab, "node1")
    assert "Authentication failed" in configsync(lab, "node1")["last_error"]
    assert "never arrives" not in descrs(lab, "node2")
    assert configsync(lab, "node2")["received"]["result"] in ("ok", "never")
    status = cli(lab, "status")
    assert "last error: Exception calling XMLRPC method" in status.stdout
    right = tmp_path / "right.toml"
    right.write_text('[hasync]\npassword = "carpsim-lab-sync"\n')
    assert cli(lab, "config", "node1", "apply", str(right)).returncode == 0
    assert cli(lab, "config", "node1", "sync").returncode == 0
    assert until(lambda: "never arrives" in descrs(lab, "node2"), 8.0)


def _vhid_view(lab: Lab, node: str) -> dict[int, tuple[str, int]]:
    status = json.loads(cli(lab, "status", "--json").stdout)["nodes"][node]["vhids"]
    return {v["vhid"]: (v["state"], v["advskew"]) for v in status}


def test_a_changed_vip_is_updated_in_place_without_a_takeover(lab: Lab, tmp_path: Any) -> None:
    assert lab.wait_master("node1", 10)
    events = {n: lab.paths.events(n).read_text() for n in ("node1", "node2")}
    vips = show(lab, "node1", "virtualip")["vip"]
    fragment = {"virtualip": {"vip": [{**v, "advskew": 10} for v in vips]}}
    path = tmp_path / "skew.toml"
    path.write_text(tomli_w.dumps(fragment))
    edit = cli(lab, "config", "node1", "apply", str(path))
    assert edit.returncode == 0, edit.stderr
    assert "carp: update vhid" in edit.stdout
    assert until(lambda: {s for _, s in _vhid_view(lab, "node2").values()} == {110}, 2.0)
    assert set(_vhid_view(lab, "node1").values()) == {("MASTER", 10)}
    assert set(_vhid_view(lab, "node2").values()) == {("BACKUP", 110)}
    time.sleep(3.5)  # longer than node2's master-down: a lost advert would have shown by now
    assert {n: lab.paths.events(n).read_text() for n in ("node1", "node2")} == events
    assert lab.states()["node1"] == dict.fromkeys(lab.states()["node1"], "MASTER")
    back = tmp_path / "back.toml"
    back.write_text(tomli_w.dumps({"virtualip": {"vip": vips}}))
    assert cli(lab, "config", "node1", "apply", str(back)).returncode == 0
    assert until(lambda: {s for _, s in _vhid_view(lab, "node2").values()} == {100}, 2.0)


def _transitions(lab: Lab, node: str, *, vhid: int | None = None) -> list[dict[str, Any]]:
    lines = lab.paths.events(node).read_text().splitlines()
    recs = [json.loads(line) for line in lines if line.strip()]
    return [r for r in recs if vhid is None or r["vhid"] == vhid]


def test_a_vip_added_on_the_master_runs_live_on_both_and_delete_removes_it(lab: Lab) -> None:
    new_vhid, address = 11, "192.168.110.211"
    assert lab.wait_master("node1", 10)
    others = {n: _transitions(lab, n) for n in ("node1", "node2")}
    password = show(lab, "node1", "virtualip")["vip"][0]["password"]
    add = cli(lab, "config", "node1", "add-vip", "--interface", "lan", "--vhid", str(new_vhid),
              "--subnet", address, "--password", password, "--descr", "LAN VIP 2")  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert f"carp: add vhid {new_vhid} on" in add.stdout

    def live() -> bool:
        view = {n: _vhid_view(lab, n).get(new_vhid) for n in ("node1", "node2")}
        return view == {"node1": ("MASTER", 0), "node2": ("BACKUP", 100)}

    if not until(live, 6.0):
        full = json.loads(cli(lab, "status", "--json").stdout)["nodes"]
        pytest.fail(json.dumps({n: {k: full[n].get(k) for k in ("vhids", "drops")}
                                for n in ("node1", "node2")}))  # fmt: skip
    # the VIP answers on the LAN through node1's new macvlan (the virtual MAC)
    assert lab.run("client1", ["ping", "-c", "1", "-W", "2", address], timeout=10).returncode == 0
    for n in ("node1", "node2"):
        old = [r for r in _transitions(lab, n) if r["vhid"] != new_vhid]
        assert old == others[n], f"{n}: an existing VHID changed state"
        assert {r["to"] for r in _transitions(lab, n, vhid=new_vhid)} <= {"BACKUP", "MASTER"}
    drop = cli(lab, "config", "node1", "delete-vip", "--interface", "lan", "--vhid", str(new_vhid))
    assert drop.returncode == 0, drop.stderr
    assert f"carp: remove vhid {new_vhid}" in drop.stdout
    assert until(lambda: all(new_vhid not in _vhid_view(lab, n) for n in ("node1", "node2")), 3.0)
    for n in ("node1", "node2"):
        links = lab.run(n, ["ip", "-o", "link", "show"], timeout=10).stdout
        assert f"carp{new_vhid}x" not in links
        addrs = lab.run(n, ["ip", "-o", "addr", "show"], timeout=10).stdout
        assert address not in addrs
        assert [r for r in _transitions(lab, n) if r["vhid"] != new_vhid] == others[n]
    assert lab.wait_master("node1", 5)
