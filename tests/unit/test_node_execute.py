"""CarpNode.execute keeps the wire actions going when netlink refuses a VIP change."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface

from pyroute2.netlink.exceptions import NetlinkError

from carpsim.net.links import LinkInfo, Vip
from carpsim.protocol.constants import CarpState
from carpsim.protocol.events import AddVip, DelVip, SendGarp, StateChanged, Transmit
from carpsim.runtime.node import CarpNode, VhidRuntime
from carpsim.runtime.nodeconfig import NodeConfig, build_vhid

ENODEV = 19


class _GoneMacvlanLinks:
    """Stands in for the kernel after someone deleted the VHID's macvlan under us."""

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

    def close(self) -> None:
        pass


def _node() -> tuple[CarpNode, _RecordingSocket]:
    spec = build_vhid(
        vhid=1,
        interface="lan0",
        srcip="192.168.110.251",
        vips=["192.168.110.254/24"],
        password="pw",
    )
    node = CarpNode(NodeConfig(name="n1", vhids=(spec,)))
    node.links.close()
    node.links = _GoneMacvlanLinks()  # type: ignore[assignment]
    parent = LinkInfo(
        index=7, name="lan0", mac="02:00:00:00:00:01", flags=0x41, kind="", parent=None
    )
    macvlan = LinkInfo(
        index=8, name="carp1x7", mac="00:00:5e:00:01:01", flags=0, kind="macvlan", parent=7
    )
    node.vhids[1] = VhidRuntime(spec=spec, parent=parent, macvlan=macvlan, src_mac=b"\0" * 6)
    sock = _RecordingSocket()
    node._sockets[7] = sock  # type: ignore[assignment]
    return node, sock


def test_a_netlink_error_adding_the_vip_still_sends_the_advert_and_garp() -> None:
    node, sock = _node()
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
    assert node.metrics.state.labels(vhid="1")._value.get() == 2


def test_a_netlink_error_removing_the_vip_still_records_the_transition() -> None:
    node, _sock = _node()
    vips = (IPv4Interface("192.168.110.254/24"),)

    async def main() -> None:
        node.execute(
            [DelVip(1, vips), StateChanged(1, CarpState.MASTER, CarpState.BACKUP, "preempted")]
        )

    asyncio.run(main())
    assert node.metrics.state.labels(vhid="1")._value.get() == 1


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


def test_stop_cleans_every_vhid_even_when_one_macvlan_delete_fails() -> None:
    specs = tuple(
        build_vhid(
            vhid=v,
            interface="lan0",
            srcip="192.168.110.251",
            vips=[f"192.168.110.{250 + v}/24"],
            password="pw",
        )
        for v in (1, 2)
    )
    node = CarpNode(NodeConfig(name="n1", vhids=specs))
    node.links.close()
    links = _RefusingDeleteLinks()
    node.links = links  # type: ignore[assignment]
    parent = LinkInfo(
        index=7, name="lan0", mac="02:00:00:00:00:01", flags=0x41, kind="", parent=None
    )
    for spec, index in zip(specs, (8, 9), strict=True):
        mv = LinkInfo(
            index=index, name=f"carp{spec.carp.vhid}x7", mac="", flags=0, kind="macvlan", parent=7
        )
        node.vhids[spec.carp.vhid] = VhidRuntime(spec=spec, parent=parent, macvlan=mv)
    sock = _ClosableSocket()
    node._sockets[7] = sock  # type: ignore[assignment]

    asyncio.run(node.stop())
    assert (9, "192.168.110.252/24") in links.removed
    assert links.deleted == [9]
    assert sock.closed
    assert links.closed


class _SlowStoppingSync:
    """State sync whose stop() blocks (the dump worker's join); records what CARP had sent."""

    demotion = 0

    def __init__(self, sock: _RecordingSocket) -> None:
        self._sock = sock
        self.adverts_at_stop: int | None = None

    def stop(self) -> None:
        self.adverts_at_stop = len(self._sock.adverts)


def test_the_bow_out_is_sent_before_state_sync_stops() -> None:
    node, sock = _node()
    node.links = _RefusingDeleteLinks()  # type: ignore[assignment]
    sync = _SlowStoppingSync(sock)
    node.statesync = sync  # type: ignore[assignment]

    async def main() -> None:
        from carpsim.runtime.driver import Driver  # noqa: PLC0415

        driver = Driver(node.group, node.execute, asyncio.get_running_loop())
        node._driver = driver
        driver.feed(node.group.link_up, [1])
        driver._run(node.group.on_timer, driver.now() + 60.0)  # master-down expired
        assert node.group.machine(1).state is CarpState.MASTER
        sent = len(sock.adverts)
        await node.stop()
        assert len(sock.adverts) == sent + 1  # the bow-out

    asyncio.run(main())
    assert sync.adverts_at_stop is not None
    assert sync.adverts_at_stop == len(sock.adverts)
