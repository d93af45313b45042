"""tests/vectors/status/ was captured from real nodes (its README): it must keep the shape the
services report today, or the panel test would pass against a status no node sends any more.
Recapture it when one of these fails."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from carpsim.configsync import apply
from carpsim.runtime.configsync_service import ConfigStore, ConfigSyncService
from carpsim.runtime.nodeconfig import StateSyncConfig
from carpsim.runtime.statesync_service import StateSyncService
from carpsim.statesync.config import ReplicatorConfig

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def captured(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / "status" / f"{name}.json").read_text())
    return data


def _never(_plan: apply.ApplyPlan) -> None:
    raise AssertionError("nothing is applied here")


@pytest.mark.parametrize("name", ["node1", "node2"])
def test_configsync_section_matches_the_service_and_its_peer_url(name: str, tmp_path: Path) -> None:
    store = ConfigStore.load(VECTORS / "config" / f"reference-{name}.toml")
    live = ConfigSyncService(store, _never, state_dir=tmp_path).status()
    got = captured(name)["configsync"]
    assert set(got) == set(live)
    assert set(got["received"]) == set(live["received"])
    # The URL the page shows is the one the code builds from the config (None: no push).
    assert got["peer_url"] == live["peer_url"]
    assert (got["peer_url"] is None) == (name == "node2")


@pytest.mark.parametrize("name", ["node1", "node2"])
def test_statesync_section_matches_the_service(name: str) -> None:
    cfg = StateSyncConfig("sync", IPv4Address("172.16.1.6"), ReplicatorConfig(creatorid=1))
    live = StateSyncService(cfg, lambda _r, _why: None).status()
    got = captured(name)["statesync"]
    assert set(got) == set(live)
    assert got["recent"], "the capture had a client flow"
    for row in got["recent"]:
        assert set(row) == {"proto", "src", "dst", "state", "origin"}


@pytest.mark.parametrize("name", ["node1", "node2"])
def test_every_dhcp_pool_was_captured_in_failover_state_normal(name: str) -> None:
    pools = captured(name)["dhcp"]
    assert [p["interface"] for p in pools] == ["lan", "dmz"]
    for p in pools:
        assert (p["failover"]["my_state"], p["failover"]["peer_state"]) == ("normal", "normal")
