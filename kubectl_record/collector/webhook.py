"""kube-apiserver audit webhook batches into the collector's database.

A cluster (an audit source: a name and its server URL, registered with its token) posts
EventList batches (audit.k8s.io/v1 or v1beta1). They are parsed by the local importer's code
(audit/importer.import_body, audit/formats), so the collector reads exactly what `audit import
--listen` reads. Events of kubectl-like clients are kept whole, one row per (auditID, stage);
other clients (controllers, Dashboard…) keep one slim row per request, enough to count them by
userAgent and user. The primary key (cluster, auditID, stage) is the deduplication: a batch
delivered twice, to the same instance or another, adds nothing the second time.

Each committed batch advances the cluster's watermark and marks the time window it touched as
due for central correlation (collector/central.py), and so do uploaded records of a registered
server (`records_arrived`).
"""

from __future__ import annotations

from ..audit import formats
from ..audit.correlate import normalize_server
from ..audit.formats import Counters, Ev
from ..audit.importer import client_key, import_body, is_kubectl
from .storage import Storage, now_text

# Larger than any real value of an event field: an event beyond it is malformed, not stored.
MAX_FIELD = 4096
# Epoch seconds an event may carry: after 1970, before year 10000 (times are printed as RFC 3339).
MAX_TS = 253_402_300_799.0
_CLIENT_STAGES = ("ResponseComplete", "Panic")

# The fields of an audit event (formats.Ev) the collector keeps, and their columns; an event read
# back takes Ev's defaults for the rest.
EV_COLUMNS = {"audit_id": "audit_id", "stage": "stage", "ts": "ts", "verb": "verb", "user": "user_name",
              "impersonated": "impersonated", "user_agent": "ua", "resource": "resource",
              "subresource": "subresource", "namespace": "namespace", "name": "name", "api_group": "api_group",
              "code": "code", "decision": "decision", "path": "path", "manager": "manager",
              "response_kind": "response_kind", "sets": "sets"}
_EVENT_COLUMNS = ("cluster", "kubectl", *EV_COLUMNS.values(), "received_at")
_INSERT_EVENT = (f"INSERT INTO audit_events ({', '.join(_EVENT_COLUMNS)})"
                 f" VALUES ({', '.join('?' * len(_EVENT_COLUMNS))}) ON CONFLICT DO NOTHING")
_INSERT_REQUEST = ("INSERT INTO audit_requests (cluster, audit_id, ts, resource) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT DO NOTHING")
CHUNK = 1000


def event_from_row(row) -> Ev:
    """An Ev from the EV_COLUMNS of an audit_events row, in that order."""
    return Ev(**dict(zip(EV_COLUMNS, row)))


# Tables of audit sources and central correlation (collector/central.py). Audit events are stored
# one row per (auditID, stage): the primary key is the deduplication, across instances too. Times
# of events are epoch seconds (server clock), as REAL (SQLite) / DOUBLE PRECISION: a 4-byte REAL
# would round them.
def _tables(real: str, integer: str) -> list[str]:
    return [
        "CREATE TABLE audit_sources (cluster TEXT PRIMARY KEY, server TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,"
        f" events {integer} NOT NULL DEFAULT 0, malformed {integer} NOT NULL DEFAULT 0, last_batch_at TEXT,"
        f" watermark {real}, skew {real}, skew_support {integer}, lead {real}, tail {real}, correlated_at TEXT,"
        f" dirty_lo {real}, dirty_hi {real}, dirty_at {real}, dirty_gen {integer} NOT NULL DEFAULT 0,"
        f" lease_until {real})",
        "CREATE TABLE audit_events (cluster TEXT NOT NULL, audit_id TEXT NOT NULL, stage TEXT NOT NULL,"
        f" kubectl INTEGER NOT NULL, ts {real} NOT NULL, verb TEXT NOT NULL, user_name TEXT NOT NULL,"
        " impersonated TEXT NOT NULL, ua TEXT NOT NULL, resource TEXT NOT NULL, subresource TEXT NOT NULL,"
        f" namespace TEXT NOT NULL, name TEXT NOT NULL, api_group TEXT NOT NULL, code {integer},"
        " decision TEXT NOT NULL,"
        " path TEXT NOT NULL, manager TEXT NOT NULL, response_kind TEXT NOT NULL DEFAULT '', received_at TEXT NOT NULL,"
        " PRIMARY KEY (cluster, audit_id, stage))",
        "CREATE INDEX audit_events_ts ON audit_events (cluster, kubectl, ts)",
        # One row per kubectl request: the record it belongs to (set by central correlation), and
        # whether it was handed to the alerts as unmatched.
        f"CREATE TABLE audit_requests (cluster TEXT NOT NULL, audit_id TEXT NOT NULL, ts {real} NOT NULL,"
        f" resource TEXT NOT NULL, record_id TEXT, link TEXT, alerted {integer} NOT NULL DEFAULT 0,"
        " PRIMARY KEY (cluster, audit_id))",
        "CREATE INDEX audit_requests_ts ON audit_requests (cluster, ts)",
        "CREATE INDEX audit_requests_unmatched ON audit_requests (ts) WHERE record_id IS NULL AND link IS NULL"
        " AND alerted = 0",
        # The central outcome beside the (append-only) record.
        "CREATE TABLE record_audit (record_id TEXT PRIMARY KEY, cluster TEXT NOT NULL, started_at TEXT NOT NULL,"
        " status TEXT NOT NULL, audit TEXT NOT NULL, correlated_at TEXT NOT NULL)",
        "CREATE INDEX record_audit_status ON record_audit (cluster, status, started_at)",
        "CREATE INDEX records_server ON records (server, started_at)",
    ]


# One migration step each backend appends to its MIGRATIONS.
SQLITE_DDL = _tables("REAL", "INTEGER")
PG_DDL = _tables("DOUBLE PRECISION", "BIGINT")
# A later step, the same in both dialects: what each patch sets (formats.sets_of).
SETS_DDL = ["ALTER TABLE audit_events ADD COLUMN sets TEXT NOT NULL DEFAULT ''"]


class SourceError(ValueError):
    """An audit source cannot be registered as asked."""


def register_source(storage: Storage, cluster: str | None, server: str | None) -> None:
    """Bind CLUSTER (a name) to SERVER (its API server URL); again with the same URL is fine."""
    if not cluster or not cluster.strip():
        raise SourceError("cluster tokens need --cluster NAME")
    if not server or not server.startswith(("https://", "http://")):
        raise SourceError("cluster tokens need --server URL (the API server's https:// URL, as in kubeconfigs)")
    server = normalize_server(server)
    with storage.transaction() as tx:
        by_name = tx.one("SELECT server FROM audit_sources WHERE cluster = ?", (cluster,))
        by_server = tx.one("SELECT cluster FROM audit_sources WHERE server = ?", (server,))
        if by_name and by_name[0] != server:
            raise SourceError(f"cluster {cluster} is already bound to {by_name[0]}")
        if by_server and by_server[0] != cluster:
            raise SourceError(f"{server} is already the audit source of cluster {by_server[0]}")
        if not by_name:
            tx.execute("INSERT INTO audit_sources (cluster, server, created_at) VALUES (?, ?, ?)",
                       (cluster, server, now_text()))


def _problem(ev: Ev) -> str | None:
    """Why an event cannot be stored as it is (any answer but None makes it malformed)."""
    if not 0.0 < ev.ts < MAX_TS:
        return "timestamp out of range"
    for value in ev:
        if isinstance(value, str):
            if len(value) > MAX_FIELD:
                return f"a field is over {MAX_FIELD} characters"
            if "\x00" in value:
                return "a field contains a NUL character"  # PostgreSQL text cannot hold one
    if ev.code is not None and not 0 <= ev.code < 1000:
        return "responseStatus.code out of range"
    return None


class _Batch:
    """The sink import_body fills: rows for one transaction, deduplicated within the batch."""

    def __init__(self, cluster: str, counters: Counters, received: str):
        self.cluster, self.c, self.received = cluster, counters, received
        self.events: dict[tuple, tuple] = {}
        self.requests: dict[str, tuple] = {}
        self.repeated = 0
        self.lo = self.hi = self.max_ts = None

    def add(self, ev: Ev) -> None:
        try:
            # Strings that cannot be encoded (lone surrogates) cannot be stored either.
            "".join(v for v in ev if isinstance(v, str)).encode()
        except UnicodeEncodeError:
            problem = "a field is not valid Unicode"
        else:
            problem = _problem(ev)
        if problem:
            self.c.events -= 1
            self.c.bad("webhook", f"event {ev.audit_id[:80]!r}: {problem}")
            return
        kubectl = is_kubectl(ev.user_agent)
        failed_early = ev.stage == "ResponseStarted" and (ev.code or 0) >= 400
        if not kubectl and ev.stage not in _CLIENT_STAGES and not failed_early:
            return  # other clients are counted once per request, as the local importer does
        key = (ev.audit_id, ev.stage)
        if key in self.events:
            self.repeated += 1
            return
        self.max_ts = ev.ts if self.max_ts is None else max(self.max_ts, ev.ts)
        if kubectl:
            self.lo = ev.ts if self.lo is None else min(self.lo, ev.ts)
            self.hi = ev.ts if self.hi is None else max(self.hi, ev.ts)
            self.requests.setdefault(ev.audit_id, (self.cluster, ev.audit_id, ev.ts, ev.resource))
            row = ev
        else:  # what counting needs: who, with which client, when
            row = Ev(ev.audit_id, ev.stage, ev.ts, "", ev.user, "", client_key(ev.user_agent), "", "", "", "", "",
                     ev.code, "", "")
        self.events[key] = (self.cluster, int(kubectl), *(getattr(row, f) for f in EV_COLUMNS), self.received)

    def flush(self) -> None:
        """import_body calls it at the end; the rows are written by store_batch."""


def store_batch(storage: Storage, cluster: str, body: bytes) -> dict:
    """Parse one webhook POST (an EventList, or JSON lines) and commit its new events.

    Returns the counts for the answer. Nothing in BODY can make this raise: what cannot be
    read is counted as malformed (the first reasons listed) and skipped.
    """
    counters = Counters()
    batch = _Batch(cluster, counters, now_text())
    import_body(body, batch, counters, where="webhook")
    # Sorted: two instances inserting the same keys take the row locks in the same order.
    rows = [batch.events[k] for k in sorted(batch.events)]
    requests = [batch.requests[k] for k in sorted(batch.requests)]
    stored = 0
    with storage.transaction() as tx:
        for start in range(0, len(rows), CHUNK):
            stored += _executemany(tx, _INSERT_EVENT, rows[start:start + CHUNK])
        for start in range(0, len(requests), CHUNK):
            _executemany(tx, _INSERT_REQUEST, requests[start:start + CHUNK])
        tx.execute("UPDATE audit_sources SET events = events + ?, malformed = malformed + ?, last_batch_at = ?,"
                   " watermark = CASE WHEN watermark IS NULL OR watermark < ? THEN ? ELSE watermark END"
                   " WHERE cluster = ?",
                   (stored, counters.malformed, batch.received, batch.max_ts or 0.0, batch.max_ts or 0.0, cluster))
        if batch.max_ts is not None:
            # A later watermark may settle pending records even when no kubectl event came.
            mark_dirty(tx, cluster, batch.lo, batch.hi)
    return {"events": counters.events, "stored": stored, "duplicates": len(rows) - stored + batch.repeated,
            "malformed": counters.malformed, "skipped": counters.skipped, "errors": counters.first_errors}


def _executemany(tx, sql: str, rows: list) -> int:
    return tx.executemany(sql, rows) if rows else 0


def mark_dirty(tx, cluster: str, lo: float | None, hi: float | None, now: float | None = None) -> None:
    """CLUSTER needs correlating again over [LO, HI] (epoch seconds; None: only its pending records).
    The first mark since the last pass dates it (the debounce counts from there)."""
    import time

    sets = ["dirty_at = COALESCE(dirty_at, ?)", "dirty_gen = dirty_gen + 1"]
    params = [time.time() if now is None else now]
    if lo is not None:
        sets += ["dirty_lo = CASE WHEN dirty_lo IS NULL OR dirty_lo > ? THEN ? ELSE dirty_lo END",
                 "dirty_hi = CASE WHEN dirty_hi IS NULL OR dirty_hi < ? THEN ? ELSE dirty_hi END"]
        params += [lo, lo, hi, hi]
    tx.execute(f"UPDATE audit_sources SET {', '.join(sets)} WHERE cluster = ?", (*params, cluster))


def records_arrived(storage: Storage, records: list) -> None:
    """Uploaded records (as posted) of a registered server: their time windows are due for
    correlation. Runs after the upload is answered; anything unreadable is left to validation."""
    if not any(isinstance(r, dict) and isinstance(r.get("server"), str) for r in records):
        return
    with storage.transaction() as tx:
        sources = {server: cluster for cluster, server in tx.all("SELECT cluster, server FROM audit_sources")}
    if not sources:
        return
    spans: dict[str, list[float]] = {}
    for r in records:
        if not isinstance(r, dict) or not isinstance(r.get("server"), str):
            continue
        cluster = sources.get(normalize_server(r["server"]))
        start = formats.parse_ts(r.get("started_at")) if cluster else None
        if start is None or not 0.0 < start < MAX_TS:
            continue
        end = formats.parse_ts(r.get("ended_at")) if r.get("ended_at") else None
        end = end if end is not None and start <= end < MAX_TS else start
        span = spans.setdefault(cluster, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    if spans:
        with storage.transaction() as tx:
            for cluster, (lo, hi) in spans.items():
                mark_dirty(tx, cluster, lo, hi)
