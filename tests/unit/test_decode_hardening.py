"""`carpsim decode` against hostile files: non-regular files, malformed captures, huge ones.

Each case once crashed, hung or ran out of memory (issue 14); the contract now is: regular files
only, one record in memory at a time, and every malformed file answered with ONE line on stderr
and exit status 2.
"""

from __future__ import annotations

import io
import os
import resource
import struct
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from carpsim.cli import main
from carpsim.cli.decode import MAX_INFERRED_VIPS, decode_capture
from carpsim.protocol.codec import CarpAuth, build_advert, encode_packet
from carpsim.wire.garp import garp_frame
from carpsim.wire.pcap import MAX_RECORD, PcapError, read_frames

ROOT = Path(__file__).resolve().parents[2]
SHB = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)


def pcap(packets: list[bytes], linktype: int = 1) -> bytes:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
    for i, pkt in enumerate(packets):
        out += struct.pack("<IIII", 100 + i, 0, len(pkt), len(pkt)) + pkt
    return bytes(out)


def block(btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))


IDB = block(1, struct.pack("<HHI", 1, 0, 65535))


def epb(frame: bytes, caplen: int | None = None) -> bytes:
    n = len(frame) if caplen is None else caplen
    return block(6, struct.pack("<IIIII", 0, 0, 0, n, len(frame)) + frame)


def run_cli(tmp_path: Path, blob: bytes, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "capture"
    path.write_bytes(blob)
    code = main(["decode", str(path), "--json"])
    return code, capsys.readouterr().err


def subprocess_decode(target: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    def limit_memory() -> None:
        # If the reader ever slurps an endless file again, fail fast instead of eating the host.
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [sys.executable, "-m", "carpsim", "decode", str(target)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_memory,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


# ---------------------------------------------------------------- not a regular file


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = subprocess_decode(fifo)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "not a regular file" in done.stderr


def test_dev_zero_is_refused_not_read(tmp_path: Path) -> None:
    done = subprocess_decode(Path("/dev/zero"))
    assert done.returncode == 2, done.stderr[-300:]
    assert done.stderr.count("\n") == 1
    assert "not a regular file" in done.stderr


def test_a_directory_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "not a regular file" in err


# ---------------------------------------------------------------- malformed captures

_ARP = garp_frame(b"\x00\x00\x5e\x00\x01\x01", IPv4Address("10.0.0.1"))

MALFORMED = {
    "bad magic": b"\x00\x01\x02\x03" + bytes(40),
    "empty file": b"",
    "pcapng bad byte-order magic": struct.pack("<III", 0x0A0D0D0A, 28, 0xDEADBEEF) + bytes(16),
    "three malformed pcapng blocks": SHB + block(1, b"") + block(6, b"\x00" * 4) + b"\xff" * 12,
    "pcapng block length not a multiple of 4": SHB + struct.pack("<II", 6, 13) + bytes(5),
    "pcapng absurd block length": SHB + struct.pack("<II", 6, 0xFFFFFFF0) + bytes(8),
    "pcapng absurd skipped block length": SHB + struct.pack("<II", 0x99, 0xFFFFFFF0) + bytes(8),
    "pcapng trailer differs": SHB + IDB[:-4] + struct.pack("<I", 99),
    "pcapng truncated EPB": SHB + IDB + epb(_ARP)[:-10],
    "pcapng EPB caplen overruns block": SHB + IDB + epb(_ARP, caplen=4000),
    "pcapng EPB on undeclared interface": SHB + epb(_ARP),
    "pcapng trailing partial header": SHB + IDB + b"\x06\x00",
    "pcap truncated global header": b"\xd4\xc3\xb2\xa1" + bytes(10),
    "pcap absurd record length": pcap([])
    + struct.pack("<IIII", 0, 0, 0xFFFFFFFF, 0xFFFFFFFF)
    + bytes(64),
    "pcap truncated record": pcap([_ARP])[:-5],
    "pcap trailing partial record header": pcap([_ARP]) + bytes(7),
}


@pytest.mark.parametrize("blob", MALFORMED.values(), ids=MALFORMED.keys())
def test_every_malformed_capture_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], blob: bytes
) -> None:
    code, err = run_cli(tmp_path, blob, capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("carpsim: ")
    assert "Traceback" not in err


def test_records_before_the_damage_are_still_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    advert = _advert(1, b"pw", [IPv4Address("10.0.0.1")], b"\x01" * 8)
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap([advert, advert])[:-3])
    assert main(["decode", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out.count('"type": "carp"') == 1
    assert captured.err.count("\n") == 1
    assert "truncated pcap record" in captured.err


# ---------------------------------------------------------------- bounded memory


class _Watched(io.BytesIO):
    """A file that remembers the largest single read the reader asked for."""

    largest = 0

    def read(self, n: int | None = -1) -> bytes:
        assert n is not None, "the reader must never ask for the whole file"
        assert n >= 0, "the reader must never ask for the whole file"
        self.largest = max(self.largest, n)
        return super().read(n)


def test_the_reader_streams_in_bounded_reads() -> None:
    packets = [_ARP] * 2000
    for blob in (pcap(packets), SHB + IDB + b"".join(epb(p) for p in packets)):
        src = _Watched(blob)
        assert len(list(read_frames(src))) == 2000
        assert src.largest <= MAX_RECORD + 64 * 1024


def test_a_record_over_the_cap_is_refused_before_it_is_read() -> None:
    big = bytes(MAX_RECORD + 1)
    src = _Watched(pcap([big]))
    with pytest.raises(PcapError, match="more than"):
        list(read_frames(src))
    assert src.largest < MAX_RECORD


def test_unparsed_pcapng_blocks_are_skipped_without_being_held() -> None:
    huge_custom = block(0x40000BAD, bytes(4 * MAX_RECORD))
    src = _Watched(SHB + IDB + huge_custom + epb(_ARP))
    assert [f.data for f in read_frames(src)] == [_ARP]
    assert src.largest <= 64 * 1024


# ---------------------------------------------------------------- many distinct GARPs


def _advert(vhid: int, password: bytes, vips: list[IPv4Address], counter: bytes) -> bytes:
    md = CarpAuth(password, vhid, vips).sign(counter)
    adv = build_advert(vhid=vhid, advbase=1, advskew=0, demote=0, counter=counter, md=md)
    ip = encode_packet(
        src=IPv4Address("10.0.0.2"), dst=IPv4Address("224.0.0.18"), ip_id=1, advert_bytes=adv
    )
    return b"\x01\x00\x5e\x00\x00\x12" + b"\x00\x00\x5e\x00\x01" + bytes([vhid]) + b"\x08\x00" + ip


def test_twenty_thousand_distinct_garps_decode_in_linear_time(tmp_path: Path) -> None:
    vip = IPv4Address("10.1.0.5")
    garps = [
        garp_frame(b"\x02\x00\x00\x00\x00\x01", IPv4Address(int(IPv4Address("10.2.0.0")) + i))
        for i in range(20_000)
    ]
    garps.insert(3, garp_frame(b"\x00\x00\x5e\x00\x01\x07", vip))
    adverts = [_advert(7, b"pw", [vip], i.to_bytes(8, "big")) for i in range(200)]
    path = tmp_path / "garps.pcap"
    path.write_bytes(pcap(garps + adverts))
    records = decode_capture(path, password=b"pw")
    carp = [r for r in records if r["type"] == "carp"]
    assert len(carp) == 200
    assert all(r["hmac_ok"] is True and r["vips_inferred"] == [str(vip)] for r in carp)
    # Past the cap the addresses are counted, not kept: the note says so.
    assert all(f"{MAX_INFERRED_VIPS} " in r["note"] for r in carp)


def test_a_wrong_password_fails_every_advert_without_searching_each_time(tmp_path: Path) -> None:
    vips = [IPv4Address(int(IPv4Address("10.3.0.0")) + i) for i in range(300)]
    garps = [garp_frame(b"\x02\x00\x00\x00\x00\x01", v) for v in vips]
    adverts = [_advert(9, b"right", vips[:1], i.to_bytes(8, "big")) for i in range(300)]
    path = tmp_path / "wrong.pcap"
    path.write_bytes(pcap(garps + adverts))
    records = decode_capture(path, password=b"wrong")
    assert [r["hmac_ok"] for r in records] == [False] * 300


class _FailingDisk(io.BytesIO):
    def read(self, n: int | None = -1) -> bytes:
        if self.tell() > 100:
            raise OSError(5, "Input/output error")
        return super().read(n)


def test_a_read_error_mid_file_is_a_pcap_error() -> None:
    with pytest.raises(PcapError, match="read error at offset"):
        list(read_frames(_FailingDisk(pcap([_ARP] * 10))))
