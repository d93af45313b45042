"""The events log never takes a transition (or the daemon) down with it."""

from __future__ import annotations

import json
from pathlib import Path

from carpsim.runtime.events_log import EventsLog


def test_events_log_survives_a_full_disk(tmp_path: Path) -> None:
    full = EventsLog("/dev/full", "n1")
    full.transition(1, "BACKUP", "MASTER", "master_down")
    full.transition(1, "MASTER", "BACKUP", "preempted")
    assert full.write_errors == 2
    ok = EventsLog(tmp_path / "events.jsonl", "n1")
    ok.transition(3, "BACKUP", "MASTER", "master_down")
    ok.close()
    line = json.loads((tmp_path / "events.jsonl").read_text())
    assert (line["vhid"], line["from"], line["to"]) == (3, "BACKUP", "MASTER")
