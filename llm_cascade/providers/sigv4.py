"""AWS Signature Version 4 for one request, pure, written against AWS's published test suite.

Written here rather than taken from botocore: that is a 60 MB dependency whose import costs
more than a whole run of this tool, for a hundred lines of hashing. The tests check these
functions against the suite's canonical requests, strings to sign and signatures.

The caller gives the request as it goes on the wire: the path and query exactly as sent
(a non-S3 service encodes the path once more, so `%3A` in a Bedrock model id is signed as
`%253A`), the headers to sign, a hash of the body and the time. The secret never leaves this
module's arithmetic: only the signature goes in a header. Paths are signed as given, without
removing `.` or `..` segments (no request here has them).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True, slots=True)
class Credentials:
    """An AWS access key pair, with the session token of temporary credentials."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def amz_date(now: float) -> str:
    """`20150830T123600Z`: the request's time, as `x-amz-date` and the signature carry it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _encode(text: str, safe: str = "") -> str:
    """RFC 3986 encoding: everything but unreserved characters (and `safe`) as %XX of UTF-8."""
    return quote(text, safe=safe + "~")


def canonical_uri(path: str) -> str:
    return _encode(path or "/", safe="/")


def canonical_query(query: str) -> str:
    """Parameters encoded and sorted by name, then value; `a` alone is `a=`."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in pairs))


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """(the canonical header lines, the signed header names): names lower-cased and sorted,
    values trimmed with inner runs of spaces made one, repeated names joined with commas."""
    joined: dict[str, list[str]] = {}
    for name, value in headers:
        joined.setdefault(name.strip().lower(), []).append(" ".join(value.split()))
    names = sorted(joined)
    lines = "".join(f"{n}:{','.join(joined[n])}\n" for n in names)
    return lines, ";".join(names)


def canonical_request(
    method: str, path: str, query: str, headers: Iterable[tuple[str, str]], payload_hash: str
) -> tuple[str, str]:
    """(the canonical request, the signed header names)."""
    lines, signed = canonical_headers(headers)
    parts = [method.upper(), canonical_uri(path), canonical_query(query), lines, signed]
    return "\n".join([*parts, payload_hash]), signed


def scope(date: str, region: str, service: str) -> str:
    return f"{date[:8]}/{region}/{service}/aws4_request"


def string_to_sign(date: str, credential_scope: str, request: str) -> str:
    digest = hashlib.sha256(request.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{date}\n{credential_scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, date: str, region: str, service: str, to_sign: str) -> str:
    key = signing_key(secret, date, region, service)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def authorization(
    credentials: Credentials,
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    payload_hash: str,
    *,
    region: str,
    service: str,
    date: str,
) -> str:
    """The `Authorization` header value for a request with these signed headers."""
    request, signed = canonical_request(method, path, query, headers, payload_hash)
    credential_scope = scope(date, region, service)
    to_sign = string_to_sign(date, credential_scope, request)
    sig = signature(credentials.secret_access_key, date, region, service, to_sign)
    return (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{credential_scope},"
        f" SignedHeaders={signed}, Signature={sig}"
    )


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    *,
    region: str,
    service: str,
    now: float,
) -> dict[str, str]:
    """The headers that sign a request: `x-amz-date`, the session token if any, and
    `Authorization`, covering `host`, `content-type`, the body and those two."""
    date = amz_date(now)
    added = {"x-amz-date": date}
    if credentials.session_token:
        added["x-amz-security-token"] = credentials.session_token
    lower = {k.lower(): v for k, v in headers.items()}
    signed = [(n, lower[n]) for n in ("host", "content-type") if n in lower]
    parts = urlsplit(url)
    added["authorization"] = authorization(
        credentials,
        method,
        parts.path,
        parts.query,
        [*signed, *added.items()],
        hashlib.sha256(body).hexdigest(),
        region=region,
        service=service,
        date=date,
    )
    return added
