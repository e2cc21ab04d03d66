"""The OSS callback endpoint through a running server (loopback only).

- the official OSS example (spec oss-protocol.md 6.1) end to end, with the embedded 512-bit key;
- request framing and header checks, none of which may cause a key fetch;
- a loopback key server: good key, weak key, redirect, stall, 5 MB, HTML, single-flight;
- the callback hook and body parsing.
Callbacks other than the official example are signed by tests/rsa_testkit.py with test-only keys.
"""

import dataclasses
import http.client
import http.server
import json
import logging
import socket
import threading
import time
import unittest
import urllib.parse

import appserver
from tests import rsa_testkit as kit
from tests.support import start_app_server, stop_app_server

class _RecentLog(logging.Handler):
    """Swallows appserver's log output (rejections are logged by design) but keeps the last
    lines, so a failing assertion can say why the server refused."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        try:
            self.lines = (self.lines + [record.getMessage()])[-8:]
        except Exception:  # noqa: BLE001
            pass


_QUIET = _RecentLog()


def setUpModule():
    # rejected callbacks are logged as warnings by design; keep the test output readable
    logging.getLogger("appserver").addHandler(_QUIET)


def tearDownModule():
    logging.getLogger("appserver").removeHandler(_QUIET)

FORM = "application/x-www-form-urlencoded"
KAT_TARGET = "/index.php?id=1&index=2"
KAT_BODY = b"bucket=yonghu-test"
KAT_AUTH = "kKQeGTRccDKyHB3H9vF+xYMSrmhMZjzzl2/kdD1ktNVgbWEfYTQG0G2SU/RaHBovRCE8OkQDjC3uG33esH2txA=="
KAT_KEY_URL_HTTP = "aHR0cDovL2dvc3NwdWJsaWMuYWxpY2RuLmNvbS9jYWxsYmFja19wdWJfa2V5X3YxLnBlbQ=="
KAT_KEY_URL_HTTPS = "aHR0cHM6Ly9nb3NzcHVibGljLmFsaWNkbi5jb20vY2FsbGJhY2tfcHViX2tleV92MS5wZW0="


# ---------------------------------------------------------------------------- helpers

def string_to_sign(target, body):
    """Independent of appserver: unquote_to_bytes(path) [+ '?' + raw query] + '\\n' + body."""
    path, question, query = target.partition("?")
    out = urllib.parse.unquote_to_bytes(path)
    if question:
        out += b"?" + query.encode("latin-1")
    return out + b"\n" + body


def signed_headers(priv, target, body, key_url, content_type=FORM):
    return {"Content-Type": content_type,
            "authorization": kit.b64(kit.sign(priv, string_to_sign(target, body))),
            "x-oss-pub-key-url": kit.b64(key_url.encode("ascii"))}


def raw_exchange(port, data, timeout=5.0):
    """Send raw bytes, read until the server closes (or timeout). Returns (bytes, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks, closed = [], False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks), closed


def parse_response(raw):
    """(status, {lower-name: [values]}, body) of the first response in raw bytes."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("no complete response head in %r" % raw[:200])
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    length = int(headers["content-length"][0]) if "content-length" in headers else len(rest)
    return status, headers, rest[:length]


def build_request(method, target, headers, body=b"", version="HTTP/1.1"):
    lines = ["%s %s %s" % (method, target, version), "Host: 127.0.0.1"]
    for name, value in headers:
        lines.append("%s: %s" % (name, value))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


class CountingFetch:
    """Injected fetch for PublicKeyCache: records URLs, returns a PEM (a 2048-bit test key)."""

    def __init__(self, pem=None):
        self.pem = pem if pem is not None else (kit.DATA / "rsa2048_pub.pem").read_bytes()
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, url, *args, **kwargs):
        with self.lock:
            self.calls.append(url)
        return self.pem


class ServerCase(unittest.TestCase):
    """Helpers shared by the live-server tests. Subclasses set cls.server/cls.base/cls.port."""

    @classmethod
    def start(cls, config, app):
        cls.server, cls.base = start_app_server(config, app=app)
        cls.port = int(cls.base.rsplit(":", 1)[1])
        cls.addClassCleanup(stop_app_server, cls.server)

    def request(self, method, target, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp, data
        finally:
            conn.close()

    def assertJsonError(self, status, resp_headers, body, expected_status):
        self.assertEqual(status, expected_status, body[:300])
        ctype = resp_headers["content-type"][0] if isinstance(resp_headers, dict) else \
            resp_headers.getheader("Content-Type")
        self.assertTrue(ctype.startswith("application/json"), ctype)
        doc = json.loads(body)
        self.assertEqual(doc.get("Status"), "Error", doc)
        self.assertIsInstance(doc.get("Message"), str)
        self.assertTrue(doc["Message"])
        return doc

    def assertOkUpload(self, status, resp, body, expected_fields):
        self.assertEqual(status, 200, "%r; recent server log: %s" % (body[:300], _QUIET.lines))
        self.assertTrue(resp.getheader("Content-Type").startswith("application/json"))
        self.assertEqual(int(resp.getheader("Content-Length")), len(body))
        pairs = json.loads(body, object_pairs_hook=list)
        self.assertEqual(pairs[0], ("Status", "OK"), "\"Status\":\"OK\" must come first")
        doc = json.loads(body)
        self.assertEqual(doc["upload"], expected_fields)


# ---------------------------------------------------------------------------- string to sign

class StringToSignTest(unittest.TestCase):
    def test_official_example(self):
        self.assertEqual(appserver.callback_string_to_sign(KAT_TARGET, KAT_BODY),
                         b"/index.php?id=1&index=2\nbucket=yonghu-test")

    def test_rules(self):
        cases = [
            ("/cb", b"x", b"/cb\nx"),
            ("/cb?", b"x", b"/cb?\nx"),                       # a '?' with an empty query is kept
            ("/a%20b?q=%20", b"", b"/a b?q=%20\n"),           # path decoded, query raw
            ("/a+b?x=+", b"", b"/a+b?x=+\n"),                 # plain unquote: '+' stays '+'
            ("/%ff%fe", b"", b"/\xff\xfe\n"),                 # bytes, not U+FFFD
            ("/%E4%B8%AD", b"", "/\u4e2d\n".encode("utf-8")),
            ("/a%3Fb?c=d", b"", b"/a?b?c=d\n"),
            ("/p?a=1?b=2", b"body\n", b"/p?a=1?b=2\nbody\n"),
        ]
        for target, body, expected in cases:
            with self.subTest(target):
                self.assertEqual(appserver.callback_string_to_sign(target, body), expected)
                self.assertEqual(string_to_sign(target, body), expected)   # our own copy agrees


# ---------------------------------------------------------------------------- official example

class OfficialExampleTest(ServerCase):
    """Spec 6.1 through a live server. The embedded OSS key is used: no fetch at all."""

    @classmethod
    def setUpClass(cls):
        cls.fetch = CountingFetch()
        app = appserver.App(appserver.Config(),
                            key_cache=appserver.PublicKeyCache(fetch=cls.fetch))
        cls.start(appserver.Config(), app)

    def tearDown(self):
        self.assertEqual(self.fetch.calls, [], "the embedded OSS key must never be fetched")

    def kat_bytes(self, target=KAT_TARGET, body=KAT_BODY, key_url=KAT_KEY_URL_HTTP, auth=KAT_AUTH):
        return (("POST %s HTTP/1.0\r\n"
                 "Host: 121.43.113.8\r\n"
                 "Connection: close\r\n"
                 "Content-Length: %d\r\n"
                 "authorization: %s\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\n"
                 "User-Agent: http-client/0.0.1\r\n"
                 "x-oss-pub-key-url: %s\r\n"
                 "\r\n") % (target, len(body), auth, key_url)).encode("latin-1") + body

    def test_exact_official_request_passes(self):
        raw, closed = raw_exchange(self.port, self.kat_bytes())
        status, headers, body = parse_response(raw)
        self.assertEqual(status, 200, raw[:400])
        self.assertTrue(headers["content-type"][0].startswith("application/json"))
        self.assertEqual(headers["content-length"], [str(len(body))])
        head_len = raw.index(b"\r\n\r\n") + 4
        self.assertEqual(len(raw) - head_len, len(body), "bytes after the declared body")
        self.assertTrue(body.startswith(b'{"Status":"OK"'), body)
        doc = json.loads(body)
        self.assertEqual(doc, {"Status": "OK", "upload": {"bucket": "yonghu-test"}})
        self.assertTrue(closed, "Connection: close was requested")

    def test_percent_encoded_path_is_decoded_before_verifying(self):
        # OSS signs the percent-decoded path; the raw query is signed as sent
        for target in ("/index%2ephp?id=1&index=2", "/%69ndex.php?id=1&index=2"):
            with self.subTest(target):
                status, _, body = parse_response(raw_exchange(
                    self.port, self.kat_bytes(target=target))[0])
                self.assertEqual(status, 200, body)
        # ...but the query is not decoded: an escaped query byte changes the signed string
        status, _, _ = parse_response(raw_exchange(
            self.port, self.kat_bytes(target="/index.php?id=1&index=%32"))[0])
        self.assertEqual(status, 400)

    def test_https_key_url_variant_passes(self):
        status, _, body = parse_response(raw_exchange(
            self.port, self.kat_bytes(key_url=KAT_KEY_URL_HTTPS))[0])
        self.assertEqual(status, 200, body)

    def test_http11_client_passes(self):
        headers = {"authorization": KAT_AUTH, "x-oss-pub-key-url": KAT_KEY_URL_HTTP,
                   "Content-Type": FORM}
        status, resp, body = self.request("POST", KAT_TARGET, KAT_BODY, headers)
        self.assertOkUpload(status, resp, body, {"bucket": "yonghu-test"})

    def test_one_change_fails(self):
        variants = {
            "body byte": dict(body=b"bucket=yonghu-tesT"),
            "body first byte": dict(body=b"Bucket=yonghu-test"),
            "body trailing newline": dict(body=KAT_BODY + b"\n"),
            "body trailing CRLF": dict(body=KAT_BODY + b"\r\n"),
            "empty body": dict(body=b""),
            "path byte": dict(target="/index.phq?id=1&index=2"),
            "path first byte": dict(target="/Index.php?id=1&index=2"),
            "query byte": dict(target="/index.php?id=1&index=3"),
            "query name byte": dict(target="/index.php?id=1&indey=2"),
            "query trailing &": dict(target="/index.php?id=1&index=2&"),
            "without the ?": dict(target="/index.phpid=1&index=2"),
            "? replaced by /": dict(target="/index.php/id=1&index=2"),
            "no query at all": dict(target="/index.php"),
            "signature byte": dict(auth=KAT_AUTH.replace("kKQe", "kKQf")),
        }
        for name, kw in variants.items():
            with self.subTest(name):
                raw, _ = raw_exchange(self.port, self.kat_bytes(**kw))
                status, headers, body = parse_response(raw)
                self.assertJsonError(status, headers, body, 400)

    def test_every_single_body_byte(self):
        for i in range(len(KAT_BODY)):
            body = bytearray(KAT_BODY)
            body[i] ^= 0x01
            with self.subTest(i=i):
                status, headers, resp = parse_response(
                    raw_exchange(self.port, self.kat_bytes(body=bytes(body)))[0])
                self.assertJsonError(status, headers, resp, 400)

    def test_server_still_answers_after_failures(self):
        self.assertEqual(parse_response(raw_exchange(self.port, self.kat_bytes(
            body=b"x" * 18))[0])[0], 400)
        status, _, _ = parse_response(raw_exchange(self.port, self.kat_bytes())[0])
        self.assertEqual(status, 200)
        status, _, body = self.request("GET", "/healthz")
        self.assertEqual((status, json.loads(body)), (200, {"Status": "OK"}))


# ---------------------------------------------------------------------------- header checks

class HeaderChecksTest(ServerCase):
    """Framing and header checks. A counting fake fetch proves that no failing request causes
    a key fetch: every case names a fresh (allowed) key URL, so a lax server would fetch it."""

    MAX = 1024

    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.fetch = CountingFetch()
        cls.config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",),
                                      max_callback_bytes=cls.MAX)
        app = appserver.App(cls.config, key_cache=appserver.PublicKeyCache(fetch=cls.fetch))
        cls.start(cls.config, app)
        cls.counter = 0

    def fresh_url(self):
        type(self).counter += 1
        return "http://127.0.0.1:9/keys/case-%d.pem" % self.counter

    def callback(self, target="/cb?x=1", body=b"object=user-dir-prefix%2Fa.jpg&size=1", key_url=None):
        key_url = key_url or self.fresh_url()
        return key_url, signed_headers(self.priv, target, body, key_url)

    def assertNoFetch(self, url):
        with self.fetch.lock:
            self.assertNotIn(url, self.fetch.calls)

    def test_control_valid_request_fetches_once(self):
        url, headers = self.callback()
        status, resp, body = self.request("POST", "/cb?x=1", b"object=user-dir-prefix%2Fa.jpg&size=1", headers)
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/a.jpg", "size": "1"})
        self.assertEqual(self.fetch.calls.count(url), 1)

    def send_raw(self, target, header_list, body=b"", timeout=5.0):
        raw, closed = raw_exchange(self.port, build_request("POST", target, header_list, body),
                                   timeout=timeout)
        return raw, closed

    def signed_list(self, url, headers):
        return [("authorization", headers["authorization"]),
                ("x-oss-pub-key-url", headers["x-oss-pub-key-url"]),
                ("Content-Type", FORM)]

    def bad_header_cases(self):
        good_sig = self.callback()[1]["authorization"]
        urlsafe = good_sig.replace("+", "-").replace("/", "_")
        self.assertNotEqual(urlsafe, good_sig)
        return {
            "authorization @@@@": ("authorization", "@@@@"),
            "authorization with spaces": ("authorization", good_sig[:40] + " " + good_sig[40:]),
            "authorization URL-safe alphabet": ("authorization", urlsafe),
            "authorization missing padding": ("authorization", good_sig.rstrip("=")
                                              if good_sig.endswith("=") else good_sig[:-1]),
            "authorization too long": ("authorization", "QUFB" * 3000),
            "authorization with OSS prefix": ("authorization", "OSS " + good_sig),
            "authorization empty": ("authorization", ""),
            "key url @@@@": ("x-oss-pub-key-url", "@@@@"),
            "key url with spaces": ("x-oss-pub-key-url", "aHR0 cDov"),
            "key url too long": ("x-oss-pub-key-url", kit.b64(
                ("http://127.0.0.1:9/keys/" + "a" * 3000 + ".pem").encode())),
            "key url empty": ("x-oss-pub-key-url", ""),
        }

    def test_bad_base64_headers_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        for name, (header, value) in self.bad_header_cases().items():
            url, headers = self.callback(body=body)
            headers[header] = value
            with self.subTest(name):
                raw, _ = self.send_raw("/cb?x=1", [(k, v) for k, v in headers.items()]
                                       + [("Content-Length", str(len(body)))], body)
                status, h, resp = parse_response(raw)
                self.assertJsonError(status, h, resp, 400)
                self.assertNoFetch(url)

    def test_url_safe_key_url_400_without_fetch(self):
        # a key URL whose standard base64 has '+' or '/', sent in the URL-safe alphabet
        for i in range(6):   # '~' (0x7e) at a byte offset = 2 mod 3 encodes to '+'
            url = "http://127.0.0.1:9/keys/%s~.pem" % ("u" * i)
            std = kit.b64(url.encode())
            if "+" in std or "/" in std:
                break
        else:
            self.fail("no URL with '+' or '/' in its base64 found")
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        _, headers = self.callback(body=body, key_url=url)
        self.assertEqual(headers["x-oss-pub-key-url"], std)
        headers["x-oss-pub-key-url"] = std.replace("+", "-").replace("/", "_")
        status, resp, data = self.request("POST", "/cb?x=1", body, headers)
        self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]}, data, 400)
        self.assertNoFetch(url)

    def test_missing_headers_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        for missing in ("authorization", "x-oss-pub-key-url"):
            url, headers = self.callback(body=body)
            del headers[missing]
            with self.subTest(missing=missing):
                status, resp, data = self.request("POST", "/cb?x=1", body, headers)
                self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]},
                                     data, 400)
                self.assertNoFetch(url)

    def test_duplicate_security_headers_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        url, headers = self.callback(body=body)
        other_url, _ = self.callback(body=body)
        lst = self.signed_list(url, headers) + [
            ("x-oss-pub-key-url", kit.b64(other_url.encode())),
            ("Content-Length", str(len(body)))]
        raw, _ = self.send_raw("/cb?x=1", lst, body)
        status, h, resp = parse_response(raw)
        self.assertJsonError(status, h, resp, 400)
        self.assertNoFetch(url)
        self.assertNoFetch(other_url)

    def test_disallowed_key_urls_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        before = len(self.fetch.calls)
        for url in ("https://gosspublic.alicdn.com.evil.test/k.pem",
                    "https://gosspublic.alicdn.com@127.0.0.1/",
                    "http://gosspublic-alicdn.com/x",
                    "https://evil.com\\@gosspublic.alicdn.com/x",
                    "file:///etc/passwd",
                    "https://gosspublic.alicdn.com:444/callback_pub_key_v1.pem",
                    "https://GOSSPUBLIC.ALICDN.COM/callback_pub_key_v1.pem",
                    "https://gosspublic.alicdn.com./callback_pub_key_v1.pem",
                    " http://127.0.0.1:9/keys/x.pem",
                    "http://127.0.0.1:9/other/x.pem",
                    "http://127.0.0.1:10/keys/x.pem",
                    "http://localhost:9/keys/x.pem",
                    "http://169.254.169.254/latest/meta-data/"):
            _, headers = self.callback(body=body, key_url=url)
            with self.subTest(url=url):
                status, resp, data = self.request("POST", "/cb?x=1", body, headers)
                self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]},
                                     data, 400)
        self.assertEqual(len(self.fetch.calls), before)


# ---------------------------------------------------------------------------- loopback key server

class KeyServer:
    """A loopback key server with misbehaving routes; counts requests per path."""

    def __init__(self):
        self.hits = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.good_pem = (kit.DATA / "rsa2048_pub.pem").read_bytes()
        self.weak_pem = (kit.DATA / "rsa1024_pub.pem").read_bytes()
        self.e3_pem = (kit.DATA / "rsa2048_e3_pub.pem").read_bytes()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def do_GET(self):
                with owner.lock:
                    owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                route = getattr(owner, "route_" + self.path.rsplit("/", 1)[-1]
                                .replace(".pem", "").replace("-", "_"), None)
                if route is None or not self.path.startswith("/keys/"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    route(self)
                except OSError:
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name):
        return "http://127.0.0.1:%d/keys/%s" % (self.port, name)

    def count(self, name):
        with self.lock:
            return self.hits.get("/keys/" + name, 0)

    def total(self):
        with self.lock:
            return sum(self.hits.values())

    def close(self):
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def send(handler, body, status=200, ctype="application/x-pem-file", length=True):
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.flush()
        # head and body in separate segments, as a real server may send them
        time.sleep(0.02)
        handler.wfile.write(body)

    # routes: /keys/<name>.pem -> route_<name>
    def route_good(self, h):
        self.send(h, self.good_pem)

    def route_good2(self, h):
        self.send(h, self.good_pem)

    def route_e3(self, h):
        self.send(h, self.e3_pem)

    def route_weak(self, h):
        self.send(h, self.weak_pem)

    def route_cold(self, h):
        time.sleep(0.4)   # widen the window so all callbacks arrive during the fetch
        self.send(h, self.good_pem)

    def route_redirect(self, h):
        h.send_response(302)
        h.send_header("Location", self.url("redirect-target.pem"))
        h.send_header("Content-Length", "0")
        h.end_headers()

    def route_redirect_target(self, h):
        self.send(h, self.good_pem)

    def route_stall(self, h):
        self.stop_event.wait(30)

    def route_stall_body(self, h):
        h.send_response(200)
        h.send_header("Content-Length", str(len(self.good_pem)))
        h.end_headers()
        h.wfile.write(self.good_pem[:20])
        h.wfile.flush()
        self.stop_event.wait(30)

    def route_trickle(self, h):
        # one byte every 0.5 s: never idle long enough for a per-read timeout
        h.send_response(200)
        h.end_headers()
        for byte in self.good_pem:
            if self.stop_event.wait(0.5):
                return
            h.wfile.write(bytes([byte]))
            h.wfile.flush()

    def route_huge(self, h):
        # a valid PEM followed by 5 MB of whitespace, close-delimited (no Content-Length):
        # only a size cap tells this apart from a good key
        h.send_response(200)
        h.send_header("Content-Type", "application/x-pem-file")
        h.end_headers()
        h.wfile.write(self.good_pem)
        chunk = b"\n" * 65536
        for _ in range(80):
            if self.stop_event.is_set():
                return
            h.wfile.write(chunk)

    def route_huge_declared(self, h):
        size = 5 * 1024 * 1024
        h.send_response(200)
        h.send_header("Content-Length", str(len(self.good_pem) + size))
        h.end_headers()
        h.wfile.write(self.good_pem)
        chunk = b"\n" * 65536
        for _ in range(size // 65536):
            if self.stop_event.is_set():
                return
            h.wfile.write(chunk)

    def route_html(self, h):
        self.send(h, b"<!doctype html><html><body><h1>Welcome</h1></body></html>\n",
                  ctype="text/html")

    def route_html_wrapped(self, h):
        self.send(h, b"<html><body><pre>\n" + self.good_pem + b"</pre></body></html>\n",
                  ctype="text/html")

    def route_two_pems(self, h):
        self.send(h, self.good_pem + self.e3_pem)

    def route_status500(self, h):
        self.send(h, self.good_pem, status=500)

    def route_empty(self, h):
        self.send(h, b"")


class LoopbackKeyServerTest(ServerCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = KeyServer()
        cls.addClassCleanup(cls.keys.close)
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.weak = kit.load_test_key("rsa1024_key.pem")
        cls.e3 = kit.load_test_key("rsa2048_e3_key.pem")
        config = appserver.Config(
            pub_key_url_prefixes=("http://127.0.0.1:%d/keys/" % cls.keys.port,))
        cls.start(config, appserver.App(config))   # the real fetcher and cache

    def post_signed(self, priv, key_name, target="/cb?x=1", body=b"object=user-dir-prefix%2Fa.jpg&size=1",
                    timeout=10):
        headers = signed_headers(priv, target, body, self.keys.url(key_name))
        return self.request("POST", target, body, headers, timeout=timeout)

    def test_valid_callback_200_and_cached(self):
        status, resp, body = self.post_signed(self.priv, "good.pem")
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/a.jpg", "size": "1"})
        status, resp, body = self.post_signed(self.priv, "good.pem", body=b"object=user-dir-prefix%2Fb.jpg&size=2")
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/b.jpg", "size": "2"})
        self.assertEqual(self.keys.count("good.pem"), 1, "key not cached")

    def test_wrong_key_for_signature_400(self):
        # signed with the e=3 key, but the URL names the e=65537 key
        status, resp, body = self.post_signed(self.e3, "good2.pem")
        self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]}, body, 400)

    def test_e3_2048_key_accepted(self):
        status, resp, body = self.post_signed(self.e3, "e3.pem")
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/a.jpg", "size": "1"})

    def test_1024_bit_key_from_loopback_refused(self):
        status, resp, body = self.post_signed(self.weak, "weak.pem")
        self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]}, body, 400)
        self.assertEqual(self.keys.count("weak.pem"), 1)

    def test_not_admitted_urls_never_reach_the_key_server(self):
        before = self.keys.total()
        p = self.keys.port
        for url in ("http://127.0.0.1:%d/other/good.pem" % p,
                    "http://localhost:%d/keys/good.pem" % p,
                    "http://127.0.0.1:%d/keys/../other/good.pem" % p,
                    "https://127.0.0.1:%d/keys/good.pem" % p,
                    "http://127.0.0.1:%d@127.0.0.1:%d/keys/good.pem" % (p, p),
                    " http://127.0.0.1:%d/keys/good.pem" % p,
                    "http://127.0.0.1:%d/keys/good%%2epem" % p):
            headers = signed_headers(self.priv, "/cb", b"a=1", url)
            with self.subTest(url=url):
                status, resp, body = self.request("POST", "/cb", b"a=1", headers)
                self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]},
                                     body, 400)
        self.assertEqual(self.keys.total(), before, self.keys.hits)

    def test_bad_key_servers_400_fast_and_server_stays_responsive(self):
        names = ["redirect.pem", "stall.pem", "stall-body.pem", "trickle.pem", "huge.pem",
                 "huge-declared.pem", "html.pem", "html-wrapped.pem", "two-pems.pem",
                 "status500.pem", "empty.pem", "missing.pem"]
        results = {}

        def run(name):
            t0 = time.monotonic()
            try:
                status, resp, body = self.post_signed(self.priv, name, timeout=20)
                results[name] = (status, resp.getheader("Content-Type"), body,
                                 time.monotonic() - t0)
            except Exception as exc:  # noqa: BLE001
                results[name] = (None, None, repr(exc).encode(), time.monotonic() - t0)

        threads = [threading.Thread(target=run, args=(n,)) for n in names]
        for t in threads:
            t.start()
        # meanwhile the app server keeps answering
        health = []
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            status, _, body = self.request("GET", "/healthz", timeout=5)
            health.append((status, body, time.monotonic() - t0))
            time.sleep(0.1)
        for t in threads:
            t.join(25)
        self.assertTrue(health)
        for status, body, elapsed in health:
            self.assertEqual((status, json.loads(body)), (200, {"Status": "OK"}))
            self.assertLess(elapsed, 1.0, "healthz blocked by a slow key fetch")
        for name in names:
            with self.subTest(name):
                status, ctype, body, elapsed = results[name]
                self.assertEqual(status, 400, body[:300])
                self.assertTrue(ctype.startswith("application/json"))
                self.assertEqual(json.loads(body)["Status"], "Error")
                self.assertLess(elapsed, 5.0, "key fetch not bounded by a deadline")
        self.assertEqual(self.keys.count("redirect.pem"), 1)
        self.assertEqual(self.keys.count("redirect-target.pem"), 0, "redirect was followed")
        # the failures are cached briefly (negative TTL): a retry does not refetch
        status, _, _ = self.post_signed(self.priv, "html.pem")
        self.assertEqual(status, 400)
        self.assertEqual(self.keys.count("html.pem"), 1)

    def test_100_concurrent_callbacks_cold_cache_one_fetch(self):
        target, body = "/upload/done?id=7", b"object=user-dir-prefix%2Fa.jpg&size=1234"
        headers = signed_headers(self.priv, target, body, self.keys.url("cold.pem"))
        barrier = threading.Barrier(100)
        results = []
        lock = threading.Lock()

        def run():
            barrier.wait()
            try:
                status, _, data = self.request("POST", target, body, headers, timeout=20)
            except Exception as exc:  # noqa: BLE001
                status, data = None, repr(exc).encode()
            with lock:
                results.append((status, data))

        threads = [threading.Thread(target=run) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(results), 100)
        bad = [r for r in results if r[0] != 200]
        self.assertEqual(bad, [], "%d of 100 callbacks failed" % len(bad))
        for _, data in results:
            self.assertEqual(json.loads(data)["upload"],
                             {"object": "user-dir-prefix/a.jpg", "size": "1234"})
        self.assertEqual(self.keys.count("cold.pem"), 1)


# ---------------------------------------------------------------------------- hook and parsing

class HookAndBodyTest(ServerCase):
    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.fetch = CountingFetch()
        cls.hook_calls = []
        cls.hook_mode = {"raise": False}

        def hook(fields):
            cls.hook_calls.append(fields)
            if cls.hook_mode["raise"]:
                raise RuntimeError("hook exploded: secret-detail-12345")
            return appserver.default_callback_hook(fields)

        cls.config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",))
        cls.hook = staticmethod(hook)
        app = appserver.App(cls.config, key_cache=appserver.PublicKeyCache(fetch=cls.fetch),
                            callback_hook=hook)
        cls.start(cls.config, app)
        cls.server.app_for_form = app

    def tearDown(self):
        type(self).hook_mode["raise"] = False
        self.server.app = self.server.app_for_form

    def use_json_body_type(self):
        """The body is parsed as the configured callbackBodyType: Content-Type is unsigned."""
        config = dataclasses.replace(self.config, callback_body_type="application/json")
        self.server.app = appserver.App(config, key_cache=self.server.app.key_cache,
                                        callback_hook=self.hook)

    def post(self, target, body, content_type=FORM):
        headers = signed_headers(self.priv, target, body, "http://127.0.0.1:9/keys/k.pem",
                                 content_type)
        return self.request("POST", target, body, headers)

    def test_form_body_fields(self):
        body = (b"filename=user-dir-prefix%2Fphoto+1.jpg&size=114020&mimeType=image%2Fjpeg"
                b"&height=539&width=810&x%3Auid=12345&empty=")
        status, resp, data = self.post("/cb", body)
        expected = {"filename": "user-dir-prefix/photo 1.jpg", "size": "114020",
                    "mimeType": "image/jpeg", "height": "539", "width": "810",
                    "x:uid": "12345", "empty": ""}
        self.assertOkUpload(status, resp, data, expected)
        self.assertEqual(self.hook_calls[-1], expected)

    def test_json_body_fields(self):
        self.use_json_body_type()
        fields = {"name": "2f7b.jpg", "source_name": "1/1_hFRt.jpg", "size": 114020,
                  "pic_info": "810,539"}
        for ctype in ("application/json", "application/json; charset=utf-8"):
            with self.subTest(ctype):
                body = json.dumps(fields).encode()
                status, resp, data = self.post("/cb?json=1", body, ctype)
                self.assertOkUpload(status, resp, data, fields)
                self.assertEqual(self.hook_calls[-1], fields)

    def test_json_content_type_does_not_switch_the_parser(self):
        fields = {"object": "user-dir-prefix/a.jpg"}
        status, resp, data = self.post("/cb", json.dumps(fields).encode(), "application/json")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(data)["upload"], {json.dumps(fields): ""})

    def test_signed_but_malformed_json_body_400(self):
        self.use_json_body_type()
        status, resp, data = self.post("/cb", b"{not json", "application/json")
        self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]}, data, 400)
        status, resp, data = self.post("/cb", b"[1, 2]", "application/json")
        self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]}, data, 400)

    def test_hook_that_raises_500_then_next_request_works(self):
        type(self).hook_mode["raise"] = True
        with self.assertLogs("appserver", "ERROR"):
            status, resp, data = self.post("/cb", b"object=user-dir-prefix%2Fa.jpg&size=1")
        self.assertJsonError(status, {"content-type": [resp.getheader("Content-Type")]}, data, 500)
        self.assertNotIn(b"secret-detail-12345", data)
        self.assertNotIn(b"Traceback", data)
        self.assertNotIn(b"RuntimeError", data)
        type(self).hook_mode["raise"] = False
        status, resp, data = self.post("/cb", b"object=user-dir-prefix%2Fb.jpg&size=2")
        self.assertOkUpload(status, resp, data, {"object": "user-dir-prefix/b.jpg", "size": "2"})
        status, _, body = self.request("GET", "/healthz")
        self.assertEqual(status, 200)

    def test_hook_not_called_for_unverified_callback(self):
        before = len(self.hook_calls)
        headers = signed_headers(self.priv, "/cb", b"a=1", "http://127.0.0.1:9/keys/k.pem")
        status, _, _ = self.request("POST", "/cb", b"a=2", headers)
        self.assertEqual(status, 400)
        self.assertEqual(len(self.hook_calls), before)


if __name__ == "__main__":
    unittest.main()
