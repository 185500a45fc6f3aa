"""The `kubectl record` command line: the CLI edge, where typed errors become one-line messages."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from . import __version__, ingest, paths, store
from .timefmt import age, human_duration

EXIT_FAILED = 1
EXIT_USAGE = 2


class Failure(click.ClickException):
    """An operation failed: one line on stderr, exit 1."""

    exit_code = EXIT_FAILED

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def open_store():
    """Ingest what is spooled, then open the store: every reader sees runs that have ended."""
    result = ingest.ingest()
    try:
        return store.connect()
    except store.StoreError as exc:
        raise Failure(str(exc)) from exc
    finally:
        if result.error:
            click.echo(f"warning: {result.error}", err=True)


# Commands that live in their own modules, imported only when used (or listed by --help).
LAZY_COMMANDS = {
    "history": "kubectl_record.history:history",
    "show": "kubectl_record.history:show",
    "stats": "kubectl_record.stats:stats",
    "export": "kubectl_record.transfer:export",
    "import": "kubectl_record.transfer:import_",
    "delete": "kubectl_record.retention:delete",
    "prune": "kubectl_record.retention:prune",
    "init": "kubectl_record.hooks:init_command",
    "config": "kubectl_record.settings:config",
    "audit": "kubectl_record.audit.cli:audit",
    "serve": "kubectl_record.collector.cli:serve",
    "token": "kubectl_record.collector.cli:token",
    "push": "kubectl_record.sync:push",
    "sync": "kubectl_record.sync:sync",
    "alerts": "kubectl_record.alerts:alerts",
    "completion": "kubectl_record.completion:completion",
}


class LazyGroup(click.Group):
    """Loads a command's module on first use; a command whose module is not there is not offered."""

    def _lazy(self, name: str):
        target = LAZY_COMMANDS.get(name)
        if not target:
            return None
        module_name, attr = target.split(":")
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None
            raise
        return getattr(module, attr, None)

    def list_commands(self, ctx):
        names = set(super().list_commands(ctx)) | {n for n in LAZY_COMMANDS if self._lazy(n)}
        return sorted(names)

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or self._lazy(name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="kubectl-record")
def cli() -> None:
    """Record every kubectl invocation, look it up, and join it to the API server's audit log.

    \b
    kubectl record -- get pods      run kubectl and record it
    kubectl record history          what was run, newest first
    kubectl record doctor           is recording working?
    """


# --- capture --------------------------------------------------------------------------------


@cli.group()
def shim() -> None:
    """A `kubectl` shim that records scripts, Makefiles and CI jobs."""


@shim.command("install")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Where to create the shim.")
def shim_install(directory: str | None) -> None:
    """Create DIR/kubectl, a recording shim, and print DIR (put it first on PATH)."""
    from .shim import ShimError, install_shim

    try:
        where = install_shim(directory)
    except ShimError as exc:
        raise Failure(str(exc)) from exc
    click.echo(f'# add this directory first on PATH, e.g. export PATH="{where}:$PATH"', err=True)
    click.echo(where)


@cli.command("setup-launchers", hidden=True)
@click.option("--bin", "bindir", required=True, type=click.Path(file_okay=False))
def setup_launchers(bindir: str) -> None:
    """Write the fast kubectl-record launchers into BIN (used by install.sh)."""
    from .shim import ShimError, write_launchers

    try:
        for path in write_launchers(bindir):
            click.echo(path)
    except (ShimError, OSError) as exc:
        raise Failure(str(exc)) from exc


@cli.command("ingest", hidden=True)
def ingest_command() -> None:
    """Move spooled runs into the store now."""
    result = ingest.ingest()
    if result.error:
        raise Failure(result.error)
    click.echo(f"ingested {result.ingested}, running {result.running}")


# --- health ---------------------------------------------------------------------------------


def _spool_findings(now: float) -> list[tuple[bool, str]]:
    from . import spool

    findings = []
    where = paths.spool_dir()
    entries = spool.list_entries(where)
    if entries:
        oldest = min(os.stat(p).st_mtime for p in entries if os.path.exists(p))
        findings.append((True, f"spool: {len(entries)} run(s) waiting or running in {where} (oldest {human_duration(now - oldest)})"))
    else:
        findings.append((True, f"spool: empty ({where})"))
    bad = [n for n in os.listdir(where) if n.endswith(ingest.BAD_SUFFIX)] if os.path.isdir(where) else []
    if bad:
        findings.append((False, f"spool: {len(bad)} unreadable run file(s) kept in {where} (*.bad)"))
    try:
        with open(os.path.join(where, ingest.ERROR_FILE)) as f:
            err = json.load(f)
        findings.append((False, f"ingest: failing since {human_duration(now - err['time'])} ago: {err['error']}"))
    except (OSError, ValueError, KeyError):
        pass
    return findings


@cli.command()
def doctor() -> None:
    """Health of hooks, spool, store and kubectl: one line per finding; exit 1 on a problem."""
    now = time.time()
    result = ingest.ingest()
    findings = _spool_findings(now)
    try:
        conn = store.connect()
        count, last = conn.execute("SELECT COUNT(*), MAX(started_at) FROM records").fetchone()
        if last:
            findings.append((True, f"store: ok, {count} record(s), last {age(last, now)} ago ({paths.db_path()})"))
        else:
            findings.append((True, f"store: ok, no records yet ({paths.db_path()})"))
        integrity = conn.execute("PRAGMA quick_check").fetchone()[0]
        if integrity != "ok":
            findings.append((False, f"store: integrity check failed: {integrity}"))
    except store.StoreError as exc:
        findings.append((False, f"store: {exc}"))
    except Exception as exc:  # a corrupt file can fail in many ways; doctor must still answer
        findings.append((False, f"store: {paths.db_path()}: {exc}"))
    if result.error and not any("ingest:" in text for _, text in findings):
        findings.append((False, f"ingest: {result.error}"))
    from .hooks import hook_status

    hook = hook_status(os.environ)
    if hook.get("active"):
        findings.append((True, f"hook: active in this shell ({hook.get('mechanism')}, session {hook.get('session')})"))
    else:
        findings.append((True, f"hook: not active: {hook.get('detail')}"))
    from .ingest import _find_real_kubectl

    real = os.environ.get("KUBECTL_RECORD_KUBECTL") or _find_real_kubectl()
    findings.append((bool(real), f"kubectl: {real}" if real else "kubectl: not found on PATH"))
    if os.environ.get("KUBECTL_RECORD_DISABLE") == "1":
        findings.append((True, "recording: disabled by KUBECTL_RECORD_DISABLE=1"))
    for ok, text in findings:
        click.echo(("ok    " if ok else "FAIL  ") + text)
    if not all(ok for ok, _ in findings):
        sys.exit(EXIT_FAILED)


# --- entry point ----------------------------------------------------------------------------


def _exec_wrapper(args: list[str]) -> None:
    """`kubectl-record -- ARGS` reached the Python entry point (a pip install without install.sh):
    hand over to the bash hot path, which records and runs kubectl."""
    from .shim import ShimError, find_bash

    lib = os.path.join(paths.shell_dir(), "record.bash")
    try:
        bash = find_bash()
    except ShimError:
        bash = None
    if bash and os.path.isfile(lib):
        script = '__KR_PYTHON=$1; shift; . "$0" && __kr_run wrapper "$@"'
        os.execv(bash, [bash, "-c", script, lib, sys.executable, *args])
    os.execvp(os.environ.get("KUBECTL_RECORD_KUBECTL") or "kubectl", ["kubectl", *args])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:
        _exec_wrapper(argv[1:])
    # click answers a closed pipe (`history | head`) quietly by itself.
    cli.main(args=argv, prog_name="kubectl record")
