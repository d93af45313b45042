"""Hostile CARP input from a third namespace (scapy): every packet dropped under its reason.

The attacker sits on the same bridge as a lone MASTER. Each packet below would, if accepted,
change the master's state (a valid-looking advert with the same interval makes a BSD-rule
master step down), so "no state change" is a real check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from ipaddress import IPv4Address

import pytest
from conftest import Lan, status, vhid_state, wait_for

from carpsim.errors import DecodeError
from carpsim.protocol.codec import decode_packet

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

SENDER = r"""
import json, socket, struct, sys
from ipaddress import IPv4Address
from scapy.all import Ether, IP, Raw, sendp
from carpsim.protocol.codec import build_advert, carp_checksum, compute_hmac

iface, vip = sys.argv[1], IPv4Address(sys.argv[2])
# Capture one of the master's adverts to replay its counter cookie (loop detection).
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((iface, 0))
s.settimeout(3)
while True:
    frame = s.recv(2048)
    if frame[23] == 112:
        own = frame[34:70]
        break

def adv(vhid=1, password=b"pw", skew=0, counter=b"\x01" * 8):
    md = compute_hmac(password, vhid, [vip], counter)
    return build_advert(vhid=vhid, advbase=1, advskew=skew, demote=0, counter=counter, md=md)

def resum(raw):
    raw = bytearray(raw); raw[6:8] = b"\0\0"
    raw[6:8] = carp_checksum(bytes(raw)).to_bytes(2, "big")
    return bytes(raw)

good = adv()
v3 = resum(bytes([0x31]) + good[1:])
v4 = resum(bytes([0x41]) + good[1:])
badsum = good[:8] + bytes([good[8] ^ 0xFF]) + good[9:]
vrrp = bytearray(struct.pack("!BBBBBBH4s8s", 0x21, 1, 100, 1, 0, 1, 0, vip.packed, b"\0" * 8))
payloads = {
    "ttl64": (good, 64),
    "truncated": (good[:20], 255),
    "badsum": (badsum, 255),
    "version3": (v3, 255),
    "version4": (v4, 255),
    "unknown_vhid": (adv(vhid=9), 255),
    "bad_hmac": (adv(password=b"wrong"), 255),
    "vrrp": (bytes(vrrp), 255),
    "own_cookie": (own, 255),
}
sent = {}
for name, (body, ttl) in payloads.items():
    ip = IP(src="10.61.0.66", dst="224.0.0.18", ttl=ttl, proto=112, flags="DF", tos=0x10)
    pkt = ip / Raw(body)
    raw = bytes(pkt)
    sendp(Ether(dst="01:00:5e:00:00:12") / pkt, iface=iface, verbose=False)
    sent[name] = raw.hex()
print(json.dumps(sent))
"""


# The socket filter (carp_io.vhid_filter) drops these in the kernel: never seen, never counted.
KERNEL_FILTERED = {"ttl64", "version3", "version4", "unknown_vhid"}


def expected_reason(name: str, raw: bytes) -> str:
    """The pure codec is the oracle for decode-level reasons; machine-level ones are fixed."""
    machine_level = {"unknown_vhid": "badvhid", "bad_hmac": "badauth", "own_cookie": "loop"}
    if name in machine_level:
        return machine_level[name]
    try:
        decode_packet(raw)
    except DecodeError as exc:
        return str(exc.reason)
    pytest.fail(f"{name} decodes cleanly: not a hostile packet")


def test_hostile_packets_are_dropped_and_counted(lan: Lan) -> None:
    lan.plug("n1", "lan", "10.61.0.1/24")
    lan.plug("evil", "eth0", "10.61.0.66/24")
    control = str(lan.tmp / "n1.sock")
    proc = lan.carpsim(
        "n1",
        "carp",
        "--interface",
        "lan",
        "--srcip",
        "10.61.0.1",
        "--vhid",
        "1",
        "--pass",
        "pw",
        "--addr",
        "10.61.0.254/24",
        "--control",
        control,
        log="n1.log",
    )
    wait_for(lambda: vhid_state(control, 1) == "MASTER", 8, what="MASTER")
    before = status(control)
    assert before["drops"] == {}

    run = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lan.host("evil"),
            sys.executable,
            "-c",
            SENDER,
            "eth0",
            "10.61.0.254",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    sent = {k: bytes.fromhex(v) for k, v in json.loads(run.stdout).items()}
    assert IPv4Address(sent["own_cookie"][12:16]) == IPv4Address("10.61.0.66")
    reasons = {name: expected_reason(name, raw) for name, raw in sent.items()}
    assert {"badttl", "badsum", "badver", "badvhid", "badauth", "loop", "not_carp"} <= set(
        reasons.values()
    )
    expected = Counter(r for name, r in reasons.items() if name not in KERNEL_FILTERED)
    n = sum(expected.values())
    wait_for(lambda: sum(status(control)["drops"].values()) >= n, 3, what="all counted")
    time.sleep(0.3)  # nothing more may arrive
    after = status(control)
    assert Counter(after["drops"]) == expected
    assert after["vhids"][0]["state"] == "MASTER"
    assert after["vhids"][0]["last_advert_src"] is None
    assert after["rx_packets"] - before["rx_packets"] == n
    assert proc.poll() is None
    log = (lan.tmp / "n1.log").read_text()
    # Each reason is logged once, with the reason.
    for reason in expected:
        assert log.count(f"dropped a packet: {reason} ") == 1, log
