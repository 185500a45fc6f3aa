"""Destination URLs: `KIND[+http|+https]://[USER[:PASSWORD]@]HOST[:PORT][/PATH][?QUERY]`.

KIND is opensearch, elasticsearch (PATH's last segment is the INDEX, used exactly as given),
otlp, loki (PATH, if any, is a prefix in front of the API path) or webhook (PATH and QUERY are
the endpoint's own). HTTPS, except to loopback addresses where plain HTTP is the default;
`+http` / `+https` forces one. The userinfo is a credential and is masked wherever a URL is shown.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from .base import DestinationError

DEFAULT_PORTS = {"opensearch": 9200, "elasticsearch": 9200, "otlp": 4318, "loki": 3100}
KINDS = ("opensearch", "elasticsearch", "otlp", "loki", "webhook")
MASK = "***"
# Query parameters whose values are credentials (webhook endpoints often carry a token there).
_SECRET_PARAM = re.compile(r"(?i)(token|key|secret|sig|signature|password|passwd|pwd|auth|code|credential)")
_INDEX_BAD = re.compile(r'[\\/*?"<>| ,#:]')


@dataclass(frozen=True)
class DestinationURL:
    kind: str             # opensearch | elasticsearch | otlp | loki | webhook
    scheme: str           # http | https (what goes on the wire)
    host: str
    port: int | None      # None: the scheme's default (webhook only)
    path: str             # without the index for opensearch/elasticsearch; no trailing slash
    query: str
    username: str | None
    password: str | None
    index: str | None     # opensearch/elasticsearch only
    original: str

    @property
    def base(self) -> str:
        """scheme://host[:port] with no credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + (f":{self.port}" if self.port else "")

    def endpoint(self, api_path: str = "") -> str:
        """The HTTP URL to call: base + path prefix + API_PATH (+ the URL's own query)."""
        url = self.base + self.path + api_path
        return url + (f"?{self.query}" if self.query else "")

    @property
    def name(self) -> str:
        return mask_url(self.original)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def mask_url(url: str) -> str:
    """URL with the password (or a lone userinfo token) and secret-looking query values masked.
    Stable across credential changes, so it can key a destination's outbox position."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        # user:password keeps the user; a lone token (https://TOKEN@host) is masked whole.
        netloc = (f"{user}:{MASK}" if sep else MASK) + "@" + hostport
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{urllib.parse.quote(k)}={MASK if _SECRET_PARAM.search(k) else urllib.parse.quote(v)}"
                         for k, v in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_url(url: str) -> DestinationURL:
    if "://" not in url:
        raise DestinationError(f"not a destination URL (expected KIND://HOST…): {mask_url(url)}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationError(f"bad destination URL {mask_url(url)}: {exc}") from None
    kind, _, transport = parts.scheme.lower().partition("+")
    if kind not in KINDS:
        raise DestinationError(f"unknown destination kind {kind!r} in {mask_url(url)} "
                               f"(one of: {', '.join(KINDS)})")
    if transport not in ("", "http", "https"):
        raise DestinationError(f"bad transport {transport!r} in {mask_url(url)} (use +http or +https)")
    host = parts.hostname
    if not host:
        raise DestinationError(f"no host in destination URL {mask_url(url)}")
    scheme = transport or ("http" if is_loopback(host) else "https")
    if port is None:
        port = DEFAULT_PORTS.get(kind)
    path = parts.path.rstrip("/")
    index = None
    if kind in ("opensearch", "elasticsearch"):
        prefix, _, index = path.rpartition("/")
        index = urllib.parse.unquote(index)
        if not index:
            raise DestinationError(f"{kind} URL needs an index: {kind}://HOST:PORT/INDEX ({mask_url(url)})")
        if _INDEX_BAD.search(index) or index.startswith(("_", "-", "+")) or index in (".", ".."):
            raise DestinationError(f"not a valid index name: {index!r}")
        if index != index.lower():
            raise DestinationError(f"index names are lower case (it is used exactly as given): {index!r}")
        path = prefix
        if parts.query:
            raise DestinationError(f"{kind} URL takes no query string: {mask_url(url)}")
    username = urllib.parse.unquote(parts.username) if parts.username is not None else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return DestinationURL(kind=kind, scheme=scheme, host=host, port=port, path=path, query=parts.query,
                          username=username, password=password, index=index, original=url)
