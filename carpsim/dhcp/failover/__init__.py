"""PURE ISC-compatible DHCP failover peer (draft-ietf-dhc-failover-12 as dhcpd 4.4 speaks it).

`codec` frames and parses the TCP stream, `loadbal` is the RFC 3074 hash, `transitions` the
state table, `machine` the protocol machine that also answers the DHCP server's
`FailoverPolicy` questions.
"""
