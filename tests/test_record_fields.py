"""What a record says about a run: verb, resource, names, namespace, context and mutating, as the
ingester builds them from the arguments and the kubeconfig files in effect (two files merged,
several contexts, a namespace set in one context)."""

from __future__ import annotations

import shlex

import pytest

from kubectl_record.record import Run, build

OPS = """\
apiVersion: v1
kind: Config
current-context: ops
clusters:
- {name: ops-cluster, cluster: {server: "https://ops.example.com"}}
- {name: prod-cluster, cluster: {server: "https://prod.example.com"}}
contexts:
- {name: ops, context: {cluster: ops-cluster, user: ops-user, namespace: tools}}
- {name: prod, context: {cluster: prod-cluster, user: admin}}
users:
- {name: ops-user, user: {}}
- {name: admin, user: {}}
"""

TEAM = """\
apiVersion: v1
kind: Config
current-context: team
clusters:
- {name: team-cluster, cluster: {server: "https://team.example.com"}}
contexts:
- {name: team, context: {cluster: team-cluster, user: dev, namespace: payments}}
- {name: ops, context: {cluster: team-cluster, user: dev, namespace: shadowed}}
users:
- {name: dev, user: {}}
"""

# command line | verb | resource | names | namespace | context | mutating
CASES = [
    ("get pods", "get", "pods", [], "tools", "ops", False),
    ("get po web-1", "get", "pods", ["web-1"], "tools", "ops", False),
    ("get Pod web-1 -n payments", "get", "pods", ["web-1"], "payments", "ops", False),
    ("-n kube-system get secret db -o yaml", "get", "secrets", ["db"], "kube-system", "ops", False),
    ("get pods -A", "get", "pods", [], None, "ops", False),
    ("get pods --all-namespaces", "get", "pods", [], None, "ops", False),
    ("get nodes", "get", "nodes", [], None, "ops", False),
    ("get ns", "get", "namespaces", [], None, "ops", False),
    ("get deploy,svc -n web", "get", "deployments,services", [], "web", "ops", False),
    ("get deployment.apps/api", "get", "deployments", ["api"], "tools", "ops", False),
    ("get deployments.v1.apps api", "get", "deployments", ["api"], "tools", "ops", False),
    ("--context prod get pods", "get", "pods", [], "default", "prod", False),
    ("get pods --context=team", "get", "pods", [], "payments", "team", False),
    ("get pods --context team -n x", "get", "pods", [], "x", "team", False),
    ("get pods -n a -n b", "get", "pods", [], "b", "ops", False),
    ("get pods -nfoo", "get", "pods", [], "foo", "ops", False),
    ("get pods --namespace=bar", "get", "pods", [], "bar", "ops", False),
    ("describe deploy web", "describe", "deployments", ["web"], "tools", "ops", False),
    ("describe nodes n1", "describe", "nodes", ["n1"], None, "ops", False),
    ("logs web-1", "logs", "pods", ["web-1"], "tools", "ops", False),
    ("logs -f web-1 -c app", "logs", "pods", ["web-1"], "tools", "ops", False),
    ("logs deploy/web --since=1h", "logs", "deployments", ["web"], "tools", "ops", False),
    ("apply -f deploy.yaml", "apply", None, [], "tools", "ops", True),
    ("apply -f deploy.yaml --dry-run=server", "apply", None, [], "tools", "ops", True),
    ("apply -k overlays/prod --context prod", "apply", None, [], "default", "prod", True),
    ("apply --server-side -f x.yaml -n payments", "apply", None, [], "payments", "ops", True),
    ("create -f job.yaml", "create", None, [], "tools", "ops", True),
    ("create namespace staging", "create namespace", "namespaces", ["staging"], None, "ops", True),
    ("create deployment web --image=nginx", "create deployment", "deployments", ["web"], "tools", "ops", True),
    ("create secret generic db --from-literal=user=admin", "create secret generic", "secrets", ["db"], "tools", "ops", True),
    ("create configmap cfg --from-file=a.conf", "create configmap", "configmaps", ["cfg"], "tools", "ops", True),
    ("delete pod web-1", "delete", "pods", ["web-1"], "tools", "ops", True),
    ("delete po/a po/b -n x", "delete", "pods", ["a", "b"], "x", "ops", True),
    ("delete deploy web --context prod", "delete", "deployments", ["web"], "default", "prod", True),
    ("delete ns old", "delete", "namespaces", ["old"], None, "ops", True),
    ("patch deploy web -p '{\"spec\":{\"replicas\":2}}'", "patch", "deployments", ["web"], "tools", "ops", True),
    ("patch deploy web --type=json -p '[]'", "patch", "deployments", ["web"], "tools", "ops", True),
    ("edit cm settings", "edit", "configmaps", ["settings"], "tools", "ops", True),
    ("replace -f x.yaml", "replace", None, [], "tools", "ops", True),
    ("scale --replicas=3 deploy/web", "scale", "deployments", ["web"], "tools", "ops", True),
    ("scale deploy web --replicas 0 -n payments", "scale", "deployments", ["web"], "payments", "ops", True),
    ("rollout restart deploy/web", "rollout restart", "deployments", ["web"], "tools", "ops", True),
    ("rollout status deploy/web", "rollout status", "deployments", ["web"], "tools", "ops", False),
    ("rollout undo deployment web --to-revision=2", "rollout undo", "deployments", ["web"], "tools", "ops", True),
    ("rollout history deploy web", "rollout history", "deployments", ["web"], "tools", "ops", False),
    ("label pods web-1 tier=front", "label", "pods", ["web-1"], "tools", "ops", True),
    ("annotate deploy web note=x --overwrite", "annotate", "deployments", ["web"], "tools", "ops", True),
    ("set image deploy/web app=nginx:1.27", "set image", "deployments", ["web"], "tools", "ops", True),
    ("set env deploy/web LOG=debug", "set env", "deployments", ["web"], "tools", "ops", True),
    ("exec -it web-1 -- sh", "exec", "pods", ["web-1"], "tools", "ops", True),
    ("exec web-1 -c app -- ls /", "exec", "pods", ["web-1"], "tools", "ops", True),
    ("port-forward svc/web 8080:80", "port-forward", "services", ["web"], "tools", "ops", True),
    ("cordon node-1", "cordon", "nodes", ["node-1"], None, "ops", True),
    ("drain node-1 --ignore-daemonsets", "drain", "nodes", ["node-1"], None, "ops", True),
    ("taint nodes node-1 key=v:NoSchedule", "taint", "nodes", ["node-1"], None, "ops", True),
    ("top pod", "top pod", "pods", [], "tools", "ops", False),
    ("top nodes", "top node", "nodes", [], None, "ops", False),
    ("auth can-i delete pods --as jane", "auth can-i", "pods", [], "tools", "ops", False),
    ("auth whoami", "auth whoami", None, [], "tools", "ops", False),
    ("api-resources", "api-resources", None, [], "tools", "ops", False),
    ("explain deployment.spec", "explain", "deployments", [], "tools", "ops", False),
    ("wait --for=condition=Ready pod/web-1", "wait", "pods", ["web-1"], "tools", "ops", False),
    ("config use-context prod", "config use-context", None, [], None, "ops", False),
    ("config get-contexts", "config get-contexts", None, [], None, "ops", False),
    ("version --client", "version", None, [], None, "ops", False),
    ("cluster-info", "cluster-info", None, [], "tools", "ops", False),
    ("run tmp --image=busybox -it --rm -- sh", "run", "pods", ["tmp"], "tools", "ops", True),
    ("debug node/node-1 -it --image=busybox", "debug", "nodes", ["node-1"], None, "ops", True),
    ("get --raw /healthz", "get", None, [], "tools", "ops", False),
    ("neat get pod x", "neat", None, [], "tools", "ops", False),
]


def write_kubeconfigs(tmp_path) -> str:
    (tmp_path / "ops.yaml").write_text(OPS)
    (tmp_path / "team.yaml").write_text(TEAM)
    return f"{tmp_path / 'ops.yaml'}:{tmp_path / 'missing.yaml'}:{tmp_path / 'team.yaml'}"


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("line,verb,resource,names,namespace,context,mutating", CASES,
                         ids=[c[0] for c in CASES])
def test_record_fields(tmp_path, line, verb, resource, names, namespace, context, mutating):
    run = Run(id="r1", source="shim", argv=shlex.split(line), started=1_700_000_000.0, ended=1_700_000_001.5,
              exit_code=0, cwd=str(tmp_path), home=str(tmp_path), kubeconfig_env=write_kubeconfigs(tmp_path))
    record = build(run)
    got = (record["verb"], record["resource"], record["names"], record["namespace"], record["context"],
           record["mutating"])
    assert got == (verb, resource, names, namespace, context, mutating)
    assert record["kubeconfig"] == [str(tmp_path / "ops.yaml"), str(tmp_path / "team.yaml")]
    assert record["duration_ms"] == 1500 and record["started_at"] == "2023-11-14T22:13:20.000Z"


def test_cluster_server_and_user_follow_the_context_and_its_overrides(tmp_path):
    env = write_kubeconfigs(tmp_path)

    def fields(line):
        r = build(Run(id="x", source="shim", argv=shlex.split(line), started=0.0, cwd=str(tmp_path),
                      home=str(tmp_path), kubeconfig_env=env))
        return r["context"], r["cluster"], r["server"], r["user"]

    assert fields("get po") == ("ops", "ops-cluster", "https://ops.example.com", "ops-user")
    assert fields("get po --context team") == ("team", "team-cluster", "https://team.example.com", "dev")
    assert fields("get po --cluster prod-cluster") == ("ops", "prod-cluster", "https://prod.example.com", "ops-user")
    assert fields("get po --user admin") == ("ops", "ops-cluster", "https://ops.example.com", "admin")
    assert fields("get po -s https://other:6443") == ("ops", "ops-cluster", "https://other:6443", "ops-user")


def test_impersonation_and_files_are_kept(tmp_path):
    r = build(Run(id="x", source="shim", argv=shlex.split("apply -f a.yaml -f https://h/b.yaml --as jane --as-group ops"),
                  started=0.0, cwd=str(tmp_path), home=str(tmp_path)))
    assert r["impersonate"] == {"as": "jane", "as_group": ["ops"]}
    assert r["files"] == ["a.yaml", "https://h/b.yaml"]
    assert r["kubeconfig"] == [str(tmp_path / ".kube" / "config")]
