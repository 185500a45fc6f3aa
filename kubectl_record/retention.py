"""Deleting records: `delete ID…` or by filter, `prune --older-than D`, automatic retention.

Every deletion leaves tombstones (table `tombstones`, store.m005): one per installation and
contiguous seq range deleted, with how many records went and the chain hashes at the range's
edges — the first deleted record's prev_hash and the last one's hash. The collector, which sees
the chain, can then tell a sanctioned deletion (a tombstone bridges the gap) from tampering (a
gap nobody accounts for). Tombstones are uploaded like records (`uploaded_at` stays null until
sync has delivered them) and are never deleted here.

Automatic retention: `retention.max_age` (e.g. "365d") and/or `retention.max_records` in the
config file, or KUBECTL_RECORD_RETENTION=365d; applied by `prune --auto` and by
maybe_auto_prune(), which is cheap to call often (it acts at most once a day).
"""

from __future__ import annotations

import os
import time
import uuid

import click

from .filters import BadUsage, Command, filter_options, parse_duration, parse_time
from .timefmt import rfc3339

AUTO_INTERVAL_S = 86400


def _uuid7() -> str:
    ms = int(time.time() * 1000)
    rand = uuid.uuid4().int
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64 | (0x2 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def plan(conn, where: str, params) -> dict:
    """What deleting WHERE would remove: count, time span, contexts, and the tombstone ranges."""
    summary = {"count": 0, "first": None, "last": None, "contexts": set()}

    def rows():
        for row in conn.execute(
            f"SELECT install_id, seq, prev_hash, hash, started_at, context FROM records WHERE {where}"
            " ORDER BY install_id, seq, started_at", list(params)
        ):
            summary["count"] += 1
            started = row[4]
            if summary["first"] is None or started < summary["first"]:
                summary["first"] = started
            if summary["last"] is None or started > summary["last"]:
                summary["last"] = started
            summary["contexts"].add(row[5])
            yield row

    ranges = _ranges(rows())
    return {**summary, "ranges": ranges, "contexts": len(summary["contexts"])}


def _ranges(rows) -> list[dict]:
    """Contiguous seq runs per installation (rows sorted by install_id, seq). Records without a
    seq make one range per installation with null edges."""
    out: list[dict] = []
    loose_by_install: dict[str, dict] = {}
    current = None
    for inst, seq, prev_hash, hash_, started, _ctx in rows:
        if seq is None:
            loose = loose_by_install.get(inst)
            if loose is None:
                loose = {"install_id": inst, "seq_from": None, "seq_to": None, "count": 0, "prev_hash": None,
                         "last_hash": None, "first_started_at": started, "last_started_at": started}
                out.append(loose)
                loose_by_install[inst] = loose
            loose["count"] += 1
            loose["first_started_at"] = min(loose["first_started_at"], started)
            loose["last_started_at"] = max(loose["last_started_at"], started)
            continue
        if current and current["install_id"] == inst and current["seq_to"] + 1 == seq:
            current["seq_to"] = seq
            current["count"] += 1
            current["last_hash"] = hash_
            current["first_started_at"] = min(current["first_started_at"], started)
            current["last_started_at"] = max(current["last_started_at"], started)
            continue
        current = {"install_id": inst, "seq_from": seq, "seq_to": seq, "count": 1, "prev_hash": prev_hash,
                   "last_hash": hash_, "first_started_at": started, "last_started_at": started}
        out.append(current)
    return out


def delete_where(conn, where: str, params, reason: str) -> tuple[int, int]:
    """Delete the matching records and leave their tombstones, in one transaction.
    Returns (records deleted, tombstones written)."""
    from . import store

    if not where:
        raise BadUsage("refusing to delete without a filter")
    conn.execute("BEGIN IMMEDIATE")
    try:
        p = plan(conn, where, params)
        if p["count"]:
            me = store.install_id(conn)
            deletion = _uuid7()
            now = rfc3339(time.time())
            conn.executemany(
                "INSERT INTO tombstones (id, deletion, created_at, deleted_by, reason, install_id, seq_from, seq_to,"
                " count, prev_hash, last_hash, first_started_at, last_started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(_uuid7(), deletion, now, me, reason, r["install_id"], r["seq_from"], r["seq_to"], r["count"],
                  r["prev_hash"], r["last_hash"], r["first_started_at"], r["last_started_at"]) for r in p["ranges"]],
            )
            deleted = conn.execute(f"DELETE FROM records WHERE {where}", list(params)).rowcount
        else:
            deleted = 0
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted, len(p["ranges"]) if p["count"] else 0


def _confirm(p: dict, yes: bool, what: str) -> bool:
    if not p["count"]:
        click.echo(f"nothing to delete ({what})", err=True)
        return False
    span = f"{p['first'][:10]} … {p['last'][:10]}" if p["first"] else ""
    summary = f"{p['count']} record(s), {span}, {p['contexts']} context(s)"
    if yes:
        return True
    try:
        return click.confirm(f"Delete {summary}? A tombstone per seq range stays for the collector", default=False,
                             err=True)
    except click.Abort:
        click.echo("", err=True)
        return False


def _run(where: str, params, reason: str, yes: bool, dry_run: bool, what: str) -> None:
    from .cli import Failure, open_store

    conn = open_store()
    p = plan(conn, where, params)
    if dry_run:
        click.echo(f"would delete {p['count']} record(s) in {len(p['ranges'])} seq range(s)")
        for r in p["ranges"]:
            seqs = f"seq {r['seq_from']}–{r['seq_to']}" if r["seq_from"] is not None else "no seq"
            click.echo(f"  {r['install_id']}  {seqs}  {r['count']} record(s)  "
                       f"{r['first_started_at'][:10]} … {r['last_started_at'][:10]}")
        return
    if not _confirm(p, yes, what):
        if p["count"]:
            raise Failure("aborted: nothing deleted")
        return
    try:
        deleted, stones = delete_where(conn, where, params, reason)
    except Exception as exc:
        from . import store

        if isinstance(exc, store.StoreError):
            raise Failure(str(exc)) from None
        raise
    click.echo(f"deleted {deleted} record(s); {stones} tombstone(s) left for the collector", err=True)


@click.command(cls=Command)
@click.argument("ids", nargs=-1, metavar="[ID]…")
@filter_options
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted.")
def delete(ids: tuple[str, ...], filters, yes: bool, dry_run: bool) -> None:
    """Delete records by ID (or unique prefix, or the table's short ID) or by filter.
    Asks first; each deleted seq range leaves a tombstone for the collector."""
    where, params = filters.where()
    if not ids and not where:
        raise BadUsage("delete: give record IDs or filters (`prune --older-than D` deletes by age)")
    if ids:
        from .cli import open_store
        from .history import find_record

        conn = open_store()
        found = []
        for ident in ids:
            try:
                found.append(find_record(conn, ident)["id"])
            except LookupError as exc:
                from .cli import Failure

                raise Failure(str(exc)) from None
        clause = f"id IN ({', '.join('?' * len(found))})"
        where = f"{clause} AND {where}" if where else clause
        params = [*found, *params]
    _run(where, params, "delete", yes, dry_run, "no record matches")


def retention_settings(environ=None) -> dict:
    """{'max_age': seconds or None, 'max_records': int or None} from the settings
    (retention.max_age / retention.max_records; KUBECTL_RECORD_RETENTION overrides the age)."""
    from . import settings

    environ = os.environ if environ is None else environ
    values = settings.load(environ=environ)
    age = str(values.get("retention.max_age") or "").strip()
    count = values.get("retention.max_records")
    return {"max_age": parse_duration(age) if age else None,
            "max_records": count if isinstance(count, int) and count > 0 else None}


def auto_where(conn, settings: dict, now: float | None = None) -> tuple[str, list]:
    now = time.time() if now is None else now
    clauses, params = [], []
    if settings.get("max_age"):
        clauses.append("started_at < ?")
        params.append(rfc3339(now - settings["max_age"]))
    if settings.get("max_records"):
        row = conn.execute("SELECT started_at FROM records ORDER BY started_at DESC LIMIT 1 OFFSET ?",
                           (settings["max_records"] - 1,)).fetchone()
        if row:
            clauses.append("started_at < ?")
            params.append(row[0])
    return " OR ".join(clauses), params


def maybe_auto_prune(conn, environ=None, now: float | None = None) -> int:
    """Apply the configured retention at most once a day (a meta timestamp says when it last
    ran). Returns how many records went. Cheap when nothing is configured or it ran lately."""
    now = time.time() if now is None else now
    settings = retention_settings(environ)
    if not settings["max_age"] and not settings["max_records"]:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'retention_last_run'").fetchone()
    if row and now - float(row[0]) < AUTO_INTERVAL_S:
        return 0
    where, params = auto_where(conn, settings, now)
    deleted = delete_where(conn, where, params, "retention")[0] if where else 0
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('retention_last_run', ?)", (str(now),))
    return deleted


@click.command(cls=Command)
@click.option("--older-than", metavar="AGE", help="Delete records started before this: 90d, 1y, or a date.")
@click.option("--auto", "auto", is_flag=True, help="Apply the configured retention (retention.max_age / max_records).")
@filter_options
@click.option("-y", "--yes", is_flag=True, help="Do not ask.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted.")
def prune(older_than: str | None, auto: bool, filters, yes: bool, dry_run: bool) -> None:
    """Delete old records: `prune --older-than 90d` (with any `history` filter to narrow it),
    or `prune --auto` for the configured retention. Asks first; leaves tombstones."""
    now = time.time()
    if auto:
        if older_than:
            raise BadUsage("--auto and --older-than exclude each other")
        from .cli import open_store

        settings = retention_settings()
        if not settings["max_age"] and not settings["max_records"]:
            raise BadUsage("no retention configured: set retention.max_age (e.g. 365d) in the config file"
                           " or KUBECTL_RECORD_RETENTION")
        where, params = auto_where(open_store(), settings, now)
        if not where:
            click.echo("nothing to delete", err=True)
            return
        extra, extra_params = filters.where(now)
        if extra:
            where, params = f"({where}) AND {extra}", [*params, *extra_params]
        _run(where, params, "retention", yes, dry_run, "retention")
        return
    if not older_than:
        raise BadUsage("prune: give --older-than AGE (e.g. 90d) or --auto")
    try:
        ago = parse_duration(older_than)
        cutoff = now - ago if ago is not None else parse_time(older_than, now)
    except ValueError as exc:
        raise BadUsage(f"invalid value for --older-than: {exc}") from None
    where, params = filters.where(now)
    clause = "started_at < ?"
    where = f"{clause} AND {where}" if where else clause
    _run(where, [rfc3339(cutoff), *params], f"prune --older-than {older_than}", yes, dry_run,
         f"no record is older than {older_than}")
