"""Virtual time for the simulator: it only moves when the runner jumps it to the next event."""

from __future__ import annotations


class VirtualClock:
    """Monotonic seconds that never read the host clock."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    @property
    def now(self) -> float:
        return self._now

    def advance_to(self, when: float) -> None:
        if when < self._now:
            raise ValueError(f"virtual time cannot go back from {self._now} to {when}")
        self._now = when
