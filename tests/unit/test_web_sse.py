"""Server-sent events: only changed topics go out, a (re)connecting browser gets everything."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from carpsim.web import node_app, pages, security, sse
from carpsim.web.sse import Hub

LOOPBACK = security.allowed_hosts_for("127.0.0.1")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)
snapshots = st.dictionaries(st.sampled_from(["meta", "node:a", "node:b", "run"]), json_values)


def apply(state: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """What the page does with an update (app.js): None removes a topic."""
    out = dict(state)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def test_diff_names_only_changed_added_and_removed_topics() -> None:
    old = {"meta": {"mode": "lab"}, "node:a": {"state": "MASTER"}, "gone": 1}
    new = {"meta": {"mode": "lab"}, "node:a": {"state": "BACKUP"}, "node:b": {}}
    assert sse.diff(old, new) == {"node:a": {"state": "BACKUP"}, "node:b": {}, "gone": None}
    assert sse.diff(new, new) == {}


@settings(deadline=None)  # a shared CI core must not turn slowness into a failure
@given(snapshots, snapshots)
def test_applying_the_diff_reproduces_the_new_snapshot(old: dict[str, Any], new: Any) -> None:
    # A topic whose value is None cannot be told from a removed one; the servers never send it.
    old = {k: v for k, v in old.items() if v is not None}
    new = {k: v for k, v in new.items() if v is not None}
    assert apply(old, sse.diff(old, new)) == new


def test_encode_is_one_sse_frame_with_single_line_json() -> None:
    frame = sse.encode("update", {"log": "line one\nline two"})
    assert frame.startswith(b"event: update\ndata: ")
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 3
    assert json.loads(frame.split(b"data: ", 1)[1]) == {"log": "line one\nline two"}


def test_publish_without_change_pushes_nothing_and_a_stalled_browser_is_dropped() -> None:
    async def scenario() -> None:
        hub = Hub()
        q: asyncio.Queue[bytes | None] = asyncio.Queue(sse.QUEUE_DEPTH)
        hub._clients.add(q)
        assert hub.publish({"a": 1}) == {"a": 1}
        assert hub.publish({"a": 1}) == {}
        assert q.qsize() == 1
        for i in range(sse.QUEUE_DEPTH + 5):
            hub.publish({"a": i + 2})
        assert hub.clients == 0  # dropped, not grown without bound
        assert q.qsize() <= sse.QUEUE_DEPTH

    asyncio.run(scenario())


async def read_event(resp: Any) -> tuple[str, dict[str, Any]]:
    """The next named SSE event (skipping retry/keepalive lines)."""
    event, data = "", ""
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        if line == "\n":
            if event:
                return event, json.loads(data)
            continue
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: "):
            data = line[6:]


async def test_node_page_streams_a_snapshot_then_only_the_changed_topic() -> None:
    status: dict[str, Any] = {
        "node": "n1",
        "vhids": [{"vhid": 1, "interface": "lan", "state": "BACKUP"}],
    }
    app = node_app.build(lambda: status, "n1", allowed_hosts=LOOPBACK, interval=0.02)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.get("/events")
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        kind, snap = await read_event(resp)
        assert kind == "snapshot"
        assert snap["meta"]["mode"] == "node"
        assert snap["node:n1"]["status"]["vhids"][0]["state"] == "BACKUP"
        status["vhids"][0]["state"] = "MASTER"
        kind, changes = await read_event(resp)
        assert kind == "update"
        assert set(changes) == {"node:n1"}  # meta did not change, so it is not resent
        assert changes["node:n1"]["status"]["vhids"][0]["state"] == "MASTER"
        resp.close()


async def test_a_status_that_raises_reads_as_a_silent_node() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("status provider bug")

    app = node_app.build(broken, "n1", allowed_hosts=LOOPBACK, interval=0.05)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        snap = await (await client.get("/api/snapshot")).json()
        assert snap["node:n1"]["control"] == "silent"
        assert snap["node:n1"]["status"] is None


async def test_page_and_static_files_are_served_from_package_data_under_a_strict_csp() -> None:
    app = node_app.build(lambda: {}, "n1", allowed_hosts=LOOPBACK, interval=1.0)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        page = await client.get("/")
        text = await page.text()
        assert page.status == 200
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        assert "/static/app.js" in text
        assert "http://" not in text  # nothing from outside
        assert "https://" not in text
        for name in ("app.js", "app.css", "favicon.svg"):
            r = await client.get(f"/static/{name}")
            assert r.status == 200, name
            body = await r.text()
            assert "https://" not in body.replace("http://www.w3.org/2000/svg", ""), name
        assert (await client.get("/static/../pages.py")).status == 404


def test_app_key_is_the_hub() -> None:
    app = node_app.build(lambda: {}, "n1", allowed_hosts=LOOPBACK)
    assert isinstance(app[pages.HUB], Hub)
    assert isinstance(app, web.Application)
