"""Validating uploaded records and tombstones: each item gets a verdict and, if refused, a reason.

The collector re-derives every record's chain hash, so a record whose content was altered after
it was recorded (or that claims a hash it does not have) is refused, not stored.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re

from ..store import FIELDS, GENESIS, JSON_FIELDS, UNCHAINED, chain_hash

STR_FIELDS = frozenset({
    "id", "install_id", "started_at", "ended_at", "state", "source", "command", "verb", "resource",
    "namespace", "context", "cluster", "server", "user", "cwd", "host", "os_user", "sudo_user",
    "ssh_client", "session", "parent", "kubectl_version", "identity", "prev_hash", "hash",
})
INT_FIELDS = frozenset({"seq", "duration_ms", "exit_code"})
BOOL_FIELDS = frozenset({"all_namespaces", "mutating", "dry_run", "local_only", "redacted", "unexpanded"})
REQUIRED = ("id", "install_id", "started_at", "state", "source", "argv", "command")
STATES = frozenset({"finished", "unfinished", "imported"})
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})\Z")


def is_time(text) -> bool:
    """An RFC 3339 timestamp (the strict shape) with real calendar values (not 12:99, not Feb 30)."""
    if not isinstance(text, str) or not _RFC3339.match(text):
        return False
    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        # A leap second (:60) is valid RFC 3339 that datetime cannot hold.
        return text[17:19] == "60" and is_time(text[:17] + "59" + text[19:])
    return True


_HASH = re.compile(r"[0-9a-f]{64}\Z")
MAX_ID = 200
# Documents the collector forwards for server-side requests without a record (central.py).
RESERVED_ID_PREFIX = "audit-"
# Bigger than any value SQLite or PostgreSQL BIGINT can hold is refused rather than crashing the insert.
_INT_MAX = 2**63 - 1


class Invalid(ValueError):
    """One uploaded item cannot be accepted; the message is the per-item reason."""


_ALLOWED = {name: (str,) for name in STR_FIELDS}
_ALLOWED.update({name: (int,) for name in INT_FIELDS})  # type(True) is bool, so booleans are refused
_ALLOWED.update({name: (bool,) for name in BOOL_FIELDS})
_ALLOWED["argv"] = (list,)
_KIND = {str: "a string", int: "an integer", bool: "true, false or null", list: "a list of strings"}
CHAINED = tuple(name for name in FIELDS if name not in UNCHAINED)

try:  # the collector extra brings orjson: canonical JSON at a fraction of the cost
    import orjson

    def _canonical(value) -> bytes:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except (TypeError, orjson.JSONEncodeError) as exc:  # lone surrogates, integers over 64 bits
            raise Invalid(f"not storable as JSON text: {exc}") from None
except ImportError:  # pragma: no cover - exercised when the extra is absent
    def _canonical(value) -> bytes:
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise Invalid("not valid Unicode text") from None


def _check_text(record: dict) -> None:
    """Text both databases can store: UTF-8 (no lone surrogates), no NUL characters."""
    for name, value in record.items():
        values = value if name == "argv" else [value]
        for v in values:
            if isinstance(v, str):
                if "\x00" in v:
                    raise Invalid(f"{name} contains a NUL character")
                try:
                    v.encode()
                except UnicodeEncodeError:
                    raise Invalid(f"{name} is not valid Unicode text") from None


def _verify_hash(record: dict) -> bool:
    # Fast path: orjson's canonical form equals json.dumps(sort_keys, compact, ensure_ascii=False)
    # for the values records hold; on a mismatch, decide with the reference implementation.
    body = _canonical({name: record[name] for name in CHAINED})
    if hashlib.sha256(record["prev_hash"].encode() + b"\n" + body).hexdigest() == record["hash"]:
        return True
    return chain_hash(record["prev_hash"], record) == record["hash"]


_SPEC = tuple((name, _ALLOWED.get(name), name in REQUIRED) for name in FIELDS)
# Text fields outside the chain: the chain hash's JSON encoding vets every other one.
_UNHASHED_TEXT = ("kubectl_version", "identity")


def validate_record(item) -> dict:
    """The record with every contract field (absent ones null), or Invalid. Hot: runs per record."""
    if type(item) is not dict:
        raise Invalid("a record must be a JSON object")
    record = {}
    for name, allowed, required in _SPEC:
        value = record[name] = item.get(name)
        if value is None:
            if required:
                raise Invalid(f"{name} is required")
        elif allowed is not None:
            kind = type(value)
            if kind not in allowed:
                raise Invalid(f"{name} must be {_KIND[allowed[0]]}")
            if kind is str and "\x00" in value:
                raise Invalid(f"{name} contains a NUL character")
            if kind is int and abs(value) > _INT_MAX:
                raise Invalid(f"{name} is out of range")
    for value in record["argv"]:
        if type(value) is not str:
            raise Invalid("argv must be a list of strings")
        if "\x00" in value:
            raise Invalid("argv contains a NUL character")
    if record["hash"] is None:
        _canonical(record)  # no chain hash to vet the text: refuse lone surrogates here
    else:
        _check_text({name: record[name] for name in _UNHASHED_TEXT})
    if not record["id"] or len(record["id"]) > MAX_ID or not record["install_id"] or len(record["install_id"]) > MAX_ID:
        raise Invalid(f"id and install_id must be 1 to {MAX_ID} characters")
    if record["id"].startswith(RESERVED_ID_PREFIX):
        raise Invalid(f"ids starting with {RESERVED_ID_PREFIX!r} are the collector's own (forwarded audit documents)")
    if record["state"] not in STATES:
        raise Invalid(f"state must be one of {', '.join(sorted(STATES))}")
    for name in ("started_at", "ended_at"):
        if record[name] is not None and not is_time(record[name]):
            raise Invalid(f"{name} must be an RFC 3339 time")
    chained = [record[n] is not None for n in ("seq", "prev_hash", "hash")]
    if any(chained) and not all(chained):
        raise Invalid("seq, prev_hash and hash come together or not at all")
    if all(chained):
        if record["seq"] < 1:
            raise Invalid("seq must be 1 or more")
        if not (_HASH.match(record["prev_hash"]) and _HASH.match(record["hash"])):
            raise Invalid("prev_hash and hash must be 64 lower-case hex digits")
        if record["seq"] == 1 and record["prev_hash"] != GENESIS:
            raise Invalid("the first record of an installation must follow the genesis hash")
        if not _verify_hash(record):
            raise Invalid("hash does not match the record's content")
    return record


# As kubectl_record.store keeps them (m005_tombstones), less the local upload marker.
TOMBSTONE_FIELDS = ("id", "deletion", "created_at", "deleted_by", "reason", "install_id", "seq_from", "seq_to",
                    "count", "prev_hash", "last_hash", "first_started_at", "last_started_at")


def validate_tombstone(item) -> dict:
    """What a local deletion left: which installation, how many records, which seq range, and the
    chain hashes at its edges (prev_hash of its first record, hash of its last). Records without a
    chain (old imports) leave tombstones without range or hashes: counted, but not chain links."""
    if not isinstance(item, dict):
        raise Invalid("a tombstone must be a JSON object")
    t = {name: item.get(name) for name in TOMBSTONE_FIELDS}
    for name in ("id", "install_id", "deletion", "deleted_by", "reason"):
        if not isinstance(t[name], str) or not t[name] or len(t[name]) > MAX_ID * 5:
            raise Invalid(f"{name} is required (a string)")
    for name in ("seq_from", "seq_to", "count"):
        v = t[name]
        if v is None and name != "count":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= _INT_MAX:
            raise Invalid(f"{name} must be a positive integer")
    ranged = [t["seq_from"] is not None, t["seq_to"] is not None]
    if any(ranged) and not all(ranged):
        raise Invalid("seq_from and seq_to come together")
    if all(ranged) and (t["seq_to"] < t["seq_from"] or t["count"] != t["seq_to"] - t["seq_from"] + 1):
        raise Invalid("seq_from..seq_to must be a range of exactly count records")
    hashes = [t["prev_hash"] is not None, t["last_hash"] is not None]
    if any(hashes) and not (all(hashes) and all(ranged)):
        raise Invalid("prev_hash and last_hash come together, with a seq range")
    for name in ("prev_hash", "last_hash"):
        if t[name] is not None and (not isinstance(t[name], str) or not _HASH.match(t[name])):
            raise Invalid(f"{name} must be 64 lower-case hex digits")
    if t["seq_from"] == 1 and t["prev_hash"] not in (None, GENESIS):
        raise Invalid("a tombstone from seq 1 must follow the genesis hash")
    for name in ("created_at", "first_started_at", "last_started_at"):
        if (t[name] is not None or name == "created_at") and not is_time(t[name]):
            raise Invalid(f"{name} must be an RFC 3339 time")
    _check_text({k: t[k] for k in ("id", "install_id", "deletion", "deleted_by", "reason")})
    return t


def to_columns(record: dict) -> dict:
    """As stored, the same way in both backends: JSON fields as text, booleans as 0/1."""
    out = dict(record)
    for name in JSON_FIELDS:
        if out.get(name) is not None:
            out[name] = _canonical(out[name]).decode()
    for name in BOOL_FIELDS:
        if out.get(name) is not None:
            out[name] = int(out[name])
    return out
