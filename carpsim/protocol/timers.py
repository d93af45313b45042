"""The two CARP interval formulas (OpenBSD; FreeBSD and ucarp), the only place they are written.

The machine times its adverts and its master-down timer with them, the codec's `CarpAdvert`
reports a sender's interval with `advert_interval`, and the lab verdict and probes judge
captured timings against the same numbers.
"""

from __future__ import annotations

from carpsim.protocol.constants import MasterDownFormula

SUBSECOND_FLOOR = 1 / 256
"""OpenBSD's advert period when advbase and advskew are both 0."""


def advert_interval(advbase: int, advskew: int) -> float:
    """Seconds between adverts of a master sending (advbase, advskew)."""
    if advbase == 0 and advskew == 0:
        return SUBSECOND_FLOOR
    return advbase + advskew / 256


def master_down_interval(
    advbase: int,
    advskew: int,
    *,
    deadratio: int = 3,
    formula: MasterDownFormula = MasterDownFormula.FREEBSD,
) -> float:
    """How long a BACKUP with this (advbase, advskew) waits after the last advert it heard.

    FreeBSD (also pfSense, ucarp, old OpenBSD): deadratio*B + S/256. OpenBSD: deadratio*(B +
    S/256), never below 3/256 s so advbase 0 still leaves room for three adverts.
    """
    if formula is MasterDownFormula.OPENBSD:
        return max(deadratio * (advbase + advskew / 256), 3 * SUBSECOND_FLOOR)
    return deadratio * advbase + advskew / 256
