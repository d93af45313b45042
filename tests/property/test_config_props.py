"""Random input only ever raises ConfigError: the TOML loader, lint's raw checks, config.xml."""

from __future__ import annotations

import contextlib
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.config import lint, parse, pfsense_xml
from carpsim.config.loader import TOP_KEYS
from carpsim.errors import ConfigError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"
REF = tomllib.loads((VECTORS / "reference-node1.toml").read_text())

leaf = st.one_of(
    st.text(max_size=12),
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "any",
            "lan net",
            "wan address",
            "(self)",
            "192.168.110.0/24",
            "10.0.0.1",
            "INSIDE_NETS",
            "tcp",
            "pass",
            "80-90",
            "K33p_It_S3cr3t!",
            "lan",
        ]
    ),
)
keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "rule",
            "vip",
            "interface",
            "source",
            "destination",
            "subnet",
            "vhid",
            "address",
            "type",
            "target",
            "range",
            "from",
            "to",
            "password",
            "advskew",
        ]
    ),
)
tree = st.recursive(
    leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(keys, kids, max_size=4)),
    max_leaves=16,
)


@settings(max_examples=400, deadline=None)
@given(section=st.sampled_from(sorted(TOP_KEYS)), body=tree)
def test_random_section_only_raises_config_error(section: str, body: Any) -> None:
    data = dict(REF)
    data[section] = body
    with contextlib.suppress(ConfigError):
        parse(data)
    lint.raw_findings("n", data)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.sampled_from(sorted(TOP_KEYS)), tree, max_size=4))
def test_random_document_only_raises_config_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        parse(data)
    lint.raw_findings("n", data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_as_config_xml_only_raise_config_error(blob: bytes) -> None:
    with contextlib.suppress(ConfigError):
        pfsense_xml.import_xml(b"<pfsense>" + blob + b"</pfsense>")
    with contextlib.suppress(ConfigError):
        pfsense_xml.import_xml(blob)


def _xml(value: Any, tag: str) -> str:
    if isinstance(value, dict):
        return f"<{tag}>" + "".join(_xml(v, k) for k, v in value.items()) + f"</{tag}>"
    if isinstance(value, list):
        return "".join(_xml(v, tag) for v in value)
    text = str(value).replace("&", "&amp;").replace("<", "&lt;")
    return f"<{tag}>{text}</{tag}>"


xml_keys = st.sampled_from(
    [
        "interfaces",
        "wan",
        "lan",
        "opt1",
        "enable",
        "ipaddr",
        "subnet",
        "filter",
        "rule",
        "vip",
        "virtualip",
        "mode",
        "dhcpd",
        "range",
        "from",
        "hasync",
        "nat",
        "outbound",
        "source",
        "network",
        "aliases",
        "alias",
        "name",
        "address",
        "gateways",
        "gateway_item",
        "gateway",
    ]
)
xml_tree = st.recursive(
    st.sampled_from(["", "carp", "lan", "192.168.110.1", "24", "on", "x y", "1"]),
    lambda kids: st.dictionaries(xml_keys, kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(xml_tree)
def test_random_pfsense_structure_only_raises_config_error(body: Any) -> None:
    doc = _xml(body if isinstance(body, dict) else {}, "pfsense").encode()
    with contextlib.suppress(ConfigError):
        pfsense_xml.import_xml(doc)
