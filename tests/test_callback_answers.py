"""What answers a verified callback, from any entry point: OSS_CALLBACK_HOOK (a function named
in the environment, under python appserver.py and gunicorn), make_wsgi_app(callback_hook=),
and OSS_CALLBACK_FORWARD_URL (the verified upload POSTed as signed JSON to an application in
any language, whose answer OSS relays to the browser).

The receiving application here checks the signature the way the README tells receivers to,
with hmac and hashlib from the documented format: X-Upload-Signature = "sha256=" + hex
HMAC-SHA256(OSS_FORWARD_SECRET, X-Upload-Timestamp + "." + body), the timestamp within 300 s.
"""

import hashlib
import hmac
import http.server
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

import appserver
from tests.multipart_client import get_json, post_form
from tests.oss_emulator import EmulatorServer
from tests.support import (OFFICIAL_BODY, OFFICIAL_TARGET, REPO, free_port, official_header,
                           png_bytes, start_app_server, stop_app_server)
from tests.test_wsgi import call_wsgi

AK, SECRET, BUCKET, REGION = "answers-ak", "answers-secret-of-the-bucket", "examplebucket", \
    "cn-hangzhou"
FORWARD_SECRET = "forward-secret-of-the-main-application-0123"
HOOK_MODULE = textwrap.dedent('''
    import json, os

    def record(upload):
        with open(os.environ["HOOK_RECORD"], "a") as f:
            f.write(json.dumps(upload) + "\\n")
        return {"Status": "OK", "recorded": upload["object"], "pid": os.getpid()}

    def not_a_dict(upload):
        return ["a", "list"]
''')


class Receiver:
    """The main application's endpoint: checks signature and timestamp, answers as told."""

    def __init__(self, secret=FORWARD_SECRET, stall=0.0, answer=None):
        self.received, self.refused = [], []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers.get("X-Upload-Timestamp", "")
                expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                                hashlib.sha256).hexdigest()
                fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 300
                if not (fresh and hmac.compare_digest(
                        expected, self.headers.get("X-Upload-Signature", ""))):
                    receiver.refused.append(body)
                    return self.reply(401, b'{"error":"bad signature"}')
                receiver.received.append(json.loads(body))
                time.sleep(stall)
                self.reply(200, answer if answer is not None else b'{"ok": true, "id": 7}')

            def reply(self, status, payload):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d/uploads" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def stack(test, **environ):
    """The emulator and an app server configured from ``environ``; returns (emu, base_url)."""
    root = tempfile.TemporaryDirectory()
    test.addCleanup(root.cleanup)
    emu = EmulatorServer(root.name, bucket=BUCKET, access_key_id=AK, access_key_secret=SECRET,
                         region=REGION).start()
    test.addCleanup(emu.stop)
    server, base_url = start_app_server(appserver.Config())
    test.addCleanup(stop_app_server, server)
    values = {"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SECRET, "OSS_HOST": emu.url,
              "OSS_BUCKET": BUCKET, "OSS_REGION": REGION,
              "OSS_PUB_KEY_URL_PREFIXES": emu.pub_key_url_prefix}
    values.update(environ)
    server.app = appserver.App(appserver.config_from_env(values, server_url=base_url))
    return emu, base_url


def upload(base_url, name="pic.png", data=None):
    token = get_json(base_url + "/")
    fields = list(token["fields"].items()) + [("key", token["dir"] + name)]
    return post_form(token["url"], fields, name, data or png_bytes(3, 2),
                     file_content_type="image/png")


class Forwarding(unittest.TestCase):
    def receiver(self, **options):
        receiver = Receiver(**options)
        self.addCleanup(receiver.stop)
        return receiver

    def test_the_verified_upload_is_forwarded_signed_and_the_answer_reaches_the_browser(self):
        receiver = self.receiver()
        emu, base_url = stack(self, OSS_CALLBACK_FORWARD_URL=receiver.url,
                              OSS_FORWARD_SECRET=FORWARD_SECRET)
        data = png_bytes(5, 4)
        reply = upload(base_url, data=data)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json(), {"ok": True, "id": 7})
        (forwarded,) = receiver.received
        self.assertEqual({k: forwarded[k] for k in ("user", "bucket", "object", "size")},
                         {"user": None, "bucket": BUCKET, "object": "user-dir-prefix/pic.png",
                          "size": len(data)})
        self.assertEqual(forwarded["fields"]["mimeType"], "image/png")

    def test_a_receiver_with_another_secret_refuses_and_the_browser_sees_203(self):
        receiver = self.receiver(secret="not-the-secret-the-app-server-signs-with")
        emu, base_url = stack(self, OSS_CALLBACK_FORWARD_URL=receiver.url,
                              OSS_FORWARD_SECRET=FORWARD_SECRET)
        reply = upload(base_url)
        self.assertEqual(reply.status, 203, reply.body)
        self.assertIn(b"CallbackFailed", reply.body)
        self.assertIn(b"502", reply.body)
        self.assertEqual((len(receiver.refused), receiver.received), (1, []))

    def test_a_stalling_receiver_gives_502_within_the_budget_and_the_browser_sees_203(self):
        receiver = self.receiver(stall=8.0)
        emu, base_url = stack(self, OSS_CALLBACK_FORWARD_URL=receiver.url,
                              OSS_FORWARD_SECRET=FORWARD_SECRET)
        started = time.monotonic()
        reply = upload(base_url)
        self.assertLess(time.monotonic() - started, appserver.CALLBACK_BUDGET + 1.0)
        self.assertEqual(reply.status, 203, reply.body)
        self.assertIn(b"502", reply.body)

    def test_an_answer_that_is_not_a_json_object_is_a_502(self):
        for answer in (b"[1, 2]", b"not json", b'{"a": NaN}', b""):
            with self.subTest(answer=answer):
                receiver = self.receiver(answer=answer)
                emu, base_url = stack(self, OSS_CALLBACK_FORWARD_URL=receiver.url,
                                      OSS_FORWARD_SECRET=FORWARD_SECRET)
                reply = upload(base_url)
                self.assertEqual(reply.status, 203, reply.body)
                self.assertIn(b"502", reply.body)

    def test_the_signature_matches_the_documented_format(self):
        body = b'{"object":"a"}'
        expected = "sha256=" + hmac.new(FORWARD_SECRET.encode(), b"1700000000." + body,
                                        hashlib.sha256).hexdigest()
        self.assertEqual(appserver.forward_signature(FORWARD_SECRET, "1700000000", body),
                         expected)

    def test_a_forward_url_needs_its_own_secret_and_excludes_a_hook(self):
        base = {"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SECRET,
                "OSS_CALLBACK_FORWARD_URL": "http://127.0.0.1:9/x"}
        cases = {"OSS_FORWARD_SECRET": {},
                 "OSS_CALLBACK_HOOK": {"OSS_FORWARD_SECRET": FORWARD_SECRET,
                                       "OSS_CALLBACK_HOOK": "m:f"}}
        for variable, extra in cases.items():
            with self.subTest(variable), self.assertRaises(appserver.ConfigError) as caught:
                appserver.config_from_env(dict(base, **extra))
            self.assertEqual(caught.exception.variable, variable)
        with self.assertRaises(appserver.ConfigError):   # too short to be a key
            appserver.config_from_env(dict(base, OSS_FORWARD_SECRET="short"))
        # A password in the URL would be logged with it and never sent: refused, like port 0.
        for url in ("http://:pw@127.0.0.1:9/x", "http://user:pw@127.0.0.1/x",
                    "http://127.0.0.1:0/x"):
            with self.subTest(url=url), self.assertRaises(appserver.ConfigError) as caught:
                appserver.config_from_env(dict(base, OSS_CALLBACK_FORWARD_URL=url,
                                               OSS_FORWARD_SECRET=FORWARD_SECRET))
            self.assertEqual(caught.exception.variable, "OSS_CALLBACK_FORWARD_URL")


class HookFromTheEnvironment(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.TemporaryDirectory()
        self.addCleanup(self.folder.cleanup)
        pathlib.Path(self.folder.name, "myhooks.py").write_text(HOOK_MODULE)
        self.record = pathlib.Path(self.folder.name, "uploads.jsonl")
        self.root = tempfile.TemporaryDirectory()
        self.addCleanup(self.root.cleanup)
        self.emu = EmulatorServer(self.root.name, bucket=BUCKET, access_key_id=AK,
                                  access_key_secret=SECRET, region=REGION).start()
        self.addCleanup(self.emu.stop)

    def environ(self, port, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
        env.update(OSS_ACCESS_KEY_ID=AK, OSS_ACCESS_KEY_SECRET=SECRET, OSS_HOST=self.emu.url,
                   OSS_BUCKET=BUCKET, OSS_REGION=REGION, HOOK_RECORD=str(self.record),
                   OSS_PUB_KEY_URL_PREFIXES=self.emu.pub_key_url_prefix,
                   OSS_CALLBACK_URL="http://127.0.0.1:%d/" % port,
                   OSS_CALLBACK_HOOK="myhooks:record", PYTHONUNBUFFERED="1")
        env.update(extra)
        return env

    def serve(self, command, port, **extra):
        process = subprocess.Popen(command, cwd=self.folder.name, env=self.environ(port, **extra),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.addCleanup(process.stdout.close)
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.terminate)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                get_json("http://127.0.0.1:%d/healthz" % port)
                return process
            except OSError:
                if process.poll() is not None:
                    self.fail(process.stdout.read())
                time.sleep(0.1)
        self.fail("the server did not come up")

    def check_recorded_once_each(self, base_url, count):
        answers = []
        for i in range(count):
            reply = upload(base_url, name="f%d.png" % i)
            self.assertEqual(reply.status, 200, reply.body)
            answers.append(reply.json())
        self.assertEqual([a["recorded"] for a in answers],
                         ["user-dir-prefix/f%d.png" % i for i in range(count)])
        lines = [json.loads(line) for line in self.record.read_text().splitlines()]
        self.assertEqual(sorted(u["object"] for u in lines),
                         sorted("user-dir-prefix/f%d.png" % i for i in range(count)))
        for recorded in lines:
            self.assertEqual(recorded["bucket"], BUCKET)
            self.assertEqual(recorded["size"], int(recorded["fields"]["size"]))
        return answers

    def test_python_appserver_py_loads_the_hook_from_the_working_directory(self):
        port = free_port()
        self.serve([sys.executable, str(REPO / "appserver.py"), "127.0.0.1", str(port)], port)
        self.check_recorded_once_each("http://127.0.0.1:%d" % port, 3)

    def test_gunicorn_with_two_workers_records_each_upload_once(self):
        port = free_port()
        env_path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        self.serve([gunicorn, "-w", "2", "-b", "127.0.0.1:%d" % port,
                    "appserver:make_wsgi_app()"], port, PYTHONPATH=env_path,
                   OSS_CALLBACK_SECRET="grant-secret-shared-by-both-workers-0123")
        answers = self.check_recorded_once_each("http://127.0.0.1:%d" % port, 6)
        self.assertTrue(all("pid" in a for a in answers))

    def test_a_bad_hook_path_is_exit_2_with_a_clear_message(self):
        for path, words in (("nosuchmodule:f", "ModuleNotFoundError"),
                            ("myhooks:nosuchfunction", "AttributeError"),
                            ("myhooks:record()", "package.module:function"),
                            ("myhooks:os", "not a function")):
            with self.subTest(path=path):
                done = subprocess.run([sys.executable, str(REPO / "appserver.py"), "127.0.0.1",
                                       str(free_port())], cwd=self.folder.name,
                                      env=self.environ(1, OSS_CALLBACK_HOOK=path),
                                      capture_output=True, text=True, timeout=30)
                self.assertEqual(done.returncode, 2, done.stderr)
                self.assertIn("OSS_CALLBACK_HOOK", done.stderr)
                self.assertIn(words, done.stderr)
                self.assertNotIn("Traceback", done.stderr)

    def test_a_hook_that_returns_no_dict_is_a_500_with_an_incident_id(self):
        port = free_port()
        process = self.serve([sys.executable, str(REPO / "appserver.py"), "127.0.0.1",
                              str(port)], port, OSS_CALLBACK_HOOK="myhooks:not_a_dict")
        reply = upload("http://127.0.0.1:%d" % port)
        self.assertEqual(reply.status, 203, reply.body)
        self.assertIn(b"500", reply.body)
        process.terminate()
        output = process.communicate(timeout=10)[0]
        self.assertIn("not a dict (a JSON object)", output)


class HookOfMakeWsgiApp(unittest.TestCase):
    def test_make_wsgi_app_takes_a_hook_directly(self):
        seen = []
        # The official example of OSS's Callback documentation: its bucket, no grant.
        config = appserver.Config(callback_binding=False, callback_url="", bucket="yonghu-test")
        app = appserver.make_wsgi_app(config, callback_hook=lambda u: seen.append(u) or {"a": 1})
        path, _, query = OFFICIAL_TARGET.partition("?")
        status, _, body = call_wsgi(app, "POST", path, query, OFFICIAL_BODY, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": official_header("authorization"),
            "x-oss-pub-key-url": official_header("x-oss-pub-key-url")})
        self.assertEqual((status, json.loads(body)), (200, {"a": 1}))
        self.assertEqual(seen, [{"user": None, "bucket": "yonghu-test", "object": None,
                                 "size": None, "fields": {"bucket": "yonghu-test"}}])


if __name__ == "__main__":
    unittest.main()
