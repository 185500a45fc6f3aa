"""Audit input shapes (kubectl_record/audit/formats.py, importer.py): every shared sample, the
managed-cloud shapes as their CLIs print them, and hostile input."""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
from pathlib import Path

import pytest

from kubectl_record import store
from kubectl_record.audit import formats
from kubectl_record.audit.formats import Counters
from kubectl_record.audit.importer import Sink, import_file, import_stream

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "audit-samples"
if not SAMPLES.is_dir():  # CI lays shared/ beside the clone
    SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "audit-samples"

EXPECTED = {  # file -> (events, first auditID, stage of the first)
    "audit2rbac_demo_v1.log": 37,
    "audit2rbac_demo_v1beta1_original.log": 757,
    "elastic-integrations_test-audit.log": 5,
    "elastic-integrations_test-kube-audit.log": 1,
    "falco_k8s_audit_exec_pod.json": 1,
    "gke_stackdriver_logentry_exec_pod.json": 1,
}


@pytest.fixture(autouse=True)
def full_events(monkeypatch):
    """The importer reads other clients' events lightly (counts only); here every field is checked."""
    monkeypatch.setattr(formats, "CLIENT_FILTER", None)


def parse_bytes(data: bytes) -> tuple[list, Counters]:
    c = Counters()
    if formats.looks_like_document(data[:4096]):
        evs = [e for o in formats.iter_documents([data], c) for e in formats.events_from_obj(o, c)]
    else:
        evs = [e for line in data.splitlines() for e in formats.events_from_line(line, c)]
    return evs, c


def event(**kw) -> dict:
    ev = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": kw.pop("audit_id", "a-1"),
          "stage": kw.pop("stage", "ResponseComplete"), "requestURI": kw.pop("uri", "/api/v1/namespaces/default/pods?limit=500"),
          "verb": kw.pop("verb", "list"), "user": {"username": kw.pop("user", "alice"), "groups": ["system:authenticated"]},
          "userAgent": kw.pop("ua", "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07"),
          "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
          "responseStatus": {"metadata": {}, "code": kw.pop("code", 200)},
          "requestReceivedTimestamp": kw.pop("ts", "2026-11-27T19:12:23.123456Z"),
          "stageTimestamp": "2026-11-27T19:12:23.125Z",
          "annotations": {"authorization.k8s.io/decision": "allow"}}
    ev.update(kw)
    return ev


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_sample_parses(name):
    path = SAMPLES / name
    if not path.exists():
        pytest.skip(f"{path} not laid out here")
    evs, c = parse_bytes(path.read_bytes())
    assert len(evs) == EXPECTED[name] and c.malformed == 0
    for e in evs:
        assert e.audit_id and e.ts > 1e9 and e.verb


def test_sample_details():
    if not SAMPLES.is_dir():
        pytest.skip("shared samples not here")
    [gke] = parse_bytes((SAMPLES / "gke_stackdriver_logentry_exec_pod.json").read_bytes())[0]
    assert (gke.verb, gke.resource, gke.subresource, gke.namespace) == ("create", "pods", "exec", "default")
    assert gke.name == "hostnetwork-deployment-5dc5447c47-6ssdf" and gke.user == "mark.stemm@sysdig.com"
    assert gke.user_agent.startswith("kubectl/v1.11.10") and gke.stage == "ResponseStarted"
    [aks] = parse_bytes((SAMPLES / "elastic-integrations_test-kube-audit.log").read_bytes())[0]
    assert aks.resource == "leases" and aks.api_group == "coordination.k8s.io" and aks.user == "aksService"
    evs = parse_bytes((SAMPLES / "elastic-integrations_test-audit.log").read_bytes())[0]
    assert {e.user_agent for e in evs} >= {"kubectl/v1.26.1"}
    imp = parse_bytes((SAMPLES / "audit2rbac_demo_v1.log").read_bytes())[0]
    assert {e.impersonated for e in imp} >= {"bob", "alice"}


def test_gcloud_logging_read_json_array():
    """`gcloud logging read --format=json` prints a pretty JSON array of LogEntry objects."""
    entries = [{
        "insertId": "x1", "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity",
        "operation": {"first": True, "last": True, "id": "6d9c1e8a-aaaa-bbbb-cccc-000000000001", "producer": "k8s.io"},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": "alice@example.com"},
            "authorizationInfo": [{"granted": False, "permission": "io.k8s.core.v1.secrets.list",
                                   "resource": "core/v1/namespaces/kube-system/secrets"}],
            "methodName": "io.k8s.core.v1.secrets.list",
            "requestMetadata": {"callerIp": "10.0.0.1",
                                "callerSuppliedUserAgent": "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07"},
            "resourceName": "core/v1/namespaces/kube-system/secrets",
            "serviceName": "k8s.io", "status": {"code": 7, "message": "PERMISSION_DENIED"}},
        "receiveTimestamp": "2026-11-27T19:12:24.5Z",
        "resource": {"labels": {"cluster_name": "c1", "location": "europe-west1", "project_id": "p"}, "type": "k8s_cluster"},
        "timestamp": "2026-11-27T19:12:23.1Z",
        "labels": {"authorization.k8s.io/decision": "forbid"},
    }, {
        "insertId": "x2", "operation": {"id": "6d9c1e8a-aaaa-bbbb-cccc-000000000002", "first": True, "last": True},
        "protoPayload": {"methodName": "io.k8s.apps.v1.deployments.scale.patch",
                         "resourceName": "apps/v1/namespaces/shop/deployments/web/scale",
                         "authenticationInfo": {"principalEmail": "bob@example.com"},
                         "requestMetadata": {"callerSuppliedUserAgent": "kubectl/v1.32.4"}, "status": {}},
        "timestamp": "2026-11-27T19:12:25Z"}]
    text = json.dumps(entries, indent=2).encode()
    evs, c = parse_bytes(text)
    assert c.malformed == 0 and len(evs) == 2
    a, b = evs
    assert (a.verb, a.resource, a.namespace, a.code, a.decision) == ("list", "secrets", "kube-system", 403, "forbid")
    assert (b.verb, b.resource, b.subresource, b.namespace, b.name, b.api_group) == ("patch", "deployments", "scale", "shop", "web", "apps")
    assert b.code == 200


def test_aks_log_as_string_and_object_and_records_wrapper():
    inner = event(audit_id="aks-1")
    as_string = {"category": "kube-audit", "properties": {"log": json.dumps(inner), "pod": "kube-apiserver-x"}}
    as_object = {"category": "kube-audit-admin", "properties": {"log": event(audit_id="aks-2")}}
    blob = {"records": [as_string, as_object]}
    evs, c = parse_bytes((json.dumps(as_string) + "\n" + json.dumps(as_object) + "\n").encode())
    assert [e.audit_id for e in evs] == ["aks-1", "aks-2"]
    evs, c = parse_bytes(json.dumps(blob).encode())
    assert [e.audit_id for e in evs] == ["aks-1", "aks-2"]


def test_eks_cloudwatch_shapes():
    """`aws logs filter-log-events` JSON (pretty), single CloudWatch events, S3 export lines."""
    cw = {"events": [{"logStreamName": "kube-apiserver-audit-abc", "timestamp": 1795813000000,
                      "message": json.dumps(event(audit_id="eks-1")), "ingestionTime": 1795813001000, "eventId": "1"},
                     {"logStreamName": "kube-apiserver-audit-abc", "timestamp": 1795813000000,
                      "message": json.dumps(event(audit_id="eks-2")), "eventId": "2"}],
          "searchedLogStreams": []}
    evs, c = parse_bytes(json.dumps(cw, indent=4).encode())
    assert [e.audit_id for e in evs] == ["eks-1", "eks-2"] and c.malformed == 0
    s3 = ("2026-11-27T19:12:23.123Z " + json.dumps(event(audit_id="eks-3")) + "\n").encode()
    evs, c = parse_bytes(s3)
    assert [e.audit_id for e in evs] == ["eks-3"]
    one = json.dumps({"timestamp": 1795813000000, "message": json.dumps(event(audit_id="eks-4"))}).encode()
    assert [e.audit_id for e in parse_bytes(one)[0]] == ["eks-4"]


def test_webhook_eventlist():
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
                       "items": [event(audit_id="w1"), event(audit_id="w2", stage="RequestReceived")]})
    evs, c = parse_bytes(body.encode())
    assert [(e.audit_id, e.stage) for e in evs] == [("w1", "ResponseComplete"), ("w2", "RequestReceived")]


def test_hostile_lines_are_counted_never_fatal():
    good = json.dumps(event(audit_id="ok-1"))
    lines = [
        good[: len(good) // 2],                                   # truncated JSON
        "not json at all",
        "[1, 2, 3]",                                              # wrong type
        json.dumps(event(audit_id="bad-ts", requestReceivedTimestamp=12, stageTimestamp=None, timestamp=[])),
        json.dumps({**event(audit_id="wrong-types"), "objectRef": "pods", "user": ["x"], "verb": 5,
                    "responseStatus": {"code": "200"}, "annotations": None}),
        json.dumps({"auditID": 7}),
        json.dumps({"hello": "world"}),                           # some other log
        "\x00\xff\xfe garbage",
        good,
    ]
    data = "\n".join(lines).encode("utf-8", "surrogateescape")
    evs, c = parse_bytes(data)
    ids = [e.audit_id for e in evs]
    assert "ok-1" in ids and "wrong-types" in ids
    wt = next(e for e in evs if e.audit_id == "wrong-types")
    assert wt.verb == "" and wt.resource == "" and wt.code is None and wt.user == ""
    assert c.malformed >= 5 and c.skipped >= 1


def _conn(tmp_path) -> sqlite3.Connection:
    return store.connect(str(tmp_path / "db" / "records.db"))


def test_huge_event_is_skipped_with_bounded_memory(tmp_path, monkeypatch):
    from kubectl_record.audit import importer

    monkeypatch.setattr(importer, "MAX_LINE", 64 * 1024)
    big = event(audit_id="huge", requestObject={"data": "x" * 300_000})
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(big) + "\n" + json.dumps(event(audit_id="after")) + "\n")
    conn = _conn(tmp_path)
    c = Counters()
    sink = Sink(conn, "https://k", c)
    import_file(conn, str(log), sink, c)
    assert c.oversized == 1
    assert [r[0] for r in conn.execute("SELECT audit_id FROM audit_events")] == ["after"]
    # within the limit, a large event is just an event
    monkeypatch.setattr(importer, "MAX_LINE", 16 * 1024 * 1024)
    log2 = tmp_path / "audit2.log"
    log2.write_text(json.dumps(big) + "\n")
    c = Counters()
    import_file(conn, str(log2), Sink(conn, "https://k", c), c)
    assert c.stored == 1 and c.oversized == 0


def test_repeated_audit_id_and_stage_are_ignored(tmp_path):
    conn = _conn(tmp_path)
    lines = [event(audit_id="d1", stage="RequestReceived"), event(audit_id="d1", stage="ResponseComplete"),
             event(audit_id="d1", stage="ResponseComplete"), event(audit_id="d1", stage="RequestReceived")]
    c = Counters()
    import_stream(io.BufferedReader(io.BytesIO(("\n".join(map(json.dumps, lines)) + "\n").encode())),
                  Sink(conn, "https://k", c), c)
    assert c.events == 4 and c.duplicates == 2
    row = conn.execute("SELECT stages, rank, code FROM audit_events WHERE audit_id = 'd1'").fetchone()
    assert row == (1 | 4, 3, 200)


def test_stages_of_one_request_are_stored_once_and_counted_per_stage(tmp_path):
    # a request's stages usually come together (one row written), sometimes across deliveries;
    # a batch delivered twice is all repeated
    conn = _conn(tmp_path)
    table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": []}
    batches = [
        [event(audit_id="a", stage="RequestReceived", code=None), event(audit_id="a", responseObject=table),
         event(audit_id="b", stage="RequestReceived", code=None)],
        [event(audit_id="a", stage="RequestReceived", code=None), event(audit_id="a", responseObject=table),
         event(audit_id="b", stage="RequestReceived", code=None)],
        [event(audit_id="b", stage="RequestReceived", code=None), event(audit_id="b", code=403, responseObject=table),
         event(audit_id="c")],
    ]
    counts = []
    for lines in batches:
        c = Counters()
        import_stream(io.BufferedReader(io.BytesIO(("\n".join(map(json.dumps, lines)) + "\n").encode())),
                      Sink(conn, "https://k", c), c)
        counts.append((c.stored, c.duplicates))
    assert counts == [(3, 0), (0, 3), (2, 1)]
    rows = conn.execute("SELECT audit_id, stages, code, response_kind FROM audit_events ORDER BY audit_id").fetchall()
    assert rows == [("a", 1 | 4, 200, "Table"), ("b", 1 | 4, 403, "Table"), ("c", 4, 200, "")]


def test_the_response_kind_is_kept_from_whichever_stage_logs_it(tmp_path):
    # RequestResponse level: only ResponseComplete carries the responseObject (a Table for
    # `kubectl get`'s own printing); the RequestReceived stage arriving later does not erase it
    conn = _conn(tmp_path)
    table = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "rows": []}
    lines = [event(audit_id="t1", level="RequestResponse", responseObject=table),
             event(audit_id="t1", stage="RequestReceived"), event(audit_id="m1")]
    c = Counters()
    import_stream(io.BufferedReader(io.BytesIO(("\n".join(map(json.dumps, lines)) + "\n").encode())),
                  Sink(conn, "https://k", c), c)
    rows = dict(conn.execute("SELECT audit_id, response_kind FROM audit_events"))
    assert rows == {"t1": "Table", "m1": ""}


@pytest.mark.parametrize("verb,sub,body,sets", [
    ("patch", "", {"metadata": {"labels": {"s4": "v29"}}}, "label:s4=v29"),       # kubectl label
    ("patch", "", {"metadata": {"annotations": {"n1": "v2", "gone": None}}}, "annotate:gone-\nannotate:n1=v2"),
    ("patch", "", {"metadata": {"annotations": {"api-token": "abc123"}}}, "annotate:api-token=***"),  # masked
    ("patch", "scale", {"spec": {"replicas": 3}}, "replicas:3"),                   # kubectl scale
    ("patch", "", {"spec": {"replicas": 3}}, ""),                                  # not the scale subresource
    ("patch", "", {"spec": {"template": {"metadata": {"annotations": {"x": "y"}}}}}, ""),  # rollout restart
    ("update", "", {"metadata": {"labels": {"app": "web"}}}, ""),                  # a whole object
    ("patch", "", None, ""),                                                        # Metadata level
    ("patch", "", {"metadata": {"labels": ["wrong", "type"]}}, ""),
])
def test_what_a_patch_sets_is_kept_masked(verb, sub, body, sets):
    ref = {"resource": "deployments" if sub else "pods", "namespace": "default", "name": "w"}
    if sub:
        ref["subresource"] = sub
    obj = event(verb=verb, objectRef=ref, level="RequestResponse")
    if body is not None:
        obj["requestObject"] = body
    assert formats.from_event(obj).sets == sets


def test_a_gke_patch_keeps_what_it_sets():
    entry = {"operation": {"id": "6d9c1e8a-aaaa-bbbb-cccc-000000000003", "first": True, "last": True},
             "protoPayload": {"methodName": "io.k8s.core.v1.pods.patch",
                              "resourceName": "core/v1/namespaces/shop/pods/web-0",
                              "authenticationInfo": {"principalEmail": "bob@example.com"},
                              "requestMetadata": {"callerSuppliedUserAgent": "kubectl/v1.32.4"}, "status": {},
                              "request": {"@type": "k8s.io/Patch", "metadata": {"labels": {"tier": "gold"}}}},
             "timestamp": "2026-11-27T19:12:25Z"}
    (ev,), _ = parse_bytes(json.dumps(entry).encode())
    assert (ev.verb, ev.name, ev.sets) == ("patch", "web-0", "label:tier=gold")


def test_gzip_and_resume_positions(tmp_path):
    conn = _conn(tmp_path)
    gz = tmp_path / "audit-old.log.gz"
    with gzip.open(gz, "wt") as f:
        for i in range(5):
            f.write(json.dumps(event(audit_id=f"g{i}")) + "\n")
    live = tmp_path / "audit.log"
    live.write_text("".join(json.dumps(event(audit_id=f"l{i}")) + "\n" for i in range(3)))
    for path in (gz, live):
        c = Counters()
        import_file(conn, str(path), Sink(conn, "https://k", c), c)
    assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 8
    # appended lines (and a half-written one) only: the rest is not read again
    with open(live, "a") as f:
        f.write(json.dumps(event(audit_id="l3")) + "\n" + json.dumps(event(audit_id="l4"))[:40])
    c = Counters()
    import_file(conn, str(live), Sink(conn, "https://k", c), c)
    assert (c.lines, c.stored, c.malformed) == (1, 1, 0)
    c = Counters()
    import_file(conn, str(gz), Sink(conn, "https://k", c), c)
    assert c.lines == 0


def test_an_events_fields_from_ts_on_are_the_stored_columns_in_order():
    # Sink builds each row as (audit_id, server, stages, rank) + Ev[2:]
    from kubectl_record.audit import importer

    columns = importer._INSERT.split("(", 1)[1].split(")", 1)[0].replace(" ", "").split(",")
    assert columns[:4] == ["audit_id", "server", "stages", "rank"]
    assert columns[4:] == [{"user_agent": "ua"}.get(f, f) for f in formats.Ev._fields[2:]]
