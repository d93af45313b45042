"""carpsim.node: the pure composition of one node's protocol machines."""
