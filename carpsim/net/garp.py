"""Moved to `carpsim.wire.garp` (pure); re-exported for the edge modules that import it here."""

from carpsim.wire.garp import ETH_P_IP, ethernet_frame, garp_frame, mac_bytes, multicast_mac

__all__ = ["ETH_P_IP", "ethernet_frame", "garp_frame", "mac_bytes", "multicast_mac"]
