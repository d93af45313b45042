"""Recapture node1.json / node2.json: each node's control-socket status in a reference lab.

    python tests/vectors/status/capture.py [PREFIX]     # as root; default prefix web2x-

Brings a private reference lab up, holds one TCP flow client1 -> server:5001 open through the
cluster, takes one DHCP lease on client1's segment, adds one rule on node1 (pushed to node2 by
XML-RPC), waits, writes both statuses and takes the lab down again (also on failure).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from carpsim.lab import dhcp_probe, nodes
from carpsim.lab.session import Lab

HERE = Path(__file__).parent
SERVER = (
    "import socket,time\ns=socket.create_server(('203.0.113.10',5001))\n"
    "c=s.accept()\ntime.sleep(60)"
)
CLIENT = "import socket,time\nc=socket.create_connection(('203.0.113.10',5001))\ntime.sleep(60)"
RULE = [
    "--interface",
    "lan",
    "--protocol",
    "tcp",
    "--destination-port",
    "8080",
    "--descr",
    "vector",
]


def main(prefix: str) -> None:
    lab = Lab.create("reference", prefix=prefix)
    held: list[subprocess.Popen[bytes]] = []
    try:
        lab.up()
        for host, code in (("server", SERVER), ("client1", CLIENT)):
            ns = lab.namespace_of(host)
            held.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code]))
            time.sleep(0.5)
        print(dhcp_probe.take_lease(lab, "client1"))
        cli = [sys.executable, "-m", "carpsim", "lab", "--prefix", prefix, "config", "node1"]
        subprocess.run([*cli, "add-rule", *RULE], check=True)
        time.sleep(3.0)
        for node in lab.topology.nodes:
            status = nodes.query_status(lab.paths, node.name, timeout=2.0)
            assert status is not None, f"{node.name}: control socket silent"
            out = HERE / f"{node.name}.json"
            out.write_text(json.dumps(status, indent=1, sort_keys=True) + "\n")
            print(out)
    finally:
        for p in held:
            p.kill()
            p.wait()
        lab.down()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "web2x-")
