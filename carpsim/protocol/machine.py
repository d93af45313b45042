"""The per-VHID CARP state machine (BSD ip_carp.c, ucarp), sans-IO.

Inputs are methods taking `now` (monotonic seconds); each returns the actions the driver must
carry out, in order. There is exactly one timer: master-down while BACKUP, the advert period
while MASTER; `next_deadline()` says when to call `on_timer`.

Election follows the BSD rules: a master that hears an equal-or-better advert steps down (never
an IP tie-break: ucarp's raw s_addr compare can leave two masters), and the OpenBSD demote
byte is compared before intervals. Our counter is a constant random cookie (OpenBSD style),
which makes loop detection free; peers' counters are never checked for monotonicity (no BSD
checks it).
"""

from __future__ import annotations

import hmac
import random

from carpsim.protocol import timers
from carpsim.protocol.codec import CarpAdvert, CarpAuth, CarpPacket, build_advert, encode_packet
from carpsim.protocol.config import CarpConfig
from carpsim.protocol.constants import (
    BOW_OUT_ADVBASE,
    BOW_OUT_ADVSKEW,
    CARP_MAXSKEW,
    CarpState,
    DropReason,
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
from carpsim.protocol.strict import Freshness, strict_md
from carpsim.protocol.transitions import BACKUP, INIT, MASTER, CarpInput, Rule, rule

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
        self._strict = config.strict
        self._strict_seq = 0
        self._fresh = Freshness()
        self._state = CarpState.INIT
        self._demote = config.demote
        self._skew_demotion = 0
        # Both intervals are read on every timer and advert; they change only with the
        # config (fixed) and the skew demotion (set_skew_demotion recomputes).
        self._master_down = timers.master_down_interval(
            config.advbase,
            config.advskew,
            deadratio=config.deadratio,
            formula=config.master_down_formula,
        )
        # FreeBSD's wait, whatever our own formula: the "peer will time out" test uses it.
        self._freebsd_wait = timers.master_down_interval(
            config.advbase, config.advskew, deadratio=config.deadratio
        )
        self._advert_interval = timers.advert_interval(config.advbase, config.advskew)
        self._deadline: float | None = None
        self._delayed_garp = -1
        self._last_advert_at: float | None = None
        self._last_advert_src: str | None = None
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
        """FreeBSD's D: configured skew plus demotion, clamped to 240 (CARP_MAXSKEW).

        The clamp applies only while demoted and never lowers the skew, so a configured 254
        (pfSense maintenance mode) keeps its meaning.
        """
        skew = self._config.advskew
        if self._skew_demotion <= 0:
            return skew
        return max(skew, min(skew + self._skew_demotion, CARP_MAXSKEW))

    @property
    def advert_interval(self) -> float:
        return self._advert_interval

    @property
    def master_down_interval(self) -> float:
        return self._master_down

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
        self._advert_interval = timers.advert_interval(self._config.advbase, self.effective_advskew)
        return self._dispatch(now, CarpInput.DEMOTE, "demote")

    def reconfigure(self, now: float, config: CarpConfig) -> list[Action]:
        """New CARP parameters (skew, base, password ...) for the same VHID and VIPs.

        The state and its deadline stay: an updated VHID never flaps or takes over because of
        the edit itself. The new values take effect from the next advert (a master sends one
        at once, as after a demote change), the next master-down wait from the next advert
        heard. The config sync updates VHIDs this way (pfSense reconfigures a changed VIP).
        """
        if config.vhid != self._config.vhid or config.vips != self._config.vips:
            raise ValueError("reconfigure keeps the VHID and its addresses")
        self._config = config
        self._auth = CarpAuth(config.password, config.vhid, config.vips)
        self._md = self._auth.sign(self._cookie)
        self._strict = config.strict  # (its counter and the peers' freshness carry on)
        self._master_down = timers.master_down_interval(
            config.advbase, config.advskew, deadratio=config.deadratio,
            formula=config.master_down_formula,
        )  # fmt: skip
        self._freebsd_wait = timers.master_down_interval(
            config.advbase, config.advskew, deadratio=config.deadratio
        )
        self._advert_interval = timers.advert_interval(config.advbase, self.effective_advskew)
        return self._dispatch(now, CarpInput.DEMOTE, "reconfigured")

    def packet_received(self, now: float, pkt: CarpPacket) -> list[Action]:
        """A decoded advert. Drops come first (vhid, HMAC, loop; OpenBSD's order)."""
        adv = pkt.advert
        if adv.vhid != self._config.vhid:
            return [CountDrop(self._config.vhid, DropReason.BADVHID, f"vhid {adv.vhid}")]
        src = str(pkt.src)
        if self._strict:
            drop = self._strict_check(adv, src)
            if drop is not None:
                return [drop]
        else:
            if not self._auth.verify(adv.counter, adv.md):
                return [CountDrop(self._config.vhid, DropReason.BADAUTH, f"from {pkt.src}")]
            if adv.counter == self._cookie:
                return [CountDrop(self._config.vhid, DropReason.LOOP, "our own counter cookie")]
        self._last_advert_at = now
        self._last_advert_src = src
        accepted = AdvertAccepted(self._config.vhid, src, adv.advbase, adv.advskew, adv.demote)
        return [accepted, *self._dispatch(now, CarpInput.ADVERT, "advert", pkt)]

    def _strict_check(self, adv: CarpAdvert, src: str) -> CountDrop | None:
        cfg = self._config
        md = strict_md(cfg.password, cfg.vhid, cfg.vips, advskew=adv.advskew,
                       advbase=adv.advbase, demote=adv.demote, counter=adv.counter)  # fmt: skip
        if not hmac.compare_digest(md, adv.md):
            return CountDrop(cfg.vhid, DropReason.BADAUTH, f"strict MAC from {src}")
        if adv.counter[:4] == self._cookie[:4]:
            return CountDrop(cfg.vhid, DropReason.LOOP, "our own incarnation")
        if not self._fresh.fresh(src, adv.counter):
            return CountDrop(cfg.vhid, DropReason.REPLAY, f"stale counter from {src}")
        return None

    # ---------------------------------------------------------------- dispatch

    def _dispatch(
        self, now: float, event: CarpInput, reason: str, pkt: CarpPacket | None = None
    ) -> list[Action]:
        return TRANSITIONS[(self._state, event)].handler(self, now, reason, pkt)

    # ---------------------------------------------------------------- handlers (see TRANSITIONS)

    def _ignore(self, now: float, reason: str, pkt: CarpPacket | None) -> list[Action]:
        return []

    def _set_state(self, new: CarpState, reason: str) -> StateChanged:
        old, self._state = self._state, new
        return StateChanged(self._config.vhid, old, new, reason)

    def _start_backup(self, now: float, reason: str, pkt: CarpPacket | None) -> list[Action]:
        self._deadline = now + self.master_down_interval
        return [self._set_state(CarpState.BACKUP, reason)]

    def _to_init(self, now: float, reason: str, pkt: CarpPacket | None = None) -> list[Action]:
        was_master = self._state is CarpState.MASTER
        self._deadline = None
        self._delayed_garp = -1
        actions: list[Action] = [self._set_state(CarpState.INIT, reason)]
        if was_master:
            actions.append(DelVip(self._config.vhid, self._config.vips))
        return actions

    def _become_master(
        self, now: float, reason: str, pkt: CarpPacket | None = None
    ) -> list[Action]:
        """Become MASTER: VIPs, an advert at once, GARP; second GARP two adverts later.

        The order is the order the edge executes in. The VIPs come before the advert because
        on preemption the old master steps down when it hears this advert, and the VIP must
        already answer by then. The StateChanged comes last: its bookkeeping (log, events
        file, metrics, hooks) costs about a millisecond that would otherwise delay the first
        advert and the GARP.
        """
        vips = self._config.vips
        actions: list[Action] = [AddVip(self._config.vhid, vips)]
        self._delayed_garp = -1
        actions.extend(self._send_advert(now, reason))
        actions.append(SendGarp(self._config.vhid, vips))
        if self._config.garp_repeat:
            self._delayed_garp = _GARP_REPEAT_AFTER
        actions.append(self._set_state(CarpState.MASTER, reason))
        return actions

    def _step_down(self, now: float, reason: str, pkt: CarpPacket | None) -> list[Action]:
        self._deadline = now + self.master_down_interval
        self._delayed_garp = -1
        return [
            self._set_state(CarpState.BACKUP, reason),
            DelVip(self._config.vhid, self._config.vips),
        ]

    def _send_advert(self, now: float, reason: str, pkt: CarpPacket | None = None) -> list[Action]:
        actions: list[Action] = [self._advert(self.advert_interval_parts(), self._demote)]
        self._deadline = now + self.advert_interval
        if self._delayed_garp > 0:
            self._delayed_garp -= 1
            if self._delayed_garp == 0:
                actions.append(SendGarp(self._config.vhid, self._config.vips))
                self._delayed_garp = -1
        return actions

    def _bow_out(self, now: float, reason: str, pkt: CarpPacket | None) -> list[Action]:
        """Clean stop (OpenBSD sc_bow_out): 255/255 makes every backup take over at once."""
        bow = self._advert((BOW_OUT_ADVBASE, BOW_OUT_ADVSKEW), self._demote)
        return [bow, *self._to_init(now, reason, pkt)]

    def _master_advert(self, now: float, reason: str, pkt: CarpPacket | None) -> list[Action]:
        assert pkt is not None  # the table routes only ADVERT here, which carries its packet
        adv = pkt.advert
        mine, theirs = self.advert_interval, adv.interval
        dm, dp = self._demote, adv.demote
        if (mine >= theirs and dp <= dm) or dp < dm:
            return self._step_down(now, "preferred_master", pkt)
        return []

    def _backup_advert(self, now: float, reason: str, pkt: CarpPacket | None) -> list[Action]:
        assert pkt is not None  # the table routes only ADVERT here, which carries its packet
        adv = pkt.advert
        cfg = self._config
        mine, theirs = self.advert_interval, adv.interval
        dm, dp = self._demote, adv.demote
        if cfg.preempt and mine < theirs and dp >= dm:
            return self._become_master(now, "preempt")
        if dp > dm:
            return self._become_master(now, "peer_demoted")
        # The sender's period exceeds the time we would wait for it: it will time out
        # anyway, so take over now.
        if cfg.advbase != 0 and self._freebsd_wait < theirs:
            return self._become_master(now, "peer_will_time_out")
        self._deadline = now + self.master_down_interval
        return []

    # ---------------------------------------------------------------- encoding

    def advert_interval_parts(self) -> tuple[int, int]:
        """(advbase, advskew) as they go on the wire now."""
        return self._config.advbase, self.effective_advskew

    def _advert(self, parts: tuple[int, int], demote: int) -> Transmit:
        cfg = self._config
        advbase, advskew = parts
        counter, md = self._cookie, self._md
        if self._strict:
            self._strict_seq = (self._strict_seq + 1) & 0xFFFFFFFF or 1
            counter = self._cookie[:4] + self._strict_seq.to_bytes(4, "big")
            md = strict_md(cfg.password, cfg.vhid, cfg.vips, advskew=advskew, advbase=advbase,
                           demote=demote, counter=counter)  # fmt: skip
        body = build_advert(
            vhid=cfg.vhid,
            advbase=advbase,
            advskew=advskew,
            demote=demote,
            counter=counter,
            md=md,
        )
        packet = encode_packet(
            src=cfg.srcip, dst=cfg.dst, ip_id=self._rng.getrandbits(16), advert_bytes=body
        )
        return Transmit(cfg.vhid, packet)


TRANSITIONS: dict[tuple[CarpState, CarpInput], Rule] = {
    # INIT: nothing happens until the interface is usable; no direct INIT -> MASTER.
    (INIT, CarpInput.LINK_UP): rule(CarpMachine._start_backup, BACKUP, why="arm master-down"),
    (INIT, CarpInput.LINK_DOWN): rule(CarpMachine._ignore, INIT, why="already down"),
    (INIT, CarpInput.ADVERT): rule(CarpMachine._ignore, INIT, why="not running"),
    (INIT, CarpInput.TIMER): rule(CarpMachine._ignore, INIT, why="no timer in INIT"),
    (INIT, CarpInput.DEMOTE): rule(CarpMachine._ignore, INIT, why="value stored, nothing to send"),
    (INIT, CarpInput.SHUTDOWN): rule(CarpMachine._ignore, INIT, why="already down"),
    (INIT, CarpInput.FORCE_BACKUP): rule(CarpMachine._ignore, INIT, why="not running"),
    (INIT, CarpInput.FORCE_MASTER): rule(CarpMachine._ignore, INIT, why="not running"),
    # BACKUP
    (BACKUP, CarpInput.LINK_UP): rule(CarpMachine._ignore, BACKUP, why="already up"),
    (BACKUP, CarpInput.LINK_DOWN): rule(CarpMachine._to_init, INIT, why="parent link down"),
    (BACKUP, CarpInput.ADVERT): rule(
        CarpMachine._backup_advert, BACKUP, MASTER, why="BSD advert election"
    ),
    (BACKUP, CarpInput.TIMER): rule(CarpMachine._become_master, MASTER, why="master-down expired"),
    (BACKUP, CarpInput.DEMOTE): rule(CarpMachine._ignore, BACKUP, why="only masters re-advertise"),
    (BACKUP, CarpInput.SHUTDOWN): rule(CarpMachine._to_init, INIT, why="no bow-out from a backup"),
    (BACKUP, CarpInput.FORCE_BACKUP): rule(CarpMachine._ignore, BACKUP, why="already backup"),
    (BACKUP, CarpInput.FORCE_MASTER): rule(
        CarpMachine._become_master, MASTER, why="admin state master"
    ),
    # MASTER
    (MASTER, CarpInput.LINK_UP): rule(CarpMachine._ignore, MASTER, why="already up"),
    (MASTER, CarpInput.LINK_DOWN): rule(CarpMachine._to_init, INIT, why="parent link down"),
    (MASTER, CarpInput.ADVERT): rule(
        CarpMachine._master_advert, MASTER, BACKUP, why="BSD advert election"
    ),
    (MASTER, CarpInput.TIMER): rule(CarpMachine._send_advert, MASTER, why="advert period"),
    (MASTER, CarpInput.DEMOTE): rule(
        CarpMachine._send_advert, MASTER, why="advertise change at once"
    ),
    (MASTER, CarpInput.SHUTDOWN): rule(CarpMachine._bow_out, INIT, why="bow-out 255/255"),
    (MASTER, CarpInput.FORCE_BACKUP): rule(
        CarpMachine._step_down, BACKUP, why="admin state backup"
    ),
    (MASTER, CarpInput.FORCE_MASTER): rule(CarpMachine._ignore, MASTER, why="already master"),
}
"""Every (state, input) pair: the handler that acts on it and the states it may leave."""
