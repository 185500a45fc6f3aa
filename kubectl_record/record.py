"""Turning what a capture path saw into a record: parse, resolve, mask.

Every capture path (wrapper, shim, hook, history import) ends here, so masking happens in one
place and nothing unmasked leaves this module.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
from dataclasses import dataclass, field

from . import kubeconfig, kubectl_args, redact
from .timefmt import rfc3339  # noqa: F401  (its home for the modules that build records)


@dataclass
class Run:
    """One kubectl invocation as captured, before parsing and masking."""

    id: str
    source: str
    argv: list[str]
    started: float
    ended: float | None = None
    exit_code: int | None = None
    state: str = "finished"
    cwd: str | None = None
    home: str | None = None
    kubeconfig_env: str | None = None  # KUBECONFIG as set for the run; None when unset
    # (path, file to read it from): the spool's snapshot taken when the run started, or the
    # path itself when there is none (import).
    kubeconfig_files: list[tuple[str, str]] | None = None
    session: str | None = None
    parent: str | None = None
    ssh_client: str | None = None
    sudo_user: str | None = None
    ci_env: dict[str, str] = field(default_factory=dict)
    kubectl_path: str | None = None
    os_user: str | None = None
    host: str | None = None
    unexpanded: bool = False


# CI systems: the variable that names the system, then where job and commit live.
_CI = (
    ("github-actions", "GITHUB_ACTIONS", ("GITHUB_REPOSITORY", "GITHUB_WORKFLOW", "GITHUB_JOB"), "GITHUB_RUN_ID", "GITHUB_SHA"),
    ("gitlab", "GITLAB_CI", ("CI_PROJECT_PATH", "CI_JOB_NAME"), "CI_JOB_ID", "CI_COMMIT_SHA"),
    ("buildkite", "BUILDKITE", ("BUILDKITE_PIPELINE_SLUG",), "BUILDKITE_JOB_ID", "BUILDKITE_COMMIT"),
    ("circleci", "CIRCLECI", ("CIRCLE_PROJECT_REPONAME", "CIRCLE_JOB"), "CIRCLE_BUILD_NUM", "CIRCLE_SHA1"),
    ("azure-pipelines", "TF_BUILD", ("BUILD_DEFINITIONNAME",), "BUILD_BUILDID", "BUILD_SOURCEVERSION"),
    ("jenkins", "JENKINS_URL", ("JOB_NAME",), "BUILD_NUMBER", "GIT_COMMIT"),
    ("teamcity", "TEAMCITY_VERSION", (), None, None),
    ("bitbucket", "BITBUCKET_BUILD_NUMBER", (), "BITBUCKET_BUILD_NUMBER", "BITBUCKET_COMMIT"),
)


def ci_info(env: dict[str, str]) -> dict | None:
    for system, marker, names, run_id, commit in _CI:
        if env.get(marker):
            job = "/".join(env[n] for n in names if env.get(n)) or None
            info = {"system": system, "job": job, "run": env.get(run_id) if run_id else None,
                    "commit": env.get(commit) if commit else None}
            return {k: v for k, v in info.items() if v}
    if env.get("CI"):
        return {"system": "unknown"}
    return None


_HOST = None


def _host() -> str:
    global _HOST
    if _HOST is None:
        _HOST = socket.gethostname()
    return _HOST


def _read_snapshot(files: dict[str, str]):
    def read(path: str) -> str | None:
        try:
            with open(files.get(path, path), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return None
    return read


def build(run: Run, kubectl_version: str | None = None) -> dict:
    """The record for RUN, masked. Raises nothing for odd input: unknown shapes stay as typed."""
    raw = kubectl_args.parse(run.argv)
    masked_argv, redacted = redact.mask_argv(run.argv)
    shown = kubectl_args.parse(masked_argv)  # names, files etc. come from the masked words

    home = run.home or os.path.expanduser("~")
    cwd = run.cwd or home
    kc_paths = kubeconfig.kubeconfig_paths(raw.kubeconfig, run.kubeconfig_env, home, cwd)
    files = dict(run.kubeconfig_files or ())
    res = kubeconfig.resolve(
        kc_paths, _read_snapshot(files), context=raw.context, cluster=raw.cluster,
        user=raw.user, namespace=raw.namespace, server=raw.server,
    )
    server, server_masked = redact.mask_text(res.server) if res.server else (res.server, False)

    namespace = res.namespace
    if raw.all_namespaces or raw.local_only or raw.namespaced is False:
        namespace = None

    duration = None
    if run.ended is not None:
        duration = max(0, round((run.ended - run.started) * 1000))
    return {
        "id": run.id,
        "started_at": rfc3339(run.started),
        "ended_at": rfc3339(run.ended),
        "duration_ms": duration,
        "exit_code": run.exit_code,
        "state": run.state,
        "source": run.source,
        "argv": masked_argv,
        "command": "kubectl" + "".join(" " + shlex.quote(a) for a in masked_argv),
        "verb": shown.verb,
        "resource": shown.resource,
        "names": shown.names,
        "namespace": namespace,
        "all_namespaces": raw.all_namespaces,
        "context": res.context,
        "cluster": res.cluster,
        "server": server,
        "user": res.user,
        "impersonate": shown.impersonate,
        "kubeconfig": res.files or kc_paths,
        "files": shown.files,
        "mutating": raw.mutating,
        "dry_run": raw.dry_run,
        "local_only": raw.local_only,
        "redacted": redacted or server_masked,
        "unexpanded": run.unexpanded,
        "cwd": run.cwd,
        "host": run.host or _host(),
        "os_user": run.os_user or getpass.getuser(),
        "sudo_user": run.sudo_user or None,
        "ssh_client": (run.ssh_client or "").split(" ")[0] or None,
        "session": run.session or None,
        "parent": run.parent or None,
        "ci": ci_info(run.ci_env),
        "kubectl_version": kubectl_version,
        "identity": None,
        "audit": None,
    }
