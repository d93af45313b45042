"""PURE DHCPv4 server and ISC-compatible failover peer: codec, lease model, machines.

Nothing here touches the kernel, the clock or global randomness: times arrive as arguments
(monotonic ``now`` for timers, Unix ``wall`` seconds for lease times, as ISC dhcpd keeps them).
"""
