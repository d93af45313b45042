"""ISC ``dhcpd.leases`` text: writer and tolerant parser (pure).

The format is the one pfSense users read in /var/dhcpd/var/db/dhcpd.leases: one
``lease A.B.C.D { ... }`` block per binding change, appended, so the *last* block for an
address is its current state (dhcpd reads it the same way), plus ``failover peer "name" state
{ my state X at T; partner state Y at T; }`` blocks. Times are ``W YYYY/MM/DD HH:MM:SS`` in UTC
with W the weekday (0 = Sunday), or ``epoch N;``, or ``never``.

The parser skips what it does not know (comments, ``server-duid``, ``set`` statements,
unknown block types) and counts it; a torn block at the end of the text (a write cut short)
is skipped and counted too, never fatal. The text it accepts is bounded (`MAX_TEXT`).

`Lease.tsfp` is written as both ``tsfp`` and ``atsfp`` (the model keeps one value: what the
peer acknowledged); on reading, ``atsfp`` is preferred.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address

from carpsim.dhcp.lease import BindingState, Lease
from carpsim.errors import DecodeError

MAX_TEXT = 64 * 1024 * 1024
STATE_NAMES = {s: s.name.lower() for s in BindingState}
_BY_NAME = {v: k for k, v in STATE_NAMES.items()}
# The closing quote is optional so that a string torn by a crash swallows the rest of the text:
# a "}" inside it must not close the torn block and pass a half-written lease as complete.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[{};]|[^\s{};"]+')


@dataclass(frozen=True)
class FailoverStateRecord:
    """The persisted failover state of one relationship (ISC's ``failover peer ... state``)."""

    name: str
    my_state: str
    my_since: int | None
    partner_state: str
    partner_since: int | None
    mclt: int | None = None


@dataclass
class LeaseFile:
    leases: dict[IPv4Address, Lease] = field(default_factory=dict)
    failover: dict[str, FailoverStateRecord] = field(default_factory=dict)
    skipped: int = 0
    """Statements and blocks not understood (or torn), skipped."""


def fmt_time(t: int) -> str:
    days = t // 86400
    secs = t % 86400
    y, mo, d = _civil(days)
    weekday = (days + 4) % 7  # 1970-01-01 was a Thursday
    clock = f"{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
    return f"{weekday} {y:04d}/{mo:02d}/{d:02d} {clock}"


def _civil(days: int) -> tuple[int, int, int]:
    # Proleptic Gregorian date from days since the epoch (H. Hinnant's algorithm).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return y + (m <= 2), m, d


def _quote(data: bytes) -> str:
    out = []
    for b in data:
        ch = chr(b)
        if 32 <= b < 127 and ch not in '"\\':
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def _unquote(token: str) -> bytes:
    body = token[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            octal = body[i + 1 : i + 4]
            if len(octal) == 3 and all(c in "01234567" for c in octal):
                out.append(int(octal, 8) & 0xFF)
                i += 4
                continue
            nxt = body[i + 1]
            out.extend({"n": b"\n", "t": b"\t"}.get(nxt, nxt.encode()))
            i += 2
            continue
        out.extend(ch.encode())
        i += 1
    return bytes(out)


def _next_state(lease: Lease) -> BindingState | None:
    if lease.state is BindingState.ACTIVE:
        return BindingState.FREE
    if lease.state in (BindingState.EXPIRED, BindingState.RELEASED):
        return BindingState.FREE
    return None


def format_lease(lease: Lease) -> str:
    lines = [f"lease {lease.address} {{", f"  starts {fmt_time(lease.starts)};"]
    lines.append(f"  ends {'never' if lease.ends is None else fmt_time(lease.ends)};")
    if lease.tstp is not None:
        lines.append(f"  tstp {fmt_time(lease.tstp)};")
    if lease.tsfp is not None:
        lines.append(f"  tsfp {fmt_time(lease.tsfp)};")
        lines.append(f"  atsfp {fmt_time(lease.tsfp)};")
    if lease.cltt is not None:
        lines.append(f"  cltt {fmt_time(lease.cltt)};")
    lines.append(f"  binding state {STATE_NAMES[lease.state]};")
    nxt = _next_state(lease)
    if nxt is not None:
        lines.append(f"  next binding state {STATE_NAMES[nxt]};")
    if lease.reserved:
        lines.append("  reserved;")
    if lease.hw_address:
        kind = "ethernet" if lease.hw_type == 1 else f"type-{lease.hw_type}"
        lines.append(f"  hardware {kind} {':'.join(f'{b:02x}' for b in lease.hw_address)};")
    if lease.client_id:
        lines.append(f"  uid {_quote(lease.client_id)};")
    if lease.hostname:
        lines.append(f"  client-hostname {_quote(lease.hostname.encode())};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_failover_state(rec: FailoverStateRecord) -> str:
    def at(t: int | None) -> str:
        return f" at {fmt_time(t)}" if t is not None else ""

    lines = [f'failover peer "{rec.name}" state {{']
    lines.append(f"  my state {rec.my_state}{at(rec.my_since)};")
    lines.append(f"  partner state {rec.partner_state}{at(rec.partner_since)};")
    if rec.mclt is not None:
        lines.append(f"  mclt {rec.mclt};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def format_file(
    leases: list[Lease] | tuple[Lease, ...], failover: list[FailoverStateRecord] | None = None
) -> str:
    head = "# The format of this file is documented in the dhcpd.leases(5) manual page.\n"
    head += "# Written by carpsim.\nauthoring-byte-order little-endian;\n\n"
    body = "".join(format_failover_state(r) + "\n" for r in failover or ())
    return head + body + "".join(format_lease(lease) + "\n" for lease in leases)


def _statements(tokens: list[str], i: int) -> tuple[list[list[str]], int, bool]:
    """Statements of a ``{ ... }`` body starting after the brace; (stmts, next index, closed)."""
    stmts: list[list[str]] = []
    cur: list[str] = []
    depth = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "{":
            depth += 1
            cur.append(tok)
        elif tok == "}":
            if depth == 0:
                return stmts, i, True
            depth -= 1
            cur.append(tok)
            if depth == 0:
                stmts.append(cur)
                cur = []
        elif tok == ";" and depth == 0:
            stmts.append(cur)
            cur = []
        else:
            cur.append(tok)
    return stmts, i, False


def _time(words: list[str]) -> int | None:
    if words == ["never"]:
        return None
    if len(words) == 2 and words[0] == "epoch":
        return int(words[1])
    if len(words) != 3:
        raise ValueError("bad time")
    y, mo, d = (int(x) for x in words[1].split("/"))
    h, mi, s = (int(x) for x in words[2].split(":"))
    try:
        return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    except OverflowError as exc:
        # A field too big for C's long: the same "bad time" as any other unreadable date.
        raise ValueError("bad time") from exc


def _lease(address: IPv4Address, stmts: list[list[str]]) -> tuple[Lease, int]:  # noqa: C901 - one branch per lease-file statement dhcpd writes
    fields: dict[str, object] = {}
    skipped = 0
    state = BindingState.FREE
    atsfp: int | None = None
    for st in stmts:
        if not st:
            continue
        head, rest = st[0], st[1:]
        try:
            if head in ("starts", "ends", "tstp", "tsfp", "cltt"):
                value = _time(rest)
                fields[head] = value if head != "starts" else (value or 0)
            elif head == "atsfp":
                atsfp = _time(rest)
            elif head == "binding" and rest[:1] == ["state"]:
                state = _BY_NAME[rest[1]]
            elif head == "hardware":
                fields["hw_type"] = 1 if rest[0] == "ethernet" else int(rest[0].split("-")[-1])
                fields["hw_address"] = bytes(int(x, 16) for x in rest[1].split(":"))
            elif head == "uid":
                raw = rest[0]
                fields["client_id"] = (
                    _unquote(raw)
                    if raw.startswith('"')
                    else bytes(int(x, 16) for x in raw.split(":"))
                )
            elif head == "client-hostname":
                fields["hostname"] = _unquote(rest[0]).decode("utf-8", "replace")
            elif head == "reserved":
                fields["reserved"] = True
            elif head in ("next", "rewind"):
                pass  # derived from the binding state when written
            else:
                skipped += 1
        except (ValueError, KeyError, IndexError):
            skipped += 1
    if atsfp is not None:
        fields["tsfp"] = atsfp
    return Lease(address, state, **fields), skipped  # type: ignore[arg-type]


def _failover(name: str, stmts: list[list[str]]) -> tuple[FailoverStateRecord | None, int]:
    mine = partner = ""
    my_at = partner_at = mclt = None
    skipped = 0
    for st in stmts:
        try:
            if st[:2] == ["my", "state"]:
                mine = st[2]
                my_at = _time(st[4:]) if st[3:4] == ["at"] else None
            elif st[:2] == ["partner", "state"]:
                partner = st[2]
                partner_at = _time(st[4:]) if st[3:4] == ["at"] else None
            elif st[:1] == ["mclt"]:
                mclt = int(st[1])
            elif st:
                skipped += 1
        except (ValueError, IndexError):
            skipped += 1
    if not mine:
        return None, skipped + 1
    return FailoverStateRecord(
        name, mine, my_at, partner or "unknown-state", partner_at, mclt
    ), skipped


def parse(text: str) -> LeaseFile:
    """Read a dhcpd.leases text; the last block for an address wins."""
    if len(text) > MAX_TEXT:
        raise DecodeError("long", f"lease file of {len(text)} characters")
    lines = [ln.split("#", 1)[0] if '"' not in ln else ln for ln in text.splitlines()]
    tokens = _TOKEN.findall("\n".join(ln for ln in lines if not ln.lstrip().startswith("#")))
    out = LeaseFile()
    i = 0
    while i < len(tokens):
        # A top-level statement runs to ";" or is a block "head ... { body }".
        j = i
        while j < len(tokens) and tokens[j] not in ("{", ";", "}"):
            j += 1
        if j >= len(tokens):
            out.skipped += 1  # trailing garbage / torn statement
            break
        head = tokens[i:j]
        if tokens[j] != "{":
            if tokens[j] == ";" and head[:1] not in (["authoring-byte-order"], ["server-duid"]):
                out.skipped += 1
            i = j + 1
            continue
        stmts, i, closed = _statements(tokens, j + 1)
        if not closed:
            out.skipped += 1  # torn final block: dhcpd ignores it as well
            break
        if head[:1] == ["lease"] and len(head) == 2:
            try:
                address = IPv4Address(head[1])
            except AddressValueError:
                out.skipped += 1
                continue
            lease, skipped = _lease(address, stmts)
            out.leases[address] = lease
            out.skipped += skipped
        elif head[:2] == ["failover", "peer"] and len(head) == 4 and head[3] == "state":
            rec, skipped = _failover(_unquote(head[2]).decode(), stmts)
            out.skipped += skipped
            if rec is not None:
                out.failover[rec.name] = rec
        else:
            out.skipped += 1
    return out
