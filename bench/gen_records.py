"""Generate records that look like real use: many contexts, namespaces, verbs, a few years.

    python bench/gen_records.py --count 1000000 --db bench/results/records-1000000.db
    python bench/gen_records.py --count 1000000 --jsonl bench/results/records-1000000.jsonl

Deterministic (seeded). The database is written with executemany in one transaction, through
the real schema (so the search triggers and indexes are paid for as in real use); cached by
callers under bench/results/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from datetime import datetime, timezone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CONTEXTS = ([f"prod-{r}" for r in ("eu-1", "eu-2", "us-east-1", "us-west-2", "ap-1")]
            + [f"staging-{r}" for r in ("eu-1", "us-east-1", "ap-1")]
            + [f"dev-{n}" for n in ("alice", "bob", "carol", "dave", "erin", "frank")]
            + ["kind-kind", "minikube", "docker-desktop", "ci-ephemeral", "qa-1", "qa-2", "perf-1",
               "sandbox", "edge-berlin", "edge-tokyo", "data-platform", "ml-gpu"])
NAMESPACES = ["default", "kube-system", "payments", "checkout", "orders", "inventory", "search", "auth", "web",
              "api", "monitoring", "logging", "ingress-nginx", "cert-manager", "argocd", "istio-system",
              "data", "ml", "batch", "team-a", "team-b", "team-c", "staging", "redis", "postgres", "kafka",
              "billing", "notifications", "reporting", "gateway"]
VERBS = [("get", 40), ("describe", 9), ("logs", 10), ("apply", 6), ("delete", 3), ("rollout restart", 2),
         ("rollout status", 2), ("exec", 5), ("port-forward", 2), ("edit", 1), ("scale", 1.5),
         ("config use-context", 3), ("top", 2), ("create secret generic", 0.5), ("create", 1),
         ("patch", 1), ("label", 0.5), ("annotate", 0.3), ("cp", 0.3), ("auth can-i", 0.5),
         ("config get-contexts", 1), ("version", 0.5), ("drain", 0.2), ("cordon", 0.2), ("diff", 1)]
MUTATING = {"apply", "delete", "rollout restart", "edit", "scale", "create secret generic", "create", "patch",
            "label", "annotate", "drain", "cordon", "cp"}
LOCAL = {"config use-context", "config get-contexts", "version"}
RESOURCES = [("pods", 40), ("deployments", 20), ("services", 8), ("configmaps", 5), ("secrets", 4), ("nodes", 4),
             ("ingresses", 3), ("jobs", 3), ("cronjobs", 2), ("statefulsets", 3), ("namespaces", 2),
             ("events", 3), ("daemonsets", 1), ("persistentvolumeclaims", 1), ("horizontalpodautoscalers", 1)]
APPS = ["web", "api", "worker", "frontend", "backend", "cache", "db", "queue", "auth", "gateway"]
HOSTS = [f"laptop-{n}" for n in ("alice", "bob", "carol", "dave", "erin", "frank")] + \
    [f"ci-runner-{i}" for i in range(8)] + ["bastion-1", "bastion-2", "h"]
INSTALLS = {h: f"{i:08x}-0000-4000-8000-{i:012x}" for i, h in enumerate(HOSTS)}


def _weighted(pairs):
    items, weights = zip(*pairs)
    return list(items), list(weights)


def uuid7(ms: int, rnd: random.Random) -> str:
    a = rnd.getrandbits(12)
    b = rnd.getrandbits(62)
    h = f"{ms:012x}{0x7000 | a:04x}{0x8000000000000000 | b:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def generate(count: int, *, years: float = 3.0, now: float | None = None, seed: int = 42):
    """Yield COUNT records, oldest first, ending now."""
    rnd = random.Random(seed)
    now = time.time() if now is None else now
    span = years * 365 * 86400
    verbs, vweights = _weighted(VERBS)
    resources, rweights = _weighted(RESOURCES)
    ctx_weights = [8 if c.startswith("prod") else 4 if c.startswith("staging") else 2 for c in CONTEXTS]
    ns_weights = [10 / (i + 1) for i in range(len(NAMESPACES))]
    # Use grows over time: draw times from a rising density, then sort.
    times = sorted(now - span * (1 - rnd.random() ** 0.7) for _ in range(count))
    session, session_left, host = None, 0, HOSTS[0]
    seqs: dict[str, int] = {}
    ctx_n = len(CONTEXTS)
    for t in times:
        if session_left <= 0:
            host = rnd.choice(HOSTS)
            session = f"{rnd.getrandbits(64):016x}"
            session_left = rnd.randint(5, 120)
            sess_ctx = rnd.choices(range(ctx_n), ctx_weights)[0]
            sess_ns = rnd.choices(NAMESPACES, ns_weights)[0]
        session_left -= 1
        ctx = CONTEXTS[sess_ctx if rnd.random() < 0.8 else rnd.randrange(ctx_n)]
        verb = rnd.choices(verbs, vweights)[0]
        ns = sess_ns if rnd.random() < 0.7 else rnd.choices(NAMESPACES, ns_weights)[0]
        argv = verb.split()
        resource = names = None
        if verb in LOCAL:
            if verb == "config use-context":
                argv.append(ctx)
            ns = None
        elif verb in ("logs", "exec", "port-forward", "cp"):
            name = f"{rnd.choice(APPS)}-{rnd.randrange(100)}-{rnd.getrandbits(20):05x}"
            resource, names = "pods", [name]
            argv.append(name)
            if verb == "exec":
                argv += ["-it"]
            elif verb == "port-forward":
                argv.append(f"{rnd.randrange(1024, 9999)}:8080")
        elif verb in ("apply", "diff", "create") and rnd.random() < 0.8:
            argv += ["-f", f"k8s/{rnd.choice(APPS)}/{rnd.choice(['deploy', 'svc', 'cm', 'all'])}.yaml"]
        else:
            resource = rnd.choices(resources, rweights)[0]
            if resource in ("nodes", "namespaces"):
                ns = None
            argv.append(resource)
            if verb != "get" or rnd.random() < 0.35:
                names = [f"{rnd.choice(APPS)}-{rnd.randrange(100)}"]
                argv += names
            if verb == "get" and rnd.random() < 0.2:
                argv += ["-o", rnd.choice(["yaml", "wide", "json"])]
        all_ns = verb == "get" and ns is not None and rnd.random() < 0.05
        if all_ns:
            argv.append("-A")
            ns = None
        elif ns is not None:
            argv += ["-n", ns]
        if rnd.random() < 0.3:
            argv += ["--context", ctx]
        if verb == "exec":
            argv += ["--", rnd.choice(["sh", "sh", "bash", "env"])]
        mutating = verb in MUTATING
        failed = rnd.random() < (0.12 if mutating else 0.06)
        exit_code = (1 if rnd.random() < 0.85 else rnd.choice([2, 130, 137])) if failed else 0
        dur = int(rnd.lognormvariate(6.2, 1.0)) if verb not in ("logs", "exec", "port-forward") else int(rnd.expovariate(1 / 60000))
        inst = INSTALLS[host]
        seqs[inst] = seqs.get(inst, 0) + 1
        ms = int(t * 1000)
        yield {
            "id": uuid7(ms, rnd), "install_id": inst, "seq": seqs[inst],
            "started_at": rfc3339(t), "ended_at": rfc3339(t + dur / 1000), "duration_ms": dur,
            "exit_code": exit_code, "state": "finished", "source": rnd.choice(["hook", "hook", "hook", "shim", "wrapper"]),
            "argv": argv, "command": "kubectl " + " ".join(shlex.quote(a) for a in argv),
            "verb": verb, "resource": resource, "names": names, "namespace": ns, "all_namespaces": all_ns,
            "context": ctx, "cluster": ctx + "-cluster", "server": f"https://{ctx}.k8s.example.com:6443",
            "user": f"{host.split('-')[-1]}@{ctx}", "impersonate": None, "kubeconfig": ["~/.kube/config"],
            "files": [argv[argv.index("-f") + 1]] if "-f" in argv else None,
            "mutating": mutating, "dry_run": False, "local_only": verb in LOCAL, "redacted": False,
            "unexpanded": False, "cwd": f"/home/{host.split('-')[-1]}/src/{rnd.choice(APPS)}", "host": host,
            "os_user": host.split("-")[-1], "sudo_user": None, "ssh_client": None, "session": session,
            "parent": "bash", "ci": {"system": "gitlab", "job": "deploy"} if host.startswith("ci-") else None,
            "kubectl_version": "v1.32.0", "identity": None, "audit": None, "prev_hash": None, "hash": None,
        }


def write_db(path: str, count: int, **kw) -> None:
    from kubectl_record import store

    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    conn = store.connect(path)
    store.bulk_insert(conn, (store.to_row(r) for r in generate(count, **kw)))
    # No ANALYZE: a user's store has no planner statistics either.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def write_jsonl(path: str, count: int, **kw) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for r in generate(count, **kw):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--db")
    ap.add_argument("--jsonl")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    if not args.db and not args.jsonl:
        ap.error("give --db and/or --jsonl")
    t0 = time.perf_counter()
    if args.db:
        write_db(args.db, args.count, seed=args.seed)
        print(f"{args.db}: {args.count} records in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if args.jsonl:
        t1 = time.perf_counter()
        write_jsonl(args.jsonl, args.count, seed=args.seed)
        print(f"{args.jsonl}: {args.count} records in {time.perf_counter() - t1:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
