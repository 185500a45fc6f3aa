"""python -m tests.apiserver --port 0 --audit-log PATH --policy FILE ...

Prints the server's URL as the first line of stdout, then serves until
SIGINT/SIGTERM (flushing buffered audit events on the way out)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from kubectl_record.audit_policy import PolicyError, load_policy_file

from .audit import AuditOptions, OffsetClock
from .server import ApiServer, ServerOptions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.apiserver", description="kubectl-record's test API server (HTTPS, self-signed)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--policy", metavar="FILE", help="audit.k8s.io/v1 Policy (default: Metadata for secrets/configmaps, RequestResponse otherwise)")
    ap.add_argument("--audit-log", metavar="PATH", help="JSON lines audit log")
    ap.add_argument("--audit-log-maxsize", type=float, default=0, metavar="MB", help="rotate at this size, like kube-apiserver (megabytes)")
    ap.add_argument("--audit-log-maxbytes", type=int, default=0, metavar="N", help="rotate at this many bytes (overrides --audit-log-maxsize)")
    ap.add_argument("--audit-log-maxbackup", type=int, default=0, metavar="N", help="keep at most N rotated files (0: all)")
    ap.add_argument("--audit-webhook-url", metavar="URL", help="POST EventList batches here")
    ap.add_argument("--audit-webhook-batch-max-size", type=int, default=400)
    ap.add_argument("--audit-webhook-batch-max-wait", type=float, default=30.0, metavar="SECONDS")
    ap.add_argument("--skew", type=float, default=0.0, metavar="SECONDS", help="added to every audit timestamp")
    ap.add_argument("--lag", type=float, default=0.0, metavar="SECONDS", help="hold events back this long before delivery")
    ap.add_argument("--lag-jitter", type=float, default=0.0, metavar="SECONDS", help="plus a random 0..N seconds per event")
    ap.add_argument("--reorder", action="store_true", help="deliver events that become due together in random order")
    ap.add_argument("--duplicate-rate", type=float, default=0.0, help="chance a webhook batch is posted again")
    ap.add_argument("--log-duplicate-rate", type=float, default=0.0, help="chance a log line is written again")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ground-truth", metavar="PATH", help="JSON lines: auditID, User-Agent, Kubectl-Session, Kubectl-Command per request")
    ap.add_argument("--kubeconfig", metavar="PATH", help="write a kubeconfig for this server here")
    ap.add_argument("--user", default="alice", help="the kubeconfig's current user (alice, bob, admin)")
    ap.add_argument("--cert-dir", metavar="DIR", help="where to write the self-signed certificate")
    args = ap.parse_args(argv)

    policy = None
    if args.policy:
        try:
            policy = load_policy_file(args.policy)
        except PolicyError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    max_bytes = args.audit_log_maxbytes or (int(args.audit_log_maxsize * 1024 * 1024) if args.audit_log_maxsize else None)
    opts = ServerOptions(
        host=args.host, port=args.port, policy=policy, clock=OffsetClock(), ground_truth_path=args.ground_truth,
        cert_dir=args.cert_dir,
        audit=AuditOptions(log_path=args.audit_log, log_max_bytes=max_bytes, log_max_backups=args.audit_log_maxbackup,
                           webhook_url=args.audit_webhook_url, batch_size=args.audit_webhook_batch_max_size,
                           batch_max_wait=args.audit_webhook_batch_max_wait, skew=args.skew, lag=args.lag, lag_jitter=args.lag_jitter,
                           reorder=args.reorder, duplicate_rate=args.duplicate_rate,
                           log_duplicate_rate=args.log_duplicate_rate, seed=args.seed))
    server = ApiServer(opts).start()
    if args.kubeconfig:
        server.kubeconfig(args.kubeconfig, user=args.user)
    print(server.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
