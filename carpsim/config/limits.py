"""Limits both node-config loaders enforce (`carpsim.config` and `runtime.nodeconfig`).

One table, so a value the old loader refuses is refused by the sectioned one too: the numeric
[statesync] knobs' ranges and the addresses that can never be a host (VIP, source, peer).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

SYNC_RANGES: dict[str, tuple[float, float]] = {
    # Seconds. The floors keep every timer from spinning the loop that also sends CARP
    # adverts; the ceilings keep a typo from silently disabling the mechanism.
    "flush_interval": (0.001, 60.0),
    "bulk_tick": (0.001, 1.0),
    "bulk_retry_interval": (0.1, 60.0),
    "bulk_timeout": (0.1, 600.0),
    "refresh_interval": (0.01, 3600.0),
    "ack_delay": (0.001, 10.0),
    "resend_timeout": (0.01, 60.0),
    # Counts. The MTU ceiling is the largest jumbo frame a NIC takes: a frame must fit one
    # IPv4 datagram and the socket buffers sized for it.
    "mtu": (576, 9216),
    "bulk_frames_per_tick": (1, 10_000),
    "bulk_max_tries": (1, 1000),
    "sweep_per_interval": (0, 100_000),
    "creatorid": (1, 0xFFFFFFFF),
}
"""Accepted range of every numeric [statesync] knob (docs/node-config.md lists them)."""

_BROADCAST = IPv4Address("255.255.255.255")


def out_of_range(key: str, value: float) -> str | None:
    """The error message when `value` is outside `key`'s range (None: fine or unbounded)."""
    if key not in SYNC_RANGES:
        return None
    low, high = SYNC_RANGES[key]
    return None if low <= value <= high else f"must be {low:g}..{high:g}, got {value!r}"


def not_a_host(addr: IPv4Address | IPv6Address) -> str | None:
    """Why `addr` cannot be a VIP, an advert source or a unicast peer (None: it can)."""
    if addr.is_unspecified:
        return "is the unspecified address"
    if addr.is_multicast:
        return "is a multicast address (224.0.0.18 is CARP's own group)"
    if addr == _BROADCAST:
        return "is the broadcast address"
    if addr.is_loopback:
        return "is a loopback address"
    return None
