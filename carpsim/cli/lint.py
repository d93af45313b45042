"""``carpsim lint NODE.toml [PEER.toml ...]`` or ``carpsim lint --topology NAME|FILE``.

Prints each finding with the dotted field, why it breaks HA and the fix; exit 1 on any error
(warnings alone exit 0). A file that does not even load is an error too.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from carpsim.config import fromlab, lint, parse
from carpsim.config.model import Config
from carpsim.errors import ConfigError
from carpsim.lab import topology


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lint", help="check node configs (a cluster) for HA mistakes")
    p.add_argument("configs", nargs="*", help="node config TOML files (all nodes of a cluster)")
    p.add_argument("--topology", help="lint the node configs a lab topology stands for")
    p.set_defaults(func=main)


def _load(path: str) -> tuple[Config | None, list[lint.Finding]]:
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return None, [lint.Finding(path, "config", f"cannot read: {exc}", "nothing to check",
                                   "fix the file")]  # fmt: skip
    name = (
        str(data.get("node", {}).get("name", path)) if isinstance(data.get("node"), dict) else path
    )
    raw = lint.raw_findings(name, data)
    try:
        # a duplicate VHID is already a finding: check the rest of the cluster without it
        return parse(lint.loadable(data)), raw
    except ConfigError as exc:
        if raw:
            return None, raw
        return None, [lint.Finding(name, exc.field, exc.message, "the node refuses this config",
                                   "correct the field")]  # fmt: skip


def main(args: argparse.Namespace) -> int:
    configs: list[Config] = []
    findings: list[lint.Finding] = []
    if args.topology:
        configs += fromlab.node_configs(topology.load(args.topology)).values()
    loaded = True
    for path in args.configs:
        cfg, found = _load(path)
        findings += found
        if cfg is not None:
            configs.append(cfg)
        loaded = loaded and cfg is not None
    if not configs and not findings:
        raise ConfigError("lint", "give node config files or --topology")
    if configs and loaded:
        # the cluster checks need every node: with one missing they would misjudge the rest
        findings += lint.lint(configs)
    for f in findings:
        print(f.render())
    n_err = lint.errors(findings)
    print(f"{len(configs)} node(s): {n_err} error(s), {len(findings) - n_err} warning(s)")
    return 1 if n_err else 0
