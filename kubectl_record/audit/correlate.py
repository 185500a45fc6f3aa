"""Joining records to the audit events they caused.

Per cluster (server URL), over slices of time:

1. Exact: an event whose user agent starts with ``kubectl+r.<record id>/`` belongs to that
   record (the exact mode's argv[0] marker).
2. Skew: the server's clock vs. the recorder's. Each run within ±MAX_SKEW that could have sent
   an event says "skew ∈ [event − end, event − start]" (an exact link: its own run only); the
   skews under which the most events have such a run (a sweep, less SKEW_SLACK) are a range:
   the estimate is its middle, and half its width widens every run. It is kept per cluster
   (`audit_clusters`) and re-estimated on each import.
3. Candidates: for every unmarked kubectl event, the records of the same identity (from
   SelfSubjectReview; unknown identity fits any user) and impersonation whose run, shifted by
   the skew and widened by a margin, contains the event, scored by the expected-call model
   (expect.py): 3 object name, 2 resource, 1 generic (discovery); a patch whose body sets
   labels, annotations or replicas other than the command line's is not the run's.
4. Assignment: each event goes to at most one record. Only the best-scoring candidates stay; a
   single one gets the event. The events several runs could take are grouped by the runs they
   share, and each group is solved whole (`_solve`): of the ways to hand them out that place the
   most events while every run's calls follow its command's plan (expect.py: which calls, how
   many, in which order) under one skew for all, then leave the fewest successful runs short of
   their calls, an event every way gives to the same run is that run's; one that goes to
   different runs in different ways is `ambiguous`: the audit log cannot tell identical calls
   apart (the same GET of a pod from `describe` and `logs` running at once). It is linked to
   the run(s) of the likeliest way by the pace their commands' calls come at in runs that were
   alone (`learn_pace`), and kept as `possible` for the other runs; every run involved stays
   `ambiguous` (the pace never decides alone). A group too large to solve is shared with every
   candidate. The start-up and exit times learned from the runs settle only generic
   events: under a changing load a run starts up faster or slower than any seen. A generic
   event that fits several different runs is left unlinked (it says nothing).
5. Status per record: exact / strong / partial / ambiguous / missing / none / pending (the
   source's watermark has not passed the run's end plus a grace period).
"""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
import statistics
import time
from dataclasses import dataclass, field

from . import expect as _expect
from .formats import loads, parse_ts
from .identity import entry_key
from .importer import MARKER_PREFIX, ua_product

MAX_SKEW = 10.0      # seconds of clock difference considered
MARGIN = 0.005       # seconds around a run beyond the skew estimate's own uncertainty (ms rounding)
UNKNOWN_MARGIN = 1.0  # ... when nothing could be estimated
GRACE = 5.0          # seconds the source must be past a run's end before "missing"
SLICE = 600.0        # seconds of record start time handled at once (bounded memory)
MAX_EVENTS_LISTED = 500
SKEW_SLACK = 1      # events without a fitting run a skew may leave and still be possible

_REC_COLS = ("id", "started_at", "ended_at", "verb", "resource", "names", "namespace", "all_namespaces",
             "context", "user", "argv", "local_only", "exit_code", "identity", "impersonate", "state")
_EV_COLS = ("audit_id", "ts", "verb", "user", "impersonated", "ua", "resource", "subresource", "namespace",
            "name", "api_group", "code", "decision", "path", "rank", "manager", "response_kind", "sets")


@dataclass
class Rec:
    id: str
    start: float
    end: float
    data: dict
    exp: _expect.Expect
    identity: str | None
    imp_as: str | None
    marked: bool = False
    exact: list = field(default_factory=list)
    unique: list = field(default_factory=list)     # (ev, score)
    shared: list = field(default_factory=list)     # (ev, score)
    possible: list = field(default_factory=list)   # events it may have sent that other runs' pace fits better
    gets: dict = field(default_factory=dict)       # name -> unique GETs of it taken


def normalize_server(url: str | None) -> str | None:
    if not url:
        return url
    return url.rstrip("/")


def _load_records(conn: sqlite3.Connection, server: str, lo: str, hi: str) -> list[dict]:
    sql = (f"SELECT {', '.join(_REC_COLS)} FROM records WHERE server IN (?, ?) AND started_at >= ? AND started_at < ?"
           " ORDER BY started_at")
    out = []
    for row in conn.execute(sql, (server, server + "/", lo, hi)):
        d = dict(zip(_REC_COLS, row))
        for k in ("names", "argv", "impersonate"):
            if d[k] is not None:
                d[k] = loads(d[k])
        d["local_only"] = bool(d["local_only"])
        d["all_namespaces"] = bool(d["all_namespaces"])
        out.append(d)
    return out


def _identity_map(conn: sqlite3.Connection, server: str) -> dict:
    """entry_key(context, user) -> identity, newest check last."""
    out = {}
    for user_entry, identity in conn.execute(
            "SELECT user_entry, identity FROM audit_identity WHERE server = ? AND identity IS NOT NULL"
            " ORDER BY checked_at", (server,)):
        out[user_entry] = identity
    return out


def _make_rec(d: dict, ids: dict, marked: set, now: float) -> Rec:
    start = parse_ts(d["started_at"]) or 0.0
    end = parse_ts(d["ended_at"]) if d["ended_at"] else None
    if end is None:
        end = min(now, start + 3600.0)
    identity = d.get("identity") or ids.get(entry_key(d.get("context"), d.get("user")))
    imp = d.get("impersonate") or {}
    return Rec(d["id"], start, end, d, _expect.expect(d), identity, imp.get("as"), d["id"] in marked)


# Events the skew is estimated from, at most (evenly spaced): thousands of fits pin it to the
# millisecond; more only cost time (a 200k-event import spent a fifth of its correlation here).
SKEW_SAMPLE = 4_000


def estimate_skew(recs: list[Rec], evs: list[tuple], max_skew: float = MAX_SKEW) -> tuple[float, float, float]:
    """(skew, support, width): each run that could have sent an event says skew ∈ [event − end,
    event − start] (an exact link: its own run only); the skews under which the most events
    (support) have a run, less SKEW_SLACK, are the range the estimate is the middle of (its
    width is the uncertainty)."""
    spans: list[list[tuple[float, float]]] = []  # per event, the skews under which a run fits it
    if len(evs) > SKEW_SAMPLE:  # a sample says as much, and costs a fraction
        step = len(evs) // SKEW_SAMPLE + 1
        evs = evs[::step]
    by_id = {r.id: r for r in recs}
    srt = sorted(recs, key=lambda r: r.start)
    sstarts = [r.start for r in srt]
    longest = max((r.end - r.start for r in srt), default=0.0)
    for ev in evs:
        ts, ua = ev[1], ev[5]
        prod = ua_product(ua)
        if prod.startswith(MARKER_PREFIX):
            r = by_id.get(prod[len(MARKER_PREFIX):])
            if r is not None:
                spans.append([(ts - r.end, ts - r.start)])
            continue
        # A generic event (discovery) fits any run, which still says when some run was going
        # (before the first run, after the last): where runs are dense it takes many to say it.
        least, most = (2, 50) if ev[6] else (1, 500)
        lo = bisect.bisect_left(sstarts, ts - max_skew - longest)
        hi = bisect.bisect_right(sstarts, ts + max_skew)
        fits = []
        for r in srt[lo:hi]:
            if r.end + max_skew < ts or r.marked or not _user_ok(r, ev):
                continue
            if _score(r, ev) >= least:
                fits.append((ts - r.end, ts - r.start))
                if len(fits) > most:
                    break
        if fits and len(fits) <= most:  # (so many fit it anywhere: it says nothing)
            spans.append(fits)
    if not spans:
        return 0.0, 0, 0.0
    points = []
    for fits in spans:  # each event counts once where any of its runs fits it
        fits.sort()
        a, b = fits[0]
        for c, d in fits[1:] + [(float("inf"), 0.0)]:
            if c > b + 0.004:
                points.append((a - 0.002, 1))
                points.append((b + 0.002, -1))
                a, b = c, d
            else:
                b = max(b, d)
    points.sort()
    cover, cur = [], 0  # cover[i]: the events a run fits under the skews [points[i], points[i + 1]]
    for x, d in points:
        cur += d
        cover.append(cur)
    best = max(cover)
    i = j = cover.index(best)
    # Runs whose first call comes long after their start (a loaded machine) fit their events
    # under a range of skews as wide as the quickest start-up, and which point of it most
    # stray fits also cover is noise: the skew is the whole range. (The slack: an event of a
    # kubectl the recorder did not see, which fits a run only under a wrong skew.)
    while i > 0 and cover[i - 1] >= best - SKEW_SLACK:
        i -= 1
    while j + 1 < len(cover) - 1 and cover[j + 1] >= best - SKEW_SLACK:
        j += 1
    lo, hi = points[i][0], points[j + 1][0]
    return (lo + hi) / 2, best, hi - lo


def _score(r: Rec, ev: tuple) -> int:
    """expect.score of an _EV_COLS row for R's command."""
    return _expect.score(r.exp, ev[6], ev[7], ev[2], ev[8], ev[9], ev[15] or "", ev[13] or "", ev[16] or "",
                         ev[17] or "")


def _user_ok(r: Rec, ev: tuple) -> bool:
    user, imp = ev[3], ev[4]
    if r.identity and user and user != r.identity:
        return False
    if (r.imp_as or "") != (imp or ""):
        return False
    return True


def _event_json(ev: tuple) -> dict:
    res = ev[6]
    if res and ev[7]:
        res = f"{res}/{ev[7]}"
    return {"audit_id": ev[0], "verb": ev[2], "resource": res or ev[13] or None, "namespace": ev[8] or None,
            "name": ev[9] or None, "code": ev[11], "decision": ev[12] or None}


def learn_offsets(recs: list[Rec], skew: float, width: float = 0.0) -> tuple | None:
    """How long after a run's start its first request comes (process start-up), and how long
    before its end its last one (exit): bounds learned from runs whose every event was theirs
    alone, in the skew-corrected frame. The bounds scale what was seen, and the frame is off by
    up to half the skew's WIDTH, so they are loosened by the share of it scaling would add."""
    first, last = [], []
    for r in recs:
        if r.shared:
            continue
        evs = r.exact or [e for e, s in r.unique if s >= 2]
        if not evs:
            continue
        ts = [e[1] for e in evs]
        first.append(min(ts) - (r.start + skew))
        last.append((r.end + skew) - max(ts))
    if len(first) < 4:
        return None
    first.sort()
    last.sort()
    q = max(0, int(0.01 * len(first)) - 1)
    hi = min(len(first) - 1, int(0.995 * len(first)))
    # Start-up and exit get slower under load, seldom faster than about half the quickest seen
    # (seldom: only discovery is settled by it, see _feasible).
    lead, tail = first[q] * 0.6 - 0.2 * width - 0.01, last[q] * 0.6 - 0.2 * width - 0.005
    if len(first) < 20:  # too few to bound the slow side
        return lead, tail, len(first), None, None
    return lead, tail, len(first), first[hi] * 1.5 + 0.25 * width + 0.05, last[hi] * 1.5 + 0.25 * width + 0.02


def _reset(recs: list[Rec]) -> None:
    for r in recs:
        r.exact, r.unique, r.shared, r.possible, r.gets = [], [], [], [], {}


def _take(r: Rec, ev: tuple, best: int) -> None:
    r.unique.append((ev, best))
    if best >= 2 and ev[2] == "get" and ev[9] and not ev[7]:
        r.gets[ev[9]] = r.gets.get(ev[9], 0) + 1


def _feasible(r: Rec, ev: tuple, skew: float, lead_hi: float | None, tail_hi: float | None,
              lead: float | None = None, tail: float | None = None) -> bool:
    """Can this shared event still be R's? Its GET budget, the order of its calls; for a generic
    event, how soon after its start its first call and how soon before its end its last call
    come (the learned start-up/exit times settle only discovery: a run may start up faster or
    slower than any seen, when the load changes, and its resource calls must stay possible for
    it; see tests/test_audit_assign.py)."""
    t = ev[1] - skew
    if not ev[6]:
        own = [e[1] - skew for e, s in r.unique]
        if lead is not None and t < r.start + lead or tail is not None and t > r.end - tail:
            return False
        if tail_hi is not None and not any(u > t for u in own) and (r.end - t) > tail_hi:
            return False  # it would be the run's last call, but the run went on too long after it
        if lead_hi is not None and not any(u < t for u in own) and (t - r.start) > lead_hi:
            return False  # it would be the first call, but too long after the start
        # discovery comes before a process's first resource call
        return not any(e[6] and e[1] - skew < t for e, s in r.unique)
    is_get = ev[2] == "get" and ev[9] and not ev[7]
    if is_get and r.exp.gets is not None and r.gets.get(ev[9], 0) >= r.exp.gets:
        return False
    others = [e[1] - skew for e, s in r.unique if s >= 2 and not (e[2] == "get" and e[9] == ev[9] and not e[7])]
    if is_get and others and r.exp.get_order == "first" and min(others) < t:
        return False
    if is_get and others and r.exp.get_order == "last" and max(others) > t:
        return False
    return r.exp.plan is None or _expect.follows_plan(
        r.exp, sorted([e for e, s in r.unique if s >= 2] + [ev], key=lambda e: e[1]))


def assign(recs: list[Rec], evs: list[tuple], skew: float, margin: float,
           lead: float | None = None, tail: float | None = None,
           lead_hi: float | None = None, tail_hi: float | None = None, pace: dict | None = None) -> list[tuple]:
    """Steps 1, 3 and 4 of the module docstring, in place on recs. Returns the generic events
    left unlinked because several different runs fit them (not "unmatched" activity)."""
    dropped: list[tuple] = []
    by_id = {r.id: r for r in recs}
    # Candidates: the run widened by the skew's uncertainty. The learned start-up/exit bounds
    # (lead, tail) only settle generic events between several candidates (_feasible).
    tie_lead, tie_tail = lead, tail
    lead = tail = -margin
    srt = sorted(recs, key=lambda r: r.start)
    starts = [r.start for r in srt]
    longest = max((r.end - r.start for r in srt), default=0.0)
    pending: list[tuple[tuple, list]] = []
    for ev in evs:
        prod = ua_product(ev[5])
        if prod.startswith(MARKER_PREFIX):
            r = by_id.get(prod[len(MARKER_PREFIX):])
            if r is not None:
                r.exact.append(ev)
            continue
        t = ev[1] - skew
        lo = bisect.bisect_left(starts, t + tail - longest)
        hi = bisect.bisect_right(starts, t - lead)
        best = 0
        cands: list[Rec] = []
        for r in srt[lo:hi]:
            if r.marked or r.exact or r.end - tail < t or r.start + lead > t or not _user_ok(r, ev):
                continue
            s = _score(r, ev)
            if s > best:
                best, cands = s, [r]
            elif s == best and s:
                cands.append(r)
        if not cands:
            continue
        if len(cands) == 1:
            _take(cands[0], ev, best)
        else:
            pending.append((ev, cands, best))
    # shared events: narrow the candidates until nothing changes
    changed = True
    while changed and pending:
        changed = False
        rest = []
        for ev, cands, best in pending:
            fit = [r for r in cands if not r.exact and _feasible(r, ev, skew, lead_hi, tail_hi, tie_lead, tie_tail)]
            if len(fit) == 1:
                _take(fit[0], ev, best)
                changed = True
            else:
                rest.append((ev, fit or cands, best))
        pending = rest
    pending = [(ev, [r for r in cands if not r.exact], best) for ev, cands, best in pending]
    pending = [p for p in pending if p[1]]
    for part in _components([p for p in pending if p[2] >= 2]):
        can = _solve(part, skew, margin, pace)
        if can is None:
            continue  # too many combinations, or no way fits the model: as below
        for (ev, cands, best), (fits, likely) in zip(part, can):
            if len(fits) == 1:
                _take(next(r for r in cands if r.id in fits), ev, best)
            elif fits:  # the pace says whose it likely is; it decides nothing alone
                for r in cands:
                    if r.id in likely:
                        r.shared.append((ev, best))
                    elif r.id in fits:
                        r.possible.append(ev)
            cands.clear()  # settled (no run: it stays unlinked)
    for ev, cands, best in pending:
        if not cands:
            continue
        if len(cands) == 1:
            _take(cands[0], ev, best)
            continue
        if best >= 2:
            for r in cands:
                r.shared.append((ev, best))
        else:
            # Discovery comes right before a process's first resource call: the run whose next
            # call follows soonest takes it, when clearly sooner than any other's.
            t = ev[1]
            # Only one of them can have started yet: it is that one's (discovery comes first).
            maybe = [r for r in cands if r.start + skew - margin <= t]
            if len(maybe) == 1 and maybe[0].start + skew + margin <= t:
                _take(maybe[0], ev, best)
            else:
                dropped.append(ev)  # generic events shared by different runs say nothing
    return dropped


SOLVE_STATES = 20_000  # ways a group's runs can stand at one of its events before giving up on it


def _components(items: list[tuple]) -> list[list[tuple]]:
    """Shared events grouped by the runs they could go to (connected through common candidates),
    each group in time order."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, cands, _ in items:
        root = find(cands[0].id)
        for r in cands[1:]:
            parent[find(r.id)] = root
    groups: dict[str, list] = {}
    for it in items:
        groups.setdefault(find(it[1][0].id), []).append(it)
    return [sorted(g, key=lambda it: it[0][1]) for g in groups.values()]


# A run's standing in a sweep (_solve): how many of its own calls it has taken, its plan step
# and the calls of that step, its calls so far, when its last call came, its GETs per object
# (commands without a plan).
_START = (0, 0, 0, 0, None, ())
_CALLS_CAP = 16


def _advance(r: Rec, st: tuple, ev: tuple, pace: dict | None) -> tuple[tuple, float] | None:
    """R's standing after call EV, and the log-likelihood of the gap before it under the pace
    of R's command; None when EV cannot be R's next call."""
    h, j, used, k, last, gets = st
    if r.exp.plan is not None:
        at = _expect.plan_step(r.exp, (j, used), ev)
        if at is None:
            return None
        j, used = at
    elif r.exp.gets is not None and ev[2] == "get" and ev[9] and not ev[7]:
        counts = dict(gets)
        counts[ev[9]] = counts.get(ev[9], 0) + 1
        if counts[ev[9]] > r.exp.gets:
            return None
        gets = tuple(sorted(counts.items()))
    ll = _gap_loglik(pace, r, k - 1, ev[1] - last) if pace and last is not None else 0.0
    return (h, j, used, min(k + 1, _CALLS_CAP), ev[1], gets), ll


def _catch_up(r: Rec, held: list, st: tuple, until: float, pace: dict | None) -> tuple[tuple, float] | None:
    """R's standing once its own calls before UNTIL are taken too."""
    ll = 0.0
    while st[0] < len(held) and held[st[0]][1] < until:
        step = _advance(r, st, held[st[0]], pace)
        if step is None:
            return None
        st, gain = step
        st = (st[0] + 1,) + st[1:]
        ll += gain
    return st, ll


def _solve(items: list[tuple], skew: float, margin: float, pace: dict | None = None) -> list[tuple] | None:
    """The best ways to hand out these shared events (in time order): those that give the most
    of them a run, each run's calls following its command's plan, under one skew within
    SKEW ± MARGIN for all of them (an event may stay unassigned: another client's, or a run the
    model does not know), and of those, the ones where the most runs that succeeded have at
    least the calls their command sends (the log holds this kind of call, so a run that made it
    has it there).
    Returns, per event, (the ids of the runs it goes to in at least one best way — one run: in
    all of them; none: it stays unlinked —, the ids of those it goes to in a best way at most
    PACE_ODDS times less likely than the likeliest by the pace of its runs' calls,
    `learn_pace`). None: too many ways to weigh.

    A sweep over the events (`_sweep`), then back: a run is weighed only while events it could
    take remain, and ways that leave the open runs standing alike are weighed once."""
    runs: dict[str, Rec] = {}
    for _, cands, _ in items:
        for r in cands:
            runs[r.id] = r
    held = {rid: sorted((e for e, s in r.unique if s >= 2), key=lambda e: e[1]) for rid, r in runs.items()}
    # a run whose own calls already break its command's plan takes none (more calls cannot mend it)
    able = {rid for rid, r in runs.items() if _catch_up(r, held[rid], _START, math.inf, None) is not None}
    cands = [[r for r in c if r.id in able] for _, c, _ in items]
    last: dict[str, int] = {}
    for i, c in enumerate(cands):
        for r in c:
            last[r.id] = i
    succeeded = {rid for rid, r in runs.items() if r.data.get("exit_code") == 0 and r.exp.min_calls}
    n = len(items)
    for slack in range(n + 1):
        # Ways that leave more than SLACK events without a run are not followed: the best way
        # places all but the fewest, and most groups place all (slack 0 prunes the most).
        swept = _sweep(items, cands, runs, held, last, succeeded, skew, margin, pace, slack)
        if swept is None:
            return None
        if swept:
            break
    layers, edges = swept
    best = max(layers[n].values())
    # the best way on from each standing, back from the end
    after: dict[tuple, tuple] = {key: (0, 0, 0.0) for key in layers[n]}
    fits: list[set] = [set() for _ in items]
    likely: list[set] = [set() for _ in items]
    for i in range(n - 1, -1, -1):
        here: dict[tuple, tuple] = {}
        for standing, choice, gain, key in edges[i]:
            v = after.get(key)
            if v is None:
                continue
            tail = (gain[0] + v[0], gain[1] + v[1], gain[2] + v[2])
            if standing not in here or tail > here[standing]:
                here[standing] = tail
            if choice is None:
                continue
            p = layers[i][standing]
            if (p[0] + tail[0], p[1] + tail[1]) == best[:2]:
                fits[i].add(choice)
                if p[2] + tail[2] >= best[2] - PACE_ODDS_LOG - 1e-9:
                    likely[i].add(choice)
        after = here
    return list(zip(fits, likely))


def _sweep(items: list[tuple], cands: list[list], runs: dict, held: dict, last: dict, succeeded: set,
           skew: float, margin: float, pace: dict | None, slack: int) -> tuple | None:
    """_solve's forward pass: per event, the standings the ways that leave at most SLACK events
    without a run reach, and the steps between them. () when no way does; None: too many."""
    n = len(items)
    open_ids: list[str] = []
    # layers[i]: standing (the skews still possible, then the open runs' states in open_ids
    # order) -> best (placed, complete, pace) of the ways there; edges[i]: (standing, run id or
    # None, gain, next standing)
    layer: dict[tuple, tuple] = {(_skews(skew - margin, skew + margin),): (0, 0, 0.0)}
    layers, edges = [layer], []
    for i in range(n):
        ev, t = items[i][0], items[i][0][1]
        opening = [r.id for r in cands[i] if r.id not in open_ids]
        ids = open_ids + opening
        closing = {rid for rid in ids if last.get(rid, -1) <= i}
        nxt_ids = [rid for rid in ids if rid not in closing]
        nxt: dict[tuple, tuple] = {}
        out = []
        for standing, value in layer.items():
            skews, sts = standing[0], list(standing[1:]) + [_START] * len(opening)
            ll0 = 0.0
            for k, rid in enumerate(ids):  # every open run takes its own calls before this one
                step = _catch_up(runs[rid], held[rid], sts[k], t, pace)
                if step is None:
                    break
                sts[k], gain = step
                ll0 += gain
            else:
                for choice in [None] + [r.id for r in cands[i]]:
                    new = list(sts)
                    gain = (0, 0, ll0)
                    now = skews
                    if choice is not None:
                        r = runs[choice]  # the skews under which R sent EV, with the calls handed out so far
                        now = _skews(max(skews[0], t - r.end - MARGIN), min(skews[1], t - r.start + MARGIN))
                        if now[0] > now[1]:
                            continue
                        k = ids.index(choice)
                        step = _advance(r, new[k], ev, pace)
                        if step is None:
                            continue
                        new[k], g = step
                        gain = (1, 0, ll0 + g)
                    done = _close(runs, held, ids, new, closing, succeeded, pace)
                    if done is None:
                        continue
                    gain = (gain[0], done[0], gain[2] + done[1])
                    key = (now,) + tuple(new[k] for k, rid in enumerate(ids) if rid not in closing)
                    total = (value[0] + gain[0], value[1] + gain[1], value[2] + gain[2])
                    if i + 1 - total[0] > slack:
                        continue
                    out.append((standing, choice, gain, key))
                    if key not in nxt or total > nxt[key]:
                        nxt[key] = total
        if not nxt:
            return ()
        if len(nxt) > SOLVE_STATES:
            return None
        open_ids, layer = nxt_ids, nxt
        layers.append(layer)
        edges.append(out)
    return layers, edges


def _skews(lo: float, hi: float) -> tuple[float, float]:
    """A range of skews, widened to whole half milliseconds: ways that differ by less stand alike."""
    return math.floor(lo * 2000) / 2000, math.ceil(hi * 2000) / 2000


def _close(runs: dict, held: dict, ids: list, sts: list, closing: set, succeeded: set,
           pace: dict | None) -> tuple[int, float] | None:
    """Runs no later event can go to take the rest of their own calls: (how many of them that
    succeeded have the calls their command sends, pace log-likelihood); None: a plan broken."""
    complete, ll = 0, 0.0
    for k, rid in enumerate(ids):
        if rid not in closing:
            continue
        r = runs[rid]
        step = _catch_up(r, held[rid], sts[k], math.inf, pace)
        if step is None:
            return None
        st, gain = step
        ll += gain
        complete += rid in succeeded and st[3] >= r.exp.min_calls
    return complete, ll


# How much less likely than the likeliest, by the pace of its calls, a way to hand out a group's
# shared events may be for its runs to be linked to them (_solve; others keep them as
# `possible`), and the runs of a command needed before its pace says anything. Measured on five
# kept 2,000-run scenarios: the likeliest only gave 99.4-99.8% precision and 99.3-99.8% recall;
# within 6x, 97.8-99.3% and 100%.
PACE_ODDS = 1.0  # the likeliest ways only (and ways as likely): the others' runs go to `possible`
PACE_ODDS_LOG = math.log(PACE_ODDS)
PACE_MIN_RUNS = 12
PACE_MIN_SD = 0.25  # log-seconds: no command's pace is known closer than this


def learn_pace(recs: list[Rec]) -> dict:
    """(verb, k) → the centre and spread of the log seconds between a run's k-th and next
    resource call (k from 0), from the successful runs whose every event was theirs alone. One
    kubectl sends its calls one after another, each soon after the last answer: of two runs
    that each sent the same GET at about the same time, the way that keeps both at their pace is
    the likelier."""
    seen: dict[tuple, list[float]] = {}
    for r in recs:
        if r.shared or r.exact or r.exp.plan is None or r.data.get("exit_code") != 0:
            continue
        ts = sorted(e[1] for e, s in r.unique if s >= 2)
        for k in range(min(len(ts) - 1, _CALLS_CAP)):
            seen.setdefault((r.data.get("verb"), k), []).append(math.log(max(ts[k + 1] - ts[k], 1e-4)))
    out = {}
    for key, xs in seen.items():
        if len(xs) >= PACE_MIN_RUNS:  # median and MAD: a stalled run must not widen what is usual
            mid = statistics.median(xs)
            out[key] = (mid, max(1.4826 * statistics.median(abs(x - mid) for x in xs), PACE_MIN_SD))
    return out


def _gap_loglik(pace: dict, r: Rec, k: int, gap: float) -> float:
    """The log-likelihood of GAP seconds between R's k-th and next call; 0 when not learned."""
    fit = pace.get((r.data.get("verb"), k))
    if fit is None:
        return 0.0
    z = (math.log(max(gap, 1e-4)) - fit[0]) / fit[1]
    # Student's t (3 degrees of freedom) rather than normal: a run stalls now and then (a GC,
    # the scheduler), and a stall must not make another way look far likelier
    return -2.0 * math.log1p(z * z / 3.0) - math.log(fit[1])


def status_of(r: Rec, caught_up: bool) -> tuple[str, list]:
    if not r.exp.calls:
        evs = [e for e, _ in r.unique]
        return ("none", evs) if not r.exact else ("exact", r.exact)
    if r.exact:
        return "exact", r.exact
    uniq = [e for e, _ in r.unique]
    resource_calls = sum(1 for _, s in r.unique if s >= 2)
    if any(s >= 2 for _, s in r.shared) or r.possible:
        return "ambiguous", sorted(uniq + [e for e, _ in r.shared], key=lambda e: e[1])
    if not uniq:
        if r.exp.min_calls == 0:
            return "none", []
        return ("missing" if caught_up else "pending"), []
    failed = r.data.get("exit_code") not in (0, None)
    if resource_calls >= r.exp.min_calls or (failed and resource_calls >= 1):
        return "strong", uniq
    if not caught_up:
        return "pending", uniq
    return "partial", uniq


@dataclass
class Summary:
    records: int = 0
    statuses: dict = field(default_factory=dict)
    skew: float = 0.0
    skew_support: int = 0
    lead: float | None = None
    tail: float | None = None


def correlate(conn: sqlite3.Connection, server: str, since: float | None = None, until: float | None = None,
              *, now: float | None = None, grace: float = GRACE, margin: float = MARGIN) -> Summary:
    """Re-link the records of SERVER that started in [since, until) (all when None)."""
    from ..record import rfc3339

    server = normalize_server(server)
    now = now or time.time()
    summary = Summary()
    row = conn.execute("SELECT min(started_at), max(started_at) FROM records WHERE server IN (?, ?)",
                       (server, server + "/")).fetchone()
    if not row or not row[0]:
        return summary
    first = parse_ts(row[0]) or 0.0
    last = parse_ts(row[1]) or 0.0
    lo = max(first, since) if since is not None else first
    hi = min(last + 0.001, until) if until is not None else last + 0.001
    cl = conn.execute("SELECT skew, skew_support, watermark, lead, tail FROM audit_clusters WHERE server = ?",
                      (server,)).fetchone()
    old_skew, old_support, watermark, cl_lead, cl_tail = (cl or (None, 0, None, None, None))
    watermark = watermark or 0.0
    ids = _identity_map(conn, server)
    marked = {r[0] for r in conn.execute("SELECT record_id FROM audit_marked")}
    skew_fixed: float | None = None
    t = lo
    while t < hi:
        a, b = t, min(hi, t + SLICE)
        t = b
        # neighbours as candidates, so that events near the edges go where they belong
        rows = _load_records(conn, server, rfc3339(a - 60.0), rfc3339(b + 60.0))
        if not rows:
            continue
        recs = [_make_rec(d, ids, marked, now) for d in rows]
        ev_lo = a - 60.0 - MAX_SKEW - margin
        ev_hi = max(b + 60.0, max(r.end for r in recs)) + MAX_SKEW + margin
        evs = conn.execute(
            f"SELECT {', '.join(_EV_COLS)} FROM audit_events WHERE server = ? AND ts >= ? AND ts <= ? ORDER BY ts",
            (server, ev_lo, ev_hi)).fetchall()
        if skew_fixed is None:
            skew, support, width = estimate_skew(recs, evs)
            support = int(round(support))
            if support < 3 and old_skew is not None and (old_support or 0) >= support:
                skew, support, width = old_skew, old_support, 0.0
            skew_fixed = skew
            summary.skew, summary.skew_support = skew, support
            conn.execute("INSERT INTO audit_clusters (server, skew, skew_support, events, updated) VALUES (?,?,?,0,?)"
                         " ON CONFLICT(server) DO UPDATE SET skew = excluded.skew, skew_support = excluded.skew_support,"
                         " updated = excluded.updated", (server, skew, support, now))
            use_margin = margin + min(width, 2.0) / 2 if support >= 1 else UNKNOWN_MARGIN
            assign(recs, evs, skew_fixed, use_margin)
            learned = learn_offsets(recs, skew_fixed, width)
            if learned:  # once more, from the runs the tighter windows made unique
                _reset(recs)
                assign(recs, evs, skew_fixed, use_margin, max(-use_margin, learned[0]), max(-use_margin, learned[1]),
                       learned[3], learned[4])
                learned = learn_offsets(recs, skew_fixed, width) or learned
            if learned is None and cl and cl_lead is not None:
                learned = (cl_lead, cl_tail, 0, None, None)
            lead = tail = lead_hi = tail_hi = None
            if learned:
                lead, tail = max(-use_margin, learned[0]), max(-use_margin, learned[1])
                lead_hi, tail_hi = learned[3], learned[4]
                conn.execute("UPDATE audit_clusters SET lead = ?, tail = ? WHERE server = ?", (lead, tail, server))
            summary.lead, summary.tail = lead, tail
            pace = learn_pace(recs)
            _reset(recs)
        dropped = assign(recs, evs, skew_fixed, use_margin, lead, tail, lead_hi, tail_hi, pace)
        own = [r for r in recs if a <= r.start < b]
        conn.execute("BEGIN IMMEDIATE")
        try:
            own_ids = [r.id for r in own]
            for i in range(0, len(own_ids), 500):
                chunk = own_ids[i:i + 500]
                conn.execute(f"UPDATE audit_events SET record_id = NULL, link = NULL WHERE record_id IN"
                             f" ({','.join('?' * len(chunk))})", chunk)
            links, updates = [], []
            for r in own:
                caught_up = watermark >= r.end + skew_fixed + grace
                status, evlist = status_of(r, caught_up)
                summary.statuses[status] = summary.statuses.get(status, 0) + 1
                summary.records += 1
                link = "ambiguous" if status == "ambiguous" else ("exact" if status == "exact" else "strong")
                for e in evlist:
                    links.append((r.id, link, e[0]))
                listed = [_event_json(e) for e in evlist[:MAX_EVENTS_LISTED]]
                audit = {"status": status, "events": listed}
                if len(evlist) > MAX_EVENTS_LISTED:
                    audit["events_total"] = len(evlist)
                if status == "ambiguous" and r.possible:  # every candidate kept, not linked
                    audit["possible"] = [_event_json(e) for e in sorted(r.possible, key=lambda e: e[1])[:MAX_EVENTS_LISTED]]
                updates.append((json.dumps(audit, separators=(",", ":")), r.identity, r.id))
            conn.executemany("UPDATE audit_events SET record_id = ?, link = ? WHERE audit_id = ?"
                             " AND (record_id IS NULL OR link = 'ambiguous')", links)
            conn.executemany("UPDATE audit_events SET link = 'shared' WHERE audit_id = ? AND record_id IS NULL",
                             [(e[0],) for e in dropped if a - 60.0 <= e[1] - skew_fixed < b + 60.0])
            conn.executemany("UPDATE records SET audit = ?, identity = coalesce(identity, ?) WHERE id = ?", updates)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return summary


def mark_unbound(conn: sqlite3.Connection) -> int:
    """Records of clusters no audit source is bound to: `no_source` (only where something would
    be expected; local-only runs are `none`)."""
    bound = [r[0] for r in conn.execute("SELECT server FROM audit_clusters")]
    q = ",".join("?" * len(bound)) or "''"
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            f"UPDATE records SET audit = '{{\"status\":\"no_source\",\"events\":[]}}' WHERE audit IS NULL AND"
            f" local_only = 0 AND server IS NOT NULL AND rtrim(server, '/') NOT IN ({q})", bound)
        conn.execute("UPDATE records SET audit = '{\"status\":\"none\",\"events\":[]}' WHERE audit IS NULL AND"
                     " local_only = 1")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return cur.rowcount
