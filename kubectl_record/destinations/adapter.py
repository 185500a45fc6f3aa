"""What sync.py calls to deliver its outbox to a destination: the destination seen through the
collector client's interface (`upload(body) -> {"rejected": [{"index", "reason"}]}`, raising
collector.client's Refused / TooLarge / Transient), so `sync.deliver(conn, client, dest=...)`
keeps owning the outbox, the per-destination cursor (sync_queue.dest = the masked URL) and the
backoff, unchanged.

A batch that was partly delivered when a retryable error came is re-sent whole by sync.deliver;
the client remembers what this process already delivered (id + content) and does not send it
again, so a retry inside one push sends each record once. Across processes a re-send relies on
the destination: `create` + `_id` (409) for OpenSearch, Loki's deduplication of identical
entries, webhook-id for webhook receivers; OTLP has no such key beyond `log.record.uid`.
"""

from __future__ import annotations

import hashlib
import json

from . import open_destination
from .base import Destination


def _fingerprint(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


class SyncClient:
    """A Destination behind the CollectorClient interface that sync.deliver drives."""

    def __init__(self, destination: Destination):
        self.destination = destination
        self.name = destination.name
        self.batch_size = destination.batch_size
        self.warnings: list[str] = []
        self._done: dict[str, str] = {}  # id -> fingerprint of what was delivered/rejected

    def upload(self, body, tombstones: list[dict] | None = None) -> dict:
        """BODY: the collector's upload body (JSON bytes: {"records": [...], "tombstones": [...]}),
        or the list of records itself. Called from sync.deliver's worker threads."""
        from ..collector.client import Refused, TooLarge, Transient

        records = json.loads(body)["records"] if isinstance(body, (bytes, bytearray, str)) else list(body)
        # Tombstones are the collector's business: destinations keep what they were sent.
        todo = [(i, r) for i, r in enumerate(records) if self._done.get(r["id"]) != _fingerprint(r)]
        result = self.destination.send([r for _, r in todo])
        self.warnings.extend(result.warnings)
        by_id = {r["id"]: r for _, r in todo}
        for rid in result.delivered:
            if rid in by_id:
                self._done[rid] = _fingerprint(by_id[rid])
        for rid in result.rejected:
            if rid in by_id:
                self._done[rid] = _fingerprint(by_id[rid])
        if result.fatal_error:
            raise Refused(result.status or 0, result.fatal_error)
        pending = result.pending([r["id"] for _, r in todo])
        if pending and result.too_large and not (result.delivered or result.rejected):
            raise TooLarge(result.retryable_error or f"{self.name}: request too large")
        if pending:
            raise Transient(result.retryable_error or f"{self.name}: {len(pending)} record(s) not delivered",
                            result.retry_after)
        rejected = [{"index": i, "reason": result.rejected[r["id"]]} for i, r in enumerate(records)
                    if r["id"] in result.rejected]
        return {"accepted": len(records) - len(rejected), "rejected": rejected, "warnings": list(result.warnings)}

    def close(self) -> None:
        self.destination.close()


def _inflight(client: SyncClient) -> dict:
    """A webhook receiver sees one message at a time, in outbox order: one batch in flight."""
    return {"inflight": 1} if client.destination.ordered else {}


def client_for(url: str, options: dict | None = None) -> SyncClient:
    """Open URL (raises destinations.DestinationError for a bad URL or options)."""
    return SyncClient(open_destination(url, options))


def push_to(conn, url: str, options: dict | None = None, **deliver_kwargs):
    """Deliver CONN's outbox for URL's own position (registered on first use: a new destination
    starts with every record). DELIVER_KWARGS go to sync.deliver (wait, deadline, backoff, clock,
    attempts, batch_size). Returns (sync.PushResult, warnings). Raises collector.client's
    CollectorError subclasses like a collector push, DestinationError for a bad URL."""
    from .. import sync

    client = client_for(url, options)
    try:
        size = min(deliver_kwargs.pop("batch_size", client.batch_size), client.batch_size)
        deliver_kwargs.update(_inflight(client))
        result = sync.deliver(conn, client, dest=client.name, batch_size=size, **deliver_kwargs)
        return result, client.warnings
    finally:
        client.close()


def read_destinations(path: str, extra_urls=()) -> list[tuple[str, dict]]:
    """The destinations of the TOML file at PATH: `destinations.urls` (the settings key) after
    EXTRA_URLS, each with the options of its table under `destinations.options`, keyed by the
    URL as listed (or masked). The workstation's config file has this shape, and so has
    `serve --forward-config`:

        [destinations]
        urls = ["opensearch+https://es.internal:9200/kubectl-record", "loki://loki.internal:3100"]

        [destinations.options."opensearch+https://es.internal:9200/kubectl-record"]
        api_key = "…"
        ca_bundle = "/etc/ssl/team-ca.pem"

        [destinations.options."loki://loki.internal:3100"]
        tenant = "platform"

    Raises DestinationError when the file cannot be read or the table is malformed."""
    from .base import DestinationError
    from .url import mask_url

    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            section = tomllib.load(f).get("destinations") or {}
    except (OSError, ValueError) as exc:
        raise DestinationError(f"cannot read {path}: {exc}") from None
    urls = section.get("urls", []) if isinstance(section, dict) else None
    table = section.get("options", {}) if isinstance(section, dict) else None
    if not isinstance(urls, list) or not isinstance(table, dict):
        raise DestinationError(f"{path}: [destinations] needs urls = [...] and [destinations.options.\"URL\"] tables")
    out = []
    for url in [*map(str, extra_urls), *map(str, urls)]:
        options = table.get(url) or table.get(mask_url(url)) or {}
        if not isinstance(options, dict):
            raise DestinationError(f"{path}: the options of {mask_url(url)} must be a table")
        out.append((url, dict(options)))
    return out


def configured_destinations() -> list[tuple[str, dict]]:
    """Destinations from the config file (see read_destinations); none when it is missing or
    unreadable: background passes must not fail on it (`config` reports a bad file)."""
    from .. import paths
    from .base import DestinationError

    try:
        return read_destinations(paths.config_file())
    except DestinationError:
        return []


def options_for(url: str) -> dict:
    """The configured options of the destination URL names (matched on the masked URL, so
    `push --to` with or without the password in it finds the API key, CA bundle … in config)."""
    from .url import mask_url

    name = mask_url(url)
    for configured_url, options in configured_destinations():
        if mask_url(configured_url) == name or configured_url == url:
            return dict(options)
    return {}


def background_pass(conn, clock=None, backoff=None, destinations: list[tuple[str, dict]] | None = None) -> dict:
    """One quiet attempt per destination (default: the configured ones), each respecting the
    backoff its earlier failures left (sync_state.next_attempt); what sync.sync_run does for the
    collector. Returns {name: PushResult or the error line}."""
    from .. import sync
    from ..collector.client import CollectorError
    from .base import DestinationError

    clock = clock or sync.SystemClock()
    backoff = backoff or sync.Backoff()
    out = {}
    for url, options in configured_destinations() if destinations is None else destinations:
        try:
            client = client_for(url, options)
        except DestinationError as exc:
            out[url] = str(exc)
            continue
        try:
            sync.ensure_outbox(conn, client.name)
            due = conn.execute("SELECT next_attempt FROM sync_state WHERE dest = ?", (client.name,)).fetchone()[0]
            if due > clock.time():
                continue
            try:
                out[client.name] = sync.deliver(conn, client, dest=client.name, clock=clock, backoff=backoff,
                                                attempts=1, batch_size=client.batch_size, **_inflight(client))
            except CollectorError as exc:
                failures = conn.execute("SELECT failures FROM sync_state WHERE dest = ?",
                                        (client.name,)).fetchone()[0]
                conn.execute("UPDATE sync_state SET next_attempt = ? WHERE dest = ?",
                             (clock.time() + backoff.delay(failures, getattr(exc, "retry_after", None)), client.name))
                out[client.name] = str(exc)
        finally:
            client.close()
    return out
