"""A running node takes a VHID added or deleted by a config edit (runtime/node_config.py).

The node's links and CARP sockets are constructor arguments; these stand-ins play the kernel,
so the test sees which macvlans, addresses and sockets the node asks for, and what it sends.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from carpsim.config import edit
from carpsim.config.model import Config
from carpsim.net import sysctl
from carpsim.net.carp_io import PacketHandler
from carpsim.net.links import LinkInfo, Vip
from carpsim.protocol.codec import decode_packet
from carpsim.protocol.constants import CarpState, virtual_mac
from carpsim.runtime import node_config
from carpsim.runtime.configsync_service import SyncError
from carpsim.runtime.node import Node

CONFIG = """
[node]
name = "node1"
control = "{control}"
[interfaces.lan]
address = "192.168.110.251/24"
[interfaces.dmz]
address = "192.168.120.251/24"
[[virtualip.vip]]
interface = "lan"
vhid = 1
subnet = "192.168.110.254"
password = "pw"
"""
UP = 0x41  # IFF_UP | IFF_RUNNING


class Kernel:
    """Links as the node sees them: two parents; macvlans created on demand."""

    def __init__(self) -> None:
        self.links = {
            "lan": LinkInfo(7, "lan", "02:00:00:00:00:07", UP, "", None),
            "dmz": LinkInfo(17, "dmz", "02:00:00:00:00:11", UP, "", None),
        }
        self.addresses: dict[int, set[str]] = {}
        self.log: list[str] = []
        self._next = 30

    def lookup(self, name: str) -> LinkInfo | None:
        return self.links.get(name)

    def ipv4_addresses(self, index: int) -> list[IPv4Interface]:
        return []

    def stale_macvlans(self, parent: LinkInfo, vhids: set[int]) -> list[LinkInfo]:
        return []

    def create_macvlan(self, parent: LinkInfo, vhid: int) -> LinkInfo:
        self._next += 1
        info = LinkInfo(self._next, f"carp{vhid}x{parent.index}", virtual_mac(vhid), 0,
                        "macvlan", parent.index)  # fmt: skip
        self.links[info.name] = info
        self.log.append(f"create {info.name} {info.mac}")
        return info

    def delete(self, index: int) -> None:
        name = next(n for n, i in self.links.items() if i.index == index)
        del self.links[name]
        self.log.append(f"delete {name}")

    def set_up(self, index: int, up: bool) -> None:
        pass

    def add_address(self, index: int, vip: Vip) -> None:
        self.addresses.setdefault(index, set()).add(str(vip))

    def del_address(self, index: int, vip: Vip) -> bool:
        had = str(vip) in self.addresses.get(index, set())
        self.addresses.get(index, set()).discard(str(vip))
        return had

    def close(self) -> None:
        pass


class Port:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.adverts: list[bytes] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.log.append(f"listen {self.name}")

    def send_advert(self, packet: bytes, src_mac: bytes) -> None:
        self.adverts.append(packet)

    def send_frame(self, frame: bytes) -> None:
        pass

    def close(self) -> None:
        self.log.append(f"close {self.name}")


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Node, Kernel, dict[str, Port]]:
    # the host's /proc/sys is not this test's to change
    monkeypatch.setattr(sysctl, "apply", lambda ifname, settings: None)
    kernel = Kernel()
    ports: dict[str, Port] = {}

    def factory(name: str, index: int, on_packet: PacketHandler) -> Port:
        ports[name] = Port(name, kernel.log)
        return ports[name]

    path = tmp_path / "node1.toml"
    path.write_text(CONFIG.format(control=tmp_path / "ctl"))
    nc, doc = node_config.load(path)
    n = Node(nc, links=kernel, socket_factory=factory, document=doc, document_path=path)  # type: ignore[arg-type]
    n.prepare()
    return n, kernel, ports


def change(n: Node, op: str, args: dict[str, Any]) -> Config:
    view = n.config_view
    assert view is not None
    new = edit.edit(view.config, op, args)
    view.store.replace(new, view.execute, op)
    return view.config


def run(n: Node, body: Any) -> None:
    async def main() -> None:
        n._provision()
        n.open_sockets()
        n.start_machines(asyncio.get_running_loop())
        body()

    asyncio.run(main())


VIP5 = {"interface": "dmz", "vhid": 5, "subnet": "192.168.120.5", "password": "pw"}


def test_an_added_vhid_gets_its_macvlan_socket_and_a_backup_machine(node: Any) -> None:
    n, kernel, ports = node

    def body() -> None:
        n.driver.feed(n.group.machine(1).force_master)
        sent = len(ports["lan"].adverts)
        kernel.log.clear()
        change(n, "add-vip", {"vip": VIP5})
        assert kernel.log == ["listen dmz", "create carp5x17 00:00:5e:00:01:05"]
        assert n.group.machine(5).state is CarpState.BACKUP
        assert n.group.machine(1).state is CarpState.MASTER
        assert len(ports["lan"].adverts) == sent  # nothing said on the other VHID's behalf
        assert [v["vhid"] for v in n.status()["vhids"]] == [1, 5]
        assert [s.carp.vhid for s in n.config.vhids] == [1, 5]
        # the new machine wins its election after master-down, on the new macvlan
        n.driver.feed(n.group.machine(5).force_master)
        assert kernel.addresses[kernel.links["carp5x17"].index] == {"192.168.120.5/24"}
        assert decode_packet(ports["dmz"].adverts[-1]).advert.vhid == 5

    run(n, body)


def test_a_deleted_vhid_bows_out_then_its_vip_macvlan_and_socket_go(node: Any) -> None:
    n, kernel, ports = node

    def body() -> None:
        change(n, "add-vip", {"vip": VIP5})
        n.driver.feed(n.group.machine(5).force_master)
        index = kernel.links["carp5x17"].index
        kernel.log.clear()
        change(n, "delete-vip", {"interface": "dmz", "vhid": 5})
        bow = decode_packet(ports["dmz"].adverts[-1]).advert
        assert (bow.vhid, bow.advbase, bow.advskew) == (5, 255, 255)
        assert kernel.addresses[index] == set()
        assert kernel.log == ["delete carp5x17", "close dmz"]
        assert set(n.vhids) == {1}
        assert set(n.group.machines) == {1}
        assert n.metrics.registry.get_sample_value("carp_state", {"vhid": "5"}) is None

    run(n, body)


def test_new_addresses_redo_that_vhid_only(node: Any) -> None:
    n, kernel, ports = node

    def body() -> None:
        change(n, "add-vip", {"vip": VIP5})
        n.driver.feed(n.group.machine(1).force_master)
        n.driver.feed(n.group.machine(5).force_master)
        one = n.group.machine(1)
        kernel.log.clear()
        fragment = tomli_w.dumps({"virtualip": {"vip": [
            {"interface": "lan", "vhid": 1, "subnet": "192.168.110.254", "password": "pw"},
            {**VIP5, "subnet": "192.168.120.6"},
        ]}})  # fmt: skip
        change(n, "apply", {"text": fragment})
        # the parent's sockets stay open: only the VHID itself is redone
        assert kernel.log == ["delete carp5x17", "create carp5x17 00:00:5e:00:01:05"]
        bow = decode_packet(ports["dmz"].adverts[-1]).advert
        assert (bow.vhid, bow.advskew) == (5, 255)
        assert n.group.machine(1) is one
        assert one.state is CarpState.MASTER
        assert n.group.machine(5).state is CarpState.BACKUP
        assert n.vhids[5].spec.carp.vips == (IPv4Interface("192.168.120.6/24"),)

    run(n, body)


def test_a_vhid_on_a_missing_interface_is_refused_and_nothing_changes(node: Any) -> None:
    n, kernel, _ = node

    def body() -> None:
        del kernel.links["dmz"]
        before = n.config_view.config
        with pytest.raises(SyncError, match="no such interface: dmz"):
            change(n, "add-vip", {"vip": VIP5})
        assert n.config_view.config == before
        assert set(n.vhids) == {1}
        assert not any(name.startswith("carp5") for name in kernel.links)

    run(n, body)


def test_a_vhid_number_used_on_another_interface_is_refused_first(node: Any) -> None:
    n, kernel, _ = node

    def body() -> None:
        kernel.log.clear()
        with pytest.raises(SyncError, match=r"vhid\[1\]"):
            change(n, "add-vip", {"vip": {**VIP5, "vhid": 1}})
        assert kernel.log == []
        assert set(n.vhids) == {1}
        assert n.group.machine(1).state is CarpState.BACKUP

    run(n, body)


def test_a_failure_after_the_add_rolls_the_new_vhid_back(node: Any) -> None:
    n, kernel, _ = node
    view = n.config_view
    calls: list[object] = []

    def kernel_step(plan: object) -> None:
        calls.append(plan)
        if len(calls) == 1:
            raise RuntimeError("nft said no")

    view.kernel = kernel_step

    def body() -> None:
        before = view.config
        with pytest.raises(SyncError, match="nft said no"):
            change(n, "add-vip", {"vip": VIP5})
        assert len(calls) == 2  # the plan, then its reverse
        assert view.config == before
        assert set(n.vhids) == {1}
        assert set(n.group.machines) == {1}
        assert "carp5x17" not in kernel.links
        assert kernel.log[-2:] == ["delete carp5x17", "close dmz"]

    run(n, body)
