"""`carpsim lab unsinkable`: argument parsing, SIGTERM handling and output for the lab run.

    carpsim lab [--prefix P] unsinkable [--cycles N] [--settle S] [--streams N]
                                        [--no-statesync] [--png FILE] [--json FILE]

The run itself (probes, kill, failback, verdict) is `carpsim.lab.unsinkable.run`.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from carpsim.lab import report, verdict
from carpsim.lab.unsinkable import Options, run


def _say(line: str) -> None:
    print(f"  {line}", flush=True)


def _cli(args: Any) -> int:
    opts = Options(
        cycles=args.cycles,
        settle=args.settle,
        streams=args.streams,
        rate_mbit=args.rate_mbit,
        statesync=not args.no_statesync,
        png=Path(args.png) if args.png else None,
        json_path=Path(args.json) if args.json else None,
        topology=args.topology,
    )
    # Bad numbers fail before anything is built (the master-down check repeats with the lab).
    opts.check(0.0)
    if opts.png is not None:
        report.require_matplotlib()  # before a 30 s run, not after it
    from carpsim.lab import builder  # noqa: PLC0415 - keeps `carpsim --help` light

    builder.check_environment()
    main_pid = os.getpid()

    def on_term(signum: int, _frame: FrameType | None) -> None:
        # Forked helpers (pyroute2) inherit this handler and must die as usual.
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        result, timeline = run(args.prefix, opts, _say)
    finally:
        signal.signal(signal.SIGTERM, old)
    if opts.png is not None:
        report.write_png(timeline, result, opts.png)
        result["png"] = str(opts.png)
    if opts.json_path is not None:
        opts.json_path.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(report.summary(result))
    return 1 if result["verdict"] == verdict.FAILURE else 0


def add_parser(sub: Any) -> None:
    """Registers ``carpsim lab unsinkable`` on the `carpsim lab` subparsers."""
    p = sub.add_parser(
        "unsinkable",
        help="the seed's failover/failback test with probes and "
        "a verdict (brings the lab up and down if none runs)",
    )
    p.add_argument("--cycles", type=int, default=1, help="kill/failback repetitions (default 1)")
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds observed after each kill and power-on (default 10)",
    )
    p.add_argument("--streams", type=int, default=4, help="concurrent TCP downloads (default 4)")
    p.add_argument(
        "--rate-mbit", type=float, default=3.0, help="paced rate per stream in Mbit/s (default 3)"
    )
    p.add_argument(
        "--no-statesync", action="store_true", help="run the nodes with [statesync] enabled = false"
    )
    p.add_argument("--png", help="write the timeline plot here (needs the 'lab' extra)")
    p.add_argument("--json", help="write the measurements and verdict here")
    p.add_argument(
        "--topology",
        default="reference",
        help="topology to bring up when no lab runs (default reference)",
    )
    p.set_defaults(func=_cli)
