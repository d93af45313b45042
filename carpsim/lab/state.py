"""A lab's identity on disk: prefix, namespace names, run dir and its state file.

Everything a lab creates is found from its prefix: namespaces ``<prefix><host>`` (the switch
is ``<prefix>sw``) and the run dir ``/run/carpsim/<prefix>/`` holding node configs, control
sockets, logs, pid files, a copy of the topology and ``state.json``. `carpsim lab down` needs
only the prefix, so it also cleans up after a crashed or interrupted ``up``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carpsim.errors import ConfigError

RUN_ROOT = Path(os.environ.get("CARPSIM_RUN_ROOT", "/run/carpsim"))
SWITCH = "sw"
_PREFIX = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,30}$")


def default_prefix(lab_name: str) -> str:
    return f"cs-{lab_name}-"


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise ConfigError("prefix", f"{prefix!r}: 1-31 of letters, digits, '_', '.', '-'")
    return prefix


@dataclass(frozen=True)
class LabPaths:
    prefix: str

    @property
    def run_dir(self) -> Path:
        return RUN_ROOT / self.prefix.rstrip("-")

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def topology_file(self) -> Path:
        return self.run_dir / "topology.toml"

    def namespace(self, host: str) -> str:
        return f"{self.prefix}{host}"

    @property
    def switch(self) -> str:
        return self.namespace(SWITCH)

    def node_config(self, node: str) -> Path:
        return self.run_dir / f"{node}.toml"

    def control(self, node: str) -> Path:
        return self.run_dir / f"{node}.sock"

    def events(self, node: str) -> Path:
        return self.run_dir / f"{node}-events.jsonl"

    def log(self, node: str) -> Path:
        return self.run_dir / f"{node}.log"

    def pid_file(self, node: str) -> Path:
        return self.run_dir / f"{node}.pid"


def write_state(paths: LabPaths, data: dict[str, Any]) -> None:
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(paths.state_file)


def read_state(paths: LabPaths) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(paths.state_file.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def new_state(paths: LabPaths, name: str, source: str) -> dict[str, Any]:
    return {
        "prefix": paths.prefix,
        "lab": name,
        "source": source,
        "created": time.time(),
        "ready": False,
    }


def running_prefixes() -> list[str]:
    """Prefixes of labs that have a state file (for commands given no --prefix)."""
    if not RUN_ROOT.is_dir():
        return []
    out = []
    for entry in sorted(RUN_ROOT.iterdir()):
        data = read_state(LabPaths(entry.name + "-"))
        if data and isinstance(data.get("prefix"), str):
            out.append(data["prefix"])
    return out


def remove_run_dir(paths: LabPaths) -> None:
    shutil.rmtree(paths.run_dir, ignore_errors=True)
