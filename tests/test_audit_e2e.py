"""Audit correlation end to end: the real kubectl through the recorder against the suite's API
server, the server's log imported, every link and status checked; the exact mode's marker and
its field-manager limit; the recorder's own SelfSubjectReview; unmatched activity; webhook
delivery; rotation, resume and --follow."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest

from tests.apiserver.audit import OffsetClock
from tests.apiserver.fixtures import KUBECTL, apiserver, apiserver_factory  # noqa: F401  (fixtures)
from tests.collectorkit import free_port, wait_listening
from tests.conftest import Recorder, require

POD = "web-6d4cf56db6-abcde"


@pytest.fixture(autouse=True)
def _kubectl_present():
    require("kubectl", os.path.exists(KUBECTL))


def run(recorder: Recorder, h, *args: str, marker: bool = False, user: str = "alice") -> subprocess.CompletedProcess:
    env = dict(recorder.env)
    env["PATH"] = f"{recorder.tmp / 'bin'}:{env['PATH']}"
    env["KUBECONFIG"] = str(h.kubeconfig(user))
    env["KUBECACHEDIR"] = str(h.cache_dir)
    if marker:
        env["KUBECTL_RECORD_AUDIT_MARKER"] = "1"
    return subprocess.run(["kubectl-record", "--", *args], env=env, capture_output=True, text=True, timeout=60)


def audit_import(recorder: Recorder, h, *extra: str, paths=None, check=True) -> subprocess.CompletedProcess:
    files = paths if paths is not None else [str(p) for p in h.log_files()]
    return recorder.cli("audit", "import", "--server", h.url, "--grace", "0", *extra, *files, check=check)


def by_command(recorder: Recorder) -> dict[str, dict]:
    return {r["command"]: r for r in recorder.records()}


def calls(record: dict) -> list[tuple]:
    return [(e["verb"], e["resource"], e["namespace"], e["name"], e["code"]) for e in record["audit"]["events"]
            if e["resource"] and not e["resource"].startswith("/")]


def later_activity(h) -> None:
    """Something newer in the log than every run (so the source has caught up; imports here use
    --grace 0: a real cluster's controllers keep the log moving, this one has only us)."""
    h.kubectl("get", "ns", user="admin")


def test_links_and_statuses_without_marker(recorder, apiserver_factory):
    h = apiserver_factory(skew=2.0, lag=30.0)
    assert run(recorder, h, "get", "pods").returncode == 0
    assert run(recorder, h, "get", "secrets", "-n", "kube-system").returncode == 1
    assert run(recorder, h, "create", "configmap", "cm1", "--from-literal=a=b").returncode == 0
    assert run(recorder, h, "label", "pod", POD, "team=a").returncode == 0
    assert run(recorder, h, "delete", "configmap", "cm1").returncode == 0
    assert run(recorder, h, "config", "view").returncode == 0
    assert run(recorder, h, "version", "--client").returncode == 0
    later_activity(h)
    recorder.cli("ingest")
    # delivery lags 30 s: nothing has arrived, every API run is pending
    out = audit_import(recorder, h)
    recs = by_command(recorder)
    assert recs["kubectl get pods"]["audit"]["status"] == "pending"
    assert recs["kubectl config view"]["audit"]["status"] == "none"
    h.flush()
    out = audit_import(recorder, h)
    assert "correlated" in out.stdout
    recs = by_command(recorder)
    get = recs["kubectl get pods"]
    assert get["audit"]["status"] == "strong" and get["identity"] == "alice"
    assert calls(get) == [("list", "pods", "default", None, 200)]
    sec = recs["kubectl get secrets -n kube-system"]
    assert sec["exit_code"] == 1 and sec["audit"]["status"] == "strong"
    [ev] = sec["audit"]["events"]
    assert (ev["code"], ev["decision"], ev["verb"], ev["resource"]) == (403, "forbid", "list", "secrets")
    from kubectl_record.audit.views import outcome

    assert outcome(sec) == "403 forbid" and outcome(get) == "200"
    # history shows the server's answer beside the client's exit status; show says it too
    row = next(line for line in recorder.cli("history").stdout.splitlines() if "get secrets" in line)
    assert row.split()[4:7] == ["1", "403", "forbid"]
    assert "403 forbid" in recorder.cli("show", sec["id"]).stdout
    assert calls(recs["kubectl create configmap cm1 --from-literal=a=b"]) == [("create", "configmaps", "default", "cm1", 201)]
    assert calls(recs[f"kubectl label pod {POD} team=a"]) == [("get", "pods", "default", POD, 200),
                                                              ("patch", "pods", "default", POD, 200)]
    assert calls(recs["kubectl delete configmap cm1"]) == [("delete", "configmaps", "default", "cm1", 200),
                                                          ("get", "configmaps", "default", "cm1", 404)]
    assert recs["kubectl version --client"]["audit"]["status"] == "none"
    # every audit event of the runs went to exactly one record (ground truth: the side file)
    truth = {}
    for line in open(h.ground_truth):
        g = json.loads(line)
        if g.get("kubectlSession") and not g["userAgent"].startswith("kubectl+kubectl-record-whoami/"):
            truth.setdefault(g["kubectlSession"], set()).add(g["auditID"])
    linked = [{e["audit_id"] for e in r["audit"]["events"]} for r in recs.values() if r["audit"]["events"]]
    admin_sessions = 1  # later_activity's bypassing kubectl
    assert len(linked) == len(truth) - admin_sessions
    assert all(any(ids == t for t in truth.values()) for ids in linked)
    # re-import: nothing new, nothing changes
    again = audit_import(recorder, h)
    assert "0 new" in again.stdout
    assert by_command(recorder)["kubectl get pods"]["audit"] == get["audit"]


def test_exact_mode_marker_and_field_manager_limit(recorder, apiserver_factory):
    h = apiserver_factory(skew=-2.0)
    assert run(recorder, h, "create", "deployment", "d1", "--image=nginx", marker=True).returncode == 0
    assert run(recorder, h, "get", "deploy", "d1", marker=True).returncode == 0
    assert run(recorder, h, "scale", "deploy", "d1", "--replicas=2", marker=True).returncode == 0
    assert run(recorder, h, "cordon", "node-1", marker=True).returncode == 0
    later_activity(h)
    recorder.cli("ingest")
    audit_import(recorder, h)
    recs = by_command(recorder)
    create, get = recs["kubectl create deployment d1 --image=nginx"], recs["kubectl get deploy d1"]
    assert create["audit"]["status"] == "exact" and get["audit"]["status"] == "exact"
    events = h.events()
    marked = {e["userAgent"].split("/")[0] for e in events if e["userAgent"].startswith("kubectl+r.")}
    assert marked == {f"kubectl+r.{create['id']}", f"kubectl+r.{get['id']}"}
    # writes that name no field manager run unmarked: the server would take the marker as manager
    scale, cordon = recs["kubectl scale deploy d1 --replicas=2"], recs["kubectl cordon node-1"]
    assert scale["audit"]["status"] == "strong" and cordon["audit"]["status"] == "strong"
    writes = [e for e in events if e["verb"] in ("create", "update", "patch") and e["stage"] == "ResponseComplete"]
    for e in writes:
        if "fieldManager=" not in e["requestURI"]:
            assert not e["userAgent"].startswith("kubectl+r."), e["requestURI"]


def test_exact_mode_from_config_is_baked_into_the_launcher_and_the_environment_wins(recorder, apiserver_factory):
    h = apiserver_factory()
    env = dict(recorder.env, PATH=f"{recorder.tmp / 'bin'}:{recorder.env['PATH']}")
    proc = subprocess.run([recorder.python, "-m", "kubectl_record", "config", "set", "audit.exact", "true"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and f"rewrote {recorder.bin('kubectl-record')}" in proc.stderr
    assert run(recorder, h, "get", "deploy", "d1").returncode == 1  # not found: still one call to link
    recorder.env["KUBECTL_RECORD_AUDIT_MARKER"] = "0"
    assert run(recorder, h, "get", "deploy", "d2").returncode == 1
    later_activity(h)
    recorder.cli("ingest")
    audit_import(recorder, h)
    recs = by_command(recorder)
    assert recs["kubectl get deploy d1"]["audit"]["status"] == "exact"
    assert recs["kubectl get deploy d2"]["audit"]["status"] == "strong"


def test_whoami_is_quiet_and_identifies_itself(recorder, apiserver_factory):
    h = apiserver_factory()
    assert run(recorder, h, "get", "ns").returncode == 0
    h.kubectl("get", "pods", "-n", "payments", user="bob")          # bypassing the recorder
    h.kubectl("delete", "pod", "api-0", "-n", "payments", user="bob")
    later_activity(h)
    recorder.cli("ingest")
    audit_import(recorder, h)
    whoami = [g for g in map(json.loads, open(h.ground_truth)) if g["userAgent"].startswith("kubectl+kubectl-record-whoami/")]
    assert len(whoami) == 1 and whoami[0]["requestURI"].startswith("/apis/authentication.k8s.io/v1/selfsubjectreviews")
    assert by_command(recorder)["kubectl get ns"]["identity"] == "alice"
    # the cache answers next time: no second SelfSubjectReview
    assert run(recorder, h, "get", "nodes").returncode == 0
    recorder.cli("ingest")
    audit_import(recorder, h)
    assert sum(1 for g in map(json.loads, open(h.ground_truth)) if "whoami" in g["userAgent"]) == 1
    report = json.loads(recorder.cli("audit", "unmatched", "-o", "json").stdout)
    [bob] = [g for g in report["server_side"] if g["user"] == "bob"]
    assert {"list pods -n payments", "delete pods -n payments api-0"} <= set(bob["calls"])
    assert bob["user_agent"].startswith("kubectl/v1.32")
    assert all(g["user"] != "alice" for g in report["server_side"])
    text = recorder.cli("audit", "unmatched").stdout
    assert "kubectl+kubectl-record-whoami" in text and "ignored" in text
    assert "kubectl-dispatcher" in text


def test_missing_and_no_source(recorder, apiserver_factory):
    policy = """apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    resources: [{group: "", resources: ["configmaps"]}]
  - level: Metadata
"""
    h = apiserver_factory(policy=policy)
    assert run(recorder, h, "create", "configmap", "hidden", "--from-literal=a=b").returncode == 0
    assert run(recorder, h, "get", "pods").returncode == 0
    later_activity(h)
    # a run against a cluster nobody imports
    other = apiserver_factory()
    assert run(recorder, other, "get", "pods").returncode == 0
    recorder.cli("ingest")
    audit_import(recorder, h)
    recs = recorder.records()
    by = {(r["server"], r["command"]): r for r in recs}
    assert by[(h.url, "kubectl create configmap hidden --from-literal=a=b")]["audit"]["status"] == "missing"
    assert by[(h.url, "kubectl get pods")]["audit"]["status"] == "strong"
    assert by[(other.url, "kubectl get pods")]["audit"]["status"] == "no_source"
    report = json.loads(recorder.cli("audit", "unmatched", "-o", "json").stdout)
    assert [r["command"] for r in report["local_side"]] == ["kubectl create configmap hidden --from-literal=a=b"]


def test_cluster_binding_by_kubeconfig_name(recorder, apiserver):
    h = apiserver
    assert run(recorder, h, "get", "pods").returncode == 0
    later_activity(h)
    recorder.cli("ingest")
    env = dict(recorder.env, KUBECONFIG=str(h.kubeconfig("alice")))
    files = [str(p) for p in h.log_files()]
    proc = subprocess.run([sys.executable, "-m", "kubectl_record", "audit", "import", "--grace", "0", "--cluster", "test", *files],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert recorder.records()[0]["audit"]["status"] == "strong"
    bad = subprocess.run([sys.executable, "-m", "kubectl_record", "audit", "import", "--cluster", "nope", *files],
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    unbound = subprocess.run([sys.executable, "-m", "kubectl_record", "audit", "import", *files],
                             env=env, capture_output=True, text=True)
    assert unbound.returncode == 2 and "--server" in unbound.stderr


def test_rotation_resume_and_follow(recorder, apiserver_factory, tmp_path):
    h = apiserver_factory(log_max_bytes=4000, clock=OffsetClock())
    for i in range(3):
        assert run(recorder, h, "get", "pod", POD).returncode == 0
    recorder.cli("ingest")
    h.flush()
    assert len(h.log_files()) > 1  # rotated
    logs = tmp_path / "logs"
    logs.mkdir()
    for p in h.log_files():  # a directory of rotated files, compressed ones too
        (logs / (p.name + ".gz" if p != h.audit_log else p.name)).write_bytes(
            gzip.compress(p.read_bytes()) if p != h.audit_log else p.read_bytes())
    before = len(h.events())
    out = audit_import(recorder, h, paths=[str(logs)])
    first = sum(int(line.split(": ")[1].split(" events")[0]) for line in out.stdout.splitlines() if " events" in line)
    assert first == before
    # more runs, more rotation; --follow picks up the rest from the saved positions and stops when idle
    for i in range(3):
        assert run(recorder, h, "get", "pod", "api-0", "-n", "payments").returncode == 0
    recorder.cli("ingest")
    later_activity(h)
    h.flush()
    out = recorder.cli("audit", "import", "--server", h.url, "--grace", "0", "--follow", "--poll", "0.1",
                       "--idle-exit", "0.5", str(h.audit_log))
    new = sum(int(line.split("+")[1].split(" ")[0]) for line in out.stdout.splitlines() if ": +" in line)
    total_rows = len({e["auditID"] for e in h.events()})
    assert new > 0
    recs = recorder.records()
    assert [r["audit"]["status"] for r in recs] == ["strong"] * 6
    # nothing is read twice
    out = audit_import(recorder, h, paths=[str(p) for p in h.log_files()])
    assert all(" 0 events" in line for line in out.stdout.splitlines() if " events" in line)
    assert total_rows > 0


def test_webhook_delivery_with_repeats(recorder, apiserver_factory):
    port = free_port()
    env = dict(recorder.env)
    h = apiserver_factory(audit_log=False, webhook_url=f"http://127.0.0.1:{port}/", batch_size=5,
                          duplicate_rate=1.0, retry_backoff=0.0, clock=OffsetClock())
    proc = subprocess.Popen([sys.executable, "-m", "kubectl_record", "audit", "import", "--server", h.url,
                             "--listen", f"127.0.0.1:{port}", "--idle-exit", "2", "--grace", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(port, proc=proc)
        assert run(recorder, h, "get", "pods").returncode == 0
        assert run(recorder, h, "get", "nodes").returncode == 0
        recorder.cli("ingest")
        later_activity(h)
        h.flush()
        h.flush()  # the repeated batches
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert "repeated" in out and h.server.audit.posted_batches >= 2
    assert any(" 0 new, " in line and "repeated" in line and not line.endswith(" 0 repeated, 0 malformed")
               for line in out.splitlines()), out
    recs = by_command(recorder)
    assert recs["kubectl get pods"]["audit"]["status"] == "strong"
    assert recs["kubectl get nodes"]["audit"]["status"] == "strong"
