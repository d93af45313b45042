"""The kernel conntrack table of one network namespace as a state-table backend (ctnetlink).

`KernelConntrackTable()` works on the namespace of the calling process (the daemon runs inside
its node namespace via `ip netns exec`); `KernelConntrackTable(netns="name")` opens its netlink
sockets inside the named namespace instead (the calling thread setns()es there only while it
creates them, so the rest of the process stays where it is).

Reads (dump, get) and writes (create/update/delete) go through one command socket with the
packed encoder in `ctnetlink`; writes are batched (`batch_size` messages per sendmsg) and only the
last message of a batch asks for an ACK: the kernel processes a batch in order and reports every
failing message individually, so the ACK of the last one proves the batch is done.

Events come from a second, non-blocking socket joined to the NEW/UPDATE/DESTROY groups;
`fileno()` suits `loop.add_reader`. When the kernel drops events because the socket buffer was
full, `read_events` reports ("overrun", None) and the caller must resync with a `snapshot()`.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from carpsim.errors import CarpsimError, DecodeError
from carpsim.net.netns import enter_netns
from carpsim.statesync.events import CtChange, LocalEvent
from carpsim.statesync.record import FlowKey, StateRecord
from carpsim.wire import ctnetlink as nl

_T = TypeVar("_T")


def _encoded(build: Callable[[_T, int], bytes], item: _T, seq: int) -> bytes | None:
    """One message, or None if a field does not fit its netlink attribute: the replicator
    range-checks what it decodes, so this is the last line, and one bad record must not stop
    the rest of its batch from reaching the kernel (the caller counts it as EINVAL)."""
    try:
        return build(item, seq)
    except (struct.error, ValueError, OverflowError):
        return None


log = logging.getLogger(__name__)
T = TypeVar("T")

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
NETNS_DIR = "/run/netns"
IPPROTO_PFSYNC = 240

EventKind = CtChange
CtEvent = LocalEvent
"""(NEW | UPDATE, StateRecord), (DESTROY, FlowKey) or (OVERRUN, None): the replicator's input."""


class ConntrackError(CarpsimError):
    """The kernel refused a conntrack request for a reason that is not a benign race."""

    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"{what}: {errno.errorcode.get(code, code)} ({os.strerror(code)})")
        self.errno = code


def run_in_netns(name: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a helper thread that lives in namespace `name`; return or re-raise its outcome.

    For tests and tools driving several namespaces from one process; the daemon itself simply
    runs inside its namespace.
    """
    box: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            with enter_netns(name):
                box.append(fn())
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=body, name=f"netns-{name}")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]
    return box[0]


def set_sysctl(key: str, value: int | str, netns: str | None = None) -> None:
    """Write /proc/sys/net/netfilter/<key> (e.g. nf_conntrack_tcp_loose) in a namespace."""
    with enter_netns(netns), open(f"/proc/sys/net/netfilter/{key}", "w") as fh:
        fh.write(f"{value}\n")


def get_sysctl(key: str, netns: str | None = None) -> str:
    with enter_netns(netns), open(f"/proc/sys/net/netfilter/{key}") as fh:
        return fh.read().strip()


def enable_events(netns: str | None = None) -> None:
    """nf_conntrack_events=1: every entry carries an event cache, so it reports updates/destroy.

    The kernel default (2) attaches it only to entries created while a listener exists, so an
    entry that predates the subscriber would die silently. Call before traffic starts.
    """
    set_sysctl("nf_conntrack_events", 1, netns)


@dataclass(frozen=True)
class SyncExclusion:
    """Flows never replicated: the sync link's own traffic (pfsync proto 240, its addresses)."""

    protos: frozenset[int] = frozenset({IPPROTO_PFSYNC})
    addresses: frozenset[bytes] = frozenset()

    def excludes(self, key: FlowKey) -> bool:
        return key.proto in self.protos or key.src in self.addresses or key.dst in self.addresses


@dataclass
class BatchResult:
    """Outcome of apply_many / delete_many; races (EEXIST/ENOENT) are counted, not failures."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    missing: int = 0
    """Deletes or updates of entries that were already gone."""
    failed: list[tuple[FlowKey, int]] = field(default_factory=list)
    """(key, errno) for every other refusal."""


def _open_socket(rcvbuf: int, groups: int = 0) -> socket.socket:
    sock = socket.socket(
        socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, nl.NETLINK_NETFILTER
    )
    try:
        # Error messages without a copy of the refused request: a batch of failures then
        # fits in the receive buffer.
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


class KernelConntrackTable:
    """ctnetlink access to one namespace's conntrack table (the current one by default)."""

    def __init__(
        self,
        netns: str | None = None,
        *,
        exclude: SyncExclusion | None = None,
        batch_size: int = 200,
        event_rcvbuf: int = 16 << 20,
    ) -> None:
        self.netns = netns
        self.exclude = exclude if exclude is not None else SyncExclusion()
        self.batch_size = max(1, batch_size)
        self._event_rcvbuf = event_rcvbuf
        self._seq = 0
        self._buf = bytearray(1 << 20)
        self._events: socket.socket | None = None
        self._event_buf = bytearray(256 * 1024)
        self.decode_errors = 0
        self.overruns = 0
        self._logged: set[str] = set()
        with enter_netns(netns):
            self._sock = _open_socket(4 << 20)

    # ------------------------------------------------------------- plumbing

    def close(self) -> None:
        self._sock.close()
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> KernelConntrackTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _log_once(self, reason: str, detail: str) -> None:
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("conntrack: %s (%s); further ones only counted", reason, detail)

    def _recv(self) -> memoryview:
        n = self._sock.recv_into(self._buf)
        return memoryview(self._buf)[:n]

    def _send_batch(self, messages: Sequence[bytes], last_seq: int) -> dict[int, int]:
        """Send one batch whose last message carries NLM_F_ACK; return {seq: errno} of failures."""
        self._sock.sendall(b"".join(messages))
        errors: dict[int, int] = {}
        while True:
            for msg in nl.split_messages(self._recv()):
                if msg.msg_type != nl.NLMSG_ERROR:
                    continue
                code = nl.error_code(msg)
                if code:
                    errors[msg.seq] = code
                if msg.seq == last_seq:
                    return errors

    def _request(self, build: Iterable[tuple[int, bytes]]) -> dict[int, int]:
        """Send (seq, message-without-ACK) pairs in batches; the last of each batch gets ACKed."""
        errors: dict[int, int] = {}
        batch: list[bytes] = []
        last = 0
        for seq, msg in build:
            batch.append(msg)
            last = seq
            if len(batch) >= self.batch_size:
                errors.update(self._send_batch(self._ack_last(batch), last))
                batch = []
        if batch:
            errors.update(self._send_batch(self._ack_last(batch), last))
        return errors

    @staticmethod
    def _ack_last(batch: list[bytes]) -> list[bytes]:
        last = bytearray(batch[-1])
        flags = int.from_bytes(last[6:8], "little") | nl.NLM_F_ACK
        last[6:8] = flags.to_bytes(2, "little")
        batch[-1] = bytes(last)
        return batch

    def _multipart(self, request: bytes, seq: int) -> Iterator[nl.NlMessage]:
        """Replies to a GET/dump until NLMSG_DONE (or the single reply of a non-dump GET)."""
        self._sock.sendall(request)
        while True:
            data = bytes(self._recv())
            for msg in nl.split_messages(data):
                if msg.seq != seq:
                    continue
                if msg.msg_type == nl.NLMSG_DONE:
                    return
                if msg.msg_type == nl.NLMSG_ERROR:
                    code = nl.error_code(msg)
                    if code:
                        raise ConntrackError(code, "conntrack request")
                    return
                yield msg
                if not msg.flags & nl.NLM_F_MULTI:
                    return

    # ------------------------------------------------------------- reads

    def iter_records(self) -> Iterator[StateRecord]:
        """Every entry (IPv4 and IPv6) except excluded sync-link flows."""
        seq = self._next_seq()
        for msg in self._multipart(nl.dump_message(seq), seq):
            try:
                record = nl.decode_record(msg.payload)
            except (DecodeError, ValueError) as exc:
                self.decode_errors += 1
                self._log_once("undecodable dump entry", str(exc))
                continue
            if not self.exclude.excludes(record.key):
                yield record

    def snapshot(self) -> list[StateRecord]:
        return list(self.iter_records())

    def get(self, key: FlowKey) -> StateRecord | None:
        seq = self._next_seq()
        try:
            for msg in self._multipart(nl.get_message(key, seq), seq):
                return nl.decode_record(msg.payload)
        except ConntrackError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return None

    def __len__(self) -> int:
        """The kernel's entry count for this namespace (includes excluded flows)."""
        seq = self._next_seq()
        for msg in self._multipart(nl.stats_message(seq), seq):
            return nl.decode_stats_entries(msg.payload)
        return 0

    # ------------------------------------------------------------- writes

    def apply(self, record: StateRecord) -> bool:
        """Create the entry, or update it if it exists; False if it vanished mid-way."""
        result = self.apply_many([record])
        if result.failed:
            raise ConntrackError(result.failed[0][1], "apply conntrack entry")
        return bool(result.created or result.updated)

    def apply_many(self, records: Sequence[StateRecord]) -> BatchResult:
        """Create all entries in batches; those that already exist get an update pass."""
        result = BatchResult()
        seqs: dict[int, int] = {}

        def creates() -> Iterator[tuple[int, bytes]]:
            for i, rec in enumerate(records):
                seq = self._next_seq()
                msg = _encoded(nl.create_message, rec, seq)
                if msg is None:
                    result.failed.append((rec.key, errno.EINVAL))
                    continue
                seqs[seq] = i
                yield seq, msg

        errors = self._request(creates())
        existing: list[int] = []
        for seq, code in errors.items():
            idx = seqs.get(seq)
            if idx is None:
                continue
            if code == errno.EEXIST:
                existing.append(idx)
            else:
                result.failed.append((records[idx].key, code))
        result.created = len(records) - len(existing) - len(result.failed)
        # (failed so far: encode refusals and create errors; update errors come below)
        if existing:
            self._update_pass(records, existing, result)
        return result

    def _update_pass(
        self, records: Sequence[StateRecord], existing: list[int], result: BatchResult
    ) -> None:
        """Entries that already existed get an update each (counted into `result`)."""
        useqs: dict[int, int] = {}
        unencodable = [0]

        def updates() -> Iterator[tuple[int, bytes]]:
            for idx in existing:
                seq = self._next_seq()
                msg = _encoded(nl.update_message, records[idx], seq)
                if msg is None:
                    result.failed.append((records[idx].key, errno.EINVAL))
                    unencodable[0] += 1
                    continue
                useqs[seq] = idx
                yield seq, msg

        uerrors = self._request(updates())
        for seq, code in uerrors.items():
            idx = useqs[seq]
            if code == errno.ENOENT:
                result.missing += 1
            else:
                result.failed.append((records[idx].key, code))
        result.updated = len(existing) - len(uerrors) - unencodable[0]

    def delete(self, key: FlowKey) -> bool:
        """Remove the entry; False if there was none."""
        result = self.delete_many([key])
        if result.failed:
            raise ConntrackError(result.failed[0][1], "delete conntrack entry")
        return result.deleted == 1

    def delete_many(self, keys: Sequence[FlowKey]) -> BatchResult:
        result = BatchResult()
        seqs: dict[int, int] = {}

        def deletes() -> Iterator[tuple[int, bytes]]:
            for i, key in enumerate(keys):
                seq = self._next_seq()
                msg = _encoded(nl.delete_message, key, seq)
                if msg is None:
                    result.failed.append((key, errno.EINVAL))
                    continue
                seqs[seq] = i
                yield seq, msg

        for seq, code in self._request(deletes()).items():
            if code == errno.ENOENT:
                result.missing += 1
            else:
                result.failed.append((keys[seqs[seq]], code))
        result.deleted = len(keys) - result.missing - len(result.failed)
        return result

    def flush(self) -> None:
        """Empty the whole table of this namespace (both families)."""
        seq = self._next_seq()
        errors = self._send_batch([nl.flush_message(seq)], seq)
        if errors:
            raise ConntrackError(errors[seq], "flush conntrack table")

    # ------------------------------------------------------------- events

    def subscribe(self) -> None:
        """Join NEW/UPDATE/DESTROY; events queue in the kernel until read_events()."""
        if self._events is None:
            with enter_netns(self.netns):
                sock = _open_socket(self._event_rcvbuf, nl.GROUPS_CONNTRACK)
            sock.setblocking(False)
            self._events = sock

    def fileno(self) -> int:
        """The event socket's descriptor (subscribes on first use), for loop.add_reader."""
        self.subscribe()
        assert self._events is not None
        return self._events.fileno()

    def read_events(self, max_reads: int = 64) -> list[CtEvent]:
        """Drain pending events without blocking (at most `max_reads` datagrams per call)."""
        self.subscribe()
        sock = self._events
        assert sock is not None
        out: list[CtEvent] = []
        buf = self._event_buf
        for _ in range(max_reads):
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    out.append((CtChange.OVERRUN, None))
                    continue
                raise
            for msg in nl.split_messages(memoryview(buf)[:n]):
                event = self._decode_event(msg)
                if event is not None:
                    out.append(event)
        return out

    def _decode_event(self, msg: nl.NlMessage) -> CtEvent | None:
        try:
            if msg.msg_type == nl.MSG_NEW:
                record = nl.decode_record(msg.payload)
                if self.exclude.excludes(record.key):
                    return None
                kind = CtChange.NEW if msg.flags & nl.NLM_F_CREATE else CtChange.UPDATE
                return (kind, record)
            if msg.msg_type == nl.MSG_DELETE:
                key = nl.decode_key(msg.payload)
                return None if self.exclude.excludes(key) else (CtChange.DESTROY, key)
        except (DecodeError, ValueError) as exc:
            self.decode_errors += 1
            self._log_once("undecodable conntrack event", str(exc))
        return None
