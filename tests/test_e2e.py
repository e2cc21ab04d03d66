"""End to end: the real app server and the OSS emulator on loopback, driven like a browser.

Each upload GETs a token from the app server, POSTs the form to the emulator with the stdlib
multipart client, the emulator stores the object and calls back, the app server verifies the
callback, and the client receives the app server's answer relayed by the emulator.

Callback binding is on, as by default: every token's callback URL carries a grant, and the
callback the emulator sends for a genuine upload must verify against it. The templates render
${bucket}, ${object} and ${size}, as binding requires of a configuration (config_from_env).
"""

import base64
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import appserver
from tests.multipart_client import get_json, post_form, token_fields
from tests.oss_emulator import EmulatorServer
from tests.support import (REPO, free_port, jpeg_bytes, png_bytes, start_app_server,
                           stop_app_server)

AK, SECRET, BUCKET, REGION = "e2e-ak", "e2e-secret", "examplebucket", "cn-hangzhou"
JSON_BODY = ('{"object":${object},"size":${size},"mimeType":${mimeType},'
             '"height":${imageInfo.height},"width":${imageInfo.width},"uid":${x:uid},'
             '"bucket":${bucket}}')
FORM_BODY = appserver.default_callback_body(appserver.FORM_URLENCODED, BUCKET) + "&uid=${x:uid}"


def start_stack(test, emulator_options=None, app=None, **config):
    """Emulator + app server, both stopped at the end of the test; returns (emu, base_url).

    ``app(config, emu)``, if given, builds the app server's App. The callback body defaults
    to what config_from_env makes of it with a known bucket.
    """
    root = tempfile.TemporaryDirectory()
    test.addCleanup(root.cleanup)
    options = {"access_key_id": AK, "access_key_secret": SECRET, "bucket": BUCKET,
               "region": REGION, **(emulator_options or {})}
    emu = EmulatorServer(root.name, **options).start()
    test.addCleanup(emu.stop)
    values = {"access_key_id": AK, "access_key_secret": SECRET, "host": emu.url,
              "bucket": BUCKET, "region": REGION,
              "pub_key_url_prefixes": (emu.pub_key_url_prefix,), **config}
    values.setdefault("callback_body", appserver.default_callback_body(
        values.get("callback_body_type", appserver.FORM_URLENCODED), BUCKET))
    server, base_url = start_app_server(appserver.Config(**values))
    test.addCleanup(stop_app_server, server)
    # The callback goes to the app server itself, whose port is known only once it is bound.
    final = dataclasses.replace(server.app.config, callback_url=base_url)
    if final.callback_binding:  # a configuration the server would start with
        appserver.check_callback_binding(dataclasses.asdict(final))
    server.app = app(final, emu) if app else appserver.App(final)
    return emu, base_url


class E2ETestCase(unittest.TestCase):
    def upload(self, base_url, name, data, content_type, key=None, extra=(), **options):
        token = self.last_token = get_json(base_url + "/")
        key = token["dir"] + (key or "${filename}")
        return post_form(token["host"], token_fields(token, key) + list(extra), name, data,
                         file_content_type=content_type, **options)

    def assert_oss_error(self, reply, status, code, message=None):
        self.assertEqual(reply.status, status, reply.body)
        self.assertEqual(re.search(rb"<Code>(.*?)</Code>", reply.body).group(1).decode(), code)
        if message is not None:
            self.assertIn(f"<Message>{message}</Message>".encode(), reply.body)

    def assert_nothing_stored(self, emu, key):
        # Every test here makes exactly one PostObject, answered or aborted.
        self.assertTrue(emu.wait_idle(timeout=10, posts=1))
        self.assertFalse(emu.object_path(key).exists())
        self.assertEqual(emu.staging_files(), [])


class UploadFlowTests(E2ETestCase):
    """V1, V4 and V4+STS, each with both callback body types, a PNG, a JPEG and an x: var."""

    def test_v1_v4_and_sts_with_form_and_json_callbacks_store_png_and_jpeg_and_relay_the_answer(self):
        images = [("pic.png", png_bytes(7, 5), "image/png", 7, 5),
                  ("photo.jpg", jpeg_bytes(640, 480), "image/jpeg", 640, 480)]
        for version, token in (("v1", None), ("v4", None), ("v4", "sts-token")):
            for body_type, body in ((appserver.FORM_URLENCODED, FORM_BODY),
                                    ("application/json", JSON_BODY)):
                with self.subTest(version=version, sts=bool(token), body_type=body_type):
                    emu, base_url = start_stack(
                        self, {"security_token": token}, signature_version=version,
                        security_token=token, callback_body=body, callback_body_type=body_type)
                    for name, data, content_type, width, height in images:
                        self.check_upload(emu, base_url, name, data, content_type, width, height,
                                          json_type=body_type == "application/json")

    def check_upload(self, emu, base_url, name, data, content_type, width, height, json_type):
        reply = self.upload(base_url, name, data, content_type, extra=[("x:uid", "user 42")])
        self.assertEqual(reply.status, 200, reply.body)
        callback = json.loads(base64.b64decode(self.last_token["callback"]))
        self.assertRegex(callback["callbackUrl"], r"^%s\?grant=v1\.[\w-]+\.[\w-]{43}$"
                         % re.escape(base_url))
        key = "user-dir-prefix/" + name
        if json_type:
            upload = {"object": key, "size": len(data), "mimeType": content_type,
                      "height": height, "width": width, "uid": "user 42", "bucket": BUCKET}
        else:   # form-urlencoded fields arrive as strings, named by the default template
            upload = {"filename": key, "size": str(len(data)), "mimeType": content_type,
                      "height": str(height), "width": str(width), "bucket": BUCKET,
                      "uid": "user 42"}
        # Verified against its grant; no user, since tokens need no sign-in here.
        self.assertEqual(reply.json(), {"Status": "OK", "user": None, "upload": upload})
        self.assertEqual(emu.object_path(key).read_bytes(), data)
        self.assertEqual(reply.headers["ETag"], '"%s"' % hashlib.md5(data).hexdigest().upper())


class TokenFieldsTests(E2ETestCase):
    """A client that knows no signature version: url, then fields, key and file."""

    def test_url_and_fields_alone_upload_in_v1_v4_and_sts(self):
        for version, token in (("v1", None), ("v4", None), ("v4", "sts-token"),
                               ("v1", "sts-token")):
            with self.subTest(version=version, sts=bool(token)):
                emu, base_url = start_stack(self, {"security_token": token},
                                            signature_version=version, security_token=token)
                answer = get_json(base_url + "/")
                self.assertEqual((answer["url"], answer["method"]), (emu.url, "POST"))
                fields = list(answer["fields"].items())
                self.assertNotIn("key", answer["fields"])
                self.assertEqual(answer["fields"]["success_action_status"], "200")
                self.assertEqual(answer["fields"].get("x-oss-security-token"), token)
                data = png_bytes(4, 3)
                reply = post_form(answer["url"], fields + [("key", answer["dir"] + "f.png")],
                                  "f.png", data, file_content_type="image/png")
                self.assertEqual(reply.status, 200, reply.body)
                self.assertEqual(reply.json()["upload"]["filename"], answer["dir"] + "f.png")
                self.assertEqual(emu.object_path(answer["dir"] + "f.png").read_bytes(), data)

    def test_the_sample_members_are_unchanged_beside_the_fields(self):
        emu, base_url = start_stack(self, signature_version="v4")
        answer = get_json(base_url + "/")
        for name in ("policy", "x-oss-signature", "x-oss-credential", "x-oss-date",
                     "x-oss-signature-version", "callback"):
            self.assertEqual(answer["fields"][name], answer[name])


class RefusedUploadTests(E2ETestCase):
    """Each refusal carries OSS's exact code and status, and nothing is stored."""

    KEY = "user-dir-prefix/x.png"

    def setUp(self):
        self.data = png_bytes(2, 2)

    def test_a_policy_tampered_with_after_signing_is_refused(self):
        emu, base_url = start_stack(self)
        token = get_json(base_url + "/")
        policy = json.loads(base64.b64decode(token["policy"]))
        policy["conditions"][0] = ["starts-with", "$key", ""]
        token["policy"] = base64.b64encode(json.dumps(policy).encode()).decode()
        reply = post_form(emu.url, token_fields(token, "anywhere.png"), "x.png", self.data)
        self.assert_oss_error(reply, 403, "SignatureDoesNotMatch")
        self.assert_nothing_stored(emu, "anywhere.png")

    def test_a_token_signed_with_the_wrong_secret_is_refused(self):
        for version in ("v1", "v4"):
            with self.subTest(version):
                emu, base_url = start_stack(self, access_key_secret="not-the-secret",
                                            signature_version=version)
                reply = self.upload(base_url, "x.png", self.data, "image/png")
                self.assert_oss_error(reply, 403, "SignatureDoesNotMatch")
                self.assert_nothing_stored(emu, self.KEY)

    def test_an_expired_policy_is_refused(self):
        later = time.time() + 3600
        emu, base_url = start_stack(self, {"clock": lambda: later})
        reply = self.upload(base_url, "x.png", self.data, "image/png")
        self.assert_oss_error(reply, 403, "AccessDenied",
                              "Invalid according to Policy: Policy expired.")
        self.assert_nothing_stored(emu, self.KEY)

    def test_a_key_outside_the_upload_folder_is_refused(self):
        emu, base_url = start_stack(self)
        token = get_json(base_url + "/")
        reply = post_form(emu.url, token_fields(token, "elsewhere/x.png"), "x.png", self.data)
        self.assert_oss_error(reply, 403, "AccessDenied", "Invalid according to Policy: Policy "
                              'Condition failed: ["starts-with", "$key", "user-dir-prefix/"]')
        self.assert_nothing_stored(emu, "elsewhere/x.png")

    def test_one_byte_over_the_size_limit_is_refused_and_the_limit_itself_passes(self):
        emu, base_url = start_stack(self, max_upload_bytes=1000)
        reply = self.upload(base_url, "big.bin", b"b" * 1001, "application/octet-stream")
        self.assert_oss_error(reply, 400, "EntityTooLarge",
                              "Your proposed upload exceeds the maximum allowed size.")
        self.assert_nothing_stored(emu, "user-dir-prefix/big.bin")
        reply = self.upload(base_url, "big.bin", b"b" * 1000, "application/octet-stream")
        self.assertEqual(reply.status, 200, reply.body)

    def test_a_swapped_callback_is_refused_by_the_pinned_condition(self):
        emu, base_url = start_stack(self)
        token = get_json(base_url + "/")
        pinned = token["callback"]
        token["callback"] = base64.b64encode(json.dumps({
            "callbackUrl": "http://127.0.0.1:9/steal", "callbackBody": "o=${object}"}).encode()
        ).decode()
        reply = post_form(emu.url, token_fields(token, self.KEY), "x.png", self.data)
        self.assert_oss_error(reply, 403, "AccessDenied", "Invalid according to Policy: Policy "
                              f'Condition failed: ["eq", "$callback", "{pinned}"]')
        self.assert_nothing_stored(emu, self.KEY)

    def test_a_form_without_a_file_is_refused(self):
        emu, base_url = start_stack(self)
        token = get_json(base_url + "/")
        reply = post_form(emu.url, token_fields(token, self.KEY))
        self.assert_oss_error(reply, 400, "IncorrectNumberOfFilesInPOSTRequest",
                              "POST requires exactly one file upload per request.")
        self.assert_nothing_stored(emu, self.KEY)

    def test_an_upload_aborted_midway_stores_nothing_and_calls_back_nobody(self):
        calls = []
        emu, base_url = start_stack(self, {"throttle": 500_000}, app=lambda config, emu: appserver.App(
            config, callback_hook=lambda upload: calls.append(upload) or {"Status": "OK"}))
        reply = self.upload(base_url, "x.bin", os.urandom(400_000), "application/octet-stream",
                            abort_after=200_000)
        self.assertIsNone(reply)
        self.assert_nothing_stored(emu, "user-dir-prefix/x.bin")
        self.assertEqual(emu.post_count, 1)
        self.assertEqual(calls, [])


class CallbackFailureTests(E2ETestCase):
    def test_callback_signed_with_a_key_the_app_server_does_not_trust(self):
        # The app server checks the emulator's signature against OSS's real key: it must
        # refuse, and the uploader then gets 203 CallbackFailed with the object stored.
        def app(config, emu):
            wrong = appserver.PublicKeyCache(embedded={emu.pub_key_url:
                                                       appserver.OSS_CALLBACK_PUBLIC_KEY})
            return appserver.App(config, key_cache=wrong)

        emu, base_url = start_stack(self, app=app)
        data = png_bytes(3, 3)
        with self.assertLogs("appserver", "WARNING") as logs:
            reply = self.upload(base_url, "kept.png", data, "image/png")
        self.assertIn("signature mismatch", "\n".join(logs.output))
        self.assert_oss_error(reply, 203, "CallbackFailed", "Error status : 400.")
        self.assertEqual(emu.object_path("user-dir-prefix/kept.png").read_bytes(), data)

    def test_a_key_url_outside_the_allowed_prefixes_gives_203_and_keeps_the_object(self):
        emu, base_url = start_stack(self, pub_key_url_prefixes=appserver.DEFAULT_PUB_KEY_URL_PREFIXES)
        with self.assertLogs("appserver", "WARNING") as logs:
            reply = self.upload(base_url, "kept.png", png_bytes(1, 1), "image/png")
        self.assertIn("not an allowed OSS public key URL", "\n".join(logs.output))
        self.assert_oss_error(reply, 203, "CallbackFailed", "Error status : 400.")
        self.assertTrue(emu.object_path("user-dir-prefix/kept.png").exists())


class LargeUploadTests(E2ETestCase):
    SIZE = 50 * 1024 * 1024

    def test_50_mb_upload_keeps_the_emulator_memory_flat(self):
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "big.bin")
            digest = hashlib.sha256()
            with open(source, "wb") as f:
                block = os.urandom(1024 * 1024)
                for index in range(self.SIZE // len(block)):
                    chunk = bytes([index % 256]) + block[1:]
                    digest.update(chunk)
                    f.write(chunk)
            log_path = os.path.join(tmp, "emulator.log")
            root = os.path.join(tmp, "root")
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "tests.oss_emulator", "--port", "0", "--root", root,
                     "--bucket", BUCKET, "--access-key-id", AK, "--access-key-secret", SECRET,
                     "--region", REGION], cwd=REPO, stdout=log, stderr=log)
            try:
                emulator_url = self.wait_for_url(log_path, process)
                config = appserver.Config(
                    access_key_id=AK, access_key_secret=SECRET, host=emulator_url,
                    bucket=BUCKET, region=REGION, max_upload_bytes=self.SIZE,
                    pub_key_url_prefixes=(emulator_url + "/__oss_emulator__/",))
                server, base_url = start_app_server(config)
                try:
                    server.app = appserver.App(dataclasses.replace(config, callback_url=base_url))
                    reply = self.upload(base_url, "big.bin", source, "application/octet-stream",
                                        timeout=120)
                finally:
                    stop_app_server(server)
                self.assertEqual(reply.status, 200, reply.body)
                self.assertEqual(reply.json()["upload"]["size"], str(self.SIZE))
                peak_kb = self.peak_rss_kb(process.pid)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(10)
            stored = hashlib.sha256()
            objects = os.path.join(root, "objects")
            (name,) = [n for n in os.listdir(objects) if not n.endswith(".json")]
            with open(os.path.join(objects, name), "rb") as f:
                for block in iter(lambda: f.read(1024 * 1024), b""):
                    stored.update(block)
            self.assertEqual(stored.hexdigest(), digest.hexdigest())
            self.assertLess(peak_kb, 100 * 1024, f"emulator peak RSS {peak_kb} kB")

    @staticmethod
    def wait_for_url(log_path, process):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", f.read())
            if match:
                return match.group(1)
            if process.poll() is not None:
                raise AssertionError("the emulator exited: " + open(log_path).read())
            time.sleep(0.05)
        raise AssertionError("the emulator did not start")

    @staticmethod
    def peak_rss_kb(pid):
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1))


class DemoTests(E2ETestCase):
    """`make demo` as a newcomer runs it: both servers come up, an upload works, SIGTERM
    (what Ctrl-C becomes) stops both children."""

    def test_demo_upload_and_clean_stop(self):
        for version in ("v1", "v4"):
            with self.subTest(version):
                self.run_demo(version)

    def run_demo(self, version):
        app_port, emulator_port = free_port(), free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.demo", "--signature-version", version,
             "--port", str(app_port), "--emulator-port", str(emulator_port)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines = []
        ready = threading.Event()

        def read():
            for line in process.stdout:
                lines.append(line.decode("utf-8", "replace"))
                if "/index.html" in lines[-1] and "ready" in lines[-1]:
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            self.assertTrue(ready.wait(20), "".join(lines))
            self.assertIn(f"Open http://127.0.0.1:{app_port}/index.html", "".join(lines))
            base_url = f"http://127.0.0.1:{app_port}"
            data = jpeg_bytes(32, 16)
            reply = self.upload(base_url, "demo.jpg", data, "image/jpeg")
            self.assertEqual(reply.status, 200, reply.body)
            self.assertEqual(reply.json()["upload"]["width"], "32")
            # The demo runs with callback binding on, as a deployment does by default.
            self.assertIsNone(reply.json()["user"])
            callback = json.loads(base64.b64decode(self.last_token["callback"]))
            self.assertIn("?grant=v1.", callback["callbackUrl"])
            children = child_pids(process.pid)
            self.assertEqual(len(children), 2, children)
        finally:
            process.send_signal(signal.SIGTERM)
            self.assertEqual(process.wait(20), 0, "".join(lines))
            reader.join(5)
            process.stdout.close()
        output = "".join(lines)
        self.assertIn("[oss] ", output)
        self.assertIn("[app] ", output)
        for pid in children:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"child {pid} still running")


def child_pids(pid):
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


if __name__ == "__main__":
    unittest.main()
