"""Collector throughput: sustained ingest into SQLite and PostgreSQL, and a 100,000-record push.

    python bench/bench_collector.py [--records 100000] [--pg postgresql://…] [--workers 2] [--senders 2] [--repeat N]

ingest: a real `kubectl record serve` process (--workers W) on 127.0.0.1; S sender threads post
pre-built, gzip-compressed batches of chained records (as `push` sends them) from many
installations at once; records/s = records stored / wall time, counted in the database after.
baseline: the same bodies, senders and workers into bench/baseline_ingest.py (the same HTTP stack,
gunzip, parse and a bare (id, JSON) insert: the floor under any collector), in the same run.
push:   one local store with N records (made by the real store, chained), then `kubectl record
push` as a process, timed from start to exit (reading, serialising, compressing, sending, and
acknowledging every batch), and the collector's count checked.

PostgreSQL comes from --pg or KUBECTL_RECORD_TEST_PG (tests/run.sh starts one); without it only
SQLite is measured. Targets: 20,000 records/s ingest on each backend; the push in at most 10 s.
With --repeat N each figure is measured N times and the best is compared with the target (on a
shared machine, other work only ever slows a run down). A report, not a test: it prints
figures, and says whether the targets were met.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from kubectl_record import store  # noqa: E402
from tests.collectorkit import (  # noqa: E402
    BASE, Collector, Local, child_env, free_port, issue, synthetic, wait_listening)

INGEST_TARGET = 20_000
PUSH_TARGET_S = 10.0


def chained_batches(total: int, installs: int, batch: int) -> list[bytes]:
    """Gzip-compressed upload bodies: INSTALLS chains of records, interleaved batch by batch."""
    per = total // installs
    chains = []
    for i in range(installs):
        inst = str(uuid.uuid4())
        prev, out = store.GENESIS, []
        for n, r in enumerate(synthetic(per, prefix=f"b{i}-{inst[:8]}"), start=1):
            r = {**BASE, **r, "install_id": inst, "seq": n, "prev_hash": prev}
            r["hash"] = prev = store.chain_hash(prev, r)
            out.append(r)
        chains.append(out)
    bodies = []
    for start in range(0, per, batch):
        for c in chains:
            part = c[start:start + batch]
            bodies.append(gzip.compress(json.dumps({"records": part, "tombstones": []}).encode(), 1))
    return bodies


def post_all(url: str, token: str | None, bodies: list[bytes], senders: int) -> float:
    """Post every body from SENDERS connections at once; the wall time."""
    import requests

    queue = list(reversed(bodies))
    lock = threading.Lock()
    errors = []

    def sender():
        s = requests.Session()
        s.headers.update({"Content-Encoding": "gzip", "Content-Type": "application/json"})
        if token:
            s.headers["Authorization"] = f"Bearer {token}"
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop()
            r = s.post(url, data=body, timeout=120)
            if r.status_code != 200:
                errors.append(r.text[:200])

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"ingest errors: {errors[:3]}")
    return elapsed


def bench_ingest(db: str, bodies: list[bytes], expected: int, workers: int, senders: int) -> float:
    c = Collector(db, args=("--workers", str(workers))).start()
    try:
        token = issue(db, "bench")
        time.sleep(0.5 * workers)  # let every worker finish importing before the clock starts
        elapsed = post_all(c.url + "/v1/ingest", token, bodies, senders)
    finally:
        c.kill()
    from tests.collectorkit import stored

    count = len(stored(db))
    if count != expected:
        raise SystemExit(f"stored {count}, expected {expected}")
    return expected / elapsed


def bench_baseline(db: str, bodies: list[bytes], expected: int, workers: int, senders: int) -> float:
    """The same bodies into bench/baseline_ingest.py: HTTP, gunzip, parse and a bare insert."""
    from bench.baseline_ingest import create_table

    create_table(db)
    port = free_port()
    env = dict(child_env(), BASELINE_DB=db)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.baseline_ingest:app", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers), "--log-level", "warning"],
                            env=env, cwd=REPO, start_new_session=True)
    try:
        wait_listening(port, proc=proc)
        time.sleep(0.5 * workers)
        elapsed = post_all(f"http://127.0.0.1:{port}/v1/ingest", None, bodies, senders)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
    count = _count(db)
    if count != expected:
        raise SystemExit(f"baseline stored {count}, expected {expected}")
    return expected / elapsed


def _count(db: str) -> int:
    if db.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM records").fetchone()[0]
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM records").fetchone()[0]


def bench_push(db: str, records: int, tmp: str, workers: int) -> float:
    local = Local(__import__("pathlib").Path(tmp), "pusher")
    for start in range(0, records, 20_000):
        local.add(synthetic(min(20_000, records - start), start=start))
    c = Collector(db, args=("--workers", str(workers))).start()
    try:
        token = issue(db, "pusher")
        time.sleep(0.5 * workers)
        env = local.env(c.url, token)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kubectl_record", "push", "--wait"], env=env,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0 or f"pushed {records}" not in proc.stderr:
            raise SystemExit(f"push failed: {proc.stderr}")
    finally:
        c.kill()
    return elapsed


def pg_database(base: str) -> tuple[str, callable]:
    import psycopg

    name = "krbench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop():
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return base.rpartition("/")[0] + "/" + name, drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--installs", type=int, default=8, help="installations uploading at once (ingest)")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2, help="collector worker processes")
    ap.add_argument("--senders", type=int, default=2, help="concurrent uploading connections (ingest)")
    ap.add_argument("--pg", default=os.environ.get("KUBECTL_RECORD_TEST_PG"))
    ap.add_argument("--repeat", type=int, default=1, help="measure each figure N times, judge the best")
    args = ap.parse_args()
    os.environ.update({k: v for k, v in child_env().items() if k == "PYTHONPATH"})

    tmp = tempfile.mkdtemp(prefix="kr-bench-collector-")
    print(f"building {args.records} chained records in {args.installs} installations …", flush=True)
    bodies = chained_batches(args.records, args.installs, args.batch)
    expected = args.records // args.installs * args.installs
    backends = [("sqlite", lambda: (os.path.join(tmp, f"c-{uuid.uuid4().hex[:6]}.db"), lambda: None))]
    if args.pg:
        backends.append(("postgresql", lambda: pg_database(args.pg)))
    else:
        print("PostgreSQL: not measured (no --pg / KUBECTL_RECORD_TEST_PG)")
    ok = True
    for name, make in backends:
        rates, bases, times = [], [], []
        for _ in range(args.repeat):
            db, drop = make()
            try:
                rates.append(bench_ingest(db, bodies, expected, args.workers, args.senders))
            finally:
                drop()
            db, drop = make()
            try:
                bases.append(bench_baseline(db, bodies, expected, args.workers, args.senders))
            finally:
                drop()
            db, drop = make()
            try:
                times.append(bench_push(db, args.records, tempfile.mkdtemp(dir=tmp), args.workers))
            finally:
                drop()
        rate, elapsed = max(rates), min(times)
        ok &= rate >= INGEST_TARGET and elapsed <= PUSH_TARGET_S
        print(f"ingest  {name:10s} {rate:10,.0f} records/s  (target {INGEST_TARGET:,}: "
              f"{'met' if rate >= INGEST_TARGET else 'MISSED'}; runs: {', '.join(f'{r:,.0f}' for r in rates)})")
        print(f"  baseline (bench/baseline_ingest.py, same bodies) {max(bases):,.0f} records/s; runs: "
              f"{', '.join(f'{b:,.0f}' for b in bases)}; collector/baseline, run by run: "
              f"{', '.join(f'{r / b:.2f}' for r, b in zip(rates, bases))}")
        print(f"push    {name:10s} {args.records:,} records in {elapsed:5.2f} s (target {PUSH_TARGET_S:.0f} s: "
              f"{'met' if elapsed <= PUSH_TARGET_S else 'MISSED'}; runs: {', '.join(f'{t:.2f}' for t in times)})",
              flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print("all targets met" if ok else "some targets missed")


if __name__ == "__main__":
    main()
