#!/usr/bin/env python3
"""OSS direct-upload application server: a hardened port of Alibaba's sample ``appserver.py``.

A browser asks this server for an upload token (``GET /``), posts the file straight to the
bucket (PostObject), and OSS then calls this server back (``POST``), signing the callback with
RSA. This server only believes a callback whose signature verifies under OSS's own public key
(embedded below) or under a key fetched from an allow-listed URL. It also serves the browser
client from ``static/``.

Standard library only; importing this module starts nothing. Run it with
``python appserver.py [ip] [port]``; ``--help`` lists the settings.

The sections below are the architecture, in dependency order: each refers only to names of
its own section or of earlier ones.

 1. Errors                  10. RSA
 2. Encoding                11. Key trust (key URLs, fetch, cache)
 3. Configuration           12. Callback verification (and upload confirmation)
 4. Outbound HTTP client    13. Application (routes -> Response)
 5. Credentials             14. HTTP/1.1 transport
 6. Grants (who may upload) 15. WSGI
 7. Upload policy           16. Deployment check (--check, bucket CORS)
 8. OSS requests (signer)   17. Command line
 9. PEM/DER
"""

from __future__ import annotations

import base64
import binascii
import collections
import copy
import dataclasses
import datetime
import email.utils
import functools
import hashlib
import hmac
import http.client
import importlib
import io
import ipaddress
import json
import logging
import logging.handlers
import math
import os
import queue
import random
import re
import select
import signal
import socket
import socketserver
import ssl
import stat
import sys
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree
from typing import Any, Callable, Mapping, NamedTuple, Optional

__all__ = [
    "Config", "SETTINGS", "config_from_env", "sign_policy_v1", "sign_policy_v4", "issue_token",
    "PublicKey", "KeyFormatError", "load_public_key", "rsa_verify", "pub_key_url_allowed",
    "PublicKeyCache", "fetch_public_key_pem", "callback_string_to_sign", "verify_callback",
    "CallbackRejected", "App", "Response", "make_server", "make_wsgi_app", "main",
]

log = logging.getLogger("appserver")
access_log = logging.getLogger("appserver.access")

HERE = os.path.dirname(os.path.abspath(__file__))


###############################################################################
# 1. Errors ###################################################################
###############################################################################

class AppServerError(Exception):
    """Base class of every error this module raises on purpose."""


class ConfigError(AppServerError):
    """A bad setting. The message names the variable, never its value (it may be a secret)."""

    def __init__(self, variable, problem):
        super().__init__("%s %s" % (variable, problem))
        self.variable = variable


class FetchFailed(AppServerError):
    """An outbound request got no usable answer: refused, too slow, too large or malformed."""


class OssRefused(AppServerError):
    """OSS answered a request of ours with an error; the message holds its Code."""


class CredentialsError(AppServerError):
    """Temporary credentials could not be fetched: the service was unreachable, refused, or
    answered something malformed. The message never holds a key, secret or token."""


class KeyFormatError(AppServerError, ValueError):
    """A public key that is not strict PEM/DER, or that fails the key sanity checks."""


class PubKeyUnavailable(AppServerError):
    """The public key named by x-oss-pub-key-url could not be fetched or was refused."""


class RequestError(AppServerError):
    """An HTTP request we refuse. ``status`` is the one place a failure meets its HTTP status;
    ``close`` says the connection's framing can no longer be trusted."""

    status = 400
    close = False

    def __init__(self, message, *, headers=()):
        super().__init__(message)
        self.message = message
        self.headers = list(headers)


class BadRequest(RequestError):
    status, close = 400, True


class CallbackNotAccepted(RequestError):
    """A callback answered with an error; OSS then reports 203 CallbackFailed to the browser.
    The message names the failed step; ``reason``, for the log, says why."""

    verdict = "not accepted"

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


class CallbackRejected(CallbackNotAccepted):
    """The callback did not prove that OSS sent it about one of our uploads. OSS treats every
    non-200 alike; 400 is what the sample sent."""

    status, verdict = 400, "rejected"


class Unauthorized(RequestError):
    """No credentials, or credentials that do not prove who is asking."""

    status = 401

    def __init__(self, message, *, headers=()):
        super().__init__(message, headers=[("WWW-Authenticate", "Bearer")] + list(headers))


class Forbidden(RequestError):
    """Who is asking is known, and may not do this."""

    status = 403


class InvalidArgument(RequestError):
    """A request parameter we refuse; the connection stays usable."""

    status = 400


class NotFound(RequestError):
    status = 404


class MethodNotAllowed(RequestError):
    status = 405


class RequestTimeout(RequestError):
    status, close = 408, True


class LengthRequired(RequestError):
    status, close = 411, True


class PayloadTooLarge(RequestError):
    status, close = 413, True


class URITooLong(RequestError):
    status, close = 414, True


class RequestHeaderFieldsTooLarge(RequestError):
    status, close = 431, True


class TooManyRequests(RequestError):
    status = 429

    def __init__(self, message, retry_after: int):
        super().__init__(message, headers=[("Retry-After", str(retry_after))])


class MethodNotImplemented(RequestError):
    status, close = 501, True


class CredentialsUnavailable(RequestError):
    """No valid credentials to sign with right now; they come back by themselves."""

    status = 503

    def __init__(self, retry_after: int = 5):
        super().__init__("upload credentials unavailable",
                         headers=[("Retry-After", str(retry_after))])


class UploadUnconfirmed(CallbackNotAccepted):
    """OSS could not say whether a verified callback's object is in our bucket: no answer in
    time, a 5xx, no permission, or no credentials to ask with. The object stays.
    ``forbidden``: OSS refused our HEAD for want of a permission (AccessDenied)."""

    status, verdict = 503, "not confirmed"

    def __init__(self, message, reason=None, *, forbidden: bool = False):
        super().__init__(message, reason)
        self.forbidden = forbidden


class ForwardFailed(CallbackNotAccepted):
    """OSS_CALLBACK_FORWARD_URL gave no usable answer: none in time, not 2xx, or not a JSON
    object. The object stays."""

    status, verdict = 502, "not forwarded"


class HTTPVersionNotSupported(RequestError):
    status, close = 505, True


###############################################################################
# 2. Encoding #################################################################
###############################################################################

DECIMAL = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes '+5', '5_0', '٣'


def b64encode_text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def strict_b64decode(text: str, max_chars: int) -> bytes:
    """Standard base64 with padding and nothing else. Plain b64decode skips stray characters
    ('@@@@' decodes to b''), which would let junk through a header check."""
    if not text or len(text) > max_chars or len(text) % 4 or not text.isascii():
        raise ValueError("not strict base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not strict base64") from None


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 5), as tickets and grants carry it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, max_chars: int) -> bytes:
    """Strict unpadded base64url; ValueError for anything else (padding, '+', '/', junk)."""
    if len(text) > max_chars or len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# allow_nan=False: NaN and Infinity are not JSON (RFC 8259 6); OSS would fail the callback.
# One encoder for every answer: json.dumps with options builds a new one per call, which
# cost more than the rest of serializing a callback's answer.
_JSON_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def json_compact(value) -> bytes:
    return _JSON_COMPACT.encode(value).encode("utf-8")


def utc_iso8601(unix_seconds: int) -> str:
    """The sample's expiration format, always UTC whatever the machine's TZ."""
    moment = datetime.datetime.fromtimestamp(unix_seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_LOG_ESCAPES = {c: "\\x%02x" % c for c in list(range(0x20)) + [0x7F]}


def printable(text: str, limit: int = 200) -> str:
    """Request data made safe for one log line: no control characters, bounded length."""
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text  # the usual case, three times per access-log line
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii").translate(_LOG_ESCAPES)


def url_host(host: str) -> str:
    """A host as it stands in a URL: IPv6 literals in brackets (RFC 3986 3.2.2)."""
    return "[%s]" % host if ":" in host else host


###############################################################################
# 3. Configuration ############################################################
###############################################################################

PLACEHOLDER_ACCESS_KEY_ID = "your-access-key-id"
PLACEHOLDER_ACCESS_KEY_SECRET = "your-access-key-secret"
DEFAULT_HOST = "https://examplebucket.oss-cn-hangzhou.aliyuncs.com"
# The sample's callback body, byte for byte: the sample's published token depends on it.
DEFAULT_CALLBACK_BODY = ("filename=${object}&size=${size}&mimeType=${mimeType}"
                         "&height=${imageInfo.height}&width=${imageInfo.width}")
FORM_URLENCODED = "application/x-www-form-urlencoded"
CALLBACK_BODY_TYPES = (FORM_URLENCODED, "application/json")
OSS_KEY_HOST = "gosspublic.alicdn.com"
DEFAULT_PUB_KEY_URL_PREFIXES = ("http://gosspublic.alicdn.com/", "https://gosspublic.alicdn.com/")
MAX_OBJECT_BYTES = 5 * 1024 ** 3  # PostObject refuses bodies of 5 GB and more
MAX_CALLBACK_URLS = 5             # OSS's limit for ';'-separated callbackUrl values

_BUCKET_HOST = re.compile(
    r"^https?://([a-z0-9][a-z0-9-]{1,61}[a-z0-9])\.(oss-[a-z0-9-]+)\.aliyuncs\.com$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_HTTP_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_CREDENTIAL = re.compile(r"[\x21-\x7e]+")  # printable ASCII: it goes into HMAC keys and headers
_HOST_NAME = re.compile(r"^[A-Za-z0-9.-]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Anything a URL parser might read differently from the fetcher: whitespace, controls,
# backslashes (WHATWG reads '\' as '/'), and escapes (CVE-2023-24329 and friends).
_URL_REFUSED = re.compile(r"[\x00-\x20\x7f\\%#?]")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_RATE_UNITS = {"second": 1, "minute": 60, "hour": 3600}
USER_PLACEHOLDER = "{user}"
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@functools.lru_cache(maxsize=256)  # allow-listed prefixes are re-read on every callback
def split_plain_url(url: str):
    """(scheme, host, port, path) of a plain http(s) URL, or None for anything ambiguous:
    userinfo, IPv6, a trailing-dot host, a query, a fragment, escapes, dot segments."""
    if not isinstance(url, str) or not url.isascii() or _URL_REFUSED.search(url):
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        return None
    netloc, slash, path = rest.partition("/")
    path = slash + path
    host, colon, port = netloc.partition(":")
    if colon:
        if not port.isdigit() or len(port) > 5 or port.startswith("0") or int(port) > 65535:
            return None
        port = int(port)
    else:
        port = _DEFAULT_PORTS[scheme]
    if not host or "@" in host or host.endswith(".") or not _HOST_NAME.match(host):
        return None
    if not path or any(segment in (".", "..") for segment in path.split("/")):
        return None
    return scheme, host, port, path


def is_http_origin(value: str) -> bool:
    match = _HTTP_ORIGIN.fullmatch(value)
    return bool(match) and (match.group(1) is None or 0 < int(match.group(1)[1:]) <= 65535)


# -- parsers: text from the environment -> value, or ValueError naming the problem -------

def _no_controls(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return _no_controls(value)


def _credential(value: str) -> str:
    if not _CREDENTIAL.fullmatch(value):
        raise ValueError("must be printable ASCII with no spaces")
    return value


def _optional_credential(value: str) -> Optional[str]:
    return _credential(value) if value else None


def _bucket_url(value: str) -> str:
    value = value.strip().rstrip("/")
    if not is_http_origin(value):
        # The host also lands in the page's Content-Security-Policy: nothing but an origin.
        raise ValueError("must be a bucket URL such as " + DEFAULT_HOST)
    return value


def _bucket_name(value: str) -> str:
    if not _BUCKET_NAME.match(_text(value)):
        raise ValueError("is not a valid bucket name (3-63 of a-z, 0-9, -)")
    return value


def _signature_version(value: str) -> str:
    value = value.strip().lower()
    if value not in ("v1", "v4"):
        raise ValueError("must be v1 or v4")
    return value


def _region(value: str) -> str:
    value = _text(value).strip().lower()
    if value.startswith("oss-"):  # users copy the endpoint's spelling
        value = value[len("oss-"):]
    if not _REGION.match(value):
        raise ValueError("must be a region id such as cn-hangzhou")
    return value


def _callback_urls(value: str) -> str:
    value = _no_controls(value).strip()
    urls = value.split(";") if value else []
    if len(urls) > MAX_CALLBACK_URLS:
        raise ValueError("OSS accepts at most %d ';'-separated URLs" % MAX_CALLBACK_URLS)
    for url in urls:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # raises ValueError for a port out of range
            valid = (parts.scheme in ("http", "https") and parts.hostname and url.isascii()
                     and not any(c.isspace() for c in url))
        except ValueError:  # a bad port or a broken IPv6 literal
            valid = False
        if not valid:
            raise ValueError("must be http(s) URLs separated by ';'")
        if ":" in parts.hostname:
            raise ValueError("names an IPv6 address, which OSS cannot call back to")
    return value


def _callback_body_type(value: str) -> str:
    value = value.strip()
    if value not in CALLBACK_BODY_TYPES:
        raise ValueError("must be one of " + ", ".join(CALLBACK_BODY_TYPES))
    return value


def _flag(value: str) -> bool:
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("must be 1 or 0 (true/false, yes/no, on/off)")


def _upload_dir(value: str) -> str:
    _no_controls(value)
    if value and (value.startswith("/") or not value.endswith("/") or "\\" in value
                  or ".." in value.split("/")):
        # Without the trailing '/', 'user1' would also admit 'user10/...'.
        raise ValueError("must be a relative key prefix ending in '/', such as uploads/ "
                         "(or empty for the whole bucket)")
    if value.count(USER_PLACEHOLDER) > 1 or "{" in value.replace(USER_PLACEHOLDER, "") \
            or "}" in value.replace(USER_PLACEHOLDER, ""):
        raise ValueError("may hold %s once, and no other braces" % USER_PLACEHOLDER)
    return value


_HOOK_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _hook_path(value: str) -> str:
    value = value.strip()
    if not _HOOK_PATH.fullmatch(value) or not value.isascii():
        raise ValueError("must be package.module:function (no call expressions)")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        value = value.strip().lower()
        if value not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return value
    return parse


def _key_material(value: str) -> str:
    """A shared secret used as raw UTF-8 bytes: at least 32 of them (RFC 2104 2: a key shorter
    than the hash output weakens HMAC)."""
    try:
        size = len(_no_controls(value).encode("utf-8"))
    except UnicodeError:  # undecodable bytes from the environment; the message shows none
        raise ValueError("must be valid UTF-8") from None
    if size < 32:
        raise ValueError("must be at least 32 bytes")
    return value


def _header_name(value: str) -> str:
    value = value.strip()
    if not HEADER_NAME.fullmatch(value):
        raise ValueError("must be an HTTP header name such as X-Auth-Request-User")
    return value


def _networks(value: str) -> tuple:
    try:
        networks = tuple(ipaddress.ip_network(part.strip(), strict=False)
                         for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError("must be comma-separated addresses or CIDRs such as 10.0.0.0/8") \
            from None
    return networks


def _cors_origins(value: str) -> tuple:
    origins = tuple(part.strip() for part in value.split(",") if part.strip())
    if origins == ("*",):
        return origins
    if not origins or not all(is_http_origin(origin) for origin in origins):
        raise ValueError("must be * or comma-separated origins such as https://example.com")
    return origins


def _content_types(value: str) -> tuple:
    types = tuple(part.strip().lower() for part in value.split(",") if part.strip())
    if not all(_MEDIA_TYPE.fullmatch(t) for t in types):
        raise ValueError("must be comma-separated media types such as image/png,image/jpeg")
    return types


def _rate(value: str) -> Optional[tuple]:
    value = value.strip().lower()
    if value == "0":
        return None
    count, slash, unit = value.partition("/")
    if not slash or unit not in _RATE_UNITS or not DECIMAL.fullmatch(count) \
            or not 1 <= int(count) <= 10 ** 6:
        raise ValueError("must be 0 or N/second, N/minute or N/hour")
    return int(count), _RATE_UNITS[unit]


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        value = value.strip()
        if not DECIMAL.fullmatch(value) or not low <= int(value) <= high:
            raise ValueError("must be a whole number from %d to %d" % (low, high))
        return int(value)
    return parse


def _url_prefixes(value: str) -> tuple:
    prefixes = tuple(p.strip() for p in value.split(",") if p.strip())
    if not prefixes:
        raise ValueError("must name at least one URL prefix")
    for prefix in prefixes:
        if split_plain_url(prefix) is None or not prefix.endswith("/"):
            # A prefix without the trailing "/" would also admit host.evil or /keys-evil/.
            raise ValueError("each entry must be an http(s) URL ending in '/'")
    return prefixes


def _session_name(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"[A-Za-z0-9._@-]{2,64}", value):
        raise ValueError("must be 2-64 of A-Z, a-z, 0-9, '.', '@', '-', '_'")
    return value


def _service_url(value: str) -> str:
    value = _text(value).strip()
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # raises ValueError for a bad port
        valid = parts.scheme in _DEFAULT_PORTS and bool(parts.hostname) and value.isascii() \
            and "@" not in parts.netloc and not parts.fragment and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ValueError("must be an http(s) URL")
    return value


def _sts_endpoint(value: str) -> str:
    value = _service_url(value).rstrip("/")
    parts = urllib.parse.urlsplit(value)
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "https" and not loopback:
        # STS answers carry secrets: plain http only to a loopback test emulator.
        raise ValueError("must be https (plain http only for a loopback address)")
    return value


def _directory(value: str) -> str:
    if not os.path.isdir(_text(value)):
        raise ValueError("must name an existing folder")
    return value


class Setting(NamedTuple):
    """One setting: where it comes from, its default, how it is read, what it means.

    ``default`` None with a ``shown`` text: derived from other settings after parsing.
    ``empty_is_default``: an empty variable counts as unset.
    """

    name: str
    field: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    shown: Optional[str] = None
    fallbacks: tuple = ()
    secret: bool = False
    empty_is_default: bool = False

    @property
    def shown_default(self) -> str:
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, bool):
            return "1" if self.default else "0"
        if isinstance(self.default, tuple):
            return ",".join(self.default)
        return str(self.default)


SETTINGS = (
    Setting("OSS_ACCESS_KEY_ID", "access_key_id", PLACEHOLDER_ACCESS_KEY_ID, _credential,
            "AccessKey ID", "placeholder (startup warning)", fallbacks=("ALIBABA_CLOUD_ACCESS_KEY_ID",)),
    Setting("OSS_ACCESS_KEY_SECRET", "access_key_secret", PLACEHOLDER_ACCESS_KEY_SECRET,
            _credential, "AccessKey secret; never printed", "placeholder",
            fallbacks=("ALIBABA_CLOUD_ACCESS_KEY_SECRET",), secret=True),
    Setting("OSS_SESSION_TOKEN", "security_token", None, _optional_credential,
            "STS token: sent as x-oss-security-token and pinned in the policy", "unset", fallbacks=("ALIBABA_CLOUD_SECURITY_TOKEN",),
            secret=True),
    Setting("OSS_HOST", "host", DEFAULT_HOST, _bucket_url, "bucket URL the browser posts to",
            empty_is_default=True),
    Setting("OSS_BUCKET", "bucket", None, _bucket_name, "bucket, pinned in the policy as {\"bucket\": ...}",
            "from OSS_HOST"),
    Setting("OSS_SIGNATURE_VERSION", "signature_version", "v1", _signature_version,
            "v1 (HMAC-SHA1) or v4 (OSS4-HMAC-SHA256)", empty_is_default=True),
    Setting("OSS_REGION", "region", None, _region, "region, required for v4: cn-hangzhou or oss-cn-hangzhou",
            "from OSS_HOST"),
    Setting("OSS_CALLBACK_URL", "callback_url", "", _callback_urls,
            "callback target(s), up to 5 ';'-separated; empty: no callback; a warning "
            "when the host is loopback or private", "this server"),
    Setting("OSS_CALLBACK_BODY", "callback_body", DEFAULT_CALLBACK_BODY, _text,
            "callbackBody template", "the sample's, plus ${bucket} when the bucket is known"),
    Setting("OSS_CALLBACK_BODY_TYPE", "callback_body_type", FORM_URLENCODED,
            _callback_body_type, "callbackBodyType: this or application/json", empty_is_default=True),
    Setting("OSS_CALLBACK_SNI", "callback_sni", False, _flag,
            "1: callbackSNI for https callback URLs behind SNI hosting"),
    Setting("OSS_UPLOAD_DIR", "upload_dir", "user-dir-prefix/", _upload_dir,
            "object key prefix, pinned with starts-with; end it with /"),
    Setting("OSS_EXPIRE_SECONDS", "expire_seconds", 30, _whole_number(1, 7 * 24 * 3600),
            "policy lifetime in seconds"),
    Setting("OSS_MAX_UPLOAD_BYTES", "max_upload_bytes", 10 * 1024 * 1024,
            _whole_number(0, MAX_OBJECT_BYTES), "content-length-range 0..N, enforced by OSS; 0: no limit"),
    Setting("OSS_CORS_ORIGIN", "cors_origins", ("*",), _cors_origins,
            "origins allowed to fetch tokens: * or a comma-separated list (a listed Origin "
            "is echoed, with credentials)", empty_is_default=True),
    Setting("OSS_PIN_CALLBACK", "pin_callback", True, _flag,
            "pin the callback parameter in the policy, so a client cannot redirect the "
            "callback"),
    Setting("OSS_PUB_KEY_URL_PREFIXES", "pub_key_url_prefixes", DEFAULT_PUB_KEY_URL_PREFIXES,
            _url_prefixes, "comma-separated URL prefixes a callback public key may come from"),
    Setting("OSS_MAX_CALLBACK_BYTES", "max_callback_bytes", 1024 * 1024,
            _whole_number(1, 16 * 1024 * 1024), "largest callback body accepted (413 above it, before reading)"),
    Setting("OSS_MAX_CONNECTIONS", "max_connections", 1024, _whole_number(1, 65535),
            "concurrent connections; more get a fast 503"),
    Setting("OSS_TOKEN_AUTH", "token_auth", "none", _choice("none", "hmac", "header"),
            "who may get a token: none (anyone), hmac (Bearer ticket from your app), header "
            "(user set by an authenticating proxy)", empty_is_default=True),
    Setting("OSS_TOKEN_AUTH_SECRET", "token_auth_secret", None, _key_material,
            "ticket key for hmac, at least 32 bytes; never printed", "unset", secret=True),
    Setting("OSS_TOKEN_AUTH_HEADER", "token_auth_header", None, _header_name,
            "for header: the header your proxy sets, e.g. X-Auth-Request-User", "unset"),
    Setting("OSS_TRUSTED_PROXIES", "trusted_proxies", _networks(LOOPBACK_NETWORKS), _networks,
            "addresses (CIDRs) whose auth header and X-Forwarded-For are believed",
            LOOPBACK_NETWORKS),
    Setting("OSS_ALLOWED_CONTENT_TYPES", "allowed_content_types", (), _content_types,
            "media types an upload may have, pinned on x-oss-content-type; empty: any",
            "any"),
    Setting("OSS_TOKEN_RATE", "token_rate", None, _rate,
            "tokens per user (or client address with none): N/second, N/minute, N/hour; "
            "0: no limit", "0"),
    Setting("OSS_CALLBACK_BINDING", "callback_binding", True, _flag,
            "accept only callbacks carrying a valid grant from our tokens (0: any callback "
            "OSS signs, such as the documentation's example)"),
    Setting("OSS_CALLBACK_SECRET", "callback_secret", None, _key_material,
            "grant key shared by replicas and workers, at least 32 bytes; never printed",
            "derived from the AccessKey secret", secret=True),
    Setting("OSS_CALLBACK_WINDOW", "callback_window", 86400, _whole_number(0, 30 * 86400),
            "seconds after a token expires that its callback is still accepted"),
    Setting("OSS_CREDENTIALS", "credentials", "auto",
            _choice("auto", "static", "oidc", "ram_role", "ecs", "uri"),
            "credential provider; auto: OIDC role, RAM role, AccessKey, ECS role, URI, in that "
            "order, from what is set", empty_is_default=True),
    Setting("ALIBABA_CLOUD_ROLE_ARN", "role_arn", None, _text,
            "RAM role to assume (with OIDC variables, or with an AccessKey)", "unset"),
    Setting("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "oidc_provider_arn", None, _text,
            "OIDC provider for AssumeRoleWithOIDC (ACK RRSA)", "unset"),
    Setting("ALIBABA_CLOUD_OIDC_TOKEN_FILE", "oidc_token_file", None, _text,
            "OIDC token file, read afresh at each refresh", "unset"),
    Setting("ALIBABA_CLOUD_ROLE_SESSION_NAME", "role_session_name", "oss-appserver",
            _session_name, "role session name for STS", empty_is_default=True),
    Setting("OSS_ROLE_POLICY", "role_policy", "auto", _choice("auto", "none"),
            "auto: narrow assumed roles to PutObject/GetObject on the upload folder; none",
            empty_is_default=True),
    Setting("ALIBABA_CLOUD_ECS_METADATA", "ecs_role", None, _text,
            "ECS instance RAM role name", "unset"),
    Setting("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "ecs_metadata_disabled", False, _flag,
            "true: never use the ECS metadata service"),
    Setting("ALIBABA_CLOUD_IMDSV1_DISABLED", "imdsv1_disabled", False, _flag,
            "true: hardened metadata mode only, no fallback to normal mode"),
    Setting("ALIBABA_CLOUD_CREDENTIALS_URI", "credentials_uri", None, _service_url,
            "URL answering JSON credentials", "unset"),
    Setting("OSS_STS_ENDPOINT", "sts_endpoint", "https://sts.aliyuncs.com", _sts_endpoint,
            "STS endpoint, for private deployments and tests (https; http only on loopback)"),
    Setting("OSS_ECS_METADATA_ENDPOINT", "ecs_metadata_endpoint", "http://100.100.100.200",
            _service_url, "metadata service, for private deployments and tests"),
    Setting("OSS_CREDENTIAL_MARGIN_SECONDS", "credential_margin", 60, _whole_number(0, 3600),
            "temporary credentials count as expired this long before they do"),
    Setting("OSS_CONFIRM_UPLOADS", "confirm_uploads", "auto", _choice("auto", "1", "0"),
            "after a verified callback, a signed HEAD must find the object in our bucket with "
            "the callback's size (and ${crc64}); auto: on with real credentials, a known bucket "
            "and a callback body with ${object}", empty_is_default=True),
    Setting("OSS_DOWNLOAD_EXPIRE_SECONDS", "download_expire_seconds", 0,
            _whole_number(0, 7 * 24 * 3600),
            "lifetime of the presigned links of GET /download-url?key=...; 0: no such "
            "endpoint; needs OSS_TOKEN_AUTH hmac or header"),
    Setting("OSS_CALLBACK_HOOK", "callback_hook", None, _hook_path,
            "package.module:function that gets each verified upload and returns the JSON "
            "answer; loaded at startup, the working directory on sys.path", "unset"),
    Setting("OSS_CALLBACK_FORWARD_URL", "callback_forward_url", None, _service_url,
            "POST each verified upload as JSON to this URL, signed with OSS_FORWARD_SECRET; "
            "its JSON answer goes to the browser", "unset"),
    Setting("OSS_FORWARD_SECRET", "forward_secret", None, _key_material,
            "HMAC key of X-Upload-Signature on forwarded uploads, at least 32 bytes; never "
            "printed", "unset", secret=True),
    Setting("OSS_STATIC_DIR", "static_dir", None, _directory,
            "folder with the browser client, for a restyled page", "the bundled page"),
)


def _check_config(config) -> None:
    if config.signature_version not in ("v1", "v4"):
        raise ValueError("signature_version must be 'v1' or 'v4'")
    if config.signature_version == "v4" and not config.region:
        raise ValueError("signature_version 'v4' needs a region")


def _placeholder_credentials(config) -> bool:
    if config.credentials in ("oidc", "ram_role", "ecs", "uri"):
        return False
    return (config.access_key_id == PLACEHOLDER_ACCESS_KEY_ID
            or config.access_key_secret == PLACEHOLDER_ACCESS_KEY_SECRET)


def _confirms_uploads(config) -> bool:
    if config.confirm_uploads != "auto":
        return config.confirm_uploads == "1"
    return (not config.placeholder_credentials and bool(config.bucket)
            and bool(config.callback_url)
            and "object" in template_fields(config.callback_body, config.callback_body_type))


# Everything the server needs, read once; made from SETTINGS so that a default is written
# in one place. Secrets are kept out of repr.
Config = dataclasses.make_dataclass(
    "Config",
    [(s.field, Any, dataclasses.field(default=s.default, repr=not s.secret)) for s in SETTINGS],
    frozen=True,
    namespace={"__post_init__": _check_config,
               "placeholder_credentials": property(_placeholder_credentials),
               "confirms_uploads": property(_confirms_uploads),
               "__module__": __name__,
               "__doc__": "The settings, one field each (see SETTINGS); frozen, read once."})


def read_setting(setting: Setting, environ: Mapping[str, str]):
    """A setting's value from the environment: its variable, then its fallbacks."""
    for name in (setting.name,) + setting.fallbacks:
        if name in environ:
            value = environ[name]
            if setting.empty_is_default and not value.strip():
                return setting.default
            try:
                return setting.parse(value)
            except ValueError as exc:
                raise ConfigError(name, str(exc)) from None
    return setting.default


def config_from_env(environ: Mapping[str, str],
                    server_url: Optional[str] = "http://127.0.0.1:8080") -> Config:
    """Build the Config from environment variables; ``server_url`` is the default callback URL.

    Raises ConfigError naming the variable, never echoing its value (it may be a secret).
    """
    values = {s.field: read_setting(s, environ) for s in SETTINGS}
    matched = _BUCKET_HOST.match(values["host"])
    if values["bucket"] is None and matched:
        values["bucket"] = matched.group(1)
    if values["region"] is None and matched and not matched.group(2).startswith("oss-accelerate"):
        region = matched.group(2)[len("oss-"):]
        values["region"] = region[:-len("-internal")] if region.endswith("-internal") else region
    if values["signature_version"] == "v4" and not values["region"]:
        raise ConfigError("OSS_REGION", "is required for v4 when OSS_HOST does not name the region")
    if "OSS_CALLBACK_URL" not in environ:
        if server_url and "[" in server_url:
            raise ConfigError("OSS_CALLBACK_URL", "is required when listening on an IPv6 "
                                                  "address: OSS cannot call back to an IPv6 "
                                                  "address")
        values["callback_url"] = server_url or ""
    if "OSS_CALLBACK_BODY" not in environ:
        values["callback_body"] = default_callback_body(values["callback_body_type"],
                                                        values["bucket"])
    check_token_auth(values)
    values["credentials"] = resolve_credentials(values)
    if values["callback_binding"] and values["callback_url"]:
        check_callback_binding(values)
    check_oss_requests(values)
    check_callback_answer(values)
    return Config(**values)


def resolve_credentials(values: dict) -> str:
    """The credential provider, as the official libraries pick it from what is set; with
    OSS_CREDENTIALS forcing one, what it needs must be set."""
    has_key = values["access_key_id"] != PLACEHOLDER_ACCESS_KEY_ID
    oidc = values["role_arn"] and values["oidc_provider_arn"] and values["oidc_token_file"]
    mode = values["credentials"]
    if mode == "auto":
        mode = ("oidc" if oidc else "ram_role" if values["role_arn"] and has_key
                else "static" if has_key
                else "ecs" if values["ecs_role"] and not values["ecs_metadata_disabled"]
                else "uri" if values["credentials_uri"] else "placeholder")
    needs = {"static": [("OSS_ACCESS_KEY_ID", has_key)],
             "oidc": [("ALIBABA_CLOUD_ROLE_ARN", values["role_arn"]),
                      ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", values["oidc_provider_arn"]),
                      ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", values["oidc_token_file"])],
             "ram_role": [("ALIBABA_CLOUD_ROLE_ARN", values["role_arn"]),
                          ("OSS_ACCESS_KEY_ID", has_key)],
             "ecs": [("ALIBABA_CLOUD_ECS_METADATA_DISABLED", not values["ecs_metadata_disabled"])],
             "uri": [("ALIBABA_CLOUD_CREDENTIALS_URI", values["credentials_uri"])]}
    for variable, present in needs.get(mode, ()):
        if not present:
            raise ConfigError(variable, "is required (or must be off) for OSS_CREDENTIALS=%s"
                              % mode)
    if mode in ("oidc", "ram_role") and values["role_policy"] == "auto" and not values["bucket"]:
        raise ConfigError("OSS_BUCKET", "is required for the session policy of an assumed role "
                                        "(or set OSS_ROLE_POLICY=none)")
    if mode in ("oidc", "ecs", "uri") and values["callback_binding"] \
            and values["callback_url"] and not values["callback_secret"]:
        raise ConfigError("OSS_CALLBACK_SECRET", "is required with %s credentials: grants need "
                                                 "a key that does not rotate" % mode)
    return mode


def check_token_auth(values: dict) -> None:
    auth = values["token_auth"]
    if auth == "hmac" and not values["token_auth_secret"]:
        raise ConfigError("OSS_TOKEN_AUTH_SECRET", "is required with OSS_TOKEN_AUTH=hmac")
    if auth == "header" and not values["token_auth_header"]:
        raise ConfigError("OSS_TOKEN_AUTH_HEADER", "is required with OSS_TOKEN_AUTH=header")
    if auth == "none" and USER_PLACEHOLDER in values["upload_dir"]:
        raise ConfigError("OSS_UPLOAD_DIR", "holds %s, which needs OSS_TOKEN_AUTH=hmac or "
                                            "header to know the user" % USER_PLACEHOLDER)


def check_callback_answer(values: dict) -> None:
    """One thing answers a verified callback: the hook, the forward, or the default."""
    if values["callback_forward_url"] and not values["forward_secret"]:
        raise ConfigError("OSS_FORWARD_SECRET", "is required with OSS_CALLBACK_FORWARD_URL")
    if values["callback_forward_url"] and values["callback_hook"]:
        raise ConfigError("OSS_CALLBACK_HOOK", "and OSS_CALLBACK_FORWARD_URL both answer the "
                                               "callback: set one")


def check_oss_requests(values: dict) -> None:
    """What upload confirmation and download links need to work at all."""
    if values["confirm_uploads"] == "1":
        if values["credentials"] in ("placeholder", "static") and (
                values["access_key_secret"] == PLACEHOLDER_ACCESS_KEY_SECRET
                or values["access_key_id"] == PLACEHOLDER_ACCESS_KEY_ID):
            raise ConfigError("OSS_CONFIRM_UPLOADS", "=1 needs real credentials: OSS refuses "
                                                     "a HEAD signed with placeholders")
        if not values["bucket"]:
            raise ConfigError("OSS_CONFIRM_UPLOADS", "=1 needs the bucket (OSS_BUCKET, or an "
                                                     "OSS_HOST that names it)")
        if "object" not in template_fields(values["callback_body"],
                                           values["callback_body_type"]):
            raise ConfigError("OSS_CONFIRM_UPLOADS", "=1 needs a callback body that renders "
                                                     "${object}")
    if values["download_expire_seconds"]:
        if values["token_auth"] == "none":
            # With CORS * and guessable keys, any web page could read every upload.
            raise ConfigError("OSS_DOWNLOAD_EXPIRE_SECONDS", "needs OSS_TOKEN_AUTH=hmac or "
                                                             "header: with none, anyone could "
                                                             "read every upload")
        if not values["bucket"]:
            raise ConfigError("OSS_DOWNLOAD_EXPIRE_SECONDS", "needs the bucket (OSS_BUCKET, or "
                                                             "an OSS_HOST that names it)")
        if USER_PLACEHOLDER not in values["upload_dir"]:
            # A folder all users share would let each read the others' uploads.
            raise ConfigError("OSS_DOWNLOAD_EXPIRE_SECONDS", "needs OSS_UPLOAD_DIR with %s: "
                                                             "links are signed only for the "
                                                             "user's own folder"
                              % USER_PLACEHOLDER)


def template_fields(body: str, body_type: str) -> dict:
    """{OSS variable: field name} for the variables a callback body template renders as a
    whole value: 'size=${size}', or '"size":${size}' in JSON."""
    return dict(_template_pairs(body, body_type))


@functools.lru_cache(maxsize=8)  # one template per configuration, read on every callback
def _template_pairs(body: str, body_type: str) -> tuple:
    if body_type == "application/json":
        pairs = re.findall(r'"([^"\\]+)"\s*:\s*\$\{([A-Za-z0-9.]+)\}', body)
    else:
        pairs = re.findall(r"(?:^|&)([^=&]+)=\$\{([A-Za-z0-9.]+)\}(?=&|$)", body)
    return tuple((variable, name) for name, variable in pairs)


def check_callback_binding(values: dict) -> None:
    """What binding a callback to its token needs: a bucket to compare with, a template whose
    fields can be checked against the grant, and callback URLs that can carry one."""
    if not values["bucket"]:
        raise ConfigError("OSS_BUCKET", "is required for callback binding (or set "
                                        "OSS_CALLBACK_BINDING=0)")
    rendered = template_fields(values["callback_body"], values["callback_body_type"])
    needed = ["bucket", "object", "size"] + (["mimeType"] if values["allowed_content_types"]
                                             else [])
    missing = [v for v in needed if v not in rendered]
    if missing:
        raise ConfigError("OSS_CALLBACK_BODY", "must render %s for callback binding (or set "
                                               "OSS_CALLBACK_BINDING=0)"
                          % ", ".join("${%s}" % v for v in missing))
    for url in values["callback_url"].split(";"):
        if "#" in url or "grant" in (name for name, _ in urllib.parse.parse_qsl(
                urllib.parse.urlsplit(url).query, keep_blank_values=True)):
            raise ConfigError("OSS_CALLBACK_URL", "must have no fragment and no 'grant' "
                                                  "parameter: callback binding adds one")


def default_callback_body(body_type: str, bucket: Optional[str]) -> str:
    """The sample's template, plus the bucket when it is known.

    Anyone can point a callback of their own bucket at this server, and OSS will sign it:
    the signature proves OSS sent it, not whose upload it was. ${bucket} is filled in by OSS,
    so the callback's bucket is checked against the configured one.
    """
    if body_type == "application/json":
        body = ('{"filename":${object},"size":${size},"mimeType":${mimeType},'
                '"height":${imageInfo.height},"width":${imageInfo.width}')
        return body + (',"bucket":${bucket}}' if bucket else "}")
    return DEFAULT_CALLBACK_BODY + ("&bucket=${bucket}" if bucket else "")


def unreachable_from_oss(host: str) -> bool:
    """A host OSS's servers cannot call back: loopback, private, link-local or another
    non-global address, or a name that only resolves locally."""
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return host == "localhost" or host.endswith((".localhost", ".local", ".internal"))


def config_warnings(config: Config) -> list:
    """What a user should hear at startup; none of it is fatal."""
    warnings = []
    if not config.upload_dir:
        warnings.append("OSS_UPLOAD_DIR is empty: browsers may write any key in the bucket")
    if config.placeholder_credentials:
        warnings.append("OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET are placeholders: "
                        "uploads to real OSS will fail with InvalidAccessKeyId, and uploads "
                        "are not confirmed with a HEAD")
    if not config.callback_binding:
        warnings.append("OSS_CALLBACK_BINDING=0: any callback OSS signs is accepted, also one "
                        "that another OSS user aims at this server from their own bucket")
    elif not config.callback_secret and config.placeholder_credentials:
        warnings.append("callback grants use a random key of this process (placeholder "
                        "credentials): set OSS_CALLBACK_SECRET to share one between workers "
                        "and replicas")
    for url in filter(None, config.callback_url.split(";")):
        host = urllib.parse.urlsplit(url).hostname or ""
        if unreachable_from_oss(host):
            warnings.append("callback URL host %s is loopback or private: real OSS cannot "
                            "reach it (set OSS_CALLBACK_URL to a public address)" % host)
    return warnings


def settings_table_markdown() -> str:
    """The README's configuration table, made from SETTINGS (a test keeps them equal)."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        name = "`%s`" % s.name + "".join(" (or `%s`)" % f for f in s.fallbacks)
        rows.append("| %s | %s | %s |" % (name, "`%s`" % s.shown_default if s.shown is None
                                          else s.shown_default, s.help))
    return "\n".join(rows)


###############################################################################
# 4. Outbound HTTP client #####################################################
###############################################################################

# Every request this server makes goes through fetch(): no proxies (http.client reads no
# proxy variables), no redirects (a 3xx is an answer like any other), one deadline that
# covers DNS, connect, TLS and the whole response, and a cap on the bytes read.

class Answer(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class _BudgetExceeded(OSError):
    """The peer sent more bytes than the reader's budget allows."""


class _DeadlineReader(io.RawIOBase):
    """A socket reader with one overall deadline and a byte budget for the whole response.
    Socket timeouts are per operation, so a server sending a byte just before each timeout
    would never time out, and http.client bounds header lines, not their total."""

    def __init__(self, sock, deadline: float, budget: int):
        super().__init__()
        self._sock = sock
        # makefile() counts the reader as a user of the socket, so an HTTPConnection that
        # "closes" after handing the socket to its response does not close it under us.
        self._raw = sock.makefile("rb", buffering=0)
        self.deadline = deadline
        self.budget = budget

    def readable(self):
        return True

    def readinto(self, buffer):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline exceeded")
        if self.budget <= 0:
            raise _BudgetExceeded("read budget exhausted")
        self._sock.settimeout(remaining)
        count = self._raw.readinto(memoryview(buffer)[:self.budget])
        self.budget -= count or 0
        return count

    def close(self):
        self._raw.close()
        super().close()


def connect_before(host: str, port: int, until: float) -> socket.socket:
    """A TCP connection made before ``until`` (a time.monotonic() value). getaddrinfo has no
    timeout of its own, so it runs in a thread we stop waiting for; each address then gets
    only the time left, not the whole timeout again."""
    answer = []

    def resolve():
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)

    resolver = threading.Thread(target=resolve, name="outbound-lookup", daemon=True)
    resolver.start()
    resolver.join(max(0.0, until - time.monotonic()))
    if not answer:
        raise TimeoutError("host lookup timed out")
    if isinstance(answer[0], OSError):
        raise answer[0]
    error = TimeoutError("no time left to connect")
    for family, kind, proto, _, address in answer[0]:
        remaining = until - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        sock.settimeout(remaining)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


def fetch(scheme: str, host: str, port: int, target: str, *, method: str = "GET",
          headers: Optional[Mapping[str, str]] = None, body: Optional[bytes] = None,
          timeout: float, max_bytes: int) -> Answer:
    """One HTTP request, answered within ``timeout`` seconds in all, or FetchFailed.

    The body may be at most ``max_bytes``; status line and headers together at most as much
    again, so a server cannot stream megabytes of either.
    """
    until = time.monotonic() + timeout
    connection_class = (http.client.HTTPSConnection if scheme == "https"
                        else http.client.HTTPConnection)
    connection = connection_class(host, port)

    def response_class(sock, *args, **kwargs):
        response = http.client.HTTPResponse(sock, *args, **kwargs)
        response.fp = io.BufferedReader(_DeadlineReader(sock, until, 2 * max_bytes))
        return response

    connection.response_class = response_class
    try:
        sock = connect_before(host, port, until)
        if scheme == "https":
            sock.settimeout(max(0.001, until - time.monotonic()))
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection.sock = sock  # connected here, so the deadline also covers DNS and connect
        connection.request(method, target, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        declared = response.getheader("Content-Length")
        # A HEAD answer's Content-Length is the object's size; no body follows.
        if method != "HEAD" and declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchFailed("response larger than %d bytes" % max_bytes)
        chunks, size = [], 0
        while method != "HEAD":
            chunk = response.read1(max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise FetchFailed("response larger than %d bytes" % max_bytes)
        return Answer(response.status, response.headers, b"".join(chunks))
    except _BudgetExceeded:
        raise FetchFailed("response larger than %d bytes" % (2 * max_bytes)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchFailed("fetch failed: %s" % type(exc).__name__) from None
    finally:
        connection.close()


###############################################################################
# 5. Credentials ##############################################################
###############################################################################

# Where the keys that sign tokens come from, in the order of Alibaba Cloud's credentials
# libraries: a static AccessKey, an OIDC role (ACK RRSA), a RAM role assumed with an AccessKey,
# the ECS instance RAM role, a credentials URI. Temporary credentials are refreshed by one
# background thread per process; request threads only read what it last fetched.

STS_API_VERSION = "2015-04-01"
CREDENTIALS_FETCH_TIMEOUT = 5.0     # one STS, metadata or URI request, all included
MAX_CREDENTIALS_RESPONSE = 64 * 1024
STS_DURATION_SECONDS = 3600
METADATA_TOKEN_TTL = 21600          # the metadata service's maximum, as the libraries ask
# Refresh when less than this is left, as alibabacloud-credentials (Python) does for the ECS
# RAM role (its stale time is expiration - 15 min); a third of the lifetime for credentials
# that live less than 45 minutes (tests, emulators).
REFRESH_BEFORE_EXPIRY = 15 * 60
REFRESH_RETRY_FIRST, REFRESH_RETRY_MAX = 1.0, 60.0   # backoff after a failed refresh, seconds
MAX_REFRESH_WAIT = 3600.0           # a far-future Expiration must not overflow a wait
MIN_TOKEN_SECONDS = 10              # a token that would live less than this is not issued
_EXPIRATION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


@dataclasses.dataclass(frozen=True)
class Credentials:
    """One set of keys; ``expiration`` in Unix seconds, None for keys that do not expire."""

    access_key_id: str
    access_key_secret: str = dataclasses.field(repr=False)
    security_token: Optional[str] = dataclasses.field(default=None, repr=False)
    expiration: Optional[float] = None


def static_credentials(config: Config) -> Credentials:
    return Credentials(config.access_key_id, config.access_key_secret, config.security_token)


def _rpc_quote(text: str) -> str:
    """RFC 3986 percent-encoding as the RPC signature wants it: space is %20, '*' is %2A."""
    return urllib.parse.quote(text, safe="-_.~")


def rpc_signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """Alibaba Cloud RPC signature v1.0 (HMAC-SHA1): sorted, percent-encoded parameters,
    StringToSign = METHOD&%2F&percentEncode(query), key = secret + '&'."""
    query = "&".join("%s=%s" % (_rpc_quote(k), _rpc_quote(v)) for k, v in sorted(params.items()))
    string_to_sign = "%s&%s&%s" % (method, _rpc_quote("/"), _rpc_quote(query))
    digest = hmac.new((secret + "&").encode("utf-8"), string_to_sign.encode("utf-8"),
                      hashlib.sha1).digest()
    return b64encode_text(digest)


def parse_expiration(text) -> float:
    if not isinstance(text, str) or not _EXPIRATION.fullmatch(text):
        raise CredentialsError("malformed Expiration")
    try:  # the pattern admits 2031-02-30 and 24:61: strptime has the last word
        moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise CredentialsError("malformed Expiration") from None
    return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


def credentials_from_json(document, source: str) -> Credentials:
    """Strictly: an object whose keys are printable ASCII and whose Expiration is UTC."""
    if not isinstance(document, dict):
        raise CredentialsError("%s answered something other than a JSON object" % source)
    values = [document.get(name) for name in ("AccessKeyId", "AccessKeySecret", "SecurityToken")]
    if not all(isinstance(v, str) and _CREDENTIAL.fullmatch(v) for v in values):
        raise CredentialsError("%s answered credentials with a missing or malformed field"
                               % source)
    return Credentials(values[0], values[1], values[2],
                       parse_expiration(document.get("Expiration")))


def _json_answer(answer: Answer, source: str):
    try:
        return json.loads(answer.body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise CredentialsError("%s answered HTTP %d with a body that is not JSON"
                               % (source, answer.status)) from None


def _refuse_constant(name):
    raise ValueError("JSON constant %s" % name)


def endpoint(url: str) -> tuple:
    """(scheme, host, port, path with query) of a configured service URL."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    return parts.scheme, parts.hostname, port, (parts.path or "/") + (
        "?" + parts.query if parts.query else "")


def _fetch_service(url: str, source: str, **request) -> Answer:
    scheme, host, port, path = endpoint(url)
    try:
        return fetch(scheme, host, port, request.pop("target", path),
                     timeout=CREDENTIALS_FETCH_TIMEOUT, max_bytes=MAX_CREDENTIALS_RESPONSE,
                     **request)
    except FetchFailed as exc:
        raise CredentialsError("%s: %s" % (source, exc)) from None


def sts_call(config: Config, params: dict, secret: Optional[str]) -> Credentials:
    """One STS action; signed (RPC v1.0) when ``secret`` is given, anonymous otherwise."""
    params = dict(params, Format="JSON", Version=STS_API_VERSION,
                  Timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  RoleSessionName=config.role_session_name,
                  DurationSeconds=str(STS_DURATION_SECONDS))
    if config.role_policy == "auto":
        params["Policy"] = role_session_policy(config)
    if secret is not None:
        params.update(SignatureMethod="HMAC-SHA1", SignatureVersion="1.0",
                      SignatureNonce=uuid.uuid4().hex)
        params["Signature"] = rpc_signature("POST", params, secret)
    body = urllib.parse.urlencode(params, quote_via=urllib.parse.quote).encode("ascii")
    answer = _fetch_service(config.sts_endpoint, "STS", method="POST", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "oss-appserver"})
    document = _json_answer(answer, "STS")
    if answer.status != 200 or not isinstance(document, dict) or "Credentials" not in document:
        code = document.get("Code") if isinstance(document, dict) else None
        # The Code names the problem; the Message may echo the string to sign: left out.
        raise CredentialsError("STS %s failed: HTTP %d %s" % (
            params["Action"], answer.status, printable(str(code), 80) if code else ""))
    return credentials_from_json(document["Credentials"], "STS")


def role_session_policy(config: Config) -> str:
    """The session policy for OSS_ROLE_POLICY=auto: what this server itself needs (PutObject
    to sign uploads, GetObject to confirm them), on the upload folder only, cut at {user}."""
    folder = config.upload_dir.partition(USER_PLACEHOLDER)[0]
    return json.dumps({"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": ["oss:PutObject", "oss:GetObject"],
        "Resource": ["acs:oss:*:*:%s/%s*" % (config.bucket, folder)]}]},
        separators=(",", ":"))


def fetch_assumed_role(config: Config) -> Credentials:
    return sts_call(config, {"Action": "AssumeRole", "RoleArn": config.role_arn,
                             "AccessKeyId": config.access_key_id}, config.access_key_secret)


def fetch_oidc_role(config: Config) -> Credentials:
    try:  # read afresh at each refresh: the platform rotates the file
        with open(config.oidc_token_file, encoding="utf-8") as f:
            token = f.read(20001).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError("OIDC token file unreadable: %s" % type(exc).__name__) from None
    if not 4 <= len(token) <= 20000:
        raise CredentialsError("OIDC token file is empty or not a token")
    return sts_call(config, {"Action": "AssumeRoleWithOIDC", "RoleArn": config.role_arn,
                             "OIDCProviderArn": config.oidc_provider_arn, "OIDCToken": token},
                    None)


def fetch_ecs_role(config: Config) -> Credentials:
    """The instance RAM role from the metadata service: hardened mode (a token from PUT, then
    GETs carrying it), falling back to normal mode unless ALIBABA_CLOUD_IMDSV1_DISABLED."""
    headers = {}
    try:
        answer = _fetch_service(config.ecs_metadata_endpoint, "metadata service", method="PUT",
                                target="/latest/api/token", headers={
                                    "X-aliyun-ecs-metadata-token-ttl-seconds":
                                        str(METADATA_TOKEN_TTL)})
        if answer.status != 200 or not _CREDENTIAL.fullmatch(answer.body.decode("latin-1")):
            raise CredentialsError("metadata token request answered HTTP %d" % answer.status)
        headers["X-aliyun-ecs-metadata-token"] = answer.body.decode("ascii")
    except CredentialsError:
        if config.imdsv1_disabled:
            raise
    base = "/latest/meta-data/ram/security-credentials/"
    role = config.ecs_role
    if not role:
        role = _metadata_text(config, base, headers).strip()
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", role):
            raise CredentialsError("metadata service lists no usable RAM role")
    document = _json_answer(_metadata_get(config, base + role, headers), "metadata service")
    if not isinstance(document, dict) or document.get("Code") != "Success":
        raise CredentialsError("metadata service answered a Code other than Success")
    return credentials_from_json(document, "metadata service")


def _metadata_get(config: Config, target: str, headers: dict) -> Answer:
    answer = _fetch_service(config.ecs_metadata_endpoint, "metadata service", target=target,
                            headers=headers)
    if answer.status != 200:
        raise CredentialsError("metadata service answered HTTP %d" % answer.status)
    return answer


def _metadata_text(config: Config, target: str, headers: dict) -> str:
    try:
        return _metadata_get(config, target, headers).body.decode("ascii")
    except UnicodeDecodeError:
        raise CredentialsError("metadata service answered a role name that is not ASCII") \
            from None


def fetch_credentials_uri(config: Config) -> Credentials:
    answer = _fetch_service(config.credentials_uri, "credentials URI")
    document = _json_answer(answer, "credentials URI")
    if answer.status != 200 or not isinstance(document, dict) \
            or document.get("Code") != "Success":
        raise CredentialsError("credentials URI answered HTTP %d without Code Success"
                               % answer.status)
    return credentials_from_json(document, "credentials URI")


FETCHERS = {"oidc": fetch_oidc_role, "ram_role": fetch_assumed_role, "ecs": fetch_ecs_role,
            "uri": fetch_credentials_uri}


class CredentialProvider:
    """The current credentials. Static ones are always there; temporary ones come from
    ``fetch`` on a background thread, started lazily once per process ID (so that it also
    runs in workers forked after gunicorn's --preload), and are refreshed before they run low.
    A failed refresh is retried with backoff and jitter while the old keys stay in use.
    """

    def __init__(self, name: str, *, static: Optional[Credentials] = None,
                 fetch: Optional[Callable[[], Credentials]] = None, margin: float = 60.0,
                 clock: Callable[[], float] = time.time, detail: str = ""):
        self.name, self.detail, self.margin, self.clock = name, detail, margin, clock
        self._fetch = fetch
        self._credentials = static
        self._pid = None
        self._stopped = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._ready = threading.Event()
        if static is not None:
            self._ready.set()

    @property
    def refreshes(self) -> bool:
        return self._fetch is not None

    def current(self) -> Optional[Credentials]:
        """Credentials good for at least the margin from now, or None. Never waits."""
        if self._fetch is not None and self._pid != os.getpid():
            self.start()
        credentials = self._credentials
        if credentials is None or (credentials.expiration is not None
                                   and credentials.expiration - self.margin <= self.clock()):
            return None
        return credentials

    def start(self):
        with self._lock:
            if self._fetch is None or self._pid == os.getpid():
                return
            if self._pid is not None:
                self._credentials = None  # a forked worker fetches its own
            self._pid = os.getpid()
            threading.Thread(target=self._refresh_forever, name="credentials-refresh",
                             daemon=True).start()

    def stop(self):
        """End the refresher (the server is stopping); current() keeps the last keys."""
        self._stopped = True
        self._wake.set()

    def wait_ready(self, timeout: float) -> bool:
        self.start()
        return self._ready.wait(timeout)

    def _refresh_forever(self):
        delay = REFRESH_RETRY_FIRST
        while self._pid == os.getpid() and not self._stopped:
            try:
                credentials = self._fetch()
                if credentials.expiration is not None \
                        and credentials.expiration - self.margin <= self.clock():
                    raise CredentialsError("credentials that are already expired")
            except CredentialsError as exc:
                log.warning("%s credentials: %s; retrying in %.0f s", self.name, exc, delay)
                self._wake.wait(delay * random.uniform(0.5, 1.0))
                delay = min(REFRESH_RETRY_MAX, delay * 2)
                continue
            except Exception:
                log.exception("%s credentials: unexpected failure", self.name)
                self._wake.wait(REFRESH_RETRY_MAX)
                continue
            self._credentials, delay = credentials, REFRESH_RETRY_FIRST
            self._ready.set()
            log.info("%s credentials refreshed; they expire in %.0f s", self.name,
                     credentials.expiration - self.clock() if credentials.expiration else 0)
            self._wake.wait(self._seconds_until_refresh(credentials))

    def _seconds_until_refresh(self, credentials: Credentials) -> float:
        if credentials.expiration is None:
            return MAX_REFRESH_WAIT
        left = credentials.expiration - self.clock()
        # Early enough that a refresh (one fetch timeout) completes before tokens would get
        # under MIN_TOKEN_SECONDS, whatever the lifetime.
        keep = max(min(REFRESH_BEFORE_EXPIRY, left / 3),
                   self.margin + MIN_TOKEN_SECONDS + CREDENTIALS_FETCH_TIMEOUT + 5)
        return min(MAX_REFRESH_WAIT, max(REFRESH_RETRY_FIRST, left - keep))


def make_credential_provider(config: Config, clock: Callable[[], float] = time.time):
    if config.credentials not in FETCHERS:  # static, placeholder, or auto left unresolved
        return CredentialProvider("static", static=static_credentials(config),
                                  margin=config.credential_margin, clock=clock)
    detail = {"oidc": config.role_arn, "ram_role": config.role_arn,
              "ecs": config.ecs_role or "(role from the metadata service)",
              "uri": "credentials URI"}[config.credentials]
    return CredentialProvider(config.credentials, margin=config.credential_margin,
                              clock=clock, detail=detail,
                              fetch=functools.partial(FETCHERS[config.credentials], config))


###############################################################################
# 6. Grants ###################################################################
###############################################################################

# Who may upload, where, and how much: a Grant. Tickets prove who asks for a token; grants
# ride in the callback URL, which OSS signs with the callback, and prove that a callback is
# about an upload this server authorized. Both are HMAC-SHA256 under a purpose label, so a
# key reused elsewhere cannot turn another system's tokens into ours.

TICKET_LABEL = "oss-upload-ticket.v1."
GRANT_LABEL = "oss-callback-grant.v1."
GRANT_PREFIX = "v1."
BINDING_KEY_LABEL = b"oss-appserver grant v1"
MAX_TICKET_AHEAD = 24 * 3600   # a ticket that claims to live longer is refused
MAX_TICKET_CHARS = 64 + 1 + 12 + 1 + 43
MAX_GRANT_CHARS = 4096
RATE_LIMIT_KEYS = 10000        # clients remembered by the rate limiter; the oldest go first
TICKET_CACHE_ENTRIES = 4096    # genuine tickets remembered; all are forgotten when it is full
GRANT_CACHE_ENTRIES = 4096     # grants that passed check_grant, likewise
USER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TICKET = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


class Grant(NamedTuple):
    """What one token allows: who (None with OSS_TOKEN_AUTH=none), which folder, how many
    bytes at most (0: no limit), which content types (empty: any)."""

    user: Optional[str]
    folder: str
    max_bytes: int
    content_types: tuple = ()


class TokenRequest(NamedTuple):
    """What an authorizer sees of a token request. ``headers``: lower-case name -> values."""

    method: str
    path: str
    headers: Mapping[str, list]
    peer: str
    now: float


def _mac(key: bytes, label: str, text: str) -> str:
    return b64url_encode(hmac.new(key, (label + text).encode("utf-8"), hashlib.sha256).digest())


def sign_ticket(key: bytes, user: str, expiry: int) -> str:
    """A ticket for ``user`` until ``expiry`` (Unix seconds): what the main application mints."""
    if not USER_NAME.fullmatch(user):
        raise ValueError("user must match [A-Za-z0-9_-]{1,64}")
    payload = "%s.%d" % (user, expiry)
    return payload + "." + _mac(key, TICKET_LABEL, payload)


def unsign_ticket(key: bytes, ticket: str, now: float) -> str:
    """The user a ticket names, or Unauthorized: malformed, forged, expired, or too far ahead."""
    return ticket_user_at(*ticket_claims(key, ticket), now)


def ticket_claims(key: bytes, ticket: str) -> tuple:
    """(user, expiry) of a ticket whose MAC is ours, whatever the time; else Unauthorized."""
    matched = _TICKET.fullmatch(ticket) if len(ticket) <= MAX_TICKET_CHARS else None
    if matched is None:
        raise Unauthorized("sign in to upload: the ticket is malformed")
    user, expiry, mac = matched.groups()
    if not hmac.compare_digest(mac, _mac(key, TICKET_LABEL, "%s.%s" % (user, expiry))):
        raise Unauthorized("sign in to upload: the ticket is not valid")
    return user, int(expiry)


def ticket_user_at(user: str, expiry: int, now: float) -> str:
    """The user of a genuine ticket, if it is valid at ``now``; else Unauthorized."""
    if expiry < now:
        raise Unauthorized("sign in to upload: the ticket has expired")
    if expiry > now + MAX_TICKET_AHEAD:
        raise Unauthorized("sign in to upload: the ticket expires too far ahead")
    return user


def encode_grant(key: bytes, grant: Grant, expiry: int) -> str:
    claims = json_compact({"u": grant.user, "d": grant.folder, "m": grant.max_bytes,
                           "t": list(grant.content_types), "e": expiry})
    payload = b64url_encode(claims)
    return GRANT_PREFIX + payload + "." + _mac(key, GRANT_LABEL, payload)


_GRANT = re.compile(r"v1\.([A-Za-z0-9_-]{1,%d})\.([A-Za-z0-9_-]{43})" % MAX_GRANT_CHARS)


def decode_grant(key: bytes, text: str) -> tuple:
    """(Grant, expiry) from a grant this server issued, or CallbackRejected."""
    matched = _GRANT.fullmatch(text) if len(text) <= MAX_GRANT_CHARS else None
    if matched is None:
        raise CallbackRejected("callback grant is malformed")
    payload, mac = matched.groups()
    if not hmac.compare_digest(mac, _mac(key, GRANT_LABEL, payload)):
        raise CallbackRejected("callback grant is not ours", "callback grant signature "
                                                             "does not match")
    try:
        claims = json.loads(b64url_decode(payload, MAX_GRANT_CHARS))
        grant = Grant(claims["u"], claims["d"], claims["m"], tuple(claims["t"]))
        expiry = claims["e"]
        valid = (type(expiry) is int and type(grant.max_bytes) is int
                 and isinstance(grant.folder, str) and isinstance(grant.user, (str, type(None)))
                 and all(isinstance(t, str) for t in grant.content_types))
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:  # our own MAC over junk: a leaked key or a bug, never a 500
        raise CallbackRejected("callback grant is malformed")
    return grant, expiry


def binding_key(config: Config) -> Optional[bytes]:
    """The grant key: OSS_CALLBACK_SECRET, else HMAC-SHA256(static AccessKey secret,
    "oss-appserver grant v1\n" + bucket) (so replicas and workers share it with nothing more
    to configure), else None (placeholder credentials: the caller picks a random key for this
    process)."""
    if config.callback_secret:
        return config.callback_secret.encode("utf-8")
    if config.placeholder_credentials:
        return None
    # The bucket goes in too: deployments that share an AccessKey (staging and production,
    # say) must not accept each other's grants.
    return hmac.new(config.access_key_secret.encode("utf-8"),
                    BINDING_KEY_LABEL + b"\n" + (config.bucket or "").encode("utf-8"),
                    hashlib.sha256).digest()


def user_folder(config: Config, user: Optional[str]) -> str:
    return config.upload_dir.replace(USER_PLACEHOLDER, user) if user else config.upload_dir


def check_grant(config: Config, grant: Grant) -> Grant:
    """An authorizer's Grant, held to the configuration: no looser than OSS_MAX_UPLOAD_BYTES
    and OSS_ALLOWED_CONTENT_TYPES (no types: the configured ones), its folder under
    OSS_UPLOAD_DIR. ValueError (a 500: the embedder's bug) for anything else."""
    base = config.upload_dir.partition(USER_PLACEHOLDER)[0]
    if grant.user is not None and not (isinstance(grant.user, str)
                                       and USER_NAME.fullmatch(grant.user)):
        raise ValueError("Grant.user must match [A-Za-z0-9_-]{1,64}")
    if not (isinstance(grant.folder, str) and grant.folder.startswith(base)
            and (grant.folder.endswith("/") or not grant.folder)
            and ".." not in grant.folder.split("/") and "{" not in grant.folder
            and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in grant.folder)):
        raise ValueError("Grant.folder must be a folder under OSS_UPLOAD_DIR")
    limit = config.max_upload_bytes
    if type(grant.max_bytes) is not int or not 0 <= grant.max_bytes <= MAX_OBJECT_BYTES \
            or (limit and not 0 < grant.max_bytes <= limit):
        raise ValueError("Grant.max_bytes must be a byte count within OSS_MAX_UPLOAD_BYTES")
    types = grant.content_types or config.allowed_content_types
    if isinstance(types, str) or not all(isinstance(t, str) and _MEDIA_TYPE.fullmatch(t)
                                         for t in types):
        raise ValueError("Grant.content_types must be a sequence of lower-case media types")
    if config.allowed_content_types and not set(types) <= set(config.allowed_content_types):
        raise ValueError("Grant.content_types must lie within OSS_ALLOWED_CONTENT_TYPES")
    return grant._replace(content_types=tuple(types))


def configured_grant(config: Config, user: Optional[str]) -> Grant:
    return Grant(user, user_folder(config, user), config.max_upload_bytes,
                 config.allowed_content_types)


def peer_is_trusted(config: Config, peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in network for network in config.trusted_proxies)


def authorize_none(config: Config) -> Callable[[TokenRequest], Grant]:
    return lambda request: configured_grant(config, None)


def authorize_hmac(config: Config) -> Callable[[TokenRequest], Grant]:
    key = config.token_auth_secret.encode("utf-8")
    # Tickets whose MAC checked out -> their claims. A page asks for a token per file with the
    # same ticket, and the HMAC was a third of a token's cost. Only genuine tickets get in, and
    # their time is checked on every use.
    genuine = {}

    def authorize(request: TokenRequest) -> Grant:
        values = request.headers.get("authorization", [])
        scheme, _, ticket = values[0].strip().partition(" ") if len(values) == 1 else ("", "", "")
        if scheme.lower() != "bearer":
            raise Unauthorized("sign in to upload: send Authorization: Bearer <ticket>")
        ticket = ticket.strip()
        claims = genuine.get(ticket)
        if claims is None:
            claims = ticket_claims(key, ticket)
            if len(genuine) >= TICKET_CACHE_ENTRIES:
                genuine.clear()
            genuine[ticket] = claims
        return configured_grant(config, ticket_user_at(*claims, request.now))
    return authorize


def authorize_header(config: Config) -> Callable[[TokenRequest], Grant]:
    name = config.token_auth_header.lower()

    def authorize(request: TokenRequest) -> Grant:
        # Anyone can send the header; only the proxy's word counts.
        if not peer_is_trusted(config, request.peer):
            raise Unauthorized("sign in to upload: not through the authenticating proxy")
        values = request.headers.get(name, [])
        if len(values) != 1 or not USER_NAME.fullmatch(values[0].strip()):
            raise Unauthorized("sign in to upload: the proxy named no valid user")
        return configured_grant(config, values[0].strip())
    return authorize


AUTHORIZERS = {"none": authorize_none, "hmac": authorize_hmac, "header": authorize_header}


def client_address(config: Config, peer: str, headers: Mapping[str, list]) -> str:
    """Whom to count a token against when there is no user. X-Forwarded-For only counts from a
    trusted proxy, and then its rightmost entry that is not itself a trusted proxy: the
    leftmost entries are whatever the client wrote. IPv6 clients count by their /64."""
    address = peer
    if peer_is_trusted(config, peer):
        hops = [_without_port(h.strip()) for v in headers.get("x-forwarded-for", ())
                for h in v.split(",")]
        # Every hop trusted: the leftmost is still the client's own word, so the peer counts.
        address = next((hop for hop in reversed(hops)
                        if hop and not peer_is_trusted(config, hop)), peer)
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return printable(address, 64)
    if parsed.version == 6 and not parsed.ipv4_mapped:
        return str(ipaddress.ip_network("%s/64" % parsed, strict=False))
    return str(getattr(parsed, "ipv4_mapped", None) or parsed)


def _without_port(hop: str) -> str:
    """'203.0.113.7:1111' and '[2001:db8::1]:1' as their addresses: a port would make every
    connection a client of its own."""
    if hop.startswith("["):
        return hop[1:].partition("]")[0]
    if hop.count(":") == 1:
        return hop.partition(":")[0]
    return hop


class RateLimiter:
    """A token bucket per key, ``count`` per ``period`` seconds, counted in this process.
    Memory is bounded: past ``max_keys`` the least recently seen key is forgotten."""

    def __init__(self, count: int, period: float, *, max_keys: int = RATE_LIMIT_KEYS,
                 clock: Callable[[], float] = time.monotonic):
        self.count, self.period, self.max_keys, self.clock = count, period, max_keys, clock
        self._buckets = collections.OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when ``key`` may go ahead now, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(key, (self.count, now))
            tokens = min(self.count, tokens + (now - at) * self.count / self.period)
            wait = 0.0 if tokens >= 1 else (1 - tokens) * self.period / self.count
            self._buckets[key] = (tokens - 1 if not wait else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


###############################################################################
# 7. Upload policy ############################################################
###############################################################################

V4_ALGORITHM = "OSS4-HMAC-SHA256"


def sign_policy_v1(secret: str, policy_b64: str) -> str:
    """V1: base64(HMAC-SHA1(secret, the base64 policy string)) (OSS PostObject,
    "Signature version 1")."""
    digest = hmac.new(secret.encode("utf-8"), policy_b64.encode("ascii"), hashlib.sha1).digest()
    return b64encode_text(digest)


def v4_signing_key(secret: str, yyyymmdd: str, region: str) -> bytes:
    key = hmac.new(b"aliyun_v4" + secret.encode("utf-8"), yyyymmdd.encode("ascii"),
                   hashlib.sha256).digest()
    for part in (region.encode("ascii"), b"oss", b"aliyun_v4_request"):
        key = hmac.new(key, part, hashlib.sha256).digest()
    return key


def sign_policy_v4(secret: str, yyyymmdd: str, region: str, policy_b64: str) -> str:
    """V4: hex(HMAC-SHA256(signing key, the base64 policy string)) (OSS PostObject,
    "Signature version 4")."""
    key = v4_signing_key(secret, yyyymmdd, region)
    return hmac.new(key, policy_b64.encode("ascii"), hashlib.sha256).hexdigest()


def grant_callback_url(url: str, grant: str) -> str:
    """``url`` with grant=G added, the rest of its query kept byte for byte: OSS signs the
    callback URL as it calls it, so the grant cannot be changed on the way."""
    if "?" not in url:
        return url + "?grant=" + grant
    return url + ("grant=" if url.endswith(("?", "&")) else "&grant=") + grant


def callback_param(config: Config, grant: Optional[str] = None) -> Optional[str]:
    """The base64 ``callback`` form field, in the sample's json.dumps layout and key order."""
    if not config.callback_url:
        return None
    url = config.callback_url
    if grant:
        url = ";".join(grant_callback_url(u, grant) for u in url.split(";"))
    callback = {
        "callbackUrl": url,
        "callbackBody": config.callback_body,
        "callbackBodyType": config.callback_body_type,
    }
    if config.callback_sni and "https://" in config.callback_url:
        callback["callbackSNI"] = True
    return b64encode_text(json.dumps(callback).encode("utf-8"))


def v4_fields(config: Config, now: int, access_key_id: str) -> tuple:
    """(yyyymmdd, the V4 form fields other than the signature)."""
    moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    yyyymmdd = moment.strftime("%Y%m%d")
    return yyyymmdd, {
        "x-oss-signature-version": V4_ALGORITHM,
        "x-oss-credential": "%s/%s/%s/oss/aliyun_v4_request" % (
            access_key_id, yyyymmdd, config.region),
        "x-oss-date": moment.strftime("%Y%m%dT%H%M%SZ"),
    }


def issue_token(config: Config, now: Optional[float] = None, grant: Optional[Grant] = None,
                binding_key: Optional[bytes] = None,
                credentials: Optional[Credentials] = None) -> dict:
    """The upload token for one browser: policy, signature and callback (the response
    format of Alibaba's sample appserver.py).

    ``grant`` says who uploads where (default: the configured folder and limits, no user).
    With callback binding on and a ``binding_key``, the callback URL carries the signed grant.
    ``expire`` and the policy's ``expiration`` name the same UTC second. Everything the
    bucket must enforce is a policy condition, so a client cannot loosen it.
    """
    now = int(time.time() if now is None else now)
    credentials = credentials or static_credentials(config)
    expire = now + config.expire_seconds
    if credentials.expiration is not None:
        # OSS checks the STS token when the upload arrives: never outlive the keys.
        expire = min(expire, int(credentials.expiration - config.credential_margin))
    grant = grant or configured_grant(config, None)
    conditions = [["starts-with", "$key", grant.folder]]
    if grant.max_bytes:
        conditions.append(["content-length-range", 0, grant.max_bytes])
    if config.bucket:
        conditions.append({"bucket": config.bucket})
    if grant.content_types:
        # x-oss-content-type outranks the form's Content-Type and the file part's type (OSS
        # PostObject, form elements), and an absent field fails the condition.
        conditions.append(["in", "$x-oss-content-type", list(grant.content_types)])
    yyyymmdd, extra = (v4_fields(config, now, credentials.access_key_id)
                       if config.signature_version == "v4" else ("", {}))
    if credentials.security_token:
        extra["x-oss-security-token"] = credentials.security_token
    conditions.extend({name: value} for name, value in extra.items())
    bound = config.callback_binding and binding_key and config.callback_url
    callback = callback_param(config, encode_grant(binding_key, grant, expire) if bound else None)
    if callback and config.pin_callback:
        # Without this condition a client could swap callbackUrl/callbackBody: OSS checks only
        # what the policy names.
        conditions.append({"callback": callback})

    policy = json.dumps({"expiration": utc_iso8601(expire), "conditions": conditions}).strip()
    policy_b64 = b64encode_text(policy.encode("utf-8"))
    token = {"accessid": credentials.access_key_id, "host": config.host, "policy": policy_b64}
    if config.signature_version == "v4":
        token.update(extra)
        token["x-oss-signature"] = sign_policy_v4(credentials.access_key_secret, yyyymmdd,
                                                  config.region, policy_b64)
    else:
        token["signature"] = sign_policy_v1(credentials.access_key_secret, policy_b64)
        token.update(extra)
    token["expire"] = expire
    token["dir"] = grant.folder
    if callback:
        token["callback"] = callback
    if grant.content_types:
        token["contentTypes"] = list(grant.content_types)
    if config.download_expire_seconds:
        token["downloads"] = True
    token.update(url=config.host, method="POST",
                 fields=post_form_fields(token, credentials, extra, callback))
    return token


def post_form_fields(token: dict, credentials: Credentials, extra: dict,
                     callback: Optional[str]) -> dict:
    """Every PostObject form field but ``key`` and ``file``, for V1, V4 and STS alike, so a
    client needs no version branch. success_action_status 200: OSS then relays the
    callback's answer to the browser (with 204 it would drop it)."""
    fields = {"policy": token["policy"]}
    if "x-oss-signature" in token:
        fields.update((k, v) for k, v in extra.items() if k != "x-oss-security-token")
        fields["x-oss-signature"] = token["x-oss-signature"]
    else:
        fields.update(OSSAccessKeyId=credentials.access_key_id, signature=token["signature"])
    if credentials.security_token:
        fields["x-oss-security-token"] = credentials.security_token
    fields["success_action_status"] = "200"
    if callback:
        fields["callback"] = callback
    return fields


###############################################################################
# 8. OSS requests #############################################################
###############################################################################

# The server's own requests to OSS: a HEAD that confirms an upload, the bucket reads and the
# CORS write of --check and --apply-cors, and presigned download links. Signed as the OSS
# developer reference says ("Include a V1 signature in the Authorization header", "(Recommended)
# Include a V4 signature in the Authorization header", "Add signatures to URLs", "Add a V4
# signature to a URL"), and sent through fetch(): no proxies, no redirects, a deadline, a cap.

OSS_V4_SCOPE = "%s/%s/oss/aliyun_v4_request"   # date, region
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_OSS_RESPONSE_BYTES = 1024 * 1024
MAX_OBJECT_KEY_BYTES = 1023     # OSS object names are 1 to 1023 bytes of UTF-8
# Query parameters that V1 signs (the CanonicalizedResource's sub-resources); V4 signs every
# parameter. Only these ever leave this server.
V1_SUBRESOURCES = frozenset({
    "acl", "bucketInfo", "cors", "location", "objectMeta", "security-token", "versionId",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires"})


class OssAnswer(NamedTuple):
    """An OSS answer: status, headers, body, and the error Code and Message OSS gave (from the
    XML body, or for a HEAD, which has none, from the base64 XML of x-oss-err)."""

    status: int
    headers: Any
    body: bytes
    code: str = ""
    message: str = ""


def oss_quote(text: str, safe: str = "") -> str:
    """RFC 3986 percent-encoding, upper-case hex; ``safe`` is kept as well (V4's canonical
    URI keeps '/', its query does not)."""
    return urllib.parse.quote(text, safe=safe)


def v1_string_to_sign(method: str, bucket: str, key: str, query: Mapping[str, Optional[str]],
                      headers: Mapping[str, str], date: str) -> str:
    """VERB, Content-MD5, Content-Type, Date (or an Expires time), the x-oss-* headers sorted,
    then the resource /bucket/key with its sub-resources: the object name is not encoded."""
    lower = {name.lower(): value for name, value in headers.items()}
    oss_headers = "".join("%s:%s\n" % (name, lower[name].strip()) for name in sorted(lower)
                          if name.startswith("x-oss-"))
    subresources = sorted((name, value) for name, value in query.items()
                          if name in V1_SUBRESOURCES)
    resource = "/%s/%s" % (bucket, key)
    if subresources:
        resource += "?" + "&".join(name + "=" + value if value else name
                                   for name, value in subresources)
    return "\n".join([method, lower.get("content-md5", ""), lower.get("content-type", ""),
                      date, oss_headers + resource])


def v4_canonical_request(method: str, bucket: str, key: str,
                         query: Mapping[str, Optional[str]], headers: Mapping[str, str]) -> str:
    """VERB, the URI /bucket/key (encoded, '/' kept), every query parameter encoded and sorted
    (a parameter without a value bare, with no '='), the signed headers (content-type,
    content-md5 and x-oss-*), an empty AdditionalHeaders line, and the payload hash."""
    lower = {name.lower(): value.strip() for name, value in headers.items()}
    signed = sorted(name for name in lower
                    if name.startswith("x-oss-") or name in ("content-type", "content-md5"))
    encoded = sorted((oss_quote(name), oss_quote(value) if value else "")
                     for name, value in query.items())
    return "\n".join([method, oss_quote("/%s/%s" % (bucket, key), safe="/"),
                      "&".join(name + "=" + value if value else name for name, value in encoded),
                      "".join("%s:%s\n" % (name, lower[name]) for name in signed), "",
                      lower.get("x-oss-content-sha256", UNSIGNED_PAYLOAD)])


def v4_string_to_sign(canonical_request: str, x_oss_date: str, scope: str) -> str:
    return "\n".join([V4_ALGORITHM, x_oss_date, scope,
                      hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()])


def _v4_signature(secret: str, region: str, moment: datetime.datetime, canonical: str) -> tuple:
    """(scope, x-oss-date, hex signature)."""
    yyyymmdd, x_oss_date = moment.strftime("%Y%m%d"), moment.strftime("%Y%m%dT%H%M%SZ")
    scope = OSS_V4_SCOPE % (yyyymmdd, region)
    signature = hmac.new(v4_signing_key(secret, yyyymmdd, region),
                         v4_string_to_sign(canonical, x_oss_date, scope).encode("utf-8"),
                         hashlib.sha256).hexdigest()
    return scope, x_oss_date, signature


def _utc(now: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(now), datetime.timezone.utc)


def sign_headers(version: str, credentials: Credentials, region: Optional[str], method: str,
                 bucket: str, key: str, query: Mapping[str, Optional[str]],
                 headers: Mapping[str, str], now: float) -> dict:
    """``headers`` plus what a signed request carries: Date (V1) or x-oss-date and
    x-oss-content-sha256 (V4), x-oss-security-token with STS credentials, Authorization."""
    signed = dict(headers)
    if credentials.security_token:
        signed["x-oss-security-token"] = credentials.security_token
    if version == "v4":
        moment = _utc(now)
        signed["x-oss-date"] = moment.strftime("%Y%m%dT%H%M%SZ")
        signed["x-oss-content-sha256"] = UNSIGNED_PAYLOAD
        canonical = v4_canonical_request(method, bucket, key, query, signed)
        scope, _, signature = _v4_signature(credentials.access_key_secret, region, moment,
                                            canonical)
        signed["Authorization"] = "%s Credential=%s/%s, Signature=%s" % (
            V4_ALGORITHM, credentials.access_key_id, scope, signature)
        return signed
    signed["Date"] = email.utils.formatdate(int(now), usegmt=True)
    digest = hmac.new(credentials.access_key_secret.encode("utf-8"),
                      v1_string_to_sign(method, bucket, key, query, signed,
                                        signed["Date"]).encode("utf-8"), hashlib.sha1).digest()
    signed["Authorization"] = "OSS %s:%s" % (credentials.access_key_id, b64encode_text(digest))
    return signed


def presign_query(version: str, credentials: Credentials, region: Optional[str], method: str,
                  bucket: str, key: str, now: float, expires_in: int) -> str:
    """The query string of a presigned URL, valid ``expires_in`` seconds from ``now``: V1's
    OSSAccessKeyId, Expires (absolute) and Signature, or V4's x-oss-* parameters (relative
    x-oss-expires); the STS token goes first, and is signed."""
    params = {}
    if version == "v4":
        moment = _utc(now)
        if credentials.security_token:
            params["x-oss-security-token"] = credentials.security_token
        params["x-oss-date"] = moment.strftime("%Y%m%dT%H%M%SZ")
        params["x-oss-expires"] = str(expires_in)
        params["x-oss-signature-version"] = V4_ALGORITHM
        params["x-oss-credential"] = "%s/%s" % (credentials.access_key_id, OSS_V4_SCOPE % (
            moment.strftime("%Y%m%d"), region))
        canonical = v4_canonical_request(method, bucket, key, params, {})
        params["x-oss-signature"] = _v4_signature(credentials.access_key_secret, region,
                                                  moment, canonical)[2]
    else:
        expires = str(int(now) + expires_in)
        if credentials.security_token:
            params["security-token"] = credentials.security_token
        digest = hmac.new(credentials.access_key_secret.encode("utf-8"),
                          v1_string_to_sign(method, bucket, key, params, {}, expires)
                          .encode("utf-8"), hashlib.sha1).digest()
        params.update(OSSAccessKeyId=credentials.access_key_id, Expires=expires,
                      Signature=b64encode_text(digest))
    return "&".join("%s=%s" % (name, oss_quote(value)) for name, value in params.items())


def object_url(config: Config, key: str) -> str:
    """The object's URL on the bucket host (OSS_HOST), '/' kept in the path."""
    return "%s/%s" % (config.host, oss_quote(key, safe="/"))


_XML_DECLARED_ENCODING = re.compile(r"<\?xml[^>]*encoding=[\"']([^\"']*)[\"']")


def parse_oss_xml(body: bytes):
    """The root element of an XML document from OSS, or ValueError. Only UTF-8 without a
    DOCTYPE: OSS sends nothing else, and a DOCTYPE's entities (in any encoding: a byte search
    misses UTF-16) are how XML parsers are made to blow up."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the answer is not UTF-8 XML") from None
    declared = _XML_DECLARED_ENCODING.match(text.lstrip("\ufeff"))
    if "<!DOCTYPE" in text or "<!ENTITY" in text or (
            declared and declared.group(1).lower() not in ("utf-8", "utf8")):
        raise ValueError("the answer holds a DOCTYPE or another encoding")
    try:
        return xml.etree.ElementTree.fromstring(body)
    except xml.etree.ElementTree.ParseError:
        raise ValueError("the answer is not XML") from None


def _xml_text(body: bytes, *paths: str) -> list:
    """The text of each ``path`` in an OSS XML document; "" each for anything else."""
    try:
        root = parse_oss_xml(body)
    except ValueError:
        return ["" for _ in paths]
    return [(root.findtext(path) or "").strip() for path in paths]


def oss_error(status: int, headers, body: bytes) -> tuple:
    """(Code, Message) of an OSS error answer: the XML body, or for a HEAD (which has no
    body) the base64 XML that OSS puts in x-oss-err."""
    if not body and headers.get("x-oss-err"):
        try:
            body = base64.b64decode(headers.get("x-oss-err"), validate=True)
        except (binascii.Error, ValueError):
            body = b""
    if status < 300 and not body.startswith(b"<?xml"):
        return "", ""
    code, message = _xml_text(body, "Code", "Message") if body else ("", "")
    return printable(code, 64), printable(message, 300)


def oss_request(config: Config, credentials: Credentials, method: str, key: str = "", *,
                query: Optional[Mapping[str, Optional[str]]] = None,
                headers: Optional[Mapping[str, str]] = None, body: Optional[bytes] = None,
                timeout: float, now: Optional[float] = None,
                max_bytes: int = MAX_OSS_RESPONSE_BYTES) -> OssAnswer:
    """One signed request to the bucket at OSS_HOST, in OSS_SIGNATURE_VERSION, or
    FetchFailed. ``key`` "" is the bucket itself (``query`` then names the sub-resource)."""
    query = dict(query or {})
    parts = urllib.parse.urlsplit(config.host)
    signed = sign_headers(config.signature_version, credentials, config.region, method,
                          config.bucket, key, query, headers or {},
                          time.time() if now is None else now)
    target = "/" + oss_quote(key, safe="/")
    if query:
        target += "?" + "&".join(oss_quote(name) + ("=" + oss_quote(value) if value else "")
                                 for name, value in query.items())
    answer = fetch(parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme],
                   target, method=method, headers=signed, body=body, timeout=timeout,
                   max_bytes=max_bytes)
    return OssAnswer(answer.status, answer.headers, answer.body,
                     *oss_error(answer.status, answer.headers, answer.body))


# Bucket CORS (PutBucketCors, GetBucketCors): a browser's PostObject needs a rule that admits
# the page's origin and POST, and exposes ETag and x-oss-request-id, or clients such as Uppy
# cannot read the answer. OSS applies the first rule that matches origin, method and headers.

UPLOAD_EXPOSE_HEADERS = ("ETag", "x-oss-request-id")
CORS_MAX_AGE = "600"


def parse_cors_configuration(body: bytes):
    """The CORSConfiguration element of a GetBucketCors answer, or ValueError."""
    root = parse_oss_xml(body)
    if root.tag != "CORSConfiguration":
        raise ValueError("the answer is not a CORSConfiguration")
    return root


def cors_origin_matches(pattern: str, origin: str) -> bool:
    """An AllowedOrigin with at most one '*', which stands for any run of characters."""
    head, star, tail = pattern.partition("*")
    if not star:
        return pattern == origin
    return (len(origin) >= len(head) + len(tail) and origin.startswith(head)
            and origin.endswith(tail))


def _texts(rule, tag: str) -> list:
    return [(element.text or "").strip() for element in rule.findall(tag)]


def upload_cors_rule(root, origin: str):
    """The rule OSS applies to a POST from ``origin``: the first that admits both; or None."""
    for rule in root.findall("CORSRule"):
        if any(cors_origin_matches(o, origin) for o in _texts(rule, "AllowedOrigin")) \
                and "POST" in [m.upper() for m in _texts(rule, "AllowedMethod")]:
            return rule
    return None


def cors_upload_problem(root, origin: str) -> Optional[str]:
    """None when the bucket's rules let a page at ``origin`` upload and read the answer;
    else what is missing."""
    rule = upload_cors_rule(root, origin)
    if rule is None:
        return "no CORS rule admits POST from %s" % origin
    exposed = {h.lower() for h in _texts(rule, "ExposeHeader")}
    missing = [h for h in UPLOAD_EXPOSE_HEADERS if h.lower() not in exposed]
    if missing:
        return "the rule for %s does not expose %s" % (origin, ", ".join(missing))
    return None


def cors_with_upload_rule(root, origin: str):
    """A copy of the configuration that admits uploads from ``origin``: the first rule that
    matches ``origin`` and POST gains the expose headers it lacks, or, with none, a rule of
    ours goes first. Every other rule and ResponseVary stay as they are."""
    root = copy.deepcopy(root)
    rule = upload_cors_rule(root, origin)
    if rule is None:
        rule = xml.etree.ElementTree.Element("CORSRule")
        for tag, value in (("AllowedOrigin", origin), ("AllowedMethod", "POST"),
                           ("AllowedHeader", "*")) + tuple(
                               ("ExposeHeader", h) for h in UPLOAD_EXPOSE_HEADERS) + (
                           ("MaxAgeSeconds", CORS_MAX_AGE),):
            xml.etree.ElementTree.SubElement(rule, tag).text = value
        root.insert(0, rule)
        return root
    exposed = {h.lower() for h in _texts(rule, "ExposeHeader")}
    at = next((i for i, child in enumerate(rule) if child.tag == "MaxAgeSeconds"), len(rule))
    for header in UPLOAD_EXPOSE_HEADERS:
        if header.lower() not in exposed:
            element = xml.etree.ElementTree.Element("ExposeHeader")
            element.text = header
            rule.insert(at, element)
            at += 1
    return root


def cors_xml(root) -> bytes:
    root = copy.deepcopy(root)
    xml.etree.ElementTree.indent(root)
    return xml.etree.ElementTree.tostring(root, encoding="UTF-8", xml_declaration=True)


def check_object_key(key: str) -> str:
    """An object name a client may ask about, or InvalidArgument: 1 to 1023 bytes of UTF-8,
    no control characters, no '.' or '..' segment (a path a proxy or SDK could normalize into
    another folder)."""
    if not key or len(key.encode("utf-8", "surrogatepass")) > MAX_OBJECT_KEY_BYTES:
        raise InvalidArgument("key must be 1 to %d bytes" % MAX_OBJECT_KEY_BYTES)
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise InvalidArgument("key holds control characters")
    if key.startswith("/") or "\\" in key or any(s in (".", "..") for s in key.split("/")):
        raise InvalidArgument("key must not start with '/' or hold a '.' or '..' segment or "
                              "a backslash")
    return key


###############################################################################
# 9. PEM/DER ##################################################################
###############################################################################

class PublicKey(NamedTuple):
    n: int
    e: int

    @property
    def bits(self) -> int:
        return self.n.bit_length()


MIN_KEY_BITS, MAX_KEY_BITS = 512, 8192
MAX_PEM_BYTES = 16 * 1024
# AlgorithmIdentifier { rsaEncryption, NULL }: anything else (PSS, EC, absent NULL) is refused.
RSA_ALGORITHM_IDENTIFIER = bytes.fromhex("300d" "06092a864886f70d010101" "0500")
_PEM_BLOCK = re.compile(
    rb"\A\s*-----BEGIN (PUBLIC KEY|RSA PUBLIC KEY)-----\r?\n"
    rb"([A-Za-z0-9+/=\r\n]+?)"
    rb"-----END \1-----\s*\Z")


def der_read(data: bytes, tag: int):
    """Read one DER element with the given tag; returns (content, rest).

    Strict DER (X.690 10.1): definite, minimal lengths only. Lax length decoding is what let
    BERserk (CVE-2014-1568) hide bytes from validation.
    """
    if len(data) < 2:
        raise KeyFormatError("truncated DER: element header missing")
    if data[0] != tag:
        raise KeyFormatError("expected DER tag 0x%02x, found 0x%02x" % (tag, data[0]))
    first = data[1]
    if first < 0x80:
        length, offset = first, 2
    elif first == 0x80:
        raise KeyFormatError("indefinite DER length")
    else:
        count = first & 0x7F
        if count > 4:
            raise KeyFormatError("DER length of %d bytes is too long" % count)
        if len(data) < 2 + count:
            raise KeyFormatError("truncated DER length")
        length = int.from_bytes(data[2:2 + count], "big")
        if data[2] == 0 or length < 0x80:
            raise KeyFormatError("non-minimal DER length")
        offset = 2 + count
    end = offset + length
    if end > len(data):
        raise KeyFormatError("DER length runs past the end of the data")
    return data[offset:end], data[end:]


def der_read_integer(data: bytes):
    """Read a positive, minimally encoded INTEGER; returns (value, rest)."""
    content, rest = der_read(data, 0x02)
    if not content:
        raise KeyFormatError("empty DER INTEGER")
    if content[0] & 0x80:
        raise KeyFormatError("negative DER INTEGER")
    if len(content) > 1 and content[0] == 0 and not content[1] & 0x80:
        raise KeyFormatError("DER INTEGER with a redundant leading zero")
    return int.from_bytes(content, "big"), rest


def _expect_end(rest: bytes, where: str):
    if rest:
        raise KeyFormatError("%d trailing bytes after %s" % (len(rest), where))


def parse_rsa_public_key_der(der: bytes) -> PublicKey:
    """PKCS#1 RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }."""
    body, rest = der_read(der, 0x30)
    _expect_end(rest, "RSAPublicKey")
    n, body = der_read_integer(body)
    e, body = der_read_integer(body)
    _expect_end(body, "the RSAPublicKey integers")
    return PublicKey(n, e)


def parse_subject_public_key_info_der(der: bytes) -> PublicKey:
    """SubjectPublicKeyInfo ::= SEQUENCE { AlgorithmIdentifier, BIT STRING (RSAPublicKey) }."""
    body, rest = der_read(der, 0x30)
    _expect_end(rest, "SubjectPublicKeyInfo")
    algorithm, body = der_read(body, 0x30)
    if algorithm != RSA_ALGORITHM_IDENTIFIER[2:]:
        raise KeyFormatError("not an rsaEncryption key with NULL parameters")
    bits, body = der_read(body, 0x03)
    _expect_end(body, "the subjectPublicKey BIT STRING")
    if not bits or bits[0] != 0:
        raise KeyFormatError("BIT STRING with unused bits")
    return parse_rsa_public_key_der(bits[1:])


def check_public_key(key: PublicKey) -> PublicKey:
    """Key sanity (BoringSSL's rsa_check_public_key). Bounding n and e bounds the cost of
    one verify: a 4096-bit exponent would make pow() take a tenth of a second."""
    if not MIN_KEY_BITS <= key.bits <= MAX_KEY_BITS:
        raise KeyFormatError("RSA modulus of %d bits is outside %d..%d"
                             % (key.bits, MIN_KEY_BITS, MAX_KEY_BITS))
    if not key.n & 1:
        raise KeyFormatError("RSA modulus is even")
    if not (3 <= key.e < 2 ** 32 and key.e & 1):
        raise KeyFormatError("RSA public exponent must be odd and 3 <= e < 2^32")
    return key


def load_public_key(data: bytes) -> PublicKey:
    """Load an RSA public key: PEM ``PUBLIC KEY`` or ``RSA PUBLIC KEY``, or the DER of either."""
    if not isinstance(data, (bytes, bytearray)):
        raise KeyFormatError("key data must be bytes")
    data = bytes(data)
    if len(data) > MAX_PEM_BYTES:
        raise KeyFormatError("key data larger than %d bytes" % MAX_PEM_BYTES)
    if data.lstrip().startswith(b"-----BEGIN"):
        match = _PEM_BLOCK.match(data)
        if not match:
            raise KeyFormatError("not exactly one PEM PUBLIC KEY or RSA PUBLIC KEY block")
        body = re.sub(rb"\r?\n", b"", match.group(2))
        try:
            der = strict_b64decode(body.decode("ascii"), MAX_PEM_BYTES)
        except ValueError:
            raise KeyFormatError("PEM body is not valid base64") from None
        pkcs1 = match.group(1) == b"RSA PUBLIC KEY"
    else:
        der = data
        # SubjectPublicKeyInfo starts with a SEQUENCE, RSAPublicKey with an INTEGER.
        inner, _ = der_read(der, 0x30)
        pkcs1 = inner[:1] == b"\x02"
    key = parse_rsa_public_key_der(der) if pkcs1 else parse_subject_public_key_info_der(der)
    return check_public_key(key)


###############################################################################
# 10. RSA #####################################################################
###############################################################################

# DER DigestInfo prefixes, NULL parameters included (RFC 8017 9.2 note 1). OSS signs with
# the NULL form; the absent-NULL form is refused, as Go and BoringSSL do.
DIGEST_INFO_PREFIXES = {
    "md5": bytes.fromhex("3020300c06082a864886f70d020505000410"),
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# The constructors themselves: hashlib.new looks the name up on every call.
_HASHES = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha224": hashlib.sha224,
           "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def rsa_verify(key: PublicKey, message: bytes, signature: bytes, hash_name: str = "md5") -> bool:
    """RSASSA-PKCS1-v1_5 verification (RFC 8017 8.2.2) by encode-and-compare.

    The expected block is built from the caller's hash and compared whole; the decrypted block
    is never parsed. Parsing it is how every PKCS#1 v1.5 forgery on record worked (BB'06,
    python-rsa CVE-2016-1494, node-forge CVE-2022-24771). The hash is pinned by the caller,
    never read from the signature. Returns False for any bad signature; raises ValueError
    only for an unknown ``hash_name``.
    """
    prefix = DIGEST_INFO_PREFIXES.get(hash_name)
    if prefix is None:
        raise ValueError("unsupported hash for RSA verification: %r" % (hash_name,))
    size = (key.n.bit_length() + 7) // 8
    # Length first: integer conversion would ignore prepended zeros (CVE-2020-13757).
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != size:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:  # s + k*n would otherwise verify too (a bug once in RustCrypto/RSA, #272)
        return False
    padded = _emsa_pkcs1_v15_prefix(size, hash_name)
    if padded is None:
        return False
    expected = padded + _HASHES[hash_name](message, usedforsecurity=False).digest()
    return hmac.compare_digest(pow(s, key.e, key.n).to_bytes(size, "big"), expected)


@functools.lru_cache(maxsize=32)  # one key size and hash per OSS key: built once, not per call
def _emsa_pkcs1_v15_prefix(size: int, hash_name: str) -> Optional[bytes]:
    """00 01 FF..FF 00 DigestInfo-prefix: EMSA-PKCS1-v1_5 (RFC 8017 9.2) up to the digest,
    for a ``size``-byte modulus; None when fewer than 8 bytes of padding fit."""
    prefix = DIGEST_INFO_PREFIXES[hash_name]
    padding = size - len(prefix) - _HASHES[hash_name](usedforsecurity=False).digest_size - 3
    if padding < 8:
        return None
    return b"\x00\x01" + b"\xff" * padding + b"\x00" + prefix


###############################################################################
# 11. Key trust ###############################################################
###############################################################################

OSS_CALLBACK_KEY_URL = "http://gosspublic.alicdn.com/callback_pub_key_v1.pem"
# OSS's published callback key (OSS PostObject callback documentation): public data. Its
# 512-bit size is OSS's choice, so it is trusted by pin, never by size; every other key must
# be 2048 bits or more.
OSS_CALLBACK_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKs/JBGzwUB2aVht4crBx3oIPBLNsjGs
C0fTXv+nvlmklvkcolvpvXLTjaxUHR3W9LXxQ2EHXAJfCB+6H2YF1k8CAwEAAQ==
-----END PUBLIC KEY-----
"""
MIN_FETCHED_KEY_BITS = 2048
KEY_FETCH_DEADLINE = 2.0  # OSS gives the whole callback 5 s
MAX_KEY_RESPONSE_BYTES = 16 * 1024
KEY_TTL = 24 * 3600.0
KEY_FAILURE_TTL = 30.0
KEY_CACHE_ENTRIES = 64
KEY_FETCHES_PER_MINUTE = 30
KNOWN_KEY_FETCHES_PER_MINUTE = 10


OSS_CALLBACK_PUBLIC_KEY = load_public_key(OSS_CALLBACK_PUBLIC_KEY_PEM)  # pure: no I/O
EMBEDDED_PUBLIC_KEYS = {
    OSS_CALLBACK_KEY_URL: OSS_CALLBACK_PUBLIC_KEY,
    "https://gosspublic.alicdn.com/callback_pub_key_v1.pem": OSS_CALLBACK_PUBLIC_KEY,
}


def pub_key_url_allowed(url: str, prefixes) -> bool:
    """Whether a decoded x-oss-pub-key-url may be trusted: same scheme, exactly the same host
    (case included: we refuse rather than normalise), same port, path under the prefix's."""
    candidate = split_plain_url(url)
    if candidate is None:
        return False
    for prefix in prefixes:
        allowed = split_plain_url(prefix)
        if (allowed is not None and candidate[:3] == allowed[:3]
                and candidate[3].startswith(allowed[3])):
            return True
    return False


def fetch_public_key_pem(url: str, deadline: float = KEY_FETCH_DEADLINE) -> bytes:
    """GET a PEM public key through the hardened fetch.

    OSS names its key with an http URL; its host is always fetched over https, so a network
    attacker cannot substitute the key.
    """
    parts = split_plain_url(url)
    if parts is None:
        raise PubKeyUnavailable("not a plain http(s) key URL")
    scheme, host, port, path = parts
    if host == OSS_KEY_HOST and scheme == "http":
        scheme, port = "https", 443
    try:
        answer = fetch(scheme, host, port, path, timeout=deadline,
                       max_bytes=MAX_KEY_RESPONSE_BYTES,
                       headers={"Accept": "application/x-pem-file",
                                "User-Agent": "oss-appserver"})
    except FetchFailed as exc:
        raise PubKeyUnavailable("key %s" % exc) from None
    if answer.status != 200:
        raise PubKeyUnavailable("key server answered HTTP %d" % answer.status)
    return answer.body


class PublicKeyCache:
    """Public keys by URL: embedded ones first, then fetched ones cached with a TTL.

    Failures are cached briefly so an outage is not amplified into a fetch per callback, and
    fetches are single-flight: a burst of callbacks with a cold cache makes one fetch.
    """

    def __init__(self, fetch: Callable[[str], bytes] = fetch_public_key_pem, *,
                 clock: Callable[[], float] = time.monotonic, ttl: float = KEY_TTL,
                 negative_ttl: float = KEY_FAILURE_TTL, max_entries: int = KEY_CACHE_ENTRIES,
                 embedded: Mapping[str, PublicKey] = EMBEDDED_PUBLIC_KEYS,
                 wait_timeout: float = KEY_FETCH_DEADLINE + 1.0,
                 max_fetches_per_minute: int = KEY_FETCHES_PER_MINUTE,
                 reserved_fetches_per_minute: int = KNOWN_KEY_FETCHES_PER_MINUTE):
        self._fetch = fetch
        self._clock = clock
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._max_entries = max_entries
        self._embedded = dict(embedded)
        self._wait_timeout = wait_timeout
        self._entries = {}   # url -> (expires_at, PublicKey or failure message)
        self._inflight = {}  # url -> threading.Event set when the leader's fetch ends
        self._lock = threading.Lock()
        # Any path under an allowed prefix is fetchable, so unsigned junk naming a new URL
        # each time would otherwise cost a fetch per request and flush the good keys. Junk
        # can still use up that budget, so URLs that have served a good key before draw on
        # a reserved budget of their own: junk cannot lock out a genuine key's refresh.
        self._budgets = {False: (max_fetches_per_minute, []),
                         True: (reserved_fetches_per_minute, [])}
        self._known_good = collections.OrderedDict()  # url -> None, most recent last

    def get(self, url: str) -> PublicKey:
        """The key for ``url``; raises PubKeyUnavailable."""
        key = self._embedded.get(url)
        if key is not None:
            return key
        while True:
            with self._lock:
                entry = self._entries.get(url)
                if entry is not None and entry[0] > self._clock():
                    value = entry[1]
                    break
                event = self._inflight.get(url)
                leader = event is None
                if leader:
                    self._spend_fetch_budget(url in self._known_good)
                    event = self._inflight[url] = threading.Event()
            if leader:
                value = "key fetch interrupted"
                try:
                    value = self._load(url)
                finally:
                    with self._lock:
                        ttl = self._ttl if isinstance(value, PublicKey) else self._negative_ttl
                        self._store(url, (self._clock() + ttl, value))
                        if isinstance(value, PublicKey):
                            self._remember_good(url)
                        del self._inflight[url]
                    event.set()
                break
            if not event.wait(self._wait_timeout):
                raise PubKeyUnavailable("timed out waiting for another fetch of the key")
        if isinstance(value, PublicKey):
            return value
        raise PubKeyUnavailable(value)

    def _spend_fetch_budget(self, known_good: bool):
        limit, times = self._budgets[known_good]
        now = self._clock()
        times[:] = [t for t in times if t > now - 60]
        if len(times) >= limit:
            raise PubKeyUnavailable("too many public key fetches; try later")
        times.append(now)

    def _remember_good(self, url):
        self._known_good[url] = None
        self._known_good.move_to_end(url)
        while len(self._known_good) > self._max_entries:
            self._known_good.popitem(last=False)

    def _load(self, url):
        try:
            key = load_public_key(self._fetch(url))
        except PubKeyUnavailable as exc:
            return str(exc)
        except KeyFormatError as exc:
            return "fetched key refused: %s" % exc
        except Exception as exc:  # an injected fetcher's bug must not poison the cache forever
            log.exception("public key fetch raised")
            return "key fetch failed: %s" % type(exc).__name__
        host = split_plain_url(url)[1]
        if host != OSS_KEY_HOST and key.bits < MIN_FETCHED_KEY_BITS:
            return "fetched key of %d bits is under the %d-bit floor" % (key.bits,
                                                                      MIN_FETCHED_KEY_BITS)
        return key

    def _store(self, url, entry):
        if url not in self._entries and len(self._entries) >= self._max_entries:
            # Expired entries go first, then failures, then the oldest keys.
            now = self._clock()
            for stale in [u for u, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[stale]
            failures = [u for u, (_, value) in self._entries.items()
                        if not isinstance(value, PublicKey)]
            while len(self._entries) >= self._max_entries:
                del self._entries[failures.pop(0) if failures else next(iter(self._entries))]
        self._entries[url] = entry


###############################################################################
# 12. Callback verification ###################################################
###############################################################################

MAX_AUTHORIZATION_CHARS = 4 * ((MAX_KEY_BITS // 8 + 2) // 3)  # base64 of an 8192-bit signature
MAX_PUB_KEY_URL_CHARS = 1024
MAX_CALLBACK_JSON_DEPTH = 32
MAX_CALLBACK_FORM_FIELDS = 1000


def _target_bytes(raw_target) -> bytes:
    if isinstance(raw_target, str):
        try:
            return raw_target.encode("latin-1")  # http.server and WSGI decode as latin-1
        except UnicodeEncodeError:
            raise CallbackRejected("callback URL is not a raw request target") from None
    return raw_target


_PATH_CONTROLS = re.compile(rb"[\r\n\x00]")


def callback_path(raw_target) -> bytes:
    """The percent-decoded path OSS signs. A decoded CR, LF or NUL is refused: the string to
    sign joins path and body with '\\n', so such a path could move bytes between the two."""
    path = _target_bytes(raw_target).partition(b"?")[0]
    if b"%" in path:
        path = urllib.parse.unquote_to_bytes(path)
    if _PATH_CONTROLS.search(path):
        raise CallbackRejected("callback path contains control characters")
    return path


def callback_string_to_sign(raw_target, body: bytes) -> bytes:
    """What OSS signs (PostObject callback, "verify the callback signature"): the
    percent-decoded path, then '?' and the raw query if the request target had a '?', then
    '\\n' and the raw body. Built from bytes: decoding to str would turn invalid UTF-8
    escapes into U+FFFD and break verification."""
    _, question, query = _target_bytes(raw_target).partition(b"?")
    signed = callback_path(raw_target)
    if question:
        signed += b"?" + query
    return signed + b"\n" + body


def single_header(headers: Mapping[str, list], name: str) -> Optional[str]:
    values = headers.get(name, ())
    if len(values) > 1:
        raise CallbackRejected("duplicate %s header" % name)
    return values[0].strip() if values else None


def callback_signature_and_key_url(config: Config, target, headers: Mapping[str, list]):
    """(signature bytes, public key URL) from a callback's headers: everything that can be
    checked without the body or a key, so that junk costs neither a read nor a fetch."""
    callback_path(target)
    authorization = single_header(headers, "authorization")
    if not authorization:
        raise CallbackRejected("missing authorization header")
    try:
        signature = strict_b64decode(authorization, MAX_AUTHORIZATION_CHARS)
    except ValueError:
        raise CallbackRejected("authorization header is not a base64 signature") from None
    encoded_url = single_header(headers, "x-oss-pub-key-url")
    if not encoded_url:
        raise CallbackRejected("missing x-oss-pub-key-url header")
    return signature, allowed_pub_key_url(encoded_url, tuple(config.pub_key_url_prefixes))


@functools.lru_cache(maxsize=64)  # OSS names the same key URL in every callback
def allowed_pub_key_url(encoded_url: str, prefixes: tuple) -> str:
    """The URL an x-oss-pub-key-url header encodes, if it may be trusted; else
    CallbackRejected (never cached: an exception is not a result)."""
    try:
        pub_key_url = strict_b64decode(encoded_url, MAX_PUB_KEY_URL_CHARS).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise CallbackRejected("x-oss-pub-key-url header is not base64 of a URL") from None
    if not pub_key_url_allowed(pub_key_url, prefixes):
        # The sample fetched any URL named here, so anyone could sign with their own key.
        raise CallbackRejected("x-oss-pub-key-url is not an allowed OSS public key URL")
    return pub_key_url


def _refuse_json_constant(name):
    raise ValueError("JSON constant %s is not allowed" % name)


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e400 is no constant: it overflows to inf
        raise ValueError("JSON number out of range")
    return value


def _json_depth_within(value, limit) -> bool:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return True


def strict_json_object(data: bytes) -> dict:
    """A JSON object read strictly, or ValueError: NaN and Infinity are not JSON (RFC 8259 6)
    and could not be written back into an answer; nesting is bounded so that writing an
    answer, one level deeper, cannot hit the recursion limit."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_refuse_json_constant,
                           parse_float=_finite_float)
    except RecursionError:  # nested thousands deep
        raise ValueError("nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if not _json_depth_within(value, MAX_CALLBACK_JSON_DEPTH):
        raise ValueError("nested too deeply")
    return value


def form_fields(text: str, max_fields: int) -> dict:
    """dict(urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=...)): the
    last value of a repeated name, '+' as a space, escapes decoded as UTF-8 with U+FFFD for
    invalid bytes; without parse_qsl's argument coercion, which cost twice the parsing."""
    if text.count("&") >= max_fields:
        raise ValueError("more than %d form fields" % max_fields)
    fields = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            if "+" in name or "%" in name:
                name = urllib.parse.unquote(name.replace("+", " "))
            if "+" in value or "%" in value:
                value = urllib.parse.unquote(value.replace("+", " "))
            fields[name] = value
    return fields


def parse_callback_fields(body_type: str, body: bytes) -> dict:
    """The callback body as fields, read as the configured callbackBodyType: the request's
    Content-Type header is not signed, so a replayer could otherwise switch parsers. JSON is
    read strictly (strict_json_object)."""
    try:
        if body_type == "application/json":
            fields = strict_json_object(body)
        else:
            fields = form_fields(body.decode("utf-8"), MAX_CALLBACK_FORM_FIELDS)
    except ValueError:  # UnicodeDecodeError included
        raise CallbackRejected("callback body is not valid %s" % body_type) from None
    if not fields:
        raise CallbackRejected("callback body has no fields")
    return fields


def _callback_size(value) -> Optional[int]:
    """The object size OSS rendered for ${size}: 12 ASCII digits at most (PostObject takes
    under 5 GB), or, from a JSON body, an integer that is not a boolean. None otherwise."""
    if type(value) is int:
        return value if 0 <= value < 10 ** 12 else None
    if isinstance(value, str) and DECIMAL.fullmatch(value):
        return int(value)
    return None


def check_callback_fields(config: Config, fields: dict):
    """Refuse a genuine OSS callback that is not about one of our uploads.

    Anyone can aim a callback of their own bucket at this server and OSS will sign it, so
    what OSS filled in is compared with what our policies allow. A field the body carries is
    checked by type and value; a field it lacks passes, since the template decides which
    fields exist (the official callback example has only ``bucket``).
    """
    if "bucket" in fields:
        bucket = fields["bucket"]
        if not isinstance(bucket, str) or (config.bucket and bucket != config.bucket):
            raise CallbackRejected("callback is for another bucket",
                                   "callback names bucket %s" % printable(repr(bucket)))
    for name_field in ("object", "filename"):
        if name_field in fields:
            name = fields[name_field]
            if not isinstance(name, str) or not name.startswith(
                    config.upload_dir.partition(USER_PLACEHOLDER)[0]):
                raise CallbackRejected("callback object is outside the upload folder",
                                       "callback names %s %s"
                                       % (name_field, printable(repr(name))))
    if "size" in fields:
        size = _callback_size(fields["size"])
        if size is None:
            raise CallbackRejected("callback size is not a byte count",
                                   "callback size %s" % printable(repr(fields["size"])))
        if config.max_upload_bytes and size > config.max_upload_bytes:
            raise CallbackRejected("callback size is over the upload limit")


def callback_grant(target) -> str:
    """The one ``grant`` parameter of the callback URL's query."""
    query = _target_bytes(target).partition(b"?")[2].decode("latin-1")
    grants = [value for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
              if name == "grant"]
    if len(grants) != 1:
        raise CallbackRejected("callback carries no grant from our tokens" if not grants
                               else "callback carries more than one grant")
    return grants[0]


def check_bound_fields(config: Config, grant: Grant, fields: dict) -> None:
    """Every field our template renders is present and within the grant: an attacker's
    template could leave fields out, which a presence-optional check would let pass.
    (config_from_env makes sure the template renders bucket, object and size.)"""
    names = template_fields(config.callback_body, config.callback_body_type)
    for variable in ("bucket", "object", "size", "mimeType"):
        if variable in names and names[variable] not in fields:
            raise CallbackRejected("callback body lacks the ${%s} field" % variable)
    value = {variable: fields.get(name) for variable, name in names.items()}.get
    if "bucket" in names and value("bucket") != config.bucket:
        raise CallbackRejected("callback is for another bucket",
                               "callback names bucket %s" % printable(repr(value("bucket"))))
    present = [fields[n] for n in {names.get("object"), "object", "filename"} if n in fields]
    for name in present:
        if not isinstance(name, str) or not name.startswith(grant.folder):
            raise CallbackRejected("callback object is outside the granted folder",
                                   "callback names %s outside %s" % (printable(repr(name)),
                                                                     printable(grant.folder)))
    size = _callback_size(value("size")) if "size" in names else 0
    if size is None or (grant.max_bytes and size > grant.max_bytes):
        raise CallbackRejected("callback size is outside the grant")
    if grant.content_types:
        mime_type = value("mimeType")
        if not isinstance(mime_type, str) or mime_type.lower() not in grant.content_types:
            raise CallbackRejected("callback content type is not allowed",
                                   "callback names type %s" % printable(repr(mime_type)))


def upload_record(config: Config, grant: Optional[Grant], fields: dict) -> dict:
    """The shape the hook gets and the answer reports: who, where, how large, and the raw
    fields (a template's own field named "user" stays inside "fields")."""
    names = template_fields(config.callback_body, config.callback_body_type)
    name = fields.get(names.get("object", "object"), fields.get("object",
                                                                 fields.get("filename")))
    size = fields.get(names.get("size", "size"))
    return {"user": grant.user if grant else None,
            "bucket": fields.get(names.get("bucket", "bucket"), config.bucket),
            "object": name, "size": _callback_size(size) if size is not None else None,
            "fields": fields}


def callback_preflight(config: Config, target, headers: Mapping[str, list],
                       binding_key: Optional[bytes], now: float) -> tuple:
    """(signature, public key URL, grant or None): everything that needs neither the body nor
    a key, so that junk, forged or stale grants included, costs no read and no fetch."""
    signature, pub_key_url = callback_signature_and_key_url(config, target, headers)
    if not config.callback_binding:
        return signature, pub_key_url, None
    if binding_key is None:
        raise ValueError("callback binding needs the binding key")
    grant, expiry = decode_grant(binding_key, callback_grant(target))
    if now > expiry + config.callback_window:
        raise CallbackRejected("callback grant has expired")
    return signature, pub_key_url, grant


def verify_callback(config: Config, keys, target, headers: Mapping[str, list], body: bytes,
                    *, binding_key: Optional[bytes] = None, now: Optional[float] = None,
                    preflight: Optional[tuple] = None) -> dict:
    """The upload a callback reports, once it is proven that OSS signed it and (with callback
    binding on) that it is about an upload one of our tokens granted; else CallbackRejected.

    ``keys.get(url)`` returns the PublicKey for an allowed key URL or raises
    PubKeyUnavailable; ``target`` is the raw request target, ``headers`` maps lower-case names
    to lists of values. Returns {"user", "bucket", "object", "size", "fields"}. The mirror of
    issue_token: a function of its inputs. ``preflight``: what callback_preflight returned for
    this same request, when the caller ran it before reading the body.
    """
    signature, pub_key_url, grant = preflight or callback_preflight(
        config, target, headers, binding_key, time.time() if now is None else now)
    try:
        key = keys.get(pub_key_url)
    except PubKeyUnavailable as exc:
        raise CallbackRejected("callback public key unavailable",
                               "public key %s unavailable: %s"
                               % (printable(pub_key_url), exc)) from None
    if not rsa_verify(key, callback_string_to_sign(target, body), signature, "md5"):
        raise CallbackRejected("callback signature does not match",
                               "signature mismatch for %s (key %s)"
                               % (printable(target.partition("?")[0]), printable(pub_key_url)))
    fields = parse_callback_fields(config.callback_body_type, body)
    check_callback_fields(config, fields)
    if grant is not None:
        check_bound_fields(config, grant, fields)
    return upload_record(config, grant, fields)


# OSS gives a whole callback 5 s. The key fetch (at most KEY_FETCH_DEADLINE), the HEAD and
# whatever follows share this budget, each step getting what remains.
CALLBACK_BUDGET = 4.5


def confirm_upload(config: Config, credentials: Credentials, upload: dict, *,
                   timeout: float, now: Optional[float] = None,
                   request: Callable = oss_request) -> None:
    """Proof that the object a verified callback names is in our bucket, as large as the
    callback says, and with its CRC-64 when the template renders ${crc64}: a signed HEAD
    (HeadObject). A callback for another bucket's object, which a token holder could have
    OSS sign, finds nothing here. CallbackRejected (400) when the object is not there or
    differs; UploadUnconfirmed (503) when OSS cannot say."""
    key = upload["object"]
    if not isinstance(key, str) or not key:
        raise CallbackRejected("callback names no object to confirm")
    try:
        check_object_key(key)
    except InvalidArgument as exc:
        raise CallbackRejected("callback object name is not valid", exc.message) from None
    if timeout <= 0:
        raise UploadUnconfirmed("upload not confirmed: OSS did not answer in time",
                                "no time left in the callback's budget for the HEAD")
    try:
        answer = request(config, credentials, "HEAD", key, timeout=timeout, now=now)
    except FetchFailed as exc:
        raise UploadUnconfirmed("upload not confirmed: OSS did not answer in time",
                                "HEAD %s: %s" % (printable(key), exc)) from None
    if answer.status == 404:  # a missing key is a 404 to a caller that may read objects
        raise CallbackRejected("callback object is not in our bucket",
                               "object %s is not in our bucket (HEAD: 404 %s)"
                               % (printable(key), answer.code))
    if answer.status != 200:
        # Only AccessDenied is a missing permission; another 403 (SignatureDoesNotMatch,
        # RequestTimeTooSkewed, InvalidSecurityToken) is wrong keys or a wrong clock.
        raise UploadUnconfirmed("upload not confirmed: OSS refused to answer",
                                "HEAD %s: HTTP %d %s" % (printable(key), answer.status,
                                                         answer.code),
                                forbidden=answer.status == 403
                                and answer.code in ("AccessDenied", ""))
    if upload["size"] is not None and answer.headers.get("Content-Length") != str(
            upload["size"]):
        raise CallbackRejected("callback size does not match the object",
                               "callback says %s bytes, OSS has %s" % (
                                   upload["size"],
                                   printable(str(answer.headers.get("Content-Length")))))
    names = template_fields(config.callback_body, config.callback_body_type)
    if "crc64" in names:
        claimed, stored = upload["fields"].get(names["crc64"]), answer.headers.get(
            "x-oss-hash-crc64ecma")
        if stored is None or str(claimed) != stored:
            raise CallbackRejected("callback crc64 does not match the object")
    if "mimeType" in names:
        claimed = upload["fields"].get(names["mimeType"])
        stored = answer.headers.get("Content-Type") or ""
        if not isinstance(claimed, str) or media_type(claimed) != media_type(stored):
            raise CallbackRejected("callback content type does not match the object",
                                   "callback says %s, OSS has %s" % (
                                       printable(repr(claimed)), printable(stored)))


def media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


FORWARD_MAX_ANSWER_BYTES = 1024 * 1024   # what OSS relays of a callback answer


def forward_signature(secret: str, timestamp: str, body: bytes) -> str:
    """X-Upload-Signature: "sha256=" + hex HMAC-SHA256(key, "<timestamp>." + body), the way
    webhook senders sign, so a receiver can refuse replays by the timestamp."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body,
                                hashlib.sha256).hexdigest()


def forward_upload(config: Config, upload: dict, *, timeout: float, now: float) -> dict:
    """POST the verified upload as JSON to OSS_CALLBACK_FORWARD_URL, signed, within
    ``timeout``; its answer, a JSON object, is what OSS relays to the browser. Anything else
    is ForwardFailed (502)."""
    body = json_compact(upload)
    timestamp = str(int(now))
    parts = urllib.parse.urlsplit(config.callback_forward_url)  # no user info: safe to log
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    if timeout <= 0:
        raise ForwardFailed("the application did not answer in time",
                            "no time left in the callback's budget to forward")
    try:
        answer = fetch(parts.scheme, parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme],
                       target, method="POST", body=body, timeout=timeout,
                       max_bytes=FORWARD_MAX_ANSWER_BYTES,
                       headers={"Content-Type": "application/json",
                                "User-Agent": "oss-appserver",
                                "X-Upload-Timestamp": timestamp,
                                "X-Upload-Signature": forward_signature(
                                    config.forward_secret, timestamp, body)})
    except FetchFailed as exc:
        raise ForwardFailed("the application did not answer in time",
                            "forward to %s: %s" % (printable(parts.netloc), exc)) from None
    if not 200 <= answer.status < 300:
        raise ForwardFailed("the application refused the upload",
                            "forward to %s answered HTTP %d" % (printable(parts.netloc),
                                                                answer.status))
    try:
        return strict_json_object(answer.body)
    except ValueError:
        raise ForwardFailed("the application's answer is not a JSON object",
                            "forward to %s answered no JSON object" % printable(parts.netloc)
                            ) from None


###############################################################################
# 13. Application #############################################################
###############################################################################

class Response(NamedTuple):
    status: int
    headers: list
    body: bytes = b""
    close: bool = False  # the request's framing can no longer be trusted: drop the connection
    note: str = ""       # appended to the request's access-log line


ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff")]
# Static files other than the page are never documents: an SVG opened directly could
# otherwise run script, and none of them needs anything.
ASSET_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".png": "image/png", ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml",
    ".ico": "image/x-icon", ".webp": "image/webp", ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}


def error_response(status: int, message: str, headers=(), close: bool = False) -> Response:
    """The one error shape: {"Status":"Error","Message":...}, never a traceback or a path."""
    body = json_compact({"Status": "Error", "Message": message})
    return Response(status, JSON_HEADERS + list(headers), body, close)


def internal_error(context: str, headers=(), close: bool = False) -> Response:
    """The one 500: the traceback goes to the log under an incident id, the client gets the id
    and nothing else. Call it from an ``except`` block."""
    incident = uuid.uuid4().hex[:12]
    log.exception("internal error %s %s", incident, context)
    return error_response(500, "internal error (incident %s)" % incident, headers, close)


TOKEN_CACHE_ENTRIES = 4096  # tokens kept for the current second, one per grant


def default_callback_hook(upload: dict) -> dict:
    """Answer with who uploaded and what OSS reported. Embedders replace this to record the
    upload; its return value is the JSON OSS relays to the browser. (The object name and size
    are logged on the callback's access-log line, whatever the hook.)"""
    return {"Status": "OK", "user": upload["user"], "upload": upload["fields"]}


def load_callback_hook(path: str) -> Callable[[dict], dict]:
    """The function OSS_CALLBACK_HOOK names ("package.module:function"), imported with the
    working directory on sys.path; ConfigError if it cannot be had."""
    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        hook = importlib.import_module(module_name)
        for name in attribute.split("."):
            hook = getattr(hook, name)
    except Exception as exc:  # the user's module may raise anything while it is imported
        raise ConfigError("OSS_CALLBACK_HOOK", "%s cannot be loaded: %s: %s" % (
            path, type(exc).__name__, printable(str(exc), 200))) from None
    if not callable(hook):
        raise ConfigError("OSS_CALLBACK_HOOK", "%s is not a function" % path)
    return hook


def scan_static_dir(root: str) -> dict:
    """The files the client may fetch, fixed at startup: '/name' -> (path parts, type).

    Only regular files under ``root``, no dotfiles, no symlinks. A URL is served only if it is
    a key of this map, so traversal ('..', '%2e%2e', '//') cannot reach anything else.
    """
    files = {}
    if not os.path.isdir(root):
        return files
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs
                      if not d.startswith(".") and not os.path.islink(os.path.join(directory, d))]
        for name in names:
            path = os.path.join(directory, name)
            if name.startswith(".") or os.path.islink(path) or not os.path.isfile(path):
                continue
            parts = tuple(os.path.relpath(path, root).split(os.sep))
            content_type = STATIC_TYPES.get(os.path.splitext(name)[1].lower(),
                                            "application/octet-stream")
            files["/" + "/".join(parts)] = (parts, content_type)
    return files


def find_static_dir() -> str:
    """The page's folder: ``static/`` beside this file in a checkout, ``appserver_static/``
    where a wheel installed it."""
    for name in ("static", "appserver_static"):
        candidate = os.path.join(HERE, name)
        if os.path.isdir(candidate):
            return candidate
    return os.path.join(HERE, "static")


def read_static_file(root: str, parts) -> bytes:
    """Read a file found by scan_static_dir, refusing what was swapped since: every component
    is opened with O_NOFOLLOW, so a file or folder replaced by a symlink after startup is not
    followed, and the file must still be a regular file. Raises OSError."""
    if os.open not in os.supports_dir_fd:  # not POSIX: no dir_fd, open by path
        with open(os.path.join(root, *parts), "rb") as f:
            return f.read()
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        # O_NONBLOCK: a FIFO put in place of the file would otherwise block the open.
        file_fd = os.open(parts[-1], os.O_RDONLY | nofollow | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    with open(file_fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError("not a regular file")
        return f.read()


class App:
    """Routing and responses, free of socket details: the http.server handler and the WSGI
    adapter both frame what ``handle`` returns.

    ``authorize(TokenRequest) -> Grant`` decides who gets a token (raise Unauthorized or
    Forbidden to refuse); by default it is the OSS_TOKEN_AUTH mode. ``callback_hook(upload)``
    gets each verified upload ({"user", "bucket", "object", "size", "fields"}) and returns
    the JSON answer OSS relays to the browser; OSS may retry, so it must be idempotent.
    """

    def __init__(self, config: Config, *, static_dir: Optional[str] = None,
                 key_cache: Optional[PublicKeyCache] = None,
                 callback_hook: Optional[Callable[[dict], dict]] = None,
                 authorize: Optional[Callable[[TokenRequest], Grant]] = None,
                 credentials: Optional[CredentialProvider] = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.credentials = credentials or make_credential_provider(config, clock)
        self.key_cache = key_cache or PublicKeyCache()
        # An embedder's hook outranks the environment's hook and forward.
        self.forward = bool(config.callback_forward_url) and callback_hook is None
        self.callback_hook = callback_hook or (load_callback_hook(config.callback_hook)
                                               if config.callback_hook else default_callback_hook)
        self.authorize = authorize or AUTHORIZERS[config.token_auth](config)
        self.clock = clock
        # Placeholder credentials (the demo): a key of this process's own, with a warning.
        self.binding_key = (binding_key(config) or os.urandom(32)) if config.callback_binding \
            else None
        self.rate_limiter = RateLimiter(*config.token_rate) if config.token_rate else None
        self.static_root = os.path.realpath(static_dir or config.static_dir or find_static_dir())
        self.static_files = scan_static_dir(self.static_root)
        self._cors = [("Access-Control-Allow-Methods", ALLOWED_METHODS),
                      ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
                      ("Access-Control-Expose-Headers", "Date, Retry-After")]
        # With download links on, the page shows thumbnails straight from the bucket.
        self._page_csp = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data: blob:%s; connect-src 'self' %s; "
                          "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
                          % (" " + config.host if config.download_expire_seconds else "",
                             config.host))
        self._tokens = {}  # (second, grant) -> body: a token depends on nothing else
        self._checked_grants = {}
        self._head_refusal_logged = False

    def cors_headers(self, headers: Mapping[str, list]) -> list:
        """CORS for one request: '*' as configured, or the request's Origin echoed (with
        credentials) only when it is listed. Never credentials with '*'."""
        if self.config.cors_origins == ("*",):
            return [("Access-Control-Allow-Origin", "*")] + self._cors
        origin = headers.get("origin", [""])[-1]
        allowed = [("Access-Control-Allow-Origin", origin),
                   ("Access-Control-Allow-Credentials", "true")] \
            if origin in self.config.cors_origins else []
        return allowed + self._cors + [("Vary", "Origin")]

    def handle(self, method: str, target: str, headers: Mapping[str, list],
               content_length: Optional[int], read_body: Callable[[int], bytes],
               peer: str = "") -> Response:
        """Answer one request. ``headers`` maps lower-case names to lists of values;
        ``read_body(n)`` returns exactly n bytes or raises RequestError; ``peer`` is the
        connection's remote address."""
        cors = self.cors_headers(headers)
        try:
            if method in ("GET", "HEAD"):
                return self._get(target, headers, peer, cors)
            if method == "POST":
                return self._callback(target, headers, content_length, read_body)
            if method == "OPTIONS":
                return Response(204, cors + [("Allow", ALLOWED_METHODS),
                                             ("Access-Control-Max-Age", "600")])
            if method in ("PUT", "DELETE", "PATCH"):
                raise MethodNotAllowed("method not allowed", headers=[("Allow", ALLOWED_METHODS)])
            raise MethodNotImplemented("method not implemented")
        except RequestError as exc:
            if isinstance(exc, CallbackNotAccepted):
                log.warning("callback %s: %s", exc.verdict, exc.reason)
            return error_response(exc.status, exc.message, cors + exc.headers, exc.close)
        except Exception:
            return internal_error("handling " + printable(method, 16), cors)

    def _get(self, target: str, headers, peer, cors) -> Response:
        path, _, query = target.partition("?")
        if path == "/":
            return self._token_response(path, headers, peer, cors)
        if path == "/download-url" and self.config.download_expire_seconds:
            return self._download_url(query, headers, peer, cors)
        if path == "/healthz":  # liveness: an STS outage must not restart every replica
            return Response(200, JSON_HEADERS + cors, b'{"Status":"OK"}')
        if path == "/readyz":   # readiness: out of the load balancer while it cannot sign
            self.signing_credentials(self.clock())
            return Response(200, JSON_HEADERS + cors, b'{"Status":"OK"}')
        static = self.static_files.get(path)
        if static is None:
            raise NotFound("not found")
        relative, content_type = static
        try:
            body = read_static_file(self.static_root, relative)
        except OSError:
            raise NotFound("not found") from None
        headers = [("Content-Type", content_type), ("X-Content-Type-Options", "nosniff"),
                   ("Cache-Control", "no-cache"), ("Referrer-Policy", "no-referrer")]
        if content_type.startswith("text/html"):
            headers += [("Content-Security-Policy", self._page_csp), ("X-Frame-Options", "DENY")]
        else:
            headers.append(("Content-Security-Policy", ASSET_CSP))
        return Response(200, headers, body)

    def _token_response(self, path, headers, peer, cors) -> Response:
        now = self.clock()
        grant = self.checked_grant(self.authorize(TokenRequest("GET", path, headers, peer, now)))
        if self.rate_limiter is not None:
            wait = self.rate_limiter.take(grant.user or client_address(self.config, peer,
                                                                       headers))
            if wait:
                raise TooManyRequests("too many token requests; try again later",
                                      math.ceil(wait))
        second = int(now)
        credentials = self.signing_credentials(now)
        body = self._tokens.get((second, grant, credentials))
        if body is None:
            # The sample's json.dumps layout, so clients parsing it loosely keep working.
            body = json.dumps(issue_token(self.config, second, grant, self.binding_key,
                                          credentials)).encode("utf-8")
            if len(self._tokens) >= TOKEN_CACHE_ENTRIES:
                self._tokens.clear()
            self._tokens[(second, grant, credentials)] = body
        return Response(200, JSON_HEADERS + cors, body)

    def _download_url(self, query: str, headers, peer, cors) -> Response:
        """A presigned GET for one object under the caller's own grant folder, valid
        OSS_DOWNLOAD_EXPIRE_SECONDS and never past the credentials' expiry."""
        now = self.clock()
        grant = self.checked_grant(self.authorize(
            TokenRequest("GET", "/download-url", headers, peer, now)))
        try:
            keys = [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True,
                                                          errors="strict", max_num_fields=20)
                    if k == "key"]
        except (UnicodeDecodeError, ValueError):
            raise InvalidArgument("the query is not valid UTF-8 form data") from None
        if len(keys) != 1:
            raise InvalidArgument("give exactly one key=<object name>")
        key = check_object_key(keys[0])
        if "?" in key and self.config.signature_version == "v1":
            # V1 signs "/bucket/key" and the sub-resources as one string: a '?' in the key
            # would let the link be replayed with real sub-resources (response-content-type).
            raise InvalidArgument("a key with '?' cannot be presigned with V1 signatures")
        if not key.startswith(grant.folder) or key == grant.folder:
            raise Forbidden("the key is outside your upload folder")
        credentials = self.signing_credentials(now)
        expires_in = self.config.download_expire_seconds
        if credentials.expiration is not None:
            expires_in = min(expires_in, int(credentials.expiration
                                             - self.config.credential_margin - now))
        url = object_url(self.config, key) + "?" + presign_query(
            self.config.signature_version, credentials, self.config.region, "GET",
            self.config.bucket, key, now, expires_in)
        return Response(200, JSON_HEADERS + cors,
                        json_compact({"url": url, "expires": int(now) + expires_in}))

    def checked_grant(self, grant: Grant) -> Grant:
        """check_grant, remembered: an authorizer hands out the same few grants again and
        again, and the check was a quarter of a token's cost."""
        try:
            checked = self._checked_grants.get(grant)
        except TypeError:  # an embedder's grant holding a list: checked every time
            return check_grant(self.config, grant)
        if checked is None:
            checked = check_grant(self.config, grant)
            if len(self._checked_grants) >= GRANT_CACHE_ENTRIES:
                self._checked_grants.clear()
            self._checked_grants[grant] = checked
        return checked

    def signing_credentials(self, now: float) -> Credentials:
        """Credentials that outlive a token by the margin, or CredentialsUnavailable (503)."""
        credentials = self.credentials.current()
        if credentials is None or (credentials.expiration is not None and
                                   credentials.expiration - self.config.credential_margin
                                   - now < MIN_TOKEN_SECONDS):
            raise CredentialsUnavailable()
        return credentials

    def _callback(self, target, headers, content_length, read_body) -> Response:
        until = time.monotonic() + CALLBACK_BUDGET
        # Everything that needs neither body nor key is checked first: a junk request costs
        # no read and no fetch, and is not invited to send its body (Expect: 100-continue).
        if content_length is None:
            raise LengthRequired("Content-Length required")
        if content_length > self.config.max_callback_bytes:
            raise PayloadTooLarge("callback body larger than %d bytes"
                                  % self.config.max_callback_bytes)
        preflight = callback_preflight(self.config, target, headers, self.binding_key,
                                       self.clock())
        body = read_body(content_length)
        upload = verify_callback(self.config, self.key_cache, target, headers, body,
                                 binding_key=self.binding_key, preflight=preflight)
        if self.config.confirms_uploads:
            self._confirm(upload, until)
        if self.forward:
            answer = forward_upload(self.config, upload, now=self.clock(),
                                    timeout=until - time.monotonic())
        else:
            answer = self.callback_hook(upload)
        if not isinstance(answer, dict):
            raise TypeError("the callback hook returned %s, not a dict (a JSON object)"
                            % type(answer).__name__)
        note = "object=%s size=%s" % (upload["object"], upload["size"])
        if upload["user"] is not None:
            note += " user=%s" % upload["user"]
        return Response(200, list(JSON_HEADERS), json_compact(answer), note=note)


    def _confirm(self, upload: dict, until: float) -> None:
        credentials = self.credentials.current()
        if credentials is None:
            raise UploadUnconfirmed("upload not confirmed: no valid credentials",
                                    "no valid credentials to sign the HEAD with")
        try:
            confirm_upload(self.config, credentials, upload, now=self.clock(),
                           timeout=until - time.monotonic())
        except UploadUnconfirmed as exc:
            if exc.forbidden and not self._head_refusal_logged:
                self._head_refusal_logged = True
                log.error("OSS REFUSED THE HEAD THAT CONFIRMS UPLOADS (%s): every callback "
                          "answers 503 until these credentials may do oss:GetObject on "
                          "acs:oss:*:*:%s/%s* (or set OSS_CONFIRM_UPLOADS=0)", exc.reason,
                          self.config.bucket,
                          self.config.upload_dir.partition(USER_PLACEHOLDER)[0])
            raise


def app_warnings(app: App) -> list:
    if "/index.html" in app.static_files:
        return []
    return ["no page to serve: %s has no index.html (set OSS_STATIC_DIR to the folder "
            "with the browser client)" % app.static_root]


###############################################################################
# 14. HTTP/1.1 transport ######################################################
###############################################################################

MAX_REQUEST_LINE = 65536     # as http.server: longer is 414
MAX_HEADER_BYTES = 65536     # all header lines together: longer is 431
MAX_HEADERS = 100
IDLE_TIMEOUT = 5.0           # a connection waiting for its next request line
REQUEST_TIMEOUT = 15.0       # from a request line to the end of its response
WATCHDOG_INTERVAL = 0.1      # how often serve_forever's loop looks for expired connections
SERVE_POLL_INTERVAL = 0.25   # how soon serve_forever notices shutdown()
DRAIN_POLL_INTERVAL = 0.02   # server_close() waiting for requests in flight
OVERLOAD_SEND_TIMEOUT = 0.5  # the fast 503 to a connection over the cap
LOG_STOP_TIMEOUT = 2.0       # a stalled log sink must not hold up shutdown for ever
ACCESS_LOG_BACKLOG = 10000   # access-log records waiting for the writer thread
ACCESS_LOG_INTERVAL = 0.1    # how long a line may wait for the writer thread
ACCESS_LOG_BATCH = 64        # lines the writer thread may hand a stream in one write
ACCESS_LOG_HELP_AT = 1024    # a backlog that request threads help to write, a batch at a time

# Gives the CPU to another thread with the GIL released. A thread that drops the GIL for a
# syscall that returns at once (a send, a recv whose data is there) takes it straight back:
# the thread woken for it has not run yet. CPython's GIL is not handed over in turn.
_yield_cpu = getattr(os, "sched_yield", lambda: time.sleep(0))

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 5.6.2
# method SP origin-form (or * for OPTIONS) SP HTTP/1.x, then CRLF or a bare LF (RFC 9112 2.2)
_REQUEST_LINE = re.compile(r"(%s) (/[\x21-\x7e]*|\*) HTTP/1\.([0-9])\r?\n" % _TOKEN)
_HTTP_VERSION = re.compile(r"HTTP/([0-9])\.[0-9]")
# name ":" OWS value OWS: no space before the colon, no obs-fold, no controls but tab
_HEADER_FIELD = r"(%s):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)" % _TOKEN
_HEADER_LINE = re.compile(_HEADER_FIELD + r"\r?\n")
_HEADER_FIELD_ONLY = re.compile(_HEADER_FIELD)  # a line already split off at its CRLF


def parse_content_length(method: str, headers: Mapping[str, list]) -> Optional[int]:
    """Request framing (RFC 9112 6.3), stricter than http.server: int() would accept '+5',
    '5_0', '-1' and non-ASCII digits, and headers.get() silently picks one of two lengths.

    Transfer codings are not decoded. OSS always sends callbacks with a Content-Length, so a
    POST without one is told so (411); other methods get RFC 9112's 501.
    """
    lengths = headers.get("content-length", [])
    if headers.get("transfer-encoding"):
        if lengths:
            # Both framings at once is the classic request-smuggling setup.
            raise BadRequest("both Transfer-Encoding and Content-Length")
        if method == "POST":
            raise LengthRequired("Transfer-Encoding is not supported; send Content-Length")
        raise MethodNotImplemented("Transfer-Encoding is not supported")
    if not lengths:
        return None
    if len(lengths) == 1:
        value = lengths[0].strip(" \t")
    else:
        values = {value.strip(" \t") for value in lengths}
        if len(values) != 1:
            raise BadRequest("conflicting Content-Length headers")
        value = values.pop()
    if not DECIMAL.fullmatch(value):
        raise BadRequest("invalid Content-Length")
    return int(value)


_STATUS_LINES = {}   # status -> the response's first bytes, up to the Date value
_HEADER_BLOCKS = {}  # tuple of an App response's headers -> their bytes
_HEADER_BLOCKS_MAX = 256


def _header_block(headers) -> bytes:
    # The App answers with a few fixed header lists: each is formatted and encoded once, not
    # for every response (a sixth of a token's serving time in a profile under load).
    # Bounded, since an echoed Origin can vary without end.
    key = tuple(headers)
    block = _HEADER_BLOCKS.get(key)
    if block is None:
        block = "".join(["%s: %s\r\n" % header for header in headers]).encode("latin-1")
        if len(_HEADER_BLOCKS) < _HEADER_BLOCKS_MAX:
            _HEADER_BLOCKS[key] = block
    return block


def serialize_response(response: Response, date: str, *, close: bool, head: bool = False,
                       http10_keep_alive: bool = False) -> bytes:
    """A whole response as one buffer: one write, so Nagle never holds back its tail."""
    status, headers, body = response[:3]
    first = _STATUS_LINES.get(status)
    if first is None:
        first = _STATUS_LINES[status] = (
            "HTTP/1.1 %d %s\r\nServer: oss-appserver\r\nDate: "
            % (status, http.client.responses.get(status, "Unknown"))).encode("latin-1")
    parts = [first, date.encode("latin-1"), b"\r\n", _header_block(headers)]
    if status != 204:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(b"Connection: close\r\n")
    elif http10_keep_alive:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if not head and status != 204:
        parts.append(body)
    return b"".join(parts)


class AppRequestHandler(socketserver.StreamRequestHandler):
    """Frames App responses: HTTP/1.1 keep-alive, strict request parsing, one write per
    response, one access-log line per request.

    The request head is parsed here, not by http.server, whose email parser is lenient where
    framing must be strict: at a line it cannot read ("Foo", "Content-Length : 5") it
    silently drops every later header, and the body then reads as a second request.
    """

    disable_nagle_algorithm = True  # else Nagle waits on the peer's delayed ACK (~40 ms)
    timeout = None                  # blocking sockets: the server's watchdog keeps deadlines

    def finish(self):
        self.server.forget(self.connection)
        super().finish()

    def handle(self):
        self.handle_one_request()
        while not self.close_connection:
            # Let the threads whose requests arrived meanwhile take the GIL first. Without this,
            # a thread whose client sends its next request at once keeps the GIL for request
            # after request, and the others wait for it in 5 ms switch intervals: at 64
            # keep-alive connections the token p99 was 100 to 300 ms where the median was 2.
            _yield_cpu()
            self.handle_one_request()

    def handle_one_request(self):
        self.close_connection = True
        self.method, self.target, self.version = "", "", "HTTP/1.1"
        self.body_left, self.expect_continue = 0, False
        if not self.server.await_request(self.connection):
            return  # shutting down: take no new request on this connection
        line = self._read_request_line()
        if line is None:
            return
        self.arrived, self.started = time.time(), time.monotonic()
        self.deadline = self.started + self.server.request_timeout
        self.server.request_started(self.connection, self.deadline)
        try:
            response = self._respond(line)
        except RequestError as exc:
            response = error_response(exc.status, exc.message, exc.headers, close=True)
        except OSError:
            return  # the peer went away, or the watchdog closed it at the deadline
        except Exception:
            response = internal_error("framing a request", close=True)
        self._send(response)

    def _read_request_line(self) -> Optional[bytes]:
        try:
            line = self.rfile.readline(MAX_REQUEST_LINE + 1)
            for _ in range(4):  # RFC 9112 2.2: ignore empty lines before a request line
                if line != b"\r\n" and line != b"\n":
                    break
                line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        except OSError:
            return None  # the peer went away, or the watchdog closed an idle connection
        if not line.endswith(b"\n") and len(line) <= MAX_REQUEST_LINE:
            return None  # closed mid-line: by the peer, or by the watchdog at the idle deadline
        return line

    def _respond(self, request_line) -> Response:
        self._parse_request_line(request_line)
        headers = self._read_headers()
        connection = headers.get("connection")
        tokens = {t.strip().lower() for v in connection for t in v.split(",")} \
            if connection else ()
        if self.version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in tokens
        else:
            self.close_connection = "close" in tokens
        content_length = parse_content_length(self.method, headers)
        self.body_left = content_length or 0
        # "100 Continue" goes out only when the App asks for the body, so a request refused on
        # its headers gets its error without being invited to send the body first.
        expect = headers.get("expect")
        self.expect_continue = bool(expect) and self.version == "HTTP/1.1" and \
            "100-continue" in [v.lower() for v in expect]
        return self.server.app.handle(self.method, self.target, headers, content_length,
                                      self._read_body, self.client_address[0])

    def _parse_request_line(self, line):
        if len(line) > MAX_REQUEST_LINE:
            raise URITooLong("request line too long")
        text = line.decode("latin-1")
        matched = _REQUEST_LINE.fullmatch(text)
        if matched is None:
            parts = text.rstrip("\r\n").split(" ")
            version = _HTTP_VERSION.fullmatch(parts[-1])
            if len(parts) == 3 and version and version.group(1) != "1":
                raise HTTPVersionNotSupported("HTTP version not supported")
            raise BadRequest("malformed request line")
        self.method, self.target, minor = matched.groups()
        self.version = "HTTP/1." + minor

    def _read_headers(self) -> dict:
        """Header fields as {lower-case name: [values]}, per RFC 9112 5: no space before the
        colon, no obs-fold, no control characters, bounded in count and bytes."""
        headers = self._read_buffered_headers()
        if headers is not None:
            return headers
        headers = {}
        budget = MAX_HEADER_BYTES
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(budget + 1)
            if not line.endswith(b"\n"):
                if len(line) > budget:
                    raise RequestHeaderFieldsTooLarge("request headers too large")
                if time.monotonic() >= self.deadline:
                    raise RequestTimeout("request headers timed out")
                raise BadRequest("incomplete request headers")
            if line == b"\r\n" or line == b"\n":
                return headers
            budget -= len(line)
            matched = _HEADER_LINE.fullmatch(line.decode("latin-1"))
            if matched is None:
                raise BadRequest("malformed header line")
            name, value = matched.groups()
            headers.setdefault(name.lower(), []).append(value.rstrip(" \t"))
        raise RequestHeaderFieldsTooLarge("too many request headers")

    def _read_buffered_headers(self) -> Optional[dict]:
        """The usual case without a readline per line: the whole header block is buffered,
        every line ends in CRLF and is well formed, within the bounds. Anything else returns
        None having consumed nothing, and _read_headers decides line by line, as it alone
        decides what is refused. (A quarter of the cost of five headers.)"""
        data = self.rfile.peek()  # what is buffered; blocks, as readline would, if nothing is
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 > MAX_HEADER_BYTES:
            return None
        lines = data[:end].decode("latin-1").split("\r\n")
        if len(lines) > MAX_HEADERS:
            return None
        headers = {}
        for line in lines:
            matched = _HEADER_FIELD_ONLY.fullmatch(line)
            if matched is None:  # also a bare CR or LF inside: the line reader's case
                return None
            name, value = matched.groups()
            headers.setdefault(name.lower(), []).append(value.rstrip(" \t"))
        self.rfile.read(end + 4)
        return headers

    def _read_body(self, size):
        if size != self.body_left:
            raise BadRequest("body length does not match Content-Length")
        try:
            if self.expect_continue:
                self.expect_continue = False
                self.connection.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self.rfile.read(size)
        except OSError:  # a reset, or the watchdog at the deadline: a short read either way
            body = b""
        if len(body) != size:
            if time.monotonic() >= self.deadline:
                raise RequestTimeout("request body timed out")
            raise BadRequest("request body shorter than Content-Length")
        self.body_left = 0
        return body

    def _send(self, response: Response):
        # Unread body bytes would be parsed as the next request: close instead.
        if response.close or self.body_left > 0 or self.server.stopping:
            self.close_connection = True
        data = serialize_response(response, self.server.http_date(),
                                  close=self.close_connection, head=self.method == "HEAD",
                                  http10_keep_alive=self.version == "HTTP/1.0")
        try:
            self.connection.sendall(data)
        except OSError:
            self.close_connection = True
        size = 0 if self.method == "HEAD" or response.status == 204 else len(response.body)
        # The query is dropped: it can carry tokens. Once the server is stopping, a thread
        # that helps write the log could hold up the shutdown on a stalled log sink.
        self.server.access_log.record(
            self.arrived, self.client_address[0], self.method, self.target.partition("?")[0],
            response.status, size, (time.monotonic() - self.started) * 1000, response.note,
            may_help=not self.server.stopping)


class _AccessLogBuffer:
    """The queue between request threads and the access-log writer. Adding wakes no one: the
    writer takes what is pending every ACCESS_LOG_INTERVAL, or at once for flush() and close().

    A queue.Queue wakes the writer for each record, a thread switch per request; the writer
    then contends for the GIL with every request thread, once per record.
    """

    def __init__(self, backlog: int, interval: float = ACCESS_LOG_INTERVAL):
        self._items = collections.deque()
        self._backlog = backlog
        self._interval = interval
        self._wake = threading.Event()
        self._taking = threading.Lock()  # the writer and a helping request thread take in turn

    def put_nowait(self, item):
        if len(self._items) >= self._backlog:
            raise queue.Full
        self._items.append(item)

    def put_control(self, item):
        """A flush marker or the stop sentinel: never dropped, and served at once."""
        self._items.append(item)
        self._wake.set()

    def qsize(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._backlog

    def take_records(self, most: int) -> list:
        """Up to ``most`` records from the front, for a request thread that helps the writer.
        A flush marker or the stop sentinel stays where it is: only the writer thread serves
        them."""
        records, items = [], self._items
        with self._taking:
            while items and len(records) < most and isinstance(items[0], logging.LogRecord):
                records.append(items.popleft())
        return records

    def get(self, block: bool = True):
        while True:
            with self._taking:
                if self._items:
                    return self._items.popleft()
            if not block:
                raise queue.Empty
            self._wake.wait(self._interval)
            self._wake.clear()


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that counts and drops records when the writer falls behind (a full
    pipe, a paused terminal), rather than let memory grow or requests wait on the log sink.
    A queue needs no handler lock."""

    def __init__(self, backlog: int):
        super().__init__(_AccessLogBuffer(backlog))
        self.dropped = 0

    def handle(self, record):
        self.emit(record)
        return True

    def prepare(self, record):
        # QueueHandler formats and copies each record so that a mutable argument cannot change
        # before it is written. These arguments are str and numbers: pass the record as is.
        return record

    def enqueue(self, record):
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _WriterBatch(threading.local):
    """Per thread: whether a BatchingStreamHandler may hold lines back (only ever true while
    the access-log writer thread, or a request thread helping it, writes a batch), and which
    handlers hold some."""

    holding = False

    def __init__(self):
        self.handlers = set()


_writer_batch = _WriterBatch()

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormatter(logging.Formatter):
    """LOG_FORMAT, with logging.Formatter's own output, whose date and time are formatted
    once a second instead of once a line: localtime and strftime were a third of the
    access-log writer's cost per line, which it pays for every request."""

    def __init__(self):
        super().__init__(LOG_FORMAT)
        self._stamp = (None, "")  # (second, its text): one tuple, read and set atomically

    def formatTime(self, record, datefmt=None):
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached, text = self._stamp
        if cached != second:
            text = time.strftime(self.default_time_format, self.converter(second))
            self._stamp = (second, text)
        return self.default_msec_format % (text, record.msecs)

    def format_plain(self, record) -> str:
        """format(record) for a record without exception or stack: the same text, without
        setting the record's message and asctime attributes (plain_access_route)."""
        return "%s %s %s: %s" % (self.formatTime(record, self.datefmt), record.levelname,
                                 record.name, record.getMessage())


class BatchingStreamHandler(logging.StreamHandler):
    """A StreamHandler that lets the access-log writer thread (or a request thread helping it)
    put up to ACCESS_LOG_BATCH lines in one write. Written one by one, each line's write gave
    the GIL away, and the writer had to win it back from every request thread once per line:
    at 64 busy connections it fell behind and dropped a quarter of the lines. Any other line
    is written at once, after the held ones, so the order stays. ``python appserver.py`` logs
    through one."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self._held = []

    def emit(self, record):
        try:
            self.emit_lines(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def emit_lines(self, text: str):
        """Write formatted lines, each ending in the terminator (held while in a batch)."""
        with self.lock:
            self._held.append(text)
        if _writer_batch.holding:
            _writer_batch.handlers.add(self)
        else:
            self.flush()

    def flush(self):
        with self.lock:
            text, self._held = "".join(self._held), []
            if text and self.stream:
                self.stream.write(text)
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()


def log_to_stream(stream, level: int = logging.INFO):
    """How ``python appserver.py`` logs: every logger, the access log included, to ``stream``
    through one BatchingStreamHandler with a LogFormatter. As logging.basicConfig: nothing
    if logging is configured already."""
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(LogFormatter())
    logging.basicConfig(level=level, handlers=[handler])


def _overrides(instance, names) -> bool:
    """Whether a method of ``instance`` was replaced on the instance itself."""
    return any(name in vars(instance) for name in names)


def plain_access_route(logger: logging.Logger) -> Optional[BatchingStreamHandler]:
    """The one handler a record of ``logger`` at INFO reaches, when nothing on its way can
    drop, change or copy it: no filter, no other handler, no formatter but a LogFormatter
    (as log_to_stream sets up). The access-log writer then formats a batch of lines and
    hands that handler the text: logging's own route for each line (Logger.handle,
    callHandlers, Handler.handle, the filters, a lock) cost more than its formatting. None
    otherwise: the records go through logging, one by one."""
    if (type(logger).handle is not logging.Logger.handle
            or type(logger).callHandlers is not logging.Logger.callHandlers
            or _overrides(logger, ("handle", "callHandlers", "filter"))):
        return None  # a Logger class or instance of the embedder's, which may change records
    found = None
    current = logger
    while current is not None:
        if current.disabled or current.filters:
            return None
        for handler in current.handlers:
            if (found is not None or type(handler) is not BatchingStreamHandler
                    or handler.filters or handler.level > logging.INFO
                    or type(handler.formatter) is not LogFormatter
                    or _overrides(handler, ("handle", "emit", "format", "filter"))
                    or _overrides(handler.formatter, ("format", "formatTime", "formatMessage",
                                                      "usesTime"))):
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def _write_held_lines():
    """Write what this thread's BatchingStreamHandlers hold."""
    handlers = _writer_batch.handlers
    while handlers:
        handler = handlers.pop()
        try:
            handler.flush()
        except Exception:  # a broken sink: reported as logging reports it, and go on
            handler.handleError(None)


class _AccessLogWriter(logging.handlers.QueueListener):
    """The writer thread's end: records go to the access logger's handlers (and its
    parents'), so that the access log is configured like any other logger; a flush marker is
    set once everything before it is written. While more records wait, BatchingStreamHandlers
    hold their lines, up to ACCESS_LOG_BATCH; on a plain_access_route the writer formats up
    to ACCESS_LOG_BATCH lines itself and hands them over as one text.

    Past ACCESS_LOG_HELP_AT waiting records, request threads help (see help()).
    """

    def __init__(self, queue_handler: _DroppingQueueHandler, logger: logging.Logger):
        super().__init__(queue_handler.queue)
        self.queue_handler = queue_handler
        self.logger = logger
        self._lines = 0
        self._helping = threading.Lock()

    def dequeue(self, block):
        item = super().dequeue(block)
        if item is self._sentinel:
            self._write_held()
        return item

    def handle(self, record):
        if isinstance(record, threading.Event):
            self._write_held()
            with self._helping:  # lines a request thread took before the marker are written
                record.set()
            return
        if self._lines == 0:
            route = plain_access_route(self.logger)
            if route is not None:  # this record and what else waits, as one write
                self._write_plain(route, [record] + self.queue.take_records(
                    ACCESS_LOG_BATCH - 1))
                self._write_held()
                return
        self._lines += 1
        holding = self._lines < ACCESS_LOG_BATCH and self.queue.qsize() > 0
        _writer_batch.holding = holding
        try:
            self._write(record)
        finally:
            _writer_batch.holding = False
        if not holding:
            self._write_held()

    def _write(self, record):
        try:
            self.logger.handle(record)
        except Exception:  # an embedder's filter or handler that raises: one line lost, counted
            self.queue_handler.dropped += 1

    def _write_plain(self, route: BatchingStreamHandler, records: list):
        format_plain, terminator = route.formatter.format_plain, route.terminator
        lines = []
        for record in records:
            try:
                lines.append(format_plain(record) + terminator)
            except Exception:
                self.queue_handler.dropped += 1
                route.handleError(record)
        try:
            route.emit_lines("".join(lines))
        except Exception:  # a broken sink: reported as logging reports it, and counted
            self.queue_handler.dropped += len(lines)
            route.handleError(None)

    def _write_held(self):
        self._lines = 0
        _write_held_lines()
        # Let a request thread run before the next batch. The write gave the GIL away, and
        # the writer takes it straight back to format more lines; a request thread woken by
        # its socket then waits for it up to the switch interval (5 ms), a convoy that set
        # the token p99 at 8 connections. help() makes up for the writer's smaller share.
        _yield_cpu()

    def help(self):
        """Write a batch of the backlog from a request thread, after its response is sent.
        With every CPU busy the writer thread wins too little of the GIL from the request
        threads to keep up: at 64 connections it wrote two lines in three, and dropped the
        rest. The threads that make the lines then write some too. One helper at a time,
        the others go on: a log sink that stalls holds up one connection (and a shutdown,
        which waits for it, until the sink drains), not every thread. A helper's lines can
        overtake the lines the writer has taken and not yet written (a batch at most); lines
        were never in arrival order, and each carries its arrival time."""
        if not self._helping.acquire(blocking=False):
            return
        try:
            _writer_batch.holding = True
            try:
                route = plain_access_route(self.logger)
                records = self.queue.take_records(ACCESS_LOG_BATCH)
                if route is not None and records:
                    self._write_plain(route, records)
                else:
                    for record in records:
                        self._write(record)
            finally:
                _writer_batch.holding = False
                _write_held_lines()
        finally:
            self._helping.release()

    def enqueue_sentinel(self):
        self.queue.put_control(self._sentinel)


ACCESS_LINE = '%s "%s %s" %s %s %.1fms%s'


class AccessLogQueue:
    """One access-log line per request through ``logging``, written by a background thread
    (QueueHandler + QueueListener).

    A logging call costs more than answering a token, and with many request threads they
    queue on the handler's lock. Request threads only make the record and enqueue it; each
    record is stamped with the time its request arrived, not the time it is written.
    """

    def __init__(self, logger: logging.Logger = access_log, backlog: int = ACCESS_LOG_BACKLOG):
        self.logger = logger
        self.handler = _DroppingQueueHandler(backlog)
        self.listener = _AccessLogWriter(self.handler, logger)
        # LogRecord.__init__ asks the kernel for the pid and splits a file name for every
        # record: a tenth of a token's serving time in a profile under load. Records are
        # copies of this one instead, with their own time, thread and arguments.
        self._template = vars(logger.makeRecord(logger.name, logging.INFO, __file__, 0,
                                                ACCESS_LINE, (), None))
        self._start = self._template["created"] - self._template["relativeCreated"] / 1000
        self._closed = False
        self.listener.start()

    def _make_record(self, level: int, msg: str, args: tuple, arrived: float):
        logger = self.logger
        if (level == logging.INFO and logging.getLogRecordFactory() is logging.LogRecord
                and type(logger).makeRecord is logging.Logger.makeRecord):
            record = logging.LogRecord.__new__(logging.LogRecord)
            fields = self._template.copy()
            fields["args"] = args
            if fields["thread"] is not None:
                fields["thread"] = threading.get_ident()
                fields["threadName"] = threading.current_thread().name
            fields["created"], fields["msecs"] = arrived, (arrived % 1) * 1000
            fields["relativeCreated"] = (arrived - self._start) * 1000
            record.__dict__ = fields
            return record
        # An embedder's record factory or Logger class makes its own records.
        record = logger.makeRecord(logger.name, level, __file__, 0, msg, args, None)
        record.created, record.msecs = arrived, (arrived % 1) * 1000
        record.relativeCreated = (arrived - self._start) * 1000
        return record

    def record(self, arrived, client, method, path, status, size, elapsed_ms, note="", *,
               may_help: bool = True):
        """Queue one line. ``may_help``: the calling thread may write a batch of a long
        backlog; False for a thread that must never wait on the log sink (the accept loop)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        if self.handler.dropped and not self.handler.queue.full():
            dropped, self.handler.dropped = self.handler.dropped, 0
            self.handler.handle(self._make_record(
                logging.WARNING, "%d access-log lines dropped: log output too slow or failing",
                (dropped,), time.time()))
        self.handler.handle(self._make_record(
            logging.INFO, ACCESS_LINE,
            (client, printable(method or "-", 16), printable(path), status, size, elapsed_ms,
             " " + printable(note) if note else ""), arrived))
        if may_help and self.handler.queue.qsize() >= ACCESS_LOG_HELP_AT:
            self.listener.help()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every record queued so far has been written; False on a timeout. After
        close() there is no writer: return at once."""
        if self._closed:
            return False
        written = threading.Event()
        self.handler.queue.put_control(written)
        return written.wait(timeout)

    def close(self):
        """Stop the writer thread after what is queued; give up on a stalled log sink."""
        if not self._closed:
            self.flush(LOG_STOP_TIMEOUT)
            self._closed = True
            self.listener.enqueue_sentinel()


class AppServer(socketserver.ThreadingTCPServer):
    """A threading TCP server with a connection cap, deadlines and graceful shutdown. The
    configuration lives here, on the server object, not in globals.

    Deadlines are kept by a watchdog, not by socket timeouts: a socket timeout applies to one
    recv, so a client sending a byte just before each timeout would hold a thread forever,
    and timeouts put every recv and send behind an extra poll. serve_forever's loop (see
    service_actions) shuts down each connection that is idle past ``idle_timeout`` or whose
    request is not answered ``request_timeout`` after its first line; that wakes the thread.
    """

    allow_reuse_address = True
    daemon_threads = False     # finish in-flight requests on shutdown
    block_on_close = True
    request_queue_size = 1024  # the default of 5 overflows at 8 concurrent clients

    def __init__(self, address, app: App, *, idle_timeout: float = IDLE_TIMEOUT,
                 request_timeout: float = REQUEST_TIMEOUT, max_connections: Optional[int] = None):
        self.app = app
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.stopping = False
        self._slots = threading.BoundedSemaphore(max_connections or app.config.max_connections)
        self._watched = {}  # connection -> (deadline, idle); dict ops are atomic under the GIL
        self._next_sweep = 0.0
        self._date = (0, "")
        if ":" in address[0]:  # an IPv6 literal such as ::1
            self.address_family = socket.AF_INET6
        self.access_log = AccessLogQueue()  # before binding: a failed bind calls server_close
        super().__init__(address, AppRequestHandler)

    def http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True))
        return self._date[1]

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self._refuse_over_capacity(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def _refuse_over_capacity(self, request, client_address):
        """A fast 503 and close, never another thread."""
        response = error_response(503, "too many connections", [("Retry-After", "1")], True)
        try:
            request.settimeout(OVERLOAD_SEND_TIMEOUT)
            request.sendall(serialize_response(response, self.http_date(), close=True))
        except OSError:
            pass
        self.shutdown_request(request)
        self.access_log.record(time.time(), client_address[0], "-", "-", 503,
                               len(response.body), 0.0, "over OSS_MAX_CONNECTIONS",
                               may_help=False)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        log.exception("unhandled error on a connection from %s", client_address[0])

    # -- deadlines -------------------------------------------------------------------------

    def await_request(self, connection) -> bool:
        """A connection starts waiting for a request: the idle timeout runs. False once the
        server is stopping: the connection should close instead."""
        if self.stopping:
            return False
        self._watched[connection] = (time.monotonic() + self.idle_timeout, True)
        return True

    def request_started(self, connection, deadline: float):
        self._watched[connection] = (deadline, False)

    def forget(self, connection):
        self._watched.pop(connection, None)

    def service_actions(self):
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + WATCHDOG_INTERVAL
            self._close_connections(lambda deadline, idle: deadline <= now)

    def _close_connections(self, condition):
        for connection, (deadline, idle) in self._watched.copy().items():
            if condition(deadline, idle):
                self._watched.pop(connection, None)
                try:
                    connection.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv or send
                except OSError:
                    pass

    def stop(self):
        """Stop serve_forever (running in another thread), then server_close()."""
        self.stopping = True
        self.shutdown()
        self.server_close()

    def server_close(self):
        """Stop accepting and drain: idle keep-alive connections close at once, requests in
        flight finish within their deadline, then anything left is cut, the handler threads
        are joined and the pending access log is written."""
        self.stopping = True
        self.socket.close()
        until = time.monotonic() + self.request_timeout + 1
        while self._watched and time.monotonic() < until:
            now = time.monotonic()
            self._close_connections(lambda deadline, idle: idle or deadline <= now)
            time.sleep(DRAIN_POLL_INTERVAL)
        self._close_connections(lambda deadline, idle: True)
        super().server_close()
        self.access_log.close()
        self.app.credentials.stop()


def make_server(config: Config, host: str = "127.0.0.1", port: int = 0, *,
                app: Optional[App] = None, static_dir: Optional[str] = None,
                **options) -> AppServer:
    """A bound, not yet serving, server; ``options`` go to AppServer."""
    app = app or App(config, static_dir=static_dir)
    return AppServer((host, port), app, **options)


###############################################################################
# 15. WSGI ####################################################################
###############################################################################

# gunicorn's APP_LOAD_ERROR: the arbiter stops, instead of respawning a worker that can only
# fail the same way.
WSGI_CONFIG_ERROR_EXIT = 4


def log_to_stderr_unless_configured():
    """Give the ``appserver`` loggers a stderr handler when the host application has set up
    no logging of its own, so that warnings are not lost under a WSGI server."""
    if logging.getLogger().handlers or log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter())
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


def wsgi_request(environ) -> tuple:
    """(method, raw target, headers, content length) from a WSGI environ."""
    method = environ.get("REQUEST_METHOD", "GET").upper()
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        # Rebuilt from decoded parts: quoting the raw bytes back gives the same signed
        # string. Lost: a bare '?' with an empty query, which the callback signs.
        path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) or "/"
        target = urllib.parse.quote_from_bytes(path.encode("latin-1"), safe="/;=,@:+$!*'()~")
        if environ.get("QUERY_STRING"):
            target += "?" + environ["QUERY_STRING"]
    headers = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers[name[5:].replace("_", "-").lower()] = [value]
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = [environ["CONTENT_TYPE"]]
    length = (environ.get("CONTENT_LENGTH") or "").strip()
    return method, target, headers, int(length) if DECIMAL.fullmatch(length) else None


def make_wsgi_app(config: Optional[Config] = None, *,
                  callback_hook: Optional[Callable[[dict], dict]] = None):
    """The same routes as a WSGI app, for gunicorn, uWSGI or waitress.

    Without ``config`` it is read from the environment now, at call time, so importing this
    module still starts nothing. A bad setting is one line on stderr and exit status 4
    (gunicorn then stops rather than respawning workers). The front server has already framed
    the request, so the framing checks of the http.server handler are not repeated here.
    """
    log_to_stderr_unless_configured()
    warnings = []
    if config is None:
        try:
            config = config_from_env(os.environ, server_url=None)
        except ConfigError as exc:
            print("appserver: configuration error: %s" % exc, file=sys.stderr, flush=True)
            raise SystemExit(WSGI_CONFIG_ERROR_EXIT) from None
        warnings = config_warnings(config)
        if not config.callback_url:
            # Behind a WSGI server this process cannot know its public address.
            warnings.append("OSS_CALLBACK_URL is not set: tokens carry no callback")
    try:
        app = App(config, callback_hook=callback_hook)
    except ConfigError as exc:
        print("appserver: configuration error: %s" % exc, file=sys.stderr, flush=True)
        raise SystemExit(WSGI_CONFIG_ERROR_EXIT) from None
    for warning in warnings + app_warnings(app):
        log.warning("%s", warning)

    def application(environ, start_response):
        method, target, headers, content_length = wsgi_request(environ)

        def read_body(size):
            try:
                body = environ["wsgi.input"].read(size)
            except OSError:  # the client went away (gunicorn's NoMoreData is an IOError)
                body = b""
            if len(body) != size:
                raise BadRequest("request body shorter than Content-Length")
            return body

        status, response_headers, body, _, note = app.handle(
            method, target, headers, content_length, read_body, environ.get("REMOTE_ADDR", ""))
        if note:
            log.info("%s %s: %s", printable(method, 16), printable(target.partition("?")[0]),
                     printable(note))
        if status != 204:
            response_headers = response_headers + [("Content-Length", str(len(body)))]
        start_response("%d %s" % (status, http.client.responses.get(status, "Unknown")),
                       response_headers)
        return [b"" if method == "HEAD" or status == 204 else body]

    return application


###############################################################################
# 16. Deployment check ########################################################
###############################################################################

# `python appserver.py --check`: the usual reasons a deployment fails silently in the browser
# (wrong keys, wrong region, no bucket CORS rule, a clock off, a callback URL OSS cannot
# reach, a missing permission), each found by asking OSS. Never prints a secret.

CHECK_TIMEOUT = 10.0           # per request to OSS
SKEW_WARN_SECONDS = 5
MAX_SKEW_SECONDS = 15 * 60     # OSS refuses requests further off: RequestTimeTooSkewed
CHECK_KEY_NAME = ".oss-appserver-check-"


class Check(NamedTuple):
    level: str      # OK, WARN or FAIL
    what: str
    reason: str
    fix: str = ""

    def line(self) -> str:
        text = "%-4s %-13s %s" % (self.level, self.what, self.reason)
        return text + ("; fix: " + self.fix if self.fix and self.level != "OK" else "")


def _denied(answer: OssAnswer) -> bool:
    return answer.status == 403 and answer.code in ("AccessDenied", "")


def _refusal(answer: OssAnswer) -> str:
    return "HTTP %d %s%s" % (answer.status, answer.code or "(no code)",
                             ": " + answer.message if answer.message else "")


def check_clock(config: Config, answer: OssAnswer, sent: float, received: float) -> Check:
    """Skew against OSS's Date. Behind by OSS_EXPIRE_SECONDS - 5 or more, every policy has
    expired when it arrives; beyond 15 minutes OSS refuses every signed request."""
    try:
        oss_time = email.utils.parsedate_to_datetime(answer.headers.get("Date", "")).timestamp()
    except (TypeError, ValueError, IndexError):
        return Check("WARN", "clock", "OSS sent no readable Date header; skew not measured")
    behind = oss_time - (sent + received) / 2  # > 0: this server is behind OSS
    text = "%.0f s %s OSS" % (abs(behind), "behind" if behind > 0 else "ahead of")
    fix = "synchronize this machine's clock (NTP, chrony)"
    if abs(behind) > MAX_SKEW_SECONDS:
        return Check("FAIL", "clock", text + ": OSS refuses requests over 15 minutes off", fix)
    if behind >= config.expire_seconds - 5:
        return Check("FAIL", "clock", text + ": every policy (OSS_EXPIRE_SECONDS=%d) expires "
                     "before it arrives" % config.expire_seconds, fix)
    if abs(behind) > SKEW_WARN_SECONDS:
        return Check("WARN", "clock", text, fix)
    return Check("OK", "clock", text)


def check_bucket(config: Config, answer: OssAnswer) -> Check:
    """GetBucketInfo: keys accepted, bucket there, and in the region OSS_REGION names."""
    resource = "acs:oss:*:*:%s" % config.bucket
    if answer.status == 200:
        location = printable(_xml_text(answer.body, "Bucket/Location")[0], 64)
        if config.region and location and location != "oss-" + config.region:
            return Check("FAIL", "bucket", "bucket %s is in %s, OSS_REGION is %s"
                         % (config.bucket, location, config.region),
                         "set OSS_HOST and OSS_REGION to the bucket's region (%s)"
                         % location[len("oss-"):])
        return Check("OK", "bucket", "bucket %s found%s, credentials accepted"
                     % (config.bucket, " in " + location if location else ""))
    if answer.code == "RequestTimeTooSkewed":
        return Check("FAIL", "bucket", "not checked: OSS refuses this server's clock",
                     "synchronize this machine's clock (NTP, chrony)")
    if answer.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSecurityToken",
                       "SecurityTokenExpired"):
        return Check("FAIL", "credentials", "OSS refused the credentials: " + _refusal(answer),
                     "check the AccessKey ID and secret (or the role) the server uses")
    if answer.code == "NoSuchBucket":
        return Check("FAIL", "bucket", "bucket %s does not exist" % config.bucket,
                     "set OSS_HOST (or OSS_BUCKET) to an existing bucket")
    if "endpoint" in answer.message.lower() or answer.code in ("InvalidArgument",
                                                               "InvalidRegion"):
        return Check("FAIL", "bucket", "wrong region or endpoint: " + _refusal(answer),
                     "set OSS_HOST and OSS_REGION to the bucket's region")
    if _denied(answer):
        return Check("WARN", "bucket", "not allowed to read bucket info (%s); uploads may "
                     "still work" % _refusal(answer),
                     "to check it, allow oss:GetBucketInfo on " + resource)
    return Check("FAIL", "bucket", "GetBucketInfo failed: " + _refusal(answer),
                 "see the OSS error code above")


def check_cors(config: Config, answer: OssAnswer, origins) -> list:
    resource = "acs:oss:*:*:%s" % config.bucket
    if _denied(answer):
        return [Check("WARN", "cors", "not allowed to read the bucket's CORS rules (%s)"
                      % _refusal(answer), "to check them, allow oss:GetBucketCors on "
                      + resource)]
    if answer.status == 404 and answer.code == "NoSuchCORSConfiguration":
        root = xml.etree.ElementTree.Element("CORSConfiguration")
    elif answer.status == 200:
        try:
            root = parse_cors_configuration(answer.body)
        except ValueError as exc:
            return [Check("FAIL", "cors", str(exc), "see GetBucketCors")]
    else:
        return [Check("FAIL", "cors", "GetBucketCors failed: " + _refusal(answer),
                      "see the OSS error code above")]
    if not origins:
        return [Check("WARN", "cors", "no page origin given, so the CORS rules were not "
                      "checked", "pass --origin https://your-page.example (repeatable)")]
    checks = []
    for origin in origins:
        problem = cors_upload_problem(root, origin)
        checks.append(Check("FAIL", "cors", problem, "python appserver.py --apply-cors "
                            + origin) if problem else
                      Check("OK", "cors", "%s may POST and read ETag, x-oss-request-id"
                            % origin))
    return checks


def check_callback_urls(config: Config) -> list:
    if not config.callback_url:
        return [Check("OK", "callback URL", "no callback configured")]
    checks = []
    for url in config.callback_url.split(";"):
        parts = urllib.parse.urlsplit(url)
        if unreachable_from_oss(parts.hostname or ""):
            checks.append(Check("FAIL", "callback URL", "%s is loopback or private: OSS "
                                "cannot reach it, so every upload ends in 203 CallbackFailed"
                                % printable(url), "set OSS_CALLBACK_URL to a public address "
                                "of this server"))
        elif parts.scheme == "http":
            checks.append(Check("WARN", "callback URL", "%s is plain http" % printable(url),
                                "use an https callback URL"))
        else:
            checks.append(Check("OK", "callback URL", printable(url)))
    return checks


def check_confirmation(config: Config, answer: Optional[OssAnswer], key: str) -> Check:
    if answer is None:
        return Check("OK", "confirmation", "upload confirmation is off")
    if answer.status == 404:
        return Check("OK", "confirmation", "HEAD of a missing key answers 404, as "
                     "confirmation needs")
    if _denied(answer):
        return Check("FAIL", "confirmation", "HEAD %s was refused (%s): every callback "
                     "would answer 503" % (printable(key), _refusal(answer)),
                     "allow oss:GetObject on acs:oss:*:*:%s/%s*, or set "
                     "OSS_CONFIRM_UPLOADS=0" % (config.bucket, config.upload_dir.partition(
                         USER_PLACEHOLDER)[0]))
    return Check("FAIL", "confirmation", "HEAD of a missing key answered %s, not 404"
                 % _refusal(answer), "see the OSS error code above")


def check_deployment(config: Config, credentials: Optional[Credentials], origins=(), *,
                     request: Callable = oss_request,
                     clock: Callable[[], float] = time.time) -> list:
    """Every check, in order; later ones are skipped when OSS cannot be asked at all."""
    checks = [Check("OK", "config", "the configuration parses")]
    if config.placeholder_credentials:
        return checks + [Check("FAIL", "credentials", "placeholder credentials",
                               "set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET, or a role "
                               "(see --help)")]
    if credentials is None:
        return checks + [Check("FAIL", "credentials", "no %s credentials could be had"
                               % config.credentials, "see the log lines above")]
    expiry = ("expire at " + utc_iso8601(int(credentials.expiration))
              if credentials.expiration else "do not expire")
    checks.append(Check("OK", "credentials", "%s credentials (%s), which %s"
                        % (config.credentials, credentials.access_key_id, expiry)))
    if not config.bucket:
        return checks + [Check("FAIL", "bucket", "the bucket is not known",
                               "set OSS_BUCKET, or an OSS_HOST that names it")]

    def ask(method, key="", query=None):
        return request(config, credentials, method, key, query=query, timeout=CHECK_TIMEOUT,
                       now=clock())

    sent = time.time()
    try:
        info = ask("GET", query={"bucketInfo": None})
    except FetchFailed as exc:
        return checks + [Check("FAIL", "reachable", "cannot reach OSS at %s: %s"
                               % (config.host, exc), "check OSS_HOST and the network")]
    checks.append(Check("OK", "reachable", "OSS answers at " + config.host))
    checks.append(check_clock(config, info, sent, time.time()))
    checks.append(check_bucket(config, info))
    try:
        checks += check_cors(config, ask("GET", query={"cors": None}), origins)
        key = None
        if config.confirms_uploads:
            key = "%s%s%s" % (config.upload_dir.partition(USER_PLACEHOLDER)[0],
                              CHECK_KEY_NAME, uuid.uuid4().hex)
        checks.append(check_confirmation(config, ask("HEAD", key) if key else None, key))
    except FetchFailed as exc:
        checks.append(Check("FAIL", "reachable", "OSS stopped answering: %s" % exc,
                            "check the network"))
    return checks + check_callback_urls(config)


def tool_credentials(config: Config) -> Optional[Credentials]:
    """The credentials the server would sign with, fetched once for a command-line tool."""
    provider = make_credential_provider(config)
    if provider.refreshes:
        provider.start()
        provider.wait_ready(CREDENTIALS_FETCH_TIMEOUT)
        provider.stop()
    return provider.current()


def bucket_cors_configuration(config: Config, credentials: Credentials, *,
                              request: Callable = oss_request):
    """The bucket's CORSConfiguration element (empty when it has none), or OssRefused."""
    answer = request(config, credentials, "GET", query={"cors": None}, timeout=CHECK_TIMEOUT)
    if answer.status == 404 and answer.code == "NoSuchCORSConfiguration":
        return xml.etree.ElementTree.Element("CORSConfiguration")
    if answer.status != 200:
        raise OssRefused("GetBucketCors: " + _refusal(answer))
    try:
        return parse_cors_configuration(answer.body)
    except ValueError as exc:
        raise OssRefused("GetBucketCors: %s" % exc) from None


def cors_command(config: Config, credentials: Credentials, origin: str, *, apply: bool,
                 out=sys.stdout, request: Callable = oss_request) -> int:
    """--print-cors prints the PutBucketCors XML that admits uploads from ``origin``, made
    from the bucket's rules; --apply-cors shows before and after, then puts it."""
    try:
        current = bucket_cors_configuration(config, credentials, request=request)
        updated = cors_with_upload_rule(current, origin)
        if not apply:
            out.write(cors_xml(updated).decode("utf-8") + "\n")
            return 0
        out.write("before:\n%s\n" % cors_xml(current).decode("utf-8"))
        if cors_upload_problem(current, origin) is None:
            out.write("the bucket already admits uploads from %s: nothing to do\n" % origin)
            return 0
        body = cors_xml(updated)
        out.write("after:\n%s\n" % body.decode("utf-8"))
        answer = request(config, credentials, "PUT", query={"cors": None}, body=body,
                         headers={"Content-Type": "application/xml",
                                  "Content-MD5": b64encode_text(hashlib.md5(body).digest())},
                         timeout=CHECK_TIMEOUT)
        if answer.status != 200:
            raise OssRefused("PutBucketCors: " + _refusal(answer))
    except (OssRefused, FetchFailed) as exc:
        out.write("appserver.py: %s\n" % exc)
        return 1
    out.write("applied: uploads from %s are admitted\n" % origin)
    return 0


###############################################################################
# 17. Command line ############################################################
###############################################################################

USAGE = ("usage: appserver.py [-h] [--idle-timeout SECONDS] [--request-timeout SECONDS] "
         "[[ip] port]\n       appserver.py --check [--origin URL ...] [[ip] port]\n"
         "       appserver.py --print-cors ORIGIN | --apply-cors ORIGIN")
SIGNAL_POLL_INTERVAL = 0.5  # a backstop: the wakeup fd normally ends the wait at once
_OPTIONS = {"--idle-timeout": ("idle_timeout", IDLE_TIMEOUT,
                               "seconds a keep-alive connection may wait for a request"),
            "--request-timeout": ("request_timeout", REQUEST_TIMEOUT,
                                  "seconds from a request line to the end of its response")}


def help_text() -> str:
    lines = [USAGE, "",
             "Serve OSS upload tokens (GET /), verify OSS upload callbacks (POST), and the",
             "browser client (/index.html).",
             "",
             "  appserver.py              listen on 127.0.0.1:8080",
             "  appserver.py PORT         listen on 0.0.0.0:PORT (all interfaces, as the sample)",
             "  appserver.py IP PORT      listen on IP:PORT (an IPv6 address such as ::1 too)",
             "",
             "Options:"]
    for option, (_, default, meaning) in _OPTIONS.items():
        lines.append("  %-26s %s (default: %g)" % (option + " SECONDS", meaning, default))
    lines += ["", "Tools (they ask OSS with the server's settings and credentials):",
              "  --check                  check the deployment against OSS: one OK/WARN/FAIL",
              "                           line per check; exit 1 if any failed",
              "  --origin URL             with --check: a page origin that must be able to",
              "                           upload (bucket CORS); repeatable",
              "  --print-cors ORIGIN      print the bucket's CORS rules, extended to admit",
              "                           uploads from ORIGIN (PutBucketCors XML)",
              "  --apply-cors ORIGIN      show them before and after, then apply them"]
    lines += ["", "Credentials (OSS_CREDENTIALS=auto takes the first that is set):",
              "  1. oidc      ALIBABA_CLOUD_ROLE_ARN + ALIBABA_CLOUD_OIDC_PROVIDER_ARN +",
              "               ALIBABA_CLOUD_OIDC_TOKEN_FILE: STS AssumeRoleWithOIDC (ACK RRSA)",
              "  2. ram_role  ALIBABA_CLOUD_ROLE_ARN + an AccessKey: STS AssumeRole",
              "  3. static    OSS_ACCESS_KEY_ID/SECRET (or ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET)",
              "  4. ecs       ALIBABA_CLOUD_ECS_METADATA=<role>: the ECS instance RAM role",
              "               (OSS_CREDENTIALS=ecs alone discovers the role name)",
              "  5. uri       ALIBABA_CLOUD_CREDENTIALS_URI",
              "  otherwise placeholders, with a warning. Temporary credentials refresh in the",
              "  background; GET / and /readyz answer 503 while none are valid.",
              "", "Environment variables (read once at startup):"]
    for s in SETTINGS:
        names = " or ".join((s.name,) + s.fallbacks)
        lines.append("  %s\n      %s (default: %s)" % (names, s.help, s.shown_default))
    return "\n".join(lines)


def parse_args(argv):
    """(host, port) from the sample's positional arguments; raises ValueError."""
    if len(argv) > 2 or any(arg.startswith("-") for arg in argv):
        raise ValueError("too many or unknown arguments")
    host, port = "127.0.0.1", "8080"
    if len(argv) == 1:
        host, port = "0.0.0.0", argv[0]
    elif len(argv) == 2:
        host, port = argv
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise ValueError("port must be a number from 0 to 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_NAME.match(host):
            raise ValueError("ip must be an address such as 127.0.0.1") from None
    return host, int(port)


def parse_tool_options(argv) -> tuple:
    """(the other arguments, (tool, [origins]) or None); raises ValueError."""
    rest, tool, target, origins = [], None, [], []
    argv = list(argv)
    while argv:
        arg = argv.pop(0)
        name, equals, value = arg.partition("=")
        if name not in ("--check", "--origin", "--print-cors", "--apply-cors"):
            rest.append(arg)
            continue
        if name == "--check":
            value, name = None, "check"
        elif not equals:
            if not argv:
                raise ValueError("%s needs a URL" % name)
            value = argv.pop(0)
        if value is not None and not is_http_origin(value.rstrip("/")):
            raise ValueError("%s needs an origin such as https://app.example.com" % arg)
        if name == "--origin":
            origins.append(value.rstrip("/"))
            continue
        if tool is not None:
            raise ValueError("give one of --check, --print-cors, --apply-cors")
        tool = name.lstrip("-")
        if value is not None:
            target = [value.rstrip("/")]
    if origins and tool != "check":
        raise ValueError("--origin goes with --check")
    return rest, (tool, target + origins) if tool else None


def parse_options(argv) -> tuple:
    """(positional arguments, {option field: value}) ; raises ValueError."""
    options = {field: default for field, default, _ in _OPTIONS.values()}
    positional = []
    argv = list(argv)
    while argv:
        arg = argv.pop(0)
        name, equals, value = arg.partition("=")
        if name not in _OPTIONS:
            positional.append(arg)
            continue
        if not equals:
            if not argv:
                raise ValueError("%s needs a value" % name)
            value = argv.pop(0)
        try:
            seconds = float(value)
        except ValueError:
            seconds = float("nan")
        if not 0.1 <= seconds <= 3600:
            raise ValueError("%s must be a number of seconds from 0.1 to 3600" % name)
        options[_OPTIONS[name][0]] = seconds
    return positional, options


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a server listening on host:port."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return "http://%s:%d" % (url_host(host), port)


def listen_warnings(config: Config, host: str) -> list:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if config.token_auth == "none" and not loopback:
        return ["OSS_TOKEN_AUTH=none on %s: anyone who can reach this server gets tokens that "
                "write into the bucket (set OSS_TOKEN_AUTH=hmac or header)" % host]
    return []


def print_banner(config: Config, server: AppServer) -> None:
    host, port = server.server_address[:2]
    bound = "http://%s:%d" % (url_host(host), port)
    url = local_url(host, port)
    if bound == url:
        print("oss-appserver listening on %s" % bound)
    else:
        print("oss-appserver listening on %s (all interfaces; from this machine: %s)"
              % (bound, url))
    if "/index.html" in server.app.static_files:
        print("  page:      %s/index.html" % url)
    print("  token:     curl %s/" % url)
    print("  signature: %s, bucket host %s" % (config.signature_version, config.host))
    provider = server.app.credentials
    print("  credentials: %s" % ("PLACEHOLDERS (uploads to real OSS will fail)"
                                 if config.placeholder_credentials else
                                 "%s %s" % (provider.name, provider.detail) if provider.refreshes
                                 else "static AccessKey from the environment"))
    print("  callback:  %s" % (config.callback_url or "none"), flush=True)


class StopSignals:
    """SIGINT and SIGTERM, honoured whichever thread the kernel delivers them to.

    Python runs signal handlers only in the main thread, and only once it is back in the
    interpreter loop; a main thread blocked in a long wait never gets there when the signal
    lands on another thread. The C-level handler also writes to the wakeup fd in whatever
    thread received the signal, so the main thread waits on that fd instead.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self._reader, self._writer = socket.socketpair()
        self._saved = {}
        self._saved_fd = -1

    def __enter__(self):
        for sock in (self._reader, self._writer):
            sock.setblocking(False)
        self._saved_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in self.SIGNALS:
            self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def wait(self, timeout: Optional[float] = None):
        """The signal received, or None once ``timeout`` seconds have passed without one."""
        until = None if timeout is None else time.monotonic() + timeout
        while self.received is None:
            left = SIGNAL_POLL_INTERVAL if until is None else until - time.monotonic()
            if left <= 0:
                break
            select.select([self._reader], [], [], min(left, SIGNAL_POLL_INTERVAL))
            try:
                self._reader.recv(64)
            except OSError:  # nothing was written: the poll interval ran out
                pass
        return self.received

    def __exit__(self, *exc_info):
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._saved_fd)
        self._reader.close()
        self._writer.close()


def await_first_credentials(provider, stop: StopSignals) -> None:
    """Give temporary credentials a few seconds to arrive before saying they have not."""
    if not provider.refreshes:
        return
    provider.start()
    until = time.monotonic() + CREDENTIALS_FETCH_TIMEOUT
    while provider.current() is None and time.monotonic() < until:
        if stop.wait(0.1) is not None:
            return
    if provider.current() is None:
        log.warning("no %s credentials yet: tokens answer 503 until they arrive", provider.name)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text())
        return 0
    try:
        argv, tool = parse_tool_options(argv)
        positional, options = parse_options(argv)
        host, port = parse_args(positional)
    except ValueError as exc:
        print("%s\nappserver.py: error: %s (see --help)" % (USAGE, exc), file=sys.stderr)
        return 2
    if tool is not None:
        return run_tool(*tool, local_url(host, port))
    log_to_stream(sys.stderr)
    try:
        config = config_from_env(os.environ, local_url(host, port))
    except ConfigError as exc:
        print("appserver.py: configuration error: %s" % exc, file=sys.stderr)
        return 2
    try:
        server = make_server(config, host, port, **options)
    except ConfigError as exc:
        print("appserver.py: configuration error: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print("appserver.py: cannot listen on %s port %d: %s" % (host, port, exc.strerror),
              file=sys.stderr)
        return 1
    # serve_forever runs in a thread: shutdown() called from the thread that serves deadlocks.
    serving = threading.Thread(target=server.serve_forever,
                               kwargs={"poll_interval": SERVE_POLL_INTERVAL},
                               name="serve_forever")
    with StopSignals() as stop:  # from here on, a signal is a graceful stop, however early
        for warning in config_warnings(config) + listen_warnings(config, host) + \
                app_warnings(server.app):
            log.warning("%s", warning)
        print_banner(config, server)
        serving.start()
        await_first_credentials(server.app.credentials, stop)
        stop.wait()
    log.info("shutting down: finishing in-flight requests")
    server.stop()
    serving.join()
    return 0


def run_tool(tool: str, origins: list, server_url: str) -> int:
    """--check (exit 1 when a check failed), --print-cors, --apply-cors."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        config = config_from_env(os.environ, server_url)
    except ConfigError as exc:
        if tool == "check":
            print(Check("FAIL", "config", str(exc), "set the variable it names").line())
            return 1
        print("appserver.py: configuration error: %s" % exc, file=sys.stderr)
        return 2
    credentials = None if config.placeholder_credentials else tool_credentials(config)
    if tool == "check":
        checks = check_deployment(config, credentials, origins)
        for check in checks:
            print(check.line())
        return 1 if any(check.level == "FAIL" for check in checks) else 0
    if credentials is None or not config.bucket:
        print("appserver.py: %s needs credentials and a known bucket (see --check)"
              % tool, file=sys.stderr)
        return 1
    return cors_command(config, credentials, origins[0], apply=tool == "apply-cors")


def cli():
    sys.exit(main())


if __name__ == "__main__":
    cli()
