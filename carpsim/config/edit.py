"""Edits a running node accepts, mirroring pfSense's GUI: each gives a whole new `Config`.

An edit changes the TOML-shaped mapping (`dump.to_data`) and re-parses all of it, so an edited
config is validated exactly as a file would be, and a bad edit raises `ConfigError` naming the
field (``filter.rule[0].source: unknown alias "LANX"``) without touching the running one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from typing import Any

from carpsim.config import dump
from carpsim.config.loader import parse
from carpsim.config.model import Config
from carpsim.errors import ConfigError

Data = dict[str, Any]
MAX_FRAGMENT = 1 << 20
RUNTIME_FIXED = ("node", "interfaces", "statesync", "system", "web")
"""Sections a running node does not change (they need a restart): `apply` refuses them."""


def _position(args: Mapping[str, Any], length: int, where: str) -> int:
    at = args.get("position")
    if at is None:
        return length
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= length:
        raise ConfigError(f"{where}.position", f"must be 0..{length}, got {at!r}")
    return at


def _item(args: Mapping[str, Any], key: str, where: str) -> Data:
    item = args.get(key)
    if not isinstance(item, dict) or not item:
        raise ConfigError(where, f"{key}: a table of fields is required")
    return dict(item)


def _find(items: list[Data], args: Mapping[str, Any], where: str) -> int:
    """The index chosen by ``index``, ``tracker`` or ``descr`` (exactly one match)."""
    if "index" in args:
        i = args["index"]
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(items):
            raise ConfigError(f"{where}.index", f"no item {i!r} (there are {len(items)})")
        return int(i)
    for key in ("tracker", "descr"):
        if key in args:
            hits = [n for n, r in enumerate(items) if r.get(key) == args[key]]
            if len(hits) != 1:
                found = "no" if not hits else f"{len(hits)}"
                raise ConfigError(f"{where}.{key}", f"{found} item(s) with {key} {args[key]!r}")
            return hits[0]
    raise ConfigError(where, "name the item: index, tracker or descr")


def _rules(data: Data, section: str) -> list[Data]:
    if section == "filter":
        out: list[Data] = data.setdefault("filter", {}).setdefault("rule", [])
    else:
        outbound = data.setdefault("nat", {}).setdefault("outbound", {"mode": "manual"})
        out = outbound.setdefault("rule", [])
    return out


def _add_rule(data: Data, args: Mapping[str, Any], section: str) -> None:
    where = "filter.rule" if section == "filter" else "nat.outbound.rule"
    rules = _rules(data, section)
    rules.insert(_position(args, len(rules), where), _item(args, "rule", where))


def _delete_rule(data: Data, args: Mapping[str, Any], section: str) -> None:
    where = "filter.rule" if section == "filter" else "nat.outbound.rule"
    rules = _rules(data, section)
    del rules[_find(rules, args, where)]


def _add_vip(data: Data, args: Mapping[str, Any]) -> None:
    vips: list[Data] = data.setdefault("virtualip", {}).setdefault("vip", [])
    vips.append(_item(args, "vip", "virtualip.vip"))


def _delete_vip(data: Data, args: Mapping[str, Any]) -> None:
    vips: list[Data] = data.setdefault("virtualip", {}).setdefault("vip", [])
    hits = [
        n
        for n, v in enumerate(vips)
        if v.get("interface") == args.get("interface") and v.get("vhid") == args.get("vhid")
    ]
    if not hits:
        raise ConfigError("virtualip.vip", f"no VIP vhid {args.get('vhid')!r} on "
                          f"{args.get('interface')!r}")  # fmt: skip
    del vips[hits[0]]


def _add_alias(data: Data, args: Mapping[str, Any]) -> None:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("aliases", "an alias name is required")
    data.setdefault("aliases", {})[name] = _item(args, "alias", f"aliases.{name}")


def _delete_alias(data: Data, args: Mapping[str, Any]) -> None:
    name = args.get("name")
    aliases = data.setdefault("aliases", {})
    if name not in aliases:
        raise ConfigError(f"aliases.{name}", "no such alias")
    del aliases[name]


def _set_dhcp(data: Data, args: Mapping[str, Any]) -> None:
    interface = args.get("interface")
    if not isinstance(interface, str) or interface not in data.get("interfaces", {}):
        raise ConfigError(f"dhcpd.{interface}", "no such interface")
    settings = args.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise ConfigError(f"dhcpd.{interface}", "give at least one key=value")
    table: Data = data.setdefault("dhcpd", {}).setdefault(interface, {})
    for dotted, value in settings.items():
        *parents, leaf = str(dotted).split(".")
        node = table
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"dhcpd.{interface}.{p}", "is not a table")
            node = child
        node[leaf] = value


def _apply_fragment(data: Data, args: Mapping[str, Any]) -> None:
    text = args.get("text")
    if not isinstance(text, str) or len(text) > MAX_FRAGMENT:
        raise ConfigError("fragment", f"TOML text of at most {MAX_FRAGMENT} bytes is required")
    try:
        fragment = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("fragment", f"not valid TOML: {exc}") from exc
    for key, value in fragment.items():
        if key in RUNTIME_FIXED:
            raise ConfigError(key, "cannot change on a running node (edit the file, restart)")
        old = data.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            # one level deep: [aliases.X] adds/replaces X, [filter] rule = [...] the rules
            data[key] = {**old, **value}
        else:
            data[key] = value


EDITS: dict[str, Callable[[Data, Mapping[str, Any]], None]] = {
    "add-rule": lambda d, a: _add_rule(d, a, "filter"),
    "delete-rule": lambda d, a: _delete_rule(d, a, "filter"),
    "add-nat": lambda d, a: _add_rule(d, a, "nat"),
    "delete-nat": lambda d, a: _delete_rule(d, a, "nat"),
    "add-vip": _add_vip,
    "delete-vip": _delete_vip,
    "add-alias": _add_alias,
    "delete-alias": _delete_alias,
    "set-dhcp": _set_dhcp,
    "apply": _apply_fragment,
}


def edit(config: Config, op: str, args: Mapping[str, Any]) -> Config:
    """The config after one edit; raises ConfigError (naming the field) when it is invalid."""
    fn = EDITS.get(op)
    if fn is None:
        raise ConfigError("op", f"unknown edit {op!r} (one of {', '.join(EDITS)})")
    data = dump.to_data(config)
    fn(data, args)
    try:
        return parse(data)
    except RecursionError as exc:
        raise ConfigError("fragment", "nested too deeply") from exc


def describe(op: str, args: Mapping[str, Any]) -> str:
    """The reason written into the file's header (pfSense's config history line)."""
    item = args.get("rule") or args.get("vip") or args.get("alias") or {}
    what = item.get("descr") if isinstance(item, dict) else None
    target = args.get("name") or args.get("interface") or what or ""
    return f"{op} {target}".strip() + " (carpsim config)"
