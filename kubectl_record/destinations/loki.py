"""Loki's push API (`loki://HOST:3100` -> POST /loki/api/v1/push), JSON body:

    {"streams": [{"stream": {LABELS}, "values": [["<ns>", "<line>", {STRUCTURED METADATA}], …]}]}

Labels stay low-cardinality: `service_name` (kubectl-record), `host` (each host its own stream:
Loki refuses entries far older than the newest of their stream, and hosts deliver
independently) and `cluster`. The line is the masked command; every other field goes into
structured metadata (Loki 3; values are strings: lists and objects as JSON, booleans as
true/false), with `audit_status` pulled out of `audit` for queries. The entry time is when the
run started. Loki deduplicates an entry with the same stream, timestamp and line, so a re-send
does not double it.

Retry rules (Loki's clients, Promtail/Alloy): 429, 5xx and connection errors are retried (not
before Retry-After); any other 4xx is not. A 400 names entries Loki refused (too old: older
than `reject_old_samples_max_age`, 7 days by default; too far behind the newest entry of the
stream; too new; too long) while it keeps the rest: the batch is split until each refused
record is isolated, and each becomes a dead letter with Loki's reason. Records older than the
`max_age` option (default 168h; 0 turns the check off) are refused before sending, with that reason.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict

from .base import DeliveryResult, Destination, rfc3339_to_ns, short

PUSH_PATH = "/loki/api/v1/push"
LABEL_FIELDS = ("host", "cluster")
SERVICE = "kubectl-record"
DEFAULT_MAX_AGE = 168 * 3600.0
_NOT_METADATA = frozenset({"command", "audit", *LABEL_FIELDS})


def labels(record: dict) -> dict:
    out = {"service_name": SERVICE}
    for field in LABEL_FIELDS:
        if record.get(field):
            out[field] = str(record[field])
    return out


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def metadata(record: dict) -> dict:
    out = {}
    for field, value in record.items():
        if value is None or field in _NOT_METADATA:
            continue
        out[field] = _text(value)
    audit = record.get("audit")
    if isinstance(audit, dict):
        if audit.get("status"):
            out["audit_status"] = str(audit["status"])
        out["audit"] = _text(audit)
    return out


def entry(record: dict) -> list:
    return [str(rfc3339_to_ns(record.get("started_at")) or 0), record.get("command") or "", metadata(record)]


def push_body(records: list[dict]) -> dict:
    streams: "OrderedDict[tuple, dict]" = OrderedDict()
    for record in records:
        stream = labels(record)
        key = tuple(sorted(stream.items()))
        streams.setdefault(key, {"stream": stream, "values": []})["values"].append(entry(record))
    for stream in streams.values():
        stream["values"].sort(key=lambda v: int(v[0]))
    return {"streams": list(streams.values())}


class LokiDestination(Destination):
    kind = "loki"
    batch_size = 1000

    def __init__(self, url, options):
        super().__init__(url, options)
        self.push_url = url.base + url.path + PUSH_PATH
        max_age = options.get("max_age", DEFAULT_MAX_AGE)
        self.max_age = _seconds(max_age)
        self.tenant = options.get("tenant")
        self.clock = time.time

    def send(self, records: list[dict]) -> DeliveryResult:
        if not records:
            return DeliveryResult()
        result = DeliveryResult()
        fresh = []
        if self.max_age:
            oldest_ns = int((self.clock() - self.max_age) * 1e9)
            for record in records:
                ts = rfc3339_to_ns(record.get("started_at")) or 0
                if ts < oldest_ns:
                    result.rejected[record["id"]] = (
                        f"older than Loki accepts (reject_old_samples_max_age, max_age={self.max_age:g}s): "
                        f"started {record.get('started_at')}")
                else:
                    fresh.append(record)
        else:
            fresh = list(records)
        if fresh:
            result.merge(self._push(fresh))
        return result

    def _push(self, records: list[dict]) -> DeliveryResult:
        body = json.dumps(push_body(records), ensure_ascii=False, separators=(",", ":")).encode()
        headers = {"X-Scope-OrgID": str(self.tenant)} if self.tenant else None
        response, failed = self.post(self.push_url, body, "application/json", headers=headers)
        if failed:
            return failed
        # Promtail/Alloy: 429 and every 5xx are retried.
        whole = self.classify_status(response, retryable=(429,) + tuple(range(500, 600)))
        if whole:
            return whole
        status = response.status_code
        ids = [r["id"] for r in records]
        if 200 <= status < 300:
            return DeliveryResult(status=status, delivered=ids)
        if status == 404:
            return DeliveryResult(status=status, fatal_error=f"{self.name}: no push endpoint at {self.push_url} (404)")
        reason = f"{status} {short(response.text or response.reason or '', 400)}"
        ignored = re.findall(r"total ignored: (\d+) out of (\d+)", response.text or "")
        if status == 400 and ignored and sum(int(n) for n, _ in ignored) >= len(records):
            # Loki says it refused every entry: no need to look for the good ones.
            return DeliveryResult(status=status, rejected={i: f"Loki refused: {reason}" for i in ids})
        if status == 400 and len(records) > 1:
            # Loki kept the valid entries and refused some: find which (a re-sent valid entry is
            # deduplicated by Loki, so the halves that pass are not doubled).
            middle = len(records) // 2
            result = self._push(records[:middle])
            result.merge(self._push(records[middle:]))
            return result
        return DeliveryResult(status=status, rejected={i: f"Loki refused: {reason}" for i in ids})


def _seconds(value) -> float:
    """168h, 30m, 45s, 7d or a number of seconds."""
    if value in (None, "", 0, "0"):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)
