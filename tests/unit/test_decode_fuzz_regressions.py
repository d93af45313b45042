"""Inputs the fuzz soak (benchmarks/fuzz_soak.py) found escaping as other exceptions; now errors.

Each was an exception other than DecodeError/ConfigError out of a parser of untrusted text.
"""

from __future__ import annotations

import pytest

from carpsim.config import loader as config_loader
from carpsim.dhcp import leasefile
from carpsim.errors import ConfigError
from carpsim.lab import topology
from carpsim.web import config as web_config


def test_a_lease_file_date_too_big_for_c_long_is_skipped_not_raised() -> None:
    # Found as OverflowError out of calendar.timegm (leasefile._time).
    text = (
        'failover peer "dhcp_lan" state {\n'
        "  my state normal at 2 99999999999999999999/12/01 1:00:00;\n"
        "}\n"
        "lease 192.168.110.150 {\n  starts 2 2026/12/01 10:00:00;\n}\n"
    )
    parsed = leasefile.parse(text)
    assert parsed.skipped == 1  # the unreadable statement, counted like any other
    record = parsed.failover["dhcp_lan"]
    assert (record.my_state, record.my_since) == ("normal", None)
    assert list(map(str, parsed.leases)) == ["192.168.110.150"]


@pytest.mark.parametrize("opener", ["[", "{a="])
def test_a_deeply_nested_topology_is_a_one_line_config_error(opener: str) -> None:
    # Found as RecursionError out of tomllib (lab.topology.loads).
    closer = "]" if opener == "[" else "}"
    with pytest.raises(ConfigError) as err:
        topology.loads(f"x = {opener * 5000}1{closer * 5000}\n", "deep.toml")
    assert err.value.field == "deep.toml"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "listen", ["127.0.0.1:8\u00b9080", "127.0.0.1:\u0661\u0662", "[::1]:\u00b2"]
)
def test_a_listen_port_of_unicode_digits_is_a_config_error(listen: str) -> None:
    # Found as ValueError out of int() (web.config.parse_listen): str.isdigit() said yes.
    with pytest.raises(ConfigError) as err:
        web_config.parse_listen(listen)
    assert err.value.field == "web.listen"


def test_a_deeply_nested_node_config_is_a_one_line_config_error() -> None:
    # Found by the soak: RecursionError out of tomllib through carpsim.config.loader.loads.
    with pytest.raises(ConfigError) as err:
        config_loader.loads("x = " + "[" * 5000 + "]" * 5000 + "\n", "deep.toml")
    assert err.value.field == "deep.toml"
    assert "\n" not in str(err.value)
