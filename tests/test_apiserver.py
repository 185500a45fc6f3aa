"""The test API server (tests/apiserver) driven end to end by the real kubectl.

Every kubectl run gets an argv[0] marker (``kubectl+r.<id>``) so its events can
be told apart by userAgent, which is also what the marker test checks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kubectl_record.audit_policy import Policy
from tests.apiserver.audit import FakeClock
from tests.apiserver.fixtures import KUBECTL, apiserver, apiserver_factory  # noqa: F401  (fixtures)

pytestmark = pytest.mark.skipif(not os.path.exists(KUBECTL), reason=f"{KUBECTL} not installed")

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: payments
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: shop}}
  template:
    metadata:
      labels: {{app: shop}}
    spec:
      containers:
      - name: shop
        image: example/shop:{tag}
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: demo
  namespace: default
data:
  a: "1"
"""
POD = "web-6d4cf56db6-abcde"


def marker() -> str:
    return f"kubectl+r.{uuid.uuid4().hex[:12].upper()}"


def run(h, *args, user="alice", check_rc=0, input=None):
    """Run kubectl with a fresh marker; return (proc, this run's events)."""
    m = marker()
    p = h.kubectl(*args, user=user, marker=m, input=input)
    if check_rc is not None:
        assert p.returncode == check_rc, (args, p.returncode, p.stdout, p.stderr)
    evs = [e for e in h.events() if (e.get("userAgent") or "").startswith(m + "/")]
    return p, evs


def calls(evs):
    """(verb, resource[/sub], namespace, name, code) of the ResponseComplete events of resource requests."""
    out = []
    for e in evs:
        if e["stage"] != "ResponseComplete" or "objectRef" not in e:
            continue
        ref = e["objectRef"]
        res = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.append((e["verb"], res, ref.get("namespace"), ref.get("name"), e["responseStatus"]["code"]))
    return out


def write(tmp: Path, name: str, text: str) -> str:
    p = tmp / name
    p.write_text(text)
    return str(p)


# --------------------------------------------------------------------------- commands

D, P, KS = "default", "payments", "kube-system"
COMMANDS = [
    # id, args, user, rc, stdout/stderr needle, expected calls
    ("get pods", ["get", "pods"], "alice", 0, POD, [("list", "pods", D, None, 200)]),
    ("get pods -A", ["get", "pods", "-A"], "alice", 0, "coredns-0", [("list", "pods", None, None, 200)]),
    ("get deploy -o yaml", ["get", "deploy", "web", "-o", "yaml"], "alice", 0, "kind: Deployment",
     [("get", "deployments", D, "web", 200)]),
    ("get nodes", ["get", "nodes"], "alice", 0, "node-2", [("list", "nodes", None, None, 200)]),
    ("get ns", ["get", "ns"], "alice", 0, "payments", [("list", "namespaces", None, None, 200)]),
    ("get svc -n payments -o json", ["get", "svc", "-n", "payments", "-o", "json"], "alice", 0, '"items": []',
     [("list", "services", P, None, 200)]),
    ("describe pod", ["describe", "pod", POD], "alice", 0, "Image:",
     [("get", "pods", D, POD, 200), ("get", "pods", D, POD, 200), ("list", "events", D, None, 200)]),
    ("describe deploy", ["describe", "deploy", "web"], "alice", 0, "Replicas:",
     [("get", "deployments", D, "web", 200), ("get", "deployments", D, "web", 200),
      ("list", "events", D, None, 200), ("list", "replicasets", D, None, 200)]),
    ("logs", ["logs", POD], "alice", 0, "log line 1", [("get", "pods", D, POD, 200), ("get", "pods/log", D, POD, 200)]),
    ("create deployment (protobuf)", ["create", "deployment", "d1", "--image=nginx"], "alice", 0, "created",
     [("create", "deployments", D, "d1", 201)]),
    ("create configmap", ["create", "configmap", "c1", "--from-literal=a=b"], "alice", 0, "created",
     [("create", "configmaps", D, "c1", 201)]),
    ("create secret generic", ["create", "secret", "generic", "s1", "--from-literal=a=b", "-n", "payments"], "alice", 0,
     "created", [("create", "secrets", P, "s1", 201)]),
    ("create namespace", ["create", "namespace", "n1"], "alice", 0, "created", [("create", "namespaces", None, "n1", 201)]),
    ("run pod", ["run", "tmp", "--image=busybox", "--restart=Never"], "alice", 0, "created",
     [("create", "pods", D, "tmp", 201)]),
    ("patch strategic", ["patch", "deploy", "web", "-p", '{"spec":{"replicas":4}}'], "alice", 0, "patched",
     [("get", "deployments", D, "web", 200), ("patch", "deployments", D, "web", 200)]),
    ("patch merge", ["patch", "deploy", "web", "--type=merge", "-p", '{"metadata":{"labels":{"x":"y"}}}'], "alice", 0,
     "patched", [("get", "deployments", D, "web", 200), ("patch", "deployments", D, "web", 200)]),
    ("patch json", ["patch", "deploy", "web", "--type=json", "-p", '[{"op":"replace","path":"/spec/replicas","value":5}]'],
     "alice", 0, "patched", [("get", "deployments", D, "web", 200), ("patch", "deployments", D, "web", 200)]),
    ("label", ["label", "pod", POD, "tier=frontend"], "alice", 0, "labeled",
     [("get", "pods", D, POD, 200), ("patch", "pods", D, POD, 200)]),
    ("annotate", ["annotate", "deploy", "web", "note=hello"], "alice", 0, "annotated",
     [("get", "deployments", D, "web", 200), ("patch", "deployments", D, "web", 200)]),
    ("scale", ["scale", "deploy/web", "--replicas=3"], "alice", 0, "scaled",
     [("get", "deployments", D, "web", 200), ("patch", "deployments/scale", D, "web", 200)]),
    ("rollout restart", ["rollout", "restart", "deploy/web"], "alice", 0, "restarted",
     [("get", "deployments", D, "web", 200), ("patch", "deployments", D, "web", 200)]),
    ("cordon (cluster-scoped patch)", ["cordon", "node-1"], "alice", 0, "cordoned",
     [("get", "nodes", None, "node-1", 200), ("patch", "nodes", None, "node-1", 200)]),
    ("delete configmap", ["delete", "cm", "app-config"], "alice", 0, "deleted",
     [("delete", "configmaps", D, "app-config", 200), ("get", "configmaps", D, "app-config", 404)]),
    ("delete deployment -n", ["delete", "deploy", "api", "-n", "payments"], "alice", 0, "deleted",
     [("delete", "deployments", P, "api", 200), ("get", "deployments", P, "api", 404)]),
    ("get missing", ["get", "pod", "nope"], "alice", 1, "NotFound", [("get", "pods", D, "nope", 404)]),
    ("auth whoami", ["auth", "whoami"], "alice", 0, "alice", [("create", "selfsubjectreviews", None, None, 201)]),
    ("auth can-i yes", ["auth", "can-i", "delete", "pods"], "alice", 0, "yes",
     [("create", "selfsubjectaccessreviews", None, None, 201)]),
    ("auth can-i no", ["auth", "can-i", "get", "secrets", "-n", "kube-system"], "alice", 1, "no",
     [("create", "selfsubjectaccessreviews", None, None, 201)]),
    ("forbidden secrets in kube-system", ["get", "secrets", "-n", "kube-system"], "alice", 1, "Forbidden",
     [("list", "secrets", KS, None, 403)]),
    ("forbidden clusterroles", ["get", "clusterroles"], "alice", 1, "Forbidden", [("list", "clusterroles", None, None, 403)]),
    ("forbidden get one secret", ["get", "secret", "bootstrap-token", "-n", "kube-system"], "bob", 1, "Forbidden",
     [("get", "secrets", KS, "bootstrap-token", 403)]),
    ("admin may read kube-system secrets", ["get", "secrets", "-n", "kube-system"], "admin", 0, "bootstrap-token",
     [("list", "secrets", KS, None, 200)]),
    ("admin impersonates bob", ["--as", "bob", "--as-group", "ops", "auth", "whoami"], "admin", 0, "bob",
     [("create", "selfsubjectreviews", None, None, 201)]),
]


@pytest.mark.parametrize("args,user,rc,needle,expected", [c[1:] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_kubectl_command(apiserver, args, user, rc, needle, expected):
    p, evs = run(apiserver, *args, user=user, check_rc=rc)
    assert needle in (p.stdout + p.stderr)
    if rc == 1 and "Forbidden" == needle:
        assert "Forbidden" in p.stderr
    assert calls(evs) == expected
    # every request: RequestReceived + ResponseComplete with one auditID (default policy omits nothing)
    by_id = {}
    for e in evs:
        by_id.setdefault(e["auditID"], []).append(e["stage"])
    assert all(stages == ["RequestReceived", "ResponseComplete"] for stages in by_id.values()), by_id
    done = [e for e in evs if e["stage"] == "ResponseComplete"]
    assert all(e["user"]["username"] == user for e in done)
    decisions = [e["annotations"]["authorization.k8s.io/decision"] for e in done if "objectRef" in e]
    if any(code == 403 for *_, code in expected):
        assert decisions[-1] == "forbid"
        st = [e for e in done if e["responseStatus"]["code"] == 403][0]["responseStatus"]
        assert st["reason"] == "Forbidden" and st["status"] == "Failure" and "forbidden" in st["message"]
    else:
        assert set(decisions) == {"allow"}
    if "--as" in args and user == "admin":
        assert all(e["impersonatedUser"]["username"] == "bob" for e in done)
        assert all(e["user"]["username"] == "admin" for e in done)
        assert "ops" in done[-1]["impersonatedUser"]["groups"]
        assert "impersonatedUser" not in [e for e in evs if e["stage"] == "RequestReceived"][0]


def test_impersonation_forbidden_for_non_admin(apiserver):
    # the impersonation check runs on every request, discovery included, so
    # kubectl never gets as far as listing pods
    p, evs = run(apiserver, "--as", "bob", "get", "pods", check_rc=1)
    assert "Forbidden" in p.stderr
    done = [e for e in evs if e["stage"] == "ResponseComplete"]
    assert done and calls(evs) == []
    for e in done:
        assert e["responseStatus"]["code"] == 403 and "cannot impersonate" in e["responseStatus"]["message"]
        assert e["annotations"]["authorization.k8s.io/decision"] == "forbid"
        assert e["user"]["username"] == "alice" and "impersonatedUser" not in e


def test_apply_client_side_then_configure_and_server_side(apiserver, tmp_path):
    h = apiserver
    f1 = write(tmp_path, "d1.yaml", DEPLOY.format(replicas=1, tag=1))
    f2 = write(tmp_path, "d2.yaml", DEPLOY.format(replicas=3, tag=2))
    p, evs = run(h, "apply", "-f", f1)
    assert "deployment.apps/shop created" in p.stdout
    assert calls(evs) == [("get", "deployments", P, "shop", 404), ("get", "namespaces", P, P, 200),
                          ("create", "deployments", P, "shop", 201)]
    create = [e for e in evs if e["verb"] == "create" and e["stage"] == "ResponseComplete"][0]
    assert "fieldManager=kubectl-client-side-apply" in create["requestURI"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in create["requestObject"]["metadata"]["annotations"]
    p, evs = run(h, "apply", "-f", f1)
    assert "unchanged" in p.stdout and calls(evs) == [("get", "deployments", P, "shop", 200)]
    p, evs = run(h, "apply", "-f", f2)
    assert "configured" in p.stdout
    assert calls(evs) == [("get", "deployments", P, "shop", 200), ("patch", "deployments", P, "shop", 200)]
    patch = [e for e in evs if e["verb"] == "patch" and e["stage"] == "ResponseComplete"][0]
    assert patch["responseObject"]["spec"]["replicas"] == 3
    assert patch["responseObject"]["spec"]["template"]["spec"]["containers"][0]["image"] == "example/shop:2"
    p = h.kubectl("get", "deploy", "shop", "-n", "payments", "-o", "jsonpath={.spec.replicas}")
    assert p.stdout == "3"
    # server-side apply: one PATCH application/apply-patch+yaml (201 when it creates)
    cm = write(tmp_path, "cm.yaml", CONFIGMAP)
    p, evs = run(h, "apply", "--server-side", "-f", cm)
    assert "serverside-applied" in p.stdout
    assert calls(evs) == [("patch", "configmaps", D, "demo", 201)]
    assert "fieldManager=kubectl" in evs[-1]["requestURI"]
    p, evs = run(h, "apply", "--server-side", "-f", cm)
    assert calls(evs) == [("patch", "configmaps", D, "demo", 200)]
    # create -f; then create again -> AlreadyExists
    p, evs = run(h, "create", "-f", f1.replace("d1", "d1"), check_rc=1)
    assert "AlreadyExists" in p.stderr
    assert calls(evs) == [("create", "deployments", P, "shop", 409)]


def test_kubectl_wait_for_delete_uses_watch(apiserver_factory):
    h = apiserver_factory(watch_max_seconds=5)
    p0 = h.kubectl("get", "pod", POD)  # warm the discovery cache
    assert p0.returncode == 0
    t = threading.Timer(0.7, lambda: h.server.store.delete(
        next(k for k in __import__("tests.apiserver.server", fromlist=["KINDS"]).KINDS if k.plural == "pods"),
        "default", POD))
    t.start()
    try:
        p, evs = run(h, "wait", "--for=delete", f"pod/{POD}", "--timeout=20s")
    finally:
        t.cancel()
    assert "condition met" in p.stdout
    # the watch ends when kubectl hangs up; its ResponseComplete follows shortly
    deadline = time.time() + 5
    while time.time() < deadline and not [e for e in evs if e["verb"] == "watch" and e["stage"] == "ResponseComplete"]:
        time.sleep(0.05)
        evs = [e for e in h.events() if e["userAgent"] == evs[0]["userAgent"]]
    watches = [e for e in evs if e["verb"] == "watch"]
    stages = [e["stage"] for e in watches]
    assert "ResponseStarted" in stages and "ResponseComplete" in stages
    started = [e for e in watches if e["stage"] == "ResponseStarted"][0]
    assert started["objectRef"]["resource"] == "pods" and started["responseStatus"]["code"] == 200
    # list/watch by fieldSelector metadata.name=X carry the name X, as upstream's RequestInfo does
    assert started["objectRef"]["name"] == POD and "fieldSelector=metadata.name" in started["requestURI"]
    assert ("list", "pods", D, POD, 200) in calls(evs)
    # all stages of the watch share one auditID
    ids = {e["auditID"] for e in watches}
    assert len(ids) == len([e for e in watches if e["stage"] == "RequestReceived"])


def test_get_watch_streams_table_rows(apiserver_factory):
    h = apiserver_factory(watch_max_seconds=2)
    h.kubectl("get", "pods")
    m = marker()
    proc = subprocess.Popen([m, "--kubeconfig", str(h.kubeconfig()), "get", "pods", "-w"], executable=KUBECTL,
                            env=h.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.6)
    h.server.add("pods", {"metadata": {"name": "late-pod", "namespace": "default"},
                          "spec": {"containers": [{"name": "c", "image": "x"}]}})
    out, err = proc.communicate(timeout=20)
    assert POD in out and "late-pod" in out, (out, err)
    evs = [e for e in h.events() if (e.get("userAgent") or "").startswith(m)]
    assert [e["stage"] for e in evs if e["verb"] == "watch"] == ["RequestReceived", "ResponseStarted", "ResponseComplete"]


# --------------------------------------------------------------------------- event shape

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_event_shape_and_ground_truth(apiserver):
    h = apiserver
    p, evs = run(h, "get", "deploy", "web", "-n", "default")
    assert isinstance(h.server.policy, Policy)  # the product's evaluator, not a copy
    get = [e for e in evs if e.get("objectRef", {}).get("resource") == "deployments"]
    assert [e["stage"] for e in get] == ["RequestReceived", "ResponseComplete"]
    rr, rc = get
    assert rr["auditID"] == rc["auditID"]
    uuid.UUID(rc["auditID"])
    for e in get:
        assert e["kind"] == "Event" and e["apiVersion"] == "audit.k8s.io/v1" and e["level"] == "RequestResponse"
        assert e["requestURI"] == "/apis/apps/v1/namespaces/default/deployments/web"
        assert e["verb"] == "get"
        assert e["user"] == {"username": "alice", "groups": ["dev", "system:authenticated"]}
        assert e["sourceIPs"] == ["127.0.0.1"]
        assert re.match(r"^kubectl\+r\.[0-9A-F]{12}/v1\.32\.\d+ \(linux/amd64\) kubernetes/[0-9a-f]{7}$", e["userAgent"])
        assert TS.match(e["requestReceivedTimestamp"]) and TS.match(e["stageTimestamp"])
        assert e["objectRef"]["apiGroup"] == "apps" and e["objectRef"]["apiVersion"] == "v1"
    assert "responseStatus" not in rr and "annotations" not in rr
    assert rc["responseStatus"] == {"metadata": {}, "code": 200}
    assert rc["responseObject"]["kind"] == "Table"  # kubectl asked for a Table: that is what was sent
    assert rc["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert "RBAC: allowed" in rc["annotations"]["authorization.k8s.io/reason"]
    assert rc["stageTimestamp"] >= rc["requestReceivedTimestamp"]
    # discovery: verb get, no objectRef
    disc = [e for e in evs if e["requestURI"].startswith("/api?") or e["requestURI"].startswith("/apis?")]
    assert disc and all("objectRef" not in e and e["verb"] == "get" for e in disc)
    # ground truth side file: one line per request, with kubectl's own headers
    gt = [json.loads(line) for line in h.ground_truth.read_text().splitlines()]
    mine = [g for g in gt if (g["userAgent"] or "").startswith(rc["userAgent"].split("/")[0] + "/")]
    assert {g["auditID"] for g in mine} == {e["auditID"] for e in evs}
    assert len({g["kubectlSession"] for g in mine}) == 1 and mine[0]["kubectlSession"]
    assert {g["kubectlCommand"] for g in mine} == {"kubectl get"}
    # the Kubectl-* headers never reach the audit log
    assert "Kubectl-Session" not in h.audit_log.read_text() and mine[0]["kubectlSession"] not in h.audit_log.read_text()


def test_unauthenticated_is_401(apiserver):
    h = apiserver
    kc = h.kubeconfig(user="alice", token="wrong-token")
    p = h.kubectl("get", "pods", kubeconfig=kc)
    assert p.returncode == 1 and ("Unauthorized" in p.stderr or "provide credentials" in p.stderr)
    evs = h.events()
    assert evs and all(e["responseStatus"]["code"] == 401 and e["stage"] == "ResponseStarted" for e in evs)
    assert all(e["user"] == {} for e in evs)


def test_argv0_marker_in_every_user_agent(apiserver):
    h = apiserver
    m = "kubectl+r.TESTID" + uuid.uuid4().hex[:6].upper()
    proc = subprocess.Popen([m, "--kubeconfig", str(h.kubeconfig()), "get", "pods,deploy", "-A"], executable=KUBECTL,
                            env=h.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    evs = h.events()
    assert evs
    uas = {e.get("userAgent") for e in evs}
    # every request of the versioned kubectl carries the marker (discovery included) ...
    marked = [e for e in evs if e["userAgent"].startswith(m + "/v1.32")]
    assert {e["requestURI"].split("?")[0] for e in marked} >= {"/api", "/apis", "/api/v1/pods", "/apis/apps/v1/deployments"}
    # ... the only exception is the gcloud dispatcher's own GET /version, sent before it execs kubectl
    others = [e for e in evs if not e["userAgent"].startswith(m + "/")]
    assert {e["userAgent"] for e in others} <= {"kubectl-dispatcher/v1.0 (linux/amd64)"}, uas
    assert all(e["requestURI"].startswith("/version") for e in others)


# --------------------------------------------------------------------------- policy levels

LEVELS_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: [/version, "/openapi/*", /openapi/v3]
  - level: Metadata
    resources: [{group: "", resources: [secrets]}]
  - level: Request
    verbs: [create]
    resources: [{group: "", resources: [configmaps]}]
  - level: RequestResponse
    resources: [{group: apps}]
    omitManagedFields: true
  - level: Metadata
"""


def test_policy_levels_are_honoured(apiserver_factory):
    h = apiserver_factory(policy=LEVELS_POLICY)
    run(h, "create", "secret", "generic", "s1", "--from-literal=a=b")
    run(h, "get", "secret", "s1", "-o", "yaml")
    run(h, "create", "configmap", "c1", "--from-literal=a=b")
    run(h, "scale", "deploy/web", "--replicas=4")
    evs = h.events()
    assert all(e["stage"] != "RequestReceived" for e in evs)          # policy-level omitStages
    assert not [e for e in evs if e["requestURI"].startswith(("/version", "/openapi"))]  # level None
    secrets = [e for e in evs if e.get("objectRef", {}).get("resource") == "secrets"]
    assert [(e["verb"], e["level"]) for e in secrets] == [("create", "Metadata"), ("get", "Metadata")]
    assert all("requestObject" not in e and "responseObject" not in e for e in secrets)
    cm = [e for e in evs if e.get("objectRef", {}).get("resource") == "configmaps"]
    assert len(cm) == 1 and cm[0]["level"] == "Request"
    assert cm[0]["requestObject"]["data"] == {"a": "b"} and "responseObject" not in cm[0]
    scale = [e for e in evs if e.get("objectRef", {}).get("subresource") == "scale"][0]
    assert scale["level"] == "RequestResponse" and scale["verb"] == "patch"
    assert scale["requestObject"] == {"spec": {"replicas": 4}}
    assert scale["responseObject"]["kind"] == "Scale" and scale["responseObject"]["spec"]["replicas"] == 4
    dep_get = [e for e in evs if e.get("objectRef", {}).get("resource") == "deployments" and e["verb"] == "get"][0]
    assert "managedFields" not in dep_get["responseObject"]["metadata"]
    disc = [e for e in evs if e["requestURI"].startswith("/api?")]
    assert disc and disc[0]["level"] == "Metadata"


# --------------------------------------------------------------------------- delivery: rotation, webhook, lag, skew

LUMBERJACK = re.compile(r"^audit-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log$")


def test_log_rotation_keeps_every_event_once(apiserver_factory):
    h = apiserver_factory(log_max_bytes=6000)
    for args in (["get", "pods", "-A"], ["get", "deploy", "-A", "-o", "json"], ["describe", "deploy", "web"],
                 ["scale", "deploy/web", "--replicas=2"], ["get", "ns"]):
        run(h, *args)
    files = h.log_files()
    assert len(files) >= 3, files
    assert all(LUMBERJACK.match(f.name) for f in files[:-1]), [f.name for f in files]
    assert files[-1].name == "audit.log"
    for f in files:
        lines = f.read_bytes().splitlines(keepends=True)
        assert f.stat().st_size <= 6000 or len(lines) == 1
    written = [(e["auditID"], e["stage"]) for e in h.events()]
    emitted = [(e["auditID"], e["stage"]) for e in h.emitted()]
    assert len(written) == len(set(written)) and sorted(written) == sorted(emitted)
    assert written == emitted  # no reordering by default


class _Receiver:
    def __init__(self):
        self.batches: list[dict] = []
        self.fail_next = 0
        recv = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if recv.fail_next:
                    recv.fail_next -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                recv.batches.append({"ctype": self.headers.get("Content-Type"), "body": json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/audit"

    def events(self):
        return [e for b in self.batches for e in b["body"]["items"]]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


def test_webhook_batches(apiserver_factory, receiver):
    clock = FakeClock()
    h = apiserver_factory(webhook_url=receiver.url, batch_size=7, batch_max_wait=30, clock=clock, audit_log=False)
    assert h.kubectl("get", "pods").returncode == 0
    assert h.kubectl("get", "deploy", "web").returncode == 0
    h.server.audit.pump()
    n_emitted = len(h.emitted())
    assert n_emitted > 7
    assert len(receiver.batches) == n_emitted // 7  # only full batches so far
    assert all(len(b["body"]["items"]) == 7 for b in receiver.batches)
    clock.advance(29)
    h.server.audit.pump()
    assert len(receiver.batches) == n_emitted // 7
    clock.advance(2)  # the max wait has passed: the partial batch goes out
    h.server.audit.pump()
    for b in receiver.batches:
        assert b["ctype"] == "application/json"
        assert b["body"]["kind"] == "EventList" and b["body"]["apiVersion"] == "audit.k8s.io/v1"
    got = [(e["auditID"], e["stage"]) for e in receiver.events()]
    assert got == [(e["auditID"], e["stage"]) for e in h.emitted()]


def test_webhook_out_of_order_and_duplicates(apiserver_factory, receiver):
    clock = FakeClock()
    h = apiserver_factory(webhook_url=receiver.url, batch_size=3, clock=clock, reorder=True, duplicate_rate=0.5,
                          seed=7, lag=5, audit_log=False)
    for args in (["get", "pods"], ["get", "ns"], ["get", "deploy", "web"]):
        assert h.kubectl(*args).returncode == 0
    h.server.audit.pump()
    assert receiver.batches == []  # held back by the lag
    clock.advance(6)
    h.server.audit.pump()
    clock.advance(60)
    h.server.audit.pump()
    clock.advance(60)
    h.server.audit.pump()
    h.flush()
    got = [(e["auditID"], e["stage"]) for e in receiver.events()]
    want = [(e["auditID"], e["stage"]) for e in h.emitted()]
    assert set(got) == set(want)
    assert len(got) > len(set(got))  # some batches arrived twice
    assert got[: len(want)] != want  # and not in emission order


def test_webhook_retries_after_backoff(apiserver_factory, receiver):
    clock = FakeClock()
    receiver.fail_next = 1
    h = apiserver_factory(webhook_url=receiver.url, batch_size=400, batch_max_wait=30, clock=clock,
                          retry_backoff=10, audit_log=False)
    assert h.kubectl("get", "ns").returncode == 0
    clock.advance(31)
    h.server.audit.pump()  # first POST answered 503
    assert receiver.batches == [] and h.server.audit.pending_count() == len(h.emitted())
    clock.advance(5)
    h.server.audit.pump()
    assert receiver.batches == []  # still backing off
    clock.advance(6)
    h.server.audit.pump()
    assert [(e["auditID"], e["stage"]) for e in receiver.events()] == [(e["auditID"], e["stage"]) for e in h.emitted()]
    assert h.server.audit.pending_count() == 0


def test_jitter_delivers_log_lines_out_of_order(apiserver_factory):
    clock = FakeClock()
    h = apiserver_factory(clock=clock, lag_jitter=30, seed=3)
    assert h.kubectl("get", "pods", "-A").returncode == 0
    assert h.events(flush=False) == []
    for _ in range(31):
        clock.advance(1)
        h.server.audit.pump()
    got = [(e["auditID"], e["stage"]) for e in h.events(flush=False)]
    want = [(e["auditID"], e["stage"]) for e in h.emitted()]
    assert sorted(got) == sorted(want) and got != want


def test_lag_and_skew(apiserver_factory):
    clock = FakeClock()
    h = apiserver_factory(clock=clock, lag=120, skew=-300)
    run(h, "get", "pods", check_rc=0)  # run() reads the log with flush: check delivery separately
    run(h, "get", "ns", check_rc=0)
    assert h.events(flush=False) != []  # run() flushed everything so far
    before = len(h.events(flush=False))
    p = h.kubectl("get", "nodes")
    assert p.returncode == 0
    h.server.audit.pump()
    assert len(h.events(flush=False)) == before  # lagging
    clock.advance(119)
    h.server.audit.pump()
    assert len(h.events(flush=False)) == before
    clock.advance(2)
    h.server.audit.pump()
    evs = h.events(flush=False)
    assert len(evs) == len(h.emitted()) > before
    gt = {g["auditID"]: g for g in (json.loads(line) for line in h.ground_truth.read_text().splitlines())}
    from datetime import datetime
    for e in evs:
        real = datetime.strptime(gt[e["auditID"]]["receivedAt"], "%Y-%m-%dT%H:%M:%S.%fZ")
        logged = datetime.strptime(e["requestReceivedTimestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs((real - logged).total_seconds() - 300) < 0.01


# --------------------------------------------------------------------------- CLI


def test_cli_serves_and_writes_audit_log(tmp_path):
    log = tmp_path / "audit.log"
    kc = tmp_path / "kubeconfig"
    policy = write(tmp_path, "policy.yaml", LEVELS_POLICY)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.apiserver", "--port", "0", "--audit-log", str(log),
                             "--policy", policy, "--kubeconfig", str(kc), "--ground-truth", str(tmp_path / "gt.jsonl")],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert re.match(r"^https://127\.0\.0\.1:\d+$", url), (url, proc.stderr.read() if proc.poll() is not None else "")
        env = dict(os.environ, HOME=str(tmp_path), KUBECACHEDIR=str(tmp_path / "cache"))
        p = subprocess.run([KUBECTL, "--kubeconfig", str(kc), "get", "ns"], env=env, capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0 and "kube-system" in p.stdout, p.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    evs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["verb"], e["objectRef"]["resource"]) for e in evs if "objectRef" in e] == [("list", "namespaces")]
    bad = write(tmp_path, "bad.yaml", "kind: Policy\n")
    r = subprocess.run([sys.executable, "-m", "tests.apiserver", "--policy", bad], cwd=root, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "unknown group version" in r.stderr


def test_rotating_log_names_and_max_backups(tmp_path):
    from tests.apiserver.audit import RotatingLog

    clock = FakeClock(start=1795806743.1235)  # 2026-11-27T19:12:23.123Z
    log = RotatingLog(str(tmp_path / "audit.log"), max_bytes=100, max_backups=2, clock=clock)
    for i in range(5):
        log.write(b"x" * 60 + b"\n")  # every write after the first forces a rotation
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    # same fake millisecond: later backups step forward instead of overwriting
    assert names == ["audit-2026-11-27T19-12-23.125.log", "audit-2026-11-27T19-12-23.126.log", "audit.log"]
    assert all((tmp_path / n).stat().st_size == 61 for n in names)
