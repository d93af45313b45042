"""`carpsim decode` and `carpsim simulate` through the real dispatcher."""

from __future__ import annotations

import json
import shutil
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from carpsim.cli import main
from carpsim.cli.decode import DECODERS, decode_capture
from carpsim.protocol.codec import encode_packet
from carpsim.protocol.constants import IPPROTO_CARP
from carpsim.statesync.codec import Frame, Section, encode_frame
from carpsim.statesync.constants import IPPROTO_PFSYNC, Act
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ucarp"
PW = "K33p_It_S3cr3t!"


def vector(name: str) -> Path:
    path = VECTORS / name
    assert path.is_file(), f"vendored vector missing: {path}"
    return path


def json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_decode_json_verifies_every_advert_with_explicit_vip(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "decode",
            str(vector("ucarp-steady.pcap")),
            "--password",
            PW,
            "--vip",
            "192.168.110.254",
            "--json",
        ]
    )
    assert code == 0
    records = json_lines(capsys.readouterr().out)
    assert len(records) == 5
    first = records[0]
    assert first["type"] == "carp"
    assert (first["src"], first["dst"], first["ttl"], first["vhid"]) == (
        "192.168.110.251",
        "224.0.0.18",
        255,
        1,
    )
    assert first["counter"] == "ec3c4f5bdab2aab7"  # README vector 1
    assert first["time"] == pytest.approx(1795618019.012255)
    assert all(r["checksum_ok"] is True and r["hmac_ok"] is True for r in records)
    assert all(r["interval_s"] == 1.0 for r in records)


def test_decode_infers_the_vip_from_the_gratuitous_arp(capsys: pytest.CaptureFixture[str]) -> None:
    path = vector("ucarp-failover-kill.pcap")
    assert main(["decode", str(path), "--password", PW, "--json"]) == 0
    records = json_lines(capsys.readouterr().out)
    assert {r["advskew"] for r in records} == {0, 100}
    assert all(r["hmac_ok"] is True for r in records)
    assert records[0]["vips_inferred"] == ["192.168.110.254"]


def test_decode_wrong_password_and_no_password(capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "decode",
            str(vector("ucarp-steady.pcap")),
            "--password",
            "wrong",
            "--vip",
            "192.168.110.254",
            "--json",
        ]
    )
    assert all(r["hmac_ok"] is False for r in json_lines(capsys.readouterr().out))
    main(["decode", str(vector("ucarp-steady.pcap")), "--json"])
    assert all(r["hmac_ok"] is None for r in json_lines(capsys.readouterr().out))


def test_decode_table_is_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "decode",
                str(vector("ucarp-steady.pcap")),
                "--password",
                PW,
                "--vip",
                "192.168.110.254",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("TIME")
    assert len(lines) == 6
    assert len({line.index("192.168.110.251") for line in lines[1:]}) == 1
    assert all(" ok   ok" in line for line in lines[1:])


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark converts the vector to pcapng")
def test_decode_reads_pcapng(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "steady.pcapng"
    subprocess.run(
        ["tshark", "-r", str(vector("ucarp-steady.pcap")), "-F", "pcapng", "-w", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    main(["decode", str(out), "--password", PW, "--vip", "192.168.110.254", "--json"])
    from_ng = json_lines(capsys.readouterr().out)
    main(
        [
            "decode",
            str(vector("ucarp-steady.pcap")),
            "--password",
            PW,
            "--vip",
            "192.168.110.254",
            "--json",
        ]
    )
    assert from_ng == json_lines(capsys.readouterr().out)


def _write_pcap(path: Path, packets: list[bytes], linktype: int = 101) -> None:
    blob = bytearray(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(8) + b"\xff\xff\x00\x00")
    blob += linktype.to_bytes(4, "little")
    for i, pkt in enumerate(packets):
        blob += (100 + i).to_bytes(4, "little") + bytes(4)
        blob += len(pkt).to_bytes(4, "little") * 2 + pkt
    path.write_bytes(bytes(blob))


def test_decode_reports_vrrp_and_invalid_packets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def wrap(payload: bytes) -> bytes:
        return encode_packet(
            src=IPv4Address("10.0.0.2"),
            dst=IPv4Address("224.0.0.18"),
            ip_id=1,
            advert_bytes=payload,
        )

    vrrp = wrap(bytes.fromhex("21056401000100000a0000010000000000000000"))
    broken = wrap(bytes.fromhex("2101000700010000") + bytes(28))  # bad checksum, still shown
    garbage = wrap(bytes.fromhex("41") + bytes(35))  # version 4
    capture = tmp_path / "mixed.pcap"
    _write_pcap(capture, [vrrp, broken, garbage])
    assert main(["decode", str(capture), "--json"]) == 0
    records = json_lines(capsys.readouterr().out)
    assert [r["type"] for r in records] == ["vrrp", "carp", "invalid"]
    assert records[0]["vrid"] == 5
    assert records[1]["checksum_ok"] is False
    assert records[2]["reason"] == "badver"


def test_decode_bad_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(tmp_path / "missing.pcap")]) == 2
    assert "cannot read" in capsys.readouterr().err
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all")
    assert main(["decode", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a pcap" in err
    assert main(["decode", str(vector("ucarp-steady.pcap")), "--vip", "nope"]) == 2
    assert "--vip" in capsys.readouterr().err


def test_decoders_dispatch_on_ip_protocol() -> None:
    assert set(DECODERS) == {IPPROTO_CARP, IPPROTO_PFSYNC, 17, 6}
    records = decode_capture(vector("ucarp-failover-kill.pcap"))
    assert all(r["type"] == "carp" for r in records)  # the ICMP pings are not listed


def test_simulate_list_and_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "failover-kill" in listing
    assert "advbase-zero" in listing
    assert main(["simulate", "failover-kill", "--json"]) == 0
    events = json_lines(capsys.readouterr().out)
    assert {
        "time": 13.390625,
        "node": "node2",
        "vhid": 1,
        "from": "BACKUP",
        "to": "MASTER",
        "reason": "master_down",
    } in events
    assert main(["simulate", "bow-out", "--seed", "3"]) == 0
    text = capsys.readouterr().out
    assert "BACKUP->MASTER (peer_will_time_out)" in text
    assert main(["simulate", "nope"]) == 2
    assert "scenario" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("linktype", "header"),
    [
        (113, bytes(14) + b"\x08\x00"),  # Linux cooked v1: protocol in the last 2 of 16 bytes
        (276, b"\x08\x00" + bytes(18)),  # Linux cooked v2: protocol first, 20 bytes
        (1, bytes(12) + b"\x81\x00\x00\x05\x08\x00"),  # Ethernet with an 802.1Q tag
    ],
)
def test_decode_unwraps_link_types(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], linktype: int, header: bytes
) -> None:
    packet = bytes.fromhex(
        "451000386f454000ff70218a0a630001e0000012"
        "2107000700012594f0d9c981862b6e8b2b4d7d9e2db89f1467abdb5c31927894183d8f25"
    )  # a ucarp advert: vhid 7, `secret`
    capture = tmp_path / "cooked.pcap"
    _write_pcap(capture, [header + packet], linktype)
    main(["decode", str(capture), "--password", "secret", "--vip", "10.99.0.100", "--json"])
    (record,) = json_lines(capsys.readouterr().out)
    assert (record["vhid"], record["hmac_ok"], record["checksum_ok"]) == (7, True, True)


def _ipv4(proto: int, payload: bytes, ttl: int = 255) -> bytes:
    header = bytearray(
        encode_packet(
            src=IPv4Address("172.16.1.5"),
            dst=IPv4Address("172.16.1.6"),
            ip_id=7,
            advert_bytes=payload,
        )[:20]
    )
    header[8], header[9] = ttl, proto
    return bytes(header) + payload


def test_decode_shows_pfsync_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = FlowKey(6, bytes([192, 168, 110, 10]), 40000, bytes([203, 0, 113, 10]), 80)
    rec = StateRecord(
        key,
        creatorid=1,
        id=42,
        nat_src=(bytes([192, 168, 100, 254]), 61000),
        tcp_state=TcpState.ESTABLISHED,
        timeout=3600,
    )
    frame = encode_frame(Frame((Section(Act.INS, (rec, rec)),)))
    capture = tmp_path / "sync.pcap"
    _write_pcap(capture, [_ipv4(IPPROTO_PFSYNC, frame), _ipv4(IPPROTO_PFSYNC, frame[:9])])
    assert main(["decode", str(capture), "--json"]) == 0
    good, bad = json_lines(capsys.readouterr().out)
    assert good["type"] == "pfsync"
    assert (good["src"], good["dst"], good["ttl"]) == ("172.16.1.5", "172.16.1.6", 255)
    sections = good["sections"]
    assert isinstance(sections, list)
    assert [(s["action"], s["count"]) for s in sections] == [("INS", 2)]
    assert bad["type"] == "pfsync"
    assert bad["error"] == "badlen"
    assert main(["decode", str(capture)]) == 0
    table = capsys.readouterr().out
    assert "INS x2" in table
    assert "invalid pfsync frame: badlen" in table
