"""The `carpsim` command: a thin dispatcher over one module per subcommand.

Each module in `_COMMANDS` exposes ``register(subparsers)``, which adds its parser and sets
``func`` (args -> exit code) as a default. Errors the user can fix (bad config, missing tool,
bad file) become a single line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from carpsim import __version__
from carpsim.errors import CarpsimError, ConfigError

_COMMANDS: tuple[str, ...] = (
    "carp",
    "node",
    "status",
    "lab",
    "demo",
    "decode",
    "simulate",
    "lint",
    "import_pfsense",
    "config",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carpsim",
        description="CARP, state sync and DHCP failover in Linux network namespaces.",
    )
    parser.add_argument("--version", action="version", version=f"carpsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMANDS:
        importlib.import_module(f"carpsim.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"carpsim: config error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except CarpsimError as exc:
        print(f"carpsim: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
