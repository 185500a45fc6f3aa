"""Audit correlation benchmarks (issue 5).

  python -m bench.bench_audit accuracy [--invocations 2000] [--sessions 8] [--skew 2] [--lag 30]
      real kubectl through the recorder against the test API server, with and without the
      argv[0] marker; precision/recall against the server's ground-truth side file, per link:
      every (event, record) pair a record lists in `audit.events` is a predicted link,
      `ambiguous` records' included (`audit.possible` is not); a link to an identical overlapping run (same argv, overlapping in time) of the
      true one, from an `ambiguous` record, counts as ambiguous, not wrong; any other link to
      another run is wrong; an event of a recorded run linked to nothing is a miss
      (bench/audit_workload.py `evaluate`). `precision_decided`/`recall_decided` count only the
      links of records that are not `ambiguous`.
  python -m bench.bench_audit speed [--events 200000] [--mb 0]
      import + correlation throughput on a generated log (one core), and peak RSS; --mb 1000
      generates a log of that size instead (the memory bound is checked on a 1 GB log). Beside it,
      in the same run, the baseline: the stdlib parsing every line and keeping kubectl's events.

Results go to bench/results/audit-*.json and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def heartbeat(h) -> None:
    """Later server activity (another client), so the source's watermark passes the last run."""
    h.clock.advance(10)
    h.kubectl("get", "ns", user="admin")


def accuracy(args) -> dict:
    from bench.audit_workload import audit_import, evaluate, ingest, load_records, recorder_env, run_sessions
    from tests.apiserver.audit import OffsetClock
    from tests.apiserver.fixtures import run_apiserver

    from kubectl_record.audit.policy import RECOMMENDED

    # "all": every call at RequestResponse (the response kind tells `get` from other reads);
    # "recommended": `kubectl record audit policy` (reads at Metadata, no RequestReceived stage)
    policy = RECOMMENDED if args.policy == "recommended" else None
    out = {"policy": args.policy}
    for marker in (False, True):
        with tempfile.TemporaryDirectory(prefix="kr-audit-bench-", ignore_cleanup_errors=True) as tmp:
            tmp = Path(tmp)
            if args.keep_dir:  # the store, log and side file, to study the links afterwards
                tmp = Path(args.keep_dir) / ("marker" if marker else "plain")
                tmp.mkdir(parents=True, exist_ok=True)
            with run_apiserver(tmp / "api", clock=OffsetClock(), skew=args.skew, lag=args.lag,
                               lag_jitter=args.jitter, watch_max_seconds=2, policy=policy) as h:
                env = recorder_env(tmp / "rec", str(h.kubeconfig("alice")), marker)
                took = run_sessions(env, args.invocations, args.sessions, seed=args.seed)
                ingest(env)
                heartbeat(h)
                # the source lags: an import now leaves the newest runs pending
                early = audit_import(env, h.url, [str(p) for p in h.log_files()])
                h.flush()
                t0 = time.time()
                final = audit_import(env, h.url, [str(p) for p in h.log_files()])
                import_s = time.time() - t0
                evs = {e["auditID"]: e for e in h.events(flush=False)}
                recs = load_records(env)
                m = evaluate(recs, str(h.ground_truth), evs)
                m.update(marker=marker, run_seconds=round(took, 1), reimport_seconds=round(import_s, 2),
                         early_import=early.stdout.strip().splitlines()[-1:], final_import=final.stdout.strip().splitlines()[-1:])
                if final.returncode:
                    m["error"] = final.stderr
                out["with_marker" if marker else "without_marker"] = m
                print(json.dumps(m, indent=1), flush=True)
    return out


# ------------------------------------------------------------------------------ speed
def generate(path: Path, n_events: int | None, target_bytes: int | None, seed: int = 7) -> tuple[int, list]:
    """A realistic log: kubectl runs of 8 users (both stages, discovery, 3-5 calls each) mixed with
    controller traffic; returns (events, the runs as (start, end, user, argv))."""
    rng = random.Random(seed)
    t = 1_780_000_000.0
    runs = []
    n = 0
    size = 0
    kinds = [("get", "pods", "list", "pods", ""), ("get", "deploy", "list", "deployments", "apps"),
             ("describe", "pod", "get", "pods", ""), ("delete", "configmap", "delete", "configmaps", "")]
    with open(path, "w") as f:
        while (n_events is None or n < n_events) and (target_bytes is None or size < target_bytes):
            t += rng.uniform(0.01, 0.05)
            if rng.random() < 0.3:
                user = f"user{rng.randrange(8)}"
                verb, word, api, res, group = rng.choice(kinds)
                name = "" if verb == "get" else f"obj{rng.randrange(1000)}"
                start = t
                calls = 2 if verb in ("describe", "delete") else 1
                for c in range(calls):
                    aid = str(uuid.UUID(int=rng.getrandbits(128)))
                    ev = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": aid,
                          "stage": "ResponseComplete",
                          "requestURI": f"/api/v1/namespaces/default/{res}/{name}" if name else f"/api/v1/namespaces/default/{res}?limit=500",
                          "verb": api if c == 0 else "get", "user": {"username": user, "groups": ["system:authenticated"]},
                          "sourceIPs": ["10.0.0.1"], "userAgent": "kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07",
                          "objectRef": {"resource": res, "namespace": "default", "name": name or None, "apiGroup": group,
                                        "apiVersion": "v1"},
                          "responseStatus": {"metadata": {}, "code": 200},
                          "requestReceivedTimestamp": _rfc(t), "stageTimestamp": _rfc(t + 0.002),
                          "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}}
                    for stage in ("RequestReceived", "ResponseComplete"):
                        ev["stage"] = stage
                        line = json.dumps(ev, separators=(",", ":")) + "\n"
                        f.write(line)
                        size += len(line)
                        n += 1
                    t += 0.003
                runs.append((start - 0.01, t + 0.01, user, [verb, word] + ([name] if name else [])))
            else:
                aid = str(uuid.UUID(int=rng.getrandbits(128)))
                ev = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": aid,
                      "stage": "ResponseComplete", "requestURI": "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager",
                      "verb": "update", "user": {"username": "system:kube-controller-manager", "groups": ["system:authenticated"]},
                      "sourceIPs": ["10.0.0.2"], "userAgent": "kube-controller-manager/v1.32.4 (linux/amd64) kubernetes/4cb5f07/leader-election",
                      "objectRef": {"resource": "leases", "namespace": "kube-system", "name": "kube-controller-manager",
                                    "apiGroup": "coordination.k8s.io", "apiVersion": "v1"},
                      "responseStatus": {"metadata": {}, "code": 200},
                      "requestReceivedTimestamp": _rfc(t), "stageTimestamp": _rfc(t + 0.001),
                      "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}}
                line = json.dumps(ev, separators=(",", ":")) + "\n"
                f.write(line)
                size += len(line)
                n += 1
    return n, runs


def _rfc(t: float) -> str:
    from tests.apiserver.audit import rfc3339_micro

    return rfc3339_micro(t)


def speed(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="kr-audit-speed-"))
    log = tmp / "audit.log"
    t0 = time.time()
    n, runs = generate(log, None if args.mb else args.events, args.mb * 1_000_000 if args.mb else None)
    gen_s = time.time() - t0
    # the matching local records, written straight into a store
    env = dict(os.environ, KUBECTL_RECORD_HOME=str(tmp / "state"), KUBECTL_RECORD_RUNTIME_DIR=str(tmp / "spool"),
               PYTHONPATH=str(REPO))
    recs_file = tmp / "runs.json"
    recs_file.write_text(json.dumps(runs))
    # the records are written by one process, the import measured in a fresh one (its peak RSS)
    subprocess.run([sys.executable, "-c", _SPEED_CHILD, str(tmp), str(log), str(recs_file), "records"], env=env,
                   check=True, capture_output=True, text=True)
    child = subprocess.run([sys.executable, "-c", _SPEED_CHILD, str(tmp), str(log), str(recs_file), "import"], env=env,
                           capture_output=True, text=True)
    if child.returncode:
        raise SystemExit(child.stderr)
    res = json.loads(child.stdout.strip().splitlines()[-1])
    res.update(events=n, log_mb=round(os.path.getsize(log) / 1e6, 1), generate_s=round(gen_s, 1), runs=len(runs))
    res["events_per_s"] = round(n / res["import_and_correlate_s"])
    # The baseline, same log, same run: the stdlib alone parsing every line and keeping kubectl's
    # events (what any importer must at least do), in a fresh process too.
    base = subprocess.run([sys.executable, "-c", _BASELINE_CHILD, str(log)], capture_output=True, text=True, check=True)
    res["baseline_json_parse_filter_s"] = float(base.stdout.strip())
    res["baseline_events_per_s"] = round(n / res["baseline_json_parse_filter_s"])
    res["ratio_to_baseline"] = round(res["import_and_correlate_s"] / res["baseline_json_parse_filter_s"], 2)
    print(json.dumps(res, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return res


_BASELINE_CHILD = r"""
import json, sys, time
t0 = time.time()
kept = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        if json.loads(line).get("userAgent", "").startswith("kubectl"):
            kept += 1
print(round(time.time() - t0, 3))
"""

_SPEED_CHILD = r"""
import json, sys, time, resource, os
from kubectl_record import store
from kubectl_record.record import rfc3339
from kubectl_record.audit.cli import run_import
tmp, log, runs, what = sys.argv[1:]
conn = store.connect()
recs = []
for i, (s, e, user, argv) in enumerate(json.load(open(runs)) if what == "records" else ()):
    rid = f"00000000-0000-7000-8000-{i:012d}"
    recs.append({"id": rid, "started_at": rfc3339(s), "ended_at": rfc3339(e), "duration_ms": int((e-s)*1000),
                 "exit_code": 0, "state": "finished", "source": "shim", "argv": argv, "command": "kubectl " + " ".join(argv),
                 "verb": argv[0], "resource": {"pods": "pods", "pod": "pods", "deploy": "deployments", "configmap": "configmaps"}[argv[1]],
                 "names": argv[2:], "namespace": "default", "all_namespaces": False, "context": "c", "cluster": "c",
                 "server": "https://bench.example:6443", "user": user, "identity": user, "mutating": argv[0] == "delete",
                 "dry_run": False, "local_only": False, "install_id": "bench", "seq": i + 1})
    if len(recs) >= 20000:
        store.insert_foreign(conn, recs)
        recs = []
if what == "records":
    store.insert_foreign(conn, recs)
    sys.exit(0)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cpu0 = time.process_time(); t0 = time.time()
out = run_import(conn, "https://bench.example:6443", [log], quiet=True)
wall = time.time() - t0; cpu = time.process_time() - cpu0
s = out["summary"]
print(json.dumps({"import_and_correlate_s": round(wall, 2), "cpu_s": round(cpu, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "rss_before_import_mb": round(rss0 / 1024, 1), "counters": out["counters"],
                  "statuses": s.statuses if s else None, "skew": s.skew if s else None}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--invocations", type=int, default=2000)
    a.add_argument("--sessions", type=int, default=8)
    a.add_argument("--skew", type=float, default=2.0)
    a.add_argument("--lag", type=float, default=30.0)
    a.add_argument("--jitter", type=float, default=0.0)
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--policy", choices=("all", "recommended"), default="all",
                   help="the test server's audit policy: RequestResponse for all but Secrets and"
                        " ConfigMaps (default), or the recommended one")
    a.add_argument("--keep-dir", help="keep each run's store, audit log and ground truth under this directory")
    s = sub.add_parser("speed")
    s.add_argument("--events", type=int, default=200_000)
    s.add_argument("--mb", type=int, default=0)
    s.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    res = accuracy(args) if args.what == "accuracy" else speed(args)
    outdir = REPO / "bench" / "results"
    outdir.mkdir(parents=True, exist_ok=True)
    name = f"audit-{args.what}-{args.invocations if args.what == 'accuracy' else (str(args.mb) + 'MB' if args.mb else args.events)}"
    if args.what == "accuracy" and args.policy != "all":
        name += f"-{args.policy}"
    name += ".json"
    (outdir / name).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
