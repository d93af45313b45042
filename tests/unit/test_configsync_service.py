"""The XML-RPC server's request handling (auth, faults, hostile XML) and the atomic config store.

`dispatch` is the server minus the socket: the netns test runs the same code over real HTTPS.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from carpsim.config import dump, loads, parse
from carpsim.configsync import apply, policy
from carpsim.net import selfsigned
from carpsim.runtime import configsync_service as svc

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "config"
MASTER = "172.16.1.5"


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.plans: list[apply.ApplyPlan] = []
        self.fail = fail

    def __call__(self, plan: apply.ApplyPlan) -> None:
        self.plans.append(plan)
        if self.fail and len(self.plans) == 1:
            raise RuntimeError("nft said no")


def backup(
    tmp_path: Path, fail: bool = False, edit: str = ""
) -> tuple[svc.ConfigSyncService, Recorder, Path]:
    path = tmp_path / "node2.toml"
    text = (VECTORS / "reference-node2.toml").read_text() + edit
    path.write_text(text)
    rec = Recorder(fail)
    service = svc.ConfigSyncService(svc.ConfigStore.load(path), rec, state_dir=tmp_path / "tls")
    return service, rec, path


def auth(user: str = "admin", password: str = "s3cret-sync") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def master_payload(extra_rule: dict[str, Any] | None = None) -> dict[str, Any]:
    data = dump.to_data(loads((VECTORS / "reference-node1.toml").read_text()))
    if extra_rule:
        data["filter"]["rule"].insert(0, extra_rule)
    payload = policy.build_payload(parse(data))
    assert payload is not None
    return payload


def call(service: svc.ConfigSyncService, method: str, *params: Any, **kw: Any) -> Any:
    body = xmlrpc.client.dumps(params, method).encode()
    reply = service.dispatch(body, kw.get("authorization", auth()), kw.get("remote", MASTER))
    return xmlrpc.client.loads(reply)[0][0]


def fault(service: svc.ConfigSyncService, body: bytes, authorization: str | None = None) -> int:
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(service.dispatch(body, authorization or auth(), MASTER))
    return int(info.value.faultCode)


BLOCK = {"interface": "lan", "action": "block", "source": "192.168.110.66", "descr": "blocked"}


def test_firmware_version_reports_the_config_version(tmp_path: Path) -> None:
    service, _, _ = backup(tmp_path)
    reply = call(service, "pfsense.host_firmware_version", 1, 240)
    assert reply["config_version"] == "23.3"
    assert set(reply) >= {"firmware", "kernel", "base", "platform"}


def test_restore_merges_writes_and_applies(tmp_path: Path) -> None:
    service, rec, path = backup(tmp_path)
    assert call(service, "pfsense.restore_config_section", master_payload(BLOCK), 900) is True
    (plan,) = rec.plans
    assert plan.nftables is not None
    assert "blocked" in plan.nftables
    assert not plan.vhids_update
    assert not plan.vhids_add
    on_disk = loads(path.read_text())
    assert on_disk == service.store.current
    assert on_disk.filter.rules[0].descr == "blocked"
    assert on_disk.hasync.synchronizetoip is None  # its own hasync kept
    assert path.read_text().startswith("# Merged in config (")
    assert service.status()["received"]["ok"] == 1


def test_unchanged_payload_writes_and_applies_nothing(tmp_path: Path) -> None:
    service, rec, path = backup(tmp_path)
    before = path.read_bytes()
    assert call(service, "pfsense.restore_config_section", master_payload(), 900) is True
    assert rec.plans == []
    assert path.read_bytes() == before


def test_wrong_password_is_fault_minus_1_and_nothing_changes(tmp_path: Path) -> None:
    service, rec, path = backup(tmp_path)
    before = path.read_bytes()
    body = xmlrpc.client.dumps((master_payload(BLOCK), 900), "pfsense.restore_config_section")
    assert fault(service, body.encode(), auth(password="wrong")) == -1
    assert fault(service, body.encode(), "Basic !!!notbase64") == -1
    assert path.read_bytes() == before
    assert rec.plans == []
    assert service.status()["faults"] == {-1: 2}


def test_user_without_the_ha_privilege_is_fault_minus_2(tmp_path: Path) -> None:
    users = """
[[system.user]]
name = "ops"
password = "pw"
privileges = ["page-all-but-sync"]
[[system.user]]
name = "syncer"
password = "pw2"
privileges = ["system-xmlrpc-ha-sync"]
"""
    service, _, _ = backup(tmp_path, edit=users)
    body = xmlrpc.client.dumps((1, 240), "pfsense.host_firmware_version").encode()
    assert fault(service, body, auth("ops", "pw")) == -2
    assert call(service, "pfsense.host_firmware_version", 1, 240,
                authorization=auth("syncer", "pw2"))["config_version"]  # fmt: skip


def test_invalid_merge_is_a_fault_and_nothing_changes(tmp_path: Path) -> None:
    service, rec, path = backup(tmp_path)
    before = path.read_bytes()
    bad = master_payload()
    bad["filter"]["rule"][0]["interface"] = "opt9"  # the master has an interface we lack
    body = xmlrpc.client.dumps((bad, 900), "pfsense.restore_config_section").encode()
    assert fault(service, body) == svc.FAULT_REFUSED
    assert path.read_bytes() == before
    assert rec.plans == []
    assert "filter.rule[0].interface" in service.status()["received"]["last_error"]


def test_apply_failure_rolls_back_and_keeps_the_file(tmp_path: Path) -> None:
    service, rec, path = backup(tmp_path, fail=True)
    before, running = path.read_bytes(), service.store.current
    body = xmlrpc.client.dumps((master_payload(BLOCK), 900), "pfsense.restore_config_section")
    assert fault(service, body.encode()) == svc.FAULT_APPLY
    assert path.read_bytes() == before
    assert service.store.current is running
    # the failed plan, then the plan that puts the old state back
    assert len(rec.plans) == 2
    assert rec.plans[1].new == running
    assert not list(tmp_path.glob(".node2.toml.*"))  # no temp file left behind


def test_sync_loop_answers_true_and_applies_nothing(tmp_path: Path) -> None:
    service, rec, path = backup(tmp_path, edit="")
    peer = 'pfsyncpeerip = "172.16.1.5"'
    text = path.read_text().replace(peer, peer + '\nsynchronizetoip = "172.16.1.5"')
    path.write_text(text)
    service.store = svc.ConfigStore.load(path)
    assert call(service, "pfsense.restore_config_section", master_payload(BLOCK), 900) is True
    assert rec.plans == []
    assert service.status()["received"]["loops"] == 1


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<methodCall><methodName>pfsense.restore_config_section</methodName><params><param>
<value><string>&lol3;</string></value></param></params></methodCall>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>&e;</methodName></methodCall>"""


@pytest.mark.parametrize(
    "body",
    [BILLION_LAUGHS, EXTERNAL, b"<methodCall><methodName>x", b"\xff\xfe garbage", b""],
    ids=["billion-laughs", "external-entity", "truncated", "garbage", "empty"],
)
def test_hostile_or_malformed_xml_is_refused(tmp_path: Path, body: bytes) -> None:
    service, rec, path = backup(tmp_path)
    before = path.read_bytes()
    assert fault(service, body) == svc.FAULT_PARSE
    assert path.read_bytes() == before
    assert rec.plans == []
    assert service.status()["drops"]["badxml"] == 1


def test_unknown_method_and_non_struct_sections(tmp_path: Path) -> None:
    service, _, _ = backup(tmp_path)
    assert fault(service, xmlrpc.client.dumps((), "pfsense.exec_shell").encode()) == -32601
    body = xmlrpc.client.dumps(("x", 900), "pfsense.restore_config_section").encode()
    assert fault(service, body) == svc.FAULT_REFUSED


def test_only_the_configured_peer_may_call(tmp_path: Path) -> None:
    service, _, _ = backup(tmp_path)
    assert service.peer_allowed(MASTER)
    assert not service.peer_allowed("172.16.1.4")


def test_backup_config_section_returns_pfsense_structs(tmp_path: Path) -> None:
    service, _, _ = backup(tmp_path)
    got = call(service, "pfsense.backup_config_section", ["virtualip", "hasync"])
    assert list(got) == ["virtualip"]
    assert got["virtualip"]["vip"][0]["vhid"] == "3"


def test_self_signed_certificate_is_made_once(tmp_path: Path) -> None:
    cert, key = selfsigned.ensure(tmp_path / "tls", "node2", "172.16.1.6")
    first = cert.read_bytes()
    assert key.stat().st_mode & 0o077 == 0
    assert selfsigned.ensure(tmp_path / "tls", "node2", "172.16.1.6") == (cert, key)
    assert cert.read_bytes() == first
    shutil.rmtree(tmp_path / "tls")


def test_prometheus_collector_reads_the_status(tmp_path: Path) -> None:
    service, _, _ = backup(tmp_path)
    call(service, "pfsense.restore_config_section", master_payload(BLOCK), 900)
    fault(service, b"<x", None)
    registry = CollectorRegistry()
    registry.register(svc.ConfigSyncCollector(service))
    text = generate_latest(registry).decode()
    assert 'carpsim_configsync_received_total{result="ok"} 1.0' in text
    assert 'carpsim_configsync_faults_total{code="-32700"} 1.0' in text
    assert 'carpsim_configsync_dropped_total{reason="badxml"} 1.0' in text
    assert 'carpsim_configsync_pushes_total{result="failed"} 0.0' in text


_FUZZ_DIR = tempfile.TemporaryDirectory()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda body: (
                b"<?xml version='1.0'?><methodCall><methodName>pfsense.restore_config_section"
                b"</methodName><params><param>" + body + b"</param></params></methodCall>"
            ),
            st.binary(max_size=300),
        ),
    )
)
def test_random_requests_only_ever_get_a_fault(body: bytes) -> None:
    service, rec, path = _fuzz_backup()
    before = path.read_bytes()
    reply = service.dispatch(body, auth(), MASTER)
    try:
        result = xmlrpc.client.loads(reply)[0][0]
    except xmlrpc.client.Fault:
        result = None
    assert result is None or result is True
    assert path.read_bytes() == before or rec.plans


def _fuzz_backup() -> tuple[svc.ConfigSyncService, Recorder, Path]:
    return backup(Path(_FUZZ_DIR.name))


def test_a_change_that_must_not_wait_is_refused_while_another_is_applied(tmp_path: Path) -> None:
    # The node's loop edits with wait=False: a sync being applied holds the store and waits
    # for the loop, so waiting there would deadlock. It is refused instead, nothing changed.
    import threading  # noqa: PLC0415

    service, rec, path = backup(tmp_path)
    store = service.store
    before, running = path.read_bytes(), store.current
    entered, release = threading.Event(), threading.Event()

    def slow(plan: apply.ApplyPlan) -> None:
        entered.set()
        release.wait(5)

    new = parse(
        {**dump.to_data(running), "aliases": {"X": {"type": "host", "address": ["1.2.3.4"]}}}
    )
    t = threading.Thread(target=store.replace, args=(new, slow, "sync"))
    t.start()
    assert entered.wait(5)
    with pytest.raises(svc.SyncError, match="retry"):
        store.replace(new, rec, "edit", wait=False)
    assert rec.plans == []
    release.set()
    t.join(5)
    assert store.current == new
    assert path.read_bytes() != before
