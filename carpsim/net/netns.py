"""Network namespaces: create, remove, list by prefix, run commands inside.

Namespaces are created with pyroute2 and live in /run/netns like `ip netns add` ones, so the
usual tools (`ip netns exec`, `ip -n`) see them. Every name the project creates carries a prefix
so tests and labs never collide and cleanup can find leftovers after a crash.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pyroute2 import netns as _netns

from carpsim.errors import EnvironmentProblem

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "network namespaces need root (CAP_NET_ADMIN): run with sudo or as root"
        )


def unique_prefix(base: str = "cs") -> str:
    """A short random prefix such as ``cs7f3a-`` (interface names are limited to 15 chars)."""
    return f"{base}{secrets.token_hex(2)}-"


def list_namespaces(prefix: str = "") -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def create(name: str) -> None:
    require_root()
    if name in list_namespaces():
        return
    _netns.create(name)
    run(name, ["ip", "link", "set", "lo", "up"])


def kill_processes(name: str, sig: int = signal.SIGKILL) -> None:
    """Send `sig` (SIGKILL by default) to every process whose network namespace is `name`."""
    pids = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), sig)


def remove(name: str) -> None:
    """Kill what runs inside, then delete the namespace; silent if it is already gone."""
    if name not in list_namespaces():
        return
    kill_processes(name)
    try:
        _netns.remove(name)
    except OSError:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def remove_all(prefix: str) -> list[str]:
    if not prefix:
        raise ValueError("refusing to remove every namespace: give a prefix")
    gone = list_namespaces(prefix)
    for name in gone:
        remove(name)
    return gone


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *argv]


def run(
    name: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command inside the namespace and wait for it."""
    return subprocess.run(
        exec_argv(name, argv), capture_output=True, text=True, check=check, timeout=timeout
    )


def popen(name: str, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start a long-running command inside the namespace."""
    return subprocess.Popen(exec_argv(name, argv), **kwargs)  # type: ignore[call-overload, no-any-return]


@contextmanager
def temporary(names: Sequence[str]) -> Iterator[list[str]]:
    """Create namespaces for the duration of a block; always removed, even on failure."""
    created: list[str] = []
    try:
        for n in names:
            create(n)
            created.append(n)
        yield created
    finally:
        for n in reversed(created):
            remove(n)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


@contextmanager
def enter_netns(name: str | None) -> Iterator[None]:
    """Move the calling *thread* into namespace `name` for the block (None: stay put).

    Only the calling thread moves, and it always moves back, so the rest of the process is
    unaffected; sockets created inside the block stay bound to `name` after it ends.
    """
    if name is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise EnvironmentProblem(f"network namespace {name!r} does not exist") from exc
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
