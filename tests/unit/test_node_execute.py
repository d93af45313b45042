"""Node.execute keeps the wire actions going when netlink refuses a VIP change.

The node gets its links and its CARP sockets through its constructor; these stand-ins record
what it asks of the kernel."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface
from pathlib import Path

from pyroute2.netlink.exceptions import NetlinkError

from carpsim.net.carp_io import PacketHandler
from carpsim.net.links import LinkInfo, Vip
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import AddVip, DelVip, SendGarp, StateChanged, Transmit
from carpsim.runtime.node import Node
from carpsim.runtime.nodeconfig import NodeConfig, VhidSpec, build_vhid

ENODEV = 19
PARENT = LinkInfo(index=7, name="lan0", mac="02:00:00:00:00:01", flags=0x41, kind="", parent=None)


class _GoneMacvlanLinks:
    """Stands in for the kernel after someone deleted the VHID's macvlan under us."""

    def lookup(self, name: str) -> LinkInfo | None:
        return PARENT if name == PARENT.name else None

    def ipv4_addresses(self, index: int) -> list[IPv4Interface]:
        return [IPv4Interface("192.168.110.251/24")]

    def add_address(self, index: int, vip: Vip) -> None:
        raise NetlinkError(ENODEV, "No such device")

    def del_address(self, index: int, vip: Vip) -> bool:
        return False

    def set_up(self, index: int, up: bool) -> None:
        raise NetlinkError(ENODEV, "No such device")

    def close(self) -> None:
        pass


class _RecordingSocket:
    def __init__(self) -> None:
        self.adverts: list[bytes] = []
        self.frames: list[bytes] = []

    def send_advert(self, packet: bytes, src_mac: bytes) -> None:
        self.adverts.append(packet)

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def close(self) -> None:
        pass


def _spec(vhid: int, vip: str) -> VhidSpec:
    return build_vhid(
        vhid=vhid, interface="lan0", srcip="192.168.110.251", vips=[vip], password="pw"
    )


def _node(
    tmp: Path,
    links: _GoneMacvlanLinks,
    sock: _RecordingSocket,
    specs: tuple[VhidSpec, ...] = (_spec(1, "192.168.110.254/24"),),
) -> Node:
    """A prepared node whose sockets are open (nothing reads them) and whose VHIDs have
    macvlans with indexes 8, 9, ..."""

    def sockets(ifname: str, ifindex: int, on_packet: PacketHandler) -> _RecordingSocket:
        assert (ifname, ifindex) == (PARENT.name, PARENT.index)
        return sock

    config = NodeConfig(name="n1", vhids=specs, control=str(tmp / "ctl"))
    node = Node(config, links=links, socket_factory=sockets)  # type: ignore[arg-type]
    node.prepare()
    node.open_sockets()
    for i, rt in enumerate(node.vhids.values()):
        rt.macvlan = LinkInfo(
            index=8 + i, name=f"carp{rt.vhid}x7", mac="", flags=0, kind="macvlan", parent=7
        )
    return node


def _state(node: Node, vhid: int) -> float | None:
    return node.metrics.registry.get_sample_value("carp_state", {"vhid": str(vhid)})


def test_a_netlink_error_adding_the_vip_still_sends_the_advert_and_garp(tmp_path: Path) -> None:
    sock = _RecordingSocket()
    node = _node(tmp_path, _GoneMacvlanLinks(), sock)
    vips = (IPv4Interface("192.168.110.254/24"),)

    async def main() -> None:
        node.execute(
            [
                AddVip(1, vips),
                Transmit(1, b"advert"),
                SendGarp(1, vips),
                StateChanged(1, CarpState.BACKUP, CarpState.MASTER, "master down"),
            ]
        )

    asyncio.run(main())
    assert sock.adverts == [b"advert"]
    assert len(sock.frames) == 1
    assert _state(node, 1) == 2


def test_a_netlink_error_removing_the_vip_still_records_the_transition(tmp_path: Path) -> None:
    node = _node(tmp_path, _GoneMacvlanLinks(), _RecordingSocket())
    vips = (IPv4Interface("192.168.110.254/24"),)

    async def main() -> None:
        node.execute(
            [DelVip(1, vips), StateChanged(1, CarpState.MASTER, CarpState.BACKUP, "preempted")]
        )

    asyncio.run(main())
    assert _state(node, 1) == 1


class _RefusingDeleteLinks(_GoneMacvlanLinks):
    """The kernel refuses to delete the first macvlan (EBUSY); everything else works."""

    def __init__(self) -> None:
        self.removed: list[tuple[int, str]] = []
        self.deleted: list[int] = []
        self.closed = False

    def del_address(self, index: int, vip: Vip) -> bool:
        self.removed.append((index, str(vip)))
        return True

    def delete(self, index: int) -> None:
        if index == 8:
            raise NetlinkError(16, "Device or resource busy")
        self.deleted.append(index)

    def close(self) -> None:
        self.closed = True


class _ClosableSocket(_RecordingSocket):
    closed = False

    def close(self) -> None:
        self.closed = True


def test_stop_cleans_every_vhid_even_when_one_macvlan_delete_fails(tmp_path: Path) -> None:
    links = _RefusingDeleteLinks()
    sock = _ClosableSocket()
    specs = tuple(_spec(v, f"192.168.110.{250 + v}/24") for v in (1, 2))
    node = _node(tmp_path, links, sock, specs)

    asyncio.run(node.stop())
    assert (9, "192.168.110.252/24") in links.removed
    assert links.deleted == [9]
    assert sock.closed
    assert links.closed


class _SlowStoppingSync:
    """State sync whose stop() blocks (the dump worker's join); records what CARP had sent."""

    def __init__(self, sock: _RecordingSocket) -> None:
        self._sock = sock
        self.adverts_at_stop: int | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        pass

    def stop(self) -> None:
        self.adverts_at_stop = len(self._sock.adverts)


def test_the_bow_out_is_sent_before_state_sync_stops(tmp_path: Path) -> None:
    sock = _RecordingSocket()
    node = _node(tmp_path, _RefusingDeleteLinks(), sock)
    sync = _SlowStoppingSync(sock)
    node.statesync = sync  # type: ignore[assignment]

    async def main() -> None:
        node.start_machines(asyncio.get_running_loop())
        assert node.group.machine(1).state is CarpState.BACKUP
        assert node.driver is not None
        node.driver.feed(node.group.machine(1).force_master)
        assert node.group.machine(1).state is CarpState.MASTER
        sent = len(sock.adverts)
        await node.stop()
        assert len(sock.adverts) == sent + 1  # the bow-out

    asyncio.run(main())
    assert sync.adverts_at_stop is not None
    assert sync.adverts_at_stop == len(sock.adverts)
