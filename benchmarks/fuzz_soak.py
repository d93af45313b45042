"""Fuzz soak: every codec and every config loader against mutated and random input.

The property, per target: the only exceptions that may leave are `DecodeError` and
`ConfigError` (the ones carpsim counts or prints as one line), and no single input takes longer
than ``--slow-ms``. Inputs are seeded mutations (AFL-style byte operations, text and TOML-aware
edits, typed replacements inside parsed config trees) of a corpus of valid inputs built with the
project's own encoders and the vendored captures, plus a share of purely random inputs. The
generator is seeded, so a run is reproducible with ``--seed``.

    python benchmarks/fuzz_soak.py [--inputs N] [--seconds S] [--targets a,b] [--seed K]
                                   [--slow-ms X] [--save DIR] [--json FILE]

Each target stops after ``--inputs`` inputs (default 1,000,000) or ``--seconds`` seconds
(default: no limit), whichever comes first. The table gives inputs run, distinct failures
(exception type + raising line, or "slow"), and the slowest input. A failing input is printed
(and written to ``--save``) so it can become a regression test. docs/fuzzing.md has the figures.
The exit status is 1 if any target failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz_targets import Target, targets

from carpsim.errors import ConfigError, DecodeError

ALLOWED: tuple[type[BaseException], ...] = (DecodeError, ConfigError)
RETIME_MS = 2.0
"""Inputs slower than this are timed twice more and keep their fastest time."""


# ---------------------------------------------------------------- the loop


@dataclass
class Result:
    name: str
    inputs: int = 0
    failures: dict[str, tuple[str, Any]] = field(default_factory=dict)
    max_ms: float = 0.0
    seconds: float = 0.0


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "carpsim" in f.filename] or frames
    last = inside[-1] if inside else None
    loc = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(exc).__name__} at {loc}"


def _timed(target: Target, value: Any) -> tuple[float, BaseException | None]:
    start = time.perf_counter()
    try:
        target.run(value)
    except ALLOWED:
        pass
    except RecursionError as exc:
        return time.perf_counter() - start, exc
    except Exception as exc:
        return time.perf_counter() - start, exc
    return time.perf_counter() - start, None


def run_target(
    target: Target,
    inputs: int,
    seconds: float | None = None,
    seed: int = 0,
    slow_ms: float = 100.0,
) -> Result:
    rnd = random.Random(f"{seed}:{target.name}")
    corpus = target.seeds()
    result = Result(target.name)
    start = time.perf_counter()
    deadline = None if seconds is None else start + seconds
    for i in range(inputs):
        if deadline is not None and i % 64 == 0 and time.perf_counter() > deadline:
            break
        value = target.mutate(rnd, rnd.choice(corpus), corpus)
        took, exc = _timed(target, value)
        result.inputs += 1
        if exc is not None:
            result.failures.setdefault(_where(exc), (repr(exc)[:200], value))
        if took * 1000 > min(slow_ms, RETIME_MS):
            # A shared machine stalls now and then: only a repeatable slowness counts, for the
            # verdict and for the reported maximum alike.
            gc.collect()
            took = min(took, *(_timed(target, value)[0] for _ in range(2)))
            if took * 1000 > slow_ms:
                result.failures.setdefault(
                    f"slow (> {slow_ms:g} ms)", (f"{took * 1e3:.1f} ms", value)
                )
        result.max_ms = max(result.max_ms, took * 1000)
    result.seconds = time.perf_counter() - start
    return result


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--seconds", type=float, default=None, help="time budget per target")
    parser.add_argument("--targets", default="", help="comma-separated names (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slow-ms", type=float, default=100.0)
    parser.add_argument("--save", type=Path, default=None, help="write failing inputs here")
    parser.add_argument("--json", type=Path, default=None, help="write the table as JSON")
    args = parser.parse_args(argv)
    wanted = {t for t in args.targets.split(",") if t}
    chosen = [t for t in targets() if not wanted or t.name in wanted]
    unknown = wanted - {t.name for t in chosen}
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    print(f"{'TARGET':<18} {'INPUTS':>10} {'FAILURES':>8} {'MAX MS':>8} {'INPUTS/S':>9}")
    results = []
    for target in chosen:
        res = run_target(target, args.inputs, args.seconds, args.seed, args.slow_ms)
        results.append(res)
        rate = res.inputs / res.seconds if res.seconds else 0.0
        print(
            f"{res.name:<18} {res.inputs:>10} {len(res.failures):>8} {res.max_ms:>8.2f} "
            f"{rate:>9.0f}",
            flush=True,
        )
        for where, (text, value) in res.failures.items():
            print(f"    {where}: {text}\n      input: {_show(value)[:400]}", flush=True)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                name = f"{res.name}-{abs(hash(where)) % 10**8}"
                blob = value if isinstance(value, bytes) else _show(value).encode()
                (args.save / name).write_bytes(blob)
    if args.json is not None:
        table = [
            {
                "target": r.name,
                "inputs": r.inputs,
                "failures": sorted(r.failures),
                "max_ms": round(r.max_ms, 3),
                "seconds": round(r.seconds, 1),
            }
            for r in results
        ]
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    return 1 if any(r.failures for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
