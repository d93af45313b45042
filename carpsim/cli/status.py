"""``carpsim status``: the Status > CARP page of a running daemon, in a terminal."""

from __future__ import annotations

import argparse
import json
from typing import Any

from carpsim.cli import dhcp_render
from carpsim.errors import EnvironmentProblem
from carpsim.runtime.control import DEFAULT_PATH, query


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="show CARP status of a running daemon")
    p.add_argument("--control", default=DEFAULT_PATH, help="control socket path")
    p.add_argument("--json", action="store_true", help="print the raw status JSON")
    p.set_defaults(func=main)


def _age(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def _drops(drops: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(drops.items())) or "-"


def render(status: dict[str, Any]) -> str:
    lines = [
        f"node {status.get('node')} (pid {status.get('pid')})  rx {status.get('rx_packets')}  "
        f"tx {status.get('tx_packets')}  demote {status.get('demote', 0)}",
        "",
        f"{'VHID':>4}  {'INTERFACE':<10} {'STATE':<7} {'BASE':>4} {'SKEW':>4} {'DEM':>3} "
        f"{'MDOWN':>6} {'LAST ADV':>8}  {'FROM':<15} VIPS",
    ]
    for v in status.get("vhids", []):
        lines.append(
            f"{v['vhid']:>4}  {v['interface']:<10} {v['state']:<7} {v['advbase']:>4} "
            f"{v['advskew']:>4} {v['demote']:>3} {v['master_down_s']:>5.2f}s "
            f"{_age(v['last_advert_age_s']):>8}  {v['last_advert_src'] or '-':<15} "
            f"{' '.join(v['vips'])}"
        )
    lines.append("")
    lines.append(f"drops: {_drops(status.get('drops', {}))}")
    for v in status.get("vhids", []):
        if v.get("drops"):
            lines.append(f"  vhid {v['vhid']}: {_drops(v['drops'])}")
    sync = status.get("statesync")
    if isinstance(sync, dict) and "ready" in sync:
        lines += ["", *_render_sync(sync)]
    cfg = status.get("configsync")
    if isinstance(cfg, dict):
        from carpsim.lab.status import render_configsync  # noqa: PLC0415

        lines += ["", f"config sync: {render_configsync(cfg)}"]
    dhcp = dhcp_render.render(status.get("dhcp"))
    if dhcp:
        lines += ["", *dhcp]
    return "\n".join(lines)


def _render_sync(sync: dict[str, Any]) -> list[str]:
    st, fr, rep, bulk = sync["states"], sync["frames"], sync["replicator"], sync["bulk"]
    last = bulk.get("last_duration_s")
    return [
        f"statesync {'READY' if sync['ready'] else 'NOT READY'} ({sync['reason']})  "
        f"{sync['interface']} -> {sync['peer']}  demote +{sync['demote']}",
        f"  states: kernel {st['kernel']}  mirror {st['mirror']} (own {st['own']}, "
        f"peer {st['peer']})",
        f"  frames: tx {fr['tx']}  rx {fr['rx']}  acks {rep.get('acks_tx', 0)}  "
        f"nacks {rep.get('nacks_tx', 0)}  resends {rep.get('resends', 0)}  "
        f"refresh {rep.get('refresh_sent', 0)}",
        f"  bulk: received {bulk['count']} (gave up {bulk['gave_up']}, last "
        f"{'-' if last is None else f'{last:.3f}s'})  served {bulk['served']}",
        f"  drops: {_drops(sync.get('drops', {}))}",
    ]


def main(args: argparse.Namespace) -> int:
    try:
        status = query(args.control, {"cmd": "status"})
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot query {args.control}: {exc}") from exc
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render(status))
    return 0
