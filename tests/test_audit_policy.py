"""kubectl_record.audit_policy: loading and evaluation with kube-apiserver's semantics
(k8s.io/apiserver pkg/audit/policy checker.go, reader.go, pkg/apis/audit/validation)."""

from __future__ import annotations

import json

import pytest

from kubectl_record.audit_policy import (
    Decision,
    Level,
    PolicyError,
    RequestAttributes,
    Stage,
    load_policy,
    load_policy_file,
)

# The policy kube-up / GKE masters ship (cluster/gce/gci/configure-helper.sh,
# create-master-audit-policy), with ${known_apis} expanded.
KNOWN_APIS = """
      - group: "" # core
      - group: "admissionregistration.k8s.io"
      - group: "apiextensions.k8s.io"
      - group: "apiregistration.k8s.io"
      - group: "apps"
      - group: "authentication.k8s.io"
      - group: "authorization.k8s.io"
      - group: "autoscaling"
      - group: "batch"
      - group: "certificates.k8s.io"
      - group: "extensions"
      - group: "metrics.k8s.io"
      - group: "networking.k8s.io"
      - group: "node.k8s.io"
      - group: "policy"
      - group: "rbac.authorization.k8s.io"
      - group: "scheduling.k8s.io"
      - group: "storage.k8s.io\""""

GKE_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  # The following requests were manually identified as high-volume and low-risk,
  # so drop them.
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
      - group: "" # core
        resources: ["endpoints", "services", "services/status"]
  - level: None
    # Ingress controller reads 'configmaps/ingress-uid' through the unsecured port.
    users: ["system:unsecured"]
    namespaces: ["kube-system"]
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["configmaps"]
  - level: None
    users: ["kubelet"] # legacy kubelet identity
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["nodes", "nodes/status"]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["nodes", "nodes/status"]
  - level: None
    users:
      - system:kube-controller-manager
      - system:cloud-controller-manager
      - system:kube-scheduler
      - system:serviceaccount:kube-system:endpoint-controller
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources:
      - group: "" # core
        resources: ["endpoints"]
  - level: None
    users: ["system:apiserver"]
    verbs: ["get"]
    resources:
      - group: "" # core
        resources: ["namespaces", "namespaces/status", "namespaces/finalize"]
  - level: None
    users: ["cluster-autoscaler"]
    verbs: ["get", "update"]
    namespaces: ["kube-system"]
    resources:
      - group: "" # core
        resources: ["configmaps", "endpoints"]
  # Don't log HPA fetching metrics.
  - level: None
    users:
      - system:kube-controller-manager
      - system:cloud-controller-manager
    verbs: ["get", "list"]
    resources:
      - group: "metrics.k8s.io"
  # Don't log these read-only URLs.
  - level: None
    nonResourceURLs:
      - /healthz*
      - /version
      - /swagger*
  # Don't log events requests because of performance impact.
  - level: None
    resources:
      - group: "" # core
        resources: ["events"]
  # node and pod status calls from nodes are high-volume and can be large, don't log responses for expected updates from nodes
  - level: Request
    users: ["kubelet", "system:node-problem-detector", "system:serviceaccount:kube-system:node-problem-detector"]
    verbs: ["update","patch"]
    resources:
      - group: "" # core
        resources: ["nodes/status", "pods/status"]
    omitStages:
      - "RequestReceived"
  - level: Request
    userGroups: ["system:nodes"]
    verbs: ["update","patch"]
    resources:
      - group: "" # core
        resources: ["nodes/status", "pods/status"]
    omitStages:
      - "RequestReceived"
  # deletecollection calls can be large, don't log responses for expected namespace deletions
  - level: Request
    users: ["system:serviceaccount:kube-system:namespace-controller"]
    verbs: ["deletecollection"]
    omitStages:
      - "RequestReceived"
  # Secrets, ConfigMaps, TokenRequest and TokenReviews can contain sensitive & binary data,
  # so only log at the Metadata level.
  - level: Metadata
    resources:
      - group: "" # core
        resources: ["secrets", "configmaps", "serviceaccounts/token"]
      - group: authentication.k8s.io
        resources: ["tokenreviews"]
    omitStages:
      - "RequestReceived"
  # Get responses can be large; skip them.
  - level: Request
    verbs: ["get", "list", "watch"]
    resources:""" + KNOWN_APIS + """
    omitStages:
      - "RequestReceived"
  # Default level for known APIs
  - level: RequestResponse
    resources:""" + KNOWN_APIS + """
    omitStages:
      - "RequestReceived"
  # Default level for all other requests.
  - level: Metadata
    omitStages:
      - "RequestReceived"
"""


def R(verb, resource="", namespace="", *, user="alice", groups=("system:authenticated",), group="",
      sub="", name="", path="", nonresource=False):
    """Build RequestAttributes tersely; ``resource`` may be 'pods/log'."""
    if "/" in resource:
        resource, sub = resource.split("/", 1)
    return RequestAttributes(user=user, groups=list(groups), verb=verb, namespace=namespace, resource=resource,
                             subresource=sub, api_group=group, name=name, path=path,
                             resource_request=not nonresource)


def NR(verb, path, **kw):
    return R(verb, path=path, nonresource=True, **kw)


@pytest.fixture(scope="module")
def gke():
    return load_policy(GKE_POLICY)


RR = {Stage.REQUEST_RECEIVED}

GKE_CASES = [
    # (id, attrs, level, omitted stages, matching rule index)
    ("kube-proxy watches services", R("watch", "services", user="system:kube-proxy"), "None", set(), 0),
    ("kube-proxy lists services", R("list", "services", user="system:kube-proxy"), "Request", RR, 14),
    ("kube-proxy watches services/status", R("watch", "services/status", user="system:kube-proxy"), "None", set(), 0),
    ("unsecured reads cm in kube-system", R("get", "configmaps", "kube-system", user="system:unsecured"), "None", set(), 1),
    ("unsecured reads cm elsewhere", R("get", "configmaps", "default", user="system:unsecured"), "Metadata", RR, 13),
    ("node gets nodes/status", R("get", "nodes/status", user="system:node:n1", groups=["system:nodes"]), "None", set(), 3),
    ("node patches pods/status", R("patch", "pods/status", "default", user="system:node:n1", groups=["system:nodes"]), "Request", RR, 11),
    ("kubelet patches nodes/status", R("patch", "nodes/status", user="kubelet"), "Request", RR, 10),
    ("controller-manager gets metrics", R("get", "pods", "default", user="system:kube-controller-manager", group="metrics.k8s.io"), "None", set(), 7),
    ("/healthz/etcd", NR("get", "/healthz/etcd"), "None", set(), 8),
    ("/healthz", NR("get", "/healthz"), "None", set(), 8),
    ("/version exact", NR("get", "/version"), "None", set(), 8),
    ("/versions is not /version", NR("get", "/versions"), "Metadata", RR, 16),
    ("/api discovery", NR("get", "/api"), "Metadata", RR, 16),
    ("/openapi/v3", NR("get", "/openapi/v3"), "Metadata", RR, 16),
    ("events", R("create", "events", "default"), "None", set(), 9),
    ("events in events.k8s.io are not core events", R("create", "events", "default", group="events.k8s.io"), "Metadata", RR, 16),
    ("namespace-controller deletecollection", R("deletecollection", "pods", "ns1", user="system:serviceaccount:kube-system:namespace-controller"), "Request", RR, 12),
    ("get secret", R("get", "secrets", "payments", name="db"), "Metadata", RR, 13),
    ("create configmap", R("create", "configmaps", "default"), "Metadata", RR, 13),
    ("serviceaccounts/token", R("create", "serviceaccounts/token", "default", name="sa"), "Metadata", RR, 13),
    ("serviceaccounts (no subresource)", R("get", "serviceaccounts", "default"), "Request", RR, 14),
    ("tokenreviews", R("create", "tokenreviews", group="authentication.k8s.io"), "Metadata", RR, 13),
    ("list pods", R("list", "pods", "default"), "Request", RR, 14),
    ("get deployment", R("get", "deployments", "default", group="apps", name="web"), "Request", RR, 14),
    ("patch deployment", R("patch", "deployments", "default", group="apps", name="web"), "RequestResponse", RR, 15),
    ("patch deployments/scale", R("patch", "deployments/scale", "default", group="apps", name="web"), "RequestResponse", RR, 15),
    ("create selfsubjectreviews", R("create", "selfsubjectreviews", group="authentication.k8s.io"), "RequestResponse", RR, 15),
    ("CRD group falls to the default", R("create", "widgets", "default", group="example.com"), "Metadata", RR, 16),
    ("pods/exec create", R("create", "pods/exec", "default", name="p"), "RequestResponse", RR, 15),
    ("apiserver gets namespace", R("get", "namespaces", "default", user="system:apiserver", name="default"), "None", set(), 5),
    ("apiserver gets namespaces/finalize", R("get", "namespaces/finalize", "x", user="system:apiserver"), "None", set(), 5),
    ("autoscaler updates endpoints in kube-system", R("update", "endpoints", "kube-system", user="cluster-autoscaler"), "None", set(), 6),
    ("autoscaler updates endpoints in default", R("update", "endpoints", "default", user="cluster-autoscaler"), "RequestResponse", RR, 15),
]


@pytest.mark.parametrize("attrs,level,omit,index", [c[1:] for c in GKE_CASES], ids=[c[0] for c in GKE_CASES])
def test_gke_policy(gke, attrs, level, omit, index):
    d = gke.evaluate(attrs)
    assert d.level == level
    assert set(d.omit_stages) == omit
    assert d.rule_index == index
    assert d.omit_managed_fields is False


MATCH_POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [ResponseStarted]
omitManagedFields: true
rules:
  - level: RequestResponse               # 0: one named configmap
    resources:
      - group: ""
        resources: ["configmaps"]
        resourceNames: ["special"]
    omitManagedFields: false
  - level: Request                       # 1: any subresource of deployments (and deployments itself)
    resources:
      - group: apps
        resources: ["deployments/*"]
  - level: Metadata                      # 2: the scale subresource of any resource in apps
    resources:
      - group: apps
        resources: ["*/scale"]
  - level: None                          # 3: cluster-scoped requests only
    namespaces: [""]
    verbs: [get, list]
  - level: Request                       # 4: one group of users, any resource in two namespaces
    userGroups: [ops]
    namespaces: [payments, kube-system]
    omitStages: [RequestReceived]
  - level: Metadata                      # 5: every core resource of one user
    users: [bob]
    resources:
      - group: ""
  - level: RequestResponse               # 6: a non-resource prefix
    nonResourceURLs: ["/apis/*", "/api"]
  - level: Metadata                      # 7: "*" within group "batch"
    resources:
      - group: batch
        resources: ["*"]
"""


@pytest.fixture(scope="module")
def mp():
    return load_policy(MATCH_POLICY)


MATCH_CASES = [
    ("resourceNames hit", R("get", "configmaps", "default", name="special"), "RequestResponse", 0, False),
    ("resourceNames miss", R("get", "configmaps", "default", name="other"), "None", None, True),
    ("resourceNames miss on a list (no name)", R("list", "configmaps", "default"), "None", None, True),
    ("deployments/* matches deployments", R("get", "deployments", "default", group="apps"), "Request", 1, True),
    ("deployments/* matches deployments/scale", R("patch", "deployments/scale", "default", group="apps"), "Request", 1, True),
    ("*/scale matches replicasets/scale", R("patch", "replicasets/scale", "default", group="apps"), "Metadata", 2, True),
    ("*/scale does not match replicasets", R("patch", "replicasets", "default", group="apps"), "None", None, True),
    ('namespaces [""] matches cluster-scoped', R("list", "nodes"), "None", 3, True),
    ('namespaces [""] skips namespaced', R("get", "pods", "default", user="bob"), "Metadata", 5, True),
    ("namespaces without resources never match non-resource URLs", NR("get", "/healthz"), "None", None, True),
    ("userGroups + namespaces", R("delete", "pods", "payments", user="carol", groups=["ops"]), "Request", 4, True),
    ("userGroups + other namespace", R("delete", "pods", "default", user="carol", groups=["ops"]), "None", None, True),
    ("users + core group, any resource", R("delete", "secrets", "default", user="bob"), "Metadata", 5, True),
    ("users + core group, other group", R("delete", "deployments", "default", user="bob", group="apps"), "Request", 1, True),
    ("nonResourceURLs prefix", NR("get", "/apis/apps/v1"), "RequestResponse", 6, True),
    ("nonResourceURLs exact", NR("get", "/api"), "RequestResponse", 6, True),
    ("nonResourceURLs exact is not a prefix", NR("get", "/api/v1"), "None", None, True),
    ("nonResourceURLs do not match resource requests", R("create", "pods", "default"), "None", None, True),
    ('"*" in a group', R("create", "jobs", "default", group="batch"), "Metadata", 7, True),
    ('"*" also matches subresources', R("get", "jobs/status", "default", group="batch"), "Metadata", 7, True),
]


@pytest.mark.parametrize("attrs,level,index,omf", [c[1:] for c in MATCH_CASES], ids=[c[0] for c in MATCH_CASES])
def test_matching(mp, attrs, level, index, omf):
    d = mp.evaluate(attrs)
    assert (d.level, d.rule_index, d.omit_managed_fields) == (level, index, omf)


def test_omit_stages_union_and_no_match(mp):
    # policy-level omitStages is unioned with the rule's (checker.go unionStages)
    d = mp.evaluate(R("delete", "pods", "payments", user="carol", groups=["ops"]))
    assert d.omit_stages == {Stage.RESPONSE_STARTED, Stage.REQUEST_RECEIVED}
    assert d.stage_omitted("RequestReceived") and not d.stage_omitted("ResponseComplete")
    # rules without omitStages still get the policy's
    assert mp.evaluate(R("list", "nodes")).omit_stages == {Stage.RESPONSE_STARTED}
    # no match: level None with the policy-level settings
    none = mp.evaluate(R("create", "widgets", "x", group="example.com"))
    assert none == Decision(Level.NONE, frozenset({Stage.RESPONSE_STARTED}), True, None)


def test_first_match_wins():
    p = load_policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: Metadata
    verbs: [get]
  - level: RequestResponse
    resources: [{group: "", resources: [pods]}]
""")
    assert p.evaluate(R("get", "pods", "default")).level == Level.METADATA
    assert p.evaluate(R("list", "pods", "default")).level == Level.REQUEST_RESPONSE
    # a rule with only a level matches everything, resource or not
    p2 = load_policy('{"apiVersion":"audit.k8s.io/v1","kind":"Policy","rules":[{"level":"Request"}]}')
    assert p2.evaluate(NR("get", "/version")).level == "Request"
    assert p2.evaluate(R("get", "pods")).level == "Request"


def test_levels_order_and_strings():
    assert Level.NONE < Level.METADATA < Level.REQUEST < Level.REQUEST_RESPONSE
    assert Level.REQUEST >= "Metadata"
    assert Level("RequestResponse") == "RequestResponse"
    assert str(Level.METADATA) == "Metadata"
    assert json.dumps({"l": Level.REQUEST}) == '{"l": "Request"}'


def test_empty_user_and_groups_do_not_match_user_rules():
    p = load_policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    users: [""]
    userGroups: [nobody]
  - level: Metadata
""")
    assert p.evaluate(RequestAttributes(verb="get", path="/version", resource_request=False)).level == "Metadata"


def test_rule_omit_managed_fields_overrides_policy():
    p = load_policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
omitManagedFields: false
rules:
  - level: Request
    verbs: [patch]
    omitManagedFields: true
  - level: Request
""")
    assert p.evaluate(R("patch", "pods", "a")).omit_managed_fields is True
    assert p.evaluate(R("get", "pods", "a")).omit_managed_fields is False


def test_unknown_fields_are_warnings_not_errors():
    p = load_policy("""
apiVersion: audit.k8s.io/v1
kind: Policy
metadata: {name: x}
colour: blue
rules:
  - level: Metadata
    verb: [get]          # typo for verbs: kube-apiserver ignores it (lenient decoding)
""")
    assert p.evaluate(R("delete", "pods", "a")).level == "Metadata"
    assert any("colour" in w for w in p.warnings)
    assert any("verb" in w for w in p.warnings)


BAD = [
    ("empty document", "", "0 rules"),
    ("no rules", "apiVersion: audit.k8s.io/v1\nkind: Policy\n", "0 rules"),
    ("empty rules", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n", "0 rules"),
    ("v1beta1", "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: [{level: None}]\n", "unknown group version"),
    ("no apiVersion", "kind: Policy\nrules: [{level: None}]\n", "unknown group version"),
    ("wrong kind", "apiVersion: audit.k8s.io/v1\nkind: Event\nrules: [{level: None}]\n", "unknown group version"),
    ("missing level", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{verbs: [get]}]\n", "rules[0].level: Required"),
    ("bad level", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: Everything}]\n", "Unsupported value"),
    ("bad stage", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, omitStages: [Done]}]\n", "allowed stages"),
    ("bad policy stage", "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [x]\nrules: [{level: None}]\n", "omitStages[0]"),
    ("url without slash", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [healthz]}]\n", "must begin with a '/'"),
    ("inner wildcard", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: ['/a*/b']}]\n", "final character"),
    ("urls and resources", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [/x], resources: [{group: ''}]}]\n", "both regular resources and non-resource"),
    ("urls and namespaces", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, nonResourceURLs: [/x], namespaces: [a]}]\n", "both regular resources"),
    ("group with version", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resources: [{group: apps/v1}]}]\n", "DNS subdomain"),
    ("resourceNames without resources", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, resources: [{group: '', resourceNames: [a]}]}]\n", "requires at least one resource"),
    ("verbs not a list", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, verbs: get}]\n", "rules[0].verbs"),
    ("bool as string", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None, omitManagedFields: 'yes'}]\n", "true or false"),
    ("yaml syntax", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [\n", "invalid YAML"),
    ("json syntax", '{"apiVersion": "audit.k8s.io/v1",', "invalid JSON"),
    ("a list", "- level: None\n", "expected a Policy mapping"),
    ("two documents", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None}]\n---\napiVersion: v1\n", "one policy document"),
    ("rule not a mapping", "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [Metadata]\n", "rules[0]: expected a mapping"),
]


@pytest.mark.parametrize("text,needle", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_policies(text, needle):
    with pytest.raises(PolicyError) as ei:
        load_policy(text)
    msg = str(ei.value)
    assert needle in msg
    assert "\n" not in msg
    assert isinstance(ei.value, ValueError)


def test_load_policy_file(tmp_path):
    f = tmp_path / "policy.yaml"
    f.write_text(GKE_POLICY)
    assert len(load_policy_file(str(f)).rules) == 17
    with pytest.raises(PolicyError, match="failed to read"):
        load_policy_file(str(tmp_path / "missing.yaml"))
    f.write_text("kind: Policy\n")
    with pytest.raises(PolicyError, match="from file"):
        load_policy_file(str(f))


def test_bytes_and_json_input():
    p = load_policy(json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                "rules": [{"level": "Metadata", "resources": [{"group": "", "resources": ["pods/log"]}]}]}).encode())
    assert p.evaluate(R("get", "pods/log", "default", name="x")).level == "Metadata"
    assert p.evaluate(R("get", "pods", "default", name="x")).level == "None"
    with pytest.raises(PolicyError, match="UTF-8"):
        load_policy(b"\xff\xfe")


def test_attributes_from_event_and_rule_summary(gke):
    ev = {"verb": "patch", "requestURI": "/apis/apps/v1/namespaces/default/deployments/web/scale?fieldManager=x",
          "user": {"username": "alice", "groups": ["system:authenticated"]},
          "impersonatedUser": {"username": "bob"},
          "objectRef": {"resource": "deployments", "subresource": "scale", "namespace": "default", "name": "web",
                        "apiGroup": "apps", "apiVersion": "v1"}}
    a = RequestAttributes.from_event(ev)
    assert (a.user, a.verb, a.resource, a.subresource, a.api_group, a.namespace, a.name, a.resource_request) == (
        "alice", "patch", "deployments", "scale", "apps", "default", "web", True)
    assert gke.evaluate(a).level == "RequestResponse"
    nr = RequestAttributes.from_event({"verb": "get", "requestURI": "/version?timeout=5s", "user": {"username": "u"}})
    assert nr.path == "/version" and not nr.resource_request
    assert gke.evaluate(nr).level == "None"
    assert gke.rules[8].summary() == "None: nonResourceURLs [/healthz*,/version,/swagger*]"
    assert gke.rules[13].summary() == ('Metadata: resources [""/secrets,configmaps,serviceaccounts/token '
                                       'authentication.k8s.io/tokenreviews] omitStages [RequestReceived]')
    assert gke.rules[16].summary() == "Metadata: everything omitStages [RequestReceived]"
