"""The conntrack dump worker survives a dump the kernel refuses."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator
from types import TracebackType

import pytest

from carpsim.net.conntrack import ConntrackError, SyncExclusion
from carpsim.runtime import ct_dump_worker
from carpsim.runtime.ct_dump_worker import DumpChunk, DumpWorker
from carpsim.statesync.record import StateRecord


class _RefusingOnceTable:
    """Stands in for the kernel: the first dump gets an NLMSG_ERROR, later ones are empty."""

    dumps = 0

    def __init__(self, netns: str | None = None, *, exclude: SyncExclusion) -> None:
        del netns, exclude

    def __enter__(self) -> _RefusingOnceTable:
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def iter_records(self) -> Iterator[StateRecord]:
        type(self).dumps += 1
        if type(self).dumps == 1:
            raise ConntrackError(errno.EBUSY, "conntrack request")
        yield from ()


def test_a_refused_dump_ends_with_an_error_chunk_and_the_worker_keeps_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ct_dump_worker, "KernelConntrackTable", _RefusingOnceTable)

    async def main() -> list[DumpChunk]:
        loop = asyncio.get_running_loop()
        got: list[DumpChunk] = []
        finals: asyncio.Queue[DumpChunk] = asyncio.Queue()

        def on_chunk(chunk: DumpChunk) -> None:
            got.append(chunk)
            if chunk.final:
                finals.put_nowait(chunk)

        worker = DumpWorker(
            SyncExclusion(protos=frozenset(), addresses=frozenset()), loop, on_chunk
        )
        worker.start()
        try:
            worker.request(1, full=True)
            await asyncio.wait_for(finals.get(), 2.0)
            worker.request(2, full=True)
            await asyncio.wait_for(finals.get(), 2.0)
        finally:
            worker.stop()
        return got

    got = asyncio.run(main())
    finals = [c for c in got if c.final]
    assert [c.generation for c in finals] == [1, 2]
    assert finals[0].error is not None
    assert "EBUSY" in finals[0].error
    assert finals[1].error is None
    assert finals[1].present == frozenset()
