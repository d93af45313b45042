"""`carpsim lab web [--port N]`: the lab's status pages in a browser, live.

Binds 127.0.0.1 in the host's namespace only: the server reads the nodes' control sockets (unix
sockets under the lab's run dir) and runs the lab's own actions, so it needs no lab address.
Mutating requests need the token embedded in the page (printed nowhere else).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from types import FrameType
from typing import Any

DEFAULT_PORT = 8480


def _serve(args: argparse.Namespace) -> int:
    from carpsim.web import lab_app  # noqa: PLC0415 - keeps `carpsim --help` free of aiohttp

    async def main() -> None:
        runner, url, _token = await lab_app.serve(getattr(args, "prefix", None), args.port)
        print(f"carpsim lab web: {url}  (Ctrl-C stops it)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main_pid = os.getpid()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            # Not loop.add_signal_handler: its wakeup fd is inherited by the helpers pyroute2
            # forks to read links in the lab's namespaces, and a helper's own SIGTERM written
            # there would stop this server. A forked helper dies as it would have.
            if os.getpid() != main_pid:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            loop.call_soon_threadsafe(stop.set)

        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            await stop.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            await runner.cleanup()

    asyncio.run(main())
    return 0


def add_parser(sub: Any) -> None:
    """Registers ``carpsim lab web`` on the `carpsim lab` subparsers."""
    p = sub.add_parser("web", help="serve the lab's status pages on 127.0.0.1 (live, in a browser)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: any)"
    )
    p.set_defaults(func=_serve)
