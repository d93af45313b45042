"""EDGE: pfSense's High Avail. Sync over XML-RPC/HTTPS, on the SYNC link.

`ConfigStore` is the node's config file and the running `Config`: every change (a local edit or a
received sync) goes through `ConfigStore.replace`, which plans (validates everything), writes a
temp file (fsync), applies through the node's callback, then renames the file into place; on any
failure the old config stays running and the file is untouched.

`ConfigSyncService` serves ``pfsense.host_firmware_version``, ``pfsense.restore_config_section``
and ``pfsense.backup_config_section`` on ``https://<SYNC address>:<system.webgui_port>/xmlrpc.php``
(a self-signed certificate made at first start; HTTP Basic auth; faults -1 bad credentials, -2 no
privilege, as pfSense). Requests are bounded (size, time, connections), parsed with defusedxml
(no DTD, no entities) and served one at a time, as pfSense's exclusive ``xmlrpc`` lock does.
`push()` is the master's rc.filter_synchronize: version check first, then the sections, each call
tried 4 times 1 s apart. Both run in threads; the node's apply callback is called from the server
thread (an asyncio node marshals it onto its loop with ``run_coroutine_threadsafe``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import http.server
import logging
import os
import ssl
import threading
import time
import urllib.parse
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from defusedxml.xmlrpc import DefusedExpatParser
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from carpsim.config import dump, loader
from carpsim.config.model import HA_SYNC_PRIVILEGE, Config
from carpsim.configsync import apply, pfsense, policy
from carpsim.errors import CarpsimError, ConfigError
from carpsim.net import selfsigned

log = logging.getLogger("carpsim.configsync")

FAULT_AUTH = -1
FAULT_PRIVILEGE = -2
FAULT_REFUSED = -3
"""carpsim: the merged configuration is invalid (pfSense has no code for it)."""
FAULT_APPLY = -4
"""carpsim: applying failed; the old configuration was restored."""
FAULT_PARSE = -32700
FAULT_METHOD = -32601
MAX_REQUEST = 4 * 1024 * 1024
MAX_RESPONSE = 4 * 1024 * 1024
REQUEST_TIMEOUT = 30.0
MAX_CONNECTIONS = 4
TRIES = 4
RETRY_DELAY = 1.0
TIMEOUT = 240.0
RESTORE_TIMEOUT = 900.0
FIRMWARE = "carpsim"

Applier = Callable[[apply.ApplyPlan], None]


class SyncError(CarpsimError):
    """A configuration change could not be made; the running config is unchanged."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def atomic_write(path: Path, data: bytes) -> Path:
    """Write `data` next to `path` (fsynced) and return the temp file; rename it to commit."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class ConfigStore:
    """The running config and its file; one change at a time."""

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self._config = config
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path) -> ConfigStore:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigError("config", f"cannot read {p}: {exc.strerror}") from exc
        return cls(p, loader.loads(text, str(p)))

    @property
    def current(self) -> Config:
        return self._config

    def replace(
        self, new: Config, applier: Applier, reason: str, *, wait: bool = True
    ) -> apply.ApplyPlan:
        """Validate all, write, apply, swap; raises `SyncError` with everything unchanged.

        wait=False: refuse (busy) instead of waiting while another change is being applied
        (the node's loop must not wait for a sync that itself waits for the loop)."""
        if not self._lock.acquire(blocking=wait):
            raise SyncError(FAULT_APPLY, "another configuration change is being applied; retry")
        try:
            return self._replace(new, applier, reason)
        finally:
            self._lock.release()

    def _replace(self, new: Config, applier: Applier, reason: str) -> apply.ApplyPlan:
        old = self._config
        try:
            plan = apply.plan(old, new)
        except ConfigError as exc:
            raise SyncError(FAULT_REFUSED, f"{exc.field}: {exc.message}") from exc
        if plan.empty:
            return plan
        tmp = atomic_write(self.path, dump.dumps(new, header=reason).encode())
        try:
            applier(plan)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            self._rollback(old, new, applier)
            raise SyncError(FAULT_APPLY, f"apply failed: {exc}") from exc
        try:
            commit(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self._rollback(old, new, applier)
            raise SyncError(FAULT_APPLY, f"cannot write {self.path}: {exc}") from exc
        self._config = new
        return plan

    @staticmethod
    def _rollback(old: Config, new: Config, applier: Applier) -> None:
        try:
            applier(apply.plan(new, old))
        except Exception:
            log.exception("High Availability: restoring the previous configuration failed")


def _defused_loads(data: bytes) -> tuple[tuple[Any, ...], str | None]:
    unmarshaller = xmlrpc.client.Unmarshaller()
    parser = DefusedExpatParser(unmarshaller, forbid_dtd=True)
    parser.feed(data)
    parser.close()
    return unmarshaller.close(), unmarshaller.getmethodname()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    service: ConfigSyncService

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.service.slots.acquire(blocking=False):
            self.service.count_drop("busy")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.service.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # TLS handshakes that fail, clients that stall past the timeout, resets
        self.service.count_drop("conn_error")
        log.debug("xmlrpc connection from %s failed", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "carpsim-xmlrpc"

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("xmlrpc %s: " + format, self.client_address[0], *args)

    def _reply(self, status: int, body: bytes = b"", ctype: str = "text/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        svc = self.server.service
        if not svc.peer_allowed(self.client_address[0]):
            svc.count_drop("badpeer")
            self._reply(403)
            return
        if urllib.parse.urlsplit(self.path).path != "/xmlrpc.php":
            self._reply(404)
            return
        if self.headers.get("Content-Encoding", "identity") != "identity":
            self._reply(415)
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411)
            return
        if not 0 < length <= MAX_REQUEST:
            svc.count_drop("toolarge")
            self._reply(413)
            return
        body = self.rfile.read(length)
        reply = svc.dispatch(body, self.headers.get("Authorization"), self.client_address[0])
        self._reply(200, reply)


class ConfigSyncService:
    """The XML-RPC server (receiving side) and the push client (master side) of one node."""

    def __init__(
        self,
        store: ConfigStore,
        applier: Applier,
        *,
        state_dir: Path,
        bind: str | None = None,
        port: int | None = None,
        tries: int = TRIES,
        retry_delay: float = RETRY_DELAY,
        timeout: float = TIMEOUT,
        restore_timeout: float = RESTORE_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`sleep` waits between tries (a test passes its own to see the delays)."""
        self.store = store
        self._sleep = sleep
        self.applier = applier
        self.state_dir = state_dir
        self.bind = bind if bind is not None else sync_address(store.current)
        self.port = port if port is not None else store.current.system.webgui_port
        self.tries = tries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.restore_timeout = restore_timeout
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._serial = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._push_lock = threading.Lock()
        self._status: dict[str, Any] = {
            "peer_url": self.peer_url(), "last_sync": None, "result": "never",
            "last_error": None, "syncs_ok": 0, "syncs_failed": 0,
        }  # fmt: skip
        self._received: dict[str, Any] = {
            "last": None, "from": None, "result": "never", "last_error": None,
            "ok": 0, "faults": 0, "loops": 0,
        }  # fmt: skip
        self.faults: dict[int, int] = {}
        self.drops: dict[str, int] = {}

    # --- server ---------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Listen on the SYNC address only; returns the bound (address, port)."""
        if self.bind is None:
            raise ConfigError("hasync.pfsyncinterface", "no SYNC interface to serve XML-RPC on")
        cert, key = selfsigned.ensure(self.state_dir, self.store.current.node.name, self.bind)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        httpd = _Server((self.bind, self.port), _Handler, bind_and_activate=True)
        httpd.socket = ctx.wrap_socket(
            httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        httpd.service = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="configsync", daemon=True)
        self._thread.start()
        host, port = httpd.server_address[:2]
        self.port = int(port)
        return str(host), int(port)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def peer_allowed(self, addr: str) -> bool:
        """Only the configured peer (hasync.pfsyncpeerip) may call, when one is configured."""
        peer = self.store.current.hasync.pfsyncpeerip
        return peer is None or str(peer) == addr

    def count_drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _fault(self, code: int, message: str) -> bytes:
        self.faults[code] = self.faults.get(code, 0) + 1
        return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True).encode()

    def _auth(self, header: str | None) -> int | None:
        """None when allowed; else the pfSense fault code."""
        if header is None or not header.startswith("Basic "):
            return FAULT_AUTH
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return FAULT_AUTH
        cfg = self.store.current
        h = cfg.hasync
        if h.password and _same(user, h.username) and _same(password, h.password):
            return None  # the sync account itself: pfSense's admin (uid 0)
        for u in cfg.system.users:
            if _same(user, u.name) and _same(password, u.password):
                return None if HA_SYNC_PRIVILEGE in u.privileges else FAULT_PRIVILEGE
        return FAULT_AUTH

    def dispatch(self, body: bytes, authorization: str | None, remote: str) -> bytes:
        try:
            params, method = _defused_loads(body)
        except Exception as exc:  # expat, defusedxml and unmarshaller errors alike
            self.count_drop("badxml")
            return self._fault(FAULT_PARSE, f"parse error: {type(exc).__name__}")
        denied = self._auth(authorization)
        if denied == FAULT_AUTH:
            log.warning("High Availability: authentication failed for %s (%s)", remote, method)
            return self._fault(FAULT_AUTH, "Authentication failed: Invalid username or password")
        if denied == FAULT_PRIVILEGE:
            return self._fault(FAULT_PRIVILEGE, "Authentication failed: not enough privileges")
        with self._serial:
            if method == "pfsense.host_firmware_version":
                return _response(self.firmware_version())
            if method == "pfsense.restore_config_section":
                return self._restore(params, remote)
            if method == "pfsense.backup_config_section":
                wanted = params[0] if params and isinstance(params[0], list) else []
                cfg = self.store.current
                return _response(
                    {s: pfsense.to_pfsense(cfg, s) for s in wanted if s in pfsense.SECTIONS}
                )
        return self._fault(FAULT_METHOD, f"method {method!r} not found")

    def firmware_version(self) -> dict[str, Any]:
        cfg = self.store.current
        return {
            "firmware": {"version": FIRMWARE}, "kernel": {"version": os.uname().release},
            "base": {"version": os.uname().release}, "platform": "carpsim",
            "config_version": cfg.system.version,
        }  # fmt: skip

    def _restore(self, params: tuple[Any, ...], remote: str) -> bytes:
        r = self._received
        r["last"], r["from"] = time.time(), remote
        try:
            sections = params[0] if params else None
            if not isinstance(sections, dict):
                raise SyncError(FAULT_REFUSED, "sections: must be a struct")
            try:
                got = policy.receive(self.store.current, sections, remote)
            except ConfigError as exc:
                raise SyncError(FAULT_REFUSED, f"{exc.field}: {exc.message}") from exc
            if got.loop:
                log.warning("High Availability: Disallowing CARP sync loop from %s", remote)
                r["result"], r["loops"] = "loop refused", r["loops"] + 1
                return _response(True)
            assert got.config is not None
            plan = self.store.replace(
                got.config, self.applier,
                f"Merged in config ({', '.join(got.sections)}) sections from XMLRPC client.",
            )  # fmt: skip
        except SyncError as exc:
            r["result"], r["last_error"], r["faults"] = "fault", str(exc), r["faults"] + 1
            log.error("High Availability: sync from %s refused: %s", remote, exc)
            return self._fault(exc.code, str(exc))
        r["result"], r["ok"] = "ok", r["ok"] + 1
        log.info("High Availability: merged config from %s: %s", remote, plan.diff.summary())
        return _response(True)

    # --- client ---------------------------------------------------------------------------

    def peer_url(self, with_credentials: bool = False) -> str | None:
        cfg = self.store.current
        target = cfg.hasync.synchronizetoip
        if target is None:
            return None
        auth = ""
        if with_credentials:
            q = urllib.parse.quote
            auth = f"{q(cfg.hasync.username, safe='')}:{q(cfg.hasync.password, safe='')}@"
        return f"https://{auth}{target}:{cfg.system.webgui_port}/xmlrpc.php"

    def _call(self, method: str, params: tuple[Any, ...], timeout: float) -> Any:
        """pfSense's xmlrpc_client: up to `tries` attempts, `retry_delay` apart; None = failed."""
        url = self.peer_url(with_credentials=True)
        assert url is not None
        error = ""
        for attempt in range(self.tries):
            if attempt:
                log.info("High Availability: Retrying XMLRPC Request due to error: %s", error)
                self._sleep(self.retry_delay)
            proxy = xmlrpc.client.ServerProxy(url, transport=_Transport(timeout), allow_none=False)
            try:
                return getattr(proxy, method)(*params)
            except xmlrpc.client.Fault as exc:
                error = (
                    f"Exception calling XMLRPC method {method} #{exc.faultCode} : {exc.faultString}"
                )
            except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
                error = (
                    f"A communications error occurred while attempting to call XMLRPC method "
                    f"{method}: {exc}"
                )
            except Exception as exc:  # a malformed or hostile reply
                error = f"Invalid reply to XMLRPC method {method}: {type(exc).__name__}"
            log.error("High Availability: %s", error)
        self._status["last_error"] = error
        return None

    def push(self) -> bool:
        """Force Config Sync: send the toggled sections to ``synchronizetoip``."""
        with self._push_lock:
            cfg = self.store.current
            st = self._status
            st["peer_url"] = self.peer_url()
            if cfg.hasync.synchronizetoip is None:
                return False
            payload = policy.build_payload(cfg)
            if payload is None:
                st["result"] = "Nothing has been configured to be synched"
                return False
            log.info("High Availability: Beginning XMLRPC sync data to %s", st["peer_url"])
            reply = self._call("pfsense.host_firmware_version", (1, self.timeout), self.timeout)
            refusal = None if reply is None else policy.check_version(reply, cfg.system.version)
            if reply is None or refusal is not None:
                if refusal is not None:
                    st["last_error"] = refusal
                    log.warning("High Availability: %s", refusal)
                return self._done(False)
            result = self._call(
                "pfsense.restore_config_section",
                (payload, self.restore_timeout),
                self.restore_timeout,
            )
            if result is None:
                return self._done(False)
            log.info(
                "High Availability: XMLRPC sync successfully completed with %s.", st["peer_url"]
            )
            return self._done(True)

    def change(self, new: Config, reason: str, *, push: bool = True) -> apply.ApplyPlan:
        """A local edit: validate, write, apply; then, on the master, push it to the peer."""
        plan = self.store.replace(new, self.applier, reason)
        if push and not plan.empty and new.hasync.synchronizetoip is not None:
            self.push()
        return plan

    def _done(self, ok: bool) -> bool:
        st = self._status
        st["last_sync"] = time.time()
        st["result"] = "ok" if ok else "failed"
        st["syncs_ok" if ok else "syncs_failed"] += 1
        if ok:
            st["last_error"] = None
        return ok

    def status(self) -> dict[str, Any]:
        out = dict(self._status)
        out["received"] = dict(self._received)
        out["faults"] = dict(self.faults)
        out["drops"] = dict(self.drops)
        return out


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _response(value: Any) -> bytes:
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=False).encode()


def sync_address(config: Config) -> str | None:
    """Where the server listens: this node's address on the pfsync (SYNC) interface."""
    name = config.hasync.pfsyncinterface
    iface = config.interface(name) if name else None
    return str(iface.address.ip) if iface is not None else None


class _Transport(xmlrpc.client.SafeTransport):
    """TLS without verification (as pfSense), a timeout, a bounded and defused reply parser."""

    def __init__(self, timeout: float) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        super().__init__(context=ctx)
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn

    def parse_response(self, response: http.client.HTTPResponse) -> Any:
        if response.getheader("Content-Encoding", "identity") != "identity":
            raise xmlrpc.client.ResponseError("compressed replies are refused")
        data = response.read(MAX_RESPONSE + 1)
        if len(data) > MAX_RESPONSE:
            raise xmlrpc.client.ResponseError("reply larger than the limit")
        params, _ = _defused_loads(data)
        return params


class ConfigSyncCollector(Collector):
    """``carpsim_configsync_*`` read from the service's status at scrape time."""

    def __init__(self, service: ConfigSyncService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        st = self._service.status()
        pushes = CounterMetricFamily(
            "carpsim_configsync_pushes", "Config syncs sent to the peer", labels=["result"]
        )
        pushes.add_metric(["ok"], st["syncs_ok"])
        pushes.add_metric(["failed"], st["syncs_failed"])
        yield pushes
        rx = CounterMetricFamily(
            "carpsim_configsync_received", "Config syncs received", labels=["result"]
        )
        for key in ("ok", "faults", "loops"):
            rx.add_metric([key], st["received"][key])
        yield rx
        faults = CounterMetricFamily(
            "carpsim_configsync_faults", "XML-RPC faults returned", labels=["code"]
        )
        for code, n in st["faults"].items():
            faults.add_metric([str(code)], n)
        yield faults
        drops = CounterMetricFamily(
            "carpsim_configsync_dropped", "Requests refused before parsing", labels=["reason"]
        )
        for reason, n in st["drops"].items():
            drops.add_metric([reason], n)
        yield drops
        yield GaugeMetricFamily(
            "carpsim_configsync_last_sync_timestamp_seconds",
            "Wall time of the last sync attempt (0 = never)",
            value=st["last_sync"] or 0,
        )
