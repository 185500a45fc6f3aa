"""pytest fixtures and helpers around the test API server.

``apiserver``          — a started server with default options (OffsetClock,
                         default policy, audit log + ground truth in tmp_path);
                         yields an :class:`ApiServerHandle`.
``apiserver_factory``  — ``apiserver_factory(**options) -> ApiServerHandle`` for
                         custom policies, webhook, skew, lag, rotation...;
                         every server it starts is stopped at teardown.

Wire them in from tests/conftest.py with
``from tests.apiserver.fixtures import apiserver, apiserver_factory  # noqa: F401``
or import them directly in a test module.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest

from .audit import AuditOptions, OffsetClock
from .server import ApiServer, ServerOptions

KUBECTL = os.environ.get("KUBECTL_RECORD_TEST_KUBECTL", "/usr/bin/kubectl")


class ApiServerHandle:
    """What the fixtures yield."""

    def __init__(self, server: ApiServer, tmp: Path):
        self.server = server
        self.tmp = tmp
        self.clock = server.clock
        self.home = tmp / "home"
        self.cache_dir = tmp / "kube-cache"
        self.home.mkdir(parents=True, exist_ok=True)
        self._kubeconfigs: dict[tuple, Path] = {}

    # ---------------------------------------------------------------- facts
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def audit_log(self) -> Path | None:
        p = self.server.opts.audit.log_path
        return Path(p) if p else None

    @property
    def ground_truth(self) -> Path | None:
        p = self.server.opts.ground_truth_path
        return Path(p) if p else None

    # ---------------------------------------------------------------- kubeconfig / env
    def kubeconfig(self, user: str = "alice", namespace: str | None = None, path: str | os.PathLike | None = None,
                   token: str | None = None) -> Path:
        """Write (once) and return a kubeconfig whose current context ``test`` uses
        ``user``; contexts ``test-<other>`` exist for the other users."""
        key = (user, namespace, str(path) if path else None, token)
        if key not in self._kubeconfigs:
            p = Path(path) if path else self.tmp / f"kubeconfig-{user}{'-' + namespace if namespace else ''}"
            self.server.kubeconfig(str(p), user=user, namespace=namespace, token=token)
            self._kubeconfigs[key] = p
        return self._kubeconfigs[key]

    def env(self, **extra: str) -> dict:
        """An environment for kubectl: tmp HOME, tmp discovery cache, no KUBECONFIG."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "KUBECTL_RECORD"))}
        env.update(HOME=str(self.home), KUBECACHEDIR=str(self.cache_dir))
        env.update(extra)
        return env

    def kubectl(self, *args: str, user: str = "alice", marker: str | None = None, input: str | None = None,
                timeout: float = 60, kubeconfig: str | os.PathLike | None = None,
                env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the real kubectl against this server. ``marker`` becomes argv[0]
        (e.g. ``kubectl+r.TESTID``) so it shows in the User-Agent."""
        kc = str(kubeconfig or self.kubeconfig(user))
        argv = [marker or "kubectl", "--kubeconfig", kc, *args]
        return subprocess.run(argv, executable=KUBECTL, env=env or self.env(), input=input, text=True,
                              capture_output=True, timeout=timeout)

    # ---------------------------------------------------------------- audit output
    def flush(self) -> None:
        """Deliver every buffered event now (ignores lag and batch waits)."""
        self.server.audit.flush()

    def log_files(self) -> list[Path]:
        """The audit log and its rotated backups, oldest first."""
        if not self.audit_log:
            return []
        base, ext = os.path.splitext(str(self.audit_log))
        backups = sorted(glob.glob(f"{glob.escape(base)}-*{ext}"))
        return [Path(b) for b in backups] + ([self.audit_log] if self.audit_log.exists() else [])

    def events(self, flush: bool = True) -> list[dict]:
        """Every event line in the log files (rotated ones included), in file order."""
        if flush:
            self.flush()
        out = []
        for f in self.log_files():
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    if line.endswith("\n"):  # a line still being written is skipped
                        out.append(json.loads(line))
        return out

    def emitted(self) -> list[dict]:
        """Every event the server generated (before any delivery knob), in order."""
        return self.server.audit_events()

    def requests(self) -> list[dict]:
        """Ground truth: one entry per HTTP request (auditID, UA, Kubectl-* headers)."""
        return list(self.server.requests)

    def stop(self) -> None:
        self.server.stop()


def _build(tmp: Path, *, policy: str | None = None, clock: Any = None, audit_log: bool | str = True,
           log_max_bytes: int | None = None, log_max_backups: int = 0, webhook_url: str | None = None,
           webhook_token: str | None = None,
           batch_size: int = 400, batch_max_wait: float = 30.0, skew: float = 0.0, lag: float = 0.0, lag_jitter: float = 0.0,
           reorder: bool = False, duplicate_rate: float = 0.0, log_duplicate_rate: float = 0.0, seed: int = 0,
           ground_truth: bool | str = True, tokens: dict | None = None, watch_max_seconds: float = 10.0,
           retry_backoff: float = 10.0) -> ApiServer:
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = (str(tmp / "audit.log") if audit_log is True else (audit_log or None))
    gt_path = (str(tmp / "ground-truth.jsonl") if ground_truth is True else (ground_truth or None))
    opts = ServerOptions(
        policy_text=policy, clock=clock or OffsetClock(), ground_truth_path=gt_path, tokens=tokens,
        watch_max_seconds=watch_max_seconds, cert_dir=str(tmp / "tls"),
        audit=AuditOptions(log_path=log_path, log_max_bytes=log_max_bytes, log_max_backups=log_max_backups,
                           webhook_url=webhook_url, webhook_token=webhook_token, batch_size=batch_size,
                           batch_max_wait=batch_max_wait,
                           skew=skew, lag=lag, lag_jitter=lag_jitter, reorder=reorder, duplicate_rate=duplicate_rate,
                           log_duplicate_rate=log_duplicate_rate, seed=seed, retry_backoff=retry_backoff))
    return ApiServer(opts)


@contextlib.contextmanager
def run_apiserver(tmp: str | os.PathLike, **options: Any) -> Iterator[ApiServerHandle]:
    """Start a server in-process (keyword options as in :func:`_build`), yield its handle, stop it."""
    server = _build(Path(tmp), **options).start()
    try:
        yield ApiServerHandle(server, Path(tmp))
    finally:
        server.stop()


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[ApiServerHandle]:
    with run_apiserver(tmp_path / "apiserver") as handle:
        yield handle


@pytest.fixture
def apiserver_factory(tmp_path: Path):
    stack = contextlib.ExitStack()
    counter = [0]

    def start(**options: Any) -> ApiServerHandle:
        counter[0] += 1
        return stack.enter_context(run_apiserver(tmp_path / f"apiserver-{counter[0]}", **options))

    with stack:
        yield start


def events_for(events: Sequence[dict], *, stage: str | None = "ResponseComplete", **match: Any) -> list[dict]:
    """Filter events: ``events_for(evs, verb="get", resource="pods", namespace="default")``.
    ``resource``/``namespace``/``name``/``subresource``/``apiGroup`` look in objectRef,
    ``code`` in responseStatus, anything else at the top level."""
    out = []
    for ev in events:
        if stage and ev.get("stage") != stage:
            continue
        ok = True
        for k, v in match.items():
            if k in ("resource", "namespace", "name", "subresource", "apiGroup"):
                actual = (ev.get("objectRef") or {}).get(k)
            elif k == "code":
                actual = (ev.get("responseStatus") or {}).get("code")
            else:
                actual = ev.get(k)
            if actual != v:
                ok = False
                break
        if ok:
            out.append(ev)
    return out
