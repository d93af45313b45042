"""Run a `Node` until SIGTERM/SIGINT (or a control ``shutdown``), then clean up.

A clean stop sends the bow-out advert (peers take over at once), removes the VIPs and the
macvlans, and exits 0. SIGKILL cannot be handled: the VIP and the macvlan stay configured until
the next start, which reclaims them (`Node._reclaim`) before creating its own.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from carpsim.runtime.driver import loop_factory
from carpsim.runtime.node import Node
from carpsim.runtime.nodeconfig import NodeConfig


def setup_logging(node: str, verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {node} %(levelname)s %(message)s",
        stream=sys.stderr,
    )


async def serve(node: Node) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop_requested.set)
    try:
        await node.start()
        await node.stop_requested.wait()
    finally:
        await node.stop()
    return 0


def run(config: NodeConfig, *, verbose: bool = False) -> int:
    """Validate against the host (ConfigError, nothing changed), then run until stopped."""
    setup_logging(config.name, verbose)

    async def main() -> int:
        node = Node(config)
        node.prepare()
        return await serve(node)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main())
