"""The recommended audit Policy, and `--check`: which kubectl activity a policy would miss.

What the commonly published example policies intend, done right:
* first match wins, so the narrow rules (None for noise, Metadata for Secrets) come *before*
  the broad ones — a Secrets rule after a catch-all RequestResponse leaks every Secret body;
* Secrets, ServiceAccount tokens (serviceaccounts/token), TokenReviews and
  SelfSubjectReviews carry credentials in their bodies: Metadata only, for every verb;
* pods/exec|attach|portforward|proxy and pods/log: Metadata (the exec command is in the URI;
  the bodies are streams or logs);
* noise is dropped only for system identities (nodes, kube-proxy, controllers' reads and
  leader election), never by verb or resource alone, so a person's `kubectl get events` or
  `kubectl version` is still logged;
* RequestReceived is omitted (ResponseComplete carries everything), managedFields omitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..audit_policy import Level, Policy, RequestAttributes, load_policy, load_policy_file

RECOMMENDED = """\
# Recommended by kubectl-record: kubectl activity is always logged (and so can be correlated),
# Secrets never with their bodies, system noise dropped. First matching rule wins.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
  # --- noisy system traffic (system identities only) -------------------------------------
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources:
      - group: ""
        resources: ["endpoints", "services", "services/status"]
      - group: "discovery.k8s.io"
        resources: ["endpointslices"]
  - level: None
    userGroups: ["system:nodes"]
    verbs: ["get", "list", "watch", "patch", "update"]
    resources:
      - group: ""
        resources: ["nodes", "nodes/status", "pods/status", "configmaps", "secrets", "services", "endpoints"]
      - group: "coordination.k8s.io"
        resources: ["leases"]
      - group: "storage.k8s.io"
        resources: ["csinodes", "csidrivers"]
  - level: None
    users: ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver",
            "system:serviceaccount:kube-system:endpoint-controller",
            "system:serviceaccount:kube-system:generic-garbage-collector"]
    verbs: ["get", "list", "watch", "update"]
  - level: None
    userGroups: ["system:serviceaccounts:kube-system"]
    verbs: ["get", "list", "watch"]
  - level: None
    verbs: ["get", "update"]
    userGroups: ["system:nodes", "system:serviceaccounts:kube-system"]
    resources:
      - group: "coordination.k8s.io"
        resources: ["leases"]
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/metrics"]
  - level: None
    userGroups: ["system:nodes", "system:serviceaccounts:kube-system"]
    verbs: ["create", "update", "patch"]
    resources:
      - group: ""
        resources: ["events"]
      - group: "events.k8s.io"
        resources: ["events"]
  # --- credentials: never their bodies ---------------------------------------------------
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "serviceaccounts/token"]
      - group: "authentication.k8s.io"
        resources: ["tokenreviews", "selfsubjectreviews"]
  # --- streams and logs --------------------------------------------------------------------
  - level: Metadata
    resources:
      - group: ""
        resources: ["pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy",
                    "pods/log", "nodes/proxy"]
  # --- reads: who looked at what -------------------------------------------------------------
  - level: Metadata
    verbs: ["get", "list", "watch"]
  # --- changes to workloads and config: the full story ------------------------------------------
  - level: RequestResponse
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
    resources:
      - group: ""
      - group: "apps"
      - group: "batch"
      - group: "autoscaling"
      - group: "policy"
      - group: "networking.k8s.io"
      - group: "rbac.authorization.k8s.io"
      - group: "admissionregistration.k8s.io"
      - group: "apiextensions.k8s.io"
      - group: "scheduling.k8s.io"
      - group: "storage.k8s.io"
      - group: "certificates.k8s.io"
  # --- everything else (custom resources, reviews, discovery, /version) ----------------------
  - level: Request
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: Metadata
"""


@dataclass(frozen=True)
class Probe:
    command: str
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = "default"
    name: str = ""
    path: str = ""


def _p(cmd, verb, res="", group="", sub="", ns="default", name="", path=""):
    return Probe(cmd, verb, group, res, sub, ns if res else "", name, path)


# What kubectl sends, by command family (tests/test_audit_expect.py checks these against the real binary).
PROBES = (
    _p("kubectl get pods", "list", "pods"),
    _p("kubectl get pod NAME", "get", "pods", name="web"),
    _p("kubectl get pods -A", "list", "pods", ns=""),
    _p("kubectl get nodes", "list", "nodes", ns=""),
    _p("kubectl get deploy", "list", "deployments", "apps"),
    _p("kubectl get events / describe", "list", "events"),
    _p("kubectl get secrets", "list", "secrets"),
    _p("kubectl get secret NAME -o yaml", "get", "secrets", name="db"),
    _p("kubectl create secret generic", "create", "secrets", name="db"),
    _p("kubectl create deployment", "create", "deployments", "apps", name="web"),
    _p("kubectl create configmap", "create", "configmaps", name="cfg"),
    _p("kubectl apply -f (client-side)", "patch", "deployments", "apps", name="web"),
    _p("kubectl apply --server-side", "patch", "deployments", "apps", name="web"),
    _p("kubectl edit / patch", "patch", "configmaps", name="cfg"),
    _p("kubectl replace", "update", "configmaps", name="cfg"),
    _p("kubectl delete pod", "delete", "pods", name="web"),
    _p("kubectl delete -l (deletecollection)", "deletecollection", "pods"),
    _p("kubectl scale", "patch", "deployments", "apps", "scale", name="web"),
    _p("kubectl rollout restart", "patch", "deployments", "apps", name="web"),
    _p("kubectl rollout undo", "patch", "deployments", "apps", name="web"),
    _p("kubectl label / annotate", "patch", "pods", name="web"),
    _p("kubectl set image", "patch", "deployments", "apps", name="web"),
    _p("kubectl cordon / uncordon", "patch", "nodes", ns="", name="node-1"),
    _p("kubectl drain (eviction)", "create", "pods", sub="eviction", name="web"),
    _p("kubectl taint", "patch", "nodes", ns="", name="node-1"),
    _p("kubectl exec", "create", "pods", sub="exec", name="web"),
    _p("kubectl exec (websocket)", "get", "pods", sub="exec", name="web"),
    _p("kubectl attach", "create", "pods", sub="attach", name="web"),
    _p("kubectl port-forward", "create", "pods", sub="portforward", name="web"),
    _p("kubectl cp", "create", "pods", sub="exec", name="web"),
    _p("kubectl debug (ephemeral container)", "patch", "pods", sub="ephemeralcontainers", name="web"),
    _p("kubectl logs", "get", "pods", sub="log", name="web"),
    _p("kubectl run", "create", "pods", name="tmp"),
    _p("kubectl expose", "create", "services", name="web"),
    _p("kubectl autoscale", "create", "horizontalpodautoscalers", "autoscaling", name="web"),
    _p("kubectl create role / rolebinding", "create", "rolebindings", "rbac.authorization.k8s.io", name="x"),
    _p("kubectl create clusterrolebinding", "create", "clusterrolebindings", "rbac.authorization.k8s.io", ns="", name="x"),
    _p("kubectl create token", "create", "serviceaccounts", sub="token", name="default"),
    _p("kubectl certificate approve", "update", "certificatesigningrequests", "certificates.k8s.io",
       "approval", ns="", name="csr-1"),
    _p("kubectl auth whoami", "create", "selfsubjectreviews", "authentication.k8s.io", ns=""),
    _p("kubectl auth can-i", "create", "selfsubjectaccessreviews", "authorization.k8s.io", ns=""),
    _p("kubectl create namespace", "create", "namespaces", ns="", name="team"),
    _p("kubectl delete namespace", "delete", "namespaces", ns="", name="team"),
    _p("kubectl version", "get", path="/version"),
    _p("kubectl api-resources (discovery)", "get", path="/apis"),
)

_SECRETISH = {("", "secrets"), ("", "serviceaccounts/token"), ("authentication.k8s.io", "tokenreviews")}


@dataclass
class Finding:
    probe: Probe
    level: str
    problem: str   # "missed", "no-response", "secret-body"


def check(policy: Policy, user: str = "kubectl-user", groups: tuple = ("system:authenticated",)) -> list[Finding]:
    out = []
    for pr in PROBES:
        attrs = RequestAttributes(user=user, groups=list(groups), verb=pr.verb, namespace=pr.namespace,
                                  resource=pr.resource, subresource=pr.subresource, api_group=pr.group,
                                  name=pr.name, path=pr.path, resource_request=bool(pr.resource))
        d = policy.evaluate(attrs)
        if d.level == Level.NONE:
            out.append(Finding(pr, d.level.value, "missed"))
            continue
        if d.stage_omitted("ResponseComplete") and d.stage_omitted("ResponseStarted"):
            out.append(Finding(pr, d.level.value, "no-response"))
        key = (pr.group, pr.resource + (f"/{pr.subresource}" if pr.subresource else ""))
        if key in _SECRETISH and d.level.value in ("Request", "RequestResponse"):
            out.append(Finding(pr, d.level.value, "secret-body"))
    return out


def recommended() -> Policy:
    return load_policy(RECOMMENDED)


__all__ = ["RECOMMENDED", "PROBES", "check", "recommended", "load_policy_file"]
