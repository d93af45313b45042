"""The push client retries as pfSense's xmlrpc_client does: 4 tries, 1 s apart, each call with
its timeout (240 s, 900 s for restore_config_section); a peer that refuses or never answers
leaves a failed sync with pfSense's error text.

The peer is a local socket (loopback only): one port bound but not listening (every connect is
refused), one listening socket that accepts and never answers (every try times out). The wait
between tries goes through the service's injected `sleep`, so the delays are seen, not timed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from carpsim.config import dump, loads, parse
from carpsim.runtime import configsync_service as svc

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"


def master(tmp_path: Path, port: int, **kw: float) -> tuple[svc.ConfigSyncService, list[float]]:
    data = dump.to_data(loads((VECTORS / "reference-node1.toml").read_text()))
    data["hasync"]["synchronizetoip"] = "127.0.0.1"
    data.setdefault("system", {})["webgui_port"] = port
    path = tmp_path / "node1.toml"
    path.write_text(dump.dumps(parse(data)))
    waits: list[float] = []
    service = svc.ConfigSyncService(
        svc.ConfigStore.load(path), lambda plan: None, state_dir=tmp_path / "tls",
        sleep=waits.append, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    assert service.peer_url() == f"https://127.0.0.1:{port}/xmlrpc.php"
    return service, waits


@pytest.fixture
def closed_port() -> Iterator[int]:
    """Bound (so no one else takes it) but not listening: the kernel refuses every connect."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


class Silent:
    """Accepts TCP connections, counts them and never sends a byte (no TLS handshake)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_the_defaults_are_pfsenses(tmp_path: Path, closed_port: int) -> None:
    service, _ = master(tmp_path, closed_port)
    assert (service.tries, service.retry_delay) == (4, 1.0)
    assert (service.timeout, service.restore_timeout) == (240.0, 900.0)


def test_a_refusing_peer_gets_four_tries_one_second_apart(tmp_path: Path, closed_port: int) -> None:
    service, waits = master(tmp_path, closed_port)
    assert service.push() is False
    assert waits == [1.0, 1.0, 1.0]  # between the 4 tries, never after the last
    st = service.status()
    assert (st["result"], st["syncs_failed"], st["syncs_ok"]) == ("failed", 1, 0)
    # pfSense's words; the first call failed, so restore_config_section was never sent
    assert st["last_error"].startswith(
        "A communications error occurred while attempting to call XMLRPC method "
        "pfsense.host_firmware_version:"
    )
    assert "refused" in st["last_error"].lower()
    # a second Force Config Sync tries all over again
    assert service.push() is False
    assert waits == [1.0] * 6
    assert service.status()["syncs_failed"] == 2


def test_a_silent_peer_times_out_on_each_of_the_four_tries(tmp_path: Path) -> None:
    peer = Silent()
    try:
        service, waits = master(tmp_path, peer.port, timeout=0.2, retry_delay=0.5)
        assert service.push() is False
        assert len(peer.accepted) == 4  # one connection per try
        assert waits == [0.5, 0.5, 0.5]  # the configured delay, whatever it is
        error = service.status()["last_error"]
        assert "pfsense.host_firmware_version" in error
        assert "timed out" in error
    finally:
        peer.close()


def test_fewer_tries_when_configured(tmp_path: Path, closed_port: int) -> None:
    service, waits = master(tmp_path, closed_port, tries=1)
    assert service.push() is False
    assert waits == []
