"""The collector as a gateway (`serve --forward URL`): the records it stores go on to
destinations (kubectl_record.destinations: OpenSearch/Elasticsearch `_bulk`, OTLP, Loki,
webhooks) from an outbox in the collector's own database, so it keeps no state outside it and
any number of workers and instances on one PostgreSQL share the work.

Queue    storage.ingest calls `queue()` in the transaction that stores an upload: one row per
         (destination, record) for each record stored for the first time or whose outcome
         changed (a late end, identity, audit). A crash after that commit loses nothing.
Claim    a forwarder (one thread per worker) takes the oldest unclaimed rows of a destination
         under a lease (`claim`, `claimed_until`) in a short transaction that holds the
         destination's advisory lock (PostgreSQL; SQLite has one writer anyway), so no two
         workers or instances hold the same row. The lease is renewed while the batch is out;
         a worker killed mid-delivery leaves it to expire, and the batch goes again (a re-send
         is harmless where the destination deduplicates: `_bulk` create with `_id`, webhook-id).
         A record queued again while its row is out bumps the row's `gen`: that delivery then
         does not remove the row, and the newer state follows it, never races it.
Deliver  the destination's `send()` classifies every record (base.DeliveryResult): delivered
         and rejected rows leave the queue (rejected ones become dead letters with the
         server's reason), the rest are released for later, after the backoff (sync.Backoff,
         Retry-After as a floor) kept in `forward_state.next_attempt`, which every worker
         honours. A 413 halves the batch; one record too large is a dead letter. An ordered
         destination (webhook) has one batch out at a time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass

from ..timefmt import rfc3339
from .storage import COLUMNS, Storage, _output, column_list


def _tables(serial: str, real: str, integer: str) -> list[str]:
    return [
        f"CREATE TABLE forward_queue (pos {serial}, dest TEXT NOT NULL, record_id TEXT NOT NULL,"
        f" gen {integer} NOT NULL DEFAULT 0, claim TEXT, claimed_until {real} NOT NULL DEFAULT 0,"
        " UNIQUE (dest, record_id))",
        "CREATE INDEX forward_queue_order ON forward_queue (dest, pos)",
        "CREATE INDEX forward_queue_claim ON forward_queue (claim)",
        f"CREATE TABLE forward_state (dest TEXT PRIMARY KEY, last_success TEXT, last_error TEXT, last_error_at TEXT,"
        f" failures {integer} NOT NULL DEFAULT 0, next_attempt {real} NOT NULL DEFAULT 0,"
        f" delivered {integer} NOT NULL DEFAULT 0, batches {integer} NOT NULL DEFAULT 0)",
        f"CREATE TABLE forward_dead (id {serial}, dest TEXT NOT NULL, record_id TEXT NOT NULL, reason TEXT NOT NULL,"
        " at TEXT NOT NULL)",
        "CREATE INDEX forward_dead_dest ON forward_dead (dest, id)",
    ]


# One migration step each backend appends to its MIGRATIONS.
SQLITE_DDL = _tables("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", "INTEGER")
PG_DDL = _tables("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "BIGINT")


def queue(storage: Storage, tx, ids: list[str]) -> None:
    """Queue IDS for every destination STORAGE forwards to, in the caller's (storing) transaction.
    One statement per destination, the ids as one JSON array: a statement per row costs an
    upload noticeably more on PostgreSQL."""
    from .storage_pg import PostgresStorage

    elements = ("SELECT ?, json_array_elements_text(?::json)" if isinstance(storage, PostgresStorage)
                else "SELECT ?, value FROM json_each(?) WHERE true")  # WHERE: SQLite's upsert needs it after SELECT
    for dest in storage.forward_to:
        tx.execute(f"INSERT INTO forward_queue (dest, record_id) {elements}"
                   " ON CONFLICT (dest, record_id) DO UPDATE SET gen = forward_queue.gen + 1", (dest, json.dumps(ids)))


def open_destinations(urls, config: str | None = None) -> list:
    """The destinations of `--forward URL`s and of `--forward-config FILE` (the `[destinations]`
    table of a workstation's config: urls, and options per URL, which apply to --forward URLs
    too). Raises destinations.DestinationError for a bad URL, option or file."""
    from ..destinations import open_destination
    from ..destinations.adapter import read_destinations

    out: dict = {}
    for url, options in read_destinations(config, urls) if config else [(url, {}) for url in urls]:
        dest = open_destination(url, options)
        if dest.name in out:  # given twice (flag and file): one outbox position
            dest.close()
        else:
            out[dest.name] = dest
    return list(out.values())


def to_env(urls, config: str | None, **tuning) -> str:
    """`serve`'s forwarding settings for its workers, each of which builds its Forwarder from
    them: the URLs, and the config file's path (its options are read there)."""
    return json.dumps({"urls": list(urls), "config": config, "tuning": tuning})


def from_env(storage: Storage, text: str, on_error=None) -> "Forwarder":
    from ..sync import Backoff

    settings = json.loads(text)
    tuning = dict(settings["tuning"])
    backoff = Backoff(base=tuning.pop("backoff_base", 1.0), cap=tuning.pop("backoff_cap", 300.0))
    return Forwarder(storage, open_destinations(settings["urls"], settings["config"]), backoff=backoff,
                     on_error=on_error, **tuning)


@dataclass
class _Claim:
    token: str
    rows: list  # (pos, record_id, gen), oldest first
    records: list  # the stored records of those rows, as /v1/records shows them


class Forwarder:
    """Delivers the queue to DESTINATIONS (opened Destination objects) from a background thread.

    INTERVAL: seconds between rounds when nothing wakes it (`wake()` after an upload); LEASE:
    how long a claimed batch stays reserved without renewal (renewed every LEASE/3 while out)."""

    def __init__(self, storage: Storage, destinations: list, *, interval: float = 5.0, lease: float = 60.0,
                 backoff=None, clock=time.time, on_error=None):
        from ..sync import Backoff

        self.storage = storage
        self.destinations = {d.name: d for d in destinations}
        self.batch_size = {name: d.batch_size for name, d in self.destinations.items()}
        self.interval = interval
        self.lease = lease
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.on_error = on_error or (lambda line: None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with storage.transaction() as tx:
            tx.executemany("INSERT INTO forward_state (dest) VALUES (?) ON CONFLICT (dest) DO NOTHING",
                           [(name,) for name in self.destinations])
        storage.forward_to = tuple(self.destinations)

    # --- the thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="kubectl-record-forward", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the batch in flight, waiting at most TIMEOUT: an unfinished batch's lease
        runs out and another worker (or the next start) sends it."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        for dest in self.destinations.values():
            dest.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # the database is away, say: the next round tries again
                self.on_error(f"{type(exc).__name__}: {exc}")
            self._wake.wait(self.interval)
            self._wake.clear()

    # --- delivery -----------------------------------------------------------------------

    def run_once(self) -> dict[str, int]:
        """Deliver batch after batch, round robin, until each destination is empty, failing or
        waiting for its backoff. Returns the rows settled (delivered or dead) per destination."""
        done = dict.fromkeys(self.destinations, 0)
        active = list(self.destinations)
        while active and not self._stop.is_set():
            for name in list(active):
                settled = self.deliver_batch(name)
                if settled is None:
                    active.remove(name)
                else:
                    done[name] += settled
        return done

    def deliver_batch(self, name: str) -> int | None:
        """Claim, send and settle one batch; None when there was nothing to do or it failed."""
        from ..destinations import DeliveryResult

        dest = self.destinations[name]
        claim = self._claim(name, dest.ordered)
        if claim is None:
            return None
        if not claim.rows:
            return 0
        with self._renewing(claim.token):
            try:
                result = dest.send(claim.records)
            except Exception as exc:  # a fault in an encoder must not stop forwarding
                result = DeliveryResult(retryable_error=f"{name}: {type(exc).__name__}: {exc}")
        return self._settle(name, claim, result)

    def _claim(self, name: str, ordered: bool) -> _Claim | None:
        now = self.clock()
        with self.storage.transaction() as tx:
            # The advisory lock that serialises an installation's uploads, keyed by the
            # destination: claims for it are taken one at a time across workers and instances.
            self.storage.lock_install(tx, "forward " + name)
            due = tx.one("SELECT next_attempt FROM forward_state WHERE dest = ?", (name,))
            if due is None or due[0] > now:
                return None
            if ordered and tx.one("SELECT 1 FROM forward_queue WHERE dest = ? AND claimed_until > ? LIMIT 1",
                                  (name, now)):
                return None
            rows = tx.all("SELECT pos, record_id, gen FROM forward_queue WHERE dest = ? AND claimed_until <= ?"
                          " ORDER BY pos LIMIT ?", (name, now, self.batch_size[name]))
            if not rows:
                return None
            token = uuid.uuid4().hex
            tx.executemany("UPDATE forward_queue SET claim = ?, claimed_until = ? WHERE pos = ?",
                           [(token, now + self.lease, pos) for pos, _, _ in rows])
            tx.execute("UPDATE forward_state SET batches = batches + 1 WHERE dest = ?", (name,))
            records = _records(tx, [rid for _, rid, _ in rows])
            gone = [(pos,) for pos, rid, _ in rows if rid not in records]
            if gone:  # deleted since (retention): nothing to send
                tx.executemany("DELETE FROM forward_queue WHERE pos = ?", gone)
        kept = [row for row in rows if row[1] in records]
        return _Claim(token, kept, [records[rid] for _, rid, _ in kept])

    @contextmanager
    def _renewing(self, token: str):
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease / 3):
                try:
                    with self.storage.transaction() as tx:
                        tx.execute("UPDATE forward_queue SET claimed_until = ? WHERE claim = ?",
                                   (self.clock() + self.lease, token))
                except Exception:  # noqa: BLE001 - the lease then runs out and the batch is sent again
                    pass

        thread = threading.Thread(target=renew, name="kubectl-record-forward-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _settle(self, name: str, claim: _Claim, result) -> int | None:
        now = self.clock()
        ids = [rid for _, rid, _ in claim.rows]
        delivered = set(result.delivered) & set(ids)
        rejected = {rid: reason for rid, reason in result.rejected.items() if rid in ids}
        halve = False
        if result.too_large and not (delivered or rejected):
            if len(ids) == 1:  # nothing makes it fit
                rejected[ids[0]] = result.retryable_error or f"{name}: too large"
            else:
                halve = True
                self.batch_size[name] = max(1, len(ids) // 2)
        pending = [rid for rid in ids if rid not in delivered and rid not in rejected]
        error = result.fatal_error or (None if halve or not pending else
                                       result.retryable_error or f"{name}: {len(pending)} record(s) not delivered")
        with self.storage.transaction() as tx:
            tx.executemany("DELETE FROM forward_queue WHERE pos = ? AND claim = ? AND gen = ?",
                           [(pos, claim.token, gen) for pos, rid, gen in claim.rows
                            if rid in delivered or rid in rejected])
            # What is left: not delivered, or queued again while out (its newer state goes next).
            tx.execute("UPDATE forward_queue SET claim = NULL, claimed_until = 0 WHERE claim = ?", (claim.token,))
            tx.executemany("INSERT INTO forward_dead (dest, record_id, reason, at) VALUES (?, ?, ?, ?)",
                           [(name, rid, reason, rfc3339(now)) for rid, reason in rejected.items()])
            if error:
                failures = tx.one("SELECT failures FROM forward_state WHERE dest = ?", (name,))[0] + 1
                tx.execute("UPDATE forward_state SET last_error = ?, last_error_at = ?, failures = ?, next_attempt = ?,"
                           " delivered = delivered + ? WHERE dest = ?",
                           (error, rfc3339(now), failures, now + self.backoff.delay(failures, result.retry_after),
                            len(delivered), name))
            else:
                tx.execute("UPDATE forward_state SET last_success = ?, failures = 0, next_attempt = 0,"
                           " delivered = delivered + ? WHERE dest = ?", (rfc3339(now), len(delivered), name))
        return None if error else len(delivered) + len(rejected)


def _records(tx, ids: list[str]) -> dict[str, dict]:
    """The records as /v1/records shows them: with the collector's own audit outcome."""
    from .central import UNMATCHED_ID, attach_outcomes, unmatched_documents  # central queues through this module

    out = unmatched_documents(tx, [i for i in ids if i.startswith(UNMATCHED_ID)])
    ids = [i for i in ids if not i.startswith(UNMATCHED_ID)]
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in tx.all(f"SELECT {column_list(COLUMNS)} FROM records WHERE id IN ({', '.join('?' * len(chunk))})",
                          chunk):
            record = _output(row)
            out[record["id"]] = record
    attach_outcomes(tx, [r for r in out.values() if r["source"] != "audit"])
    return out


def status(storage: Storage, forwarded_here=(), now: float | None = None, recent: int = 20) -> list[dict]:
    """Per destination ever forwarded to from this database: pending, in flight, delivered,
    last success and error, backoff, dead letters (count and the most recent)."""
    now = time.time() if now is None else now
    out = []
    with storage.transaction() as tx:
        for dest, last_success, last_error, last_error_at, failures, next_attempt, delivered, batches in tx.all(
                "SELECT dest, last_success, last_error, last_error_at, failures, next_attempt, delivered, batches"
                " FROM forward_state ORDER BY dest"):
            pending, in_flight = tx.one("SELECT COUNT(*), COALESCE(SUM(CASE WHEN claimed_until > ? THEN 1 ELSE 0 END), 0)"
                                        " FROM forward_queue WHERE dest = ?", (now, dest))
            dead = tx.one("SELECT COUNT(*) FROM forward_dead WHERE dest = ?", (dest,))[0]
            out.append({
                "destination": dest, "forwarded_here": dest in forwarded_here, "pending": int(pending),
                "in_flight": int(in_flight), "delivered": int(delivered), "batches": int(batches),
                "last_success": last_success, "last_error": last_error, "last_error_at": last_error_at,
                "failures": int(failures), "next_attempt": rfc3339(next_attempt) if next_attempt > now else None,
                "dead_letters": int(dead),
                "recent_dead_letters": [{"record_id": rid, "reason": reason, "at": at} for rid, reason, at in tx.all(
                    "SELECT record_id, reason, at FROM forward_dead WHERE dest = ? ORDER BY id DESC LIMIT ?",
                    (dest, recent))],
            })
    return out
