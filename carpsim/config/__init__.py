"""PURE: the node's configuration by pfSense section (model, loader, validation, diff, nftables).

`loads(text)` / `parse(mapping)` give a validated `Config`; `diff(old, new)` what changed;
`render(config)` the nftables document; `carpsim.config.derive` the CARP/DHCP settings.
"""

from carpsim.config.diff import ConfigDiff, diff
from carpsim.config.loader import loads, parse
from carpsim.config.model import Config
from carpsim.config.nft import render

__all__ = ["Config", "ConfigDiff", "diff", "loads", "parse", "render"]
