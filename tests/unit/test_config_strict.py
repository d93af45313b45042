"""`[carp] strict` reaches the CARP machines through the node's config loader (carpsim node)."""

from __future__ import annotations

from carpsim.config import loads
from carpsim.config.derive import carp_vhids
from carpsim.config.dump import dumps

OLD_STYLE = """
[node]
name = "node1"

[carp]
password = "K33p_It_S3cr3t!"
strict = true

[[vhid]]
vhid = 1
interface = "lan"
srcip = "192.168.110.251"
vips = ["192.168.110.254/24"]

[[vhid]]
vhid = 2
interface = "dmz"
srcip = "192.168.120.251"
vips = ["192.168.120.254/24"]
strict = false
"""


def test_strict_from_carp_defaults_and_per_vhid_override() -> None:
    config = loads(OLD_STYLE)
    by_vhid = {v.carp.vhid: v.carp.strict for v in carp_vhids(config)}
    assert by_vhid == {1: True, 2: False}


def test_strict_survives_a_dump_round_trip() -> None:
    config = loads(OLD_STYLE)
    again = loads(dumps(config))
    assert [v.carp.strict for v in carp_vhids(again)] == [True, False]


def test_strict_is_off_by_default() -> None:
    config = loads(OLD_STYLE.replace("strict = true\n", "").replace("strict = false\n", ""))
    assert [v.carp.strict for v in carp_vhids(config)] == [False, False]
