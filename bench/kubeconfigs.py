"""Kubeconfigs shaped like real ones, for benchmarks and the tests that time kubeconfig reading."""

from __future__ import annotations

import base64


def big_kubeconfig(clusters: int = 40, current: int = 7) -> str:
    """About 200 KB: CLUSTERS clusters with inline CA data, a context (with a namespace) and a
    token user each, as real multi-cluster kubeconfigs have. Deterministic."""
    cert = base64.b64encode(bytes(range(256)) * 14).decode()
    lines = ["apiVersion: v1", "kind: Config", "clusters:"]
    for i in range(clusters):
        lines += [f"- name: cluster-{i}", "  cluster:", f"    server: https://10.0.{i}.1:6443",
                  f"    certificate-authority-data: {cert}"]
    lines.append("contexts:")
    for i in range(clusters):
        lines += [f"- name: ctx-{i}", "  context:", f"    cluster: cluster-{i}", f"    user: user-{i}",
                  f"    namespace: ns-{i}"]
    lines += [f"current-context: ctx-{current}", "users:"]
    for i in range(clusters):
        lines += [f"- name: user-{i}", "  user:", f"    token: bench-token-{i}"]
    return "\n".join(lines) + "\n"


def write_big_kubeconfig(path: str, **kwargs) -> int:
    """Write big_kubeconfig() to PATH; returns its size."""
    text = big_kubeconfig(**kwargs)
    with open(path, "w") as f:
        f.write(text)
    return len(text)
