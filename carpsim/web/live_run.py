"""`unsinkable` from the lab page: the library run in a worker thread, its probes sampled live.

`carpsim.lab.unsinkable.run` owns the protocol (probes, Force Off, power-on, verdict) and returns
only at the end. To draw the probes while it runs, the run's probe set is observed: for the
duration of the run the module's probe class is replaced by a subclass that hands each started
instance to this observer (one run at a time, so the swap cannot leak into another run). If a
later version of unsinkable no longer has that class, the page still gets the progress lines,
the marks and the verdict, only without live curves.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from carpsim.errors import CarpsimError
from carpsim.lab import report, unsinkable

PING_BIN_S = 0.1
TPUT_BIN_S = 0.5
PENDING_S = 1.0
"""An echo without a reply is counted lost only once it is this old (it may still arrive)."""
MAX_LOG = 200
MAX_SETTLE_S = 60.0
MAX_CYCLES = 3
PROBE_CLASS = "_Probes"
"""The probe set class of carpsim.lab.unsinkable that the observer wraps."""


@dataclass(frozen=True)
class RunRequest:
    cycles: int = 1
    settle: float = 10.0
    streams: int = 4

    @classmethod
    def from_json(cls, body: Any) -> RunRequest:
        if not isinstance(body, dict):
            body = {}
        try:
            req = cls(
                cycles=int(body.get("cycles", 1)),
                settle=float(body.get("settle", 10.0)),
                streams=int(body.get("streams", 4)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad run parameters: {exc}") from None
        if not 1 <= req.cycles <= MAX_CYCLES:
            raise ValueError(f"cycles must be 1..{MAX_CYCLES} from the page")
        if not 0 < req.settle <= MAX_SETTLE_S:
            raise ValueError(f"settle must be in (0, {MAX_SETTLE_S:g}] s from the page")
        return req


def ping_bins(records: list[Any], t0: float, now: float) -> list[list[Any]]:
    """[t (s from t0), worst RTT in ms or None, lost] per PING_BIN_S bin with probes in it."""
    bins: dict[int, list[Any]] = {}
    for r in records:
        idx = int((r.sent_at - t0) / PING_BIN_S)
        if idx < 0:
            continue
        b = bins.setdefault(idx, [round((idx + 0.5) * PING_BIN_S, 2), None, 0])
        if r.replied_at is not None:
            rtt = round((r.replied_at - r.sent_at) * 1000, 2)
            b[1] = rtt if b[1] is None else max(b[1], rtt)
        elif now - r.sent_at > PENDING_S:
            b[2] += 1
    return [bins[k] for k in sorted(bins)]


def throughput_bins(items: list[dict[str, Any]], t0: float) -> list[list[float]]:
    """[t (s from t0), Mbit/s summed over every stream] per TPUT_BIN_S bin."""
    bins: dict[int, float] = {}
    for i in items:
        if i.get("ev") != "data":
            continue
        try:
            idx, n = int((float(i["last"]) - t0) / TPUT_BIN_S), int(i["n"])
        except (KeyError, TypeError, ValueError):
            continue
        if idx >= 0:
            bins[idx] = bins.get(idx, 0.0) + n
    if not bins:
        return []
    return [
        [round((k + 0.5) * TPUT_BIN_S, 2), round(bins.get(k, 0.0) * 8 / TPUT_BIN_S / 1e6, 3)]
        for k in range(max(bins) + 1)
    ]


class LiveRun:
    """One run's progress as the page's ``run`` topic. Thread-safe: the worker writes, the
    poller reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = "idle"
        self.params: dict[str, Any] = {}
        self.t0 = 0.0
        self.log: list[str] = []
        self.marks: list[list[Any]] = []
        self.verdict: str | None = None
        self.summary: str | None = None
        self.error: str | None = None
        self.live_probes = False
        self._probes: Any = None
        self._final: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def begin(self, req: RunRequest) -> None:
        with self._lock:
            self.state = "running"
            self.params = {"cycles": req.cycles, "settle": req.settle, "streams": req.streams}
            self.t0 = time.time()
            self.log, self.marks = [], []
            self.verdict = self.summary = self.error = None
            self._probes, self._final = None, None

    def progress(self, line: str) -> None:
        now = time.time()
        with self._lock:
            self.log = [*self.log, line][-MAX_LOG:]
            if "forced off" in line:
                self.marks.append(["kill", round(now - self.t0, 2)])
            elif "powered on" in line:
                self.marks.append(["power-on", round(now - self.t0, 2)])

    def attach_probes(self, probes: Any) -> None:
        with self._lock:
            self._probes = probes
            self.live_probes = True

    def execute(self, prefix: str, req: RunRequest) -> None:
        """The whole run (blocking, in a worker thread)."""
        opts = unsinkable.Options(cycles=req.cycles, settle=req.settle, streams=req.streams)
        try:
            with self._observe():
                result, timeline = unsinkable.run(prefix, opts, self.progress)
        except CarpsimError as exc:
            self._finish("failed", error=str(exc))
            return
        except Exception as exc:  # the page must learn the run ended, whatever ended it
            self._finish("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        final = self.snapshot()
        # The exact marks from the run's own timeline replace the ones timed from progress.
        final["marks"] = [
            ["kill" if label.startswith("kill") else "power-on", round(t - self.t0, 2)]
            for label, t in timeline.marks
        ]
        with self._lock:
            self._final = final
        self._finish("done", verdict=str(result["verdict"]), summary=report.summary(result))

    def _finish(
        self, state: str, *, verdict: str | None = None, summary: str | None = None,
        error: str | None = None,
    ) -> None:  # fmt: skip
        with self._lock:
            self.state, self.verdict, self.summary, self.error = state, verdict, summary, error
            self._probes = None

    @contextlib.contextmanager
    def _observe(self) -> Iterator[None]:
        base = getattr(unsinkable, PROBE_CLASS, None)
        if not isinstance(base, type) or not hasattr(base, "start"):
            self.progress("(live probe curves unavailable: unsinkable has no probe class)")
            yield
            return
        observer = self

        class Observed(base):  # type: ignore[misc, valid-type]
            def start(self) -> None:
                super().start()
                observer.attach_probes(self)

        setattr(unsinkable, PROBE_CLASS, Observed)
        try:
            yield
        finally:
            setattr(unsinkable, PROBE_CLASS, base)

    def snapshot(self) -> dict[str, Any]:
        """The ``run`` topic: state, log, probe curves, marks, verdict."""
        with self._lock:
            probes, final = self._probes, self._final
            out: dict[str, Any] = {
                "state": self.state,
                "params": self.params,
                "log": list(self.log),
                "marks": [list(m) for m in self.marks],
                "verdict": self.verdict,
                "summary": self.summary,
                "error": self.error,
                "live_probes": self.live_probes,
            }
        if final is not None:
            out["pings"], out["throughput"], out["marks"] = (
                final["pings"],
                final["throughput"],
                final["marks"],
            )
            return out
        out["pings"], out["throughput"] = [], []
        if probes is not None:
            now = time.time()
            pinger = getattr(probes, "pinger", None)
            lines = getattr(probes, "client_lines", None)
            if pinger is not None:
                out["pings"] = ping_bins(pinger.records(), self.t0, now)
            if lines is not None:
                out["throughput"] = throughput_bins(lines.snapshot(), self.t0)
        return out
