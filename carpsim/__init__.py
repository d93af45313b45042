"""carpsim: CARP, pfsync-style state sync and DHCP failover as pure machines, thin Linux edge."""

__version__ = "0.1.0"
__all__ = ["__version__"]
