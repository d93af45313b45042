"""CARP protocol constants (BSD ip_carp.h and ip_carp.c, ucarp)."""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, IPv6Address

IPPROTO_CARP = 112
CARP_VERSION = 2
CARP_TYPE_ADVERTISEMENT = 1
CARP_DFLTTL = 255
CARP_AUTHLEN = 7
CARP_HEADER_LEN = 36
IPV4_HEADER_LEN = 20
CARP_TOS = 0x10  # IPTOS_LOWDELAY, as OpenBSD and ucarp send
CARP_GROUP_V4 = IPv4Address("224.0.0.18")
CARP_GROUP_V6 = IPv6Address("ff02::12")
CARP_MAXSKEW = 240  # FreeBSD clamps demoted advskew here
MAX_PASSWORD_LEN = 19  # BSD strlcpy into 20 bytes; ucarp refuses more
BOW_OUT_ADVBASE = 255
BOW_OUT_ADVSKEW = 255


def virtual_mac(vhid: int) -> str:
    """The CARP/VRRP virtual MAC the VIP answers ARP with (not ucarp's 00:00:5e:00:00:vhid)."""
    return f"00:00:5e:00:01:{vhid:02x}"


class CarpState(enum.Enum):
    INIT = 0
    BACKUP = 1
    MASTER = 2


class MasterDownFormula(enum.Enum):
    """How BACKUP computes its master-down interval from its own advbase B and advskew S."""

    FREEBSD = "freebsd"  # deadratio*B + S/256 (FreeBSD, pfSense, old OpenBSD, ucarp)
    OPENBSD = "openbsd"  # deadratio*(B + S/256), allows B == 0 for sub-second intervals


class DropReason(enum.StrEnum):
    """carpstats counter names (ip_carp.h); `loop` is split out of badauth."""

    BADIF = "badif"
    BADTTL = "badttl"
    BADLEN = "badlen"
    BADSUM = "badsum"
    BADVER = "badver"
    BADVHID = "badvhid"
    BADAUTH = "badauth"
    LOOP = "loop"
    NOT_CARP = "not_carp"
    REPLAY = "replay"
    """Strict mode: an authentic advert whose counter does not move its source forward."""
