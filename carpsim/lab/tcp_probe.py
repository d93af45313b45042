"""Long paced TCP downloads through the cluster, recorded as JSON lines.

Run inside lab namespaces as subprocesses:

    python -m carpsim.lab.tcp_probe serve [--port 5001] [--rate-mbit 3]        # internet server
    python -m carpsim.lab.tcp_probe fetch HOST [--port 5001] [--streams 4]     # LAN client

The server streams bytes to every connection at a paced rate (moderate, so neither the lab nor
Python is CPU-bound and a stall is the network's, not the sender's). It keeps at most a small
amount of unsent data queued (TCP_NOTSENT_LOWAT) and never bursts to catch up after a blocked
send, so the bytes a client receives track real time.

The client keeps `--streams` connections open and prints one JSON object per line on stdout:

- ``{"ev": "connect", "conn": "s0.1", "t": ..., "local": "192.168.110.10:40312"}``
- ``{"ev": "connect_failed", "slot": 0, "t": ..., "error": "ETIMEDOUT"}``
- ``{"ev": "data", "conn": "s0.1", "first": ..., "last": ..., "n": 38912}`` — bytes received
  by one connection since its previous data line (at most one line per connection per bin),
  with the first and last receive times;
- ``{"ev": "end", "conn": "s0.1", "t": ..., "reason": "ECONNRESET" | "EPIPE" | "ETIMEDOUT" |
  "EOF" | "abandoned"}``.

Times are CLOCK_REALTIME seconds (``time.time()``), the clock of the ICMP prober. A connection
that ends is replaced by a new one (``s0.2``, ...) after `--retry` seconds. SIGUSR1 abandons
every connection that has received nothing for `--stalled-after` seconds and opens a fresh one:
the orchestrator sends it after a phase so the next phase again starts with live streams.
SIGTERM or SIGINT stops the client after a final flush.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

PORT = 5001
CHUNK = 4096
_NOTSENT_LOWAT = 25  # TCP_NOTSENT_LOWAT (not exported by the socket module)
_LOWAT_BYTES = 32 * 1024


def _errname(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "ETIMEDOUT"
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    return type(exc).__name__


# ------------------------------------------------------------------------------------------------
# Server


def _pace(conn: socket.socket, rate_bps: float, emit: Any, peer: str) -> None:
    payload = bytes(CHUNK)
    step = CHUNK * 8 / rate_bps
    due = time.monotonic()
    reason = "EOF"
    try:
        while True:
            conn.sendall(payload)
            due += step
            now = time.monotonic()
            if now - due > 0.1:
                # Blocked (an outage): resume the pace from now instead of bursting.
                due = now
            elif due > now:
                time.sleep(due - now)
    except OSError as exc:
        reason = _errname(exc)
    finally:
        conn.close()
        emit({"ev": "closed", "peer": peer, "t": time.time(), "reason": reason})


def serve(port: int, rate_bps: float) -> None:
    lock = threading.Lock()

    def emit(rec: dict[str, Any]) -> None:
        with lock:
            print(json.dumps(rec), flush=True)

    with socket.create_server(("0.0.0.0", port), reuse_port=True) as srv:  # noqa: S104 - lab ns
        emit({"ev": "listening", "port": port, "rate_bps": rate_bps, "t": time.time()})
        while True:
            conn, (host, peer_port) = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, _LOWAT_BYTES)
            peer = f"{host}:{peer_port}"
            emit({"ev": "accept", "peer": peer, "t": time.time()})
            threading.Thread(target=_pace, args=(conn, rate_bps, emit, peer), daemon=True).start()


# ------------------------------------------------------------------------------------------------
# Client


@dataclass
class _Conn:
    name: str
    sock: socket.socket
    last_rx: float
    pending: int = 0
    first: float | None = None
    last: float | None = None
    abandon: bool = False


@dataclass
class Fetcher:
    host: str
    port: int
    streams: int
    bin_s: float = 0.1
    connect_timeout: float = 1.0
    retry: float = 0.5
    stalled_after: float = 0.5
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _live: dict[int, _Conn] = field(default_factory=dict)
    stop_requested: bool = False
    renew_requested: bool = False

    def emit(self, rec: dict[str, Any]) -> None:
        print(json.dumps(rec), flush=True)

    def run(self) -> None:
        threads = [
            threading.Thread(target=self._slot, args=(i,), daemon=True) for i in range(self.streams)
        ]
        for t in threads:
            t.start()
        # Signal handlers only set flags (they run on this thread, which may hold _lock).
        while not self.stop_requested:
            time.sleep(self.bin_s)
            if self.renew_requested:
                self.renew_requested = False
                self.renew_stalled()
            self._flush()
        self._stop.set()
        for t in threads:
            t.join(timeout=2.0)
        self._flush()

    def renew_stalled(self) -> None:
        now = time.time()
        with self._lock:
            for c in self._live.values():
                if now - c.last_rx >= self.stalled_after:
                    c.abandon = True

    def _flush(self) -> None:
        lines = []
        with self._lock:
            for c in self._live.values():
                if c.pending:
                    lines.append(
                        {
                            "ev": "data",
                            "conn": c.name,
                            "first": c.first,
                            "last": c.last,
                            "n": c.pending,
                        }
                    )
                    c.pending, c.first, c.last = 0, None, None
        for rec in lines:
            self.emit(rec)

    def _slot(self, slot: int) -> None:
        generation = 0
        while not self._stop.is_set():
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=self.connect_timeout
                )
            except OSError as exc:
                self.emit(
                    {"ev": "connect_failed", "slot": slot, "t": time.time(), "error": _errname(exc)}
                )
                self._stop.wait(self.retry)
                continue
            generation += 1
            name = f"s{slot}.{generation}"
            addr, lport = sock.getsockname()[:2]
            local = f"{addr}:{lport}"
            conn = _Conn(name, sock, time.time())
            with self._lock:
                self._live[slot] = conn
            self.emit({"ev": "connect", "conn": name, "t": conn.last_rx, "local": local})
            reason = self._receive(conn)
            self._flush()
            with self._lock:
                del self._live[slot]
            with contextlib.suppress(OSError):
                sock.close()
            if reason is None:
                return
            self.emit({"ev": "end", "conn": name, "t": time.time(), "reason": reason})
            if reason != "abandoned":
                self._stop.wait(self.retry)

    def _receive(self, conn: _Conn) -> str | None:
        """Read until the connection ends; its end reason, or None when the client stops."""
        conn.sock.settimeout(0.1)
        while True:
            if self._stop.is_set():
                return None
            if conn.abandon:
                return "abandoned"
            try:
                data = conn.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                return _errname(exc)
            now = time.time()
            if not data:
                return "EOF"
            with self._lock:
                conn.pending += len(data)
                conn.first = conn.first if conn.first is not None else now
                conn.last = now
                conn.last_rx = now


def _positive(kind: type[float] | type[int], name: str) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name}: must be positive")
        return value

    return parse


# ------------------------------------------------------------------------------------------------
# The orchestrator's side: reading a probe's stdout


class JsonLines:
    """Reads a child's JSON-lines stdout on a thread; keeps every parsed object."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.items: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if isinstance(item, dict):
                with self._cond:
                    self.items.append(item)
                    self._cond.notify_all()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.items)

    def wait_for(self, ev: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(i.get("ev") == ev for i in self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carpsim.lab.tcp_probe")
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve", help="stream paced bytes to every connection")
    s.add_argument("--port", type=_positive(int, "--port"), default=PORT)
    s.add_argument(
        "--rate-mbit",
        type=_positive(float, "--rate-mbit"),
        default=3.0,
        help="per-connection rate in Mbit/s (default 3)",
    )
    f = sub.add_parser("fetch", help="download over N connections, JSON lines on stdout")
    f.add_argument("host")
    f.add_argument("--port", type=_positive(int, "--port"), default=PORT)
    f.add_argument("--streams", type=_positive(int, "--streams"), default=4)
    f.add_argument(
        "--bin", type=_positive(float, "--bin"), default=0.1, help="reporting bin in seconds"
    )
    f.add_argument("--retry", type=_positive(float, "--retry"), default=0.5)
    f.add_argument("--stalled-after", type=_positive(float, "--stalled-after"), default=0.5)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        serve(args.port, args.rate_mbit * 1e6)
        return 0
    fetcher = Fetcher(
        args.host,
        args.port,
        args.streams,
        bin_s=args.bin,
        retry=args.retry,
        stalled_after=args.stalled_after,
    )

    def on_stop(_sig: int, _frame: FrameType | None) -> None:
        fetcher.stop_requested = True

    def on_renew(_sig: int, _frame: FrameType | None) -> None:
        fetcher.renew_requested = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_renew)
    fetcher.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
