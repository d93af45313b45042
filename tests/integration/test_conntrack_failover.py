"""Real flows through a SNAT/DNAT router: dump and events see them with the right NAT, and a
copied entry keeps an established TCP flow alive on a second router, as conntrackd relies on.

Topology (point-to-point veths, no bridges):

    client 10.0.1.10 --ca/la-- router A --wa/sa-- server 192.0.2.100
           (on lo)   --cb/lb-- router B --wb/sb--        (on lo)

Both routers SNAT the client to 192.0.2.1 and run a pf-like forward ruleset (new connections
only with a bare SYN) with nf_conntrack_tcp_loose=0, so B forwards a mid-stream packet only if it
holds the flow's state. "Failover" moves the client's default route and the server's route to
192.0.2.1 from A to B and takes A's links down.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from carpsim.net import netns
from carpsim.net.conntrack import KernelConntrackTable, enable_events, run_in_netns, set_sysctl
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

A = socket.inet_aton
CLIENT, SERVER, VIP, PORT = "10.0.1.10", "192.0.2.100", "192.0.2.1", 5201
ROUTER_RULES = """
table ip fw {
  chain filter_fwd {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    tcp flags & (syn|ack|fin|rst) == syn ct state new accept
  }
}
table ip nat {
  chain pre {
    type nat hook prerouting priority -100;
    ip daddr 10.0.10.1 tcp dport 8080 dnat to 192.0.2.100:5201
  }
  chain post {
    type nat hook postrouting priority 100;
    ip daddr 192.0.2.100 snat to 192.0.2.1
  }
}
"""


@dataclass(frozen=True)
class Lab:
    client: str
    ra: str
    rb: str
    server: str


def _ip(ns: str, *args: str) -> None:
    netns.run(ns, ["ip", *args])


@pytest.fixture
def lab() -> Iterator[Lab]:
    p = netns.unique_prefix("ctf")
    names = Lab(p + "cl", p + "ra", p + "rb", p + "sv")
    with netns.temporary([names.client, names.ra, names.rb, names.server]):
        cl, ra, rb, sv = names.client, names.ra, names.rb, names.server
        for side, router, rnet, wnet in (("a", ra, 10, 20), ("b", rb, 11, 21)):
            _ip(
                cl,
                "link",
                "add",
                f"c{side}",
                "type",
                "veth",
                "peer",
                "name",
                f"l{side}",
                "netns",
                router,
            )
            _ip(
                sv,
                "link",
                "add",
                f"s{side}",
                "type",
                "veth",
                "peer",
                "name",
                f"w{side}",
                "netns",
                router,
            )
            _ip(cl, "addr", "add", f"10.0.{rnet}.2/30", "dev", f"c{side}")
            _ip(router, "addr", "add", f"10.0.{rnet}.1/30", "dev", f"l{side}")
            _ip(sv, "addr", "add", f"10.0.{wnet}.2/30", "dev", f"s{side}")
            _ip(router, "addr", "add", f"10.0.{wnet}.1/30", "dev", f"w{side}")
            for ns, dev in (
                (cl, f"c{side}"),
                (router, f"l{side}"),
                (sv, f"s{side}"),
                (router, f"w{side}"),
            ):
                _ip(ns, "link", "set", dev, "up")
            _ip(router, "route", "add", f"{CLIENT}/32", "via", f"10.0.{rnet}.2")
            _ip(router, "route", "add", f"{SERVER}/32", "via", f"10.0.{wnet}.2")
            netns.run(router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            subprocess.run(
                netns.exec_argv(router, ["nft", "-f", "-"]),
                input=ROUTER_RULES,
                text=True,
                check=True,
            )
            set_sysctl("nf_conntrack_tcp_loose", 0, router)
            set_sysctl("nf_conntrack_acct", 1, router)
            enable_events(router)
        _ip(cl, "addr", "add", f"{CLIENT}/32", "dev", "lo")
        _ip(sv, "addr", "add", f"{SERVER}/32", "dev", "lo")
        _ip(cl, "route", "add", "default", "via", "10.0.10.1", "src", CLIENT)
        _ip(sv, "route", "add", f"{VIP}/32", "via", "10.0.20.1", "src", SERVER)
        yield names


@pytest.fixture
def echo_server(lab: Lab) -> Iterator[None]:
    listener = run_in_netns(lab.server, lambda: socket.create_server((SERVER, PORT)))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    worker = threading.Thread(target=serve, daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()
        listener.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass


def _connect(lab: Lab, host: str = SERVER, port: int = PORT) -> socket.socket:
    sock = run_in_netns(lab.client, lambda: socket.create_connection((host, port), 3, (CLIENT, 0)))
    sock.settimeout(3)
    return sock


def _roundtrip(sock: socket.socket, payload: bytes) -> bool:
    try:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(4096)
            if not chunk:
                return False
            got += chunk
        return got == payload
    except OSError:  # timeout, reset
        return False


def _flows_to(table: KernelConntrackTable, port: int) -> list[StateRecord]:
    return [r for r in table.snapshot() if r.key.proto == 6 and r.key.dport == port]


@pytest.mark.usefixtures("echo_server")
def test_real_flows_dump_nat_and_events(lab: Lab) -> None:
    with KernelConntrackTable(netns=lab.ra) as table:
        table.subscribe()
        snat = _connect(lab)
        dnat = _connect(lab, "10.0.10.1", 8080)
        try:
            assert _roundtrip(snat, b"hello")
            assert _roundtrip(dnat, b"world")
            (via_snat,) = _flows_to(table, PORT)
            (via_dnat,) = _flows_to(table, 8080)
            sport = snat.getsockname()[1]
            assert via_snat.key == FlowKey(6, A(CLIENT), sport, A(SERVER), PORT)
            assert via_snat.nat_src == (A(VIP), sport)
            assert via_snat.nat_dst is None
            assert via_snat.tcp_state == TcpState.ESTABLISHED
            assert via_snat.packets[0] >= 3  # SYN, ACK, data: acct counters decoded
            assert via_snat.bytes_[0] > 0
            dport_src = dnat.getsockname()[1]
            assert via_dnat.key == FlowKey(6, A(CLIENT), dport_src, A("10.0.10.1"), 8080)
            assert via_dnat.nat_dst == (A(SERVER), PORT)
            assert via_dnat.nat_src == (A(VIP), dport_src)
            events = table.read_events()
            news = [ev for kind, ev in events if kind == "new"]
            assert {r.key for r in news if isinstance(r, StateRecord)} == {
                via_snat.key,
                via_dnat.key,
            }
            assert any(
                kind == "update"
                and isinstance(ev, StateRecord)
                and ev.key == via_snat.key
                and ev.tcp_state == TcpState.ESTABLISHED
                for kind, ev in events
            )
            assert table.delete(via_snat.key)
            assert ("destroy", via_snat.key) in table.read_events()
        finally:
            snat.close()
            dnat.close()


def _fail_over(lab: Lab) -> None:
    _ip(lab.client, "route", "replace", "default", "via", "10.0.11.1", "src", CLIENT)
    _ip(lab.server, "route", "replace", f"{VIP}/32", "via", "10.0.21.1", "src", SERVER)
    _ip(lab.ra, "link", "set", "la", "down")
    _ip(lab.ra, "link", "set", "wa", "down")


@pytest.mark.usefixtures("echo_server")
@pytest.mark.parametrize("copy_state", [True, False], ids=["copied", "control-nosync"])
def test_established_snat_flow_survives_move_only_with_copied_state(
    lab: Lab, copy_state: bool
) -> None:
    sock = _connect(lab)
    try:
        assert _roundtrip(sock, b"before")
        with KernelConntrackTable(netns=lab.ra) as a, KernelConntrackTable(netns=lab.rb) as b:
            flows = _flows_to(a, PORT)
            assert len(flows) == 1
            if copy_state:
                result = b.apply_many(flows)
                assert (result.created, result.failed) == (1, [])
            _fail_over(lab)
            if not copy_state:
                sock.settimeout(1.5)
            survived = _roundtrip(sock, b"after the move")
            assert survived == copy_state
            if copy_state:
                (on_b,) = _flows_to(b, PORT)
                assert on_b.nat_src == flows[0].nat_src
                # The echo really crossed B in both directions under the injected entry.
                assert on_b.packets[0] >= 1
                assert on_b.packets[1] >= 1
    finally:
        sock.close()
