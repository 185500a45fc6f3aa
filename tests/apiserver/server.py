"""A small Kubernetes API server for tests, driven by the real kubectl.

Serves legacy discovery, a handful of kinds backed by an in-memory store,
Table output, watch streaming, the patch flavours kubectl uses, bearer-token
authentication, a toy authorizer with impersonation, and writes
audit.k8s.io/v1 Events evaluated with ``kubectl_record.audit_policy``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import re
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from kubectl_record.audit_policy import Level, Policy, RequestAttributes, Stage, load_policy

from . import protobuf
from .audit import AuditOptions, AuditPipeline, RealClock, rfc3339, rfc3339_micro

# --------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short: tuple = ()
    verbs: tuple = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    subresources: tuple = ()
    categories: tuple = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
KINDS = [
    Kind("", "v1", "pods", "pod", "Pod", True, ("po",), subresources=("log", "status"), categories=("all",)),
    Kind("", "v1", "services", "service", "Service", True, ("svc",), categories=("all",)),
    Kind("", "v1", "configmaps", "configmap", "ConfigMap", True, ("cm",)),
    Kind("", "v1", "secrets", "secret", "Secret", True),
    Kind("", "v1", "namespaces", "namespace", "Namespace", False, ("ns",), subresources=("status",)),
    Kind("", "v1", "nodes", "node", "Node", False, ("no",), subresources=("status",)),
    Kind("", "v1", "events", "event", "Event", True, ("ev",)),
    Kind("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",),
         subresources=("scale", "status"), categories=("all",)),
    Kind("apps", "v1", "replicasets", "replicaset", "ReplicaSet", True, ("rs",),
         subresources=("scale", "status"), categories=("all",)),
    Kind("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole", "ClusterRole", False),
    Kind("authentication.k8s.io", "v1", "selfsubjectreviews", "selfsubjectreview", "SelfSubjectReview",
         False, verbs=("create",)),
    Kind("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "selfsubjectaccessreview",
         "SelfSubjectAccessReview", False, verbs=("create",)),
]
BY_GVR = {(k.group, k.version, k.plural): k for k in KINDS}
GROUPS: dict[str, list[str]] = {}
for _k in KINDS:
    if _k.group:
        GROUPS.setdefault(_k.group, [])
        if _k.version not in GROUPS[_k.group]:
            GROUPS[_k.group].append(_k.version)
GROUP_ORDER = ["apps", "authentication.k8s.io", "authorization.k8s.io", "rbac.authorization.k8s.io"]

SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean", "buildDate": "2025-04-22T16:02:27Z", "goVersion": "go1.23.6",
    "compiler": "gc", "platform": "linux/amd64",
}


# --------------------------------------------------------------------------- users & authz


@dataclass
class UserInfo:
    username: str
    groups: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"username": self.username, "groups": list(self.groups)}


DEFAULT_TOKENS = {
    "admin-token": UserInfo("admin", ["system:masters", "system:authenticated"]),
    "alice-token": UserInfo("alice", ["dev", "system:authenticated"]),
    "bob-token": UserInfo("bob", ["ops", "system:authenticated"]),
}


def default_authorize(user: UserInfo, verb: str, group: str, resource: str, namespace: str,
                      name: str, subresource: str = "", path: str = "") -> tuple[bool, str]:
    """(allowed, reason). admin (system:masters) may do anything; everybody else
    may do everything except touch secrets in kube-system, clusterroles, and impersonation."""
    if "system:masters" in user.groups:
        return True, ""
    if not resource:  # non-resource URL
        return True, ('RBAC: allowed by ClusterRoleBinding "system:discovery" of ClusterRole '
                      '"system:discovery" to Group "system:authenticated"')
    if verb == "impersonate":
        return False, ""
    if resource == "secrets" and namespace == "kube-system":
        return False, ""
    if resource == "clusterroles":
        return False, ""
    return True, f'RBAC: allowed by ClusterRoleBinding "test-edit" of ClusterRole "edit" to User "{user.username}"'


# --------------------------------------------------------------------------- helpers


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": self.message, "reason": self.reason}
        if self.details is not None:
            st["details"] = self.details
        st["code"] = self.code
        return st


def _details(kind: Kind | None, name: str = "") -> dict:
    d: dict = {}
    if name:
        d["name"] = name
    if kind is not None:
        if kind.group:
            d["group"] = kind.group
        d["kind"] = kind.plural
    return d


def not_found(kind: Kind, name: str) -> ApiError:
    qual = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return ApiError(404, "NotFound", f'{qual} "{name}" not found', _details(kind, name))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


_MERGE_KEYS = ("name", "containerPort", "mountPath", "devicePath", "ip", "port", "type", "topologyKey")


def _merge_key(a: list, b: list) -> str | None:
    items = [x for x in a + b if not (isinstance(x, dict) and "$patch" in x)]
    if not items or not all(isinstance(x, dict) for x in items):
        return None
    for key in _MERGE_KEYS:
        if all(key in x for x in items):
            return key
    return None


def strategic_merge(target: Any, patch: Any) -> Any:
    """A simplified strategic merge patch: maps merge, ``null`` deletes, lists of
    objects with a recognisable merge key (``name``, ``containerPort``, ...)
    merge by key, other lists are replaced; ``$patch``, ``$setElementOrder``,
    ``$retainKeys`` and ``$deleteFromPrimitiveList`` directives are honoured
    roughly or dropped."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field_name = k.split("/", 1)[1]
            if isinstance(result.get(field_name), list):
                result[field_name] = [x for x in result[field_name] if x not in v]
            continue
        if v is None:
            result.pop(k, None)
        elif isinstance(v, list) and isinstance(result.get(k), list):
            key = _merge_key(result[k], v)
            if key is None:
                result[k] = copy.deepcopy(v)
            else:
                merged = copy.deepcopy(result[k])
                for item in v:
                    idx = next((i for i, x in enumerate(merged) if x.get(key) == item.get(key)), None)
                    if item.get("$patch") == "delete":
                        if idx is not None:
                            merged.pop(idx)
                    elif idx is None:
                        merged.append(strategic_merge({}, item))
                    else:
                        merged[idx] = strategic_merge(merged[idx], item)
                result[k] = merged
        else:
            merged = strategic_merge(result.get(k), v)
            if merged is None:
                result.pop(k, None)
            else:
                result[k] = merged
    return result


def _ptr(path: str) -> list:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(doc: Any, ops: list) -> Any:
    """RFC 6902 JSON patch."""
    doc = copy.deepcopy(doc)

    def parent(d, parts):
        for p in parts[:-1]:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d

    def get(d, parts):
        for p in parts:
            d = d[int(p)] if isinstance(d, list) else d[p]
        return d

    for op in ops:
        kind, parts = op.get("op"), _ptr(op.get("path", ""))
        try:
            if kind in ("add", "replace", "test") and not parts:
                if kind == "test":
                    if doc != op.get("value"):
                        raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request")
                    continue
                doc = copy.deepcopy(op.get("value"))
                continue
            if kind == "add":
                p = parent(doc, parts)
                if isinstance(p, list):
                    idx = len(p) if parts[-1] == "-" else int(parts[-1])
                    p.insert(idx, copy.deepcopy(op["value"]))
                else:
                    p[parts[-1]] = copy.deepcopy(op["value"])
            elif kind == "remove":
                p = parent(doc, parts)
                if isinstance(p, list):
                    p.pop(int(parts[-1]))
                else:
                    del p[parts[-1]]
            elif kind == "replace":
                p = parent(doc, parts)
                if isinstance(p, list):
                    p[int(parts[-1])] = copy.deepcopy(op["value"])
                else:
                    if parts[-1] not in p:
                        raise KeyError(parts[-1])
                    p[parts[-1]] = copy.deepcopy(op["value"])
            elif kind in ("move", "copy"):
                src = _ptr(op["from"])
                value = copy.deepcopy(get(doc, src))
                if kind == "move":
                    sp = parent(doc, src)
                    if isinstance(sp, list):
                        sp.pop(int(src[-1]))
                    else:
                        del sp[src[-1]]
                doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            elif kind == "test":
                if get(doc, parts) != op.get("value"):
                    raise ApiError(422, "Invalid", f"testing value {op.get('path')} failed")
            else:
                raise ApiError(400, "BadRequest", f"unexpected op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {exc!r}")
    return doc


def _get_path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _match_field_selector(obj: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        neg = "!=" in term
        k, v = re.split(r"!=|==|=", term, maxsplit=1)
        actual = _get_path(obj, k.strip())
        actual = "" if actual is None else str(actual)
        if (actual == v.strip()) == neg:
            return False
    return True


def _split_selector(sel: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in sel:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [t.strip() for t in out if t.strip()]


def _match_label_selector(obj: dict, selector: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in _split_selector(selector):
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if m:
            values = {v.strip() for v in m.group(3).split(",")}
            has = m.group(1) in labels and labels[m.group(1)] in values
            if has != (m.group(2) == "in"):
                return False
            continue
        if term.startswith("!"):
            if term[1:] in labels:
                return False
            continue
        m = re.match(r"^([\w./-]+)\s*(!=|==|=)\s*(.*)$", term)
        if m:
            eq = labels.get(m.group(1)) == m.group(3)
            if eq == (m.group(2) == "!="):
                return False
            continue
        if term not in labels:
            return False
    return True


def _age(created: str | None, now: float) -> str:
    if not created:
        return "<unknown>"
    try:
        t = _dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc).timestamp()
    except ValueError:
        return "<unknown>"
    s = max(0, int(now - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _strip_managed_fields(obj: Any) -> Any:
    if isinstance(obj, dict):
        obj = copy.copy(obj)
        if isinstance(obj.get("metadata"), dict) and "managedFields" in obj["metadata"]:
            obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
        if isinstance(obj.get("items"), list):
            obj["items"] = [_strip_managed_fields(i) for i in obj["items"]]
    return obj


# --------------------------------------------------------------------------- store


class Store:
    def __init__(self, clock):
        self.clock = clock
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 1000
        self.objects: dict[tuple, dict] = {}  # (group, plural, ns, name) -> object
        self.log: list[tuple[int, str, Kind, dict]] = []  # (rv, type, kind, obj) for watches

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def key(self, kind: Kind, ns: str, name: str) -> tuple:
        return (kind.group, kind.plural, ns if kind.namespaced else "", name)

    def get(self, kind: Kind, ns: str, name: str) -> dict | None:
        with self.lock:
            obj = self.objects.get(self.key(kind, ns, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: Kind, ns: str | None) -> list[dict]:
        with self.lock:
            out = [copy.deepcopy(o) for (g, p, n, _), o in self.objects.items()
                   if g == kind.group and p == kind.plural and (not ns or not kind.namespaced or n == ns)]
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    def _notify(self, typ: str, kind: Kind, obj: dict) -> None:
        self.log.append((int(obj["metadata"]["resourceVersion"]), typ, kind, copy.deepcopy(obj)))
        del self.log[:-2000]
        self.cond.notify_all()

    def put(self, kind: Kind, obj: dict, created: bool) -> dict:
        with self.lock:
            md = obj.setdefault("metadata", {})
            md["resourceVersion"] = self.next_rv()
            self.objects[self.key(kind, md.get("namespace", ""), md["name"])] = obj
            self._notify("ADDED" if created else "MODIFIED", kind, obj)
            return copy.deepcopy(obj)

    def delete(self, kind: Kind, ns: str, name: str) -> dict | None:
        with self.lock:
            obj = self.objects.pop(self.key(kind, ns, name), None)
            if obj is not None:
                obj["metadata"]["resourceVersion"] = self.next_rv()
                self._notify("DELETED", kind, obj)
            return obj


# --------------------------------------------------------------------------- request info


@dataclass
class RequestInfo:
    resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: list = field(default_factory=list)


def parse_request_info(method: str, path: str, query: dict) -> RequestInfo:
    """k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory, simplified."""
    method_verb = method.lower()
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(False, path, method_verb)
    prefix = parts[0]
    cur = parts[1:]
    if prefix == "apis":
        if len(cur) < 2:
            return RequestInfo(False, path, method_verb)
        group, version, cur = cur[0], cur[1], cur[2:]
    else:
        if len(cur) < 1:
            return RequestInfo(False, path, method_verb)
        group, version, cur = "", cur[0], cur[1:]
    if not cur:  # /api/v1, /apis/apps/v1: discovery, a non-resource request
        return RequestInfo(False, path, method_verb)
    info = RequestInfo(True, path, "", prefix, group, version)
    verb = {"post": "create", "get": "get", "head": "get", "put": "update", "patch": "patch",
            "delete": "delete"}.get(method_verb, method_verb)
    if cur[0] == "watch":  # legacy /watch/ paths
        verb = "watch"
        cur = cur[1:]
    if cur and cur[0] == "namespaces":
        if len(cur) > 1:
            info.namespace = cur[1]
            if len(cur) > 2 and cur[2] not in ("status", "finalize"):
                cur = cur[2:]
    info.resource = cur[0] if cur else ""
    if len(cur) >= 2:
        info.name = cur[1]
    if len(cur) >= 3:
        info.subresource = cur[2]
    info.parts = cur
    if not info.name and verb == "get":
        verb = "list"
    if verb in ("list", "get") and query.get("watch", [""])[0] in ("1", "true"):
        verb = "watch"
    if verb == "delete" and not info.name:
        verb = "deletecollection"
    if verb in ("list", "watch") and not info.name and "fieldSelector" in query:
        # upstream: a list/watch of one object by fieldSelector metadata.name=X is named X
        for term in query["fieldSelector"][0].split(","):
            m = re.match(r"^\s*metadata\.name\s*==?\s*(.+?)\s*$", term)
            if m:
                info.name = m.group(1)
    info.verb = verb
    return info


# --------------------------------------------------------------------------- tables

_COLUMNS = {
    "pods": [("Ready", "string"), ("Status", "string"), ("Restarts", "string")],
    "deployments": [("Ready", "string"), ("Up-to-date", "string"), ("Available", "string")],
    "services": [("Type", "string"), ("Cluster-IP", "string"), ("Ports", "string")],
    "configmaps": [("Data", "integer")],
    "secrets": [("Type", "string"), ("Data", "integer")],
    "namespaces": [("Status", "string")],
    "nodes": [("Status", "string"), ("Roles", "string"), ("Version", "string")],
}


def _cells(kind: Kind, obj: dict) -> list:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind.plural == "pods":
        n = len(spec.get("containers") or [])
        return [f"{n}/{n}", status.get("phase", "Running"), "0"]
    if kind.plural == "deployments":
        r = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
        return [f"{ready}/{r}", status.get("updatedReplicas", 0), status.get("availableReplicas", 0)]
    if kind.plural == "services":
        ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or [])
        return [spec.get("type", "ClusterIP"), spec.get("clusterIP", "None"), ports or "<none>"]
    if kind.plural == "configmaps":
        return [len(obj.get("data") or {}) + len(obj.get("binaryData") or {})]
    if kind.plural == "secrets":
        return [obj.get("type", "Opaque"), len(obj.get("data") or {})]
    if kind.plural == "namespaces":
        return [status.get("phase", "Active")]
    if kind.plural == "nodes":
        return ["Ready", "<none>", (status.get("nodeInfo") or {}).get("kubeletVersion", "v1.32.4")]
    return []


def make_table(kind: Kind, objs: list[dict], now: float, list_meta: dict) -> dict:
    cols = [{"name": "Name", "type": "string", "format": "name",
             "description": "Name must be unique within a namespace.", "priority": 0}]
    for name, typ in _COLUMNS.get(kind.plural, []):
        cols.append({"name": name, "type": typ, "format": "", "description": name, "priority": 0})
    cols.append({"name": "Age", "type": "string", "format": "",
                 "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
                 "priority": 0})
    rows = []
    for o in objs:
        md = {k: v for k, v in o["metadata"].items() if k != "managedFields"}
        rows.append({"cells": [o["metadata"]["name"], *_cells(kind, o),
                               _age(o["metadata"].get("creationTimestamp"), now)],
                     "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": md}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": cols, "rows": rows}


# --------------------------------------------------------------------------- openapi
#
# kubectl (v1.32) needs OpenAPI for two things here:
#  * validation (--validate=strict, the default) asks /openapi/v3 whether the
#    PATCH operation of the object's GVK takes the ``fieldValidation`` query
#    parameter; if so it leaves validation to the server (fieldValidation=Strict)
#    and needs no schema.  Without /openapi/v3 (and /openapi/v2) kubectl
#    refuses create/apply ("failed to download openapi").
#  * client-side apply looks for a PATCH operation accepting
#    application/strategic-merge-patch+json to build the patch from OpenAPI;
#    our operations declare no request body, so it falls back to /openapi/v2
#    (404 here) and then to the Go structs compiled into kubectl, which is
#    exactly right for built-in kinds.
# So we serve a root document plus one small document per group-version with
# only PATCH operations and their query parameters; no schemas (``kubectl
# explain`` therefore does not work).


def _gv_key(kind: Kind) -> str:
    return "api/v1" if not kind.group else f"apis/{kind.group}/{kind.version}"


def openapi_v3_root() -> dict:
    keys = sorted({_gv_key(k) for k in KINDS})
    return {"paths": {k: {"serverRelativeURL": f"/openapi/v3/{k}?hash=TESTAPISERVER0001"} for k in keys}}


def openapi_v3_gv(key: str) -> dict | None:
    kinds = [k for k in KINDS if _gv_key(k) == key]
    if not kinds:
        return None
    params = [{"name": n, "in": "query", "schema": {"type": "string" if n != "force" else "boolean"},
               "uniqueItems": True}
              for n in ("dryRun", "fieldManager", "fieldValidation", "force", "pretty")]
    paths = {}
    for k in kinds:
        if "patch" not in k.verbs:
            continue
        base = "/" + key + ("/namespaces/{namespace}" if k.namespaced else "") + f"/{k.plural}/{{name}}"
        gvk = {"group": k.group, "version": k.version, "kind": k.kind}
        paths[base] = {"patch": {"operationId": f"patch{k.kind}", "tags": [key.replace("/", "_")],
                                  "parameters": params, "responses": {"200": {"description": "OK"}},
                                  "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"}, "paths": paths,
            "components": {"schemas": {}}}


# --------------------------------------------------------------------------- the server


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0
    tls: bool = True
    policy: Policy | None = None
    policy_text: str | None = None
    audit: AuditOptions = field(default_factory=AuditOptions)
    ground_truth_path: str | None = None
    tokens: dict | None = None
    clock: Any = None
    watch_max_seconds: float = 10.0
    seed_objects: bool = True
    cert_dir: str | None = None


DEFAULT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: []
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps"]
  - level: RequestResponse
"""


class ApiServer:
    def __init__(self, opts: ServerOptions | None = None, **kw):
        opts = opts or ServerOptions(**kw)
        self.opts = opts
        self.clock = opts.clock or RealClock()
        self.policy = opts.policy or load_policy(opts.policy_text or DEFAULT_POLICY)
        self.tokens = dict(opts.tokens or DEFAULT_TOKENS)
        self.store = Store(self.clock)
        self.audit = AuditPipeline(opts.audit, self.clock)
        self.authorize = default_authorize
        self._gt_lock = threading.Lock()
        self._gt = open(opts.ground_truth_path, "a", encoding="utf-8") if opts.ground_truth_path else None
        self.requests: list[dict] = []  # ground truth, in memory too
        self.httpd = _HTTPServer((opts.host, opts.port), _Handler)
        self.httpd.api = self
        self.ca_pem: str | None = None
        if opts.tls:
            self._setup_tls()
        self._thread: threading.Thread | None = None
        if opts.seed_objects:
            self.seed()

    # ------------------------------------------------------------ lifecycle
    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.opts.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "ApiServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="apiserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutting_down = True
        with self.store.cond:
            self.store.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.audit.flush()
        self.audit.close()
        if self._gt:
            self._gt.close()

    def __enter__(self) -> "ApiServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _setup_tls(self) -> None:
        from .tlsutil import make_self_signed
        cert_dir = self.opts.cert_dir or __import__("tempfile").mkdtemp(prefix="apiserver-tls-")
        cert, key = make_self_signed(cert_dir)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        with open(cert) as fh:
            self.ca_pem = fh.read()

    # ------------------------------------------------------------ kubeconfig
    def token_for(self, user: str) -> str:
        for tok, u in self.tokens.items():
            if u.username == user:
                return tok
        raise KeyError(user)

    def kubeconfig(self, path: str, user: str = "alice", namespace: str | None = None,
                   token: str | None = None, extra_users: tuple = ("admin", "bob")) -> str:
        """Write a kubeconfig for ``user`` (context ``test``); other users get their
        own contexts ``test-<name>``."""
        cluster: dict = {"server": self.url}
        if self.opts.tls:
            import base64
            cluster["certificate-authority-data"] = base64.b64encode(self.ca_pem.encode()).decode()
        users = [user] + [u for u in extra_users if u != user]
        cfg = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": u, "user": {"token": token if (token is not None and u == user) else self.token_for(u)}}
                      for u in users],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user,
                                                        **({"namespace": namespace} if namespace else {})}}]
                        + [{"name": f"test-{u}", "context": {"cluster": "test", "user": u}} for u in users[1:]],
            "current-context": "test",
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            yaml.safe_dump(cfg, fh)
        os.chmod(path, 0o600)
        return path

    # ------------------------------------------------------------ data
    def now_ts(self) -> str:
        return rfc3339(self.clock.now())

    def new_meta(self, md: dict) -> dict:
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", self.now_ts())
        return md

    def add(self, kind_plural: str, obj: dict, group: str = "") -> dict:
        kind = next(k for k in KINDS if k.plural == kind_plural and k.group == group)
        obj.setdefault("apiVersion", kind.group_version)
        obj.setdefault("kind", kind.kind)
        self.new_meta(obj["metadata"])
        self._defaults(kind, obj, None)
        return self.store.put(kind, obj, created=True)

    def seed(self) -> None:
        for ns in ("default", "kube-system", "kube-public", "payments", "staging"):
            self.add("namespaces", {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        for n in ("node-1", "node-2"):
            self.add("nodes", {"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}},
                               "status": {"nodeInfo": {"kubeletVersion": "v1.32.4"},
                                          "conditions": [{"type": "Ready", "status": "True"}]}})
        self.add("services", {"metadata": {"name": "kubernetes", "namespace": "default"},
                              "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1",
                                       "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}})
        for ns, name, app in (("default", "web-6d4cf56db6-abcde", "web"), ("payments", "api-0", "api"),
                              ("kube-system", "coredns-0", "coredns")):
            self.add("pods", {"metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
                              "spec": {"nodeName": "node-1", "containers": [{"name": app, "image": f"example/{app}:1"}]},
                              "status": {"phase": "Running"}})
        self.add("deployments", {"metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                                 "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                          "template": {"metadata": {"labels": {"app": "web"}},
                                                       "spec": {"containers": [{"name": "web", "image": "example/web:1"}]}}}},
                 group="apps")
        self.add("deployments", {"metadata": {"name": "api", "namespace": "payments", "labels": {"app": "api"}},
                                 "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                                          "template": {"metadata": {"labels": {"app": "api"}},
                                                       "spec": {"containers": [{"name": "api", "image": "example/api:1"}]}}}},
                 group="apps")
        self.add("configmaps", {"metadata": {"name": "app-config", "namespace": "default"}, "data": {"mode": "prod"}})
        self.add("secrets", {"metadata": {"name": "db-password", "namespace": "payments"}, "type": "Opaque",
                             "data": {"password": "aHVudGVyMg=="}})
        self.add("secrets", {"metadata": {"name": "bootstrap-token", "namespace": "kube-system"}, "type": "Opaque",
                             "data": {"token": "c2VjcmV0"}})
        self.add("clusterroles", {"metadata": {"name": "view"}, "rules": []}, group="rbac.authorization.k8s.io")

    def _defaults(self, kind: Kind, obj: dict, old: dict | None) -> None:
        md = obj["metadata"]
        if kind.plural == "deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            old_spec = (old or {}).get("spec")
            gen = (old or {}).get("metadata", {}).get("generation", 0)
            md["generation"] = gen + 1 if old is None or old_spec != spec else gen
            r = spec["replicas"]
            obj["status"] = {"observedGeneration": md["generation"], "replicas": r, "updatedReplicas": r,
                             "readyReplicas": r, "availableReplicas": r,
                             "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                                            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}
        elif kind.plural == "pods":
            obj.setdefault("status", {}).setdefault("phase", "Running")
        elif kind.plural == "services":
            obj.setdefault("spec", {}).setdefault("type", "ClusterIP")
            obj["spec"].setdefault("clusterIP", "10.96.%d.%d" % (len(self.store.objects) % 250, 10))
        elif kind.plural == "namespaces":
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif kind.plural == "secrets":
            obj.setdefault("type", "Opaque")

    # ------------------------------------------------------------ ground truth
    def record_ground_truth(self, entry: dict) -> None:
        with self._gt_lock:
            self.requests.append(entry)
            if self._gt:
                self._gt.write(json.dumps(entry, separators=(",", ":")) + "\n")
                self._gt.flush()

    # ------------------------------------------------------------ events helpers
    def audit_events(self) -> list[dict]:
        """Every event emitted so far (regardless of delivery)."""
        with self.audit._lock:
            return list(self.audit.emitted)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    shutting_down = False
    api: ApiServer

    def handle_error(self, request, client_address):  # keep test output quiet on disconnects
        pass


# --------------------------------------------------------------------------- per-request audit context


class AuditContext:
    def __init__(self, api: ApiServer, handler: "_Handler", info: RequestInfo, user: UserInfo | None):
        self.api, self.info, self.user = api, info, user
        self.audit_id = str(uuid.uuid4())
        self.received = api.clock.now()
        self.skew = api.opts.audit.skew
        self.impersonated: UserInfo | None = None
        self.annotations: dict = {}
        self.request_object: Any = None
        self.response_object: Any = None
        self.object_ref_extra: dict = {}
        self.handler = handler
        attrs = RequestAttributes(
            user=user.username if user else "", groups=list(user.groups) if user else [],
            verb=info.verb, namespace=info.namespace, resource=info.resource, subresource=info.subresource,
            api_group=info.group, name=info.name, path=info.path, resource_request=info.resource_request,
            api_version=info.version)
        self.decision = api.policy.evaluate(attrs)
        self.level = self.decision.level

    def _base(self, stage: str) -> dict:
        h = self.handler
        ev: dict = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": self.level.value,
                    "auditID": self.audit_id, "stage": stage, "requestURI": h.path, "verb": self.info.verb,
                    "user": self.user.to_json() if self.user else {}}
        if self.impersonated is not None and stage != Stage.REQUEST_RECEIVED.value:
            ev["impersonatedUser"] = self.impersonated.to_json()
        xff = [p.strip() for p in (h.headers.get("X-Forwarded-For") or "").split(",") if p.strip()]
        ev["sourceIPs"] = xff + [h.client_address[0]]
        ua = h.headers.get("User-Agent")
        if ua is not None:
            ev["userAgent"] = ua
        if self.info.resource_request:
            ref = {"resource": self.info.resource}
            late = self.object_ref_extra if stage != Stage.REQUEST_RECEIVED.value else {}
            ns = self.info.namespace or late.get("namespace", "")
            if ns:
                ref["namespace"] = ns
            name = self.info.name or late.get("name", "")
            if name:
                ref["name"] = name
            if stage != Stage.REQUEST_RECEIVED.value:
                for k in ("uid", "resourceVersion"):
                    if self.object_ref_extra.get(k):
                        ref[k] = self.object_ref_extra[k]
            ref["apiGroup"] = self.info.group
            ref["apiVersion"] = self.info.version
            if self.info.subresource:
                ref["subresource"] = self.info.subresource
            ev["objectRef"] = ref
        return ev

    def emit(self, stage: str, code: int | None = None, status: dict | None = None) -> None:
        if self.level == Level.NONE or self.decision.stage_omitted(stage):
            return
        ev = self._base(stage)
        if code is not None:
            if status is not None and code >= 300:
                rs = {"metadata": {}}
                for k in ("status", "message", "reason", "details"):
                    if k in status:
                        rs[k] = status[k]
                rs["code"] = code
            else:
                rs = {"metadata": {}, "code": code}
            ev["responseStatus"] = rs
        omf = self.decision.omit_managed_fields
        if stage != Stage.REQUEST_RECEIVED.value and self.level >= Level.REQUEST and self.request_object is not None:
            ev["requestObject"] = _strip_managed_fields(self.request_object) if omf else self.request_object
        if (stage == Stage.RESPONSE_COMPLETE.value and self.level >= Level.REQUEST_RESPONSE
                and self.response_object is not None):
            ev["responseObject"] = _strip_managed_fields(self.response_object) if omf else self.response_object
        ev["requestReceivedTimestamp"] = rfc3339_micro(self.received + self.skew)
        ev["stageTimestamp"] = rfc3339_micro(self.api.clock.now() + self.skew)
        if stage != Stage.REQUEST_RECEIVED.value and self.annotations:
            ev["annotations"] = dict(self.annotations)
        self.api.audit.emit(ev)


# --------------------------------------------------------------------------- handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, like Go's net/http: otherwise Nagle holds each body write (sent after its headers)
    # until the client's delayed ACK, ~40 ms per keep-alive call, unlike a real kube-apiserver
    disable_nagle_algorithm = True
    server: _HTTPServer

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    # --------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Audit-Id", getattr(self, "_audit_id", ""))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self) -> None:
        api = self.server.api
        body = self._read_body()
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        info = parse_request_info(self.command, split.path, query)
        user = self._authenticate()
        ctx = AuditContext(api, self, info, user)
        self._audit_id = ctx.audit_id
        api.record_ground_truth({
            "auditID": ctx.audit_id, "userAgent": self.headers.get("User-Agent"),
            "kubectlSession": self.headers.get("Kubectl-Session"),
            "kubectlCommand": self.headers.get("Kubectl-Command"),
            "method": self.command, "requestURI": self.path, "verb": info.verb,
            "contentType": self.headers.get("Content-Type"),
            "impersonateUser": self.headers.get("Impersonate-User"),
            "user": user.username if user else None, "receivedAt": rfc3339_micro(ctx.received)})
        if user is None:
            # WithFailedAuthenticationAudit: one event, stage ResponseStarted, 401
            err = ApiError(401, "Unauthorized", "Unauthorized")
            ctx.emit(Stage.RESPONSE_STARTED.value, 401, err.status())
            self._send(401, err.status())
            return
        ctx.emit(Stage.REQUEST_RECEIVED.value)
        try:
            effective = self._impersonate(ctx, user)
            self._authorize(ctx, effective, info)
            code, resp, ctype = self._serve(ctx, effective, info, query, body)
        except ApiError as e:
            ctx.response_object = e.status()
            ctx.emit(Stage.RESPONSE_COMPLETE.value, e.code, e.status())
            self._send(e.code, e.status())
            return
        except _Streamed:
            return
        except Exception as exc:  # a bug in the test server: answer 500, keep serving
            import traceback
            traceback.print_exc()
            err = ApiError(500, "InternalError", f"test apiserver: {exc!r}")
            ctx.emit(Stage.RESPONSE_COMPLETE.value, 500, err.status())
            self._send(500, err.status())
            return
        if ctype == "application/json" and isinstance(resp, (dict, list)):
            ctx.response_object = resp if info.resource_request else None
        ctx.emit(Stage.RESPONSE_COMPLETE.value, code, resp if isinstance(resp, dict) else None)
        self._send(code, resp, ctype)

    def _authenticate(self) -> UserInfo | None:
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            return self.server.api.tokens.get(auth[7:].strip())
        return None

    def _impersonate(self, ctx: AuditContext, user: UserInfo) -> UserInfo:
        name = self.headers.get("Impersonate-User")
        groups = self.headers.get_all("Impersonate-Group") or []
        if not name:
            return user
        api = self.server.api
        ok, reason = api.authorize(user, "impersonate", "", "users", "", name)
        ctx.annotations["authorization.k8s.io/decision"] = "allow" if ok else "forbid"
        ctx.annotations["authorization.k8s.io/reason"] = reason
        if not ok:
            raise ApiError(403, "Forbidden",
                           f'users "{name}" is forbidden: User "{user.username}" cannot impersonate resource '
                           f'"users" in API group "" at the cluster scope', {"name": name, "kind": "users"})
        imp = UserInfo(name, list(groups) + ([] if "system:authenticated" in groups else ["system:authenticated"]))
        ctx.impersonated = imp
        return imp

    def _authorize(self, ctx: AuditContext, user: UserInfo, info: RequestInfo) -> None:
        api = self.server.api
        if info.resource in ("selfsubjectreviews", "selfsubjectaccessreviews"):
            ok, reason = True, ('RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole '
                                '"system:basic-user" to Group "system:authenticated"')
        else:
            ok, reason = api.authorize(user, info.verb, info.group, info.resource if info.resource_request else "",
                                       info.namespace, info.name, info.subresource, info.path)
        ctx.annotations["authorization.k8s.io/decision"] = "allow" if ok else "forbid"
        ctx.annotations["authorization.k8s.io/reason"] = reason
        if ok:
            return
        if not info.resource_request:
            raise ApiError(403, "Forbidden", f'forbidden: User "{user.username}" cannot {info.verb} path "{info.path}"', {})
        res = info.resource + (f"/{info.subresource}" if info.subresource else "")
        scope = (f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope")
        subject = f'{info.resource}.{info.group}' if info.group else info.resource
        prefix = f'{subject} "{info.name}" is forbidden' if info.name else f"{subject} is forbidden"
        raise ApiError(403, "Forbidden",
                       f'{prefix}: User "{user.username}" cannot {info.verb} resource "{res}" in API group '
                       f'"{info.group}" {scope}',
                       {**({"name": info.name} if info.name else {}),
                        **({"group": info.group} if info.group else {}), "kind": info.resource})

    # --------------------------------------------------------------- serving
    def _serve(self, ctx, user, info: RequestInfo, query: dict, body: bytes):
        api = self.server.api
        if not info.resource_request:
            return self._non_resource(info)
        kind = BY_GVR.get((info.group, info.version, info.resource))
        if kind is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        if info.namespace and kind.namespaced and info.resource != "namespaces":
            if api.store.get(BY_GVR[("", "v1", "namespaces")], "", info.namespace) is None and info.verb in ("create",):
                raise ApiError(404, "NotFound", f'namespaces "{info.namespace}" not found',
                               {"name": info.namespace, "kind": "namespaces"})
        if kind.plural == "selfsubjectreviews":
            req = self._decode(body, ctx)
            return 201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                         "metadata": {"creationTimestamp": None},
                         "status": {"userInfo": user.to_json()}}, "application/json"
        if kind.plural == "selfsubjectaccessreviews":
            req = self._decode(body, ctx)
            spec = req.get("spec") or {}
            ra = spec.get("resourceAttributes")
            if ra:
                ok, reason = api.authorize(user, ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
                                           ra.get("namespace", ""), ra.get("name", ""), ra.get("subresource", ""))
            else:
                nra = spec.get("nonResourceAttributes") or {}
                ok, reason = api.authorize(user, nra.get("verb", ""), "", "", "", "", "", nra.get("path", ""))
            out = dict(req)
            out.setdefault("metadata", {})["creationTimestamp"] = None
            out["status"] = {"allowed": ok, **({"reason": reason} if reason else {})}
            if not ok:
                out["status"]["denied"] = False
            return 201, out, "application/json"
        handler = getattr(self, f"_verb_{info.verb}", None)
        if handler is None:
            raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource", {})
        return handler(ctx, user, kind, info, query, body)

    def _non_resource(self, info: RequestInfo):
        p = info.path.rstrip("/") or "/"
        api = self.server.api
        if info.verb not in ("get", "head"):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})
        if p == "/version":
            return 200, SERVER_VERSION, "application/json"
        if p == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                         "serverAddress": f"127.0.0.1:{api.port}"}]}, "application/json"
        if p == "/apis":
            groups = []
            for g in GROUP_ORDER:
                vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in GROUPS[g]]
                groups.append({"name": g, "versions": vs, "preferredVersion": vs[0]})
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}, "application/json"
        m = re.match(r"^/api/(v1)$|^/apis/([^/]+)/([^/]+)$", p)
        if m:
            group, version = (("", "v1") if m.group(1) else (m.group(2), m.group(3)))
            ks = [k for k in KINDS if k.group == group and k.version == version]
            if not ks:
                raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
            res = []
            for k in ks:
                entry = {"name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
                         "verbs": list(k.verbs)}
                if k.short:
                    entry["shortNames"] = list(k.short)
                if k.categories:
                    entry["categories"] = list(k.categories)
                res.append(entry)
                for sub in k.subresources:
                    sk = {"scale": ("Scale", "autoscaling", "v1")}.get(sub)
                    e = {"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                         "kind": sk[0] if sk else k.kind, "verbs": ["get", "patch", "update"] if sub != "log" else ["get"]}
                    if sk:
                        e["group"], e["version"] = sk[1], sk[2]
                    res.append(e)
            return 200, {"kind": "APIResourceList", "apiVersion": "v1",
                         "groupVersion": f"{group}/{version}" if group else version, "resources": res}, "application/json"
        if p in ("/healthz", "/livez", "/readyz"):
            return 200, b"ok", "text/plain"
        if p == "/openapi/v3":
            return 200, openapi_v3_root(), "application/json"
        m = re.match(r"^/openapi/v3/(api/v1|apis/[^/]+/[^/]+)$", p)
        if m:
            doc = openapi_v3_gv(m.group(1))
            if doc is not None:
                return 200, doc, "application/json"
        # /openapi/v2 is not served (404): see openapi_v3_gv for why kubectl is happy anyway.
        raise ApiError(404, "NotFound", "the server could not find the requested resource", {})

    # --------------------------------------------------------------- object helpers
    def _decode(self, body: bytes, ctx: AuditContext, content_type: str | None = None) -> Any:
        ct = (content_type or self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
        try:
            if ct == "application/vnd.kubernetes.protobuf":
                try:
                    obj = protobuf.decode(body)
                except protobuf.ProtobufError as exc:
                    raise ApiError(415, "UnsupportedMediaType", str(exc), {})
            elif ct.endswith("yaml"):
                obj = yaml.safe_load(body.decode() or "{}")
            else:
                obj = json.loads(body.decode() or "{}")
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, "BadRequest", f"error decoding request body: {exc}", {})
        ctx.request_object = copy.deepcopy(obj)
        return obj

    def _wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

    def _field_manager(self, query: dict, default_op: str) -> str:
        fm = query.get("fieldManager", [""])[0]
        if fm:
            return fm
        ua = self.headers.get("User-Agent") or ""
        return ua.split("/", 1)[0] or "unknown"

    def _managed(self, obj: dict, manager: str, operation: str, kind: Kind, sub: str = "") -> None:
        md = obj.setdefault("metadata", {})
        mf = [m for m in md.get("managedFields") or [] if not (m.get("manager") == manager and m.get("operation") == operation)]
        entry = {"manager": manager, "operation": operation, "apiVersion": kind.group_version,
                 "time": self.server.api.now_ts(), "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}
        if sub:
            entry["subresource"] = sub
        mf.append(entry)
        md["managedFields"] = mf

    def _finish(self, ctx: AuditContext, obj: dict) -> None:
        """Nothing to do: kube-apiserver completes objectRef only from the request object."""

    @staticmethod
    def _ref_from_request(ctx: AuditContext, obj: Any) -> None:
        """audit.LogRequestObject: fill objectRef's empty namespace/name and its
        uid/resourceVersion from the decoded request object (create, update)."""
        md = obj.get("metadata") if isinstance(obj, dict) else None
        if isinstance(md, dict):
            ctx.object_ref_extra.update({k: md[k] for k in ("name", "namespace", "uid", "resourceVersion")
                                         if isinstance(md.get(k), str) and md.get(k)})

    def _check_dry_run(self, query: dict) -> bool:
        return "All" in query.get("dryRun", [])

    def _get_existing(self, kind: Kind, info: RequestInfo) -> dict:
        obj = self.server.api.store.get(kind, info.namespace, info.name)
        if obj is None:
            raise not_found(kind, info.name)
        return obj

    # --------------------------------------------------------------- verbs
    def _verb_get(self, ctx, user, kind: Kind, info: RequestInfo, query, body):
        api = self.server.api
        obj = self._get_existing(kind, info)
        self._finish(ctx, obj)
        if info.subresource == "log":
            return 200, f"log line 1 from {info.name}\nlog line 2 from {info.name}\n".encode(), "text/plain"
        if info.subresource == "scale":
            return 200, self._scale_of(kind, obj), "application/json"
        if self._wants_table():
            return 200, make_table(kind, [obj], api.clock.now(), {"resourceVersion": obj["metadata"]["resourceVersion"]}), "application/json"
        return 200, obj, "application/json"

    def _filtered(self, kind: Kind, info: RequestInfo, query: dict) -> list[dict]:
        objs = self.server.api.store.list(kind, info.namespace or None)
        fs = query.get("fieldSelector", [""])[0]
        ls = query.get("labelSelector", [""])[0]
        return [o for o in objs if (not fs or _match_field_selector(o, fs)) and (not ls or _match_label_selector(o, ls))]

    def _verb_list(self, ctx, user, kind: Kind, info: RequestInfo, query, body):
        api = self.server.api
        with api.store.lock:
            objs = self._filtered(kind, info, query)
            rv = str(api.store.rv)
        if self._wants_table():
            return 200, make_table(kind, objs, api.clock.now(), {"resourceVersion": rv}), "application/json"
        return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.group_version,
                     "metadata": {"resourceVersion": rv}, "items": objs}, "application/json"

    def _verb_watch(self, ctx: AuditContext, user, kind: Kind, info: RequestInfo, query, body):
        api = self.server.api
        store = api.store
        fs = query.get("fieldSelector", [""])[0]
        ls = query.get("labelSelector", [""])[0]
        if info.name:
            fs = ",".join(filter(None, [fs, f"metadata.name={info.name}"]))
        timeout = float(query.get("timeoutSeconds", ["0"])[0] or 0) or api.opts.watch_max_seconds
        timeout = min(timeout, api.opts.watch_max_seconds)
        try:
            since = int(query.get("resourceVersion", ["0"])[0] or 0)
        except ValueError:
            since = 0
        table = self._wants_table()
        # ResponseStarted: long-running requests only
        ctx.emit(Stage.RESPONSE_STARTED.value, 200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Audit-Id", ctx.audit_id)
        self.end_headers()

        def matches(k: Kind, o: dict) -> bool:
            if k is not kind:
                return False
            md = o["metadata"]
            if info.namespace and kind.namespaced and md.get("namespace") != info.namespace:
                return False
            return (not fs or _match_field_selector(o, fs)) and (not ls or _match_label_selector(o, ls))

        def write_event(typ: str, o: dict) -> None:
            payload = make_table(kind, [o], api.clock.now(), {}) if table else o
            if table:
                payload["rows"][0]["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                                "metadata": o["metadata"]}
            line = json.dumps({"type": typ, "object": payload}, separators=(",", ":")).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        deadline = time.monotonic() + timeout
        last = since or int(store.rv)
        try:
            while not self.server.shutting_down:
                if self._client_gone():
                    break
                with store.cond:
                    pending = [(rv, t, k, o) for rv, t, k, o in store.log if rv > last]
                    if not pending:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        store.cond.wait(min(remaining, 0.1))
                        continue
                for rv, t, k, o in pending:
                    last = max(last, rv)
                    if matches(k, o):
                        write_event(t, o)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        ctx.emit(Stage.RESPONSE_COMPLETE.value, 200)
        self.close_connection = True
        raise _Streamed()

    def _client_gone(self) -> bool:
        """True once the client closed a streaming connection."""
        import select
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            if isinstance(self.connection, ssl.SSLSocket):
                return self.connection.recv(1) == b""  # watch clients send nothing more
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError, ssl.SSLError):
            return True

    def _verb_create(self, ctx, user, kind: Kind, info: RequestInfo, query, body):
        api = self.server.api
        obj = self._decode(body, ctx)
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format", {})
        self._ref_from_request(ctx, obj)
        md = obj.setdefault("metadata", {})
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + uuid.uuid4().hex[:5]
        if not md.get("name"):
            raise ApiError(422, "Invalid", f"{kind.kind} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                           {"kind": kind.kind})
        if kind.namespaced:
            if md.get("namespace") and info.namespace and md["namespace"] != info.namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request", {})
            md["namespace"] = info.namespace or md.get("namespace") or "default"
        obj.setdefault("apiVersion", kind.group_version)
        obj.setdefault("kind", kind.kind)
        if api.store.get(kind, md.get("namespace", ""), md["name"]) is not None:
            qual = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise ApiError(409, "AlreadyExists", f'{qual} "{md["name"]}" already exists', _details(kind, md["name"]))
        md.pop("resourceVersion", None)
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = api.now_ts()
        api._defaults(kind, obj, None)
        self._managed(obj, self._field_manager(query, "Update"), "Update", kind)
        if self._check_dry_run(query):
            obj["metadata"]["resourceVersion"] = ""
            self._finish(ctx, obj)
            return 201, obj, "application/json"
        out = api.store.put(kind, obj, created=True)
        self._finish(ctx, out)
        return 201, out, "application/json"

    def _store_update(self, ctx, kind: Kind, old: dict, new: dict, query: dict, manager: str, operation: str):
        api = self.server.api
        md = new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "name", "namespace"):
            if k in old["metadata"]:
                md[k] = old["metadata"][k]
        new["apiVersion"], new["kind"] = old.get("apiVersion", kind.group_version), old.get("kind", kind.kind)
        api._defaults(kind, new, old)
        self._managed(new, manager, operation, kind)
        if self._check_dry_run(query):
            self._finish(ctx, new)
            return 200, new, "application/json"
        out = api.store.put(kind, new, created=False)
        self._finish(ctx, out)
        return 200, out, "application/json"

    def _scale_of(self, kind: Kind, obj: dict) -> dict:
        md = obj["metadata"]
        sel = ",".join(f"{k}={v}" for k, v in ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items())
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in md},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
                "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": sel}}

    def _apply_scale(self, ctx, kind, old, scale: dict, query):
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = int((scale.get("spec") or {}).get("replicas", 0))
        code, out, ct = self._store_update(ctx, kind, old, new, query, self._field_manager(query, "Update"), "Update")
        return code, self._scale_of(kind, out), ct

    def _verb_update(self, ctx, user, kind: Kind, info: RequestInfo, query, body):
        new = self._decode(body, ctx)
        self._ref_from_request(ctx, new)
        old = self._get_existing(kind, info)
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {kind.plural} "{info.name}": the object has been modified; '
                           "please apply your changes to the latest version and try again", _details(kind, info.name))
        if info.subresource == "scale":
            return self._apply_scale(ctx, kind, old, new, query)
        if info.subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            new = merged
        return self._store_update(ctx, kind, old, new, query, self._field_manager(query, "Update"), "Update")

    def _verb_patch(self, ctx, user, kind: Kind, info: RequestInfo, query, body):
        api = self.server.api
        ct = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        patch = self._decode(body, ctx, "application/yaml" if ct == "application/apply-patch+yaml" else "application/json")
        old = api.store.get(kind, info.namespace, info.name)
        if ct == "application/apply-patch+yaml":
            manager = query.get("fieldManager", [""])[0]
            if not manager:
                raise ApiError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch", {})
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "apply patch must be an object", {})
            if old is None:
                if info.subresource:
                    raise not_found(kind, info.name)
                md = patch.setdefault("metadata", {})
                md["name"] = info.name
                if kind.namespaced:
                    md["namespace"] = info.namespace
                md["uid"] = str(uuid.uuid4())
                md["creationTimestamp"] = api.now_ts()
                api._defaults(kind, patch, None)
                self._managed(patch, manager, "Apply", kind)
                if self._check_dry_run(query):
                    self._finish(ctx, patch)
                    return 201, patch, "application/json"
                out = api.store.put(kind, patch, created=True)
                self._finish(ctx, out)
                return 201, out, "application/json"
            new = strategic_merge(old, {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")})
            return self._store_update(ctx, kind, old, new, query, manager, "Apply")
        if old is None:
            raise not_found(kind, info.name)
        target = self._scale_of(kind, old) if info.subresource == "scale" else old
        if ct == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json patch must be a list of operations", {})
            new = json_patch(target, patch)
        elif ct == "application/merge-patch+json":
            new = merge_patch(target, patch)
        elif ct == "application/strategic-merge-patch+json":
            new = strategic_merge(target, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json", {})
        if info.subresource == "scale":
            return self._apply_scale(ctx, kind, old, new, query)
        return self._store_update(ctx, kind, old, new, query, self._field_manager(query, "Update"), "Update")

    def _verb_delete(self, ctx, user, kind: Kind, info: RequestInfo, query, body):
        api = self.server.api
        if body:
            self._decode(body, ctx)
        old = self._get_existing(kind, info)
        self._finish(ctx, old)
        if self._check_dry_run(query):
            return 200, old, "application/json"
        api.store.delete(kind, info.namespace, info.name)
        if kind.plural in ("pods", "deployments", "namespaces", "replicasets", "services"):
            # upstream returns the object for graceful deletions; a Status otherwise
            return 200, old, "application/json"
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {"name": info.name, **({"group": kind.group} if kind.group else {}),
                                 "kind": kind.plural, "uid": old["metadata"]["uid"]}}, "application/json"

    def _verb_deletecollection(self, ctx, user, kind: Kind, info: RequestInfo, query, body):
        api = self.server.api
        if body:
            self._decode(body, ctx)
        objs = self._filtered(kind, info, query)
        if not self._check_dry_run(query):
            for o in objs:
                api.store.delete(kind, o["metadata"].get("namespace", ""), o["metadata"]["name"])
        return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.group_version,
                     "metadata": {"resourceVersion": str(api.store.rv)}, "items": objs}, "application/json"


class _Streamed(Exception):
    """The handler already wrote the response (watch)."""
