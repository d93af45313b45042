"""RFC 3074 hash and ISC's HBA semantics, with the buckets a real dhcpd pair confirmed."""

from __future__ import annotations

import pytest

from carpsim.dhcp.failover.loadbal import MIXING_TABLE, bucket, hba_from_split, primary_serves


def test_table_is_a_permutation() -> None:
    assert sorted(MIXING_TABLE) == list(range(256))


@pytest.mark.parametrize(
    ("last", "expected", "primary"),
    [(0x02, 27, True), (0x01, 141, False), (0x05, 97, True), (0x07, 122, True)],
)
def test_lab_vectors(last: int, expected: int, primary: bool) -> None:
    mac = bytes([2, 0, 0, 0, 1, last])
    assert bucket(mac) == expected
    assert primary_serves(hba_from_split(128), mac) is primary


def test_split_128_is_the_hba_dhcpd_sends() -> None:
    assert hba_from_split(128) == b"\xff" * 16 + b"\x00" * 16
    assert hba_from_split(0) == bytes(32)
    assert hba_from_split(256) == b"\xff" * 32
    assert hba_from_split(3) == b"\x07" + bytes(31)
    with pytest.raises(ValueError, match="split"):
        hba_from_split(257)


def test_split_extremes_give_everything_to_one_side() -> None:
    keys = [bytes([2, 0, 0, 0, i >> 8, i & 255]) for i in range(2000)]
    assert all(primary_serves(hba_from_split(256), k) for k in keys)
    assert not any(primary_serves(hba_from_split(0), k) for k in keys)
    share = sum(primary_serves(hba_from_split(128), k) for k in keys) / len(keys)
    assert 0.4 < share < 0.6


def test_key_length_is_part_of_the_hash() -> None:
    assert bucket(b"") == 0
    assert bucket(b"\x00") != bucket(b"\x00\x00")
