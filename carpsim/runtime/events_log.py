"""One JSON line per CARP transition, for the lab's timing analysis.

Fields: ``mono`` (CLOCK_MONOTONIC seconds, comparable across processes on one host), ``wall``
(Unix time), ``node``, ``vhid``, ``from``, ``to``, ``reason``. Each line is flushed at once so
a SIGKILLed daemon's last transition is on disk.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)


class EventsLog:
    def __init__(self, path: str | Path, node: str) -> None:
        self.node = node
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO = p.open("a", encoding="utf-8")
        self.write_errors = 0

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
        try:
            self._fh.write(json.dumps(rec) + "\n")
            self._fh.flush()
        except OSError as exc:
            # A full disk must not stop the transition's hooks or the daemon: count, log once.
            self.write_errors += 1
            if self.write_errors == 1:
                log.error("events log: cannot write (%s); further failures are only counted", exc)

    def close(self) -> None:
        self._fh.close()
