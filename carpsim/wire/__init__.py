"""PURE byte tools: the Internet checksum, Ethernet/GARP framing, the ctnetlink message codec and
the pcap/pcapng reader. Bytes in, values out; malformed input raises only `DecodeError`."""
