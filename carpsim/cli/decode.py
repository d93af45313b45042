"""``carpsim decode FILE``: one line per CARP advert in a pcap/pcapng capture.

Checksums are always verified. The HMAC needs the password and the VHID's address list; the
addresses come from ``--vip`` or, failing that, from gratuitous ARPs in the same capture
(sender IP == target IP), which is what a new master sends for its VIP. VRRP packets on
protocol 112 are reported as VRRP, not as errors. Decoders are looked up by IP protocol in
`DECODERS`, so another protocol (pfsync, 240) is one entry away.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

from carpsim.cli.describe import describe_frame, describe_vrrp
from carpsim.dhcp.failover.stream import FailoverStreams
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

IPPROTO_TCP = 6


@dataclass
class DecodeContext:
    password: bytes | None
    vips: list[IPv4Address | IPv6Address]
    inferred_vips: list[IPv4Address] = field(default_factory=list)
    _auth: dict[tuple[int, tuple[str, ...]], CarpAuth] = field(default_factory=dict)

    def auth(self, vhid: int, vips: Sequence[IPv4Address | IPv6Address]) -> CarpAuth:
        assert self.password is not None
        key = (vhid, tuple(str(v) for v in vips))
        if key not in self._auth:
            self._auth[key] = CarpAuth(self.password, vhid, vips)
        return self._auth[key]


Decoder = Callable[[float, bytes, DecodeContext], dict[str, Any] | None]


def decode_proto_112(time: float, packet: bytes, ctx: DecodeContext) -> dict[str, Any] | None:
    """CARP advert, or VRRP sharing the protocol number, or an invalid packet with its reason."""
    vrrp = describe_vrrp(packet)
    if vrrp is not None:
        return {"time": time, **vrrp}
    try:
        pkt = decode_packet(packet, check_ttl=False, check_sum=False)
    except DecodeError as exc:
        return {"time": time, "type": "invalid", "reason": exc.reason, "detail": exc.detail}
    adv = pkt.advert
    record: dict[str, Any] = {
        "time": time,
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
        record["note"] = "ttl != 255: BSD and ucarp drop this (badttl)"
    _check_hmac(record, adv.vhid, adv.counter, adv.md, ctx)
    return record


def _check_hmac(
    record: dict[str, Any], vhid: int, counter: bytes, md: bytes, ctx: DecodeContext
) -> None:
    if ctx.password is None:
        return
    if ctx.vips:
        record["hmac_ok"] = ctx.auth(vhid, ctx.vips).verify(counter, md)
        return
    if not ctx.inferred_vips:
        record["note"] = "no VIP given and no gratuitous ARP in the capture: pass --vip"
        return
    # Try the whole GARP'd set (a multi-VIP vhid), then each address alone.
    candidates: list[list[IPv4Address]] = [ctx.inferred_vips]
    if len(ctx.inferred_vips) > 1:
        candidates += [[v] for v in ctx.inferred_vips]
    for vips in candidates:
        if ctx.auth(vhid, vips).verify(counter, md):
            record["hmac_ok"] = True
            record["vips_inferred"] = [str(v) for v in vips]
            return
    record["hmac_ok"] = False
    record["vips_inferred"] = [str(v) for v in ctx.inferred_vips]


def decode_proto_240(time: float, packet: bytes, _ctx: DecodeContext) -> dict[str, Any]:
    """A pfsync-style state sync frame: header fields plus one summary per section."""
    summary = describe_frame(packet)
    record: dict[str, Any] = {
        "time": time,
        "type": "pfsync",
        "src": str(IPv4Address(packet[12:16])),
        "dst": str(IPv4Address(packet[16:20])),
        "ttl": packet[8],
        **{k: v for k, v in summary.items() if k != "protocol"},
    }
    return record


DECODERS: dict[int, Decoder] = {IPPROTO_CARP: decode_proto_112, IPPROTO_PFSYNC: decode_proto_240}
"""IP protocol number -> decoder."""


def _infer_vips(ctx: DecodeContext, l3: Sequence[tuple[float, tuple[int, bytes] | None]]) -> None:
    for _, payload in l3:
        if payload and payload[0] == ETHERTYPE_ARP:
            garp = gratuitous_arp_ip(payload[1])
            if garp is not None and IPv4Address(garp) not in ctx.inferred_vips:
                ctx.inferred_vips.append(IPv4Address(garp))


def decode_capture(
    path: Path, *, password: bytes | None = None, vips: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Every packet of a known protocol in the capture, as JSON-ready dicts."""
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise PcapError(f"cannot read {path}: {exc.strerror or exc}") from exc
    parsed_vips: list[IPv4Address | IPv6Address] = []
    for text in vips:
        try:
            parsed_vips.append(ip_address(text))
        except ValueError as exc:
            raise ConfigError("--vip", f"not an IP address: {text!r}") from exc
    frames = list(read_frames(blob))
    l3 = [(f.time, network_payload(f)) for f in frames]
    ctx = DecodeContext(password, parsed_vips)
    _infer_vips(ctx, l3)
    records: list[dict[str, Any]] = []
    failover = FailoverStreams()  # TCP: DHCP failover, reassembled per connection
    for time, payload in l3:
        if not payload or payload[0] != ETHERTYPE_IPV4:
            continue
        try:
            proto = ip_protocol(payload[1])
        except DecodeError:
            continue
        if proto == IPPROTO_TCP:
            records.extend(failover.packet(time, payload[1]))
            continue
        decoder = DECODERS.get(proto)
        if decoder is not None:
            record = decoder(time, payload[1], ctx)
            if record is not None:
                records.append(record)
    return records


def _yes_no(value: object) -> str:
    return "-" if value is None else ("ok" if value else "BAD")


def _pfsync_summary(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"invalid pfsync frame: {record['error']} {record.get('detail', '')}"
    parts = [f"{sec['action']} x{sec['count']}" for sec in record["sections"]]
    return f"pfsync v{record['version']} {record['length']} bytes: " + ", ".join(parts)


def _fo_summary(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"invalid failover stream: {record['error']} {record.get('detail', '')}"
    keys = ("server_state", "assigned_ip", "binding_status", "reject_reason")
    extra = " ".join(f"{k}={record[k]}" for k in keys if k in record)
    return f"{record['type']} xid {record['xid']:#x} {extra}".rstrip()


def render_table(records: list[dict[str, Any]]) -> str:
    header = (
        f"{'TIME':<17} {'TYPE':<5} {'SRC':<15} {'DST':<15} {'TTL':>3} {'VHID':>4} "
        f"{'BASE':>4} {'SKEW':>4} {'DEM':>3} {'INTERVAL':>9} {'COUNTER':<16} {'CSUM':<4} "
        f"{'HMAC':<4} NOTE"
    )
    lines = [header]
    for r in records:
        if r.get("kind") == "dhcp-failover":
            lines.append(
                f"{r['time']:<17.6f} {'dhcpfo':<6}{r['src']} > {r['dst']} " + _fo_summary(r)
            )
            continue
        kind = r["type"]
        if kind == "carp":
            lines.append(
                f"{r['time']:<17.6f} {kind:<5} {r['src']:<15} {r['dst']:<15} {r['ttl']:>3} "
                f"{r['vhid']:>4} {r['advbase']:>4} {r['advskew']:>4} {r['demote']:>3} "
                f"{r['interval_s']:>8.4f}s {r['counter']:<16} {_yes_no(r['checksum_ok']):<4} "
                f"{_yes_no(r['hmac_ok']):<4} "
                f"{'bow-out ' if r['bow_out'] else ''}{r.get('note', '')}"
            )
        elif kind == "vrrp":
            lines.append(
                f"{r['time']:<17.6f} {kind:<5} {r['src']:<15} {r['dst']:<15} {r['ttl']:>3} "
                f"{r['vrid']:>4} VRRPv{r['version']} priority {r['priority']} "
                f"interval {r['interval_s']}s addresses {','.join(r['addresses'])}"
            )
        elif kind == "pfsync":
            lines.append(
                f"{r['time']:<17.6f} {kind:<6}{r['src']:<15} {r['dst']:<15} {r['ttl']:>3} "
                + _pfsync_summary(r)
            )
        else:
            lines.append(f"{r['time']:<17.6f} {kind:<5} {r['reason']}: {r.get('detail', '')}")
    return "\n".join(lines)


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
    records = decode_capture(Path(args.file), password=password, vips=args.vip)
    if args.json:
        for record in records:
            print(json.dumps(record, sort_keys=True))
    else:
        print(render_table(records))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "decode", help="decode CARP adverts (VRRP shown as such) and pfsync frames in a capture"
    )
    p.add_argument(
        "file", nargs="?", help="capture file (pcap or pcapng; Ethernet or Linux cooked)"
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
