"""`kubectl record audit import|correlate|unmatched|policy`."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import click

from ..cli import EXIT_USAGE, Failure, open_store


class BadInput(click.ClickException):
    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group()
def audit() -> None:
    """Join the API server's audit log to the records (see `audit import --help`)."""


def resolve_cluster(name: str) -> str:
    """A kubeconfig cluster or context name → its server URL."""
    from ..kubeconfig import _parse

    env = os.environ.get("KUBECONFIG")
    files = [p for p in env.split(os.pathsep) if p] if env else [os.path.expanduser("~/.kube/config")]
    clusters, contexts = {}, {}
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                doc = _parse(f.read()) or {}
        except Exception:
            continue
        for c in doc.get("clusters") or ():
            if isinstance(c, dict) and c.get("name") not in clusters:
                clusters[c.get("name")] = (c.get("cluster") or {}).get("server")
        for c in doc.get("contexts") or ():
            if isinstance(c, dict) and c.get("name") not in contexts:
                contexts[c.get("name")] = (c.get("context") or {}).get("cluster")
    if name in clusters and clusters[name]:
        return clusters[name]
    if name in contexts and clusters.get(contexts[name]):
        return clusters[contexts[name]]
    raise BadInput(f"no kubeconfig cluster or context named {name!r} (with a server URL)")


def _server(server: str | None, cluster: str | None) -> str:
    from .correlate import normalize_server

    if server and cluster:
        raise BadInput("give --server or --cluster, not both")
    if cluster:
        server = resolve_cluster(cluster)
    if not server:
        raise BadInput("bind the source to a cluster with --server URL or --cluster NAME (audit events carry no cluster name)")
    return normalize_server(server)


def _report(where: str, c, quiet: bool = False) -> None:
    if quiet:
        return
    parts = [f"{c.events} events", f"{c.stored} new"]
    if c.duplicates:
        parts.append(f"{c.duplicates} repeated (ignored)")
    if c.malformed:
        parts.append(f"{c.malformed} malformed")
    if c.oversized:
        parts.append(f"{c.oversized} oversized")
    if c.skipped:
        parts.append(f"{c.skipped} not audit events")
    click.echo(f"{where}: " + ", ".join(parts))
    for err in c.first_errors:
        click.echo(f"  malformed: {err}", err=True)


def run_import(conn, server: str, paths: list[str], *, progress: bool = False, correlate_after: bool = True,
               grace: float | None = None, quiet: bool = False) -> dict:
    """Import PATHS for SERVER then re-correlate what they touch. Returns the counters and summary."""
    from .formats import Counters
    from .importer import Progress, Sink, expand, import_file, import_stream

    totals = Counters()
    lo = hi = None
    # Fewer, larger WAL checkpoints while importing (each one waits for the disk).
    conn.execute("PRAGMA wal_autocheckpoint = 16384")
    files = expand(paths)
    prog = Progress(sum(os.path.getsize(p) for p in files if p != "-" and os.path.exists(p)), progress)
    for p in files:
        c = Counters()
        sink = Sink(conn, server, c)
        if p == "-":
            import_stream(sys.stdin.buffer, sink, c)
        else:
            if not os.path.exists(p):
                raise BadInput(f"{p}: no such file")
            import_file(conn, p, sink, c, prog)
        if sink.lo is not None:
            lo = sink.lo if lo is None else min(lo, sink.lo)
            hi = sink.hi if hi is None else max(hi, sink.hi)
        prog.close() if progress and p == files[-1] else None
        _report(p, c, quiet)
        for k, v in c.as_dict().items():
            setattr(totals, k, getattr(totals, k) + v)
    # make sure the cluster is known even when no event was new
    conn.execute("INSERT OR IGNORE INTO audit_clusters (server, events, updated) VALUES (?, 0, ?)", (server, time.time()))
    summary = None
    if correlate_after:
        summary = correlate_pending(conn, server, lo, hi, grace=grace)
        if not quiet:
            _report_summary(server, summary)
    conn.execute("PRAGMA wal_autocheckpoint = 1000")
    return {"counters": totals.as_dict(), "summary": summary}


def correlate_pending(conn, server: str, lo: float | None, hi: float | None, *, grace: float | None = None,
                      whole: bool = False):
    """Fill identities, then re-correlate the records the new events (and still-pending records) touch."""
    from . import correlate as corr, identity
    from ..store import iter_records
    from .formats import parse_ts

    rows = list(iter_records(conn, "identity IS NULL AND local_only = 0 AND server IN (?, ?)", (server, server + "/"),
                             order="started_at DESC", limit=5000))
    if rows:
        identity.fill(conn, rows, only_bound=False)
    since = until = None
    if not whole:
        pend = conn.execute("SELECT min(started_at) FROM records WHERE server IN (?, ?) AND (audit IS NULL OR"
                            " json_extract(audit, '$.status') IN ('pending', 'no_source', 'missing', 'partial', 'ambiguous'))",
                            (server, server + "/")).fetchone()[0]
        cands = [x for x in ((lo - corr.MAX_SKEW - 3600) if lo is not None else None, parse_ts(pend) if pend else None)
                 if x is not None]
        since = min(cands) if cands else None
        if since is None:
            return corr.Summary()
    kw = {"grace": grace} if grace is not None else {}
    summary = corr.correlate(conn, server, since, until, **kw)
    corr.mark_unbound(conn)
    return summary


def _report_summary(server: str, s) -> None:
    if not s or not s.records:
        click.echo(f"{server}: no records to correlate")
        return
    st = ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items()))
    click.echo(f"{server}: correlated {s.records} record(s): {st}; server clock {s.skew:+.3f} s"
               f" (from {s.skew_support} link(s))")


@audit.command("import")
@click.option("--server", help="The API server URL these events come from.")
@click.option("--cluster", help="A kubeconfig cluster or context whose server URL these events come from.")
@click.option("--follow", is_flag=True, help="Keep reading the live log across rotation (Ctrl-C to stop).")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between looks when following.")
@click.option("--idle-exit", type=float, default=None, help="Stop following after this many idle seconds.")
@click.option("--listen", metavar="HOST:PORT", help="Receive webhook deliveries (EventList POSTs) instead of files.")
@click.option("--grace", type=float, default=None, help="Seconds the source must be past a run before `missing`.")
@click.option("--no-correlate", is_flag=True, help="Only import.")
@click.argument("paths", nargs=-1)
def import_cmd(server, cluster, follow, poll, idle_exit, listen, grace, no_correlate, paths) -> None:
    """Import audit events from PATHS (files, rotated sets, .gz, directories, - for stdin) and
    link them to the records: JSON lines of audit.k8s.io Events, webhook EventLists, GKE Cloud
    Audit LogEntries (gcloud logging read --format=json), AKS diagnostic records, EKS CloudWatch
    exports (aws logs filter-log-events JSON, S3 export lines). Positions are saved: importing
    the same files again reads only what is new."""
    srv = _server(server, cluster)
    if not paths and not listen:
        raise BadInput("give PATH… (or - for stdin, or --listen HOST:PORT)")
    conn = open_store()
    try:
        if listen:
            _listen(conn, srv, listen, idle_exit, grace)
            return
        if not follow:
            run_import(conn, srv, list(paths), progress=sys.stderr.isatty(), correlate_after=not no_correlate,
                       grace=grace)
            return
        _follow(conn, srv, list(paths), poll, idle_exit, grace, no_correlate)
    finally:
        conn.close()


def _follow(conn, server, paths, poll, idle_exit, grace, no_correlate) -> None:
    from .importer import rotation_set

    stop = {"now": False}

    def handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    last_new = time.monotonic()
    try:
        while not stop["now"]:
            files = []
            for p in paths:
                if os.path.isdir(p):
                    files.append(p)
                else:
                    files.extend(rotation_set(p))
            res = run_import(conn, server, files, correlate_after=False, quiet=True) if files else None
            new = res["counters"]["stored"] if res else 0
            if new:
                last_new = time.monotonic()
                click.echo(f"{server}: +{new} event(s)")
            if new or not no_correlate:
                if not no_correlate:
                    s = correlate_pending(conn, server, None, None, grace=grace)
                    if new:
                        _report_summary(server, s)
            if idle_exit is not None and time.monotonic() - last_new >= idle_exit:
                break
            time.sleep(poll)
    except KeyboardInterrupt:
        pass


def _listen(conn, server, listen, idle_exit, grace) -> None:
    """A webhook backend target: each POST body (an EventList) is imported; 200 only after the
    events are stored, so the API server retries what failed; repeats are ignored."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from .formats import Counters
    from .importer import Sink, import_body

    host, _, port = listen.rpartition(":")
    lock = threading.Lock()
    state = {"last": time.monotonic(), "lo": None, "hi": None}

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            c = Counters()
            with lock:
                try:
                    sink = Sink(conn, server, c)
                    import_body(body, sink, c)
                    if sink.lo is not None:
                        state["lo"] = sink.lo if state["lo"] is None else min(state["lo"], sink.lo)
                        state["hi"] = sink.hi if state["hi"] is None else max(state["hi"], sink.hi)
                    state["last"] = time.monotonic()
                except Exception as exc:  # the server will retry
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(str(exc).encode())
                    return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            click.echo(f"webhook: {c.events} events, {c.stored} new, {c.duplicates} repeated, {c.malformed} malformed")

    httpd = HTTPServer((host or "127.0.0.1", int(port)), H)
    httpd.timeout = 0.5
    click.echo(f"listening on http://{httpd.server_address[0]}:{httpd.server_address[1]}", err=True)
    sys.stderr.flush()
    try:
        while True:
            httpd.handle_request()
            if state["lo"] is not None and time.monotonic() - state["last"] > 1.0:
                with lock:
                    s = correlate_pending(conn, server, state["lo"], state["hi"], grace=grace)
                    _report_summary(server, s)
                    state["lo"] = state["hi"] = None
            if idle_exit is not None and time.monotonic() - state["last"] >= idle_exit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


@audit.command("correlate")
@click.option("--server", help="Only this cluster.")
@click.option("--cluster")
@click.option("--grace", type=float, default=None)
def correlate_cmd(server, cluster, grace) -> None:
    """Re-link every record of the bound clusters (after a change of identity or policy)."""
    conn = open_store()
    try:
        servers = [_server(server, cluster)] if (server or cluster) else \
            [r[0] for r in conn.execute("SELECT server FROM audit_clusters")]
        if not servers:
            raise Failure("no audit source imported yet (kubectl record audit import --server URL PATH)")
        for srv in servers:
            _report_summary(srv, correlate_pending(conn, srv, None, None, grace=grace, whole=True))
    finally:
        conn.close()


@audit.command("unmatched")
@click.option("--server", help="Only this cluster.")
@click.option("--cluster")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--gap", type=float, default=2.0, show_default=True, help="Seconds between events that start a new group.")
def unmatched_cmd(server, cluster, output, gap) -> None:
    """Server-side kubectl activity with no local record (recorder bypassed, another machine),
    changing local records with no audit evidence, and other clients by userAgent and user."""
    from .unmatched import unmatched

    conn = open_store()
    try:
        srv = _server(server, cluster) if (server or cluster) else None
        report = unmatched(conn, srv, gap=gap)
    finally:
        conn.close()
    if output == "json":
        click.echo(json.dumps(report, indent=2))
        return
    from .unmatched import render

    for line in render(report):
        click.echo(line)


@audit.command("policy")
@click.option("--check", "check_file", type=click.Path(dir_okay=False), help="Say which kubectl activity this policy misses.")
@click.option("--user", default="kubectl-user", show_default=True, help="User the kubectl requests are evaluated as.")
@click.option("--group", "groups", multiple=True, help="Groups of that user (default system:authenticated).")
def policy_cmd(check_file, user, groups) -> None:
    """Print the recommended audit Policy, or check an existing one (--check FILE)."""
    from ..audit_policy import PolicyError
    from .policy import RECOMMENDED, check, load_policy_file

    if not check_file:
        click.echo(RECOMMENDED, nl=False)
        return
    try:
        pol = load_policy_file(check_file)
    except FileNotFoundError:
        raise BadInput(f"{check_file}: no such file")
    except (PolicyError, ValueError) as exc:
        raise BadInput(f"{check_file}: {exc}")
    for w in pol.warnings:
        click.echo(f"warning: {w}", err=True)
    findings = check(pol, user, tuple(groups) or ("system:authenticated",))
    words = {"missed": "MISSED     ", "no-response": "NO RESULT  ", "secret-body": "LEAKS BODY "}
    why = {"missed": "level None: not logged, cannot be correlated",
           "no-response": "only RequestReceived logged: no status code or decision",
           "secret-body": "credentials written to the audit log"}
    for f in findings:
        p = f.probe
        what = p.path or "/".join(x for x in (p.group or "core", p.resource + (f"/{p.subresource}" if p.subresource else "")) if x)
        click.echo(f"{words[f.problem]}{p.command}: {p.verb} {what} ({f.level}; {why[f.problem]})")
    missed = sum(1 for f in findings if f.problem == "missed")
    from .policy import PROBES

    click.echo(f"{len(PROBES) - missed}/{len(PROBES)} kinds of kubectl request logged;"
               f" {len(findings)} finding(s)")
