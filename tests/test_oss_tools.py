"""The server's own requests to OSS, end to end against the OSS emulator (which checks every
signature itself, from the OSS documentation): upload confirmation by HEAD, --check with each
seeded fault, --print-cors / --apply-cors, and presigned download links that OSS honours.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import appserver
from tests.oss_emulator import CorsRule, EmulatorServer
from tests.support import REPO, mint_ticket, png_bytes
from tests.test_callback_binding import (BUCKET, CALLBACK_SECRET, SECRET, BindingTestCase, Stack,
                                         grant_of, literal_body)

ORIGIN = "https://app.example.com"
PUBLIC_CALLBACK = "https://app.example.com/oss-callback"


# -- upload confirmation ------------------------------------------------------------------

class Confirmation(BindingTestCase):
    def stack(self, **emulator_options):
        return Stack(self, emulator_options, OSS_CALLBACK_SECRET=CALLBACK_SECRET,
                     OSS_CONFIRM_UPLOADS="1")

    def test_a_genuine_upload_is_confirmed_and_answered(self):
        stack = self.stack()
        data = png_bytes(6, 4)
        reply = stack.upload(stack.token("alice"), data=data)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.json()["upload"]["size"], str(len(data)))

    def test_a_bound_callback_for_an_object_that_is_not_in_our_bucket_is_refused(self):
        stack = self.stack()
        url, _ = grant_of(stack.token("alice"))
        # Correctly signed by OSS (the attacker's bucket) and bound (alice's own grant), naming
        # a key in alice's folder that does not exist in our bucket.
        reply = stack.attack(url, literal_body(filename="uploads/alice/never-uploaded.png"))
        self.assert_refused_by_the_app(stack, reply, "not in our bucket")

    def test_a_size_that_differs_from_the_object_is_refused(self):
        stack = self.stack()
        stack.ours.put_object("uploads/alice/real.png", b"x" * 10, "image/png")
        url, _ = grant_of(stack.token("alice"))
        reply = stack.attack(url, literal_body(filename="uploads/alice/real.png", size="1"))
        self.assert_refused_by_the_app(stack, reply, "callback says 1 bytes, OSS has 10")
        control = stack.attack(url, literal_body(filename="uploads/alice/real.png", size="10"))
        self.assertEqual(control.status, 200, control.body)

    def test_a_stalled_head_answers_503_within_the_budget_and_the_browser_sees_203(self):
        stack = self.stack(head_stall=8.0)
        token = stack.token("alice")
        started = time.monotonic()
        reply = stack.upload(token)
        self.assertLess(time.monotonic() - started, appserver.CALLBACK_BUDGET + 1.5)
        self.assertEqual(reply.status, 203, reply.body)
        self.assertIn(b"Error status : 503.", reply.body)
        self.assertTrue(stack.ours.object_path("uploads/alice/pic.png").exists())  # it stays

    def test_a_forbidden_head_answers_503_and_is_logged_once_loudly(self):
        stack = self.stack(denied_actions={"oss:GetObject"})
        for name in ("a.png", "b.png"):
            reply = stack.upload(stack.token("alice"), name=name)
            self.assertEqual(reply.status, 203, reply.body)
            self.assertIn(b"Error status : 503.", reply.body)
        loud = [m for m in stack.logs.messages() if m.startswith("OSS REFUSED THE HEAD")]
        self.assertEqual(len(loud), 1, stack.logs.messages())
        self.assertIn("oss:GetObject on acs:oss:*:*:examplebucket/uploads/", loud[0])

    def test_v4_and_sts_heads_are_accepted_too(self):
        for version, token in (("v4", None), ("v4", "sts-token-of-the-bucket"),
                               ("v1", "sts-token-of-the-bucket")):
            with self.subTest(version=version, sts=bool(token)):
                stack = Stack(self, {"security_token": token}, OSS_CONFIRM_UPLOADS="1",
                              OSS_SIGNATURE_VERSION=version, OSS_SESSION_TOKEN=token or "")
                reply = stack.upload(stack.token("alice"))
                self.assertEqual(reply.status, 200, reply.body)


# -- --check, --print-cors, --apply-cors ---------------------------------------------------

AK, CHECK_SECRET, REGION = "check-ak", "check-secret-that-must-never-be-printed", "cn-hangzhou"
# Every other secret a deployment may set; none may appear in any output either.
SECRETS = {"OSS_CALLBACK_SECRET": "grant-secret-that-must-never-be-printed-0123",
           "OSS_TOKEN_AUTH": "hmac",
           "OSS_TOKEN_AUTH_SECRET": "ticket-secret-that-must-never-be-printed-456",
           "OSS_FORWARD_SECRET": "forward-secret-that-must-never-be-printed-789",
           "OSS_CALLBACK_FORWARD_URL": "http://127.0.0.1:9/uploads"}


class Tools(unittest.TestCase):
    def emulator(self, **options):
        root = tempfile.TemporaryDirectory()
        self.addCleanup(root.cleanup)
        options = dict({"bucket": BUCKET, "access_key_id": AK, "access_key_secret": CHECK_SECRET,
                        "region": REGION, "cors_origins": (ORIGIN,)}, **options)
        emu = EmulatorServer(root.name, **options).start()
        self.addCleanup(emu.stop)
        return emu

    def run_tool(self, emu, *args, **environ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
        env.update(OSS_ACCESS_KEY_ID=AK, OSS_ACCESS_KEY_SECRET=CHECK_SECRET, OSS_HOST=emu.url,
                   OSS_BUCKET=BUCKET, OSS_REGION=REGION, OSS_CALLBACK_URL=PUBLIC_CALLBACK,
                   **SECRETS)
        env.update(environ)
        done = subprocess.run([sys.executable, str(REPO / "appserver.py"), *args], env=env,
                              capture_output=True, text=True, timeout=60)
        for secret in (CHECK_SECRET,) + tuple(SECRETS.values()):
            self.assertNotIn(secret, done.stdout + done.stderr)
        self.assertNotIn("Traceback", done.stderr)
        return done

    def check(self, emu, *origins, **environ):
        args = ["--check"] + [a for o in origins for a in ("--origin", o)]
        done = self.run_tool(emu, *args, **environ)
        lines = done.stdout.splitlines()
        for line in lines:
            self.assertRegex(line, r"^(OK|WARN|FAIL) ")
        return done.returncode, lines

    def assert_line(self, lines, level, what, words=""):
        found = [line for line in lines if line.startswith(level) and
                 line.split(None, 1)[1].startswith(what) and words in line]
        self.assertTrue(found, "no %s %s line with %r in:\n%s" % (level, what, words,
                                                                 "\n".join(lines)))
        return found[0]

    def test_a_good_setup_is_all_ok(self):
        for version in ("v1", "v4"):
            with self.subTest(version=version):
                status, lines = self.check(self.emulator(), ORIGIN,
                                           OSS_SIGNATURE_VERSION=version)
                self.assertEqual(status, 0, "\n".join(lines))
                self.assertEqual([line.split()[0] for line in lines], ["OK"] * len(lines),
                                 "\n".join(lines))
                for what in ("config", "credentials", "reachable", "clock", "bucket", "cors",
                             "confirmation", "callback URL"):
                    self.assert_line(lines, "OK", what)

    def test_each_seeded_fault_is_a_fail_line_and_exit_1(self):
        cases = {
            "missing CORS rule": ({"cors_origins": ()}, {}, "cors",
                                  "--apply-cors " + ORIGIN),
            "wrong secret": ({}, {"OSS_ACCESS_KEY_SECRET": "another-secret"}, "credentials",
                             "SignatureDoesNotMatch"),
            "wrong region": ({"region": "cn-beijing"}, {}, "bucket", "oss-cn-beijing"),
            "clock 20 minutes off": ({"clock_skew": 1200}, {}, "clock", "15 minutes"),
            "loopback callback URL": ({}, {"OSS_CALLBACK_URL": "http://127.0.0.1:8080/"},
                                      "callback URL", "203 CallbackFailed"),
            "private callback URL": ({}, {"OSS_CALLBACK_URL": "http://10.1.2.3/cb"},
                                     "callback URL", "loopback or private"),
            "HEAD forbidden": ({"denied_actions": {"oss:GetObject"}}, {}, "confirmation",
                               "oss:GetObject"),
            "server behind OSS by the policy lifetime": ({"clock_skew": 40}, {}, "clock",
                                                         "expires before it arrives"),
        }
        for name, (emulator_options, environ, what, words) in cases.items():
            with self.subTest(name):
                status, lines = self.check(self.emulator(**emulator_options), ORIGIN, **environ)
                self.assertEqual(status, 1, "\n".join(lines))
                line = self.assert_line(lines, "FAIL", what, words)
                self.assertIn("; fix: ", line)

    def test_warnings_alone_exit_0(self):
        cases = {
            # OSS's Date has whole seconds: 9 s off measures as 8 to 10.
            "a clock a few seconds off": ({"clock_skew": 9}, (ORIGIN,),
                                          [("clock", "s behind OSS")]),
            "no --origin": ({}, (), [("cors", "--origin")]),
            "denied bucket-level reads": (
                {"denied_actions": {"oss:GetBucketInfo", "oss:GetBucketCors"}}, (ORIGIN,),
                [("bucket", "oss:GetBucketInfo on acs:oss:*:*:" + BUCKET),
                 ("cors", "oss:GetBucketCors on acs:oss:*:*:" + BUCKET)]),
            "plain http callback URL": ({}, (ORIGIN,), [("callback URL", "https")]),
        }
        for name, (emulator_options, origins, expected) in cases.items():
            environ = {"OSS_CALLBACK_URL": "http://app.example.com/cb"} \
                if name == "plain http callback URL" else {}
            with self.subTest(name):
                status, lines = self.check(self.emulator(**emulator_options), *origins,
                                           **environ)
                self.assertEqual(status, 0, "\n".join(lines))
                for what, words in expected:
                    self.assert_line(lines, "WARN", what, words)

    def test_a_bad_environment_is_a_fail_line_not_a_traceback(self):
        status, lines = self.check(self.emulator(), ORIGIN, OSS_EXPIRE_SECONDS="forever")
        self.assertEqual(status, 1)
        self.assert_line(lines, "FAIL", "config", "OSS_EXPIRE_SECONDS")

    def test_apply_cors_keeps_two_unrelated_rules_adds_ours_first_and_check_passes(self):
        unrelated = [CorsRule(("https://other.example",), ("GET",), ("*",), ("ETag",), 100),
                     CorsRule(("https://*.cdn.example",), ("GET", "HEAD"), (), (), None)]
        emu = self.emulator(cors_rules=unrelated, cors_response_vary=True)
        status, lines = self.check(emu, ORIGIN)
        self.assertEqual(status, 1)
        printed = self.run_tool(emu, "--print-cors", ORIGIN)
        self.assertEqual(printed.returncode, 0, printed.stderr)
        self.assertEqual(emu.cors_rules, unrelated)            # printing changes nothing
        applied = self.run_tool(emu, "--apply-cors", ORIGIN)
        self.assertEqual(applied.returncode, 0, applied.stdout + applied.stderr)
        self.assertIn("before:", applied.stdout)
        self.assertIn("after:", applied.stdout)
        rules = emu.cors_rules
        self.assertEqual(rules[1:], unrelated)
        self.assertEqual(rules[0].allowed_origins, (ORIGIN,))
        self.assertIn("POST", rules[0].allowed_methods)
        self.assertEqual({h.lower() for h in rules[0].expose_headers},
                         {"etag", "x-oss-request-id"})
        self.assertTrue(emu.get_cors_response_vary())
        self.assertEqual(ET.fromstring(printed.stdout.encode()).findtext(
            "CORSRule/AllowedOrigin"), ORIGIN)
        status, lines = self.check(emu, ORIGIN)
        self.assertEqual(status, 0, "\n".join(lines))

    def test_apply_cors_extends_the_first_matching_rule_instead_of_adding_one(self):
        rules = [CorsRule(("https://*.example.com",), ("GET", "POST"), ("*",), ("ETag",), 60),
                 CorsRule((ORIGIN,), ("POST",), ("*",), ("x-oss-request-id",), 60)]
        emu = self.emulator(cors_rules=rules)
        applied = self.run_tool(emu, "--apply-cors", ORIGIN)
        self.assertEqual(applied.returncode, 0, applied.stdout + applied.stderr)
        after = emu.cors_rules
        self.assertEqual(len(after), 2)
        self.assertEqual(set(after[0].expose_headers), {"ETag", "x-oss-request-id"})
        self.assertEqual(after[1], rules[1])

    def test_apply_cors_at_the_rule_limit_reports_osss_own_error(self):
        # PutBucketCors allows 20 rules per bucket (older editions of the page said 10).
        rules = [CorsRule(("https://site%d.example" % i,), ("GET",)) for i in range(20)]
        emu = self.emulator(cors_rules=rules)
        applied = self.run_tool(emu, "--apply-cors", ORIGIN)
        self.assertEqual(applied.returncode, 1)
        self.assertRegex(applied.stdout, r"PutBucketCors: HTTP 400 \w+")
        self.assertEqual(emu.cors_rules, rules)


# -- presigned download links ---------------------------------------------------------------

TICKET_SECRET = "ticket-secret-of-the-main-application-0123456789"


class DownloadLinks(unittest.TestCase):
    def test_a_link_reads_the_object_from_a_private_bucket_and_only_as_signed(self):
        for version, sts in (("v1", None), ("v4", None), ("v4", "sts-of-the-bucket"),
                             ("v1", "sts-of-the-bucket")):
            with self.subTest(version=version, sts=bool(sts)):
                stack = Stack(self, {"acl": "private", "security_token": sts},
                              OSS_SIGNATURE_VERSION=version, OSS_SESSION_TOKEN=sts or "",
                              OSS_DOWNLOAD_EXPIRE_SECONDS="60")
                data = png_bytes(9, 9)
                reply = stack.upload(stack.token("alice"), name="a b+ü.png", data=data)
                self.assertEqual(reply.status, 200, reply.body)
                request = urllib.request.Request(
                    stack.base_url + "/download-url?key=" + urllib.parse.quote(
                        "uploads/alice/a b+ü.png", safe=""),
                    headers={"Authorization": "Bearer " + mint_ticket(
                        TICKET_SECRET, "alice", int(time.time()) + 60)})
                with urllib.request.urlopen(request, timeout=10) as response:
                    link = json.loads(response.read())
                with urllib.request.urlopen(link["url"], timeout=10) as response:
                    self.assertEqual(response.read(), data)
                unsigned = link["url"].split("?")[0]
                with self.assertRaises(urllib.error.HTTPError) as caught:
                    urllib.request.urlopen(unsigned, timeout=10)
                self.assertEqual(caught.exception.code, 403)
                tampered = re.sub(r"(Signature|x-oss-signature)=..", r"\1=AA", link["url"])
                with self.assertRaises(urllib.error.HTTPError) as caught:
                    urllib.request.urlopen(tampered, timeout=10)
                self.assertEqual(caught.exception.code, 403)
                self.assertIn(b"SignatureDoesNotMatch", caught.exception.read())


if __name__ == "__main__":
    unittest.main()


class ToolOptions(unittest.TestCase):
    def test_origins_go_with_check_and_each_tool_names_one_origin(self):
        parse = appserver.parse_tool_options
        self.assertEqual(parse(["--check", "--origin", ORIGIN + "/", "8080"]),
                         (["8080"], ("check", [ORIGIN])))
        self.assertEqual(parse(["--apply-cors=" + ORIGIN]), ([], ("apply-cors", [ORIGIN])))
        self.assertEqual(parse(["127.0.0.1", "80"]), (["127.0.0.1", "80"], None))
        for argv in (["--origin", ORIGIN], ["--print-cors", ORIGIN, "--origin", ORIGIN],
                     ["--check", "--apply-cors", ORIGIN], ["--print-cors"],
                     ["--check", "--origin", "ftp://x"], ["--apply-cors", ORIGIN + "/path"]):
            with self.subTest(argv=argv), self.assertRaises(ValueError):
                parse(argv)
