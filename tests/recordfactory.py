"""Records built in tests and stored with the real store functions, and a CLI runner over them."""

from __future__ import annotations

import itertools
import json
import os
import random
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
_counter = itertools.count(1)
_rnd = random.Random(1234)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def uuid7(epoch: float) -> str:
    ms = int(epoch * 1000)
    h = f"{ms:012x}{0x7000 | _rnd.getrandbits(12):04x}{0x8000000000000000 | _rnd.getrandbits(62):016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def make_record(argv: str | list = "get pods", *, ago: float | None = None, **fields) -> dict:
    """A full record; `ago` seconds before now (default: a unique, increasing recent time)."""
    n = next(_counter)
    started = time.time() - (ago if ago is not None else 3600 - n)
    words = shlex.split(argv) if isinstance(argv, str) else list(argv)
    verb = fields.pop("verb", words[0] if words else None)
    record = {
        "id": uuid7(started), "install_id": None, "seq": None,
        "started_at": rfc3339(started), "ended_at": rfc3339(started + 0.25), "duration_ms": 250,
        "exit_code": 0, "state": "finished", "source": "hook",
        "argv": words, "command": "kubectl" + "".join(" " + shlex.quote(w) for w in words),
        "verb": verb, "resource": "pods", "names": None, "namespace": "default", "all_namespaces": False,
        "context": "dev", "cluster": "dev-cluster", "server": "https://dev.example.com:6443", "user": "dev-user",
        "impersonate": None, "kubeconfig": ["/home/u/.kube/config"], "files": None,
        "mutating": False, "dry_run": False, "local_only": False, "redacted": False, "unexpanded": False,
        "cwd": "/home/u/src", "host": "laptop", "os_user": "u", "sudo_user": None, "ssh_client": None,
        "session": "s1", "parent": "bash", "ci": None, "kubectl_version": "v1.32.0", "identity": None,
        "audit": None, "prev_hash": None, "hash": None,
    }
    record.update(fields)
    return record


class Store:
    """An isolated store (KUBECTL_RECORD_HOME, spool) with helpers to fill it and run the CLI."""

    def __init__(self, tmp: Path, monkeypatch):
        self.home = tmp / "state"
        self.spool = tmp / "spool"
        monkeypatch.setenv("KUBECTL_RECORD_HOME", str(self.home))
        monkeypatch.setenv("KUBECTL_RECORD_RUNTIME_DIR", str(self.spool))
        monkeypatch.delenv("KUBECTL_RECORD_RETENTION", raising=False)
        monkeypatch.delenv("NO_COLOR", raising=False)
        from kubectl_record import store

        self.store = store
        self.conn = store.connect()

    def add(self, *records: dict) -> list[dict]:
        """Local records: numbered and chained by store.insert_local."""
        self.store.insert_local(self.conn, list(records))
        return list(records)

    def add_foreign(self, *records: dict) -> list[dict]:
        for r in records:
            r.setdefault("install_id", "foreign")
            if r["install_id"] is None:
                r["install_id"] = "foreign"
        self.store.insert_foreign(self.conn, list(records))
        return list(records)

    def ids(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT id FROM records")}

    def run(self, *args: str, input: str | None = None):
        from kubectl_record.cli import cli

        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    def json(self, *args: str) -> list[dict]:
        result = self.run(*args, "-o", "json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def history_ids(self, *args: str) -> list[str]:
        return [r["id"] for r in self.json("history", *args)]

    def subprocess(self, *args: str, input: str | None = None, shell_tail: str = "") -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if shell_tail:
            cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "kubectl_record", *args]) + " " + shell_tail
            return subprocess.run(["bash", "-c", "set -o pipefail; " + cmd], env=env, input=input,
                                  capture_output=True, text=True, timeout=120)
        return subprocess.run([sys.executable, "-m", "kubectl_record", *args], env=env, input=input,
                              capture_output=True, text=True, timeout=120)


@pytest.fixture
def st(tmp_path, monkeypatch) -> Store:
    return Store(tmp_path, monkeypatch)
