"""The impairment relay's pure scheduling: exact seeded decisions, the sim's own, a byte bound."""

from __future__ import annotations

import random

import pytest

from carpsim.sim.impair_queue import ImpairQueue
from carpsim.sim.link import Impairment, Link, arrivals

MODEL = Impairment(loss=0.2, delay=0.01, jitter=0.05, reorder=0.3, duplicate=0.2)

# Seed 3, one frame every 10 ms: frame 3 lost, frames 1 and 5 duplicated, frame 1's first copy
# overtakes frame 0 and frame 5's second copy its first (the reordering hold-back).
SEED3 = [
    [0.028498],
    [0.020658, 0.052881],
    [0.053818],
    [],
    [0.076159],
    [0.097912, 0.092374],
    [0.113941],
    [0.120045],
]


def test_arrivals_are_exact_for_a_seed() -> None:
    rng = random.Random(3)
    got = [[round(t, 6) for t in arrivals(MODEL, rng, i * 0.01)] for i in range(8)]
    assert got == SEED3


def test_queue_releases_copies_at_their_times_in_time_order() -> None:
    q = ImpairQueue(MODEL, random.Random(3))
    for i in range(8):
        assert [round(t, 6) for t in q.offer(i * 0.01, b"f%d" % i)] == SEED3[i]
    assert q.counters.received == 8
    assert q.counters.lost == 1
    assert q.counters.duplicated == 2
    assert q.pop_due(0.02) == []
    assert q.pop_due(0.03) == [b"f1", b"f0"]
    assert q.next_time() == pytest.approx(0.052881, abs=1e-6)
    assert q.pop_due(1.0) == [b"f1", b"f2", b"f4", b"f5", b"f5", b"f6", b"f7"]
    assert len(q) == 0
    assert q.held_bytes == 0
    assert q.counters.sent == 9


def test_queue_decides_what_a_simulated_link_decides() -> None:
    """Same model, same seed, same send times: the same deliveries at the same instants."""
    link = Link("lan", random.Random(7), MODEL)
    link.attach("a")
    link.attach("b")
    q = ImpairQueue(MODEL, random.Random(7))
    from_queue: list[tuple[float, bytes]] = []
    for i in range(200):
        now = i * 0.003
        data = i.to_bytes(2, "big")
        link.send(now, "a", data)
        from_queue += [(t, data) for t in q.offer(now, data)]
    from_link = [(d.time, d.data) for d in link.pop_due(10.0)]
    assert sorted(from_queue) == sorted(from_link)
    assert link.lost == q.counters.lost > 0


def test_held_bytes_are_bounded_and_overflow_is_counted() -> None:
    q = ImpairQueue(Impairment(delay=1.0), random.Random(0), max_bytes=3000)
    for i in range(5):
        q.offer(i * 0.001, bytes(1000))
    assert len(q) == 3
    assert q.held_bytes == 3000
    assert q.counters.overflow == 2
    assert len(q.pop_due(2.0)) == 3
    q.offer(2.0, bytes(1000))
    assert q.held_bytes == 1000


def test_an_unimpaired_direction_forwards_at_once_and_draws_nothing() -> None:
    rng = random.Random(5)
    before = rng.getstate()
    q = ImpairQueue(Impairment(), rng)
    assert q.offer(1.5, b"x") == [1.5]
    assert q.pop_due(1.5) == [b"x"]
    assert rng.getstate() == before


def test_bad_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ImpairQueue(Impairment(), random.Random(0), max_bytes=0)
