"""The failover TCP link: dhcpd's transport for one `FailoverMachine`.

As ISC dhcpd does, we listen on our own port (bound to our interface address) and also connect
to the peer's port; whichever connection comes up first carries the protocol, a second one is
closed. An accepted connection whose source is not the configured peer address is refused and
counted (``foreign_peer``). The machine's `Close` aborts the socket (an RST, as dhcpd resets a
link whose receive timer expired). Durable writes (`PersistLease`, `PersistFailoverState`) are
handed to the caller's callbacks, which must finish before returning: the BNDACK that follows
in the same action list is written only after them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import cast

from carpsim.dhcp.failover.events import (
    Action,
    Close,
    Connect,
    CountDrop,
    PeerStateChanged,
    PersistFailoverState,
    PersistLease,
    Send,
    StateChanged,
    StateRecord,
)
from carpsim.dhcp.failover.machine import FailoverMachine
from carpsim.dhcp.lease import Lease
from carpsim.runtime.driver import Driver

log = logging.getLogger(__name__)

MAX_READ = 65536
WRITE_LIMIT = 1 << 20
"""Bytes queued in the kernel and transport before the link is considered dead (bounded)."""


def wall() -> int:
    return int(time.time())


class _Conn(asyncio.Protocol):
    def __init__(self, link: FailoverLink, outgoing: bool) -> None:
        self.link = link
        self.outgoing = outgoing
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass (the node runs on it).
        self.transport = cast(asyncio.Transport, transport)
        self.link._made(self)

    def data_received(self, data: bytes) -> None:
        self.link._data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._lost(self, "reset" if exc else "closed")


class FailoverLink:
    """Runs `machine` on real TCP sockets inside the current network namespace."""

    def __init__(
        self,
        machine: FailoverMachine,
        local: IPv4Address,
        loop: asyncio.AbstractEventLoop,
        *,
        persist_lease: Callable[[Lease], None] = lambda lease: None,
        persist_state: Callable[[StateRecord], None] = lambda record: None,
    ) -> None:
        self.machine = machine
        self.local = local
        self.loop = loop
        self.persist_lease = persist_lease
        self.persist_state = persist_state
        self.driver = Driver(machine, self._execute, loop)
        self.drops: Counter[str] = Counter()
        self.transitions: list[StateChanged] = []
        self._server: asyncio.Server | None = None
        self._active: _Conn | None = None
        self._connecting = False

    async def start(self, saved: StateRecord | None = None) -> None:
        settings = self.machine.settings
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((str(self.local), settings.my_port))
        self._server = await self.loop.create_server(lambda: _Conn(self, False), sock=sock)
        self.driver.feed(self.machine.start, wall(), saved)

    def stop(self) -> None:
        self.driver.stop()
        if self._server is not None:
            self._server.close()
        if self._active is not None and self._active.transport is not None:
            self._active.transport.abort()
        self._active = None

    # ---------------------------------------------------------------- transport events

    def _made(self, conn: _Conn) -> None:
        assert conn.transport is not None
        peer = conn.transport.get_extra_info("peername")
        if not conn.outgoing and (
            peer is None or IPv4Address(peer[0]) != self.machine.settings.peer
        ):
            self.drops["foreign_peer"] += 1
            log.warning("failover: refused a connection from %s (not the peer)", peer)
            conn.transport.abort()
            return
        if self._active is not None:
            conn.transport.abort()  # one link per relationship; the first one wins
            return
        conn.transport.set_write_buffer_limits(high=WRITE_LIMIT)
        self._active = conn
        self.driver.feed(self.machine.connection_up, wall())

    def _data(self, conn: _Conn, data: bytes) -> None:
        if conn is self._active:
            self.driver.feed(self.machine.data_received, wall(), data)

    def _lost(self, conn: _Conn, reason: str) -> None:
        if conn is self._active:
            self._active = None
            self.driver.feed(self.machine.connection_lost, wall(), reason)

    async def _connect(self, peer: IPv4Address, port: int) -> None:
        try:
            await self.loop.create_connection(
                lambda: _Conn(self, True), str(peer), port, local_addr=(str(self.local), 0)
            )
        except OSError as exc:
            log.debug("failover: connect to %s:%d failed: %s", peer, port, exc)
            if self._active is None:
                self.driver.feed(self.machine.connection_lost, wall(), "refused")
        finally:
            self._connecting = False

    # ---------------------------------------------------------------- actions

    def _execute(self, actions: list[Action]) -> None:
        for act in actions:
            if isinstance(act, Send):
                self._write(act.data)
            elif isinstance(act, Connect):
                if self._active is None and not self._connecting:
                    self._connecting = True
                    self.loop.create_task(self._connect(act.peer, act.port))
            elif isinstance(act, Close):
                conn, self._active = self._active, None
                log.info("failover: closing the link: %s", act.reason)
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()
            elif isinstance(act, PersistLease):
                self.persist_lease(act.lease)
            elif isinstance(act, PersistFailoverState):
                self.persist_state(act.record)
            else:
                self._note(act)

    def _write(self, data: bytes) -> None:
        conn = self._active
        if conn is None or conn.transport is None:
            return
        if conn.transport.get_write_buffer_size() > WRITE_LIMIT:
            self.drops["write_overflow"] += 1
            conn.transport.abort()
        else:
            conn.transport.write(data)

    def _note(self, act: Action) -> None:
        if isinstance(act, StateChanged):
            self.transitions.append(act)
            log.info(
                "failover peer %s: I move from %s to %s (%s)",
                self.machine.name, act.old.word, act.new.word, act.reason,
            )  # fmt: skip
        elif isinstance(act, PeerStateChanged):
            old = act.old.word if act.old is not None else "unknown-state"
            log.info("failover peer %s: peer moves from %s to %s",
                     self.machine.name, old, act.new.word)  # fmt: skip
        elif isinstance(act, CountDrop):
            self.drops[act.reason] += 1
            if self.drops[act.reason] == 1:  # once per reason: a flood must not flood the log
                log.warning("failover peer %s: %s (%s)", self.machine.name, act.reason, act.detail)
