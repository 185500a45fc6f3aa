"""The collector as a gateway: records it accepts are forwarded to destinations, each with its
own outbox position, with the same outbox, cursor and retry machinery as a workstation's push.

The gateway keeps a small SQLite store of its own (the outbox needs the records beside it):

    gw = Gateway("/var/lib/kubectl-record/gateway.db", [("opensearch://es:9200/kubectl", {...})])
    gw.accept(records)     # after the collector committed an upload (the records as stored)
    gw.start()             # a thread delivering every INTERVAL seconds; gw.stop() at shutdown

A record accepted again with a changed outcome (a late end, identity, audit) is queued again
for every destination; one accepted again unchanged is not.
"""

from __future__ import annotations

import threading

from .. import store, sync
from . import open_destination
from .adapter import background_pass

_UPSERT = (f"INSERT INTO records ({', '.join(store.FIELDS)}) VALUES ({', '.join('?' * len(store.FIELDS))})"
           f" ON CONFLICT(id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in store.OUTCOME)
           + " ON CONFLICT DO NOTHING")


class Gateway:
    def __init__(self, path: str, destinations: list[tuple[str, dict]], interval: float = 5.0):
        self.path = path
        self.destinations = list(destinations)
        self.interval = interval
        for url, options in self.destinations:  # refuse bad URLs/options now, not in the thread
            open_destination(url, options).close()
        conn = store.connect(path)
        try:
            for url, options in self.destinations:
                sync.ensure_outbox(conn, open_destination(url, options).name)
        finally:
            conn.close()
        self._local = threading.local()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict = {}

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = store.connect(self.path)
        return conn

    def accept(self, records: list[dict]) -> None:
        if not records:
            return
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_UPSERT, (store.to_row(r) for r in records))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def run_once(self, clock=None, backoff=None) -> dict:
        self.last = background_pass(self._conn(), clock=clock, backoff=backoff, destinations=self.destinations)
        return self.last

    def pending(self) -> dict:
        conn = self._conn()
        return {open_destination(u, o).name: sync.pending_count(conn, open_destination(u, o).name)
                for u, o in self.destinations}

    def start(self) -> None:
        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self.run_once()
                except Exception as exc:  # keep forwarding; the next pass retries
                    self.last = {"error": str(exc)}

        self._thread = threading.Thread(target=loop, name="kubectl-record-gateway", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
