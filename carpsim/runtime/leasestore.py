"""The lease database on disk: an ISC ``dhcpd.leases`` file used as an append-only journal.

Every change is appended as a lease block (or a failover state block) and fsynced before
`append` returns, so a caller that sends the DHCPACK or BNDACK after it never acknowledges a
binding the disk does not hold (dhcpd's rule: commit before ACK). Several changes of one batch
share one write and one fsync (group commit with the same guarantee).

The journal grows; once it exceeds `compact_bytes` (and twice its size after the previous
compaction) it is rewritten with one block per address: temp file, fsync, rename over the
journal, fsync the directory. A SIGKILL at any instant leaves either the old journal or the new
file, and at worst a torn final block after the last acknowledged one, which the parser skips.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path

from carpsim.dhcp.lease import Lease
from carpsim.dhcp.leasefile import (
    MAX_TEXT,
    FailoverStateRecord,
    LeaseFile,
    format_failover_state,
    format_file,
    format_lease,
    parse,
)
from carpsim.errors import DecodeError


class LeaseStore:
    def __init__(self, path: Path, compact_bytes: int = 1 << 20) -> None:
        self.path = path
        self.compact_bytes = compact_bytes
        self.compactions = 0
        self._current: dict[IPv4Address, Lease] = {}
        self._failover: dict[str, FailoverStateRecord] = {}
        self._fd: int | None = None
        self._journal = 0
        self._base = 0

    def peek(self) -> LeaseFile:
        """Parse the file as it is (missing = empty), changing nothing."""
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_TEXT + 1)
        except FileNotFoundError:
            raw = b""
        if len(raw) > MAX_TEXT:
            raise DecodeError("long", f"{self.path} is over {MAX_TEXT} bytes")
        return parse(raw.decode("utf-8", errors="replace"))

    def load(self) -> LeaseFile:
        """Read the file, then rewrite it compacted, as dhcpd does at start."""
        got = self.peek()
        self._current = dict(got.leases)
        self._failover = dict(got.failover)
        self.compact()
        return got

    def append(self, leases: Sequence[Lease], failover: Sequence[FailoverStateRecord] = ()) -> None:
        """Make these changes durable; returns only after fsync."""
        if not leases and not failover:
            return
        text = "".join(format_failover_state(r) for r in failover)
        text += "".join(format_lease(lease) for lease in leases)
        data = text.encode()
        fd = self._open()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        self._journal += len(data)
        for lease in leases:
            self._current[lease.address] = lease
        for rec in failover:
            self._failover[rec.name] = rec
        if self._journal > max(self.compact_bytes, 2 * self._base):
            self.compact()

    def leases(self) -> list[Lease]:
        return list(self._current.values())

    def compact(self) -> None:
        data = format_file(list(self._current.values()), list(self._failover.values())).encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.close()
        self._base = len(data)
        self._journal = 0
        self.compactions += 1

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
