#!/usr/bin/env python3
"""OSS direct-upload application server: a hardened port of Alibaba's sample ``appserver.py``.

A browser asks this server for an upload token (``GET /``), posts the file straight to the
bucket (PostObject), and OSS then calls this server back (``POST``), signing the callback with
RSA. This server only believes a callback whose signature verifies under OSS's own public key
(embedded below) or under a key fetched from an allow-listed URL. It also serves the browser
client from ``static/``.

Standard library only; importing this module starts nothing. Run it with
``python appserver.py [ip] [port]``; ``--help`` lists the environment variables.

Sections, in dependency order: configuration, errors, encoding helpers, upload policy,
PEM/DER, RSA, public-key cache, request handling, server, WSGI, CLI.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime
import email.utils
import functools
import hashlib
import hmac
import http.client
import http.server
import io
import ipaddress
import json
import logging
import os
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
from typing import Callable, Mapping, NamedTuple, Optional

__all__ = [
    "Config", "config_from_env", "sign_policy_v1", "sign_policy_v4", "issue_token",
    "PublicKey", "KeyFormatError", "load_public_key", "rsa_verify", "pub_key_url_allowed",
    "PublicKeyCache", "fetch_public_key_pem", "callback_string_to_sign", "App", "Response",
    "make_server", "make_wsgi_app", "main",
]

log = logging.getLogger("appserver")
access_log = logging.getLogger("appserver.access")

HERE = os.path.dirname(os.path.abspath(__file__))


###############################################################################
# Configuration ###############################################################
###############################################################################

PLACEHOLDER_ACCESS_KEY_ID = "your-access-key-id"
PLACEHOLDER_ACCESS_KEY_SECRET = "your-access-key-secret"
DEFAULT_HOST = "https://examplebucket.oss-cn-hangzhou.aliyuncs.com"
# The sample's callback body, byte for byte: the spec section 9 vectors depend on it.
DEFAULT_CALLBACK_BODY = ("filename=${object}&size=${size}&mimeType=${mimeType}"
                         "&height=${imageInfo.height}&width=${imageInfo.width}")
FORM_URLENCODED = "application/x-www-form-urlencoded"
CALLBACK_BODY_TYPES = (FORM_URLENCODED, "application/json")
OSS_KEY_HOST = "gosspublic.alicdn.com"
DEFAULT_PUB_KEY_URL_PREFIXES = ("http://gosspublic.alicdn.com/", "https://gosspublic.alicdn.com/")
MAX_OBJECT_BYTES = 5 * 1024 ** 3  # PostObject refuses bodies of 5 GB and more

ENVIRONMENT = (
    # (variable, default shown in --help, meaning)
    ("OSS_ACCESS_KEY_ID", "placeholder", "AccessKey ID (fallback ALIBABA_CLOUD_ACCESS_KEY_ID)"),
    ("OSS_ACCESS_KEY_SECRET", "placeholder",
     "AccessKey secret (fallback ALIBABA_CLOUD_ACCESS_KEY_SECRET); never printed"),
    ("OSS_SESSION_TOKEN", "unset", "STS token (fallback ALIBABA_CLOUD_SECURITY_TOKEN)"),
    ("OSS_HOST", DEFAULT_HOST, "bucket URL the browser posts to"),
    ("OSS_BUCKET", "from OSS_HOST", "bucket pinned in the policy"),
    ("OSS_SIGNATURE_VERSION", "v1", "v1 (HMAC-SHA1) or v4 (OSS4-HMAC-SHA256)"),
    ("OSS_REGION", "from OSS_HOST", "region for v4, e.g. cn-hangzhou"),
    ("OSS_CALLBACK_URL", "this server", "callback target(s), ';'-separated; empty: no callback"),
    ("OSS_CALLBACK_BODY", "the sample's template", "callbackBody"),
    ("OSS_CALLBACK_BODY_TYPE", FORM_URLENCODED, "or application/json"),
    ("OSS_CALLBACK_SNI", "0", "1: callbackSNI for https callback URLs behind SNI hosting"),
    ("OSS_UPLOAD_DIR", "user-dir-prefix/", "object key prefix, pinned with starts-with"),
    ("OSS_EXPIRE_SECONDS", "30", "policy lifetime"),
    ("OSS_MAX_UPLOAD_BYTES", "10485760", "content-length-range maximum; 0: no limit"),
    ("OSS_CORS_ORIGIN", "*", "Access-Control-Allow-Origin on token responses"),
    ("OSS_PIN_CALLBACK", "1", "0: do not pin the callback parameter in the policy"),
    ("OSS_PUB_KEY_URL_PREFIXES", ",".join(DEFAULT_PUB_KEY_URL_PREFIXES),
     "comma-separated URL prefixes a callback public key may be fetched from"),
    ("OSS_MAX_CALLBACK_BYTES", "1048576", "largest callback body accepted"),
    ("OSS_MAX_CONNECTIONS", "1024", "concurrent connections; more get 503"),
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the server needs, read once. Secrets are kept out of ``repr``."""

    access_key_id: str = PLACEHOLDER_ACCESS_KEY_ID
    access_key_secret: str = dataclasses.field(default=PLACEHOLDER_ACCESS_KEY_SECRET, repr=False)
    security_token: Optional[str] = dataclasses.field(default=None, repr=False)
    host: str = DEFAULT_HOST
    bucket: Optional[str] = None
    signature_version: str = "v1"
    region: Optional[str] = None
    callback_url: str = ""
    callback_body: str = DEFAULT_CALLBACK_BODY
    callback_body_type: str = FORM_URLENCODED
    callback_sni: bool = False
    upload_dir: str = "user-dir-prefix/"
    expire_seconds: int = 30
    max_upload_bytes: int = 10 * 1024 * 1024
    cors_origin: str = "*"
    pin_callback: bool = True
    pub_key_url_prefixes: tuple = DEFAULT_PUB_KEY_URL_PREFIXES
    max_callback_bytes: int = 1024 * 1024
    max_connections: int = 1024

    def __post_init__(self):
        if self.signature_version not in ("v1", "v4"):
            raise ValueError("signature_version must be 'v1' or 'v4'")
        if self.signature_version == "v4" and not self.region:
            raise ValueError("signature_version 'v4' needs a region")

    @property
    def placeholder_credentials(self) -> bool:
        return (self.access_key_id == PLACEHOLDER_ACCESS_KEY_ID
                or self.access_key_secret == PLACEHOLDER_ACCESS_KEY_SECRET)


_BUCKET_HOST = re.compile(
    r"^https?://([a-z0-9][a-z0-9-]{1,61}[a-z0-9])\.(oss-[a-z0-9-]+)\.aliyuncs\.com$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_DECIMAL = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes '+5', '5_0', '٣'
_HTTP_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_CREDENTIAL = re.compile(r"[\x21-\x7e]+")  # printable ASCII: it goes into HMAC keys and headers
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def config_from_env(environ: Mapping[str, str],
                    server_url: Optional[str] = "http://127.0.0.1:8080") -> Config:
    """Build the Config from environment variables; ``server_url`` is the default callback URL.

    Raises ConfigError naming the variable, never echoing its value (it may be a secret).
    """

    def get(name, *fallbacks):
        for candidate in (name,) + fallbacks:
            if candidate in environ:
                return candidate, environ[candidate]
        return name, None

    def text(name, value, *, allow_empty=False):
        if value is None:
            return None
        if not allow_empty and not value:
            raise ConfigError(name, "must not be empty")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ConfigError(name, "must not contain control characters")
        return value

    def integer(name, default, low, high):
        value = environ.get(name)
        if value is None:
            return default
        value = value.strip()
        if not _DECIMAL.fullmatch(value) or not low <= int(value) <= high:
            raise ConfigError(name, "must be a whole number from %d to %d" % (low, high))
        return int(value)

    def flag(name, default):
        value = environ.get(name)
        if value is None:
            return default
        value = value.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(name, "must be 1 or 0 (true/false, yes/no, on/off)")

    def credential(names, default, allow_empty=False):
        name, value = get(*names)
        if value is None or (allow_empty and not value):
            return default
        if not _CREDENTIAL.fullmatch(value):
            raise ConfigError(name, "must be printable ASCII with no spaces")
        return value

    access_key_id = credential(("OSS_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
                               PLACEHOLDER_ACCESS_KEY_ID)
    access_key_secret = credential(("OSS_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
                                   PLACEHOLDER_ACCESS_KEY_SECRET)
    security_token = credential(("OSS_SESSION_TOKEN", "ALIBABA_CLOUD_SECURITY_TOKEN"), None,
                                allow_empty=True)

    host = (environ.get("OSS_HOST") or DEFAULT_HOST).strip().rstrip("/")
    if not _is_http_origin(host):
        # The host also lands in the page's Content-Security-Policy: nothing but an origin.
        raise ConfigError("OSS_HOST", "must be a bucket URL such as " + DEFAULT_HOST)
    matched = _BUCKET_HOST.match(host)

    bucket = text("OSS_BUCKET", environ.get("OSS_BUCKET"))
    if bucket is None and matched:
        bucket = matched.group(1)
    if bucket is not None and not _BUCKET_NAME.match(bucket):
        raise ConfigError("OSS_BUCKET", "is not a valid bucket name (3-63 of a-z, 0-9, -)")

    signature_version = (environ.get("OSS_SIGNATURE_VERSION") or "v1").strip().lower()
    if signature_version not in ("v1", "v4"):
        raise ConfigError("OSS_SIGNATURE_VERSION", "must be v1 or v4")

    region = text("OSS_REGION", environ.get("OSS_REGION"))
    if region is None and matched and not matched.group(2).startswith("oss-accelerate"):
        region = matched.group(2)[len("oss-"):]
        if region.endswith("-internal"):
            region = region[:-len("-internal")]
    if region is not None:
        region = region.strip().lower()
        if region.startswith("oss-"):  # users copy the endpoint's spelling
            region = region[len("oss-"):]
        if not _REGION.match(region):
            raise ConfigError("OSS_REGION", "must be a region id such as cn-hangzhou")
    if signature_version == "v4" and not region:
        raise ConfigError("OSS_REGION", "is required for v4 when OSS_HOST does not name the region")

    callback_url = environ.get("OSS_CALLBACK_URL")
    if callback_url is None:
        callback_url = server_url or ""
        if "[" in callback_url:
            raise ConfigError("OSS_CALLBACK_URL", "is required when listening on an IPv6 "
                                                  "address: OSS cannot call back to an IPv6 "
                                                  "address")
    callback_url = text("OSS_CALLBACK_URL", callback_url, allow_empty=True).strip()
    if callback_url:
        urls = callback_url.split(";")
        if len(urls) > 5:
            raise ConfigError("OSS_CALLBACK_URL", "OSS accepts at most 5 ';'-separated URLs")
        for url in urls:
            try:
                parts = urllib.parse.urlsplit(url)
                parts.port  # raises ValueError for a port out of range
                valid = (parts.scheme in ("http", "https") and parts.hostname and url.isascii()
                         and not any(c.isspace() for c in url))
            except ValueError:  # a bad port or a broken IPv6 literal
                valid = False
            if not valid:
                raise ConfigError("OSS_CALLBACK_URL", "must be http(s) URLs separated by ';'")
            if ":" in parts.hostname:
                raise ConfigError("OSS_CALLBACK_URL", "names an IPv6 address, which OSS "
                                                      "cannot call back to")

    callback_body_type = (environ.get("OSS_CALLBACK_BODY_TYPE") or FORM_URLENCODED).strip()
    if callback_body_type not in CALLBACK_BODY_TYPES:
        raise ConfigError("OSS_CALLBACK_BODY_TYPE", "must be one of " + ", ".join(CALLBACK_BODY_TYPES))
    callback_body = text("OSS_CALLBACK_BODY", environ.get("OSS_CALLBACK_BODY")) \
        or default_callback_body(callback_body_type, bucket)

    upload_dir = text("OSS_UPLOAD_DIR", environ.get("OSS_UPLOAD_DIR"), allow_empty=True)
    if upload_dir is None:
        upload_dir = Config.upload_dir
    if upload_dir and (upload_dir.startswith("/") or not upload_dir.endswith("/")
                       or "\\" in upload_dir or ".." in upload_dir.split("/")):
        # Without the trailing '/', 'user1' would also admit 'user10/...' (security notes 5.2).
        raise ConfigError("OSS_UPLOAD_DIR", "must be a relative key prefix ending in '/', "
                                            "such as uploads/ (or empty for the whole bucket)")

    cors_origin = (environ.get("OSS_CORS_ORIGIN") or "*").strip()
    if cors_origin != "*" and not _is_http_origin(cors_origin):
        raise ConfigError("OSS_CORS_ORIGIN", "must be * or an origin such as https://example.com")

    prefixes = environ.get("OSS_PUB_KEY_URL_PREFIXES")
    if prefixes is None:
        pub_key_url_prefixes = DEFAULT_PUB_KEY_URL_PREFIXES
    else:
        pub_key_url_prefixes = tuple(p.strip() for p in prefixes.split(",") if p.strip())
        if not pub_key_url_prefixes:
            raise ConfigError("OSS_PUB_KEY_URL_PREFIXES", "must name at least one URL prefix")
        for prefix in pub_key_url_prefixes:
            if _split_key_url(prefix) is None or not prefix.endswith("/"):
                # A prefix without the trailing "/" would also admit host.evil or /keys-evil/.
                raise ConfigError("OSS_PUB_KEY_URL_PREFIXES",
                                  "each entry must be an http(s) URL ending in '/'")

    return Config(
        access_key_id=access_key_id,
        access_key_secret=access_key_secret,
        security_token=security_token,
        host=host,
        bucket=bucket,
        signature_version=signature_version,
        region=region,
        callback_url=callback_url,
        callback_body=callback_body,
        callback_body_type=callback_body_type,
        callback_sni=flag("OSS_CALLBACK_SNI", False),
        upload_dir=upload_dir,
        expire_seconds=integer("OSS_EXPIRE_SECONDS", 30, 1, 7 * 24 * 3600),
        max_upload_bytes=integer("OSS_MAX_UPLOAD_BYTES", Config.max_upload_bytes, 0,
                                 MAX_OBJECT_BYTES),
        cors_origin=cors_origin,
        pin_callback=flag("OSS_PIN_CALLBACK", True),
        pub_key_url_prefixes=pub_key_url_prefixes,
        max_callback_bytes=integer("OSS_MAX_CALLBACK_BYTES", Config.max_callback_bytes, 1,
                                   16 * 1024 * 1024),
        max_connections=integer("OSS_MAX_CONNECTIONS", Config.max_connections, 1, 65535),
    )


def _is_http_origin(value: str) -> bool:
    match = _HTTP_ORIGIN.fullmatch(value)
    return bool(match) and (match.group(1) is None or 0 < int(match.group(1)[1:]) <= 65535)


def default_callback_body(body_type: str, bucket: Optional[str]) -> str:
    """The sample's template, plus the bucket when it is known.

    Anyone can point a callback of their own bucket at this server, and OSS will sign it:
    the signature proves OSS sent it, not whose upload it was. ${bucket} is filled in by OSS,
    so App checks it against the configured bucket.
    """
    if body_type == "application/json":
        body = ('{"filename":${object},"size":${size},"mimeType":${mimeType},'
                '"height":${imageInfo.height},"width":${imageInfo.width}')
        return body + (',"bucket":${bucket}}' if bucket else "}")
    return DEFAULT_CALLBACK_BODY + ("&bucket=${bucket}" if bucket else "")


def config_warnings(config: Config) -> list:
    """What a user should hear at startup; none of it is fatal."""
    warnings = []
    if not config.upload_dir:
        warnings.append("OSS_UPLOAD_DIR is empty: browsers may write any key in the bucket")
    if config.placeholder_credentials:
        warnings.append("OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET are placeholders: "
                        "uploads to real OSS will fail with InvalidAccessKeyId")
    for url in filter(None, config.callback_url.split(";")):
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
            unreachable = address.is_loopback or address.is_private or address.is_unspecified
        except ValueError:
            unreachable = host == "localhost" or host.endswith(".localhost")
        if unreachable:
            warnings.append("callback URL host %s is loopback or private: real OSS cannot "
                            "reach it (set OSS_CALLBACK_URL to a public address)" % host)
    return warnings


###############################################################################
# Errors ######################################################################
###############################################################################

class AppServerError(Exception):
    """Base class of every error this module raises on purpose."""


class ConfigError(AppServerError):
    """A bad environment value. The message names the variable, never its value."""

    def __init__(self, variable, problem):
        super().__init__("%s %s" % (variable, problem))
        self.variable = variable


class KeyFormatError(AppServerError, ValueError):
    """A public key that is not strict PEM/DER, or that fails the key sanity checks."""


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


class MethodNotImplemented(RequestError):
    status, close = 501, True


class HTTPVersionNotSupported(RequestError):
    status, close = 505, True


class CallbackRejected(RequestError):
    """The callback did not prove it came from OSS. OSS treats every non-200 alike; 400 is
    what the sample sent. The message names the failed step; the log line says why."""

    status = 400

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason or message


class PubKeyUnavailable(AppServerError):
    """The public key named by x-oss-pub-key-url could not be fetched or was refused."""


###############################################################################
# Encoding helpers ############################################################
###############################################################################

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


def json_compact(value) -> bytes:
    # allow_nan=False: NaN and Infinity are not JSON, and OSS would fail the callback on them.
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")


def utc_iso8601(unix_seconds: int) -> str:
    """The sample's expiration format, always UTC whatever the machine's TZ."""
    moment = datetime.datetime.fromtimestamp(unix_seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def printable(text: str, limit: int = 200) -> str:
    """Request data made safe for one log line: no control characters, bounded length."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("ascii", "backslashreplace").decode("ascii").translate(_LOG_ESCAPES)


_LOG_ESCAPES = {c: "\\x%02x" % c for c in list(range(0x20)) + [0x7F]}


###############################################################################
# Upload policy ###############################################################
###############################################################################

V4_ALGORITHM = "OSS4-HMAC-SHA256"


def sign_policy_v1(secret: str, policy_b64: str) -> str:
    """V1: base64(HMAC-SHA1(secret, the base64 policy string)) (spec 4.1)."""
    digest = hmac.new(secret.encode("utf-8"), policy_b64.encode("ascii"), hashlib.sha1).digest()
    return b64encode_text(digest)


def v4_signing_key(secret: str, yyyymmdd: str, region: str) -> bytes:
    key = hmac.new(b"aliyun_v4" + secret.encode("utf-8"), yyyymmdd.encode("ascii"),
                   hashlib.sha256).digest()
    for part in (region.encode("ascii"), b"oss", b"aliyun_v4_request"):
        key = hmac.new(key, part, hashlib.sha256).digest()
    return key


def sign_policy_v4(secret: str, yyyymmdd: str, region: str, policy_b64: str) -> str:
    """V4: hex(HMAC-SHA256(signing key, the base64 policy string)) (spec 4.2)."""
    key = v4_signing_key(secret, yyyymmdd, region)
    return hmac.new(key, policy_b64.encode("ascii"), hashlib.sha256).hexdigest()


def callback_param(config: Config) -> Optional[str]:
    """The base64 ``callback`` form field, in the sample's json.dumps layout and key order."""
    if not config.callback_url:
        return None
    callback = {
        "callbackUrl": config.callback_url,
        "callbackBody": config.callback_body,
        "callbackBodyType": config.callback_body_type,
    }
    if config.callback_sni and "https://" in config.callback_url:
        callback["callbackSNI"] = True
    return b64encode_text(json.dumps(callback).encode("utf-8"))


def issue_token(config: Config, now: Optional[float] = None) -> dict:
    """The upload token for one browser: policy, signature and callback (spec 1.2).

    ``expire`` and the policy's ``expiration`` name the same UTC second. Everything the
    bucket must enforce is a policy condition, so a client cannot loosen it.
    """
    now = int(time.time() if now is None else now)
    expire = now + config.expire_seconds
    conditions = [["starts-with", "$key", config.upload_dir]]
    if config.max_upload_bytes:
        conditions.append(["content-length-range", 0, config.max_upload_bytes])
    if config.bucket:
        conditions.append({"bucket": config.bucket})
    extra = {}
    if config.signature_version == "v4":
        moment = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        yyyymmdd = moment.strftime("%Y%m%d")
        extra = {
            "x-oss-signature-version": V4_ALGORITHM,
            "x-oss-credential": "%s/%s/%s/oss/aliyun_v4_request" % (
                config.access_key_id, yyyymmdd, config.region),
            "x-oss-date": moment.strftime("%Y%m%dT%H%M%SZ"),
        }
    if config.security_token:
        extra["x-oss-security-token"] = config.security_token
    conditions.extend({name: value} for name, value in extra.items())
    callback = callback_param(config)
    if callback and config.pin_callback:
        # Without this condition a client can swap callbackUrl/callbackBody (security notes 3.5).
        conditions.append({"callback": callback})

    policy = json.dumps({"expiration": utc_iso8601(expire), "conditions": conditions}).strip()
    policy_b64 = b64encode_text(policy.encode("utf-8"))
    token = {"accessid": config.access_key_id, "host": config.host, "policy": policy_b64}
    if config.signature_version == "v4":
        token.update(extra)
        token["x-oss-signature"] = sign_policy_v4(config.access_key_secret, yyyymmdd,
                                                  config.region, policy_b64)
    else:
        token["signature"] = sign_policy_v1(config.access_key_secret, policy_b64)
        token.update(extra)
    token["expire"] = expire
    token["dir"] = config.upload_dir
    if callback:
        token["callback"] = callback
    return token


###############################################################################
# PEM/DER #####################################################################
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
# RSA #########################################################################
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
    if s >= key.n:  # s + k*n would otherwise verify too (RustCrypto RSA issue 272)
        return False
    digest_info = prefix + hashlib.new(hash_name, bytes(message), usedforsecurity=False).digest()
    padding = size - len(digest_info) - 3
    if padding < 8:
        return False
    expected = b"\x00\x01" + b"\xff" * padding + b"\x00" + digest_info
    return hmac.compare_digest(pow(s, key.e, key.n).to_bytes(size, "big"), expected)


###############################################################################
# Public-key cache ############################################################
###############################################################################

OSS_CALLBACK_KEY_URL = "http://gosspublic.alicdn.com/callback_pub_key_v1.pem"
# OSS's published callback key (spec 6.2): public data. The 512-bit size is OSS's choice,
# so it is trusted by pin, never by size; every other key must be 2048 bits or more.
OSS_CALLBACK_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKs/JBGzwUB2aVht4crBx3oIPBLNsjGs
C0fTXv+nvlmklvkcolvpvXLTjaxUHR3W9LXxQ2EHXAJfCB+6H2YF1k8CAwEAAQ==
-----END PUBLIC KEY-----
"""
OSS_CALLBACK_PUBLIC_KEY = load_public_key(OSS_CALLBACK_PUBLIC_KEY_PEM)
EMBEDDED_PUBLIC_KEYS = {
    OSS_CALLBACK_KEY_URL: OSS_CALLBACK_PUBLIC_KEY,
    "https://gosspublic.alicdn.com/callback_pub_key_v1.pem": OSS_CALLBACK_PUBLIC_KEY,
}
MIN_FETCHED_KEY_BITS = 2048
KEY_FETCH_DEADLINE = 2.0  # OSS gives the whole callback 5 s
MAX_KEY_RESPONSE_BYTES = 16 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Anything a URL parser might read differently from the fetcher: whitespace, controls,
# backslashes (WHATWG reads '\' as '/'), and escapes (CVE-2023-24329 and friends).
_URL_REFUSED = re.compile(r"[\x00-\x20\x7f\\%#?]")


@functools.lru_cache(maxsize=256)  # prefixes are re-checked on every callback
def _split_key_url(url: str):
    """(scheme, host, port, path) of a plain http(s) URL, or None for anything ambiguous."""
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
    if (not host or "@" in host or "[" in host or host.endswith(".")
            or not re.match(r"^[A-Za-z0-9.-]+$", host)):
        return None
    if not path or any(segment in (".", "..") for segment in path.split("/")):
        return None
    return scheme, host, port, path


def pub_key_url_allowed(url: str, prefixes) -> bool:
    """Whether a decoded x-oss-pub-key-url may be trusted: same scheme, exactly the same host
    (case included: we refuse rather than normalise), same port, path under the prefix's."""
    candidate = _split_key_url(url)
    if candidate is None:
        return False
    for prefix in prefixes:
        allowed = _split_key_url(prefix)
        if (allowed is not None and candidate[:3] == allowed[:3]
                and candidate[3].startswith(allowed[3])):
            return True
    return False


class ReadBudgetExceeded(OSError):
    """The peer sent more bytes than the reader's budget allows."""


class _DeadlineReader(io.RawIOBase):
    """The key fetch's socket reader: one overall deadline and a byte budget for the whole
    response. Socket timeouts are per operation, so a key server sending a byte just before
    each timeout would never time out, and http.client bounds header lines, not their total."""

    def __init__(self, sock, idle_timeout, deadline=None, budget=None):
        super().__init__()
        self._sock = sock
        # makefile() counts the reader as a user of the socket, so an HTTPConnection that
        # "closes" after handing the socket to its response does not close it under us.
        self._raw = sock.makefile("rb", buffering=0)
        self.idle_timeout = idle_timeout
        self.deadline = deadline
        self.budget = budget
        self._timeout = None

    def readable(self):
        return True

    def use_timeout(self, timeout):
        # settimeout() is a system call; on the fast path the value does not change.
        if timeout != self._timeout:
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def readinto(self, buffer):
        timeout = self.idle_timeout
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline exceeded")
            if remaining < timeout:
                timeout = remaining
        if self.budget is not None:
            if self.budget <= 0:
                raise ReadBudgetExceeded("read budget exhausted")
            buffer = memoryview(buffer)[:self.budget]
        self.use_timeout(timeout)
        count = self._raw.readinto(buffer)
        if self.budget is not None and count:
            self.budget -= count
        return count

    def close(self):
        self._raw.close()
        super().close()


def fetch_public_key_pem(url: str, deadline: float = KEY_FETCH_DEADLINE) -> bytes:
    """GET a PEM public key: no redirects, no proxies, an overall deadline, a size cap.

    OSS names its key with an http URL; its host is always fetched over https, so a network
    attacker cannot substitute the key.
    """
    parts = _split_key_url(url)
    if parts is None:
        raise PubKeyUnavailable("not a plain http(s) key URL")
    scheme, host, port, path = parts
    if host == OSS_KEY_HOST and scheme == "http":
        scheme, port = "https", 443
    until = time.monotonic() + deadline
    connection_class = http.client.HTTPSConnection if scheme == "https" else \
        http.client.HTTPConnection
    connection = connection_class(host, port)

    def response_class(sock, *args, **kwargs):
        response = http.client.HTTPResponse(sock, *args, **kwargs)
        # Status line and headers count too: a key server must not stream megabytes of them.
        response.fp = io.BufferedReader(_DeadlineReader(sock, deadline, until,
                                                        budget=2 * MAX_KEY_RESPONSE_BYTES))
        return response

    connection.response_class = response_class
    try:
        sock = _connect_before(host, port, until)
        if scheme == "https":
            sock.settimeout(max(0.001, until - time.monotonic()))
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection.sock = sock  # connected here, so the deadline also covers DNS and connect
        connection.request("GET", path, headers={"Accept": "application/x-pem-file",
                                                 "User-Agent": "oss-appserver"})
        response = connection.getresponse()
        if response.status != 200:
            raise PubKeyUnavailable("key server answered HTTP %d" % response.status)
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > MAX_KEY_RESPONSE_BYTES:
            raise PubKeyUnavailable("key response larger than %d bytes" % MAX_KEY_RESPONSE_BYTES)
        chunks, size = [], 0
        while True:
            chunk = response.read1(MAX_KEY_RESPONSE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_KEY_RESPONSE_BYTES:
                raise PubKeyUnavailable("key response larger than %d bytes"
                                        % MAX_KEY_RESPONSE_BYTES)
        return b"".join(chunks)
    except ReadBudgetExceeded:
        raise PubKeyUnavailable("key response larger than %d bytes"
                                % (2 * MAX_KEY_RESPONSE_BYTES)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise PubKeyUnavailable("key fetch failed: %s" % type(exc).__name__) from None
    finally:
        connection.close()


def _connect_before(host, port, until):
    """A TCP connection made before ``until``. getaddrinfo has no timeout of its own, so it
    runs in a thread we stop waiting for; each address then gets only the time left, not
    the whole timeout again."""
    answer = []

    def resolve():
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)

    resolver = threading.Thread(target=resolve, name="key-host-lookup", daemon=True)
    resolver.start()
    resolver.join(max(0.0, until - time.monotonic()))
    if not answer:
        raise TimeoutError("key host lookup timed out")
    if isinstance(answer[0], OSError):
        raise answer[0]
    error = TimeoutError("no time left to connect to the key host")
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


class PublicKeyCache:
    """Public keys by URL: embedded ones first, then fetched ones cached with a TTL.

    Failures are cached briefly so an outage is not amplified into a fetch per callback, and
    fetches are single-flight: a burst of callbacks with a cold cache makes one fetch.
    """

    def __init__(self, fetch: Callable[[str], bytes] = fetch_public_key_pem, *,
                 clock: Callable[[], float] = time.monotonic, ttl: float = 24 * 3600,
                 negative_ttl: float = 30.0, max_entries: int = 64,
                 embedded: Mapping[str, PublicKey] = EMBEDDED_PUBLIC_KEYS,
                 wait_timeout: float = KEY_FETCH_DEADLINE + 1.0,
                 max_fetches_per_minute: int = 30, reserved_fetches_per_minute: int = 10):
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
        host = _split_key_url(url)[1]
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
# Request handling ############################################################
###############################################################################

class Response(NamedTuple):
    status: int
    headers: list
    body: bytes = b""
    close: bool = False  # the request's framing can no longer be trusted: drop the connection
    note: str = ""       # appended to the request's access-log line


JSON_HEADERS = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff")]
# Static files other than the page are never documents: an SVG opened directly could
# otherwise run script, and none of them needs anything.
ASSET_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
MAX_AUTHORIZATION_CHARS = 4 * ((MAX_KEY_BITS // 8 + 2) // 3)  # base64 of an 8192-bit signature
MAX_PUB_KEY_URL_CHARS = 1024
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".json": "application/json", ".png": "image/png",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".svg": "image/svg+xml",
    ".ico": "image/x-icon", ".webp": "image/webp", ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}


def _target_bytes(raw_target) -> bytes:
    if isinstance(raw_target, str):
        try:
            return raw_target.encode("latin-1")  # http.server and WSGI decode as latin-1
        except UnicodeEncodeError:
            raise CallbackRejected("callback URL is not a raw request target") from None
    return raw_target


def callback_path(raw_target) -> bytes:
    """The percent-decoded path OSS signs. A decoded CR, LF or NUL is refused: the string to
    sign joins path and body with '\\n', so such a path could move bytes between the two."""
    path = urllib.parse.unquote_to_bytes(_target_bytes(raw_target).partition(b"?")[0])
    if any(c in path for c in _CALLBACK_PATH_REFUSED):
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


MAX_CALLBACK_JSON_DEPTH = 32
_CALLBACK_PATH_REFUSED = (b"\r", b"\n", b"\x00")


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


def parse_callback_fields(body_type: str, body: bytes) -> dict:
    """The callback body as fields, read as the configured callbackBodyType: the request's
    Content-Type header is not signed, so a replayer could otherwise switch parsers.

    JSON is read strictly: NaN and Infinity are not JSON (RFC 8259 6) and could not be
    written back into the answer; nesting is bounded so that writing the answer, one level
    deeper, cannot hit the recursion limit.
    """
    try:
        text = body.decode("utf-8")
        if body_type == "application/json":
            fields = json.loads(text, parse_constant=_refuse_json_constant,
                                parse_float=_finite_float)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
            if not _json_depth_within(fields, MAX_CALLBACK_JSON_DEPTH):
                raise ValueError("nested too deeply")
        else:
            fields = dict(urllib.parse.parse_qsl(text, keep_blank_values=True,
                                                 max_num_fields=1000))
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        raise CallbackRejected("callback body is not valid %s" % body_type) from None
    if not fields:
        raise CallbackRejected("callback body has no fields")
    return fields


def _callback_size(value) -> Optional[int]:
    """The object size OSS rendered for ${size}: 12 ASCII digits at most (PostObject takes
    under 5 GB), or, from a JSON body, an integer that is not a boolean. None otherwise."""
    if type(value) is int:
        return value if 0 <= value < 10 ** 12 else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
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
            if not isinstance(name, str) or not name.startswith(config.upload_dir):
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


def default_callback_hook(fields: dict) -> dict:
    """Answer with what OSS reported. Embedders replace this to record the upload; its return
    value is the JSON OSS relays to the browser. (The object name and size are logged on the
    callback's access-log line, whatever the hook.)"""
    return {"Status": "OK", "upload": fields}


def error_response(status: int, message: str, headers=(), close: bool = False) -> Response:
    """The one error shape: {"Status":"Error","Message":...}, never a traceback or a path."""
    body = json_compact({"Status": "Error", "Message": message})
    return Response(status, JSON_HEADERS + list(headers), body, close)


class App:
    """Routing and responses, free of socket details: the http.server handler and the WSGI
    adapter both frame what ``handle`` returns."""

    def __init__(self, config: Config, *, static_dir: Optional[str] = None,
                 key_cache: Optional[PublicKeyCache] = None,
                 callback_hook: Optional[Callable[[dict], dict]] = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.key_cache = key_cache or PublicKeyCache()
        self.callback_hook = callback_hook or default_callback_hook
        self.clock = clock
        self.static_root = os.path.realpath(static_dir or find_static_dir())
        self.static_files = scan_static_dir(self.static_root)
        self._cors = [("Access-Control-Allow-Origin", config.cors_origin),
                      ("Access-Control-Allow-Methods", ALLOWED_METHODS),
                      ("Access-Control-Allow-Headers", "Content-Type"),
                      ("Access-Control-Expose-Headers", "Date")]
        if config.cors_origin != "*":
            self._cors.append(("Vary", "Origin"))
        self._page_csp = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data: blob:; connect-src 'self' %s; "
                          "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
                          % config.host)
        self._token = (None, b"")  # (second, body): a token depends only on config and second

    def handle(self, method: str, target: str, headers: Mapping[str, list],
               content_length: Optional[int], read_body: Callable[[int], bytes]) -> Response:
        """Answer one request. ``headers`` maps lower-case names to lists of values;
        ``read_body(n)`` returns exactly n bytes or raises RequestError."""
        try:
            if method in ("GET", "HEAD"):
                return self._get(target.partition("?")[0])
            if method == "POST":
                return self._callback(target, headers, content_length, read_body)
            if method == "OPTIONS":
                return Response(204, self._cors + [("Allow", ALLOWED_METHODS),
                                                   ("Access-Control-Max-Age", "600")])
            if method in ("PUT", "DELETE", "PATCH"):
                raise MethodNotAllowed("method not allowed", headers=[("Allow", ALLOWED_METHODS)])
            raise MethodNotImplemented("method not implemented")
        except RequestError as exc:
            if isinstance(exc, CallbackRejected):
                log.warning("callback rejected: %s", exc.reason)
            return error_response(exc.status, exc.message, self._cors + exc.headers, exc.close)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("internal error %s handling %s", incident, printable(method))
            return error_response(500, "internal error (incident %s)" % incident, self._cors)

    def _get(self, path: str) -> Response:
        if path == "/":
            return self._token_response()
        if path == "/healthz":
            return Response(200, JSON_HEADERS + self._cors, b'{"Status":"OK"}')
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

    def _token_response(self) -> Response:
        second = int(self.clock())
        cached_second, body = self._token
        if cached_second != second:
            # The sample's json.dumps layout, so clients parsing it loosely keep working.
            body = json.dumps(issue_token(self.config, second)).encode("utf-8")
            self._token = (second, body)
        return Response(200, JSON_HEADERS + self._cors, body)

    def _callback(self, target, headers, content_length, read_body) -> Response:
        # Everything that needs no key is checked first, so a junk request costs no fetch.
        if content_length is None:
            raise LengthRequired("Content-Length required")
        if content_length > self.config.max_callback_bytes:
            raise PayloadTooLarge("callback body larger than %d bytes"
                                  % self.config.max_callback_bytes)
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
        try:
            pub_key_url = strict_b64decode(encoded_url, MAX_PUB_KEY_URL_CHARS).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            raise CallbackRejected("x-oss-pub-key-url header is not base64 of a URL") from None
        if not pub_key_url_allowed(pub_key_url, self.config.pub_key_url_prefixes):
            # The sample fetched any URL named here, so anyone could sign with their own key.
            raise CallbackRejected("x-oss-pub-key-url is not an allowed OSS public key URL")

        body = read_body(content_length)
        try:
            key = self.key_cache.get(pub_key_url)
        except PubKeyUnavailable as exc:
            raise CallbackRejected("callback public key unavailable",
                                   "public key %s unavailable: %s"
                                   % (printable(pub_key_url), exc)) from None
        if not rsa_verify(key, callback_string_to_sign(target, body), signature, "md5"):
            raise CallbackRejected("callback signature does not match",
                                   "signature mismatch for %s (key %s)"
                                   % (printable(target.partition("?")[0]), printable(pub_key_url)))
        fields = parse_callback_fields(self.config.callback_body_type, body)
        check_callback_fields(self.config, fields)
        answer = self.callback_hook(fields)
        note = "object=%s size=%s" % (fields.get("object", fields.get("filename", "-")),
                                      fields.get("size", "-"))
        return Response(200, list(JSON_HEADERS), json_compact(answer), note=note)


def app_warnings(app: App) -> list:
    if "/index.html" in app.static_files:
        return []
    return ["no page to serve: %s has no index.html (set OSS_STATIC_DIR to the folder "
            "with the browser client)" % app.static_root]


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
    values = {value.strip(" \t") for value in lengths}
    if len(values) != 1:
        raise BadRequest("conflicting Content-Length headers")
    value = values.pop()
    if not _DECIMAL.fullmatch(value):
        raise BadRequest("invalid Content-Length")
    return int(value)


###############################################################################
# Server ######################################################################
###############################################################################

MAX_REQUEST_LINE = 65536   # as http.server: longer is 414
MAX_HEADER_BYTES = 65536   # all header lines together: longer is 431
MAX_HEADERS = 100
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 5.6.2
# method SP origin-form (or * for OPTIONS) SP HTTP/1.x, then CRLF or a bare LF (RFC 9112 2.2)
_REQUEST_LINE = re.compile(r"(%s) (/[\x21-\x7e]*|\*) HTTP/1\.([0-9])\r?\n" % _TOKEN)
_HTTP_VERSION = re.compile(r"HTTP/([0-9])\.[0-9]")
# name ":" OWS value OWS: no space before the colon, no obs-fold, no controls but tab
_HEADER_LINE = re.compile(r"(%s):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r?\n" % _TOKEN)
_OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
               b"Content-Length: 51\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
               b'{"Status":"Error","Message":"too many connections"}')


class AppRequestHandler(http.server.BaseHTTPRequestHandler):
    """Frames App responses: HTTP/1.1 keep-alive, strict request parsing, one write per
    response, one access-log line per request.

    The request head is parsed here rather than by http.server's parse_request, whose email
    parser is lenient where framing must be strict: at a line it cannot read ("Foo",
    "Content-Length : 5") it silently drops every later header, and the body then reads as
    a second request. This parser refuses such requests, and costs less.
    """

    protocol_version = "HTTP/1.1"
    server_version = "oss-appserver"
    sys_version = ""

    def setup(self):
        self.connection = self.request
        # Headers and body go out in one write; NODELAY also stops Nagle waiting on
        # the peer's delayed ACK (about 40 ms a keep-alive request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking sockets: the server's watchdog enforces the deadlines (see AppServer).
        self.rfile = self.connection.makefile("rb")
        self.wfile = socketserver._SocketWriter(self.connection)

    def finish(self):
        self.server.forget(self.connection)
        super().finish()

    def handle(self):
        self.close_connection = False
        while not self.close_connection:
            self.handle_one_request()

    def handle_one_request(self):
        self.close_connection = True
        self.command, self.path, self.request_version = "", "", "HTTP/1.1"
        self._started = None
        self._responded = False
        self._deadline = None
        self._body_left = 0
        self._expect_continue = False
        if not self.server.await_request(self.connection):
            return  # shutting down: take no new request on this connection
        try:
            line = self.rfile.readline(MAX_REQUEST_LINE + 1)
            for _ in range(4):  # RFC 9112 2.2: ignore empty lines before a request line
                if line != b"\r\n" and line != b"\n":
                    break
                line = self.rfile.readline(MAX_REQUEST_LINE + 1)
        except OSError:
            return  # the peer went away, or the watchdog closed an idle connection
        if not line.endswith(b"\n") and len(line) <= MAX_REQUEST_LINE:
            return  # closed mid-line: by the peer, or by the watchdog at the idle deadline
        self._started = time.monotonic()
        self._deadline = self._started + self.server.request_timeout
        self.server.request_started(self.connection, self._deadline)
        try:
            self._respond(line)
        except RequestError as exc:
            self._send(error_response(exc.status, exc.message, close=True))
        except OSError:
            self.close_connection = True  # the peer went away, or the deadline passed
        except Exception:
            log.exception("internal error framing a request")
            self._send(error_response(500, "internal error", close=True))

    def _respond(self, request_line):
        self._parse_request_line(request_line)
        headers = self._read_headers()
        tokens = {t.strip().lower() for v in headers.get("connection", ()) for t in v.split(",")}
        if self.request_version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in tokens
        else:
            self.close_connection = "close" in tokens
        content_length = parse_content_length(self.command, headers)
        self._body_left = content_length or 0
        # "100 Continue" goes out only when the App asks for the body, so a request refused on
        # its headers gets its error without being invited to send the body first.
        self._expect_continue = (self.request_version == "HTTP/1.1" and "100-continue" in
                                 (v.lower() for v in headers.get("expect", ())))
        response = self.server.app.handle(self.command, self.path, headers, content_length,
                                          self._read_body)
        # Unread body bytes would be parsed as the next request: close instead.
        self._send(response, close=self._body_left > 0)

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
        self.command, self.path, minor = matched.groups()
        self.request_version = "HTTP/1." + minor

    def _read_headers(self) -> dict:
        """Header fields as {lower-case name: [values]}, per RFC 9112 5: no space before the
        colon, no obs-fold, no control characters, bounded in count and bytes."""
        headers = {}
        budget = MAX_HEADER_BYTES
        for _ in range(MAX_HEADERS + 1):
            line = self.rfile.readline(budget + 1)
            if not line.endswith(b"\n"):
                if len(line) > budget:
                    raise RequestHeaderFieldsTooLarge("request headers too large")
                if time.monotonic() >= self._deadline:
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

    def _read_body(self, size):
        if size != self._body_left:
            raise BadRequest("body length does not match Content-Length")
        try:
            if self._expect_continue:
                self._expect_continue = False
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = self.rfile.read(size)
        except OSError:  # a reset, or the watchdog at the deadline: a short read either way
            body = b""
        if len(body) != size:
            if time.monotonic() >= self._deadline:
                raise RequestTimeout("request body timed out")
            raise BadRequest("request body shorter than Content-Length")
        self._body_left = 0
        return body

    def _send(self, response: Response, close: bool = False):
        if self._responded:
            return
        self._responded = True
        status, headers, body, must_close, note = response
        if close or must_close or self.server.stopping:
            self.close_connection = True
        lines = ["HTTP/1.1 %d %s" % (status, http.client.responses.get(status, "Unknown")),
                 "Server: oss-appserver", "Date: " + self.server.http_date()]
        lines += ["%s: %s" % header for header in headers]
        if status != 204:
            lines.append("Content-Length: %d" % len(body))
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        try:
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:  # a hook's header that HTTP cannot carry
            log.error("response header not encodable as latin-1; answering 500")
            self._responded = False
            self._send(error_response(500, "internal error", close=True))
            return
        if self.command == "HEAD" or status == 204:
            body = b""
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True
        self.log_request(status, len(body), note)

    def send_error(self, code, message=None, explain=None):
        # Not reached by our parser; kept so that nothing in http.server can send its
        # HTML error page, which quotes the raw request line.
        self._send(error_response(code, http.client.responses.get(code, "error"), close=True))

    def log_request(self, code="-", size="-", note=""):
        elapsed = (time.monotonic() - self._started) * 1000 if self._started else 0.0
        # The query is dropped: it can carry tokens.
        self.server.access_log.record(self.client_address[0], self.command,
                                      self.path.partition("?")[0], code, size, elapsed, note)

    def log_message(self, format, *args):
        log.info("%s %s", self.client_address[0], printable(format % args))


class AccessLog:
    """One access-log line per request through ``logging``, written by a background thread.

    A logging call costs more than answering a token, and with many request threads they
    queue on the handler's lock (p99 of tens of ms). Request threads only append a tuple;
    lines appear within ``interval`` seconds, and flush() writes whatever is pending.
    """

    MAX_PENDING = 10000

    def __init__(self, logger: logging.Logger = access_log, interval: float = 0.2):
        self._logger = logger
        self._interval = interval
        self._pending = collections.deque()
        self._dropped = 0
        self._flush_lock = threading.Lock()  # a flush() returns only after earlier lines are out
        self._writer = None
        self._start_lock = threading.Lock()
        self._closed = threading.Event()

    def record(self, client, method, path, status, size, elapsed_ms, note=""):
        if not self._logger.isEnabledFor(logging.INFO):
            return
        if len(self._pending) >= self.MAX_PENDING:
            # The log sink is stalled (a full pipe, a paused terminal): drop and count rather
            # than let memory grow or requests wait on it.
            self._dropped += 1
            return
        self._pending.append((client, method, path, status, size, elapsed_ms, note))
        if self._writer is None:
            with self._start_lock:
                if self._writer is None and not self._closed.is_set():
                    self._writer = threading.Thread(target=self._run, name="access-log",
                                                    daemon=True)
                    self._writer.start()

    def _run(self):
        while not self._closed.wait(self._interval):
            self.flush()

    def close(self):
        """Stop the writer thread and write what is pending."""
        self._closed.set()
        with self._start_lock:
            writer = self._writer
        if writer is not None:
            writer.join(2.0)  # a stalled log sink must not hold up shutdown for ever
        if writer is None or not writer.is_alive():
            self.flush()

    def flush(self):
        with self._flush_lock:
            self._write_pending()

    def _write_pending(self):
        if self._dropped:
            dropped, self._dropped = self._dropped, 0
            self._logger.warning("%d access-log lines dropped: log output too slow", dropped)
        while self._pending:
            try:
                client, method, path, status, size, elapsed_ms, note = self._pending.popleft()
            except IndexError:
                return
            self._logger.info('%s "%s %s" %s %s %.1fms%s', client, printable(method or "-", 16),
                              printable(path), status, size, elapsed_ms,
                              " " + printable(note) if note else "")


class AppServer(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with a connection cap, deadlines and graceful shutdown. The
    configuration lives here, on the server object, not in globals.

    Deadlines are kept by a watchdog, not by socket timeouts: a socket timeout applies to one
    recv, so a client sending a byte just before each timeout would hold a thread forever,
    and timeouts put every recv and send behind an extra poll. serve_forever's loop (see
    service_actions) shuts down each connection that is idle past ``idle_timeout`` or whose
    request is not answered ``request_timeout`` after its first line; that wakes the thread.
    """

    daemon_threads = False     # finish in-flight requests on shutdown
    block_on_close = True
    request_queue_size = 1024  # the default of 5 overflows at 8 concurrent clients

    def __init__(self, address, app: App, *, idle_timeout: float = 5.0,
                 request_timeout: float = 15.0, max_connections: Optional[int] = None):
        self.app = app
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.stopping = False
        self.access_log = AccessLog()
        self._slots = threading.BoundedSemaphore(max_connections or app.config.max_connections)
        self._watched = {}  # connection -> (deadline, idle); dict ops are atomic under the GIL
        self._next_sweep = 0.0
        self._date = (0, "")
        if ":" in address[0]:  # an IPv6 literal such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, AppRequestHandler)

    def server_bind(self):
        # HTTPServer.server_bind would call getfqdn(), a reverse DNS lookup at every start.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def http_date(self) -> str:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True))
        return self._date[1]

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            # Over the cap: a fast 503 and close, never another thread.
            try:
                request.settimeout(0.5)
                request.sendall(_OVERLOADED)
            except OSError:
                pass
            self.shutdown_request(request)
            self.access_log.record(client_address[0], "-", "-", 503, 51, 0.0,
                                   "over OSS_MAX_CONNECTIONS")
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

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
            self._next_sweep = now + 0.1
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
            time.sleep(0.02)
        self._close_connections(lambda deadline, idle: True)
        super().server_close()
        self.access_log.close()


def make_server(config: Config, host: str = "127.0.0.1", port: int = 0, *,
                app: Optional[App] = None, static_dir: Optional[str] = None,
                **options) -> AppServer:
    """A bound, not yet serving, server; ``options`` go to AppServer."""
    app = app or App(config, static_dir=static_dir)
    return AppServer((host, port), app, **options)


###############################################################################
# WSGI ########################################################################
###############################################################################

def make_wsgi_app(config: Optional[Config] = None):
    """The same routes as a WSGI app, for gunicorn, uWSGI or waitress.

    Without ``config`` it is read from the environment now, at call time, so importing this
    module still starts nothing. The front server has already framed the request, so the
    framing checks of the http.server handler are not repeated here.
    """
    if config is None:
        config = config_from_env(os.environ, server_url=None)
        warnings = config_warnings(config)
        if not config.callback_url:
            # Behind a WSGI server this process cannot know its public address.
            warnings.append("OSS_CALLBACK_URL is not set: tokens carry no callback")
    else:
        warnings = []
    app = App(config)
    for warning in warnings + app_warnings(app):
        log.warning("%s", warning)

    def application(environ, start_response):
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
        content_length = int(length) if _DECIMAL.fullmatch(length) else None

        def read_body(size):
            try:
                body = environ["wsgi.input"].read(size)
            except OSError:  # the client went away (gunicorn's NoMoreData is an IOError)
                body = b""
            if len(body) != size:
                raise BadRequest("request body shorter than Content-Length")
            return body

        status, response_headers, body, _, note = app.handle(method, target, headers,
                                                             content_length, read_body)
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
# CLI #########################################################################
###############################################################################

USAGE = "usage: appserver.py [-h] [[ip] port]"
SIGNAL_POLL_INTERVAL = 0.5  # a backstop: the wakeup fd normally ends the wait at once


def help_text() -> str:
    lines = [USAGE, "",
             "Serve OSS upload tokens (GET /), verify OSS upload callbacks (POST), and the",
             "browser client (/index.html).",
             "",
             "  appserver.py              listen on 127.0.0.1:8080",
             "  appserver.py PORT         listen on 0.0.0.0:PORT (all interfaces, as the sample)",
             "  appserver.py IP PORT      listen on IP:PORT",
             "",
             "Environment variables (read once at startup):"]
    for name, default, meaning in ENVIRONMENT:
        lines.append("  %-26s %s (default: %s)" % (name, meaning, default))
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
        if not re.match(r"^[A-Za-z0-9.-]+$", host):
            raise ValueError("ip must be an address such as 127.0.0.1") from None
    return host, int(port)


def url_host(host: str) -> str:
    """A host as it stands in a URL: IPv6 literals in brackets (RFC 3986 3.2.2)."""
    return "[%s]" % host if ":" in host else host


def local_url(host: str, port: int) -> str:
    """Where this machine reaches a server listening on host:port."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return "http://%s:%d" % (url_host(host), port)


def print_banner(config: Config, server) -> None:
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
    print("  credentials: %s" % ("PLACEHOLDERS (uploads to real OSS will fail)"
                                 if config.placeholder_credentials else "from the environment"))
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

    def wait(self):
        while self.received is None:
            select.select([self._reader], [], [], SIGNAL_POLL_INTERVAL)
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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(help_text())
        return 0
    try:
        host, port = parse_args(argv)
    except ValueError as exc:
        print("%s\nappserver.py: error: %s (see --help)" % (USAGE, exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_env(os.environ, local_url(host, port))
    except ConfigError as exc:
        print("appserver.py: configuration error: %s" % exc, file=sys.stderr)
        return 2
    try:
        server = make_server(config, host, port)
    except OSError as exc:
        print("appserver.py: cannot listen on %s port %d: %s" % (host, port, exc.strerror),
              file=sys.stderr)
        return 1
    for warning in config_warnings(config) + app_warnings(server.app):
        log.warning("%s", warning)
    print_banner(config, server)
    # serve_forever runs in a thread: shutdown() called from the thread that serves deadlocks.
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25},
                               name="serve_forever")
    with StopSignals() as stop:
        serving.start()
        stop.wait()
    log.info("shutting down: finishing in-flight requests")
    server.stop()
    serving.join()
    return 0


def cli():
    sys.exit(main())


if __name__ == "__main__":
    cli()
