"""Delivering records to the stacks teams already run: OpenSearch/Elasticsearch `_bulk`, OTLP/HTTP
logs, Loki's push API and a signed HTTPS webhook.

One narrow interface for push/sync (which own the outbox, cursors and backoff):

    dest = open_destination("opensearch://host:9200/kubectl", {"api_key": ...})
    dest.name                      # the URL with credentials masked: the outbox/cursor key
    result = dest.send(records)    # -> DeliveryResult

`send` never raises for what a destination answers or for network trouble; it classifies
everything into the result (see `base.DeliveryResult`). Bad URLs and bad options raise
`DestinationError` from `open_destination`.

Modules: url (URL forms, masking), base (result type, HTTP plumbing, retry classification),
opensearch, otlp, loki, webhook (one encoder + client each), adapter (what sync.py calls).
"""

from __future__ import annotations

from .base import DeliveryResult, Destination, DestinationError
from .url import DestinationURL, mask_url, parse_url

KINDS = ("opensearch", "elasticsearch", "otlp", "loki", "webhook")
COMMON_OPTIONS = frozenset({"api_key", "bearer_token", "username", "password", "headers", "ca_bundle", "insecure",
                            "client_cert", "client_key", "gzip", "timeout"})
KIND_OPTIONS = {"opensearch": frozenset({"update_existing"}), "elasticsearch": frozenset({"update_existing"}),
                "loki": frozenset({"tenant", "max_age"}), "webhook": frozenset({"secret"})}


def is_destination_url(url: str) -> bool:
    """True for the URL forms handled here (not the collector's plain https:// URL)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return scheme.split("+", 1)[0] in KINDS


def open_destination(url: str, options: dict | None = None) -> Destination:
    """A destination for URL (see ../shared/CONTRACT.md, Destinations) with OPTIONS from config:
    api_key, bearer_token, username/password, tenant (Loki), headers, ca_bundle, insecure,
    client_cert/client_key, gzip, timeout, secret (webhook), max_age (Loki), update_existing
    (OpenSearch)."""
    parsed = parse_url(url)
    options = dict(options or {})
    allowed = COMMON_OPTIONS | KIND_OPTIONS.get(parsed.kind, frozenset())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise DestinationError(f"unknown option(s) for {parsed.kind}: {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(allowed))})")
    if options.get("client_key") and not options.get("client_cert"):
        raise DestinationError("client_key needs client_cert")
    if parsed.kind in ("opensearch", "elasticsearch"):
        from .opensearch import BulkDestination as cls
    elif parsed.kind == "otlp":
        from .otlp import OTLPDestination as cls
    elif parsed.kind == "loki":
        from .loki import LokiDestination as cls
    elif parsed.kind == "webhook":
        from .webhook import WebhookDestination as cls
    else:  # parse_url refuses other kinds
        raise DestinationError(f"unsupported destination kind: {parsed.kind}")
    return cls(parsed, options)


__all__ = ["DeliveryResult", "Destination", "DestinationError", "DestinationURL", "KINDS", "is_destination_url",
           "mask_url", "open_destination", "parse_url"]
