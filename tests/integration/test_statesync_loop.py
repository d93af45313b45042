"""State sync must never hold the event loop that also runs CARP.

Node A is CARP MASTER (advbase 1) with state sync on and holds 20k conntrack entries; its
periodic kernel dump (every second) and the bulk update it serves to node B, which joins later,
both run while a capture on B's LAN interface records A's adverts. Before the dump moved to a
worker thread, a 20k-entry dump held the loop ~0.5 s every second and A's adverts came late.

Asserted: no gap between two of A's adverts exceeds the advert interval + 100 ms, B never became
MASTER, B's bulk update carried all 20k states into its kernel, and A ran its dumps meanwhile.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Lan, read_events, try_status, wait_for

from carpsim.net import netns
from carpsim.net.conntrack import KernelConntrackTable, enable_events
from carpsim.statesync.record import FlowKey, StateRecord, TcpState

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

PASSWORD = "K33p_It_S3cr3t!"
N_STATES = 20_000
ADVERT_INTERVAL = 1.0
TOLERANCE = 0.1


def node_toml(tmp: Path, name: str, last: int, skew: int) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f"""
[node]
name = "{name}"
control = "{tmp / (name + ".sock")}"
events_json = "{tmp / (name + ".jsonl")}"

[carp]
password = "{PASSWORD}"
advbase = 1
advskew = {skew}
preempt = true

[[vhid]]
vhid = 7
interface = "lan"
srcip = "10.53.0.{last}"
vips = ["10.53.0.254/24"]

[statesync]
interface = "sync"
peer = "172.16.9.{3 - last}"
# A starts alone: give up on the unanswered bulk request quickly, so it is not left demoted
# (a demoted A would lose the VIP to B by plain CARP rules once B is ready).
bulk_retry_interval = 0.5
bulk_max_tries = 2
""")
    return path


def records(n: int) -> list[StateRecord]:
    """Established TCP flows of LAN clients to a server, as conntrack entries of node A."""
    out = []
    for i in range(n):
        src = bytes((10, 53, 1 + i // 60000, 1 + (i // 250) % 250))
        out.append(
            StateRecord(
                FlowKey(6, src, 1024 + i % 60000, bytes((10, 54, 0, 1)), 443),
                tcp_state=TcpState.ESTABLISHED,
                timeout=3600,
            )
        )
    return out


def sync(control: Path) -> dict[str, Any] | None:
    st = try_status(str(control))
    return None if st is None else st.get("statesync")


def advert_times(pcap: Path, src: str) -> list[float]:
    from scapy.layers.inet import IP  # noqa: PLC0415 - heavy import, only here
    from scapy.utils import rdpcap  # noqa: PLC0415

    return [
        float(p.time)
        for p in rdpcap(str(pcap))
        if IP in p and p[IP].src == src and p[IP].proto == 112
    ]


def test_adverts_keep_their_interval_during_dumps_and_bulk(lan: Lan) -> None:
    a, b = lan.host("a"), lan.host("b")
    lan.plug("a", "lan", "10.53.0.1/24")
    lan.plug("b", "lan", "10.53.0.2/24")
    lan.plug("a", "sync", "172.16.9.1/30", bridge="sync")
    lan.plug("b", "sync", "172.16.9.2/30", bridge="sync")
    enable_events(a)
    tmp = lan.tmp
    ctl_a, ctl_b = tmp / "na.sock", tmp / "nb.sock"
    lan.carpsim("a", "node", "--config", str(node_toml(tmp, "na", 1, 0)), log="na.log")
    wait_for(lambda: (s := sync(ctl_a)) is not None and s["ready"], 10.0, what="node A ready")
    wait_for(
        lambda: any(e["to"] == "MASTER" for e in read_events(tmp / "na.jsonl")),
        10.0,
        what="node A MASTER",
    )

    pcap = tmp / "adverts.pcap"
    cap = netns.popen(
        b,
        ["tcpdump", "-i", "lan", "-U", "--immediate-mode", "-n", "-w", str(pcap), "ip proto 112"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lan.procs.append(cap)
    wait_for(lambda: pcap.exists() and pcap.stat().st_size > 0, 5.0, what="capture started")
    started = time.monotonic()
    with KernelConntrackTable(netns=a) as table:
        result = table.apply_many(records(N_STATES))
    assert result.created == N_STATES, result
    # A's refresh dumps now read 20k entries each second; then B joins and asks for a bulk.
    wait_for(
        lambda: (s := sync(ctl_a)) is not None and s["states"]["kernel"] >= N_STATES,
        10.0,
        what="A's dump sees 20k entries",
    )
    lan.carpsim("b", "node", "--config", str(node_toml(tmp, "nb", 2, 100)), log="nb.log")
    sb = wait_for(
        lambda: (s := sync(ctl_b)) is not None and s["bulk"]["count"] >= 1 and s,
        20.0,
        what="B's bulk update",
    )
    assert sb["bulk"]["gave_up"] == 0
    assert sb["bulk"]["last_states"] >= N_STATES
    with KernelConntrackTable(netns=b) as table_b:
        wait_for(lambda: len(table_b) >= N_STATES, 10.0, what="20k states in B's kernel")
    time.sleep(2.5)  # two more refresh dumps on both nodes after the bulk
    cap.send_signal(signal.SIGINT)
    cap.wait(timeout=5)
    elapsed = time.monotonic() - started

    times = advert_times(pcap, "10.53.0.1")
    assert len(times) >= int(elapsed) - 1, f"{len(times)} adverts in {elapsed:.1f}s"
    gaps = [t2 - t1 for t1, t2 in itertools.pairwise(times)]
    worst = max(gaps)
    print(f"\nadverts {len(times)} over {elapsed:.1f}s, max gap {worst * 1000:.0f} ms")
    assert worst <= ADVERT_INTERVAL + TOLERANCE, f"advert gap {worst:.3f}s: the loop was held"
    assert not any(e["to"] == "MASTER" for e in read_events(tmp / "nb.jsonl")), "B took over"
    sa = sync(ctl_a)
    assert sa is not None
    kernel = sa["kernel"]
    assert isinstance(kernel, dict)
    assert kernel.get("dumps_changed", 0) >= int(elapsed) - 2, kernel
    assert sa["bulk"]["served"] >= 1
