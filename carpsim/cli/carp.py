"""``carpsim carp``: one VHID with ucarp's long flags (plus a few BSD/FreeBSD extras).

Differences from ucarp, on purpose: the VIP is configured by carpsim itself (on a macvlan with
the virtual MAC 00:00:5e:00:01:VHID, or on the interface with --real-mac), so up/down scripts are
optional; several --addr may be given; scripts run asynchronously and never delay adverts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from carpsim.errors import ConfigError
from carpsim.runtime import daemon
from carpsim.runtime.nodeconfig import DEFAULT_CONTROL, NodeConfig, build_vhid


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("carp", help="run one CARP virtual host (ucarp-compatible flags)")
    p.add_argument("-i", "--interface", required=True, help="parent interface")
    p.add_argument("-s", "--srcip", required=True, help="IPv4 source address of adverts")
    p.add_argument("-v", "--vhid", type=int, required=True, help="virtual host id 1..255")
    p.add_argument("-p", "--pass", dest="password", help="password (at most 19 bytes)")
    p.add_argument("-o", "--passfile", help="read the password from the file's first line")
    p.add_argument(
        "-a",
        "--addr",
        action="append",
        required=True,
        help="virtual IP with prefix, e.g. 10.0.0.254/24 (repeatable)",
    )
    p.add_argument("-b", "--advbase", type=int, default=1)
    p.add_argument("-k", "--advskew", type=int, default=0)
    p.add_argument("-P", "--preempt", action="store_true")
    p.add_argument("-r", "--deadratio", type=int, default=3)
    p.add_argument("-u", "--upscript")
    p.add_argument("-d", "--downscript")
    p.add_argument(
        "-z", "--shutdown", action="store_true", help="run the downscript on SIGTERM/SIGINT"
    )
    p.add_argument(
        "-n",
        "--neutral",
        action="store_true",
        help="no downscript on the first transition to BACKUP",
    )
    p.add_argument(
        "--real-mac",
        action="store_true",
        help="VIP on the interface itself, adverts/GARP from its real MAC",
    )
    p.add_argument("--master-down-formula", choices=["freebsd", "openbsd"], default="freebsd")
    p.add_argument("--peer", help="unicast peer address instead of 224.0.0.18")
    p.add_argument("--demote", type=int, default=0, help="initial demote counter 0..255")
    p.add_argument("--control", default=DEFAULT_CONTROL, help="control socket path")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0 = off)")
    p.add_argument("--events-json", help="append one JSON line per state transition here")
    p.add_argument("--name", help="node name in logs and status (default: the interface)")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=main)


def read_password(args: argparse.Namespace) -> str:
    if args.password is not None and args.passfile is not None:
        raise ConfigError("pass", "give --pass or --passfile, not both")
    if args.passfile is not None:
        try:
            text = Path(args.passfile).read_text(errors="surrogateescape")
        except OSError as exc:
            raise ConfigError("passfile", f"cannot read {args.passfile}: {exc.strerror}") from exc
        # ucarp keeps only the first line and strips only "\n" (ucarp.c).
        return text.split("\n", 1)[0]
    if args.password is None:
        raise ConfigError("pass", "a password is required (--pass or --passfile)")
    return str(args.password)


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    spec = build_vhid(
        vhid=args.vhid,
        interface=args.interface,
        srcip=args.srcip,
        vips=args.addr,
        password=read_password(args),
        advbase=args.advbase,
        advskew=args.advskew,
        preempt=args.preempt,
        deadratio=args.deadratio,
        master_down_formula=args.master_down_formula,
        demote=args.demote,
        real_mac=args.real_mac,
        peer=args.peer,
        where="carp",
    )
    if not 0 <= args.metrics_port <= 65535:
        raise ConfigError("metrics-port", f"must be 0..65535, got {args.metrics_port}")
    return NodeConfig(
        name=args.name or f"{args.interface}-vhid{args.vhid}",
        vhids=(spec,),
        control=args.control,
        events_json=args.events_json,
        metrics_port=args.metrics_port,
        upscript=args.upscript,
        downscript=args.downscript,
        neutral=args.neutral,
        shutdown_scripts=args.shutdown,
    )


def main(args: argparse.Namespace) -> int:
    return daemon.run(config_from_args(args), verbose=args.verbose)
