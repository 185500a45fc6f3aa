"""Kubeconfigs shaped like real ones, for benchmarks."""

from __future__ import annotations

import base64
import os


def write_big_kubeconfig(path: str, clusters: int = 40, current: int = 7) -> int:
    """About 200 KB: CLUSTERS clusters with inline CA certificates, a context and a user each.
    Returns the size written."""
    lines = ["apiVersion: v1", "kind: Config", "preferences: {}", "clusters:"]
    for i in range(clusters):
        cert = base64.b64encode(os.urandom(3500)).decode()
        lines += [f"- name: cluster-{i}", "  cluster:", f"    server: https://10.0.{i}.1:6443",
                  f"    certificate-authority-data: {cert}"]
    lines.append("contexts:")
    for i in range(clusters):
        lines += [f"- name: ctx-{i}", "  context:", f"    cluster: cluster-{i}", f"    user: user-{i}",
                  f"    namespace: ns-{i}"]
    lines.append(f"current-context: ctx-{current}")
    lines.append("users:")
    for i in range(clusters):
        lines += [f"- name: user-{i}", "  user:", f"    token: bench-token-{i}"]
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    return len(text)
