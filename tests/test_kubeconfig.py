"""kubeconfig resolution: client-go's merge rules, flag overrides, broken files, a 200 KB file,
and a cross-check against the real kubectl's own merging."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from bench.kubeconfigs import big_kubeconfig
from kubectl_record import kubeconfig
from kubectl_record.kubeconfig import Resolution, kubeconfig_paths, resolve
from tests.conftest import real_kubectl

# a: empty current-context; its "shared" context and "c-a" cluster must beat b's.
A = """\
apiVersion: v1
kind: Config
current-context: ""
contexts:
- name: dev
  context: {cluster: c-dev, user: u-dev, namespace: dev-ns}
- name: shared
  context: {cluster: c-a, user: u-a}
clusters:
- name: c-dev
  cluster: {server: "https://dev:6443"}
- name: c-a
  cluster: {server: "https://a:6443"}
users:
- name: u-dev
  user: {token: t1}
- name: u-a
  user: {token: t2}
"""
B = """\
apiVersion: v1
kind: Config
current-context: shared
contexts:
- name: shared
  context: {cluster: c-b, user: u-b, namespace: b-ns}
- name: prod
  context: {cluster: c-prod, user: u-prod}
clusters:
- name: c-a
  cluster: {server: "https://a-from-b:6443"}
- name: c-b
  cluster: {server: "https://b:6443"}
- name: c-prod
  cluster: {server: "https://prod:6443"}
users:
- name: u-b
  user: {token: t3}
- name: u-prod
  user: {token: t4}
"""
C_JSON = json.dumps({
    "apiVersion": "v1", "kind": "Config", "current-context": "prod",
    "contexts": [{"name": "json-ctx", "context": {"cluster": "c-json", "user": "u-json", "namespace": "j"}}],
    "clusters": [{"name": "c-json", "cluster": {"server": "https://json:6443"}}],
    "users": [{"name": "u-json", "user": {"token": "t5"}}],
})


@pytest.fixture
def kc(tmp_path: Path) -> dict[str, str]:
    files = {"a": A, "b": B, "c": C_JSON, "bad": "clusters: [\n  - {name: x\n", "list": "- a\n- b\n", "empty": "",
             "flow": "{current-context: flow, contexts: [{name: flow, context: {namespace: f}}]}\n"}
    paths = {}
    for name, text in files.items():
        paths[name] = str(tmp_path / f"{name}.yaml")
        Path(paths[name]).write_text(text)
    paths["missing"] = str(tmp_path / "missing.yaml")
    return paths


def read_disk(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


# (files in KUBECONFIG order, flags, expected context, cluster, server, user, namespace)
RESOLVE_CASES = [
    (["a", "missing", "b", "c"], {}, "shared", "c-a", "https://a:6443", "u-a", "default"),
    (["a", "b", "c"], {"context": "dev"}, "dev", "c-dev", "https://dev:6443", "u-dev", "dev-ns"),
    (["a", "b", "c"], {"context": "dev", "namespace": "x"}, "dev", "c-dev", "https://dev:6443", "u-dev", "x"),
    (["a", "b", "c"], {"context": "prod"}, "prod", "c-prod", "https://prod:6443", "u-prod", "default"),
    (["a", "b", "c"], {"context": "json-ctx"}, "json-ctx", "c-json", "https://json:6443", "u-json", "j"),
    (["a", "b"], {"context": "dev", "cluster": "c-prod"}, "dev", "c-prod", "https://prod:6443", "u-dev", "dev-ns"),
    (["a", "b"], {"user": "someone"}, "shared", "c-a", "https://a:6443", "someone", "default"),
    (["a", "b"], {"server": "https://override"}, "shared", "c-a", "https://override", "u-a", "default"),
    (["a", "b"], {"context": "nope"}, "nope", None, None, None, "default"),
    (["a", "b", "c"], {"context": "nope", "cluster": "c-json"}, "nope", "c-json", "https://json:6443", None, "default"),
    (["b", "a"], {}, "shared", "c-b", "https://b:6443", "u-b", "b-ns"),
    (["b", "a"], {"context": "shared", "namespace": "n"}, "shared", "c-b", "https://b:6443", "u-b", "n"),
    (["c", "b", "a"], {}, "prod", "c-prod", "https://prod:6443", "u-prod", "default"),
    (["missing"], {}, None, None, None, None, "default"),
    ([], {"namespace": "n", "server": "https://s"}, None, None, "https://s", None, "n"),
    (["bad", "list", "empty", "a", "b"], {}, "shared", "c-a", "https://a:6443", "u-a", "default"),
    (["flow", "a"], {}, "flow", None, None, None, "f"),
]


@pytest.mark.parametrize("order,flags,context,cluster,server,user,namespace", RESOLVE_CASES)
def test_resolve(kc, order, flags, context, cluster, server, user, namespace):
    res = resolve([kc[n] for n in order], read_disk, **flags)
    assert (res.context, res.cluster, res.server, res.user, res.namespace) == (
        context, cluster, server, user, namespace)
    assert res.files == [kc[n] for n in order if n != "missing"]


def test_unparseable_files_are_skipped_and_named(kc):
    res = resolve([kc["bad"], kc["list"], kc["empty"], kc["a"]], read_disk, context="dev")
    assert res.server == "https://dev:6443"
    assert [e.split(":")[0] for e in res.errors] == [kc["bad"], kc["list"]]
    assert "not a kubeconfig" in res.errors[1]


def test_reading_is_injected():
    snapshot = {"/home/u/.kube/config": B}
    res = resolve(["/home/u/.kube/config", "/gone"], snapshot.get)
    assert res == Resolution("shared", "c-b", "https://b:6443", "u-b", "b-ns", ["/home/u/.kube/config"], [])


@pytest.mark.parametrize("text", [
    "contexts: 3\nclusters: {a: b}\nusers: [1, [2], {name: 5}, {name: x, user: 7}]\ncurrent-context: [x]\n",
    "current-context: x\ncontexts: [{name: x, context: [1]}, {name: x}]\n",
    "\x00\x01", "!!python/object:os.system {}", "{", "[1, 2", "42", "---\n...\n", "a: b: c",
])
def test_odd_content_never_raises(text):
    res = resolve(["/k"], {"/k": text}.get, namespace="n")
    assert res.namespace == "n" and res.files == ["/k"]


def test_kubeconfig_paths():
    home, cwd = "/home/u", "/work/dir"
    assert kubeconfig_paths(None, None, home, cwd) == ["/home/u/.kube/config"]
    assert kubeconfig_paths(None, "", home, cwd) == ["/home/u/.kube/config"]
    assert kubeconfig_paths("kc.yaml", "/x:/y", home, cwd) == ["/work/dir/kc.yaml"]
    assert kubeconfig_paths("/abs/kc", None, home, cwd) == ["/abs/kc"]
    assert kubeconfig_paths(None, "a.yaml::/abs/b.yaml:a.yaml:./a.yaml:../c:/abs/b.yaml", home, cwd) == [
        "/work/dir/a.yaml", "/abs/b.yaml", "/work/c"]
    assert kubeconfig_paths(None, ":", home, cwd) == []


def test_big_kubeconfig_is_fast():
    text = big_kubeconfig()
    assert 190_000 < len(text) < 260_000
    resolve(["/big"], {"/big": text}.get)  # the first call pays the yaml import
    timings = []
    for _ in range(5):
        kubeconfig._parse.cache_clear()  # time the parse, not the per-content cache
        start = time.perf_counter()
        res = resolve(["/big"], {"/big": text}.get)
        timings.append(time.perf_counter() - start)
    assert (res.context, res.cluster, res.server, res.user, res.namespace) == (
        "ctx-7", "cluster-7", "https://10.0.7.1:6443", "user-7", "ns-7")
    # ~3 ms with libyaml, ~100 ms with the pure-Python loader; either way far below a second.
    assert sorted(timings)[2] < 1.0


@pytest.mark.parametrize("order,context", [
    (["a", "b", "c"], None), (["b", "a"], None), (["c", "b", "a"], None), (["a", "b", "c"], "dev"),
    (["a", "b", "c"], "json-ctx"), (["a", "missing", "b"], "prod"),
])
def test_matches_real_kubectl(kc, tmp_path, order, context):
    """client-go's own merge, through `kubectl config view --minify` (context, cluster, user,
    server and the context's namespace; it ignores -n/--cluster/--user, so those are not compared)."""
    kubectl = real_kubectl()
    env = {**os.environ, "KUBECONFIG": ":".join(kc[n] for n in order), "HOME": str(tmp_path)}
    args = [kubectl, "config", "view", "--minify", "-o", "json"] + (["--context", context] if context else [])
    view = json.loads(subprocess.run(args, env=env, capture_output=True, text=True, check=True, timeout=60).stdout)
    ctx = view["contexts"][0]
    res = resolve([kc[n] for n in order], read_disk, context=context)
    assert (res.context, res.cluster, res.user, res.server, res.namespace) == (
        ctx["name"], ctx["context"].get("cluster"), ctx["context"].get("user"),
        view["clusters"][0]["cluster"]["server"], ctx["context"].get("namespace", "default"))
