"""No cross-site request can kill a node: the token, Origin and Host checks of the lab page."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from carpsim.lab.session import Lab
from carpsim.web import lab_app, node_app, security
from carpsim.web.lab_source import LabSource, node_topic

LOOPBACK = security.allowed_hosts_for("127.0.0.1")
TOKEN = "per-run-token-for-this-test"


class RecordingLab(Lab):
    """The reference lab's topology; its power switch only records (the switch is not what
    these tests judge: whether a request reaches it is)."""

    calls: list[tuple[str, str]]

    def kill(self, name: str) -> None:
        self.calls.append(("kill", name))

    def start(self, name: str, timeout: float = 5.0) -> int:
        self.calls.append(("start", name))
        return 4242


class CannedSource(LabSource):
    """Both nodes up and answering, without any namespace (unit tier)."""

    def poll(self) -> dict[str, Any]:
        return {
            f"node:{n.name}": node_topic(n.name, {"node": n.name, "vhids": []}, pid=1)
            for n in self.lab.topology.nodes
        }


def lab() -> RecordingLab:
    base = Lab.create("reference", prefix="webunit-")
    out = RecordingLab(base.topology, base.paths, base.source)
    out.calls = []
    return out


async def client_for(the_lab: RecordingLab) -> TestClient[Any, Any]:
    app = lab_app.build(
        the_lab,
        token=TOKEN,
        allowed_hosts=LOOPBACK,
        source=CannedSource(the_lab),
        interval=0.05,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def origin(client: TestClient[Any, Any]) -> str:
    return f"http://127.0.0.1:{client.port}"


async def test_post_without_the_token_is_refused_and_no_node_is_touched() -> None:
    the_lab = lab()
    client = await client_for(the_lab)
    try:
        for headers in (
            {},
            {security.TOKEN_HEADER: "guessed"},
            {security.TOKEN_HEADER: "", "Origin": origin(client)},
        ):
            resp = await client.post("/api/node/node1/off", headers=headers)
            assert resp.status == 403, headers
            assert "token" in (await resp.json())["error"].lower()
        resp = await client.post("/api/unsinkable", json={})
        assert resp.status == 403
        assert the_lab.calls == []
        snap = await (await client.get("/api/snapshot")).json()
        assert snap["run"]["state"] == "idle"
        assert snap["action"] == {"busy": None, "last": None}
    finally:
        await client.close()


async def test_a_foreign_origin_is_refused_even_with_the_token() -> None:
    the_lab = lab()
    client = await client_for(the_lab)
    try:
        for foreign in (
            "http://evil.example",
            "https://127.0.0.1:1",
            "null",
            f"{origin(client)}.evil",
        ):
            resp = await client.post(
                "/api/node/node1/off", headers={security.TOKEN_HEADER: TOKEN, "Origin": foreign}
            )
            assert resp.status == 403, foreign
            assert "cross-origin" in (await resp.json())["error"]
        assert the_lab.calls == []
    finally:
        await client.close()


async def test_a_rebound_host_name_is_refused_for_reads_and_writes() -> None:
    # DNS rebinding: evil.example resolving to 127.0.0.1 gets the browser to send its name.
    the_lab = lab()
    client = await client_for(the_lab)
    try:
        host = {"Host": f"evil.example:{client.port}"}
        assert (await client.get("/", headers=host)).status == 403
        assert (await client.get("/api/snapshot", headers=host)).status == 403
        resp = await client.post(
            "/api/node/node1/off", headers={**host, security.TOKEN_HEADER: TOKEN}
        )
        assert resp.status == 403
        assert the_lab.calls == []
    finally:
        await client.close()


async def test_the_page_carries_the_token_and_a_same_origin_post_with_it_acts() -> None:
    the_lab = lab()
    client = await client_for(the_lab)
    try:
        page = await (await client.get("/")).text()
        assert f'name="carpsim-token" content="{TOKEN}"' in page
        ok = {security.TOKEN_HEADER: TOKEN, "Origin": origin(client)}
        resp = await client.post("/api/node/node1/off", headers=ok)
        assert resp.status == 200, await resp.text()
        resp = await client.post("/api/node/node2/on", headers={security.TOKEN_HEADER: TOKEN})
        assert resp.status == 200  # no Origin (curl): the token alone suffices
        assert the_lab.calls == [("kill", "node1"), ("start", "node2")]
        resp = await client.post("/api/node/router/off", headers=ok)
        assert resp.status == 404  # not a CARP node
        assert the_lab.calls == [("kill", "node1"), ("start", "node2")]
    finally:
        await client.close()


async def test_the_node_page_takes_no_actions_at_all() -> None:
    app = node_app.build(lambda: {"node": "n1"}, "n1", allowed_hosts=LOOPBACK, interval=1.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.post("/api/node/n1/off", headers={security.TOKEN_HEADER: ""})
        assert resp.status == 403
        assert "no actions" in (await resp.json())["error"]


def test_host_header_parsing() -> None:
    assert security.host_name("127.0.0.1:8480") == "127.0.0.1"
    assert security.host_name("LOCALHOST") == "localhost"
    assert security.host_name("[::1]:80") == "[::1]"
    assert "localhost" in security.allowed_hosts_for("127.0.0.1")
    assert security.allowed_hosts_for("192.168.110.251") == frozenset({"192.168.110.251"})
    assert security.new_token() != security.new_token()
