"""One JSON line per CARP transition, for the lab's timing analysis.

Fields: ``mono`` (CLOCK_MONOTONIC seconds, comparable across processes on one host), ``wall``
(Unix time), ``node``, ``vhid``, ``from``, ``to``, ``reason``. Each line is flushed at once so
a SIGKILLed daemon's last transition is on disk.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TextIO


class EventsLog:
    def __init__(self, path: str | Path, node: str) -> None:
        self.node = node
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = p.open("a", encoding="utf-8")

    def transition(self, vhid: int, old: str, new: str, reason: str) -> None:
        rec = {
            "mono": round(time.monotonic(), 6),
            "wall": round(time.time(), 6),
            "node": self.node,
            "vhid": vhid,
            "from": old,
            "to": new,
            "reason": reason,
        }
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
