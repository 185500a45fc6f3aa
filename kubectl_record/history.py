"""`kubectl record history` and `show`: lookups over the local store.

Kept light on purpose (the lookup budget includes process start): click, sqlite3 and json only;
sqlite_utils is never imported here and PyYAML only for `-o yaml`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import click

from . import store
from .filters import ORDER_NEWEST, ORDER_OLDEST, BadUsage, Command, filter_options
from .output import Column, output_options, streams_everything, use_color, write_records, write_table

TABLE_LIMIT = 50
SHORT_ID = 8


def iter_matching(conn, where: str, params, *, limit: int | None = None, reverse: bool = False,
                  unique: bool = False, columns: tuple[str, ...] = store.FIELDS) -> Iterator[dict]:
    """Matching records newest first (oldest first with reverse: the newest LIMIT, in time order).

    unique keeps the newest run of each (context, namespace, command) and streams: a lookup
    with a limit stops as soon as it has LIMIT distinct commands.
    """
    sql = f"SELECT {', '.join(columns)} FROM records"
    if where:
        sql += f" WHERE {where}"
    if reverse and limit is None and not unique:
        sql += f" ORDER BY {ORDER_OLDEST}"
        yield from (store.from_row(r, columns) for r in conn.execute(sql, tuple(params)))
        return
    sql += f" ORDER BY {ORDER_NEWEST}"
    if limit is not None and not unique:
        sql += f" LIMIT {int(limit)}"
    rows = (store.from_row(r, columns) for r in conn.execute(sql, tuple(params)))
    if unique:
        rows = _unique(rows, limit)
    if reverse:
        rows = reversed(list(rows))
    yield from rows


def _unique(rows: Iterator[dict], limit: int | None) -> Iterator[dict]:
    seen = set()
    for record in rows:
        key = (record.get("context"), record.get("namespace"), record.get("command"))
        if key in seen:
            continue
        seen.add(key)
        yield record
        if limit is not None and len(seen) >= limit:
            return


# --- the table --------------------------------------------------------------------------------


def _exit_text(r: dict) -> str:
    if r.get("state") == "unfinished":
        return "?"
    return "-" if r.get("exit_code") is None else str(r["exit_code"])


def _exit_style(r: dict, text: str) -> str:
    code = r.get("exit_code")
    if r.get("state") == "unfinished":
        return click.style(text, fg="yellow")
    if code:
        return click.style(text, fg="red", bold=True)
    return text


def _command_style(r: dict, text: str) -> str:
    return click.style(text, fg="yellow") if r.get("mutating") and not r.get("dry_run") else text


def _namespace(r: dict) -> str:
    if r.get("all_namespaces"):
        return "*"
    return r.get("namespace") or "-"


def table_columns(wide: bool, now: float) -> list[Column]:
    from .audit.views import outcome
    from .timefmt import age, duration

    cols = [
        Column("ID", (lambda r: r["id"]) if wide else (lambda r: r["id"][-SHORT_ID:])),
        Column("AGE", lambda r: age(r["started_at"], now)),
        Column("CONTEXT", lambda r: r.get("context") or "-"),
        Column("NAMESPACE", _namespace),
        Column("EXIT", _exit_text, _exit_style),
        # The API server's answer beside the client's exit status ("403 forbid" beside 1).
        Column("SERVER", lambda r: outcome(r) or "-"),
        Column("DURATION", lambda r: duration(r.get("duration_ms"))),
    ]
    if wide:
        cols[1:1] = [Column("STARTED", lambda r: _local(r["started_at"]))]
        cols += [
            Column("USER", lambda r: r.get("user") or "-"),
            Column("IDENTITY", lambda r: r.get("identity") or "-"),
            Column("HOST", lambda r: r.get("host") or "-"),
            Column("SOURCE", lambda r: r.get("source") or "-"),
            Column("AUDIT", lambda r: (r.get("audit") or {}).get("status") or "-"),
        ]
    cols.append(Column("COMMAND", lambda r: r.get("command") or "", _command_style))
    return cols


def _local(started_at: str) -> str:
    from datetime import datetime

    from .timefmt import parse_rfc3339

    return datetime.fromtimestamp(parse_rfc3339(started_at)).strftime("%Y-%m-%d %H:%M:%S")


def print_records(records, fmt: str, no_headers: bool) -> int:
    if fmt in ("table", "wide"):
        count = write_table(records, table_columns(fmt == "wide", time.time()), no_headers=no_headers,
                            color=use_color())
        if not count:
            click.echo("No records found.", err=True)  # like kubectl: stdout stays empty, exit 0
        return count
    return write_records(records, fmt, fields=store.FIELDS, no_headers=no_headers)


def resolve_limit(limit: int | None, fmt: str) -> int | None:
    """--limit N; 0 means no limit; tables default to 50, machine formats to everything."""
    if limit == 0:
        return None
    if limit is None and not streams_everything(fmt):
        return TABLE_LIMIT
    return limit


@click.command(cls=Command)
@filter_options
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help="At most N records (table default: 50; other formats: all; 0: no limit).")
@click.option("-r", "--reverse", is_flag=True, help="Oldest first (still the newest N when limited).")
@click.option("-u", "--unique", is_flag=True, help="Collapse repeats: each command once per context and namespace, at its newest run.")
@click.option("--team", is_flag=True, help="Ask the team collector (what your token may read) instead of this machine.")
@output_options
def history(filters, limit: int | None, reverse: bool, unique: bool, team: bool, output: str,
            no_headers: bool) -> None:
    """Recorded kubectl invocations, newest first, across every context and namespace.

    \b
    kubectl record history --context 'prod-*' --verb delete --since 30d
    kubectl record history -n payments --failed --resource deploy
    kubectl record history --name web-42 -o wide
    kubectl record history -q 'kube-system' --unique
    kubectl record history --since yesterday -o jsonl
    """
    filters.where()  # bad values fail before the store is opened
    limit = resolve_limit(limit, output)
    if team:
        print_records(_team_records(filters, limit, reverse, unique), output, no_headers)
        return
    conn = _open()
    where, params = filters.where(conn=conn, limited=limit is not None)
    records = iter_matching(conn, where, params, limit=limit, reverse=reverse, unique=unique)
    print_records(records, output, no_headers)


def _team_records(filters, limit: int | None, reverse: bool, unique: bool):
    """The same lookup against the collector (keyset pages underneath)."""
    from .cli import Failure
    from .collector.client import CollectorError
    from .sync import SyncError, team_filters, team_query

    if reverse or unique:
        raise BadUsage("--reverse and --unique are not available with --team")
    try:
        # Fetch the first page now so that an unreachable collector or a refused token is one
        # clear line before any output, not a traceback in the middle of it.
        records = team_query(team_filters(filters), limit)
        first = next(records, None)
    except (CollectorError, SyncError) as exc:
        raise Failure(f"team history: {exc}") from None
    if first is not None:
        yield first
        try:
            yield from records
        except CollectorError as exc:
            raise Failure(f"team history: {exc}") from None


def _open():
    from .cli import open_store

    return open_store()


# --- show -------------------------------------------------------------------------------------


def find_record(conn, ident: str) -> dict:
    """The record whose id is IDENT, starts with it, or ends with it (the table's short ID).
    Raises BadUsage when IDENT fits several records, LookupError when none."""
    ident = ident.strip()
    if not ident:
        raise BadUsage("empty record ID")
    cols = ", ".join(store.FIELDS)
    row = conn.execute(f"SELECT {cols} FROM records WHERE id = ?", (ident,)).fetchone()
    if row:
        return store.from_row(row)
    escaped = _glob_escape(ident)
    for sql, param in ((f"SELECT {cols} FROM records WHERE id GLOB ? LIMIT 5", escaped + "*"),
                       (f"SELECT {cols} FROM records WHERE substr(id, -{SHORT_ID}) = ? LIMIT 5", ident)
                       if len(ident) == SHORT_ID else
                       (f"SELECT {cols} FROM records WHERE id GLOB ? LIMIT 5", "*" + escaped)):
        rows = conn.execute(sql, (param,)).fetchall()
        if len(rows) == 1:
            return store.from_row(rows[0])
        if len(rows) > 1:
            ids = ", ".join(r[0] for r in rows[:3])
            raise BadUsage(f"record ID {ident!r} is ambiguous: it fits {ids}{' …' if len(rows) > 3 else ''}")
    raise LookupError(f"no record with ID {ident!r}")


def _add_audit_events(conn, record: dict) -> None:
    """Audit events correlated to the record (table audit_events, once the audit issue's
    migration exists) that the record's own `audit` field does not list yet."""
    import sqlite3

    try:
        rows = conn.execute(
            "SELECT audit_id, verb, resource, namespace, name, code, decision FROM audit_events"
            " WHERE record_id = ? ORDER BY ts", (record["id"],)).fetchall()
    except sqlite3.Error:
        return
    if not rows:
        return
    audit = dict(record.get("audit") or {})
    events = list(audit.get("events") or [])
    known = {e.get("audit_id") for e in events}
    for audit_id, verb, resource, namespace, name, code, decision in rows:
        if audit_id not in known:
            events.append({"audit_id": audit_id, "verb": verb, "resource": resource, "namespace": namespace,
                           "name": name, "code": code, "decision": decision})
    audit["events"] = events
    audit.setdefault("status", None)
    record["audit"] = audit


def _glob_escape(text: str) -> str:
    import re

    return re.sub(r"([*?\[])", r"[\1]", text)


_SHOW_ORDER = (
    ("ID", "id"), ("Command", "command"), ("State", "state"), ("Exit code", "exit_code"),
    ("Started", "started_at"), ("Ended", "ended_at"), ("Duration", "duration_ms"), ("Source", "source"),
    ("Context", "context"), ("Cluster", "cluster"), ("Server", "server"), ("User", "user"),
    ("Identity", "identity"), ("Namespace", "namespace"), ("All namespaces", "all_namespaces"),
    ("Verb", "verb"), ("Resource", "resource"), ("Names", "names"), ("Files", "files"),
    ("Impersonate", "impersonate"), ("Mutating", "mutating"), ("Dry run", "dry_run"), ("Local only", "local_only"),
    ("Redacted", "redacted"), ("Unexpanded", "unexpanded"), ("Kubeconfig", "kubeconfig"), ("Argv", "argv"),
    ("Working dir", "cwd"), ("Host", "host"), ("OS user", "os_user"), ("Sudo user", "sudo_user"),
    ("SSH client", "ssh_client"), ("Session", "session"), ("Parent", "parent"), ("CI", "ci"),
    ("kubectl", "kubectl_version"), ("Installation", "install_id"), ("Seq", "seq"),
    ("Prev hash", "prev_hash"), ("Hash", "hash"),
)


def describe(record: dict, out=None) -> None:
    """kubectl describe-style: `Key:  value`, then the audit events as a table."""
    import sys

    from .output import flat

    out = out or sys.stdout
    width = max(len(label) for label, _ in _SHOW_ORDER) + 2
    now = time.time()
    for label, key in _SHOW_ORDER:
        value = record.get(key)
        if key == "started_at" and value:
            from .timefmt import age

            text = f"{value} ({_local(value)} local, {age(value, now)} ago)"
        elif key == "duration_ms" and value is not None:
            from .timefmt import duration

            text = duration(value)
        elif value is None or value == [] or value == {}:
            text = "<none>"
        elif isinstance(value, list) and all(isinstance(v, str) for v in value) and key != "argv":
            text = ", ".join(value)
        else:
            text = flat(value)
        out.write(f"{label + ':':<{width}}{text}\n")
    extra = sorted(k for k in record if k not in {key for _, key in _SHOW_ORDER} and k != "audit")
    for key in extra:
        out.write(f"{key + ':':<{width}}{flat(record[key])}\n")
    audit = record.get("audit") or {}
    from .audit.views import outcome

    out.write(f"{'Audit:':<{width}}{audit.get('status') or '<none>'}\n")
    out.write(f"{'Server:':<{width}}{outcome(record) or '<none>'}\n")
    # an ambiguous run's likeliest calls, then the others it may have sent (not linked)
    for title, events in (("Audit events:", audit.get("events")),
                          ("Possible audit events (other runs likelier):", audit.get("possible"))):
        if not events:
            continue
        out.write(title + "\n")
        cols = ("audit_id", "verb", "resource", "namespace", "name", "code", "decision")
        rows = [[c.upper().replace("_", " ") for c in cols]] + [[flat(e.get(c)) or "-" for c in cols] for e in events]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        for r in rows:
            out.write("  " + "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() + "\n")
    out.flush()


@click.command(cls=Command)
@click.argument("ident", metavar="ID")
@click.option("-o", "--output", type=click.Choice(["describe", "json", "jsonl", "yaml"]), default="describe",
              show_default=True)
def show(ident: str, output: str) -> None:
    """Everything known about one record: ID, a unique prefix, or the short ID the table shows."""
    from .cli import Failure

    conn = _open()
    try:
        record = find_record(conn, ident)
    except LookupError as exc:
        raise Failure(str(exc)) from None
    _add_audit_events(conn, record)
    if output == "describe":
        describe(record)
    elif output == "json":
        import json
        import sys

        sys.stdout.write(json.dumps(record, ensure_ascii=False, indent=2) + "\n")
    else:
        write_records([record], output)
