"""OpenSearch / Elasticsearch `_bulk`: one `create` per record, `_id` = the record id, into exactly
the index of the URL (POST /INDEX/_bulk, so clusters that forbid explicit indices in the body work).

Retry rules (the `_bulk` API answers 200 with a status per item):
  item 200/201                       delivered
  item 409 version conflict          delivered: it is a re-send (or the record changed since, see
                                     update_existing), never a duplicate
  item 429 / 5xx                     retry that item later (es_rejected_execution_exception …)
  item 404 index_not_found / 403     the destination refuses us (auto-create off, read-only index)
  item other 4xx (400 mapping …)     rejected for good: dead letter with the server's reason
  request 401/403                    refused; 413: send fewer; 429/5xx/connection: retry later
  request 400                        split the batch to find the record(s) the server refuses

update_existing (default true): a record that changed after it was first delivered (a late end,
identity, audit status) meets 409 on `create`; those ids are written again with `index` (same
`_id`, so still one document). Data streams accept only `create`: there the 409 stands.
"""

from __future__ import annotations

import json
import urllib.parse

from .base import DeliveryResult, Destination, short

_RETRY_ITEM = {429, 500, 502, 503, 504}


def document(record: dict) -> dict:
    """The indexed document: the record as exported (every field), plus `@timestamp`."""
    doc = dict(record)
    doc["@timestamp"] = record.get("started_at")
    return doc


def bulk_body(records: list[dict], op: str = "create") -> bytes:
    lines = []
    for record in records:
        lines.append(json.dumps({op: {"_id": record["id"]}}, separators=(",", ":")))
        lines.append(json.dumps(document(record), ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def _reason(item: dict) -> str:
    error = item.get("error")
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" ({cause.get('type', '')}: {cause['reason']})"
        return short(f"{item.get('status')} {text}")
    return short(f"{item.get('status')} {error or 'refused'}")


class BulkDestination(Destination):
    kind = "opensearch"
    batch_size = 1000

    def __init__(self, url, options):
        super().__init__(url, options)
        self.index = url.index
        self.bulk_url = url.base + url.path + "/" + urllib.parse.quote(url.index, safe="") + "/_bulk"
        self.update_existing = bool(options.get("update_existing", True))

    def send(self, records: list[dict]) -> DeliveryResult:
        if not records:
            return DeliveryResult()
        response, failed = self.post(self.bulk_url, bulk_body(records), "application/x-ndjson")
        if failed:
            return failed
        whole = self.classify_status(response)
        if whole:
            return whole
        status = response.status_code
        if status == 400:
            return self._split(records, response)
        if status == 404:
            return DeliveryResult(status=status, fatal_error=f"{self.name}: no _bulk endpoint at {self.bulk_url} "
                                                             f"(404: {short(response.text, 200)})")
        if not 200 <= status < 300:
            return DeliveryResult(status=status, rejected={r["id"]: f"{status} {short(response.text, 200)}"
                                                           for r in records})
        try:
            items = response.json()["items"]
        except (ValueError, KeyError, TypeError):
            return DeliveryResult(status=status, retryable_error=f"{self.name}: unreadable _bulk answer "
                                                                 f"{short(response.text, 200)}")
        if len(items) != len(records):
            return DeliveryResult(status=status, retryable_error=f"{self.name}: _bulk answered {len(items)} items "
                                                                 f"for {len(records)} records")
        result = DeliveryResult(status=status)
        conflicts = []
        retry_reasons = []
        for record, entry in zip(records, items):
            item = next(iter(entry.values()), {}) if isinstance(entry, dict) else {}
            code = item.get("status", 0)
            rid = record["id"]
            if 200 <= code < 300:
                result.delivered.append(rid)
            elif code == 409:
                result.delivered.append(rid)
                conflicts.append(record)
            elif code in _RETRY_ITEM:
                retry_reasons.append(_reason(item))
            elif code == 404 or code == 403:
                result.fatal_error = result.fatal_error or f"{self.name} refuses writes to {self.index}: {_reason(item)}"
            else:
                result.rejected[rid] = _reason(item)
        if retry_reasons:
            result.retryable_error = f"{self.name}: {len(retry_reasons)} item(s) to retry: {retry_reasons[0]}"
        if conflicts and self.update_existing:
            self._overwrite(conflicts, result)
        return result

    def _overwrite(self, records: list[dict], result: DeliveryResult) -> None:
        """Write the current state of records that already exist (same _id: still one document).
        If that cannot be done now (network, 429/5xx), those records are retried, not counted."""
        response, failed = self.post(self.bulk_url, bulk_body(records, "index"), "application/x-ndjson")
        whole = failed or self.classify_status(response)
        items = None
        if whole is None and response.status_code == 200:
            try:
                items = response.json().get("items")
            except ValueError:
                items = None
        if whole is not None or not isinstance(items, list) or len(items) != len(records):
            if whole is not None and whole.fatal_error:
                result.fatal_error = result.fatal_error or whole.fatal_error
            ids = {r["id"] for r in records}
            result.delivered = [i for i in result.delivered if i not in ids]
            result.retryable_error = result.retryable_error or (
                (whole.retryable_error if whole is not None else None)
                or f"{self.name}: could not update {len(records)} existing document(s)")
            if whole is not None and whole.retry_after is not None:
                result.retry_after = max(result.retry_after or 0.0, whole.retry_after)
            return
        retry = set()
        for record, entry in zip(records, items):
            item = next(iter(entry.values()), {}) if isinstance(entry, dict) else {}
            code = item.get("status", 0)
            if 200 <= code < 300:
                continue
            if code in _RETRY_ITEM:
                retry.add(record["id"])
            elif "data stream" not in json.dumps(item.get("error", "")):
                # Data streams refuse `index`: the create that met 409 stands. Anything else is shown.
                result.warnings.append(f"{self.name}: existing document {record['id']} not updated: {_reason(item)}")
        if retry:
            result.delivered = [i for i in result.delivered if i not in retry]
            result.retryable_error = result.retryable_error or f"{self.name}: {len(retry)} update(s) to retry"

    def _split(self, records: list[dict], response) -> DeliveryResult:
        """A 400 for the whole request: find the record(s) refused by halving the batch."""
        if len(records) == 1:
            return DeliveryResult(status=400, rejected={records[0]["id"]: f"400 {short(response.text, 300)}"})
        middle = len(records) // 2
        result = self.send(records[:middle])
        result.merge(self.send(records[middle:]))
        return result
