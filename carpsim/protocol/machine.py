"""The per-VHID CARP state machine (carp-spec §3), sans-IO.

Inputs are methods taking `now` (monotonic seconds); each returns the actions the driver must
carry out, in order. There is exactly one timer: master-down while BACKUP, the advert period
while MASTER; `next_deadline()` says when to call `on_timer`.

Election follows the BSD rules: a master that hears an equal-or-better advert steps down (never
an IP tie-break, which can leave two masters against ucarp, §3.3), and the OpenBSD demote byte is
compared before intervals. Our counter is a constant random cookie (OpenBSD style), which makes
loop detection free; peers' counters are never checked for monotonicity (§2.5).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from carpsim.errors import DecodeError
from carpsim.protocol.codec import (
    CarpAuth,
    CarpPacket,
    build_advert,
    decode_packet,
    encode_packet,
)
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import (
    BOW_OUT_ADVBASE,
    BOW_OUT_ADVSKEW,
    CARP_MAXSKEW,
    CarpState,
    DropReason,
    MasterDownFormula,
)
from carpsim.protocol.events import (
    Action,
    AddVip,
    AdvertAccepted,
    CountDrop,
    DelVip,
    SendGarp,
    StateChanged,
    Transmit,
)
from carpsim.protocol.transitions import TRANSITIONS, CarpInput

_DEMOTE_MAX = 255
_GARP_REPEAT_AFTER = 2  # adverts after takeover before the second GARP (OpenBSD, ucarp)


class CarpMachine:
    """One virtual host. Build with a `CarpConfig` and an injected `random.Random`."""

    def __init__(self, config: CarpConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._auth = CarpAuth(config.password, config.vhid, config.vips)
        self._cookie = rng.getrandbits(64).to_bytes(8, "big")
        # The cookie never changes, so neither does our md: sign once.
        self._md = self._auth.sign(self._cookie)
        self._state = CarpState.INIT
        self._demote = config.demote
        self._skew_demotion = 0
        self._deadline: float | None = None
        self._delayed_garp = -1
        self._last_advert_at: float | None = None
        self._last_advert_src: str | None = None
        self._pending: CarpPacket | None = None
        self._reason = ""

    # ---------------------------------------------------------------- read-only state

    @property
    def state(self) -> CarpState:
        return self._state

    @property
    def config(self) -> CarpConfig:
        return self._config

    @property
    def vhid(self) -> int:
        return self._config.vhid

    @property
    def demote(self) -> int:
        return self._demote

    @property
    def skew_demotion(self) -> int:
        return self._skew_demotion

    @property
    def counter_cookie(self) -> bytes:
        return self._cookie

    @property
    def last_advert_at(self) -> float | None:
        return self._last_advert_at

    @property
    def last_advert_src(self) -> str | None:
        return self._last_advert_src

    @property
    def effective_advskew(self) -> int:
        """FreeBSD's D: configured skew plus demotion, clamped to 240 (carp-spec §3.6).

        The clamp applies only while demoted and never lowers the skew, so a configured 254
        (pfSense maintenance mode) keeps its meaning.
        """
        skew = self._config.advskew
        if self._skew_demotion <= 0:
            return skew
        return max(skew, min(skew + self._skew_demotion, CARP_MAXSKEW))

    @property
    def advert_interval(self) -> float:
        base, skew = self._config.advbase, self.effective_advskew
        if base == 0 and skew == 0:
            return 1 / 256
        return base + skew / 256

    @property
    def master_down_interval(self) -> float:
        cfg = self._config
        if cfg.master_down_formula is MasterDownFormula.OPENBSD:
            return max(cfg.deadratio * (cfg.advbase + cfg.advskew / 256), 3 / 256)
        return cfg.deadratio * cfg.advbase + cfg.advskew / 256

    def next_deadline(self) -> float | None:
        return self._deadline

    # ---------------------------------------------------------------- inputs

    def link_up(self, now: float) -> list[Action]:
        return self._dispatch(now, CarpInput.LINK_UP, "link_up")

    def link_down(self, now: float) -> list[Action]:
        return self._dispatch(now, CarpInput.LINK_DOWN, "link_down")

    def shutdown(self, now: float) -> list[Action]:
        return self._dispatch(now, CarpInput.SHUTDOWN, "shutdown")

    def force_backup(self, now: float) -> list[Action]:
        return self._dispatch(now, CarpInput.FORCE_BACKUP, "forced_backup")

    def force_master(self, now: float) -> list[Action]:
        return self._dispatch(now, CarpInput.FORCE_MASTER, "forced_master")

    def on_timer(self, now: float) -> list[Action]:
        if self._deadline is None or now < self._deadline:
            return []
        return self._dispatch(now, CarpInput.TIMER, "master_down")

    def set_demote(self, now: float, value: int) -> list[Action]:
        """Set the OpenBSD demote count (absolute, clamped to 0..255); a master re-advertises."""
        value = min(max(value, 0), _DEMOTE_MAX)
        if value == self._demote:
            return []
        self._demote = value
        return self._dispatch(now, CarpInput.DEMOTE, "demote")

    def set_skew_demotion(self, now: float, value: int) -> list[Action]:
        """Set the FreeBSD-style demotion added to advskew (absolute); a master re-advertises."""
        value = max(value, 0)
        if value == self._skew_demotion:
            return []
        self._skew_demotion = value
        return self._dispatch(now, CarpInput.DEMOTE, "demote")

    def packet_received(self, now: float, pkt: CarpPacket) -> list[Action]:
        """A decoded advert. Drops come first (vhid, HMAC, loop; carp-spec §5.1 order)."""
        adv = pkt.advert
        if adv.vhid != self._config.vhid:
            return [CountDrop(self._config.vhid, DropReason.BADVHID, f"vhid {adv.vhid}")]
        if not self._auth.verify(adv.counter, adv.md):
            return [CountDrop(self._config.vhid, DropReason.BADAUTH, f"from {pkt.src}")]
        if adv.counter == self._cookie:
            return [CountDrop(self._config.vhid, DropReason.LOOP, "our own counter cookie")]
        src = str(pkt.src)
        self._last_advert_at = now
        self._last_advert_src = src
        accepted = AdvertAccepted(self._config.vhid, src, adv.advbase, adv.advskew, adv.demote)
        self._pending = pkt
        try:
            return [accepted, *self._dispatch(now, CarpInput.ADVERT, "advert")]
        finally:
            self._pending = None

    def packet_bytes_received(self, now: float, data: bytes) -> list[Action]:
        """Convenience for single-VHID drivers: decode, then `packet_received`."""
        try:
            pkt = decode_packet(data)
        except DecodeError as exc:
            return [CountDrop(self._config.vhid, DropReason(exc.reason), exc.detail)]
        return self.packet_received(now, pkt)

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, now: float, event: CarpInput, reason: str) -> list[Action]:
        rule = TRANSITIONS[(self._state, event)]
        handler: Callable[[CarpMachine, float, str], list[Action]] = _HANDLERS[rule.handler]
        return handler(self, now, reason)

    # ---------------------------------------------------------------- handlers (see transitions)

    def _ignore(self, now: float, reason: str) -> list[Action]:
        return []

    def _set_state(self, new: CarpState, reason: str) -> StateChanged:
        old, self._state = self._state, new
        return StateChanged(self._config.vhid, old, new, reason)

    def _start_backup(self, now: float, reason: str) -> list[Action]:
        self._deadline = now + self.master_down_interval
        return [self._set_state(CarpState.BACKUP, reason)]

    def _to_init(self, now: float, reason: str) -> list[Action]:
        was_master = self._state is CarpState.MASTER
        self._deadline = None
        self._delayed_garp = -1
        actions: list[Action] = [self._set_state(CarpState.INIT, reason)]
        if was_master:
            actions.append(DelVip(self._config.vhid, self._config.vips))
        return actions

    def _master_down(self, now: float, reason: str) -> list[Action]:
        """Become MASTER: state, VIPs, an advert at once, GARP; second GARP two adverts later."""
        vips = self._config.vips
        actions: list[Action] = [
            self._set_state(CarpState.MASTER, reason),
            AddVip(self._config.vhid, vips),
        ]
        self._delayed_garp = -1
        actions.extend(self._send_advert(now, reason))
        actions.append(SendGarp(self._config.vhid, vips))
        if self._config.garp_repeat:
            self._delayed_garp = _GARP_REPEAT_AFTER
        return actions

    def _step_down(self, now: float, reason: str) -> list[Action]:
        self._deadline = now + self.master_down_interval
        self._delayed_garp = -1
        return [
            self._set_state(CarpState.BACKUP, reason),
            DelVip(self._config.vhid, self._config.vips),
        ]

    def _send_advert(self, now: float, reason: str) -> list[Action]:
        actions: list[Action] = [self._advert(self.advert_interval_parts(), self._demote)]
        self._deadline = now + self.advert_interval
        if self._delayed_garp > 0:
            self._delayed_garp -= 1
            if self._delayed_garp == 0:
                actions.append(SendGarp(self._config.vhid, self._config.vips))
                self._delayed_garp = -1
        return actions

    def _bow_out(self, now: float, reason: str) -> list[Action]:
        """Clean stop (carp-spec §3.10): 255/255 makes every backup take over at once."""
        bow = self._advert((BOW_OUT_ADVBASE, BOW_OUT_ADVSKEW), self._demote)
        return [bow, *self._to_init(now, reason)]

    def _master_advert(self, now: float, reason: str) -> list[Action]:
        pkt = self._pending
        assert pkt is not None
        adv = pkt.advert
        mine, theirs = self.advert_interval, adv.interval
        dm, dp = self._demote, adv.demote
        if (mine >= theirs and dp <= dm) or dp < dm:
            return self._step_down(now, "preferred_master")
        return []

    def _backup_advert(self, now: float, reason: str) -> list[Action]:
        pkt = self._pending
        assert pkt is not None
        adv = pkt.advert
        cfg = self._config
        mine, theirs = self.advert_interval, adv.interval
        dm, dp = self._demote, adv.demote
        if cfg.preempt and mine < theirs and dp >= dm:
            return self._master_down(now, "preempt")
        if dp > dm:
            return self._master_down(now, "peer_demoted")
        if cfg.advbase != 0 and cfg.deadratio * cfg.advbase + cfg.advskew / 256 < theirs:
            return self._master_down(now, "peer_will_time_out")
        self._deadline = now + self.master_down_interval
        return []

    # ---------------------------------------------------------------- encoding

    def advert_interval_parts(self) -> tuple[int, int]:
        """(advbase, advskew) as they go on the wire now."""
        return self._config.advbase, self.effective_advskew

    def _advert(self, parts: tuple[int, int], demote: int) -> Transmit:
        cfg = self._config
        advbase, advskew = parts
        body = build_advert(
            vhid=cfg.vhid,
            advbase=advbase,
            advskew=advskew,
            demote=demote,
            counter=self._cookie,
            md=self._md,
        )
        packet = encode_packet(
            src=cfg.srcip, dst=cfg.dst, ip_id=self._rng.getrandbits(16), advert_bytes=body
        )
        return Transmit(cfg.vhid, packet)


_HANDLERS: dict[str, Callable[[CarpMachine, float, str], list[Action]]] = {
    rule.handler: getattr(CarpMachine, rule.handler) for rule in TRANSITIONS.values()
}
