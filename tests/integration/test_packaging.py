"""`pip install .` outside the checkout gives a working `carpsim` (lean, with its package data).

A wheel is built from the checkout and installed into a fresh virtualenv (its dependencies come
from the package index); every command then runs from a directory that is not the checkout, so
nothing can be read from the source tree by accident. As root, the installed `carpsim lab up`
builds the reference lab from there and tears it down.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from carpsim.net import netns

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
_NOT_SOURCES = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def _clean_env() -> dict[str, str]:
    # PYTHONPATH may point at the checkout, whose metadata would make pip skip the install.
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}


@dataclass(frozen=True)
class Installed:
    venv: Path
    cwd: Path

    def run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / argv[0]), *argv[1:]],
            cwd=self.cwd,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("pkg")
    src, dist, venv, elsewhere = tmp / "src", tmp / "dist", tmp / "venv", tmp / "elsewhere"
    elsewhere.mkdir()
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=_clean_env(),
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("carpsim-*.whl")
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=_clean_env()
    )
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
        cwd=elsewhere,
        env=_clean_env(),
    )
    assert pip.returncode == 0, pip.stderr
    return Installed(venv, elsewhere)


def test_installed_package_is_lean_and_outside_the_checkout(installed: Installed) -> None:
    probe = installed.run(
        "python",
        "-c",
        "import importlib.util as u, carpsim; print(carpsim.__file__); "
        "print(u.find_spec('scapy') is None, u.find_spec('matplotlib') is None)",
    )
    assert probe.returncode == 0, probe.stderr
    where, lean = probe.stdout.splitlines()
    assert Path(where).is_relative_to(installed.venv), where
    assert lean == "True True", "the daemon's install must not pull scapy or matplotlib"


def test_installed_cli_finds_its_topologies_and_dissector(installed: Installed) -> None:
    helped = installed.run("carpsim", "lab", "up", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "topology" in helped.stdout
    listed = installed.run(
        "python",
        "-c",
        "from carpsim.lab import topology as t; print(' '.join(t.builtin_names())); "
        "print(t.load('reference').name, len(t.load('three-node').nodes))",
    )
    assert listed.returncode == 0, listed.stderr
    names, loaded = listed.stdout.splitlines()
    # Every topology of the checkout is in the wheel, and nothing else.
    shipped = sorted(p.stem for p in (ROOT / "carpsim" / "lab" / "topologies").glob("*.toml"))
    assert names.split() == shipped
    assert {"reference", "three-node", "nat-interface"} <= set(shipped)
    assert loaded == "reference 3"
    lua = installed.run("carpsim", "decode", "--dissector-path")
    assert lua.returncode == 0, lua.stderr
    path = Path(lua.stdout.strip())
    assert path.is_relative_to(installed.venv), path
    assert "Proto(" in path.read_text(), "the shipped file is the Lua dissector"


@pytest.mark.netns
def test_installed_lab_up_and_down_from_another_directory(installed: Installed) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    prefix = netns.unique_prefix("pk")
    try:
        up = installed.run("carpsim", "lab", "--prefix", prefix, "up", timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "node1 MASTER on every VHID" in up.stdout
        status = installed.run("carpsim", "lab", "--prefix", prefix, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert '"MASTER"' in status.stdout
    finally:
        down = installed.run("carpsim", "lab", "--prefix", prefix, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert netns.list_namespaces(prefix) == []
