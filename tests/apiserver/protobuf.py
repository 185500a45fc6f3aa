"""Just enough of Kubernetes' protobuf encoding to read what kubectl's typed
clients POST (``Content-Type: application/vnd.kubernetes.protobuf``):
``kubectl create deployment|configmap|secret|namespace|service``, ``kubectl run``,
``auth whoami`` and ``auth can-i``.  Field numbers are those of the
generated.proto files of k8s.io/api and k8s.io/apimachinery; unknown fields
are skipped.  Responses are always JSON (client-go accepts either)."""

from __future__ import annotations

import base64
import datetime as _dt

MAGIC = b"k8s\x00"

S, B, I, BOOL = "string", "bytes", "int", "bool"


def _rep(t):
    return ("rep", t)


def _map(t):
    return ("map", t)


TIME = {"1": ("seconds", I), "2": ("nanos", I)}
OBJECT_META = {
    1: ("name", S), 2: ("generateName", S), 3: ("namespace", S), 5: ("uid", S), 6: ("resourceVersion", S),
    7: ("generation", I), 8: ("creationTimestamp", "time"), 11: ("labels", _map(S)), 12: ("annotations", _map(S)),
    14: ("finalizers", _rep(S)),
}
INT_OR_STRING = "intorstring"
CONTAINER_PORT = {1: ("name", S), 2: ("hostPort", I), 3: ("containerPort", I), 4: ("protocol", S), 5: ("hostIP", S)}
ENV_VAR = {1: ("name", S), 2: ("value", S)}
RESOURCES = {1: ("limits", _map("quantity")), 2: ("requests", _map("quantity"))}
CONTAINER = {
    1: ("name", S), 2: ("image", S), 3: ("command", _rep(S)), 4: ("args", _rep(S)), 5: ("workingDir", S),
    6: ("ports", _rep(CONTAINER_PORT)), 7: ("env", _rep(ENV_VAR)), 8: ("resources", RESOURCES),
    13: ("terminationMessagePath", S), 14: ("imagePullPolicy", S), 16: ("stdin", BOOL), 18: ("tty", BOOL),
    20: ("terminationMessagePolicy", S),
}
POD_SPEC = {
    2: ("containers", _rep(CONTAINER)), 3: ("restartPolicy", S), 4: ("terminationGracePeriodSeconds", I),
    6: ("dnsPolicy", S), 7: ("nodeSelector", _map(S)), 8: ("serviceAccountName", S), 10: ("nodeName", S),
    19: ("schedulerName", S), 20: ("initContainers", _rep(CONTAINER)),
}
POD_TEMPLATE_SPEC = {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC)}
LABEL_SELECTOR_REQ = {1: ("key", S), 2: ("operator", S), 3: ("values", _rep(S))}
LABEL_SELECTOR = {1: ("matchLabels", _map(S)), 2: ("matchExpressions", _rep(LABEL_SELECTOR_REQ))}
DEPLOYMENT_STRATEGY = {1: ("type", S)}
DEPLOYMENT_SPEC = {
    1: ("replicas", I), 2: ("selector", LABEL_SELECTOR), 3: ("template", POD_TEMPLATE_SPEC),
    4: ("strategy", DEPLOYMENT_STRATEGY), 5: ("minReadySeconds", I), 6: ("revisionHistoryLimit", I),
    7: ("paused", BOOL), 9: ("progressDeadlineSeconds", I),
}
SERVICE_PORT = {1: ("name", S), 2: ("protocol", S), 3: ("port", I), 4: ("targetPort", INT_OR_STRING), 5: ("nodePort", I)}
SERVICE_SPEC = {1: ("ports", _rep(SERVICE_PORT)), 2: ("selector", _map(S)), 3: ("clusterIP", S), 4: ("type", S)}
RESOURCE_ATTRIBUTES = {1: ("namespace", S), 2: ("verb", S), 3: ("group", S), 4: ("version", S), 5: ("resource", S),
                       6: ("subresource", S), 7: ("name", S)}
NON_RESOURCE_ATTRIBUTES = {1: ("path", S), 2: ("verb", S)}

KIND_SCHEMAS = {
    "ConfigMap": {1: ("metadata", OBJECT_META), 2: ("data", _map(S)), 3: ("binaryData", _map(B)), 4: ("immutable", BOOL)},
    "Secret": {1: ("metadata", OBJECT_META), 2: ("data", _map(B)), 3: ("type", S), 4: ("stringData", _map(S)),
               5: ("immutable", BOOL)},
    "Namespace": {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", _rep(S))}), 3: ("status", {1: ("phase", S)})},
    "Deployment": {1: ("metadata", OBJECT_META), 2: ("spec", DEPLOYMENT_SPEC), 3: ("status", {})},
    "Pod": {1: ("metadata", OBJECT_META), 2: ("spec", POD_SPEC), 3: ("status", {})},
    "Service": {1: ("metadata", OBJECT_META), 2: ("spec", SERVICE_SPEC), 3: ("status", {})},
    "SelfSubjectReview": {1: ("metadata", OBJECT_META), 2: ("status", {})},
    "SelfSubjectAccessReview": {1: ("metadata", OBJECT_META),
                                2: ("spec", {1: ("resourceAttributes", RESOURCE_ATTRIBUTES),
                                             2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES)}),
                                3: ("status", {})},
    "DeleteOptions": {1: ("gracePeriodSeconds", I), 4: ("propagationPolicy", S), 5: ("dryRun", _rep(S))},
}


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wt}")
        yield num, wt, val


def _scalar(t, val):
    if t == S:
        return val.decode("utf-8")
    if t == B:
        return base64.b64encode(val).decode()
    if t == I:
        return val - (1 << 64) if val >= 1 << 63 else val
    if t == BOOL:
        return bool(val)
    if t == "quantity":  # resource.Quantity: message { string = 1 }
        for num, _, v in _fields(val):
            if num == 1:
                return v.decode()
        return "0"
    if t == "time":
        secs = dict((n, v) for n, _, v in _fields(val)).get(1, 0)
        if not secs:
            return None
        return _dt.datetime.fromtimestamp(secs, tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if t == INT_OR_STRING:
        d = {n: v for n, _, v in _fields(val)}
        return d.get(3, b"").decode() if d.get(1, 0) == 1 else d.get(2, 0)
    if isinstance(t, dict):
        return decode_message(val, t)
    raise ProtobufError(f"unknown type {t!r}")


def decode_message(buf: bytes, schema: dict) -> dict:
    out: dict = {}
    for num, _, val in _fields(buf):
        spec = schema.get(num)
        if spec is None:
            continue
        name, t = spec
        if isinstance(t, tuple) and t[0] == "rep":
            out.setdefault(name, []).append(_scalar(t[1], val))
        elif isinstance(t, tuple) and t[0] == "map":
            entry = {n: v for n, _, v in _fields(val)}
            out.setdefault(name, {})[entry.get(1, b"").decode()] = _scalar(t[1], entry.get(2, b""))
        else:
            v = _scalar(t, val)
            # Go's generated marshallers write every non-pointer scalar; JSON
            # (omitempty) would not: drop the zero values that mean "unset".
            if v is None or v == "" or v is False or (v == 0 and t == I and name in _OMIT_ZERO):
                continue
            out[name] = v
    return out


_OMIT_ZERO = {"generation", "hostPort", "minReadySeconds", "nodePort", "nanos", "seconds"}


def decode(body: bytes) -> dict:
    """Decode a k8s protobuf envelope into the JSON form of the object."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing k8s protobuf magic")
    unknown = {n: v for n, _, v in _fields(body[4:])}
    type_meta = {n: v.decode() for n, _, v in _fields(unknown.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    schema = KIND_SCHEMAS.get(kind)
    if schema is None:
        raise ProtobufError(f"the test apiserver cannot decode protobuf {kind or 'objects'} ({api_version})")
    obj = {"kind": kind, "apiVersion": api_version}
    obj.update(decode_message(unknown.get(2, b""), schema))
    return obj
