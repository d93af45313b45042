"""The control socket: a unix stream socket speaking one JSON object per line each way.

Requests: ``{"cmd": "status"}``, ``{"cmd": "demote", "value": n}``, ``{"cmd": "shutdown"}``, and
whatever other subsystems register. Responses always carry ``"ok"``; errors add ``"error"``.

`status` is built from a base provider (the CARP node's fields at top level) plus named
sections that later subsystems register with `add_section` (e.g. ``"statesync"``), each a
callable returning JSON-able data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
Command = Callable[[JsonDict], JsonDict]
Section = Callable[[], Any]

DEFAULT_PATH = "/run/carpsim/carpsim.sock"
_MAX_LINE = 1 << 16


class ControlServer:
    def __init__(self, path: str, base_status: Section) -> None:
        self.path = path
        self._base = base_status
        self._sections: dict[str, Section] = {}
        self._commands: dict[str, Command] = {"status": lambda _req: self.status()}
        self._server: asyncio.AbstractServer | None = None

    def add_section(self, name: str, provider: Section) -> None:
        self._sections[name] = provider

    def add_command(self, name: str, handler: Command) -> None:
        self._commands[name] = handler

    def status(self) -> JsonDict:
        out: JsonDict = dict(self._base())
        for name, provider in self._sections.items():
            try:
                out[name] = provider()
            except Exception as exc:  # one broken section must not hide the others
                out[name] = {"error": str(exc)}
        return out

    def handle(self, request: Any) -> JsonDict:
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a string "cmd"'}
        handler = self._commands.get(request["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown cmd {request['cmd']!r}"}
        try:
            reply = handler(request)
        except (ValueError, TypeError, KeyError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in one command must not cost the client its answer
            log.exception("control: %r failed", request["cmd"])
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        return {"ok": True, **reply}

    async def start(self) -> None:
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists() or p.is_symlink():
            if is_listening(self.path):
                raise OSError(f"control socket {self.path} is in use by a running daemon")
            p.unlink()
        # The socket is born 0600: a umask set around bind() closes the window in which a
        # chmod afterwards would leave it at the process umask (any local user could connect).
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=self.path)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    request = json.loads(line)
                except (ValueError, RecursionError):
                    reply: JsonDict = {"ok": False, "error": "not JSON"}
                else:
                    reply = self.handle(request)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def is_listening(path: str) -> bool:
    """Whether a daemon answers on this control socket path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
        except OSError:
            return False
        return True


def query(path: str, request: JsonDict, timeout: float = 2.0) -> JsonDict:
    """Send one request to a daemon's control socket and return its reply (blocking)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(_MAX_LINE)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf)
    if not isinstance(reply, dict):
        raise ValueError("control reply is not a JSON object")
    return reply
