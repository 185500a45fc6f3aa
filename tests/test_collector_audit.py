"""The collector's audit webhook and central correlation, as real processes on SQLite and
PostgreSQL: the suite's API server posts EventList batches (each delivered twice) with a cluster
token, the real kubectl runs through the recorder, records are pushed by a writer, and the
collector links them with the local engine; access, limits and hostile events; the schema
upgrade of a version 1 database; one pass at a time per cluster across instances."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

from kubectl_record.collector.storage import Access, open_storage

from .apiserver.audit import OffsetClock
from .apiserver.fixtures import KUBECTL, apiserver_factory  # noqa: F401  (fixture)
from .collectorkit import Collector, child_env, db_url, issue, synthetic  # noqa: F401
from .conftest import require

WEBHOOK = "/v1/audit/webhook"


def cluster_token(db: str, name: str, server: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "kubectl_record", "token", "create", "--db", db, "--user",
                           f"apiserver-{name}", "--role", "cluster", "--cluster", name, "--server", server],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def event(audit_id: str, stage: str = "ResponseComplete", ua: str = "kubectl/v1.32.4 (linux/amd64) kubernetes/abc",
          ts: str = "2026-03-01T10:00:00.000000Z", **extra) -> dict:
    ev = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": audit_id, "stage": stage,
          "requestURI": "/api/v1/namespaces/default/pods", "verb": "list", "user": {"username": "alice"},
          "userAgent": ua, "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
          "responseStatus": {"code": 200}, "requestReceivedTimestamp": ts, "stageTimestamp": ts}
    ev.update(extra)
    return ev


def event_list(*events: dict, version: str = "audit.k8s.io/v1") -> bytes:
    return json.dumps({"kind": "EventList", "apiVersion": version, "metadata": {}, "items": list(events)}).encode()


def rows(db: str, sql: str, params=()) -> list[tuple]:
    storage = open_storage(db)
    try:
        with storage.transaction() as tx:
            return tx.all(sql, params)
    finally:
        storage.close()


def wait_for(what, timeout: float = 30.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


# --- end to end -----------------------------------------------------------------------------------


def test_kubectl_runs_are_linked_centrally(db_url, tmp_path, recorder, apiserver_factory):
    require("kubectl", os.path.exists(KUBECTL))
    c = Collector(db_url, args=("--audit-delay", "0.2")).start()
    try:
        writer, auditor = issue(db_url, "alice"), issue(db_url, "audrey", "auditor", "test-*")
        other_auditor = issue(db_url, "oscar", "auditor", "prod-*")
        # The API server's webhook kubeconfig carries this token; every batch arrives twice.
        h = apiserver_factory(audit_log=False, webhook_url=c.url + WEBHOOK, batch_size=5, batch_max_wait=0.2,
                              duplicate_rate=1.0, retry_backoff=0.0, clock=OffsetClock())
        # Its URL is known once it runs: the token is made for it then (as an admin would, before
        # writing the webhook kubeconfig).
        h.server.audit.opts.webhook_token = token = cluster_token(db_url, "test-1", h.url + "/")

        env = dict(recorder.env, PATH=f"{recorder.tmp / 'bin'}:{recorder.env['PATH']}",
                   KUBECONFIG=str(h.kubeconfig("alice")), KUBECTL_RECORD_COLLECTOR=c.url,
                   KUBECTL_RECORD_TOKEN=writer)

        def run(*args: str, **extra: str) -> int:
            return subprocess.run(["kubectl-record", "--", *args], env={**env, **extra}, capture_output=True,
                                  text=True, timeout=60).returncode

        assert run("get", "pods") == 0
        assert run("get", "secrets", "-n", "kube-system") == 1
        assert run("get", "configmaps", KUBECTL_RECORD_AUDIT_MARKER="1") == 0
        # Someone bypassing the recorder, later: unmatched, and it moves the source past the runs.
        h.clock.advance(10)
        assert h.kubectl("get", "deployments", "-n", "kube-system", user="admin").returncode == 0
        h.flush()
        h.flush()  # the repeated batches
        # A controller's requests are counted by userAgent and user, twice delivered or not.
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        controller = event("ctl-1", ua="kube-scheduler/v1.32.4 (linux/amd64) kubernetes/abc/scheduler", ts=now,
                           user={"username": "system:kube-scheduler"})
        for _ in range(2):
            assert c.post(WEBHOOK, token, data=event_list(controller)).status_code == 200
        push = subprocess.run([sys.executable, "-m", "kubectl_record", "push", "--wait"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert push.returncode == 0, push.stderr

        # Every (auditID, stage) stored once, though every batch came twice.
        kubectl_stages = {(e["auditID"], e["stage"]) for e in h.emitted()
                          if e["userAgent"].split("/")[0] == "kubectl" or e["userAgent"].startswith("kubectl+r.")}
        stored = rows(db_url, "SELECT audit_id, stage FROM audit_events WHERE kubectl = 1")
        assert len(stored) == len(set(stored)) == len(kubectl_stages) and set(stored) == kubectl_stages
        assert h.server.audit.posted_batches >= 2 * len(kubectl_stages) // 5

        def settled():
            recs = c.get("/v1/records", writer).json()["records"]
            done = all((r["audit"] or {}).get("central") and r["audit"]["status"] != "pending" for r in recs)
            return {r["command"]: r for r in recs} if done and len(recs) == 3 else None

        recs = wait_for(settled)
        assert recs, c.get("/v1/records", writer).json()
        get = recs["kubectl get pods"]
        assert get["audit"]["status"] == "strong" and get["audit"]["central"]["cluster"] == "test-1"
        assert [(e["verb"], e["resource"], e["code"]) for e in get["audit"]["events"]
                if e["resource"] == "pods"] == [("list", "pods", 200)]
        # The record as uploaded is kept beside it (this laptop has no audit source of its own).
        assert get["audit_uploaded"] is None
        secrets = recs["kubectl get secrets -n kube-system"]
        assert secrets["exit_code"] == 1 and secrets["audit"]["status"] == "strong"
        [refused] = [e for e in secrets["audit"]["events"] if e["resource"] == "secrets"]
        assert (refused["code"], refused["decision"]) == (403, "forbid")
        assert recs["kubectl get configmaps"]["audit"]["status"] == "exact"
        # history --team shows the server's answer beside the exit status.
        team = subprocess.run([sys.executable, "-m", "kubectl_record", "history", "--team"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert team.returncode == 0, team.stderr
        row = next(line for line in team.stdout.splitlines() if "get secrets" in line)
        assert "403 forbid" in row

        # The bypassing run: server-side kubectl activity with no record, for auditors in scope.
        r = c.get("/v1/audit/unmatched", auditor)
        assert r.status_code == 200, r.text
        [report] = r.json()["clusters"]
        assert report["cluster"] == "test-1" and report["server"] == h.url
        [group] = report["server_side"]
        assert group["user"] == "admin" and any("deployments -n kube-system" in call for call in group["calls"])
        assert [(o["user"], o["user_agent"], o["requests"]) for o in report["other_clients"]] == [
            ("system:kube-scheduler", "kube-scheduler/v1.32.4 (linux/amd64)", 1)]
        assert set(report["ignored"]) == {"kubectl-dispatcher"}  # kubectl's own GET /version
        assert c.get("/v1/audit/unmatched", other_auditor).json() == {"clusters": []}
        assert c.get("/v1/audit/unmatched", writer).status_code == 403
        log = rows(db_url, "SELECT user_name, what FROM access_log WHERE what = 'audit-unmatched'")
        assert sorted(log) == [("audrey", "audit-unmatched"), ("oscar", "audit-unmatched")]
    finally:
        c.kill()


# --- access, limits, bad input --------------------------------------------------------------------


def test_cluster_tokens_only_post_audit_batches(db_url, tmp_path):
    c = Collector(db_url, args=("--max-body", "65536")).start()
    try:
        token = cluster_token(db_url, "prod-eu", "https://prod-eu.example:6443")
        writer, admin = issue(db_url, "alice"), issue(db_url, "root", "admin")
        auditor = issue(db_url, "audrey", "auditor")
        body = event_list(event("a1"))

        assert c.post(WEBHOOK, None, data=body).status_code == 401
        assert "missing token" in c.post(WEBHOOK, None, data=body).json()["error"]
        assert c.post(WEBHOOK, "krt_wrong", data=body).status_code == 401
        for other in (writer, admin, auditor):
            r = c.post(WEBHOOK, other, data=body)
            assert r.status_code == 403 and "needs cluster" in r.json()["error"], r.text
        for method, path in (("get", "/v1/records"), ("get", "/v1/records/export"), ("post", "/v1/ingest"),
                             ("get", "/v1/chains"), ("get", "/v1/audit/unmatched"), ("get", "/v1/access-log")):
            r = getattr(c, method)(path, token)
            assert r.status_code == 403 and "role cluster" in r.json()["error"], (path, r.text)
        assert c.get("/v1/whoami", token).json() == {"user": "apiserver-prod-eu", "role": "cluster", "scope": "prod-eu"}
        assert rows(db_url, "SELECT COUNT(*) FROM audit_events") == [(0,)]

        r = c.post(WEBHOOK, token, data=gzip.compress(body), headers={"Content-Encoding": "gzip"})
        assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    finally:
        c.kill()


def test_token_create_for_clusters(tmp_path):
    db = str(tmp_path / "c.db")

    def create(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kubectl_record", "token", "create", "--db", db, "--user", "u",
                               *args], env=child_env(), capture_output=True, text=True, timeout=60)

    assert create("--role", "cluster", "--cluster", "prod", "--server", "https://prod:6443/").returncode == 0
    assert create("--role", "cluster", "--cluster", "prod", "--server", "https://prod:6443").returncode == 0  # rotation
    for args, message in [(("--role", "cluster", "--cluster", "prod"), "--server URL"),
                          (("--role", "cluster", "--server", "https://x:6443"), "--cluster NAME"),
                          (("--role", "cluster", "--cluster", "x", "--server", "prod:6443"), "--server URL"),
                          (("--role", "cluster", "--cluster", "prod", "--server", "https://other:6443"),
                           "already bound to https://prod:6443"),
                          (("--role", "cluster", "--cluster", "stage", "--server", "https://prod:6443"),
                           "audit source of cluster prod"),
                          (("--role", "writer", "--cluster", "prod"), "cluster tokens only")]:
        proc = create(*args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert rows(db, "SELECT cluster, server FROM audit_sources") == [("prod", "https://prod:6443")]
    assert rows(db, "SELECT role, scope FROM tokens") == [("cluster", "prod")] * 2


def test_batches_deduplicated_limits_and_hostile_events(db_url):
    c = Collector(db_url, args=("--max-body", "65536")).start()
    try:
        token = cluster_token(db_url, "dev", "https://dev.example:6443")
        answers = []

        def post(body: bytes, **kwargs) -> dict:
            r = c.post(WEBHOOK, token, data=body, **kwargs)
            assert r.status_code == 200, (body[:20], r.status_code, r.text)
            answers.append(r.json())
            return r.json()

        good = [event(f"ok-{i}", stage) for i in range(3) for stage in ("RequestReceived", "ResponseComplete")]
        controller = event("ctl-1", ua="kube-controller-manager/v1.32.4 (linux/amd64) kubernetes/abc/leader")
        assert post(event_list(*good, controller))["stored"] == 7
        again = post(event_list(*good, controller, version="audit.k8s.io/v1beta1"))
        assert (again["stored"], again["duplicates"]) == (0, 7)

        # Over the cap, compressed or not: 413.
        big = event_list(*[event(f"big-{i}") for i in range(200)])
        assert len(big) > 65536 and c.post(WEBHOOK, token, data=big).status_code == 413
        bomb = gzip.compress(event_list(event("z", requestURI="/" + "a" * 2_000_000)))
        r = c.post(WEBHOOK, token, data=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413 and "decompressed" in r.json()["error"]
        assert c.post(WEBHOOK, token, data=b"{}", headers={"Content-Encoding": "br"}).status_code == 415

        # Whatever the body, never a 500: what cannot be read is counted and skipped.
        for body, malformed in [(b"", 0), (b"\x00\xff", 1), (b"[]", 0), (b"null", 1), (b'{"items": 5}', 0),
                                (b"[" * 60_000, 1), (b'{"items": [NaN]}', 1),
                                (b'{"kind": "EventList", "items": [1, "x", null, [], {}]}', 3),
                                (b'not json\n{"auditID": 5}\n', 2)]:
            result = post(body)
            assert (result["stored"], result["malformed"]) == (0, malformed), (body[:20], result)
        hostile = [
            event("nul\x00id"), event("nul-ua", ua="kubectl\x00/1"), event("far-future", ts="99999-01-01T00:00:00Z"),
            event("long-ua", ua="kubectl/" + "a" * 5000), event("", stage="ResponseComplete"),
            event("no-time", requestReceivedTimestamp=None, stageTimestamp=None),
            event("neg-time", requestReceivedTimestamp=-5),
        ]
        odd = [event("huge-code", responseStatus={"code": 2 ** 70}),
               event("bad-types", user="alice", objectRef=["pods"], verb=7, responseStatus="200")]
        result = post(event_list(*hostile, *odd, event("fine")))
        assert (result["stored"], result["malformed"]) == (3, len(hostile)), result
        assert any("NUL" in e for e in result["errors"])
        # Odd fields read as absent, as the local importer reads them.
        assert rows(db_url, "SELECT audit_id, code, verb, resource FROM audit_events WHERE audit_id IN (?, ?)"
                    " ORDER BY audit_id", ("bad-types", "huge-code")) == [("bad-types", None, "", ""),
                                                                          ("huge-code", None, "list", "pods")]
        # What a label patch sets is kept (masked as the recorder masks a command line), for the
        # central engine to tell two label runs apart.
        patch = event("lbl", verb="patch", level="RequestResponse",
                      objectRef={"resource": "pods", "namespace": "default", "name": "web-0", "apiVersion": "v1"},
                      requestObject={"metadata": {"labels": {"tier": "gold", "api-token": "s3cr3t-value"}}})
        assert post(event_list(patch))["stored"] == 1
        assert rows(db_url, "SELECT sets FROM audit_events WHERE audit_id = ?", ("lbl",)) == [
            ("label:api-token=***\nlabel:tier=gold",)]
        surrogate = b'{"kind": "EventList", "items": [' + json.dumps(event("s1")).encode().replace(
            b'"alice"', b'"\\ud800"') + b"]}"
        assert post(surrogate)["stored"] == 0
        assert c.get("/healthz", None).status_code == 200
        # The source's counters add up every answer.
        assert rows(db_url, "SELECT events, malformed FROM audit_sources") == [
            (sum(a["stored"] for a in answers), sum(a["malformed"] for a in answers))]
    finally:
        c.kill()


# --- schema, passes across instances, the alerts' hand-off ----------------------------------------


def test_version_1_database_is_upgraded(db_url):
    from kubectl_record.collector.auth import token_hash

    if db_url.startswith("postgresql"):
        import psycopg

        from kubectl_record.collector.storage_pg import MIGRATIONS, SCHEMA_VERSION

        with psycopg.connect(db_url) as conn:
            for statement in MIGRATIONS[0]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (1)")
            conn.execute("INSERT INTO tokens VALUES (%s, 'alice', 'writer', NULL, 'then', NULL)",
                         (token_hash("krt_a"),))
    else:
        import sqlite3

        from kubectl_record.collector.storage_sqlite import MIGRATIONS, SCHEMA_VERSION

        conn = sqlite3.connect(db_url)
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO tokens VALUES (?, 'alice', 'writer', NULL, 'then', NULL)", (token_hash("krt_a"),))
        conn.commit()
        conn.close()
    storage = open_storage(db_url)  # a collector of this version opens it
    try:
        from kubectl_record.collector.auth import authenticate
        from kubectl_record.collector.webhook import register_source, store_batch

        with storage.transaction() as tx:
            version = tx.one("SELECT version FROM schema_version" if db_url.startswith("postgresql")
                             else "PRAGMA user_version")[0]
        assert version == SCHEMA_VERSION >= 2
        assert authenticate(storage, "Bearer krt_a") == Access("alice", "writer")
        register_source(storage, "c1", "https://c1:6443")
        assert store_batch(storage, "c1", event_list(event("e1")))["stored"] == 1
        records = synthetic(2, install_id="i1", seq=None, server="https://c1:6443")
        assert storage.ingest("alice", records, []).accepted == 2
        page, _ = storage.query(Access("alice", "writer"), {}, 10)
        assert {r["id"] for r in page} == {r["id"] for r in records}
    finally:
        storage.close()


def test_one_pass_at_a_time_per_cluster(db_url):
    from kubectl_record.collector.central import LEASE, _claim, _release
    from kubectl_record.collector.webhook import mark_dirty, register_source

    one, two = open_storage(db_url), open_storage(db_url)  # two instances on one database
    try:
        register_source(one, "c1", "https://c1:6443")
        with one.transaction() as tx:
            mark_dirty(tx, "c1", 100.0, 200.0, now=1000.0)
        assert _claim(one, 2.0, 1001.0) is None  # batches may still be coming: not yet
        first = _claim(one, 2.0, 1005.0)
        assert first[:4] == ("c1", "https://c1:6443", 100.0, 200.0)
        assert _claim(two, 2.0, 1005.0) is None  # the other instance waits its turn
        with two.transaction() as tx:  # a batch arrives while the pass runs …
            mark_dirty(tx, "c1", 300.0, 400.0, now=1006.0)
        _release(one, "c1", first[4], True, 1007.0)
        assert _claim(two, 2.0, 1008.0) is None
        again = _claim(two, 2.0, 1009.5)  # … so the cluster is due again after the delay, with both windows
        assert again[2:4] == (100.0, 400.0)
        _release(two, "c1", again[4], True, 1010.0)
        assert _claim(one, 2.0, 5000.0) is None  # nothing new: nothing to do

        with one.transaction() as tx:
            mark_dirty(tx, "c1", 500.0, 600.0, now=6000.0)
        assert _claim(one, 2.0, 6005.0) is not None  # and this instance dies mid-pass
        assert _claim(two, 2.0, 6005.0 + LEASE - 1) is None
        assert _claim(two, 2.0, 6005.0 + LEASE + 1)[2:4] == (500.0, 600.0)
    finally:
        one.close()
        two.close()


def test_unmatched_requests_reach_the_alerts_once(db_url):
    from kubectl_record.alerts import audit_view
    from kubectl_record.collector.central import Correlator, claim_unmatched
    from kubectl_record.collector.webhook import register_source, store_batch

    one, two = open_storage(db_url), open_storage(db_url)
    try:
        register_source(one, "c1", "https://c1:6443")
        discovery = event("d1", objectRef=None, requestURI="/api", verb="get")
        store_batch(one, "c1", event_list(event("e1", "RequestReceived"), event("e1"), event("e2"), discovery))
        t = 1_772_359_200.0  # the events' time (2026-03-01T10:00:00Z)
        assert claim_unmatched(one, settle=300.0, now=t + 400) == []  # not correlated yet: its record may be here
        assert Correlator(one, delay=0.0).run_due() == 1
        assert claim_unmatched(one, settle=300.0, now=t + 100) == []  # its record may still be on its way
        handed = claim_unmatched(one, settle=300.0, now=t + 400)
        assert claim_unmatched(two, settle=300.0, now=t + 400) == []
        assert [e["audit_id"] for e in handed] == ["e1", "e2"]  # discovery alone is no activity
        view = audit_view(handed[0])
        assert (view["cluster"], view["user"], view["verb"], view["resource"], view["code"], view["unmatched"]) == \
            ("c1", "alice", "list", "pods", 200, True)
        assert handed[0]["stage"] == "ResponseComplete"
    finally:
        one.close()
        two.close()
