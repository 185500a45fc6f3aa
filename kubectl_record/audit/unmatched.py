"""`audit unmatched`: what one side saw and the other did not.

* kubectl activity on the server with no local record: unlinked kubectl events, grouped into
  bursts per (user, userAgent) separated by more than `gap` seconds. Events of the recorder's own
  SelfSubjectReview (`kubectl+kubectl-record-whoami`) and the dispatcher's `GET /version`
  (`kubectl-dispatcher/…`) are never rows, so never listed; generic events (discovery) that fit
  several recorded runs are linked to none but are not unmatched either (link = 'shared').
* local records that change the cluster with no audit evidence (status `missing`).
* other clients (Dashboard, Lens, controllers…) by userAgent and user.
"""

from __future__ import annotations

import sqlite3

from ..record import rfc3339
from .importer import DISPATCHER_PRODUCT, MARKER_PREFIX, WHOAMI_PRODUCT, ua_product


def unmatched(conn: sqlite3.Connection, server: str | None, gap: float = 2.0) -> dict:
    where, params = ("server = ?", [server]) if server else ("1", [])
    # ---- server side, no record
    groups: list[dict] = []
    open_by_key: dict = {}
    for aid, srv, ts, verb, user, ua, res, sub, ns, name, code in conn.execute(
            f"SELECT audit_id, server, ts, verb, user, ua, resource, subresource, namespace, name, code FROM audit_events"
            f" WHERE {where} AND record_id IS NULL AND link IS NULL ORDER BY server, ts", params):
        prod = ua_product(ua or "")
        key = (srv, user, ua)
        g = open_by_key.get(key)
        if g is None or ts - g["_last"] > gap:
            g = {"server": srv, "user": user, "user_agent": ua or None, "first": ts, "_last": ts, "events": 0,
                 "calls": {}, "codes": {}, "marker": prod[len(MARKER_PREFIX):] if prod.startswith(MARKER_PREFIX) else None}
            groups.append(g)
            open_by_key[key] = g
        g["_last"] = ts
        g["events"] += 1
        call = f"{verb} {res + ('/' + sub if sub else '') if res else '(non-resource)'}{' -n ' + ns if ns else ''}{' ' + name if name else ''}"
        g["calls"][call] = g["calls"].get(call, 0) + 1
        if code:
            g["codes"][str(code)] = g["codes"].get(str(code), 0) + 1
    server_side = []
    for g in groups:
        only_generic = all(c.split(" ", 2)[1] == "(non-resource)" for c in g["calls"])
        if only_generic:
            continue  # discovery alone is no activity worth a line
        server_side.append({"server": g["server"], "first": rfc3339(g["first"]), "last": rfc3339(g["_last"]),
                            "user": g["user"], "user_agent": g["user_agent"], "marker_record": g["marker"],
                            "events": g["events"], "codes": g["codes"],
                            "calls": sorted(g["calls"], key=lambda c: -g["calls"][c])[:8]})
    # ---- local side, no evidence
    local = []
    lw, lp = ("rtrim(server, '/') = ?", [server]) if server else ("1", [])
    for rid, started, command, srv, status in conn.execute(
            f"SELECT id, started_at, command, server, json_extract(audit, '$.status') FROM records WHERE {lw} AND"
            " mutating = 1 AND local_only = 0 AND json_extract(audit, '$.status') = 'missing' ORDER BY started_at",
            lp):
        local.append({"id": rid, "started_at": started, "command": command, "server": srv, "status": status})
    pending = conn.execute(f"SELECT count(*) FROM records WHERE {lw} AND json_extract(audit, '$.status') = 'pending'",
                           lp).fetchone()[0]
    # ---- other clients
    clients, ignored = [], {}
    for srv, ua, user, count, first, last in conn.execute(
            f"SELECT server, ua, user, count, first_ts, last_ts FROM audit_clients WHERE {where}"
            " ORDER BY count DESC", params):
        prod = ua_product(ua)
        if prod in (WHOAMI_PRODUCT, DISPATCHER_PRODUCT):
            ignored[prod] = ignored.get(prod, 0) + count
            continue
        clients.append({"server": srv, "user_agent": ua or None, "user": user, "requests": count,
                        "first": rfc3339(first), "last": rfc3339(last)})
    return {"server_side": server_side, "local_side": local, "pending": pending, "other_clients": clients,
            "ignored": ignored}


def render(report: dict) -> list[str]:
    out = []
    ss = report["server_side"]
    out.append(f"kubectl activity on the server with no local record: {len(ss)}")
    for g in ss:
        who = f"{g['user'] or '?'} via {g['user_agent'] or '(no user agent)'}"
        if g.get("marker_record"):
            who += f" (marked run {g['marker_record']}, not in this store)"
        codes = ",".join(f"{k}x{v}" for k, v in sorted(g["codes"].items()))
        out.append(f"  {g['first']}  {who}: {g['events']} request(s) [{codes}]")
        for c in g["calls"]:
            out.append(f"      {c}")
    ls = report["local_side"]
    out.append(f"changing local records with no audit evidence: {len(ls)}")
    for r in ls:
        out.append(f"  {r['started_at']}  {r['id'][-8:]}  {r['command']}")
    if report["pending"]:
        out.append(f"  ({report['pending']} record(s) still pending: the source has not caught up)")
    oc = report["other_clients"]
    out.append(f"other clients: {len(oc)}")
    for c in oc:
        out.append(f"  {c['requests']:>8}  {c['user'] or '?'}  {c['user_agent'] or '(no user agent)'}"
                   f"  ({c['first']} .. {c['last']})")
    for prod, n in sorted(report["ignored"].items()):
        what = "the recorder's own SelfSubjectReview" if prod == WHOAMI_PRODUCT else "the kubectl dispatcher's GET /version"
        out.append(f"ignored: {n} request(s) by {prod} ({what})")
    return out
