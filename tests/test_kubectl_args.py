"""kubectl_args.parse against kubectl v1.32 command lines.

Expectations about flag arity, aliases and API calls were checked against the real v1.32.4
binary (`--help` texts, and runs with -v=6 against an unreachable server for local_only).
"""

from __future__ import annotations

import importlib.util
import os
import random
import shlex
import subprocess
from pathlib import Path

import pytest

from kubectl_record.kubectl_args import ParsedArgs, canonical_resource, parse
from tests.conftest import real_kubectl


def case(line, verb, resource=None, names=(), ns=None, all_ns=False, ctx=None, mutating=False,
         dry_run=False, local=False, files=()):
    return pytest.param(line, dict(
        verb=verb, resource=resource, names=list(names), namespace=ns, all_namespaces=all_ns,
        context=ctx, mutating=mutating, dry_run=dry_run, local_only=local, files=list(files),
    ), id=line or "<empty>")


CASES = [
    # bare kubectl, help
    case("", None, local=True),
    case("--help", None, local=True),
    case("-h", None, local=True),
    case("-n x", None, ns="x", local=True),
    case("-- get po", None, local=True),
    case("get --help", "get", local=True),
    case("delete po web -h", "delete", "pods", ["web"], mutating=True, local=True),
    case("help get", "help", local=True),
    case("options", "options", local=True),
    case("alpha", "alpha", local=True),
    case("__complete get po ''", "__complete", local=True),
    # global flags before and after the verb
    case("--context x get po", "get", "pods", ctx="x"),
    case("get po --context=a --context b", "get", "pods", ctx="b"),
    case("get po -n a -n b", "get", "pods", ns="b"),
    case("-n kube-system get secret db -o yaml", "get", "secrets", ["db"], ns="kube-system"),
    case("--namespace=x get po", "get", "pods", ns="x"),
    case("get po -nfoo", "get", "pods", ns="foo"),
    case("get po -n=foo", "get", "pods", ns="foo"),
    case("get po -n ''", "get", "pods"),
    case("-v 6 get po", "get", "pods"),
    case("-v=6 --request-timeout 5s get po", "get", "pods"),
    case("--kubeconfig ./kc --user u --cluster c get no", "get", "nodes"),
    case("-o yaml get po web", "get", "pods", ["web"]),
    case("--insecure-skip-tls-verify get po", "get", "pods"),  # a global bool takes no word
    case("--warnings-as-errors --match-server-version apply -f x.yaml", "apply", files=["x.yaml"], mutating=True),
    case("--dry-run create ns x", "create namespace", "namespaces", ["x"], mutating=True, dry_run=True, local=True),
    case("GET po", "GET"),
    # resources: short names, kinds, groups, lists, TYPE/NAME
    case("get po", "get", "pods"),
    case("get Pod web", "get", "pods", ["web"]),
    case("get PODS", "get", "pods"),
    case("get deployment.apps web", "get", "deployments", ["web"]),
    case("get deployments.v1.apps", "get", "deployments"),
    case("get hpa,pdb", "get", "horizontalpodautoscalers,poddisruptionbudgets"),
    case("get deploy,svc", "get", "deployments,services"),
    case("get po,pods,po", "get", "pods"),
    case("get crd", "get", "customresourcedefinitions"),
    case("get certificates.cert-manager.io -A", "get", "certificates.cert-manager.io", all_ns=True),
    case("get Certificates.Cert-Manager.io", "get", "certificates.cert-manager.io"),
    case("get pods.metrics.k8s.io", "get", "pods.metrics.k8s.io"),
    case("get events.events.k8s.io", "get", "events"),
    case("get all", "get", "all"),
    case("get ns", "get", "namespaces"),
    case("get pods --all-namespaces", "get", "pods", all_ns=True),
    case("get po -A", "get", "pods", all_ns=True),
    case("get po --all_namespaces", "get", "pods", all_ns=True),
    case("get po --all-namespaces=false", "get", "pods"),
    case("get po -A=false", "get", "pods"),
    case("get --raw /healthz", "get"),
    case("get po -w -l app=web,tier!=db --field-selector status.phase=Running", "get", "pods"),
    case("get po -o jsonpath='{.items[*].metadata.name}'", "get", "pods"),
    case("get -f pod.yaml", "get", files=["pod.yaml"]),
    case("get", "get"),
    case("describe nodes n1", "describe", "nodes", ["n1"]),
    case("describe po -l app=x", "describe", "pods"),
    case("explain pods.spec.containers", "explain", "pods"),
    case("explain deployments.v1.apps", "explain", "deployments"),
    case("api-resources", "api-resources"),
    case("api-versions", "api-versions"),
    case("cluster-info", "cluster-info"),
    case("cluster-info dump -A", "cluster-info dump", all_ns=True),
    case("events -A", "events", "events", all_ns=True),
    case("events --for pod/web", "events", "events"),
    case("top pod", "top pod", "pods"),
    case("top po -A --containers", "top pod", "pods", all_ns=True),
    case("top nodes n1", "top node", "nodes", ["n1"]),
    case("version", "version"),
    case("version --client", "version", local=True),
    case("version --client=false", "version"),
    case("auth whoami", "auth whoami"),
    case("auth can-i get pods --as jane", "auth can-i", "pods"),
    case("auth can-i list jobs.batch/bar -n foo", "auth can-i", "jobs", ["bar"], ns="foo"),
    case("auth can-i get /logs", "auth can-i"),
    case("auth can-i --list", "auth can-i"),
    case("rollout status deploy/web", "rollout status", "deployments", ["web"]),
    case("rollout history deploy web", "rollout history", "deployments", ["web"]),
    case("wait --for=condition=Ready pod/x", "wait", "pods", ["x"]),
    case("wait --for=delete pod/x --timeout=60s", "wait", "pods", ["x"]),
    case("diff -f app.yaml", "diff", files=["app.yaml"]),
    case("apply view-last-applied deploy web", "apply view-last-applied", "deployments", ["web"]),
    # writes
    case("create secret generic x --from-literal=a=b", "create secret generic", "secrets", ["x"], mutating=True),
    case("create secret tls t --cert=c.pem --key=k.pem", "create secret tls", "secrets", ["t"], mutating=True),
    case("create secret docker-registry r --docker-password=p", "create secret docker-registry", "secrets", ["r"],
         mutating=True),
    case("create deploy web --image=nginx --replicas 3 -- date", "create deployment", "deployments", ["web"],
         mutating=True),
    case("create ns dev", "create namespace", "namespaces", ["dev"], mutating=True),
    case("create sa bot -n x", "create serviceaccount", "serviceaccounts", ["bot"], ns="x", mutating=True),
    case("create svc clusterip web --tcp=80:8080", "create service clusterip", "services", ["web"], mutating=True),
    case("create cm c --from-file=x.txt", "create configmap", "configmaps", ["c"], mutating=True),
    case("create token bot --duration=1h", "create token", "serviceaccounts", ["bot"], mutating=True),
    case("create rolebinding rb --clusterrole=view --user=jane", "create rolebinding", "rolebindings", ["rb"],
         mutating=True),
    case("create -f x.yaml", "create", files=["x.yaml"], mutating=True),
    case("create", "create", mutating=True),
    case("create secret", "create secret", local=True),
    case("apply -f x.yaml", "apply", files=["x.yaml"], mutating=True),
    case("apply -f a.yaml,b.yaml -f https://example.com/c.yaml", "apply",
         files=["a.yaml", "b.yaml", "https://example.com/c.yaml"], mutating=True),
    case("apply -k dir/", "apply", files=["dir/"], mutating=True),
    case("apply --filename=x.yaml --prune -l app=x", "apply", files=["x.yaml"], mutating=True),
    case("apply edit-last-applied deploy/web", "apply edit-last-applied", "deployments", ["web"], mutating=True),
    case("apply set-last-applied -f x.yaml --create-annotation", "apply set-last-applied", files=["x.yaml"],
         mutating=True),
    case("replace --force -f x.yaml", "replace", files=["x.yaml"], mutating=True),
    case("replace --raw /api/v1/namespaces/a/pods/b -f b.json", "replace", files=["b.json"], mutating=True),
    case("delete po/a po/b", "delete", "pods", ["a", "b"], mutating=True),
    case("delete pod web --grace-period 0 --force", "delete", "pods", ["web"], mutating=True),
    case("delete ns dev --wait=false", "delete", "namespaces", ["dev"], mutating=True),
    case("delete po --all true", "delete", "pods", ["true"], mutating=True),
    case("delete -f x.yaml --cascade orphan", "delete", "orphan", files=["x.yaml"], mutating=True),
    case("delete -f x.yaml --cascade=orphan", "delete", files=["x.yaml"], mutating=True),
    case("edit svc/web", "edit", "services", ["web"], mutating=True),
    case("patch deploy web -p '{\"spec\":{}}'", "patch", "deployments", ["web"], mutating=True),
    case("patch --local -f x.yaml -p '{}' -o yaml", "patch", files=["x.yaml"], mutating=True, local=True),
    case("scale --replicas=3 deploy/web", "scale", "deployments", ["web"], mutating=True),
    case("autoscale deploy web --min=2 --max=5", "autoscale", "deployments", ["web"], mutating=True),
    case("expose deploy web --port=80", "expose", "deployments", ["web"], mutating=True),
    case("rollout restart deploy/web", "rollout restart", "deployments", ["web"], mutating=True),
    case("rollout undo deploy/web --to-revision=2", "rollout undo", "deployments", ["web"], mutating=True),
    case("rollout", "rollout", local=True),
    case("label po web app=x", "label", "pods", ["web"], mutating=True),
    case("label ns dev team=a --overwrite", "label", "namespaces", ["dev"], mutating=True),
    case("annotate po web a-", "annotate", "pods", ["web"], mutating=True),
    case("annotate --local -f x.yaml a=b", "annotate", files=["x.yaml"], mutating=True, local=True),
    case("label po web --list", "label", "pods", ["web"]),
    case("taint nodes n1 k=v:NoSchedule", "taint", "nodes", ["n1"], mutating=True),
    case("taint node n1 k:NoSchedule-", "taint", "nodes", ["n1"], mutating=True),
    case("set image deploy/web app=nginx:1.25", "set image", "deployments", ["web"], mutating=True),
    case("set env deploy/web A=b C-", "set env", "deployments", ["web"], mutating=True),
    case("set env deploy/web --list", "set env", "deployments", ["web"]),
    case("set sa deploy web bot", "set serviceaccount", "deployments", ["web"], mutating=True),
    case("set selector svc web app=x", "set selector", "services", ["web"], mutating=True),
    case("set resources deploy web --limits=cpu=1 --local -f d.yaml", "set resources", "deployments", ["web"],
         files=["d.yaml"], mutating=True, local=True),
    case("cordon n1", "cordon", "nodes", ["n1"], mutating=True),
    case("uncordon n1", "uncordon", "nodes", ["n1"], mutating=True),
    case("drain n1 --ignore-daemonsets --dry-run=server", "drain", "nodes", ["n1"], mutating=True, dry_run=True),
    case("certificate approve csr-1", "certificate approve", "certificatesigningrequests", ["csr-1"], mutating=True),
    case("auth reconcile -f rbac.yaml", "auth reconcile", files=["rbac.yaml"], mutating=True),
    case("run tmp -it --rm --image=busybox --restart=Never -- sh", "run", "pods", ["tmp"], mutating=True),
    # dry runs and what stays local
    case("create deploy web --image=x --dry-run=client -o yaml", "create deployment", "deployments", ["web"],
         mutating=True, dry_run=True, local=True),
    case("create ns x --dry-run", "create namespace", "namespaces", ["x"], mutating=True, dry_run=True, local=True),
    case("create ns x --dry-run=true", "create namespace", "namespaces", ["x"], mutating=True, dry_run=True,
         local=True),
    case("create ns x --dry-run=server", "create namespace", "namespaces", ["x"], mutating=True, dry_run=True),
    case("create ns x --dry-run=none", "create namespace", "namespaces", ["x"], mutating=True),
    case("create ns x --dry-run=false", "create namespace", "namespaces", ["x"], mutating=True),
    case("create ns x --dry-run=client --dry-run=none", "create namespace", "namespaces", ["x"], mutating=True),
    case("create ns x --dry-run client", "create namespace", "namespaces", ["x"], mutating=True, dry_run=True,
         local=True),
    case("create role r --verb=get --resource=pods --dry-run=client", "create role", "roles", ["r"],
         mutating=True, dry_run=True),
    case("create job j --from=cronjob/c --dry-run=client", "create job", "jobs", ["j"], mutating=True,
         dry_run=True),
    case("create job j --image=busybox --dry-run=client", "create job", "jobs", ["j"], mutating=True,
         dry_run=True, local=True),
    case("create -f x.yaml --dry-run=client", "create", files=["x.yaml"], mutating=True, dry_run=True),
    case("apply -f x.yaml --dry-run=client", "apply", files=["x.yaml"], mutating=True, dry_run=True),
    case("apply --validate false -f x.yaml", "apply", files=["x.yaml"], mutating=True),
    case("run x --image=y --dry-run=client", "run", "pods", ["x"], mutating=True, dry_run=True),
    # exec, attach, logs, tunnels, copies
    case("exec -it web -c app -- sh -c 'echo hi'", "exec", "pods", ["web"], mutating=True),
    case("exec -itn ns web -- sh", "exec", "pods", ["web"], ns="ns", mutating=True),
    case("exec deploy/web -- env", "exec", "deployments", ["web"], mutating=True),
    case("exec web ls", "exec", "pods", ["web"], mutating=True),
    case("exec -ti web -c app -- sh", "exec", "pods", ["web"], mutating=True),
    case("attach web -c app -it", "attach", "pods", ["web"], mutating=True),
    case("logs -f web", "logs", "pods", ["web"]),
    case("logs web -f -c x", "logs", "pods", ["web"]),
    case("logs deploy/web --all-containers -p", "logs", "deployments", ["web"]),
    case("logs -l app=web --prefix", "logs"),
    case("port-forward svc/web 8080:80", "port-forward", "services", ["web"], mutating=True),
    case("port-forward web 8888:5000", "port-forward", "pods", ["web"], mutating=True),
    case("proxy -p 8001", "proxy", mutating=True),
    case("proxy --port=8001 --www=./static -P /static/", "proxy", mutating=True),
    case("cp ns/pod:/tmp/x ./x", "cp", "pods", ["pod"]),
    case("cp ./x web:/tmp/x -c app", "cp", "pods", ["web"], mutating=True),
    case("debug node/n1 -it --image=busybox", "debug", "nodes", ["n1"], mutating=True),
    case("debug web -it --image=busybox --target=app -- sh", "debug", "pods", ["web"], mutating=True),
    # local commands
    case("config use-context prod", "config use-context", local=True),
    case("config use prod", "config use-context", local=True),
    case("config view --minify", "config view", local=True),
    case("config set-context --current --namespace=prod", "config set-context", local=True),
    case("config get-contexts", "config get-contexts", local=True),
    case("completion bash", "completion", local=True),
    case("kustomize overlays/prod", "kustomize", local=True),
    case("plugin list", "plugin list", local=True),
    # plugins and unknown commands
    case("foo bar", "foo"),
    case("ctx prod", "ctx"),
    case("ns kube-system", "ns"),
    case("krew install tree", "krew"),
    case("foo --bar=baz -n x -f y", "foo", ns="x"),
    case("-n prod record history", "record", ns="prod"),
    # unknown flags never break the rest
    case("get po --bogus web", "get", "pods", ["web"]),
    case("get po --bogus=1 web", "get", "pods", ["web"]),
    case("get po -Z web", "get", "pods", ["web"]),
    case("get po ---x web", "get", "pods", ["web"]),
]


@pytest.mark.parametrize("line,expected", CASES)
def test_command_lines(line, expected):
    got = parse(shlex.split(line))
    assert {k: getattr(got, k) for k in expected} == expected


def test_at_least_eighty_cases():
    assert len(CASES) >= 80


def fields(line: str) -> ParsedArgs:
    return parse(shlex.split(line))


def test_flags_normalised_to_long_names_in_order():
    assert fields("get po -n x -o=yaml -A --selector app=web -lt=1 --bogus").flags == [
        ("--namespace", "x"), ("--output", "yaml"), ("--all-namespaces", None),
        ("--selector", "app=web"), ("--selector", "t=1"), ("--bogus", None),
    ]


def test_exec_words_after_dashdash():
    got = fields("exec -it web -c app -- sh -c 'echo hi'")
    assert got.positionals == ["web"]
    assert got.dashdash == ["sh", "-c", "echo hi"]
    assert got.flags == [("--stdin", None), ("--tty", None), ("--container", "app")]
    assert fields("get po").dashdash is None


def test_shorthand_group_last_takes_value():
    assert fields("exec -itn ns web -- sh").flags[-1] == ("--namespace", "ns")
    got = fields("exec -nit web -- sh")  # -n swallows the rest of the group
    assert got.namespace == "it" and got.flags == [("--namespace", "it")]


def test_follow_is_not_a_file_and_patch_is_not_a_port():
    assert fields("logs -f web").flags == [("--follow", None)]
    assert fields("apply -f web.yaml").flags == [("--filename", "web.yaml")]
    assert fields("patch deploy web -p '{}'").flags == [("--patch", "{}")]
    assert fields("proxy -p 8001").flags == [("--port", "8001")]
    assert fields("logs web -p").flags == [("--previous", None)]


def test_optional_and_bool_flags_do_not_consume_the_next_word():
    assert fields("create ns x --dry-run client").positionals == ["x", "client"]
    assert fields("apply --validate false -f x.yaml").positionals == ["false"]
    assert fields("delete --cascade orphan -f x").positionals == ["orphan"]
    assert fields("delete po --all true").positionals == ["po", "true"]
    got = fields("delete po --all=false")
    assert got.flags == [("--all", "false")] and got.positionals == ["po"]


def test_unknown_flags_kept_as_typed():
    got = fields("get po --Bogus_Flag=1 --other x -Zq")
    assert got.flags == [("--Bogus_Flag", "1"), ("--other", None), ("-Zq", None)]
    assert got.positionals == ["po", "x"]


def test_dashdash_ends_flags():
    got = fields("run x --image=busybox -- sh -n -c 'ls'")
    assert got.namespace is None and got.dashdash == ["sh", "-n", "-c", "ls"]


def test_command_flags_shadow_global_ones():
    # config set-context --namespace is the context's namespace; -n is unknown there.
    got = fields("config set-context dev --namespace=prod --cluster c --user u")
    assert (got.namespace, got.cluster, got.user) == (None, None, None)
    assert fields("config set-context dev -n prod").flags == [("-n", None)]
    assert fields("create rolebinding rb --clusterrole=view --user=jane").user is None
    assert fields("get po --user=jane --cluster=c -s https://x:6443").user == "jane"


def test_global_values():
    got = fields("--kubeconfig ./kc --context c1 --cluster k1 --user u1 -s https://x:6443 get po")
    assert (got.kubeconfig, got.context, got.cluster, got.user, got.server) == (
        "./kc", "c1", "k1", "u1", "https://x:6443")


def test_impersonation():
    got = fields("--as=jane --as-group=g1 --as-group g2 --as-uid=42 get po")
    assert got.impersonate == {"as": "jane", "as_group": ["g1", "g2"], "as_uid": "42"}
    assert fields("auth can-i get pods --as jane").impersonate == {"as": "jane"}
    assert fields("get po").impersonate is None
    assert fields("get po --as=").impersonate is None


@pytest.mark.parametrize("line,namespaced", [
    ("get po", True), ("get nodes", False), ("get ns", False), ("get clusterroles", False),
    ("get pv", False), ("get sc", False), ("get crds", False), ("get pvc", True),
    ("get po,svc", True), ("get po,nodes", None), ("get foos.example.com", None),
    ("apply -f x.yaml", None), ("config view", None), ("create ns x", False),
    ("cordon n1", False), ("certificate deny c", False),
])
def test_namespaced(line, namespaced):
    assert fields(line).namespaced is namespaced


@pytest.mark.parametrize("word,plural", [
    ("po", "pods"), ("pod", "pods"), ("Pod", "pods"), ("pods", "pods"), ("deploy", "deployments"),
    ("Deployment", "deployments"), ("deployment.apps", "deployments"), ("deployments.v1.apps", "deployments"),
    ("deploy.apps", "deployments"), ("pods.v1", "pods"), ("cronjobs.v1beta1.batch", "cronjobs"),
    ("netpol", "networkpolicies"), ("NetworkPolicy", "networkpolicies"), ("ep", "endpoints"),
    ("endpoints", "endpoints"), ("ingresses.networking.k8s.io", "ingresses"), ("sts", "statefulsets"),
    ("pods.metrics.k8s.io", "pods.metrics.k8s.io"), ("deployments.extensions", "deployments.extensions"),
    ("Certificates.cert-manager.io", "certificates.cert-manager.io"), ("", ""), (".", "."),
])
def test_canonical_resource(word, plural):
    assert canonical_resource(word) == plural


def test_verb_for_plugins_is_the_word_as_typed():
    assert fields("Foo-Bar baz").verb == "Foo-Bar"
    assert fields("foo bar").positionals == ["bar"]


_WORDS = [
    "get", "po", "create", "secret", "generic", "rollout", "restart", "config", "use", "exec", "logs",
    "-", "--", "-n", "-nx", "-n=", "-=", "--=", "---", "-f", "-it", "-itn", "-A", "--all", "--dry-run",
    "--dry-run=client", "--namespace", "--namespace=", "--as-group", "-p", "--raw", "deploy/web", "a/b/c",
    "a,b,,c", ",", "/", ":", "pod:/x", "ns/pod:/x", "x=y", "k-", "=", "", " ", "\x00", "é", "-é", "--é=é",
    "cp", "label", "taint", "set", "sa", "top", "auth", "can-i", "explain", ".", "..", "a.v1.", "-h",
    "--help=maybe", "__complete", "help", "-v", "--v=9", "-A=x",
]


@pytest.mark.parametrize("seed", range(3))
def test_random_input_never_raises(seed):
    rng = random.Random(seed)
    for _ in range(300):
        words = [rng.choice(_WORDS) if rng.random() < 0.8 else
                 "".join(rng.choice("-=/,:.aZ0 é") for _ in range(rng.randint(0, 6)))
                 for _ in range(rng.randint(0, 10))]
        got = parse(words)
        assert isinstance(got, ParsedArgs)
        assert got.verb is None or isinstance(got.verb, str)
        assert all(isinstance(n, str) for n in got.names)


REPO = Path(__file__).resolve().parent.parent


def test_generated_flags_module_is_current():
    tsv = REPO.parent / "shared" / "notes" / "kubectl-1.32-flags.tsv"
    if not tsv.exists():
        pytest.skip(f"{tsv} is not here")
    spec = importlib.util.spec_from_file_location("gen_kubectl_flags", REPO / "tools" / "gen_kubectl_flags.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render(gen.read_tsv(tsv)) == (REPO / "kubectl_record" / "_kubectl_flags.py").read_text()


UNREACHABLE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: ns1}}]
current-context: x
"""


@pytest.mark.parametrize("line", [
    "config view", "version --client", "create deploy web --image=x --dry-run=client -o yaml",
    "create ns x --dry-run", "create secret generic s --from-literal=a=b --dry-run=client",
    "create job j --image=busybox --dry-run=client", "label --local -f cm.yaml a=b -o name",
    "patch --local -f cm.yaml -p {} -o name", "get po --help", "completion bash", "plugin list",
    "get po", "create -f cm.yaml --dry-run=client", "apply -f cm.yaml --dry-run=client",
    "run x --image=y --dry-run=client", "expose deploy x --port=80 --dry-run=client",
    "create role r --verb=get --resource=pods --dry-run=client",
    "create job j --from=cronjob/c --dry-run=client", "explain pods", "api-resources", "version",
    "create token sa1",
])
def test_local_only_matches_real_kubectl(tmp_path, line):
    """Run the real kubectl against a server that refuses connections: local_only must be true
    exactly when kubectl sends no request (-v=6 logs every request it tries)."""
    kubectl = real_kubectl()
    (tmp_path / "config").write_text(UNREACHABLE_KUBECONFIG)
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "config"), "HOME": str(tmp_path)}
    run = subprocess.run([kubectl, *shlex.split(line), "-v=6"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    sent = "https://127.0.0.1:1/" in run.stderr
    assert parse(shlex.split(line)).local_only is not sent, run.stderr[-2000:]
