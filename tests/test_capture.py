"""The capture core end to end: the wrapper and the shim in front of the real kubectl (or a fake
one where an exact status, delay or signal is needed), real bash, real SQLite."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import Recorder, real_kubectl


def shim(recorder: Recorder) -> str:
    """Install the shim with the real CLI command and return its directory."""
    return recorder.cli("shim", "install", "--dir", str(recorder.tmp / "shim")).stdout.strip().splitlines()[-1]


def sh(recorder: Recorder, script: str, *, path_first: str | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(recorder.env)
    env["PATH"] = ":".join(p for p in (path_first, str(recorder.tmp / "bin"), env["PATH"]) if p)
    env.update(kw.pop("env", {}))
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120, **kw)


def test_wrapper_runs_kubectl_unchanged_and_records_it(recorder: Recorder):
    kubectl = real_kubectl()
    bare = subprocess.run([kubectl, "version", "--client"], env=recorder.env, capture_output=True, text=True)
    wrapped = sh(recorder, 'kubectl-record -- version --client')
    assert (wrapped.returncode, wrapped.stdout, wrapped.stderr) == (bare.returncode, bare.stdout, bare.stderr)
    [record] = recorder.records()
    assert record["source"] == "wrapper"
    assert record["argv"] == ["version", "--client"]
    assert record["command"] == "kubectl version --client"
    assert record["verb"] == "version" and record["local_only"] is True
    assert record["exit_code"] == 0 and record["state"] == "finished"
    assert record["context"] == "dev" and record["cluster"] == "dev-cluster" and record["user"] == "dev-user"
    assert record["kubeconfig"] == [os.path.join(recorder.env["HOME"], ".kube", "config")]
    assert record["kubectl_version"].startswith("v1.")
    assert record["seq"] == 1 and record["install_id"]
    assert record["started_at"].endswith("Z") and record["duration_ms"] >= 0


def test_kubectl_record_plugin_form_records_once_as_the_inner_command(recorder: Recorder):
    real_kubectl()
    out = sh(recorder, 'kubectl record -- version --client', path_first=shim(recorder))
    assert out.returncode == 0, out.stderr
    [record] = recorder.records()
    assert record["argv"] == ["version", "--client"] and record["source"] == "wrapper"


@pytest.mark.parametrize("status", [0, 1, 3, 42])
def test_exit_status_passes_through(recorder: Recorder, fake_kubectl, status: int):
    fake = fake_kubectl(f"exit {status}\n")
    out = sh(recorder, 'kubectl-record -- get po; echo "wrapper=$?"; kubectl get po; echo "shim=$?"',
             path_first=shim(recorder), env={"KUBECTL_RECORD_KUBECTL": fake})
    assert f"wrapper={status}" in out.stdout and f"shim={status}" in out.stdout
    assert [r["exit_code"] for r in recorder.records()] == [status, status]


def test_real_kubectl_failure_is_recorded_with_its_status(recorder: Recorder):
    real_kubectl()
    # dev's server is 127.0.0.1:1: nothing listens, kubectl fails fast with status 1.
    out = sh(recorder, 'kubectl get pods --request-timeout=5s; exit $?', path_first=shim(recorder))
    assert out.returncode == 1 and "refused" in out.stderr
    [record] = recorder.records()
    assert (record["exit_code"], record["verb"], record["resource"], record["namespace"]) == (1, "get", "pods", "team-a")
    assert record["source"] == "shim" and record["parent"] == "bash"


def test_killed_by_signal_gives_128_plus_n_and_the_shell_sees_the_signal(recorder: Recorder, fake_kubectl):
    fake = fake_kubectl("kill -TERM $$\n")
    out = sh(recorder, 'kubectl get po; echo "status=$?"', path_first=shim(recorder),
             env={"KUBECTL_RECORD_KUBECTL": fake})
    assert "status=143" in out.stdout
    [record] = recorder.records()
    assert record["exit_code"] == 143


def test_signals_sent_to_the_shim_reach_kubectl(recorder: Recorder, fake_kubectl):
    marker = recorder.tmp / "got-term"
    fake = fake_kubectl(f"""
        trap 'echo term > {marker}; exit 7' TERM
        echo ready
        while :; do sleep 0.05; done
    """)
    env = dict(recorder.env, KUBECTL_RECORD_KUBECTL=fake)
    proc = subprocess.Popen([os.path.join(shim(recorder), "kubectl"), "logs", "-f", "web"], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 7
    assert marker.read_text() == "term\n"
    [record] = recorder.records()
    assert record["exit_code"] == 7 and record["argv"] == ["logs", "-f", "web"]


def test_ctrl_c_on_the_process_group_stops_kubectl_with_130(recorder: Recorder, fake_kubectl):
    fake = fake_kubectl("echo ready; exec sleep 30\n")
    env = dict(recorder.env, KUBECTL_RECORD_KUBECTL=fake)
    proc = subprocess.Popen([os.path.join(shim(recorder), "kubectl"), "logs", "-f", "web"], env=env,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    assert proc.wait(timeout=10) == -signal.SIGINT  # died of SIGINT, as bare kubectl would
    [record] = recorder.records()
    assert record["exit_code"] == 130


def test_stdin_is_passed_to_the_real_kubectl(recorder: Recorder):
    kubectl = real_kubectl()
    data = "line one\nline two\n" * 1000
    args = ["create", "configmap", "piped", "--from-file=k=/dev/stdin", "--dry-run=client", "-o", "yaml"]
    bare = subprocess.run([kubectl, *args], input=data, env=recorder.env, capture_output=True, text=True)
    assert bare.returncode == 0 and "line two" in bare.stdout
    for command in ([os.path.join(shim(recorder), "kubectl")], [recorder.bin("kubectl-record"), "--"]):
        out = subprocess.run([*command, *args], input=data, env=recorder.env, capture_output=True, text=True)
        assert (out.returncode, out.stdout, out.stderr) == (0, bare.stdout, bare.stderr)
    assert [r["verb"] for r in recorder.records()] == ["create configmap"] * 2


def test_the_terminal_is_kubectls(recorder: Recorder, fake_kubectl):
    pexpect = pytest.importorskip("pexpect")
    fake = fake_kubectl("""
        [ -t 0 ] && [ -t 1 ] && echo "tty ok"
        read -r -p "name? " answer
        echo "hello $answer"
    """)
    env = dict(recorder.env, KUBECTL_RECORD_KUBECTL=fake)
    child = pexpect.spawn(os.path.join(shim(recorder), "kubectl"), ["exec", "-it", "web", "--", "sh"], env=env,
                          encoding="utf-8", timeout=10)
    child.expect("tty ok")
    child.expect("name\\? ")
    child.sendline("world")
    child.expect("hello world")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    [record] = recorder.records()
    assert record["argv"] == ["exec", "-it", "web", "--", "sh"]


def test_disable_records_nothing_and_changes_nothing(recorder: Recorder):
    real_kubectl()
    out = sh(recorder, 'kubectl version --client >/dev/null && kubectl-record -- version --client >/dev/null; echo $?',
             path_first=shim(recorder), env={"KUBECTL_RECORD_DISABLE": "1"})
    assert out.stdout.strip() == "0"
    assert not list(recorder.spool_dir().glob("*.run"))
    assert recorder.records() == []


def test_shim_finds_the_real_kubectl_past_other_shims_and_never_recurses(recorder: Recorder):
    real_kubectl()
    first = shim(recorder)
    second = recorder.cli("shim", "install", "--dir", str(recorder.tmp / "shim2")).stdout.strip().splitlines()[-1]
    # A copy of the shim without its marker directory, and KUBECTL_RECORD_KUBECTL aimed at a shim.
    copy = recorder.tmp / "copy"
    copy.mkdir()
    (copy / "kubectl").write_text(Path(first, "kubectl").read_text())
    (copy / "kubectl").chmod(0o755)
    out = sh(recorder, 'kubectl version --client', path_first=f"{first}:{second}:{copy}",
             env={"KUBECTL_RECORD_KUBECTL": str(copy / "kubectl")})
    assert out.returncode == 0 and "Client Version" in out.stdout
    assert len(recorder.records()) == 1


def test_a_recorder_that_started_the_shim_keeps_it_from_recording_twice(recorder: Recorder):
    real_kubectl()
    out = sh(recorder, 'KUBECTL_RECORD_ACTIVE=$$ kubectl version --client >/dev/null; kubectl version --client >/dev/null',
             path_first=shim(recorder))
    assert out.returncode == 0
    assert len(recorder.records()) == 1


def test_context_in_effect_when_each_run_started(recorder: Recorder):
    real_kubectl()
    script = ("kubectl config use-context prod-eu && kubectl get po --request-timeout=1s; "
              "kubectl config use-context dev && kubectl get po --request-timeout=1s -n other; true")
    sh(recorder, script, path_first=shim(recorder))
    got = [(r["verb"], r["context"], r["namespace"]) for r in reversed(recorder.records())]
    assert got == [
        ("config use-context", "dev", None),
        ("get", "prod-eu", "default"),
        ("config use-context", "prod-eu", None),
        ("get", "dev", "other"),
    ]


def test_kubeconfig_list_merges_first_wins(recorder: Recorder):
    real_kubectl()
    kc = f"{recorder.tmp / 'kc-b.yaml'}:{recorder.tmp / 'missing.yaml'}:{recorder.env['HOME']}/.kube/config"
    sh(recorder, "kubectl config current-context; kubectl --context dev config current-context; "
                 "kubectl --context prod-eu -n x config current-context",
       path_first=shim(recorder), env={"KUBECONFIG": kc})
    got = [(r["context"], r["cluster"], r["namespace"], r["server"]) for r in reversed(recorder.records())]
    # `config …` is local: no namespace. The context and cluster are still resolved.
    assert got == [
        ("staging", "staging-cluster", None, "http://127.0.0.1:2"),
        ("dev", "staging-cluster", None, "http://127.0.0.1:2"),
        ("prod-eu", "prod-cluster", None, "https://prod.example.com:6443"),
    ]
    assert recorder.records()[0]["kubeconfig"] == [str(recorder.tmp / "kc-b.yaml"), f"{recorder.env['HOME']}/.kube/config"]


def test_parallel_invocations_give_exactly_one_record_each(recorder: Recorder, fake_kubectl):
    fake = fake_kubectl("exit $(( $3 % 3 ))\n")
    script = 'for i in $(seq 1 100); do kubectl get pod "$i" >/dev/null; done; exit 0'
    env = dict(recorder.env, KUBECTL_RECORD_KUBECTL=fake, PATH=f"{shim(recorder)}:{recorder.env['PATH']}")
    procs = [subprocess.Popen(["bash", "-c", script], env=env) for _ in range(16)]
    assert [p.wait(timeout=600) for p in procs] == [0] * 16
    records = recorder.records()
    assert len(records) == 1600
    assert len({r["id"] for r in records}) == 1600
    assert sorted(r["seq"] for r in records) == list(range(1, 1601))
    assert sorted(int(r["names"][0]) for r in records) == sorted(list(range(1, 101)) * 16)
    assert all(r["exit_code"] == int(r["names"][0]) % 3 for r in records)
    assert not list(recorder.spool_dir().glob("*.run"))
    # Far more than a pipe holds: the reader leaving early must not cause a traceback.
    head = subprocess.run(f"{recorder.bin('kubectl-record')} history -o jsonl | head -1", shell=True,
                          env=recorder.env, capture_output=True, text=True)
    assert head.stdout.count("\n") == 1 and head.stderr == ""


def test_killed_recorder_leaves_an_unfinished_record_not_a_success(recorder: Recorder, fake_kubectl):
    fake = fake_kubectl("echo ready; exec sleep 30\n")
    env = dict(recorder.env, KUBECTL_RECORD_KUBECTL=fake)
    proc = subprocess.Popen([os.path.join(shim(recorder), "kubectl"), "rollout", "status", "deploy/web"], env=env,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline() == "ready\n"
    proc.kill()
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # the orphaned fake kubectl
    [record] = recorder.records()
    assert record["state"] == "unfinished"
    assert record["exit_code"] is None and record["ended_at"] is None


def test_locked_store_is_silent_keeps_the_run_and_doctor_says_why(recorder: Recorder):
    real_kubectl()
    recorder.records()  # create the store
    db = Path(recorder.env["KUBECTL_RECORD_HOME"]) / "records.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = sh(recorder, "kubectl version --client", path_first=shim(recorder))
        assert out.returncode == 0 and out.stderr == ""
        doctor = recorder.cli("doctor", check=False)
        assert doctor.returncode == 1
        assert "locked" in doctor.stdout
        assert len(list(recorder.spool_dir().glob("*.run"))) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    [record] = recorder.records()
    assert record["verb"] == "version"
    assert "FAIL" not in recorder.cli("doctor").stdout


def test_unwritable_store_is_silent_keeps_the_run_and_doctor_says_why(recorder: Recorder):
    real_kubectl()
    # /proc refuses new directories even to root, so this holds whoever runs the tests.
    env = {"KUBECTL_RECORD_HOME": "/proc/kubectl-record-test"}
    out = sh(recorder, "kubectl version --client", path_first=shim(recorder), env=env)
    assert out.returncode == 0 and out.stderr == ""
    assert len(list(recorder.spool_dir().glob("*.run"))) == 1
    doctor = subprocess.run([recorder.python, "-m", "kubectl_record", "doctor"], env={**recorder.env, **env},
                            capture_output=True, text=True)
    assert doctor.returncode == 1 and "cannot be written" in doctor.stdout


def test_corrupt_store_is_silent_keeps_the_run_and_doctor_says_why(recorder: Recorder):
    real_kubectl()
    state = Path(recorder.env["KUBECTL_RECORD_HOME"])
    state.mkdir(parents=True)
    (state / "records.db").write_bytes(b"this is not a database" * 100)
    out = sh(recorder, "kubectl version --client", path_first=shim(recorder))
    assert out.returncode == 0 and out.stderr == ""
    doctor = recorder.cli("doctor", check=False)
    assert doctor.returncode == 1 and "corrupt" in doctor.stdout
    assert len(list(recorder.spool_dir().glob("*.run"))) == 1


def test_store_and_spool_are_private(recorder: Recorder):
    real_kubectl()
    sh(recorder, "kubectl version --client", path_first=shim(recorder))
    recorder.records()
    state = Path(recorder.env["KUBECTL_RECORD_HOME"])
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "records.db").stat().st_mode & 0o777 == 0o600
    assert recorder.spool_dir().stat().st_mode & 0o777 == 0o700


def test_history_json_is_an_array_newest_first_and_head_is_quiet(recorder: Recorder):
    real_kubectl()
    sh(recorder, "kubectl version --client; kubectl config current-context", path_first=shim(recorder))
    records = recorder.records()
    assert [r["verb"] for r in records] == ["config current-context", "version"]
    out = sh(recorder, "kubectl-record history | head -1")
    assert out.stdout.startswith("ID") and out.stderr == ""
