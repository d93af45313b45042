"""Config sync for real: two nodes in two namespaces, XML-RPC over HTTPS on a SYNC veth.

Each service is started (and each push made) on a thread that entered its node's namespace
(`run_in_netns`; network namespaces are per thread), so its sockets live there; the backup's
apply callback loads the rendered ruleset with ``nft -f`` in its namespace. Also checks every
rendered document with ``nft -c`` and loads it for real.
"""

from __future__ import annotations

import base64
import http.client
import os
import secrets
import ssl
import subprocess
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from carpsim.config import loads, render
from carpsim.config.model import StaticRoute
from carpsim.configsync import apply
from carpsim.net import netns
from carpsim.net.config_apply import KernelApplier
from carpsim.net.conntrack import run_in_netns
from carpsim.runtime import configsync_service as svc

pytestmark = pytest.mark.netns
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"
in_ns = run_in_netns


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    tag = secrets.token_hex(2)
    a, b = f"cfgsync-config-{tag}-1", f"cfgsync-config-{tag}-2"
    try:
        netns.create(a)
        netns.create(b)
        subprocess.run(
            ["ip", "link", "add", "sync", "netns", a, "type", "veth", "peer", "sync", "netns", b],
            check=True,
            capture_output=True,
        )
        for ns, addr in ((a, "172.16.1.5/30"), (b, "172.16.1.6/30")):
            netns.run(ns, ["ip", "addr", "add", addr, "dev", "sync"])
            netns.run(ns, ["ip", "link", "set", "sync", "up"])
        yield a, b
    finally:
        netns.remove(a)
        netns.remove(b)


def nft_load(ns: str, text: str, check: bool = False) -> None:
    argv = ["nft", "-c", "-f", "-"] if check else ["nft", "-f", "-"]
    proc = subprocess.run(
        netns.exec_argv(ns, argv), input=text, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip())


def node(tmp: Path, n: int, ns: str, **kw: Any) -> tuple[svc.ConfigSyncService, list[Any]]:
    path = tmp / f"node{n}.toml"
    path.write_text((VECTORS / f"reference-node{n}.toml").read_text().replace('"/run/', '"/tmp/'))
    store = svc.ConfigStore.load(path)
    plans: list[apply.ApplyPlan] = []

    kernel = KernelApplier(ns)

    def applier(plan: apply.ApplyPlan) -> None:
        plans.append(plan)
        kernel(plan)

    nft_load(ns, render(store.current))  # the node starts with its own ruleset in place
    service = svc.ConfigSyncService(
        store, applier, state_dir=tmp / f"tls{n}", tries=2, retry_delay=0.05, timeout=5.0,
        restore_timeout=10.0, **kw,
    )  # fmt: skip
    in_ns(ns, service.start)
    return service, plans


def test_rendered_rulesets_pass_nft_check(pair: tuple[str, str]) -> None:
    for n, ns in zip((1, 2), pair, strict=True):
        text = render(loads((VECTORS / f"reference-node{n}.toml").read_text()))
        nft_load(ns, text, check=True)
        nft_load(ns, text)
        nft_load(ns, text)  # a second load replaces the table (flush semantics)
        listing = netns.run(ns, ["nft", "list", "table", "ip", "carpsim"]).stdout
        assert "snat to 192.168.100.254 random" in listing


def test_rule_added_on_master_reaches_the_backup_kernel(
    pair: tuple[str, str], tmp_path: Path
) -> None:
    a, b = pair
    master, _ = node(tmp_path, 1, a)
    backup, plans = node(tmp_path, 2, b)
    try:
        cfg = master.store.current
        block = replace(cfg.filter.rules[2], action=cfg.filter.rules[2].action.BLOCK,
                        descr="blocked by sync test", tracker=77)  # fmt: skip
        local = replace(block, descr="node1 only", nosync=True, tracker=78)
        new = replace(cfg, filter=replace(cfg.filter, rules=(block, local, *cfg.filter.rules)))
        in_ns(a, lambda: master.change(new, "test: add block rule"))
        st = master.status()
        assert st["result"] == "ok", st
        assert st["syncs_ok"] == 1
        assert st["peer_url"] == "https://172.16.1.6:443/xmlrpc.php"
        got = backup.store.current
        assert [r.descr for r in got.filter.rules[:1]] == ["blocked by sync test"]
        assert not any(r.descr == "node1 only" for r in got.filter.rules)
        assert [v.advskew for v in got.virtualip] == [100, 100, 100]
        assert loads((tmp_path / "node2.toml").read_text()) == got
        assert len(plans) == 1
        assert not plans[0].vhids_update  # VHIDs unchanged: nothing to flap
        listing = netns.run(b, ["nft", "list", "table", "ip", "carpsim"]).stdout
        assert "blocked by sync test" in listing
        assert "node1 only" not in listing
        assert backup.status()["received"]["ok"] == 1
    finally:
        master.stop()
        backup.stop()


def test_wrong_password_leaves_the_backup_untouched(pair: tuple[str, str], tmp_path: Path) -> None:
    a, b = pair
    master, _ = node(tmp_path, 1, a)
    backup, plans = node(tmp_path, 2, b)
    try:
        before = (tmp_path / "node2.toml").read_bytes()
        cfg = master.store.current
        wrong = replace(cfg, hasync=replace(cfg.hasync, password="not-the-password"))
        in_ns(a, lambda: master.change(wrong, "test: wrong password"))
        st = master.status()
        assert st["result"] == "failed"
        assert st["syncs_failed"] == 1
        assert "#-1" in st["last_error"]
        assert (tmp_path / "node2.toml").read_bytes() == before
        assert plans == []
        assert backup.status()["faults"] == {-1: 2}  # both tries refused
    finally:
        master.stop()
        backup.stop()


def test_version_mismatch_is_refused_before_sending(pair: tuple[str, str], tmp_path: Path) -> None:
    a, b = pair
    master, _ = node(tmp_path, 1, a)
    backup, plans = node(tmp_path, 2, b)
    try:
        before = (tmp_path / "node2.toml").read_bytes()
        cfg = master.store.current
        newer = replace(cfg, system=replace(cfg.system, version="24.5"))
        in_ns(a, lambda: master.change(newer, "test: upgraded master"))
        st = master.status()
        assert st["result"] == "failed"
        assert "different configuration version" in st["last_error"]
        assert (tmp_path / "node2.toml").read_bytes() == before
        assert plans == []
        assert backup.status()["received"]["ok"] == 0
        assert backup.status()["received"]["faults"] == 0
    finally:
        master.stop()
        backup.stop()


def test_server_listens_on_the_sync_address_only(pair: tuple[str, str], tmp_path: Path) -> None:
    _, b = pair
    backup, _ = node(tmp_path, 2, b)
    try:
        listening = netns.run(b, ["ss", "-Htln"]).stdout
        assert "172.16.1.6:443" in listening
        assert "0.0.0.0:443" not in listening
        assert "*:443" not in listening
    finally:
        backup.stop()


def _post(body: bytes, length: int | None = None) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("172.16.1.6", 443, context=ctx, timeout=5)
    try:
        conn.putrequest("POST", "/xmlrpc.php")
        conn.putheader("Content-Type", "text/xml")
        conn.putheader("Content-Length", str(len(body) if length is None else length))
        conn.putheader("Authorization", "Basic " + base64.b64encode(b"admin:s3cret-sync").decode())
        conn.endheaders()
        if length is None:
            conn.send(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_hostile_requests_over_https(pair: tuple[str, str], tmp_path: Path) -> None:
    a, b = pair
    backup, plans = node(tmp_path, 2, b)
    try:
        before = (tmp_path / "node2.toml").read_bytes()
        laughs = (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
            b"<methodCall><methodName>pfsense.restore_config_section</methodName><params>"
            b"<param><value>&c;</value></param></params></methodCall>"
        )
        status, reply = in_ns(a, lambda: _post(laughs))
        assert status == 200
        with pytest.raises(xmlrpc.client.Fault) as info:
            xmlrpc.client.loads(reply)
        assert info.value.faultCode == svc.FAULT_PARSE
        status, _ = in_ns(a, lambda: _post(b"", length=svc.MAX_REQUEST + 1))
        assert status == 413
        assert (tmp_path / "node2.toml").read_bytes() == before
        assert plans == []
        assert backup.status()["drops"] == {"badxml": 1, "toolarge": 1}
    finally:
        backup.stop()


KITCHEN_SINK = """
[aliases.WEB]
type = "port"
address = ["80", "443", "8000-8080"]
[aliases.BAD]
type = "host"
address = ["203.0.113.66", "203.0.113.67"]
[aliases.NETS]
type = "network"
address = ["INSIDE_NETS", "10.9.0.0/16"]

[[filter.rule]]
interface = "lan"
action = "block"
protocol = "tcp"
source = "!NETS"
source_port = "1024-65535"
destination = "BAD"
destination_port = "WEB"
log = true
descr = "every match kind"
[[filter.rule]]
interface = "lan"
action = "reject"
descr = "reject any protocol"
[[filter.rule]]
interface = "dmz"
action = "reject"
protocol = "udp"
destination = "wan address"
destination_port = "53"
[[filter.rule]]
interface = "wan"
protocol = "tcp/udp"
destination = "!lan net"
destination_port = "WEB"
[[filter.rule]]
interface = "wan"
protocol = "icmp"
icmptype = ["echoreq", "maskreq", "routersol"]
[[filter.rule]]
interface = "wan"
protocol = "esp"
[[filter.rule]]
interface = "wan"
protocol = "gre"
[[filter.rule]]
interface = "wan"
protocol = "ospf"
[[filter.rule]]
interface = "wan"
protocol = "carp"
[[filter.rule]]
interface = "wan"
protocol = "pfsync"

[[staticroutes.route]]
network = "10.20.0.0/16"
gateway = "192.168.120.1"
"""


@pytest.mark.parametrize("mode", ["manual", "hybrid", "automatic", "disabled"])
def test_every_rendered_construct_passes_nft_check(pair: tuple[str, str], mode: str) -> None:
    text = (VECTORS / "reference-node1.toml").read_text()
    text = text.replace('mode = "manual"', f'mode = "{mode}"')
    text = text.replace(
        'descr = "outbound NAT dmz -> WAN VIP"',
        'descr = "outbound NAT dmz -> WAN VIP"\nstatic_port = true\n'
        '[[nat.outbound.rule]]\ninterface = "wan"\nsource = "NETS"\nprotocol = "tcp"\n'
        'destination = "203.0.113.0/24"\ndestination_port = "WEB"\ntarget = "192.168.100.254"\n'
        '[[nat.outbound.rule]]\ninterface = "wan"\nsource = "10.9.0.0/16"\nnonat = true\n',
    )
    cfg = loads(text + KITCHEN_SINK)
    nft_load(pair[0], render(cfg), check=True)
    nft_load(pair[0], render(cfg, {"lan": ["carp1x7"], "wan": ["carp3x5", "carp3x6"]}), check=True)


def test_kernel_applier_loads_ruleset_sysctl_and_routes(pair: tuple[str, str]) -> None:
    ns = pair[0]
    netns.run(ns, ["ip", "link", "add", "lan", "type", "veth", "peer", "name", "lanpeer"])
    netns.run(ns, ["ip", "link", "set", "lanpeer", "up"])
    netns.run(ns, ["ip", "addr", "add", "192.168.110.251/24", "dev", "lan"])
    netns.run(ns, ["ip", "link", "set", "lan", "up"])
    loose_file = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose"
    netns.run(ns, ["sh", "-c", f"echo 1 > {loose_file}"])
    assert netns.run(ns, ["cat", loose_file]).stdout.strip() == "1"
    base = loads((VECTORS / "reference-node1.toml").read_text())
    applier = KernelApplier(ns, devices=lambda: {"lan": ["carp1x9"]})
    applier(
        apply.plan(
            replace(base, filter=replace(base.filter, tcp_loose=True), staticroutes=()), base
        )
    )
    route = StaticRoute(IPv4Network("10.20.0.0/16"), IPv4Address("192.168.110.1"))
    with_route = replace(base, staticroutes=(route,))
    applier(apply.plan(base, with_route))
    assert "10.20.0.0/16 via 192.168.110.1" in netns.run(ns, ["ip", "route"]).stdout
    listing = netns.run(ns, ["nft", "list", "table", "ip", "carpsim"]).stdout
    assert '"carp1x9"' in listing
    loose = netns.run(ns, ["cat", "/proc/sys/net/netfilter/nf_conntrack_tcp_loose"]).stdout
    assert loose.strip() == "0"
    applier(apply.plan(with_route, base))
    assert "10.20.0.0/16" not in netns.run(ns, ["ip", "route"]).stdout
