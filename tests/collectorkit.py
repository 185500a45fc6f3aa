"""What the collector and sync tests share: a real collector process, a fresh PostgreSQL database
per test, local stores full of synthetic records, tokens.

PostgreSQL comes from KUBECTL_RECORD_TEST_PG (tests/run.sh starts a throwaway cluster and sets
it); without it the PostgreSQL cases skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from kubectl_record import store

from .conftest import REPO, require

PG_URL = os.environ.get("KUBECTL_RECORD_TEST_PG")
BACKENDS = ["sqlite", "postgresql"]


def pg_database():
    """A new, empty database in the test cluster; returns (url, drop)."""
    require("PostgreSQL (KUBECTL_RECORD_TEST_PG)", bool(PG_URL), "the collector runs on SQLite and PostgreSQL")
    import psycopg

    name = "kr_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base, _, _ = PG_URL.rpartition("/")

    def drop() -> None:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return f"{base}/{name}", drop


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path: Path):
    """The collector's database, once per backend."""
    if request.param == "sqlite":
        yield str(tmp_path / "collector.db")
        return
    url, drop = pg_database()
    try:
        yield url
    finally:
        drop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Until something accepts connections on 127.0.0.1:PORT; an AssertionError when PROC exits
    first or TIMEOUT passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"{proc.args[:4]} exited {proc.returncode}: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.03)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def issue(db: str, user: str, role: str = "writer", scope: str | None = None) -> str:
    from kubectl_record.collector.auth import create_token
    from kubectl_record.collector.storage import open_storage

    storage = open_storage(db)
    try:
        return create_token(storage, user, role, scope)
    finally:
        storage.close()


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECTL_RECORD_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


class Collector:
    """`kubectl record serve` as a real process on 127.0.0.1."""

    def __init__(self, db: str, port: int | None = None, args: tuple[str, ...] = (), scheme: str = "http"):
        self.db = db
        self.port = port or free_port()
        self.args = args
        self.scheme = scheme
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> "Collector":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubectl_record", "serve", "--db", self.db, "--listen", f"127.0.0.1:{self.port}",
             *self.args], env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: --workers children go with it
        wait_listening(self.port, timeout, self.proc)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=10)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def get(self, path: str, token: str | None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=30, **kwargs)

    def post(self, path: str, token: str | None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return requests.post(self.url + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def collector(db_url):
    c = Collector(db_url).start()
    try:
        yield c
    finally:
        c.kill(signal.SIGTERM)


BASE = {
    "ended_at": None, "duration_ms": 12, "exit_code": 0, "state": "finished", "source": "wrapper",
    "verb": "get", "resource": "pods", "names": [], "namespace": "default", "all_namespaces": False,
    "context": "dev", "cluster": "dev-cluster", "server": "https://dev.example:6443", "user": "dev-user",
    "impersonate": None, "kubeconfig": ["/home/u/.kube/config"], "files": [], "mutating": False, "dry_run": False,
    "local_only": False, "redacted": False, "unexpanded": None, "cwd": "/home/u", "host": "laptop",
    "os_user": "u", "sudo_user": None, "ssh_client": None, "session": None, "parent": "bash", "ci": None,
    "kubectl_version": "v1.32.4", "identity": None, "audit": None,
}


def synthetic(n: int, start: int = 0, prefix: str | None = None, **fields) -> list[dict]:
    """N distinct records as the ingester would hand them to store.insert_local."""
    prefix = prefix or uuid.uuid4().hex[:8]
    out = []
    for i in range(start, start + n):
        t = 1_780_000_000 + i
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{i % 1000:03d}Z"
        argv = ["get", "pods", f"web-{i}"]
        out.append({**BASE, "id": f"{prefix}-{i:07d}", "started_at": stamp, "argv": argv, "names": [f"web-{i}"],
                    "command": "kubectl " + " ".join(argv), **fields})
    return out


class Local:
    """One installation's local store (its KUBECTL_RECORD_HOME) and the environment to push from it."""

    def __init__(self, tmp: Path, name: str = "local"):
        self.home = tmp / name / "state"
        self.spool = tmp / name / "spool"
        self.home.mkdir(parents=True, exist_ok=True)
        self.db = str(self.home / "records.db")

    def connect(self):
        return store.connect(self.db)

    def add(self, records: list[dict]) -> int:
        conn = self.connect()
        try:
            return store.insert_local(conn, records)
        finally:
            conn.close()

    def env(self, url: str, token: str, **extra: str) -> dict:
        return child_env(KUBECTL_RECORD_HOME=str(self.home), KUBECTL_RECORD_RUNTIME_DIR=str(self.spool),
                         KUBECTL_RECORD_COLLECTOR=url, KUBECTL_RECORD_TOKEN=token, HOME=str(self.home.parent), **extra)

    def cli(self, url: str, token: str, *args: str, check: bool = True, timeout: float = 120,
            **extra: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "kubectl_record", *args], env=self.env(url, token, **extra),
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl record {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def ids(self) -> set[str]:
        conn = self.connect()
        try:
            return {r[0] for r in conn.execute("SELECT id FROM records")}
        finally:
            conn.close()


def stored(db: str) -> list[tuple]:
    """(id, install_id, seq, link, uploader) of every record the collector holds."""
    from kubectl_record.collector.storage import open_storage

    storage = open_storage(db)
    try:
        with storage.transaction() as tx:
            return tx.all("SELECT id, install_id, seq, link, uploader FROM records ORDER BY install_id, seq")
    finally:
        storage.close()


class RoundRobin:
    """A load balancer in front of collector INSTANCES: each push alternates them batch by batch."""

    def __init__(self, instances: list, token: str):
        self.instances, self.token, self.turns = instances, token, 0
        self.lock = threading.Lock()

    def push(self, local: "Local", batch_size: int) -> int:
        from kubectl_record import sync
        from kubectl_record.collector.client import CollectorClient

        balancer = self

        class Client(CollectorClient):
            def upload(self, body):
                with balancer.lock:
                    balancer.turns += 1
                    self.url = balancer.instances[balancer.turns % len(balancer.instances)].url
                return super().upload(body)

        conn = local.connect()
        try:
            return sync.deliver(conn, Client(self.instances[0].url, self.token), batch_size=batch_size).delivered
        finally:
            conn.close()

    def push_from_hosts(self, tmp_path: Path, counts: list[int], batch_size: int) -> tuple[list[int], list["Local"]]:
        """One host per count, holding that many records, all pushing through the balancer at once:
        (what each delivered, sorted; the hosts)."""
        from concurrent.futures import ThreadPoolExecutor

        hosts = [Local(tmp_path, f"host{i}") for i in range(len(counts))]
        for host, n in zip(hosts, counts):
            host.add(synthetic(n))
        with ThreadPoolExecutor(len(hosts)) as pool:
            return sorted(pool.map(lambda h: self.push(h, batch_size), hosts)), hosts

