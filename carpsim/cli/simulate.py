"""``carpsim simulate SCENARIO``: run a named CARP scenario in virtual time, print its timeline."""

from __future__ import annotations

import argparse
import json

from carpsim.errors import ConfigError
from carpsim.sim.carp_lan import TraceEvent
from carpsim.sim.scenarios import SCENARIOS


def _event_dict(e: TraceEvent) -> dict[str, object]:
    return {
        "time": e.time,
        "node": e.node,
        "vhid": e.vhid,
        "from": e.old.name if e.old else None,
        "to": e.new.name if e.new else None,
        "reason": e.reason,
    }


def run(args: argparse.Namespace) -> int:
    if args.list or args.scenario is None:
        width = max(len(n) for n in SCENARIOS)
        for name, scenario in SCENARIOS.items():
            print(f"{name:<{width}}  {scenario.description}")
        return 0
    if args.scenario not in SCENARIOS:
        raise ConfigError("scenario", f"unknown {args.scenario!r}; see `carpsim simulate --list`")
    scenario = SCENARIOS[args.scenario]
    runner = scenario.run(args.seed)
    if args.json:
        for event in runner.trace:
            print(json.dumps(_event_dict(event)))
        return 0
    print(f"# {scenario.name}: {scenario.description} (seed {args.seed})")
    print(f"{'TIME':>12}  {'NODE':<6} {'VHID':>4}  EVENT")
    for e in runner.trace:
        vhid = "-" if e.vhid is None else str(e.vhid)
        print(f"{e.time:>11.6f}s  {e.node:<6} {vhid:>4}  {e.describe()}")
    summary = ", ".join(
        f"vhid {v}: {','.join(runner.masters(v)) or 'none'}"
        for v in sorted({v for n in runner.nodes.values() for v in n.group.machines})
    )
    print(
        f"# at {runner.now:.3f}s masters: {summary}; adverts sent {runner.lan.sent}, "
        f"lost {runner.lan.lost}"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("simulate", help="run a CARP scenario in virtual time")
    p.add_argument("scenario", nargs="?", help="scenario name (see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--seed", type=int, default=0, help="seed for loss/jitter and cookies")
    p.add_argument("--json", action="store_true", help="one JSON object per timeline event")
    p.set_defaults(func=run)
