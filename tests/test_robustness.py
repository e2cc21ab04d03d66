"""Robustness against a live server on 127.0.0.1: slow clients and deadlines, the connection
cap, seeded fuzzing, validly signed hostile bodies, a failing hook, secrets, and graceful
shutdown under load. (Request framing is in test_framing.py, key servers that misbehave in
test_key_fetch.py.)

Callbacks here are OSS's documentation example or signed with test keys: none comes from one of
our tokens, so the servers that take them run with callback_binding=False (OSS_CALLBACK_BINDING=0)
and test verification alone.

Everything is bounded in time: servers run with small idle/request deadlines and every client
socket has a timeout. The whole module takes well under a minute.
"""

import base64
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

import appserver
from tests import rsa_testkit as kit
from tests.support import (FORM, OFFICIAL_AUTHORIZATION, OFFICIAL_BODY, OFFICIAL_KEY_URL_B64,
                           REPO, TRACEBACK_MARKERS, LogCapture, capture_logs, exchange, free_port,
                           json_error, official_callback, one_response, parse_responses,
                           read_to_eof, start_app_server, stop_app_server, string_to_sign)


class ServerCase(unittest.TestCase):
    server_options = {"idle_timeout": 1.0, "request_timeout": 2.0, "max_connections": 64}
    config = appserver.Config()

    def setUp(self):
        self.capture_logs()
        self.server, self.base_url = start_app_server(self.config, **self.server_options)
        self.port = self.server.server_address[1]
        self.addCleanup(stop_app_server, self.server)

    def capture_logs(self):
        """Keep the server's log lines for assertions (and off the test output)."""
        self.logs = capture_logs(self)

    def get_token_ok(self, timeout=10.0):
        status, headers, body = one_response(
            self.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            timeout=timeout)
        self.assertEqual(status, 200)
        token = json.loads(body)
        self.assertIn("policy", token)
        self.assertIn("signature", token)
        return token


###############################################################################
# Slow clients, deadlines, connection cap
###############################################################################

class SlowClients(ServerCase):
    server_options = {"idle_timeout": 4.0, "request_timeout": 6.0, "max_connections": 400}

    def test_200_idle_and_slowloris_connections_do_not_starve_a_normal_client(self):
        baseline_threads = threading.active_count()
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if i % 2:  # slowloris: a request line and a partial header, then nothing
                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: a")
            held.append(sock)
        started = time.monotonic()
        self.get_token_ok(timeout=30)  # liveness, not speed
        self.assertLess(time.monotonic() - started, 30)
        # One thread per accepted connection at most, plus a few of our own.
        self.assertLessEqual(threading.active_count(), baseline_threads + 200 + 5)
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 10
        while threading.active_count() > baseline_threads + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(threading.active_count(), baseline_threads + 2)


class Deadlines(ServerCase):
    server_options = {"idle_timeout": 1.0, "request_timeout": 2.0, "max_connections": 64}
    # The slow body comes with the official example's headers and no grant: with binding on it
    # would be refused before its body is read, and the body deadline never tested.
    config = appserver.Config(callback_binding=False)

    def trickle(self, prefix, drip=b"a", interval=0.3, limit=10.0):
        """Send ``prefix`` then one byte every ``interval`` until the server answers or closes;
        returns (seconds until the server acted, bytes received)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=limit)
        self.addCleanup(sock.close)
        started = time.monotonic()
        sock.sendall(prefix)
        received = b""
        while time.monotonic() - started < limit:
            readable, _, _ = select.select([sock], [], [], interval)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    return time.monotonic() - started, received
                received += chunk
                continue
            try:
                sock.sendall(drip)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started, received + read_to_eof(sock)
        self.fail("connection still open after %.0f s" % limit)

    def test_slowloris_headers_are_closed_at_the_total_deadline(self):
        # Each byte arrives well within idle_timeout; only the total deadline can stop it.
        elapsed, received = self.trickle(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        self.assertGreater(elapsed, 1.5)
        self.assertLess(elapsed, 5.0)
        if received:
            responses = parse_responses(received)
            self.assertEqual([r[0] for r in responses], [408])

    def test_header_lines_sent_slowly_are_cut_off_at_the_total_deadline(self):
        # Whole header lines this time, each well within idle_timeout (1 s).
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\n")
            closed = False
            while time.monotonic() - started < 8:
                try:
                    sock.sendall(b"X-a: b\r\n")  # one header line every 0.5 s
                except OSError:
                    closed = True
                    break
                time.sleep(0.5)
                sock.settimeout(0.01)
                try:
                    if sock.recv(65536) == b"":
                        closed = True
                        break
                except socket.timeout:
                    pass
                except OSError:
                    closed = True
                    break
            self.assertTrue(closed, "slow request was never cut off")
            self.assertLess(time.monotonic() - started, 6)  # request_timeout is 2 s

    def test_slow_request_line_is_closed_at_the_idle_deadline(self):
        # Until its request line is complete a connection counts as idle (idle_timeout 1 s);
        # the request deadline (2 s) starts with the request line.
        elapsed, received = self.trickle(b"GET /")
        self.assertGreater(elapsed, 0.7)
        self.assertLess(elapsed, 4.0)
        self.assertNotIn(b"200 OK", received)

    def test_slow_body_is_closed_at_a_deadline(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(sock.close)
        started = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\nauthorization: "
                     + OFFICIAL_AUTHORIZATION.encode() + b"\r\nx-oss-pub-key-url: "
                     + OFFICIAL_KEY_URL_B64.encode() + b"\r\n\r\n0123456789")
        raw = read_to_eof(sock)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 5.0)
        self.assertGreater(elapsed, 0.8)
        if raw:
            self.assertEqual([r[0] for r in parse_responses(raw)], [408])

    def test_idle_keep_alive_connection_is_closed_after_idle_timeout(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        first = b""
        while b'{"Status":"OK"}' not in first:
            first += sock.recv(65536)
        answered = time.monotonic()
        self.assertEqual(sock.recv(65536), b"")  # the server closes; no further bytes
        idle = time.monotonic() - answered
        self.assertGreater(idle, 0.7)
        self.assertLess(idle, 4.0)


class ConnectionCap(ServerCase):
    server_options = {"idle_timeout": 5.0, "request_timeout": 8.0, "max_connections": 8}

    def test_connections_above_the_cap_get_a_fast_503_and_close(self):
        baseline_threads = threading.active_count()
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\n")  # in flight, holding a slot
            held.append(sock)
        time.sleep(0.3)  # let the accept loop hand all eight to threads
        for _ in range(30):
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                raw = read_to_eof(sock)  # the server closes without waiting for a request
            self.assertLess(time.monotonic() - started, 2.0)  # fast: no request is awaited
            (status, headers, body), = parse_responses(raw)
            self.assertEqual(status, 503)
            self.assertEqual(headers.get("connection"), ["close"])
            self.assertEqual(json.loads(body)["Status"], "Error")
        self.assertLessEqual(threading.active_count(), baseline_threads + 8 + 1)
        for sock in held:
            sock.close()
        # Service recovers once the held connections go away.
        deadline = time.monotonic() + 5
        while True:
            status = one_response(self.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                  b"Connection: close\r\n\r\n")[0]
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(status, 200)


###############################################################################
# Fuzzing
###############################################################################

ROUTES = ["/", "/healthz", "/index.html", "/upload.js", "/style.css", "/favicon.svg",
          "/index.php?id=1&index=2", "/callback", "/nope", "/..%2f..%2fetc/passwd", "*",
          "http://127.0.0.1/", "//etc/passwd", "/%00", "/?" + "x" * 3000, "/" + "u" * 70000]
METHODS = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT",
           "BREW", "get", "G ET", "", "POST\x00", "\xff\xfe"]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "HTTP/0.9", "", "HTTP/11.1",
            "http/1.1", "HTTP/1.1 extra"]
URLS_B64 = [OFFICIAL_KEY_URL_B64,
            "aHR0cHM6Ly9nb3NzcHVibGljLmFsaWNkbi5jb20vY2FsbGJhY2tfcHViX2tleV92MS5wZW0=",
            base64.b64encode(b"http://gosspublic.alicdn.com/other.pem").decode(),
            base64.b64encode(b"http://127.0.0.1:1/k.pem").decode(),
            base64.b64encode(b"file:///etc/passwd").decode(), "@@@@", "", "=" * 8,
            base64.b64encode(os.urandom(40)).decode()]


def fuzz_case(rng):
    """One malformed request, as bytes."""
    method = rng.choice(METHODS)
    target = rng.choice(ROUTES)
    if rng.random() < 0.15:
        target = "/" + "".join(chr(rng.randrange(0, 256)) for _ in range(rng.randrange(1, 40)))
    version = rng.choice(VERSIONS)
    lines = ["%s %s %s" % (method, target, version) if rng.random() < 0.9
             else rng.choice(["", " ", "GET", "GET /", "\x00\x01\x02"])]
    body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 5, 18, 64, 300])))
    if rng.random() < 0.6:
        body = rng.choice([OFFICIAL_BODY, b'{"object":"a"}', b"a=%zz", b"\xff\xfe", b"[]", body])
    header_pool = [
        lambda: "Host: t",
        lambda: "Content-Length: %s" % rng.choice(
            [str(len(body)), str(len(body) + rng.randrange(1, 9)), "-1", "+5", "5_0", "1e3",
             "99999999999", "\u0663".encode("utf-8").decode("latin-1"), " 5", "5,5", "",
             "0"]),
        lambda: "Content-Length: %d" % len(body),
        lambda: "Transfer-Encoding: %s" % rng.choice(["chunked", "gzip", "identity", "x"]),
        lambda: "authorization: %s" % rng.choice(
            [OFFICIAL_AUTHORIZATION, OFFICIAL_AUTHORIZATION[:-4], "@@@@", "", "A" * 2000,
             base64.b64encode(os.urandom(64)).decode(), "kKQe GTRc", "-_-_"]),
        lambda: "x-oss-pub-key-url: %s" % rng.choice(URLS_B64),
        lambda: "Content-Type: %s" % rng.choice(["application/json", FORM,
                                                 "multipart/form-data", "\x7f", ""]),
        lambda: "Connection: %s" % rng.choice(["close", "keep-alive", "Upgrade", ""]),
        lambda: "Expect: 100-continue",
        lambda: "X-Junk: " + "".join(chr(rng.randrange(0, 256)) for _ in range(20)),
        lambda: " folded continuation",
        lambda: "NoColonHere",
        lambda: ": empty-name",
        lambda: "X-Long: " + "L" * rng.choice([100, 9000, 70000]),
    ]
    for _ in range(rng.randrange(0, 8)):
        lines.append(rng.choice(header_pool)())
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    mutation = rng.random()
    if mutation < 0.15:
        data = data.replace(b"\r\n", b"\n")
    elif mutation < 0.3:
        data = data[:rng.randrange(0, len(data) + 1)]
    elif mutation < 0.4:
        position = rng.randrange(0, len(data) + 1)
        data = data[:position] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8))) \
            + data[position:]
    elif mutation < 0.45:
        data = data * 2  # pipelined duplicate
    return data



class Fuzzing(ServerCase):
    server_options = {"idle_timeout": 1.0, "request_timeout": 3.0, "max_connections": 256}
    # The fuzzed callbacks carry no grant: with binding on none would reach the key or the body.
    config = appserver.Config(callback_binding=False)

    def setUp(self):
        self.capture_logs()
        self.fetches = []

        def no_network_fetch(url):
            self.fetches.append(url)
            raise appserver.PubKeyUnavailable("test: no network")

        app = appserver.App(self.config,
                            key_cache=appserver.PublicKeyCache(fetch=no_network_fetch))
        self.server, self.base_url = start_app_server(self.config, app=app,
                                                      **self.server_options)
        self.port = self.server.server_address[1]
        self.addCleanup(stop_app_server, self.server)

    def test_2000_seeded_malformed_requests(self):
        rng = random.Random(20260601)
        cases = [fuzz_case(rng) for _ in range(2000)]
        baseline_threads = threading.active_count()
        with LogCapture() as logs, ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda data: (data, exchange(self.port, data, timeout=15)),
                                    cases))
        statuses = {}
        for data, raw in results:
            for marker in TRACEBACK_MARKERS:
                self.assertNotIn(marker, raw, "request %r" % data[:200])
            try:
                responses = parse_responses(raw, head=data.startswith(b"HEAD "))
            except AssertionError as exc:
                self.fail("%s for request %r" % (exc, data[:200]))
            for status, headers, body in responses:
                statuses[status] = statuses.get(status, 0) + 1
                self.assertNotEqual(status, 500, "request %r -> %r" % (data[:200], raw[:300]))
                self.assertLess(status, 600)
                if status >= 400 and (body or not data.startswith(b"HEAD ")):
                    json_error(body)
        self.assertEqual(logs.errors(), [], "server logged errors during fuzzing")
        # Plenty of different answers: the generator reached many code paths.
        self.assertGreaterEqual(len(statuses), 8, statuses)
        for expected in (200, 400, 404, 405, 411, 414, 431, 501):
            self.assertIn(expected, statuses)
        # Still up and answering normally; threads back to where they were.
        self.get_token_ok()
        deadline = time.monotonic() + 10
        while threading.active_count() > baseline_threads + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(threading.active_count(), baseline_threads + 1)
        # Only the one allow-listed, non-embedded URL could ever be fetched (and was stubbed).
        self.assertTrue(set(self.fetches) <= {"http://gosspublic.alicdn.com/other.pem"})


SIGNED_PATHS = ["/cb", "/cb%0d%0aX", "/cb%0a", "/cb%00", "/a%0D?x=1", "/%E4%B8%AD", "/cb?",
                "/cb?grant=%0d%0a"]
JSON_VALUES = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"null", b"true",
               b"1.5", b"-1", b"0", b"12", b'"12"', b'"abc"', b'"uploads/a"', b'"../x"',
               b"[]", b"{}", b"1" * 400, b'"\u0000"', b'"\ud800"']


def hostile_json_body(rng):
    """A JSON callback body that a hostile template (or a broken one) could make OSS sign."""
    if rng.random() < 0.15:
        depth = rng.choice([31, 32, 33, 200, 990, 5000])
        return b'{"size":1,"x":' + b"[" * depth + b"]" * depth + b"}"
    if rng.random() < 0.1:
        return rng.choice([b"", b"null", b"[]", b"7", b'"s"', b"{", b"\xff", b"{}"])
    members = []
    for name in rng.sample([b"bucket", b"object", b"filename", b"size", b"mimeType",
                            b"height", b"user"], rng.randrange(0, 6)):
        members.append(b'"' + name + b'":' + rng.choice(JSON_VALUES))
    return b"{" + b",".join(members) + b"}"


class SignedHostileBodies(ServerCase):
    """Validly signed callbacks with hostile bodies and paths: the signature verifies, so
    these reach the body parser and field checks. Never a 5xx, never a traceback."""

    def setUp(self):
        self.capture_logs()
        self.priv = kit.load_test_key("rsa2048_key.pem")
        pem = (kit.DATA / "rsa2048_pub.pem").read_bytes()
        self.config = appserver.Config(
            pub_key_url_prefixes=("http://127.0.0.1:9/keys/",), bucket="ours",
            upload_dir="uploads/", callback_body_type="application/json",
            callback_binding=False)
        app = appserver.App(self.config,
                            key_cache=appserver.PublicKeyCache(fetch=lambda url: pem))
        self.server, self.base_url = start_app_server(self.config, app=app,
                                                      **self.server_options)
        self.port = self.server.server_address[1]
        self.addCleanup(stop_app_server, self.server)

    def signed(self, target, body):
        signature = base64.b64encode(kit.sign(self.priv, string_to_sign(target, body))).decode()
        key_url = base64.b64encode(b"http://127.0.0.1:9/keys/k.pem").decode()
        return ("POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n"
                "authorization: %s\r\nx-oss-pub-key-url: %s\r\n\r\n"
                % (target, len(body), signature, key_url)).encode("latin-1") + body

    def test_300_seeded_signed_hostile_bodies(self):
        rng = random.Random(20261203)
        cases = [(rng.choice(SIGNED_PATHS), hostile_json_body(rng)) for _ in range(300)]
        statuses = {}
        with LogCapture() as logs, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda case: (case, exchange(self.port,
                                                                 self.signed(*case))), cases))
        for case, raw in results:
            (status, headers, body), = parse_responses(raw)
            statuses[status] = statuses.get(status, 0) + 1
            self.assertIn(status, (200, 400), (case[0], case[1][:100], body[:200]))
            json.loads(body, parse_constant=lambda name: self.fail("%s in answer" % name))
            for marker in TRACEBACK_MARKERS:
                self.assertNotIn(marker, raw)
        self.assertEqual(logs.errors(), [])
        self.assertGreater(statuses.get(200, 0), 5, statuses)
        self.assertGreater(statuses.get(400, 0), 100, statuses)


###############################################################################
# Fault injection
###############################################################################

class FaultInjection(ServerCase):
    config = appserver.Config(callback_binding=False)  # the official example reaches the hook

    def setUp(self):
        self.capture_logs()

        def exploding_hook(upload):
            raise RuntimeError("hook exploded: /srv/secret/path")

        app = appserver.App(self.config, callback_hook=exploding_hook)
        self.server, self.base_url = start_app_server(self.config, app=app,
                                                      **self.server_options)
        self.port = self.server.server_address[1]
        self.addCleanup(stop_app_server, self.server)

    def test_hook_raising_gives_generic_500_then_the_next_request_works(self):
        with LogCapture() as logs:
            raw = exchange(self.port, official_callback("keep-alive", "HTTP/1.1")
                           + b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        (status, headers, body), (status2, _, body2) = parse_responses(raw)
        self.assertEqual(status, 500)
        document = json_error(body)
        self.assertTrue(document["Message"].startswith("internal error"))
        for leak in (b"exploded", b"/srv/secret", b"Traceback", b"RuntimeError"):
            self.assertNotIn(leak, raw)
        self.assertEqual((status2, body2), (200, b'{"Status":"OK"}'))
        # The traceback goes to the log, with the incident id the client saw.
        incident = document["Message"].split("incident ")[1].rstrip(")")
        self.assertTrue(any(incident in line and "exploded" in line for line in logs.errors()))
        self.get_token_ok()


###############################################################################
# Secrets
###############################################################################

SECRET = "Zq9-Distinctive-Secret-7Hk2pW"
STS_TOKEN = "CAIS-Distinctive-StsToken-5mN8vQ"


class Secrets(unittest.TestCase):

    def forms(self, value):
        raw = value.encode()
        return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode()]

    def run_representative_requests(self, config):
        calls = []

        def hook(upload):
            calls.append(upload)
            if len(calls) == 2:
                raise RuntimeError("injected")
            return {"Status": "OK", "upload": upload["fields"]}

        app = appserver.App(config, callback_hook=hook,
                            key_cache=appserver.PublicKeyCache(
                                fetch=lambda url: (_ for _ in ()).throw(
                                    appserver.PubKeyUnavailable("no network"))))
        server, _ = start_app_server(config, app=app, idle_timeout=1.0, request_timeout=2.0)
        port = server.server_address[1]
        token_responses, other_responses = [], []
        try:
            simple = ["GET / HTTP/1.1", "GET /?secret=1 HTTP/1.1", "HEAD / HTTP/1.1",
                      "OPTIONS / HTTP/1.1", "GET /healthz HTTP/1.1", "GET /index.html HTTP/1.1",
                      "GET /upload.js HTTP/1.1", "GET /nope HTTP/1.1", "PUT / HTTP/1.1",
                      "TRACE / HTTP/1.1", "BREW / HTTP/1.1", "GET / HTTP/9.9", "garbage",
                      "POST /cb HTTP/1.1"]
            for line in simple:
                raw = exchange(port, line.encode() + b"\r\nHost: t\r\n\r\n")
                is_token = line in ("GET / HTTP/1.1", "GET /?secret=1 HTTP/1.1")
                (token_responses if is_token else other_responses).append(raw)
            malformed = [
                official_callback(),
                official_callback(body=b"bucket=yonghu-tesu"),
                official_callback(),  # the hook raises on its second call
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nauthorization: @@@@\r\n\r\nhello",
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nauthorization: "
                + OFFICIAL_AUTHORIZATION.encode() + b"\r\nx-oss-pub-key-url: "
                + base64.b64encode(b"http://gosspublic.alicdn.com/other.pem") + b"\r\n\r\nhello",
                b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: 1\r\n" % i for i in range(101)) + b"\r\n",
            ]
            for data in malformed:
                other_responses.append(exchange(port, data))
        finally:
            stop_app_server(server)
        return token_responses, other_responses

    def test_secret_never_leaks_and_sts_token_only_in_token_responses(self):
        for version in ("v1", "v4"):
            with self.subTest(version):
                config = appserver.Config(access_key_id="LTAI-test-id", access_key_secret=SECRET,
                                          security_token=STS_TOKEN, signature_version=version,
                                          region="cn-hangzhou",
                                          callback_url="http://127.0.0.1:9/cb",
                                          # the official example reaches the hook
                                          callback_binding=False)
                with LogCapture() as logs:
                    tokens, others = self.run_representative_requests(config)
                    logged = "\n".join(logs.lines).encode("utf-8")
                self.assertTrue(logged)  # the capture saw the access log
                self.assertIn(b"internal error", logged)  # and the injected fault's traceback
                self.assertEqual(len(tokens), 2)
                everything = b"".join(tokens + others)
                for form in self.forms(SECRET):
                    self.assertNotIn(form, everything)
                    self.assertNotIn(form, logged)
                for raw in tokens:
                    (status, _, body), = parse_responses(raw)
                    self.assertEqual(status, 200)
                    self.assertEqual(json.loads(body)["x-oss-security-token"], STS_TOKEN)
                for form in self.forms(STS_TOKEN):
                    self.assertNotIn(form, logged)
                    for raw in others:
                        self.assertNotIn(form, raw)
                self.assertNotIn(SECRET, repr(config))
                self.assertNotIn(STS_TOKEN, repr(config))


###############################################################################
# Shutdown
###############################################################################

class Shutdown(unittest.TestCase):

    def test_sigterm_during_load_completes_in_flight_requests_and_exits_0(self):
        port = free_port()
        env = dict(os.environ, OSS_ACCESS_KEY_ID="LTAI-test-id", OSS_ACCESS_KEY_SECRET=SECRET,
                   OSS_SESSION_TOKEN=STS_TOKEN, PYTHONUNBUFFERED="1",
                   # the official example's bucket, so its callback is one of "ours"; it carries
                   # no grant, so binding is off
                   OSS_HOST="https://yonghu-test.oss-cn-hangzhou.aliyuncs.com",
                   OSS_CALLBACK_BINDING="0",
                   # nor is its object in a bucket this test could HEAD
                   OSS_CONFIRM_UPLOADS="0")
        env.pop("OSS_PUB_KEY_URL_PREFIXES", None)
        logdir = tempfile.TemporaryDirectory()
        self.addCleanup(logdir.cleanup)
        logdir = logdir.name
        out = open(os.path.join(logdir, "out"), "w+b")
        err = open(os.path.join(logdir, "err"), "w+b")
        self.addCleanup(out.close)
        self.addCleanup(err.close)
        proc = subprocess.Popen([sys.executable, "appserver.py", "127.0.0.1", str(port)],
                                cwd=str(REPO), env=env, stdout=out, stderr=err)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        deadline = time.monotonic() + 15
        while True:
            try:
                status = one_response(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                      b"Connection: close\r\n\r\n", timeout=2)[0]
                if status == 200:
                    break
            except OSError:
                pass
            self.assertIsNone(proc.poll(), "server exited early")
            self.assertLess(time.monotonic(), deadline, "server did not start")
            time.sleep(0.05)

        stop = threading.Event()
        outcomes = {"complete": 0, "refused_or_closed_before_response": 0}
        truncated = []
        lock = threading.Lock()

        def load(kind):
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                        for _ in range(20):
                            if kind == "token":
                                sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                            else:
                                sock.sendall(official_callback("keep-alive", "HTTP/1.1"))
                            raw = b""
                            while True:
                                chunk = sock.recv(65536)
                                raw += chunk
                                if not chunk:
                                    break
                                try:
                                    parse_responses(raw)  # complete once it parses
                                except AssertionError:
                                    continue
                                break
                            if not raw:
                                with lock:
                                    outcomes["refused_or_closed_before_response"] += 1
                                break
                            try:
                                (status, headers, body), = parse_responses(raw)
                                self.assertEqual(status, 200)
                                json.loads(body)
                            except (AssertionError, ValueError) as exc:
                                with lock:
                                    truncated.append((str(exc), raw[:300]))
                                return
                            with lock:
                                outcomes["complete"] += 1
                            if headers.get("connection") == ["close"]:
                                break
                except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError):
                    with lock:
                        outcomes["refused_or_closed_before_response"] += 1
                    time.sleep(0.01)

        workers = [threading.Thread(target=load, args=(kind,), daemon=True)
                   for kind in ("token", "callback", "token", "callback")]
        for worker in workers:
            worker.start()
        time.sleep(0.7)

        # One request is provably in flight at SIGTERM. A first request on the same keep-alive
        # connection proves a handler thread owns it (a connection still in the accept queue
        # at SIGTERM is reset, which is not an in-flight request); then headers and half the
        # body of a second one.
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(in_flight.close)
        in_flight.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        first = b""
        while not first.endswith(b'{"Status":"OK"}'):
            chunk = in_flight.recv(65536)
            self.assertTrue(chunk, "connection closed before the first response")
            first += chunk
        request = official_callback()
        in_flight.sendall(request[:-9])
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        in_flight.sendall(request[-9:])
        raw = read_to_eof(in_flight)
        (status, headers, body), = parse_responses(raw)
        self.assertEqual(status, 200, raw)
        self.assertEqual(json.loads(body), {"Status": "OK", "user": None,
                                            "upload": {"bucket": "yonghu-test"}})
        self.assertEqual(headers.get("connection"), ["close"])

        self.assertEqual(proc.wait(timeout=20), 0)
        stop.set()
        for worker in workers:
            worker.join(15)
        self.assertEqual(truncated, [])
        self.assertGreater(outcomes["complete"], 20, outcomes)
        out.seek(0)
        err.seek(0)
        output = out.read() + err.read()
        self.assertIn(b"shutting down", output)
        self.assertNotIn(b"Traceback", output)
        for form in (SECRET.encode(), base64.b64encode(SECRET.encode()), STS_TOKEN.encode()):
            self.assertNotIn(form, output)


if __name__ == "__main__":
    unittest.main()
