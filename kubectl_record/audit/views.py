"""What `history` and `show` print about the server's side of a record.

    outcome(record) -> str   short text for a table column: "403 forbid", "201", "pending"

(`show` lists the events, and an ambiguous run's possible ones, itself: history.py.)
"""

from __future__ import annotations

import json


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
