"""The collector as a gateway (`serve --forward`): real collector processes on SQLite and
PostgreSQL forwarding to the real OpenSearch-API server (osmem-server) and the real OTLP
collector (rotel), through a fault-injecting proxy, across SIGKILL and across two instances on
one database. Counts are exact: every record arrives, none twice."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from kubectl_record import store, sync
from kubectl_record.collector.client import CollectorClient
from kubectl_record.destinations import DeliveryResult, open_destination

from .collectorkit import (  # noqa: F401
    Collector, Local, RoundRobin, child_env, db_url, free_port, issue, pg_database, synthetic)
from .faultproxy import FaultProxy
from .test_destinations_kit import (  # noqa: F401  (fixtures)
    opensearch, os_search, records, rotel, rotel_log_records, rotel_value)

# Small intervals, a short lease and backoff: seconds of waiting become tenths.
FAST = ("--forward-interval", "0.1", "--forward-lease", "1", "--forward-backoff-base", "0.01",
        "--forward-backoff-cap", "0.05")


def forwarding(*urls: str) -> tuple[str, ...]:
    return tuple(a for url in urls for a in ("--forward", url)) + FAST


def _index(request) -> str:
    return "kr-fwd-" + request.node.name.lower().replace("_", "-")[-36:].strip("-[]")


def status(c: Collector, admin: str) -> dict:
    answer = c.get("/v1/forward/status", admin)
    assert answer.status_code == 200, answer.text
    return {d["destination"]: d for d in answer.json()["destinations"]}


def settled(c: Collector, admin: str, name: str, count: int, timeout: float = 30) -> dict:
    """The destination's status once COUNT rows were settled (delivered or dead) and none pend."""
    deadline = time.monotonic() + timeout
    while True:
        st = status(c, admin).get(name)
        if st and st["pending"] == 0 and st["delivered"] + st["dead_letters"] >= count:
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled: {st}")
        time.sleep(0.05)


def push(c: Collector, token: str, local: Local, batch_size: int = sync.BATCH) -> int:
    conn = local.connect()
    try:
        return sync.deliver(conn, CollectorClient(c.url, token), batch_size=batch_size).delivered
    finally:
        conn.close()


def bulk_ids(requests: list[bytes]) -> list[list[str]]:
    """The `_id`s of every `create` in each `_bulk` request a proxy saw."""
    out = []
    for raw in requests:
        head, _, body = raw.partition(b"\r\n\r\n")
        if b"/_bulk" not in head.split(b"\r\n", 1)[0]:
            continue
        if b"content-encoding: gzip" in head.lower():
            body = gzip.decompress(body)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        out.append([line["create"]["_id"] for line in lines if "create" in line])
    return out


def test_pushed_records_arrive_once_and_a_late_end_follows(db_url, opensearch, rotel, request, tmp_path):
    index = _index(request)
    os_url = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}"
    c = Collector(db_url, args=forwarding(os_url, rotel.url)).start()
    try:
        token, admin = issue(db_url, "alice"), issue(db_url, "root", "admin")
        local = Local(tmp_path)
        recs = synthetic(40)
        recs[-1].update(state="unfinished", exit_code=None, duration_ms=None)
        local.add(recs)
        local.cli(c.url, token, "push", "--wait")  # the workstation's own push, to the collector
        st = settled(c, admin, os_url, 40)
        assert (st["delivered"], st["dead_letters"], st["failures"], st["last_error"]) == (40, 0, 0, None)
        assert st["forwarded_here"] and st["last_success"]
        hits = {h["_id"]: h["_source"] for h in os_search(opensearch, index)}
        assert set(hits) == local.ids() and {h["uploaded_by"] for h in hits.values()} == {"alice"}
        assert settled(c, admin, rotel.url, 40)["delivered"] == 40
        decoded = rotel_log_records(rotel.wait_for(40))
        assert sorted(d["attributes"]["log.record.uid"] for d in decoded) == sorted(map(rotel_value, local.ids()))

        # A late end: the collector completes its copy and forwards the new state, once.
        conn = local.connect()
        assert store.finish(conn, recs[-1]["id"], "2026-11-27T12:00:00.000Z", 5, 130)
        conn.close()
        local.cli(c.url, token, "push")
        assert settled(c, admin, os_url, 41)["delivered"] == 41
        hits = {h["_id"]: h["_source"] for h in os_search(opensearch, index)}
        assert len(hits) == 40 and hits[recs[-1]["id"]]["exit_code"] == 130
        assert settled(c, admin, rotel.url, 41)["delivered"] == 41
        # The same records uploaded again change nothing: nothing is queued.
        batches = {name: s["batches"] for name, s in status(c, admin).items()}
        assert push(c, token, local) == 0
        conn = local.connect()
        conn.execute("DELETE FROM sync_queue")
        conn.execute("INSERT INTO sync_queue (dest, record_id) SELECT 'collector', id FROM records")
        conn.close()
        assert push(c, token, local) == 40  # the collector answers "duplicate" for each
        time.sleep(0.3)  # three forwarding rounds
        again = status(c, admin)
        assert {name: s["batches"] for name, s in again.items()} == batches
        assert {s["delivered"] for s in again.values()} == {41} and {s["pending"] for s in again.values()} == {0}
    finally:
        c.kill(signal.SIGTERM)


def test_faults_at_the_destination_lose_nothing_and_double_nothing(db_url, opensearch, request, tmp_path):
    index = _index(request)
    upstream = int(opensearch.rsplit(":", 1)[1])
    faults = {0: "503", 1: "reset_after", 2: "429", 4: "reset_before", 5: "reset_after", 7: "503"}
    with FaultProxy(upstream, plan=lambda n: faults.get(n, "pass")) as proxy:
        url = f"opensearch://127.0.0.1:{proxy.port}/{index}"
        c = Collector(db_url, args=forwarding(url)).start()
        try:
            token, admin = issue(db_url, "alice"), issue(db_url, "root", "admin")
            local = Local(tmp_path)
            local.add(synthetic(90))
            assert push(c, token, local, batch_size=30) == 90  # three uploads, three wake-ups
            st = settled(c, admin, url, 90)
        finally:
            c.kill(signal.SIGTERM)
    assert set(faults.values()) <= set(proxy.actions)
    assert (st["delivered"], st["dead_letters"], st["pending"], st["failures"]) == (90, 0, 0, 0)
    assert st["last_error"] and st["last_error_at"]  # kept after the recovery, for the operator
    hits = os_search(opensearch, index)
    assert len(hits) == 90 and {h["_id"] for h in hits} == local.ids()


def test_collector_killed_mid_forward_loses_and_doubles_nothing(db_url, opensearch, request, tmp_path):
    """SIGKILL after the destination stored the batch and before the collector heard back: the
    rows stay claimed until the lease runs out, then the restarted collector sends them again,
    which `create` with `_id` makes harmless."""
    index = _index(request)
    upstream = int(opensearch.rsplit(":", 1)[1])
    pushed = threading.Event()
    running: dict = {}

    def kill(n: int) -> None:
        pushed.wait(10)  # the upload's answer is out before the collector dies
        running["c"].kill(signal.SIGKILL)

    with FaultProxy(upstream, plan=lambda n: "hook_after" if n == 0 else "pass", hook=kill) as proxy:
        url = f"opensearch://127.0.0.1:{proxy.port}/{index}"
        c = running["c"] = Collector(db_url, args=forwarding(url)).start()
        try:
            token, admin = issue(db_url, "alice"), issue(db_url, "root", "admin")
            local = Local(tmp_path)
            local.add(synthetic(60))
            assert push(c, token, local) == 60
            pushed.set()
            c.proc.wait(timeout=20)
        finally:
            c.kill(signal.SIGTERM)  # if the hook never ran
        assert len(os_search(opensearch, index)) == 60  # stored there; the collector never heard
        again = Collector(db_url, port=c.port, args=forwarding(url)).start()
        try:
            st = settled(again, admin, url, 60)
        finally:
            again.kill(signal.SIGTERM)
    assert proxy.actions[0] == "hook_after" and len(bulk_ids(proxy.requests)) >= 2
    assert (st["delivered"], st["dead_letters"], st["pending"], st["batches"]) == (60, 0, 0, 2)
    hits = os_search(opensearch, index)
    assert len(hits) == 60 and {h["_id"] for h in hits} == local.ids()


def test_two_instances_on_one_postgresql_forward_each_record_once(opensearch, request, tmp_path):
    index = _index(request)
    url_db, drop = pg_database()
    upstream = int(opensearch.rsplit(":", 1)[1])
    with FaultProxy(upstream) as proxy:
        url = f"opensearch://127.0.0.1:{proxy.port}/{index}"
        instances = [Collector(url_db, args=(*forwarding(url), "--workers", "2")).start() for _ in range(2)]
        try:
            token, admin = issue(url_db, "alice"), issue(url_db, "root", "admin")
            delivered, locals_ = RoundRobin(instances, token).push_from_hosts(tmp_path, [100, 101, 102, 103], 9)
            assert delivered == [100, 101, 102, 103]
            total = sum(100 + i for i in range(4))
            st = settled(instances[1], admin, url, total)
        finally:
            for c in instances:
                c.kill(signal.SIGTERM)
            drop()
    sent = bulk_ids(proxy.requests)
    # Every record went out in exactly one request, and every claimed batch is one request:
    # no batch was sent twice, by two workers at once or otherwise.
    assert sorted(i for batch in sent for i in batch) == sorted(i for lo in locals_ for i in lo.ids())
    assert (st["delivered"], st["batches"], st["pending"]) == (total, len(sent), 0)
    assert len(sent) > 4  # the work was spread over many claims
    assert len(os_search(opensearch, index)) == total


def test_a_rejected_record_is_a_dead_letter_in_the_status(db_url, opensearch, request, tmp_path):
    index = _index(request)
    url = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}"
    seed = records(1, sudo_user=7)
    assert open_destination(url).send(seed).ok  # sudo_user is now mapped as a number
    c = Collector(db_url, args=forwarding(url)).start()
    try:
        token, admin = issue(db_url, "alice"), issue(db_url, "root", "admin")
        local = Local(tmp_path)
        recs = synthetic(10)
        recs[4]["sudo_user"] = "root"
        local.add(recs)
        assert push(c, token, local) == 10
        st = settled(c, admin, url, 10)
        assert c.get("/v1/forward/status", token).status_code == 403  # admins only
    finally:
        c.kill(signal.SIGTERM)
    assert (st["delivered"], st["dead_letters"], st["pending"], st["failures"]) == (9, 1, 0, 0)
    [dead] = st["recent_dead_letters"]
    assert dead["record_id"] == recs[4]["id"] and dead["reason"].startswith("400 mapper_parsing_exception")
    assert {h["_id"] for h in os_search(opensearch, index)} == local.ids() - {recs[4]["id"]} | {seed[0]["id"]}


class _Recorder:
    """A destination that keeps what it was sent and can act while a batch is out."""

    name = "test://recorder"
    batch_size = 100
    ordered = False

    def __init__(self, during_send=None):
        self.sent: list[list[dict]] = []
        self.during_send = during_send

    def send(self, recs: list[dict]) -> DeliveryResult:
        self.sent.append(recs)
        if self.during_send:
            self.during_send(len(self.sent))
        return DeliveryResult(delivered=[r["id"] for r in recs])

    def close(self) -> None:
        pass


def test_a_record_changed_while_its_batch_is_out_is_sent_again_after(tmp_path):
    from kubectl_record.collector.forward import Forwarder, status as forward_status
    from kubectl_record.collector.storage import open_storage

    local = Local(tmp_path)
    recs = synthetic(3)
    recs[1].update(state="unfinished", exit_code=None, duration_ms=None)
    local.add(recs)
    conn = local.connect()
    rows = lambda: [store.from_row(r) for r in conn.execute(f"SELECT {', '.join(store.FIELDS)} FROM records"
                                                             " ORDER BY seq")]
    stored_first = rows()
    storage = open_storage(str(tmp_path / "collector.db"))

    def late_end(n: int) -> None:
        if n == 1:  # the late end reaches the collector while the first batch is out
            assert store.finish(conn, recs[1]["id"], "2026-11-27T12:00:00.000Z", 5, 2)
            assert storage.ingest("alice", rows(), []).updated == 1

    dest = _Recorder(late_end)
    forwarder = Forwarder(storage, [dest], lease=30)
    storage.ingest("alice", stored_first, [])
    assert forwarder.run_once() == {dest.name: 3 + 1}
    assert [[r["id"] for r in batch] for batch in dest.sent] == [[r["id"] for r in recs], [recs[1]["id"]]]
    assert dest.sent[0][1]["exit_code"] is None and dest.sent[1][0]["exit_code"] == 2
    [st] = forward_status(storage, (dest.name,))
    assert (st["pending"], st["delivered"], st["batches"]) == (0, 4, 2)
    storage.close()
    conn.close()


@pytest.mark.parametrize("args, config, message", [
    (("--forward", "bogus://host"), None, "unknown destination kind 'bogus'"),
    (("--forward", "opensearch://127.0.0.1:9200"), None, "needs an index"),
    (("--forward", "loki://127.0.0.1:3100"), '[destinations.options."loki://127.0.0.1:3100"]\ncolour = "red"\n',
     "unknown option(s) for loki: colour"),
    ((), "[destinations\n", "cannot read"),
    ((), '[destinations]\nurls = []\n', "lists no urls"),
])
def test_bad_forwarding_is_refused_before_serving(tmp_path, args, config, message):
    if config is not None:
        (tmp_path / "forward.toml").write_text(config)
        args = (*args, "--forward-config", str(tmp_path / "forward.toml"))
    proc = subprocess.run([sys.executable, "-m", "kubectl_record", "serve", "--db", str(tmp_path / "c.db"),
                           "--listen", f"127.0.0.1:{free_port()}", *args],
                          env=child_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --forward") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c.db").exists()  # refused before the database was touched


def test_central_audit_outcomes_and_unrecorded_kubectl_activity_are_forwarded(db_url, opensearch, request, tmp_path):
    from .test_collector_audit import WEBHOOK, cluster_token, event, event_list

    index = _index(request)
    os_url = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}"
    c = Collector(db_url, args=forwarding(os_url) + ("--audit-delay", "0.1", "--unmatched-after", "0.5")).start()
    try:
        token, admin = issue(db_url, "alice"), issue(db_url, "root", "admin")
        source = cluster_token(db_url, "prod-eu", "https://prod-eu.example:6443")
        local = Local(tmp_path)
        rec = synthetic(1, server="https://prod-eu.example:6443", ended_at="2026-05-28T20:26:40.400Z")[0]
        local.add([rec])
        local.cli(c.url, token, "push", "--wait")
        assert settled(c, admin, os_url, 1)["delivered"] >= 1

        # The API server's events for that run, and later traffic that shows the source caught up.
        get = event("e1", ts="2026-05-28T20:26:40.150000Z", verb="get", requestURI="/api/v1/namespaces/default/pods/web-0",
                    objectRef={"resource": "pods", "namespace": "default", "name": "web-0", "apiVersion": "v1"})
        later = event("e2", ts="2026-05-28T20:27:40.000000Z", ua="kube-controller-manager/v1.32.4")
        # …and a kubectl run the recorder never saw: it becomes a document of its own.
        bypass = event("e3", ts="2026-05-28T20:27:00.000000Z", verb="delete",
                       requestURI="/api/v1/namespaces/default/pods/db-0", responseStatus={"code": 200},
                       objectRef={"resource": "pods", "namespace": "default", "name": "db-0", "apiVersion": "v1"})
        assert c.post(WEBHOOK, source, data=event_list(get, later, bypass)).status_code == 200
        deadline = time.monotonic() + 30  # queued again once correlated, and delivered
        while len(docs := {h["_id"]: h["_source"] for h in os_search(opensearch, index)}) < 2 or \
                (docs[rec["id"]]["audit"] or {}).get("status") != "strong":
            assert time.monotonic() < deadline, docs
            time.sleep(0.05)
        doc = docs[rec["id"]]
        assert doc["audit"]["central"]["cluster"] == "prod-eu"
        assert [e["audit_id"] for e in doc["audit"]["events"]] == ["e1"]
        unrecorded = docs["audit-e3"]
        assert (unrecorded["source"], unrecorded["audit"]["status"], unrecorded["cluster"], unrecorded["verb"],
                unrecorded["names"], unrecorded["identity"], unrecorded["exit_code"]) == \
            ("audit", "unmatched", "prod-eu", "delete", ["db-0"], "alice", None)
        assert set(docs) == {rec["id"], "audit-e3"}  # the controller's request is no kubectl activity
    finally:
        c.kill(signal.SIGTERM)
