"""Loopback emulators of the services that hand out Alibaba Cloud credentials.

Written from the documentation and the official credentials libraries, independently of
``appserver.py`` (this module never imports it), so that a bug shared by the app server and a
test cannot cancel itself out:

* ``EcsMetadataEmulator``: the ECS instance metadata service (IMDS), normal and hardened mode
  (ECS docs "Instance metadata", "Obtain a temporary authorization token"; credentials-python
  ``provider/ecs_ram_role.py``).
* ``StsEmulator``: STS ``AssumeRole`` (RPC signature v1.0, checked with this module's own
  canonicalization) and the anonymous ``AssumeRoleWithOIDC`` (RAM API reference for STS
  2015-04-01, "Signature mechanism", the STS error-code page; credentials-python
  ``provider/ram_role_arn.py`` and ``provider/oidc.py``).
* ``CredentialsUriEmulator``: the ``ALIBABA_CLOUD_CREDENTIALS_URI`` endpoint (credentials-python
  ``provider/uri.py``: ``Code``, ``AccessKeyId``, ``AccessKeySecret``, ``SecurityToken``,
  ``Expiration``).

All three record what they hand out in a ``CredentialStore``; pass one store to several
emulators (and later to the OSS emulator) to share it. ``store.valid()`` lists the
(AccessKeyId, AccessKeySecret, SecurityToken, expiry) tuples that are valid right now.

Every emulator is a server in a background thread bound to 127.0.0.1 (port 0 by default):
``start()`` / ``stop()`` (``stop()`` then ``start()`` again reuses the same port, so a client
configured with ``url`` finds it again: "down" is simply ``stop()``), ``url``, ``requests``
(every request seen), and ``set_fault(name, count=None)`` / ``clear_fault()`` with the fault
modes in ``FAULTS``. ``clock`` (a ``time.time``-like callable) is injectable everywhere;
credential lifetimes follow the store's clock, so when emulators share a store, give the
clock to the store (an emulator built without a clock of its own uses the store's).
"""

import base64
import calendar
import dataclasses
import hashlib
import hmac
import http.server
import json
import re
import secrets
import string
import threading
import time
import urllib.parse
import uuid

LOOPBACK = "127.0.0.1"
EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
HUGE_BODY_BYTES = 5 * 1024 * 1024
MAX_REQUEST_BODY = 1024 * 1024

# Fault modes (set_fault): what the credential answer turns into.
FAULTS = (
    "html",            # 200 text/html page instead of JSON
    "code_failed",     # JSON with "Code": "Failed" (IMDS, URI) / an error body with 200 (STS)
    "huge",            # a valid-looking JSON document padded past 5 MiB
    "redirect",        # 302 to the same document (?redirected=1); following it would work
    "stall",           # accept, read the request, answer nothing for stall_seconds, close
    "expired",         # well-formed credentials whose Expiration is already past
    "missing_field",   # SecurityToken left out
    "bad_expiration",  # Expiration that is not YYYY-MM-DDThh:mm:ssZ
    "server_error",    # 500
)


def format_expiration(epoch):
    """``YYYY-MM-DDThh:mm:ssZ`` (UTC), the format of every documented ``Expiration``."""
    return time.strftime(EXPIRATION_FORMAT, time.gmtime(int(epoch)))


def parse_expiration(text):
    """Epoch seconds of a ``YYYY-MM-DDThh:mm:ssZ`` string; ValueError otherwise."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", text):
        raise ValueError("not YYYY-MM-DDThh:mm:ssZ: %r" % text)
    return calendar.timegm(time.strptime(text, EXPIRATION_FORMAT))


def _random_text(alphabet, length):
    return "".join(secrets.choice(alphabet) for _ in range(length))


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Credential:
    access_key_id: str
    access_key_secret: str
    security_token: str
    expiration: int          # epoch seconds (whole seconds: the wire format has no fraction)
    issued: float            # epoch seconds
    source: str              # "ecs", "uri", "sts:AssumeRole", "sts:AssumeRoleWithOIDC", ...

    @property
    def expiration_text(self):
        return format_expiration(self.expiration)

    @property
    def last_updated_text(self):
        return format_expiration(self.issued)

    def as_tuple(self):
        return (self.access_key_id, self.access_key_secret, self.security_token,
                self.expiration)


class CredentialStore:
    """Every temporary credential the emulators handed out, thread-safe.

    An OSS emulator can ask ``is_valid(ak, token)`` / ``lookup(ak)`` to accept rotating
    credentials; tests ask ``valid()`` / ``issued`` to check what a server signed with."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._by_id = {}
        self._order = []
        self._revoked = set()

    def issue(self, lifetime, source, expiration=None):
        """A new credential valid for ``lifetime`` seconds from now (or until ``expiration``)."""
        now = self.clock()
        if expiration is None:
            expiration = int(now + lifetime)
        credential = Credential(
            access_key_id="STS." + _random_text(string.ascii_letters + string.digits, 25),
            access_key_secret=_random_text(string.ascii_letters + string.digits, 44),
            # Real tokens are long base64 text: '+', '/' and '=' exercise the client's encoding.
            security_token="CAIS" + base64.b64encode(secrets.token_bytes(240)).decode(),
            expiration=int(expiration), issued=now, source=source)
        with self._lock:
            self._by_id[credential.access_key_id] = credential
            self._order.append(credential)
        return credential

    def lookup(self, access_key_id):
        with self._lock:
            return self._by_id.get(access_key_id)

    def revoke(self, access_key_id):
        with self._lock:
            self._revoked.add(access_key_id)

    def revoke_all(self):
        with self._lock:
            self._revoked.update(self._by_id)

    def is_valid(self, access_key_id, security_token=None, secret=None, now=None):
        """True when the key exists, is not revoked or expired, and the token (and secret,
        when given) are the ones it was issued with."""
        now = self.clock() if now is None else now
        with self._lock:
            credential = self._by_id.get(access_key_id)
            revoked = access_key_id in self._revoked
        if credential is None or revoked or now >= credential.expiration:
            return False
        if security_token is not None and not hmac.compare_digest(
                security_token.encode(), credential.security_token.encode()):
            return False
        return secret is None or hmac.compare_digest(secret.encode(),
                                                     credential.access_key_secret.encode())

    def valid(self, now=None):
        """[(AccessKeyId, AccessKeySecret, SecurityToken, expiry)] valid now, oldest first."""
        now = self.clock() if now is None else now
        with self._lock:
            return [c.as_tuple() for c in self._order
                    if c.access_key_id not in self._revoked and now < c.expiration]

    @property
    def issued(self):
        with self._lock:
            return list(self._order)


class Rotation:
    """The credential a rotating source serves now: a new one ``refresh_before`` seconds before
    the current one expires, so that old and new overlap (the ECS docs: the temporary token is
    updated periodically, before it expires). Rotates lazily, on the next request."""

    def __init__(self, store, source, lifetime=60, refresh_before=None):
        if refresh_before is None:
            refresh_before = lifetime / 3
        if not 0 <= refresh_before < lifetime:
            raise ValueError("need 0 <= refresh_before < lifetime")
        self.store = store
        self.source = source
        self.lifetime = lifetime
        self.refresh_before = refresh_before
        self._lock = threading.Lock()
        self._current = None

    def current(self):
        with self._lock:
            now = self.store.clock()
            cur = self._current
            if (cur is None or now >= cur.expiration - self.refresh_before
                    or not self.store.is_valid(cur.access_key_id, now=now)):
                self._current = self.store.issue(self.lifetime, self.source)
            return self._current

    def rotate(self):
        """Hand out a new credential from now on (the old one stays valid until it expires)."""
        with self._lock:
            self._current = self.store.issue(self.lifetime, self.source)
            return self._current

    def peek(self):
        with self._lock:
            return self._current


# --------------------------------------------------------------------------------------------
# Server plumbing shared by the emulators
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict = dataclasses.field(default_factory=dict)
    stall: bool = False


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str                # without the query
    query: str
    headers: dict            # lower-case names
    body: bytes
    at: float

    @property
    def params(self):
        return dict(urllib.parse.parse_qsl(self.query, keep_blank_values=True))


def json_response(status, document, content_type="application/json;charset=utf-8"):
    return Response(status, json.dumps(document).encode(), content_type)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "CloudEmulator"
    sys_version = ""

    def log_message(self, fmt, *args):   # tests read emulator.requests instead
        pass

    def _serve(self):
        emulator = self.server.emulator
        length = self.headers.get("Content-Length")
        body = b""
        try:
            if length is not None:
                size = int(length)
                if size < 0 or size > MAX_REQUEST_BODY:
                    raise ValueError(length)
                body = self.rfile.read(size)
        except ValueError:
            self._send(Response(413, b"request body too large\n"))
            return
        path, _, query = self.path.partition("?")
        request = RecordedRequest(self.command, path, query,
                                  {k.lower(): v for k, v in self.headers.items()}, body,
                                  emulator.clock())
        emulator._record(request)
        try:
            response = emulator.handle(request)
        except Exception as exc:   # an emulator bug must show, not hang the client
            response = Response(500, ("emulator error: %r\n" % exc).encode())
        if response.stall:
            emulator._stall()
            self.close_connection = True
            return
        self._send(response)

    def _send(self, response):
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            try:
                self.wfile.write(response.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _serve


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _EmulatorServer:
    """start/stop/restart on the same port, request log, fault switch."""

    name = "emulator"

    def __init__(self, host=LOOPBACK, port=0, clock=time.time, stall_seconds=30.0):
        if not host.startswith("127."):
            raise ValueError("emulators bind to a 127.x loopback address only")
        self.clock = clock
        self.stall_seconds = stall_seconds
        self._address = (host, port)
        self._httpd = None
        self._thread = None
        self._lock = threading.Lock()
        self._requests = []
        self._fault = None
        self._fault_left = None
        self._release = threading.Event()

    # -- lifecycle
    def start(self):
        self._release.clear()
        self._httpd = _HTTPServer(self._address, _Handler)
        self._httpd.emulator = self
        self._address = self._httpd.server_address[:2]   # a restart keeps the port
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop listening ("down"): new connections are refused until start() again."""
        self._release.set()           # let stalled handlers go
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = None

    @property
    def running(self):
        return self._httpd is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def port(self):
        return self._address[1]

    @property
    def url(self):
        host = self._address[0]
        return "http://%s:%d" % ("[%s]" % host if ":" in host else host, self.port)

    # -- requests
    def _record(self, request):
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def clear_requests(self):
        with self._lock:
            self._requests.clear()

    # -- faults
    def set_fault(self, fault, count=None):
        """Turn the next ``count`` credential answers (all, when None) into ``fault``."""
        if fault not in FAULTS:
            raise ValueError("unknown fault %r; one of %s" % (fault, ", ".join(FAULTS)))
        if count is not None and count < 1:
            raise ValueError("count is None (always) or at least 1")
        with self._lock:
            self._fault, self._fault_left = fault, count

    def clear_fault(self):
        with self._lock:
            self._fault, self._fault_left = None, None

    @property
    def fault(self):
        with self._lock:
            return self._fault

    def _take_fault(self, request):
        if "redirected=1" in request.query.split("&"):
            return None                 # the target of our own redirect answers normally
        with self._lock:
            fault = self._fault
            if fault is not None and self._fault_left is not None:
                self._fault_left -= 1
                if self._fault_left <= 0:
                    self._fault, self._fault_left = None, None
            return fault

    def release_stalls(self):
        """End every stall now (the stalled connections close without an answer)."""
        self._release.set()

    def _stall(self):
        self._release.wait(self.stall_seconds)

    def _redirect(self, request):
        query = request.query + ("&" if request.query else "") + "redirected=1"
        return Response(302, b"", headers={"Location": self.url + request.path + "?" + query})

    @staticmethod
    def _html(status=200):
        return Response(status, b"<!DOCTYPE html><html><head><title>Error</title></head>"
                                b"<body><h1>Service temporarily unavailable</h1></body></html>",
                        "text/html; charset=utf-8")

    @staticmethod
    def _padded(document):
        document = dict(document)
        document["Padding"] = "x" * HUGE_BODY_BYTES
        return document

    def _flat_fault(self, fault, request, credential, extra=None):
        """Faulted flat credential document (IMDS, credentials URI)."""
        if fault == "stall":
            return Response(0, stall=True)
        if fault == "redirect":
            return self._redirect(request)
        if fault == "html":
            return self._html()
        if fault == "server_error":
            return self._html(500)
        now = self.clock()
        document = _flat_document(credential, extra)
        if fault == "code_failed":
            document["Code"] = "Failed"
            document["Message"] = "emulated failure"
        elif fault == "expired":
            document["Expiration"] = format_expiration(now - 120)
        elif fault == "missing_field":
            del document["SecurityToken"]
        elif fault == "bad_expiration":
            document["Expiration"] = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(now + 3600))
        elif fault == "huge":
            document = self._padded(document)
        return json_response(200, document, "text/plain; charset=utf-8")


def _flat_document(credential, extra=None):
    document = {
        "AccessKeyId": credential.access_key_id,
        "AccessKeySecret": credential.access_key_secret,
        "Expiration": credential.expiration_text,
        "SecurityToken": credential.security_token,
        "LastUpdated": credential.last_updated_text,
        "Code": "Success",
    }
    document.update(extra or {})
    return document


# --------------------------------------------------------------------------------------------
# ECS instance metadata service
# --------------------------------------------------------------------------------------------

TOKEN_PATH = "/latest/api/token"
CREDENTIALS_PATH = "/latest/meta-data/ram/security-credentials/"
TTL_HEADER = "x-aliyun-ecs-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aliyun-ecs-metadata-token"
MAX_TOKEN_TTL = 21600


class EcsMetadataEmulator(_EmulatorServer):
    """The metadata service at ``url`` (stands for http://100.100.100.200).

    * ``PUT /latest/api/token`` with ``X-aliyun-ecs-metadata-token-ttl-seconds`` (1..21600)
      answers a token as text; a missing or out-of-range TTL is a 400. With
      ``token_endpoint=False`` the PUT answers ``token_disabled_status`` (404), as where the
      hardened mode is unavailable, to test the fallback.
    * A GET with ``X-aliyun-ecs-metadata-token`` must carry a live token (else 401). A GET
      without one is refused with 403 when ``mode="hardened"`` (instance set to
      hardened-only), served when ``mode="both"`` (normal mode, the default).
    * ``GET /latest/meta-data/ram/security-credentials/`` lists ``role_name`` (404 with
      ``role_name=None``: no role attached); ``GET .../<role_name>`` answers the credential
      JSON (``AccessKeyId`` "STS.…", ``AccessKeySecret``, ``SecurityToken``, ``Expiration``,
      ``LastUpdated``, ``Code: "Success"``), rotating per ``lifetime`` / ``refresh_before``.

    Faults apply to the credential document; with ``fault_scope="all"`` also to the token
    PUT and the role listing. ``rotation.rotate()`` forces new credentials,
    ``expire_tokens()`` invalidates every metadata token handed out."""

    name = "ecs-metadata-emulator"

    def __init__(self, store=None, role_name="EcsRamRoleTest", mode="both", lifetime=60,
                 refresh_before=None, token_endpoint=True, token_disabled_status=404,
                 fault_scope="credentials", host=LOOPBACK, port=0, clock=None,
                 stall_seconds=30.0):
        if mode not in ("both", "hardened"):
            raise ValueError("mode is 'both' or 'hardened'")
        if fault_scope not in ("credentials", "all"):
            raise ValueError("fault_scope is 'credentials' or 'all'")
        store = store if store is not None else CredentialStore(clock or time.time)
        super().__init__(host, port, clock or store.clock, stall_seconds)
        self.store = store
        self.role_name = role_name
        self.mode = mode
        self.token_endpoint = token_endpoint
        self.token_disabled_status = token_disabled_status
        self.fault_scope = fault_scope
        self.rotation = Rotation(store, "ecs", lifetime, refresh_before)
        self._tokens = {}
        self._token_count = 0
        self._token_lock = threading.Lock()

    # -- metadata tokens
    @property
    def tokens_issued(self):
        """How many metadata tokens the PUT handed out (expire_tokens() does not reset it)."""
        with self._token_lock:
            return self._token_count

    def expire_tokens(self):
        with self._token_lock:
            self._tokens.clear()

    def _token_ok(self, token):
        with self._token_lock:
            expiry = self._tokens.get(token)
        return expiry is not None and self.clock() < expiry

    def _put_token(self, request):
        if not self.token_endpoint:
            return Response(self.token_disabled_status, b"Not Found\n")
        ttl = request.headers.get(TTL_HEADER, "")
        if not re.fullmatch(r"[0-9]{1,5}", ttl) or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
            return Response(400, b"Bad Request: X-aliyun-ecs-metadata-token-ttl-seconds "
                                 b"must be 1..21600\n")
        token = base64.urlsafe_b64encode(secrets.token_bytes(36)).decode()
        with self._token_lock:
            self._tokens[token] = self.clock() + int(ttl)
            self._token_count += 1
        return Response(200, token.encode())

    def _authorize(self, request):
        """None when the GET may go on, else the refusal."""
        token = request.headers.get(TOKEN_HEADER)
        if token is not None:
            return None if self._token_ok(token) else Response(401, b"Unauthorized\n")
        if self.mode == "hardened":
            return Response(403, b"Forbidden: this instance allows the hardened mode only\n")
        return None

    def handle(self, request):
        if request.path == TOKEN_PATH:
            if request.method != "PUT":
                return Response(405, b"Method Not Allowed\n", headers={"Allow": "PUT"})
            fault = self._take_fault(request) if self.fault_scope == "all" else None
            if fault is not None:
                return self._flat_fault(fault, request, self.rotation.current())
            return self._put_token(request)
        if request.method != "GET":
            return Response(405, b"Method Not Allowed\n", headers={"Allow": "GET"})
        refused = self._authorize(request)
        if refused is not None:
            return refused
        if not request.path.startswith(CREDENTIALS_PATH) or self.role_name is None:
            return Response(404, b"Not Found\n")
        role = request.path[len(CREDENTIALS_PATH):]
        if role not in ("", self.role_name):
            return Response(404, b"Not Found\n")
        fault = self._take_fault(request) if role or self.fault_scope == "all" else None
        if fault is not None:
            return self._flat_fault(fault, request, self.rotation.current())
        if role == "":
            return Response(200, self.role_name.encode())
        document = _flat_document(self.rotation.current())
        return json_response(200, document, "text/plain; charset=utf-8")


# --------------------------------------------------------------------------------------------
# Credentials URI
# --------------------------------------------------------------------------------------------

class CredentialsUriEmulator(_EmulatorServer):
    """``GET <url><path>`` answers ``{"Code": "Success", "AccessKeyId", "AccessKeySecret",
    "SecurityToken", "Expiration"}`` (what credentials-python ``provider/uri.py`` reads), rotating
    like the metadata service. ``credentials_url`` is the full URL to configure."""

    name = "credentials-uri-emulator"

    def __init__(self, store=None, path="/credentials", lifetime=60, refresh_before=None,
                 host=LOOPBACK, port=0, clock=None, stall_seconds=30.0):
        store = store if store is not None else CredentialStore(clock or time.time)
        super().__init__(host, port, clock or store.clock, stall_seconds)
        self.store = store
        self.path = path
        self.rotation = Rotation(store, "uri", lifetime, refresh_before)

    @property
    def credentials_url(self):
        return self.url + self.path

    def handle(self, request):
        if request.path != self.path:
            return Response(404, b"Not Found\n")
        if request.method != "GET":
            return Response(405, b"Method Not Allowed\n", headers={"Allow": "GET"})
        fault = self._take_fault(request)
        credential = self.rotation.current()
        if fault is not None:
            return self._flat_fault(fault, request, credential)
        document = _flat_document(credential)
        del document["LastUpdated"]
        return json_response(200, document)


# --------------------------------------------------------------------------------------------
# STS
# --------------------------------------------------------------------------------------------

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
TIMESTAMP_WINDOW = 15 * 60
SESSION_NAME = re.compile(r"[A-Za-z0-9.@_-]{2,64}")
ROLE_ARN = re.compile(r"acs:ram::(\d+):role/([A-Za-z0-9.@_-]{1,64})", re.I)
STS_VERSION = "2015-04-01"
STS_HOST_ID = "sts.aliyuncs.com"
MIN_DURATION = 900


def percent_encode(text):
    """RFC 3986 encoding of the UTF-8 bytes: only A-Z a-z 0-9 - _ . ~ stay; everything else,
    space and ``*`` included, becomes %XY with upper-case hex (the "Signature mechanism"
    page). Byte by byte on purpose: no urllib quoting rules to agree with by accident."""
    return "".join(chr(b) if b in _UNRESERVED else "%%%02X" % b for b in text.encode("utf-8"))


def canonicalized_query(params):
    """Every parameter but ``Signature``, sorted by name, ``name=value`` joined with ``&``."""
    pairs = sorted((k, v) for k, v in params.items() if k != "Signature")
    return "&".join(percent_encode(k) + "=" + percent_encode(v) for k, v in pairs)


def string_to_sign(method, params):
    return method.upper() + "&" + percent_encode("/") + "&" + percent_encode(
        canonicalized_query(params))


def rpc_signature(access_key_secret, method, params):
    """Base64(HMAC-SHA1(key = secret + "&", StringToSign))."""
    digest = hmac.new((access_key_secret + "&").encode("utf-8"),
                      string_to_sign(method, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class StsError(Exception):
    def __init__(self, status, code, message):
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


@dataclasses.dataclass(frozen=True)
class StsCall:
    """One successful STS call, for tests to assert on (``policy`` is the parsed Policy JSON,
    None when none was passed)."""
    action: str
    params: dict
    policy: object
    credential: Credential


class StsEmulator(_EmulatorServer):
    """``POST`` or ``GET /`` with RPC parameters in the query and/or an
    ``application/x-www-form-urlencoded`` body, answering JSON.

    ``AssumeRole`` checks, in this order: Action/Version/Format; the signature parameters and
    ``Timestamp`` (YYYY-MM-DDThh:mm:ssZ, within 15 minutes of ``clock``); the AccessKeyId
    (``access_keys``: {id: secret} or {id: (secret, security_token)}, plus any credential of
    ``store`` when ``accept_store_credentials``); the signature (this module's own
    canonicalization; the error message echoes the server's StringToSign, as STS does, unless
    ``echo_string_to_sign=False``); the ``SignatureNonce`` (a reuse is refused); then
    ``RoleArn`` (in ``role_arns`` when given), ``RoleSessionName`` (2..64 of
    ``A-Za-z0-9.@_-``), ``DurationSeconds`` (900..``max_session_duration``), ``Policy``
    (1..2048 characters of JSON).

    ``AssumeRoleWithOIDC`` is anonymous: ``RoleArn``, ``OIDCProviderArn`` (must equal
    ``oidc_provider_arn``), ``OIDCToken`` (4..20000 characters; must equal ``oidc_token``,
    which tests may change at any time to rotate the token file), ``RoleSessionName``,
    optional ``DurationSeconds`` and ``Policy``.

    Success answers ``{"RequestId", "AssumedRoleUser": {"Arn", "AssumedRoleId"}, "Credentials":
    {"AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"}}`` (+ ``OIDCTokenInfo``
    for OIDC); errors ``{"RequestId", "HostId", "Code", "Message"}``. The credentials live
    ``lifetime`` seconds when set (short, for tests), else ``DurationSeconds`` (default 3600).
    ``calls`` lists the successful calls (with the Policy passed)."""

    name = "sts-emulator"

    def __init__(self, store=None, access_keys=None, role_arns=None,
                 oidc_provider_arn="acs:ram::1234567890123456:oidc-provider/ack-rrsa-test",
                 oidc_token=None, lifetime=None, max_session_duration=43200,
                 accept_store_credentials=False, echo_string_to_sign=True,
                 host=LOOPBACK, port=0, clock=None, stall_seconds=30.0):
        store = store if store is not None else CredentialStore(clock or time.time)
        super().__init__(host, port, clock or store.clock, stall_seconds)
        self.store = store
        self.access_keys = dict(access_keys if access_keys is not None else {"ak": "sk"})
        self.role_arns = None if role_arns is None else set(role_arns)
        self.oidc_provider_arn = oidc_provider_arn
        self.oidc_token = oidc_token
        self.lifetime = lifetime
        self.max_session_duration = max_session_duration
        self.accept_store_credentials = accept_store_credentials
        self.echo_string_to_sign = echo_string_to_sign
        self._nonces = {}
        self._calls = []

    @property
    def calls(self):
        with self._lock:
            return list(self._calls)

    @property
    def last_call(self):
        calls = self.calls
        return calls[-1] if calls else None

    # -- request parsing
    @staticmethod
    def _params(request):
        pairs = urllib.parse.parse_qsl(request.query, keep_blank_values=True,
                                       errors="strict")
        if request.method == "POST" and request.body:
            content_type = request.headers.get("content-type", "").split(";")[0].strip()
            if content_type.lower() != "application/x-www-form-urlencoded":
                raise StsError(400, "InvalidParameter",
                               "Specified parameter body is not form-urlencoded.")
            pairs += urllib.parse.parse_qsl(request.body.decode("utf-8"),
                                            keep_blank_values=True, errors="strict")
        params = {}
        for name, value in pairs:
            if name in params:
                raise StsError(400, "InvalidParameter",
                               "Specified parameter %s is repeated." % name)
            params[name] = value
        return params

    def handle(self, request):
        request_id = str(uuid.uuid4()).upper()
        if request.path != "/":
            return self._error(request_id, StsError(404, "InvalidApi.NotFound",
                                                    "Specified api is not found."))
        if request.method not in ("GET", "POST"):
            return self._error(request_id, StsError(405, "UnsupportedHTTPMethod",
                                                    "This http method is not supported."))
        try:
            params = self._params(request)
            document = self._dispatch(request.method, params, request_id)
        except UnicodeDecodeError:
            return self._error(request_id, StsError(400, "InvalidParameter",
                                                    "Parameters are not valid UTF-8."))
        except StsError as error:
            return self._error(request_id, error)
        fault = self._take_fault(request)
        if fault is not None:
            return self._sts_fault(fault, request, document, request_id)
        return json_response(200, document)

    def _error(self, request_id, error):
        return json_response(error.status, {"RequestId": request_id, "HostId": STS_HOST_ID,
                                            "Code": error.code, "Message": error.message})

    def _dispatch(self, method, params, request_id):
        action = params.get("Action")
        if not action:
            raise StsError(400, "MissingParameter", "The input parameter Action is mandatory.")
        if params.get("Version") != STS_VERSION:
            raise StsError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        if params.get("Format") != "JSON":
            raise StsError(400, "InvalidParameter.Format",
                           "This emulator answers Format=JSON only.")
        if action == "AssumeRole":
            return self._assume_role(method, params, request_id)
        if action == "AssumeRoleWithOIDC":
            return self._assume_role_with_oidc(params, request_id)
        raise StsError(404, "InvalidAction.NotFound", "Specified api is not found.")

    # -- AssumeRole
    def _assume_role(self, method, params, request_id):
        for name in ("AccessKeyId", "Signature", "SignatureMethod", "SignatureVersion",
                     "SignatureNonce", "Timestamp"):
            if not params.get(name):
                raise StsError(400, "MissingParameter" if name != "Signature"
                               else "IncompleteSignature",
                               "The input parameter %s is mandatory." % name)
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            raise StsError(400, "IncompleteSignature",
                           "The request signature does not conform to Aliyun standards.")
        self._check_timestamp(params["Timestamp"])
        secret = self._caller_secret(params)
        expected = rpc_signature(secret, method, params)
        if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
            message = "Specified signature is not matched with our calculation."
            if self.echo_string_to_sign:
                message += " server string to sign is:" + string_to_sign(method, params)
            raise StsError(400, "SignatureDoesNotMatch", message)
        self._use_nonce(params["SignatureNonce"])
        role_arn, session, duration, policy = self._role_params(params)
        credential = self._issue(duration, "sts:AssumeRole")
        self._record_call("AssumeRole", params, policy, credential)
        return self._success(request_id, role_arn, session, credential)

    def _check_timestamp(self, text):
        try:
            stamp = parse_expiration(text)
        except ValueError:
            raise StsError(400, "InvalidTimeStamp.Format",
                           "Specified time stamp or date value is not well formatted.")
        if abs(self.clock() - stamp) > TIMESTAMP_WINDOW:
            raise StsError(400, "InvalidTimeStamp.Expired",
                           "Specified time stamp or date value is expired.")

    def _caller_secret(self, params):
        access_key_id = params["AccessKeyId"]
        entry = self.access_keys.get(access_key_id)
        token = params.get("SecurityToken")
        if entry is not None:
            secret, expected_token = entry if isinstance(entry, tuple) else (entry, None)
            if expected_token is not None and token != expected_token:
                raise StsError(400, "MissingSecurityToken" if token is None
                               else "InvalidSecurityToken.Mismatch",
                               "SecurityToken is mandatory for this action." if token is None
                               else "Specified SecurityToken mismatch with the AccessKey.")
            return secret
        credential = self.store.lookup(access_key_id) if self.accept_store_credentials else None
        if credential is None:
            raise StsError(404, "InvalidAccessKeyId.NotFound",
                           "Specified access key is not found.")
        if not self.store.is_valid(access_key_id):
            raise StsError(400, "InvalidSecurityToken.Expired",
                           "Specified SecurityToken is expired.")
        if token != credential.security_token:
            raise StsError(400, "MissingSecurityToken" if token is None
                           else "InvalidSecurityToken.Mismatch",
                           "SecurityToken is mandatory for this action." if token is None
                           else "Specified SecurityToken mismatch with the AccessKey.")
        return credential.access_key_secret

    def _use_nonce(self, nonce):
        now = self.clock()
        with self._lock:
            for old in [n for n, at in self._nonces.items() if now - at > 2 * TIMESTAMP_WINDOW]:
                del self._nonces[old]
            if nonce in self._nonces:
                raise StsError(400, "SignatureNonceUsed",
                               "Specified signature nonce was used already.")
            self._nonces[nonce] = now

    # -- parameters shared by both actions
    def _role_params(self, params):
        role_arn = params.get("RoleArn")
        if not role_arn:
            raise StsError(400, "MissingRoleArn", "RoleArn is mandatory for this action.")
        if not ROLE_ARN.fullmatch(role_arn):
            raise StsError(400, "InvalidParameter.RoleArn", "The parameter RoleArn is wrongly "
                                                            "formed.")
        if self.role_arns is not None and role_arn not in self.role_arns:
            raise StsError(403, "NoPermission", "You are not authorized to do this action. "
                                                "You should be authorized by RAM.")
        session = params.get("RoleSessionName")
        if not session:
            raise StsError(400, "MissingRoleSessionName",
                           "RoleSessionName is mandatory for this action.")
        if not SESSION_NAME.fullmatch(session):
            raise StsError(400, "InvalidParameter.RoleSessionName",
                           "The parameter RoleSessionName is wrongly formed.")
        duration = params.get("DurationSeconds", "3600")
        if (not re.fullmatch(r"[0-9]{1,6}", duration)
                or not MIN_DURATION <= int(duration) <= self.max_session_duration):
            raise StsError(400, "InvalidParameter.DurationSeconds",
                           "The Min/Max value of DurationSeconds is 15min/%ds."
                           % self.max_session_duration)
        policy = None
        if "Policy" in params:
            text = params["Policy"]
            try:
                if not 1 <= len(text) <= 2048:
                    raise ValueError("length")
                policy = json.loads(text)
                if not isinstance(policy, dict):
                    raise ValueError("not an object")
            except ValueError:
                raise StsError(400, "InvalidParameter.PolicyGrammar",
                               "The parameter Policy has not passed grammar check.")
        return role_arn, session, int(duration), policy

    def _issue(self, duration, source):
        lifetime = self.lifetime if self.lifetime is not None else duration
        return self.store.issue(lifetime, source)

    def _record_call(self, action, params, policy, credential):
        kept = {k: v for k, v in params.items() if k != "Signature"}
        with self._lock:
            self._calls.append(StsCall(action, kept, policy, credential))

    def _success(self, request_id, role_arn, session, credential, extra=None):
        account, role = ROLE_ARN.fullmatch(role_arn).groups()
        document = {
            "RequestId": request_id,
            "AssumedRoleUser": {
                "AssumedRoleId": "3%017d:%s" % (int(account) % 10 ** 17, session),
                "Arn": "acs:ram::%s:role/%s/%s" % (account, role.lower(), session),
            },
            "Credentials": {
                "SecurityToken": credential.security_token,
                "AccessKeyId": credential.access_key_id,
                "AccessKeySecret": credential.access_key_secret,
                "Expiration": credential.expiration_text,
            },
        }
        document.update(extra or {})
        return document

    # -- AssumeRoleWithOIDC
    def _assume_role_with_oidc(self, params, request_id):
        provider = params.get("OIDCProviderArn")
        token = params.get("OIDCToken")
        if not provider:
            raise StsError(400, "MissingOIDCProviderArn",
                           "OIDCProviderArn is mandatory for this action.")
        if provider != self.oidc_provider_arn:
            raise StsError(401, "AuthenticationFail.NoPermission",
                           "No such OIDC Provider registered.")
        if not token:
            raise StsError(401, "AuthenticationFail.OIDCToken.Invalid",
                           "The OIDCToken can not empty.")
        if not 4 <= len(token) <= 20000:
            raise StsError(400, "InvalidParameter.OIDCToken",
                           "The parameter OIDCToken is wrongly formed.")
        expected = self.oidc_token
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            raise StsError(401, "AuthenticationFail.OIDCToken.InvalidSignature",
                           "OIDC token validate failed: invalid signature.")
        role_arn, session, duration, policy = self._role_params(params)
        credential = self._issue(duration, "sts:AssumeRoleWithOIDC")
        self._record_call("AssumeRoleWithOIDC", params, policy, credential)
        info = {"OIDCTokenInfo": {"Subject": "system:serviceaccount:default:app-server",
                                  "Issuer": "https://oidc-ack.example.invalid/test",
                                  "ClientIds": "sts.aliyuncs.com"}}
        return self._success(request_id, role_arn, session, credential, info)

    # -- faults
    def _sts_fault(self, fault, request, document, request_id):
        if fault == "stall":
            return Response(0, stall=True)
        if fault == "redirect":
            return self._redirect(request)
        if fault == "html":
            return self._html()
        if fault == "server_error":
            return json_response(500, {"RequestId": request_id, "HostId": STS_HOST_ID,
                                       "Code": "InternalError",
                                       "Message": "The request processing has failed due to "
                                                  "some unknown error."})
        if fault == "code_failed":
            return json_response(200, {"RequestId": request_id, "HostId": STS_HOST_ID,
                                       "Code": "Failed", "Message": "emulated failure"})
        document = json.loads(json.dumps(document))
        credentials = document["Credentials"]
        if fault == "expired":
            credentials["Expiration"] = format_expiration(self.clock() - 120)
        elif fault == "missing_field":
            del credentials["SecurityToken"]
        elif fault == "bad_expiration":
            credentials["Expiration"] = time.strftime("%Y/%m/%d %H:%M:%S",
                                                      time.gmtime(self.clock() + 3600))
        elif fault == "huge":
            document = self._padded(document)
        return json_response(200, document)


def sign_rpc_request(params, access_key_secret, method="GET"):
    """A copy of ``params`` with ``Signature`` added (for tests that build STS requests)."""
    signed = dict(params)
    signed["Signature"] = rpc_signature(access_key_secret, method, params)
    return signed
