"""SQLite backend: the default, one file, one writer at a time (WAL lets readers carry on)."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager

from . import forward, webhook
from .storage import BY_ID_COLUMNS, CHAINED_COLUMNS, COLUMNS, SEQ_COLUMNS, Storage, StorageError, column_list, tables

DDL = [
    *tables(integer="INTEGER", serial="INTEGER PRIMARY KEY AUTOINCREMENT"),
    # Append-only, enforced by the database: the chained content never changes, and rows go only
    # through the retention operation, which grants itself the right inside its own transaction.
    f"CREATE TRIGGER records_append_only BEFORE UPDATE OF {column_list(CHAINED_COLUMNS)}, uploader, received_at"
    " ON records BEGIN SELECT RAISE(ABORT, 'records are append-only'); END",
    "CREATE TRIGGER records_no_delete BEFORE DELETE ON records WHEN NOT EXISTS (SELECT 1 FROM retention_grant)"
    " BEGIN SELECT RAISE(ABORT, 'records are deleted only by retention'); END",
    "CREATE TRIGGER access_log_append_only BEFORE DELETE ON access_log BEGIN SELECT RAISE(ABORT, 'append-only'); END",
]

# Schema version N is reached by applying MIGRATIONS[N-1]; a database at an older version gets
# the missing steps when a collector opens it. Append new steps, never edit applied ones.
# Version 2: audit webhook sources and central correlation (webhook.py); version 3: the
# forwarding outbox (`serve --forward`, forward.py); version 4: what audited patches set
# (webhook.SETS_DDL). Each kept with its code, in both dialects.
MIGRATIONS = [DDL, webhook.SQLITE_DDL, forward.SQLITE_DDL, webhook.SETS_DDL]
SCHEMA_VERSION = len(MIGRATIONS)


class _Tx:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, params=()) -> int:
        return self.conn.execute(sql, tuple(params)).rowcount

    def executemany(self, sql: str, rows) -> int:
        return max(0, self.conn.executemany(sql, rows).rowcount)

    def one(self, sql: str, params=()):
        return self.conn.execute(sql, tuple(params)).fetchone()

    def all(self, sql: str, params=()) -> list:
        return self.conn.execute(sql, tuple(params)).fetchall()


class SQLiteStorage(Storage):
    unavailable = (sqlite3.OperationalError,)

    def __init__(self, path: str):
        self.url = path
        self._local = threading.local()
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            with self.transaction() as tx:
                version = tx.one("PRAGMA user_version")[0]
                for statement in (s for step in MIGRATIONS[version:] for s in step):
                    tx.execute(statement)
                if version < SCHEMA_VERSION:
                    tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            os.chmod(path, 0o600)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open collector database {path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not be shared across threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.url, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Globs match case-sensitively, as in PostgreSQL (an auditor's scope `prod-*` is not PROD-*).
            conn.execute("PRAGMA case_sensitive_like=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self):
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StorageError(f"collector database: {exc}") from exc
        try:
            yield _Tx(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def lock_install(self, tx, install_id: str) -> None:
        """BEGIN IMMEDIATE already holds the only write lock."""

    def fetch_by_ids(self, tx, ids):
        out = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900]
            sql = f"SELECT {column_list(BY_ID_COLUMNS)} FROM records WHERE id IN ({', '.join('?' * len(chunk))})"
            for row in tx.all(sql, chunk):
                out[row[0]] = dict(zip(BY_ID_COLUMNS, row))
        return out

    def fetch_seq_list(self, tx, install_id, seqs):
        out = []
        for start in range(0, len(seqs), 900):
            chunk = seqs[start:start + 900]
            sql = (f"SELECT {column_list(SEQ_COLUMNS)} FROM records WHERE install_id = ?"
                   f" AND seq IN ({', '.join('?' * len(chunk))})")
            out += [dict(zip(SEQ_COLUMNS, row)) for row in tx.all(sql, [install_id, *chunk])]
        return out

    def names_match(self):
        return "EXISTS (SELECT 1 FROM json_each(records.names) WHERE json_each.value LIKE ? ESCAPE '\\')"

    def insert_records(self, tx, rows):
        sql = f"INSERT INTO records ({column_list(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        tx.executemany(sql, ([row[n] for n in COLUMNS] for row in rows))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
