"""The collector as a real process, on SQLite and PostgreSQL: identity and access, chain
verification, tombstones, append-only storage, limits and bad input, lookups and exports."""

from __future__ import annotations

import copy
import csv
import gzip
import io
import json
import subprocess
import sys

import pytest

from kubectl_record import store
from kubectl_record.collector.storage import open_storage

from .collectorkit import Collector, Local, child_env, collector, db_url, issue, stored, synthetic  # noqa: F401


def chain(tmp_path, n: int, name: str = "laptop", **fields) -> list[dict]:
    """N records of one installation, chained by the real local store."""
    local = Local(tmp_path, name)
    local.add(synthetic(n, **fields))
    conn = local.connect()
    try:
        return list(store.iter_records(conn, order="seq"))
    finally:
        conn.close()


def upload(c: Collector, token: str, records=(), tombstones=(), gz: bool = True):
    body = json.dumps({"records": list(records), "tombstones": list(tombstones)}).encode()
    headers = {"Content-Type": "application/json"}
    if gz:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return c.post("/v1/ingest", token, data=body, headers=headers)


def problems(c: Collector, token: str) -> list[dict]:
    r = c.get("/v1/chains", token)
    assert r.status_code == 200, r.text
    return [p for inst in r.json()["installs"] for p in inst["problems"]]


# --- identity and access --------------------------------------------------------------------


def test_tokens_roles_and_visibility(collector, tmp_path):
    alice, bob = issue(collector.db, "alice"), issue(collector.db, "bob")
    prod_auditor = issue(collector.db, "audrey", "auditor", "prod-*")
    all_auditor = issue(collector.db, "arthur", "auditor")
    admin = issue(collector.db, "root", "admin")

    assert collector.get("/v1/records", None).status_code == 401
    assert "missing token" in collector.get("/v1/records", None).json()["error"]
    assert collector.get("/v1/records", "krt_wrong").status_code == 401
    assert collector.get("/v1/whoami", alice).json() == {"user": "alice", "role": "writer", "scope": None}

    a_recs = chain(tmp_path, 3, "a", cluster="prod-eu")
    b_recs = chain(tmp_path, 2, "b", cluster="dev-cluster")
    assert upload(collector, alice, a_recs).status_code == 200
    assert upload(collector, bob, b_recs).status_code == 200
    # Auditors read, they do not upload.
    r = upload(collector, prod_auditor, chain(tmp_path, 1, "c"))
    assert r.status_code == 403 and "auditor" in r.json()["error"]

    def visible(token):
        r = collector.get("/v1/records", token)
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["records"]}

    # The uploader's identity is stamped from the token, whatever the record says.
    assert visible(alice) == {r["id"] for r in a_recs}
    assert visible(bob) == {r["id"] for r in b_recs}
    assert visible(prod_auditor) == {r["id"] for r in a_recs}
    assert visible(all_auditor) == {r["id"] for r in a_recs + b_recs}
    page = collector.get("/v1/records", admin).json()["records"]
    assert {r["uploaded_by"] for r in page} == {"alice", "bob"}

    # Nobody can add records to someone else's installation.
    r = upload(collector, bob, chain(tmp_path, 4, "a", cluster="prod-eu")[3:])
    assert r.status_code == 400 and r.json()["rejected"][0]["reason"] == "install_id belongs to another uploader"

    # Every auditor read is itself logged; writers' reads are theirs.
    assert collector.get("/v1/access-log", alice).status_code == 403
    log = collector.get("/v1/access-log", admin).json()["entries"]
    assert {(e["user"], e["returned"]) for e in log} == {("audrey", 3), ("arthur", 5)}


def test_token_create_cli(tmp_path):
    db = str(tmp_path / "c.db")
    proc = subprocess.run([sys.executable, "-m", "kubectl_record", "token", "create", "--db", db, "--user", "ci",
                           "--role", "auditor", "--scope", "prod-*"], env=child_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip().splitlines()[-1]
    assert token.startswith("krt_")
    storage = open_storage(db)
    with storage.transaction() as tx:
        rows = tx.all("SELECT token_hash, user_name, role, scope FROM tokens")
    storage.close()
    assert len(rows) == 1 and rows[0][1:] == ("ci", "auditor", "prod-*")
    assert token not in rows[0][0]  # only a hash is kept
    bad = subprocess.run([sys.executable, "-m", "kubectl_record", "token", "create", "--db", db, "--user", "x",
                          "--role", "writer", "--scope", "p*"], env=child_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "auditors only" in bad.stderr


def test_serve_refuses_plain_http_off_loopback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kubectl_record", "serve", "--db", str(tmp_path / "c.db"),
                           "--listen", "0.0.0.0:1"], env=child_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--insecure-listen" in proc.stderr


# --- chain verification and tombstones ------------------------------------------------------


def test_ingest_is_idempotent_and_verifies_continuity(collector, tmp_path):
    token, auditor = issue(collector.db, "alice"), issue(collector.db, "aud", "auditor")
    recs = chain(tmp_path, 10)
    # Out of order, with a hole: the hole is a gap until its records arrive.
    assert upload(collector, token, recs[6:] + recs[:3]).json()["accepted"] == 7
    gaps = problems(collector, auditor)
    assert [(p["kind"], p["missing"]) for p in gaps] == [("gap", [4, 6])]
    again = upload(collector, token, recs).json()
    assert (again["accepted"], again["duplicates"]) == (3, 7)
    assert problems(collector, auditor) == []
    rows = stored(collector.db)
    assert [r[2] for r in rows] == list(range(1, 11)) and {r[3] for r in rows} == {"ok"}


def test_tampering_is_refused_or_flagged(collector, tmp_path):
    token, auditor = issue(collector.db, "alice"), issue(collector.db, "aud", "auditor")
    recs = chain(tmp_path, 5)
    assert upload(collector, token, recs[:2]).status_code == 200

    # Altered content no longer matches its own hash: refused, the rest of the batch kept.
    altered = copy.deepcopy(recs[2])
    altered["argv"] = ["delete", "pods", "--all"]
    r = upload(collector, token, [altered, recs[3]])
    assert r.status_code == 400
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == [
        {"index": 0, "id": altered["id"], "reason": "hash does not match the record's content"}]

    # A record re-chained onto a different predecessor (one was dropped and the chain redone
    # from there): self-consistent, but it breaks the link, and it is kept as evidence.
    forged = dict(recs[4], prev_hash="f" * 64)
    forged["hash"] = store.chain_hash(forged["prev_hash"], forged)
    assert upload(collector, token, [forged]).status_code == 200
    kinds = sorted((p["kind"], p["seq"]) for p in problems(collector, auditor))
    assert kinds == [("break", 5), ("gap", 4)]

    # The same id with other content, and another record claiming a taken seq: conflicts.
    other = dict(recs[0], id="someone-else")
    other["hash"] = store.chain_hash(other["prev_hash"], other)
    r = upload(collector, token, [other]).json()
    assert "already taken" in r["rejected"][0]["reason"]
    assert any(p["kind"] == "conflict" for p in problems(collector, auditor))


def tombstone(records: list[dict], first: int, last: int, **extra) -> dict:
    """As kubectl_record.retention leaves them (store.m005_tombstones)."""
    gone = [r for r in records if first <= r["seq"] <= last]
    return {"id": f"t-{first}-{last}", "deletion": "d1", "created_at": "2026-11-27T12:00:00.000Z",
            "deleted_by": "u", "reason": "prune --older-than 90d", "install_id": gone[0]["install_id"],
            "seq_from": first, "seq_to": last, "count": len(gone), "prev_hash": gone[0]["prev_hash"],
            "last_hash": gone[-1]["hash"], "first_started_at": gone[0]["started_at"],
            "last_started_at": gone[-1]["started_at"], **extra}


def test_tombstones_explain_deletions(collector, tmp_path):
    token, auditor = issue(collector.db, "alice"), issue(collector.db, "aud", "auditor")
    recs = chain(tmp_path, 10)
    # Records 4..6 were deleted locally before upload: their tombstone closes the gap, in any order.
    assert upload(collector, token, recs[:3] + recs[6:]).status_code == 200
    assert [p["kind"] for p in problems(collector, auditor)] == ["gap"]
    r = upload(collector, token, tombstones=[tombstone(recs, 4, 6)])
    assert r.status_code == 200 and r.json()["tombstones_accepted"] == 1
    assert problems(collector, auditor) == []
    assert upload(collector, token, tombstones=[tombstone(recs, 4, 6)]).json()["tombstones_duplicate"] == 1

    # A tombstone for records the collector has, whose edges do not match them, is refused.
    bad = tombstone(recs, 1, 2, id="t-bad", last_hash="e" * 64)
    r = upload(collector, token, tombstones=[bad])
    assert r.status_code == 400 and "does not end" in r.json()["rejected"][0]["reason"]
    assert any(p["kind"] == "tombstone_mismatch" for p in problems(collector, auditor))


def test_the_forwarded_audit_documents_prefix_is_refused_as_a_record_id(collector, tmp_path):
    # `audit-<auditID>` names the documents a forwarding collector makes of unmatched requests
    token = issue(collector.db, "alice")
    recs = chain(tmp_path, 2)
    taken = dict(recs[0], id="audit-0b5c2a51-0000-4000-8000-000000000001")
    taken["hash"] = store.chain_hash(taken["prev_hash"], taken)
    r = upload(collector, token, [taken])
    assert r.status_code == 400 and "collector's own" in r.json()["rejected"][0]["reason"]
    assert stored(collector.db) == []


def test_stored_records_are_append_only_and_retention_is_logged(collector, tmp_path):
    token, admin = issue(collector.db, "alice"), issue(collector.db, "root", "admin")
    recs = chain(tmp_path, 4)
    upload(collector, token, recs)
    storage = open_storage(collector.db)
    try:
        for sql in ("UPDATE records SET argv = '[]'", "DELETE FROM records"):
            with pytest.raises(Exception, match="append-only|only by retention"):
                with storage.transaction() as tx:
                    tx.execute(sql)
    finally:
        storage.close()
    assert collector.post("/v1/retention", token, json={"before": "2100-01-01T00:00:00Z"}).status_code == 403
    r = collector.post("/v1/retention", admin, json={"before": recs[2]["started_at"], "reason": "90 days"})
    assert r.status_code == 200 and r.json() == {"deleted": 2}
    assert len(stored(collector.db)) == 2
    storage = open_storage(collector.db)
    with storage.transaction() as tx:
        assert tx.all("SELECT user_name, deleted, reason FROM retention_log") == [("root", 2, "90 days")]
        # The removed range left a tombstone, as a local deletion does.
        assert tx.all("SELECT seq_from, seq_to, count, deleted_by, link FROM tombstones") == [(1, 2, 2, "root", "ok")]
    storage.close()


def test_retention_keeps_the_chain_verifiable_and_old_records_gone(collector, tmp_path):
    token, admin, auditor = issue(collector.db, "alice"), issue(collector.db, "root", "admin"), issue(collector.db, "a", "auditor")
    recs = chain(tmp_path, 6)
    upload(collector, token, recs[:2] + recs[3:4])  # 3 is still on its way: a gap at 4, as it should be
    assert collector.post("/v1/retention", admin, json={"before": recs[4]["started_at"]}).json() == {"deleted": 3}
    # 5 and 6 follow a deleted record; 3 arrives late: its range was not deleted, so it is kept
    # and closes the gap; an old record sent again is not brought back.
    r = upload(collector, token, recs[2:3] + recs[4:] + recs[:1])
    assert r.status_code == 200 and r.json()["accepted"] == 3 and r.json()["duplicates"] == 1
    assert [(row[2], row[3]) for row in stored(collector.db)] == [(3, "ok"), (5, "ok"), (6, "ok")]
    assert problems(collector, auditor) == []


def test_outcome_completed_after_upload(collector, tmp_path):
    token = issue(collector.db, "alice")
    recs = chain(tmp_path, 1, state="unfinished", exit_code=None, duration_ms=None)
    upload(collector, token, recs)
    done = dict(recs[0], state="finished", exit_code=1, ended_at="2026-11-27T12:00:01.000Z", duration_ms=1000)
    r = upload(collector, token, [done]).json()
    assert (r["duplicates"], r["updated"]) == (1, 1)
    (got,) = collector.get("/v1/records", token).json()["records"]
    assert (got["state"], got["exit_code"]) == ("finished", 1)


# --- limits and bad input -------------------------------------------------------------------


def test_limits_and_garbage(db_url, tmp_path):
    c = Collector(db_url, args=("--max-body", "65536")).start()
    try:
        token = issue(db_url, "alice")
        big = json.dumps({"records": chain(tmp_path, 1) * 200}).encode()
        assert c.post("/v1/ingest", token, data=big).status_code == 413
        bomb = gzip.compress(b'{"records": [' + b" " * 10_000_000 + b"]}")
        r = c.post("/v1/ingest", token, data=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413 and "decompressed" in r.json()["error"]

        garbage = [b"", b"\x00\xff", b"[]", b"null", b"{\"records\": 5}", b"[" * 60_000,
                   b'{"records": [NaN]}', b'{"records": [1, "x", null, [], {}]}',
                   b'{"records": [{"id": "\\ud800", "install_id": "i", "started_at": "x"}]}']
        for body in garbage:
            r = c.post("/v1/ingest", token, data=body)
            assert r.status_code == 400, (body[:20], r.status_code, r.text)
            assert r.json().get("error") or r.json().get("rejected")
        r = c.post("/v1/ingest", token, data=b"x", headers={"Content-Encoding": "br"})
        assert r.status_code == 415

        # Hostile strings inside otherwise valid records: refused one by one, nothing crashes.
        good = chain(tmp_path, 3, "hostile")
        nul = copy.deepcopy(good[0]) | {"id": "nul", "cwd": "a\x00b"}
        surrogate = copy.deepcopy(good[0]) | {"id": "sur", "identity": "\ud800"}
        wrong_types = copy.deepcopy(good[0]) | {"id": "typ", "seq": "1", "mutating": "yes"}
        r = c.post("/v1/ingest", token, data=json.dumps({"records": [nul, surrogate, wrong_types] + good}))
        body = r.json()
        assert r.status_code == 400 and body["accepted"] == 3
        assert [x["index"] for x in body["rejected"]] == [0, 1, 2]
        assert c.get("/healthz", None).status_code == 200
    finally:
        c.kill()


# --- lookups and exports --------------------------------------------------------------------


def test_keyset_pages_filters_and_exports(collector, tmp_path):
    token = issue(collector.db, "alice")
    recs = chain(tmp_path, 25)
    failing = chain(tmp_path, 5, "other", exit_code=2, context="prod", mutating=True)
    upload(collector, token, recs)
    upload(collector, token, failing)

    seen, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        body = collector.get("/v1/records", token, params=params).json()
        seen += body["records"]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 30 and len({r["id"] for r in seen}) == 30
    assert [r["started_at"] for r in seen] == sorted((r["started_at"] for r in seen), reverse=True)

    got = collector.get("/v1/records", token, params={"failed": "true", "context": "pr*"}).json()["records"]
    assert {r["id"] for r in got} == {r["id"] for r in failing}

    def count(**params):
        r = collector.get("/v1/records", token, params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return len(r.json()["records"])

    # The filters of `history`: repeatable (any matches), globs, case-sensitive on both backends.
    assert count(context=["dev", "prod"]) == 30 and count(context="PROD") == 0 and count(context="d?v") == 25
    assert count(name="web-1*") == 11 + 1 and count(name=["web-3", "web-4"]) == 4  # both chains have web-0…4
    assert count(exit="2") == 5 and count(read_only="true") == 25 and count(mutating="true") == 5
    assert count(cwd="/home") == 30 and count(cwd="/home/u") == 30 and count(cwd="/home/u/x") == 0
    assert count(query="web-2") == 7 and count(verb="get") == 30
    assert count(since=failing[2]["started_at"], context="prod") == 3
    for bad in ({"colour": "red"}, {"since": "yesterday"}, {"exit": "x"}, {"failed": "maybe"}):
        assert collector.get("/v1/records", token, params=bad).status_code == 400, bad
    assert collector.get("/v1/records", token, params={"cursor": "!!"}).status_code == 400

    jsonl = collector.get("/v1/records/export", token, params={"format": "jsonl", "mutating": "true"})
    assert [json.loads(line)["id"] for line in jsonl.text.splitlines()] == sorted(
        (r["id"] for r in failing), key=lambda i: [r["started_at"] for r in failing if r["id"] == i][0], reverse=True)
    rows = list(csv.DictReader(io.StringIO(collector.get("/v1/records/export", token, params={"format": "csv"}).text)))
    assert len(rows) == 30 and json.loads(rows[0]["argv"])[0] == "get" and rows[0]["uploaded_by"] == "alice"


def test_team_query(collector, tmp_path, monkeypatch):
    from kubectl_record import sync

    token = issue(collector.db, "alice")
    upload(collector, token, chain(tmp_path, 12, namespace="web"))
    upload(collector, token, chain(tmp_path, 3, "b", namespace="db"))
    monkeypatch.setenv("KUBECTL_RECORD_COLLECTOR", collector.url)
    monkeypatch.setenv("KUBECTL_RECORD_TOKEN", token)
    assert len(list(sync.team_query({"namespace": "web"}, page_size=5))) == 12
    assert len(list(sync.team_query({}, limit=4, page_size=3))) == 4
    assert len(list(sync.team_query({"namespace": "db", "failed": False}))) == 3


def test_history_team_takes_the_same_filters_and_formats(collector, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kubectl_record.cli import cli

    token = issue(collector.db, "alice")
    upload(collector, token, chain(tmp_path, 12, namespace="web"))
    upload(collector, token, chain(tmp_path, 3, "b", namespace="db"))
    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path / "me"))
    monkeypatch.setenv("KUBECTL_RECORD_RUNTIME_DIR", str(tmp_path / "me-spool"))
    monkeypatch.setenv("KUBECTL_RECORD_COLLECTOR", collector.url)
    monkeypatch.setenv("KUBECTL_RECORD_TOKEN", token)
    run = CliRunner().invoke
    out = run(cli, ["history", "--team", "-n", "db", "-o", "json"])
    assert out.exit_code == 0, out.output
    assert [r["namespace"] for r in json.loads(out.stdout)] == ["db"] * 3
    table = run(cli, ["history", "--team", "--limit", "4"]).stdout.splitlines()
    assert table[0].split()[:3] == ["ID", "AGE", "CONTEXT"] and len(table) == 5
    monkeypatch.setenv("KUBECTL_RECORD_TOKEN", "krt_not_a_real_token")
    refused = run(cli, ["history", "--team"])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and "team history" in refused.output


def test_flood_keeps_memory_bounded(tmp_path):
    """Many clients at once, each sending the largest body allowed (and gzip bombs): the collector
    turns away what exceeds its concurrency, answers everyone, and stays small."""
    import threading
    import time

    import psutil
    import requests

    db = str(tmp_path / "c.db")
    c = Collector(db, args=("--max-body", str(2 * 1024 * 1024), "--max-concurrency", "4")).start()
    try:
        token = issue(db, "alice")
        proc = psutil.Process(c.proc.pid)
        base = proc.memory_info().rss
        big = json.dumps({"records": [{"id": "x" * 100, "argv": ["a" * 1000] * 900}]}).encode()[: 2 * 1024 * 1024 - 10]
        bomb = gzip.compress(b"[" + b"0," * 20_000_000 + b"0]")
        statuses, peak = [], [base]

        def hammer(i: int) -> None:
            body, headers = (bomb, {"Content-Encoding": "gzip"}) if i % 2 else (big, {})
            for _ in range(3):
                try:
                    r = requests.post(c.url + "/v1/ingest", data=body, timeout=60,
                                      headers={"Authorization": f"Bearer {token}", **headers})
                    statuses.append(r.status_code)
                except requests.ConnectionError:
                    statuses.append("reset")  # turned away while still sending: fine
                peak.append(proc.memory_info().rss)

        # Slow uploads beyond the concurrency limit: those over it are turned away at once (503),
        # the others wait for their bodies.
        import socket

        holders = []
        for _ in range(6):
            s = socket.create_connection(("127.0.0.1", c.port))
            s.sendall(f"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                      "Content-Length: 1000000\r\n\r\n{".encode())
            holders.append(s)
            time.sleep(0.1)  # one after the other: the first ones get in
        answers = []
        for s in holders:
            s.settimeout(0.5)
            try:
                answers.append(s.recv(100))
            except TimeoutError:
                answers.append(b"")  # still being read: inside the limit
            s.close()
        assert any(a.startswith(b"HTTP/1.1 503") for a in answers) and b"" in answers, answers

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {400, 413, 503, "reset"}
        assert max(peak) - base < 250 * 1024 * 1024, f"grew by {(max(peak) - base) >> 20} MiB"
        assert c.get("/healthz", None).status_code == 200
    finally:
        c.kill()


def test_history_filters_travel_to_the_collector(collector, tmp_path, monkeypatch):
    from kubectl_record import sync
    from kubectl_record.filters import Filters

    token = issue(collector.db, "alice")
    upload(collector, token, chain(tmp_path, 6, namespace="web", resource="pods"))
    upload(collector, token, chain(tmp_path, 4, "b", namespace="db", context="prod-eu", exit_code=1))
    monkeypatch.setenv("KUBECTL_RECORD_COLLECTOR", collector.url)
    monkeypatch.setenv("KUBECTL_RECORD_TOKEN", token)

    def team(**kw):
        return list(sync.team_query(sync.team_filters(Filters(**kw))))

    assert len(team(namespace=("web",))) == 6 and len(team(namespace=("web",), all_namespaces=True)) == 10
    assert len(team(context=("prod-*",), failed=True)) == 4
    assert len(team(resource=("po",))) == 10  # canonicalised like the local filter
    assert len(team(since="2000-01-01", until="2100-01-01")) == 10
    assert len(team(name=("web-1", "web-2"))) == 4


def test_workers_end_with_the_serving_process_even_when_it_is_killed(tmp_path):
    import os
    import signal
    import time

    import psutil

    c = Collector(str(tmp_path / "c.db"), args=("--workers", "2")).start()
    try:
        deadline = time.monotonic() + 20
        while len(workers := psutil.Process(c.proc.pid).children(recursive=True)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) >= 2
        os.kill(c.proc.pid, signal.SIGKILL)  # the supervisor alone: uvicorn cannot relay this one
        c.proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == []
    finally:
        c.kill()
