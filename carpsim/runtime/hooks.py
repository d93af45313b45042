"""Up/down scripts run like ucarp's (``script <ifname> <vip>``), but never on the advert path.

ucarp forks and *waits* for its scripts, which delays adverts (ucarp spawn.c). Here each
script is an asyncio subprocess; calls for one VHID are chained so an up never overtakes the
down that preceded it, while the protocol loop keeps running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)


class HookRunner:
    def __init__(self, timeout: float = 30.0) -> None:
        self._timeout = timeout
        self._chains: dict[int, asyncio.Task[None]] = {}
        self.completed: list[tuple[str, int | None]] = []

    def run(self, key: int, script: str, args: Sequence[str]) -> None:
        """Queue ``script *args`` after the previous hook for `key` (a VHID)."""
        previous = self._chains.get(key)
        self._chains[key] = asyncio.get_running_loop().create_task(
            self._after(previous, script, list(args))
        )

    async def _after(
        self, previous: asyncio.Task[None] | None, script: str, args: list[str]
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                script,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            log.warning("hook %s %s failed to start: %s", script, " ".join(args), exc)
            self.completed.append((script, None))
            return
        try:
            code = await asyncio.wait_for(proc.wait(), self._timeout)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
            log.warning("hook %s %s killed after %.0f s", script, " ".join(args), self._timeout)
        if code != 0:
            log.warning("hook %s %s exited %s", script, " ".join(args), code)
        self.completed.append((script, code))

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for every queued hook; used on shutdown."""
        tasks = list(self._chains.values())
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
