"""Reading audit sources into the store: files, rotated sets, .gz, directories, stdin, a live
log followed across rotation (positions saved per file identity, so a restart resumes), and a
webhook receiver (EventList POSTs).

Memory stays bounded: lines are read one at a time (a line longer than MAX_LINE is skipped and
counted), events are written in batches, and only kubectl-like events are kept as rows (other
clients become counts per userAgent and user).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import os
import sqlite3
import sys
import time
from typing import BinaryIO, Iterable, Iterator

from . import formats
from .formats import Counters, Ev

MAX_LINE = 16 * 1024 * 1024
BATCH = 5000          # events per executemany
COMMIT_LINES = 50000  # lines per transaction (and saved position)
WHOAMI_PRODUCT = "kubectl+kubectl-record-whoami"
MARKER_PREFIX = "kubectl+r."
DISPATCHER_PRODUCT = "kubectl-dispatcher"


def ua_product(ua: str) -> str:
    """`kubectl+r.ID/v1.32.4 (linux/amd64) kubernetes/abc` → `kubectl+r.ID`."""
    i = ua.find("/")
    return ua if i < 0 else ua[:i]


_KUBECTL_UA: dict[str, bool] = {}  # user agents repeat: every event asks


def is_kubectl(ua: str) -> bool:
    """Events kept as rows: kubectl's own (marked or not) and clients that send no user agent."""
    known = _KUBECTL_UA.get(ua)
    if known is None:
        if not ua:
            known = True
        elif not ua.startswith("kubectl"):
            known = False
        else:
            prod = ua_product(ua)
            known = prod == "kubectl" or prod.startswith(MARKER_PREFIX) or prod in ("kubectl.exe",)
        if len(_KUBECTL_UA) > 10_000:  # marked runs' agents are one per run
            _KUBECTL_UA.clear()
        _KUBECTL_UA[ua] = known
    return known


formats.CLIENT_FILTER = is_kubectl


def client_key(ua: str) -> str:
    """Other clients are grouped by user agent without the build suffix."""
    i = ua.find(" kubernetes/")
    return ua if i < 0 else ua[:i]


_INSERT = (
    "INSERT INTO audit_events (audit_id, server, stages, rank, ts, verb, user, impersonated, ua, resource,"
    " subresource, namespace, name, api_group, code, decision, path, manager, response_kind, sets) VALUES"
    " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_INSERT_NEW = _INSERT + " ON CONFLICT(audit_id) DO NOTHING"
_UPSERT = (
    _INSERT + " ON CONFLICT(audit_id) DO UPDATE SET stages = stages | excluded.stages,"
    " rank = max(rank, excluded.rank),"
    " code = CASE WHEN excluded.rank > rank THEN coalesce(excluded.code, code) ELSE code END,"
    " decision = CASE WHEN excluded.decision != '' THEN excluded.decision ELSE decision END,"
    " name = CASE WHEN excluded.name != '' THEN excluded.name ELSE name END,"
    " response_kind = CASE WHEN excluded.response_kind != '' THEN excluded.response_kind ELSE response_kind END,"
    " sets = CASE WHEN excluded.sets != '' THEN excluded.sets ELSE sets END,"
    " namespace = CASE WHEN excluded.namespace != '' THEN excluded.namespace ELSE namespace END,"
    " impersonated = CASE WHEN excluded.impersonated != '' THEN excluded.impersonated ELSE impersonated END"
    " WHERE (stages | excluded.stages) != stages"
)
# A row is (audit_id, server, stages, rank) + Ev[2:] (Sink.add); _merge does in a batch what
# _UPSERT does in the store: these fields take a later stage's value when it has one.
_ROW = {name: 2 + i for i, name in enumerate(Ev._fields) if i >= 2}
_MERGE_NEWER = tuple(_ROW[f] for f in ("impersonated", "namespace", "name", "decision", "response_kind", "sets"))


class Sink:
    """Batches events into the store for one cluster (server URL)."""

    def __init__(self, conn: sqlite3.Connection, server: str, counters: Counters):
        self.conn = conn
        self.server = server
        self.c = counters
        self.rows: list[tuple] = []
        self.row_of: dict[str, int] = {}  # auditID -> its row in the batch
        self.clients: dict[tuple, list] = {}
        self.client_ids: set[tuple] = set()  # (audit_id, stage) of client events in this batch
        self.lo: float | None = None
        self.hi: float | None = None
        self.max_ts: float | None = None

    def add(self, ev: Ev, in_tx: bool = False) -> None:
        """Queue one event; a full batch is written (inside the caller's transaction when
        in_tx, else in its own)."""
        ts = ev.ts
        if self.max_ts is None or ts > self.max_ts:
            self.max_ts = ts
        if is_kubectl(ev.user_agent):
            if self.lo is None or ts < self.lo:
                self.lo = ts
            if self.hi is None or ts > self.hi:
                self.hi = ts
            # _INSERT's columns: Ev's fields from ts on are in the same order
            row = (ev.audit_id, self.server, formats.STAGE_BIT.get(ev.stage, 4),
                   formats.STAGE_RANK.get(ev.stage, 3)) + ev[2:]
            i = self.row_of.get(ev.audit_id)
            if i is None:
                self.row_of[ev.audit_id] = len(self.rows)
                self.rows.append(row)
            elif self.rows[i][2] & row[2]:
                self.c.duplicates += 1
            else:  # a request's stages mostly come together: one row, written once
                self.rows[i] = _merge(self.rows[i], row)
        elif ev.stage in ("ResponseComplete", "Panic") or (ev.stage == "ResponseStarted" and ev.code and ev.code >= 400):
            key = (ev.audit_id, ev.stage)
            if key in self.client_ids:
                self.c.duplicates += 1
                return
            self.client_ids.add(key)
            k = (client_key(ev.user_agent), ev.user)
            agg = self.clients.get(k)
            if agg is None:
                self.clients[k] = [1, ts, ts]
            else:
                agg[0] += 1
                agg[1] = min(agg[1], ts)
                agg[2] = max(agg[2], ts)
        if len(self.rows) >= BATCH:
            self.write() if in_tx else self.flush()

    def flush(self) -> None:
        conn = self.conn
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")
        try:
            self.write()
            if own:
                conn.execute("COMMIT")
        except BaseException:
            if own:
                conn.execute("ROLLBACK")
            raise

    def write(self) -> None:
        """Write the batch inside the caller's transaction."""
        conn = self.conn
        if self.rows:
            # Requests stored whole are counted per stage; rows sorted by how many stages they
            # carry, so that how many were inserted says how many stages were new.
            by_stages: dict[int, list] = {}
            for row in self.rows:
                by_stages.setdefault(bin(row[2]).count("1"), []).append(row)
            for n, rows in by_stages.items():
                new = max(0, conn.executemany(_INSERT_NEW, rows).rowcount)
                self.c.stored += new * n
                if new < len(rows):  # some were stored before: merge in the stages they lack
                    more = max(0, conn.executemany(_UPSERT, rows).rowcount)
                    # (a request partly stored counts one new stage: the common case, a stage
                    # per delivery)
                    self.c.stored += more
                    self.c.duplicates += (len(rows) - new) * n - more
            self.rows, self.row_of = [], {}
        if self.clients:
            conn.executemany(
                "INSERT INTO audit_clients (server, ua, user, count, first_ts, last_ts) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT(server, ua, user) DO UPDATE SET count = count + excluded.count,"
                " first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)",
                [(self.server, k[0], k[1], v[0], v[1], v[2]) for k, v in self.clients.items()])
            self.clients = {}
        self.client_ids = set()
        if self.max_ts is not None:
            conn.execute(
                "INSERT INTO audit_clusters (server, watermark, events, updated) VALUES (?, ?, 0, ?)"
                " ON CONFLICT(server) DO UPDATE SET watermark = max(coalesce(watermark, 0), excluded.watermark),"
                " updated = excluded.updated", (self.server, self.max_ts, time.time()))


def _merge(old: tuple, new: tuple) -> tuple:
    """OLD's row with NEW's stage in it, as _UPSERT would store them."""
    row = list(old)
    row[2] |= new[2]
    if new[3] > old[3]:
        row[3] = new[3]
        code = _ROW["code"]
        if new[code] is not None:
            row[code] = new[code]
    for k in _MERGE_NEWER:
        if new[k]:
            row[k] = new[k]
    return tuple(row)


# ------------------------------------------------------------------------------ files
def _fingerprint(f: BinaryIO) -> str:
    pos = f.tell()
    f.seek(0)
    head = f.read(256)
    f.seek(pos)
    return hashlib.sha1(head).hexdigest()[:16] + f":{len(head)}"


def _same_start(saved: str | None, f: BinaryIO) -> bool:
    if not saved:
        return False
    try:
        digest, n = saved.rsplit(":", 1)
        pos = f.tell()
        f.seek(0)
        head = f.read(int(n))
        f.seek(pos)
        return hashlib.sha1(head).hexdigest()[:16] == digest
    except (ValueError, OSError):
        return False


def _lines(f: BinaryIO, counters: Counters, where: str) -> Iterator[tuple[bytes, int]]:
    """(line, offset after it) for complete lines; an over-long line is skipped and counted."""
    try:
        pos = f.tell()
    except OSError:  # a pipe
        pos = 0
    while True:
        line = f.readline(MAX_LINE)
        if not line:
            return
        if len(line) >= MAX_LINE and not line.endswith(b"\n"):
            # skip the rest of this line without holding it
            while True:
                more = f.readline(MAX_LINE)
                if not more or more.endswith(b"\n"):
                    break
            counters.oversized += 1
            counters.lines += 1
            try:
                pos = f.tell()
            except OSError:
                pos = 0
            yield b"", pos
            continue
        if not line.endswith(b"\n"):
            # the last line may still be being written: only a line that parses is taken
            try:
                formats.loads(line)
            except formats.JSONError:
                return
        pos += len(line)
        yield line, pos


class Progress:
    def __init__(self, total: int, enabled: bool):
        self.total = max(1, total)
        self.enabled = enabled
        self.done = 0
        self.last = 0.0

    def update(self, done: int, events: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}% {events} events")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def expand(paths: Iterable[str]) -> list[str]:
    """Directories become their files (oldest first); '-' stays stdin."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
        elif os.path.isdir(p):
            files = [os.path.join(dp, n) for dp, _, ns in os.walk(p) for n in ns if not n.startswith(".")]
            out.extend(sorted(files, key=lambda x: (os.path.getmtime(x), x)))
        else:
            out.append(p)
    return out


def rotation_set(path: str) -> list[str]:
    """The live file and its rotated siblings (lumberjack `name-TIME.ext`, logrotate `name.N`,
    either optionally .gz), oldest first, the live file last."""
    base, ext = os.path.splitext(path)
    found = set(glob.glob(glob.escape(base) + "-*" + ext)) | set(glob.glob(glob.escape(base) + "-*" + ext + ".gz"))
    found |= set(glob.glob(glob.escape(path) + ".*"))
    found.discard(path)
    rotated = sorted(found, key=lambda x: (os.path.getmtime(x), x))
    return rotated + ([path] if os.path.exists(path) else [])


def import_file(conn: sqlite3.Connection, path: str, sink: Sink, counters: Counters,
                progress: Progress | None = None, resume: bool = True) -> int:
    """Import one file from its saved position. Returns the bytes consumed."""
    server = sink.server
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0
    key = (server, st.st_dev, st.st_ino)
    row = conn.execute("SELECT fingerprint, offset, complete FROM audit_sources WHERE server = ? AND dev = ?"
                       " AND ino = ?", key).fetchone() if resume else None
    gz = path.endswith(".gz")
    with open(path, "rb") as raw:
        fp = _fingerprint(raw)
        offset = 0
        if row and row[0] == fp or (row and _same_start(row[0], raw)):
            if gz and row[2]:
                return 0
            offset = row[1] if not gz else 0
            if offset > st.st_size:
                offset = 0  # truncated: start again
        if not gz and offset == st.st_size and row:
            return 0
        f: BinaryIO = gzip.open(raw) if gz else raw  # type: ignore[assignment]
        head = f.read(4096)
        f.seek(0 if gz else offset)
        if formats.looks_like_document(head) and offset == 0:
            def chunks():
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        return
                    yield b
            for obj in formats.iter_documents(chunks(), counters, path):
                for ev in formats.events_from_obj(obj, counters, path):
                    sink.add(ev)
            end = st.st_size
            _save(conn, sink, key, fp, path, end, True)
            return end - offset
        pos = offset
        n = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for line, pos in _lines(f, counters, path):
                if line:
                    for ev in formats.events_from_line(line, counters, path):
                        sink.add(ev, in_tx=True)
                n += 1
                if n % COMMIT_LINES == 0:
                    sink.write()
                    _save_tx(conn, key, fp, path, pos if not gz else 0, False)
                    conn.execute("COMMIT")
                    if progress:
                        progress.update(progress.done + (pos - offset if not gz else raw.tell()), counters.events)
                    conn.execute("BEGIN IMMEDIATE")
            sink.write()
            _save_tx(conn, key, fp, path, st.st_size if gz else pos, gz)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        consumed = (raw.tell() if gz else pos) - (0 if gz else offset)
        if progress:
            progress.done += consumed
            progress.update(progress.done, counters.events, force=True)
        return consumed


def _save_tx(conn, key, fp, path, offset, complete) -> None:
    conn.execute(
        "INSERT INTO audit_sources (server, dev, ino, fingerprint, path, offset, complete, updated)"
        " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(server, dev, ino) DO UPDATE SET fingerprint = excluded.fingerprint,"
        " path = excluded.path, offset = excluded.offset, complete = excluded.complete, updated = excluded.updated",
        (*key, fp, path, offset, int(complete), time.time()))


def _save(conn, sink, key, fp, path, offset, complete) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        sink.write()
        _save_tx(conn, key, fp, path, offset, complete)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def import_stream(stream: BinaryIO, sink: Sink, counters: Counters, where: str = "<stdin>") -> None:
    head = stream.peek(4096)[:4096] if hasattr(stream, "peek") else b""
    if head and formats.looks_like_document(head):
        def chunks():
            while True:
                b = stream.read(1 << 20)
                if not b:
                    return
                yield b
        for obj in formats.iter_documents(chunks(), counters, where):
            for ev in formats.events_from_obj(obj, counters, where):
                sink.add(ev)
        sink.flush()
        return
    n = 0
    for line, _ in _lines(stream, counters, where):
        if line:
            for ev in formats.events_from_line(line, counters, where):
                sink.add(ev)
        n += 1
    sink.flush()


def import_body(body: bytes, sink: Sink, counters: Counters, where: str = "webhook") -> None:
    """One webhook POST (an EventList, or JSON lines)."""
    try:
        obj = formats.loads(body)
    except formats.JSONError:
        for line in body.splitlines():
            for ev in formats.events_from_line(line, counters, where):
                sink.add(ev)
    else:
        for ev in formats.events_from_obj(obj, counters, where):
            sink.add(ev)
    sink.flush()
