"""The correlation accuracy scenario, shared by bench/bench_audit.py (2,000+ invocations) and
tests/test_audit_accuracy.py (a small version): real kubectl through the recorder from N
concurrent sessions of one user, against the test API server with clock skew and delivery lag;
then the audit log is imported and every link is checked against the server's ground-truth side
file (each request's Kubectl-Session header), which the correlator never reads.

Ground truth: a kubectl session (one process) belongs to the record whose run contains all of its
requests (same machine clock), whose verb is the session's Kubectl-Command, and whose namespace
and object names appear in the session's request paths; sessions and records match one to one
(`ground_truth_links`). How links are judged: `evaluate`.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POD = "web-6d4cf56db6-abcde"


def recorder_env(tmp: Path, kubeconfig: str, marker: bool) -> dict:
    """An isolated recorder installation (like tests/conftest.py's `recorder`)."""
    home = tmp / "home"
    (home / ".kube").mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{tmp / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home), "LANG": "C.UTF-8",
        "KUBECTL_RECORD_HOME": str(tmp / "state"),
        "KUBECTL_RECORD_RUNTIME_DIR": str(tmp / "spool"),
        "KUBECACHEDIR": str(tmp / "kube-cache"),
        "PYTHONPATH": str(REPO),
        "KUBECONFIG": kubeconfig,
    }
    if marker:
        env["KUBECTL_RECORD_AUDIT_MARKER"] = "1"
    subprocess.run([sys.executable, "-m", "kubectl_record", "setup-launchers", "--bin", str(tmp / "bin")],
                   env=env, check=True, capture_output=True)
    return env


def commands(session: int, i: int, rng: random.Random) -> list[str]:
    """One invocation's arguments, drawn from a mix of reads, writes, failures and local runs."""
    cm = f"cm-{session}-{i}"
    choices = [
        ["get", "pods"], ["get", "pods", "-n", "payments"], ["get", "deploy"], ["get", "pod", POD],
        ["describe", "pod", POD], ["get", "nodes"], ["get", "ns"], ["get", "svc", "-A"], ["get", "configmaps"],
        ["create", "configmap", cm, "--from-literal=a=b"],
        ["label", "pod", POD, f"s{session}=v{i}", "--overwrite"],
        ["annotate", "pod", POD, f"n{session}=v{i}", "--overwrite"],
        ["get", "secrets", "-n", "kube-system"], ["auth", "whoami"], ["logs", POD], ["version"],
        ["get", "pod", "api-0", "-n", "payments"], ["get", "cm", f"cm-{session}-{max(0, i - 1)}"],
        ["scale", "deploy", f"d{session}", "--replicas", str(1 + i % 3)],
        ["rollout", "restart", "deploy", f"d{session}"],
        ["get", "deploy", f"d{session}", "-o", "yaml"],
        ["config", "view"], ["version", "--client"],
    ]
    return rng.choice(choices)


def _q(words: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(w) for w in words)


def run_sessions(env: dict, total: int, sessions: int = 8, seed: int = 1) -> float:
    """Run TOTAL invocations through `kubectl-record --` from SESSIONS concurrent shells."""
    per = max(1, total // sessions)
    procs = []
    # A user's discovery cache is warm; a cold one makes every session's first run send the
    # same seven discovery GETs at the same moment.
    subprocess.run(["bash", "-c", "kubectl-record -- api-resources >/dev/null 2>&1"], env=env)
    t0 = time.time()
    for s in range(sessions):
        rng = random.Random(seed * 1000 + s)
        lines = [f"kubectl-record -- create deployment d{s} --image=nginx >/dev/null 2>&1"]
        for i in range(per - 1):
            lines.append(f"kubectl-record -- {_q(commands(s, i, rng))} >/dev/null 2>&1")
        procs.append(subprocess.Popen(["bash", "-c", "\n".join(lines)], env=env))
    for p in procs:
        p.wait()
    return time.time() - t0


def ingest(env: dict) -> None:
    subprocess.run([sys.executable, "-m", "kubectl_record", "ingest"], env=env, check=True, capture_output=True)


def audit_import(env: dict, server: str, paths: list[str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubectl_record", "audit", "import", "--server", server, *extra,
                           *paths], env=env, capture_output=True, text=True, timeout=600)


def load_records(env: dict) -> list[dict]:
    db = Path(env["KUBECTL_RECORD_HOME"])
    conn = sqlite3.connect(str(next(db.rglob("*.db"))))
    cols = ["id", "started_at", "ended_at", "verb", "resource", "argv", "namespace", "names", "local_only", "audit", "identity"]
    out = []
    for row in conn.execute(f"SELECT {', '.join(cols)} FROM records"):
        d = dict(zip(cols, row))
        for k in ("argv", "names", "audit"):
            d[k] = json.loads(d[k]) if d[k] else None
        out.append(d)
    conn.close()
    return out


def _ts(s: str) -> float:
    from kubectl_record.audit.formats import parse_ts

    return parse_ts(s)


def _sessions(ground_truth: str, events: dict[str, dict] | None) -> dict[str, dict]:
    """Kubectl-Session → its requests (ids, machine-clock times, paths, objectRef names/resources/namespaces)."""
    sessions: dict[str, dict] = {}
    with open(ground_truth) as f:
        for line in f:
            g = json.loads(line)
            sid = g.get("kubectlSession")
            if not sid or (g.get("userAgent") or "").startswith("kubectl+kubectl-record-whoami/"):
                continue  # the dispatcher's own GET /version; the recorder's own SelfSubjectReview
            if events is not None and g["auditID"] not in events:
                continue  # not in the imported log
            s = sessions.setdefault(sid, {"cmd": (g.get("kubectlCommand") or "").removeprefix("kubectl "),
                                          "ids": [], "t": [], "paths": [], "names": set(), "res": set(), "ns": set()})
            s["ids"].append(g["auditID"])
            s["t"].append(_ts(g["receivedAt"]))
            s["paths"].append(g["requestURI"].split("?")[0])
            ref = ((events or {}).get(g["auditID"]) or {}).get("objectRef") or {}
            if ref.get("name"):
                s["names"].add(ref["name"])
            if ref.get("resource"):
                s["res"].add(ref["resource"])
            if ref.get("namespace"):
                s["ns"].add(ref["namespace"])
    return sessions


def _fits(s: dict, recs: list[dict]) -> set[str]:
    """The records that can be this session's: the run contains its requests, same command word,
    and its namespace, resource and object names are the session's."""
    lo, hi = min(s["t"]), max(s["t"])
    fits = set()
    for r in recs:
        if r["_s"] - 0.005 > lo:
            break
        if r["_e"] + 0.005 < hi or r["verb"] != s["cmd"] or r.get("local_only"):
            continue
        ns = r.get("namespace")
        if ns and s["ns"] and ns not in s["ns"]:
            continue
        if any(n not in s["names"] for n in (r.get("names") or [])):
            continue
        res = r.get("resource")
        if res and "," not in res and s["res"] and res not in s["res"]:
            continue
        fits.add(r["id"])
    return fits


def ground_truth_links(records: list[dict], ground_truth: str, events: dict[str, dict] | None = None):
    """auditID → the set of records it can belong to, and the sessions no record fits.

    One kubectl process is one Kubectl-Session and one record, so sessions and records match one
    to one: a session with a single fitting record takes it, which removes that record from the
    other sessions' candidates, until nothing changes. What is left with several candidates are
    runs the side file itself cannot tell apart (same command word, names and namespace, each
    run's span containing each session's requests): *identical-overlapping* groups."""
    sessions = _sessions(ground_truth, events)
    recs = sorted((r for r in records if r.get("started_at")), key=lambda r: _ts(r["started_at"]))
    for r in recs:
        r["_s"] = _ts(r["started_at"])
        r["_e"] = _ts(r["ended_at"]) if r.get("ended_at") else r["_s"] + 3600
    cands = {sid: _fits(s, recs) for sid, s in sessions.items()}
    used: set[str] = set()
    changed = True
    while changed:
        changed = False
        for c in cands.values():
            if len(c) > 1 and c & used:
                c -= used
            if len(c) == 1 and not c <= used:
                used |= c
                changed = True
    truth: dict[str, frozenset] = {}
    unassigned = []
    for sid, s in sessions.items():
        c = cands[sid]
        if not c:
            unassigned.append((s["cmd"], s["paths"][:3], min(s["t"]), max(s["t"])))
            continue
        for aid in s["ids"]:
            truth[aid] = frozenset(c)
    return truth, unassigned


def _twins(recs: list[dict]) -> dict[str, set[str]]:
    """Record id → the other records of the identical command line (argv, namespace) whose runs
    overlap it in time: *identical overlapping runs*."""
    out: dict[str, set[str]] = {}
    by_cmd: dict[tuple, list[dict]] = {}
    for r in recs:
        if not r.get("local_only"):
            by_cmd.setdefault((tuple(r.get("argv") or ()), r.get("namespace")), []).append(r)
    for same in by_cmd.values():
        same.sort(key=lambda r: r["_s"])
        for i, a in enumerate(same):
            for b in same[i + 1:]:
                if b["_s"] > a["_e"]:
                    break
                out.setdefault(a["id"], set()).add(b["id"])
                out.setdefault(b["id"], set()).add(a["id"])
    return out


def evaluate(records: list[dict], ground_truth: str, events: dict[str, dict] | None = None) -> dict:
    """Precision and recall of invocation↔event links against the side file.

    Every (event, record) pair the correlator wrote into a record's `audit.events` is a predicted
    link, whatever the record's status (an `ambiguous` record's `audit.possible`, the calls it
    may have sent that other runs' pace fits better, are not links: a true one there is a miss). It is *correct* when the event's session belongs to that
    record (or to a record of a group the side file cannot tell apart, see `ground_truth_links`);
    it is *ambiguous, not wrong* when the record's status is `ambiguous` and its run is an
    identical overlapping run of the true one (same argv and namespace, overlapping in time:
    the issue's "identical overlapping runs counted as ambiguous"); any other predicted link is
    wrong, including a link an `ambiguous` record holds to an event of a different command.
    precision = (predicted − wrong) / predicted.
    recall = true links found / true links: one true link per event of a session the side file
    assigns; found when the event is linked to its record, or (ambiguous) to an identical
    overlapping run of it. An event linked to nothing, or only to other runs, is a miss. Events
    of sessions no record fits are left out and counted (`sessions_unassigned`)."""
    truth, unassigned = ground_truth_links(records, ground_truth, events)
    byid = {r["id"]: r for r in records if r.get("started_at")}
    twins = _twins(list(byid.values()))
    pred: dict[str, dict[str, str]] = {}   # auditID -> record id -> status
    statuses: dict[str, int] = {}
    for r in byid.values():
        a = r.get("audit") or {}
        st = a.get("status") or "null"
        statuses[st] = statuses.get(st, 0) + 1
        for e in a.get("events") or ():
            pred.setdefault(e["audit_id"], {})[r["id"]] = st

    def kind(aid: str, rid: str, st: str) -> str:
        ok = truth.get(aid, frozenset())
        if rid in ok:
            return "correct"
        if st == "ambiguous" and any(rid in twins.get(x, ()) for x in ok):
            return "ambiguous"
        return "wrong"

    n_pred = sum(len(v) for v in pred.values())
    counts = {"correct": 0, "ambiguous": 0, "wrong": 0}
    decided = decided_wrong = 0
    wrong_sample = []
    for aid, linked in pred.items():
        for rid, st in linked.items():
            k = kind(aid, rid, st)
            counts[k] += 1
            if st != "ambiguous":
                decided += 1
                decided_wrong += k == "wrong"
            if k == "wrong" and len(wrong_sample) < 10:
                true = sorted(" ".join(byid[x]["argv"]) for x in truth.get(aid, ()))
                wrong_sample.append((aid, " ".join(byid[rid]["argv"]), st, true))
    found = found_decided = 0
    misses: dict[str, int] = {}
    missed_sample = set()
    ev_of = events or {}
    for aid, ok in truth.items():
        linked = pred.get(aid, {})
        hits = [st for rid, st in linked.items() if kind(aid, rid, st) != "wrong"]
        if hits:
            found += 1
            found_decided += any(st != "ambiguous" for st in hits) or len(ok) > 1
            continue
        ref = (ev_of.get(aid) or {}).get("objectRef") or {}
        what = "resource" if ref.get("resource") else "non-resource"
        st = "/".join(sorted({(byid[x].get("audit") or {}).get("status") or "null" for x in ok}))
        cause = f"{'linked to other runs' if linked else 'unlinked'} {what} event, true run {st}"
        misses[cause] = misses.get(cause, 0) + 1
        if len(missed_sample) < 20:
            missed_sample.add(" | ".join(" ".join(byid[x]["argv"]) for x in ok) + f" -> {cause}")
    grouped = {rid for ok in truth.values() if len(ok) > 1 for rid in ok}
    api_records = [r for r in byid.values() if not r.get("local_only")]
    ambiguous = [r for r in api_records if (r.get("audit") or {}).get("status") == "ambiguous"]
    n_api = len(api_records) or 1
    return {
        "metric": "per link; ambiguous links among identical overlapping runs are not wrong (evaluate's docstring)",
        "records": len(byid), "api_records": len(api_records), "sessions_unassigned": len(unassigned),
        "unassigned_sample": unassigned[:5],
        "links_true": len(truth), "links_found": found, "links_predicted": n_pred,
        "links_correct": counts["correct"], "links_ambiguous_identical": counts["ambiguous"],
        "links_wrong": counts["wrong"],
        "precision": (n_pred - counts["wrong"]) / n_pred if n_pred else 1.0,
        "recall": found / len(truth) if truth else 1.0,
        # the same over decided links only: those of records not `ambiguous` (an event found
        # only through an ambiguous record's list is then a miss)
        "links_decided": decided, "links_decided_wrong": decided_wrong,
        "precision_decided": (decided - decided_wrong) / decided if decided else 1.0,
        "recall_decided": found_decided / len(truth) if truth else 1.0,
        "misses_by_cause": dict(sorted(misses.items(), key=lambda kv: -kv[1])),
        "ambiguous_records": len(ambiguous), "ambiguous_share": len(ambiguous) / n_api,
        "identical_overlapping_records": sum(1 for r in api_records if r["id"] in twins),
        "identical_overlapping_share": sum(1 for r in api_records if r["id"] in twins) / n_api,
        "ground_truth_undecidable_records": len(grouped),
        "ambiguous_not_identical": sorted(" ".join(r["argv"]) for r in ambiguous if r["id"] not in twins)[:40],
        "missed_sample": sorted(missed_sample), "statuses": statuses, "wrong_sample": wrong_sample,
    }
