"""Editing a running node's config, as pfSense's GUI does: ``carpsim config --control PATH CMD``
and ``carpsim lab config NODE CMD`` share these subcommands.

Each edit goes to the node's control socket (``{"cmd": "config", "op": ..., "args": ...}``); the
node validates the whole new config (a one-line error naming the field, running config
untouched), writes it atomically, applies it and, with ``hasync.synchronizetoip``, pushes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from carpsim.errors import ConfigError, EnvironmentProblem
from carpsim.runtime import control

Query = Callable[[dict[str, Any]], dict[str, Any]]
TIMEOUT = 30.0
LIVE = (
    "add-rule", "delete-rule", "add-nat", "delete-nat", "add-vip", "delete-vip", "add-alias",
    "delete-alias", "set-dhcp", "apply", "sync",
)  # fmt: skip


RULE_FIELDS = (
    "interface", "action", "protocol", "source", "source-port", "destination",
    "destination-port", "icmptype", "descr", "nosync", "disabled", "log",
)  # fmt: skip


def _position(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--top", action="store_true", help="insert first (pfSense: add to the top)")
    g.add_argument("--position", type=int, help="insert before this 0-based index")


def _which(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", nargs="?", type=int, help="0-based index (see show)")
    p.add_argument("--tracker", type=int, help="the rule's tracker id")
    p.add_argument("--descr", help="the rule's description")


def add_commands(cmds: Any, show: bool = True) -> None:
    """The live subcommands (plus ``show [SECTION]`` unless the caller has its own)."""
    if show:
        s = cmds.add_parser("show", help="print a section (or all) of the running config")
        s.add_argument("section", nargs="?")
        s.add_argument("--json", action="store_true")
    r = cmds.add_parser("add-rule", help="add a filter rule (Firewall > Rules > Add)")
    r.add_argument("--interface", required=True)
    r.add_argument("--action", default="pass", choices=("pass", "block", "reject"))
    r.add_argument("--protocol")
    r.add_argument("--source")
    r.add_argument("--source-port")
    r.add_argument("--destination")
    r.add_argument("--destination-port")
    r.add_argument("--icmptype", action="append")
    r.add_argument("--descr")
    for flag in ("--nosync", "--disabled", "--log"):
        r.add_argument(flag, action="store_true")
    _position(r)
    _which(cmds.add_parser("delete-rule", help="delete a filter rule"))
    n = cmds.add_parser("add-nat", help="add an outbound NAT rule")
    n.add_argument("--interface", required=True)
    n.add_argument("--source", required=True)
    n.add_argument("--target", help='a VIP; "" = the interface address')
    n.add_argument("--destination")
    n.add_argument("--protocol")
    n.add_argument("--descr")
    for flag in ("--static-port", "--nonat", "--nosync", "--disabled"):
        n.add_argument(flag, action="store_true")
    _position(n)
    _which(cmds.add_parser("delete-nat", help="delete an outbound NAT rule"))
    v = cmds.add_parser("add-vip", help="add a CARP VIP")
    v.add_argument("--interface", required=True)
    v.add_argument("--vhid", type=int, required=True)
    v.add_argument("--subnet", required=True)
    v.add_argument("--password")
    v.add_argument("--advbase", type=int)
    v.add_argument("--advskew", type=int)
    v.add_argument("--descr")
    d = cmds.add_parser("delete-vip", help="delete a CARP VIP")
    d.add_argument("--interface", required=True)
    d.add_argument("--vhid", type=int, required=True)
    a = cmds.add_parser("add-alias", help="add or replace an alias")
    a.add_argument("name")
    a.add_argument("address", nargs="+")
    a.add_argument("--type", default="host", choices=("host", "network", "port"))
    a.add_argument("--descr")
    a.add_argument("--nosync", action="store_true")
    x = cmds.add_parser("delete-alias", help="delete an alias")
    x.add_argument("name")
    h = cmds.add_parser("set-dhcp", help="edit an interface's DHCP server: key=value ...")
    h.add_argument("interface")
    h.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    f = cmds.add_parser("apply", help="merge a TOML fragment into the running config")
    f.add_argument("file")
    cmds.add_parser("sync", help="Force Config Sync to the peer")


def _fields(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name.replace("-", "_").replace(".", "_"), None)
        if value is not None and value is not False:
            out[name.replace("-", "_")] = value
    return out


def _value(text: str) -> Any:
    """A TOML value (true, 7200, ["a", "b"]) when it parses as one, else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def request(args: argparse.Namespace) -> dict[str, Any]:  # noqa: C901 - one branch per subcommand, each its own request body
    """The control request for one parsed subcommand."""
    cmd = args.config_cmd
    if cmd == "show":
        return {"cmd": "config", "op": "show", "section": args.section}
    if cmd == "sync":
        return {"cmd": "config", "op": "sync"}
    body: dict[str, Any]
    if cmd in ("add-rule", "add-nat"):
        names: tuple[str, ...] = RULE_FIELDS
        if cmd == "add-nat":
            names = ("interface", "source", "target", "destination", "protocol", "descr",
                     "static-port", "nonat", "nosync", "disabled")  # fmt: skip
        body = {"rule": _fields(args, names)}
        if args.top:
            body["position"] = 0
        elif args.position is not None:
            body["position"] = args.position
    elif cmd in ("delete-rule", "delete-nat"):
        body = {k: v for k, v in (("index", args.index), ("tracker", args.tracker),
                                  ("descr", args.descr)) if v is not None}  # fmt: skip
    elif cmd == "add-vip":
        body = {"vip": _fields(args, ("interface", "vhid", "subnet", "password", "advbase",
                                      "advskew", "descr"))}  # fmt: skip
    elif cmd == "delete-vip":
        body = {"interface": args.interface, "vhid": args.vhid}
    elif cmd == "add-alias":
        alias = {"type": args.type, "address": list(args.address), "nosync": args.nosync}
        if args.descr:
            alias["descr"] = args.descr
        body = {"name": args.name, "alias": alias}
    elif cmd == "delete-alias":
        body = {"name": args.name}
    elif cmd == "set-dhcp":
        settings = {}
        for item in args.settings:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError("set-dhcp", f"expected KEY=VALUE, got {item!r}")
            settings[key] = _value(value)
        body = {"interface": args.interface, "settings": settings}
    else:  # apply
        try:
            body = {"text": Path(args.file).read_text()}
        except OSError as exc:
            raise ConfigError(args.file, f"cannot read: {exc.strerror}") from exc
    return {"cmd": "config", "op": cmd, "args": body}


def socket_query(path: str) -> Query:
    def ask(req: dict[str, Any]) -> dict[str, Any]:
        try:
            return control.query(path, req, timeout=TIMEOUT)
        except (OSError, ValueError) as exc:
            raise EnvironmentProblem(f"cannot reach the node at {path}: {exc}") from exc

    return ask


def run(args: argparse.Namespace, ask: Query, name: str = "node") -> int:
    reply = ask(request(args))
    if not reply.get("ok"):
        print(f"carpsim: {name}: {reply.get('error')}", file=sys.stderr)
        return 2
    if args.config_cmd == "show":
        data = reply.get("config", {})
        print(json.dumps(data, indent=2) if args.json else tomli_w.dumps(data), end="\n")
        return 0
    if args.config_cmd == "sync":
        print(f"{name}: Force Config Sync to {reply.get('pushing')} (see status: configsync)")
        return 0
    print(f"{name}: {reply.get('changed')}")
    for step in reply.get("steps", []):
        print(f"  {step}")
    if reply.get("pushing"):
        print(f"  pushing to {reply['pushing']}")
    return 0
