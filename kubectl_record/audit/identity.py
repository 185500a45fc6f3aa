"""Who the API server says a kubeconfig credential is (SelfSubjectReview via `kubectl auth
whoami`), cached per cluster, context, user entry and credential fingerprint.

The recorder's own call never prompts and never records itself: stdin is closed, there is a
short timeout (and --request-timeout), KUBECTL_RECORD_DISABLE=1 is set, the *real* kubectl is
started directly (not a shim), and argv[0] is `kubectl+kubectl-record-whoami`, so its audit
event carries that user agent and `audit unmatched` leaves it out.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time

from .importer import WHOAMI_PRODUCT

TTL_OK = 24 * 3600.0
TTL_FAIL = 600.0
TIMEOUT = 5.0


def _kubeconfig_user(files: list[str], user: str | None) -> dict | None:
    from ..kubeconfig import _parse

    for path in files or ():
        try:
            with open(path, encoding="utf-8") as f:
                doc = _parse(f.read())
        except Exception:
            continue
        for entry in (doc or {}).get("users") or ():
            if isinstance(entry, dict) and entry.get("name") == user:
                return entry.get("user") or {}
    return None


def cred_fingerprint(files: list[str], user: str | None) -> str:
    entry = _kubeconfig_user(files, user)
    if entry is None:
        return ""
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()[:16]


def entry_key(context: str | None, user: str | None) -> str:
    return f"{context or ''}\x1f{user or ''}"


def whoami(kubectl: str, files: list[str], context: str | None, timeout: float = TIMEOUT) -> tuple[str | None, list, str | None]:
    """(username, groups, error)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECTL_RECORD_")}
    env["KUBECTL_RECORD_DISABLE"] = "1"
    if files:
        env["KUBECONFIG"] = os.pathsep.join(files)
    argv = [WHOAMI_PRODUCT, "auth", "whoami", "-o", "json", f"--request-timeout={int(timeout)}s"]
    if context:
        argv += ["--context", context]
    try:
        proc = subprocess.run(argv, executable=kubectl, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout + 2, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, [], f"whoami: {exc}"
    if proc.returncode != 0:
        return None, [], (proc.stderr.decode(errors="replace").strip().splitlines() or ["whoami failed"])[-1][:300]
    try:
        info = json.loads(proc.stdout)["status"]["userInfo"]
        return info.get("username"), list(info.get("groups") or ()), None
    except (ValueError, KeyError, TypeError) as exc:
        return None, [], f"whoami: unreadable answer ({exc})"


def lookup(conn: sqlite3.Connection, server: str, context: str | None, user: str | None, files: list[str],
           kubectl: str | None, *, now: float | None = None, ask: bool = True) -> str | None:
    """The cached identity, asking the server when the cache has nothing fresh (and ask)."""
    now = now or time.time()
    key = entry_key(context, user)
    cred = cred_fingerprint(files, user)
    row = conn.execute("SELECT identity, checked_at, error FROM audit_identity WHERE server = ? AND user_entry = ?"
                       " AND cred = ?", (server, key, cred)).fetchone()
    if row and (row[0] and now - row[1] < TTL_OK or not row[0] and now - row[1] < TTL_FAIL):
        return row[0]
    if not ask or not kubectl:
        return row[0] if row else None
    identity, groups, error = whoami(kubectl, files, context)
    conn.execute("INSERT OR REPLACE INTO audit_identity (server, user_entry, cred, identity, groups, checked_at, error)"
                 " VALUES (?,?,?,?,?,?,?)", (server, key, cred, identity, json.dumps(groups), now, error))
    return identity


def real_kubectl(hint: str | None = None) -> str | None:
    from ..ingest import _find_real_kubectl

    for c in (hint, os.environ.get("KUBECTL_RECORD_KUBECTL")):
        if c and os.path.isfile(c) and not _is_shim(c):
            return c
    return _find_real_kubectl()


def _is_shim(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(200)
        return b"# kubectl-record shim" in head
    except OSError:
        return False


def fill(conn: sqlite3.Connection, records: list[dict], *, kubectl: str | None = None, ask: bool = True,
         only_bound: bool = True, budget_s: float = 20.0) -> int:
    """Set `identity` on records that have none (one SelfSubjectReview per context+credential).
    only_bound: only for clusters an audit source is bound to (the background ingester must not
    talk to clusters nobody correlates)."""
    from .correlate import normalize_server

    bound = {r[0] for r in conn.execute("SELECT server FROM audit_clusters")}
    deadline = time.monotonic() + budget_s
    done = 0
    memo: dict = {}
    for rec in records:
        server = normalize_server(rec.get("server"))
        if rec.get("identity") or rec.get("local_only") or not server:
            continue
        if only_bound and server not in bound:
            continue
        files = rec.get("kubeconfig") or []
        k = (server, rec.get("context"), rec.get("user"), tuple(files))
        if k not in memo:
            allowed = ask and time.monotonic() < deadline
            memo[k] = lookup(conn, server, rec.get("context"), rec.get("user"), files,
                             real_kubectl(kubectl) if allowed else None, ask=allowed)
        identity = memo[k]
        if identity:
            conn.execute("UPDATE records SET identity = ? WHERE id = ? AND identity IS NULL", (identity, rec["id"]))
            rec["identity"] = identity
            done += 1
    return done
