"""A generic HTTPS webhook (`webhook+https://host/path`), signed as Standard Webhooks specify.

One message per record, POSTed as JSON:
    {"type": "kubectl.command", "timestamp": <started_at>, "data": <the record, every field>}
with the headers
    webhook-id         msg_<record id>_<16 hex of the content's SHA-256>: the same on every retry of
                       the same content (receivers deduplicate on it), new when the record changes
    webhook-timestamp  Unix seconds of this attempt
    webhook-signature  v1,<base64 HMAC-SHA256 of "id.timestamp.body" keyed with the secret>
                       (when a `secret` option is set: whsec_<base64 key>)

Retry rules: 2xx delivered; 409 delivered (the receiver already has it); 408, 425, 429, 5xx and
connection errors retried later (honouring Retry-After; the rest of the batch waits, so order is
kept); 401/403 refused, 404 no such endpoint, 410 Gone (the receiver asks to stop), 3xx
(redirects are not followed): the destination is stopped until fixed, records stay queued; any
other 4xx (400, 413, 422 …): the receiver refuses that message, a dead letter with its reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from .base import DeliveryResult, Destination, DestinationError, short

EVENT_TYPE = "kubectl.command"
RETRYABLE = (408, 425, 429, 500, 502, 503, 504) + tuple(range(505, 600))


def secret_key(secret: str) -> bytes:
    text = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise DestinationError("webhook secret must be whsec_<base64>") from None


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def verify(secret: str, headers: dict, body: bytes, tolerance: float | None = 300, now: float | None = None) -> bool:
    """Check a Standard Webhooks signature (what a receiver does; used by the tests)."""
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, ts = lower.get("webhook-id"), lower.get("webhook-timestamp")
    if not msg_id or not ts or not ts.isdigit():
        return False
    if tolerance is not None and abs((time.time() if now is None else now) - int(ts)) > tolerance:
        return False
    expected = sign(secret_key(secret), msg_id, int(ts), body).split(",", 1)[1]
    for candidate in lower.get("webhook-signature", "").split():
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            return True
    return False


def message(record: dict) -> tuple[str, bytes]:
    body = json.dumps({"type": EVENT_TYPE, "timestamp": record.get("started_at"), "data": record},
                      ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(body).hexdigest()[:16]
    return f"msg_{record['id']}_{digest}", body


class WebhookDestination(Destination):
    kind = "webhook"
    batch_size = 100
    ordered = True

    def __init__(self, url, options):
        super().__init__(url, options)
        self.endpoint = url.endpoint()
        self.key = secret_key(options["secret"]) if options.get("secret") else None
        self.gzip = bool(options.get("gzip", False))  # receivers rarely accept gzip bodies
        self.clock = time.time

    def send(self, records: list[dict]) -> DeliveryResult:
        result = DeliveryResult()
        for record in records:
            msg_id, body = message(record)
            headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(self.clock()))}
            if self.key is not None:
                headers["webhook-signature"] = sign(self.key, msg_id, int(headers["webhook-timestamp"]), body)
            response, failed = self.post(self.endpoint, body, "application/json", headers=headers)
            if failed:
                result.merge(failed)
                return result
            status = response.status_code
            result.status = status
            if 200 <= status < 300 or status == 409:
                result.delivered.append(record["id"])
                continue
            if status == 410:
                result.fatal_error = f"{self.name} answered 410 Gone: the receiver asks not to be sent more"
                return result
            if status == 404:
                result.fatal_error = f"{self.name}: no such endpoint (404)"
                return result
            whole = self.classify_status(response, retryable=RETRYABLE)
            if whole and (whole.fatal_error or whole.retryable_error) and not whole.too_large:
                result.merge(whole)
                return result
            result.rejected[record["id"]] = f"{status} {short(response.text or response.reason or '', 300)}"
        return result
