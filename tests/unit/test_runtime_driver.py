"""The generic driver on a real event loop: one timer, re-armed, never early, cancellable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from carpsim.runtime import hrtimer
from carpsim.runtime.driver import Driver, loop_factory


class Alarm:
    """A tiny machine: fires at the deadlines it is given, records the `now` it saw."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []
        self.fired: list[float] = []

    def schedule(self, now: float, delay: float) -> Sequence[str]:
        self.deadlines.append(now + delay)
        self.deadlines.sort()
        return [f"scheduled {delay}"]

    def on_timer(self, now: float) -> Sequence[str]:
        due = [d for d in self.deadlines if d <= now]
        self.deadlines = [d for d in self.deadlines if d > now]
        self.fired.extend([now] * len(due))
        return [f"fired {len(due)}"]

    def next_deadline(self) -> float | None:
        return self.deadlines[0] if self.deadlines else None


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Yield to the loop until `condition()` holds; the timeout only bounds a broken driver."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("factory", [asyncio.new_event_loop, loop_factory()], ids=["asyncio", "uv"])
def test_timer_fires_each_deadline_and_never_early(
    factory: type[asyncio.AbstractEventLoop],
) -> None:
    runner = asyncio.Runner(loop_factory=factory)
    with runner:
        alarm = Alarm()
        executed: list[str] = []

        async def scenario() -> list[float]:
            driver = Driver(alarm, executed.extend, asyncio.get_running_loop())
            driver.feed(alarm.schedule, 0.05)
            driver.feed(alarm.schedule, 0.02)  # an earlier deadline re-arms the one timer
            asked = sorted(alarm.deadlines)
            await until(lambda: len(alarm.fired) >= 2, "both deadlines to fire")
            driver.stop()
            return asked

        asked = runner.run(scenario())
    assert executed[:2] == ["scheduled 0.05", "scheduled 0.02"]
    assert executed.count("fired 1") == 2
    assert len(alarm.fired) == 2
    for want, got in zip(asked, sorted(alarm.fired), strict=True):
        assert got >= want  # a machine never sees a time before its own deadline
    assert alarm.deadlines == []


def test_stop_disarms_the_timer() -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        alarm = Alarm()
        # A second, live driver with a later deadline is the clock: once it has fired, the
        # stopped one's deadline has long passed, so silence means disarmed, not "not yet".
        witness = Alarm()

        async def scenario() -> None:
            loop = asyncio.get_running_loop()
            driver = Driver(alarm, lambda _a: None, loop)
            live = Driver(witness, lambda _a: None, loop)
            driver.feed(alarm.schedule, 0.03)
            live.feed(witness.schedule, 0.06)
            driver.stop()
            await until(lambda: bool(witness.fired), "the witness timer")
            live.stop()

        runner.run(scenario())
    assert len(witness.fired) == 1
    assert alarm.fired == []


def test_a_failing_action_keeps_the_timer_armed() -> None:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        alarm = Alarm()
        calls: list[int] = []

        def explode(actions: list[str]) -> None:
            calls.append(len(actions))
            if len(calls) == 1:
                raise RuntimeError("executor bug")

        async def scenario() -> None:
            driver = Driver(alarm, explode, asyncio.get_running_loop())
            driver.feed(alarm.schedule, 0.02)
            await until(lambda: bool(alarm.fired), "the deadline after the failed action")
            driver.stop()

        runner.run(scenario())
    assert len(alarm.fired) == 1


def test_timerfd_is_used_on_linux() -> None:
    assert hrtimer.available()
