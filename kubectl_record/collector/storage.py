"""The collector's database: the only state it keeps, so any number of instances can share one.

`open_storage(url)` picks SQLite (a path) or PostgreSQL (`postgresql://…`). The logic lives here,
written once in portable SQL with `?` placeholders; the backends supply connections, locking,
bulk inserts and their DDL.

Stored records are append-only: the schema itself refuses UPDATEs of what the chain covers and
any DELETE that is not the explicit, logged retention operation (`retention_grant`).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..audit.formats import parse_ts
from ..store import FIELDS, OUTCOME, UNCHAINED, from_row
from . import chain
from .records import TOMBSTONE_FIELDS, Invalid, is_time, to_columns

# Outcome fields may be completed after upload (a late end, identity, audit); nothing else changes.
MUTABLE = tuple(sorted(UNCHAINED - {"prev_hash", "hash"}))
EXTRA = ("uploader", "received_at", "link")
COLUMNS = FIELDS + EXTRA
OUTPUT_EXTRA = {"uploader": "uploaded_by", "received_at": "received_at"}

# The filters of `kubectl record history` (kubectl_record.filters), as query parameters. Text
# filters repeat (any of them matches) and take globs (* ?), as the local ones do.
GLOB_FILTERS = {
    "context": "context", "cluster": "cluster", "namespace": "namespace", "user": '"user"',
    "identity": "identity", "resource": "resource", "host": "host", "source": "source",
    "state": "state", "install_id": "install_id", "os_user": "os_user", "uploaded_by": "uploader",
    "session": "session",
}
SPECIAL_FILTERS = ("verb", "name", "cwd", "exit", "query")
FLAG_FILTERS = ("failed", "mutating", "read_only")
RANGE_FILTERS = ("since", "until")
FILTERS = tuple(GLOB_FILTERS) + SPECIAL_FILTERS + FLAG_FILTERS + RANGE_FILTERS


def column_list(names) -> str:
    # Quoted: `user` is a reserved word in PostgreSQL.
    return ", ".join(f'"{n}"' for n in names)


class StorageError(Exception):
    """The database cannot be used; one line saying why."""


class BadQuery(ValueError):
    """A lookup asked for something that does not exist (unknown filter, malformed cursor)."""


def now_text() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Access:
    """Who is asking and what they may see: writers their own uploads, auditors their scope."""

    user: str
    role: str
    scope: str | None = None


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    updated: int = 0
    rejected: list = field(default_factory=list)
    tombstones_accepted: int = 0
    tombstones_duplicate: int = 0
    findings: list = field(default_factory=list)
    # The records this upload stored for the first time (validated, with uploaded_by and
    # received_at), for alerting; not part of the HTTP answer. A retried upload adds none here.
    new_records: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {
            "accepted": self.accepted, "duplicates": self.duplicates, "updated": self.updated,
            "rejected": self.rejected, "tombstones_accepted": self.tombstones_accepted,
            "tombstones_duplicate": self.tombstones_duplicate, "findings": self.findings,
        }


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def glob_to_like(pattern: str) -> str:
    """An auditor scope (`prod-*`) as a LIKE pattern with `\\` as the escape character."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def encode_cursor(started_at: str, record_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([started_at, record_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        started_at, record_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(started_at, str) and isinstance(record_id, str):
            _no_nul("cursor", started_at + record_id)
            return started_at, record_id
    except (ValueError, TypeError):
        pass
    raise BadQuery("malformed cursor")


class Storage:
    """Backend-independent operations. Subclasses implement the hooks at the end."""

    url: str
    # Errors that mean "try again shortly" (database busy or unreachable), answered with 503.
    unavailable: tuple = ()
    # The destinations this process forwards to (set by collector.forward.Forwarder): what an
    # upload stores or changes is queued for each in the transaction that stores it.
    forward_to: tuple = ()

    # --- ingest -----------------------------------------------------------------------------

    def ingest(self, uploader: str, records: list, tombstones: list) -> IngestResult:
        """Store an upload: new records kept, known ones deduplicated, bad ones refused with reasons.

        One transaction per installation, holding that installation's lock, so concurrent
        uploads (other instances too) see each other's links.
        """
        from .records import validate_record, validate_tombstone

        result = IngestResult()
        by_install: dict[str, tuple[list, list]] = {}
        for index, item in enumerate(records):
            try:
                record = validate_record(item)
                columns = to_columns(record)
            except Invalid as exc:
                result.rejected.append({"index": index, "id": _id_of(item), "reason": str(exc)})
                continue
            by_install.setdefault(record["install_id"], ([], []))[0].append((index, record, columns))
        for index, item in enumerate(tombstones):
            try:
                t = validate_tombstone(item)
            except Invalid as exc:
                result.rejected.append({"tombstone": index, "reason": str(exc)})
                continue
            by_install.setdefault(t["install_id"], ([], []))[1].append((index, t))
        received = now_text()
        for install_id in sorted(by_install):
            recs, tombs = by_install[install_id]
            with self.transaction() as tx:
                self._ingest_install(tx, uploader, install_id, recs, tombs, received, result)
        result.rejected.sort(key=lambda r: (r.get("index", -1), r.get("tombstone", -1)))
        return result

    def _ingest_install(self, tx, uploader, install_id, recs, tombs, received, result) -> None:
        self.lock_install(tx, install_id)
        owner = tx.one("SELECT owner FROM installs WHERE install_id = ?", (install_id,))
        if owner is None:
            tx.execute("INSERT INTO installs (install_id, owner, first_seen) VALUES (?, ?, ?)",
                       (install_id, uploader, received))
        elif owner[0] != uploader:
            reason = "install_id belongs to another uploader"
            result.rejected.extend({"index": i, "id": r["id"], "reason": reason} for i, r, _ in recs)
            result.rejected.extend({"tombstone": i, "reason": reason} for i, _ in tombs)
            return

        chained = [r for _, r, _ in recs if r["seq"] is not None]
        stored_by_id = self.fetch_by_ids(tx, [r["id"] for _, r, _ in recs])
        rows = self.fetch_seqs(tx, install_id, chain.needed_seqs(chained, [t for _, t in tombs]))
        known = chain.Known(records={row["seq"]: row for row in rows}, tombstones=self.fetch_tombstones(tx, install_id))
        was_gap = {seq for seq, row in known.records.items() if row["link"] == chain.GAP}
        tomb_was_gap = {t["id"] for t in known.tombstones if t["link"] == chain.GAP}

        deleted = chain.coverage(known.tombstones)
        new_rows, updates, seen, fresh = [], [], set(), []
        for index, record, columns in sorted(recs, key=lambda p: (p[1]["seq"] or 0)):
            stored = stored_by_id.get(record["id"])
            if stored is not None or record["id"] in seen:
                reason = self._duplicate(stored, record, columns, updates) if stored is not None else None
                if reason:
                    result.rejected.append({"index": index, "id": record["id"], "reason": reason})
                    result.findings.append(self._finding(tx, install_id, record["seq"], "conflict", reason, received))
                else:
                    result.duplicates += 1
                continue
            seq = record["seq"]
            if seq is not None and deleted(seq):
                result.duplicates += 1  # deleted after it was received (retention): not brought back
                continue
            if seq is not None and seq in known.records:
                reason = f"seq {seq} of this installation is already taken by another record"
                result.rejected.append({"index": index, "id": record["id"], "reason": reason})
                result.findings.append(self._finding(tx, install_id, seq, "conflict", reason, received))
                continue
            seen.add(record["id"])
            link = chain.UNCHAINED if seq is None else chain.GAP  # decided below, once all are placed
            row = columns  # completed in place: this runs once per record
            row.update(uploader=uploader, received_at=received, link=link)
            new_rows.append(row)
            record["uploaded_by"], record["received_at"] = uploader, received
            fresh.append(record)
            if seq is not None:
                known.records[seq] = {"id": record["id"], "hash": record["hash"], "prev_hash": record["prev_hash"],
                                      "link": chain.GAP, "new": row}

        new_tombs = []
        stored_tombs = self.fetch_tombstones_by_id(tx, [t["id"] for _, t in tombs])
        for index, t in tombs:
            old = stored_tombs.get(t["id"])
            if old is not None:
                if all(old[k] == t[k] for k in ("install_id", "seq_from", "seq_to", "count", "prev_hash", "last_hash")):
                    result.tombstones_duplicate += 1
                else:
                    reason = f"a different tombstone with id {t['id']} is already stored"
                    result.rejected.append({"tombstone": index, "reason": reason})
                    result.findings.append(self._finding(tx, install_id, t["seq_from"], "conflict", reason, received))
                continue
            mismatch = chain.tombstone_mismatch(t, known) if t["prev_hash"] else None
            if mismatch:
                result.rejected.append({"tombstone": index, "reason": mismatch})
                result.findings.append(self._finding(tx, install_id, t["seq_from"], "tombstone_mismatch", mismatch,
                                                     received))
                continue
            entry = {**t, "uploader": uploader, "received_at": received,
                     "link": chain.GAP if t["prev_hash"] else chain.UNCHAINED}
            if t["prev_hash"]:
                known.tombstones.append(entry)
            stored_tombs[t["id"]] = entry
            new_tombs.append(entry)

        # Links: every new item, and every stored gap whose predecessor may just have arrived.
        link_updates = []
        for seq, rec in known.records.items():
            if "new" in rec:
                rec["new"]["link"] = rec["link"] = known.link(seq, rec["prev_hash"])
                if rec["link"] == chain.BREAK:
                    result.findings.append({"install_id": install_id, "seq": seq, "kind": "break",
                                            "detail": "prev_hash does not match the preceding record"})
            elif seq in was_gap:
                link = known.link(seq, rec["prev_hash"])
                if link != chain.GAP:
                    link_updates.append((link, install_id, seq))
                if link == chain.BREAK:
                    result.findings.append({"install_id": install_id, "seq": seq, "kind": "break",
                                            "detail": "the record that arrived before it does not match its prev_hash"})
        for t in known.tombstones:
            link = known.link(t["seq_from"], t["prev_hash"])
            if any(t is n for n in new_tombs):
                t["link"] = link
                if link == chain.BREAK:
                    result.findings.append({"install_id": install_id, "seq": t["seq_from"], "kind": "break",
                                            "detail": "tombstone's prev_hash does not match the preceding record"})
            elif t["id"] in tomb_was_gap and link != chain.GAP:
                tx.execute("UPDATE tombstones SET link = ? WHERE id = ?", (link, t["id"]))

        if new_rows:
            self.insert_records(tx, new_rows)
        for t in new_tombs:
            tx.execute(f"INSERT INTO tombstones ({', '.join(TOMBSTONE_COLUMNS)})"
                       f" VALUES ({', '.join('?' * len(TOMBSTONE_COLUMNS))})", [t[n] for n in TOMBSTONE_COLUMNS])
        if link_updates:
            tx.executemany("UPDATE records SET link = ? WHERE install_id = ? AND seq = ?", link_updates)
        for record_id, values in updates:
            sets = ", ".join(f"{name} = ?" for name in values)
            tx.execute(f"UPDATE records SET {sets} WHERE id = ?", (*values.values(), record_id))
        if self.forward_to and (new_rows or updates):
            from .forward import queue

            queue(self, tx, [row["id"] for row in new_rows] + [record_id for record_id, _ in updates])
        result.accepted += len(new_rows)
        result.new_records += fresh
        result.updated += len(updates)
        result.tombstones_accepted += len(new_tombs)

    @staticmethod
    def _duplicate(stored: dict, record: dict, fresh: dict, updates: list) -> str | None:
        """A re-sent record: same content → a duplicate (outcome fields completed); else a conflict."""
        if stored["install_id"] != record["install_id"] or stored["hash"] != record["hash"]:
            return "a different record with this id is already stored"
        if record["hash"] is None:
            # Unchained records cannot prove their content: they are kept as first uploaded.
            return None
        changed = {name: fresh[name] for name in MUTABLE if fresh[name] != stored[name]}
        if changed:
            updates.append((record["id"], changed))
        return None

    def _finding(self, tx, install_id, seq, kind, detail, at) -> dict:
        tx.execute("INSERT INTO findings (install_id, seq, kind, detail, found_at) VALUES (?, ?, ?, ?, ?)",
                   (install_id, seq, kind, detail, at))
        return {"install_id": install_id, "seq": seq, "kind": kind, "detail": detail}

    # --- reads ------------------------------------------------------------------------------

    def _where(self, access: Access, filters: dict) -> tuple[list[str], list]:
        """FILTERS: {name: value or list of values}; within one name any value matches."""
        where, params = [], []
        if access.role == "writer":
            where.append("uploader = ?")
            params.append(access.user)
        elif access.role == "auditor" and access.scope and access.scope != "*":
            where.append("cluster LIKE ? ESCAPE '\\'")
            params.append(glob_to_like(access.scope))
        for name, value in filters.items():
            values = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]
            if not values:
                continue
            for v in values:
                _no_nul(name, v)
            if name in FLAG_FILTERS:
                if len(values) != 1:
                    raise BadQuery(f"{name} is given once")
                wanted = _flag(name, values[0])
                if name == "failed" and wanted:
                    where.append("exit_code IS NOT NULL AND exit_code <> 0")
                elif name == "mutating" and wanted:
                    where.append("mutating = 1")
                elif name == "read_only" and wanted:
                    where.append("mutating = 0")
                continue
            if name in RANGE_FILTERS:
                if len(values) != 1 or not is_time(values[0]):
                    raise BadQuery(f"{name} must be one RFC 3339 time")
                where.append("started_at >= ?" if name == "since" else "started_at < ?")
                params.append(values[0])
                continue
            alternatives = []
            for v in map(str, values):
                if name in GLOB_FILTERS:
                    alternatives.append(_glob_clause(GLOB_FILTERS[name], v, params))
                elif name == "verb":  # `rollout` also means every `rollout …`
                    alternatives.append(f"({_glob_clause('verb', v, params)} OR verb LIKE ? ESCAPE '\\')")
                    params.append(like_escape(v) + " %")
                elif name == "name":
                    alternatives.append(self.names_match())
                    params.append(glob_to_like(v))
                elif name == "cwd":  # the directory or below
                    alternatives.append("(cwd = ? OR cwd LIKE ? ESCAPE '\\')")
                    params += [v, like_escape(v.rstrip("/")) + "/%"]
                elif name == "exit":
                    if not (v.lstrip("-").isascii() and v.lstrip("-").isdigit()):
                        raise BadQuery("exit must be an integer")
                    alternatives.append("exit_code = ?")
                    params.append(int(v))
                elif name == "query":  # substring of what was run and where
                    alternatives.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in
                                                          ("command", "context", "namespace", "cwd")) + ")")
                    params += ["%" + like_escape(v) + "%"] * 4
                else:
                    raise BadQuery(f"unknown filter: {name}")
            where.append("(" + " OR ".join(alternatives) + ")")
        return where, params

    def query(self, access: Access, filters: dict, limit: int, cursor: str | None = None) -> tuple[list, str | None]:
        """One page, newest first, and the cursor for the next (None at the end). Auditor reads are logged."""
        where, params = self._where(access, filters)
        if cursor:
            started_at, record_id = decode_cursor(cursor)
            where.append("(started_at < ? OR (started_at = ? AND id < ?))")
            params += [started_at, started_at, record_id]
        sql = f"SELECT {column_list(COLUMNS)} FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        params.append(limit + 1)
        with self.transaction() as tx:
            rows = tx.all(sql, params)
            page = [_output(row) for row in rows[:limit]]
            from .central import attach_outcomes

            attach_outcomes(tx, page)  # the central audit outcome, beside the record as uploaded
            if access.role == "auditor":
                self.log_access(tx, access, "records", filters, cursor, len(page))
        next_cursor = encode_cursor(page[-1]["started_at"], page[-1]["id"]) if len(rows) > limit else None
        return page, next_cursor

    def iter_all(self, access: Access, filters: dict, page_size: int = 1000) -> Iterator[dict]:
        """Every match, page by page (bounded memory for exports)."""
        cursor = None
        while True:
            page, cursor = self.query(access, filters, page_size, cursor)
            yield from page
            if cursor is None:
                return

    def log_access(self, tx, access: Access, what: str, filters: dict, cursor: str | None, returned: int) -> None:
        tx.execute("INSERT INTO access_log (at, user_name, role, what, query, returned) VALUES (?, ?, ?, ?, ?, ?)",
                   (now_text(), access.user, access.role, what,
                    json.dumps({"filters": filters, "cursor": cursor}, sort_keys=True), returned))

    def access_log(self, limit: int = 1000) -> list[dict]:
        with self.transaction() as tx:
            rows = tx.all("SELECT at, user_name, role, what, query, returned FROM access_log ORDER BY id DESC LIMIT ?",
                          (limit,))
        return [{"at": r[0], "user": r[1], "role": r[2], "what": r[3], "query": json.loads(r[4]), "returned": r[5]}
                for r in rows]

    def chain_report(self, access: Access, install_id: str | None = None, limit: int = 1000) -> list[dict]:
        """Per installation: counts, and every gap, break, conflict and disputed tombstone."""
        if install_id is not None:
            _no_nul("install_id", install_id)
        with self.transaction() as tx:
            sql = ("SELECT install_id, owner, first_seen FROM installs"
                   + (" WHERE install_id = ?" if install_id else "") + " ORDER BY install_id")
            installs = tx.all(sql, (install_id,) if install_id else ())
            report = []
            for inst, owner, first_seen in installs:
                count, max_seq = tx.one("SELECT COUNT(*), MAX(seq) FROM records WHERE install_id = ?", (inst,))
                problems = []
                for seq, link in tx.all("SELECT seq, link FROM records WHERE install_id = ? AND link IN ('gap', 'break')"
                                        " ORDER BY seq LIMIT ?", (inst, limit)):
                    if link == chain.GAP:
                        below = tx.one("SELECT MAX(seq) FROM records WHERE install_id = ? AND seq < ?", (inst, seq))[0]
                        tomb = tx.one("SELECT MAX(seq_to) FROM tombstones WHERE install_id = ? AND seq_to < ?",
                                      (inst, seq))[0]
                        start = max(below or 0, tomb or 0) + 1
                        problems.append({"kind": "gap", "seq": seq, "missing": [start, seq - 1],
                                         "detail": f"records {start}..{seq - 1} are missing and no tombstone covers them"})
                    else:
                        problems.append({"kind": "break", "seq": seq,
                                         "detail": "prev_hash does not match the preceding record"})
                for seq_from, seq_to, link in tx.all(
                        "SELECT seq_from, seq_to, link FROM tombstones WHERE install_id = ? AND link IN ('gap', 'break')"
                        " ORDER BY seq_from", (inst,)):
                    problems.append({"kind": f"tombstone_{link}", "seq": seq_from,
                                     "detail": f"tombstone {seq_from}..{seq_to}: {link} before it"})
                for seq, kind, detail, found_at in tx.all(
                        "SELECT seq, kind, detail, found_at FROM findings WHERE install_id = ? ORDER BY id LIMIT ?",
                        (inst, limit)):
                    problems.append({"kind": kind, "seq": seq, "detail": detail, "found_at": found_at})
                tombstoned = tx.one("SELECT COALESCE(SUM(count), 0) FROM tombstones WHERE install_id = ?", (inst,))[0]
                report.append({"install_id": inst, "owner": owner, "first_seen": first_seen, "records": count,
                               "max_seq": max_seq, "tombstoned": int(tombstoned), "problems": problems,
                               "intact": not problems})
            if access.role == "auditor":
                self.log_access(tx, access, "chains", {"install_id": install_id}, None, len(report))
        return report

    def retention(self, access: Access, before: str, reason: str | None) -> int:
        """Delete records that started before BEFORE: the only deletion there is, and it is logged.
        Each contiguous seq range it removes leaves a tombstone, as a local deletion does, so the
        chain stays verifiable and a re-sent old record is not stored again."""
        at, deletion = now_text(), f"retention-{uuid.uuid4()}"
        reason = reason or f"collector retention: started before {before}"
        with self.transaction() as tx:
            # Gaps and islands: seq minus its rank is constant along a contiguous run.
            runs = tx.all(
                "WITH gone AS (SELECT install_id, seq, started_at,"
                " seq - ROW_NUMBER() OVER (PARTITION BY install_id ORDER BY seq) AS run"
                " FROM records WHERE started_at < ? AND seq IS NOT NULL),"
                " ranges AS (SELECT install_id, MIN(seq) AS lo, MAX(seq) AS hi, COUNT(*) AS n,"
                " MIN(started_at) AS first_at, MAX(started_at) AS last_at FROM gone GROUP BY install_id, run)"
                " SELECT r.install_id, r.lo, r.hi, r.n, a.prev_hash, b.hash, r.first_at, r.last_at, a.link"
                " FROM ranges r JOIN records a ON a.install_id = r.install_id AND a.seq = r.lo"
                " JOIN records b ON b.install_id = r.install_id AND b.seq = r.hi", (before,))
            # The first removed record's link is the verdict on what preceded the range.
            tombs = [{"id": f"{deletion}-{inst}-{lo}", "deletion": deletion, "created_at": at, "deleted_by": access.user,
                      "reason": reason, "install_id": inst, "seq_from": lo, "seq_to": hi, "count": n, "prev_hash": prev,
                      "last_hash": last, "first_started_at": first_at, "last_started_at": last_at,
                      "uploader": access.user, "received_at": at, "link": link}
                     for inst, lo, hi, n, prev, last, first_at, last_at, link in runs]
            tx.executemany(
                f"INSERT INTO tombstones ({', '.join(TOMBSTONE_COLUMNS)}) VALUES ({', '.join('?' * len(TOMBSTONE_COLUMNS))})",
                [[t[c] for c in TOMBSTONE_COLUMNS] for t in tombs])
            tx.execute("INSERT INTO retention_grant (granted) VALUES (1)")
            count = tx.execute("DELETE FROM records WHERE started_at < ?", (before,))
            tx.execute("DELETE FROM retention_grant")
            # What central audit correlation kept about that time goes with the records.
            tx.execute("DELETE FROM record_audit WHERE started_at < ?", (before,))
            for table in ("audit_events", "audit_requests"):
                tx.execute(f"DELETE FROM {table} WHERE ts < ?", (parse_ts(before),))
            tx.execute("INSERT INTO retention_log (at, user_name, before_time, reason, deleted) VALUES (?, ?, ?, ?, ?)",
                       (now_text(), access.user, before, reason, count))
        return count

    def counts(self) -> dict:
        with self.transaction() as tx:
            records = tx.one("SELECT COUNT(*) FROM records")[0]
            installs = tx.one("SELECT COUNT(*) FROM installs")[0]
        return {"records": records, "installs": installs}

    # --- tokens -----------------------------------------------------------------------------

    def add_token(self, token_hash: str, user: str, role: str, scope: str | None) -> None:
        with self.transaction() as tx:
            tx.execute("INSERT INTO tokens (token_hash, user_name, role, scope, created_at) VALUES (?, ?, ?, ?, ?)",
                       (token_hash, user, role, scope, now_text()))

    def find_token(self, token_hash: str) -> Access | None:
        with self.transaction() as tx:
            row = tx.one("SELECT user_name, role, scope FROM tokens WHERE token_hash = ? AND revoked_at IS NULL",
                         (token_hash,))
        return Access(*row) if row else None

    # --- backend hooks ----------------------------------------------------------------------

    @contextmanager
    def transaction(self):  # yields an object with execute/executemany/one/all
        raise NotImplementedError

    def lock_install(self, tx, install_id: str) -> None:
        raise NotImplementedError

    def fetch_by_ids(self, tx, ids: list[str]) -> dict[str, dict]:
        raise NotImplementedError

    def fetch_seqs(self, tx, install_id: str, seqs: set[int]) -> list[dict]:
        """The stored records of INSTALL_ID at SEQS (id, hashes, link)."""
        if not seqs:
            return []
        lo, hi = min(seqs), max(seqs)
        if hi - lo < 4 * len(seqs):
            # Uploads are runs of consecutive seqs: one index range scan beats a long IN list.
            rows = tx.all(f"SELECT {column_list(SEQ_COLUMNS)} FROM records WHERE install_id = ? AND seq BETWEEN ? AND ?",
                          (install_id, lo, hi))
            return [dict(zip(SEQ_COLUMNS, row)) for row in rows if row[0] in seqs]
        return self.fetch_seq_list(tx, install_id, sorted(seqs))

    def fetch_seq_list(self, tx, install_id: str, seqs: list[int]) -> list[dict]:
        raise NotImplementedError

    def names_match(self) -> str:
        """SQL true when an element of the record's `names` (JSON text) matches the LIKE parameter."""
        raise NotImplementedError

    def insert_records(self, tx, rows: list[dict]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def fetch_tombstones(self, tx, install_id: str) -> list[dict]:
        """The installation's tombstones that are chain links (they have a seq range and hashes)."""
        rows = tx.all("SELECT id, seq_from, seq_to, prev_hash, last_hash, link FROM tombstones"
                      " WHERE install_id = ? AND prev_hash IS NOT NULL", (install_id,))
        return [dict(zip(("id", "seq_from", "seq_to", "prev_hash", "last_hash", "link"), r)) for r in rows]

    def fetch_tombstones_by_id(self, tx, ids: list[str]) -> dict[str, dict]:
        names = ("id", "install_id", "seq_from", "seq_to", "count", "prev_hash", "last_hash")
        out = {}
        for tid in ids:
            row = tx.one(f"SELECT {', '.join(names)} FROM tombstones WHERE id = ?", (tid,))
            if row:
                out[tid] = dict(zip(names, row))
        return out



_INTEGER = {"seq", "duration_ms", "exit_code", "all_namespaces", "mutating", "dry_run", "local_only", "redacted",
            "unexpanded"}
_NOT_NULL = {"id", "install_id", "started_at", "state", "source", "argv", "command", "uploader", "received_at", "link"}
CHAINED_COLUMNS = [n for n in FIELDS if n not in OUTCOME]  # the chained fields and the chain links


def _column(name: str, integer: str) -> str:
    kind = integer if name in _INTEGER else "TEXT"
    return f'"{name}" {kind}' + (" NOT NULL" if name in _NOT_NULL else "")


def tables(integer: str, serial: str) -> list[str]:
    """The first schema version's tables and indexes, in either dialect (INTEGER, SERIAL: its
    integer and auto-numbered key types); each backend adds its own append-only triggers."""
    return [
        f"CREATE TABLE records ({', '.join(_column(n, integer) for n in COLUMNS)},"
        " PRIMARY KEY (id), UNIQUE (install_id, seq))",
        "CREATE INDEX records_started ON records (started_at, id)",
        "CREATE INDEX records_uploader ON records (uploader, started_at)",
        "CREATE INDEX records_cluster ON records (cluster, started_at)",
        # Only the exceptions: chain reports look for them, and nearly every record is `ok`.
        "CREATE INDEX records_link ON records (install_id, seq) WHERE link IN ('gap', 'break')",
        "CREATE TABLE installs (install_id TEXT PRIMARY KEY, owner TEXT NOT NULL, first_seen TEXT NOT NULL)",
        "CREATE TABLE tombstones (id TEXT PRIMARY KEY, deletion TEXT NOT NULL, created_at TEXT NOT NULL,"
        " deleted_by TEXT NOT NULL, reason TEXT NOT NULL, install_id TEXT NOT NULL,"
        f" seq_from {integer}, seq_to {integer},"
        f" count {integer} NOT NULL, prev_hash TEXT, last_hash TEXT, first_started_at TEXT, last_started_at TEXT,"
        " uploader TEXT NOT NULL, received_at TEXT NOT NULL, link TEXT NOT NULL)",
        "CREATE INDEX tombstones_install ON tombstones (install_id, seq_to)",
        f"CREATE TABLE findings (id {serial}, install_id TEXT NOT NULL, seq {integer},"
        " kind TEXT NOT NULL, detail TEXT NOT NULL, found_at TEXT NOT NULL)",
        "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, role TEXT NOT NULL, scope TEXT,"
        " created_at TEXT NOT NULL, revoked_at TEXT)",
        f"CREATE TABLE access_log (id {serial}, at TEXT NOT NULL, user_name TEXT NOT NULL,"
        f" role TEXT NOT NULL, what TEXT NOT NULL, query TEXT NOT NULL, returned {integer} NOT NULL)",
        f"CREATE TABLE retention_log (id {serial}, at TEXT NOT NULL, user_name TEXT NOT NULL,"
        f" before_time TEXT NOT NULL, reason TEXT, deleted {integer} NOT NULL)",
        "CREATE TABLE retention_grant (granted INTEGER)",
    ]

BY_ID_COLUMNS = ("id", "install_id", "hash") + MUTABLE
TOMBSTONE_COLUMNS = TOMBSTONE_FIELDS + EXTRA
SEQ_COLUMNS = ("seq", "id", "hash", "prev_hash", "link")


def _glob_clause(column: str, pattern: str, params: list) -> str:
    if "*" in pattern or "?" in pattern:
        params.append(glob_to_like(pattern))
        return f"{column} LIKE ? ESCAPE '\\'"
    params.append(pattern)
    return f"{column} = ?"


def _no_nul(name: str, value) -> None:
    # PostgreSQL text cannot hold NUL; no stored value contains one, so such a filter is malformed.
    if isinstance(value, str) and "\x00" in value:
        raise BadQuery(f"{name} contains a NUL character")


def _flag(name: str, value) -> bool:
    if value is True or value == "true":
        return True
    if value is False or value == "false":
        return False
    raise BadQuery(f"{name} must be true or false")


def _id_of(item) -> str | None:
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        # Echoed back in the answer: make sure it can be encoded even when the id cannot be stored.
        return item["id"][:200].encode("utf-8", "backslashreplace").decode()
    return None


def _output(row) -> dict:
    record = from_row(row[: len(FIELDS)])
    for name, value in zip(EXTRA, row[len(FIELDS):]):
        if name in OUTPUT_EXTRA:
            record[OUTPUT_EXTRA[name]] = value
    return record


def open_storage(url: str) -> Storage:
    """SQLite for a path (or sqlite:///path), PostgreSQL for postgresql:// or postgres:// URLs."""
    if url.startswith(("postgresql://", "postgres://")):
        from .storage_pg import PostgresStorage

        return PostgresStorage(url)
    from .storage_sqlite import SQLiteStorage

    return SQLiteStorage(url.removeprefix("sqlite://"))
