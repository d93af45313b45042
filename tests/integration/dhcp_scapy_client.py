"""Scripted DHCP client for the netns test (runs inside the client namespace).

    python dhcp_scapy_client.py IFACE OUT.json HERE

Sends, on IFACE, with scapy: a DISCOVER with the broadcast flag (the OFFER must come to
ff:ff:ff:ff:ff:ff), the REQUEST, a DECLINE of the acknowledged address, a second DORA, an
INFORM from a configured address (the ACK is unicast to it), an INIT-REBOOT REQUEST for a
foreign address (NAK) and a RELEASE. HERE is the address configured on IFACE (for INFORM),
or ``silent``: send one DISCOVER and record whatever answers.
Writes what came back as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from scapy.arch import get_if_hwaddr
from scapy.config import conf
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp, srp1

IFACE, OUT, HERE = sys.argv[1], sys.argv[2], sys.argv[3]
conf.checkIPaddr = False
MAC = get_if_hwaddr(IFACE)
CH = bytes.fromhex(MAC.replace(":", ""))


def opt(pkt: Any, name: str) -> Any:
    for item in pkt[DHCP].options:
        if isinstance(item, tuple) and item[0] == name:
            return item[1]
    return None


def send(
    options: list[Any], xid: int, flags: int = 0, ciaddr: str = "0.0.0.0", wait: bool = True
) -> Any:
    src = ciaddr
    pkt = (
        Ether(src=MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src=src, dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=CH, xid=xid, flags=flags, ciaddr=ciaddr)
        / DHCP(options=[*options, "end"])
    )
    if not wait:
        sendp(pkt, iface=IFACE, verbose=False)
        return None
    return srp1(pkt, iface=IFACE, timeout=4, verbose=False)


def summary(pkt: Any) -> dict[str, Any] | None:
    if pkt is None:
        return None
    types = {2: "OFFER", 5: "ACK", 6: "NAK"}
    return {
        "type": types.get(opt(pkt, "message-type"), "?"),
        "eth_dst": pkt[Ether].dst,
        "ip_dst": pkt[IP].dst,
        "yiaddr": pkt[BOOTP].yiaddr,
        "router": opt(pkt, "router"),
        "lease_time": opt(pkt, "lease_time"),
    }


def dora(xid: int, flags: int) -> tuple[Any, Any]:
    offer = send([("message-type", "discover")], xid, flags)
    ack = send(
        [
            ("message-type", "request"),
            ("requested_addr", offer[BOOTP].yiaddr),
            ("server_id", offer[IP].src),
        ],
        xid,
        flags,
    )
    return offer, ack


result: dict[str, Any] = {}
if HERE == "silent":
    # Only a DISCOVER: on an interface the server is not configured for, nothing may answer.
    result["reply"] = summary(send([("message-type", "discover")], 0x2001, 0x8000))
    with open(OUT, "w") as f:
        json.dump(result, f)
    sys.exit(0)
offer, ack = dora(0x1001, 0x8000)
result["offer_bcast"] = summary(offer)
result["ack_bcast"] = summary(ack)
server = offer[IP].src
declined = ack[BOOTP].yiaddr
decline = [("message-type", "decline"), ("requested_addr", declined), ("server_id", server)]
send(decline, 0x1002, wait=False)
result["declined"] = declined
offer2, ack2 = dora(0x1003, 0)
result["offer2"] = summary(offer2)
result["ack2"] = summary(ack2)
nak = send([("message-type", "request"), ("requested_addr", "10.99.0.5")], 0x1004)
result["nak"] = summary(nak)
inform = send([("message-type", "inform")], 0x1005, ciaddr=HERE)
result["inform"] = summary(inform)
result["released"] = ack2[BOOTP].yiaddr
release = [("message-type", "release"), ("server_id", server)]
send(release, 0x1006, ciaddr=ack2[BOOTP].yiaddr, wait=False)
with open(OUT, "w") as f:
    json.dump(result, f)
