"""Lookups, stats and import on a store of 1,000,000 generated records, as real processes.

    python bench/bench_history.py [--count 1000000] [--runs 5] [--skip-import]

The store is generated once (bench/gen_records.py) and cached under bench/results/ (git-ignored).
Each query runs as `python -m kubectl_record history …` (process start included, its output
to a pipe), RUNS times after one warm-up run; prints the median wall time, the budget and the ratio.
The import benchmark imports a generated JSONL file of COUNT records (masking included) into an
empty store, once. A report, not a test: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
RESULTS = os.path.join(REPO, "bench", "results")

QUERIES = [
    ("startup (--version)", ["--version"], 300),
    ("context+verb+since", ["history", "--context", "prod-*", "--verb", "delete", "--since", "30d"], 300),
    ("ns+failed+resource", ["history", "-n", "payments", "--failed", "--resource", "deployments"], 300),
    ("name", ["history", "--name", "web-42"], 300),
    ("host+since+mutating", ["history", "--host", "h", "--since", "7d", "--mutating"], 300),
    ("unique+since", ["history", "--unique", "--since", "1d"], 300),
    ("fts rare", ["history", "-q", "web-42"], 500),
    ("fts common", ["history", "-q", "kube-system"], 500),
    ("fts very common", ["history", "-q", "get pods"], 500),
    ("plain", ["history"], 300),
    ("stats", ["stats"], 2000),
]


def _env(home: str, spool: str) -> dict:
    env = dict(os.environ, KUBECTL_RECORD_HOME=home, KUBECTL_RECORD_RUNTIME_DIR=spool, PYTHONPATH=REPO)
    env.pop("KUBECTL_RECORD_DISABLE", None)
    env.pop("NO_COLOR", None)
    return env


def ensure_store(count: int) -> str:
    home = os.path.join(RESULTS, f"store-{count}")
    db = os.path.join(home, "records.db")
    if not os.path.exists(db):
        from bench.gen_records import write_db

        t0 = time.perf_counter()
        print(f"generating {count} records into {db} …", file=sys.stderr)
        write_db(db + ".tmp", count)
        os.replace(db + ".tmp", db)
        print(f"  done in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return home


def run_once(args: list[str], env: dict) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kubectl_record", *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    elapsed = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"bench_history: {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()[:500]}")
    return elapsed, proc.stdout.count(b"\n")


def bench_import(count: int) -> None:
    jsonl = os.path.join(RESULTS, f"records-{count}.jsonl")
    if not os.path.exists(jsonl):
        from bench.gen_records import write_jsonl

        print(f"generating {jsonl} …", file=sys.stderr)
        write_jsonl(jsonl + ".tmp", count, seed=7)
        os.replace(jsonl + ".tmp", jsonl)
    tmp = tempfile.mkdtemp(prefix="kr-bench-import-")
    try:
        env = _env(os.path.join(tmp, "state"), os.path.join(tmp, "spool"))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kubectl_record", "import", jsonl], env=env,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"bench_history: import exited {proc.returncode}: {proc.stderr[:500]}")
        t0 = time.perf_counter()
        again = subprocess.run([sys.executable, "-m", "kubectl_record", "import", jsonl], env=env,
                               capture_output=True, text=True)
        elapsed2 = time.perf_counter() - t0
        print(f"{'import ' + str(count):<22} {elapsed * 1000:>9.0f} ms  budget {60000:>6} ms  ratio {elapsed / 60:.2f}"
              f"   ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''})")
        print(f"{'re-import (no-op)':<22} {elapsed2 * 1000:>9.0f} ms  "
              f"({again.stderr.strip().splitlines()[-1] if again.stderr.strip() else ''})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--skip-import", action="store_true")
    ap.add_argument("--only", help="run only queries whose label contains this")
    args = ap.parse_args()

    home = ensure_store(args.count)
    spool = tempfile.mkdtemp(prefix="kr-bench-spool-")
    env = _env(home, spool)
    print(f"store: {home} ({os.path.getsize(os.path.join(home, 'records.db')) >> 20} MB), runs: {args.runs}")
    print(f"{'query':<22} {'median':>9}     {'budget':>9}     ratio   rows   (min … max)")
    for label, qargs, budget in QUERIES:
        if args.only and args.only not in label:
            continue
        run_once(qargs, env)  # warm-up: page cache, first migration check
        times = []
        rows = 0
        for _ in range(args.runs):
            ms, rows = run_once(qargs, env)
            times.append(ms)
        med = statistics.median(times)
        print(f"{label:<22} {med:>9.0f} ms  budget {budget:>6} ms  {med / budget:>5.2f}  {rows:>5}"
              f"   ({min(times):.0f} … {max(times):.0f})")
    if not args.skip_import and not args.only:
        bench_import(args.count)
    shutil.rmtree(spool, ignore_errors=True)


if __name__ == "__main__":
    main()
