"""Wireshark's CARP dissector (tshark) reads carpsim's adverts and GARPs off a real capture.

tcpdump captures on a third namespace's port of the bridge (so the frames really crossed the
switch); tshark then dissects protocol 112 as CARP and verifies its checksum.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from carpsim.errors import DecodeError
from carpsim.wire.pcap import ETHERTYPE_ARP, ETHERTYPE_IPV4, network_payload, read_frames
from interop.conftest import Lan, need_tool, try_status, vhid_state, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.netns, pytest.mark.timeout(60)]


def captured(cap: Path) -> tuple[int, int]:
    """(CARP adverts, ARP frames) tcpdump has written so far; a record mid-write counts later."""
    try:
        frames = list(read_frames(cap.read_bytes()))
    except (FileNotFoundError, DecodeError):
        return 0, 0
    adverts = arps = 0
    for frame in frames:
        l3 = network_payload(frame)
        if l3 is not None and l3[0] == ETHERTYPE_IPV4 and len(l3[1]) > 9 and l3[1][9] == 112:
            adverts += 1
        elif l3 is not None and l3[0] == ETHERTYPE_ARP:
            arps += 1
    return adverts, arps


def test_tshark_dissects_carpsim_adverts_and_garp(lan: Lan) -> None:
    tshark, tcpdump = need_tool("tshark"), need_tool("tcpdump")
    lan.plug("n1", "lan", "10.81.0.1/24")
    lan.plug("mon", "eth0", None)
    cap = lan.tmp / "carp.pcap"
    # --immediate-mode: libpcap's TPACKET_V3 blocks otherwise hold frames up to 1 s, and
    # SIGINT then ends the capture with the last ones received but never written.
    dump = lan.popen(
        "mon",
        [tcpdump, "-i", "eth0", "-U", "--immediate-mode", "-w", str(cap), "ip proto 112 or arp"],
        log="tcpdump.log",
    )
    wait_for(
        lambda: "listening on" in (lan.tmp / "tcpdump.log").read_text(errors="replace"),
        10,
        what="tcpdump to start capturing",
    )
    control = str(lan.tmp / "n1.sock")
    lan.carpsim(
        "n1",
        "carp",
        "--interface",
        "lan",
        "--srcip",
        "10.81.0.1",
        "--vhid",
        "42",
        "--pass",
        "K33p_It_S3cr3t!",
        "--addr",
        "10.81.0.254/24",
        "--advskew",
        "100",
        "--control",
        control,
        log="n1.log",
    )
    wait_for(lambda: vhid_state(control, 42) == "MASTER", 8, what="MASTER")
    # The GARP repeats with the 2nd advert after the takeover one (adverts every 1.39 s): wait
    # for the daemon's own count of 3 adverts rather than a fixed sleep a loaded CI can outrun.
    wait_for(
        lambda: (st := try_status(control)) is not None and st["tx_packets"] >= 3,
        10,
        what="three adverts",
    )
    # Stop only once the file holds what the daemon sent: three adverts and both GARPs.
    wait_for(
        lambda: (c := captured(cap))[0] >= 3 and c[1] >= 2, 10, what="the frames in the capture"
    )
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=5)

    fields = subprocess.run(
        [
            tshark,
            "-r",
            str(cap),
            "-d",
            "ip.proto==112,carp",
            "-Y",
            "carp",
            "-T",
            "fields",
            "-e",
            "carp.vhid",
            "-e",
            "carp.checksum.status",
            "-e",
            "carp.version",
            "-e",
            "carp.advskew",
            "-e",
            "carp.authlen",
            "-e",
            "ip.ttl",
            "-e",
            "eth.src",
            "-e",
            "eth.dst",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in fields if line.strip()]
    assert len(rows) >= 2, fields
    for row in rows:
        # checksum.status 1 = "Good" in Wireshark's PROTO_CHECKSUM_E_GOOD
        assert row == [
            "42",
            "1",
            "2",
            "100",
            "7",
            "255",
            "00:00:5e:00:01:2a",
            "01:00:5e:00:00:12",
        ], row

    garps = subprocess.run(
        [
            tshark,
            "-r",
            str(cap),
            "-Y",
            "arp.isgratuitous == 1",
            "-T",
            "fields",
            "-e",
            "eth.src",
            "-e",
            "arp.src.hw_mac",
            "-e",
            "arp.src.proto_ipv4",
            "-e",
            "arp.opcode",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # two GARPs: on takeover and after the second following advert
    assert garps == ["00:00:5e:00:01:2a", "00:00:5e:00:01:2a", "10.81.0.254", "1"] * 2, garps
