"""What `history` and `show` print about the server's side of a record.

    outcome(record) -> str          short text for a table column: "403 forbid", "201", "pending"
    show_lines(conn, record) -> list[str]   the audit part of `show`
"""

from __future__ import annotations

import json
import sqlite3

from ..record import rfc3339

_WRITES = ("create", "update", "patch", "delete", "deletecollection")
_NOTE = {"ambiguous": " ?", "partial": " partial"}
_PLAIN = {"pending": "pending", "missing": "missing", "none": "", "no_source": "no source"}


def _audit(record: dict) -> dict | None:
    a = record.get("audit")
    if isinstance(a, str):
        try:
            a = json.loads(a)
        except ValueError:
            return None
    return a if isinstance(a, dict) else None


def main_event(events: list[dict]) -> dict | None:
    """The event that tells the outcome: a refused one first, then a failed write, then any
    failure, then the last write, then the last resource call."""
    if not events:
        return None
    res = [e for e in events if e.get("resource") and not str(e.get("resource")).startswith("/")] or events
    for pred in (lambda e: e.get("decision") == "forbid" or e.get("code") in (401, 403),
                 lambda e: e.get("verb") in _WRITES and (e.get("code") or 0) >= 400,
                 lambda e: (e.get("code") or 0) >= 400 and not (e.get("verb") == "get" and e.get("code") == 404
                                                               and any(x.get("verb") == "delete" for x in res)),
                 lambda e: e.get("verb") in _WRITES):
        hits = [e for e in res if pred(e)]
        if hits:
            return hits[-1] if pred is not None else hits[0]
    return res[-1]


def outcome(record: dict) -> str:
    """Short text for a table column, e.g. "403 forbid" beside exit 1; "" when nothing applies."""
    a = _audit(record)
    if not a:
        return ""
    status = a.get("status")
    if status in _PLAIN:
        return _PLAIN[status]
    ev = main_event(a.get("events") or [])
    if not ev:
        return status or ""
    text = str(ev.get("code") or "?")
    if ev.get("decision") == "forbid":
        text += " forbid"
    return text + _NOTE.get(status, "")


def show_lines(conn: sqlite3.Connection, record: dict) -> list[str]:
    """Lines for `show`: the status, then one line per event (time as the server logged it)."""
    a = _audit(record)
    if not a:
        return ["audit:     (no audit source imported for this cluster)"]
    status = a.get("status")
    events = a.get("events") or []
    head = f"audit:     {status}"
    if record.get("identity"):
        head += f" (server user {record['identity']})"
    skew = None
    try:
        from .correlate import normalize_server

        row = conn.execute("SELECT skew FROM audit_clusters WHERE server = ?",
                           (normalize_server(record.get("server")),)).fetchone()
        skew = row[0] if row else None
    except sqlite3.Error:
        pass
    if skew:
        head += f", server clock {skew:+.3f} s"
    lines = [head]
    if status == "ambiguous":
        lines.append("           other runs could have sent some of these calls: listed, the likeliest by each")
        lines.append("           command's pace" + (f"; {len(a['possible'])} more it may have sent (see -o json)"
                                                   if a.get("possible") else ""))
    times = {}
    ids = [e.get("audit_id") for e in events]
    try:
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for aid, ts, ua in conn.execute(
                    f"SELECT audit_id, ts, ua FROM audit_events WHERE audit_id IN ({','.join('?' * len(chunk))})", chunk):
                times[aid] = (ts, ua)
    except sqlite3.Error:
        pass
    for e in events:
        ts = times.get(e.get("audit_id"), (None, None))[0]
        where = "/".join(x for x in (e.get("namespace"), e.get("name")) if x)
        parts = [rfc3339(ts) if ts else "-", e.get("verb") or "-", e.get("resource") or "-", where or "-",
                 str(e.get("code") or "-"), e.get("decision") or "-", e.get("audit_id") or ""]
        lines.append("           " + "  ".join(parts))
    if a.get("events_total"):
        lines.append(f"           … {a['events_total'] - len(events)} more")
    return lines
