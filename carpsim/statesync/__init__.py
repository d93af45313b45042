"""PURE pfsync-style state replication: record model, codec, state table, replicator machine."""
