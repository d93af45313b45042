"""Support code for benchmarks/takeover.py: the shared namespace segment, the contenders
(carpsim, ucarp, keepalived), one failover/failback repetition, and the report."""
