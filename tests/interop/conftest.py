"""Interop tier: the same namespace fixtures as tests/integration (loaded from its conftest).

tests/interop is a package (``interop``) so mypy and pytest tell this conftest apart from the
integration one; test modules import helpers with ``from interop.conftest import ...``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Lan, lan, read_events, status, try_status, vhid_state, wait_for
else:
    _NAME = "carpsim_netns_fixtures"
    if _NAME not in sys.modules:
        _path = Path(__file__).resolve().parents[1] / "integration" / "conftest.py"
        _spec = importlib.util.spec_from_file_location(_NAME, _path)
        assert _spec is not None
        assert _spec.loader is not None
        _mod = importlib.util.module_from_spec(_spec)
        sys.modules[_NAME] = _mod
        _spec.loader.exec_module(_mod)
    _fx = sys.modules[_NAME]
    Lan, lan, read_events, status = _fx.Lan, _fx.lan, _fx.read_events, _fx.status
    try_status, vhid_state, wait_for = _fx.try_status, _fx.vhid_state, _fx.wait_for

__all__ = [
    "Lan",
    "lan",
    "need_tool",
    "read_events",
    "status",
    "try_status",
    "vhid_state",
    "wait_for",
]


def need_tool(name: str) -> str:
    """Path of a third-party tool, or skip (the Makefile's APT_PACKAGES installs them)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return path
