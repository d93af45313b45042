"""The impairment relay: a host's switch port and its bridge, joined through the sim's model.

    python -m carpsim.lab.impair_relay run SPEC.json      (inside the switch namespace)
    python -m carpsim.lab.impair_relay offload-off IF...  (inside a host namespace)

`carpsim.lab.impair` detaches the host's switch-side veth (OUTER) from its bridge and plugs a
fresh veth (INNER, its peer on the bridge) in its place; this process reads every frame on one
with AF_PACKET and writes it on the other after the `ImpairQueue` of that direction decided
its fate: "in" is host -> segment, "out" is segment -> host. Each direction has its own
generator seeded from the spec, so a run's decisions depend only on the seed and the frames.

AF_PACKET hands over what the sender's driver got: with segmentation or checksum offload a
64 KB TCP super-frame or a frame with a half-done checksum, which cannot be sent again as is.
So every host on an impaired segment has its transmit offloads turned off (`offload-off`):
the kernel then segments and checksums in software before the frame reaches the veth.
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import selectors
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyroute2.ethtool import Ethtool

from carpsim.sim.impair_queue import DEFAULT_MAX_BYTES, ImpairQueue
from carpsim.sim.link import Impairment

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 65535
STATS_INTERVAL = 1.0
DIRECTIONS = ("in", "out")
OFFLOADS = (
    "tx-checksum-ip-generic",
    "tx-checksum-ipv4",
    "tx-checksum-ipv6",
    "tx-scatter-gather",
    "tx-generic-segmentation",
    "tx-tcp-segmentation",
    "tx-tcp6-segmentation",
    "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation",
    "tx-udp-segmentation",
    "tx-gso-list",
    "rx-gro",
)


def direction_rng(seed: int, direction: str) -> random.Random:
    """The generator of one direction: reproducible, and independent of the other's traffic."""
    # Seeded impairment draws, not security.
    return random.Random(seed * 2 + DIRECTIONS.index(direction))  # noqa: S311


def impairment_of(spec: dict[str, Any]) -> Impairment:
    return Impairment(
        loss=float(spec.get("loss", 0.0)),
        delay=float(spec.get("delay", 0.0)),
        jitter=float(spec.get("jitter", 0.0)),
        duplicate=float(spec.get("duplicate", 0.0)),
        reorder=float(spec.get("reorder", 0.0)),
        reorder_delay=float(spec.get("reorder_delay", 0.02)),
    )


class Relay:
    """Both directions of one port; `spec` as `carpsim.lab.impair` writes it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.outer = str(spec["outer"])
        self.inner = str(spec["inner"])
        impaired = set(spec.get("directions", DIRECTIONS))
        seed = int(spec.get("seed", 0))
        max_bytes = int(spec.get("max_bytes", DEFAULT_MAX_BYTES))
        model = impairment_of(spec)
        self.queues = {
            d: ImpairQueue(
                model if d in impaired else Impairment(),
                direction_rng(seed, d),
                max_bytes=max_bytes,
            )
            for d in DIRECTIONS
        }
        self.send_errors: Counter[str] = Counter()
        self.recv_errors: Counter[str] = Counter()
        self.stats_path = Path(spec["stats"]) if spec.get("stats") else None
        self.running = True
        self.started = time.time()

    def _open(self, ifname: str) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((ifname, 0))
        sock.setblocking(False)
        return sock

    def run(self) -> None:
        socks = {"in": self._open(self.outer), "out": self._open(self.inner)}
        # Frames read on OUTER go out on INNER ("in") and the other way round.
        dest = {"in": socks["out"], "out": socks["in"]}
        sel = selectors.DefaultSelector()
        for direction, sock in socks.items():
            sel.register(sock, selectors.EVENT_READ, direction)
        next_stats = time.monotonic()
        try:
            while self.running:
                now = time.monotonic()
                due = [t for q in self.queues.values() if (t := q.next_time()) is not None]
                wait = max(0.0, min([*due, next_stats]) - now)
                for key, _ in sel.select(timeout=wait):
                    self._drain(key.fileobj, key.data)  # type: ignore[arg-type]
                now = time.monotonic()
                for direction, queue in self.queues.items():
                    for frame in queue.pop_due(now):
                        self._send(dest[direction], frame)
                if now >= next_stats:
                    self.write_stats()
                    next_stats = now + STATS_INTERVAL
        finally:
            self.write_stats()
            for sock in socks.values():
                sock.close()

    def _drain(self, sock: socket.socket, direction: str) -> None:
        queue = self.queues[direction]
        for _ in range(256):
            try:
                frame, addr = sock.recvfrom(MAX_FRAME)
            except BlockingIOError:
                return
            except OSError as exc:
                # A port taken down (lab kill) reports ENETDOWN once; the socket stays bound.
                self.recv_errors[errno.errorcode.get(exc.errno or 0, "EUNKNOWN")] += 1
                return
            # Our own transmissions on this port come back as PACKET_OUTGOING: not traffic.
            if addr[2] == PACKET_OUTGOING:
                continue
            queue.offer(time.monotonic(), frame)

    def _send(self, sock: socket.socket, frame: bytes) -> None:
        try:
            sock.send(frame)
        except OSError as exc:
            self.send_errors[errno.errorcode.get(exc.errno or 0, "EUNKNOWN")] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "outer": self.outer,
            "inner": self.inner,
            "started": self.started,
            "updated": time.time(),
            "directions": {
                d: {**asdict(q.counters), "held": len(q), "held_bytes": q.held_bytes}
                for d, q in self.queues.items()
            },
            "send_errors": dict(self.send_errors),
            "recv_errors": dict(self.recv_errors),
        }

    def write_stats(self) -> None:
        if self.stats_path is None:
            return
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats(), sort_keys=True) + "\n")
        tmp.replace(self.stats_path)

    def stop(self, *_: object) -> None:
        self.running = False


def offload_off(ifnames: list[str]) -> None:
    """Turn off transmit offloads (see the module doc) on interfaces of this namespace."""
    tool = Ethtool()
    try:
        for ifname in ifnames:
            features = tool.get_features(ifname)
            for name in OFFLOADS:
                if name in features.features:
                    features.features[name].enable = False
            tool.set_features(ifname, features)
    finally:
        tool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carpsim.lab.impair_relay")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("spec", type=Path)
    p = sub.add_parser("offload-off")
    p.add_argument("ifnames", nargs="+")
    args = parser.parse_args(argv)
    if args.cmd == "offload-off":
        offload_off(args.ifnames)
        return 0
    relay = Relay(json.loads(args.spec.read_text()))
    signal.signal(signal.SIGTERM, relay.stop)
    signal.signal(signal.SIGINT, relay.stop)
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
