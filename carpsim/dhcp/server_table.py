"""The DHCP server's decisions as data: (client message kind, situation) -> rule.

`classify` names the situation of a received message (RFC 2131 §4.3.2 for REQUESTs: the
client state is read from which of server-id, requested-address and ciaddr are set); the
server dispatches through `TRANSITIONS` only, and a property test sweeps every pair checking
that the replies a handler produces stay inside the rule's ``replies``. Whether the server
answers at all, and which DISCOVERs are its own, are the failover policy's words, so they
appear here as situations rather than as rules of their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from ipaddress import IPv4Address

from carpsim.dhcp import codec
from carpsim.dhcp.codec import DhcpMessage
from carpsim.dhcp.options import MessageType
from carpsim.dhcp.policy import FailoverPolicy


class Kind(enum.Enum):
    DISCOVER = "discover"
    REQUEST = "request"
    DECLINE = "decline"
    RELEASE = "release"
    INFORM = "inform"
    SERVER_REPLY = "server_reply"
    """OFFER/ACK/NAK or op BOOTREPLY: another server's traffic."""
    BOOTP = "bootp"
    """No (known) option 53: plain BOOTP, denied as pfSense's config does."""


class Situation(enum.Enum):
    NOT_SERVING = "not_serving"
    """The failover state says this server answers nobody (startup, recover, ...)."""
    PEERS = "peers"
    """A DISCOVER the load-balancing hash gives to the partner."""
    OURS = "ours"
    SELECTING_OURS = "selecting_ours"
    SELECTING_OTHER = "selecting_other"
    INIT_REBOOT = "init_reboot"
    RENEWING = "renewing"
    REBINDING = "rebinding"
    MALFORMED = "malformed"
    FOR_US = "for_us"
    NOT_FOR_US = "not_for_us"
    ANY = "any"


OFFER, ACK, NAK, PING = "offer", "ack", "nak", "ping"


@dataclass(frozen=True)
class Rule:
    handler: str
    replies: frozenset[str]
    """What the handler may send: offer / ack / nak, or ask for a ping."""
    why: str
    drop: str = ""
    """Counter name when the rule is a silent drop."""


def _r(handler: str, *replies: str, why: str, drop: str = "") -> Rule:
    return Rule(handler, frozenset(replies), why, drop)


K, S = Kind, Situation
TRANSITIONS: dict[tuple[Kind, Situation], Rule] = {
    (K.DISCOVER, S.NOT_SERVING): _r("_drop", why="failover service state", drop="notserving"),
    (K.DISCOVER, S.PEERS): _r("_drop", why="load balance to peer", drop="loadbalance"),
    (K.DISCOVER, S.OURS): _r("_discover", OFFER, PING, why="RFC 2131 §4.3.1"),
    (K.REQUEST, S.NOT_SERVING): _r("_drop", why="failover service state", drop="notserving"),
    (K.REQUEST, S.SELECTING_OURS): _r("_selecting", ACK, NAK, why="RFC 2131 §4.3.2 SELECTING"),
    (K.REQUEST, S.SELECTING_OTHER): _r(
        "_selected_other", why="client chose another server: forget our offer"
    ),
    (K.REQUEST, S.INIT_REBOOT): _r("_init_reboot", ACK, NAK, why="RFC 2131 §4.3.2 INIT-REBOOT"),
    (K.REQUEST, S.RENEWING): _r("_renew", ACK, NAK, why="RFC 2131 §4.3.2 RENEWING"),
    (K.REQUEST, S.REBINDING): _r("_rebind", ACK, NAK, why="RFC 2131 §4.3.2 REBINDING"),
    (K.REQUEST, S.MALFORMED): _r("_drop", why="no address named", drop="badrequest"),
    (K.DECLINE, S.NOT_SERVING): _r("_drop", why="failover service state", drop="notserving"),
    (K.DECLINE, S.FOR_US): _r("_decline", why="RFC 2131 §4.3.3: address in use, abandon it"),
    (K.DECLINE, S.NOT_FOR_US): _r("_drop", why="another server's lease", drop="otherserver"),
    (K.RELEASE, S.NOT_SERVING): _r("_drop", why="failover service state", drop="notserving"),
    (K.RELEASE, S.FOR_US): _r("_release", why="RFC 2131 §4.3.4"),
    (K.RELEASE, S.NOT_FOR_US): _r("_drop", why="another server's lease", drop="otherserver"),
    (K.INFORM, S.NOT_SERVING): _r("_drop", why="failover service state", drop="notserving"),
    (K.INFORM, S.ANY): _r("_inform", ACK, why="RFC 2131 §4.3.5: parameters, no lease"),
    (K.SERVER_REPLY, S.ANY): _r("_drop", why="not a client message", drop="serverreply"),
    (K.BOOTP, S.ANY): _r("_drop", why="deny dynamic bootp clients", drop="bootp"),
}

_KINDS = {
    MessageType.DISCOVER: Kind.DISCOVER,
    MessageType.REQUEST: Kind.REQUEST,
    MessageType.DECLINE: Kind.DECLINE,
    MessageType.RELEASE: Kind.RELEASE,
    MessageType.INFORM: Kind.INFORM,
    MessageType.OFFER: Kind.SERVER_REPLY,
    MessageType.ACK: Kind.SERVER_REPLY,
    MessageType.NAK: Kind.SERVER_REPLY,
}


def classify(
    msg: DhcpMessage, server_id: IPv4Address, policy: FailoverPolicy, to_broadcast: bool
) -> tuple[Kind, Situation]:
    """The table key for `msg` arriving at the server whose identifier is `server_id`."""
    mtype = msg.message_type
    if msg.op != codec.BOOTREQUEST:
        return Kind.SERVER_REPLY, Situation.ANY
    if mtype is None:
        return Kind.BOOTP, Situation.ANY
    kind = _KINDS[mtype]
    if kind is Kind.SERVER_REPLY:
        return kind, Situation.ANY
    if not policy.answers():
        return kind, Situation.NOT_SERVING
    sid = msg.server_id
    if kind is Kind.DISCOVER:
        ours = policy.serves_discover(msg.client_key, msg.secs)
        return kind, Situation.OURS if ours else Situation.PEERS
    if kind is Kind.INFORM:
        return kind, Situation.ANY
    if kind in (Kind.DECLINE, Kind.RELEASE):
        return kind, Situation.FOR_US if sid in (None, server_id) else Situation.NOT_FOR_US
    requested = msg.requested_ip
    if sid is not None:
        if requested is None:
            return kind, Situation.MALFORMED
        return kind, Situation.SELECTING_OURS if sid == server_id else Situation.SELECTING_OTHER
    if requested is not None and msg.ciaddr == codec.ZERO:
        return kind, Situation.INIT_REBOOT
    if msg.ciaddr != codec.ZERO:
        return kind, Situation.REBINDING if to_broadcast else Situation.RENEWING
    return kind, Situation.MALFORMED
