"""State-sync micro-benchmarks (pure, seeded, no I/O).

Measures the per-state cost of the pfsync path: pack 1400-layout records into frames, decode the
frames, apply the records to an InMemoryStateTable; plus the replicator end to end (a 100k bulk
between two machines in virtual time). Run: .venv/bin/python benchmarks/bench_statesync.py
"""

from __future__ import annotations

import argparse
import json
import random
import time

from carpsim.sim.sync_pair import SyncPair
from carpsim.statesync import codec
from carpsim.statesync.config import ReplicatorConfig
from carpsim.statesync.constants import Act
from carpsim.statesync.record import FlowKey, StateRecord, TcpState
from carpsim.statesync.table import InMemoryStateTable

PER_FRAME = 5  # 1500-byte MTU


def make_records(n: int, seed: int = 1) -> list[StateRecord]:
    rng = random.Random(seed)
    vip = bytes([192, 168, 100, 254])
    out = []
    for i in range(n):
        key = FlowKey(6, bytes([192, 168, 110, 1 + i % 250]), 1024 + i // 250,
                      bytes([203, 0, 113, 10]), 443)  # fmt: skip
        nat = (vip, rng.randrange(1024, 65535))
        out.append(StateRecord(key, creatorid=1, id=i + 1, nat_src=nat,
                               tcp_state=TcpState.ESTABLISHED, timeout=431999, status=0x19E,
                               packets=(i, i), bytes_=(i * 100, i * 90)))  # fmt: skip
    return out


def best_of(fn: object, repeat: int) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_codec(n: int, repeat: int) -> dict[str, float]:
    recs = make_records(n)
    frames: list[bytes] = []

    def encode() -> None:
        frames.clear()
        pack = codec.pack_state
        for i in range(0, n, PER_FRAME):
            body = codec.section_bytes(Act.UPD, [pack(r) for r in recs[i : i + PER_FRAME]])
            frames.append(codec.assemble([body]))

    decoded: list[StateRecord] = []

    def decode() -> None:
        decoded.clear()
        for f in frames:
            for s in codec.decode_frame(f).sections:
                decoded.extend(s.items)  # type: ignore[arg-type]

    def apply() -> None:
        table = InMemoryStateTable()
        for r in decoded:
            table.apply(r)

    t_enc = best_of(encode, repeat)
    t_dec = best_of(decode, repeat)
    t_app = best_of(apply, repeat)
    assert decoded == recs
    total = t_enc + t_dec + t_app
    return {
        "states": n,
        "encode_per_s": n / t_enc,
        "decode_per_s": n / t_dec,
        "apply_per_s": n / t_app,
        "pipeline_per_s": n / total,
        "us_per_state": total / n * 1e6,
    }


def bench_bulk(n: int) -> dict[str, float]:
    cfgs = (ReplicatorConfig(creatorid=1), ReplicatorConfig(creatorid=2))
    pair = SyncPair(3, configs=cfgs, echo=False)
    pair.link.up = False
    pair.start(0)
    recs = make_records(n)
    for r in recs:
        pair.members[0].kernel.put(replace_id0(r))
    pair.execute(
        0, pair.members[0].replicator.local_snapshot(0.0, pair.members[0].kernel.snapshot())
    )
    pair.run_for(30.0)
    pair.link.up = True
    t0 = time.perf_counter()
    pair.start(1)
    pair.run_for(60.0)
    wall = time.perf_counter() - t0
    (bulk,) = pair.members[1].bulks
    assert len(pair.members[1].kernel) == n
    return {
        "states": n,
        "virtual_s": bulk.duration,
        "wall_s": wall,
        "wall_states_per_s": n / wall,
        "frames": pair.members[0].tx_frames,
    }


def replace_id0(r: StateRecord) -> StateRecord:
    return StateRecord(r.key, nat_src=r.nat_src, tcp_state=r.tcp_state, timeout=r.timeout,
                       status=r.status, packets=r.packets, bytes_=r.bytes_)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--states", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = {"codec": bench_codec(args.states, args.repeat), "bulk": bench_bulk(args.states)}
    if args.json:
        print(json.dumps(res, indent=2))
        return
    c = res["codec"]
    print(f"codec, {c['states']:.0f} states (1400 layout, {PER_FRAME}/frame):")
    for k in ("encode_per_s", "decode_per_s", "apply_per_s", "pipeline_per_s"):
        print(f"  {k:16s} {c[k]:12,.0f}")
    print(f"  us_per_state     {c['us_per_state']:12.2f}   (target: pipeline >= 100,000/s)")
    b = res["bulk"]
    print(f"bulk sync of {b['states']:.0f} states between two replicators (virtual time):")
    print(f"  virtual duration {b['virtual_s']:.2f} s, wall {b['wall_s']:.2f} s "
          f"({b['wall_states_per_s']:,.0f} states/s incl. both machines), "
          f"{b['frames']:.0f} frames")  # fmt: skip


if __name__ == "__main__":
    main()
