"""Status > DHCP Leases words, the empty-gateway warning, and the metrics collector."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from carpsim.dhcp.client import client_msg, mac
from carpsim.dhcp.lease import BindingState, Lease, LeaseDB
from carpsim.dhcp.options import MessageType as T
from carpsim.dhcp.policy import Standalone
from carpsim.dhcp.server import DhcpServer
from carpsim.dhcp.settings import DhcpServerSettings
from carpsim.dhcp.status import status

ME = IPv4Address("10.1.0.2")


def settings(gateway: IPv4Address | None) -> DhcpServerSettings:
    return DhcpServerSettings(
        interface="lan",
        subnet=IPv4Network("10.1.0.0/24"),
        interface_address=ME,
        range_start=IPv4Address("10.1.0.100"),
        range_end=IPv4Address("10.1.0.109"),
        gateway=gateway,
        ping_check=False,
    )


def test_status_in_pfsense_words() -> None:
    s = settings(IPv4Address("10.1.0.254"))
    srv = DhcpServer(s, Standalone())
    srv.handle(0, 1_800_000_000, client_msg(T.DISCOVER, mac(1), hostname="laptop"))
    req = client_msg(
        T.REQUEST, mac(1), requested=IPv4Address("10.1.0.100"), server_id=ME, hostname="laptop"
    )
    srv.handle(0, 1_800_000_000, req)
    out = status(s, srv.db, srv.drops)
    assert out["interface"] == "lan"
    assert out["gateway"] == "10.1.0.254"
    assert out["gateway_is_physical"] is False
    assert "warning" not in out
    assert out["pool"]["total"] == 10
    assert out["pool"]["active"] == 1
    assert out["pool"]["free"] == 9
    (row,) = out["leases"]
    assert row["ip"] == "10.1.0.100"
    assert row["mac"] == "02:00:00:00:00:01"
    assert row["hostname"] == "laptop"
    assert row["binding_state"] == "active"
    assert row["start"] == "2027/01/15 08:00:00"
    assert row["end"] == "2027/01/15 10:00:00"


def test_empty_gateway_is_reported_as_the_physical_address() -> None:
    s = settings(None)
    out = status(s, LeaseDB([Lease(IPv4Address("10.1.0.100"), BindingState.BACKUP)]))
    assert out["gateway"] == "10.1.0.2"
    assert out["dns"] == ["10.1.0.2"]
    assert out["gateway_is_physical"] is True
    assert "10.1.0.2" in out["warning"]
    assert out["pool"]["backup"] == 1


def test_metrics_read_live_from_the_machines() -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

    from carpsim.runtime.dhcp_metrics import register  # noqa: PLC0415

    s = settings(IPv4Address("10.1.0.254"))
    srv = DhcpServer(s, Standalone())
    srv.receive(0, 1_800_000_000, b"garbage")
    iface = SimpleNamespace(server=srv, sent={"OFFER": 3})
    service = SimpleNamespace(
        interfaces={"lan": iface},
        lease_counts=lambda: {("lan", "free"): len(srv.db.in_state(BindingState.FREE))},
    )
    registry = CollectorRegistry()
    register(service, registry)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert 'dhcp_leases{interface="lan",state="free"} 10.0' in text
    assert 'dhcp_rx_dropped_total{interface="lan",reason="short"} 1.0' in text
    assert 'dhcp_tx_messages_total{interface="lan",type="OFFER"} 3.0' in text
