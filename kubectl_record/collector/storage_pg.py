"""PostgreSQL backend: for teams that run several collector instances on one database.

Per-installation advisory locks serialise uploads of the same chain across instances; the schema
is created once under a global advisory lock, so instances may start together.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

from . import forward, webhook
from .storage import BY_ID_COLUMNS, CHAINED_COLUMNS, COLUMNS, SEQ_COLUMNS, Storage, StorageError, column_list, tables

_SCHEMA_LOCK = 0x6B72_7363  # an arbitrary constant shared by every instance ("krsc")


DDL = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    *tables(integer="BIGINT", serial="BIGSERIAL PRIMARY KEY"),
    # Append-only, enforced by the database (see storage.py).
    """CREATE FUNCTION kr_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'records' AND EXISTS (SELECT 1 FROM retention_grant) THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION '% are append-only', TG_TABLE_NAME;
    END $$""",
    f"CREATE TRIGGER records_append_only BEFORE UPDATE OF {column_list(CHAINED_COLUMNS)}, uploader, received_at"
    " ON records FOR EACH ROW EXECUTE FUNCTION kr_append_only()",
    "CREATE TRIGGER records_no_delete BEFORE DELETE ON records FOR EACH ROW EXECUTE FUNCTION kr_append_only()",
    "CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log FOR EACH ROW"
    " EXECUTE FUNCTION kr_append_only()",
]

# As in storage_sqlite.py: version N is reached by applying MIGRATIONS[N-1]; append, never edit.
MIGRATIONS = [DDL, webhook.PG_DDL, forward.PG_DDL, webhook.SETS_DDL]
SCHEMA_VERSION = len(MIGRATIONS)

_PLACEHOLDER = re.compile(r"\?")


def _pg(sql: str) -> str:
    # Our SQL never contains a literal `?` or `%`; LIKE patterns travel as parameters.
    return _PLACEHOLDER.sub("%s", sql)


class _Tx:
    def __init__(self, cur):
        self.cur = cur

    def execute(self, sql: str, params=()) -> int:
        self.cur.execute(_pg(sql), tuple(params))
        return self.cur.rowcount

    def executemany(self, sql: str, rows) -> int:
        self.cur.executemany(_pg(sql), list(rows))
        return max(0, self.cur.rowcount)

    def one(self, sql: str, params=()):
        self.cur.execute(_pg(sql), tuple(params))
        return self.cur.fetchone()

    def all(self, sql: str, params=()) -> list:
        self.cur.execute(_pg(sql), tuple(params))
        return self.cur.fetchall()


class PostgresStorage(Storage):
    def __init__(self, url: str, pool_size: int = 8):
        try:
            import psycopg
            from psycopg_pool import ConnectionPool
        except ImportError as exc:
            raise StorageError("PostgreSQL needs the collector extra: pip install 'kubectl-record[collector]'") from exc
        from psycopg_pool import PoolTimeout

        self.url = url
        self.unavailable = (psycopg.OperationalError, PoolTimeout)
        try:
            # One plain connection first: an unreachable server or a bad URL is one clear line,
            # and the schema is created (once, under a lock every instance takes) before serving.
            with psycopg.connect(url, connect_timeout=10) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                cur.execute("SELECT to_regclass('schema_version')")
                version = 0
                if cur.fetchone()[0] is not None:
                    cur.execute("SELECT version FROM schema_version")
                    version = cur.fetchone()[0]
                for statement in (s for step in MIGRATIONS[version:] for s in step):
                    cur.execute(statement)
                if version == 0:
                    cur.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
                elif version < SCHEMA_VERSION:
                    cur.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
            self._pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True, timeout=30)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open collector database {_safe(url)}: {exc}".splitlines()[0]) from exc

    @contextmanager
    def transaction(self):
        # The pool commits when the block ends normally and rolls back when it raises.
        with self._pool.connection() as conn, conn.cursor() as cur:
            yield _Tx(cur)

    def lock_install(self, tx, install_id: str) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (install_id,))

    def fetch_by_ids(self, tx, ids):
        rows = tx.all(f"SELECT {column_list(BY_ID_COLUMNS)} FROM records WHERE id = ANY(?)", (list(ids),))
        return {row[0]: dict(zip(BY_ID_COLUMNS, row)) for row in rows}

    def fetch_seq_list(self, tx, install_id, seqs):
        rows = tx.all(f"SELECT {column_list(SEQ_COLUMNS)} FROM records WHERE install_id = ? AND seq = ANY(?)",
                      (install_id, seqs))
        return [dict(zip(SEQ_COLUMNS, row)) for row in rows]

    def names_match(self):
        return ("EXISTS (SELECT 1 FROM json_array_elements_text(CASE WHEN json_typeof(records.names::json) = 'array'"
                " THEN records.names::json ELSE '[]'::json END) AS n(value) WHERE n.value LIKE ? ESCAPE '\\')")

    def insert_records(self, tx, rows):
        # COPY: the rows are known to be new (checked under the installation's lock), and COPY
        # is several times faster than INSERTs for batches of thousands.
        with tx.cur.copy(f"COPY records ({column_list(COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[n] for n in COLUMNS])

    def close(self) -> None:
        self._pool.close()


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
