"""HTTP/1.1 framing (RFC 9112): where a request starts and ends, on a live server on 127.0.0.1.

- the request line and header lines, and their limits (400, 414, 431, 505);
- the message body: Content-Length and Transfer-Encoding (400, 411, 413, 501), and request
  smuggling through either (a second request hidden in the first one's body is never answered);
- Expect: 100-continue, empty lines before a request line, keep-alive and response lengths;
- on a signed callback, every framing error is found before the public key is fetched.
The callbacks here are signed with test keys, not sent for one of our tokens: they carry no
grant, so the servers run with callback_binding=False and the body reaches the signature check.
"""

import base64
import http.client
import io
import os
import socket
import struct
import sys
import tempfile
import time
import unittest
from unittest import mock

import appserver
from tests import rsa_testkit as kit
from tests.support import (FORM, CountingFetch, assert_json_error, assert_ok_upload,
                           capture_logs, exchange, json_error, one_response, parse_response,
                           parse_responses, request_bytes, signed_headers, start_app_server,
                           stop_app_server)

SECRET = "Zx9-very-secret-key-Qw7"
STS = "sts-token-Mk3"
SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class FramingTest(unittest.TestCase):
    """A fresh server per test. Whatever a test sends, no response and no log line may carry
    the secret or the STS token (checked after each test)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        root = os.path.join(self.tmp.name, "static")
        os.makedirs(root)
        for name, text in (("index.html", "<!doctype html><title>t</title>"),
                           ("style.css", "body{}")):
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        self.config = appserver.Config(access_key_id="ak", access_key_secret=SECRET,
                                       security_token=STS, bucket="examplebucket",
                                       region="cn-hangzhou", callback_url="http://127.0.0.1:1/cb",
                                       callback_binding=False)
        self.logs = capture_logs(self)
        app = appserver.App(self.config, static_dir=root)
        self.server, _ = start_app_server(self.config, app=app, idle_timeout=1.0,
                                          request_timeout=2.0, max_connections=64)
        self.addCleanup(stop_app_server, self.server)
        self.port = self.server.server_address[1]
        self.received = []

    def tearDown(self):
        logged = self.logs.text()
        answered = "\n".join(self.received)
        secret_b64 = base64.b64encode(SECRET.encode()).decode()
        for text in (logged, answered):
            self.assertNotIn(SECRET, text, "secret leaked")
            self.assertNotIn(secret_b64, text, "secret leaked")
        self.assertNotIn(STS, logged, "STS token logged")

    # -- helpers

    def exchange(self, data, **options):
        raw = exchange(self.port, data, **options)
        self.received.append(raw.decode("latin-1"))
        return raw

    def one_response(self, data, **options):
        return parse_response(self.exchange(data, **options))

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.received.append(data.decode("latin-1"))
        return response, data

    def post_with(self, header_block, body=b"hello"):
        return self.exchange(b"POST /callback HTTP/1.1\r\nHost: t\r\n" + header_block
                             + b"\r\n" + body)

    def assert_400_closed(self, raw):
        status, headers, body = parse_response(raw)
        self.assertEqual(status, 400, raw[:300])
        self.assertEqual(headers.get("connection"), ["close"])
        json_error(body)

    # -- the request line

    def test_malformed_request_line_is_400(self):
        for line in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n",
                     b"GET / HTTP/x.y\r\n\r\n"):
            with self.subTest(line=line):
                data = self.exchange(line)
                self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data[:40])
                self.assertIn(b'{"Status":"Error","Message":"malformed request line"}', data)

    def test_unsupported_http_version_is_505(self):
        data = self.exchange(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 505 "), data[:40])

    def test_70kb_request_line_is_414_without_echoing_it(self):
        status, headers, body = self.one_response(
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", shut_write=False)
        self.assertEqual(status, 414)
        json_error(body)
        self.assertNotIn(b"aaaa", body)

    def test_empty_lines_before_a_request_line_are_ignored(self):
        data = self.exchange(b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:60])

    # -- header lines

    def test_malformed_header_lines_do_not_smuggle_a_request(self):
        for bad in (b"Foo\r\nContent-Length: %d\r\n" % len(SMUGGLED),
                    b"Content-Length : %d\r\n" % len(SMUGGLED),
                    b"Content-Length: %d\n \n" % len(SMUGGLED)):
            with self.subTest(bad=bad):
                data = self.exchange(b"GET /index.html HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n"
                                     + SMUGGLED)
                self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data[:60])
                self.assertEqual(data.count(b"HTTP/1.1 "), 1)
                self.assertNotIn(b'{"Status":"OK"}', data)

    def test_too_many_headers_is_431(self):
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(101))
        status, _, body = self.one_response(b"GET / HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
        self.assertEqual(status, 431)
        json_error(body)

    def test_70kb_header_is_431_without_echoing_it(self):
        status, _, body = self.one_response(
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n",
            shut_write=False)
        self.assertEqual(status, 431)
        json_error(body)
        self.assertNotIn(b"bbbb", body)

    def test_header_bytes_are_bounded_in_total_not_only_per_line(self):
        # Each line is under http.server's 64 KiB limit; together they are not.
        headers = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(40))
        data = self.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 431 "), data[:60])
        fewer = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(10))
        data = self.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n" + fewer + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:60])

    # -- Content-Length and Transfer-Encoding

    def test_invalid_content_length_values_are_400_and_close(self):
        for value in ("-1", "+5", "5_0", "\u0663".encode("utf-8").decode("latin-1"),
                      "\uff15".encode("utf-8").decode("latin-1"), "5,5", "0x10",
                      "12345678901234", "5 5", ""):
            with self.subTest(value=value):
                raw = self.post_with(b"Content-Length: " + value.encode("latin-1") + b"\r\n")
                self.assert_400_closed(raw)

    def test_whitespace_around_content_length_is_legal(self):
        raw = self.post_with(b"Content-Length: \t5 \t\r\n")
        status = parse_responses(raw)[0][0]
        self.assertNotIn(status, (500,))
        self.assertEqual(status, 400)  # a callback without authorization: framing was accepted
        self.assertIn(b"authorization", raw)

    def test_two_different_content_lengths_are_400_and_close(self):
        self.assert_400_closed(self.post_with(b"Content-Length: 5\r\nContent-Length: 4\r\n"))
        self.assert_400_closed(self.post_with(b"Content-Length: 5, 4\r\n"))

    def test_transfer_encoding_with_content_length_is_400_and_close(self):
        raw = self.post_with(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                             b"0\r\n\r\n")
        self.assert_400_closed(raw)

    def test_transfer_encoding_alone_on_post_is_411_and_closed(self):
        status, headers, body = self.one_response(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        self.assertEqual(status, 411)
        self.assertEqual(headers.get("connection"), ["close"])
        json_error(body)

    def test_post_without_length_is_411(self):
        status, _, body = self.one_response(b"POST / HTTP/1.1\r\nHost: t\r\n\r\n")
        self.assertEqual(status, 411)
        json_error(body)

    def test_chunked_get_is_501_or_400_never_a_length_demand(self):
        # A method that carries no body gets no 411 for a chunked body it will not read.
        status, headers, body = self.one_response(
            b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        self.assertIn(status, (400, 501))
        self.assertEqual(headers.get("connection"), ["close"])

    def test_no_smuggled_second_request_is_parsed(self):
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        attacks = {
            "TE alone": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"0\r\n\r\n" + smuggled,
            "TE + CL": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
            "CL + TE": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                       b"Content-Length: 40\r\n\r\n0\r\n\r\n" + smuggled,
            "obfuscated TE": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n"
                             b"\r\n0\r\n\r\n" + smuggled,
            "GET TE": b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"0\r\n\r\n" + smuggled,
            "two CL": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n"
                      b"Content-Length: 5\r\n\r\n" + smuggled,
            "bad CL": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +0\r\n\r\n" + smuggled,
        }
        for name, data in attacks.items():
            with self.subTest(name):
                # No half-close: the server alone must decide to stop reading.
                raw = self.exchange(data, shut_write=False)
                responses = parse_responses(raw)
                self.assertEqual(len(responses), 1, raw)
                status, headers, body = responses[0]
                self.assertIn(status, (400, 411, 501))
                self.assertEqual(headers.get("connection"), ["close"])
                self.assertNotIn(b'"OK"', raw)

    def test_get_with_a_body_closes_instead_of_parsing_the_body(self):
        # The body of a GET is not read: the server answers and closes, so a request hidden
        # in it is never answered, whether the length covers it exactly or reaches past it.
        cases = {"exact length": b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                                 b"\r\n" % len(SMUGGLED) + SMUGGLED,
                 "longer length": b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 36\r\n\r\n"
                                  b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"}
        for name, data in cases.items():
            with self.subTest(name):
                raw = self.exchange(data, shut_write=False)
                responses = parse_responses(raw)
                self.assertEqual(len(responses), 1)
                self.assertEqual(raw.count(b"HTTP/1.1 "), 1)
                self.assertEqual(responses[0][1].get("connection"), ["close"])
                self.assertIn(b"Connection: close", raw)

    def test_a_reset_during_the_body_is_not_a_500(self):
        key_url = base64.b64encode(appserver.OSS_CALLBACK_KEY_URL.encode())
        with self.assertNoLogs("appserver", "ERROR"):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=3)
            sock.sendall(b"POST /cb HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                         b"authorization: " + base64.b64encode(b"s" * 64) + b"\r\n"
                         b"x-oss-pub-key-url: " + key_url + b"\r\n\r\n0123456789")
            time.sleep(0.2)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST
            time.sleep(0.3)
        self.server.access_log.flush()
        self.assertFalse(any('"POST /cb" 500' in line for line in self.logs.messages()))

    # -- Expect: 100-continue

    def test_expect_100_only_for_a_body_that_will_be_read(self):
        too_big = self.config.max_callback_bytes + 1
        data = self.exchange(b"POST /cb HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                             b"Content-Length: %d\r\n\r\n" % too_big)
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:60])
        # Refused on its headers (no authorization): the error comes without an invitation.
        data = self.exchange(b"POST /cb HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 3\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data[:60])
        key_url = base64.b64encode(appserver.OSS_CALLBACK_KEY_URL.encode())
        with socket.create_connection(("127.0.0.1", self.port), timeout=3) as sock:
            sock.sendall(b"POST /cb HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         b"authorization: " + base64.b64encode(b"s" * 64) + b"\r\n"
                         b"x-oss-pub-key-url: " + key_url + b"\r\nContent-Length: 3\r\n\r\n")
            self.assertTrue(sock.recv(100).startswith(b"HTTP/1.1 100 Continue"))
            sock.sendall(b"a=1")
            self.assertIn(b"signature does not match", sock.recv(65536))

    # -- keep-alive and responses

    def test_keep_alive_reuses_the_connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            sock = conn.sock
            for path in ("/", "/index.html", "/missing"):
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                self.assertIs(conn.sock, sock, "connection was not kept alive")
            self.assertEqual(response.status, 404)
        finally:
            conn.close()

    def test_a_keep_alive_thread_gives_up_the_cpu_before_its_next_request(self):
        # Else a client that sends its next request at once keeps the GIL for its thread,
        # request after request, and other connections wait (make bench: the token p99 at
        # 64 connections). Counted in handle(): the log writer yields too.
        yields = []
        real_yield = appserver._yield_cpu

        def counting_yield():
            if sys._getframe(1).f_code.co_name == "handle":
                yields.append(1)
            real_yield()

        with mock.patch.object(appserver, "_yield_cpu", counting_yield):
            # First, while no other connection is open: one that closes after its answer has
            # no next request to yield for (its handle() has returned once the server closes).
            data = self.exchange(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close"
                                 b"\r\n\r\n")
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:60])
            self.assertEqual(yields, [])
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                for answered in range(4):
                    # Once after each answer, before the thread reads the next request.
                    self.assertGreaterEqual(len(yields), answered - 1)
                    self.assertLessEqual(len(yields), answered)
                    conn.request("GET", "/healthz")
                    response = conn.getresponse()
                    self.assertEqual((response.status, response.read()), (200, b'{"Status":"OK"}'))
            finally:
                conn.close()

    def test_every_response_has_a_correct_content_length(self):
        for method, path in (("GET", "/"), ("GET", "/nope"), ("PUT", "/"), ("GET", "/style.css")):
            response, data = self.request(method, path, body=b"" if method == "PUT" else None)
            self.assertEqual(int(response.getheader("Content-Length")), len(data))


class SignedCallbackFramingTest(unittest.TestCase):
    """Framing errors on a validly signed callback. A counting fake fetch proves that none
    causes a key fetch: every case names a fresh (allowed) key URL, so a lax server that
    verified first would fetch it."""

    MAX = 1024
    BODY = b"object=user-dir-prefix%2Fa.jpg&size=1"

    def setUp(self):
        capture_logs(self)  # refusals are logged by design; keep them off the test output
        self.priv = kit.load_test_key("rsa2048_key.pem")
        self.fetch = CountingFetch()
        config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",),
                                  max_callback_bytes=self.MAX, callback_binding=False)
        app = appserver.App(config, key_cache=appserver.PublicKeyCache(fetch=self.fetch))
        self.server, _ = start_app_server(config, app=app)
        self.addCleanup(stop_app_server, self.server)
        self.port = self.server.server_address[1]
        self.urls = 0

    def signed(self, body=BODY, target="/cb?x=1"):
        """(a fresh key URL, the signed header list) for ``body``; no Content-Length."""
        self.urls += 1
        url = "http://127.0.0.1:9/keys/case-%d.pem" % self.urls
        headers = signed_headers(self.priv, target, body, url)
        return url, [("authorization", headers["authorization"]),
                     ("x-oss-pub-key-url", headers["x-oss-pub-key-url"]),
                     ("Content-Type", FORM)]

    def send(self, header_list, body=b"", **options):
        return exchange(self.port, request_bytes("POST", "/cb?x=1", header_list, body,
                                                 host="127.0.0.1"), **options)

    def assertNoFetch(self, url):
        self.assertFalse(self.fetch.fetched(url), "%s was fetched" % url)

    def test_no_content_length_is_411_without_fetch(self):
        url, headers = self.signed(body=b"")
        assert_json_error(self, *parse_response(self.send(headers)), 411)
        self.assertNoFetch(url)

    def test_transfer_encoding_without_content_length_is_411_and_close_without_fetch(self):
        url, headers = self.signed()
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(self.BODY), self.BODY)
        # No half-close: the connection must close because the chunked body is unread.
        raw = self.send(headers + [("Transfer-Encoding", "chunked")], chunked, shut_write=False)
        assert_json_error(self, *parse_response(raw), 411)
        self.assertEqual(raw.count(b"HTTP/1.1 "), 1)
        self.assertNoFetch(url)

    def test_transfer_encoding_and_content_length_is_400_and_close_without_fetch(self):
        url, headers = self.signed()
        # classic smuggling: a second request hidden behind the first one's framing
        chunked = b"0\r\n\r\n" + request_bytes("GET", "/healthz", host="127.0.0.1")
        for te in ("chunked", "identity", "gzip, chunked"):
            with self.subTest(te=te):
                raw = self.send(headers + [("Transfer-Encoding", te),
                                           ("Content-Length", str(len(self.BODY)))],
                                chunked, shut_write=False)
                self.assertEqual(raw.count(b"HTTP/1.1 "), 1, "smuggled request was answered")
                assert_json_error(self, *parse_response(raw), 400)
        self.assertNoFetch(url)

    def test_invalid_content_length_is_400_and_close_without_fetch(self):
        for value in ("-1", "+5", "5_0", "\u0663", "\u0663\u0663", "5,5", "0x10", "1e3", "5 5",
                      "", "19.0", "\u00b9\u2079"):
            url, headers = self.signed()
            with self.subTest(value=value):
                raw = self.send(headers + [("Content-Length", value)], self.BODY,
                                shut_write=False)
                assert_json_error(self, *parse_response(raw), 400)
                self.assertNoFetch(url)

    def test_whitespace_around_content_length_is_fine(self):
        # optional whitespace around a field value is legal (RFC 9112 5.1): not an error
        url, headers = self.signed()
        raw = self.send(headers + [("Content-Length", " %d\t" % len(self.BODY))], self.BODY)
        self.assertEqual(parse_response(raw)[0], 200, raw[:300])

    def test_two_different_content_lengths_are_400_and_close_without_fetch(self):
        url, headers = self.signed()
        raw = self.send(headers + [("Content-Length", str(len(self.BODY))),
                                   ("Content-Length", str(len(self.BODY) + 1))],
                        self.BODY + b"x", shut_write=False)
        assert_json_error(self, *parse_response(raw), 400)
        self.assertNoFetch(url)

    def test_content_length_over_the_limit_is_413_before_reading_the_body(self):
        url, headers = self.signed()
        started = time.monotonic()
        # Only the head is sent, and no half-close: a server that waited for the body would
        # time out instead.
        raw = self.send(headers + [("Content-Length", str(self.MAX + 1))], shut_write=False,
                        timeout=4.0)
        elapsed = time.monotonic() - started
        assert_json_error(self, *parse_response(raw), 413)
        self.assertLess(elapsed, 2.0, "413 must come before reading the body")
        self.assertNoFetch(url)
        # a huge value too (no int overflow or giant allocation)
        url, headers = self.signed()
        raw = self.send(headers + [("Content-Length", "999999999999")], timeout=4.0)
        self.assertIn(parse_response(raw)[0], (400, 413))
        self.assertNoFetch(url)

    def test_content_length_at_the_limit_is_read(self):
        prefix = b"object=user-dir-prefix%2Fa.jpg&pad="
        body = prefix + b"x" * (self.MAX - len(prefix))
        self.assertEqual(len(body), self.MAX)
        url, headers = self.signed(body=body)
        response = one_response(self.port, request_bytes(
            "POST", "/cb?x=1", headers + [("Content-Length", str(len(body)))], body))
        assert_ok_upload(self, *response, {"object": "user-dir-prefix/a.jpg",
                                           "pad": "x" * (self.MAX - len(prefix))})


class HeaderBlockTest(unittest.TestCase):
    """The header block as the handler reads it (RFC 9112 5), with literal expectations: the
    whole block parsed from the buffer at once, and line by line (the reader that alone
    decides what is refused), must give the same fields or both refuse."""

    WELL_FORMED = [
        (b"Host: x\r\nX-A:  v w \t\r\n", {"host": ["x"], "x-a": ["v w"]}),
        (b"X-A:\r\n", {"x-a": [""]}),
        (b"X-A: a:b\r\nx-a: c\r\n", {"x-a": ["a:b", "c"]}),
        (b"X-A: caf\xe9\r\n", {"x-a": ["caf\xe9"]}),      # obs-text, read as latin-1
        (b"X-A: a\tb\r\n", {"x-a": ["a\tb"]}),
        (b"!#$%&'*+.^_`|~0-9A-Za-z: t\r\n", {"!#$%&'*+.^_`|~0-9a-za-z": ["t"]}),
    ]
    MALFORMED = [b"X-A: a\rb\r\n", b"X A: v\r\n", b"X-A : v\r\n", b"Host: x\r\n folded\r\n",
                 b"X-A: a\x00\r\n", b"X-A: \x7f\r\n", b": v\r\n", b"X-A v\r\n",
                 b"X(A): v\r\n"]

    def read(self, block, fast):
        """(what the reader returns, what it left unread of the block and a body)."""
        handler = appserver.AppRequestHandler.__new__(appserver.AppRequestHandler)
        handler.rfile = io.BufferedReader(io.BytesIO(block + b"\r\nBODY"))
        handler.deadline = time.monotonic() + 60
        if not fast:
            handler._read_buffered_headers = lambda: None
        headers = handler._read_buffered_headers() if fast else handler._read_headers()
        return headers, handler.rfile.read()

    def test_well_formed_blocks_read_the_same_either_way(self):
        for block, expected in self.WELL_FORMED:
            for fast in (True, False):
                with self.subTest(block=block, fast=fast):
                    self.assertEqual(self.read(block, fast), (expected, b"BODY"))

    def test_malformed_blocks_are_left_to_the_line_reader_which_refuses_them(self):
        for block in self.MALFORMED:
            with self.subTest(block=block):
                self.assertEqual(self.read(block, fast=True), (None, block + b"\r\nBODY"))
                with self.assertRaises(appserver.BadRequest):
                    self.read(block, fast=False)

    def test_a_hundred_headers_are_read_and_a_hundred_and_one_are_431(self):
        hundred = b"".join(b"X-%d: v\r\n" % i for i in range(100))
        for fast in (True, False):
            with self.subTest(fast=fast):
                headers, rest = self.read(hundred, fast)
                self.assertEqual((len(headers), rest), (100, b"BODY"))
        self.assertEqual(self.read(hundred + b"X-100: v\r\n", fast=True)[0], None)
        with self.assertRaises(appserver.RequestHeaderFieldsTooLarge):
            self.read(hundred + b"X-100: v\r\n", fast=False)


if __name__ == "__main__":
    unittest.main()
