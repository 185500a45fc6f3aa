"""Audit event delivery for the test API server: log file (lumberjack-style
rotation) and webhook (EventList batches), with test knobs: clock skew,
delivery lag, out-of-order and duplicated delivery."""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class RealClock:
    """Wall clock. ``now()`` returns epoch seconds (float)."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """Injectable clock for tests: time only moves when told to."""

    def __init__(self, start: float | None = None):
        self._t = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._t += seconds
            return self._t

    def set(self, t: float) -> None:
        with self._lock:
            self._t = float(t)


class OffsetClock:
    """Wall clock plus an adjustable offset: time flows normally, and tests can
    jump ahead with ``advance()`` instead of sleeping."""

    def __init__(self, offset: float = 0.0):
        self.offset = float(offset)
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> float:
        with self._lock:
            self.offset += seconds
        return self.now()


def rfc3339_micro(t: float) -> str:
    d = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339(t: float) -> str:
    d = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


class RotatingLog:
    """lumberjack.Logger semantics as kube-apiserver uses them
    (--audit-log-maxsize/--audit-log-maxbackup): before a write that would
    make the file exceed ``max_bytes`` the file is renamed to
    ``<name>-<UTC 2006-01-02T15-04-05.000><ext>`` and a new one is started.
    ``max_backups`` > 0 deletes the oldest backups beyond that number."""

    def __init__(self, path: str, max_bytes: int | None = None, max_backups: int = 0,
                 clock: Any = None):
        self.path = path
        self.max_bytes = max_bytes
        self.max_backups = max_backups
        self.clock = clock or RealClock()
        self._lock = threading.Lock()
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self._fh = open(path, "ab")
        self._size = self._fh.tell()
        self.backups: list[str] = []
        self._last_ms = -1

    def _backup_name(self) -> str:
        base, ext = os.path.splitext(self.path)
        ms = int(self.clock.now() * 1000)
        # lumberjack would overwrite a backup made in the same millisecond; a
        # fake clock makes that common, so backup names step forward instead
        # (and stay in order, even after old backups were deleted).
        ms = max(ms, self._last_ms + 1)
        while True:
            d = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
            name = f"{base}-{d.strftime('%Y-%m-%dT%H-%M-%S')}.{ms % 1000:03d}{ext}"
            if not os.path.exists(name):
                self._last_ms = ms
                return name
            ms += 1

    def _rotate(self) -> None:
        self._fh.close()
        name = self._backup_name()
        os.rename(self.path, name)
        self.backups.append(name)
        self._fh = open(self.path, "ab")
        self._size = 0
        if self.max_backups and len(self.backups) > self.max_backups:
            for old in self.backups[: -self.max_backups]:
                try:
                    os.remove(old)
                except OSError:
                    pass
            self.backups = self.backups[-self.max_backups:]

    def write(self, data: bytes) -> None:
        with self._lock:
            if self.max_bytes and self._size + len(data) > self.max_bytes and self._size > 0:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)

    def close(self) -> None:
        with self._lock:
            self._fh.close()


@dataclass
class _Pending:
    event: dict
    due: float  # clock time at which the event may be delivered


@dataclass
class _Batch:
    events: list
    not_before: float = 0.0
    attempts: int = 0


@dataclass
class AuditOptions:
    log_path: str | None = None
    log_max_bytes: int | None = None
    log_max_backups: int = 0
    webhook_url: str | None = None
    webhook_token: str | None = None  # bearer token, as a webhook kubeconfig's user carries it
    batch_size: int = 400          # --audit-webhook-batch-max-size
    batch_max_wait: float = 30.0   # --audit-webhook-batch-max-wait
    retry_backoff: float = 10.0    # --audit-webhook-initial-backoff
    skew: float = 0.0              # seconds added to every timestamp written
    lag: float = 0.0               # seconds an event is held back before delivery
    lag_jitter: float = 0.0        # plus a random 0..lag_jitter seconds per event (out-of-order across time)
    reorder: bool = False          # shuffle events that become due together
    duplicate_rate: float = 0.0    # chance a delivered webhook batch is delivered again later
    log_duplicate_rate: float = 0.0  # the same for log lines
    seed: int = 0


class AuditPipeline:
    """Buffers events, then writes them to the log and/or posts them to the webhook."""

    def __init__(self, opts: AuditOptions, clock: Any):
        self.opts = opts
        self.clock = clock
        self.rng = random.Random(opts.seed)
        self.log = (RotatingLog(opts.log_path, opts.log_max_bytes, opts.log_max_backups, clock)
                    if opts.log_path else None)
        self._lock = threading.RLock()
        self._pending: list[_Pending] = []
        self._webhook_buf: list[dict] = []
        self._webhook_buf_since: float | None = None
        self._webhook_retry: list[_Batch] = []
        self._log_dups: list[dict] = []
        self.emitted: list[dict] = []       # every event, in emission order (test introspection)
        self.posted_batches = 0
        self.post_errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="audit-pump", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- input
    def emit(self, event: dict) -> None:
        with self._lock:
            self.emitted.append(event)
            jitter = self.rng.uniform(0, self.opts.lag_jitter) if self.opts.lag_jitter else 0.0
            self._pending.append(_Pending(event, self.clock.now() + self.opts.lag + jitter))
        if not self.opts.lag and not self.opts.lag_jitter:
            self.pump()

    # -------------------------------------------------------------- output
    def pump(self, force: bool = False) -> None:
        """Deliver whatever is due (``force``: everything, ignoring lag and batch waits)."""
        with self._lock:
            now = self.clock.now()
            due = sorted((p for p in self._pending if force or p.due <= now), key=lambda p: p.due)
            if due:
                self._pending = [p for p in self._pending if not (force or p.due <= now)]
                events = [p.event for p in due]
                if self.opts.reorder and len(events) > 1:
                    self.rng.shuffle(events)
                self._write_log(events)
                if self.opts.webhook_url:
                    if self._webhook_buf_since is None:
                        self._webhook_buf_since = now
                    self._webhook_buf.extend(events)
            if self._log_dups and (force or self.rng.random() < 0.5):
                dups, self._log_dups = self._log_dups, []
                self._write_log(dups, allow_dup=False)
            if self.opts.webhook_url:
                self._pump_webhook(now, force)

    def _write_log(self, events: list[dict], allow_dup: bool = True) -> None:
        if not self.log:
            return
        for ev in events:
            self.log.write((json.dumps(ev, separators=(",", ":")) + "\n").encode())
            if allow_dup and self.opts.log_duplicate_rate and self.rng.random() < self.opts.log_duplicate_rate:
                self._log_dups.append(ev)

    def _pump_webhook(self, now: float, force: bool) -> None:
        size = max(1, self.opts.batch_size)
        batches: list[_Batch] = []
        while len(self._webhook_buf) >= size:
            batches.append(_Batch(self._webhook_buf[:size]))
            self._webhook_buf = self._webhook_buf[size:]
        if self._webhook_buf and (force or (self._webhook_buf_since is not None
                                            and now - self._webhook_buf_since >= self.opts.batch_max_wait)):
            batches.append(_Batch(self._webhook_buf))
            self._webhook_buf = []
        if not self._webhook_buf:
            self._webhook_buf_since = None
        elif batches:
            self._webhook_buf_since = now
        ready = [b for b in self._webhook_retry if force or b.not_before <= now]
        self._webhook_retry = [b for b in self._webhook_retry if not (force or b.not_before <= now)]
        batches = ready + batches
        if self.opts.reorder and len(batches) > 1:
            self.rng.shuffle(batches)
        for b in batches:
            ok = self._post(b.events)
            if not ok:
                b.attempts += 1
                b.not_before = now + self.opts.retry_backoff * (2 ** min(b.attempts - 1, 5))
                self._webhook_retry.append(b)
            elif self.opts.duplicate_rate and b.attempts >= 0 and self.rng.random() < self.opts.duplicate_rate:
                # at-least-once delivery: the same batch arrives again later
                self._webhook_retry.append(_Batch(list(b.events), now + self.opts.retry_backoff, -1))

    def _post(self, events: list[dict]) -> bool:
        body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1",
                           "metadata": {}, "items": events}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self.opts.webhook_token:
            headers["Authorization"] = f"Bearer {self.opts.webhook_token}"
        req = urllib.request.Request(self.opts.webhook_url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
                ok = 200 <= resp.status < 300
        except (urllib.error.URLError, OSError) as exc:
            self.post_errors.append(str(exc))
            return False
        if ok:
            self.posted_batches += 1
        return ok

    def pending_count(self) -> int:
        with self._lock:
            return (len(self._pending) + len(self._webhook_buf)
                    + sum(len(b.events) for b in self._webhook_retry if b.attempts >= 0))

    def flush(self) -> None:
        self.pump(force=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.pump()
            except Exception:  # pragma: no cover - never kill the pump
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self.log:
            self.log.close()
