"""The context, cluster, server, user and namespace kubectl would use, without running kubectl.

Follows client-go's `tools/clientcmd` loading rules:

- `--kubeconfig FILE` alone (no merging), else every file in KUBECONFIG, else ~/.kube/config.
- Files are merged in order: for contexts, clusters and users of the same name the first file's
  entry wins whole; current-context comes from the first file that sets a non-empty one.
- `--context` picks another context; `--cluster`/`--user` override what the context names;
  `--server` overrides the cluster's server; the namespace is `-n`, else the context's, else
  "default".

Reading is injected (`read(path)` → text or None when missing) so the caller can resolve from
snapshot copies taken when the run started. Missing files are skipped silently, as client-go
does. A file that is not a kubeconfig (bad YAML/JSON, not a mapping) is skipped too and named in
`errors` — kubectl itself would refuse to run — so a resolution is always returned. Entries
whose name is not a string are ignored.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class Resolution:
    context: Optional[str] = None
    cluster: Optional[str] = None
    server: Optional[str] = None
    user: Optional[str] = None
    namespace: str = "default"
    files: list[str] = field(default_factory=list)   # paths that existed and were read
    errors: list[str] = field(default_factory=list)  # "PATH: why it was skipped"


def kubeconfig_paths(flag: Optional[str], env: Optional[str], home: str, cwd: str) -> list[str]:
    """The files kubectl would load, in precedence order. Missing files are kept: the resolver
    skips them, and the caller may want to show them."""
    if flag:
        return [_absolute(flag, cwd)]
    if env:
        paths: list[str] = []
        for entry in env.split(os.pathsep):  # filepath.SplitList: ':' here
            if entry and _absolute(entry, cwd) not in paths:
                paths.append(_absolute(entry, cwd))
        return paths  # KUBECONFIG=":" names no file: client-go then loads nothing, not ~/.kube/config
    return [os.path.join(home, ".kube", "config")]


def _absolute(path: str, cwd: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(cwd, path))


def _text(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


@functools.lru_cache(maxsize=16)
def _parse(text: str) -> Any:
    # Cached by content: an ingestion pass resolves many runs against the same few files.
    # Callers only read the result.
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML flow style also starts with "{": let the YAML parser decide
    import yaml  # only here: the import costs ~30 ms and JSON kubeconfigs never need it

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _entries(doc: dict, key: str, body: str) -> dict[str, dict]:
    """`clusters: [{name: N, cluster: {...}}]` → {N: {...}}; the first of a name wins."""
    out: dict[str, dict] = {}
    items = doc.get(key)
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"] not in out:
            inner = item.get(body)
            out[item["name"]] = inner if isinstance(inner, dict) else {}
    return out


def resolve(
    paths: list[str],
    read: Callable[[str], Optional[str]],
    *,
    context: Optional[str] = None,
    cluster: Optional[str] = None,
    user: Optional[str] = None,
    namespace: Optional[str] = None,
    server: Optional[str] = None,
) -> Resolution:
    """Merge PATHS (read through READ) and apply the flag overrides. Never raises for bad
    kubeconfig content; an exception from READ itself is the caller's."""
    res = Resolution()
    merged: dict[str, dict[str, dict]] = {"contexts": {}, "clusters": {}, "users": {}}
    current: Optional[str] = None
    for path in paths:
        text = read(path)
        if text is None:
            continue
        res.files.append(path)
        try:
            doc = _parse(text)
        except Exception as exc:  # yaml.YAMLError and anything a C loader may raise
            res.errors.append(f"{path}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
            continue
        if doc is None:  # an empty file is an empty config
            continue
        if not isinstance(doc, dict):
            res.errors.append(f"{path}: not a kubeconfig (a {type(doc).__name__}, not a mapping)")
            continue
        for key, body in (("contexts", "context"), ("clusters", "cluster"), ("users", "user")):
            for name, entry in _entries(doc, key, body).items():
                merged[key].setdefault(name, entry)
        current = current or _text(doc.get("current-context"))

    res.context = context or current
    ctx = merged["contexts"].get(res.context or "", {})
    res.cluster = cluster or _text(ctx.get("cluster"))
    res.user = user or _text(ctx.get("user"))
    res.server = server or _text(merged["clusters"].get(res.cluster or "", {}).get("server"))
    res.namespace = namespace or _text(ctx.get("namespace")) or "default"
    return res


SCRUBBED_MARK = '{"x-kubectl-record":"scrubbed"'


def scrubbed(text: str) -> str:
    """A copy of a kubeconfig that keeps only what `resolve` reads — names, current-context,
    namespaces, server URLs — and no credentials or certificates. The ingester rewrites spool
    snapshots into this form once read, so none outlives ingestion with a secret in it."""
    try:
        doc = _parse(text)
    except Exception:
        doc = None
    doc = doc if isinstance(doc, dict) else {}

    def kept(key: str, body: str, fields: tuple[str, ...]) -> list[dict]:
        items = doc.get(key)
        out = []
        for item in items if isinstance(items, list) else ():
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                inner = item.get(body) if isinstance(item.get(body), dict) else {}
                out.append({"name": item["name"], body: {f: _text(inner.get(f)) for f in fields if _text(inner.get(f))}})
        return out

    from .redact import mask_text

    clusters = kept("clusters", "cluster", ("server",))
    for entry in clusters:
        if "server" in entry["cluster"]:
            entry["cluster"]["server"] = mask_text(entry["cluster"]["server"])[0]
    reduced = {
        "current-context": _text(doc.get("current-context")),
        "contexts": kept("contexts", "context", ("cluster", "user", "namespace")),
        "clusters": clusters,
        "users": kept("users", "user", ()),
    }
    return SCRUBBED_MARK + "," + json.dumps(reduced, separators=(",", ":"))[1:]
