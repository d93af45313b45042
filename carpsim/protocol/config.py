"""Frozen per-VHID CARP configuration, validated at construction.

Every validation failure raises `ConfigError(field, message)` so the CLI can print one line
naming the field and leave the running config alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Interface, ip_interface

from carpsim.errors import ConfigError
from carpsim.protocol.constants import (
    CARP_GROUP_V4,
    MAX_PASSWORD_LEN,
    MasterDownFormula,
)

VipInterface = IPv4Interface | IPv6Interface


def parse_vip(text: str, field_name: str = "vips") -> VipInterface:
    """Parse ``192.168.1.10/24`` (a bare address becomes /32 or /128)."""
    try:
        return ip_interface(text)
    except ValueError as exc:
        raise ConfigError(field_name, f"not an IP address/prefix: {text!r}") from exc


@dataclass(frozen=True)
class CarpConfig:
    """One virtual host (VHID) on one parent interface."""

    vhid: int
    """Virtual host id, 1..255; also the last byte of the virtual MAC."""
    vips: tuple[VipInterface, ...]
    """Virtual IPs with prefix; the addresses (not prefixes) go into the HMAC."""
    srcip: IPv4Address
    """IPv4 source of our adverts (an address of the parent interface)."""
    password: bytes = b""
    """HMAC key: the raw password bytes, at most 19 (BSD ifconfig strlcpy)."""
    advbase: int = 1
    """Seconds, 1..255 (0 allowed only with the openbsd formula)."""
    advskew: int = 0
    """1/256 s steps, 0..254 (this node's configured skew, before demotion)."""
    preempt: bool = False
    """A BACKUP that hears a slower master takes over at once."""
    deadratio: int = 3
    """Missed adverts before BACKUP declares the master down (ucarp -r)."""
    master_down_formula: MasterDownFormula = MasterDownFormula.FREEBSD
    demote: int = 0
    """Initial OpenBSD demote count, carried in byte 4 (0..255)."""
    dst: IPv4Address = CARP_GROUP_V4
    """224.0.0.18, or a unicast peer address."""
    garp_repeat: bool = True
    """Send the second GARP two adverts after takeover (OpenBSD/ucarp behaviour)."""
    strict: bool = False
    """Strict mode (protocol/strict.py): a MAC over the whole advert and per-source replay
    protection on the counter. carpsim-only: ucarp/BSD peers refuse such adverts."""

    def __post_init__(self) -> None:
        if not 1 <= self.vhid <= 255:
            raise ConfigError("vhid", f"must be 1..255, got {self.vhid}")
        if not self.vips:
            raise ConfigError("vips", "at least one virtual IP is required")
        if len(self.password) > MAX_PASSWORD_LEN:
            raise ConfigError(
                "password",
                f"at most {MAX_PASSWORD_LEN} bytes (BSD truncates, ucarp refuses); "
                f"got {len(self.password)}",
            )
        if not 0 <= self.advbase <= 255:
            raise ConfigError("advbase", f"must be 0..255, got {self.advbase}")
        if self.advbase == 0 and self.master_down_formula is not MasterDownFormula.OPENBSD:
            raise ConfigError("advbase", "0 (sub-second) requires master_down_formula = openbsd")
        if not 0 <= self.advskew <= 254:
            raise ConfigError("advskew", f"must be 0..254, got {self.advskew}")
        if self.advbase == 0 and self.advskew == 0:
            raise ConfigError("advskew", "advbase 0 needs advskew > 0 (interval = advskew/256 s)")
        if not 1 <= self.deadratio <= 255:
            raise ConfigError("deadratio", f"must be 1..255, got {self.deadratio}")
        if not 0 <= self.demote <= 255:
            raise ConfigError("demote", f"must be 0..255, got {self.demote}")
