"""The ``[web]`` section of a node config: serve this node's status pages.

No section: no pages (the default). With one:

    [web]
    listen = "127.0.0.1:8080"      # host:port inside the node's namespace (this is the default)
    enabled = true                 # the default; false keeps the section but serves nothing

Kept apart from runtime/nodeconfig.py (and free of aiohttp) so the node parser only calls
`parse` and a node that never serves pages never imports the web stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

from carpsim.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8080"
_KEYS = {"enabled", "listen"}


@dataclass(frozen=True)
class WebConfig:
    host: str
    port: int

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: Any, where: str = "web.listen") -> tuple[str, int]:
    if not isinstance(value, str):
        raise ConfigError(where, "must be a 'host:port' string")
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    # isdigit() alone also accepts digits int() refuses (superscripts such as "8¹080").
    if not sep or not (port_text.isascii() and port_text.isdigit()):
        raise ConfigError(where, f"{value!r}: expected 'address:port', e.g. {DEFAULT_LISTEN!r}")
    try:
        ip_address(host)
    except ValueError:
        raise ConfigError(
            where, f"{host!r} is not an IP address (a name could resolve anywhere)"
        ) from None
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ConfigError(where, f"port must be 1..65535, got {port}")
    return host, port


def parse(table: Any) -> WebConfig | None:
    """The validated section (None: absent, or ``enabled = false``)."""
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError("web", "must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"web.{unknown[0]}", "unknown key")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("web.enabled", "must be true or false")
    host, port = parse_listen(table.get("listen", DEFAULT_LISTEN))
    return WebConfig(host, port) if enabled else None
