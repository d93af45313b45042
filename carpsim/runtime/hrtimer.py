"""A precise one-shot timer for the event loop, backed by Linux timerfd.

Why not ``loop.call_at``: the kernel pads every ``epoll_wait`` timeout of a normal task by
0.1 % of its length (select_estimate_accuracy), so a 3.39 s master-down timer fires ~3.4 ms late,
and libuv (uvloop) rounds timers to whole milliseconds on top. A timerfd armed at an absolute
CLOCK_MONOTONIC deadline only gets the task's timer slack (50 us by default), which is what lets
the takeover overhead stay within a few milliseconds of the protocol's bound. Python 3.11 has no
``os.timerfd_*`` (added in 3.13), hence the small ctypes binding.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_TIMER_ABSTIME = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        _ = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _load_libc()


def monotonic() -> float:
    """The clock every driver input is stamped with (CLOCK_MONOTONIC, full resolution)."""
    return time.monotonic()


class TimerFd:
    """One re-armable absolute-deadline timer whose expiry runs `callback` on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        if _LIBC is None:
            raise OSError("timerfd is not available on this system")
        fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self._fd: int = fd
        self._loop = loop
        self._callback = callback
        loop.add_reader(fd, self._readable)

    def arm(self, deadline: float | None) -> None:
        """Fire once at `deadline` (monotonic seconds); None disarms."""
        spec = _Itimerspec()
        if deadline is not None:
            # An all-zero value would disarm: a deadline in the past must still fire.
            ns = max(1, round(deadline * 1e9))
            spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(ns, 1_000_000_000)
        assert _LIBC is not None
        if _LIBC.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def _readable(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # re-armed between expiry and this read: not due any more
        self._callback()

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


def available() -> bool:
    return _LIBC is not None
