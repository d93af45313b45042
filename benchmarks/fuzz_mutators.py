"""Input mutators for the fuzz soak (benchmarks/fuzz_soak.py): bytes, text and config trees.

Seeded by the caller's `random.Random`, so a run is reproducible. Byte edits are AFL-style
(bit flips, interesting 8/16/32-bit values in both byte orders, inserts, deletes, repeats,
splices with another corpus entry); text edits work on characters, tokens and lines, and now and
then build a deeply nested TOML value (the recursion trap); tree edits replace values inside a
parsed config with values of other types and ranges, drop keys, add unknown ones, copy tables.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

MAX_BYTES = 65_536
"""Largest input a mutator produces."""

_INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF, 0x10, 0x20, 0x40)
_INTERESTING_16 = (0, 1, 0x7FFF, 0x8000, 0xFFFF, 12, 20, 36, 576, 1500, 2048, 2049)
_INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFF0, 0x0A0D0D0A, 0x1A2B3C4D)


def mutate_bytes(rnd: random.Random, data: bytes, corpus: list[bytes]) -> bytes:  # noqa: C901 - one flat branch per mutation operator
    """A stack of 1-8 AFL-style edits; 5 % of the time, fresh random bytes instead."""
    if rnd.random() < 0.05 or not data:
        return rnd.randbytes(rnd.choice((0, 1, 4, 16, 64, 300, 1500)))
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        n = len(buf)
        op = rnd.randrange(12)
        pos = rnd.randrange(n) if n else 0
        if op == 0 and n:
            buf[pos] ^= 1 << rnd.randrange(8)
        elif op == 1 and n:
            buf[pos] = rnd.randrange(256)
        elif op == 2 and n:
            buf[pos] = rnd.choice(_INTERESTING_8)
        elif op == 3 and n >= 2:
            pos = rnd.randrange(n - 1)
            v = rnd.choice(_INTERESTING_16)
            buf[pos : pos + 2] = v.to_bytes(2, rnd.choice(("big", "little")))
        elif op == 4 and n >= 4:
            pos = rnd.randrange(n - 3)
            v = rnd.choice(_INTERESTING_32)
            buf[pos : pos + 4] = v.to_bytes(4, rnd.choice(("big", "little")))
        elif op == 5:
            buf[pos:pos] = rnd.randbytes(rnd.randint(1, 32))
        elif op == 6 and n:
            end = min(n, pos + rnd.randint(1, 64))
            del buf[pos:end]
        elif op == 7 and n:
            end = min(n, pos + rnd.randint(1, 64))
            buf[pos:pos] = buf[pos:end] * rnd.randint(1, 8)
        elif op == 8 and n:
            del buf[rnd.randrange(n) :]
        elif op == 9:
            buf += rnd.randbytes(rnd.randint(1, 64))
        elif op == 10 and corpus:
            other = rnd.choice(corpus)
            if other:
                cut = rnd.randrange(len(other))
                buf[pos:] = other[cut:]
        elif op == 11 and n:
            buf[pos] = (buf[pos] + rnd.choice((-1, 1, -16, 16))) & 0xFF
    return bytes(buf[:MAX_BYTES])


_TEXT_PIECES = (
    "[", "]", "{", "}", '"', "'", "=", "#", "\n", ",", ".", ";", ":", "\\", " ", "\t",
    "[[", "]]", '"""', "0x", "-", "+", "inf", "nan", "1e999", "\x00", "é", "\U0001f600",
    "true", "false", "lease", "failover", "peer", "state", "ends", "never", "epoch",
    "9999999999999999999999", "-1", "0", "255", "65536", "4294967296", "0.0.0.0",
    "224.0.0.18", "255.255.255.255", "0.0.0.0/0", "::1", "2001:db8::1/64", "ff:ff",
)  # fmt: skip


def mutate_text(rnd: random.Random, text: str, corpus: list[str]) -> str:  # noqa: C901 - one flat branch per mutation operator
    """Character, token and line edits; sometimes deep nesting (the recursion trap)."""
    if rnd.random() < 0.02:
        depth = rnd.choice((100, 1000, 5000))
        opener, closer = rnd.choice((("[", "]"), ("{a=", "}"), ("[{a=", "}]")))
        return f"x = {opener * depth}1{closer * depth}\n" + text[: rnd.randrange(len(text) + 1)]
    chars = list(text)
    for _ in range(rnd.randint(1, 6)):
        n = len(chars)
        op = rnd.randrange(8)
        pos = rnd.randrange(n + 1)
        if op == 0:
            chars[pos:pos] = rnd.choice(_TEXT_PIECES)
        elif op == 1 and n:
            del chars[pos : pos + rnd.randint(1, 20)]
        elif op == 2 and n:
            chars[pos:pos] = chars[pos : pos + rnd.randint(1, 40)] * rnd.randint(1, 4)
        elif op == 3 and n:
            lines = "".join(chars).split("\n")
            i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            if rnd.random() < 0.5:
                lines.insert(i, lines[j])
            chars = list("\n".join(lines))
        elif op == 4 and n:
            del chars[pos:]
        elif op == 5 and corpus:
            other = rnd.choice(corpus)
            cut = rnd.randrange(len(other) + 1)
            chars[pos:] = other[cut:]
        elif op == 6:
            chars[pos:pos] = chr(rnd.randrange(0x20, 0x2FF))
        elif op == 7 and n:
            # Replace a run of digits (a value) with an interesting number.
            while pos < n and not chars[pos].isdigit():
                pos += 1
            end = pos
            while end < n and chars[end].isdigit():
                end += 1
            chars[pos:end] = rnd.choice(_TEXT_PIECES[38:45])
    return "".join(chars)[:MAX_BYTES]


_VALUES: tuple[Any, ...] = (
    0, -1, 1, 255, 256, 65535, 65536, 2**31, 2**32, 2**64, 10**30, -(2**63),
    0.0, -0.0, 1e-9, 1e308, float("inf"), float("nan"), True, False, "", "x" * 300,
    "0.0.0.0", "224.0.0.18", "255.255.255.255", "127.0.0.1", "0.0.0.0/0", "10.0.0.1/33",
    "fe80::1", "::", "lan", "é\x00", "1:2:3:4:5:6", [], [1, "a"], {}, {"x": 1}, [[[]]],
)  # fmt: skip


def _fresh(value: Any) -> Any:
    """A private copy: the pool's lists and tables must not grow from one input to the next."""
    return json.loads(json.dumps(value))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def mutate_tree(rnd: random.Random, tree: Any, corpus: list[Any]) -> Any:
    """A parsed config with 1-4 typed edits: replaced values, dropped/unknown keys, copies."""
    tree = _fresh(tree)  # the trees are JSON-able TOML
    for _ in range(rnd.randint(1, 4)):
        paths = list(_paths(tree))
        path = rnd.choice(paths)
        if not path:
            continue
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        op = rnd.randrange(6)
        if op <= 2:
            parent[key] = _fresh(rnd.choice(_VALUES))
        elif op == 3:
            del parent[key]
        elif op == 4 and isinstance(parent, dict):
            parent[rnd.choice(("bogus", "vhid", "name", "peer", "mtu", "0"))] = _fresh(
                rnd.choice(_VALUES)
            )
        elif op == 5 and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[key])))
    return tree
