"""The pure packages never touch the kernel, clock or global randomness (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "carpsim"
PURE = ("wire", "protocol", "statesync", "dhcp", "config", "configsync", "sim", "node")
FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "time",
    "os",
    "subprocess",
    "pyroute2",
    "uvloop",
    "select",
}
RANDOM_FUNCS = {
    "random",
    "randint",
    "getrandbits",
    "choice",
    "shuffle",
    "uniform",
    "randbytes",
    "seed",
}


def _pure_files() -> list[Path]:
    return sorted(p for pkg in PURE if (PKG / pkg).is_dir() for p in (PKG / pkg).rglob("*.py"))


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in FORBIDDEN_MODULES:
                found.append(f"from {node.module} import ...")
            if root == "random" and any(a.name in RANDOM_FUNCS for a in node.names):
                found.append("from random import <module-level function>")
            if node.module.startswith("carpsim.") and node.module.split(".")[1] in {
                "runtime",
                "net",
                "lab",
                "cli",
            }:
                found.append(f"pure code imports edge module {node.module}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
            and node.attr in RANDOM_FUNCS
        ):
            found.append(f"random.{node.attr}() uses the global generator")
    return found


def test_there_are_pure_modules_to_check() -> None:
    assert len(_pure_files()) >= 3


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(PKG)))
def test_pure_module_stays_pure(path: Path) -> None:
    assert _violations(path) == []


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import socket\nimport random\nx = random.random()\nfrom time import monotonic\n"
    )
    assert len(_violations(bad)) == 3
