"""The state-table interface both backends implement, and the pure in-memory (pf-like) table.

`StateTable` is what the replicator's edge and the kernel conntrack backend share. The in-memory
table adds pfsync's identity index (creatorid, id) so compressed updates and deletes, which carry
only the identity, find their state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from carpsim.statesync.record import FlowKey, StateRecord, tcp_progress


class StateTable(Protocol):
    """A keyed set of connection states (FlowKey = original tuple + zone)."""

    def snapshot(self) -> list[StateRecord]:
        """Every state, in no particular order."""
        ...

    def get(self, key: FlowKey) -> StateRecord | None: ...

    def apply(self, record: StateRecord) -> bool:
        """Insert or update following the pfsync apply rules (`should_apply`); True if changed."""
        ...

    def delete(self, key: FlowKey) -> bool:
        """Remove; deleting an absent key is not an error (returns False)."""
        ...

    def __len__(self) -> int: ...


def should_apply(current: StateRecord | None, incoming: StateRecord) -> bool:
    """pfsync apply rules for a received full record.

    A different (creatorid, id) under the same key is a new connection reusing the tuple and
    replaces the old one. For the same identity, TCP state never moves backwards (pfsync's
    `pfsync_upd_tcp`): such an update is stale and refused as a whole.
    """
    if current is None:
        return True
    if current.creatorid != incoming.creatorid or current.id != incoming.id:
        return True
    if tcp_progress(incoming.tcp_state) < tcp_progress(current.tcp_state):
        return False
    return current != incoming


class InMemoryStateTable:
    """Pure dict-backed table with a (creatorid, id) index; the sim's "kernel" and the mirror."""

    __slots__ = ("_by_id", "_by_key", "_per_creator")

    def __init__(self) -> None:
        self._by_key: dict[FlowKey, StateRecord] = {}
        self._by_id: dict[tuple[int, int], FlowKey] = {}
        # creatorid -> states held: status reports "own"/"peer" without walking the table
        self._per_creator: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[StateRecord]:
        return iter(self._by_key.values())

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def snapshot(self) -> list[StateRecord]:
        return list(self._by_key.values())

    def keys(self) -> list[FlowKey]:
        return list(self._by_key)

    def get(self, key: FlowKey) -> StateRecord | None:
        return self._by_key.get(key)

    def count_creator(self, creatorid: int) -> int:
        """States created by `creatorid` (kept up to date, O(1))."""
        return self._per_creator.get(creatorid, 0)

    def _counted(self, creatorid: int, n: int) -> None:
        per = self._per_creator
        left = per.get(creatorid, 0) + n
        if left:
            per[creatorid] = left
        else:
            del per[creatorid]

    def by_id(self, creatorid: int, sid: int) -> StateRecord | None:
        key = self._by_id.get((creatorid, sid))
        return None if key is None else self._by_key[key]

    def put(self, record: StateRecord) -> bool:
        """Store unconditionally (local kernel truth); True if anything changed."""
        old = self._by_key.get(record.key)
        if old == record:
            return False
        if old is None:
            per = self._per_creator
            per[record.creatorid] = per.get(record.creatorid, 0) + 1
        elif (old.creatorid, old.id) != (record.creatorid, record.id):
            self._by_id.pop((old.creatorid, old.id), None)
            if old.creatorid != record.creatorid:
                self._counted(old.creatorid, -1)
                self._counted(record.creatorid, 1)
        self._by_key[record.key] = record
        if record.id or record.creatorid:
            ident = (record.creatorid, record.id)
            other = self._by_id.get(ident)
            if other is not None and other != record.key:
                # One identity names one flow: a reused id evicts the stale holder.
                del self._by_key[other]
                self._counted(record.creatorid, -1)
            self._by_id[ident] = record.key
        return True

    def apply(self, record: StateRecord) -> bool:
        if not should_apply(self._by_key.get(record.key), record):
            return False
        return self.put(record)

    def delete(self, key: FlowKey) -> bool:
        old = self._by_key.pop(key, None)
        if old is None:
            return False
        self._counted(old.creatorid, -1)
        if self._by_id.get((old.creatorid, old.id)) == key:
            del self._by_id[(old.creatorid, old.id)]
        return True

    def delete_by_id(self, creatorid: int, sid: int) -> FlowKey | None:
        key = self._by_id.get((creatorid, sid))
        if key is None:
            return None
        self.delete(key)
        return key

    def clear_creator(self, creatorid: int) -> list[FlowKey]:
        """pfsync CLR: drop every state created by `creatorid`; returns the removed keys."""
        gone = [k for k, r in self._by_key.items() if r.creatorid == creatorid]
        for k in gone:
            self.delete(k)
        return gone
