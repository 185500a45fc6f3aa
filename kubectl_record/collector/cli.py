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
def serve(db: str, listen: str, tls_cert: str | None, tls_key: str | None, insecure_listen: bool,
          max_body: int, max_concurrency: int, workers: int, alerts_file: str | None) -> None:
    """Run the team collector (HTTPS with --tls-cert/--tls-key; plain HTTP on loopback only).

    With --alerts, records new to the collector go through the rules after each upload is
    answered; a retried upload does not alert again. Open groups are delivered when the
    collector stops.
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
    import uvicorn

    from .app import ALERTS_ENV, DB_ENV, MAX_BODY_ENV, SUPERVISOR_ENV

    # Open once here: the schema is created and a bad --db fails with one line before serving.
    _open(db).close()
    # Each worker builds its app from these (uvicorn imports the factory in every worker).
    os.environ[DB_ENV] = db
    os.environ[MAX_BODY_ENV] = str(max_body)
    if workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    else:
        os.environ.pop(SUPERVISOR_ENV, None)
    if alerts_file:
        os.environ[ALERTS_ENV] = os.path.abspath(alerts_file)
    else:
        os.environ.pop(ALERTS_ENV, None)
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
@click.option("--role", required=True, type=click.Choice(["writer", "auditor", "admin"]))
@click.option("--scope", help="Auditors: the clusters they may read, a glob (default: every cluster).")
def token_create(db: str, user: str, role: str, scope: str | None) -> None:
    """Issue a token and print it as the last line (only its hash is stored)."""
    from .auth import create_token

    storage = _open(db)
    try:
        secret = create_token(storage, user, role, scope)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        storage.close()
    what = f"{role} token for {user}" + (f" (clusters {scope})" if scope else "")
    click.echo(f"# {what}; it is shown only once", err=True)
    click.echo(secret)
