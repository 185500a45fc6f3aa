"""`kubectl record serve` and `kubectl record token create`: the collector's command line."""

from __future__ import annotations

import ipaddress
import os

import click
from click import UsageError  # bad usage: exit 2, as the contract has it

from ..cli import Failure


class _BadFile(UsageError):
    """A usage error about a file's content: exit 2, one line (no usage text)."""

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _open(db: str):
    from .storage import StorageError, open_storage

    try:
        return open_storage(db)
    except StorageError as exc:
        raise Failure(str(exc)) from exc


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen must be HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--db", required=True, help="SQLite file, or a postgresql:// URL.")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to listen on.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate (chain).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key.")
@click.option("--insecure-listen", is_flag=True, help="Allow plain HTTP on a non-loopback address.")
@click.option("--max-body", type=click.IntRange(min=1024), default=16 * 1024 * 1024, show_default=True,
              help="Largest request body in bytes, before and after decompression (413 beyond).")
@click.option("--max-concurrency", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests handled at once per worker; more get 503, which keeps memory bounded under a flood.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (uploads are CPU-bound: one per core).")
@click.option("--alerts", "alerts_file", metavar="RULES.yaml",
              help="Evaluate these alert rules (see `kubectl record alerts check`) on records as they arrive. "
                   "Each worker and each instance evaluates and groups only the records it receives: a burst "
                   "split across them may give one alert per worker or instance.")
@click.option("--forward", "forward_urls", multiple=True, metavar="URL",
              help="Forward the records stored here to this destination (opensearch://, elasticsearch://, otlp://, "
                   "loki://, webhook+https://; the URL forms of `push --to`); repeatable.")
@click.option("--forward-config", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="TOML with a [destinations] table shaped like a workstation's config: its urls are forwarded "
                   "to as well, and its [destinations.options.\"URL\"] tables (api_key, ca_bundle, tenant …) "
                   "apply to --forward URLs too.")
@click.option("--forward-interval", type=click.FloatRange(min=0.01), default=5.0, hidden=True)
@click.option("--forward-lease", type=click.FloatRange(min=0.1), default=60.0, hidden=True)
@click.option("--forward-backoff-base", type=click.FloatRange(min=0), default=1.0, hidden=True)
@click.option("--forward-backoff-cap", type=click.FloatRange(min=0), default=300.0, hidden=True)
@click.option("--audit-delay", type=click.FloatRange(min=0.05), default=2.0, show_default=True, metavar="SECONDS",
              help="Audit webhook: seconds from a cluster's first new batch or record to its central correlation "
                   "(what arrives meanwhile is correlated together).")
@click.option("--unmatched-after", type=click.FloatRange(min=0), default=300.0, show_default=True, metavar="SECONDS",
              help="With --alerts: how long a server-side kubectl request waits for its record (an upload may come "
                   "later) before audit rules see it as `unmatched: true`.")
def serve(db: str, listen: str, tls_cert: str | None, tls_key: str | None, insecure_listen: bool,
          max_body: int, max_concurrency: int, workers: int, alerts_file: str | None, forward_urls: tuple[str, ...],
          forward_config: str | None, forward_interval: float, forward_lease: float, forward_backoff_base: float,
          forward_backoff_cap: float, audit_delay: float, unmatched_after: float) -> None:
    """Run the team collector (HTTPS with --tls-cert/--tls-key; plain HTTP on loopback only).

    With --alerts, records new to the collector go through the rules after each upload is
    answered; a retried upload does not alert again. Open groups are delivered when the
    collector stops.

    With --forward, records the collector stores, and records whose outcome changes later, are
    queued per destination in its database, in the transaction that stores them, and delivered
    from there by every worker and instance sharing it (GET /v1/forward/status shows how far).
    """
    host, port = _split_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not _is_loopback(host) and not insecure_listen:
        raise UsageError(f"refusing plain HTTP on {host}: give --tls-cert/--tls-key, or --insecure-listen")
    if alerts_file:
        from ..alerts import RulesError, load_rules_file

        try:
            load_rules_file(alerts_file)
        except RulesError as exc:
            raise _BadFile(f"--alerts: {exc}") from None
    if forward_urls or forward_config:
        from ..destinations import DestinationError
        from .forward import open_destinations

        try:  # refuse a bad URL, option or file now, not in every worker
            if not open_destinations(forward_urls, forward_config):
                raise _BadFile("--forward-config: its [destinations] table lists no urls, and no --forward is given")
        except DestinationError as exc:
            raise _BadFile(f"--forward: {exc}") from None
    import uvicorn

    from .app import ALERTS_ENV, AUDIT_DELAY_ENV, DB_ENV, FORWARD_ENV, MAX_BODY_ENV, SUPERVISOR_ENV, UNMATCHED_AFTER_ENV

    # Open once here: the schema is created and a bad --db fails with one line before serving.
    _open(db).close()
    # Each worker builds its app from these (uvicorn imports the factory in every worker).
    os.environ[DB_ENV] = db
    os.environ[MAX_BODY_ENV] = str(max_body)
    os.environ[AUDIT_DELAY_ENV] = str(audit_delay)
    os.environ[UNMATCHED_AFTER_ENV] = str(unmatched_after)
    if workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    else:
        os.environ.pop(SUPERVISOR_ENV, None)
    if alerts_file:
        os.environ[ALERTS_ENV] = os.path.abspath(alerts_file)
    else:
        os.environ.pop(ALERTS_ENV, None)
    if forward_urls or forward_config:
        from .forward import to_env

        os.environ[FORWARD_ENV] = to_env(forward_urls, forward_config and os.path.abspath(forward_config),
                                         interval=forward_interval, lease=forward_lease,
                                         backoff_base=forward_backoff_base, backoff_cap=forward_backoff_cap)
    else:
        os.environ.pop(FORWARD_ENV, None)
    scheme = "https" if tls_cert else "http"
    click.echo(f"kubectl-record collector on {scheme}://{listen} ({'PostgreSQL' if db.startswith('postgres') else db})",
               err=True)
    uvicorn.run("kubectl_record.collector.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                ssl_certfile=tls_cert, ssl_keyfile=tls_key, log_level="warning", limit_concurrency=max_concurrency,
                timeout_keep_alive=5, access_log=False, server_header=False)


@click.group()
def token() -> None:
    """Collector tokens."""


@token.command("create")
@click.option("--db", required=True, help="The collector's database: SQLite file or postgresql:// URL.")
@click.option("--user", required=True, help="Whose token: stamped on every record it uploads.")
@click.option("--role", required=True, type=click.Choice(["writer", "auditor", "admin", "cluster"]))
@click.option("--scope", help="Auditors: the clusters they may read, a glob (default: every cluster).")
@click.option("--cluster", help="Cluster tokens: the cluster's name (auditor scopes match it).")
@click.option("--server", help="Cluster tokens: its API server URL, as in the records' `server`.")
def token_create(db: str, user: str, role: str, scope: str | None, cluster: str | None, server: str | None) -> None:
    """Issue a token and print it as the last line (only its hash is stored).

    Role `cluster` is a kube-apiserver's audit webhook credential (--audit-webhook-config-file):
    it may only post audit batches, which the collector binds to --cluster and its --server."""
    from .auth import create_token

    storage = _open(db)
    try:
        secret = create_token(storage, user, role, scope, cluster=cluster, server=server)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        storage.close()
    what = f"{role} token for {user}" + (f" (clusters {scope})" if scope else "") + \
        (f" (audit webhook of {cluster})" if cluster else "")
    click.echo(f"# {what}; it is shown only once", err=True)
    click.echo(secret)
