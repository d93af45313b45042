"""The control socket answers every line, whatever the line or the command does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

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
