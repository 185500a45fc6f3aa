"""Audit input shapes → normalized events.

Accepted, auto-detected per line (JSON lines) or per document (a JSON array or pretty-printed
objects, as `gcloud logging read --format=json` and `aws logs filter-log-events` print them):

* audit.k8s.io/v1 (and v1beta1) ``Event`` lines (log backend) and ``EventList`` objects (webhook);
* GKE Cloud Audit ``LogEntry`` (``protoPayload`` AuditLog, Cloud Logging JSON; also the Go struct
  dump with ``Entry``/``AuditPayload`` found in the wild);
* AKS diagnostic records: ``properties.log`` as a JSON string or an object, alone or inside
  ``{"records": [...]}``;
* EKS CloudWatch Logs: ``filter-log-events``/``get-log-events`` output (``events[].message``),
  single CloudWatch events (``message``), Logs Insights (``@message``), and S3 export lines
  (``<timestamp> <event JSON>``).

Everything becomes an :class:`Ev` tuple; anything that cannot be read is *counted*, never fatal.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any, Iterable, Iterator, NamedTuple

try:  # optional speed-up, 2-3x faster parsing
    import orjson as _orjson

    def loads(data: bytes | str) -> Any:
        return _orjson.loads(data)

    JSONError: tuple = (_orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - stdlib fallback
    import json as _json

    def loads(data: bytes | str) -> Any:
        return _json.loads(data)

    JSONError = (ValueError,)

import json as _stdjson

STAGE_RANK = {"RequestReceived": 1, "ResponseStarted": 2, "ResponseComplete": 3, "Panic": 4}
STAGE_BIT = {"RequestReceived": 1, "ResponseStarted": 2, "ResponseComplete": 4, "Panic": 8}


class Ev(NamedTuple):
    audit_id: str
    stage: str
    ts: float            # requestReceivedTimestamp (epoch seconds, as the server's clock says)
    verb: str
    user: str
    impersonated: str
    user_agent: str
    resource: str
    subresource: str
    namespace: str
    name: str
    api_group: str
    code: int | None
    decision: str
    path: str            # requestURI without the query
    manager: str = ""    # the fieldManager query parameter (writes), e.g. kubectl-label
    response_kind: str = ""  # responseObject's kind (RequestResponse level), e.g. Table, Pod, Status
    sets: str = ""           # what a patch sets that the command line names too (see sets_of)


class Counters:
    def __init__(self) -> None:
        self.lines = 0
        self.events = 0
        self.malformed = 0
        self.oversized = 0
        self.skipped = 0          # well-formed JSON that is not an audit event (e.g. other logs)
        self.duplicates = 0
        self.stored = 0
        self.first_errors: list[str] = []

    def bad(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{where}: {why}")

    def as_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "first_errors"}


# ---------------------------------------------------------------------------- time
_SEC_CACHE: dict[str, float] = {}


def parse_ts(value: Any) -> float | None:
    """RFC 3339 (any fraction, Z or offset) → epoch seconds; numbers are epoch s or ms."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1000.0 if value > 1e11 else float(value)
    if not isinstance(value, str) or len(value) < 19:
        return None
    head = value[:19]
    base = _SEC_CACHE.get(head)
    if base is None:
        try:
            base = _dt.datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.timezone.utc).timestamp()
        except ValueError:
            try:
                base = _dt.datetime.fromisoformat(head.replace(" ", "T")).replace(tzinfo=_dt.timezone.utc).timestamp()
            except ValueError:
                return None
        if len(_SEC_CACHE) > 100_000:
            _SEC_CACHE.clear()
        _SEC_CACHE[head] = base
    if len(value) == 27 and value[26] == "Z" and value[19] == ".":  # the API server's own format
        return base + int(value[20:26]) / 1e6
    if len(value) == 24 and value[23] == "Z" and value[19] == ".":  # the recorder's own (ms)
        return base + int(value[20:23]) / 1e3
    rest = value[19:]
    frac = 0.0
    if rest.startswith("."):
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        if i > 1:
            frac = float("0" + rest[:i])
        rest = rest[i:]
    if rest and rest not in ("Z", "z", "+00:00", "-00:00"):
        m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", rest)
        if not m:
            return None
        off = int(m.group(2)) * 3600 + int(m.group(3)) * 60
        return base + frac - (off if m.group(1) == "+" else -off)
    return base + frac


# ---------------------------------------------------------------------------- raw Event
def _s(v: Any) -> str:
    return v if type(v) is str else ""


def from_event(obj: dict) -> Ev | None:
    """A k8s audit Event (v1 / v1beta1) → Ev; None when it is not one (no auditID)."""
    audit_id = obj.get("auditID")
    if not isinstance(audit_id, str) or not audit_id:
        return None
    stage = _s(obj.get("stage")) or "ResponseComplete"
    ts = parse_ts(obj.get("requestReceivedTimestamp")) or parse_ts(obj.get("stageTimestamp")) \
        or parse_ts(obj.get("timestamp"))
    if ts is None:
        return None
    user = obj.get("user")
    username = _s(user.get("username")) if isinstance(user, dict) else ""
    imp = obj.get("impersonatedUser")
    impname = _s(imp.get("username")) if isinstance(imp, dict) else ""
    ref = obj.get("objectRef")
    if not isinstance(ref, dict):
        ref = {}
    rs = obj.get("responseStatus")
    code = rs.get("code") if isinstance(rs, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    ann = obj.get("annotations")
    decision = _s(ann.get("authorization.k8s.io/decision")) if isinstance(ann, dict) else ""
    uri = _s(obj.get("requestURI"))
    q = uri.find("?")
    path = uri if q < 0 else uri[:q]
    ro = obj.get("responseObject")
    response_kind = _s(ro.get("kind"))[:64] if isinstance(ro, dict) else ""
    verb = _s(obj.get("verb"))
    sets = sets_of(verb, _s(ref.get("subresource")), obj.get("requestObject")) if verb == "patch" else ""
    manager = ""
    if q >= 0:
        m = uri.find("fieldManager=", q)
        if m >= 0:
            end = uri.find("&", m)
            manager = uri[m + 13:end if end >= 0 else len(uri)][:128]
    return Ev(audit_id, stage, ts, verb, username, impname, _s(obj.get("userAgent")),
              _s(ref.get("resource")), _s(ref.get("subresource")), _s(ref.get("namespace")),
              _s(ref.get("name")), _s(ref.get("apiGroup")), code, decision, path[:512], manager,
              response_kind, sets)


# Patches whose body the command line names: labels and annotations (`kubectl label/annotate`
# send a merge patch of only what changes), a scale's replicas.
_SETS_MAPS = (("labels", "label"), ("annotations", "annotate"))
SETS_MAX = 1024


def sets_of(verb: str, subresource: str, body: Any) -> str:
    """What a patch request sets that its command line also names, as sorted lines `label:k=v`,
    `annotate:k-` (removed), `replicas:3`; masked as the recorder masks those words in a
    command line (sets_items), so nothing is kept that the record would not show. '' when the
    body says none of it (Metadata level, another kind of patch)."""
    if verb != "patch" or not isinstance(body, dict):
        return ""
    items: list[str] = []
    spec = body.get("spec")
    if subresource == "scale" and isinstance(spec, dict):
        n = spec.get("replicas")
        if isinstance(n, int) and not isinstance(n, bool):
            items.append(f"replicas:{n}")
    meta = body.get("metadata")
    if isinstance(meta, dict):
        for key, cmd in _SETS_MAPS:
            m = meta.get(key)
            if isinstance(m, dict) and m:
                items += sets_items(cmd, [f"{k}-" if v is None else f"{k}={v}" for k, v in m.items()
                                          if isinstance(v, str) or v is None])
    return "\n".join(sorted(items))[:SETS_MAX]


def sets_items(command: str, pairs: list[str]) -> list[str]:
    """`kubectl label/annotate` KEY=VALUE / KEY- words as sets_of's lines, masked by the
    recorder's own rules for that command's arguments (values cut short: they only need to
    tell two runs apart)."""
    if not pairs:
        return []
    from ..redact import mask_argv  # only for the rare patch with a body

    masked, _ = mask_argv([command, "pod", "x", *pairs])
    return [f"{command}:{w.replace(chr(10), ' ')[:200]}" for w in masked[3:]]


# Events of other clients (controllers, Dashboard…) only count per user agent and user: they
# skip the full normalization (set by importer: CLIENT_FILTER(ua) is True for kubectl-like).
CLIENT_FILTER = None


def _light(obj: dict, ua: str) -> Ev | None:
    audit_id = obj.get("auditID")
    if not isinstance(audit_id, str) or not audit_id:
        return None
    ts = parse_ts(obj.get("requestReceivedTimestamp")) or parse_ts(obj.get("stageTimestamp"))
    if ts is None:
        return None
    user = obj.get("user")
    rs = obj.get("responseStatus")
    code = rs.get("code") if isinstance(rs, dict) else None
    return Ev(audit_id, _s(obj.get("stage")) or "ResponseComplete", ts, "", _s(user.get("username")) if isinstance(user, dict) else "",
              "", ua, "", "", "", "", "", code if isinstance(code, int) else None, "", "")


# ---------------------------------------------------------------------------- GKE
# google.rpc.Code → HTTP status (approximate: GKE keeps only the gRPC code).
_GRPC_HTTP = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400,
              10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
_VERSION_RE = re.compile(r"^v\d+((alpha|beta)\d+)?$")


def _g(d: Any, *keys: str) -> Any:
    """d[k] for the first key present (camelCase or snake_case spellings)."""
    if not isinstance(d, dict):
        return None
    for k in keys:
        if k in d:
            return d[k]
    return None


def parse_method(method: str) -> tuple[str, str, str, str]:
    """io.k8s.core.v1.pods.exec.create → (group, resource, subresource, verb)."""
    parts = method.split(".")
    if len(parts) < 4 or parts[0] != "io" or parts[1] != "k8s":
        return "", "", "", parts[-1] if parts else ""
    verb = parts[-1]
    body = parts[2:-1]
    vi = next((i for i, p in enumerate(body) if _VERSION_RE.match(p)), None)
    if vi is None:
        return "", body[-1] if body else "", "", verb
    group_parts = body[:vi]
    group = "" if group_parts == ["core"] else ".".join(reversed(group_parts)) + (
        ".k8s.io" if group_parts and group_parts[0] in ("authorization", "authentication", "certificates",
                                                        "admissionregistration", "networking", "storage",
                                                        "scheduling", "coordination", "discovery", "node",
                                                        "events", "rbac", "flowcontrol", "apiextensions",
                                                        "apiregistration", "metrics") and "k8s" not in group_parts
        else "")
    rest = body[vi + 1:]
    resource = rest[0] if rest else ""
    sub = rest[1] if len(rest) > 1 else ""
    return group, resource, sub, verb


def _resource_name(rn: str) -> tuple[str, str]:
    """core/v1/namespaces/default/pods/NAME[/exec/...] → (namespace, name)."""
    parts = [p for p in rn.split("/") if p]
    ns = name = ""
    if "namespaces" in parts:
        i = parts.index("namespaces")
        if i + 1 < len(parts):
            ns = parts[i + 1]
            rest = parts[i + 2:]
        else:
            rest = []
        if len(rest) >= 2:
            name = rest[1]
        elif len(rest) == 0 and i + 1 < len(parts):
            # the namespace object itself
            pass
    elif len(parts) >= 4:
        name = parts[3]
    return ns, name


def from_gke(entry: dict) -> Ev | None:
    payload = _g(entry, "protoPayload", "proto_payload")
    inner = entry
    if payload is None and isinstance(entry.get("Entry"), dict):  # Go struct dump
        inner = entry["Entry"]
        payload = _g(inner, "Payload", "payload")
        ap = entry.get("AuditPayload")
        if isinstance(ap, str):
            try:
                payload = loads(ap)
            except JSONError:
                pass
    if not isinstance(payload, dict):
        return None
    method = _s(_g(payload, "methodName", "method_name"))
    if not method.startswith("io.k8s."):
        return None
    op = _g(inner, "operation", "Operation") or {}
    audit_id = _s(_g(op, "id", "Id")) or _s(_g(inner, "insertId", "InsertID", "insert_id"))
    if not audit_id:
        return None
    first, last = _g(op, "first", "First"), _g(op, "last", "Last")
    stage = "ResponseStarted" if first and not last else "ResponseComplete"
    ts = parse_ts(_g(inner, "timestamp", "Timestamp"))
    if ts is None:
        return None
    group, resource, sub, verb = parse_method(method)
    ns, name = _resource_name(_s(_g(payload, "resourceName", "resource_name")))
    if resource == "namespaces" and not name:
        name, ns = ns, ""
    auth = _g(payload, "authenticationInfo", "authentication_info") or {}
    meta = _g(payload, "requestMetadata", "request_metadata") or {}
    status = _g(payload, "status", "Status") or {}
    gcode = _g(status, "code", "Code")
    code = _GRPC_HTTP.get(gcode, 500) if isinstance(gcode, int) else 200
    if stage == "ResponseStarted" and sub in ("exec", "attach", "portforward") and code == 200:
        code = 101
    labels = _g(inner, "labels", "Labels") or {}
    decision = _s(labels.get("authorization.k8s.io/decision")) if isinstance(labels, dict) else ""
    if not decision:
        ai = _g(payload, "authorizationInfo", "authorization_info")
        if isinstance(ai, list) and ai and isinstance(ai[0], dict):
            decision = "allow" if ai[0].get("granted") else "forbid"
    # the request body (RequestResponse level) is `request`, with an "@type" added
    sets = sets_of(verb, sub, _g(payload, "request")) if verb == "patch" else ""
    return Ev(audit_id, stage, ts, verb, _s(_g(auth, "principalEmail", "principal_email")), "",
              _s(_g(meta, "callerSuppliedUserAgent", "caller_supplied_user_agent")), resource, sub, ns, name,
              group, code, decision, "/" + _s(_g(payload, "resourceName", "resource_name")), sets=sets)


# ---------------------------------------------------------------------------- dispatch
def events_from_obj(obj: Any, counters: Counters, where: str = "") -> Iterator[Ev]:
    """Every audit event inside one decoded JSON value (recursing through wrappers)."""
    if isinstance(obj, list):
        for item in obj:
            yield from events_from_obj(item, counters, where)
        return
    if not isinstance(obj, dict):
        counters.bad(where, f"not an object ({type(obj).__name__})")
        return
    if "auditID" in obj:
        ev = _event(obj, counters, where)
        if ev is not None:
            yield ev
        return
    items = obj.get("items")
    if isinstance(items, list) and (obj.get("kind") == "EventList" or not obj.get("kind")):
        for item in items:
            yield from events_from_obj(item, counters, where)
        return
    if "protoPayload" in obj or "proto_payload" in obj or ("Entry" in obj and "AuditPayload" in obj):
        ev = from_gke(obj)
        if ev is None:
            counters.skipped += 1
        else:
            counters.events += 1
            yield ev
        return
    props = obj.get("properties")
    if isinstance(props, dict) and "log" in props:  # AKS diagnostic record
        yield from _embedded(props["log"], "AKS properties.log", counters, where)
        return
    records = obj.get("records")
    if isinstance(records, list):  # AKS / Azure Monitor blob
        for item in records:
            yield from events_from_obj(item, counters, where)
        return
    evs = obj.get("events")
    if isinstance(evs, list):  # aws logs filter-log-events / get-log-events
        for item in evs:
            yield from events_from_obj(item, counters, where)
        return
    for key in ("message", "@message"):  # one CloudWatch log event
        msg = obj.get(key)
        if isinstance(msg, (str, dict)):
            yield from _embedded(msg, "CloudWatch message", counters, where)
            return
    counters.skipped += 1


def _event(obj: dict, counters: Counters, where: str) -> Ev | None:
    """One raw Event, counted (other clients' read lightly, see CLIENT_FILTER)."""
    ua = obj.get("userAgent")
    if CLIENT_FILTER is not None and isinstance(ua, str) and not CLIENT_FILTER(ua):
        ev = _light(obj, ua)
    else:
        ev = from_event(obj)
    if ev is None:
        counters.bad(where, "audit event without a usable auditID or timestamp")
    else:
        counters.events += 1
    return ev


def _embedded(value: Any, what: str, counters: Counters, where: str) -> Iterator[Ev]:
    """Events inside a wrapper's field, which holds them as an object or as JSON text."""
    if isinstance(value, str):
        try:
            value = loads(value)
        except JSONError as exc:
            counters.bad(where, f"{what} is not JSON: {exc}")
            return
    yield from events_from_obj(value, counters, where)


_TS_PREFIX = re.compile(rb"^\d{4}-\d\d-\d\dT[0-9:.]+Z? ")


def events_from_line(line: bytes, counters: Counters, where: str = "") -> list[Ev]:
    """One JSON line (or a CloudWatch S3 export line ``<ts> <json>``)."""
    counters.lines += 1
    s = line.strip()
    if not s:
        counters.lines -= 1
        return []
    if s[:1] != b"{" and s[:1] != b"[":
        m = _TS_PREFIX.match(s)
        if m:
            s = s[m.end():]
    try:
        obj = loads(s)
    except JSONError as exc:
        counters.bad(where, f"invalid JSON: {str(exc)[:80]}")
        return []
    if type(obj) is dict and "auditID" in obj:  # a log line: one event (no generator, per line)
        ev = _event(obj, counters, where)
        return [] if ev is None else [ev]
    return list(events_from_obj(obj, counters, where))


def iter_documents(chunks: Iterable[bytes], counters: Counters, where: str = "") -> Iterator[Any]:
    """Concatenated / pretty-printed JSON values (a `[...]` array is yielded element by element
    only after it is complete: gcloud/aws outputs are documents, not streams)."""
    dec = _stdjson.JSONDecoder()
    buf = ""
    for chunk in chunks:
        buf += chunk.decode("utf-8", "replace")
        while True:
            stripped = buf.lstrip()
            if not stripped:
                buf = ""
                break
            try:
                obj, end = dec.raw_decode(stripped)
            except ValueError:
                break
            buf = stripped[end:]
            yield obj
    if buf.strip():
        counters.bad(where, "truncated JSON document at end of input")


def looks_like_document(head: bytes) -> bool:
    """True when the input is not JSON lines: an array (gcloud), or a pretty-printed object
    (aws logs … --output json) whose first line is a lone "{"."""
    s = head.lstrip()
    if s.startswith(b"["):
        return True
    first = s.split(b"\n", 1)[0].strip()
    return first == b"{"
