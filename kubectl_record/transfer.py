"""`kubectl record export` and `import`: JSONL of records, all fields, round-tripping exactly;
and shell history (`import --format bash-history|zsh-history`).

Import re-applies masking (records from elsewhere may carry secrets): argv through
redact.mask_argv with `command` rebuilt from the masked words, and redact.mask_text over the
other free-text fields. It is idempotent (records are keyed by id, and by install_id + seq) and
streams: a million records are parsed, masked and inserted in batches inside one transaction,
so a bad line leaves the store as it was.
"""

from __future__ import annotations

import json
import re
import shlex
import sys

import click

from . import store
from .filters import ORDER_OLDEST, BadUsage, Command, filter_options

TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
# Free-text fields masked on import besides argv/command (strings, or lists/objects of strings).
TEXT_FIELDS = ("server", "cwd", "parent", "names", "files", "kubeconfig", "impersonate", "ci")
FOREIGN_INSTALL = "imported"


# --- export -----------------------------------------------------------------------------------


def _fast_line(row: tuple, names=store.FIELDS) -> str:
    """One record as a JSON line straight from its row: JSON columns are already JSON text."""
    parts = []
    dumps = json.dumps
    for name, value in zip(names, row):
        if value is None:
            text = "null"
        elif name in store.JSON_FIELDS:
            text = value
        elif name in store.BOOL_FIELDS:
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = dumps(value, ensure_ascii=False)
        else:
            text = str(value)
        parts.append(f'"{name}": {text}')
    return "{" + ", ".join(parts) + "}"


@click.command(cls=Command)
@filter_options
@click.option("-o", "--output", type=click.Choice(["jsonl", "json", "csv", "yaml"]), default="jsonl", show_default=True)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N records (the newest).")
def export(filters, output: str, limit: int | None) -> None:
    """Records as JSONL (all fields, oldest first), for `import` elsewhere. Same filters as `history`."""
    filters.where()
    from .cli import open_store

    conn = open_store()
    where, params = filters.where()
    cols = ", ".join(store.FIELDS)
    sql = f"SELECT {cols} FROM records" + (f" WHERE {where}" if where else "")
    if limit:
        sql = (f"SELECT * FROM ({sql.replace(' FROM records', ', rowid AS _rowid FROM records', 1)}"
               f" ORDER BY started_at DESC, rowid DESC LIMIT {int(limit)}) ORDER BY started_at, _rowid")
    else:
        sql += f" ORDER BY {ORDER_OLDEST}"
    rows = conn.execute(sql, params)
    out = sys.stdout
    if output == "jsonl":
        write = out.write
        for row in rows:
            write(_fast_line(row) + "\n")
        out.flush()
        return
    from .output import write_records

    write_records((store.from_row(r) for r in rows), output, fields=store.FIELDS)


# --- masking imported records -----------------------------------------------------------------

# A word made of lower-case letters, digits, dashes, dots and slashes is none of redact's
# shapes (they need upper case, `_`, `:`, `=`, `@`, `?`, one of the prefixes below, or the
# bootstrap-token form xxxxxx.yyyyyyyyyyyyyyyy).
_PLAIN_WORD = re.compile(r"[a-z0-9][a-z0-9./-]{0,126}\Z")
_TOKEN_SHAPE = re.compile(r"(?<![\w.-])[a-z0-9]{6}\.[a-z0-9]{16}(?![\w.-])")
_PLAIN_FLAGS = frozenset({"-n", "--namespace", "-o", "--output", "--context", "--cluster", "-A", "--all-namespaces",
                          "-w", "--watch", "-i", "-t", "-it", "--tail", "-c", "--container", "-f", "--filename",
                          "-k", "--kustomize", "--follow", "--previous", "--timestamps", "--show-labels",
                          "--replicas", "--force", "--now", "--wait", "-R", "--recursive", "--ignore-not-found",
                          "-L", "--sort-by", "--dry-run", "--server-side", "--prune"})
_PLAIN_VERBS = frozenset({"get", "describe", "logs", "delete", "apply", "rollout", "top", "scale", "port-forward",
                          "edit", "cordon", "uncordon", "drain", "diff", "explain", "api-resources", "version",
                          "wait", "events", "auth", "api-versions", "cluster-info", "exec"})
_PLAIN_CONFIG = frozenset({"use-context", "get-contexts", "current-context", "view", "get-clusters", "get-users",
                           "use"})
_PORTS = re.compile(r"(\d{1,5})?:\d{1,5}\Z")
_SHELLS = frozenset({"sh", "bash", "ash", "zsh", "/bin/sh", "/bin/bash", "/bin/ash", "/bin/zsh"})


def _plain_word(word: str) -> bool:
    return (_PLAIN_WORD.match(word) is not None and not word.startswith(("glpat", "xox"))
            and ("." not in word or _TOKEN_SHAPE.search(word) is None))


def plainly_unmaskable(argv: list) -> bool:
    """True when mask_argv certainly leaves ARGV as it is: a common verb, flags from a short
    list, every other word lower-case letters, digits, dashes, dots and slashes, and after `--`
    (exec) only a shell's name. A fast path for bulk import; anything else goes through
    mask_argv (tests check that the two agree)."""
    if not argv:
        return False
    verb = argv[0]
    if verb not in _PLAIN_VERBS:
        if verb == "config":
            if len(argv) < 2 or argv[1] not in _PLAIN_CONFIG:
                return False
        elif verb == "create":
            if len(argv) < 2 or argv[1] not in ("-f", "--filename", "-k", "--kustomize"):
                return False
        else:
            return False
    for i, word in enumerate(argv):
        if not isinstance(word, str):
            return False
        if word == "--":
            return argv[0] == "exec" and len(argv) == i + 2 and argv[i + 1] in _SHELLS
        if word.startswith("-"):
            if word not in _PLAIN_FLAGS:
                return False
        elif not _plain_word(word) and not (verb == "port-forward" and _PORTS.match(word)):
            return False
    return True


class Masker:
    """Re-masks records, remembering answers for values that repeat (paths, servers, argv)."""

    def __init__(self):
        from . import redact

        self.redact = redact
        self.argv_memo: dict[tuple, tuple[list, bool]] = {}
        self.text_memo: dict[str, tuple[str, bool]] = {}

    def argv(self, argv: list) -> tuple[list, bool]:
        if plainly_unmaskable(argv):
            return argv, False
        key = tuple(argv)
        hit = self.argv_memo.get(key)
        if hit is None:
            hit = self.redact.mask_argv(list(argv))
            if len(self.argv_memo) < 200_000:
                self.argv_memo[key] = hit
        return hit

    def text(self, text: str) -> tuple[str, bool]:
        if _plain_word(text):
            return text, False
        hit = self.text_memo.get(text)
        if hit is None:
            hit = self.redact.mask_text(text)
            if len(self.text_memo) < 200_000:
                self.text_memo[text] = hit
        return hit

    def value(self, value):
        """Mask every string inside VALUE (a string, or lists/objects of them)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            if all(isinstance(v, str) and _plain_word(v) for v in value):
                return value, False
            changed = False
            out = []
            for item in value:
                masked, c = self.value(item)
                out.append(masked)
                changed = changed or c
            return (out, True) if changed else (value, False)
        if isinstance(value, dict):
            changed = False
            out = {}
            for k, item in value.items():
                masked, c = self.value(item)
                out[k] = masked
                changed = changed or c
            return (out, True) if changed else (value, False)
        return value, False

    def record(self, record: dict) -> dict:
        argv, changed = self.argv(record["argv"])
        if changed:
            record["argv"] = argv
        command = "kubectl" + "".join(" " + shlex.quote(a) for a in argv)
        if record.get("command") != command:
            record["command"] = command
        for name in TEXT_FIELDS:
            value = record.get(name)
            if value is not None:
                masked, c = self.value(value)
                if c:
                    record[name] = masked
                    changed = True
        if changed:
            record["redacted"] = True
        return record


# --- reading JSONL ----------------------------------------------------------------------------


class BadRecord(ValueError):
    pass


def _time(value, name: str, required: bool) -> str | None:
    if value is None:
        if required:
            raise BadRecord(f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise BadRecord(f"{name} is not a string")
    if TIME_RE.match(value):
        return value
    from datetime import datetime, timezone

    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise BadRecord(f"{name} {value!r} is not an RFC 3339 time") from None
    if t.tzinfo is None:
        raise BadRecord(f"{name} {value!r} has no time zone")
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_INT_FIELDS = ("seq", "duration_ms", "exit_code")


def normalize(raw) -> dict:
    """A JSONL object as a storable record, checked (fields outside the record are dropped by
    to_row). Raises BadRecord."""
    if not isinstance(raw, dict):
        raise BadRecord("not a JSON object")
    ident = raw.get("id")
    if not isinstance(ident, str) or not ident.strip():
        raise BadRecord("id is missing or not a string")
    started = raw.get("started_at")
    if not (isinstance(started, str) and TIME_RE.match(started)):
        raw["started_at"] = _time(started, "started_at", True)
    ended = raw.get("ended_at")
    if ended is not None and not (isinstance(ended, str) and TIME_RE.match(ended)):
        raw["ended_at"] = _time(ended, "ended_at", False)
    argv = raw.get("argv")
    if argv is None and isinstance(raw.get("command"), str):
        try:
            words = shlex.split(raw["command"])
        except ValueError as exc:
            raise BadRecord(f"command cannot be split: {exc}") from None
        argv = raw["argv"] = words[1:] if words and words[0].rsplit("/", 1)[-1] == "kubectl" else words
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise BadRecord("argv is missing or not a list of strings")
    for name in _INT_FIELDS:
        value = raw.get(name)
        if value is not None and (type(value) is not int):
            raise BadRecord(f"{name} is not an integer")
    inst = raw.get("install_id")
    if not isinstance(inst, str) or not inst:
        raw["install_id"] = FOREIGN_INSTALL
        raw["seq"] = None
    state = raw.get("state")
    if not isinstance(state, str) or not state:
        raw["state"] = "imported"
    source = raw.get("source")
    if not isinstance(source, str) or not source:
        raw["source"] = "import"
    return raw


_GET_ALL = __import__("operator").itemgetter(*store.FIELDS)
_JSON_AT = tuple(i for i, n in enumerate(store.FIELDS) if n in store.JSON_FIELDS)
_BOOL_AT = tuple(i for i, n in enumerate(store.FIELDS) if n in store.BOOL_FIELDS)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def to_row(record: dict) -> tuple:
    """store.to_row, faster: one C-level gather of every field, then the JSON fields encoded."""
    try:
        row = list(_GET_ALL(record))
    except KeyError:
        row = [record.get(n) for n in store.FIELDS]
    for i in _JSON_AT:
        if row[i] is not None:
            row[i] = _encode(row[i])
    for i in _BOOL_AT:
        value = row[i]
        if value is not None and value is not True and value is not False:
            row[i] = bool(value)
    return tuple(row)


def read_jsonl(stream, label: str, masker: Masker, counts: dict):
    """Yield to_row tuples, masked; raise BadUsage naming the file and line of a bad record."""
    loads = json.loads
    for line_no, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = normalize(loads(line))
        except (ValueError, RecursionError) as exc:
            message = exc.args[0] if isinstance(exc, BadRecord) else f"not JSON ({exc})"
            raise BadUsage(f"{label}:{line_no}: {message}") from None
        counts["read"] += 1
        yield to_row(masker.record(record))


STAGE_BATCH = 20000
_TIME_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z"
_MASKED_STRINGS = ("server", "cwd", "parent")
_MASKED_JSON = ("names", "files", "kubeconfig", "impersonate", "ci")


def _x(field: str) -> str:
    return f"json_extract(s.line, '$.{field}')"


def _j(field: str) -> str:
    return f"nullif(json_quote(json_extract(s.line, '$.{field}')), 'null')"


def _nonempty_text(field: str) -> str:
    return f"(json_type(s.line, '$.{field}') = 'text' AND {_x(field)} != '')"


# A line SQLite can store as it is (after masking): anything else goes through normalize(),
# which either fixes it (other time formats, command without argv) or names what is wrong.
_IRREGULAR = f"""
    json_type(s.line) != 'object'
    OR json_type(s.line, '$.id') IS NOT 'text' OR trim({_x("id")}) = ''
    OR json_type(s.line, '$.started_at') IS NOT 'text' OR NOT {_x("started_at")} GLOB '{_TIME_GLOB}'
    OR coalesce(json_type(s.line, '$.ended_at'), 'null') NOT IN ('null', 'text')
    OR (json_type(s.line, '$.ended_at') = 'text' AND NOT {_x("ended_at")} GLOB '{_TIME_GLOB}')
    OR json_type(s.line, '$.argv') IS NOT 'array'
    OR coalesce(json_type(s.line, '$.seq'), 'null') NOT IN ('null', 'integer')
    OR coalesce(json_type(s.line, '$.duration_ms'), 'null') NOT IN ('null', 'integer')
    OR coalesce(json_type(s.line, '$.exit_code'), 'null') NOT IN ('null', 'integer')
"""


def _column(name: str) -> str:
    if name == "install_id":
        return f"CASE WHEN {_nonempty_text('install_id')} THEN {_x('install_id')} ELSE '{FOREIGN_INSTALL}' END"
    if name == "seq":
        return f"CASE WHEN {_nonempty_text('install_id')} THEN {_x('seq')} END"
    if name == "state":
        return f"CASE WHEN {_nonempty_text('state')} THEN {_x('state')} ELSE 'imported' END"
    if name == "source":
        return f"CASE WHEN {_nonempty_text('source')} THEN {_x('source')} ELSE 'import' END"
    if name in ("argv", "command") or name in _MASKED_STRINGS:
        return f"coalesce(f.{name}, {_x(name)})"
    if name in _MASKED_JSON:
        return f"coalesce(f.{name}, {_j(name)})"
    if name == "redacted":
        return f"CASE WHEN f.redacted THEN 1 ELSE {_x(name)} END"
    if name in store.JSON_FIELDS:
        return _j(name)
    return _x(name)


_STAGED_INSERT = (f"INSERT OR IGNORE INTO records ({', '.join(store.FIELDS)}) SELECT "
                  + ", ".join(_column(n) for n in store.FIELDS)
                  + " FROM temp.import_stage s LEFT JOIN temp.import_fix f ON f.n = s.n ORDER BY s.n")
_FIX_COLUMNS = ("n", "argv", "command", *_MASKED_STRINGS, *_MASKED_JSON, "redacted")
_ODD_QUERY = (f"SELECT n, line FROM temp.import_stage s WHERE CASE WHEN NOT json_valid(s.line) THEN 1"
              f" ELSE ({_IRREGULAR}) END ORDER BY n")
_MASK_QUERY = ("SELECT s.n, " + _x("argv") + ", " + _x("command") + ", "
               + ", ".join(_x(n) for n in _MASKED_STRINGS) + ", "
               + ", ".join(_j(n) for n in _MASKED_JSON) + " FROM temp.import_stage s ORDER BY s.n")


class _BadLine(Exception):
    pass


class _Importer:
    """Stages raw JSONL lines in a temporary table and lets SQLite's JSON functions take them
    apart: Python only parses argv and the free-text fields (to mask them, remembering repeated
    values), and whole lines only when they are irregular."""

    def __init__(self, conn):
        self.conn = conn
        self.masker = Masker()
        self.argv_memo: dict[str, tuple] = {}
        self.value_memo: dict[tuple, object] = {}
        self.read = 0
        self.added = 0
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_stage (n INTEGER PRIMARY KEY, line TEXT NOT NULL)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS import_fix (" + ", ".join(
            f"{c} {'INTEGER PRIMARY KEY' if c == 'n' else ''}" for c in _FIX_COLUMNS) + ")")

    def close(self) -> None:
        self.conn.execute("DROP TABLE IF EXISTS temp.import_stage")
        self.conn.execute("DROP TABLE IF EXISTS temp.import_fix")

    def lines(self, stream, label: str) -> None:
        batch: list[tuple[int, str]] = []
        base = self.read
        for line_no, line in enumerate(stream, 1):
            if not line.strip():
                continue
            batch.append((base + line_no, line))
            if len(batch) >= STAGE_BATCH:
                self._flush(batch, label, base)
                batch = []
        if batch:
            self._flush(batch, label, base)

    def _flush(self, batch: list[tuple[int, str]], label: str, base: int) -> None:
        conn = self.conn
        self.read += len(batch)
        conn.executemany("INSERT INTO temp.import_stage (n, line) VALUES (?, ?)", batch)
        # Already stored (a re-import): nothing to check, mask or insert.
        conn.execute("DELETE FROM temp.import_stage WHERE CASE WHEN json_valid(line)"
                     " THEN json_extract(line, '$.id') IN (SELECT id FROM main.records) ELSE 0 END")
        odd = conn.execute(_ODD_QUERY).fetchall()
        py_rows = []
        for n, line in odd:
            try:
                record = normalize(json.loads(line))
            except (ValueError, RecursionError) as exc:
                message = exc.args[0] if isinstance(exc, BadRecord) else f"not JSON ({exc})"
                raise BadUsage(f"{label}:{n - base}: {message}") from None
            py_rows.append(to_row(self.masker.record(record)))
        if odd:
            conn.executemany("DELETE FROM temp.import_stage WHERE n = ?", [(n,) for n, _ in odd])
            self.added += max(0, conn.executemany(store._INSERT, py_rows).rowcount)
        try:
            fixes = [fix for fix in map(self._mask_row, conn.execute(_MASK_QUERY).fetchall()) if fix]
        except _BadLine as exc:
            raise BadUsage(f"{label}:{exc.args[0] - base}: {exc.args[1]}") from None
        if fixes:
            conn.executemany(f"INSERT INTO temp.import_fix ({', '.join(_FIX_COLUMNS)}) VALUES"
                             f" ({', '.join('?' * len(_FIX_COLUMNS))})", fixes)
        self.added += max(0, conn.execute(_STAGED_INSERT).rowcount)
        conn.execute("DELETE FROM temp.import_stage")
        conn.execute("DELETE FROM temp.import_fix")

    def _mask_row(self, row) -> tuple | None:
        n, argv_text, command = row[0], row[1], row[2]
        hit = self.argv_memo.get(argv_text)
        if hit is None:
            argv = json.loads(argv_text)
            if not all(isinstance(a, str) for a in argv):
                raise _BadLine(n, "argv is missing or not a list of strings")
            masked, changed = self.masker.argv(argv)
            hit = (_encode(masked) if changed else None,
                   "kubectl" + "".join(" " + shlex.quote(a) for a in masked), changed)
            if len(self.argv_memo) < 100_000:
                self.argv_memo[argv_text] = hit
        fix_argv, new_command, redacted = hit
        fix = [n, fix_argv, new_command if command != new_command else None]
        dirty = fix_argv is not None or fix[2] is not None
        for i, name in enumerate(_MASKED_STRINGS + _MASKED_JSON, start=3):
            value = row[i]
            if value is None:
                fix.append(None)
                continue
            key = (i, value)
            masked = self.value_memo.get(key, key)
            if masked is key:
                if name in _MASKED_STRINGS:
                    if not isinstance(value, str):
                        masked = None
                    else:
                        out, changed = self.masker.text(value)
                        masked = out if changed else None
                else:
                    out, changed = self.masker.value(json.loads(value))
                    masked = _encode(out) if changed else None
                if len(self.value_memo) < 100_000:
                    self.value_memo[key] = masked
            fix.append(masked)
            if masked is not None:
                dirty = redacted = True
        if not dirty:
            return None
        fix.append(1 if redacted else None)
        return tuple(fix)


def import_jsonl(conn, files: list[str]) -> tuple[int, int]:
    """Import JSONL FILES ('-' = stdin) in one transaction: all or nothing. Returns (read, added)."""
    importer = _Importer(conn)
    try:
        with store.bulk(conn):
            for path in files:
                if path == "-":
                    importer.lines(sys.stdin, "<stdin>")
                    continue
                try:
                    f = open(path, encoding="utf-8", errors="replace")
                except OSError as exc:
                    raise BadUsage(f"cannot read {path}: {exc.strerror}") from None
                with f:
                    importer.lines(f, path)
    finally:
        importer.close()
    return importer.read, importer.added


# --- shell history ----------------------------------------------------------------------------


def _line_id(line, fmt: str) -> str:
    if getattr(line, "key", ""):
        return line.key
    import hashlib

    stamp = "" if line.started is None else f"{line.started:.0f}"
    text = f"{fmt}\0{stamp}\0{line.line_no}\0{getattr(line, 'part', 0)}\0{line.raw_line}"
    return "import-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def history_records(lines, fmt: str) -> list[dict]:
    """Records for imported shell-history lines: source=import, state=imported, exit status
    unknown, masked by record.build. A line without a time (bash without HISTTIMEFORMAT) is
    placed at the Unix epoch plus its line number in milliseconds: first, in file order."""
    from .record import Run, build

    records = []
    for line in lines:
        env = dict(line.env or ())
        started = line.started if line.started is not None else line.line_no / 1000.0
        ended = started + line.duration_s if line.started is not None and line.duration_s is not None else None
        run = Run(id=_line_id(line, fmt), source="import", argv=list(line.argv), started=started, ended=ended,
                  exit_code=None, state="imported", kubeconfig_env=env.get("KUBECONFIG"),
                  unexpanded=bool(line.unexpanded))
        records.append(build(run))
    return records


def import_shell_history(conn, fmt: str, path: str | None, aliases: tuple[str, ...]) -> tuple[int, int]:
    from . import shell_history

    try:
        lines = shell_history.read_history(fmt, path, aliases=list(aliases))
    except FileNotFoundError as exc:
        raise BadUsage(f"cannot read {exc.filename or path}: no such file") from None
    except OSError as exc:
        raise BadUsage(f"cannot read {exc.filename or path}: {exc.strerror}") from None
    records = history_records(lines, fmt)
    seen = already_recorded(conn, [(line, rec) for line, rec in zip(lines, records)])
    return len(records), store.insert_local(conn, [r for r in records if r["id"] not in seen])


# How long after a history line's time its kubectl may start, when the history keeps no duration
# (bash): the commands before it on the line (`make && kubectl apply …`) run first.
LATE_START_S = 300.0


def already_recorded(conn, pairs) -> set[str]:
    """Ids of imported history lines whose run the recorder itself captured as it ran (the hook,
    the shim or the wrapper), so that importing the history of a shell that had the hook adds
    nothing twice: the same (masked) arguments, started from a second before the line's time to
    its end; each recorded run accounts for one line, the earliest first."""
    from .record import rfc3339
    from .timefmt import parse_rfc3339

    timed = sorted(((line, rec) for line, rec in pairs if line.started is not None and not line.unexpanded),
                   key=lambda p: p[1]["started_at"])
    if not timed:
        return set()
    lo = timed[0][0].started - 1.0
    hi = max(line.started + (line.duration_s or LATE_START_S) for line, _ in timed) + 1.0
    live: dict[str, list[float]] = {}
    for argv, started in conn.execute(
            "SELECT argv, started_at FROM records WHERE source IN ('hook', 'shim', 'wrapper')"
            " AND started_at >= ? AND started_at <= ? ORDER BY started_at", (rfc3339(lo), rfc3339(hi))):
        live.setdefault(argv, []).append(parse_rfc3339(started))
    seen = set()
    for line, rec in timed:
        starts = live.get(json.dumps(rec["argv"], ensure_ascii=False, separators=(",", ":")))
        if not starts:
            continue
        until = line.started + (line.duration_s or LATE_START_S) + 1.0
        for i, t in enumerate(starts):
            if line.started - 1.0 <= t <= until:
                del starts[i]
                seen.add(rec["id"])
                break
    return seen


@click.command("import", cls=Command)
@click.argument("files", nargs=-1, metavar="FILE…")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "bash-history", "zsh-history"]), default="jsonl",
              show_default=True, help="jsonl: records (from export); bash-history, zsh-history: a shell history file.")
@click.option("--alias", "aliases", multiple=True, metavar="NAME[=EXPANSION]",
              help="A shell alias for kubectl in the history (`k`, or `kgp='kubectl get pods'`); repeatable.")
def import_(files: tuple[str, ...], fmt: str, aliases: tuple[str, ...]) -> None:
    """Import records: JSONL (as `export` writes it; `-` reads stdin) or a shell history file
    (FILE defaults to the shell's own). Masking is re-applied; importing twice adds nothing."""
    if fmt == "jsonl":
        if not files:
            raise BadUsage("import: give the JSONL file(s) to import (or - for stdin)")
        if aliases:
            raise BadUsage("--alias applies to --format bash-history|zsh-history")
    elif len(files) > 1:
        raise BadUsage(f"--format {fmt} takes one history file")
    from .cli import open_store

    conn = open_store()
    if fmt == "jsonl":
        read, added = import_jsonl(conn, list(files))
    else:
        read, added = import_shell_history(conn, fmt, files[0] if files else None, aliases)
    click.echo(f"imported {added} new record(s) of {read} read", err=True)
