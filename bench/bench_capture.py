"""What recording adds to one kubectl run: bare kubectl, the shim and the wrapper, side by side.

    python bench/bench_capture.py [--runs 30] [--gap 0.2] [--big-kubeconfig]

Each round runs every variant once, in a rotating order, with the same workload
(`kubectl version --client`); a short gap after each run lets the background ingester of the
previous recorded run finish, as it would between commands typed by a person (set --gap 0 to
see back-to-back figures). Prints the median wall time of each variant, what it adds to bare
kubectl, and the ratio. A report, not a test: nothing here passes or fails.
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
from bench.kubeconfigs import write_big_kubeconfig  # noqa: E402

BUDGET_MS = {"shim": 10.0, "wrapper": 30.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="rounds (each runs every variant once)")
    ap.add_argument("--gap", type=float, default=0.2, help="seconds of idle time after each run")
    ap.add_argument("--big-kubeconfig", action="store_true", help="use a 200 KB kubeconfig (40 clusters)")
    args = ap.parse_args()

    kubectl = shutil.which("kubectl")
    if not kubectl:
        sys.exit("bench_capture: kubectl not found on PATH")
    tmp = tempfile.mkdtemp(prefix="kr-bench-")
    env = dict(os.environ, HOME=tmp, KUBECTL_RECORD_HOME=f"{tmp}/state",
               KUBECTL_RECORD_RUNTIME_DIR=f"{tmp}/spool", KUBECACHEDIR=f"{tmp}/cache")
    env.pop("KUBECTL_RECORD_DISABLE", None)
    os.makedirs(f"{tmp}/.kube")
    if args.big_kubeconfig:
        write_big_kubeconfig(f"{tmp}/.kube/config")
    else:
        with open(f"{tmp}/.kube/config", "w") as f:
            f.write("apiVersion: v1\nkind: Config\ncurrent-context: dev\ncontexts:\n- name: dev\n"
                    "  context: {cluster: dev, user: dev}\nclusters:\n- name: dev\n"
                    "  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: dev\n  user: {token: x}\n")
    py = [sys.executable, "-m", "kubectl_record"]
    subprocess.run([*py, "setup-launchers", "--bin", f"{tmp}/bin"], env=env, check=True, capture_output=True)
    shim_dir = subprocess.run([*py, "shim", "install", "--dir", f"{tmp}/shim"], env=env, check=True,
                              capture_output=True, text=True).stdout.split()[-1]
    workload = ["version", "--client"]
    variants = {
        "bare": [kubectl, *workload],
        "shim": [f"{shim_dir}/kubectl", *workload],
        "wrapper": [f"{tmp}/bin/kubectl-record", "--", *workload],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for _ in range(2):  # warm the page cache and kubectl's dispatcher once per variant
        for name in names:
            subprocess.run(variants[name], env=env, stdout=subprocess.DEVNULL, check=True)
    for i in range(args.runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            subprocess.run(variants[name], env=env, stdout=subprocess.DEVNULL, check=True)
            times[name].append((time.perf_counter() - t0) * 1000)
            time.sleep(args.gap)
    recorded = subprocess.run([*py, "history", "-o", "jsonl"], env=env, capture_output=True, text=True).stdout
    base = statistics.median(times["bare"])
    print(f"kubectl-record capture benchmark: {args.runs} alternating rounds of `kubectl {' '.join(workload)}`,"
          f" gap {args.gap}s, kubeconfig {'200 KB' if args.big_kubeconfig else 'small'}")
    print(f"{'variant':<10}{'median ms':>10}{'p90 ms':>9}{'added ms':>10}{'ratio':>8}{'budget':>10}")
    for name in names:
        med = statistics.median(times[name])
        p90 = statistics.quantiles(times[name], n=10)[-1]
        budget = f"+{BUDGET_MS[name]:.0f} ms" if name in BUDGET_MS else ""
        print(f"{name:<10}{med:>10.1f}{p90:>9.1f}{med - base:>+10.1f}{med / base:>8.3f}{budget:>10}")
    print(f"records stored: {len(recorded.splitlines())} (expected {2 * (args.runs + 2)})")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
