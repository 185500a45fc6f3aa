"""Uploading: `push`, `push --wait`, `sync status`, the outbox, retries through a fault-injecting
proxy, long outages on an injected clock, and re-queued outcomes and tombstones. Real collector
processes on SQLite and PostgreSQL; counts are exact."""

from __future__ import annotations

import json
import random
import signal

import pytest

from kubectl_record import store, sync
from kubectl_record.collector.client import CollectorClient, Refused, Transient

from .collectorkit import (  # noqa: F401
    Collector, Local, RoundRobin, collector, db_url, free_port, issue, stored, synthetic)
from .faultproxy import FaultProxy

FAST = ("--backoff-base", "0.01", "--backoff-cap", "0.05")


class FakeClock:
    """Time that passes only when someone sleeps: hours of outage in milliseconds."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start
        self.sleeps: list[float] = []
        self.sleep_starts: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleep_starts.append(self.now)
        self.now += seconds


def collector_ids(db: str, install_id: str | None = None) -> list[str]:
    return [r[0] for r in stored(db) if install_id is None or r[1] == install_id]


def install_of(local: Local) -> str:
    conn = local.connect()
    try:
        return store.install_id(conn)
    finally:
        conn.close()


def test_push_and_status_cli(collector, tmp_path):
    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    local.add(synthetic(250))

    status = local.cli(collector.url, token, "sync", "status").stdout
    assert "pending:      250" in status and "last success: never" in status

    proc = local.cli(collector.url, token, "push", "--batch-size", "40")
    assert "pushed 250" in proc.stderr
    assert sorted(collector_ids(collector.db)) == sorted(local.ids())
    status = local.cli(collector.url, token, "sync", "status").stdout
    assert "pending:      0" in status and "last error:   none" in status and "last success: 20" in status

    # Nothing new: nothing sent. New records: only they are sent.
    assert "pushed 0" in local.cli(collector.url, token, "push").stderr
    local.add(synthetic(5))
    assert "pushed 5" in local.cli(collector.url, token, "push", "--wait").stderr
    assert len(collector_ids(collector.db)) == 255


def test_push_fails_with_one_clear_line(collector, tmp_path):
    local = Local(tmp_path)
    local.add(synthetic(3))
    bad = local.cli(collector.url, "krt_not-a-token", "push", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        f"error: push to {collector.url}: collector refused (401): unknown or revoked token"]
    auditor = issue(collector.db, "aud", "auditor")
    bad = local.cli(collector.url, auditor, "push", "--wait", check=False)
    assert bad.returncode == 1 and "(403)" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    down = f"http://127.0.0.1:{free_port()}"
    bad = local.cli(down, "krt_x", "push", *FAST, check=False)
    assert bad.returncode == 1 and "collector unreachable" in bad.stderr
    status = local.cli(down, "krt_x", "sync", "status").stdout
    assert "pending:      3" in status and "collector unreachable" in status

    unset = local.cli("", "", "push", check=False)
    assert unset.returncode == 1 and "nowhere to push" in unset.stderr


def test_faults_through_proxy_lose_and_double_nothing(collector, tmp_path):
    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    local.add(synthetic(400))
    script = ["429", "pass", "503", "reset_before", "pass", "reset_after", "slow", "reset_after", "pass", "503"]
    with FaultProxy(collector.port, plan=lambda n: script[n] if n < len(script) else "pass") as proxy:
        proc = local.cli(proxy.url, token, "push", "--wait", "--batch-size", "50", *FAST)
    assert "pushed 400" in proc.stderr
    assert set(proxy.actions) >= {"429", "503", "reset_before", "reset_after", "slow"}
    ids = collector_ids(collector.db)
    assert len(ids) == 400 and set(ids) == local.ids()


def test_long_outage_on_injected_clock(collector, tmp_path):
    """Down for three hours (RST, then 503 with Retry-After), then back: everything arrives once."""
    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    local.add(synthetic(120))
    clock = FakeClock()
    back_at = clock.now + 3 * 3600

    def plan(n: int) -> str:
        if clock.now < back_at - 600:
            return "down"
        if clock.now < back_at:
            return "503"
        return "pass"

    with FaultProxy(collector.port, plan=plan, retry_after="240") as proxy:
        conn = local.connect()
        result = sync.deliver(conn, CollectorClient(proxy.url, token), wait=True, clock=clock, batch_size=25,
                              backoff=sync.Backoff(base=1.0, cap=300.0, rng=random.Random(7)))
        conn.close()
    assert result.delivered == 120 and result.pending == 0
    assert clock.now >= back_at
    # Exponential growth up to the cap, never beyond it except to honour Retry-After.
    assert max(clock.sleeps) <= 300 and clock.sleeps[0] < 1.01
    # No time passes during a request on this clock: a sleep that starts in the 503 phase follows a 503.
    retry_after_sleeps = [s for t, s in zip(clock.sleep_starts, clock.sleeps) if back_at - 600 <= t < back_at]
    assert retry_after_sleeps and min(retry_after_sleeps) >= 240
    assert len(clock.sleeps) < 60  # backoff, not hammering: ~3 h in a few dozen attempts
    ids = collector_ids(collector.db)
    assert len(ids) == 120 and set(ids) == local.ids()


def test_outcome_updates_and_tombstones_are_uploaded(collector, tmp_path):
    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    records = synthetic(6)
    records[5].update(state="unfinished", exit_code=None, duration_ms=None)
    local.add(records)
    local.cli(collector.url, token, "push")

    conn = local.connect()
    # A late end completes the record: it is queued again, and the collector completes its copy.
    assert store.finish(conn, records[5]["id"], "2026-11-27T12:00:00.000Z", 5, 130)
    # A local deletion of seq 2..3 (kubectl record delete): records gone, a tombstone left.
    from kubectl_record import retention

    assert retention.delete_where(conn, "seq BETWEEN 2 AND 3", [], "delete") == (2, 1)
    assert sync.pending_count(conn) == 2
    conn.close()
    assert "pushed 2" in local.cli(collector.url, token, "push").stderr

    admin = issue(collector.db, "root", "admin")
    got = {r["id"]: r for r in collector.get("/v1/records", admin).json()["records"]}
    assert got[records[5]["id"]]["exit_code"] == 130 and len(got) == 6  # the collector keeps what it had
    chains = collector.get("/v1/chains", admin).json()["installs"]
    assert chains[0]["tombstoned"] == 2 and chains[0]["intact"]
    conn = local.connect()
    assert conn.execute("SELECT uploaded_at IS NOT NULL FROM tombstones").fetchone()[0] == 1
    assert sync.pending_count(conn) == 0
    conn.close()


def test_refused_records_become_dead_letters(collector, tmp_path):
    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    local.add(synthetic(4))
    conn = local.connect()
    # Someone edits a stored record by hand: its hash no longer matches, the collector refuses it.
    conn.execute("UPDATE records SET argv = '[\"delete\"]' WHERE seq = 2")
    conn.close()
    proc = local.cli(collector.url, token, "push")
    assert "pushed 3" in proc.stderr and "1 refused" in proc.stderr
    status = local.cli(collector.url, token, "sync", "status").stdout
    assert "dead letters: 1" in status and "hash does not match" in status and "pending:      0" in status
    auditor = issue(collector.db, "aud", "auditor")
    (inst,) = collector.get("/v1/chains", auditor).json()["installs"]
    assert [p["kind"] for p in inst["problems"]] == ["gap"]  # the removal shows


def test_background_pass_respects_backoff(collector, tmp_path):
    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    local.add(synthetic(10))
    conn = local.connect()
    clock = FakeClock()
    down = CollectorClient(f"http://127.0.0.1:{free_port()}", token)
    assert sync.background_pass(conn, down, clock=clock) is None
    due = conn.execute("SELECT next_attempt FROM sync_state").fetchone()[0]
    assert due > clock.now
    up = CollectorClient(collector.url, token)
    assert sync.background_pass(conn, up, clock=clock) is None  # not due yet: no traffic
    assert collector_ids(collector.db) == []
    clock.now = due
    assert sync.background_pass(conn, up, clock=clock).delivered == 10
    conn.close()


def test_client_errors_are_typed(collector):
    with pytest.raises(Refused):
        CollectorClient(collector.url, "krt_nope").whoami()
    with pytest.raises(Transient):
        CollectorClient(f"http://127.0.0.1:{free_port()}", "t").whoami()


def test_two_instances_share_one_postgresql(tmp_path):
    """Stateless instances behind a load balancer: pushes spread over two, exact counts."""
    from .collectorkit import pg_database

    url, drop = pg_database()
    instances = [Collector(url).start(), Collector(url).start()]
    try:
        token = issue(url, "alice")
        balancer = RoundRobin(instances, token)
        # Four hosts at once: uploads land on both instances concurrently.
        delivered, locals_ = balancer.push_from_hosts(tmp_path, [150, 151, 152, 153], 17)
        assert delivered == [150, 151, 152, 153]
        assert balancer.turns > 30
        rows = stored(url)
        assert len(rows) == sum(150 + i for i in range(4)) and {r[3] for r in rows} == {"ok"}
        for local in locals_:
            assert set(collector_ids(url, install_of(local))) == local.ids()
    finally:
        for c in instances:
            c.kill(signal.SIGTERM)
        drop()


def test_tls_is_verified_by_default(tmp_path):
    from .apiserver.tlsutil import make_self_signed

    cert, key = make_self_signed(str(tmp_path / "tls"))
    db = str(tmp_path / "c.db")
    c = Collector(db, args=("--tls-cert", cert, "--tls-key", key), scheme="https").start()
    try:
        token = issue(db, "alice")
        local = Local(tmp_path)
        local.add(synthetic(7))
        # An unknown CA: refused at once, with the way out named (no retries: it will not heal).
        bad = local.cli(c.url, token, "push", "--wait", check=False)
        assert bad.returncode == 1 and "TLS verification failed" in bad.stderr and "--insecure" in bad.stderr
        assert "pushed 7" in local.cli(c.url, token, "push", "--insecure").stderr
        local.add(synthetic(3))
        assert "pushed 3" in local.cli(c.url, token, "push", REQUESTS_CA_BUNDLE=cert).stderr
        assert len(collector_ids(db)) == 10
    finally:
        c.kill()


def test_background_sync_command(collector, tmp_path):
    """What kick() starts after ingestion: one quiet pass, nothing on stdout or stderr."""
    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    local.add(synthetic(30))
    proc = local.cli(collector.url, token, "sync", "run")
    assert (proc.stdout, proc.stderr) == ("", "")
    assert len(collector_ids(collector.db)) == 30
    assert "pending:      0" in local.cli(collector.url, token, "sync", "status").stdout


def test_kick_starts_a_background_pass_once(collector, tmp_path, monkeypatch):
    import time

    from .collectorkit import REPO

    token = issue(collector.db, "alice")
    local = Local(tmp_path)
    local.add(synthetic(12))
    for name, value in local.env(collector.url, token).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    started = time.monotonic()
    sync.kick()
    assert time.monotonic() - started < 0.5  # it only starts a process
    due = float((local.home / sync.DUE_FILE).read_text())
    deadline = time.monotonic() + 20
    while len(collector_ids(collector.db)) < 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(collector_ids(collector.db)) == 12
    local.add(synthetic(1))
    sync.kick()  # within the coalescing window: no second process
    assert float((local.home / sync.DUE_FILE).read_text()) >= due


def test_outbox_repairs_itself_when_its_triggers_are_gone(tmp_path):
    local = Local(tmp_path)
    local.add(synthetic(3))
    conn = local.connect()
    sync.ensure_outbox(conn)
    conn.execute("DELETE FROM sync_queue")  # as if delivered
    conn.execute("DROP TRIGGER sync_queue_insert")  # as a table rebuild would
    store.insert_local(conn, synthetic(2))
    sync.ensure_outbox(conn)
    assert sync.pending_count(conn) == 5  # everything again: nothing silently left behind
    store.insert_local(conn, synthetic(1))
    assert sync.pending_count(conn) == 6
    conn.close()


def test_a_recorded_run_reaches_the_collector_without_a_push(collector, recorder, fake_kubectl):
    """Shim → spool → background ingester → kick → background sync: no command but kubectl."""
    import os
    import subprocess
    import time

    token = issue(collector.db, "alice")
    env = dict(recorder.env, KUBECTL_RECORD_COLLECTOR=collector.url, KUBECTL_RECORD_TOKEN=token,
               KUBECTL_RECORD_KUBECTL=fake_kubectl("exit 0\n"))
    shim_dir = recorder.cli("shim", "install", "--dir", str(recorder.tmp / "shim")).stdout.split()[-1]
    assert subprocess.run([os.path.join(shim_dir, "kubectl"), "get", "pods", "web-1"], env=env).returncode == 0
    deadline = time.monotonic() + 30
    while not collector_ids(collector.db) and time.monotonic() < deadline:
        time.sleep(0.2)
    [uploaded] = collector_ids(collector.db)
    [local] = json.loads(subprocess.run([recorder.python, "-m", "kubectl_record", "history", "-o", "json"], env=env,
                                        capture_output=True, text=True).stdout)
    assert uploaded == local["id"]
