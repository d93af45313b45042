"""The link watcher can re-read every link after the kernel drops its events (ENOBUFS).

Real kernel, real netlink socket (read-only: it dumps this namespace's links), so it lives in the
integration tier and carries the netns marker, not in the pure unit tier.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from carpsim.net.links import LinkWatcher

pytestmark = [pytest.mark.netns]


def test_resync_reports_every_link_as_an_event() -> None:
    # Read-only: it asks this namespace's kernel for its links and changes nothing.
    seen: dict[int, int] = {}

    async def scenario() -> None:
        watcher = LinkWatcher(lambda index, flags, _deleted: seen.__setitem__(index, flags))
        watcher.start(asyncio.get_running_loop())
        try:
            watcher.resync()
            for _ in range(50):
                if seen:
                    break
                await asyncio.sleep(0.02)
        finally:
            watcher.close()

    asyncio.run(scenario())
    lo = socket.if_nametoindex("lo")
    assert lo in seen
    assert seen[lo] & 0x8  # IFF_LOOPBACK: the dump carried real flags, not a placeholder
    assert set(seen) == {index for index, _name in socket.if_nameindex()}
