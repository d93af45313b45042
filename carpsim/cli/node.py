"""``carpsim node --config node.toml``: every VHID of a node in one process.

The file format is in docs/node-config.md and `carpsim.runtime.nodeconfig`.
"""

from __future__ import annotations

import argparse

from carpsim.runtime import daemon, nodeconfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run a whole node from a TOML file")
    p.add_argument("--config", required=True, help="node TOML file")
    p.add_argument("--check", action="store_true", help="validate the file and exit")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = nodeconfig.load(args.config)
    if args.check:
        print(f"{args.config}: ok ({len(cfg.vhids)} vhid(s))")
        return 0
    return daemon.run(cfg, verbose=args.verbose)
