"""``carpsim node --config node.toml``: every VHID of a node in one process.

The file is read through `carpsim.config` (docs/config.md; every original node config file of
docs/node-config.md loads too): the node applies its firewall rules, NAT, routes and, with
``[hasync]``, serves and pushes the XML-RPC config sync.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from carpsim.runtime import daemon, node_config
from carpsim.runtime.driver import loop_factory
from carpsim.runtime.node import Node


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("node", help="run a whole node from a TOML file")
    p.add_argument("--config", required=True, help="node TOML file")
    p.add_argument("--check", action="store_true", help="validate the file and exit")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg, document = node_config.load(args.config)
    if args.check:
        rules = len(document.filter.rules)
        print(f"{args.config}: ok ({len(cfg.vhids)} vhid(s), {rules} filter rule(s))")
        return 0
    daemon.setup_logging(cfg.name, args.verbose)

    async def run() -> int:
        node = Node(cfg, document=document, document_path=Path(args.config).resolve())
        node.prepare()
        return await daemon.serve(node)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(run())
