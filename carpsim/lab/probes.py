"""Measurement probes for lab scenarios and benchmarks: an ICMP prober and an advert capture.

Both run as background threads of the calling process but open their sockets inside a named
network namespace (a socket keeps the namespace it was created in), so a harness in the host
namespace can watch a lab without sending anything from the host namespace itself.

Every timestamp is CLOCK_REALTIME in float seconds, the clock of ``time.time()``: replies and
captured frames carry the kernel's receive timestamp (SO_TIMESTAMPNS), so the Python scheduler's
jitter does not enter the measured gaps, and prober and capture results can be compared directly.

API (all names below are public):

- ``IcmpProber(netns, target, interval=0.01)``: ``start()``, ``stop() -> list[ProbeRecord]``,
  ``records()`` (snapshot), usable as a context manager. One echo request every `interval`
  seconds on an absolute schedule; per probe the send time and the reply time (or None).
- ``reply_gaps(records, start=None, end=None, min_gap=0.0) -> list[Gap]``: intervals with no reply,
  between consecutive replies ordered by arrival; ``longest_gap(...) -> Gap | None``.
- ``AdvertCapture(netns, ifnames, ingress_only=True)``: ``start()``, ``stop()``, ``adverts()``,
  ``wait_for(predicate, timeout) -> Advert | None``. Captures IP protocol 112 (CARP and VRRP
  v2/v3) on the given interfaces with AF_PACKET and decodes them with the CARP codec into the
  fields that matter for timing (``Advert``).
- ``cpu_seconds(pid)``: user+system CPU time of a process from /proc/PID/stat.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from carpsim.cli.describe import describe_vrrp
from carpsim.errors import DecodeError
from carpsim.net.netns import enter_netns
from carpsim.protocol.codec import decode_packet
from carpsim.protocol.constants import IPPROTO_CARP
from carpsim.wire.checksum import internet_checksum

_SO_TIMESTAMPNS = 35
_SO_ATTACH_FILTER = 26
_ETH_P_IP = 0x0800
_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
_ICMP_ECHO_REPLY = 0
_ICMP_ECHO_REQUEST = 8
_ANCILLARY_SPACE = socket.CMSG_SPACE(16)


def _kernel_stamp(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", bytes(data[:16]))
            return float(sec) + float(nsec) / 1e9
    return None


# ------------------------------------------------------------------------------------------------
# ICMP prober


@dataclass(frozen=True)
class ProbeRecord:
    """One echo request: when it left, and when its reply arrived (None: lost or still pending)."""

    seq: int
    sent_at: float
    replied_at: float | None


@dataclass(frozen=True)
class Gap:
    """A stretch with no echo reply: from the reply before it to the reply that ended it."""

    start: float
    end: float
    lost: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    checksum = internet_checksum(header + payload)
    return struct.pack("!BBHHH", _ICMP_ECHO_REQUEST, 0, checksum, ident, seq) + payload


class IcmpProber:
    """Sends an ICMP echo request every `interval` seconds to `target` from namespace `netns`.

    Probes go out on an absolute schedule (start + k * interval); when the sender falls behind it
    skips the missed slots rather than bursting, so every probe is a fair sample of its instant.
    The 16-bit sequence number wraps; the prober matches replies by (ident, seq) among the
    probes of the last 65536 slots, which at 10 ms is more than ten minutes of history.
    """

    def __init__(
        self,
        netns: str | None,
        target: str,
        interval: float = 0.01,
        *,
        ident: int | None = None,
        payload_size: int = 16,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.netns = netns
        self.target = target
        self.interval = interval
        self.ident = ident if ident is not None else (os.getpid() ^ id(self)) & 0xFFFF
        self._payload = bytes(range(payload_size % 256))
        self._sent: list[float] = []
        self._replied: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None

    def start(self) -> None:
        with enter_netns(self.netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        self._sock = sock
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._receive, name="icmp-rx", daemon=True),
            threading.Thread(target=self._send, name="icmp-tx", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> list[ProbeRecord]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._threads = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        return self.records()

    def records(self) -> list[ProbeRecord]:
        with self._lock:
            sent = list(self._sent)
            replied = dict(self._replied)
        return [ProbeRecord(i, at, replied.get(i)) for i, at in enumerate(sent)]

    def __enter__(self) -> IcmpProber:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _send(self) -> None:
        sock = self._sock
        assert sock is not None
        origin = time.time()
        slot = 0
        while not self._stop.is_set():
            due = origin + slot * self.interval
            delay = due - time.time()
            if delay > 0 and self._stop.wait(delay):
                break
            with self._lock:
                index = len(self._sent)
                self._sent.append(time.time())
            with contextlib.suppress(OSError):  # unreachable neighbour: it counts as lost
                sock.sendto(
                    _echo_request(self.ident, index & 0xFFFF, self._payload), (self.target, 0)
                )
            # Skip the slots we are already late for instead of sending a burst.
            slot = max(slot + 1, int((time.time() - origin) / self.interval) + 1)

    def _receive(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.05)
            if not ready:
                continue
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(2048, _ANCILLARY_SPACE)
            except (BlockingIOError, InterruptedError):
                continue
            at = _kernel_stamp(ancdata) or time.time()
            self._match(data, at)

    def _match(self, data: bytes, at: float) -> None:
        if len(data) < 20:
            return
        ihl = (data[0] & 0x0F) * 4
        if len(data) < ihl + 8:
            return
        kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", data, ihl)
        if kind != _ICMP_ECHO_REPLY or ident != self.ident:
            return
        with self._lock:
            newest = len(self._sent) - 1
            if newest < 0:
                return
            # The most recent probe carrying this 16-bit sequence number.
            index = newest - ((newest - seq) & 0xFFFF)
            if index >= 0 and index not in self._replied:
                self._replied[index] = at


def reply_gaps(
    records: Sequence[ProbeRecord],
    start: float | None = None,
    end: float | None = None,
    min_gap: float = 0.0,
) -> list[Gap]:
    """Stretches without replies, measured between consecutive reply arrivals.

    Only replies to probes sent within [start, end] count. `lost` is the number of probes sent
    inside the stretch that never got a reply. Gaps shorter than `min_gap` are left out.
    """
    window = [
        r
        for r in records
        if (start is None or r.sent_at >= start) and (end is None or r.sent_at <= end)
    ]
    answered = sorted(r.replied_at for r in window if r.replied_at is not None)
    gaps: list[Gap] = []
    for before, after in itertools.pairwise(answered):
        if after - before < min_gap:
            continue
        lost = sum(1 for r in window if r.replied_at is None and before <= r.sent_at < after)
        gaps.append(Gap(before, after, lost))
    return gaps


def longest_gap(
    records: Sequence[ProbeRecord], start: float | None = None, end: float | None = None
) -> Gap | None:
    """The longest stretch without a reply within the window, or None with fewer than 2 replies."""
    gaps = reply_gaps(records, start, end)
    return max(gaps, key=lambda g: g.duration) if gaps else None


# ------------------------------------------------------------------------------------------------
# Advert capture


@dataclass(frozen=True)
class Advert:
    """One CARP or VRRP advertisement seen on the wire.

    `kind` is ``carp``, ``vrrp2`` or ``vrrp3`` (CARP and VRRPv2 share version 2 and type 1; a
    CARP header is 36 bytes with authlen 7). `interval` is the advertised interval in seconds:
    advbase + advskew/256 for CARP (1/256 when both are 0), adver_int for VRRP.
    """

    at: float
    ifname: str
    src_mac: str
    src_ip: str
    dst_ip: str
    kind: str
    vhid: int
    advbase: int | None = None
    advskew: int | None = None
    priority: int | None = None
    interval: float = 0.0


def decode_advert(frame: bytes, at: float, ifname: str) -> Advert | None:
    """Decode an Ethernet frame carrying IPv4 protocol 112; None for anything else.

    A capture shows what is on the wire, so the TTL and the CARP checksum are not enforced
    (a rewritten TTL or a bad sum is still an advert that was sent).
    """
    if len(frame) < 14 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    src_mac = frame[6:12].hex(":")
    try:
        pkt = decode_packet(ip, check_ttl=False, check_sum=False)
    except DecodeError:
        vrrp = describe_vrrp(ip)
        if vrrp is None:
            return None
        return Advert(
            at,
            ifname,
            src_mac,
            vrrp["src"],
            vrrp["dst"],
            f"vrrp{vrrp['version']}",
            vrrp["vrid"],
            priority=vrrp["priority"],
            interval=vrrp["interval_s"],
        )
    adv = pkt.advert
    return Advert(
        at,
        ifname,
        src_mac,
        str(pkt.src),
        str(pkt.dst),
        "carp",
        adv.vhid,
        advbase=adv.advbase,
        advskew=adv.advskew,
        interval=adv.interval,
    )


def _proto_filter() -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """A classic BPF program keeping only IPv4 protocol 112 in untagged Ethernet frames."""
    program = [
        (0x28, 0, 0, 12),  # ldh [12]      ethertype
        (0x15, 0, 3, _ETH_P_IP),  # jeq #0x800    else drop
        (0x30, 0, 0, 23),  # ldb [23]      IPv4 protocol
        (0x15, 0, 1, IPPROTO_CARP),  # jeq #112      else drop
        (0x06, 0, 0, 0xFFFF),  # ret #65535    accept
        (0x06, 0, 0, 0),  # ret #0        drop
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(code))
    return fprog, code  # the buffer must outlive the setsockopt call


class AdvertCapture:
    """Captures CARP/VRRP adverts on interfaces of one namespace, with kernel timestamps.

    With `ingress_only` (the default), frames the interface transmits are ignored, so binding to
    a bridge port shows exactly what the node behind that port sent.
    """

    def __init__(
        self, netns: str | None, ifnames: Sequence[str], *, ingress_only: bool = True
    ) -> None:
        self.netns = netns
        self.ifnames = list(ifnames)
        self.ingress_only = ingress_only
        self._adverts: list[Advert] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socks: dict[int, tuple[socket.socket, str]] = {}

    def start(self) -> None:
        fprog, _keep = _proto_filter()
        with enter_netns(self.netns):
            for name in self.ifnames:
                # ETH_P_ALL, not ETH_P_IP: on a bridge port only the "all" taps see a frame
                # before the bridge's rx handler consumes it.
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                sock.bind((name, _ETH_P_ALL))
                sock.setblocking(False)
                self._socks[sock.fileno()] = (sock, name)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="advert-capture", daemon=True)
        self._thread.start()

    def stop(self) -> list[Advert]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for sock, _name in self._socks.values():
            sock.close()
        self._socks = {}
        return self.adverts()

    def adverts(self) -> list[Advert]:
        with self._cond:
            return list(self._adverts)

    def wait_for(self, predicate: Callable[[Advert], bool], timeout: float) -> Advert | None:
        """The first advert (already captured or arriving within `timeout`) matching `predicate`."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for adv in self._adverts[seen:]:
                    if predicate(adv):
                        return adv
                seen = len(self._adverts)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def __enter__(self) -> AdvertCapture:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        socks = [s for s, _ in self._socks.values()]
        while not self._stop.is_set():
            ready, _, _ = select.select(socks, [], [], 0.05)
            for sock in ready:
                try:
                    frame, ancdata, _flags, addr = sock.recvmsg(2048, _ANCILLARY_SPACE)
                except (BlockingIOError, InterruptedError):
                    continue
                if self.ingress_only and addr[2] == _PACKET_OUTGOING:
                    continue
                at = _kernel_stamp(ancdata) or time.time()
                adv = decode_advert(frame, at, self._socks[sock.fileno()][1])
                if adv is not None:
                    with self._cond:
                        self._adverts.append(adv)
                        self._cond.notify_all()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time consumed so far by process `pid` (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name may contain spaces and parentheses: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")
