"""The HTTP server: routes, static files, framing, keep-alive, shutdown (issue 2)."""

import base64
import http.client
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import appserver
from tests.support import REPO, start_app_server, stop_app_server

SECRET = "Zx9-very-secret-key-Qw7"
STS = "sts-token-Mk3"


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        root = os.path.join(cls.tmp.name, "static")
        os.makedirs(os.path.join(root, "sub"))
        os.makedirs(os.path.join(root, "swapdir"))
        os.makedirs(os.path.join(root, ".git"))
        files = {"index.html": "<!doctype html><title>t</title>", "upload.js": "'use strict';",
                 "style.css": "body{}", "sub/x.txt": "x", ".hidden": "dotfile",
                 "swap.txt": "swap", "swapdir/y.txt": "y", "favicon.svg": "<svg/>",
                 ".git/config": "gitconfig"}
        for name, text in files.items():
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        with open(os.path.join(cls.tmp.name, "outside.txt"), "w") as f:
            f.write("outside-secret")
        os.symlink(os.path.join(cls.tmp.name, "outside.txt"), os.path.join(root, "link.txt"))
        cls.config = appserver.Config(access_key_id="ak", access_key_secret=SECRET,
                                      security_token=STS, bucket="examplebucket",
                                      region="cn-hangzhou", callback_url="http://127.0.0.1:1/cb")
        cls.logs = LogCapture()
        logging.getLogger("appserver").addHandler(cls.logs)
        logging.getLogger("appserver").setLevel(logging.INFO)
        app = appserver.App(cls.config, static_dir=root)
        cls.server, cls.url = start_app_server(cls.config, app=app, idle_timeout=1.0,
                                               request_timeout=3.0)
        cls.port = cls.server.server_address[1]
        cls.bodies = []

    @classmethod
    def tearDownClass(cls):
        stop_app_server(cls.server)
        logging.getLogger("appserver").removeHandler(cls.logs)
        cls.tmp.cleanup()
        everything = "\n".join(cls.logs.lines)
        secret_b64 = base64.b64encode(SECRET.encode()).decode()
        for text in (everything, "\n".join(cls.bodies)):
            assert SECRET not in text and secret_b64 not in text, "secret leaked"
        assert STS not in everything, "STS token logged"

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        self.bodies.append(data.decode("latin-1"))
        return response, data

    def raw(self, payload, read_timeout=3):
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout) as sock:
            sock.sendall(payload)
            chunks = []
            try:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            except socket.timeout:
                pass
        data = b"".join(chunks)
        self.bodies.append(data.decode("latin-1"))
        return data

    def assert_error(self, response, data, status):
        self.assertEqual(response.status, status)
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(int(response.getheader("Content-Length")), len(data))
        payload = json.loads(data)
        self.assertEqual(payload["Status"], "Error")
        self.assertIsInstance(payload["Message"], str)
        self.assertNotIn("Traceback", data.decode())

    # -- routes ---------------------------------------------------------------------------

    def test_token(self):
        response, data = self.request("GET", "/")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(response.getheader("Cache-Control"), "no-store")
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), "*")
        self.assertIn("POST", response.getheader("Access-Control-Allow-Methods"))
        self.assertEqual(int(response.getheader("Content-Length")), len(data))
        token = json.loads(data)
        self.assertEqual(token["accessid"], "ak")
        self.assertEqual(token["x-oss-security-token"], STS)
        self.assertGreater(token["expire"], time.time())

    def test_head_is_get_without_body(self):
        get, body = self.request("GET", "/healthz")
        head, empty = self.request("HEAD", "/healthz")
        self.assertEqual(head.status, 200)
        self.assertEqual(empty, b"")
        self.assertEqual(head.getheader("Content-Length"), str(len(body)))

    def test_options_preflight(self):
        response, data = self.request("OPTIONS", "/")
        self.assertEqual(response.status, 204)
        self.assertEqual(data, b"")
        self.assertIsNone(response.getheader("Content-Length"))
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), "*")

    def test_healthz(self):
        response, data = self.request("GET", "/healthz")
        self.assertEqual((response.status, json.loads(data)), (200, {"Status": "OK"}))

    def test_unknown_paths_are_404_not_tokens(self):
        for path in ("/favicon.ico", "/?x", "/index.htm", "/healthz/"):
            with self.subTest(path=path):
                response, data = self.request("GET", path)
                if path == "/?x":  # the query does not change the route
                    self.assertEqual(response.status, 200)
                    continue
                self.assert_error(response, data, 404)
                self.assertNotIn(b"policy", data)

    def test_static_files(self):
        for path, ctype, text in (("/index.html", "text/html", b"<!doctype"),
                                  ("/upload.js", "text/javascript", b"'use strict'"),
                                  ("/style.css", "text/css", b"body"),
                                  ("/sub/x.txt", "text/plain", b"x")):
            with self.subTest(path=path):
                response, data = self.request("GET", path)
                self.assertEqual(response.status, 200)
                self.assertTrue(response.getheader("Content-Type").startswith(ctype))
                self.assertEqual(response.getheader("X-Content-Type-Options"), "nosniff")
                self.assertTrue(data.startswith(text))
        response, _ = self.request("GET", "/index.html")
        self.assertIn("default-src 'self'", response.getheader("Content-Security-Policy"))

    def test_file_or_folder_swapped_for_a_symlink_after_startup_is_not_followed(self):
        root = self.server.app.static_root
        outside = os.path.join(self.tmp.name, "outside.txt")
        response, data = self.request("GET", "/swap.txt")
        self.assertEqual((response.status, data), (200, b"swap"))
        os.remove(os.path.join(root, "swap.txt"))
        os.symlink(outside, os.path.join(root, "swap.txt"))
        outside_dir = os.path.join(self.tmp.name, "outside-dir")
        os.makedirs(outside_dir)
        with open(os.path.join(outside_dir, "y.txt"), "w") as f:
            f.write("outside-secret")
        os.rename(os.path.join(root, "swapdir"), os.path.join(self.tmp.name, "old-swapdir"))
        os.symlink(outside_dir, os.path.join(root, "swapdir"))
        for path in ("/swap.txt", "/swapdir/y.txt"):
            with self.subTest(path=path):
                response, data = self.request("GET", path)
                self.assert_error(response, data, 404)
                self.assertNotIn(b"outside-secret", data)

    def test_file_swapped_for_a_fifo_is_not_read(self):
        root = self.server.app.static_root
        os.remove(os.path.join(root, "sub", "x.txt"))
        os.mkfifo(os.path.join(root, "sub", "x.txt"))
        try:
            response, data = self.request("GET", "/sub/x.txt")
        finally:
            os.remove(os.path.join(root, "sub", "x.txt"))
            with open(os.path.join(root, "sub", "x.txt"), "w") as f:
                f.write("x")
        self.assert_error(response, data, 404)

    def test_assets_other_than_the_page_carry_a_restrictive_csp(self):
        for path in ("/favicon.svg", "/upload.js", "/style.css", "/sub/x.txt"):
            with self.subTest(path=path):
                response, _ = self.request("GET", path)
                csp = response.getheader("Content-Security-Policy")
                self.assertIsNotNone(csp)
                self.assertTrue(csp.startswith("default-src 'none'"), csp)
                self.assertNotIn("script-src", csp)

    def test_json_answers_and_errors_are_nosniff(self):
        for method, path in (("GET", "/"), ("GET", "/healthz"), ("GET", "/nope"),
                             ("PUT", "/"), ("POST", "/cb")):
            with self.subTest(path=path, method=method):
                response, _ = self.request(method, path, body=b"x" if method != "GET" else None)
                self.assertTrue(response.getheader("Content-Type").startswith(
                    "application/json"))
                self.assertEqual(response.getheader("X-Content-Type-Options"), "nosniff")

    def test_traversal_and_hidden_files_are_404(self):
        for path in ("/../appserver.py", "/%2e%2e/appserver.py", "/static/../README.md",
                     "/..%2fappserver.py", "/%252e%252e/", "/.hidden", "/.git/config",
                     "/sub/../index.html", "//etc/passwd", "/link.txt", "/sub",
                     "/index.html%00.txt", "/static/index.html", "/sub/"):
            with self.subTest(path=path):
                response, data = self.request("GET", path)
                self.assert_error(response, data, 404)
                for leaked in (b"outside-secret", b"dotfile", b"gitconfig", b"import"):
                    self.assertNotIn(leaked, data)

    def test_methods(self):
        for method in ("PUT", "DELETE", "PATCH"):
            with self.subTest(method=method):
                response, data = self.request(method, "/", body=b"")
                self.assert_error(response, data, 405)
                self.assertEqual(response.getheader("Allow"), "GET, HEAD, POST, OPTIONS")
        for method in ("TRACE", "BREW", "CONNECT"):
            with self.subTest(method=method):
                response, data = self.request(method, "/")
                self.assert_error(response, data, 501)
                self.assertNotIn(method.encode(), data)

    def test_malformed_request_line_is_400(self):
        for line in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n",
                     b"GET / HTTP/x.y\r\n\r\n"):
            with self.subTest(line=line):
                data = self.raw(line)
                self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data[:40])
                self.assertIn(b'{"Status":"Error","Message":"malformed request line"}', data)

    def test_unsupported_http_version_is_505(self):
        data = self.raw(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 505 "), data[:40])

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

    def test_idle_keep_alive_connection_is_closed(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.2)
            self.assertIn(b"200 OK", sock.recv(65536))
            started = time.monotonic()
            self.assertEqual(sock.recv(1), b"")  # server closes after idle_timeout (1 s)
            self.assertLess(time.monotonic() - started, 4)

    def test_slow_request_hits_the_total_deadline(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\n")
            closed = False
            while time.monotonic() - started < 8:
                try:
                    sock.sendall(b"X-a: b\r\n")  # one header line every 0.5 s, under idle_timeout
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
            self.assertLess(time.monotonic() - started, 6)  # request_timeout is 3 s

    def test_get_with_a_body_closes_instead_of_parsing_the_body(self):
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        data = self.raw(b"GET /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                        % len(smuggled) + smuggled)
        self.assertEqual(data.count(b"HTTP/1.1 "), 1)
        self.assertIn(b"Connection: close", data)

    def test_malformed_header_lines_do_not_smuggle_a_request(self):
        smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for bad in (b"Foo\r\nContent-Length: %d\r\n" % len(smuggled),
                    b"Content-Length : %d\r\n" % len(smuggled),
                    b"Content-Length: %d\n \n" % len(smuggled)):
            with self.subTest(bad=bad):
                data = self.raw(b"GET /index.html HTTP/1.1\r\nHost: x\r\n" + bad + b"\r\n"
                                + smuggled)
                self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data[:60])
                self.assertEqual(data.count(b"HTTP/1.1 "), 1)
                self.assertNotIn(b'{"Status":"OK"}', data)

    def test_header_bytes_are_bounded(self):
        # Each line is under http.server's 64 KiB limit; together they are not.
        headers = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(40))
        data = self.raw(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 431 "), data[:60])
        fewer = b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(10))
        data = self.raw(b"GET / HTTP/1.1\r\nHost: x\r\n" + fewer + b"\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:60])

    def test_expect_100_only_for_a_body_that_will_be_read(self):
        too_big = self.config.max_callback_bytes + 1
        data = self.raw(b"POST /cb HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                        b"Content-Length: %d\r\n\r\n" % too_big)
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:60])
        # Refused on its headers (no authorization): the error comes without an invitation.
        data = self.raw(b"POST /cb HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
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

    def test_one_access_log_line_per_request_without_the_query(self):
        self.request("GET", "/log-me?token=q-s3cret")
        deadline = time.monotonic() + 5  # the line is recorded just after the response is sent
        while True:
            self.server.access_log.flush()
            lines = [line for line in self.logs.lines if "/log-me" in line]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.assertEqual(lines[:1], ['127.0.0.1 "GET /log-me" 404 40 ' + lines[0].split()[-1]])
        self.assertEqual(len(lines), 1, self.logs.lines[-5:])
        self.assertNotIn("q-s3cret", "\n".join(self.logs.lines))

    def test_empty_lines_before_a_request_line_are_ignored(self):
        data = self.raw(b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:60])

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
        self.assertFalse(any('"POST /cb" 500' in line for line in self.logs.lines))

    def test_every_response_has_a_correct_content_length(self):
        for method, path in (("GET", "/"), ("GET", "/nope"), ("PUT", "/"), ("GET", "/style.css")):
            response, data = self.request(method, path, body=b"" if method == "PUT" else None)
            self.assertEqual(int(response.getheader("Content-Length")), len(data))


class Shutdown(unittest.TestCase):
    def test_server_close_drains_without_serve_forever_help(self):
        # The socketserver idiom (shutdown, then server_close) must not wait for a keep-alive
        # client that never leaves: idle connections are closed, then threads are joined.
        server, url = start_app_server(appserver.Config(), idle_timeout=30, request_timeout=30)
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertIn(b"200 OK", client.recv(65536))
            started = time.monotonic()
            server.shutdown()
            server.server_close()
            server._test_thread.join(5)
            self.assertLess(time.monotonic() - started, 3)
            self.assertEqual(client.recv(65536), b"")

    def test_a_stalled_log_sink_drops_lines_instead_of_growing(self):
        access = appserver.AccessLog(logging.getLogger("appserver.test-stalled"), interval=3600)
        logging.getLogger("appserver.test-stalled").setLevel(logging.INFO)
        for i in range(appserver.AccessLog.MAX_PENDING + 500):
            access.record("127.0.0.1", "GET", "/", 200, 1, 0.1)
        self.assertEqual(len(access._pending), appserver.AccessLog.MAX_PENDING)
        with self.assertLogs("appserver.test-stalled", "WARNING") as logs:
            access.flush()
        self.assertIn("500 access-log lines dropped", logs.output[0])
        access.close()

    def free_port(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def test_sigterm_exits_0_even_with_an_idle_keep_alive_connection(self):
        port = self.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OSS_")}
        process = subprocess.Popen([sys.executable, str(REPO / "appserver.py"), "127.0.0.1",
                                    str(port)], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(100):
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/healthz")
                    break
                except OSError:
                    time.sleep(0.05)
            self.assertEqual(conn.getresponse().read(), b'{"Status":"OK"}')
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=10)
            self.assertEqual(process.returncode, 0, err)
            self.assertLess(time.monotonic() - started, 3)
            self.assertIn("shutting down", err)
            self.assertIn("page:", out)
            conn.close()
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()


if __name__ == "__main__":
    unittest.main()
