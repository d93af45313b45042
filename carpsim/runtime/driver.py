"""The one asyncio adapter for every pure machine (CARP now, state sync later).

Modelled on aioquic's ``asyncio/protocol.py``: each input is fed with the current monotonic
time, the returned actions are executed at once, and exactly one timer is re-armed at the
machine's ``next_deadline()``. When the timer fires, ``now`` is clamped to the deadline so a
machine never sees a time earlier than the one it asked for.

The clock is CLOCK_MONOTONIC read directly rather than ``loop.time()``: uvloop's ``time()`` is a
millisecond-granular cached value, too coarse for OpenBSD advbase-0 intervals (3.9 ms steps).
The timer is a timerfd (see `hrtimer`) so long timeouts are not padded by the kernel's 0.1 %
epoll slack; ``loop.call_at`` is the fallback where timerfd does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Concatenate, Generic, ParamSpec, Protocol, TypeVar

from carpsim.runtime import hrtimer

A = TypeVar("A")
A_co = TypeVar("A_co", covariant=True)
P = ParamSpec("P")

log = logging.getLogger(__name__)


class Timed(Protocol[A_co]):
    """What the driver needs from a machine: a timer input and its next deadline."""

    def on_timer(self, now: float) -> Sequence[A_co]: ...

    def next_deadline(self) -> float | None: ...


class Driver(Generic[A]):
    """Feed inputs to `machine`, hand its actions to `execute`, keep one timer armed."""

    def __init__(
        self,
        machine: Timed[A],
        execute: Callable[[list[A]], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.machine = machine
        self._execute = execute
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stopped = False
        self._timerfd = hrtimer.TimerFd(loop, self._handle_timer) if hrtimer.available() else None

    def now(self) -> float:
        return hrtimer.monotonic()

    def feed(
        self,
        method: Callable[Concatenate[float, P], Sequence[A]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """Call ``method(now, *args)`` on the machine, execute the actions, re-arm the timer.

        `method` keeps its type: mypy checks `args` against the input's own signature.
        """
        self._run(method, self.now(), *args, **kwargs)

    def _run(
        self,
        method: Callable[Concatenate[float, P], Sequence[A]],
        now: float,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        try:
            actions = list(method(now, *args, **kwargs))
            self._execute(actions)
        except Exception:
            # A bug in one action must not leave the machine without a timer (a silent MASTER
            # that stops advertising is worse than a logged traceback).
            log.exception("driver: input %s failed", getattr(method, "__name__", method))
        finally:
            self._rearm()

    def _rearm(self) -> None:
        if self._stopped:
            return
        deadline = self.machine.next_deadline()
        if deadline == self._timer_at:
            return
        self._timer_at = deadline
        if self._timerfd is not None:
            self._timerfd.arm(deadline)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            # loop.time() and time.monotonic() share CLOCK_MONOTONIC; convert to be exact.
            when = self._loop.time() + (deadline - self.now())
            self._timer = self._loop.call_at(when, self._handle_timer)

    def _handle_timer(self) -> None:
        now = self.now()
        at = self._timer_at if self._timer_at is not None else now
        self._timer = None
        self._timer_at = None
        self._run(self.machine.on_timer, max(at, now))

    def stop(self) -> None:
        """Cancel the timer; later inputs still execute but nothing is re-armed."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None
        if self._timerfd is not None:
            self._timerfd.close()
            self._timerfd = None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop when installed (a declared dependency), else asyncio's.

    Used as ``asyncio.Runner(loop_factory=...)`` rather than a global policy: helper threads
    (pyroute2's private loop) must keep getting standard asyncio loops.
    """
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
