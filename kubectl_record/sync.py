"""Uploading to the team collector: the outbox, `push`, background sync, `sync status`, team lookups.

The outbox lives in the local store. `sync_queue` holds, per destination, the ids of records not
yet delivered, in the order they were stored (so each installation's chain arrives in seq order);
triggers on `records` fill it, so nothing on the kubectl path ever waits for the network. A record
whose outcome fields change later (a late end, identity, audit) is queued again; INSERT OR
REPLACE gives it a new position, so an upload already in flight cannot acknowledge the newer
state. Tombstones use their own `uploaded_at` marker (kubectl_record.store). Entries leave the
outbox only in the transaction that records the collector's answer: a client killed at any point
re-sends, and the collector deduplicates by record id, so nothing is lost or doubled.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import click

from . import paths
from .store import BOOL_FIELDS, FIELDS, JSON_FIELDS, OUTCOME

COLLECTOR = "collector"
BATCH = 2000
# Well under the collector's default 16 MiB cap, counted on the uncompressed JSON.
BATCH_BYTES = 8 * 1024 * 1024
TOMBSTONE_FIELDS = ("id", "deletion", "created_at", "deleted_by", "reason", "install_id", "seq_from", "seq_to",
                    "count", "prev_hash", "last_hash", "first_started_at", "last_started_at")


class SyncError(Exception):
    """Uploading failed in a way the user must see; one line."""


class NotConfigured(SyncError):
    pass


# --- settings ------------------------------------------------------------------------------


@dataclass
class Target:
    url: str
    token: str | None
    verify: bool | str = True


def _settings() -> dict:
    """The config file's settings, flat (`collector.url`), environment overrides applied."""
    from .settings import SettingsError, load

    try:
        return load()
    except SettingsError:
        return {}


def target(url: str | None = None, insecure: bool = False) -> Target:
    """Where to upload: URL, else KUBECTL_RECORD_COLLECTOR, else `collector.url` in config; the
    token from KUBECTL_RECORD_TOKEN or `collector.token`."""
    conf = _settings()
    url = url or conf.get("collector.url")
    if not url:
        raise NotConfigured("no collector configured: set KUBECTL_RECORD_COLLECTOR or `kubectl record config set "
                            "collector.url URL`")
    if not url.startswith(("https://", "http://")):
        raise NotConfigured(f"collector URL must start with https:// (or http:// for loopback): {url}")
    verify: bool | str = False if insecure else conf.get("collector.ca_bundle") or True
    return Target(url=url, token=conf.get("collector.token"), verify=verify)


def _destination_urls(conf: dict) -> list[str]:
    urls = conf.get("destinations.urls") or []
    return [str(u) for u in urls] if isinstance(urls, list) else []


def configured() -> bool:
    """Is there anywhere to upload to (the collector, or destinations in config)?"""
    conf = _settings()
    return bool(conf.get("collector.url") or _destination_urls(conf))


# --- the outbox ----------------------------------------------------------------------------

_OUTBOX_DDL = (
    "CREATE TABLE IF NOT EXISTS sync_queue (pos INTEGER PRIMARY KEY AUTOINCREMENT, dest TEXT NOT NULL,"
    " record_id TEXT NOT NULL, UNIQUE (dest, record_id))",
    "CREATE TABLE IF NOT EXISTS sync_state (dest TEXT PRIMARY KEY, last_success TEXT, last_error TEXT,"
    " last_error_at TEXT, failures INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0,"
    " delivered INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS sync_dead (id INTEGER PRIMARY KEY AUTOINCREMENT, dest TEXT NOT NULL,"
    " kind TEXT NOT NULL, ref TEXT, reason TEXT NOT NULL, at TEXT NOT NULL)",
    # Every registered destination (a row in sync_state) gets every new record, and every record
    # whose outcome changes.
    "CREATE TRIGGER IF NOT EXISTS sync_queue_insert AFTER INSERT ON records BEGIN"
    " INSERT OR REPLACE INTO sync_queue (dest, record_id) SELECT dest, NEW.id FROM sync_state; END",
    "CREATE TRIGGER IF NOT EXISTS sync_queue_update AFTER UPDATE OF " + ", ".join(OUTCOME) + " ON records WHEN "
    + " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in OUTCOME)
    + " BEGIN INSERT OR REPLACE INTO sync_queue (dest, record_id) SELECT dest, NEW.id FROM sync_state; END",
    "CREATE TRIGGER IF NOT EXISTS sync_queue_delete AFTER DELETE ON records BEGIN"
    " DELETE FROM sync_queue WHERE record_id = OLD.id; END",
)


def _outbox_ready(conn: sqlite3.Connection, dest: str) -> bool:
    triggers = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'sync_queue_%'"
                            ).fetchone()[0]
    if triggers != 3:
        return False
    return bool(conn.execute("SELECT 1 FROM sync_state WHERE dest = ?", (dest,)).fetchone())


def ensure_outbox(conn: sqlite3.Connection, dest: str = COLLECTOR) -> None:
    """Create the outbox (idempotent) and register DEST. A new destination starts with every
    record; so does every destination if the triggers went missing (a table rebuilt by a later
    migration drops them): re-sending is cheap next to losing what they would have queued."""
    if _outbox_ready(conn, dest):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        triggers_missing = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'sync_queue_%'").fetchone()[0] != 3
        for statement in _OUTBOX_DDL:
            conn.execute(statement)
        added = conn.execute("INSERT OR IGNORE INTO sync_state (dest) VALUES (?)", (dest,)).rowcount
        backfill = [d for (d,) in conn.execute("SELECT dest FROM sync_state")] if triggers_missing else [dest] * added
        for d in backfill:
            conn.execute("INSERT OR IGNORE INTO sync_queue (dest, record_id) SELECT ?, id FROM records"
                         " ORDER BY install_id, seq, started_at", (d,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _json_columns() -> str:
    """SQL building each record's JSON in SQLite itself: no per-record Python on the way out,
    which keeps a 100,000-record push within seconds. JSON columns are spliced in as JSON,
    0/1 columns become true/false, as store.from_row would give them."""
    parts = []
    for name in FIELDS:
        column = f'r."{name}"'
        if name in JSON_FIELDS:
            value = f"json({column})"
        elif name in BOOL_FIELDS:
            value = f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} THEN json('true') ELSE json('false') END"
        else:
            value = column
        parts.append(f"'{name}', {value}")
    return "json_object(" + ", ".join(parts) + ")"


_RECORD_JSON = _json_columns()


@dataclass
class Batch:
    positions: list[int]
    ids: list[str]  # of the records sent, in the order sent
    records: list[str]  # each record as JSON text
    tombstones: list[dict]

    def __bool__(self) -> bool:
        return bool(self.positions or self.tombstones)

    def body(self) -> bytes:
        import json

        return ('{"records":[' + ",".join(self.records) + '],"tombstones":'
                + json.dumps(self.tombstones, ensure_ascii=False) + "}").encode()


def _has_tombstones(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tombstones'").fetchone())


def next_batch(conn: sqlite3.Connection, dest: str, limit: int, max_bytes: int = BATCH_BYTES, after: int = 0,
               with_tombstones: bool = True) -> Batch:
    """The next records to send (outbox positions after AFTER), and pending tombstones if asked."""
    rows = conn.execute(f"SELECT q.pos, r.id, CASE WHEN r.id IS NULL THEN NULL ELSE {_RECORD_JSON} END"
                        f" FROM sync_queue q LEFT JOIN records r ON r.id = q.record_id"
                        f" WHERE q.dest = ? AND q.pos > ? ORDER BY q.pos LIMIT ?", (dest, after, limit)).fetchall()
    batch = Batch([], [], [], [])
    size = 0
    for pos, record_id, text in rows:
        if text is not None:  # None: deleted since it was queued (its tombstone tells)
            if batch.records and size + len(text) > max_bytes:
                break
            batch.ids.append(record_id)
            batch.records.append(text)
            size += len(text)
        batch.positions.append(pos)
    if with_tombstones and dest == COLLECTOR and _has_tombstones(conn):
        names = ", ".join(TOMBSTONE_FIELDS)
        batch.tombstones = [dict(zip(TOMBSTONE_FIELDS, r)) for r in conn.execute(
            f"SELECT {names} FROM tombstones WHERE uploaded_at IS NULL ORDER BY created_at, id LIMIT ?", (limit,))]
    return batch


def _now_text(clock) -> str:
    return (_dt.datetime.fromtimestamp(clock.time(), _dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def acknowledge(conn: sqlite3.Connection, dest: str, batch: Batch, result: dict, clock) -> tuple[int, int]:
    """Record the collector's answer in one transaction: delivered entries leave the outbox,
    refused ones become dead letters with the collector's reason. Returns (delivered, dead)."""
    now = _now_text(clock)
    refused_records = {r["index"]: r["reason"] for r in result.get("rejected", []) if "index" in r}
    refused_tombs = {r["tombstone"]: r["reason"] for r in result.get("rejected", []) if "tombstone" in r}
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany("DELETE FROM sync_queue WHERE pos = ?", ((p,) for p in batch.positions))
        for index, reason in refused_records.items():
            ref = batch.ids[index] if index < len(batch.ids) else None
            conn.execute("INSERT INTO sync_dead (dest, kind, ref, reason, at) VALUES (?, 'record', ?, ?, ?)",
                         (dest, ref, reason, now))
        for index, t in enumerate(batch.tombstones):
            if index in refused_tombs:
                conn.execute("INSERT INTO sync_dead (dest, kind, ref, reason, at) VALUES (?, 'tombstone', ?, ?, ?)",
                             (dest, t["id"], refused_tombs[index], now))
            conn.execute("UPDATE tombstones SET uploaded_at = ? WHERE id = ?", (now, t["id"]))
        delivered = len(batch.records) - len(refused_records) + len(batch.tombstones) - len(refused_tombs)
        conn.execute("UPDATE sync_state SET last_success = ?, failures = 0, next_attempt = 0,"
                     " delivered = delivered + ? WHERE dest = ?", (now, delivered, dest))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return delivered, len(refused_records) + len(refused_tombs)


def _dead_letter_batch(conn: sqlite3.Connection, dest: str, batch: Batch, reason: str, clock) -> None:
    """The collector refuses this batch as a whole and will keep refusing it: set it aside."""
    result = {"rejected": [{"index": i, "reason": reason} for i in range(len(batch.ids))]
              + [{"tombstone": i, "reason": reason} for i in range(len(batch.tombstones))]}
    acknowledge(conn, dest, batch, result, clock)


def _note_failure(conn: sqlite3.Connection, dest: str, message: str, clock, retry_in: float | None) -> int:
    conn.execute("UPDATE sync_state SET last_error = ?, last_error_at = ?, failures = failures + 1,"
                 " next_attempt = ? WHERE dest = ?",
                 (message, _now_text(clock), clock.time() + (retry_in or 0), dest))
    return conn.execute("SELECT failures FROM sync_state WHERE dest = ?", (dest,)).fetchone()[0]


# --- retry policy and clock ----------------------------------------------------------------


class SystemClock:
    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class Backoff:
    """Exponential backoff with jitter; a server's Retry-After is a floor, never cut short."""

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        exp = min(self.cap, self.base * (2 ** max(0, failures - 1)))
        # "Equal jitter": at least half the step, so clients that failed together spread out
        # without any of them retrying almost at once.
        delay = exp / 2 + self.rng.uniform(0, exp / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 3600.0))
        return delay


# --- push ----------------------------------------------------------------------------------


@dataclass
class PushResult:
    delivered: int = 0
    dead: int = 0
    pending: int = 0
    batches: int = 0


def pending_count(conn: sqlite3.Connection, dest: str = COLLECTOR) -> int:
    n = conn.execute("SELECT COUNT(*) FROM sync_queue WHERE dest = ?", (dest,)).fetchone()[0]
    if dest == COLLECTOR and _has_tombstones(conn):
        n += conn.execute("SELECT COUNT(*) FROM tombstones WHERE uploaded_at IS NULL").fetchone()[0]
    return n


def deliver(conn: sqlite3.Connection, client, *, wait: bool = False, clock=None, backoff: Backoff | None = None,
            attempts: int = 3, deadline: float | None = None, batch_size: int = BATCH, dest: str = COLLECTOR,
            inflight: int = 2) -> PushResult:
    """Deliver everything pending. Without WAIT, give up (Transient) after ATTEMPTS failed tries in
    a row; with WAIT, keep going (until DEADLINE on CLOCK, if given). 401/403 end it at once.

    Up to INFLIGHT batches travel at once (the collector checks one while the next is on its
    way); answers are taken in order. After any failure the batches in flight are forgotten,
    not acknowledged, and re-read from the outbox: re-sending is harmless, the collector
    deduplicates by record id.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .collector.client import BadRequest, Refused, TooLarge, Transient

    clock = clock or SystemClock()
    backoff = backoff or Backoff()
    ensure_outbox(conn, dest)
    result = PushResult()
    failures = 0
    in_flight: list = []
    taken = 0  # highest outbox position already in flight

    def drain() -> None:
        nonlocal taken
        for _, future in in_flight:
            future.exception()  # wait; its outcome is irrelevant now
        in_flight.clear()
        taken = 0

    with ThreadPoolExecutor(max_workers=inflight) as pool:
        while True:
            while len(in_flight) < inflight:
                # Tombstones ride with the first batch of a round only, not with every one in flight.
                batch = next_batch(conn, dest, batch_size, after=taken, with_tombstones=not in_flight and not taken)
                if not batch:
                    break
                taken = max(batch.positions, default=taken)
                in_flight.append((batch, pool.submit(client.upload, batch.body())))
            if not in_flight:
                break
            batch, future = in_flight.pop(0)
            try:
                answer = future.result()
            except Refused as exc:
                drain()
                _note_failure(conn, dest, str(exc), clock, None)
                raise
            except TooLarge as exc:
                drain()
                if len(batch.positions) + len(batch.tombstones) <= 1:
                    _dead_letter_batch(conn, dest, batch, str(exc), clock)
                    result.dead += 1
                batch_size = max(1, min(batch_size, len(batch.positions)) // 2)
                continue
            except BadRequest as exc:
                drain()
                _dead_letter_batch(conn, dest, batch, str(exc), clock)
                result.dead += len(batch.records) + len(batch.tombstones)
                continue
            except Transient as exc:
                drain()
                failures += 1
                delay = backoff.delay(failures, exc.retry_after)
                _note_failure(conn, dest, str(exc), clock, delay)
                out_of_time = deadline is not None and clock.time() + delay > deadline
                if (not wait and failures >= attempts) or out_of_time:
                    raise
                clock.sleep(delay)
                continue
            failures = 0
            delivered, dead = acknowledge(conn, dest, batch, answer, clock)
            result.delivered += delivered
            result.dead += dead
            result.batches += 1
    result.pending = pending_count(conn, dest)
    return result


class _Lock:
    """One pusher per installation at a time (a second one would only send the same batches)."""

    def __init__(self, blocking: bool):
        self.blocking = blocking
        self.fd = None

    def __enter__(self) -> bool:
        path = os.path.join(paths.ensure_private_dir(paths.home()), "sync.lock")
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
            return True
        except BlockingIOError:
            return False

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _client(t: Target):
    from .collector.client import CollectorClient

    return CollectorClient(t.url, t.token, verify=t.verify)


# --- background sync -----------------------------------------------------------------------


DUE_FILE = "sync.due"
# Runs that end within this many seconds of a background pass share the next one.
COALESCE_S = 2.0


def _due_path() -> str:
    return os.path.join(paths.home(), DUE_FILE)


def _set_due(when: float) -> None:
    try:
        with open(_due_path(), "w") as f:
            f.write(f"{when:.3f}")
    except OSError:
        pass


def kick() -> None:
    """Start a background sync if a collector is configured and one is due. Returns at once (a
    detached process does the work), so ingestion — itself off the kubectl path — never waits for
    the network. A small file holds when the next pass is due (soon after a success, later after
    failures), so a burst of runs or a collector that is down costs no process per run."""
    if os.environ.get("KUBECTL_RECORD_DISABLE") == "1" or not configured() or _settings().get("sync.auto") is False:
        return
    try:
        with open(_due_path()) as f:
            if time.time() < float(f.read() or 0):
                return
    except (OSError, ValueError):
        pass
    _set_due(time.time() + COALESCE_S)
    subprocess.Popen([sys.executable, "-m", "kubectl_record", "sync", "run"], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def background_pass(conn: sqlite3.Connection, client, clock=None, backoff: Backoff | None = None) -> PushResult | None:
    """One quiet attempt, respecting the backoff left by earlier failures; None if not due."""
    from .collector.client import CollectorError

    clock = clock or SystemClock()
    ensure_outbox(conn)
    due = conn.execute("SELECT next_attempt FROM sync_state WHERE dest = ?", (COLLECTOR,)).fetchone()[0]
    if due > clock.time():
        return None
    backoff = backoff or Backoff()
    try:
        return deliver(conn, client, clock=clock, backoff=backoff, attempts=1)
    except CollectorError:
        failures = conn.execute("SELECT failures FROM sync_state WHERE dest = ?", (COLLECTOR,)).fetchone()[0]
        conn.execute("UPDATE sync_state SET next_attempt = ? WHERE dest = ?",
                     (clock.time() + backoff.delay(failures), COLLECTOR))
        return None


# --- team lookups --------------------------------------------------------------------------


def team_filters(f, now: float | None = None) -> dict:
    """`history`'s filters (a kubectl_record.filters.Filters) as the collector's query parameters:
    the same meaning, resolved here where they depend on this machine (relative times, `.`,
    `--session current`). Differences: --query is a substring match there (no full-text index),
    and filters.extra (raw SQL from other commands) cannot travel: SyncError."""
    from .filters import BadUsage, canonical_resource, parse_time
    from .timefmt import rfc3339

    if f.extra:
        raise SyncError("this filter cannot be used with the team collector")
    params: dict = {}
    for name in ("context", "cluster", "source", "host", "user", "identity", "name"):
        if getattr(f, name):
            params[name] = list(getattr(f, name))
    if f.namespace and not f.all_namespaces:
        params["namespace"] = list(f.namespace)
    if f.verb:
        params["verb"] = [" ".join(v.split()) for v in f.verb]
    if f.resource:
        params["resource"] = [v.lower() if any(c in v for c in "*?[") else canonical_resource(v) for v in f.resource]
    now = time.time() if now is None else now
    for name in ("since", "until"):
        value = getattr(f, name)
        if value is not None:
            try:
                params[name] = rfc3339(parse_time(value, now))
            except ValueError as exc:
                raise BadUsage(f"invalid value for --{name}: {exc}") from None
    for flag in ("failed", "mutating", "read_only"):
        if getattr(f, flag):
            params[flag] = "true"
    if f.exit is not None:
        params["exit"] = [str(f.exit)]
    if f.cwd:
        params["cwd"] = [os.path.abspath(os.path.expanduser(c)).rstrip("/") or "/" for c in f.cwd]
    if f.session:
        current = os.environ.get("KUBECTL_RECORD_SESSION", "")
        if "current" in f.session and not current:
            raise BadUsage("--session current: this shell has no recording session (KUBECTL_RECORD_SESSION is unset)")
        params["session"] = [current if s == "current" else s for s in f.session]
    if f.query is not None and f.query.strip():
        params["query"] = [f.query.strip()]
    return params


def team_query(filters: dict, limit: int | None = None, cursor: str | None = None, *, client=None,
               page_size: int = 500) -> Iterator[dict]:
    """Records from the collector matching FILTERS, newest first, at most LIMIT (None: all).

    FILTERS use the collector's names (context, cluster, namespace, user, identity, verb,
    resource, host, source, state, install_id, os_user, uploaded_by, since, until, contains,
    failed, mutating); the collector applies the token's visibility. Keyset pages underneath.
    Raises kubectl_record.collector.client.CollectorError subclasses.
    """
    client = client or _client(target())
    remaining = limit
    while remaining is None or remaining > 0:
        size = page_size if remaining is None else min(page_size, remaining)
        page, cursor = client.records(filters, size, cursor)
        yield from page
        if remaining is not None:
            remaining -= len(page)
        if not cursor or not page:
            return


# --- command line --------------------------------------------------------------------------


def _fail(message: str):
    from .cli import Failure

    return Failure(message)


@click.command("push")
@click.option("--to", "to", multiple=True, metavar="URL",
              help="Collector URL or destination (opensearch://, loki://, otlp://, webhook+https://); repeatable. "
                   "Default: the configured collector and destinations.")
@click.option("--wait", is_flag=True, help="Block until everything is delivered (end of a CI job).")
@click.option("--timeout", type=click.FloatRange(min=0), help="With --wait: give up after this many seconds.")
@click.option("--insecure", is_flag=True, help="Do not verify the collector's TLS certificate.")
@click.option("--batch-size", type=click.IntRange(min=1, max=50_000), default=BATCH, hidden=True)
@click.option("--backoff-base", type=click.FloatRange(min=0), default=1.0, hidden=True)
@click.option("--backoff-cap", type=click.FloatRange(min=0), default=300.0, hidden=True)
def push(to: tuple[str, ...], wait: bool, timeout: float | None, insecure: bool, batch_size: int,
         backoff_base: float, backoff_cap: float) -> None:
    """Upload pending records (and tombstones) to the team collector and other destinations."""
    from .cli import open_store

    conf = _settings()
    targets: list[str | None] = list(to)
    if not targets:
        targets = ([None] if conf.get("collector.url") else []) + _destination_urls(conf)
    if not targets:
        raise _fail("nowhere to push: set KUBECTL_RECORD_COLLECTOR (or collector.url), or give --to URL")
    conn = open_store()
    clock = SystemClock()
    deadline = clock.time() + timeout if timeout is not None else None
    backoff = Backoff(base=backoff_base, cap=backoff_cap)
    errors = []
    with _Lock(blocking=True):
        for url in targets:
            try:
                name, result, warnings = _push_one(conn, url, insecure, wait=wait, deadline=deadline,
                                                   backoff=backoff, batch_size=batch_size)
            except SyncError as exc:
                errors.append(str(exc))
                continue
            for warning in warnings:
                click.echo(f"warning: {name}: {warning}", err=True)
            note = f", {result.dead} refused (see `kubectl record sync status`)" if result.dead else ""
            click.echo(f"pushed {result.delivered} to {name}{note}; {result.pending} pending", err=True)
    if errors:
        # Every target was tried; one line names all that failed.
        raise _fail("; ".join(errors))


def _push_one(conn: sqlite3.Connection, url: str | None, insecure: bool, **kwargs):
    """Deliver to one target: the collector (URL None or http(s)://) or a destination URL.
    Returns (shown name, PushResult, warnings); raises SyncError with a one-line reason."""
    from .collector.client import CollectorError
    from .destinations import DestinationError, is_destination_url, mask_url

    name = mask_url(url) if url else "collector"
    try:
        if url and is_destination_url(url):
            from .destinations.adapter import options_for, push_to

            result, warnings = push_to(conn, url, options_for(url), **kwargs)
            return name, result, warnings
        t = target(url, insecure)
        name = mask_url(t.url)
        return name, deliver(conn, _client(t), **kwargs), []
    except (CollectorError, DestinationError) as exc:
        raise SyncError(f"push to {name}: {exc}") from exc
    except sqlite3.Error as exc:
        raise SyncError(f"push: reading the local store: {exc}") from exc


@click.group()
def sync() -> None:
    """Background upload to the team collector."""


@sync.command("status")
def sync_status() -> None:
    """Pending count, last success, last error and dead letters, per destination."""
    from .cli import open_store

    conn = open_store()
    where = _settings().get("collector.url")
    if where:
        ensure_outbox(conn)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_state'").fetchone():
        click.echo("collector: not configured (set KUBECTL_RECORD_COLLECTOR, or collector.url in config)")
        return
    for dest, last_success, last_error, last_error_at, failures, next_attempt, delivered in conn.execute(
            "SELECT dest, last_success, last_error, last_error_at, failures, next_attempt, delivered"
            " FROM sync_state ORDER BY dest"):
        dead = conn.execute("SELECT COUNT(*) FROM sync_dead WHERE dest = ?", (dest,)).fetchone()[0]
        click.echo(f"{dest}: {where or '(not configured)'}" if dest == COLLECTOR else dest)
        click.echo(f"  pending:      {pending_count(conn, dest)}")
        click.echo(f"  delivered:    {delivered}")
        click.echo(f"  last success: {last_success or 'never'}")
        click.echo(f"  last error:   {f'{last_error_at} {last_error}' if last_error else 'none'}")
        if failures:
            retry = _dt.datetime.fromtimestamp(next_attempt, _dt.timezone.utc).isoformat(timespec="seconds")
            click.echo(f"  failing:      {failures} attempt(s) in a row; next background try after {retry}")
        click.echo(f"  dead letters: {dead}")
        for kind, ref, reason, at in conn.execute(
                "SELECT kind, ref, reason, at FROM sync_dead WHERE dest = ? ORDER BY id DESC LIMIT 5", (dest,)):
            click.echo(f"    {at} {kind} {ref}: {reason}")


@sync.command("run", hidden=True)
def sync_run() -> None:
    """One background pass (started by kick()); quiet, never blocks on another pusher."""
    from . import ingest, store

    with _Lock(blocking=False) as got:
        if not got:
            return
        ingest.ingest()
        try:
            conn = store.connect()
        except store.StoreError:
            return
        try:
            background_pass(conn, _client(target()))
        except NotConfigured:
            pass  # destinations only
        from .destinations.adapter import background_pass as destinations_pass

        destinations_pass(conn)
        # kick() reads this instead of the store: after failures, no process per run until due.
        _set_due(max(conn.execute("SELECT next_attempt FROM sync_state WHERE dest = ?", (COLLECTOR,)).fetchone()[0],
                     time.time() + COALESCE_S))
