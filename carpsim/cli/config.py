"""``carpsim config``: the node config file offline (check, show a section, render, diff), and
with ``--control PATH`` a running node's (show, add/delete rules, NAT, VIPs, aliases, DHCP
settings, apply a fragment, Force Config Sync: carpsim/cli/config_live.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import tomli_w

from carpsim.cli import config_live
from carpsim.config import derive, diff, dump, loads, render
from carpsim.config.model import Config
from carpsim.configsync import apply, policy
from carpsim.errors import ConfigError

SECTIONS = (
    "node",
    "carp",
    "system",
    "interfaces",
    "virtualip",
    "aliases",
    "filter",
    "nat",
    "dhcpd",
    "staticroutes",
    "hasync",
    "statesync",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="node config files, or a running node's (--control)")
    p.add_argument("--control", help="a running node's control socket: edit its config")
    cmds = p.add_subparsers(dest="config_cmd", metavar="CMD")
    cmds.required = True
    c = cmds.add_parser("check", help="validate a node config file")
    c.add_argument("file")
    c.set_defaults(func=_check)
    s = cmds.add_parser("show", help="print a section (or all) of a node config")
    s.add_argument("file", nargs="?", help="the file (with --control: the section)")
    s.add_argument("section", nargs="?", choices=SECTIONS)
    s.add_argument("--json", action="store_true", help="JSON instead of TOML")
    s.set_defaults(func=_show)
    r = cmds.add_parser("render", help="print the nftables document the node loads")
    r.add_argument("file")
    r.set_defaults(func=_render)
    d = cmds.add_parser("diff", help="what applying NEW over OLD would reconfigure")
    d.add_argument("old")
    d.add_argument("new")
    d.set_defaults(func=_diff)
    y = cmds.add_parser("payload", help="the XML-RPC sections this node would push (JSON)")
    y.add_argument("file")
    y.set_defaults(func=_payload)
    before = set(cmds.choices)
    config_live.add_commands(cmds, show=False)
    for name in set(cmds.choices) - before:
        cmds.choices[name].set_defaults(func=_live)


def _live(args: argparse.Namespace) -> int:
    if not args.control:
        raise ConfigError("--control", f"{args.config_cmd} edits a running node: give --control")
    return config_live.run(args, config_live.socket_query(args.control), args.control)


def load(path: str) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror}") from exc
    return loads(text, path)


def _check(args: argparse.Namespace) -> int:
    c = load(args.file)
    vhids, dhcp = derive.carp_vhids(c), derive.dhcp_servers(c)
    print(
        f"{args.file}: ok ({len(c.interfaces)} interface(s), {len(vhids)} vhid(s), "
        f"{len(c.filter.rules)} filter rule(s), {len(c.nat.rules)} NAT rule(s), "
        f"{len(dhcp)} DHCP server(s))"
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.control:
        if args.section is not None:
            raise ConfigError("show", "with --control give only the section")
        args.section = None if args.file == "all" else args.file
        return config_live.run(args, config_live.socket_query(args.control), args.control)
    if args.file is None:
        raise ConfigError("show", "give the config file (or --control PATH)")
    data: Any = dump.to_data(load(args.file))
    if args.section:
        data = {args.section: data.get(args.section, {})}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(tomli_w.dumps(data), end="")
    return 0


def _render(args: argparse.Namespace) -> int:
    print(render(load(args.file)), end="")
    return 0


def _diff(args: argparse.Namespace) -> int:
    old, new = load(args.old), load(args.new)
    print(diff(old, new).summary())
    for step in apply.plan(old, new).steps():
        print(f"  {step}")
    return 0


def _payload(args: argparse.Namespace) -> int:
    payload = policy.build_payload(load(args.file))
    if payload is None:
        print("Nothing has been configured to be synched")
        return 1
    print(json.dumps(payload, indent=2))
    return 0
