"""Shared test helpers. Test modules import helpers from here, never from each other.

- the app server and a public-key server on 127.0.0.1, and free loopback ports;
- raw HTTP/1.1 exchanges and a strict response parser;
- the official OSS callback example, and callbacks signed with the test keys;
- a capture of the app's log records, and images whose size the emulator reads;
- fakes for the public-key cache (a counting fetch, a settable clock);
- skips that become failures under CI=true.
"""

import base64
import json
import logging
import os
import pathlib
import re
import socket
import socketserver
import struct
import threading
import time
import unittest
import urllib.parse
import zlib

from tests import rsa_testkit as kit

REPO = pathlib.Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
FORM = "application/x-www-form-urlencoded"


def require(condition, reason):
    """Skip when an optional tool is missing, except in CI, which installs everything:
    there a missing tool means the setup broke, and a silent skip would hide it."""
    if condition:
        return
    if IN_CI:
        raise AssertionError("required under CI=true: " + reason)
    raise unittest.SkipTest(reason)


###############################################################################
# Servers on loopback
###############################################################################

def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A port that was free a moment ago on ``host`` (for servers that need it up front)."""
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_app_server(config, app=None, **options):
    """Start the app server on 127.0.0.1:0 in a thread; returns (server, base_url)."""
    import appserver

    server = appserver.make_server(config, "127.0.0.1", 0, app=app, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="appserver-test", daemon=True)
    thread.start()
    server._test_thread = thread
    host, port = server.server_address[:2]
    return server, "http://%s:%d" % (host, port)


def stop_app_server(server):
    server.stop()
    server._test_thread.join(10)


class KeyServer:
    """A loopback server of public keys, well and badly behaved, for the app's key fetch.

    ``GET /keys/[any/folders/]NAME.pem`` answers with the route ``route_NAME`` (dashes become
    underscores); any other request is a 404. The folders give a test URLs of its own for the
    same route. Every request path is recorded, in order, so tests count fetches per URL.
    """

    def __init__(self, pem=None):
        self.pem = pem if pem is not None else (kit.DATA / "rsa2048_pub.pem").read_bytes()
        self.weak_pem = (kit.DATA / "rsa1024_pub.pem").read_bytes()
        self.e3_pem = (kit.DATA / "rsa2048_e3_pub.pem").read_bytes()
        self.requests = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                owner._serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.prefix = "http://127.0.0.1:%d/keys/" % self.port
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True,
                                       name="key-server")
        self.thread.start()

    def url(self, name):
        return self.prefix + name

    def count(self, name):
        """How many requests named /keys/``name``."""
        with self.lock:
            return self.requests.count("/keys/" + name)

    def total(self):
        with self.lock:
            return len(self.requests)

    def stop(self):
        self.stopping.set()  # stalled routes return at once
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def _serve(self, conn):
        conn.settimeout(10)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
        except OSError:
            return
        path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
        with self.lock:
            self.requests.append(path)
        name = path.rsplit("/", 1)[-1]
        route = None
        if path.startswith("/keys/") and name.endswith(".pem"):
            route = getattr(self, "route_" + name[:-4].replace("-", "_"), None)
        try:
            if route is None:
                self.send(conn, b"", status="404 Not Found", ctype=None)
            else:
                route(conn)
        except OSError:
            pass  # the app gave up (deadline, size cap): that is what many routes test

    def send(self, conn, body, status="200 OK", ctype="application/x-pem-file", length=True,
             version="HTTP/1.0", pause=0.02, close=False):
        """One response. ``pause``: seconds between the head and the body, which then arrive
        in separate TCP segments as a real server may send them; None sends one write."""
        head = "%s %s\r\n" % (version, status)
        if ctype:
            head += "Content-Type: %s\r\n" % ctype
        if length:
            head += "Content-Length: %d\r\n" % len(body)
        if close:
            head += "Connection: close\r\n"
        head = (head + "\r\n").encode("latin-1")
        if pause is None:
            conn.sendall(head + body)
            return
        conn.sendall(head)
        time.sleep(pause)
        conn.sendall(body)

    # -- routes: /keys/<name>.pem -> route_<name>

    def route_good(self, conn):
        self.send(conn, self.pem)

    route_good2 = route_good
    route_redirect_target = route_good

    def route_e3(self, conn):
        self.send(conn, self.e3_pem)

    def route_weak(self, conn):
        self.send(conn, self.weak_pem)

    def route_one_write(self, conn):
        self.send(conn, self.pem, version="HTTP/1.1", pause=None, close=True)

    def route_split(self, conn):
        # An HTTP/1.0 answer whose body is a later TCP segment.
        self.send(conn, self.pem, pause=0.1)

    def route_cold(self, conn):
        self.stopping.wait(0.4)  # widen the window so concurrent callbacks meet one fetch
        self.send(conn, self.pem)

    def route_chunked(self, conn):
        # HTTP/1.1 chunked with Connection: close, as many CDNs answer.
        half = len(self.pem) // 2
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"%x\r\n" % half + self.pem[:half] + b"\r\n")
        time.sleep(0.1)
        conn.sendall(b"%x\r\n" % (len(self.pem) - half) + self.pem[half:] + b"\r\n0\r\n\r\n")

    def route_redirect(self, conn):
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n" % self.url("redirect-target.pem").encode())

    def route_stall(self, conn):
        self.stopping.wait(30)  # accepts, reads the request, never answers

    def route_stall_body(self, conn):
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.pem)
                     + self.pem[:20])
        self.stopping.wait(30)

    def route_trickle(self, conn):
        # One byte every 0.5 s: never idle long enough for a per-read timeout.
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        for byte in self.pem:
            if self.stopping.wait(0.5):
                return
            conn.sendall(bytes([byte]))

    def route_huge(self, conn):
        # A valid PEM then 5 MB of newlines, close-delimited (no Content-Length): only a size
        # cap tells this apart from a good key.
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/x-pem-file\r\n\r\n"
                     + self.pem)
        for _ in range(80):
            if self.stopping.is_set():
                return
            conn.sendall(b"\n" * 65536)

    def route_huge_declared(self, conn):
        size = 5 * 1024 * 1024
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(self.pem) + size)
                     + self.pem)
        for _ in range(size // 65536):
            if self.stopping.is_set():
                return
            conn.sendall(b"\n" * 65536)

    def route_html(self, conn):
        self.send(conn, b"<!doctype html><html><body><h1>Welcome</h1></body></html>\n",
                  ctype="text/html")

    def route_html_wrapped(self, conn):
        self.send(conn, b"<html><body><pre>\n" + self.pem + b"</pre></body></html>\n",
                  ctype="text/html")

    def route_two_pems(self, conn):
        self.send(conn, self.pem + self.e3_pem)

    def route_status500(self, conn):
        self.send(conn, self.pem, status="500 Internal Server Error")

    def route_empty(self, conn):
        self.send(conn, b"")


class AppServerTestCase(unittest.TestCase):
    """A test with an app server of its own: ``start_server`` runs one for this test only and
    keeps the app's log records (refusals are logged by design) for context."""

    def start_server(self, config, app=None, **options):
        self.logs = capture_logs(self)
        self.server, self.base_url = start_app_server(config, app=app, **options)
        self.port = self.server.server_address[1]
        self.addCleanup(stop_app_server, self.server)

    def request(self, method, target, body=None, headers=None, timeout=10):
        """(status, http.client response, body) of one request on a new connection."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp, data
        finally:
            conn.close()

    def assertJsonError(self, status, headers, body, expected_status):
        return assert_json_error(self, status, headers, body, expected_status)

    def assertOkUpload(self, status, headers, body, expected_fields, user=None):
        assert_ok_upload(self, status, headers, body, expected_fields,
                         "; recent server log: %s" % self.logs.recent(), user=user)


###############################################################################
# Raw HTTP/1.1
###############################################################################

STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) [^\r\n]*$")
TRACEBACK_MARKERS = (b"Traceback", b'File "', b'.py", line')


def request_bytes(method, target, headers=(), body=b"", version="HTTP/1.1", host="t"):
    """A request as bytes: the request line, ``Host``, then ``headers`` (pairs) in order."""
    lines = ["%s %s %s" % (method, target, version)]
    if host is not None:
        lines.append("Host: " + host)
    lines += ["%s: %s" % (name, value) for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def exchange(port, data, *, shut_write=True, timeout=10.0, host="127.0.0.1"):
    """Send ``data`` on a new connection, half-close unless ``shut_write`` is false, and read
    until the server closes. Without the half-close only the server can end the exchange: a
    server that keeps the connection open fails the test after ``timeout`` seconds."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before reading everything (or at once: 503)
        return read_to_eof(sock)


def read_to_eof(sock):
    """Everything the peer sends until it closes. A socket timeout is a failed assertion."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break  # RST after the server closed with unread request bytes: data already read
        except socket.timeout:
            raise AssertionError("the connection was still open after %s s; received %r"
                                 % (sock.gettimeout(), b"".join(chunks)[:300])) from None
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_responses(data, head=False):
    """Split a byte stream into HTTP/1.1 responses: [(status, {lower-name: [values]}, body)].
    Raises AssertionError on a malformed or truncated response. ``head``: the requests were
    HEAD, so a response may carry a Content-Length and no body."""
    responses = []
    while data:
        head_bytes, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError("truncated response head: %r" % data[:200])
        lines = head_bytes.split(b"\r\n")
        match = STATUS_LINE.match(lines[0])
        if not match:
            raise AssertionError("bad status line %r" % lines[0][:200])
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise AssertionError("bad header line %r" % line[:200])
            headers.setdefault(name.strip().lower().decode("latin-1"), []).append(
                value.strip().decode("latin-1"))
        status = int(match.group(1))
        length = headers.get("content-length", ["0"])
        if len(length) != 1:
            raise AssertionError("response with %d Content-Length headers" % len(length))
        length = int(length[0])
        if head and (len(rest) < length or rest.startswith(b"HTTP/1.")):
            length = 0
        if len(rest) < length:
            raise AssertionError("truncated response body: %d of %d bytes" % (len(rest), length))
        responses.append((status, headers, rest[:length]))
        data = rest[length:]
    return responses


def parse_response(data, head=False):
    """(status, headers, body) of ``data``, which must hold exactly one complete response."""
    responses = parse_responses(data, head)
    if len(responses) != 1:
        raise AssertionError("%d responses where one was expected: %r"
                             % (len(responses), data[:500]))
    return responses[0]


def one_response(port, data, **options):
    """``exchange`` then ``parse_response``: exactly one response, parsed."""
    return parse_response(exchange(port, data, **options))


def post_raw(port, target, body, headers, version="HTTP/1.1"):
    """POST ``body`` with ``headers`` (a dict) and Connection: close; (status, headers, body)."""
    return one_response(port, request_bytes(
        "POST", target, [("Connection", "close"), ("Content-Length", str(len(body)))]
        + list(headers.items()), body, version))


def _header(headers, name):
    """One header of a parsed response ({lower-name: [values]}) or an http.client response."""
    if hasattr(headers, "getheader"):
        return headers.getheader(name)
    values = headers.get(name.lower())
    return values[0] if values else None


def assert_json_error(test, status, headers, body, expected_status):
    """An error answer of the app: ``expected_status``, Content-Type application/json, a
    correct Content-Length, a JSON error document and no traceback. ``headers``: as parsed
    by ``parse_response``, or an http.client response. Returns the document."""
    test.assertEqual(status, expected_status, body[:300])
    test.assertEqual(_header(headers, "Content-Type"), "application/json")
    length = _header(headers, "Content-Length")
    if length is not None:
        test.assertEqual(int(length), len(body))
    for marker in TRACEBACK_MARKERS:
        test.assertNotIn(marker, body)
    return json_error(body)


def assert_ok_upload(test, status, headers, body, expected_fields, context="", user=None):
    """A verified callback's answer from the default hook: 200, JSON with a correct length,
    "Status":"OK" as its first member, then ``user`` (None for a callback verified without a
    grant) and ``expected_fields`` (the raw callback fields) as its "upload"."""
    test.assertEqual(status, 200, "%r %s" % (body[:300], context))
    test.assertTrue(_header(headers, "Content-Type").startswith("application/json"))
    test.assertEqual(int(_header(headers, "Content-Length")), len(body))
    pairs = json.loads(body, object_pairs_hook=list)
    test.assertEqual(pairs[0], ("Status", "OK"), "\"Status\":\"OK\" must come first")
    test.assertEqual(json.loads(body), {"Status": "OK", "user": user, "upload": expected_fields})


def json_error(body):
    """The app's JSON error document in ``body``: {"Status": "Error", "Message": non-empty}."""
    document = json.loads(body)
    if document.get("Status") != "Error":
        raise AssertionError("not an error document: %r" % body[:300])
    if not isinstance(document.get("Message"), str) or not document["Message"]:
        raise AssertionError("error without a message: %r" % body[:300])
    return document


###############################################################################
# Callbacks: the official example, and callbacks signed with the test keys
###############################################################################

# The example request of OSS's "Callback" API documentation, signed by OSS with the 512-bit
# key published at OFFICIAL_KEY_URL (which the app embeds, so it is never fetched).
OFFICIAL_TARGET = "/index.php?id=1&index=2"
OFFICIAL_BODY = b"bucket=yonghu-test"
OFFICIAL_AUTHORIZATION = ("kKQeGTRccDKyHB3H9vF+xYMSrmhMZjzzl2/kdD1ktNVgbWEfYTQG0G2SU/RaHBovRCE8"
                          "OkQDjC3uG33esH2txA==")
OFFICIAL_KEY_URL = "http://gosspublic.alicdn.com/callback_pub_key_v1.pem"
OFFICIAL_KEY_URL_B64 = ("aHR0cDovL2dvc3NwdWJsaWMuYWxpY2RuLmNvbS9jYWxsYmFja19wdWJfa2V5X3Yx"
                        "LnBlbQ==")
OFFICIAL_KEY_URL_HTTPS_B64 = ("aHR0cHM6Ly9nb3NzcHVibGljLmFsaWNkbi5jb20vY2FsbGJhY2tfcHViX2tleV92"
                              "MS5wZW0=")


def official_callback(connection="close", version="HTTP/1.0", *, target=OFFICIAL_TARGET,
                      body=OFFICIAL_BODY, authorization=OFFICIAL_AUTHORIZATION,
                      key_url_b64=OFFICIAL_KEY_URL_B64):
    """The documented callback request, byte for byte; each part can be swapped."""
    head = ("POST %s %s\r\nHost: 121.43.113.8\r\nConnection: %s\r\nContent-Length: %d\r\n"
            "authorization: %s\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "User-Agent: http-client/0.0.1\r\nx-oss-pub-key-url: %s\r\n\r\n"
            % (target, version, connection, len(body), authorization, key_url_b64))
    return head.encode("latin-1") + body


def official_header(name):
    """The value of header ``name`` (lower case) in the official example."""
    head = official_callback().split(b"\r\n\r\n")[0].decode()
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(": ")
        if key.lower() == name:
            return value
    raise KeyError(name)


def string_to_sign(target, body):
    """What OSS signs, computed independently of appserver: the percent-decoded path, then
    '?' and the raw query if the target has a '?', then '\\n' and the body."""
    path, question, query = target.partition("?")
    out = urllib.parse.unquote_to_bytes(path)
    if question:
        out += b"?" + query.encode("latin-1")
    return out + b"\n" + body


def signed_headers(key, target, body, key_url, content_type=FORM, hash_name="md5"):
    """The headers of a callback to ``target`` signed with the test private ``key``
    (tests/rsa_testkit.py), naming ``key_url`` as its public key."""
    signature = kit.sign(key, string_to_sign(target, body), hash_name)
    return {"Content-Type": content_type,
            "authorization": base64.b64encode(signature).decode("ascii"),
            "x-oss-pub-key-url": base64.b64encode(key_url.encode("latin-1")).decode("ascii")}


###############################################################################
# Images the emulator can measure (it reports their sizes in callbacks)
###############################################################################

def png_bytes(width, height):
    """A real, valid RGB PNG (a gradient) built with zlib."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes(((x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1), 128))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
            + chunk(b"IEND", b""))


def jpeg_bytes(width, height, sof=0xC0):
    """The JPEG segments that give its size: SOI, APP0 (JFIF), an APP1 to skip, fill bytes,
    then a frame header (``sof``: 0xC0 baseline, 0xC2 progressive), and EOI."""
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    exif = b"Exif\x00\x00" + b"\x00" * 300
    frame = bytes([8]) + struct.pack(">HH", height, width) + b"\x01\x01\x11\x00"
    return (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0
            + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
            + b"\xff\xff" + bytes([0xFF, sof]) + struct.pack(">H", len(frame) + 2) + frame
            + b"\xff\xd9")


###############################################################################
# Logs
###############################################################################

class LogCapture(logging.Handler):
    """Every record of a logger tree ("appserver" unless told), kept for assertions and off
    the test output. ``lines`` are formatted with the level, the logger and any traceback.

    Use it as a context manager, or through ``capture_logs``."""

    FORMAT = "%(levelname)s %(name)s %(message)s"

    def __init__(self, logger="appserver"):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(self.FORMAT))
        self.logger = logging.getLogger(logger)
        self.records = []
        self.lines = []
        self._records_lock = threading.Lock()
        self._old_level = None

    def emit(self, record):
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a broken record must not break the server
            self.handleError(record)
            return
        with self._records_lock:
            self.records.append(record)
            self.lines.append(text)

    def start(self):
        self._old_level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self)
        return self

    def stop(self):
        self.logger.removeHandler(self)
        self.logger.setLevel(self._old_level)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def text(self):
        with self._records_lock:
            return "\n".join(self.lines)

    def messages(self):
        """The records' messages alone (no level, no logger, no traceback)."""
        with self._records_lock:
            return [record.getMessage() for record in self.records]

    def errors(self):
        """Formatted lines of the records at ERROR and above."""
        with self._records_lock:
            return [line for record, line in zip(self.records, self.lines)
                    if record.levelno >= logging.ERROR]

    def tracebacks(self):
        """Messages of the records that carry an exception or are errors."""
        with self._records_lock:
            return [record.getMessage() for record in self.records
                    if record.exc_info or record.levelno >= logging.ERROR]

    def recent(self, count=8):
        """The last ``count`` messages: context for a failing assertion."""
        return self.messages()[-count:]


def capture_logs(case, logger="appserver"):
    """A started LogCapture that stops when ``case`` ends: a test (an instance) or a test
    class (a class, from setUpClass)."""
    capture = LogCapture(logger).start()
    if isinstance(case, type):
        case.addClassCleanup(capture.stop)
    else:
        case.addCleanup(capture.stop)
    return capture


###############################################################################
# Fakes for the public-key cache
###############################################################################

class FakeClock:
    """A clock for PublicKeyCache that moves only when told."""

    def __init__(self, t=1000.0):
        self.t = t
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return self.t

    def advance(self, seconds):
        with self.lock:
            self.t += seconds


class CountingFetch:
    """A fetch for PublicKeyCache: records the URLs, returns a PEM (the 2048-bit test key
    unless told) or raises (``fail``: True for PubKeyUnavailable, or an exception to raise);
    ``delay`` widens races."""

    def __init__(self, pem=None, fail=False, delay=0.0):
        self.pem = pem if pem is not None else (kit.DATA / "rsa2048_pub.pem").read_bytes()
        self.fail = fail
        self.delay = delay
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, url, *args, **kwargs):
        import appserver

        with self.lock:
            self.calls.append(url)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            # what fetch_public_key_pem raises for any network failure
            raise self.fail if isinstance(self.fail, BaseException) else \
                appserver.PubKeyUnavailable("fake fetch failure")
        return self.pem

    @property
    def count(self):
        with self.lock:
            return len(self.calls)

    def fetched(self, url):
        with self.lock:
            return url in self.calls


###############################################################################
# Tickets and configurations, as a deployment has them
###############################################################################

def mint_ticket(secret, user, expiry):
    """An upload ticket in the documented format (<user>.<expiry>.<mac>, the mac unpadded
    base64url of HMAC-SHA256(secret, "oss-upload-ticket.v1.<user>.<expiry>")), minted
    without appserver."""
    import hashlib
    import hmac
    payload = "%s.%d" % (user, expiry)
    mac = hmac.new(secret.encode("utf-8"), ("oss-upload-ticket.v1." + payload).encode("utf-8"),
                   hashlib.sha256).digest()
    return payload + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def env_config(**environ):
    """A Config the way a deployment gets one: from environment variables (static keys, the
    default bucket, no callback and no upload confirmation unless given: a test of
    verification alone has no bucket to send a HEAD to)."""
    import appserver
    values = {"OSS_ACCESS_KEY_ID": "ak", "OSS_ACCESS_KEY_SECRET": "sk-of-the-test",
              "OSS_HOST": "https://examplebucket.oss-cn-hangzhou.aliyuncs.com",
              "OSS_CALLBACK_URL": "", "OSS_CONFIRM_UPLOADS": "0"}
    values.update(environ)
    return appserver.config_from_env(values, server_url=None)
