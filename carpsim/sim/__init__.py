"""carpsim.sim: virtual time for pure machines.

`link` is the one network model, `runner` the one loop; `carp_lan`, `sync_pair` and `ha_pair`
are presets on them, and `scenarios` holds the named CARP timelines of `carpsim simulate`.
"""
