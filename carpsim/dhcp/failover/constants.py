"""Wire numbers of the failover protocol: message types, options, states, reject reasons."""

from __future__ import annotations

from enum import IntEnum

HEADER_SIZE = 12
MIN_MESSAGE = 12
MAX_MESSAGE = 2048
"""ISC drops the link on a length outside 12..2048."""

HBA_SIZE = 32
PROTOCOL_VERSION = 1
VENDOR_CLASS = "carpsim-0.1"
CLOCK_SKEW_LIMIT = 60
"""Seconds a CONNECT's time may differ from ours (ISC rejects with reason 4 beyond)."""
STARTUP_TIME = 15.0
CONNECT_WAIT = 15.0
"""How long an accepted link may stay silent before the primary's CONNECT (ISC)."""
RECONNECT_INTERVAL = 5.0
ACK_FLUSH_DELAY = 2.0
"""ISC holds BNDACKs up to 2 s (or until half the peer's window is pending)."""


class MessageType(IntEnum):
    POOLREQ = 1
    POOLRESP = 2
    BNDUPD = 3
    BNDACK = 4
    CONNECT = 5
    CONNECTACK = 6
    UPDREQALL = 7
    UPDDONE = 8
    UPDREQ = 9
    STATE = 10
    CONTACT = 11
    DISCONNECT = 12


class Opt(IntEnum):
    ADDRESSES_TRANSFERRED = 1
    ASSIGNED_IP = 2
    BINDING_STATUS = 3
    CLIENT_ID = 4
    CHADDR = 5
    CLTT = 6
    CLIENT_REPLY_OPTIONS = 7
    CLIENT_REQUEST_OPTIONS = 8
    DDNS = 9
    DELAYED_SERVICE = 10
    HBA = 11
    IP_FLAGS = 12
    LEASE_EXPIRATION = 13
    MAX_UNACKED = 14
    MCLT = 15
    MESSAGE = 16
    MESSAGE_DIGEST = 17
    POTENTIAL_EXPIRATION = 18
    RECEIVE_TIMER = 19
    PROTOCOL_VERSION = 20
    REJECT_REASON = 21
    RELATIONSHIP_NAME = 22
    SERVER_FLAGS = 23
    SERVER_STATE = 24
    STOS = 25
    TLS_REPLY = 26
    TLS_REQUEST = 27
    VENDOR_CLASS = 28
    VENDOR_OPTIONS = 29


FIXED_SIZE: dict[int, int] = {
    Opt.ADDRESSES_TRANSFERRED: 4,
    Opt.ASSIGNED_IP: 4,
    Opt.BINDING_STATUS: 1,
    Opt.CLTT: 4,
    Opt.DELAYED_SERVICE: 1,
    Opt.IP_FLAGS: 2,
    Opt.LEASE_EXPIRATION: 4,
    Opt.MAX_UNACKED: 4,
    Opt.MCLT: 4,
    Opt.POTENTIAL_EXPIRATION: 4,
    Opt.RECEIVE_TIMER: 4,
    Opt.PROTOCOL_VERSION: 1,
    Opt.REJECT_REASON: 1,
    Opt.SERVER_FLAGS: 1,
    Opt.SERVER_STATE: 1,
    Opt.STOS: 4,
    Opt.TLS_REPLY: 1,
    Opt.TLS_REQUEST: 1,
}
"""Options whose data length is fixed; any other length is a protocol error in ISC."""

SERVER_FLAG_STARTUP = 0x01
IP_FLAG_RESERVED = 0x1
IP_FLAG_BOOTP = 0x2


class FailoverState(IntEnum):
    """Server states with their wire values (ISC: RECOVER-WAIT is its private 254)."""

    STARTUP = 1
    NORMAL = 2
    COMMUNICATIONS_INTERRUPTED = 3
    PARTNER_DOWN = 4
    POTENTIAL_CONFLICT = 5
    RECOVER = 6
    PAUSED = 7
    SHUTDOWN = 8
    RECOVER_DONE = 9
    RESOLUTION_INTERRUPTED = 10
    CONFLICT_DONE = 11
    RECOVER_WAIT = 254

    @property
    def word(self) -> str:
        """The word ISC logs and pfSense's Failover Status shows (``partner-down``)."""
        return self.name.lower().replace("_", "-")


class RejectReason(IntEnum):
    ILLEGAL_IP = 1
    FATAL_CONFLICT = 2
    MISSING_BIND_INFO = 3
    TIME_MISMATCH = 4
    INVALID_MCLT = 5
    UNKNOWN = 6
    DUPLICATE_CONNECTION = 7
    INVALID_PARTNER = 8
    TLS_UNAVAILABLE = 9
    TLS_REQUIRED = 10
    TLS_OTHER = 11
    DIGEST_UNSUPPORTED = 12
    DIGEST_REQUIRED = 13
    VERSION_MISMATCH = 14
    OUTDATED = 15
    LESS_CRITICAL = 16
    NO_TRAFFIC = 17
    HBA_CONFLICT = 18
    IP_NOT_RESERVED = 19
    UNKNOWN_REASON = 254
