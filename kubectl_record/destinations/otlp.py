"""OTLP/HTTP logs (`otlp://HOST:4318` -> POST /v1/logs), JSON encoding (ExportLogsServiceRequest).

One log record per kubectl record: the time is when the run started, the body is the masked
command line, `eventName` is `kubectl.command`, the severity is ERROR for a failed run and INFO
otherwise. Attributes use OpenTelemetry semantic-convention names where one exists (`ATTRIBUTE`
below) and `kubectl.<field>` for the rest; the resource carries service.name/version and
host.name (records are grouped per host, so a collector acting as a gateway keeps each host's
resource apart). `log.record.uid` is the record id, for receivers that deduplicate.

Retry rules (OTLP specification, "OTLP/HTTP Throttling" and "Failures"):
  200 with no partialSuccess            delivered
  200 with partialSuccess               never retried: delivered, with a warning naming the
                                        rejected count and the server's message (all rejected ->
                                        every record is a dead letter with that message)
  429, 502, 503, 504, connection        retry later, honouring Retry-After
  401/403                               refused; 404: wrong endpoint; 413: send fewer
  400                                   split the batch to find the record(s) refused; a single
                                        refused record is a dead letter
  any other 4xx/5xx                     not retried (as the specification requires): dead letters
"""

from __future__ import annotations

import json
import urllib.parse
from collections import OrderedDict

from .. import __version__
from .base import DeliveryResult, Destination, rfc3339_to_ns, short

LOGS_PATH = "/v1/logs"
EVENT_NAME = "kubectl.command"
SCOPE = "kubectl-record"
RETRYABLE = (429, 502, 503, 504)

# record field -> semantic-convention attribute (a scalar, same value)
ATTRIBUTE = {
    "id": "log.record.uid",
    "command": "process.command_line",
    "exit_code": "process.exit.code",
    "cwd": "process.working_directory",
    "os_user": "user.name",
    "cluster": "k8s.cluster.name",
    "namespace": "k8s.namespace.name",
    "session": "session.id",
    "identity": "enduser.id",
}
# ci.<key> -> attribute
CI_ATTRIBUTE = {"job": "cicd.pipeline.name", "run": "cicd.pipeline.run.id", "commit": "vcs.ref.head.revision",
                "system": "kubectl.ci.system"}
# Kept on the resource (one resource per host), not on each record.
RESOURCE_FIELDS = ("host",)
_SKIP = frozenset({"argv", "ci", "audit", "server", *RESOURCE_FIELDS})


def any_value(value) -> dict:
    """A Python value as an OTLP AnyValue (JSON mapping: int64 as a decimal string)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": [{"key": str(k), "value": any_value(v)} for k, v in value.items()
                                           if v is not None]}}
    return {"stringValue": str(value)}


def from_any_value(value: dict):
    """The inverse of any_value (accepts int64 as string or number)."""
    if not value:
        return None
    (kind, inner), = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "arrayValue":
        return [from_any_value(v) for v in (inner or {}).get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: from_any_value(kv.get("value")) for kv in (inner or {}).get("values", [])}
    if kind == "bytesValue":
        import base64

        return base64.b64decode(inner)
    return inner


def _kv(key: str, value) -> dict:
    return {"key": key, "value": any_value(value)}


def attributes(record: dict) -> dict:
    """The log record's attributes as a plain dict (name -> Python value), None values left out."""
    out: dict = {}
    for field, value in record.items():
        if value is None or field in _SKIP:
            continue
        out[ATTRIBUTE.get(field, f"kubectl.{field}")] = value
    if record.get("argv") is not None:
        out["process.command_args"] = ["kubectl", *record["argv"]]
        out["process.executable.name"] = "kubectl"
    server = record.get("server")
    if server:
        out["kubectl.server"] = server
        try:
            parts = urllib.parse.urlsplit(server)
            if parts.hostname:
                out["server.address"] = parts.hostname
                port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None)
                if port:
                    out["server.port"] = port
        except ValueError:
            pass
    for key, value in (record.get("ci") or {}).items():
        if value is not None:
            out[CI_ATTRIBUTE.get(key, f"kubectl.ci.{key}")] = value
    audit = record.get("audit")
    if isinstance(audit, dict):
        if audit.get("status") is not None:
            out["kubectl.audit.status"] = audit["status"]
        if audit.get("events"):
            out["kubectl.audit.events"] = audit["events"]
    return out


def record_from_attributes(attrs: dict, resource: dict | None = None) -> dict:
    """Rebuild the record fields an encoded log record carries (for tests and receivers)."""
    reverse = {v: k for k, v in ATTRIBUTE.items()}
    ci_reverse = {v: k for k, v in CI_ATTRIBUTE.items()}
    record: dict = {}
    ci: dict = {}
    audit: dict = {}
    for key, value in attrs.items():
        if key in reverse:
            record[reverse[key]] = value
        elif key in ci_reverse:
            ci[ci_reverse[key]] = value
        elif key.startswith("kubectl.ci."):
            ci[key[len("kubectl.ci."):]] = value
        elif key == "kubectl.audit.status":
            audit["status"] = value
        elif key == "kubectl.audit.events":
            audit["events"] = value
        elif key == "process.command_args":
            record["argv"] = list(value[1:])
        elif key.startswith("kubectl."):
            record[key[len("kubectl."):]] = value
    if ci:
        record["ci"] = ci
    if audit:
        audit.setdefault("events", [])
        record["audit"] = audit
    if resource and "host.name" in resource:
        record["host"] = resource["host.name"]
    return record


def severity(record: dict) -> tuple[int, str]:
    code = record.get("exit_code")
    if code not in (None, 0):
        return 17, "ERROR"
    return 9, "INFO"


def log_record(record: dict) -> dict:
    number, text = severity(record)
    started = rfc3339_to_ns(record.get("started_at")) or 0
    observed = rfc3339_to_ns(record.get("ended_at")) or started
    return {
        "timeUnixNano": str(started),
        "observedTimeUnixNano": str(observed),
        "severityNumber": number,
        "severityText": text,
        "eventName": EVENT_NAME,
        "body": {"stringValue": record.get("command") or ""},
        "attributes": [_kv(k, v) for k, v in attributes(record).items()],
    }


def export_request(records: list[dict]) -> dict:
    """ExportLogsServiceRequest: one ResourceLogs per host, one ScopeLogs each."""
    by_host: "OrderedDict[str | None, list[dict]]" = OrderedDict()
    for record in records:
        by_host.setdefault(record.get("host"), []).append(record)
    resource_logs = []
    for host, group in by_host.items():
        resource = {"service.name": "kubectl-record", "service.version": __version__}
        if host:
            resource["host.name"] = host
        resource_logs.append({
            "resource": {"attributes": [_kv(k, v) for k, v in resource.items()]},
            "scopeLogs": [{"scope": {"name": SCOPE, "version": __version__},
                           "logRecords": [log_record(r) for r in group]}],
        })
    return {"resourceLogs": resource_logs}


class OTLPDestination(Destination):
    kind = "otlp"
    batch_size = 1000

    def __init__(self, url, options):
        super().__init__(url, options)
        path = url.path
        self.logs_url = url.base + (path if path.endswith(LOGS_PATH) else path + LOGS_PATH) \
            + (f"?{url.query}" if url.query else "")

    def send(self, records: list[dict]) -> DeliveryResult:
        if not records:
            return DeliveryResult()
        body = json.dumps(export_request(records), ensure_ascii=False, separators=(",", ":")).encode()
        response, failed = self.post(self.logs_url, body, "application/json")
        if failed:
            return failed
        whole = self.classify_status(response, retryable=RETRYABLE)
        if whole:
            return whole
        status = response.status_code
        ids = [r["id"] for r in records]
        if status == 404:
            return DeliveryResult(status=status, fatal_error=f"{self.name}: no OTLP logs endpoint at {self.logs_url} (404)")
        if status == 400 and len(records) > 1:
            middle = len(records) // 2
            result = self.send(records[:middle])
            result.merge(self.send(records[middle:]))
            return result
        if not 200 <= status < 300:
            reason = f"{status} {_status_message(response)}"
            return DeliveryResult(status=status, rejected={i: reason for i in ids})
        result = DeliveryResult(status=status, delivered=ids)
        partial = _partial_success(response)
        if partial:
            rejected, message = partial
            if rejected >= len(ids):
                return DeliveryResult(status=status, rejected={i: f"OTLP partial success: {message}" for i in ids})
            result.warnings.append(f"{self.name} rejected {rejected} of {len(ids)} log records (partial success, "
                                   f"not retried): {message}")
        return result


def _status_message(response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("message"):
            return short(body["message"])
    except ValueError:
        pass
    return short(response.text or response.reason or "")


def _partial_success(response) -> tuple[int, str] | None:
    """(rejected count, message) of a partialSuccess in a JSON answer, else None."""
    if "json" not in response.headers.get("Content-Type", "").lower():
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    partial = body.get("partialSuccess") or body.get("partial_success") if isinstance(body, dict) else None
    if not isinstance(partial, dict):
        return None
    try:
        rejected = int(partial.get("rejectedLogRecords", partial.get("rejected_log_records", 0)) or 0)
    except (TypeError, ValueError):
        rejected = 0
    message = partial.get("errorMessage", partial.get("error_message", "")) or ""
    if rejected == 0 and not message:
        return None
    return rejected, short(message) or "(no message)"
