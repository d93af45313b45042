"""The control socket answers every line, whatever the line or the command does."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from carpsim.runtime.control import ControlServer


def _boom(_request: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("a bug in a command handler")


async def _exchange(path: str, lines: list[bytes]) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(path)
    replies = []
    for line in lines:
        writer.write(line + b"\n")
        await writer.drain()
        replies.append(json.loads(await reader.readline()))
    writer.close()
    await writer.wait_closed()
    return replies


def test_hostile_lines_and_failing_commands_get_an_error_reply(tmp_path: Path) -> None:
    async def scenario() -> list[dict[str, Any]]:
        server = ControlServer(str(tmp_path / "c.sock"), lambda: {"node": "n1"})
        server.add_command("boom", _boom)
        await server.start()
        try:
            return await _exchange(server.path, [
                b"[" * 50_000,  # nests deeper than the JSON parser's recursion limit
                b"not json",
                b'{"cmd": "boom"}',
                b'{"cmd": 7}',
                b'{"cmd": "status"}',
            ])  # fmt: skip
        finally:
            await server.close()

    nested, garbage, boom, bad_cmd, status = asyncio.run(scenario())
    assert nested == {"ok": False, "error": "not JSON"}
    assert garbage == {"ok": False, "error": "not JSON"}
    assert boom == {"ok": False, "error": "internal error: RuntimeError"}
    assert bad_cmd["ok"] is False
    assert status == {"ok": True, "node": "n1"}


def test_the_socket_is_never_reachable_at_the_umask_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Record the mode the socket has the instant bind() created it, before any chmod.
    modes: list[int] = []
    real = asyncio.start_unix_server

    async def spying(*args: Any, **kwargs: Any) -> asyncio.AbstractServer:
        server = await real(*args, **kwargs)
        modes.append(stat.S_IMODE(os.stat(kwargs["path"]).st_mode))
        return server

    monkeypatch.setattr(asyncio, "start_unix_server", spying)
    old = os.umask(0)
    try:

        async def scenario() -> int:
            server = ControlServer(str(tmp_path / "c.sock"), lambda: {"node": "n1"})
            await server.start()
            mode = stat.S_IMODE(os.stat(server.path).st_mode)
            await server.close()
            return mode

        final = asyncio.run(scenario())
    finally:
        os.umask(old)
    assert modes == [0o600]
    assert final == 0o600
    assert os.umask(old) == old  # the daemon's umask is restored after bind
