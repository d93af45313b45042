"""Typed access to parsed TOML tables; each failure is a one-line `ConfigError` naming the field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from carpsim.config.limits import not_a_host
from carpsim.config.model import ANY, Endpoint
from carpsim.errors import ConfigError

MAX_IFNAME = 15
MAX_DESCR = 200
ALIAS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
IF_NAME = re.compile(r"^[a-z][a-z0-9_]{0,14}$")
PORT_RANGE = re.compile(r"^(\d{1,5})(?:[-:](\d{1,5}))?$")
PROTOCOLS = {
    "tcp", "udp", "tcp/udp", "icmp", "esp", "ah", "gre", "igmp", "ospf", "sctp", "pim",
    "carp", "pfsync",
}  # fmt: skip
ICMP_TYPES = {
    "echoreq": "echo-request", "echorep": "echo-reply", "unreach": "destination-unreachable",
    "timex": "time-exceeded", "squench": "source-quench", "redir": "redirect",
    "paramprob": "parameter-problem", "timereq": "timestamp-request",
    "timerep": "timestamp-reply", "inforeq": "info-request", "inforep": "info-reply",
    "maskreq": "address-mask-request", "maskrep": "address-mask-reply",
    "routeradv": "router-advertisement", "routersol": "router-solicitation",
}  # fmt: skip


class Table:
    """One TOML table at a dotted path; reads are typed and unknown keys are refused."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(where, "must be a table")
        self.data: Mapping[str, Any] = data
        self.where = where

    def at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def only(self, allowed: set[str] | frozenset[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise ConfigError(self.at(key), "unknown key")

    def has(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        if key not in self.data:
            if required:
                raise ConfigError(self.at(key), "required")
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise ConfigError(self.at(key), f"must be a string, got {value!r}")
        return value

    def integer(self, key: str, default: int | None = None, *, lo: int = 0, hi: int = 2**31) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.at(key), f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise ConfigError(self.at(key), f"must be {lo}..{hi}, got {value}")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise ConfigError(self.at(key), f"must be true or false, got {value!r}")
        return value

    def descr(self, key: str = "descr") -> str:
        text: str = self.text(key, "")
        if len(text) > MAX_DESCR or any(ord(c) < 32 or c == '"' for c in text):
            raise ConfigError(self.at(key), f"at most {MAX_DESCR} printable characters, no '\"'")
        return text

    def ipv4(self, key: str, *, required: bool = False) -> IPv4Address | None:
        text = self.text(key, required=required)
        return None if text is None else ipv4(text, self.at(key))

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            raise ConfigError(self.at(key), "must be a list of strings")
        return tuple(str(v) for v in value)

    def table(self, key: str) -> Table:
        return Table(self.data.get(key, {}), self.at(key))

    def tables(self, key: str) -> list[Table]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise ConfigError(self.at(key), f"must be an array of tables ([[{self.at(key)}]])")
        return [Table(item, f"{self.at(key)}[{i}]") for i, item in enumerate(value)]


def ipv4(text: object, where: str) -> IPv4Address:
    try:
        return IPv4Address(str(text))
    except ValueError as exc:
        raise ConfigError(where, f"not an IPv4 address: {text!r}") from exc


def host(text: object, where: str) -> IPv4Address:
    addr = ipv4(text, where)
    problem = not_a_host(addr)
    if problem:
        raise ConfigError(where, f"{addr} {problem}")
    return addr


def ipv4_interface(text: str, where: str) -> IPv4Interface:
    if "/" not in text:
        raise ConfigError(where, f"needs a prefix length (address/prefix): {text!r}")
    try:
        value = IPv4Interface(text)
    except ValueError as exc:
        raise ConfigError(where, f"not an IPv4 address/prefix: {text!r}") from exc
    net = value.network
    problem = not_a_host(value.ip) or ("is a whole-internet prefix" if not net.prefixlen else None)
    if problem:
        raise ConfigError(where, f"{value} {problem}")
    if net.prefixlen < 31 and value.ip in (net.network_address, net.broadcast_address):
        raise ConfigError(where, f"{value.ip} is the network or broadcast address of {net}")
    return value


def ipv4_network(text: str, where: str) -> IPv4Network:
    try:
        return IPv4Network(text)
    except ValueError as exc:
        raise ConfigError(where, f"not an IPv4 network (host bits must be 0): {text!r}") from exc


def ifname(text: str, where: str) -> str:
    if not text or len(text) > MAX_IFNAME or "/" in text or any(c.isspace() for c in text):
        raise ConfigError(where, f"not an interface name: {text!r}")
    return text


def endpoint(text: object, where: str, port: object = None) -> Endpoint:
    """Parse ``any``, ``LAN net``, ``lan address``, ``(self)``, an address, CIDR or alias."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(where, f"must be a non-empty string, got {text!r}")
    port_text = None if port is None else port_spec(port, where + "_port")
    body = text.strip()
    negate = body.startswith("!")
    body = body.removeprefix("!").strip()
    words = body.split()
    if body.lower() == "any":
        if negate:
            raise ConfigError(where, '"!any" matches nothing')
        return Endpoint(port=port_text) if port_text else ANY
    if body == "(self)":
        return Endpoint(any=False, network="(self)", port=port_text, negate=negate)
    if len(words) == 2 and words[1].lower() in ("net", "address"):
        name = words[0].lower()
        if not IF_NAME.match(name):
            raise ConfigError(where, f"not an interface name: {words[0]!r}")
        network = name if words[1].lower() == "net" else f"{name}ip"
        return Endpoint(any=False, network=network, port=port_text, negate=negate)
    if len(words) != 1:
        raise ConfigError(where, f"not an address, network, alias or macro: {text!r}")
    if body[0].isdigit():
        if "/" in body:
            ipv4_network(body, where)
        else:
            ipv4(body, where)
    elif not ALIAS_NAME.match(body):
        raise ConfigError(where, f"not an address, network or alias name: {text!r}")
    return Endpoint(any=False, address=body, port=port_text, negate=negate)


def port_spec(value: object, where: str) -> str:
    """A port, a range ``a-b`` (pfSense also writes ``a:b``) or a port alias name."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(where, f"must be a port, a range a-b or an alias, got {value!r}")
    m = PORT_RANGE.match(value)
    if m is None:
        if not ALIAS_NAME.match(value):
            raise ConfigError(where, f"not a port, range or alias name: {value!r}")
        return value
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(where, f"ports must be 1..65535 and low <= high, got {value!r}")
    return str(lo) if lo == hi else f"{lo}-{hi}"


def protocol(value: object, where: str) -> str | None:
    if value is None or value == "any":
        return None
    if not isinstance(value, str) or value.lower() not in PROTOCOLS:
        raise ConfigError(where, f"one of any, {', '.join(sorted(PROTOCOLS))}; got {value!r}")
    return value.lower()
