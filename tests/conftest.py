"""Shared fixtures: an isolated recorder (state, spool, HOME, kubeconfig) per test, real parts.

Under CI=true a missing real part (kubectl, zsh, PostgreSQL …) fails the test instead of
skipping it, so a green CI run means everything really ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"


def require(what: str, present: bool, why: str = "") -> None:
    """Skip locally, fail in CI, when a real part the test needs is missing."""
    if present:
        return
    message = f"{what} is required{': ' + why if why else ''}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing real part fails the run)")
    pytest.skip(message)


def real_kubectl() -> str:
    path = shutil.which("kubectl")
    require("kubectl", path is not None)
    return path


KUBECONFIG_A = """\
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev-cluster
  cluster: {server: "http://127.0.0.1:1"}
- name: prod-cluster
  cluster: {server: "https://prod.example.com:6443"}
contexts:
- name: dev
  context: {cluster: dev-cluster, user: dev-user, namespace: team-a}
- name: prod-eu
  context: {cluster: prod-cluster, user: prod-admin}
users:
- name: dev-user
  user: {token: dev-token-not-a-secret-shape}
- name: prod-admin
  user: {token: prod-token-not-a-secret-shape}
"""

KUBECONFIG_B = """\
apiVersion: v1
kind: Config
current-context: staging
clusters:
- name: staging-cluster
  cluster: {server: "http://127.0.0.1:2"}
contexts:
- name: staging
  context: {cluster: staging-cluster, user: staging-user, namespace: qa}
- name: dev
  context: {cluster: staging-cluster, user: staging-user, namespace: shadowed}
users:
- name: staging-user
  user: {token: staging-token-not-a-secret-shape}
"""


@dataclass
class Recorder:
    """One isolated installation: its environment, and ways to run and read it."""

    tmp: Path
    env: dict

    @property
    def python(self) -> str:
        return sys.executable

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "kubectl_record", *args], env=self.env, input=input,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl-record {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def records(self) -> list[dict]:
        return json.loads(self.cli("history", "-o", "json").stdout)

    def spool_dir(self) -> Path:
        return Path(self.env["KUBECTL_RECORD_RUNTIME_DIR"])

    def bin(self, name: str) -> str:
        return str(self.tmp / "bin" / name)


@pytest.fixture
def recorder(tmp_path: Path) -> Recorder:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(KUBECONFIG_A)
    (tmp_path / "kc-b.yaml").write_text(KUBECONFIG_B)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "KUBECTL_RECORD_HOME": str(tmp_path / "state"),
        "KUBECTL_RECORD_RUNTIME_DIR": str(tmp_path / "spool"),
        "KUBECACHEDIR": str(tmp_path / "kube-cache"),
        "PYTHONPATH": str(REPO),
    }
    rec = Recorder(tmp=tmp_path, env=env)
    # The fast launchers install.sh writes, pointing at this Python and this checkout.
    proc = rec.cli("setup-launchers", "--bin", str(tmp_path / "bin"))
    assert "kubectl-record" in proc.stdout
    return rec


@pytest.fixture
def fake_kubectl(tmp_path: Path):
    """Make a fake kubectl for exact statuses, delays and signals; returns its directory."""

    def make(body: str) -> str:
        d = tmp_path / "fakebin"
        d.mkdir(exist_ok=True)
        path = d / "kubectl"
        # Like any kubectl, it can tell its version (the ingester asks once per binary).
        version = """[ "$*" = "version --client -o json" ] && { echo '{"clientVersion":{"gitVersion":"v0.0.0-fake"}}'; exit 0; }\n"""
        path.write_text("#!/bin/bash\n" + version + textwrap.dedent(body))
        path.chmod(0o755)
        return str(path)

    return make
