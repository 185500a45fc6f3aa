"""The correlation accuracy scenario, shared by bench/bench_audit.py (2,000+ invocations) and
tests/test_audit_accuracy.py (a small version): real kubectl through the recorder from N
concurrent sessions of one user, against the test API server with clock skew and delivery lag;
then the audit log is imported and every link is checked against the server's ground-truth side
file (each request's Kubectl-Session header), which the correlator never reads.

Ground truth: a kubectl session (one process) belongs to the record whose run contains all of its
requests (same machine clock), whose verb is the session's Kubectl-Command, and whose namespace
and object names appear in the session's request paths. When several records fit a session
(identical commands overlapping in time), the run is *identical-overlapping*: the correlator may
call it `ambiguous`, and its links are not judged.
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


def evaluate(records: list[dict], ground_truth: str, events: dict[str, dict] | None = None) -> dict:
    """Precision/recall of invocation↔event links against the side file (see module doc).
    EVENTS: auditID → the imported audit event (its objectRef names what a create's path does not)."""
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
    recs = [r for r in records if r.get("started_at")]
    for r in recs:
        r["_s"] = _ts(r["started_at"])
        r["_e"] = _ts(r["ended_at"]) if r.get("ended_at") else r["_s"] + 3600
    recs.sort(key=lambda r: r["_s"])
    truth: dict[str, str] = {}          # auditID -> record id
    gt_ambiguous: set[str] = set()      # records in identical-overlapping groups
    unassigned = 0
    unassigned_sample: list = []
    for s in sessions.values():
        lo, hi = min(s["t"]), max(s["t"])
        fits = []
        for r in recs:
            if r["_s"] - 0.005 > lo:
                break
            if r["_e"] + 0.005 < hi or r["verb"] != s["cmd"]:
                continue
            ns = r.get("namespace")
            if ns and s["ns"] and ns not in s["ns"]:
                continue
            if any(n not in s["names"] for n in (r.get("names") or [])):
                continue
            res = r.get("resource")
            if res and "," not in res and s["res"] and res not in s["res"]:
                continue
            fits.append(r["id"])
        if len(fits) == 1:
            for aid in s["ids"]:
                truth[aid] = fits[0]
        elif fits:
            gt_ambiguous.update(fits)
        else:
            unassigned += 1
            if len(unassigned_sample) < 5:
                unassigned_sample.append((s["cmd"], s["paths"][:3], lo, hi))
    pred: dict[tuple, str] = {}
    statuses: dict[str, int] = {}
    ambiguous_records = 0
    for r in recs:
        a = r.get("audit") or {}
        st = a.get("status") or "null"
        statuses[st] = statuses.get(st, 0) + 1
        if st == "ambiguous":
            ambiguous_records += 1
            continue
        if r["id"] in gt_ambiguous:
            continue
        for e in a.get("events") or ():
            pred[(e["audit_id"], r["id"])] = st
    correct = sum(1 for (aid, rid) in pred if truth.get(aid) == rid)
    byid = {r["id"]: r for r in recs}
    judged_truth = {aid: rid for aid, rid in truth.items() if rid not in gt_ambiguous}
    found = sum(1 for aid, rid in judged_truth.items() if (aid, rid) in pred)
    wrong = [(aid, rid, truth.get(aid)) for (aid, rid) in pred if truth.get(aid) != rid]
    api_records = [r for r in recs if not r.get("local_only")]
    return {
        "records": len(recs), "api_records": len(api_records), "sessions": len(sessions),
        "sessions_unassigned": unassigned, "unassigned_sample": unassigned_sample, "links_true": len(judged_truth), "links_predicted": len(pred),
        "links_correct": correct, "precision": correct / len(pred) if pred else 1.0,
        "recall": found / len(judged_truth) if judged_truth else 1.0,
        "ambiguous_records": ambiguous_records,
        "ambiguous_share": ambiguous_records / len(api_records) if api_records else 0.0,
        "identical_overlapping_records": len(gt_ambiguous),
        "ambiguous_not_identical": sorted(" ".join(r["argv"]) for r in recs if (r.get("audit") or {}).get("status") == "ambiguous"
                                          and r["id"] not in gt_ambiguous)[:40],
        "missed_sample": sorted({" ".join(byid[rid]["argv"]) + " -> " + str((byid[rid].get("audit") or {}).get("status"))
                                 for aid, rid in judged_truth.items() if (aid, rid) not in pred})[:20], "statuses": statuses, "wrong_sample": wrong[:10],
    }
