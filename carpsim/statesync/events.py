"""Actions the Replicator asks its edge to carry out (inputs are methods on `Replicator`)."""

from __future__ import annotations

from dataclasses import dataclass

from carpsim.statesync.record import FlowKey, StateRecord


@dataclass(frozen=True)
class Transmit:
    """Send this pfsync payload (from the pfsync header on) as IP proto 240, TTL 255, to the
    configured sync peer/group. The edge adds the IPv4 header."""

    data: bytes


@dataclass(frozen=True)
class InstallStates:
    """Create or update these peer-supplied states in the local kernel (and its bookkeeping)."""

    records: tuple[StateRecord, ...]


@dataclass(frozen=True)
class RemoveStates:
    """Delete these states from the local kernel; absent ones are not an error."""

    keys: tuple[FlowKey, ...]


@dataclass(frozen=True)
class ReadyChanged:
    """Replicator readiness flipped; not ready => the edge demotes CARP (spec §1.7).

    reasons: starting, link_down, bulk_pending, bulk_done, bulk_gave_up.
    """

    ready: bool
    reason: str


@dataclass(frozen=True)
class CountDrop:
    """Received input was dropped or refused; count it under `reason` (SyncDropReason value)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class BulkCompleted:
    """Our bulk request finished (BUS END) or was given up; `duration` from the first request."""

    duration: float
    count: int
    gave_up: bool = False


@dataclass(frozen=True)
class BulkServed:
    """We finished sending a bulk transfer to the peer (requested, or pushed after loss)."""

    duration: float
    count: int
    pushed: bool


@dataclass(frozen=True)
class PeerRestarted:
    """The peer's epoch changed (first contact: old_epoch 0); its stream was re-based."""

    old_epoch: int
    new_epoch: int


Action = (
    Transmit
    | InstallStates
    | RemoveStates
    | ReadyChanged
    | CountDrop
    | BulkCompleted
    | BulkServed
    | PeerRestarted
)
