"""Moved to `carpsim.wire.pcap` (pure); re-exported for code that still imports it from here."""

from carpsim.wire.pcap import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    Frame,
    PcapError,
    gratuitous_arp_ip,
    network_payload,
    read_frames,
)

__all__ = [
    "ETHERTYPE_ARP",
    "ETHERTYPE_IPV4",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_RAW",
    "Frame",
    "PcapError",
    "gratuitous_arp_ip",
    "network_payload",
    "read_frames",
]
