"""The app server's routes, static files, access log and shutdown (HTTP/1.1 framing is in
test_framing.py, deadlines and load in test_robustness.py)."""

import base64
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import appserver
from tests.support import (REPO, assert_json_error, capture_logs, free_port, start_app_server,
                           stop_app_server)

SECRET = "Zx9-very-secret-key-Qw7"
STS = "sts-token-Mk3"


class ServerTest(unittest.TestCase):
    """A fresh static folder and server per test (some tests swap files in the folder). No
    response and no log line may carry the secret or the STS token (checked after each test)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        root = os.path.join(self.tmp.name, "static")
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
        with open(os.path.join(self.tmp.name, "outside.txt"), "w") as f:
            f.write("outside-secret")
        os.symlink(os.path.join(self.tmp.name, "outside.txt"), os.path.join(root, "link.txt"))
        self.config = appserver.Config(access_key_id="ak", access_key_secret=SECRET,
                                       security_token=STS, bucket="examplebucket",
                                       region="cn-hangzhou", callback_url="http://127.0.0.1:1/cb")
        self.logs = capture_logs(self)
        app = appserver.App(self.config, static_dir=root)
        self.server, self.url = start_app_server(self.config, app=app, idle_timeout=1.0,
                                                 request_timeout=3.0)
        self.addCleanup(stop_app_server, self.server)
        self.port = self.server.server_address[1]
        self.bodies = []

    def tearDown(self):
        everything = self.logs.text()
        secret_b64 = base64.b64encode(SECRET.encode()).decode()
        for text in (everything, "\n".join(self.bodies)):
            self.assertNotIn(SECRET, text, "secret leaked")
            self.assertNotIn(secret_b64, text, "secret leaked")
        self.assertNotIn(STS, everything, "STS token logged")

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

    def assert_error(self, response, data, status):
        assert_json_error(self, response.status, response, data, status)

    # -- routes ---------------------------------------------------------------------------

    def test_token_is_json_no_store_with_cors_and_the_sts_token(self):
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

    def test_options_preflight_is_204_with_cors_and_no_body(self):
        response, data = self.request("OPTIONS", "/")
        self.assertEqual(response.status, 204)
        self.assertEqual(data, b"")
        self.assertIsNone(response.getheader("Content-Length"))
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), "*")

    def test_healthz_answers_status_ok(self):
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

    def test_static_files_carry_their_type_and_nosniff_and_the_page_a_csp(self):
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

    def test_traversal_symlinks_folders_and_hidden_files_are_404(self):
        for path in ("/../appserver.py", "/%2e%2e/appserver.py", "/static/../README.md",
                     "/..%2fappserver.py", "/%252e%252e/", "/.hidden", "/.git/config",
                     "/sub/../index.html", "//etc/passwd", "/link.txt", "/sub",
                     "/index.html%00.txt", "/static/index.html", "/sub/"):
            with self.subTest(path=path):
                response, data = self.request("GET", path)
                self.assert_error(response, data, 404)
                for leaked in (b"outside-secret", b"dotfile", b"gitconfig", b"import"):
                    self.assertNotIn(leaked, data)

    def test_other_methods_are_405_with_allow_and_unknown_ones_501_unechoed(self):
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

    def test_one_access_log_line_per_request_without_the_query(self):
        self.request("GET", "/log-me?token=q-s3cret")
        deadline = time.monotonic() + 5  # the line is recorded just after the response is sent
        while True:
            self.server.access_log.flush()
            lines = [line for line in self.logs.messages() if "/log-me" in line]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.assertEqual(lines[:1], ['127.0.0.1 "GET /log-me" 404 40 ' + lines[0].split()[-1]])
        self.assertEqual(len(lines), 1, self.logs.recent(5))
        self.assertNotIn("q-s3cret", self.logs.text())


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
        logger = logging.getLogger("appserver.test-stalled")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        self.addCleanup(setattr, logger, "propagate", True)
        stall = threading.Event()

        class StalledSink(logging.Handler):
            def __init__(self):
                super().__init__()
                self.lines = []

            def emit(self, record):
                stall.wait(10)
                self.lines.append(record.getMessage())

        sink = StalledSink()
        logger.addHandler(sink)
        self.addCleanup(logger.removeHandler, sink)
        access = appserver.AccessLogQueue(logger, backlog=100)
        for i in range(600):
            access.record(time.time(), "127.0.0.1", "GET", "/%d" % i, 200, 1, 0.1)
        self.assertLessEqual(access.handler.queue.qsize(), 100)
        self.assertGreaterEqual(access.handler.dropped, 499)
        stall.set()
        access.flush()
        access.record(time.time(), "127.0.0.1", "GET", "/after", 200, 1, 0.1)
        access.flush()
        self.assertTrue(any("access-log lines dropped" in line for line in sink.lines),
                        sink.lines[-3:])
        self.assertIn("/after", sink.lines[-1])
        access.close()

    def test_sigterm_exits_0_even_with_an_idle_keep_alive_connection(self):
        port = free_port()
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
