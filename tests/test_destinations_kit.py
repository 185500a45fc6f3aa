"""Shared by the destination, alert and dashboard tests: the real servers (osmem-server for the
OpenSearch API, rotel for OTLP), a scriptable HTTP receiver, and records to send.

A missing real server skips locally and fails under CI=true (conftest.require).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .conftest import require

BASE = {
    "ended_at": None, "duration_ms": 12, "exit_code": 0, "state": "finished", "source": "wrapper",
    "verb": "get", "resource": "pods", "names": [], "namespace": "default", "all_namespaces": False,
    "context": "dev", "cluster": "dev-cluster", "server": "https://dev.example:6443", "user": "dev-user",
    "impersonate": None, "kubeconfig": ["/home/u/.kube/config"], "files": [], "mutating": False, "dry_run": False,
    "local_only": False, "redacted": False, "unexpanded": False, "cwd": "/home/u", "host": "laptop",
    "os_user": "u", "sudo_user": None, "ssh_client": None, "session": "s-1", "parent": "bash", "ci": None,
    "kubectl_version": "v1.32.4", "identity": None, "audit": None, "install_id": "inst-1", "seq": 0,
    "prev_hash": None, "hash": None,
}


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def records(n: int, start: float | None = None, prefix: str | None = None, **fields) -> list[dict]:
    """N distinct records (every contract field), a second apart, ending about now."""
    prefix = prefix or uuid.uuid4().hex[:8]
    start = time.time() - n - 60 if start is None else start
    out = []
    for i in range(n):
        argv = ["get", "pods", f"web-{i}", "-n", "default"]
        t = start + i + 0.123
        rec = {**BASE, "id": f"{prefix}-{i:05d}", "seq": i, "started_at": stamp(t), "ended_at": stamp(t + 0.5),
               "argv": argv, "names": [f"web-{i}"], "command": "kubectl " + " ".join(argv)}
        rec.update(fields)
        out.append(rec)
    return out


def rich_record(**fields) -> dict:
    """One record with every shape a field can take: objects, lists, nulls, unicode, failures."""
    rec = records(1, prefix="rich")[0]
    rec.update({
        "verb": "delete", "resource": "deployments", "names": ["web", "api"], "mutating": True, "exit_code": 1,
        "argv": ["delete", "deploy/web", "deploy/api", "-n", "prod", "--as", "bob"],
        "command": "kubectl delete deploy/web deploy/api -n prod --as bob", "namespace": "prod",
        "context": "prod-eu", "cluster": "prod-eu-1", "user": "prod-admin", "identity": "alice@example.com",
        "impersonate": {"user": "bob", "groups": ["ops"]}, "ci": {"system": "gitlab", "job": "deploy/rollout",
                                                                  "run": "4711", "commit": "abc123"},
        "audit": {"status": "strong", "events": [{"audit_id": "a-1", "verb": "delete", "resource": "deployments",
                                                  "namespace": "prod", "name": "web", "code": 200,
                                                  "decision": "allow"}]},
        "cwd": "/home/ü/ops", "sudo_user": "root", "ssh_client": "10.0.0.1 5555 10.0.0.2 22",
    })
    rec.update(fields)
    return rec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a scriptable HTTP receiver -------------------------------------------------------------


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers with `respond(req)`
    -> (status, headers, body). Requests are dicts: method, path, headers, body (decompressed)."""

    def __init__(self, respond=None):
        self.requests: list[dict] = []
        self.respond = respond or (lambda req: (200, {}, b""))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                raw = body
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body,
                       "raw": raw}
                outer.requests.append(req)
                status, headers, payload = outer.respond(req)
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                    headers = {"Content-Type": "application/json", **headers}
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_GET = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- osmem-server: a real server speaking the OpenSearch API ---------------------------------


def _osmem():
    try:
        from osmem_server import OsmemServer  # noqa: F401
    except ImportError:
        return None
    return OsmemServer


@pytest.fixture(scope="session")
def opensearch():
    """A running osmem-server (PyPI osmem-server) on 127.0.0.1; yields its base URL."""
    cls = _osmem()
    require("osmem-server (pip install osmem-server)", cls is not None, "the real OpenSearch-API server")
    server = cls.start(japanese=False, addr="127.0.0.1:0")
    try:
        yield server.url
    finally:
        server.close()


def os_search(base: str, index: str, size: int = 10000) -> list[dict]:
    import requests

    requests.post(f"{base}/{index}/_refresh", timeout=10)
    r = requests.post(f"{base}/{index}/_search", json={"size": size, "query": {"match_all": {}}}, timeout=30)
    r.raise_for_status()
    return r.json()["hits"]["hits"]


# --- rotel: a real OpenTelemetry collector ----------------------------------------------------


def rotel_binary() -> str | None:
    try:
        import rotel
    except ImportError:
        return shutil.which("rotel-agent")
    path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    return path if os.access(path, os.X_OK) else None


class Rotel:
    """rotel-agent in the foreground, OTLP/HTTP on a free loopback port, printing every log record
    it decoded (--debug-log logs --debug-log-verbosity detailed) into a file we read back."""

    def __init__(self, binary: str, workdir):
        self.binary = binary
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.out_path = os.path.join(str(workdir), f"rotel-{self.http_port}.out")
        self.proc = None

    @property
    def url(self) -> str:
        return f"otlp://127.0.0.1:{self.http_port}"

    def start(self) -> "Rotel":
        self.out = open(self.out_path, "w")
        self.proc = subprocess.Popen(
            [self.binary, "start", "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
             "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}", "--exporter", "blackhole",
             "--debug-log", "logs", "--debug-log-verbosity", "detailed",
             "--pid-file", self.out_path + ".pid", "--log-file", self.out_path + ".log"],
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rotel exited {self.proc.returncode}: {open(self.out_path).read()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("rotel did not listen")

    def output(self) -> str:
        self.out.flush()
        with open(self.out_path, encoding="utf-8", errors="replace") as f:
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read())

    def wait_for(self, n_records: int, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if text.count("\nLogRecord #") + text.startswith("LogRecord #") >= n_records:
                time.sleep(0.2)
                return self.output()
            time.sleep(0.1)
        return self.output()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@pytest.fixture
def rotel(tmp_path):
    binary = rotel_binary()
    require("rotel (pip install rotel)", binary is not None, "the real OpenTelemetry collector")
    r = Rotel(binary, tmp_path).start()
    try:
        yield r
    finally:
        r.stop()


def rotel_value(value) -> str:
    """A Python value as rotel's debug exporter prints the AnyValue it decoded."""
    if isinstance(value, bool):
        return f"Bool({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"Int({value})"
    if isinstance(value, float):
        return f"Double({value})"
    if isinstance(value, list):
        return "Slice(" + ", ".join(rotel_value(v) for v in value) + ")"
    if isinstance(value, dict):
        return "Map(" + ", ".join(f"{k}:{rotel_value(v)}" for k, v in value.items() if v is not None) + ")"
    return f"Str({value})"


def rotel_log_records(text: str) -> list[dict]:
    """The log records in rotel's debug output: resource attributes, the top-level lines
    (Timestamp, SeverityText, EventName, Body …) and the attribute lines, values as printed."""
    out: list[dict] = []
    resource: dict = {}
    current: dict | None = None
    target: dict | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("ResourceLog #"):
            resource, current, target = {}, None, None
        elif line.startswith("Resource attributes:"):
            target = resource
        elif line.startswith("ScopeLogs #"):
            current, target = None, None
        elif line.startswith("LogRecord #"):
            current = {"resource": resource, "attributes": {}}
            out.append(current)
            target = None
        elif line.startswith("Attributes:") and current is not None:
            target = current["attributes"]
        elif stripped.startswith("-> ") and target is not None:
            key, _, value = stripped[3:].partition(": ")
            target[key] = value
        elif current is not None and not line.startswith(" ") and ": " in line:
            key, _, value = line.partition(": ")
            current[key] = value
            target = None
    return out
