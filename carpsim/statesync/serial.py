"""Sequence-number arithmetic for the XSEQ extension (RFC 1982 serial numbers, 32 bits).

Seq 0 means "unsequenced" and is never issued, so the stream runs 1, 2, ..., 2^32-1, 1, ...
Comparisons are by the signed distance modulo 2^32: `a` precedes `b` when `b` is less than
2^31 ahead of it. Plain `<` stops replication after 2^32 frames (the wrap looks like a jump
back of four billion frames), and lets one forged large number pass for "far ahead".
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 1 << 31


def seq_next(seq: int, n: int = 1) -> int:
    """The seq `n` frames after `seq` (skipping 0)."""
    return (seq - 1 + n) % MASK + 1


def seq_diff(a: int, b: int) -> int:
    """Signed distance from `b` to `a` (a - b), in -2^31 .. 2^31-1."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    return seq_diff(a, b) < 0


def seq_le(a: int, b: int) -> bool:
    return seq_diff(a, b) <= 0


def seq_between(low: int, x: int, high: int) -> bool:
    """low <= x <= high in serial order (the window is assumed < 2^31 wide)."""
    return seq_le(low, x) and seq_le(x, high)
