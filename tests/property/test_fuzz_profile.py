"""The fuzz soak's bounded CI profile: every target, a fixed number of seeded inputs.

benchmarks/fuzz_soak.py runs the same targets for a million inputs each (docs/fuzzing.md);
here each gets a few hundred (fewer for the slowest), with a fixed seed so a failure
reproduces. The property is the soak's: only `DecodeError`/`ConfigError` leave a codec or a
loader. Time per input is the soak's business, not a unit test's, so it is not checked here.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))
soak: Any = importlib.import_module("fuzz_soak")
fuzz_targets: Any = importlib.import_module("fuzz_targets")

INPUTS = 300
SLOW_TARGETS = {"config.loads": 120, "config.parse": 120, "configsync.receive": 50}
"""Fewer inputs where one costs several milliseconds (a whole config validated each time)."""
TARGETS = fuzz_targets.targets()


def test_every_codec_and_loader_is_a_target() -> None:
    names = {t.name for t in TARGETS}
    assert {
        "carp.codec",
        "statesync.codec",
        "wire.pcap",
        "wire.ctnetlink",
        "wire.garp.mac",
        "wire.tcpstream",
        "dhcp.codec",
        "dhcp.leasefile",
        "cli.decode",
        "nodeconfig.load",
        "nodeconfig.parse",
        "topology.loads",
        "topology.parse",
        "web.config",
        "config.loads",
        "config.parse",
        "config.pfsense_xml",
        "configsync.receive",
        "dhcp.failover",
    } <= names


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_bounded_profile_only_raises_decode_or_config_errors(target: Any) -> None:
    inputs = SLOW_TARGETS.get(target.name, INPUTS)
    result = soak.run_target(target, inputs, seed=2026, slow_ms=float("inf"))
    assert result.inputs == inputs
    assert result.failures == {}, "\n".join(
        f"{where}: {text} input={soak._show(value)[:300]}"
        for where, (text, value) in result.failures.items()
    )


def test_the_harness_reports_an_escape() -> None:
    # The profile above could not fail if the harness swallowed everything: prove it does not.
    def broken(_data: bytes) -> None:
        raise KeyError("escaped")

    bad = fuzz_targets.Target("broken", lambda: [b"x"], fuzz_targets.mutate_bytes, broken)
    result = soak.run_target(bad, 10, seed=0, slow_ms=float("inf"))
    assert list(result.failures) == [
        f"KeyError at {Path(__file__).name}:{broken.__code__.co_firstlineno + 1}"
    ]
