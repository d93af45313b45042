"""The daemon installs lean: scapy and matplotlib are extras, never needed to run `carpsim`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from carpsim.errors import EnvironmentProblem
from carpsim.lab import report


def test_no_command_imports_scapy_or_matplotlib() -> None:
    # Every subcommand's module is imported to build the parser; none may pull an extra in.
    code = (
        "import sys, carpsim.cli as c; c.build_parser()\n"
        "import carpsim.runtime.node, carpsim.runtime.daemon, carpsim.lab.unsinkable\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'scapy', 'matplotlib'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_png_without_matplotlib_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(EnvironmentProblem) as info:
        report.require_matplotlib()
    message = str(info.value)
    assert "\n" not in message
    assert "pip install 'carpsim[lab]'" in message
