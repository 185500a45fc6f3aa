"""The collector's API as an OpenAPI 3.1 document, served at /openapi.json.

Written by hand next to app.py (the app reads raw, capped bodies itself, so no framework
generates it); tests/test_collector_api.py runs schemathesis against it to keep the two honest.
"""

from __future__ import annotations

from .. import __version__
from ..store import FIELDS
from .records import BOOL_FIELDS, INT_FIELDS, STATES, STR_FIELDS
from .storage import GLOB_FILTERS

_NULLABLE_STR = {"type": ["string", "null"]}


def _record_schema() -> dict:
    props = {}
    for name in FIELDS:
        if name in STR_FIELDS:
            props[name] = dict(_NULLABLE_STR)
        elif name in INT_FIELDS:
            props[name] = {"type": ["integer", "null"]}
        elif name in BOOL_FIELDS:
            props[name] = {"type": ["boolean", "null"]}
        else:
            props[name] = {}
    props.update({
        "id": {"type": "string", "minLength": 1, "maxLength": 200},
        "install_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "seq": {"type": ["integer", "null"], "minimum": 1},
        "started_at": {"type": "string", "format": "date-time"},
        "state": {"type": "string", "enum": sorted(STATES)},
        "source": {"type": "string"},
        "argv": {"type": "array", "items": {"type": "string"}},
        "command": {"type": "string"},
        "prev_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
        "hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
    })
    return {"type": "object", "required": ["id", "install_id", "started_at", "state", "source", "argv", "command"],
            "properties": props}


def _stored_record_schema() -> dict:
    schema = _record_schema()
    schema["properties"] = {**schema["properties"], "uploaded_by": {"type": "string"},
                            "received_at": {"type": "string"},
                            "audit": {"type": ["object", "null"], "description": (
                                "Where the record's cluster has an audit webhook source: the collector's own"
                                " correlation ({status, events, central: {cluster, correlated_at}}); else as uploaded")},
                            "audit_uploaded": {"type": ["object", "null"], "description": (
                                "The record's `audit` as uploaded, present when the collector's replaces it")}}
    return schema


def _audit_event_schema() -> dict:
    """An audit.k8s.io Event, as far as the collector reads it (bounded, for generated examples)."""
    text = {"type": "string", "maxLength": 64}
    return {"type": "object", "required": ["auditID", "stage", "requestReceivedTimestamp"], "properties": {
        "kind": {"const": "Event"}, "apiVersion": {"enum": ["audit.k8s.io/v1", "audit.k8s.io/v1beta1"]},
        "level": text, "auditID": {"type": "string", "minLength": 1, "maxLength": 64},
        "stage": {"enum": ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]},
        "requestURI": text, "verb": text, "userAgent": text,
        "user": {"type": "object", "properties": {"username": text}},
        "impersonatedUser": {"type": "object", "properties": {"username": text}},
        "objectRef": {"type": "object", "properties": {n: text for n in (
            "resource", "subresource", "namespace", "name", "apiGroup", "apiVersion")}},
        "responseStatus": {"type": "object", "properties": {"code": {"type": "integer", "minimum": 0,
                                                                     "maximum": 999}}},
        "requestReceivedTimestamp": {"type": "string", "format": "date-time"},
        "stageTimestamp": {"type": "string", "format": "date-time"},
        "annotations": {"type": "object", "additionalProperties": text, "maxProperties": 4}}}


def _forward_status_schema() -> dict:
    text, count = {"type": ["string", "null"]}, {"type": "integer", "minimum": 0}
    props = {
        "destination": {"type": "string", "description": "the URL, credentials masked"},
        "forwarded_here": {"type": "boolean", "description": "this instance was started with it"},
        "pending": count, "in_flight": count, "delivered": count, "batches": count, "failures": count,
        "dead_letters": count, "last_success": text, "last_error": text, "last_error_at": text,
        "next_attempt": {"type": ["string", "null"], "description": "backing off until then"},
        "recent_dead_letters": {"type": "array", "items": {
            "type": "object", "required": ["record_id", "reason", "at"], "properties": {
                "record_id": {"type": "string"}, "reason": {"type": "string"}, "at": {"type": "string"}}}},
    }
    return {"type": "object", "required": sorted(props), "properties": props}


_ERROR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_AUTH_ERRORS = {"401": _ERROR, "403": _ERROR}

def _query(name: str, schema: dict, description: str | None = None) -> dict:
    param = {"name": name, "in": "query", "required": False, "schema": schema}
    if schema.get("type") == "array":
        param.update(style="form", explode=True)
    if description:
        param["description"] = description
    return param


_TEXTS = {"type": "array", "items": {"type": "string"}}
_FILTER_PARAMS = (
    [_query(n, _TEXTS, "repeatable (any matches); globs * and ?") for n in GLOB_FILTERS]
    + [_query("verb", _TEXTS, "repeatable; `rollout` also matches every `rollout …`"),
       _query("name", _TEXTS, "object name or glob; repeatable"),
       _query("cwd", _TEXTS, "the directory or below; repeatable"),
       _query("query", _TEXTS, "substring of command, context, namespace or cwd; repeatable"),
       _query("exit", {"type": "array", "items": {"type": "string", "pattern": "^-?[0-9]{1,9}$"}}),
       _query("since", {"type": "string", "format": "date-time"}),
       _query("until", {"type": "string", "format": "date-time"})]
    + [_query(n, {"type": "string", "enum": ["true", "false"]}) for n in ("failed", "mutating", "read_only")]
)


def document() -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "kubectl-record collector", "version": __version__,
                 "description": "Team-wide store of kubectl invocations recorded by kubectl-record."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Record": _record_schema(),
                "StoredRecord": _stored_record_schema(),
                "Tombstone": {
                    "type": "object",
                    "required": ["id", "deletion", "created_at", "deleted_by", "reason", "install_id", "count"],
                    "properties": {
                        "id": {"type": "string", "minLength": 1}, "deletion": {"type": "string", "minLength": 1},
                        "created_at": {"type": "string", "format": "date-time"},
                        "deleted_by": {"type": "string", "minLength": 1}, "reason": {"type": "string", "minLength": 1},
                        "install_id": {"type": "string", "minLength": 1, "maxLength": 200},
                        "seq_from": {"type": ["integer", "null"], "minimum": 1},
                        "seq_to": {"type": ["integer", "null"], "minimum": 1},
                        "count": {"type": "integer", "minimum": 1},
                        "prev_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                        "last_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
                        "first_started_at": {"type": ["string", "null"]},
                        "last_started_at": {"type": ["string", "null"]},
                    },
                },
                "ForwardStatus": _forward_status_schema(),
                "IngestResult": {
                    "type": "object",
                    "required": ["accepted", "duplicates", "updated", "rejected", "tombstones_accepted",
                                 "tombstones_duplicate", "findings"],
                    "properties": {
                        "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
                        "updated": {"type": "integer"}, "tombstones_accepted": {"type": "integer"},
                        "tombstones_duplicate": {"type": "integer"},
                        "rejected": {"type": "array", "items": {"type": "object", "required": ["reason"], "properties": {
                            "index": {"type": "integer"}, "tombstone": {"type": "integer"},
                            "id": {"type": ["string", "null"]}, "reason": {"type": "string"}}}},
                        "findings": {"type": "array", "items": {"type": "object"}},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"security": [], "summary": "Liveness", "responses": {
                "200": {"description": "up", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/whoami": {"get": {"summary": "The token's identity", "responses": {
                "200": {"description": "identity", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["user", "role"], "properties": {
                        "user": {"type": "string"},
                        "role": {"type": "string", "enum": ["writer", "auditor", "admin", "cluster"]},
                        "scope": {"type": ["string", "null"]}}}}}},
                **_AUTH_ERRORS}}},
            "/v1/ingest": {"post": {
                "summary": "Upload records and tombstones (idempotent by record id; gzip accepted)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "records": {"type": "array", "items": {"$ref": "#/components/schemas/Record"}},
                        "tombstones": {"type": "array", "items": {"$ref": "#/components/schemas/Tombstone"}}}}}}},
                "responses": {
                    "200": {"description": "everything accepted (or already there)",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResult"}}}},
                    "400": {"description": "some items refused, with reasons; the rest were kept (or the body is malformed)",
                            "content": {"application/json": {"schema": {"oneOf": [
                                {"$ref": "#/components/schemas/IngestResult"}, {"$ref": "#/components/schemas/Error"}]}}}},
                    "413": _ERROR, "415": _ERROR, "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/records": {"get": {
                "summary": "Records visible to the token, newest first (keyset pagination)",
                "parameters": _FILTER_PARAMS + [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "a page", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["records", "next_cursor"], "properties": {
                            "records": {"type": "array", "items": {"$ref": "#/components/schemas/StoredRecord"}},
                            "next_cursor": {"type": ["string", "null"]}}}}}},
                    "400": _ERROR, "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/records/export": {"get": {
                "summary": "Every visible match, streamed as JSONL or CSV",
                "parameters": _FILTER_PARAMS + [{"name": "format", "in": "query", "required": False,
                                                 "schema": {"type": "string", "enum": ["jsonl", "csv"]}}],
                "responses": {
                    "200": {"description": "the records", "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                                                                      "text/csv": {"schema": {"type": "string"}}}},
                    "400": _ERROR, "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/chains": {"get": {
                "summary": "Hash-chain continuity per installation: gaps, breaks, conflicts (auditor, admin)",
                "parameters": [{"name": "install_id", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "report", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["installs"],
                        "properties": {"installs": {"type": "array", "items": {"type": "object"}}}}}}},
                    "400": _ERROR, "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/audit/webhook": {"post": {
                "summary": "kube-apiserver audit webhook: an EventList (audit.k8s.io/v1 or v1beta1, gzip accepted;"
                           " cluster tokens only). Repeated (auditID, stage) are ignored, unreadable events counted"
                           " and skipped; 200 once the batch is committed",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["items"], "properties": {
                        "kind": {"const": "EventList"},
                        "apiVersion": {"enum": ["audit.k8s.io/v1", "audit.k8s.io/v1beta1"]},
                        "metadata": {"type": "object", "maxProperties": 2},
                        "items": {"type": "array", "maxItems": 5, "items": _audit_event_schema()}}}}}},
                "responses": {
                    "200": {"description": "stored", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["events", "stored", "duplicates", "malformed", "skipped", "errors"],
                        "properties": {"events": {"type": "integer"}, "stored": {"type": "integer"},
                                       "duplicates": {"type": "integer"}, "malformed": {"type": "integer"},
                                       "skipped": {"type": "integer"},
                                       "errors": {"type": "array", "items": {"type": "string"}}}}}}},
                    "413": _ERROR, "415": _ERROR, "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/audit/unmatched": {"get": {
                "summary": "Per audit source in the token's scope: kubectl activity on the server with no record,"
                           " changing records with no audit evidence, other clients by userAgent and user"
                           " (auditor, admin; auditor reads are logged)",
                "parameters": [
                    _query("cluster", {"type": "string"}, "audit source name or glob"),
                    _query("since", {"type": "string", "format": "date-time"}, "default: a day before until (or now)"),
                    _query("until", {"type": "string", "format": "date-time"}, "default: no end"),
                    _query("gap", {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                           "seconds between requests that start a new group (default 2)")],
                "responses": {
                    "200": {"description": "report", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["clusters"], "properties": {"clusters": {
                            "type": "array", "items": {"type": "object", "required": [
                                "cluster", "server", "truncated", "server_side", "local_side", "pending",
                                "other_clients", "ignored"]}}}}}}},
                    "400": _ERROR, "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/access-log": {"get": {
                "summary": "Reads made by auditors (admin)",
                "responses": {
                    "200": {"description": "entries", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["entries"],
                        "properties": {"entries": {"type": "array", "items": {"type": "object"}}}}}}},
                    "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/retention": {"post": {
                "summary": "Delete records that started before a time; logged (admin)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["before"], "properties": {
                        "before": {"type": "string", "format": "date-time"}, "reason": {"type": ["string", "null"]}}}}}},
                "responses": {
                    "200": {"description": "deleted", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "integer"}}}}}},
                    "400": _ERROR, "413": _ERROR, "503": _ERROR, **_AUTH_ERRORS}}},
            "/v1/forward/status": {"get": {
                "summary": "Forwarding (`serve --forward`) per destination: pending, last success and error, "
                           "dead letters (admin)",
                "responses": {
                    "200": {"description": "every destination this database has forwarded to", "content": {
                        "application/json": {"schema": {
                            "type": "object", "required": ["destinations"], "properties": {"destinations": {
                                "type": "array", "items": {"$ref": "#/components/schemas/ForwardStatus"}}}}}}},
                    "503": _ERROR, **_AUTH_ERRORS}}},
        },
    }
