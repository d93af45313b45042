"""Pure CARP micro-benchmarks: encode+HMAC, decode+verify, simulated two-node failovers.

Run as a script (prints a table) or call `run()` for a dict of rates per second.
Targets on the 2-core CI machine: >= 100k/s, >= 100k/s, >= 500/s.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address, ip_address

from carpsim.protocol.codec import (
    CarpAuth,
    build_advert,
    compute_hmac,
    decode_packet,
    encode_packet,
)
from carpsim.sim.scenarios import two_node_failover

PASSWORD = b"K33p_It_S3cr3t!"
VIP = ip_address("192.168.110.254")
SRC = IPv4Address("192.168.110.251")
DST = IPv4Address("224.0.0.18")

TARGETS = {"encode_hmac_per_s": 100_000, "decode_verify_per_s": 100_000, "failovers_per_s": 500}


def _rate(fn: Callable[[int], None], n: int, repeats: int = 3) -> float:
    """Best-of-`repeats` rate; the best run is the least disturbed by the other tenants."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - start)
    return n / best


def bench_encode(n: int) -> None:
    """A fresh counter per packet (the worst case; our machine signs its cookie once)."""
    auth = CarpAuth(PASSWORD, 1, [VIP])
    rng = random.Random(1)
    for i in range(n):
        counter = rng.getrandbits(64).to_bytes(8, "big")
        body = build_advert(
            vhid=1, advbase=1, advskew=0, demote=0, counter=counter, md=auth.sign(counter)
        )
        encode_packet(src=SRC, dst=DST, ip_id=i & 0xFFFF, advert_bytes=body)


def _sample_packets(count: int) -> list[bytes]:
    rng = random.Random(2)
    packets = []
    for i in range(count):
        counter = rng.getrandbits(64).to_bytes(8, "big")
        md = compute_hmac(PASSWORD, 1, [VIP], counter)
        body = build_advert(vhid=1, advbase=1, advskew=100, demote=0, counter=counter, md=md)
        packets.append(encode_packet(src=SRC, dst=DST, ip_id=i, advert_bytes=body))
    return packets


_PACKETS = _sample_packets(1024)


def bench_decode(n: int) -> None:
    auth = CarpAuth(PASSWORD, 1, [VIP])
    packets = _PACKETS
    for i in range(n):
        pkt = decode_packet(packets[i & 1023])
        if not auth.verify(pkt.advert.counter, pkt.advert.md):
            raise AssertionError("benchmark packet failed to verify")


def bench_failovers(n: int) -> None:
    for seed in range(n):
        two_node_failover(seed)


def run(scale: float = 1.0) -> dict[str, float]:
    return {
        "encode_hmac_per_s": _rate(bench_encode, int(100_000 * scale)),
        "decode_verify_per_s": _rate(bench_decode, int(100_000 * scale)),
        "failovers_per_s": _rate(bench_failovers, int(2_000 * scale)),
    }


def main() -> int:
    results = run(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
    print(f"{'benchmark':<22} {'rate/s':>12} {'target':>9}")
    for name, value in results.items():
        status = "ok" if value >= TARGETS[name] else "BELOW TARGET"
        print(f"{name:<22} {value:>12,.0f} {TARGETS[name]:>9,} {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
