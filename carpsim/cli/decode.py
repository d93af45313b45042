"""``carpsim decode FILE``: one line per CARP advert, VRRP packet, pfsync frame, DHCP message.

Checksums are always verified. The HMAC needs the password and the VHID's address list; the
addresses come from ``--vip`` or, failing that, from gratuitous ARPs in the same capture
(sender IP == target IP), which is what a new master sends for its VIP. VRRP packets on
protocol 112 are reported as VRRP, not as errors. Decoders are looked up by IP protocol in
`DECODERS`: CARP/VRRP (112), pfsync (240), UDP (17: DHCP on ports 67/68) and TCP (6: DHCP
failover on 519/520/647, each direction reassembled by `carpsim.wire.tcpstream` and framed by
the failover codec, see `carpsim.cli.decode_streams`).

Hostile files are part of the contract: only regular files are opened (a FIFO, a device or a
directory is refused before any read), the capture is streamed one record at a time with a
per-record cap (see `carpsim.wire.pcap`), records are printed as they are decoded, and the
first malformed byte ends the run with one line on stderr and exit status 2. Everything kept
across records is bounded: the gratuitous-ARP addresses (`MAX_INFERRED_VIPS`) and the HMAC
search over them, which is done in full only a logarithmic number of times per VHID, so a
capture of N packets costs O(N) whatever it holds.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any, BinaryIO

from carpsim.cli.decode_streams import TcpMessageStreams
from carpsim.cli.describe import describe_frame, describe_vrrp
from carpsim.dhcp import codec as dhcp_codec
from carpsim.dhcp.describe import describe as describe_dhcp
from carpsim.dhcp.failover.codec import Message as FailoverMessage
from carpsim.dhcp.failover.codec import StreamFramer
from carpsim.dhcp.failover.stream import FAILOVER_PORTS, describe_message
from carpsim.errors import ConfigError, DecodeError
from carpsim.protocol.codec import (
    CarpAuth,
    carp_checksum,
    decode_packet,
    ip_protocol,
)
from carpsim.protocol.constants import IPPROTO_CARP
from carpsim.statesync.constants import IPPROTO_PFSYNC
from carpsim.wire.pcap import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    PcapError,
    gratuitous_arp_ip,
    network_payload,
    read_frames,
)
from carpsim.wire.tcpstream import parse_ipv4, parse_tcp

IPPROTO_TCP = 6
IPPROTO_UDP = 17
DHCP_PORTS = (67, 68)
MAX_INFERRED_VIPS = 1024
"""Distinct gratuitous-ARP addresses kept as HMAC candidates; the rest are counted only."""
_READ_BUFFER = 64 * 1024


def open_capture(path: Path) -> BinaryIO:
    """Open `path` for streaming, refusing anything but a regular file before reading a byte.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer; it has no
    effect on a regular file's reads.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PcapError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(mode)
                else "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a device"
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket or special file"
            )
            raise PcapError(f"cannot read {path}: not a regular file ({kind})")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb", buffering=_READ_BUFFER)


class VipInference:
    """HMAC candidates from gratuitous ARPs, searched at a bounded cost per advert.

    A full search tries the whole GARP'd set (a multi-VIP vhid), then each address alone. The
    set that verified is remembered per VHID and tried first; while nothing has verified, the
    full search runs on the 1st, 2nd, 4th, 8th... failing advert of that VHID only, so a wrong
    password or a forged advert costs O(1) per packet, not O(addresses).
    """

    def __init__(self, password: bytes) -> None:
        self._password = password
        self._addrs: dict[IPv4Address, None] = {}
        self.ignored = 0
        self._whole: dict[int, CarpAuth] = {}
        self._learned: dict[int, tuple[list[IPv4Address], CarpAuth]] = {}
        self._failures: dict[int, int] = {}

    def add(self, addr: IPv4Address) -> None:
        if addr in self._addrs:
            return
        if len(self._addrs) >= MAX_INFERRED_VIPS:
            self.ignored += 1
            return
        self._addrs[addr] = None

    @property
    def addresses(self) -> list[IPv4Address]:
        return list(self._addrs)

    def verify(self, vhid: int, counter: bytes, md: bytes) -> tuple[bool, list[IPv4Address]]:
        learned = self._learned.get(vhid)
        if learned is not None and learned[1].verify(counter, md):
            return True, learned[0]
        fails = self._failures.get(vhid, 0) + 1
        self._failures[vhid] = fails
        if fails & (fails - 1) == 0:  # a power of two
            for vips in self._candidates():
                auth = self._auth(vhid, vips)
                if auth.verify(counter, md):
                    self._learned[vhid] = (vips, auth)
                    self._failures[vhid] = 0
                    return True, vips
        return False, self.addresses if learned is None else learned[0]

    def _candidates(self) -> Iterator[list[IPv4Address]]:
        addrs = self.addresses
        yield addrs
        if len(addrs) > 1:
            for a in addrs:
                yield [a]

    def _auth(self, vhid: int, vips: list[IPv4Address]) -> CarpAuth:
        if len(vips) != 1 or len(self._addrs) == 1:
            whole = self._whole.get(vhid)
            if whole is None:
                whole = self._whole[vhid] = CarpAuth(self._password, vhid, vips)
            return whole
        return CarpAuth(self._password, vhid, vips)


def describe_failover(msg: FailoverMessage) -> dict[str, Any]:
    """The failover codec's view, states by their ISC words; the header's clock renamed, as
    ``time`` is the capture's. STATE and CONNECT always carry ``server_state`` (CONNECT has
    none on the wire: null), BNDUPD and BNDACK ``assigned_ip`` and ``binding_status``."""
    out = describe_message(msg)
    out["sender_time"] = out.pop("time")
    if out["type"] in ("STATE", "CONNECT"):
        out.setdefault("server_state", None)
    if out["type"] in ("BNDUPD", "BNDACK"):
        out.setdefault("assigned_ip", None)
        out.setdefault("binding_status", None)
    return out


def _failover_streams() -> TcpMessageStreams:
    return TcpMessageStreams("dhcp-failover", FAILOVER_PORTS, StreamFramer, describe_failover)


@dataclass
class DecodeContext:
    password: bytes | None
    vips: list[IPv4Address | IPv6Address]
    inference: VipInference | None = None
    failover: TcpMessageStreams = field(default_factory=_failover_streams)
    _auth: dict[int, CarpAuth] = field(default_factory=dict)

    def auth(self, vhid: int) -> CarpAuth:
        """The HMAC state for the --vip list (one per VHID)."""
        assert self.password is not None
        if vhid not in self._auth:
            self._auth[vhid] = CarpAuth(self.password, vhid, self.vips)
        return self._auth[vhid]


Decoder = Callable[[float, bytes, DecodeContext], list[dict[str, Any]]]


def decode_proto_112(time: float, packet: bytes, ctx: DecodeContext) -> list[dict[str, Any]]:
    """CARP advert, or VRRP sharing the protocol number, or an invalid packet with its reason."""
    vrrp = describe_vrrp(packet)
    if vrrp is not None:
        return [{"time": time, "kind": "vrrp", **vrrp}]
    try:
        pkt = decode_packet(packet, check_ttl=False, check_sum=False)
    except DecodeError as exc:
        return [
            {
                "time": time,
                "kind": "invalid",
                "type": "invalid",
                "reason": exc.reason,
                "detail": exc.detail,
            }
        ]
    adv = pkt.advert
    record: dict[str, Any] = {
        "time": time,
        "kind": "carp",
        "type": "carp",
        "src": str(pkt.src),
        "dst": str(pkt.dst),
        "ttl": pkt.ttl,
        "vhid": adv.vhid,
        "advbase": adv.advbase,
        "advskew": adv.advskew,
        "demote": adv.demote,
        "counter": adv.counter.hex(),
        "checksum_ok": carp_checksum(pkt.carp_bytes) == 0,
        "hmac_ok": None,
        "interval_s": adv.interval,
        "bow_out": adv.is_bow_out,
    }
    if pkt.ttl != 255:
        _note(record, "ttl != 255: BSD and ucarp drop this (badttl)")
    _check_hmac(record, adv.vhid, adv.counter, adv.md, ctx)
    return [record]


def _note(record: dict[str, Any], text: str) -> None:
    record["note"] = f"{record['note']}; {text}" if "note" in record else text


def _check_hmac(
    record: dict[str, Any], vhid: int, counter: bytes, md: bytes, ctx: DecodeContext
) -> None:
    if ctx.password is None:
        return
    if ctx.vips:
        record["hmac_ok"] = ctx.auth(vhid).verify(counter, md)
        return
    inference = ctx.inference
    if inference is None or not inference.addresses:
        _note(record, "no VIP given and no gratuitous ARP in the capture: pass --vip")
        return
    record["hmac_ok"], vips = inference.verify(vhid, counter, md)
    record["vips_inferred"] = [str(v) for v in vips]
    if inference.ignored:
        _note(
            record,
            f"only the first {MAX_INFERRED_VIPS} gratuitous-ARP addresses were tried "
            f"({inference.ignored} more ignored): pass --vip",
        )


def decode_proto_240(time: float, packet: bytes, _ctx: DecodeContext) -> list[dict[str, Any]]:
    """A pfsync-style state sync frame: header fields plus one summary per section."""
    summary = describe_frame(packet)
    record: dict[str, Any] = {
        "time": time,
        "kind": "pfsync",
        "type": "pfsync",
        "src": str(IPv4Address(packet[12:16])),
        "dst": str(IPv4Address(packet[16:20])),
        "ttl": packet[8],
        **{k: v for k, v in summary.items() if k != "protocol"},
    }
    return [record]


def decode_proto_17(time: float, packet: bytes, _ctx: DecodeContext) -> list[dict[str, Any]]:
    """UDP: DHCP on ports 67/68 (BOOTP server/client), other ports are not listed."""
    ip = parse_ipv4(packet)
    if ip.fragment or len(ip.payload) < 8:
        return []
    sport = int.from_bytes(ip.payload[0:2], "big")
    dport = int.from_bytes(ip.payload[2:4], "big")
    if sport not in DHCP_PORTS and dport not in DHCP_PORTS:
        return []
    ulen = int.from_bytes(ip.payload[4:6], "big")
    body = ip.payload[8:ulen] if 8 <= ulen <= len(ip.payload) else ip.payload[8:]
    where = {"src": str(ip.src), "dst": str(ip.dst), "sport": sport, "dport": dport}
    try:
        msg = dhcp_codec.decode(body)
    except DecodeError as exc:
        return [
            {
                "time": time,
                "kind": "dhcp",
                "type": "invalid",
                **where,
                "reason": exc.reason,
                "detail": exc.detail,
            }
        ]
    record: dict[str, Any] = {"time": time, **where, **describe_dhcp(msg)}
    # Always present, so a filter on router/dns needs no existence test.
    record.setdefault("router", [])
    record.setdefault("dns", [])
    return [record]


def decode_proto_6(time: float, packet: bytes, ctx: DecodeContext) -> list[dict[str, Any]]:
    """TCP: DHCP failover on 519/520/647, reassembled per direction into messages."""
    ip = parse_ipv4(packet)
    if ip.fragment:
        return []
    seg = parse_tcp(ip.payload)
    if not ctx.failover.wants(seg):
        return []
    return ctx.failover.segment(time, ip, seg)


DECODERS: dict[int, Decoder] = {
    IPPROTO_CARP: decode_proto_112,
    IPPROTO_PFSYNC: decode_proto_240,
    IPPROTO_UDP: decode_proto_17,
    IPPROTO_TCP: decode_proto_6,
}
"""IP protocol number -> decoder."""


def _l3(frames: Iterator[Any]) -> Iterator[tuple[float, int, bytes]]:
    for frame in frames:
        payload = network_payload(frame)
        if payload is not None:
            yield frame.time, payload[0], payload[1]


def _collect_garps(source: BinaryIO, inference: VipInference) -> None:
    for _, etype, data in _l3(read_frames(source)):
        if etype == ETHERTYPE_ARP:
            garp = gratuitous_arp_ip(data)
            if garp is not None:
                inference.add(IPv4Address(garp))


def _parse_vips(vips: Sequence[str]) -> list[IPv4Address | IPv6Address]:
    parsed: list[IPv4Address | IPv6Address] = []
    for text in vips:
        try:
            parsed.append(ip_address(text))
        except ValueError as exc:
            raise ConfigError("--vip", f"not an IP address: {text!r}") from exc
    return parsed


def _prepare(
    source: BinaryIO, password: bytes | None, vips: list[IPv4Address | IPv6Address]
) -> DecodeContext:
    ctx = DecodeContext(password, vips)
    if password is not None and not vips:
        # The VIPs may be announced after the first advert: a first pass collects them.
        ctx.inference = VipInference(password)
        _collect_garps(source, ctx.inference)
        source.seek(0)
    return ctx


def iter_capture(
    path: Path, *, password: bytes | None = None, vips: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """Every packet of a known protocol in the capture, as JSON-ready dicts, as it is read.

    The arguments are checked and the file opened (and, to infer VIPs, read once for its
    gratuitous ARPs) before this returns, so those errors come before any output.
    """
    parsed = _parse_vips(vips)
    source = open_capture(path)
    try:
        ctx = _prepare(source, password, parsed)
    except BaseException:
        source.close()
        raise
    return _records(source, ctx)


def decode_stream(
    source: BinaryIO, *, password: bytes | None = None, vips: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The records of a capture already open (seekable), e.g. an `io.BytesIO` (fuzzing)."""
    return list(_records(source, _prepare(source, password, _parse_vips(vips))))


def _records(source: BinaryIO, ctx: DecodeContext) -> Iterator[dict[str, Any]]:
    time = 0.0
    with source:
        for time, etype, data in _l3(read_frames(source)):
            if etype != ETHERTYPE_IPV4:
                continue
            try:
                proto = ip_protocol(data)
            except DecodeError:
                continue
            decoder = DECODERS.get(proto)
            if decoder is None:
                continue
            try:
                records = decoder(time, data, ctx)
            except DecodeError:
                continue  # a header that does not hold together: not a packet we list
            yield from records
    # Bytes still held behind a hole in a TCP stream: framed now, after the loss is marked.
    yield from ctx.failover.finish(time)


def decode_capture(
    path: Path, *, password: bytes | None = None, vips: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """`iter_capture` as a list (tests and small captures)."""
    return list(iter_capture(path, password=password, vips=vips))


def _yes_no(value: object) -> str:
    return "-" if value is None else ("ok" if value else "BAD")


def _pfsync_summary(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"invalid pfsync frame: {record['error']} {record.get('detail', '')}"
    parts = [f"{sec['action']} x{sec['count']}" for sec in record["sections"]]
    return f"pfsync v{record['version']} {record['length']} bytes: " + ", ".join(parts)


_UNSET = str(IPv4Address(0))


def _dhcp_summary(r: dict[str, Any]) -> str:
    if r["type"] == "invalid":
        return f"invalid DHCP message: {r['reason']} {r.get('detail', '')}"
    parts = [f"{r['type']:<8} xid 0x{r['xid']:08x} chaddr {r['chaddr']}"]
    for key in ("ciaddr", "yiaddr"):
        if r.get(key, _UNSET) != _UNSET:
            parts.append(f"{key} {r[key]}")
    for key in ("requested", "server_id", "lease_time", "hostname"):
        if key in r:
            parts.append(f"{key} {r[key]}")
    for key in ("router", "dns"):
        if r.get(key):
            parts.append(f"{key} {','.join(r[key])}")
    if r.get("malformed"):
        parts.append("malformed " + ",".join(r["malformed"]))
    return " ".join(parts)


def _failover_summary(r: dict[str, Any]) -> str:
    if r["kind"] == "dhcp-failover-stream":
        return f"stream {r['type']}: {r['reason']} {r.get('detail', '')}".rstrip()
    keys = ("server_state", "assigned_ip", "binding_status", "reject_reason", "message")
    extra = " ".join(f"{k}={r[k]}" for k in keys if r.get(k) is not None)
    return f"{r['type']} xid {r['xid']:#x} {extra}".rstrip()


TABLE_HEADER = (
    f"{'TIME':<17} {'TYPE':<5} {'SRC':<15} {'DST':<15} {'TTL':>3} {'VHID':>4} "
    f"{'BASE':>4} {'SKEW':>4} {'DEM':>3} {'INTERVAL':>9} {'COUNTER':<16} {'CSUM':<4} "
    f"{'HMAC':<4} NOTE"
)


def render_line(r: dict[str, Any]) -> str:
    """One human-readable line per record (CARP columns first; other kinds say their own)."""
    kind = r["kind"]
    if kind == "carp":
        return (
            f"{r['time']:<17.6f} {kind:<5} {r['src']:<15} {r['dst']:<15} {r['ttl']:>3} "
            f"{r['vhid']:>4} {r['advbase']:>4} {r['advskew']:>4} {r['demote']:>3} "
            f"{r['interval_s']:>8.4f}s {r['counter']:<16} {_yes_no(r['checksum_ok']):<4} "
            f"{_yes_no(r['hmac_ok']):<4} "
            f"{'bow-out ' if r['bow_out'] else ''}{r.get('note', '')}"
        )
    if kind == "vrrp":
        return (
            f"{r['time']:<17.6f} {kind:<5} {r['src']:<15} {r['dst']:<15} {r['ttl']:>3} "
            f"{r['vrid']:>4} VRRPv{r['version']} priority {r['priority']} "
            f"interval {r['interval_s']}s addresses {','.join(r['addresses'])}"
        )
    if kind == "pfsync":
        return (
            f"{r['time']:<17.6f} {kind:<6}{r['src']:<15} {r['dst']:<15} {r['ttl']:>3} "
            + _pfsync_summary(r)
        )
    if kind == "dhcp":
        return f"{r['time']:<17.6f} {kind:<5} {r['src']:<15} {r['dst']:<15}     " + (
            _dhcp_summary(r)
        )
    if kind.startswith("dhcp-failover"):
        return (
            f"{r['time']:<17.6f} {'dhcpfo':<6}{r['src'] + ':' + str(r['sport']):<21} "
            f"{r['dst'] + ':' + str(r['dport']):<21} " + _failover_summary(r)
        )
    return f"{r['time']:<17.6f} {kind:<5} {r['reason']}: {r.get('detail', '')}"


def render_table(records: list[dict[str, Any]]) -> str:
    return "\n".join([TABLE_HEADER, *(render_line(r) for r in records)])


def dissector_path() -> Path:
    """The Wireshark Lua dissector shipped inside the installed package (package data)."""
    return Path(str(resources.files("carpsim") / "dissectors" / "pfsync.lua"))


def run(args: argparse.Namespace) -> int:
    if args.dissector_path:
        print(dissector_path())
        return 0
    if args.file is None:
        raise ConfigError("file", "a capture file is required (or --dissector-path)")
    password = args.password.encode() if args.password is not None else None
    records = iter_capture(Path(args.file), password=password, vips=args.vip)
    if not args.json:
        print(TABLE_HEADER, flush=True)
    # Each record is printed as it is decoded: memory does not grow with the capture.
    try:
        for record in records:
            print(json.dumps(record, sort_keys=True) if args.json else render_line(record))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (| head) has what it wanted; stop quietly, and keep Python's exit-time
        # flush of the dead pipe from printing a second error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "decode",
        help="decode CARP adverts (VRRP shown as such), pfsync frames and DHCP in a capture",
    )
    p.add_argument(
        "file",
        nargs="?",
        help="capture file (a regular pcap or pcapng file; Ethernet, Linux cooked or raw IP)",
    )
    p.add_argument("--password", help="CARP password, to verify the HMAC")
    p.add_argument(
        "--vip",
        action="append",
        default=[],
        metavar="ADDR",
        help="virtual IP in the HMAC (repeatable); default: inferred from gratuitous ARPs",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--dissector-path",
        action="store_true",
        help="print where the pfsync Lua dissector is installed (tshark -X lua_script:PATH)",
    )
    p.set_defaults(func=run)
