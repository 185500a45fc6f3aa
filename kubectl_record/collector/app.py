"""The collector's HTTP API (Starlette, served by uvicorn). Described by openapi.py.

Every request but /healthz and /openapi.json carries `Authorization: Bearer <token>`. Uploads
are JSON, usually gzip-compressed; the body is capped before and after decompression (413).
Database work runs in the thread pool; the server's concurrency limit (cli.py) bounds memory.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import os
import sys
import zlib
from contextlib import asynccontextmanager

try:  # the collector extra brings it: a third faster than json on upload bodies
    import orjson
except ImportError:  # pragma: no cover
    orjson = None
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..audit.formats import parse_ts
from ..store import FIELDS, JSON_FIELDS
from . import auth, central, forward, webhook
from .openapi import document
from .records import is_time
from .storage import FILTERS, BadQuery, Storage, StorageError

DEFAULT_MAX_BODY = 16 * 1024 * 1024
DB_ENV = "KUBECTL_RECORD_COLLECTOR_DB"
MAX_BODY_ENV = "KUBECTL_RECORD_COLLECTOR_MAX_BODY"
ALERTS_ENV = "KUBECTL_RECORD_COLLECTOR_ALERTS"
FORWARD_ENV = "KUBECTL_RECORD_COLLECTOR_FORWARD"
AUDIT_DELAY_ENV = "KUBECTL_RECORD_COLLECTOR_AUDIT_DELAY"
UNMATCHED_AFTER_ENV = "KUBECTL_RECORD_COLLECTOR_UNMATCHED_AFTER"
SUPERVISOR_ENV = "KUBECTL_RECORD_COLLECTOR_SUPERVISOR"
MAX_PAGE = 1000


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


async def _read_json(request: Request, cap: int):
    """The request body as JSON, refusing (413) anything over CAP bytes compressed or not."""
    return await _read_body(request, cap, _parse_json)


async def _read_body(request: Request, cap: int, parse=None):
    """The request body decompressed (then PARSE applied, when given), refusing (413) anything
    over CAP bytes compressed or not."""
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise HTTPError(400, "malformed Content-Length")
        if int(length) > cap:
            raise HTTPError(413, f"request body over {cap} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise HTTPError(413, f"request body over {cap} bytes")
        chunks.append(chunk)
    # Decompressing and parsing megabytes is CPU work: off the event loop, which keeps answering.
    return await run_in_threadpool(_decode, b"".join(chunks), request.headers.get("content-encoding", "identity"), cap,
                                   parse)


def _decode(body: bytes, encoding: str, cap: int, parse=None):
    encoding = encoding.lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, cap + 1)
        except zlib.error as exc:
            raise HTTPError(400, f"body is not valid gzip: {exc}") from None
        if len(body) > cap or inflater.unconsumed_tail:
            raise HTTPError(413, f"decompressed body over {cap} bytes")
    elif encoding != "identity":
        raise HTTPError(415, f"unsupported Content-Encoding: {encoding} (use gzip or none)")
    return parse(body) if parse else body


def _parse_json(body: bytes):
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # maybe only a lone surrogate, which one record may hold: the slow parser decides
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise HTTPError(400, f"body is not valid JSON: {str(exc)[:200]}") from None


def create_app(storage: Storage, max_body: int = DEFAULT_MAX_BODY, alerts=None, forwarder=None,
               correlator=None) -> Starlette:
    """ALERTS: an AlertService (kubectl_record.alerts), started with the app and stopped (its open
    groups flushed) when the worker shuts down; records new to the collector are handed to it.
    FORWARDER: a forward.Forwarder, run while the app runs and woken by uploads that stored something.
    CORRELATOR: a central.Correlator, polling for clusters due for audit correlation while the app runs."""
    async def who(request: Request, *roles: str):
        access = await run_in_threadpool(auth.authenticate, storage, request.headers.get("authorization"))
        # Cluster tokens post audit batches and nothing else: no route is open to them by default.
        auth.require(access, *(roles or auth.PEOPLE))
        return access

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(document())

    async def whoami(request: Request) -> Response:
        access = await who(request, *auth.ROLES)
        return JSONResponse({"user": access.user, "role": access.role, "scope": access.scope})

    async def ingest(request: Request) -> Response:
        access = await who(request, "writer", "admin")
        body = await _read_json(request, max_body)
        if not isinstance(body, dict):
            raise HTTPError(400, "body must be a JSON object with 'records' and/or 'tombstones'")
        records, tombstones = body.get("records", []), body.get("tombstones", [])
        if not isinstance(records, list) or not isinstance(tombstones, list):
            raise HTTPError(400, "'records' and 'tombstones' must be lists")
        result = await run_in_threadpool(storage.ingest, access.user, records, tombstones)
        if forwarder is not None and (result.accepted or result.updated):
            forwarder.wake()  # queued in the same transaction: deliver now rather than at the next round
        # Only what this upload stored for the first time: a retried upload does not alert again.
        # Evaluated after the answer is sent (in the thread pool), so a slow receiver never delays it.
        task = BackgroundTasks()
        if alerts and result.new_records:
            task.add_task(alerts.records_arrived, result.new_records)
        if result.accepted or result.updated:
            task.add_task(mark_for_correlation, records)
        # Per-item refusals answer 400 with every reason; everything else in the batch is kept.
        return JSONResponse(result.as_dict(), status_code=400 if result.rejected else 200, background=task)

    def _filters(request: Request) -> dict:
        params = request.query_params
        unknown = [k for k in params if k not in FILTERS and k not in ("limit", "cursor", "format")]
        if unknown:
            raise HTTPError(400, f"unknown filter: {unknown[0]}")
        return {k: params.getlist(k) for k in FILTERS if k in params}

    async def records(request: Request) -> Response:
        access = await who(request)
        filters = _filters(request)
        limit_text = request.query_params.get("limit", "100")
        if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_PAGE:
            raise HTTPError(400, f"limit must be 1 to {MAX_PAGE}")
        page, cursor = await run_in_threadpool(storage.query, access, filters, int(limit_text),
                                               request.query_params.get("cursor"))
        return JSONResponse({"records": page, "next_cursor": cursor})

    async def export(request: Request) -> Response:
        access = await who(request)
        filters = _filters(request)
        fmt = request.query_params.get("format", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise HTTPError(400, "format must be jsonl or csv")
        rows = storage.iter_all(access, filters)
        # The first page is read before answering, so a bad filter still gets a proper 400.
        first = await run_in_threadpool(next, rows, None)
        lines = _jsonl(first, rows) if fmt == "jsonl" else _csv(first, rows)
        media = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
        return StreamingResponse(iterate_in_threadpool(lines), media_type=media)

    async def chains(request: Request) -> Response:
        access = await who(request, "auditor", "admin")
        report = await run_in_threadpool(storage.chain_report, access, request.query_params.get("install_id"))
        return JSONResponse({"installs": report})

    async def access_log(request: Request) -> Response:
        await who(request, "admin")
        return JSONResponse({"entries": await run_in_threadpool(storage.access_log)})

    async def retention(request: Request) -> Response:
        access = await who(request, "admin")
        body = await _read_json(request, 64 * 1024)
        before = body.get("before") if isinstance(body, dict) else None
        reason = body.get("reason") if isinstance(body, dict) else None
        if not is_time(before):
            raise HTTPError(400, "'before' must be an RFC 3339 time")
        if reason is not None and not isinstance(reason, str):
            raise HTTPError(400, "'reason' must be a string")
        deleted = await run_in_threadpool(storage.retention, access, before, reason)
        return JSONResponse({"deleted": deleted})

    async def forward_status(request: Request) -> Response:
        await who(request, "admin")
        here = tuple(forwarder.destinations) if forwarder is not None else ()
        return JSONResponse({"destinations": await run_in_threadpool(forward.status, storage, here)})

    def mark_for_correlation(records: list) -> None:
        try:
            webhook.records_arrived(storage, records)
        except Exception as exc:  # the cluster's next webhook batch marks the window again
            print(f"kubectl-record collector: audit correlation not scheduled: {exc}"[:300], file=sys.stderr,
                  flush=True)

    async def audit_webhook(request: Request) -> Response:
        access = await who(request, "cluster")
        body = await _read_body(request, max_body)
        # 200 only once the batch is committed: the API server retries anything else.
        return JSONResponse(await run_in_threadpool(webhook.store_batch, storage, access.scope, body))

    async def audit_unmatched(request: Request) -> Response:
        access = await who(request, "auditor", "admin")
        params = request.query_params
        unknown = [k for k in params if k not in ("cluster", "since", "until", "gap")]
        if unknown:
            raise HTTPError(400, f"unknown parameter: {unknown[0]}")
        window = {}
        for name in ("since", "until"):
            if name in params:
                if not is_time(params[name]):
                    raise HTTPError(400, f"{name} must be an RFC 3339 time")
                window[name] = parse_ts(params[name])
        try:
            gap = float(params.get("gap", "2"))
        except ValueError:
            gap = -1.0
        if not 0 < gap <= 3600:
            raise HTTPError(400, "gap must be seconds, above 0 and at most 3600")
        reports = await run_in_threadpool(central.unmatched_report, storage, access, params.get("cluster"),
                                          gap=gap, **window)
        return JSONResponse({"clusters": reports})

    async def on_http_error(request: Request, exc: HTTPError) -> Response:
        return _error(exc.status, str(exc), exc.headers)

    async def on_auth_error(request: Request, exc: auth.AuthError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, str(exc), headers)

    async def on_bad_query(request: Request, exc: BadQuery) -> Response:
        return _error(400, str(exc))

    async def on_storage_error(request: Request, exc: Exception) -> Response:
        return _error(503, f"database unavailable, retry later: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                      {"Retry-After": "1"})

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}")

    handlers = {HTTPError: on_http_error, auth.AuthError: on_auth_error, BadQuery: on_bad_query,
                StorageError: on_storage_error, Exception: on_unexpected}
    for kind in storage.unavailable:
        handlers[kind] = on_storage_error

    @asynccontextmanager
    async def lifespan(app):
        if alerts is not None:
            alerts.start()
        if forwarder is not None:
            forwarder.start()
        correlating = asyncio.create_task(correlator.run()) if correlator is not None else None
        try:
            yield
        finally:
            if correlating is not None:
                correlating.cancel()
            if forwarder is not None:
                await run_in_threadpool(forwarder.stop)
            if alerts is not None:
                await run_in_threadpool(alerts.stop)  # delivers the groups still open

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/openapi.json", openapi),
            Route("/v1/whoami", whoami),
            Route("/v1/ingest", ingest, methods=["POST"]),
            Route("/v1/records", records),
            Route("/v1/records/export", export),
            Route("/v1/chains", chains),
            Route("/v1/access-log", access_log),
            Route("/v1/retention", retention, methods=["POST"]),
            Route("/v1/audit/webhook", audit_webhook, methods=["POST"]),
            Route("/v1/audit/unmatched", audit_unmatched),
            Route("/v1/forward/status", forward_status),
        ],
        exception_handlers=handlers,
        lifespan=lifespan,
    )


def _jsonl(first, rows):
    for record in itertools.chain([first] if first else [], rows):
        yield json.dumps(record, ensure_ascii=False) + "\n"


CSV_COLUMNS = FIELDS + ("uploaded_by", "received_at")


def _csv(first, rows):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for record in itertools.chain([first] if first else [], rows):
        writer.writerow([_csv_cell(name, record.get(name)) for name in CSV_COLUMNS])
        if buf.tell() > 64 * 1024:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def _csv_cell(name: str, value):
    if value is None:
        return ""
    if name in JSON_FIELDS:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def app_from_env() -> Starlette:
    """The app for one uvicorn worker, configured by `serve` through the environment."""
    from .storage import open_storage

    if os.environ.get(SUPERVISOR_ENV):
        _die_with(int(os.environ[SUPERVISOR_ENV]))

    service = None
    if os.environ.get(ALERTS_ENV):
        # One per worker: each evaluates (and groups) the records it receives.
        from ..alerts import AlertService

        service = AlertService.from_file(os.environ[ALERTS_ENV], on_error=_alert_delivery_failed)
    storage = open_storage(os.environ[DB_ENV])
    forwarder = None
    if os.environ.get(FORWARD_ENV):
        # One per worker; they share the queue in the database, claiming batches from it.
        forwarder = forward.from_env(storage, os.environ[FORWARD_ENV], on_error=_forwarding_failed)
    # One per worker; a lease row in the database lets one pass at a time work on a cluster.
    # Audit rules see the kubectl requests that stayed without a record (`unmatched: true`).
    on_unmatched = (lambda events: service.audit_arrived(events, unmatched=True)) if service else None
    correlator = central.Correlator(storage, delay=float(os.environ.get(AUDIT_DELAY_ENV, central.DELAY)),
                                    settle=float(os.environ.get(UNMATCHED_AFTER_ENV, central.SETTLE)),
                                    on_unmatched=on_unmatched)
    return create_app(storage, int(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY)), service, forwarder, correlator)


def _die_with(supervisor: int) -> None:
    """A `--workers` child ends when the serving process does, even by SIGKILL (which uvicorn
    cannot relay): else orphans would keep the port and answer with an old configuration."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above
        os._exit(1)


def _forwarding_failed(line: str) -> None:
    print(f"kubectl-record collector: forwarding: {line}", file=sys.stderr, flush=True)


def _alert_delivery_failed(line: str) -> None:
    print(f"kubectl-record collector: alert not delivered: {line}", file=sys.stderr, flush=True)
