"""Grants held to their deployment: what an independent review of callback binding and token
authorization found, each as the attack it blocks.

Grants are minted here with hmac/hashlib from the documented format, not with appserver.
"""

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import unittest

import appserver
from tests import rsa_testkit as kit
from tests.support import REPO, capture_logs, free_port, signed_headers

SECRET = "prod-secret-0123456789-0123456789"
KEY_URL = "http://127.0.0.1:9/keys/k.pem"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_grant(key, user, folder, max_bytes, types, expiry):
    payload = b64url(json.dumps({"u": user, "d": folder, "m": max_bytes, "t": types,
                                 "e": expiry}, separators=(",", ":")).encode())
    mac = hmac.new(key, ("oss-callback-grant.v1." + payload).encode(), hashlib.sha256).digest()
    return "v1.%s.%s" % (payload, b64url(mac))


def derived_key(secret, bucket):
    return hmac.new(secret.encode(), b"oss-appserver grant v1\n" + bucket.encode(),
                    hashlib.sha256).digest()


def config(**overrides):
    values = dict(OSS_ACCESS_KEY_ID="shared-ak", OSS_ACCESS_KEY_SECRET=SECRET,
                  OSS_HOST="https://prodbucket.oss-cn-hangzhou.aliyuncs.com",
                  OSS_UPLOAD_DIR="uploads/", OSS_CALLBACK_URL="https://app.example.com/cb",
                  OSS_PUB_KEY_URL_PREFIXES="http://127.0.0.1:9/keys/",
                  OSS_CONFIRM_UPLOADS="0")  # verification alone: no bucket to HEAD
    values.update(overrides)
    return appserver.config_from_env(values)


class FixedKeys:
    def __init__(self):
        self.key = kit.load_public_pair(kit.DATA / "rsa2048_pub.pem")

    def get(self, url):
        return appserver.PublicKey(*self.key)


class Callbacks(unittest.TestCase):
    priv = kit.load_test_key("rsa2048_key.pem")

    def setUp(self):
        self.logs = capture_logs(self)  # rejections are logged by design

    def post(self, app, grant, body):
        target = "/cb?grant=" + grant
        headers = {k.lower(): [v] for k, v in signed_headers(self.priv, target, body,
                                                             KEY_URL).items()}
        return app.handle("POST", target, headers, len(body), lambda n: body, "127.0.0.1")

    def test_a_grant_from_another_bucket_sharing_the_access_key_is_refused(self):
        prod = appserver.App(config(), key_cache=FixedKeys())
        staging_grant = mint_grant(derived_key(SECRET, "stagingbucket"), None, "uploads/",
                                   10485760, [], int(time.time()) + 30)
        body = b"filename=uploads%2Fa.png&size=10&mimeType=image%2Fpng&bucket=prodbucket"
        self.assertEqual(self.post(prod, staging_grant, body).status, 400)
        own_grant = mint_grant(derived_key(SECRET, "prodbucket"), None, "uploads/",
                               10485760, [], int(time.time()) + 30)
        self.assertEqual(self.post(prod, own_grant, body).status, 200)

    def test_every_name_field_must_lie_in_the_granted_folder(self):
        app = appserver.App(config(), key_cache=FixedKeys())
        grant = mint_grant(derived_key(SECRET, "prodbucket"), None, "uploads/alice/",
                           10485760, [], int(time.time()) + 30)
        body = (b"filename=uploads%2Falice%2Fx.png&size=1&mimeType=image%2Fpng"
                b"&bucket=prodbucket&object=uploads%2Fbob%2Fy.png")
        response = self.post(app, grant, body)
        self.assertEqual(response.status, 400)
        self.assertIn(b"outside the granted folder", response.body)

    def test_a_callback_without_a_grant_is_refused_before_its_body_is_read(self):
        app = appserver.App(config(), key_cache=FixedKeys())
        reads = []
        headers = {k.lower(): [v] for k, v in signed_headers(self.priv, "/cb", b"x",
                                                             KEY_URL).items()}
        response = app.handle("POST", "/cb", headers, 1000000,
                              lambda n: reads.append(n) or b"x" * n, "127.0.0.1")
        self.assertEqual(response.status, 400)
        self.assertEqual(reads, [])


class HookGrants(unittest.TestCase):

    def token(self, grant, **overrides):
        app = appserver.App(config(OSS_MAX_UPLOAD_BYTES="1000",
                                   OSS_ALLOWED_CONTENT_TYPES="image/png", **overrides),
                            authorize=lambda request: grant)
        return app.handle("GET", "/", {}, None, None, "127.0.0.1")

    def test_a_hook_grant_without_types_gets_the_configured_ones(self):
        response = self.token(appserver.Grant(None, "uploads/x/", 1000))
        self.assertEqual(response.status, 200)
        token = json.loads(response.body)
        policy = json.loads(base64.b64decode(token["policy"]))
        self.assertIn(["in", "$x-oss-content-type", ["image/png"]], policy["conditions"])
        self.assertEqual(token["contentTypes"], ["image/png"])

    def test_a_hook_grant_looser_than_the_configuration_is_an_internal_error(self):
        for grant in (appserver.Grant(None, "uploads/x/", 5000),
                      appserver.Grant(None, "uploads/x/", 0),
                      appserver.Grant(None, "uploads/x/", 1000, ("text/html",)),
                      appserver.Grant(None, "uploads/x/", 1000, "image/png"),
                      appserver.Grant(None, "uploads/x/", 1000, ("IMAGE/PNG",)),
                      appserver.Grant(None, "uploads/x\n/", 1000),
                      appserver.Grant(None, "elsewhere/", 1000)):
            with self.subTest(grant=grant), self.assertLogs("appserver", "ERROR"):
                response = self.token(grant)
                self.assertEqual(response.status, 500)
                self.assertNotIn(b"policy", response.body)


class ClientAddress(unittest.TestCase):
    config = config(OSS_TRUSTED_PROXIES="127.0.0.1/32,10.0.0.0/8")

    def key(self, forwarded):
        return appserver.client_address(self.config, "127.0.0.1",
                                        {"x-forwarded-for": [forwarded]})

    def test_ports_in_forwarded_addresses_do_not_make_new_clients(self):
        self.assertEqual(self.key("203.0.113.60:1111"), self.key("203.0.113.60:2222"))
        self.assertEqual(self.key("203.0.113.60:1111"), "203.0.113.60")
        self.assertEqual(self.key("[2001:db8::1]:1"), "2001:db8::/64")

    def test_a_chain_of_trusted_hops_counts_as_the_peer_not_the_leftmost_entry(self):
        self.assertEqual(self.key("10.9.9.1, 10.1.1.1"), "127.0.0.1")
        self.assertEqual(self.key("10.9.9.2, 10.1.1.1"), "127.0.0.1")


class Startup(unittest.TestCase):

    def test_a_secret_with_undecodable_bytes_is_named_without_its_bytes(self):
        with self.assertRaises(appserver.ConfigError) as caught:
            config(OSS_CALLBACK_SECRET="x" * 40 + "\udcff")
        self.assertEqual(str(caught.exception), "OSS_CALLBACK_SECRET must be valid UTF-8")

    def test_sigint_right_after_the_banner_is_a_clean_stop(self):
        import os
        import signal
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
        for signum in (signal.SIGINT, signal.SIGTERM) * 5:
            port = free_port()
            process = subprocess.Popen([sys.executable, "appserver.py", "127.0.0.1", str(port)],
                                       cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
            for line in process.stdout:
                if "listening on" in line:
                    process.send_signal(signum)
                    break
            output = process.stdout.read()
            self.assertEqual(process.wait(10), 0, output)
            process.stdout.close()
            self.assertNotIn("Traceback", output)
            with socket.socket() as probe:  # the port is free again
                probe.bind(("127.0.0.1", port))


if __name__ == "__main__":
    unittest.main()
