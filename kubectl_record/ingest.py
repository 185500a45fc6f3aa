"""Ingestion: spooled runs → masked records in the store.

Started in the background after every recorded run (`python -I -m kubectl_record.ingest
--background`) and by every reader before it reads. One ingester works at a time (a lock in the
spool); a run spooled while another holds the lock is picked up by that one, because the holder
looks again after letting go. Spool files are removed only after their records are committed,
and records are keyed by the run's id, so a crash in between re-ingests without duplicates.
When the store cannot be written, runs stay in the spool and the reason is left for `doctor`.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass, field

from . import paths, spool

ERROR_FILE = ".ingest-error"
STATUS_FILE = ".ingest-status"
PID_FILE = ".ingester"
# How long a background ingester stays after its last work. Runs that end meanwhile start no
# process (a person typing commands a few seconds apart costs one Python start per half minute of
# activity, not one per run); it looks often at first, when the next run is likeliest, then less.
LINGER_S = 30.0


# Once a run appears or ends, wait this long before the pass: the prompt that follows a run is
# drawn meanwhile without an ingester competing for the CPU, and a burst of runs (a loop) is
# taken in one pass.
SETTLE_S = 0.2


def _linger_step(idle: float) -> float:
    return 0.1 if idle < 2.0 else 0.5
BAD_SUFFIX = ".bad"
# A snapshot or a broken file this old is nobody's work in progress.
GRACE_S = 60.0


@dataclass
class Result:
    ingested: int = 0
    finished_late: int = 0
    running: int = 0
    bad: int = 0
    busy: bool = False
    error: str | None = None
    pending: list[str] = field(default_factory=list)


def _alive(pid_text: str | None, started: float) -> bool:
    """Whether the process that wrote a start section may still be running it."""
    try:
        pid = int(pid_text or "")
    except ValueError:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        # A pid reused by a newer process is not our writer.
        return proc.create_time() <= started + 1.0 and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def _parent_name(entry: spool.Entry) -> str | None:
    if entry.start.get("pcomm"):
        return entry.start["pcomm"]
    try:
        import psutil

        return psutil.Process(int(entry.start.get("ppid", ""))).name()
    except Exception:
        return None


def _os_user(uid: str | None) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(int(uid or os.getuid())).pw_name
    except (KeyError, ValueError):
        return None


def _run_from_entry(entry: spool.Entry, state: str):
    from .record import Run

    start = entry.start
    started = float(start.get("t", "0").replace(",", "."))
    ended = rc = None
    if entry.end:
        ended = float(entry.end.get("t", "0").replace(",", "."))
        rc = int(entry.end["rc"]) if entry.end.get("rc", "").lstrip("-").isdigit() else None
    return Run(
        id=entry.id,
        source=start.get("src", "shim"),
        argv=entry.argv,
        started=started,
        ended=ended,
        exit_code=rc,
        state=state,
        cwd=start.get("cwd") or None,
        home=start.get("home") or None,
        kubeconfig_env=start.get("kcenv") if start.get("kcset") == "1" else None,
        kubeconfig_files=[(p, s) for p, s in entry.kubeconfigs if s and os.path.exists(s)],
        session=start.get("sess") or None,
        parent=_parent_name(entry),
        ssh_client=start.get("ssh") or None,
        sudo_user=start.get("sudo") or None,
        ci_env=entry.ci,
        kubectl_path=start.get("kubectl") or None,
        os_user=_os_user(start.get("uid")),
    )


def _write_json(path: str, data) -> None:
    """Atomically, newline-terminated (the hot path reads the pid file with bash's `read`)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data) + "\n")
    os.replace(tmp, path)


def _tidy_snapshots(spool_dir: str, referenced: set[str], now: float) -> None:
    """Reduce kubeconfig snapshots to what resolution reads (no credentials survive a pass),
    and drop those no waiting run refers to, keeping each file's newest (the hot path compares
    its mtime against the kubeconfig) and anything young enough to be in use right now."""
    from .kubeconfig import SCRUBBED_MARK, scrubbed

    kc = os.path.join(spool_dir, "kc")
    try:
        names = sorted(os.listdir(kc))
    except FileNotFoundError:
        return
    newest: dict[str, str] = {}
    for name in names:
        newest[name.rsplit(".", 1)[0]] = name
    keep = set(newest.values())
    for name in names:
        path = os.path.join(kc, name)
        try:
            st = os.stat(path)
            if name not in keep and path not in referenced and now - st.st_mtime > GRACE_S:
                os.unlink(path)
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if text.startswith(SCRUBBED_MARK):
                continue
            # Written beside kc/, not in it: the hot path globs kc/ for the newest copy.
            tmp = os.path.join(spool_dir, f".scrub.{os.getpid()}.tmp")
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(scrubbed(text))
            # Same mtime: the hot path's "changed since the last copy?" test must not move.
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.replace(tmp, path)
        except FileNotFoundError:
            pass


class _Versions:
    """kubectl's client version per binary, cached in the store by path, mtime and size."""

    def __init__(self, conn):
        self.conn = conn
        self.memo: dict[str, str | None] = {}

    def get(self, path: str | None) -> str | None:
        path = path or _find_real_kubectl()
        if not path:
            return None
        if path in self.memo:
            return self.memo[path]
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (path, st.st_mtime_ns, st.st_size)
        row = self.conn.execute(
            "SELECT version FROM kubectl_versions WHERE path = ? AND mtime_ns = ? AND size = ?", key
        ).fetchone()
        if row:
            version = row[0]
        else:
            # A binary that cannot say its version is not asked again until it changes.
            version = _ask_version(path)
            self.conn.execute("INSERT OR REPLACE INTO kubectl_versions VALUES (?, ?, ?, ?)", (*key, version))
        self.memo[path] = version
        return version


def _ask_version(path: str) -> str | None:
    import subprocess

    env = dict(os.environ, KUBECTL_RECORD_DISABLE="1")
    try:
        out = subprocess.run([path, "version", "--client", "-o", "json"], capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=5, env=env).stdout
        return json.loads(out)["clientVersion"]["gitVersion"]
    except Exception:
        return None


def _find_real_kubectl() -> str | None:
    for d in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(d or ".", "kubectl")
        if os.path.exists(os.path.join(d or ".", ".kubectl-record-shim")):
            continue
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# Set by `main --background`: only the background ingester may ask the server who we are.
_BACKGROUND = False


def _after_ingest(conn, records: list[dict], marked: list[str]) -> None:
    """Audit correlation's share of ingestion (kubectl_record/audit/hooks.py): note marked runs
    and, in the background ingester only, fill identities from the SelfSubjectReview cache."""
    try:
        from .audit.hooks import after_ingest
    except ImportError:
        return
    try:
        after_ingest(conn, records, marked, background=_BACKGROUND)
    except Exception:  # correlation is an extra: it never costs a run
        pass


def _ingest_pass(spool_dir: str, db_path: str | None, now: float, result: Result) -> dict[str, int]:
    """Ingest what is complete now. Returns {file: size} of what this pass looked at."""
    from . import record, store
    from .timefmt import parse_rfc3339

    seen: dict[str, int] = {}
    finished, unfinished_late, done_files, referenced = [], [], [], set()
    marked: list[str] = []  # runs started with the exact mode's argv[0] marker
    for path in spool.list_entries(spool_dir):
        try:
            seen[path] = os.path.getsize(path)
            entry = spool.read(path)
        except FileNotFoundError:
            continue
        except (spool.SpoolFormatError, ValueError, UnicodeError):
            # Still being written, or cut short by a crash: quarantine only once it is old.
            try:
                if now - os.stat(path).st_mtime > GRACE_S:
                    os.replace(path, path + BAD_SUFFIX)
                    result.bad += 1
            except FileNotFoundError:
                pass
            continue
        if not entry.start:
            unfinished_late.append(entry)
            done_files.append(path)
            continue
        started = float(entry.start.get("t", "0").replace(",", "."))
        if entry.end is None:
            if _alive(entry.start.get("pid"), started):
                result.running += 1
                referenced.update(s for _, s in entry.kubeconfigs)
                continue
            # The writer may have added the end and exited since we read the file.
            entry = spool.read(path)
            seen[path] = os.path.getsize(path)
        if entry.end is None:
            state = "unfinished"
        else:
            state = "finished"
        finished.append((_run_from_entry(entry, state), path))
        if entry.start.get("mk") == "1":
            marked.append(entry.id)
        done_files.append(path)
    if not done_files:
        _tidy_snapshots(spool_dir, referenced, now)
        return seen

    conn = store.connect(db_path)
    try:
        versions = _Versions(conn)
        records = []
        for run, path in finished:
            try:
                records.append(record.build(run, versions.get(run.kubectl_path)))
            except Exception as exc:
                # A bug must not lose the run: it stays spooled and doctor shows why.
                result.error = f"cannot build the record of {os.path.basename(path)}: {exc!r}"
                done_files.remove(path)
        result.ingested += store.insert_local(conn, records)
        _after_ingest(conn, records, marked)
        try:
            from .retention import maybe_auto_prune

            maybe_auto_prune(conn)  # at most once a day, only when retention is configured
        except Exception as exc:  # a bad retention setting must not stop recording
            result.error = f"retention: {exc}"
        for entry in unfinished_late:
            row = conn.execute("SELECT started_at FROM records WHERE id = ?", (entry.id,)).fetchone()
            if row:
                ended = float(entry.end.get("t", "0").replace(",", "."))
                started = parse_rfc3339(row[0])
                rc = entry.end.get("rc", "")
                if store.finish(conn, entry.id, record.rfc3339(ended), max(0, round((ended - started) * 1000)),
                                int(rc) if rc.lstrip("-").isdigit() else None):
                    result.finished_late += 1
    finally:
        conn.close()
    for path in done_files:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    _tidy_snapshots(spool_dir, referenced, now)
    return seen


def _sizes(spool_dir: str) -> dict[str, int]:
    sizes = {}
    for path in spool.list_entries(spool_dir):
        try:
            sizes[path] = os.path.getsize(path)
        except FileNotFoundError:
            pass
    return sizes


def _news(spool_dir: str, seen: dict[str, int]) -> list[str]:
    """Spool files that appeared or grew (an end was added) since a pass saw SEEN."""
    return [path for path, size in _sizes(spool_dir).items() if seen.get(path) != size]


def _locked_pass(spool_dir: str, db_path: str | None, blocking: bool, clock, result: Result) -> dict[str, int] | None:
    """One pass under the spool lock. Returns what it looked at, or None if another ingester
    holds the lock (it will look again after letting go, so nothing is left behind)."""
    from . import store

    with open(os.open(os.path.join(spool_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600), "r+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            result.busy = True
            return None
        now = clock()
        try:
            seen = _ingest_pass(spool_dir, db_path, now, result)
        except store.StoreError as exc:
            result.error = str(exc)
            seen = {}
        _write_json(os.path.join(spool_dir, STATUS_FILE), {"time": now, "ingested": result.ingested})
        if result.error:
            _write_json(os.path.join(spool_dir, ERROR_FILE), {"time": now, "error": result.error})
        else:
            try:
                os.unlink(os.path.join(spool_dir, ERROR_FILE))
            except FileNotFoundError:
                pass
        return seen


def ingest(spool_dir: str | None = None, db_path: str | None = None, *, blocking: bool = True,
           linger: float = 0.0, clock=time.time, sleep=time.sleep, on_stored=None) -> Result:
    """Move every complete spooled run into the store. Store failures are reported in the
    result (and left in the spool for `doctor`), never raised: the runs wait for a later try.

    With LINGER, stay that many idle seconds after the last work, named in the spool's pid
    file: runs ending meanwhile start no ingester of their own (a script running kubectl in a
    loop starts one Python, not one per run; the hot path names the ingester it starts at once,
    before Python is up). The file goes before the last look, so a run that saw it is never left
    behind. ON_STORED is called after each pass that stored records."""
    spool_dir = spool_dir or paths.spool_dir()
    result = Result()
    if not os.path.isdir(spool_dir):
        return result
    def one_pass() -> dict[str, int] | None:
        stored = result.ingested
        seen = _locked_pass(spool_dir, db_path, blocking, clock, result)
        if on_stored and result.ingested > stored:
            on_stored()
        return seen

    pid_path = os.path.join(spool_dir, PID_FILE)
    if linger and _named_ingester_alive(pid_path):
        # Started by a run that ended before the lingering ingester named itself: that one
        # looks again before it leaves, so this one does its pass and goes.
        linger = 0.0
    if linger:
        _write_json(pid_path, os.getpid())
    try:
        while True:
            seen = one_pass()
            if result.error or (seen is None and not linger):
                return result
            if seen is None:
                # Another ingester holds the lock and looks again after it lets go: wait for
                # runs that appear or end after now, like any idle time.
                seen = _sizes(spool_dir)
            # Idle: one directory listing per step, no lock, until a run appears or ends.
            idle = 0.0
            while idle < linger and not _news(spool_dir, seen):
                step = _linger_step(idle)
                sleep(step)
                idle += step
            if idle >= linger:
                break
            sleep(SETTLE_S)
    finally:
        # Only our own name: a run may have named a newer ingester meanwhile.
        if linger and _named_pid(pid_path) == os.getpid():
            try:
                os.unlink(pid_path)
            except FileNotFoundError:
                pass
    while True:  # the last look
        seen = one_pass()
        if seen is None or result.error:
            return result
        if not _news(spool_dir, seen):
            result.pending = sorted(spool.list_entries(spool_dir))
            return result


def _named_pid(pid_path: str) -> int | None:
    try:
        with open(pid_path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _named_ingester_alive(pid_path: str) -> bool:
    """Whether the pid file names another live process (the hot path's own test)."""
    pid = _named_pid(pid_path)
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _detach() -> None:
    import signal

    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    # Background work: the next command the user types comes first. SCHED_BATCH (Linux) also
    # keeps a waking ingester from preempting the shell. Not SCHED_IDLE: a reader (`history`)
    # waiting for the spool lock that such an ingester holds would wait for as long as other
    # work keeps the CPUs busy.
    try:
        os.nice(10)
    except OSError:
        pass
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    try:
        os.setsid()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    background = "--background" in argv
    if background:
        global _BACKGROUND
        _BACKGROUND = True
        _detach()
    try:
        result = ingest(blocking=not background, linger=LINGER_S if background else 0.0,
                        on_stored=_kick_sync if background else None)
    except Exception as exc:  # the background ingester has no terminal to complain to
        if not background:
            raise
        try:
            _write_json(os.path.join(paths.spool_dir(), ERROR_FILE), {"time": time.time(), "error": repr(exc)})
        except OSError:
            pass
        return 1
    if not background and result.error:
        print(f"kubectl-record: {result.error}", file=sys.stderr)
        return 1
    return 0


def _kick_sync() -> None:
    """Uploads start in their own process, only when a collector or destination is set."""
    try:
        from .sync import kick

        kick()
    except Exception:  # uploading is an extra: it never costs ingestion
        pass


if __name__ == "__main__":
    sys.exit(main())
