"""Actions the CARP machine asks its driver to carry out.

Inputs are methods on `CarpMachine` (each takes `now`); outputs are these frozen dataclasses.
The driver (runtime/ on real links, sim/ in virtual time) executes them in list order.
"""

from __future__ import annotations

from dataclasses import dataclass

from carpsim.protocol.config import VipInterface
from carpsim.protocol.constants import CarpState, DropReason


@dataclass(frozen=True)
class Transmit:
    """Send this IPv4 packet (20-byte header + 36-byte CARP advert) from the virtual MAC."""

    vhid: int
    packet: bytes


@dataclass(frozen=True)
class AddVip:
    """Bring the VIPs up on this VHID's interface (the node is now MASTER)."""

    vhid: int
    vips: tuple[VipInterface, ...]


@dataclass(frozen=True)
class DelVip:
    """Take the VIPs down (the node left MASTER)."""

    vhid: int
    vips: tuple[VipInterface, ...]


@dataclass(frozen=True)
class SendGarp:
    """Gratuitous ARP (request, sender = target = VIP) from the virtual MAC for each IPv4 VIP."""

    vhid: int
    vips: tuple[VipInterface, ...]


@dataclass(frozen=True)
class StateChanged:
    """A transition; `reason` is a short machine-readable word (e.g. ``master_down``)."""

    vhid: int
    old: CarpState
    new: CarpState
    reason: str


@dataclass(frozen=True)
class CountDrop:
    """A received packet was dropped; count it under `reason` and log it (once per reason)."""

    vhid: int | None
    reason: DropReason
    detail: str = ""


@dataclass(frozen=True)
class AdvertAccepted:
    """A valid advert from a peer was processed (for last-heard age and metrics)."""

    vhid: int
    src: str
    advbase: int
    advskew: int
    demote: int


Action = Transmit | AddVip | DelVip | SendGarp | StateChanged | CountDrop | AdvertAccepted
