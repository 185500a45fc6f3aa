"""What every destination shares: the result of one delivery, and the HTTP plumbing
(TLS options, credentials, gzip, Retry-After, classifying answers)."""

from __future__ import annotations

import email.utils
import gzip as _gzip
import time
from dataclasses import dataclass, field

TIMEOUT = (5.0, 60.0)  # connect, read
USER_AGENT = "kubectl-record"


class DestinationError(Exception):
    """A destination URL or its options are unusable; the message is one line."""


@dataclass
class DeliveryResult:
    """The outcome of `Destination.send(records)`.

    delivered        ids the destination now holds (a re-send it recognised counts: 409 on `create`)
    rejected         id -> reason: the destination refuses that record for good (dead letter)
    retryable_error  set when some records are neither delivered nor rejected: send those again
                     later (after retry_after seconds at least, when given)
    fatal_error      the destination refuses *us* (401/403, TLS, 404/410 endpoint gone): stop, keep
                     everything queued, tell the user; retrying without a fix will not help
    too_large        the request was too large (413): send fewer records per request
    warnings         things to show that change nothing (an OTLP partial success, say)
    Every id sent is in exactly one of delivered, rejected, pending(…).
    """

    delivered: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    retryable_error: str | None = None
    fatal_error: str | None = None
    status: int | None = None
    too_large: bool = False
    warnings: list[str] = field(default_factory=list)

    def pending(self, ids) -> list[str]:
        done = set(self.delivered) | set(self.rejected)
        return [i for i in ids if i not in done]

    @property
    def ok(self) -> bool:
        return not (self.retryable_error or self.fatal_error or self.too_large)

    def merge(self, other: "DeliveryResult") -> None:
        self.delivered.extend(other.delivered)
        self.rejected.update(other.rejected)
        self.warnings.extend(other.warnings)
        self.retryable_error = self.retryable_error or other.retryable_error
        self.fatal_error = self.fatal_error or other.fatal_error
        self.too_large = self.too_large or other.too_large
        self.status = other.status or self.status
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent/unparseable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Destination:
    """A delivery target. Subclasses implement `send`; this class holds the HTTP session."""

    kind = ""
    #: records per request that the destination handles comfortably (sync may send fewer)
    batch_size = 1000
    #: the receiver must see records in outbox order: one batch in flight at a time
    ordered = False

    def __init__(self, url, options: dict):
        self.url = url
        self.options = options
        self.name = url.name
        self.kind = url.kind
        self.gzip = bool(options.get("gzip", True))
        timeout = options.get("timeout")
        self.timeout = (TIMEOUT[0], float(timeout)) if timeout else TIMEOUT
        self._session = None
        self.requests_sent = 0

    # --- HTTP ---------------------------------------------------------------------------

    @property
    def session(self):
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def _make_session(self):
        import requests

        s = requests.Session()
        s.headers["User-Agent"] = USER_AGENT
        opts = self.options
        if opts.get("insecure"):
            s.verify = False
        elif opts.get("ca_bundle"):
            s.verify = str(opts["ca_bundle"])
        if opts.get("client_cert"):
            s.cert = (str(opts["client_cert"]), str(opts["client_key"])) if opts.get("client_key") \
                else str(opts["client_cert"])
        user = opts.get("username", self.url.username)
        password = opts.get("password", self.url.password)
        if opts.get("api_key"):
            s.headers["Authorization"] = f"ApiKey {opts['api_key']}"
        elif opts.get("bearer_token"):
            s.headers["Authorization"] = f"Bearer {opts['bearer_token']}"
        elif user is not None and password is not None:
            s.auth = (user, password)
        elif user is not None:  # a lone userinfo token: https://TOKEN@host
            s.headers["Authorization"] = f"Bearer {user}"
        for key, value in (opts.get("headers") or {}).items():
            s.headers[str(key)] = str(value)
        return s

    def post(self, url: str, body: bytes, content_type: str, headers: dict | None = None,
             compress: bool | None = None):
        """POST BODY; returns (response, None) or (None, DeliveryResult for a transport failure)."""
        import requests

        hdrs = {"Content-Type": content_type}
        if compress if compress is not None else self.gzip:
            body = _gzip.compress(body, compresslevel=5)
            hdrs["Content-Encoding"] = "gzip"
        hdrs.update(headers or {})
        self.requests_sent += 1
        try:
            return self.session.post(url, data=body, headers=hdrs, timeout=self.timeout, allow_redirects=False), None
        except requests.exceptions.SSLError as exc:
            return None, DeliveryResult(fatal_error=f"TLS verification failed for {self.name} ({short(exc, 200)}); "
                                                    "set its ca_bundle (or insecure) in the destination's config")
        except requests.exceptions.RequestException as exc:
            return None, DeliveryResult(retryable_error=f"{self.name} unreachable: {short(exc, 200)}")

    def classify_status(self, response, retryable=(408, 429, 500, 502, 503, 504)) -> DeliveryResult | None:
        """The result for an answer that concerns the whole request, or None to let the caller
        read the body (2xx, and the 4xx the caller handles itself)."""
        status = response.status_code
        if 200 <= status < 300:
            return None
        detail = short(response.text or response.reason or "", 300)
        if 300 <= status < 400:
            where = response.headers.get("Location", "?")
            return DeliveryResult(status=status, fatal_error=f"{self.name} redirects ({status}) to {short(where, 200)}; "
                                                             "redirects are not followed: fix the URL")
        if status in (401, 403):
            return DeliveryResult(status=status, fatal_error=f"{self.name} refused the credentials ({status}): {detail}")
        if status == 413:
            return DeliveryResult(status=status, too_large=True, retryable_error=f"{self.name}: request too large (413)")
        if status in retryable:
            return DeliveryResult(status=status, retryable_error=f"{self.name} answered {status}: {detail}",
                                  retry_after=parse_retry_after(response.headers.get("Retry-After")))
        return None

    # --- the interface -----------------------------------------------------------------

    def send(self, records: list[dict]) -> DeliveryResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def rfc3339_to_ns(text: str | None) -> int | None:
    """'2026-11-27T19:12:23.123Z' -> nanoseconds since the epoch (exact, no float rounding)."""
    if not text:
        return None
    import datetime as dt

    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    frac_ns = 0
    main = value
    # Keep sub-second digits exact: parse them apart from the rest.
    if "." in value:
        head, _, rest = value.partition(".")
        digits = ""
        for ch in rest:
            if ch.isdigit():
                digits += ch
            else:
                break
        tz = rest[len(digits):]
        frac_ns = int((digits + "000000000")[:9]) if digits else 0
        main = head + tz
    when = dt.datetime.fromisoformat(main)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp()) * 1_000_000_000 + frac_ns
