"""Many long-lived TCP streams for the state-sync failover tests (run inside lab namespaces).

    python statesync_streams.py serve PORT
    python statesync_streams.py client HOST PORT COUNT OUT.json

The server sends every connection a counter-stamped stream: a 256-byte chunk every
`INTERVAL` seconds, whose first 8 bytes are the chunk number. The client holds COUNT connections,
checks the stamps (a gap or a repeat would mean the stream was corrupted), and every 0.2 s
atomically rewrites OUT.json with per-stream bytes, chunk count, time of the last chunk and the
first error (reset, EOF, bad stamp) with its time. Times are CLOCK_MONOTONIC, comparable with
the daemons' events JSONL on the same host.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import time

CHUNK = 256
INTERVAL = 0.2
STAMP = struct.Struct("!Q")


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    n = 0
    pad = bytes(CHUNK - STAMP.size)
    try:
        while True:
            writer.write(STAMP.pack(n) + pad)
            n += 1
            await writer.drain()
            await asyncio.sleep(INTERVAL)
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_serve_one, "0.0.0.0", port, backlog=1024)
    async with server:
        await server.serve_forever()


class Stream:
    __slots__ = ("bytes", "chunks", "error", "error_at", "last_at", "opened_at")

    def __init__(self) -> None:
        self.bytes = 0
        self.chunks = 0
        self.last_at = 0.0
        self.opened_at = 0.0
        self.error: str | None = None
        self.error_at: float | None = None


async def _client_one(host: str, port: int, st: Stream) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        st.error, st.error_at = f"connect: {exc.__class__.__name__}", time.monotonic()
        return
    st.opened_at = time.monotonic()
    try:
        while True:
            data = await reader.readexactly(CHUNK)
            (stamp,) = STAMP.unpack_from(data)
            if stamp != st.chunks:
                st.error, st.error_at = f"stamp {stamp} != {st.chunks}", time.monotonic()
                return
            st.chunks += 1
            st.bytes += CHUNK
            st.last_at = time.monotonic()
    except asyncio.IncompleteReadError:
        st.error, st.error_at = "eof", time.monotonic()
    except OSError as exc:
        st.error, st.error_at = exc.__class__.__name__, time.monotonic()
    finally:
        writer.close()


def _dump(path: str, streams: list[Stream]) -> None:
    data = {
        "t": time.monotonic(),
        "bytes": [s.bytes for s in streams],
        "last_at": [s.last_at for s in streams],
        "opened": sum(1 for s in streams if s.opened_at),
        "errors": {str(i): [s.error, s.error_at] for i, s in enumerate(streams) if s.error},
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


async def client(host: str, port: int, count: int, out: str) -> None:
    streams = [Stream() for _ in range(count)]
    tasks = []
    for st in streams:
        tasks.append(asyncio.create_task(_client_one(host, port, st)))
        await asyncio.sleep(0.002)  # a steady trickle of SYNs rather than one burst
    while True:
        _dump(out, streams)
        await asyncio.sleep(0.2)


def main(argv: list[str]) -> int:
    if argv[0] == "serve":
        asyncio.run(serve(int(argv[1])))
    elif argv[0] == "client":
        asyncio.run(client(argv[1], int(argv[2]), int(argv[3]), argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
