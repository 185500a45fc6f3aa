"""The filters shared by history, stats, export, delete and prune, and the where clause they build.

In the style of `llm logs`: one decorator adds the options, one function turns their values into
`(where, params)` over the records table. Every clause is written so that SQLite can use the
indexes of store.m003 (equality or a prefix range on an indexed column, then started_at), and
the caller orders by `started_at DESC, rowid DESC`, which those indexes deliver without a sort.

Bad values raise BadUsage: one line on stderr, exit 2.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import click

from .timefmt import rfc3339

ORDER_NEWEST = "started_at DESC, rowid DESC"
ORDER_OLDEST = "started_at ASC, rowid ASC"


class BadUsage(click.UsageError):
    """Bad usage or bad input: one line on stderr, exit 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class Command(click.Command):
    """A click command whose usage errors (bad option values included) are one line, exit 2,
    and which never prints a traceback for a closed pipe (`history | head`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            if isinstance(exc, BadUsage):
                raise
            raise BadUsage(_one_line(exc)) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_pipe()
        except click.UsageError as exc:
            if isinstance(exc, BadUsage):
                raise
            raise BadUsage(_one_line(exc)) from None


def _one_line(exc: click.UsageError) -> str:
    return " ".join(exc.format_message().split())


def _quiet_pipe() -> None:
    """The reader went away: stop quietly, exit 0 like `seq 1e9 | head`, no traceback on exit."""
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    raise SystemExit(0)


# --- time -----------------------------------------------------------------------------------

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(s|sec|m|min|h|d|w|y)")


def parse_duration(text: str) -> float | None:
    """Seconds in `90s`, `15m`, `2h`, `7d`, `2w`, `1y`, `1h30m`; None when TEXT is not one."""
    text = text.strip().lower()
    if not text:
        return None
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos else None


_LOCAL_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S",
                  "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S.%f")


def parse_time(text: str, now: float | None = None) -> float:
    """Epoch seconds for a --since/--until value: a duration ago (`2h`, `7d`), `now`, `today`,
    `yesterday`, a date or date-time (local time unless it carries a zone), or a Unix timestamp
    (seconds, or milliseconds when 13 digits). Raises ValueError with a readable message."""
    now = time.time() if now is None else now
    raw = text.strip()
    low = raw.lower()
    ago = parse_duration(low)
    if ago is not None:
        return now - ago
    if low == "now":
        return now
    if low in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if low == "yesterday":
            midnight -= timedelta(days=1)
        return midnight.timestamp()
    if re.fullmatch(r"\d{9,10}(\.\d+)?", raw):
        return float(raw)
    if re.fullmatch(r"\d{13}", raw):
        return int(raw) / 1000.0
    iso = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    if re.search(r"[+-]\d\d:?\d\d$", iso) and re.match(r"\d{4}-\d\d-\d\d[T ]", iso):
        try:
            return datetime.fromisoformat(iso.replace(" ", "T", 1)).timestamp()
        except ValueError:
            pass
    for fmt in _LOCAL_FORMATS:
        try:
            return datetime.strptime(raw, fmt).timestamp()  # naive = local time
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not a time: use a duration ago (30m, 2h, 7d), today, yesterday,"
                     " a date (2026-11-27), a date-time (2026-11-27 14:30, local unless it ends in Z or +01:00)"
                     " or a Unix timestamp")


# --- values ---------------------------------------------------------------------------------

_GLOB_CHARS = re.compile(r"[*?\[]")

# Short names and singulars of the common kinds: `--resource deploy` finds `deployments`.
_RESOURCE_ALIASES = {
    "po": "pods", "pod": "pods", "deploy": "deployments", "deployment": "deployments", "svc": "services",
    "service": "services", "ns": "namespaces", "namespace": "namespaces", "cm": "configmaps",
    "configmap": "configmaps", "secret": "secrets", "no": "nodes", "node": "nodes", "ing": "ingresses",
    "ingress": "ingresses", "sts": "statefulsets", "statefulset": "statefulsets", "ds": "daemonsets",
    "daemonset": "daemonsets", "rs": "replicasets", "replicaset": "replicasets", "job": "jobs",
    "cj": "cronjobs", "cronjob": "cronjobs", "sa": "serviceaccounts", "serviceaccount": "serviceaccounts",
    "pv": "persistentvolumes", "persistentvolume": "persistentvolumes", "pvc": "persistentvolumeclaims",
    "persistentvolumeclaim": "persistentvolumeclaims", "ev": "events", "event": "events",
    "ep": "endpoints", "hpa": "horizontalpodautoscalers", "horizontalpodautoscaler": "horizontalpodautoscalers",
    "crd": "customresourcedefinitions", "crds": "customresourcedefinitions",
    "customresourcedefinition": "customresourcedefinitions", "role": "roles", "rolebinding": "rolebindings",
    "clusterrole": "clusterroles", "clusterrolebinding": "clusterrolebindings", "netpol": "networkpolicies",
    "networkpolicy": "networkpolicies", "pdb": "poddisruptionbudgets", "sc": "storageclasses",
    "storageclass": "storageclasses", "limits": "limitranges", "quota": "resourcequotas",
}


# kubectl commands with subcommands: `--verb rollout` also finds `rollout restart`. Other verbs
# (get, delete …) match exactly, which keeps the (verb, started_at) index usable.
VERB_PARENTS = frozenset({"rollout", "create", "config", "auth", "set", "certificate", "top", "apply", "plugin",
                          "cluster-info", "alpha", "events", "kustomize"})


def canonical_resource(value: str) -> str:
    low = value.strip().lower()
    if "/" in low:
        low = low.split("/", 1)[0]
    return _RESOURCE_ALIASES.get(low, low)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _match(column: str, values, params: list, *, word_prefix: bool = False) -> str:
    """`column` equals one of VALUES, or matches one of them as a glob (`prod-*`). With
    word_prefix, `rollout` also finds `rollout restart` (a command path's leading words)."""
    exact = [v for v in values if not _GLOB_CHARS.search(v)]
    globs = [v for v in values if _GLOB_CHARS.search(v)]
    if word_prefix:
        globs += [_glob_escape(v) + " *" for v in exact if v.split(" ")[0] in VERB_PARENTS]
    parts = []
    if exact:
        parts.append(f"{column} = ?" if len(exact) == 1 else f"{column} IN ({', '.join('?' * len(exact))})")
        params.extend(exact)
    for pattern in globs:
        parts.append(f"{column} GLOB ?")
        params.append(pattern)
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def fts_query(text: str) -> str | None:
    """A safe FTS5 expression for any user text: every word becomes a quoted phrase (so
    `kube-system`, quotes, `*`, `AND`, parentheses are literal), all words must occur, and a
    word ending in `*` matches as a prefix. None when TEXT holds no searchable word."""
    terms = []
    for word in text.split():
        prefix = word.endswith("*")
        core = word.rstrip("*") if prefix else word
        if not re.search(r"\w", core):
            continue
        terms.append('"' + core.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms) if terms else None


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- the options and the where clause ---------------------------------------------------------


@dataclass
class Filters:
    context: tuple = ()
    namespace: tuple = ()
    all_namespaces: bool = False
    cluster: tuple = ()
    verb: tuple = ()
    resource: tuple = ()
    name: tuple = ()
    since: str | None = None
    until: str | None = None
    failed: bool = False
    exit: int | None = None
    mutating: bool = False
    read_only: bool = False
    source: tuple = ()
    host: tuple = ()
    user: tuple = ()
    identity: tuple = ()
    cwd: tuple = ()
    session: tuple = ()
    query: str | None = None
    extra: list = field(default_factory=list)

    def empty(self) -> bool:
        return not self.where()[0]

    def where(self, now: float | None = None, *, conn=None, limited: bool = False) -> tuple[str, list]:
        return build_where(self, now, conn=conn, limited=limited)


FILTER_NAMES = ("context", "namespace", "all_namespaces", "cluster", "verb", "resource", "name", "since", "until",
                "failed", "exit", "mutating", "read_only", "source", "host", "user", "identity", "cwd", "session",
                "query")

_SOURCES = ("wrapper", "shim", "hook", "import")


def filter_options(fn):
    """Add the shared filter options; the command receives them gathered as `filters=Filters(...)`."""
    import functools

    options = [
        click.option("--context", multiple=True, metavar="GLOB", help="Context name or glob (prod-*); repeatable."),
        click.option("-n", "--namespace", multiple=True, metavar="NS", help="Namespace (a filter, not the current one); repeatable."),
        click.option("-A", "--all-namespaces", is_flag=True, help="No namespace filter (accepted for kubectl habits)."),
        click.option("--cluster", multiple=True, metavar="GLOB", help="Cluster name or glob; repeatable."),
        click.option("--verb", multiple=True, metavar="VERB", help="Command path: get, delete, `rollout` (all rollout …); repeatable."),
        click.option("--resource", multiple=True, metavar="TYPE", help="Resource type: pods, deploy, svc …; repeatable."),
        click.option("--name", multiple=True, metavar="NAME", help="Object name (web-42) or glob; repeatable."),
        click.option("--since", metavar="WHEN", help="Started at or after: 2h, 7d, yesterday, 2026-11-01, a timestamp."),
        click.option("--until", metavar="WHEN", help="Started before (same forms as --since)."),
        click.option("--failed", is_flag=True, help="Exit status other than 0 (and known)."),
        click.option("--exit", "exit_", type=int, metavar="N", help="Exit status N."),
        click.option("--mutating", is_flag=True, help="Only commands that may change cluster state."),
        click.option("--read-only", is_flag=True, help="Only commands that cannot change cluster state."),
        click.option("--source", multiple=True, type=click.Choice(_SOURCES), help="How it was recorded; repeatable."),
        click.option("--host", multiple=True, metavar="GLOB", help="Host name or glob; repeatable."),
        click.option("--user", multiple=True, metavar="GLOB", help="kubeconfig user entry; repeatable."),
        click.option("--identity", multiple=True, metavar="GLOB", help="Server-side user name; repeatable."),
        click.option("--cwd", multiple=True, metavar="DIR", help="Run in DIR or below (`.` = here); repeatable."),
        click.option("--session", multiple=True, metavar="ID", help="Shell session id, or `current` (this shell); repeatable."),
        click.option("-q", "--query", metavar="TEXT", help="Full-text search over command, context, namespace, cwd."),
    ]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        values = {name: kwargs.pop(name) for name in FILTER_NAMES if name != "exit"}
        values["exit"] = kwargs.pop("exit_")
        kwargs["filters"] = Filters(**values)
        return fn(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def build_where(f: Filters, now: float | None = None, *, conn=None, limited: bool = False) -> tuple[str, list]:
    """(where, params) over `records` for the filters; "" when nothing filters. With CONN and
    LIMITED (the caller stops after a few rows), a full-text query picks its cheaper plan."""
    clauses: list[str] = []
    params: list = []

    def add(sql: str, *values) -> None:
        clauses.append(sql)
        params.extend(values)

    def match(column: str, values, **kw) -> None:
        if values:
            local: list = []
            clauses.append(_match(column, values, local, **kw))
            params.extend(local)

    match("context", f.context)
    if f.namespace and not f.all_namespaces:
        match("namespace", f.namespace)
    match("cluster", f.cluster)
    verbs = [" ".join(v.split()) for v in f.verb]
    match("verb", verbs, word_prefix=any(v.split(" ")[0] in VERB_PARENTS for v in verbs))
    match("resource", [canonical_resource(v) if not _GLOB_CHARS.search(v) else v.lower() for v in f.resource])
    if f.name:
        local: list = []
        inner = _match("name", f.name, local)
        clauses.append(f"rowid IN (SELECT rec FROM record_names WHERE {inner})")
        params.extend(local)
    now = time.time() if now is None else now
    for label, value, op in (("--since", f.since, ">="), ("--until", f.until, "<")):
        if value is None:
            continue
        try:
            epoch = parse_time(value, now)
        except ValueError as exc:
            raise BadUsage(f"invalid value for {label}: {exc}") from None
        add(f"started_at {op} ?", rfc3339(epoch))
    if f.failed:
        add("exit_code != 0")
    if f.exit is not None:
        add("exit_code = ?", f.exit)
    if f.mutating and f.read_only:
        raise BadUsage("--mutating and --read-only exclude each other")
    if f.mutating:
        add("mutating = 1")
    if f.read_only:
        add("mutating = 0")
    match("source", f.source)
    match("host", f.host)
    match("user", f.user)
    match("identity", f.identity)
    if f.cwd:
        parts = []
        for value in f.cwd:
            if _GLOB_CHARS.search(value):
                parts.append("cwd GLOB ?")
                params.append(value)
                continue
            path = os.path.abspath(os.path.expanduser(value)).rstrip("/") or "/"
            parts.append("(cwd = ? OR cwd GLOB ?)")
            params.extend([path, _glob_escape(path.rstrip("/")) + "/*"])
        clauses.append(parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")")
    sessions = []
    for value in f.session:
        if value == "current":
            value = os.environ.get("KUBECTL_RECORD_SESSION", "")
            if not value:
                raise BadUsage("--session current: this shell has no recording session (KUBECTL_RECORD_SESSION is unset)")
        sessions.append(value)
    match("session", sessions)
    for sql, values in f.extra:
        add(sql, *values)
    if f.query is not None:
        expression = fts_query(f.query)
        if expression and limited and conn is not None and _common(conn, expression):
            # Many matches: walk the records newest first and test each (stops at the limit);
            # last, so the cheaper tests above reject rows first.
            add("EXISTS (SELECT 1 FROM records_fts WHERE records_fts MATCH ? AND rowid = records.rowid)",
                expression)
        elif expression:
            # Few matches: collect them from the index, then order.
            add("rowid IN (SELECT rowid FROM records_fts WHERE records_fts MATCH ?)", expression)
        elif f.query.strip():
            # Only punctuation (`*`, `(`, `"`): a plain substring search of the command line.
            add("command LIKE ? ESCAPE '\\'", "%" + _like_escape(f.query.strip()) + "%")
    return " AND ".join(clauses), params


# Above this many full-text matches, a limited lookup tests rows newest-first instead of
# collecting every match (at least 1 in 50 rows of a million match, so the walk is short).
COMMON_MATCHES = 20000


def _common(conn, expression: str) -> bool:
    row = conn.execute("SELECT count(*) FROM (SELECT rowid FROM records_fts WHERE records_fts MATCH ? LIMIT ?)",
                       (expression, COMMON_MATCHES)).fetchone()
    return row[0] >= COMMON_MATCHES
