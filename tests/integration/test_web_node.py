"""`carpsim node` with a [web] section serves its own status pages, live, from its namespace.

One node alone on a segment becomes MASTER; a Chromium started in the same namespace loads
http://127.0.0.1:PORT/ there and sees it, with no lab panels and no actions (POST: 403). The
node's shutdown closes the web server with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Lan, status, try_status, wait_for

from carpsim.net import netns

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

PORT = 18080
HELPER = Path(__file__).with_name("web_browser.py")


@pytest.fixture
def web_lan(tmp_path: Path) -> Iterator[Lan]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    pytest.importorskip("playwright.sync_api")
    if not shutil.which("/usr/bin/chromium"):
        pytest.skip("/usr/bin/chromium missing (apt-get install chromium; the Makefile does)")
    lan = Lan(netns.unique_prefix("web"), tmp_path)
    try:
        yield lan
    finally:
        lan.close()


def test_node_serves_its_own_status_page(web_lan: Lan, tmp_path: Path) -> None:
    control = str(tmp_path / "n1.sock")
    config = tmp_path / "n1.toml"
    config.write_text(f"""
[node]
name = "n1"
control = "{control}"

[carp]
password = "K33p_It_S3cr3t!"
advbase = 1
advskew = 0

[[vhid]]
vhid = 7
interface = "lan"
srcip = "10.61.0.1"
vips = ["10.61.0.254/24"]

[web]
listen = "127.0.0.1:{PORT}"
""")
    web_lan.plug("n1", "lan", "10.61.0.1/24")
    proc = web_lan.carpsim("n1", "node", "--config", str(config), log="n1.log")
    wait_for(lambda: try_status(control), 10, what="n1 control socket")
    wait_for(lambda: status(control)["vhids"][0]["state"] == "MASTER", 10, what="n1 MASTER")

    shot = tmp_path / "node-page.png"
    browser = netns.run(
        web_lan.host("n1"),
        [sys.executable, str(HELPER), f"http://127.0.0.1:{PORT}/", str(shot), "n1", "7", "MASTER"],
        timeout=60,
        check=False,
    )
    assert browser.returncode == 0, browser.stderr
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    assert seen["errors"] == []
    assert seen["title"] == "node n1"
    assert seen["lab_only_hidden"] is True
    assert "not configured on this node" in seen["dhcp"]
    assert "not configured on this node" in seen["hasync"]
    assert seen["post"] == 403
    assert shot.stat().st_size > 5_000

    # The pages live and die with the node: SIGTERM stops both, and the port is free again.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    probe = netns.run(
        web_lan.host("n1"),
        ["python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {PORT}), 1)"],
        check=False,
    )
    assert probe.returncode != 0
