"""`carpsim lab up|status|kill|start|exec|down`: the reference HA cluster in namespaces.

The lab is found by prefix (--prefix, $CARPSIM_LAB_PREFIX, else the only running lab, else
``cs-<topology name>-``), so every command works from a fresh shell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from carpsim.cli import config_live
from carpsim.cli.unsinkable import add_parser as add_unsinkable_parser
from carpsim.cli.web import add_parser as add_web_parser
from carpsim.config import fromlab
from carpsim.errors import ConfigError
from carpsim.lab import builder, impair, status
from carpsim.lab.session import Lab, LabAlreadyUpError, resolve_prefix
from carpsim.lab.state import LabPaths, remove_run_dir


def _say(line: str) -> None:
    print(f"  {line}", flush=True)


def _up(args: argparse.Namespace) -> int:
    lab = Lab.create(
        args.topology, args.prefix, statesync=not args.no_statesync, dhcp=args.dhcp_gateway
    )
    try:
        lab.up(progress=_say)
    except LabAlreadyUpError as exc:
        print(f"carpsim: {exc}", file=sys.stderr)
        return 1
    print(f"lab {lab.topology.name} is up: carpsim lab status --prefix {lab.paths.prefix}")
    return 0


def _status(args: argparse.Namespace) -> int:
    lab = Lab.attach(args.prefix)
    data = status.collect(lab)
    print(json.dumps(data, indent=2) if args.json else status.render(data))
    return 0


def _kill(args: argparse.Namespace) -> int:
    builder.check_environment()
    lab = Lab.attach(args.prefix)
    lab.kill(args.node)
    print(f"{args.node}: forced off (processes SIGKILLed, every link down, no goodbye)")
    return 0


def _start(args: argparse.Namespace) -> int:
    builder.check_environment()
    lab = Lab.attach(args.prefix)
    pid = lab.start(args.node)
    print(f"{args.node}: powered on (links up, carpsim node pid {pid})")
    return 0


def _exec(args: argparse.Namespace) -> int:
    builder.check_environment()
    lab = Lab.attach(args.prefix)
    argv: list[str] = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        argv = [os.environ.get("SHELL", "/bin/sh")]
    ns = lab.namespace_of(args.host)
    os.execvp("ip", ["ip", "netns", "exec", ns, *argv])  # noqa: S606 - replaces this process
    return 0  # not reached


def _down(args: argparse.Namespace) -> int:
    builder.check_environment()
    try:
        lab = Lab.attach(args.prefix)
    except ConfigError:
        # A crashed or interrupted run may have left namespaces but no state: clean by prefix.
        paths = LabPaths(resolve_prefix(args.prefix))
        gone = builder.teardown(paths)
        remove_run_dir(paths)
        print(
            f"lab {paths.prefix}: removed {len(gone)} namespaces"
            if gone
            else f"lab {paths.prefix}: nothing to remove"
        )
        return 0
    gone = lab.down()
    print(f"lab {lab.topology.name} ({lab.paths.prefix}): removed {len(gone)} namespaces")
    return 0


def _config(args: argparse.Namespace) -> int:
    lab = Lab.attach(args.prefix)
    lab.node(args.node)
    return config_live.run(
        args, config_live.socket_query(str(lab.paths.control(args.node))), args.node
    )


def _impair(args: argparse.Namespace) -> int:
    builder.check_environment()
    lab = Lab.attach(args.prefix)
    if args.clear:
        gone = impair.clear(lab, args.target)
        print(f"cleared: {', '.join(gone)}" if gone else "nothing was impaired")
        return 0
    if not args.target:
        raise ConfigError("target", "give SEGMENT or HOST:SEGMENT (or --clear)")
    spec = impair.ImpairSpec(
        loss=args.loss,
        delay=args.delay,
        jitter=args.jitter,
        reorder=args.reorder,
        reorder_delay=args.reorder_delay,
        duplicate=args.duplicate,
        seed=args.seed,
    )
    entry = impair.apply(lab, args.target, spec)
    relays = [p for p in entry["ports"] if "pid" in p]
    print(
        f"{args.target}: impaired ({len(entry['ports'])} ports, {len(relays)} relays,"
        f" directions {'/'.join(entry['directions'])})"
    )
    return 0


def _add_impair_parser(sub: Any) -> None:
    p = sub.add_parser(
        "impair", help="loss (nftables), delay/jitter/reorder/duplication (relay) on a segment"
    )
    p.add_argument("target", nargs="?", help="SEGMENT (every port, inbound) or HOST:SEGMENT")
    p.add_argument("--loss", type=float, default=0.0, help="percent of frames dropped (0..100)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds added to every frame")
    p.add_argument("--jitter", type=float, default=0.0, help="extra delay, uniform [0, J) s")
    p.add_argument("--reorder", type=float, default=0.0, help="probability a frame is held back")
    p.add_argument("--reorder-delay", type=float, default=0.02, help="hold-back bound (s)")
    p.add_argument("--duplicate", type=float, default=0.0, help="probability of a second copy")
    p.add_argument("--seed", type=int, default=0, help="seed of the relay's generators")
    p.add_argument("--clear", action="store_true", help="remove the target's (or every) fault")
    p.set_defaults(func=_impair)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("lab", help="the reference HA cluster in network namespaces")
    parser.add_argument(
        "--prefix", help="lab name prefix (default: $CARPSIM_LAB_PREFIX or cs-<topology>-)"
    )
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("up", help="build the lab and wait until CARP has converged")
    p.add_argument(
        "topology",
        nargs="?",
        default="reference",
        help="a topology file or built-in name (reference, three-node)",
    )
    p.add_argument(
        "--no-statesync",
        action="store_true",
        help="do not replicate connection state (control runs: flows should die)",
    )
    p.add_argument(
        "--dhcp-gateway",
        choices=fromlab.DHCP_MODES,
        default="vip",
        help="what the nodes' DHCP servers hand out as router/DNS: the segment's VIP (default),"
        " empty = each node's own address (the pitfall), or off = no DHCP server",
    )
    p.set_defaults(func=_up)

    p = sub.add_parser("status", help="CARP state of every VHID on every node, plus health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_status)

    p = sub.add_parser("kill", help='"Force Off" a node: SIGKILL, links down, no goodbye')
    p.add_argument("node")
    p.set_defaults(func=_kill)

    p = sub.add_parser("start", help="power a node back on with the same config")
    p.add_argument("node")
    p.set_defaults(func=_start)

    p = sub.add_parser("exec", help="run a command in a node's or host's namespace")
    p.add_argument("host", help="node1, client1, router, server, sw ...")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    p.set_defaults(func=_exec)

    p = sub.add_parser("down", help="remove everything the lab created (idempotent)")
    p.set_defaults(func=_down)

    p = sub.add_parser("config", help="a node's running config: show, edit, Force Config Sync")
    p.add_argument("node")
    cmds = p.add_subparsers(dest="config_cmd", metavar="CMD")
    cmds.required = True
    config_live.add_commands(cmds)
    for action in cmds.choices.values():
        action.set_defaults(func=_config)

    _add_impair_parser(sub)  # `carpsim lab impair` (carpsim/lab/impair.py)
    add_unsinkable_parser(sub)  # `carpsim lab unsinkable` (carpsim/cli/unsinkable.py)
    add_web_parser(sub)  # `carpsim lab web` (carpsim/cli/web.py)

    for action in sub.choices.values():
        action.add_argument("--prefix", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
