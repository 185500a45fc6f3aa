"""The floor under `kubectl record serve`'s ingest, for bench/bench_collector.py to run beside it:
the same HTTP stack (uvicorn, Starlette) and the same bodies, but nothing of the collector's own
work — no token, no validation, no hash chain, no columns, no audit or forwarding tables. Each
POST is gunzipped, parsed, and its records inserted as (id, JSON text) in one statement.

    BASELINE_DB=/tmp/b.db python -m uvicorn bench.baseline_ingest:app --workers 2 --port 8000
    BASELINE_DB=postgresql://… (same)

The table is made beforehand (create_table), as bench_collector.py does.
"""

from __future__ import annotations

import gzip
import os
import threading

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route

DB = os.environ.get("BASELINE_DB", "")
PG = DB.startswith("postgresql")
_local = threading.local()
_pool = None
_pool_lock = threading.Lock()
_DDL = "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, doc TEXT NOT NULL)"


def create_table(db: str) -> None:
    """Before the server starts: its workers creating it at once race (PostgreSQL's catalog)."""
    if db.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(_DDL)
    else:
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(_DDL)


def store(rows: list[tuple]) -> None:
    """One transaction per batch: a pooled PostgreSQL connection, or this thread's SQLite one."""
    global _pool
    if PG:
        with _pool_lock:
            if _pool is None:
                from psycopg_pool import ConnectionPool

                _pool = ConnectionPool(DB, min_size=1, max_size=4, open=True)
        with _pool.connection() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO records (id, doc) VALUES (%s, %s) ON CONFLICT DO NOTHING", rows)
        return
    conn = getattr(_local, "conn", None)
    if conn is None:
        import sqlite3

        conn = _local.conn = sqlite3.connect(DB, isolation_level=None, timeout=60)
        conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT OR IGNORE INTO records (id, doc) VALUES (?, ?)", rows)
    conn.execute("COMMIT")


def _ingest(body: bytes, encoding: str | None) -> int:
    if encoding == "gzip":
        body = gzip.decompress(body)
    rows = [(r["id"], orjson.dumps(r).decode()) for r in orjson.loads(body)["records"]]
    store(rows)
    return len(rows)


async def ingest(request):
    # decoded and stored off the event loop, as the collector does (run_in_threadpool)
    n = await run_in_threadpool(_ingest, await request.body(), request.headers.get("content-encoding"))
    return JSONResponse({"accepted": n})


app = Starlette(routes=[Route("/v1/ingest", ingest, methods=["POST"])])
