"""Who may speak on the SYNC link (issue 14): only the configured peer, on the SYNC interface.

A SyncSocket in one namespace; the peer and a stranger on the same bridge both send valid
pfsync frames (TTL 255). Only the peer's are handed on; the stranger's are counted `badpeer`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import Lan

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

RECEIVER = r"""
import asyncio, json, socket, sys
from ipaddress import IPv4Address, IPv4Interface
from carpsim.net.sync_io import SyncSocket
got = []
sock = SyncSocket("sync", socket.if_nametoindex("sync"), got.append,
                  peer=IPv4Address(sys.argv[1]), local=[IPv4Interface(sys.argv[2])])
loop = asyncio.new_event_loop()
sock.start(loop)
print("ready", flush=True)
loop.run_until_complete(asyncio.sleep(float(sys.argv[3])))
print(json.dumps({"frames": len(got), "drops": dict(sock.drops)}), flush=True)
"""

SENDER = r"""
import socket, sys
from carpsim.statesync import codec
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 240)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
for _ in range(int(sys.argv[2])):
    s.sendto(codec.assemble([]), (sys.argv[1], 0))
"""


def send(lan: Lan, host: str, dst: str, n: int) -> None:
    cmd = ["ip", "netns", "exec", lan.host(host), sys.executable, "-c", SENDER, dst, str(n)]
    subprocess.run(cmd, check=True, timeout=20)


def test_frames_from_a_stranger_are_refused(lan: Lan) -> None:
    lan.plug("n1", "sync", "172.16.77.1/24")
    lan.plug("peer", "sync", "172.16.77.2/24")
    lan.plug("evil", "eth0", "172.16.77.66/24")
    cmd = ["ip", "netns", "exec", lan.host("n1"), sys.executable, "-c", RECEIVER]
    cmd += ["172.16.77.2", "172.16.77.1/24", "4"]
    rx = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout is not None
        assert rx.stdout.readline().strip() == "ready"
        send(lan, "peer", "172.16.77.1", 5)
        send(lan, "evil", "172.16.77.1", 7)
        out, _ = rx.communicate(timeout=20)
    finally:
        rx.kill()
    report = json.loads(out.strip().splitlines()[-1])
    assert report == {"frames": 5, "drops": {"badpeer": 7}}
