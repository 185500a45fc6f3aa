"""The local SQLite store: opening it safely, its migrations, and writing records.

Plain sqlite3 for the common path; sqlite-utils is imported only to run migrations, which
happens once per schema change, not on every ingestion.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator

from . import paths

# The record as the contract prints it, in this order. JSON_FIELDS are stored as JSON text,
# BOOL_FIELDS as 0/1; the rest are plain columns of the same name.
FIELDS = (
    "id", "install_id", "seq", "started_at", "ended_at", "duration_ms", "exit_code", "state",
    "source", "argv", "command", "verb", "resource", "names", "namespace", "all_namespaces",
    "context", "cluster", "server", "user", "impersonate", "kubeconfig", "files",
    "mutating", "dry_run", "local_only", "redacted", "unexpanded",
    "cwd", "host", "os_user", "sudo_user", "ssh_client", "session", "parent", "ci",
    "kubectl_version", "identity", "audit", "prev_hash", "hash",
)
# What may still change once a record is stored: the outcome (which a late Ctrl-C report may
# complete) and what later lookups add. The hash chain covers everything else — what was run,
# where and by whom — so filling these in never breaks it; uploads re-send a record when they change.
OUTCOME = ("ended_at", "duration_ms", "exit_code", "state", "kubectl_version", "identity", "audit")
UNCHAINED = frozenset(OUTCOME) | {"prev_hash", "hash"}
GENESIS = "0" * 64
JSON_FIELDS = frozenset({"argv", "names", "impersonate", "kubeconfig", "files", "ci", "audit"})
BOOL_FIELDS = frozenset({"all_namespaces", "mutating", "dry_run", "local_only", "redacted", "unexpanded"})


class StoreError(Exception):
    """The store cannot be used; the message says why in one line."""


class StoreLocked(StoreError):
    pass


class StoreReadOnly(StoreError):
    pass


class StoreCorrupt(StoreError):
    pass


class StoreFull(StoreError):
    pass


def classify(exc: sqlite3.Error, path: str) -> StoreError:
    """Turn sqlite's errors into the few cases a user can act on."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return StoreLocked(f"database is locked by another process: {path}")
    if "readonly" in low or "read-only" in low or "unable to open" in low or "permission" in low:
        return StoreReadOnly(f"database cannot be written: {path} ({text})")
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return StoreCorrupt(f"database is corrupt: {path} ({text})")
    if "full" in low or "disk i/o" in low:
        return StoreFull(f"no space left for the database: {path} ({text})")
    return StoreError(f"database error: {path} ({text})")


# --- migrations: plain functions over a sqlite_utils.Database, applied in order once each ------

MIGRATIONS: list[Callable] = []


def migration(fn: Callable) -> Callable:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_records(db) -> None:
    db.execute(
        """
        CREATE TABLE records (
            id TEXT PRIMARY KEY,
            install_id TEXT NOT NULL,
            seq INTEGER,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            duration_ms INTEGER,
            exit_code INTEGER,
            state TEXT NOT NULL,
            source TEXT NOT NULL,
            argv TEXT NOT NULL,
            command TEXT NOT NULL,
            verb TEXT, resource TEXT, names TEXT, namespace TEXT, all_namespaces INTEGER,
            context TEXT, cluster TEXT, server TEXT, user TEXT,
            impersonate TEXT, kubeconfig TEXT, files TEXT,
            mutating INTEGER, dry_run INTEGER, local_only INTEGER, redacted INTEGER, unexpanded INTEGER,
            cwd TEXT, host TEXT, os_user TEXT, sudo_user TEXT, ssh_client TEXT, session TEXT,
            parent TEXT, ci TEXT, kubectl_version TEXT, identity TEXT, audit TEXT,
            UNIQUE (install_id, seq)
        )
        """
    )
    db.execute("CREATE INDEX records_started ON records (started_at)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute(
        "CREATE TABLE kubectl_versions (path TEXT, mtime_ns INTEGER, size INTEGER, version TEXT,"
        " PRIMARY KEY (path, mtime_ns, size))"
    )


@migration
def m002_hash_chain(db) -> None:
    db.execute("ALTER TABLE records ADD COLUMN prev_hash TEXT")
    db.execute("ALTER TABLE records ADD COLUMN hash TEXT")


@migration
def m003_lookup_indexes(db) -> None:
    """Indexes for `history` filters: each ends in started_at, so a filtered lookup walks one
    index newest-first and stops at --limit (ORDER BY started_at DESC, rowid DESC)."""
    for column in ("namespace", "verb", "resource", "host", "session"):
        db.execute(f"CREATE INDEX records_{column}_started ON records ({column}, started_at)")
    # Covering for `stats` per context (counts, failures, mutating) without touching the table.
    db.execute("CREATE INDEX records_context_started ON records (context, started_at, mutating, exit_code)")
    db.execute("CREATE INDEX records_failed_started ON records (started_at) WHERE exit_code != 0")
    # `show` accepts the short ID the table prints: the id's last 8 characters.
    db.execute("CREATE INDEX records_id_tail ON records (substr(id, -8))")


@migration
def m004_names_and_search(db) -> None:
    """record_names: one row per resource name (for --name); records_fts: full-text search over
    the command line and where it ran (for -q). Both are kept in step by triggers, keyed by the
    records rowid (rebuild_search() after anything that renumbers rowids, such as VACUUM)."""
    db.execute("CREATE TABLE record_names (name TEXT NOT NULL, rec INTEGER NOT NULL, PRIMARY KEY (name, rec))"
               " WITHOUT ROWID")
    db.execute("CREATE INDEX record_names_rec ON record_names (rec)")
    db.execute(
        "CREATE VIRTUAL TABLE records_fts USING fts5(command, context, namespace, cwd,"
        " content='records', content_rowid='rowid')"
    )
    for statement in _SEARCH_TRIGGERS:
        db.execute(statement)
    rebuild_search(db.conn)


_SEARCH_TRIGGERS = (
    """CREATE TRIGGER records_search_ai AFTER INSERT ON records BEGIN
        INSERT INTO records_fts (rowid, command, context, namespace, cwd)
            VALUES (new.rowid, new.command, new.context, new.namespace, new.cwd);
        INSERT OR IGNORE INTO record_names (name, rec)
            SELECT value, new.rowid FROM json_each(new.names) WHERE new.names IS NOT NULL AND type = 'text';
    END""",
    """CREATE TRIGGER records_search_ad AFTER DELETE ON records BEGIN
        INSERT INTO records_fts (records_fts, rowid, command, context, namespace, cwd)
            VALUES ('delete', old.rowid, old.command, old.context, old.namespace, old.cwd);
        DELETE FROM record_names WHERE rec = old.rowid;
    END""",
    """CREATE TRIGGER records_search_au AFTER UPDATE OF command, context, namespace, cwd, names ON records BEGIN
        INSERT INTO records_fts (records_fts, rowid, command, context, namespace, cwd)
            VALUES ('delete', old.rowid, old.command, old.context, old.namespace, old.cwd);
        INSERT INTO records_fts (rowid, command, context, namespace, cwd)
            VALUES (new.rowid, new.command, new.context, new.namespace, new.cwd);
        DELETE FROM record_names WHERE rec = old.rowid;
        INSERT OR IGNORE INTO record_names (name, rec)
            SELECT value, new.rowid FROM json_each(new.names) WHERE new.names IS NOT NULL AND type = 'text';
    END""",
)


@migration
def m005_tombstones(db) -> None:
    """What a deletion leaves behind: per installation and contiguous seq range, how many records
    went, and the chain hashes at the range's edges (prev_hash of its first record, hash of its
    last), so the collector can tell a sanctioned deletion from tampering. Uploaded like records
    (`uploaded_at` is null until then)."""
    db.execute(
        """
        CREATE TABLE tombstones (
            id TEXT PRIMARY KEY,
            deletion TEXT NOT NULL,
            created_at TEXT NOT NULL,
            deleted_by TEXT NOT NULL,
            reason TEXT NOT NULL,
            install_id TEXT NOT NULL,
            seq_from INTEGER,
            seq_to INTEGER,
            count INTEGER NOT NULL,
            prev_hash TEXT,
            last_hash TEXT,
            first_started_at TEXT,
            last_started_at TEXT,
            uploaded_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX tombstones_pending ON tombstones (created_at) WHERE uploaded_at IS NULL")


@migration
def m006_audit(db) -> None:
    """Server audit correlation (kubectl_record/audit): imported events (one row per auditID,
    the highest stage seen; only kubectl-like clients), other clients as counts, read positions
    per source file, per-cluster skew and watermark, the SelfSubjectReview cache, and the runs
    started with the argv[0] marker."""
    db.execute(
        """CREATE TABLE audit_events (
            audit_id TEXT PRIMARY KEY, server TEXT NOT NULL, stages INTEGER NOT NULL, rank INTEGER NOT NULL,
            ts REAL NOT NULL, verb TEXT, user TEXT, impersonated TEXT, ua TEXT, resource TEXT,
            subresource TEXT, namespace TEXT, name TEXT, api_group TEXT, code INTEGER, decision TEXT,
            path TEXT, manager TEXT, record_id TEXT, link TEXT)"""
    )
    db.execute("CREATE INDEX audit_events_server_ts ON audit_events (server, ts)")
    db.execute("CREATE INDEX audit_events_record ON audit_events (record_id) WHERE record_id IS NOT NULL")
    db.execute(
        "CREATE TABLE audit_clients (server TEXT NOT NULL, ua TEXT NOT NULL, user TEXT NOT NULL,"
        " count INTEGER NOT NULL, first_ts REAL, last_ts REAL, PRIMARY KEY (server, ua, user))"
    )
    db.execute(
        "CREATE TABLE audit_sources (server TEXT NOT NULL, dev INTEGER NOT NULL, ino INTEGER NOT NULL,"
        " fingerprint TEXT, path TEXT, offset INTEGER NOT NULL, complete INTEGER NOT NULL DEFAULT 0,"
        " updated REAL, PRIMARY KEY (server, dev, ino))"
    )
    db.execute(
        "CREATE TABLE audit_clusters (server TEXT PRIMARY KEY, skew REAL, skew_support INTEGER, lead REAL, tail REAL,"
        " watermark REAL, events INTEGER NOT NULL DEFAULT 0, updated REAL)"
    )
    db.execute(
        "CREATE TABLE audit_identity (server TEXT NOT NULL, user_entry TEXT NOT NULL, cred TEXT NOT NULL,"
        " identity TEXT, groups TEXT, checked_at REAL NOT NULL, error TEXT,"
        " PRIMARY KEY (server, user_entry, cred))"
    )
    db.execute("CREATE TABLE audit_marked (record_id TEXT PRIMARY KEY)")
    db.execute("CREATE INDEX records_server_started ON records (server, started_at)")


@migration
def m007_audit_response_kind(db) -> None:
    """The kind of each imported call's responseObject (RequestResponse level; '' when the
    source does not say): `kubectl get` asks for a Table, other commands for the object."""
    db.execute("ALTER TABLE audit_events ADD COLUMN response_kind TEXT NOT NULL DEFAULT ''")


@migration
def m008_audit_sets(db) -> None:
    """What each imported patch sets that a command line names (formats.sets_of): two
    `kubectl label` runs at once tell their patches apart by it."""
    db.execute("ALTER TABLE audit_events ADD COLUMN sets TEXT NOT NULL DEFAULT ''")


def rebuild_search(conn: sqlite3.Connection) -> None:
    """Re-derive records_fts and record_names from records (after VACUUM or a bulk repair)."""
    conn.execute("INSERT INTO records_fts (records_fts) VALUES ('rebuild')")
    conn.execute("DELETE FROM record_names")
    conn.execute(
        "INSERT OR IGNORE INTO record_names (name, rec) SELECT j.value, r.rowid FROM records r, json_each(r.names) j"
        " WHERE r.names IS NOT NULL AND j.type = 'text'"
    )


class bulk:
    """`with store.bulk(conn):` one IMMEDIATE transaction for a large insert into records, with
    the new rows indexed for search in one pass at the end.

    Row by row, the search trigger costs more than the insert itself (it runs a virtual-table
    statement per record), so it is set aside for the transaction and put back before COMMIT:
    other connections only ever see the schema with it. A big cache keeps the index pages of
    the transaction in memory instead of spilling them to the WAL again and again.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        conn = self.conn
        self.cache = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.before = conn.execute("SELECT coalesce(max(rowid), 0) FROM records").fetchone()[0]
            conn.execute("DROP TRIGGER IF EXISTS records_search_ai")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        conn = self.conn
        try:
            if exc_type is None:
                conn.execute("INSERT INTO records_fts (rowid, command, context, namespace, cwd)"
                             " SELECT rowid, command, context, namespace, cwd FROM records WHERE rowid > ?",
                             (self.before,))
                conn.execute("INSERT OR IGNORE INTO record_names (name, rec) SELECT j.value, r.rowid"
                             " FROM records r, json_each(r.names) j WHERE r.rowid > ? AND r.names IS NOT NULL"
                             " AND j.type = 'text'", (self.before,))
                conn.execute(_SEARCH_TRIGGERS[0])
                conn.execute("COMMIT")
            else:
                conn.execute("ROLLBACK")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute(f"PRAGMA cache_size = {int(self.cache)}")
        return False


def bulk_insert(conn: sqlite3.Connection, rows: Iterable[tuple]) -> int:
    """Insert many records (to_row tuples; skipped when the id or (install_id, seq) is already
    stored) in one transaction (see `bulk`). Returns how many were new."""
    with bulk(conn):
        added = conn.executemany(_INSERT, rows).rowcount
    return max(0, added)


def chain_hash(prev_hash: str, record: dict) -> str:
    """sha256 over the previous link and the record's chained fields, as canonical JSON."""
    import hashlib

    body = {k: v for k, v in record.items() if k in FIELDS and k not in UNCHAINED}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + "\n" + text).encode()).hexdigest()


def _migrate(conn: sqlite3.Connection) -> None:
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current >= len(MIGRATIONS):
        return
    import sqlite_utils

    db = sqlite_utils.Database(conn)
    for number, fn in enumerate(MIGRATIONS[current:], start=current + 1):
        with conn:
            fn(db)
            conn.execute(f"PRAGMA user_version = {number}")


def _secure_file(path: str) -> None:
    for candidate in (path, path + "-wal", path + "-shm", path + "-journal"):
        try:
            if os.stat(candidate).st_mode & 0o077:
                os.chmod(candidate, 0o600)
        except FileNotFoundError:
            pass


def connect(path: str | None = None, *, timeout: float = 5.0) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the store. Raises a StoreError subclass."""
    path = path or paths.db_path()
    try:
        paths.ensure_private_dir(os.path.dirname(path))
        old_umask = os.umask(0o077)
        try:
            conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            os.umask(old_umask)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn)
        _secure_file(path)
        return conn
    except sqlite3.Error as exc:
        raise classify(exc, path) from exc
    except OSError as exc:
        raise StoreReadOnly(f"database cannot be written: {path} ({exc.strerror})") from exc


def connect_memory() -> sqlite3.Connection:
    """An empty store in memory, with this schema: where other code runs the store's own logic
    on data from elsewhere (the collector correlates its records and events in one)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    _migrate(conn)
    return conn


def install_id(conn: sqlite3.Connection) -> str:
    """This installation's id, made once: records keep it across host renames and containers."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'install_id'").fetchone()
    if row:
        return row[0]
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('install_id', ?)", (str(uuid.uuid4()),))
    return conn.execute("SELECT value FROM meta WHERE key = 'install_id'").fetchone()[0]


def to_row(record: dict) -> tuple:
    out = []
    for name in FIELDS:
        value = record.get(name)
        if name in JSON_FIELDS and value is not None:
            value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        elif name in BOOL_FIELDS and value is not None:
            value = int(bool(value))
        out.append(value)
    return tuple(out)


def from_row(row: sqlite3.Row | tuple, names: Iterable[str] = FIELDS) -> dict:
    record = {}
    for name, value in zip(names, row):
        if name in JSON_FIELDS and value is not None:
            value = json.loads(value)
        elif name in BOOL_FIELDS and value is not None:
            value = bool(value)
        record[name] = value
    return record


_INSERT = f"INSERT OR IGNORE INTO records ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})"


def _chain_tip(conn: sqlite3.Connection, inst: str) -> tuple[int, str]:
    """The last seq used by this installation and its hash. A deletion of the newest records
    leaves the tip in a tombstone: numbering and the chain go on from there, never reusing a seq."""
    tip = conn.execute("SELECT seq, hash FROM records WHERE install_id = ? ORDER BY seq DESC LIMIT 1",
                       (inst,)).fetchone() or (0, GENESIS)
    gone = conn.execute("SELECT seq_to, last_hash FROM tombstones WHERE install_id = ? AND seq_to > ?"
                        " ORDER BY seq_to DESC LIMIT 1", (inst, tip[0])).fetchone()
    seq, last = gone or tip
    return seq, last or GENESIS


def insert_local(conn: sqlite3.Connection, records: list[dict]) -> int:
    """Insert this installation's own records, numbering them gap-free in start order.

    One IMMEDIATE transaction: the seq read and the inserts cannot interleave with another
    writer, and a record already stored (same id) is skipped without using a number.
    Returns how many were new.
    """
    if not records:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        inst = install_id(conn)
        seq, prev = _chain_tip(conn, inst)
        added = 0
        for record in sorted(records, key=lambda r: (r["started_at"], r["id"])):
            if conn.execute("SELECT 1 FROM records WHERE id = ?", (record["id"],)).fetchone():
                continue
            seq += 1
            row = {**record, "install_id": inst, "seq": seq, "prev_hash": prev}
            row["hash"] = prev = chain_hash(prev, row)
            conn.execute(_INSERT, to_row(row))
            added += 1
        conn.execute("COMMIT")
        return added
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def insert_foreign(conn: sqlite3.Connection, records: Iterable[dict]) -> int:
    """Insert records that keep their own install_id and seq (JSONL import). Idempotent by id."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # rowcount, not total_changes: the search triggers' own writes are not new records.
        added = conn.executemany(_INSERT, (to_row(r) for r in records)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(0, added)


def finish(conn: sqlite3.Connection, record_id: str, ended_at: str, duration_ms: int, exit_code: int | None) -> bool:
    """Complete a record stored as unfinished once its end turns up late (Ctrl-C in a hook)."""
    cur = conn.execute(
        "UPDATE records SET ended_at = ?, duration_ms = ?, exit_code = ?, state = 'finished'"
        " WHERE id = ? AND state = 'unfinished'",
        (ended_at, duration_ms, exit_code, record_id),
    )
    return cur.rowcount > 0


def iter_records(conn: sqlite3.Connection, where: str = "", params: Iterable = (), order: str = "started_at DESC, seq DESC",
                 limit: int | None = None) -> Iterator[dict]:
    sql = f"SELECT {', '.join(FIELDS)} FROM records"
    if where:
        sql += f" WHERE {where}"
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    for row in conn.execute(sql, tuple(params)):
        yield from_row(row)
