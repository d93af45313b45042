"""A tiny TCP "who am I" service for lab checks: the server answers with the peer it sees.

Run inside a lab namespace (``carpsim lab exec server -- python -m carpsim.lab.whoami serve``);
from a client, ``python -m carpsim.lab.whoami ask 203.0.113.10`` prints e.g.
``192.168.100.254:41873`` — the address the server saw, i.e. the outbound NAT's WAN VIP, and
the randomised source port.
"""

from __future__ import annotations

import socket
import sys

PORT = 8080


def serve(port: int = PORT) -> None:
    with socket.create_server(("0.0.0.0", port), reuse_port=True) as srv:  # noqa: S104 - lab ns
        while True:
            conn, (host, peer_port) = srv.accept()
            with conn:
                line = f"{host}:{peer_port}\n"
                print(line, end="", flush=True)
                conn.sendall(line.encode())


def ask(host: str, port: int = PORT, timeout: float = 3.0) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        return s.makefile().readline().strip()


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "serve":
        serve(int(argv[1]) if len(argv) > 1 else PORT)
        return 0
    if len(argv) >= 2 and argv[0] == "ask":
        try:
            print(ask(argv[1], int(argv[2]) if len(argv) > 2 else PORT))
        except OSError as exc:
            print(f"whoami: {exc}", file=sys.stderr)
            return 1
        return 0
    print("usage: python -m carpsim.lab.whoami serve [PORT] | ask HOST [PORT]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
