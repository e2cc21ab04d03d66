"""make_wsgi_app: the same routes under wsgiref and gunicorn, the callback's raw request target
(RAW_URI / REQUEST_URI, or rebuilt), config read from the environment at call time, and the
end-to-end upload flow through gunicorn with 2 workers.

The callbacks that test the raw target are OSS's documentation example or signed with the test
key: they carry no grant from our tokens, so those servers run with callback binding off. The
upload through the OSS emulator uses a genuine token, so its gunicorn keeps binding on: the
callback's grant, minted by one worker, must verify in whichever worker OSS reaches."""

import base64
import http.client
import importlib.util
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
import wsgiref.simple_server
from unittest import mock

import appserver
from tests import rsa_testkit
from tests.multipart_client import post_form
from tests.support import (OFFICIAL_BODY, OFFICIAL_TARGET, REPO, KeyServer, capture_logs,
                           exchange, free_port, official_callback, official_header,
                           parse_responses, post_raw, require, signed_headers,
                           start_app_server, stop_app_server)

SECRET = "wsgi-Distinctive-Secret-42"
TEST_KEY = rsa_testkit.load_test_key("rsa2048_key.pem")
KEY_NAME = "one-write.pem"  # the key server's 2048-bit test key, head and body in one write


def signed(target, body, key_url):
    """The headers of a callback to ``target`` signed with the 2048-bit test key."""
    return signed_headers(TEST_KEY, target, body, key_url)


def call_wsgi(app, method="GET", path="/", query="", body=b"", headers=None, **extra):
    """Call a WSGI app directly with a hand-built environ; returns (status, headers, body)."""
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(), "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body or method == "POST":
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        if name.lower() == "content-type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    environ.update(extra)
    started = []

    def start_response(status, response_headers, exc_info=None):
        started.append((status, response_headers))

    chunks = app(environ, start_response)
    output = b"".join(chunks)
    status, response_headers = started[0]
    return int(status.split()[0]), dict((k.lower(), v) for k, v in response_headers), output


class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


class WsgirefCase(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.logs = capture_logs(cls)  # the app's log lines stay off the test output
        cls.keys = KeyServer()
        cls.key_url = cls.keys.url(KEY_NAME)
        cls.config = appserver.Config(
            access_key_id="wsgi-id", access_key_secret=SECRET,
            callback_url="http://127.0.0.1:9/callback",
            pub_key_url_prefixes=appserver.DEFAULT_PUB_KEY_URL_PREFIXES + (cls.keys.prefix,),
            callback_binding=False)  # hand-signed callbacks: verification alone
        application = appserver.make_wsgi_app(cls.config)
        cls.app = staticmethod(application)  # a plain function attribute would become a method
        cls.httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, application,
                                                      handler_class=QuietHandler)
        cls.thread = threading.Thread(target=cls.httpd.serve_forever, daemon=True)
        cls.thread.start()
        cls.port = cls.httpd.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.httpd.shutdown()
        cls.httpd.server_close()
        cls.keys.stop()
        errors = cls.logs.errors()
        assert not errors, errors  # no request above may log an internal error

    def request(self, method, path, port=None, body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response, response.read()
        finally:
            connection.close()

    # ---------------------------------------------------------------- routes

    def test_token_is_signed_json_no_store_with_cors_and_pins_the_callback(self):
        status, response, body = self.request("GET", "/")
        self.assertEqual(status, 200)
        self.assertEqual(response.getheader("Content-Type"), "application/json")
        self.assertEqual(response.getheader("Cache-Control"), "no-store")
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), "*")
        self.assertEqual(int(response.getheader("Content-Length")), len(body))
        token = json.loads(body)
        self.assertEqual(token["accessid"], "wsgi-id")
        self.assertEqual(token["signature"],
                         appserver.sign_policy_v1(SECRET, token["policy"]))
        policy = json.loads(base64.b64decode(token["policy"]))
        self.assertIn({"callback": token["callback"]}, policy["conditions"])
        self.assertNotIn(SECRET.encode(), body)

    def test_healthz_answers_status_ok(self):
        status, response, body = self.request("GET", "/healthz")
        self.assertEqual((status, body), (200, b'{"Status":"OK"}'))

    def test_page_is_served_as_html_with_a_frame_ancestors_csp(self):
        status, response, body = self.request("GET", "/index.html")
        self.assertEqual(status, 200)
        self.assertEqual(response.getheader("Content-Type"), "text/html; charset=utf-8")
        self.assertIn("frame-ancestors 'none'", response.getheader("Content-Security-Policy"))
        self.assertEqual(body, (REPO / "static" / "index.html").read_bytes())

    def test_errors_are_json_with_allow_on_405(self):
        for method, path, expected in (("GET", "/nope", 404), ("GET", "/../appserver.py", 404),
                                       ("PUT", "/", 405), ("DELETE", "/", 405),
                                       ("BREW", "/", 501), ("POST", "/cb", 400)):
            with self.subTest(method=method, path=path):
                status, response, body = self.request(method, path, body=b"" if method == "POST"
                                                      else None)
                self.assertEqual(status, expected)
                document = json.loads(body)
                self.assertEqual(document["Status"], "Error")
                if expected == 405:
                    self.assertEqual(response.getheader("Allow"), "GET, HEAD, POST, OPTIONS")

    def test_head_has_a_length_but_no_body_and_options_is_204_with_allow(self):
        status, response, body = self.request("HEAD", "/")
        self.assertEqual((status, body), (200, b""))
        self.assertGreater(int(response.getheader("Content-Length")), 100)
        status, response, body = self.request("OPTIONS", "/")
        self.assertEqual((status, body), (204, b""))
        self.assertEqual(response.getheader("Allow"), "GET, HEAD, POST, OPTIONS")
        self.assertEqual(response.getheader("Access-Control-Allow-Origin"), "*")

    def test_same_responses_as_the_http_server_handler(self):
        server, _ = start_app_server(self.config)
        self.addCleanup(stop_app_server, server)
        other = server.server_address[1]
        for method, path in (("GET", "/healthz"), ("GET", "/nope"), ("PUT", "/x"),
                             ("BREW", "/"), ("GET", "/style.css"), ("OPTIONS", "/")):
            with self.subTest(method=method, path=path):
                a_status, a, a_body = self.request(method, path)
                b_status, b, b_body = self.request(method, path, port=other)
                self.assertEqual((a_status, a_body), (b_status, b_body))
                for name in ("Content-Type", "Cache-Control", "Allow",
                             "Access-Control-Allow-Origin"):
                    self.assertEqual(a.getheader(name), b.getheader(name), name)

    # ---------------------------------------------------------------- callback

    def test_official_example_with_rebuilt_target(self):
        # wsgiref sets neither RAW_URI nor REQUEST_URI: the target is rebuilt.
        (status, headers, body), = parse_responses(exchange(self.port, official_callback()))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), {"Status": "OK", "user": None,
                                            "upload": {"bucket": "yonghu-test"}})

    def test_official_example_with_raw_uri_or_request_uri(self):
        headers = {"authorization": official_header("authorization"),
                   "x-oss-pub-key-url": official_header("x-oss-pub-key-url"),
                   "content-type": "application/x-www-form-urlencoded"}
        for variable in ("RAW_URI", "REQUEST_URI"):
            with self.subTest(variable):
                # PATH_INFO/QUERY_STRING deliberately disagree: only the raw target is signed.
                status, _, body = call_wsgi(self.app, "POST", "/other", "", OFFICIAL_BODY,
                                            headers, **{variable: OFFICIAL_TARGET})
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body)["upload"], {"bucket": "yonghu-test"})
        status, _, body = call_wsgi(self.app, "POST", "/index.php", "id=1&index=2",
                                    OFFICIAL_BODY, headers, RAW_URI="/index.php?id=1&index=3")
        self.assertEqual(status, 400)
        status, _, body = call_wsgi(self.app, "POST", "/index.php", "id=1&index=2",
                                    OFFICIAL_BODY, headers)
        self.assertEqual(status, 200)

    def test_2048_bit_callback_with_percent_encoded_path_rebuilt(self):
        target = "/cb%20dir/a%2Fb%C3%A9?x=%20y&z"
        body = b"filename=user-dir-prefix%2Fa.png&size=3"
        status, _, response = post_raw(self.port, target, body,
                                       signed(target, body, self.key_url))
        self.assertEqual(status, 200, response)
        self.assertEqual(json.loads(response)["upload"]["filename"], "user-dir-prefix/a.png")
        wrong = signed(target.replace("z", "q"), body, self.key_url)
        self.assertEqual(post_raw(self.port, target, body, wrong)[0], 400)

    def test_bare_question_mark_is_the_one_case_lost_without_raw_uri(self):
        body = b"size=1"
        headers = signed("/cb?", body, self.key_url)
        status, _, response = call_wsgi(self.app, "POST", "/cb", "", body, headers,
                                        RAW_URI="/cb?")
        self.assertEqual(status, 200, response)
        status, _, response = call_wsgi(self.app, "POST", "/cb", "", body, headers,
                                        REQUEST_URI="/cb?")
        self.assertEqual(status, 200, response)
        # Documented limitation: rebuilt from PATH_INFO + empty QUERY_STRING, the '?' is gone.
        status, _, response = call_wsgi(self.app, "POST", "/cb", "", body, headers)
        self.assertEqual(status, 400)
        self.assertIn(b"signature", response)


class EnvironmentAtCallTime(unittest.TestCase):

    def setUp(self):
        # With its records captured, the app sees logging configured: make_wsgi_app adds no
        # stderr handler that would outlive this test and print during every later one.
        capture_logs(self)

    def test_make_wsgi_app_without_config_reads_the_environment_when_called(self):
        first = {"OSS_ACCESS_KEY_ID": "env-id-one", "OSS_ACCESS_KEY_SECRET": "env-secret-one",
                 "OSS_UPLOAD_DIR": "one/", "OSS_CALLBACK_URL": "http://127.0.0.1:9/one"}
        with mock.patch.dict(os.environ, first, clear=True):
            app_one = appserver.make_wsgi_app()
        second = {"OSS_ACCESS_KEY_ID": "env-id-two", "OSS_ACCESS_KEY_SECRET": "env-secret-two",
                  "OSS_SIGNATURE_VERSION": "v4", "OSS_REGION": "cn-hangzhou"}
        with mock.patch.dict(os.environ, second, clear=True):
            app_two = appserver.make_wsgi_app()
        token_one = json.loads(call_wsgi(app_one)[2])
        token_two = json.loads(call_wsgi(app_two)[2])
        self.assertEqual((token_one["accessid"], token_one["dir"]), ("env-id-one", "one/"))
        self.assertEqual(token_one["signature"],
                         appserver.sign_policy_v1("env-secret-one", token_one["policy"]))
        self.assertIn("callback", token_one)
        self.assertEqual(token_two["accessid"], "env-id-two")
        self.assertEqual(token_two["x-oss-signature-version"], "OSS4-HMAC-SHA256")
        # Without OSS_CALLBACK_URL there is no server URL to default to: no callback.
        self.assertNotIn("callback", token_two)

    def test_missing_callback_url_is_warned_about(self):
        with mock.patch.dict(os.environ, {}, clear=True):
            with self.assertLogs("appserver", "WARNING") as logs:
                appserver.make_wsgi_app()
        self.assertTrue(any("OSS_CALLBACK_URL is not set" in line for line in logs.output))

    def test_a_client_gone_during_the_body_is_a_400_not_a_500(self):
        class Gone(io.RawIOBase):
            def read(self, size=-1):
                raise OSError("client disconnected")

        app = appserver.make_wsgi_app(appserver.Config())
        with self.assertNoLogs("appserver", "ERROR"):
            status, _, body = call_wsgi(
                app, "POST", "/index.php", "id=1&index=2", body=b"x" * 18,
                headers={"authorization": official_header("authorization"),
                         "x-oss-pub-key-url": official_header("x-oss-pub-key-url")},
                **{"wsgi.input": Gone()})
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body)["Status"], "Error")

    def test_bad_environment_is_one_line_and_exit_status_4(self):
        # 4 is gunicorn's APP_LOAD_ERROR: the arbiter stops instead of respawning workers.
        stderr = io.StringIO()
        with mock.patch.dict(os.environ, {"OSS_SIGNATURE_VERSION": "v9-hidden"}, clear=True), \
                mock.patch("sys.stderr", stderr):
            with self.assertRaises(SystemExit) as caught:
                appserver.make_wsgi_app()
        self.assertEqual(caught.exception.code, 4)
        self.assertEqual(stderr.getvalue(),
                         "appserver: configuration error: OSS_SIGNATURE_VERSION must be v1 or v4\n")

    def test_importing_the_module_starts_nothing(self):
        code = ("import threading, appserver; "
                "assert threading.active_count() == 1, threading.enumerate(); print('ok')")
        result = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), timeout=30,
                                capture_output=True, env=dict(os.environ, OSS_HOST="bad"))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), b"ok")


###############################################################################
# gunicorn
###############################################################################

def emulator_class():
    try:
        from tests.oss_emulator import EmulatorServer
    except ImportError:
        return None
    return EmulatorServer


# A 1x1 PNG, so the emulator can report imageInfo.height/width.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
    "rkJggg==")


class GunicornServer:
    """``gunicorn -w 2 'appserver:make_wsgi_app()'`` on a free loopback port, the config in the
    environment, with a key server and (when the emulator is there) an OSS emulator of its own.
    ``binding``: callback binding (OSS_CALLBACK_BINDING); off for callbacks that come from no
    token of ours. ``stop()`` sends SIGTERM and returns gunicorn's exit status."""

    def __init__(self, with_emulator=True, binding=True):
        self.cleanups = []
        try:
            self._start(with_emulator, binding)
        except BaseException:
            self.close()
            raise

    def _start(self, with_emulator, binding):
        self.keys = KeyServer()
        self.cleanups.append(self.keys.stop)
        self.tmp = tempfile.TemporaryDirectory()
        self.cleanups.append(self.tmp.cleanup)
        self.port = free_port()
        self.emu = None
        prefixes = list(appserver.DEFAULT_PUB_KEY_URL_PREFIXES) + [self.keys.prefix]
        env = dict(os.environ, OSS_ACCESS_KEY_ID="ak", OSS_ACCESS_KEY_SECRET=SECRET,
                   OSS_CALLBACK_URL="http://127.0.0.1:%d/callback" % self.port,
                   OSS_CALLBACK_BINDING="1" if binding else "0", PYTHONUNBUFFERED="1",
                   # Callbacks that come from no token of ours name no object in our bucket.
                   OSS_CONFIRM_UPLOADS="auto" if binding else "0")
        EmulatorServer = emulator_class() if with_emulator else None
        if EmulatorServer is not None:
            # The bucket of the official example, so that callback is "ours" too.
            self.emu = EmulatorServer(root=os.path.join(self.tmp.name, "bucket"),
                                      bucket="yonghu-test", access_key_id="ak",
                                      access_key_secret=SECRET)
            self.emu.start()
            self.cleanups.append(self.emu.stop)
            prefixes.append(self.emu.pub_key_url_prefix)
            env.update(OSS_HOST=self.emu.url, OSS_BUCKET="yonghu-test")
        else:
            env.update(OSS_HOST="https://yonghu-test.oss-cn-hangzhou.aliyuncs.com")
        env["OSS_PUB_KEY_URL_PREFIXES"] = ",".join(prefixes)
        self.log_path = os.path.join(self.tmp.name, "gunicorn.log")
        self.log = open(self.log_path, "w+b")
        self.cleanups.append(self.log.close)
        command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:%d" % self.port,
                   "--graceful-timeout", "5", "--timeout", "30"]
        usage = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True,
                               text=True, timeout=30).stdout
        if "--no-control-socket" in usage:
            # gunicorn >= 25 opens ~/.gunicorn/gunicorn.ctl; concurrent test runs would share it.
            command.append("--no-control-socket")
        self.proc = subprocess.Popen(
            command + ["appserver:make_wsgi_app()"],
            cwd=str(REPO), env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.cleanups.append(lambda: self.proc.poll() is None and self.proc.kill())
        deadline = time.monotonic() + 30
        while True:
            try:
                (status, _, _), = parse_responses(exchange(
                    self.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                    timeout=2))
                if status == 200:
                    break
            except (OSError, AssertionError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("gunicorn did not start: %s" % self.output())
            time.sleep(0.1)

    def output(self):
        return pathlib.Path(self.log_path).read_bytes().decode("utf-8", "replace")

    def stop(self, timeout=20):
        """SIGTERM, then gunicorn's exit status (None if it is still running after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        return self.proc.returncode

    def close(self):
        proc = getattr(self, "proc", None)
        if proc is not None:
            self.stop(15)
        for cleanup in reversed(self.cleanups):
            cleanup()
        self.cleanups = []


def require_gunicorn():
    require(importlib.util.find_spec("gunicorn") is not None,
            "gunicorn is not installed (pip install gunicorn); it is a test-only dependency")


class GunicornCase(unittest.TestCase):
    """One gunicorn for the class; no test here stops it or depends on another's traffic."""

    binding = True
    with_emulator = True

    @classmethod
    def setUpClass(cls):
        require_gunicorn()
        cls.gunicorn = GunicornServer(with_emulator=cls.with_emulator, binding=cls.binding)
        cls.addClassCleanup(cls.gunicorn.close)
        cls.port = cls.gunicorn.port
        cls.keys = cls.gunicorn.keys
        cls.emu = cls.gunicorn.emu

    def get(self, path):
        (status, headers, body), = parse_responses(exchange(
            self.port, b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode()))
        return status, headers, body


class Gunicorn(GunicornCase):
    """The raw request target under gunicorn: the official example and callbacks signed with
    the test key, none from our tokens, so binding is off and this tests verification alone."""

    binding = False
    with_emulator = False

    def test_official_example_callback(self):
        for connection, version in (("close", "HTTP/1.0"), ("close", "HTTP/1.1")):
            with self.subTest(version=version):
                (status, headers, body), = parse_responses(
                    exchange(self.port, official_callback(connection, version)))
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body), {"Status": "OK", "user": None,
                                                    "upload": {"bucket": "yonghu-test"}})

    def test_raw_uri_keeps_the_bare_question_mark(self):
        # gunicorn sets RAW_URI, so even the case a rebuilt target loses verifies.
        for target in ("/cb?", "/cb%20x/y?a=%20b"):
            with self.subTest(target=target):
                body = b"size=7&object=user-dir-prefix/k"
                status, _, response = post_raw(self.port, target, body,
                                               signed(target, body, self.keys.url(KEY_NAME)))
                self.assertEqual(status, 200, response)
                self.assertEqual(json.loads(response)["upload"]["size"], "7")

    def test_both_workers_verify_and_each_fetches_the_key_at_most_once(self):
        body = b"size=1"
        target = "/callback?n=1"
        name = "fetched-at-most-twice/" + KEY_NAME  # a key URL no other test names
        for _ in range(20):
            status, _, response = post_raw(self.port, target, body,
                                           signed(target, body, self.keys.url(name)))
            self.assertEqual(status, 200, response)
        self.assertLessEqual(self.keys.count(name), 2)  # one per worker process, then cached


class GunicornUpload(GunicornCase):
    """Tokens and a genuine upload through the OSS emulator, with callback binding on (the
    default): the grant comes from the AccessKey secret both workers share."""

    def test_token_and_routes(self):
        status, headers, body = self.get("/")
        self.assertEqual(status, 200)
        token = json.loads(body)
        self.assertEqual(token["accessid"], "ak")
        self.assertEqual(token["signature"], appserver.sign_policy_v1(SECRET, token["policy"]))
        callback = json.loads(base64.b64decode(token["callback"]))
        url, _, grant = callback["callbackUrl"].partition("?grant=")
        self.assertEqual(url, "http://127.0.0.1:%d/callback" % self.port)
        # The grant is signed with the key derived from the AccessKey secret (and the bucket),
        # and says where this token may write, how much, and until when.
        key = appserver.binding_key(appserver.Config(access_key_id="ak", access_key_secret=SECRET,
                                                     bucket="yonghu-test"))
        granted, expiry = appserver.decode_grant(key, grant)
        self.assertEqual((granted.user, granted.folder, expiry),
                         (None, token["dir"], token["expire"]))
        self.assertEqual(headers["cache-control"], ["no-store"])
        self.assertEqual(self.get("/healthz")[2], b'{"Status":"OK"}')
        self.assertEqual(self.get("/nope")[0], 404)
        self.assertEqual(self.get("/index.html")[0], 200)

    def test_end_to_end_upload_through_the_emulator(self):
        require(self.emu is not None, "tests/oss_emulator.py with EmulatorServer is missing")
        status, _, body = self.get("/")
        token = json.loads(body)
        key = token["dir"] + "e2e-%s.png" % uuid.uuid4().hex[:8]
        form = {"key": key, "policy": token["policy"], "OSSAccessKeyId": token["accessid"],
                "success_action_status": "200", "signature": token["signature"],
                "callback": token["callback"]}
        reply = post_form(self.emu.url, list(form.items()), "pixel.png", PNG_1X1,
                          file_content_type="image/png", timeout=20)
        self.assertEqual(reply.status, 200, reply.body)
        document = reply.json()
        self.assertEqual(document["Status"], "OK")
        self.assertIsNone(document["user"])  # verified against its grant (no user: auth off)
        upload = document["upload"]
        self.assertEqual(upload["filename"], key)
        self.assertEqual(upload["size"], str(len(PNG_1X1)))
        self.assertEqual(upload["mimeType"], "image/png")
        self.assertEqual((upload["height"], upload["width"]), ("1", "1"))
        self.assertTrue(self.emu.object_path(key).exists())
        self.assertEqual(self.emu.object_path(key).read_bytes(), PNG_1X1)



class GunicornStop(unittest.TestCase):

    def test_sigterm_after_traffic_stops_gunicorn_with_status_0_and_no_traceback(self):
        require_gunicorn()
        # binding off: the official callback and a hand-signed one come from no token of ours
        gunicorn = GunicornServer(with_emulator=False, binding=False)
        self.addCleanup(gunicorn.close)
        # Traffic first, as a server that stops has seen: a token, the official callback, and
        # a callback whose key is fetched from the key server.
        (status, _, body), = parse_responses(exchange(
            gunicorn.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
        self.assertEqual(status, 200, body)
        (status, _, body), = parse_responses(exchange(gunicorn.port, official_callback()))
        self.assertEqual(status, 200, body)
        target, body = "/callback?n=2", b"size=2"
        status, _, response = post_raw(gunicorn.port, target, body,
                                       signed(target, body, gunicorn.keys.url(KEY_NAME)))
        self.assertEqual(status, 200, response)
        self.assertEqual(gunicorn.stop(), 0)
        output = gunicorn.output()
        self.assertNotIn("Traceback", output)
        self.assertNotIn(SECRET, output)
        self.assertIn("Shutting down", output)


if __name__ == "__main__":
    unittest.main()
