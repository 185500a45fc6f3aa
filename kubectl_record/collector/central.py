"""Central audit correlation: the team's records and each cluster's webhook events
(collector/webhook.py), linked by the same engine as on a laptop (audit/correlate.py).

How: per audit source (cluster) and window of record start times, the records of its server
and its kubectl events (with the links already made) are copied into a scratch in-memory SQLite
with the local store's schema, `correlate()` runs there, and what it decided is written back:
each record's outcome into `record_audit` (records are append-only: the outcome goes beside
them), each request's record into `audit_requests`, the clock skew into `audit_sources`.
Memory is bounded by one window (CHUNK seconds of one cluster's records and events).

When: webhook batches and uploaded records mark their cluster's window dirty in the database;
each worker of each instance polls (`Correlator.run`) and takes a due cluster (first marked at
least `delay` seconds ago: batches arriving meanwhile are correlated together) under a lease
row, so one pass at a time works on a cluster and a crashed pass is retried when its lease ends.

Reads: `/v1/records` shows the central outcome as `audit` (with `central`: cluster and time),
and the record's own uploaded `audit` as `audit_uploaded`: the collector sees every record of
the team and the whole event stream, a laptop only its own. `unmatched_report` is the
auditors' view of server-side kubectl activity with no record and of other clients;
`claim_unmatched` hands each settled unmatched kubectl request to the alerts once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time

from .. import store
from ..audit import correlate as engine
from ..audit.formats import STAGE_RANK, Counters, parse_ts
from ..audit.importer import MARKER_PREFIX, Sink, ua_product
from ..audit.unmatched import unmatched
from ..record import rfc3339
from ..store import FIELDS
from . import forward
from .records import RESERVED_ID_PREFIX
from .storage import Access, BadQuery, Storage, column_list, glob_to_like, now_text
from .webhook import EV_COLUMNS, MAX_TS, event_from_row

DELAY = 2.0              # seconds from the first new batch or record to a cluster's correlation
LEASE = 300.0            # seconds a pass may hold a cluster before another may take it over
RETRY = 30.0             # seconds before a failed pass is tried again
CHUNK = 1800.0           # seconds of record start times per scratch database
PAD = 60.0               # neighbours correlate() considers on each side of a window
LONGEST = 3600.0         # correlate() counts an unfinished run as at most an hour long
PENDING_HORIZON = 86400.0  # pending records older than this are no longer re-correlated
SETTLE = 300.0           # seconds an unlinked request waits for its record before it is unmatched
UNMATCHED_WINDOW = 86400.0
MAX_UNMATCHED_EVENTS = 50_000

_EV_COLUMNS = tuple(EV_COLUMNS.values())


def scratch() -> sqlite3.Connection:
    """An empty in-memory database with the local store's schema (what the engine works on)."""
    return store.connect_memory()


def _load_events(conn: sqlite3.Connection, server: str, rows) -> None:
    """Stage rows → the local audit_events table, merged per auditID exactly as an import does."""
    sink = Sink(conn, server, Counters())
    for row in rows:
        sink.add(event_from_row(row))
    sink.flush()


# --- passes ---------------------------------------------------------------------------------------


def _claim(storage: Storage, delay: float, now: float):
    with storage.transaction() as tx:
        row = tx.one("SELECT cluster, server, dirty_lo, dirty_hi, dirty_gen FROM audit_sources"
                     " WHERE dirty_at IS NOT NULL AND dirty_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
                     " ORDER BY dirty_at LIMIT 1", (now - delay, now))
        # Another instance may have read the same row: whoever sets the lease first has it.
        if row is None or tx.execute("UPDATE audit_sources SET lease_until = ? WHERE cluster = ?"
                                     " AND (lease_until IS NULL OR lease_until < ?)", (now + LEASE, row[0], now)) != 1:
            return None
    return row


def _release(storage: Storage, cluster: str, gen: int, ok: bool, now: float) -> None:
    """Done: the marks this pass covered are cleared unless newer ones came (then it runs again
    after the delay: a busy cluster is correlated every so often, not back to back).
    Failed: the marks stay and the lease is kept a little, so a failing pass does not spin."""
    with storage.transaction() as tx:
        if ok:
            tx.execute("UPDATE audit_sources SET lease_until = NULL,"
                       " dirty_lo = CASE WHEN dirty_gen = ? THEN NULL ELSE dirty_lo END,"
                       " dirty_hi = CASE WHEN dirty_gen = ? THEN NULL ELSE dirty_hi END,"
                       " dirty_at = CASE WHEN dirty_gen = ? THEN NULL ELSE ? END WHERE cluster = ?",
                       (gen, gen, gen, now, cluster))
        else:
            tx.execute("UPDATE audit_sources SET lease_until = ? WHERE cluster = ?", (now + RETRY, cluster))


def _window(storage: Storage, cluster: str, server: str, lo: float | None, hi: float | None,
            now: float) -> tuple[float, float] | None:
    """Record start times to re-correlate: every run that could own an event in [LO, HI]
    (client clocks within MAX_SKEW of the server's), and the cluster's recent pending records."""
    starts, ends = [], []
    with storage.transaction() as tx:
        if lo is not None:
            first = tx.one("SELECT MIN(started_at) FROM records WHERE server IN (?, ?) AND started_at >= ?"
                           " AND started_at < ? AND (ended_at IS NULL OR ended_at >= ?)",
                           (server, server + "/", rfc3339(lo - engine.MAX_SKEW - LONGEST),
                            rfc3339(hi + engine.MAX_SKEW), rfc3339(lo - engine.MAX_SKEW - PAD)))[0]
            if first:
                starts.append(first)
                ends.append(hi + engine.MAX_SKEW + 1.0)
        pending = tx.one("SELECT MIN(started_at), MAX(started_at) FROM record_audit WHERE cluster = ?"
                         " AND status = 'pending' AND started_at >= ?", (cluster, rfc3339(now - PENDING_HORIZON)))
        if pending[0]:
            starts.append(pending[0])
            ends.append((_epoch(pending[1]) or now) + 1.0)
    if not starts:
        return None
    return min(_epoch(s) for s in starts), max(ends)


def _epoch(text: str | None) -> float | None:
    return parse_ts(text) if text else None


def correlate_window(storage: Storage, cluster: str, server: str, a: float, b: float, *, now: float,
                     grace: float = engine.GRACE) -> engine.Summary:
    """Re-link the records of SERVER that started in [A, B) with CLUSTER's events; write back."""
    conn = scratch()
    try:
        with storage.transaction() as tx:  # one consistent read
            src = tx.one("SELECT skew, skew_support, lead, tail, watermark FROM audit_sources WHERE cluster = ?",
                         (cluster,))
            records = tx.all(f"SELECT {column_list(FIELDS)} FROM records WHERE server IN (?, ?) AND started_at >= ?"
                             " AND started_at < ?", (server, server + "/", rfc3339(a - PAD), rfc3339(b + PAD)))
            if not records or src is None:
                return engine.Summary()
            i_start, i_end = FIELDS.index("started_at"), FIELDS.index("ended_at")
            last_end = max(min(now, (_epoch(r[i_end]) or (_epoch(r[i_start]) or 0.0) + LONGEST)) for r in records)
            ev_lo = a - PAD - engine.MAX_SKEW - 3.0  # 3 s: more than any margin correlate() adds
            ev_hi = max(b + PAD, last_end) + engine.MAX_SKEW + 3.0
            events = tx.all(f"SELECT {', '.join(_EV_COLUMNS)} FROM audit_events WHERE cluster = ? AND kubectl = 1"
                            " AND ts >= ? AND ts <= ? ORDER BY ts", (cluster, ev_lo, ev_hi))
            links = {row[0]: (row[1], row[2]) for row in tx.all(
                "SELECT audit_id, record_id, link FROM audit_requests WHERE cluster = ? AND ts >= ? AND ts <= ?"
                " AND (record_id IS NOT NULL OR link IS NOT NULL)", (cluster, ev_lo, ev_hi))}
        store.bulk_insert(conn, records)
        del records
        _load_events(conn, server, events)
        marked = {ua_product(row[6])[len(MARKER_PREFIX):] for row in events
                  if ua_product(row[6]).startswith(MARKER_PREFIX)}
        del events
        conn.executemany("UPDATE audit_events SET record_id = ?, link = ? WHERE audit_id = ?",
                         [(rid, link, aid) for aid, (rid, link) in links.items()])
        # Runs made with the exact mode's marker are known by their events' user agent.
        conn.executemany("INSERT OR IGNORE INTO audit_marked (record_id) VALUES (?)", [(m,) for m in marked])
        skew, support, lead, tail, watermark = src
        conn.execute("INSERT INTO audit_clusters (server, skew, skew_support, lead, tail, watermark, events, updated)"
                     " VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT(server) DO UPDATE SET skew = excluded.skew,"
                     " skew_support = excluded.skew_support, lead = excluded.lead, tail = excluded.tail,"
                     " watermark = excluded.watermark", (server, skew, support, lead, tail, watermark, now))
        summary = engine.correlate(conn, server, a, b, now=now, grace=grace)

        outcomes = conn.execute("SELECT id, started_at, audit, json_extract(audit, '$.status') FROM records"
                                " WHERE started_at >= ? AND started_at < ? AND audit IS NOT NULL",
                                (rfc3339(a), rfc3339(b))).fetchall()
        changed = [(rid, link, aid) for aid, rid, link in conn.execute(
            "SELECT audit_id, record_id, link FROM audit_events") if links.get(aid, (None, None)) != (rid, link)]
        cl = conn.execute("SELECT skew, skew_support, lead, tail FROM audit_clusters WHERE server = ?",
                          (server,)).fetchone()
    finally:
        conn.close()
    at = now_text()
    with storage.transaction() as tx:
        if storage.forward_to:  # a changed outcome goes to the destinations again, as a late end does
            before = {}
            for start in range(0, len(outcomes), 500):
                chunk = [o[0] for o in outcomes[start:start + 500]]
                before.update(tx.all(f"SELECT record_id, audit FROM record_audit WHERE record_id IN"
                                     f" ({', '.join('?' * len(chunk))})", chunk))
            forward.queue(storage, tx, [rid for rid, _, audit, _ in outcomes if before.get(rid) != audit])
        tx.executemany("INSERT INTO record_audit (record_id, cluster, started_at, status, audit, correlated_at)"
                       " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (record_id) DO UPDATE SET cluster = excluded.cluster,"
                       " status = excluded.status, audit = excluded.audit, correlated_at = excluded.correlated_at",
                       [(rid, cluster, started, status, audit, at) for rid, started, audit, status in outcomes])
        tx.executemany("UPDATE audit_requests SET record_id = ?, link = ? WHERE cluster = ? AND audit_id = ?",
                       [(rid, link, cluster, aid) for rid, link, aid in changed])
        tx.execute("UPDATE audit_sources SET skew = ?, skew_support = ?, lead = ?, tail = ?, correlated_at = ?,"
                   " lease_until = ? WHERE cluster = ?", (*cl, at, time.time() + LEASE, cluster))
    return summary


def correlate_source(storage: Storage, cluster: str, server: str, lo: float | None, hi: float | None, *,
                     now: float, grace: float = engine.GRACE) -> int:
    """One pass over what [LO, HI] (event times) touches, window by window. Returns records seen."""
    span = _window(storage, cluster, server, lo, hi, now)
    if span is None:
        return 0
    done = 0
    a, end = span
    while a < end:
        b = min(end, a + CHUNK)
        done += correlate_window(storage, cluster, server, a, b, now=now, grace=grace).records
        a = b
    return done


class Correlator:
    """Runs the due passes; one per worker process (see the module docstring).

    ON_UNMATCHED, when given, is called after each round with the kubectl requests that have
    stayed without a record for SETTLE seconds (see `claim_unmatched`): each request once, across
    every worker and instance, e.g. `lambda events: alerts.audit_arrived(events, unmatched=True)`.
    """

    def __init__(self, storage: Storage, *, delay: float = DELAY, grace: float = engine.GRACE,
                 settle: float = SETTLE, on_unmatched=None, clock=time.time):
        self.storage, self.delay, self.grace, self.settle = storage, delay, grace, settle
        self.on_unmatched, self.clock = on_unmatched, clock

    def run_due(self) -> int:
        """Every cluster that is due, then the unmatched hook. Returns the passes made."""
        passes = 0
        while True:
            now = self.clock()
            claim = _claim(self.storage, self.delay, now)
            if claim is None:
                break
            cluster, server, lo, hi, gen = claim
            ok = False
            try:
                correlate_source(self.storage, cluster, server, lo, hi, now=now, grace=self.grace)
                ok = True
            finally:
                _release(self.storage, cluster, gen, ok, self.clock())
            passes += 1
        if self.on_unmatched is not None or self.storage.forward_to:
            events = claim_unmatched(self.storage, self.settle, self.clock())
            if events and self.on_unmatched is not None:
                self.on_unmatched(events)
        return passes

    async def run(self) -> None:
        """Poll until cancelled (the app's lifespan starts and cancels it)."""
        from starlette.concurrency import run_in_threadpool

        poll = max(0.05, min(1.0, self.delay / 2))
        while True:
            await asyncio.sleep(poll)
            try:
                await run_in_threadpool(self.run_due)
            except Exception as exc:  # the database may be away for a while: try again later
                print(f"kubectl-record collector: audit correlation: {type(exc).__name__}: {exc}"[:500],
                      file=sys.stderr, flush=True)


# --- reads ----------------------------------------------------------------------------------------


def attach_outcomes(tx, records: list[dict]) -> None:
    """The central outcome as each record's `audit`; what it uploaded stays as `audit_uploaded`."""
    ids = [r["id"] for r in records]
    found = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update((rid, (cluster, audit, at)) for rid, cluster, audit, at in tx.all(
            f"SELECT record_id, cluster, audit, correlated_at FROM record_audit WHERE record_id IN"
            f" ({', '.join('?' * len(chunk))})", chunk))
    for r in records:
        if r["id"] in found:
            cluster, audit, at = found[r["id"]]
            r["audit_uploaded"] = r.get("audit")
            r["audit"] = {**json.loads(audit), "central": {"cluster": cluster, "correlated_at": at}}


def _sources(tx, access: Access, cluster: str | None) -> list[tuple[str, str]]:
    where, params = [], []
    if access.role == "auditor" and access.scope and access.scope != "*":
        where.append("cluster LIKE ? ESCAPE '\\'")
        params.append(glob_to_like(access.scope))
    if cluster:
        if "\x00" in cluster:
            raise BadQuery("cluster contains a NUL character")
        where.append("cluster LIKE ? ESCAPE '\\'")
        params.append(glob_to_like(cluster))
    return tx.all("SELECT cluster, server FROM audit_sources" + (" WHERE " + " AND ".join(where) if where else "")
                  + " ORDER BY cluster", params)


def unmatched_report(storage: Storage, access: Access, cluster: str | None = None, since: float | None = None,
                     until: float | None = None, gap: float = 2.0, now: float | None = None) -> list[dict]:
    """Per visible cluster, over [SINCE, UNTIL) (default: the last day on), what audit/unmatched.py
    reports on a laptop: kubectl activity on the server with no record (grouped into bursts),
    changing records with no audit evidence, other clients by userAgent and user."""
    now = time.time() if now is None else now
    since = (now if until is None else until) - UNMATCHED_WINDOW if since is None else since
    until = MAX_TS if until is None else until  # the server's clock may be ahead of ours
    with storage.transaction() as tx:
        sources = _sources(tx, access, cluster)
    reports = [_unmatched_one(storage, name, server, since, until, gap) for name, server in sources]
    if access.role == "auditor":
        with storage.transaction() as tx:
            storage.log_access(tx, access, "audit-unmatched", {"cluster": cluster, "since": rfc3339(since),
                                                               "until": rfc3339(until)}, None, len(reports))
    return reports


def _unmatched_one(storage: Storage, name: str, server: str, since: float, until: float, gap: float) -> dict:
    conn = scratch()
    try:
        with storage.transaction() as tx:
            events = tx.all(
                f"SELECT {', '.join('e.' + c for c in _EV_COLUMNS)} FROM audit_requests r JOIN audit_events e"
                " ON e.cluster = r.cluster AND e.audit_id = r.audit_id WHERE r.cluster = ? AND r.ts >= ?"
                " AND r.ts < ? AND r.record_id IS NULL AND r.link IS NULL ORDER BY r.ts LIMIT ?",
                (name, since, until, MAX_UNMATCHED_EVENTS + 1))
            clients = tx.all("SELECT ua, user_name, COUNT(DISTINCT audit_id), MIN(ts), MAX(ts) FROM audit_events"
                             " WHERE cluster = ? AND kubectl = 0 AND ts >= ? AND ts < ? GROUP BY ua, user_name",
                             (name, since, until))
            doubtful = tx.all("SELECT record_id, audit FROM record_audit WHERE cluster = ? AND status IN"
                              " ('missing', 'pending') AND started_at >= ? AND started_at < ?",
                              (name, rfc3339(since), rfc3339(until)))
            records = []
            for start in range(0, len(doubtful), 500):
                chunk = doubtful[start:start + 500]
                records += tx.all(f"SELECT {column_list(FIELDS)} FROM records WHERE id IN"
                                  f" ({', '.join('?' * len(chunk))})", [rid for rid, _ in chunk])
        truncated = len(events) > MAX_UNMATCHED_EVENTS
        _load_events(conn, server, events[:MAX_UNMATCHED_EVENTS])
        del events
        conn.executemany("INSERT INTO audit_clients (server, ua, user, count, first_ts, last_ts)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         [(server, *row) for row in clients])
        store.bulk_insert(conn, records)
        conn.executemany("UPDATE records SET audit = ? WHERE id = ?", [(a, rid) for rid, a in doubtful])
        report = unmatched(conn, server, gap=gap)
    finally:
        conn.close()
    return {"cluster": name, "server": server, "truncated": truncated, **report}


def claim_unmatched(storage: Storage, settle: float = SETTLE, now: float | None = None,
                    limit: int = 1000) -> list[dict]:
    """Kubectl requests that SETTLE seconds after they were made still belong to no record,
    each returned once across every worker and instance (marked as handed out in the same
    transaction), oldest first, at most LIMIT. Discovery requests (no resource) are marked but
    not returned: alone they are no activity. Each is a flat dict, as alerts.audit_view reads it:
    audit_id, cluster, server, time, user, impersonated_user, user_agent, verb, resource,
    subresource, namespace, name, code, stage, unmatched (True)."""
    now = time.time() if now is None else now
    out = []
    with storage.transaction() as tx:
        # Not while a correlation pass is due over its time: a batch that came late (a webhook's
        # backlog) is older than SETTLE on arrival, and its record may be right there.
        rows = tx.all("SELECT r.cluster, r.audit_id, r.resource, s.server FROM audit_requests r JOIN audit_sources s"
                      " ON s.cluster = r.cluster WHERE r.record_id IS NULL AND r.link IS NULL AND r.alerted = 0"
                      " AND r.ts < ? AND (s.dirty_lo IS NULL OR r.ts < s.dirty_lo - ? OR r.ts > s.dirty_hi + ?)"
                      " ORDER BY r.ts LIMIT ?", (now - settle, PAD, PAD, limit))
        for cluster, audit_id, resource, server in rows:
            if tx.execute("UPDATE audit_requests SET alerted = 1 WHERE cluster = ? AND audit_id = ? AND alerted = 0",
                          (cluster, audit_id)) != 1 or not resource:
                continue  # another instance handed it out first; or discovery
            ev = _unmatched_event(tx, cluster, server, audit_id)
            if ev is not None:
                out.append(ev)
        if out and storage.forward_to:  # to the destinations too, as documents of their own
            forward.queue(storage, tx, [UNMATCHED_ID + ev["audit_id"] for ev in out])
    return out


def _unmatched_event(tx, cluster: str, server: str, audit_id: str) -> dict | None:
    stages = tx.all(f"SELECT {', '.join(_EV_COLUMNS)} FROM audit_events WHERE cluster = ? AND audit_id = ?",
                    (cluster, audit_id))
    if not stages:
        return None
    ev = max((event_from_row(s) for s in stages), key=lambda e: (e.code is not None, STAGE_RANK.get(e.stage, 0)))
    return {"audit_id": audit_id, "cluster": cluster, "server": server, "time": rfc3339(ev.ts),
            "user": ev.user, "impersonated_user": ev.impersonated or None, "user_agent": ev.user_agent,
            "verb": ev.verb, "resource": ev.resource, "subresource": ev.subresource or None,
            "namespace": ev.namespace or None, "name": ev.name or None, "code": ev.code,
            "stage": ev.stage, "unmatched": True}


# Forwarded documents of server-side kubectl requests without a record: `audit-<auditID>`.
UNMATCHED_ID = RESERVED_ID_PREFIX  # uploaded records may not take it


def unmatched_documents(tx, ids: list[str]) -> dict[str, dict]:
    """Documents for the destinations, shaped like records so that every encoder and dashboard
    takes them: `source` is `audit` and `audit.status` is `unmatched`; what the server knows is
    filled in (time, cluster, server, identity, verb, resource, namespace, name, its status code),
    what only a client knows (command line, exit status, kubeconfig, host) is null."""
    out = {}
    for doc_id in ids:
        audit_id = doc_id[len(UNMATCHED_ID):]
        row = tx.one("SELECT r.cluster, s.server FROM audit_requests r JOIN audit_sources s ON s.cluster = r.cluster"
                     " WHERE r.audit_id = ?", (audit_id,))
        ev = _unmatched_event(tx, row[0], row[1], audit_id) if row else None
        if ev is not None:  # else deleted since (retention)
            out[doc_id] = unmatched_document(ev)
    return out


def unmatched_document(ev: dict) -> dict:
    """One unmatched request (as claim_unmatched returns it) as a records-shaped document."""
    name = ev["name"]
    return {
        **dict.fromkeys(FIELDS), "id": UNMATCHED_ID + ev["audit_id"], "started_at": ev["time"], "source": "audit",
        "state": "unmatched", "cluster": ev["cluster"], "server": ev["server"], "identity": ev["user"],
        "verb": ev["verb"], "resource": ev["resource"], "names": [name] if name else [],
        "namespace": ev["namespace"], "mutating": ev["verb"] not in ("get", "list", "watch"),
        "command": f"{ev['verb']} {ev['resource']}{'/' + name if name else ''} (server side, no record)",
        "user_agent": ev["user_agent"],
        "audit": {"status": "unmatched", "events": [{
            "audit_id": ev["audit_id"], "verb": ev["verb"], "resource": ev["resource"], "namespace": ev["namespace"],
            "name": name, "code": ev["code"], "decision": None}]},
    }

