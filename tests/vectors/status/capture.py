"""Write each node's control-socket status of a running lab to tests/vectors/status/NODE.json.

    carpsim lab --prefix PREFIX up        # then make a flow and an edit (see README.md)
    python tests/vectors/status/capture.py PREFIX
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from carpsim.lab import nodes
from carpsim.lab.session import Lab

HERE = Path(__file__).parent


def main(prefix: str) -> None:
    lab = Lab.attach(prefix)
    for node in lab.topology.nodes:
        status = nodes.query_status(lab.paths, node.name, timeout=2.0)
        assert status is not None, f"{node.name}: control socket silent"
        out = HERE / f"{node.name}.json"
        out.write_text(json.dumps(status, indent=1, sort_keys=True) + "\n")
        print(out)


if __name__ == "__main__":
    main(sys.argv[1])
