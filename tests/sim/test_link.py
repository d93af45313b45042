"""The one link model and the generic runner: datagrams, partitions, and TCP-like streams."""

from __future__ import annotations

import functools
import itertools
import random

import pytest

from carpsim.sim.link import (
    Impairment,
    Link,
    PointToPoint,
    StreamChannel,
    StreamClosed,
    StreamData,
    StreamEvent,
    StreamOpened,
)
from carpsim.sim.runner import Runner, SimNode, SimulationStuckError


class Recorder(SimNode):
    """A node adapter with no machine: it records what reaches it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.got: list[tuple[float, str, bytes]] = []
        self.events: list[tuple[float, StreamEvent]] = []
        self.timer_at: float | None = None
        self.fired: list[float] = []

    def next_deadline(self) -> float | None:
        return self.timer_at

    def on_timer(self, now: float) -> None:
        self.fired.append(now)
        self.timer_at = None

    def receive(self, now: float, link: str, data: bytes) -> None:
        self.got.append((now, link, data))

    def stream_event(self, now: float, event: StreamEvent) -> None:
        self.events.append((now, event))


def lan_of(names: str, impairment: Impairment | None = None, seed: int = 0) -> Runner[Recorder]:
    runner: Runner[Recorder] = Runner(seed=seed)
    runner.add_link(Link("lan", runner.derive_rng(), impairment))
    for name in names:
        runner.add_node(Recorder(name))
        runner.attach(name, "lan")
    return runner


def test_broadcast_reaches_everyone_else_after_the_delay() -> None:
    runner = lan_of("abc", Impairment(delay=0.5))
    runner.at(1.0, lambda: runner.links["lan"].send(runner.now, "a", b"x"))
    runner.run_until(2.0)
    assert runner.nodes["a"].got == []
    assert runner.nodes["b"].got == runner.nodes["c"].got == [(1.5, "lan", b"x")]


def test_partition_splits_and_heal_rejoins() -> None:
    runner = lan_of("abc")
    lan = runner.links["lan"]
    runner.partition(["a"], ["b"])
    lan.send(0.0, "a", b"1")
    runner.heal()
    lan.send(0.0, "a", b"2")
    runner.run_until(1.0)
    assert [d for _, _, d in runner.nodes["b"].got] == [b"2"]
    assert [d for _, _, d in runner.nodes["c"].got] == [b"1", b"2"]  # on no side: hears all


def test_killed_node_gets_nothing_in_flight_and_no_timers() -> None:
    runner = lan_of("ab", Impairment(delay=1.0))
    runner.nodes["b"].timer_at = 1.5
    runner.links["lan"].send(0.0, "a", b"x")
    runner.kill("b")
    runner.run_until(3.0)
    assert runner.nodes["b"].got == []
    assert runner.nodes["b"].fired == []


def test_loss_duplication_reordering_happen_and_replay_from_the_seed() -> None:
    imp = Impairment(loss=0.2, duplicate=0.2, reorder=0.3, delay=0.001, reorder_delay=0.05)

    def run(seed: int) -> list[int]:
        runner = lan_of("ab", imp, seed)
        lan = runner.links["lan"]

        def send(i: int) -> None:
            lan.send(runner.now, "a", i.to_bytes(2, "big"))

        for i in range(500):
            runner.at(i * 0.001, functools.partial(send, i))
        runner.run_until(10.0)
        return [int.from_bytes(d, "big") for _, _, d in runner.nodes["b"].got]

    got = run(3)
    assert got == run(3)
    assert got != run(4)
    assert len(set(got)) < 500  # lost
    assert len(got) > len(set(got))  # duplicated
    assert any(later < earlier for earlier, later in itertools.pairwise(got))  # reordered


def test_overdue_deadline_fires_now_instead_of_moving_time_back() -> None:
    runner = lan_of("a")
    runner.run_until(5.0)
    runner.nodes["a"].timer_at = 1.0
    runner.run_until(6.0)
    assert runner.nodes["a"].fired == [5.0]


def test_point_to_point_has_two_ends() -> None:
    link = PointToPoint("sync", ("x", "y"), random.Random(0))
    with pytest.raises(ValueError, match="not an end"):
        link.attach("z")


def test_a_livelock_is_reported() -> None:
    class Spinner(Recorder):
        def on_timer(self, now: float) -> None:
            self.timer_at = now  # never makes progress

    runner: Runner[Recorder] = Runner(max_steps=50)
    runner.add_node(Spinner("s")).timer_at = 0.0
    with pytest.raises(SimulationStuckError):
        runner.run_until(1.0)


# ---------------------------------------------------------------------------- streams


def stream_pair(delay: float = 0.01, jitter: float = 0.0) -> tuple[Runner[Recorder], StreamChannel]:
    runner: Runner[Recorder] = Runner(seed=1)
    for name in "ab":
        runner.add_node(Recorder(name))
    channel = runner.add_stream(
        StreamChannel("tcp", ("a", "b"), runner.derive_rng(), delay=delay, jitter=jitter)
    )
    return runner, channel


def events(node: Recorder) -> list[StreamEvent]:
    return [e for _, e in node.events]


def test_connect_opens_both_ends_and_data_arrives_in_order_despite_jitter() -> None:
    runner, ch = stream_pair(delay=0.01, jitter=0.5)
    ch.connect(0.0, "a")
    runner.run_until(2.0)
    assert events(runner.nodes["b"]) == [StreamOpened("tcp", "a")]
    assert events(runner.nodes["a"]) == [StreamOpened("tcp", "b")]
    for i in range(200):
        ch.send(runner.now, "a", bytes([i]))
    ch.send(runner.now, "b", b"reply")
    runner.run_until(10.0)
    data = [e.data for e in events(runner.nodes["b"]) if isinstance(e, StreamData)]
    assert data == [bytes([i]) for i in range(200)]
    assert events(runner.nodes["a"])[-1] == StreamData("tcp", "b", b"reply")
    times = [t for t, e in runner.nodes["b"].events if isinstance(e, StreamData)]
    assert times == sorted(times)
    assert times[-1] > times[0]  # jitter spread them, order held anyway


def test_connect_across_a_partition_or_to_a_dead_node_is_refused() -> None:
    runner, ch = stream_pair()
    runner.partition(["a"], ["b"])
    ch.connect(0.0, "a")
    runner.run_until(1.0)
    assert events(runner.nodes["a"]) == [StreamClosed("tcp", "b", "refused")]
    assert events(runner.nodes["b"]) == []
    runner.heal()
    runner.kill("b")
    ch.connect(runner.now, "a")
    runner.run_until(2.0)
    assert events(runner.nodes["a"])[-1] == StreamClosed("tcp", "b", "refused")
    assert not ch.open


def test_partition_breaks_an_open_stream_on_both_ends_and_loses_data_in_flight() -> None:
    runner, ch = stream_pair(delay=0.5)
    ch.connect(0.0, "a")
    runner.run_until(2.0)
    ch.send(runner.now, "a", b"lost")
    runner.partition(["a"], ["b"])
    runner.run_until(4.0)
    assert events(runner.nodes["a"])[-1] == StreamClosed("tcp", "b", "partition")
    assert events(runner.nodes["b"])[-1] == StreamClosed("tcp", "a", "partition")
    assert not any(isinstance(e, StreamData) for e in events(runner.nodes["b"]))
    ch.send(runner.now, "a", b"after")  # a closed stream carries nothing
    runner.run_until(5.0)
    assert not any(isinstance(e, StreamData) for e in events(runner.nodes["b"]))


def test_endpoint_down_closes_the_survivor() -> None:
    runner, ch = stream_pair()
    ch.connect(0.0, "b")
    runner.run_until(1.0)
    runner.kill("a")
    runner.run_until(2.0)
    assert events(runner.nodes["b"])[-1] == StreamClosed("tcp", "a", "peer_down")
    assert not ch.open


def test_orderly_close_delivers_pending_data_then_the_close() -> None:
    runner, ch = stream_pair(delay=0.2)
    ch.connect(0.0, "a")
    runner.run_until(1.0)
    ch.send(runner.now, "a", b"last words")
    ch.close(runner.now, "a")
    runner.run_until(2.0)
    assert events(runner.nodes["b"])[-2:] == [
        StreamData("tcp", "a", b"last words"),
        StreamClosed("tcp", "a", "closed"),
    ]


def test_in_flight_bytes_are_bounded() -> None:
    runner, ch = stream_pair()
    ch.max_in_flight = 10
    ch.connect(0.0, "a")
    runner.run_until(1.0)
    ch.send(runner.now, "a", b"12345")
    ch.send(runner.now, "a", b"123456")
    runner.run_until(2.0)
    assert events(runner.nodes["a"])[-1] == StreamClosed("tcp", "b", "overflow")
