"""A client for the collector's API (used by push, background sync and team lookups).

Errors are typed by what the caller should do: `Refused` (401/403: a retry will not help),
`TooLarge` (413: send less), `BadRequest` (400 without per-item reasons), and `Transient`
(connection failures, timeouts, 429, 5xx: retry later, not before `retry_after`).
"""

from __future__ import annotations

import gzip
import time

import requests

from ..destinations.base import parse_retry_after

TIMEOUT = (5.0, 60.0)  # connect, read


class CollectorError(Exception):
    """Talking to the collector failed; the message is one line."""


class Refused(CollectorError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class TooLarge(CollectorError):
    pass


class BadRequest(CollectorError):
    pass


class Transient(CollectorError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _message(response: requests.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except ValueError:
        pass
    text = (response.text or "").strip()
    return text.splitlines()[0][:200] if text else (response.reason or "")


class CollectorClient:
    def __init__(self, url: str, token: str | None, *, verify: bool | str = True, timeout=TIMEOUT):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        # Passed with each request: a session-level False would lose to REQUESTS_CA_BUNDLE.
        self.verify = verify
        self.session.headers["User-Agent"] = "kubectl-record"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, verify=self.verify,
                                            **kwargs)
        except requests.exceptions.SSLError as exc:
            # A certificate problem does not fix itself: report it like a refusal.
            raise Refused(0, f"TLS verification failed for {self.url} ({_short(exc)}); "
                             "trust its CA (REQUESTS_CA_BUNDLE, collector.ca_bundle) or pass --insecure") from exc
        except requests.exceptions.RequestException as exc:
            raise Transient(f"collector unreachable at {self.url}: {_short(exc)}") from exc
        status = response.status_code
        if status in (401, 403):
            raise Refused(status, f"collector refused ({status}): {_message(response)}")
        if status == 413:
            raise TooLarge(f"collector: request too large: {_message(response)}")
        if status == 429 or status >= 500:
            raise Transient(f"collector answered {status}: {_message(response)}",
                            parse_retry_after(response.headers.get("Retry-After")))
        return response

    def upload(self, body: bytes) -> dict:
        """Send one batch (JSON: {"records": […], "tombstones": […]}); returns the collector's
        result, with per-item refusals in 'rejected'."""
        response = self._request("POST", "/v1/ingest", data=gzip.compress(body, compresslevel=1),
                                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        try:
            result = response.json()
        except ValueError:
            result = None
        if response.status_code == 200 and isinstance(result, dict):
            return result
        if response.status_code == 400 and isinstance(result, dict) and "rejected" in result:
            return result
        if response.status_code == 400:
            raise BadRequest(f"collector refused the batch: {_message(response)}")
        raise Transient(f"collector answered {response.status_code} to an upload")

    def records(self, filters: dict, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
        # Lists become repeated parameters (any of them matches).
        params = {k: [_param(x) for x in v] if isinstance(v, (list, tuple)) else _param(v)
                  for k, v in filters.items() if v is not None}
        params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        response = self._request("GET", "/v1/records", params=params)
        if response.status_code != 200:
            raise BadRequest(f"collector: {_message(response)}")
        body = response.json()
        return body["records"], body.get("next_cursor")

    def whoami(self) -> dict:
        return self._request("GET", "/v1/whoami").json()


def _param(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
