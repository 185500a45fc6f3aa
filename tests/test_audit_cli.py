"""`audit policy`, `audit unmatched` rendering, views, expected calls; no kubectl needed."""

from __future__ import annotations

import json

import pytest

from kubectl_record.audit import expect, policy, views
from kubectl_record.audit_policy import load_policy

MISSES = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: RequestResponse          # a catch-all first: Secrets bodies leak
    resources: [{group: ""}]
  - level: None
    nonResourceURLs: ["/version", "/api*"]
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
  - level: None
    verbs: ["get", "list", "watch"]
  - level: Metadata
    omitStages: ["ResponseComplete", "ResponseStarted"]
"""


def cli(recorder, *args, check=False):
    return recorder.cli(*args, check=check)


def test_recommended_policy_loads_and_misses_nothing(recorder):
    out = cli(recorder, "audit", "policy", check=True).stdout
    pol = load_policy(out)
    assert not pol.warnings
    assert policy.check(pol) == []
    # Secrets: Metadata only, whoever asks, whatever the verb
    from kubectl_record.audit_policy import RequestAttributes

    for verb in ("get", "list", "create", "patch", "delete"):
        d = pol.evaluate(RequestAttributes(user="x", groups=["system:authenticated"], verb=verb, resource="secrets",
                                           namespace="default"))
        assert d.level.value == "Metadata"
    # changes to workloads: RequestResponse; noise from nodes: None
    d = pol.evaluate(RequestAttributes(user="x", verb="patch", resource="deployments", api_group="apps", namespace="a"))
    assert d.level.value == "RequestResponse"
    d = pol.evaluate(RequestAttributes(user="system:node:n1", groups=["system:nodes"], verb="get", resource="nodes"))
    assert d.level.value == "None"


def test_policy_check_names_what_is_missed(recorder, tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text(MISSES)
    out = cli(recorder, "audit", "policy", "--check", str(f), check=True).stdout
    assert "MISSED     kubectl version" in out
    assert "MISSED     kubectl get deploy" in out
    assert "LEAKS BODY kubectl get secrets" in out
    assert "NO RESULT  kubectl create deployment" in out
    assert "kinds of kubectl request logged" in out.splitlines()[-1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Nope\n")
    proc = cli(recorder, "audit", "policy", "--check", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    proc = cli(recorder, "audit", "policy", "--check", str(tmp_path / "none.yaml"))
    assert proc.returncode == 2


def test_unmatched_on_an_empty_store(recorder):
    out = cli(recorder, "audit", "unmatched", check=True).stdout
    assert "no local record: 0" in out and "other clients: 0" in out
    data = json.loads(cli(recorder, "audit", "unmatched", "-o", "json", check=True).stdout)
    assert data["server_side"] == [] and data["local_side"] == []


def test_other_clients_grouped(recorder, tmp_path):
    lines = []
    for i, (ua, user) in enumerate([("kube-controller-manager/v1.32.4 (linux/amd64) kubernetes/abc/leader-election", "system:kube-controller-manager")] * 3
                                   + [("Lens/6.5 (darwin/arm64) kubernetes/abc", "alice@example.com")]
                                   + [("kubectl+kubectl-record-whoami/v1.32.4 (linux/amd64) kubernetes/abc", "alice")]):
        lines.append(json.dumps({"kind": "Event", "auditID": f"id{i}", "stage": "ResponseComplete", "verb": "get",
                                 "requestURI": "/api/v1/nodes", "user": {"username": user}, "userAgent": ua,
                                 "objectRef": {"resource": "nodes"}, "responseStatus": {"code": 200},
                                 "requestReceivedTimestamp": "2026-11-27T10:00:00.000000Z"}))
    log = tmp_path / "a.log"
    log.write_text("\n".join(lines) + "\n")
    cli(recorder, "audit", "import", "--server", "https://c.example", str(log), check=True)
    out = cli(recorder, "audit", "unmatched", check=True).stdout
    assert "system:kube-controller-manager  kube-controller-manager/v1.32.4 (linux/amd64)" in out
    assert "Lens/6.5 (darwin/arm64)" in out
    assert "ignored: 1 request(s) by kubectl+kubectl-record-whoami" in out


def test_import_from_stdin_and_bad_usage(recorder):
    ev = {"kind": "Event", "auditID": "s1", "stage": "ResponseComplete", "verb": "list", "requestURI": "/api/v1/pods",
          "user": {"username": "a"}, "userAgent": "kubectl/v1.32.4", "objectRef": {"resource": "pods"},
          "responseStatus": {"code": 200}, "requestReceivedTimestamp": "2026-11-27T10:00:00Z"}
    out = recorder.cli("audit", "import", "--server", "https://c.example", "-", input=json.dumps(ev) + "\n{oops\n")
    assert "1 events" in out.stdout and "1 malformed" in out.stdout
    proc = recorder.cli("audit", "import", "--server", "https://c.example", check=False)
    assert proc.returncode == 2
    proc = recorder.cli("audit", "import", "--server", "https://c.example", "/nonexistent", check=False)
    assert proc.returncode == 2


def test_views_outcome():
    rec = {"server": "https://c", "identity": "alice",
           "audit": {"status": "strong", "events": [
               {"audit_id": "x", "verb": "list", "resource": "secrets", "namespace": "kube-system", "name": None,
                "code": 403, "decision": "forbid"}]}}
    assert views.outcome(rec) == "403 forbid"
    assert views.outcome({"audit": {"status": "pending", "events": []}}) == "pending"
    assert views.outcome({"audit": {"status": "ambiguous", "events": [{"verb": "get", "resource": "pods", "code": 200}]}}) == "200 ?"
    assert views.outcome({"audit": None}) == ""
    assert views.outcome({"audit": json.dumps({"status": "no_source", "events": []})}) == "no source"



@pytest.mark.parametrize("argv,event,score", [
    (["get", "pods"], ("pods", "", "list", "default", ""), 2),
    (["get", "pods"], ("pods", "", "get", "default", "x"), 0),
    (["get", "pod", "web"], ("pods", "", "get", "default", "web"), 3),
    (["get", "pod", "web"], ("pods", "", "get", "default", "other"), 0),
    (["get", "pods", "-n", "payments"], ("pods", "", "list", "default", ""), 0),
    (["label", "pod", "web", "a=b"], ("pods", "", "patch", "default", "web"), 3),
    (["logs", "web"], ("pods", "log", "get", "default", "web"), 3),
    (["exec", "web", "--", "ls"], ("pods", "exec", "create", "default", "web"), 3),
    (["describe", "pod", "web"], ("events", "", "list", "default", ""), 2),
    (["scale", "deploy", "web", "--replicas=2"], ("deployments", "scale", "patch", "default", "web"), 3),
    (["apply", "-f", "x.yaml"], ("deployments", "", "patch", "shop", "web"), 2),
    (["get", "pods"], ("", "", "get", "", ""), 1),
])
def test_expected_calls(argv, event, score):
    from kubectl_record import kubectl_args

    p = kubectl_args.parse(argv)
    rec = {"argv": argv, "verb": p.verb, "resource": p.resource, "names": p.names, "namespace": p.namespace or "default",
           "all_namespaces": p.all_namespaces, "local_only": p.local_only, "exit_code": 0}
    assert expect.score(expect.expect(rec), *event) == score


def test_field_manager_tells_commands_apart():
    from kubectl_record import kubectl_args

    def rec(argv):
        p = kubectl_args.parse(argv)
        return expect.expect({"argv": argv, "verb": p.verb, "resource": p.resource, "names": p.names,
                              "namespace": "default", "local_only": False, "exit_code": 0})

    label, annotate = rec(["label", "pod", "web", "a=b"]), rec(["annotate", "pod", "web", "a=b"])
    ev = ("pods", "", "patch", "default", "web")
    assert expect.score(label, *ev, manager="kubectl-label") == 3
    assert expect.score(annotate, *ev, manager="kubectl-label") == 0
    assert expect.score(rec(["scale", "deploy", "web", "--replicas=1"]), "deployments", "scale", "patch", "default",
                        "web", manager="kubectl-edit") == 0
