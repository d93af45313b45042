"""Actions the Replicator asks its edge to carry out, and the typed local events it takes.

Inputs are methods on `Replicator`; `LocalEvent` is what the conntrack pump produces.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from carpsim.statesync.constants import SyncDropReason
from carpsim.statesync.record import FlowKey, StateRecord


class CtChange(enum.StrEnum):
    """Kind of a conntrack event (string values: the names conntrack tools use)."""

    NEW = "new"
    UPDATE = "update"
    DESTROY = "destroy"
    OVERRUN = "overrun"
    """The kernel dropped events (socket buffer full): only a full dump can resync."""


LocalEvent = tuple[CtChange, StateRecord | FlowKey | None]
"""(NEW | UPDATE, StateRecord), (DESTROY, FlowKey) or (OVERRUN, None)."""


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
    """Replicator readiness flipped; not ready => the edge demotes CARP (as pfsync does).

    reasons: starting, link_down, bulk_pending, bulk_done, bulk_gave_up.
    """

    ready: bool
    reason: str


@dataclass(frozen=True)
class CountDrop:
    """Received input was dropped or refused; count it under `reason`."""

    reason: SyncDropReason
    detail: str = ""


@dataclass(frozen=True)
class ResyncNeeded:
    """Local events were lost: answer with a full kernel dump (`local_snapshot` for its
    records, then `local_resync` with the keys it saw)."""


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
    | ResyncNeeded
)
