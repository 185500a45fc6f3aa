"""install.sh as a newcomer runs it: no root, a private HOME, idempotent, and a complete uninstall."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, real_kubectl


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    home = tmp_path_factory.mktemp("newcomer")
    env = {
        "HOME": str(home),
        "PATH": f"{home}/.local/bin:{os.environ['PATH']}",
        "LANG": "C.UTF-8",
        "KUBECACHEDIR": str(home / "kube-cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    for _ in range(2):  # the second run must be harmless
        proc = subprocess.run([str(REPO / "install.sh"), "--rc"], env=env, capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
    return home, env, proc.stdout


def test_install_puts_both_commands_on_path_and_kubectl_finds_the_plugin(installed):
    real_kubectl()
    home, env, _ = installed
    for name in ("kubectl-record", "kubectl_complete-record"):
        assert os.access(home / ".local" / "bin" / name, os.X_OK)
    helped = subprocess.run(["kubectl", "record", "--help"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "history" in helped.stdout
    plugins = subprocess.run(["kubectl", "plugin", "list"], env=env, capture_output=True, text=True)
    assert f"{home}/.local/bin/kubectl-record" in plugins.stdout


def test_installed_wrapper_records_through_kubectl(installed):
    real_kubectl()
    home, env, _ = installed
    proc = subprocess.run(["kubectl", "record", "--", "version", "--client"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and "Client Version" in proc.stdout
    history = subprocess.run(["kubectl", "record", "history", "-o", "json"], env=env, capture_output=True, text=True)
    records = json.loads(history.stdout)
    assert [r["argv"] for r in records] == [["version", "--client"]]
    assert (home / ".local" / "share" / "kubectl-record" / "records.db").exists()


def test_rc_line_is_added_once_and_loads_without_output(installed):
    home, env, stdout = installed
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.count("# kubectl-record shell hook") == 1
    assert "already loads the hook" in stdout


def test_uninstall_removes_everything_but_the_records_unless_purged(installed):
    home, env, _ = installed
    shim = subprocess.run(["kubectl-record", "shim", "install"], env=env, capture_output=True, text=True)
    assert shim.returncode == 0
    proc = subprocess.run([str(REPO / "install.sh"), "--uninstall"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (home / ".local" / "bin" / "kubectl-record").exists()
    assert not (home / ".local" / "bin" / "kubectl_complete-record").exists()
    assert not (home / ".local" / "share" / "kubectl-record-app").exists()
    assert not (home / ".local" / "share" / "kubectl-record" / "shim").exists()
    assert "kubectl-record" not in (home / ".bashrc").read_text()
    assert (home / ".local" / "share" / "kubectl-record" / "records.db").exists()
    purge = subprocess.run([str(REPO / "install.sh"), "--uninstall", "--purge"], env=env, capture_output=True, text=True)
    assert purge.returncode == 0
    assert not (home / ".local" / "share" / "kubectl-record").exists()
    assert not Path(home / ".config" / "kubectl-record").exists()
