"""Callback binding end to end: which callbacks are about our uploads.

Two OSS emulators run on loopback: ours (bucket "examplebucket") and an attacker's own bucket
("attackerbucket", other keys). Both sign their callbacks with the emulator's test key, as OSS
signs every bucket's callbacks with one OSS key, so the app trusts both key URLs, and only the
grant in the callback URL can tell a callback about our upload from one the attacker aims at
us. Each attack is an upload into the attacker's bucket whose callback points at the app; the
app refuses it with 400 (which the emulator reports as 203 CallbackFailed "Error status : 400.")
and logs why.

Expected values are computed here, never by appserver: tickets and grants are minted with
hmac, hashlib and base64 from the documented formats, and the attacker signs its policy itself.
Ticket: `<user>.<expiry>.<mac>`, mac = b64url(HMAC-SHA256(secret, "oss-upload-ticket.v1." +
"<user>.<expiry>")). Grant: "v1." + b64url(compact JSON {"u","d","m","t","e"}) + "." +
b64url(HMAC-SHA256(key, "oss-callback-grant.v1." + <the JSON part>)), unpadded; the key is
OSS_CALLBACK_SECRET's bytes, else HMAC-SHA256(AccessKey secret, "oss-appserver grant v1\\n" +
bucket) (README, "Callbacks": the bucket binds a derived key to one deployment).
"""

import base64
import datetime
import hashlib
import hmac
import json
import re
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

import appserver
from tests.multipart_client import post_form, token_fields
from tests.oss_emulator import EmulatorServer
from tests.support import capture_logs, png_bytes, start_app_server, stop_app_server

AK, SECRET, BUCKET, REGION = "binding-ak", "binding-secret-of-our-bucket", "examplebucket", \
    "cn-hangzhou"
EVIL_AK, EVIL_SECRET, EVIL_BUCKET = "evil-ak", "evil-secret-of-the-attacker", "attackerbucket"
TICKET_SECRET = "ticket-secret-of-the-main-application-0123456789"
CALLBACK_SECRET = "grant-secret-shared-by-replicas-and-workers-42"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
MAX_BYTES = 1024 * 1024


# -- minted here, from the documented formats ---------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_ticket(user, expiry=None):
    payload = "%s.%d" % (user, int(time.time()) + 600 if expiry is None else expiry)
    mac = hmac.new(TICKET_SECRET.encode(), ("oss-upload-ticket.v1." + payload).encode(),
                   hashlib.sha256).digest()
    return payload + "." + b64url(mac)


def grant_mac(key, payload):
    return b64url(hmac.new(key, ("oss-callback-grant.v1." + payload).encode("ascii"),
                           hashlib.sha256).digest())


def mint_grant(key, claims):
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    return "v1." + payload + "." + grant_mac(key, payload)


def derived_binding_key(access_key_secret, bucket):
    return hmac.new(access_key_secret.encode("utf-8"),
                    b"oss-appserver grant v1\n" + bucket.encode("utf-8"), hashlib.sha256).digest()


def grant_of(token):
    """(callback URL, the grant parameter's value) of a token."""
    url = json.loads(base64.b64decode(token["callback"]))["callbackUrl"]
    query = urllib.parse.urlsplit(url).query
    grants = [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k == "grant"]
    assert len(grants) == 1, url
    return url, grants[0]


def claims_of(grant):
    version, payload, mac = grant.split(".")
    assert version == "v1", grant
    return json.loads(b64url_decode(payload))


def iso8601(unix_seconds):
    moment = datetime.datetime.fromtimestamp(unix_seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class SettableClock:
    """The app's clock: the real time until a test sets it."""

    def __init__(self):
        self.fixed = None
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return time.time() if self.fixed is None else self.fixed

    def set(self, value):
        with self.lock:
            self.fixed = value


# -- the stack: our emulator, the attacker's emulator, the app server ---------------------

class Stack:
    def __init__(self, test, emulator_options=None, app_options=None, **environ):
        self.test = test
        roots = [tempfile.TemporaryDirectory() for _ in range(2)]
        for root in roots:
            test.addCleanup(root.cleanup)
        self.ours = EmulatorServer(roots[0].name, bucket=BUCKET, access_key_id=AK,
                                   access_key_secret=SECRET, region=REGION,
                                   **(emulator_options or {})).start()
        test.addCleanup(self.ours.stop)
        self.evil = EmulatorServer(roots[1].name, bucket=EVIL_BUCKET, access_key_id=EVIL_AK,
                                   access_key_secret=EVIL_SECRET, region=REGION).start()
        test.addCleanup(self.evil.stop)
        server, self.base_url = start_app_server(appserver.Config(
            access_key_id=AK, access_key_secret=SECRET, host=self.ours.url, bucket=BUCKET,
            region=REGION))
        test.addCleanup(stop_app_server, server)
        values = {
            "OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SECRET,
            "OSS_HOST": self.ours.url, "OSS_BUCKET": BUCKET, "OSS_REGION": REGION,
            "OSS_PUB_KEY_URL_PREFIXES": "%s,%s" % (self.ours.pub_key_url_prefix,
                                                   self.evil.pub_key_url_prefix),
            "OSS_TOKEN_AUTH": "hmac", "OSS_TOKEN_AUTH_SECRET": TICKET_SECRET,
            "OSS_UPLOAD_DIR": "uploads/{user}/", "OSS_MAX_UPLOAD_BYTES": str(MAX_BYTES),
            "OSS_EXPIRE_SECONDS": "300"}
        values.update(environ)
        # The callback goes to the app server itself, known once it is bound: the default
        # OSS_CALLBACK_URL is the server's own URL.
        self.config = appserver.config_from_env(values, server_url=self.base_url)
        self.clock = SettableClock()
        server.app = appserver.App(self.config, clock=self.clock, **(app_options or {}))
        self.logs = capture_logs(test)

    def token(self, user="alice"):
        request = urllib.request.Request(self.base_url + "/", headers={
            "Authorization": "Bearer " + mint_ticket(user)})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def upload(self, token, name="pic.png", data=None, content_type="image/png", key=None,
               extra=()):
        """A browser's upload into our bucket with ``token``."""
        data = png_bytes(7, 5) if data is None else data
        key = token["dir"] + "${filename}" if key is None else key
        return post_form(token["host"], token_fields(token, key) + list(extra), name, data,
                         file_content_type=content_type)

    def attack(self, callback_url, body, body_type=FORM, key="loot/x.png"):
        """An upload into the attacker's own bucket, signed with the attacker's keys, whose
        callback goes to ``callback_url`` with the template ``body``."""
        policy = base64.b64encode(json.dumps({
            "expiration": iso8601(time.time() + 600),
            "conditions": [["starts-with", "$key", "loot/"]]}).encode()).decode()
        signature = base64.b64encode(hmac.new(EVIL_SECRET.encode(), policy.encode(),
                                              hashlib.sha1).digest()).decode()
        callback = base64.b64encode(json.dumps({
            "callbackUrl": callback_url, "callbackBody": body,
            "callbackBodyType": body_type}).encode()).decode()
        fields = [("key", key), ("policy", policy), ("OSSAccessKeyId", EVIL_AK),
                  ("signature", signature), ("success_action_status", "200"),
                  ("callback", callback)]
        return post_form(self.evil.url, fields, "x.png", png_bytes(1, 1),
                         file_content_type="image/png")

    def rejections(self):
        return [m[len("callback rejected: "):] for m in self.logs.messages()
                if m.startswith("callback rejected: ")]


def literal_body(**fields):
    """A callback body the attacker writes as literal text (no ${} variables)."""
    values = {"filename": "uploads/alice/evil.png", "size": "1", "mimeType": "image/png",
              "height": "1", "width": "1", "bucket": BUCKET}
    values.update(fields)
    return "&".join("%s=%s" % (k, urllib.parse.quote(v, safe="/"))
                    for k, v in values.items() if v is not None)


class BindingTestCase(unittest.TestCase):
    def assert_refused_by_the_app(self, stack, reply, reason):
        """The app answered the callback 400 (relayed as 203 CallbackFailed) and logged
        ``reason`` (a regular expression) as the rejection."""
        self.assertEqual(reply.status, 203, reply.body)
        self.assertIn(b"<Code>CallbackFailed</Code>", reply.body)
        self.assertIn(b"Error status : 400.", reply.body)
        rejections = stack.rejections()
        self.assertTrue(any(re.search(reason, r) for r in rejections),
                        "no rejection matching %r in %r" % (reason, rejections))

    def assert_oss_error(self, reply, status, code, message=None):
        self.assertEqual(reply.status, status, reply.body)
        self.assertEqual(re.search(rb"<Code>(.*?)</Code>", reply.body).group(1).decode(), code)
        if message is not None:
            self.assertIn(("<Message>%s</Message>" % message).encode(), reply.body)


class Attacks(BindingTestCase):
    """(a)-(e) of the issue, each from the attacker's own bucket."""

    def setUp(self):
        # Binding alone: each control is an upload into the attacker's bucket, which upload
        # confirmation refuses too (tests/test_upload_confirmation.py).
        self.stack = Stack(self, OSS_CALLBACK_SECRET=CALLBACK_SECRET, OSS_CALLBACK_WINDOW="60",
                           OSS_CONFIRM_UPLOADS="0")
        self.alice_url, self.alice_grant = grant_of(self.stack.token("alice"))

    def test_a_literal_body_naming_our_bucket_and_folder_without_a_grant(self):
        stack = self.stack
        for name, url in {"no query": stack.base_url,
                          "a path of its own": stack.base_url + "/callback",
                          "another parameter": stack.base_url + "/?id=1",
                          "an empty grant": stack.base_url + "/?grant="}.items():
            with self.subTest(name):
                reply = stack.attack(url, literal_body())
                self.assert_refused_by_the_app(
                    stack, reply, "no grant from our tokens|grant is malformed")
        self.assertTrue(stack.evil.object_path("loot/x.png").exists())  # stored over there

    def test_b_a_copied_grant_with_a_body_naming_another_users_folder(self):
        reply = self.stack.attack(self.alice_url, literal_body(
            filename="uploads/bob/evil.png"))
        self.assert_refused_by_the_app(self.stack, reply,
                                       r"'uploads/bob/evil\.png' outside uploads/alice/")

    def test_b_a_copied_grant_with_other_forged_claims(self):
        cases = {
            "a folder beside alice's": (literal_body(filename="uploads/alice-x/evil.png"),
                                        "outside uploads/alice/"),
            "the folder root": (literal_body(filename="uploads/evil.png"),
                                "outside uploads/alice/"),
            "another bucket": (literal_body(bucket=EVIL_BUCKET), "names bucket"),
            "over the size limit": (literal_body(size=str(MAX_BYTES + 1)), "size"),
            "a size that is no number": (literal_body(size="1e3"), "size"),
            "the attacker's template rendered honestly": (
                appserver.DEFAULT_CALLBACK_BODY + "&bucket=${bucket}", "names bucket"),
        }
        for name, (body, reason) in cases.items():
            with self.subTest(name):
                reply = self.stack.attack(self.alice_url, body)
                self.assert_refused_by_the_app(self.stack, reply, reason)

    def test_c_fields_left_out_of_the_body(self):
        for field in ("bucket", "filename", "size", "mimeType"):
            with self.subTest(missing=field):
                reply = self.stack.attack(self.alice_url, literal_body(**{field: None}))
                variable = "object" if field == "filename" else field
                self.assert_refused_by_the_app(
                    self.stack, reply, r"lacks the \$\{%s\} field" % re.escape(variable))
        with self.subTest("only the bucket, as in the documentation's example"):
            reply = self.stack.attack(self.alice_url, "bucket=" + BUCKET)
            self.assert_refused_by_the_app(self.stack, reply, "lacks the")

    def test_d_a_grant_whose_signature_was_changed(self):
        version, payload, mac = self.alice_grant.split(".")
        claims = claims_of(self.alice_grant)
        bob_payload = b64url(json.dumps(dict(claims, u="bob", d="uploads/bob/"),
                                        separators=(",", ":")).encode())
        alice, bob = literal_body(), literal_body(filename="uploads/bob/evil.png")
        cases = {
            "one character of the mac": (".".join(
                (version, payload, ("B" if mac[0] == "A" else "A") + mac[1:])), alice),
            "alice's mac on claims for bob": (".".join((version, bob_payload, mac)), bob),
            "signed with another key": (mint_grant(b"x" * 32, dict(
                claims, u="bob", d="uploads/bob/")), bob),
            "signed with the attacker's AccessKey secret": (mint_grant(
                derived_binding_key(EVIL_SECRET, EVIL_BUCKET), claims), alice),
            "no mac": (version + "." + payload + ".", alice),
            "another version": ("v2." + payload + "." + mac, alice),
        }
        for name, (grant, body) in cases.items():
            with self.subTest(name):
                reply = self.stack.attack(self.stack.base_url + "/?grant=" + grant, body)
                self.assert_refused_by_the_app(self.stack, reply,
                                               "signature does not match|malformed")

    def test_d_two_grants_in_one_url(self):
        url = self.alice_url + "&grant=" + self.alice_grant
        reply = self.stack.attack(url, literal_body())
        self.assert_refused_by_the_app(self.stack, reply, "more than one grant")

    def test_e_a_stale_grant(self):
        now = int(time.time())
        claims = {"u": "alice", "d": "uploads/alice/", "m": MAX_BYTES, "t": [], "e": now}
        # The control: the same grant, fresh, passes, so only staleness refuses the next one.
        fresh = mint_grant(CALLBACK_SECRET.encode(), claims)
        reply = self.stack.attack(self.stack.base_url + "/?grant=" + fresh, literal_body())
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(json.loads(reply.body)["user"], "alice")
        stale = mint_grant(CALLBACK_SECRET.encode(), dict(claims, e=now - 60 - 30))
        reply = self.stack.attack(self.stack.base_url + "/?grant=" + stale, literal_body())
        self.assert_refused_by_the_app(self.stack, reply, "expired")


class StaleGenuineGrant(BindingTestCase):
    """A genuine upload whose callback arrives after expiry + OSS_CALLBACK_WINDOW."""

    def test_the_window_is_counted_from_the_tokens_expiry(self):
        for late, accepted in ((-1, True), (1, False)):
            with self.subTest(seconds_after_the_window=late):
                stack = Stack(self, OSS_CALLBACK_WINDOW="60", OSS_EXPIRE_SECONDS="30")
                token = stack.token("alice")
                self.assertEqual(claims_of(grant_of(token)[1])["e"], token["expire"])
                stack.clock.set(token["expire"] + 60 + late)
                reply = stack.upload(token)
                if accepted:
                    self.assertEqual(reply.status, 200, reply.body)
                else:
                    self.assert_refused_by_the_app(stack, reply, "grant has expired")
                    # OSS stored the object before the callback; only the callback failed.
                    self.assertTrue(stack.ours.object_path("uploads/alice/pic.png").exists())


class GenuineUploads(BindingTestCase):
    def test_v1_v4_and_sts_with_form_and_json_bodies_succeed_and_name_the_user(self):
        data = png_bytes(7, 5)
        for version, sts in (("v1", None), ("v4", None), ("v4", "sts-token-42")):
            for body_type in (FORM, JSON_TYPE):
                with self.subTest(version=version, sts=bool(sts), body_type=body_type):
                    environ = {"OSS_SIGNATURE_VERSION": version,
                               "OSS_CALLBACK_BODY_TYPE": body_type}
                    if sts:
                        environ["OSS_SESSION_TOKEN"] = sts
                    stack = Stack(self, {"security_token": sts}, **environ)
                    token = stack.token("alice")
                    self.assertEqual(token["dir"], "uploads/alice/")
                    reply = stack.upload(token, data=data)
                    self.assertEqual(reply.status, 200, reply.body)
                    key = "uploads/alice/pic.png"
                    if body_type == FORM:
                        fields = {"filename": key, "size": str(len(data)),
                                  "mimeType": "image/png", "height": "5", "width": "7",
                                  "bucket": BUCKET}
                    else:
                        fields = {"filename": key, "size": len(data), "mimeType": "image/png",
                                  "height": 5, "width": 7, "bucket": BUCKET}
                    self.assertEqual(reply.json(), {"Status": "OK", "user": "alice",
                                                    "upload": fields})
                    self.assertEqual(stack.ours.object_path(key).read_bytes(), data)
                    self.assertEqual(stack.rejections(), [])

    def test_the_grant_carries_the_tokens_claims(self):
        stack = Stack(self, OSS_CALLBACK_SECRET=CALLBACK_SECRET)
        token = stack.token("alice")
        url, grant = grant_of(token)
        self.assertEqual(url, stack.base_url + "?grant=" + grant)
        version, payload, mac = grant.split(".")
        self.assertEqual(version, "v1")
        self.assertNotIn("=", grant)
        raw = b64url_decode(payload)
        self.assertNotIn(b" ", raw)   # compact JSON
        self.assertEqual(json.loads(raw), {"u": "alice", "d": "uploads/alice/", "m": MAX_BYTES,
                                           "t": [], "e": token["expire"]})
        self.assertEqual(mac, grant_mac(CALLBACK_SECRET.encode(), payload))

    def test_without_a_callback_secret_the_key_derives_from_the_accesskey_secret(self):
        stack = Stack(self)
        _, grant = grant_of(stack.token("alice"))
        _, payload, mac = grant.split(".")
        self.assertEqual(mac, grant_mac(derived_binding_key(SECRET, BUCKET), payload),
                         "the grant's MAC is not HMAC-SHA256 under HMAC-SHA256(AccessKey "
                         "secret, 'oss-appserver grant v1\\n' + bucket)")

    def test_a_grant_of_another_deployment_sharing_the_accesskey_is_refused(self):
        # Staging and production with one AccessKey: staging's derived key is not ours. (The
        # control comes from the attacker's bucket: binding alone, without confirmation.)
        stack = Stack(self, OSS_CONFIRM_UPLOADS="0")
        claims = claims_of(grant_of(stack.token("alice"))[1])
        staging = mint_grant(derived_binding_key(SECRET, "stagingbucket"), claims)
        reply = stack.attack(stack.base_url + "/?grant=" + staging, literal_body())
        self.assert_refused_by_the_app(stack, reply, "signature does not match")
        ours = mint_grant(derived_binding_key(SECRET, BUCKET), claims)   # the control
        reply = stack.attack(stack.base_url + "/?grant=" + ours, literal_body())
        self.assertEqual(reply.status, 200, reply.body)

    def test_the_hook_gets_the_upload_with_its_user_and_a_template_user_stays_in_fields(self):
        uploads = []

        def hook(upload):
            uploads.append(upload)
            return {"Status": "OK", "stored": upload["object"]}

        body = appserver.DEFAULT_CALLBACK_BODY + "&bucket=${bucket}&user=${x:user}"
        stack = Stack(self, app_options={"callback_hook": hook}, OSS_CALLBACK_BODY=body)
        data = png_bytes(3, 2)
        reply = stack.upload(stack.token("alice"), data=data, extra=[("x:user", "mallory")])
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json(), {"Status": "OK", "stored": "uploads/alice/pic.png"})
        (upload,) = uploads
        self.assertEqual(upload, {
            "user": "alice", "bucket": BUCKET, "object": "uploads/alice/pic.png",
            "size": len(data),
            "fields": {"filename": "uploads/alice/pic.png", "size": str(len(data)),
                       "mimeType": "image/png", "height": "2", "width": "3", "bucket": BUCKET,
                       "user": "mallory"}})

    def test_binding_off_puts_no_grant_in_the_callback_url(self):
        stack = Stack(self, OSS_CALLBACK_BINDING="0")
        token = stack.token("alice")
        url = json.loads(base64.b64decode(token["callback"]))["callbackUrl"]
        self.assertEqual(url, stack.base_url)
        reply = stack.upload(token)
        self.assertEqual(reply.status, 200, reply.body)


class PerUserFolders(BindingTestCase):
    def test_the_policy_pins_the_users_folder_and_the_emulator_refuses_another(self):
        stack = Stack(self)
        token = stack.token("alice")
        policy = json.loads(base64.b64decode(token["policy"]))
        self.assertIn(["starts-with", "$key", "uploads/alice/"], policy["conditions"])
        for key in ("uploads/bob/x.png", "uploads/alice-evil/x.png", "uploads/x.png",
                    "uploads/alicex.png"):
            with self.subTest(key=key):
                reply = stack.upload(token, key=key)
                self.assert_oss_error(reply, 403, "AccessDenied",
                                      "Invalid according to Policy: Policy Condition failed: "
                                      '["starts-with", "$key", "uploads/alice/"]')
                self.assertFalse(stack.ours.object_path(key).exists())
        self.assertEqual(stack.rejections(), [])
        reply = stack.upload(stack.token("bob"), key="uploads/bob/x.png")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["user"], "bob")


class AllowedContentTypes(BindingTestCase):
    def setUp(self):
        self.stack = Stack(self, OSS_ALLOWED_CONTENT_TYPES="image/png")
        self.token = self.stack.token("alice")

    def test_the_token_and_grant_say_the_types_and_the_policy_pins_x_oss_content_type(self):
        self.assertEqual(self.token["contentTypes"], ["image/png"])
        policy = json.loads(base64.b64decode(self.token["policy"]))
        self.assertIn(["in", "$x-oss-content-type", ["image/png"]], policy["conditions"])
        self.assertEqual(claims_of(grant_of(self.token)[1])["t"], ["image/png"])

    def test_an_upload_whose_x_oss_content_type_is_allowed_succeeds(self):
        # The file part says octet-stream and the Content-Type field text/html: the
        # x-oss-content-type field outranks both (PostObject), and is what OSS stores.
        reply = self.stack.upload(self.token, content_type="application/octet-stream",
                                  extra=[("Content-Type", "text/html"),
                                         ("x-oss-content-type", "image/png")])
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["user"], "alice")
        self.assertEqual(reply.json()["upload"]["mimeType"], "image/png")
        with urllib.request.urlopen(self.stack.ours.url + "/uploads/alice/pic.png",
                                    timeout=10) as response:
            self.assertEqual(response.headers["Content-Type"], "image/png")

    def test_another_type_or_none_is_refused_by_the_emulators_policy_check(self):
        for name, extra in {"text/html": [("x-oss-content-type", "text/html")],
                            "no x-oss-content-type": [],
                            "only the Content-Type field": [("Content-Type", "image/png")]
                            }.items():
            with self.subTest(name):
                key = "uploads/alice/%s.png" % len(name)
                reply = self.stack.upload(self.token, key=key, extra=extra)
                self.assert_oss_error(reply, 403, "AccessDenied",
                                      "Invalid according to Policy: Policy Condition failed: "
                                      '["in", "$x-oss-content-type", ["image/png"]]')
                self.assertFalse(self.stack.ours.object_path(key).exists())

    def test_mime_type_is_a_required_callback_field_within_the_list(self):
        url, _ = grant_of(self.token)
        reply = self.stack.attack(url, literal_body(mimeType=None))
        self.assert_refused_by_the_app(self.stack, reply, r"lacks the \$\{mimeType\} field")
        reply = self.stack.attack(url, literal_body(mimeType="text/html"))
        self.assert_refused_by_the_app(self.stack, reply, "type 'text/html'")


class BindingSettings(unittest.TestCase):
    BASE = {"OSS_ACCESS_KEY_ID": AK, "OSS_ACCESS_KEY_SECRET": SECRET,
            "OSS_HOST": "https://examplebucket.oss-cn-hangzhou.aliyuncs.com"}

    def config(self, **environ):
        return appserver.config_from_env(dict(self.BASE, **environ),
                                         server_url="http://127.0.0.1:8080")

    def assert_config_error(self, variable, **environ):
        with self.assertRaises(appserver.ConfigError) as caught:
            self.config(**environ)
        self.assertEqual(caught.exception.variable, variable)

    def test_binding_needs_a_template_with_bucket_object_and_size(self):
        for body in ("filename=${object}&size=${size}", "bucket=${bucket}&size=${size}",
                     "bucket=${bucket}&filename=${object}"):
            with self.subTest(body=body):
                self.assert_config_error("OSS_CALLBACK_BODY", OSS_CALLBACK_BODY=body)
        self.config(OSS_CALLBACK_BODY="b=${bucket}&o=${object}&s=${size}")
        self.config(OSS_CALLBACK_BODY="filename=${object}", OSS_CALLBACK_BINDING="0")

    def test_allowed_types_need_mime_type_in_the_template(self):
        self.assert_config_error("OSS_CALLBACK_BODY", OSS_ALLOWED_CONTENT_TYPES="image/png",
                                 OSS_CALLBACK_BODY="b=${bucket}&o=${object}&s=${size}")

    def test_binding_needs_a_known_bucket(self):
        self.assert_config_error("OSS_BUCKET", OSS_HOST="http://127.0.0.1:9000")

    def test_a_callback_url_with_a_fragment_or_a_grant_is_refused(self):
        for url in ("http://app.example.com/cb#x", "http://app.example.com/cb?grant=1",
                    "http://a.example.com/cb;http://app.example.com/cb?x=1&grant="):
            with self.subTest(url=url):
                self.assert_config_error("OSS_CALLBACK_URL", OSS_CALLBACK_URL=url)

    def test_the_grant_is_placed_in_each_callback_url_keeping_the_query(self):
        cases = {"http://app.example.com/cb": "http://app.example.com/cb?grant=G",
                 "http://app.example.com/cb?": "http://app.example.com/cb?grant=G",
                 "http://app.example.com/cb?a=1&": "http://app.example.com/cb?a=1&grant=G",
                 "http://app.example.com/cb?a=%2F+b&c": "http://app.example.com/cb?a=%2F+b&c"
                                                        "&grant=G"}
        for url, expected in cases.items():
            with self.subTest(url=url):
                config = self.config(OSS_CALLBACK_URL=url + ";http://b.example.com/x")
                app = appserver.App(config)
                response = app.handle("GET", "/", {}, None, lambda n: b"", "127.0.0.1")
                token = json.loads(response.body)
                urls = json.loads(base64.b64decode(token["callback"]))["callbackUrl"]
                first, second = urls.split(";")
                grant = first.rpartition("grant=")[2]
                self.assertEqual(first, expected.replace("grant=G", "grant=" + grant))
                self.assertEqual(second, "http://b.example.com/x?grant=" + grant)
                self.assertEqual(claims_of(grant)["e"], token["expire"])


if __name__ == "__main__":
    unittest.main()
