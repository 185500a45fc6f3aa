"""Tokens and roles. Only a hash of each token is stored; the token itself is shown once.

Roles: a `writer` uploads and reads back only what it uploaded; an `auditor` reads every record
whose cluster matches its scope (a glob; none = every cluster), and each such read is logged; an
`admin` may do everything, including retention. Nobody can upload as someone else: the collector
stamps every record with the identity of the token that uploaded it.

A `cluster` token is a kube-apiserver's audit webhook credential: it may only post audit batches
(and ask whoami), and every event it posts belongs to its cluster (events carry no cluster name).
Its scope holds the cluster's name; the cluster's server URL is registered with the token.
"""

from __future__ import annotations

import hashlib
import secrets

from .storage import Access, Storage

ROLES = ("writer", "auditor", "admin", "cluster")
PEOPLE = ROLES[:3]  # every route but the audit webhook
PREFIX = "krt_"


class AuthError(Exception):
    """Refused; `status` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def token_hash(token: str) -> str:
    # Tokens are 256 random bits: a plain digest is enough, no slow password hash needed.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(storage: Storage, user: str, role: str, scope: str | None = None, *,
                 cluster: str | None = None, server: str | None = None) -> str:
    """A new token. Role `cluster` needs CLUSTER and its SERVER URL (registered as an audit source)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not user or not user.strip():
        raise ValueError("user must not be empty")
    if scope is not None and role != "auditor":
        raise ValueError("--scope applies to auditors only")
    if (cluster is not None or server is not None) and role != "cluster":
        raise ValueError("--cluster and --server apply to cluster tokens only")
    if role == "cluster":
        from .webhook import register_source

        register_source(storage, cluster, server)
        scope = cluster
    token = PREFIX + secrets.token_urlsafe(32)
    storage.add_token(token_hash(token), user, role, scope)
    return token


def authenticate(storage: Storage, header: str | None) -> Access:
    if not header:
        raise AuthError(401, "missing token: send 'Authorization: Bearer <token>' (kubectl record token create)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "malformed Authorization header: expected 'Bearer <token>'")
    access = storage.find_token(token_hash(token.strip()))
    if access is None:
        raise AuthError(401, "unknown or revoked token")
    return access


def require(access: Access, *roles: str) -> None:
    if access.role not in roles:
        raise AuthError(403, f"role {access.role} may not do this (needs {' or '.join(roles)})")
