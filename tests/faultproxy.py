"""A small fault-injecting HTTP proxy for the upload tests, between client and collector.

Each request it receives is numbered; `plan(n)` names what happens to request n:
  "pass"            forward it, return the answer
  "429" / "503"     answer that status itself (with Retry-After: `retry_after`), upstream never sees it
  "reset_before"    drop the connection (RST) before forwarding: the collector never sees it
  "reset_after"     forward it, let the collector commit, then send half the answer and RST
  "slow"            forward it, but answer only after `slow_s`
  "down"            like reset_before: a collector that is not there
  "hook_before" / "hook_after"   call `hook(n)` (e.g. SIGKILL someone) before forwarding /
                    after the collector answered, then RST
It speaks just enough HTTP/1.1 for this client (Content-Length bodies, keep-alive).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable


def _recv_until(sock: socket.socket, buf: bytearray, marker: bytes) -> int:
    while True:
        at = buf.find(marker)
        if at >= 0:
            return at
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk


def _read_message(sock: socket.socket, buf: bytearray) -> bytes:
    """One HTTP message (head + Content-Length body) from SOCK, consuming it from BUF."""
    end = _recv_until(sock, buf, b"\r\n\r\n") + 4
    head = bytes(buf[:end]).decode("latin-1")
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(buf) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        buf += chunk
    message = bytes(buf[:end + length])
    del buf[:end + length]
    return message


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a crashed peer or a broken middlebox would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _status(code: int, reason: str, retry_after: str | None) -> bytes:
    body = json.dumps({"error": f"injected {code}"}).encode()
    headers = f"HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if retry_after is not None:
        headers += f"Retry-After: {retry_after}\r\n"
    return headers.encode() + b"\r\n" + body


class FaultProxy:
    def __init__(self, upstream_port: int, plan: Callable[[int], str] | None = None,
                 hook: Callable[[int], None] | None = None, retry_after: str | None = "0", slow_s: float = 0.5):
        self.upstream_port = upstream_port
        self.plan = plan or (lambda n: "pass")
        self.hook = hook or (lambda n: None)
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.count = 0
        self.actions: list[str] = []
        self.requests: list[bytes] = []  # every request received, head and body, in arrival order
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._server.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _forward(self, request: bytes) -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60) as up:
                up.sendall(request)
                return _read_message(up, bytearray())
        except OSError:
            return None

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while True:
                request = _read_message(client, buf)
                with self._lock:
                    n = self.count
                    self.count += 1
                action = self.plan(n)
                self.actions.append(action)
                self.requests.append(request)
                if action in ("429", "503"):
                    reason = "Too Many Requests" if action == "429" else "Service Unavailable"
                    client.sendall(_status(int(action), reason, self.retry_after))
                    continue
                if action in ("reset_before", "down"):
                    return _reset(client)
                if action == "hook_before":
                    self.hook(n)
                    return _reset(client)
                answer = self._forward(request)
                if answer is None:  # the collector is not there
                    return _reset(client)
                if action == "hook_after":
                    self.hook(n)
                    return _reset(client)
                if action == "reset_after":
                    client.sendall(answer[: len(answer) // 2])
                    return _reset(client)
                if action == "slow":
                    time.sleep(self.slow_s)
                client.sendall(answer)
        except (ConnectionError, OSError):
            client.close()
