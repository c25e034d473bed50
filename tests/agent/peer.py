"""A small named TCP server or client for the agent tests (run inside a network namespace).

Protocol: the client sends its bytes (in ``--chunks`` pieces, ``--every`` seconds apart), shuts down
its sending side, reads the server's reply until the server closes, and closes. The server reads
until end of stream, replies ``--reply`` bytes and closes. So both byte counts are exact.

    peer.py serve --service=stock-db --bind 0.0.0.0 --port 7001 --reply 300
    peer.py connect --service=orders-api --to 10.250.7.2 --port 7001 --send 1000
    peer.py connect --to 10.250.7.2 --port 7001 --send 55       (no --service: an anonymous client)

``--service`` only names the process for the workloads file (its command line); the server prints
``ready`` once it listens and serves until terminated.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time


def serve(args: argparse.Namespace) -> None:
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.bind, args.port))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_answer, args=(conn, args.reply), daemon=True).start()


def _answer(conn: socket.socket, reply: int) -> None:
    with conn:
        while conn.recv(65536):
            pass
        conn.sendall(b"r" * reply)


def connect(args: argparse.Namespace) -> None:
    with socket.create_connection((args.to, args.port), timeout=30) as c:
        piece = args.send // args.chunks
        for i in range(args.chunks):
            n = piece if i < args.chunks - 1 else args.send - piece * (args.chunks - 1)
            c.sendall(b"s" * n)
            if i < args.chunks - 1:
                time.sleep(args.every)
        c.shutdown(socket.SHUT_WR)
        got = 0
        while True:
            data = c.recv(65536)
            if not data:
                break
            got += len(data)
    print(f"done {got}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("serve", "connect"))
    p.add_argument("--service", default="")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--to", default="")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", type=int, default=0)
    p.add_argument("--send", type=int, default=0)
    p.add_argument("--chunks", type=int, default=1)
    p.add_argument("--every", type=float, default=0.0)
    args = p.parse_args()
    (serve if args.mode == "serve" else connect)(args)


if __name__ == "__main__":
    sys.exit(main())
