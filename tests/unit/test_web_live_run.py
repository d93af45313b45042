"""The live unsinkable curves: ping and throughput bins, run parameters, the probe observer."""

from __future__ import annotations

import pytest

from carpsim.lab import unsinkable
from carpsim.lab.probes import ProbeRecord
from carpsim.web import live_run
from carpsim.web.live_run import LiveRun, RunRequest


def test_ping_bins_take_the_worst_rtt_and_count_only_overdue_probes_lost() -> None:
    t0 = 1000.0
    records = [
        ProbeRecord(0, t0 + 0.00, t0 + 0.002),
        ProbeRecord(1, t0 + 0.05, t0 + 0.059),
        ProbeRecord(2, t0 + 0.12, None),  # lost: long overdue
        ProbeRecord(3, t0 + 0.13, t0 + 0.131),
        ProbeRecord(4, t0 + 9.95, None),  # still pending at `now`
        ProbeRecord(5, t0 - 1.00, t0 - 0.99),  # before the run: ignored
    ]
    bins = live_run.ping_bins(records, t0, now=t0 + 10.0)
    assert bins[0] == [0.05, 9.0, 0]
    assert bins[1] == [0.15, 1.0, 1]
    assert bins[2] == [9.95, None, 0]
    assert len(bins) == 3


def test_throughput_bins_sum_every_stream_and_keep_silent_bins_at_zero() -> None:
    t0 = 50.0
    items = [
        {"ev": "connect", "conn": "s0.1", "t": t0},
        {"ev": "data", "conn": "s0.1", "first": t0, "last": t0 + 0.2, "n": 62_500},
        {"ev": "data", "conn": "s1.1", "first": t0, "last": t0 + 0.3, "n": 62_500},
        {"ev": "data", "conn": "s0.1", "first": t0 + 1.1, "last": t0 + 1.2, "n": 31_250},
        {"ev": "data", "conn": "s0.1", "last": "garbage", "n": 1},
    ]
    assert live_run.throughput_bins(items, t0) == [[0.25, 2.0], [0.75, 0.0], [1.25, 0.5]]
    assert live_run.throughput_bins([], t0) == []


def test_run_request_bounds_what_the_page_may_ask_for() -> None:
    assert RunRequest.from_json({"cycles": "2", "settle": 8, "streams": 2}) == RunRequest(2, 8.0, 2)
    assert RunRequest.from_json(None) == RunRequest()
    for bad in ({"cycles": 50}, {"settle": 0}, {"settle": 3600}, {"streams": "many"}):
        with pytest.raises(ValueError, match=r"cycles|settle|bad run"):
            RunRequest.from_json(bad)


def test_the_observer_wraps_the_probe_class_only_for_the_run() -> None:
    run = LiveRun()
    original = unsinkable._Probes
    with run._observe():
        wrapped = unsinkable._Probes
        assert wrapped is not original
        assert issubclass(wrapped, original)
    assert unsinkable._Probes is original


def test_progress_lines_place_the_kill_and_power_on_marks() -> None:
    run = LiveRun()
    run.begin(RunRequest())
    run.progress("probes on client1: ...")
    run.progress("cycle 1: node1 forced off (no goodbye)")
    run.progress("cycle 1: node1 powered on")
    snap = run.snapshot()
    assert [m[0] for m in snap["marks"]] == ["kill", "power-on"]
    assert snap["state"] == "running"
    assert snap["log"][-1] == "cycle 1: node1 powered on"
