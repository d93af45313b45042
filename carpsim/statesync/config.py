"""Frozen replicator configuration; every validation failure names its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address

from carpsim.errors import ConfigError
from carpsim.statesync.constants import (
    HEADER_LEN,
    IPPROTO_PFSYNC,
    STATE_1400_LEN,
    SUBHEADER_LEN,
    XNACK_LEN,
    XSEQ_LEN,
)

XAUTH_LEN = 32

IPV4_HEADER = 20
_POSITIVE_FLOATS = (
    "flush_interval", "bulk_tick", "bulk_retry_interval", "bulk_timeout",
    "refresh_interval", "ack_delay", "resend_timeout", "nack_interval", "echo_window",
    "tombstone_window", "bulk_min_interval",
)  # fmt: skip
_POSITIVE_INTS = (
    "bulk_frames_per_tick", "bulk_max_tries", "ack_every", "resend_burst",
    "resend_queue_frames", "reorder_window", "refresh_max_per_interval",
    "reorder_window_bytes", "echoes_per_key", "tombstone_max",
)  # fmt: skip


@dataclass(frozen=True)
class ReplicatorConfig:
    creatorid: int
    """This node's 32-bit pfsync host id (non-zero); stamped on states it creates."""
    mtu: int = 1500
    """Sync link MTU; frames are filled up to mtu - 20 (IPv4 header)."""
    reliable: bool = True
    """Use the carpsim XSEQ/XNACK extension (sequence, ACK, NACK, resend). Off = plain v5."""
    flush_interval: float = 0.1
    """Coalescing delay for incremental changes (pfsync waits up to 1 s; we default lower)."""
    bulk_tick: float = 0.02
    """Pacing tick of a bulk transfer we serve (OpenBSD: 20 ms)."""
    bulk_frames_per_tick: int = 150
    """Frames of full states sent per bulk tick (150 x 5 states / 20 ms = 37 500 states/s: a 50k
    table in < 2 s of pacing on a dedicated sync link; 225 kB per tick fits the 4 MB socket
    buffers; the resend queue's back-pressure still bounds what is in flight)."""
    bulk_retry_interval: float = 2.0
    """Re-send our bulk request this often until BUS START arrives (OpenBSD: 2 s)."""
    bulk_max_tries: int = 12
    """Give up (and become ready anyway, reason bulk_gave_up) after this many requests."""
    bulk_timeout: float = 10.0
    """While receiving a bulk: silence this long counts as a failed try."""
    refresh_interval: float = 1.0
    """Period of the liveness refresh (UPD_C for states whose packet counters moved)."""
    refresh_max_per_interval: int = 20000
    """Cap on refresh UPD_Cs per interval (pfsync's maxupd spirit)."""
    sweep_per_interval: int = 64
    """Additionally refresh this many local states per interval round-robin (0 = off)."""
    ack_every: int = 16
    """Send a stand-alone cumulative ACK after this many unacknowledged received frames."""
    ack_delay: float = 0.05
    """...or this long after the first unacknowledged frame (conntrackd: 1 s ALIVE timer)."""
    resend_timeout: float = 0.25
    """Re-send a frame not acknowledged within this long."""
    resend_burst: int = 16
    """At most this many timed-out frames are re-sent per timer run."""
    resend_queue_frames: int = 4096
    """Bound of the resend queue; overflow abandons the oldest and forces a bulk push."""
    nack_interval: float = 0.1
    """Minimum spacing of repeated NACKs for the same gap."""
    reorder_window: int = 8192
    """Out-of-order frames held back at most: a frame further ahead is dropped (`window`) and
    comes again by NACK/RTO."""
    reorder_window_bytes: int = 16 << 20
    """...and at most this many bytes of them (2,000 held 64 KiB frames once took 900 MiB)."""
    bulk_min_interval: float = 1.0
    """A bulk we serve starts at most this often; requests meanwhile coalesce into one (a frame
    of repeated UPD_REQ 0/0 used to restart the bulk once per record)."""
    echoes_per_key: int = 8
    """Expected kernel echoes kept per key (oldest dropped first, counted `echo_overflow`)."""
    tombstone_max: int = 1 << 18
    """Deleted identities remembered at most (oldest forgotten first, `tombstone_overflow`)."""
    echo_window: float = 5.0
    """How long a kernel event matching one of our own installs/removals counts as its echo."""
    tombstone_window: float = 30.0
    """How long a locally deleted identity is refused if it comes back from the peer."""
    excluded_protos: frozenset[int] = field(default_factory=lambda: frozenset({IPPROTO_PFSYNC}))
    """Never replicate states of these IP protocols (the sync traffic itself)."""
    excluded_addresses: frozenset[str] = frozenset()
    """Never replicate states with one of these addresses as endpoint (sync link addresses)."""
    key: bytes | None = field(default=None, repr=False)
    """Shared sync key: every frame sealed with an XAUTH HMAC (statesync/auth.py); None =
    plain pfsync frames. Never logged (repr=False) nor shown in status."""

    def __post_init__(self) -> None:
        if not 0 < self.creatorid <= 0xFFFFFFFF:
            raise ConfigError("creatorid", f"must be 1..2^32-1, got {self.creatorid}")
        if self.frame_budget() < STATE_1400_LEN:
            raise ConfigError("mtu", f"too small for one state record: {self.mtu}")
        for name in _POSITIVE_FLOATS:
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be > 0")
        for name in _POSITIVE_INTS:
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be >= 1")
        if self.sweep_per_interval < 0:
            raise ConfigError("sweep_per_interval", "must be >= 0")
        if self.key is not None and not self.key:
            raise ConfigError("key", "must not be empty")
        for addr in self.excluded_addresses:
            try:
                ip_address(addr)
            except ValueError as exc:
                raise ConfigError("excluded_addresses", f"not an IP address: {addr!r}") from exc

    def frame_budget(self) -> int:
        """Bytes available for data subheaders+records in one frame."""
        return (
            self.mtu
            - IPV4_HEADER
            - HEADER_LEN
            - SUBHEADER_LEN
            - (SUBHEADER_LEN + XSEQ_LEN if self.reliable else 0)
            - (SUBHEADER_LEN + XAUTH_LEN if self.key else 0)
        )

    def states_per_frame(self) -> int:
        return (self.frame_budget() - SUBHEADER_LEN) // STATE_1400_LEN

    def max_nacks(self) -> int:
        return max(1, (self.frame_budget() - SUBHEADER_LEN) // XNACK_LEN)

    def excluded_raw(self) -> frozenset[bytes]:
        return frozenset(ip_address(a).packed for a in self.excluded_addresses)
