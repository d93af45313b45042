"""The unsinkable verdict on hand-made timelines: takeover, ping loss/gaps, TCP survival, judge."""

from __future__ import annotations

import pytest

from carpsim.errors import ConfigError
from carpsim.lab import nodes, report, topology, unsinkable, verdict
from carpsim.lab.state import LabPaths
from carpsim.lab.verdict import (
    Bounds,
    CarpEvent,
    PingSample,
    PingStats,
    StreamEnd,
    StreamSample,
    TcpStats,
    Window,
)

T0 = 1_000_000.0  # wall seconds
M0 = 500.0  # mono seconds; wall = T0 + (mono - M0)
INTERVAL = 0.01
BOUNDS = Bounds(3.390625, verdict.loss_bound(3.390625, INTERVAL, 0.25))


def window(start: float = 10.0, end: float = 20.0, master: str = "node2") -> Window:
    return Window("failover", 1, T0 + start, M0 + start, T0 + end, M0 + end, master, (), (1, 2, 3))


def ev(node: str, vhid: int, new: str, at: float, old: str = "BACKUP") -> CarpEvent:
    return CarpEvent(node, vhid, old, new, M0 + at, T0 + at, "test")


def pings(until: float, outage: tuple[float, float] | None = None) -> list[PingSample]:
    """A probe every 10 ms from 0 to `until`, 0.1 ms RTT, none answered during `outage`."""
    out = []
    for k in range(round(until / INTERVAL)):
        t = k * INTERVAL
        dead = outage is not None and outage[0] <= t < outage[1]
        out.append(PingSample(T0 + t, None if dead else T0 + t + 0.0001))
    return out


def stream(conn: str, spans: list[tuple[float, float]]) -> list[StreamSample]:
    """0.1 s bins of bytes over each (start, end) span of relative seconds."""
    out = []
    for a, b in spans:
        t = a
        while t < b - 1e-9:
            out.append(StreamSample(conn, T0 + t, T0 + min(t + 0.09, b), 37_500))
            t += 0.1
    return out


# ------------------------------------------------------------------------------------------------


def test_master_down_and_loss_bound_for_the_reference_lab() -> None:
    assert verdict.master_down_interval("freebsd", 1, 100) == pytest.approx(3.390625)
    assert verdict.master_down_interval("openbsd", 1, 100) == pytest.approx(3 * (1 + 100 / 256))
    assert verdict.loss_bound(3.390625, 0.01, 0.25) == 365
    # At a 1 s ping, a master-down takeover may cost up to four pings.
    assert verdict.loss_bound(3.390625, 1.0, 0.25) == 4


def test_takeover_per_vhid_from_the_expected_master_inside_the_window() -> None:
    events = [
        ev("node2", 1, "MASTER", 13.2),
        ev("node2", 2, "MASTER", 9.0),  # before the kill: not this phase's takeover
        ev("node1", 3, "MASTER", 12.0),  # wrong node
        ev("node2", 3, "MASTER", 13.4),
        ev("node2", 3, "MASTER", 15.0),  # only the first counts
    ]
    assert verdict.takeover_ms(events, window()) == {1: 3200.0, 2: None, 3: 3400.0}


def test_final_states_follow_events_in_time_order() -> None:
    events = [ev("node2", 1, "MASTER", 13.0), ev("node2", 1, "BACKUP", 18.0, old="MASTER")]
    initial = {("node2", 1): "BACKUP"}
    assert verdict.final_states(events, initial, M0 + 15)[("node2", 1)] == "MASTER"
    assert verdict.final_states(events, initial, M0 + 19)[("node2", 1)] == "BACKUP"


def test_ping_stats_count_losses_and_the_longest_silence() -> None:
    p = verdict.ping_stats(pings(25.0, outage=(10.0, 13.2)), window(), INTERVAL)
    assert p.sent == 1000
    assert p.lost == 320
    assert p.max_gap_ms == pytest.approx(3210.0, abs=0.2)
    assert p.recovered


def test_ping_that_never_comes_back_is_not_recovered() -> None:
    p = verdict.ping_stats(pings(25.0, outage=(10.0, 99.0)), window(), INTERVAL)
    assert p.lost == p.sent == 1000
    assert not p.recovered


def test_tcp_survivor_stall_and_reset() -> None:
    samples = [
        *stream("s0.1", [(5.0, 10.0), (16.2, 20.0)]),  # stalls 6.2 s, recovers
        *stream("s1.1", [(5.0, 10.0)]),  # never recovers
        *stream("s2.1", [(5.0, 10.0)]),  # reset at 16 s
        *stream("s3.1", [(5.0, 7.0)]),  # already silent before the kill
        *stream("s0.2", [(12.0, 20.0)]),  # opened after the kill: not counted
    ]
    ends = [StreamEnd("s2.1", T0 + 16.0, "ECONNRESET")]
    t = verdict.tcp_stats(samples, ends, window())
    assert (t.streams, t.survived, t.resets, t.stalled) == (3, 1, 1, 1)
    assert t.max_stall_ms == pytest.approx(10_000 - 90 - 10 + 100, abs=150)
    reasons = {b["conn"]: b["reason"] for b in t.broken}
    assert reasons == {"s1.1": "stalled", "s2.1": "ECONNRESET"}


def test_tcp_stream_abandoned_after_the_window_still_counts_as_stalled() -> None:
    samples = stream("s0.1", [(5.0, 10.0)])
    ends = [StreamEnd("s0.1", T0 + 20.5, "abandoned")]
    t = verdict.tcp_stats(samples, ends, window())
    assert (t.streams, t.survived, t.stalled, t.resets) == (1, 0, 1, 0)


def test_tcp_all_streams_surviving_a_short_stall() -> None:
    samples = [s for i in range(4) for s in stream(f"s{i}.1", [(5.0, 10.3), (10.6, 20.0)])]
    t = verdict.tcp_stats(samples, [], window())
    assert (t.streams, t.survived, t.resets, t.stalled) == (4, 4, 0, 0)
    assert t.max_stall_ms is not None
    assert 300 < t.max_stall_ms < 400


def _tcp(streams: int = 4, survived: int = 4, resets: int = 0) -> TcpStats:
    return TcpStats(streams, survived, resets, streams - survived - resets, 500.0)


def _ping(lost: int, gap: float = 30.0, recovered: bool = True) -> PingStats:
    return PingStats(10.0, 1000, lost, gap, recovered)


TAKEN: dict[int, float | None] = {1: 3100.0, 2: 3120.0, 3: 3090.0}


def test_judge_ideal_realistic_failure() -> None:
    assert verdict.judge(TAKEN, _ping(0), _tcp(), BOUNDS) == ("ideal", [])
    level, why = verdict.judge(TAKEN, _ping(320, 3210.0), _tcp(), BOUNDS)
    assert level == "realistic"
    assert why == ["320 pings lost (bound 365)"]
    level, why = verdict.judge(TAKEN, _ping(400, 4010.0), _tcp(), BOUNDS)
    assert level == "failure"
    assert any("more than the master-down bound" in w for w in why)
    assert any("exceeds master-down" in w for w in why)


@pytest.mark.parametrize(
    ("take", "ping", "tcp", "needle"),
    [
        ({**TAKEN, 2: None}, _ping(0), _tcp(), "never reached on VHID [2]"),
        (TAKEN, _ping(0, recovered=False), _tcp(), "not answered again"),
        (TAKEN, _ping(0), _tcp(survived=3, resets=1), "1 of 4 TCP streams reset"),
        (TAKEN, _ping(0), _tcp(survived=0), "4 of 4 TCP streams stalled"),
        (TAKEN, _ping(0), _tcp(streams=0, survived=0), "no TCP stream was flowing"),
    ],
)
def test_judge_failures(
    take: dict[int, float | None], ping: PingStats, tcp: TcpStats, needle: str
) -> None:
    level, why = verdict.judge(take, ping, tcp, BOUNDS)
    assert level == "failure"
    assert any(needle in w for w in why), why


def test_evaluate_and_aggregate_over_cycles() -> None:
    results = []
    for cycle, (takeover, outage_end) in enumerate([(3.1, 13.1), (3.3, 13.3)], start=1):
        w = Window("failover", cycle, T0 + 10, M0 + 10, T0 + 20, M0 + 20, "node2", (), (1,))
        events = [ev("node2", 1, "MASTER", 10 + takeover)]
        samples = stream("s0.1", [(5.0, 10.0), (outage_end + 0.2, 20.0)])
        results.append(
            verdict.evaluate(
                w,
                events,
                pings(25.0, (10.0, outage_end)),
                samples,
                [],
                interval=INTERVAL,
                bounds=BOUNDS,
            )
        )
    assert [r.verdict for r in results] == ["realistic", "realistic"]
    agg = verdict.aggregate(results)
    assert agg["verdict"] == "realistic"
    assert agg["takeover_ms"] == {"1": 3300.0}
    assert agg["ping"]["lost"] == 310 + 330
    assert agg["tcp"] == {
        "streams": 2,
        "survived": 2,
        "resets": 0,
        "stalled": 0,
        "max_stall_ms": pytest.approx(3500, abs=120),
    }
    assert agg["stats"]["takeover_ms"] == {"min": 3100.0, "median": 3200.0, "max": 3300.0}
    assert verdict.worst(["ideal", "failure", "realistic"]) == "failure"


def test_statesync_switch_rewrites_only_its_own_section() -> None:
    # The switch re-renders the node config (lab/nodes.py), it does not edit TOML text.
    topo = topology.load("reference")
    paths, node1 = LabPaths("cs-unit-"), topo.host("node1")
    config = nodes.node_config(topo, paths, node1)
    assert unsinkable.statesync_enabled(config) is True
    off = nodes.node_config(topo, paths, node1, statesync=False)
    assert unsinkable.statesync_enabled(off) is False
    assert off.replace("enabled = false", "enabled = true") == config
    assert nodes.node_config(topo, paths, node1, statesync=True) == config
    assert unsinkable.statesync_enabled('[node]\nname = "x"\n') is None


def test_options_reject_a_settle_too_short_for_a_takeover() -> None:
    with pytest.raises(ConfigError) as info:
        unsinkable.Options(settle=4.0).check(3.390625)
    assert info.value.field == "--settle"
    unsinkable.Options(settle=4.5).check(3.390625)


def test_timeline_shows_the_killed_node_off_despite_its_dying_transitions() -> None:
    tl = report.Timeline(
        t0=T0,
        t0_mono=M0,
        end=T0 + 30,
        vhids=(1,),
        nodes=("node1", "node2"),
        initial={("node1", 1): "MASTER", ("node2", 1): "BACKUP"},
        events=[
            ev("node1", 1, "INIT", 10.01, old="MASTER"),
            ev("node2", 1, "MASTER", 13.2),
            ev("node1", 1, "BACKUP", 21.0, old="INIT"),
            ev("node1", 1, "MASTER", 21.5),
        ],
        pings=[],
        samples=[],
        ends=[],
        marks=[("kill node1", T0 + 10), ("power-on node1", T0 + 20)],
        off=[("node1", T0 + 10, T0 + 20)],
    )
    segs = report.state_segments(tl)
    assert [(a, b, s) for a, b, s in segs[("node1", 1)]] == [
        (0.0, 10.0, "MASTER"),
        (10.0, 20.0, "off"),
        (20.0, 21.0, "INIT"),
        (21.0, 21.5, "BACKUP"),
        (21.5, 30.0, "MASTER"),
    ]
    assert [s for _a, _b, s in segs[("node2", 1)]] == ["BACKUP", "MASTER"]
