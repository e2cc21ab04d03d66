"""Upload tokens: the documented V1 and V4 signature examples, the policy's conditions, the
callback parameter, and an expiry in UTC whatever the machine's time zone."""

import base64
import hashlib
import hmac
import json
import os
import time
import unittest

import appserver

# V1: the token of Alibaba Cloud's sample app server for browser uploads with a callback (its
# example policy, callback and secret "sk"). V4: the PostObject example of OSS's "Signature
# Version 4" page. Both recomputed independently in Python and Node.js, not by this code.
V1_POLICY = ("eyJleHBpcmF0aW9uIjogIjIwMjMtMTEtMTRUMjI6MTM6MjBaIiwgImNvbmRpdGlvbnMiOiBbWyJzdGFydHMt"
             "d2l0aCIsICIka2V5IiwgInVzZXItZGlyLXByZWZpeC8iXV19")
V1_SIGNATURE = "NFlYAkrcyeN3SgG9InIEfBubY1A="
V1_CALLBACK = (
    "eyJjYWxsYmFja1VybCI6ICJodHRwOi8vODguODguODguODg6ODg4OCIsICJjYWxsYmFja0JvZHkiOiAiZmlsZW5h"
    "bWU9JHtvYmplY3R9JnNpemU9JHtzaXplfSZtaW1lVHlwZT0ke21pbWVUeXBlfSZoZWlnaHQ9JHtpbWFnZUluZm8u"
    "aGVpZ2h0fSZ3aWR0aD0ke2ltYWdlSW5mby53aWR0aH0iLCAiY2FsbGJhY2tCb2R5VHlwZSI6ICJhcHBsaWNhdGlv"
    "bi94LXd3dy1mb3JtLXVybGVuY29kZWQifQ==")
V4_POLICY_JSON = (
    '{"expiration":"2023-12-03T13:00:00.000Z","conditions":[{"bucket":"examplebucket"},'
    '{"x-oss-signature-version":"OSS4-HMAC-SHA256"},'
    '{"x-oss-credential":"ak/20231203/cn-hangzhou/oss/aliyun_v4_request"},'
    '{"x-oss-date":"20231203T121212Z"},["content-length-range",1,1024]]}')
V4_SIGNING_KEY = "6964fec96e2929c66d8602cc0a4bd25918c0fa64791aeb55736ffe06397879e0"
V4_SIGNATURE = "00a867c28c763ac3e14a0bd37dd675c9414ee3258e327b629c5ea9531f86c3b1"

NOW = 1_795_000_000  # 2026-11-18T11:06:40Z


def decode_policy(token):
    return json.loads(base64.b64decode(token["policy"], validate=True))


def config(**overrides):
    values = dict(access_key_id="ak", access_key_secret="sk", bucket="examplebucket",
                  region="cn-hangzhou", callback_url="https://app.example.com/cb",
                  max_upload_bytes=1024)
    values.update(overrides)
    return appserver.Config(**values)


class DocumentedExamples(unittest.TestCase):
    def test_v1_signature_matches_the_documented_example(self):
        self.assertEqual(appserver.sign_policy_v1("sk", V1_POLICY), V1_SIGNATURE)

    def test_v4_signing_key_and_signature_match_the_documented_example(self):
        policy_b64 = base64.b64encode(V4_POLICY_JSON.encode()).decode()
        self.assertEqual(appserver.v4_signing_key("sk", "20231203", "cn-hangzhou").hex(),
                         V4_SIGNING_KEY)
        self.assertEqual(appserver.sign_policy_v4("sk", "20231203", "cn-hangzhou", policy_b64),
                         V4_SIGNATURE)

    def test_issue_token_reproduces_the_sample_byte_for_byte(self):
        cfg = appserver.Config(access_key_id="ak", access_key_secret="sk",
                               callback_url="http://88.88.88.88:8888", max_upload_bytes=0,
                               pin_callback=False)
        token = appserver.issue_token(cfg, now=1_700_000_000 - 30)
        # The sample's members first, in its order; then what clients take as is.
        self.assertEqual(list(token), ["accessid", "host", "policy", "signature", "expire", "dir",
                                       "callback", "url", "method", "fields"])
        self.assertEqual(token["policy"], V1_POLICY)
        self.assertEqual(token["signature"], V1_SIGNATURE)
        self.assertEqual(token["callback"], V1_CALLBACK)
        self.assertEqual(token["expire"], 1_700_000_000)
        self.assertIsInstance(token["expire"], int)
        self.assertEqual(token["dir"], "user-dir-prefix/")


class TokenShape(unittest.TestCase):
    def check(self, cfg):
        token = appserver.issue_token(cfg, now=NOW)
        policy = decode_policy(token)
        conditions = policy["conditions"]
        self.assertEqual(set(policy), {"expiration", "conditions"})
        self.assertEqual(token["expire"], NOW + cfg.expire_seconds)
        self.assertEqual(policy["expiration"],
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token["expire"])))
        self.assertIn(["starts-with", "$key", cfg.upload_dir], conditions)
        self.assertIn(["content-length-range", 0, cfg.max_upload_bytes], conditions)
        self.assertIn({"bucket": cfg.bucket}, conditions)
        self.assertIn({"callback": token["callback"]}, conditions)
        callback = json.loads(base64.b64decode(token["callback"]))
        self.assertEqual(callback["callbackUrl"], cfg.callback_url)
        self.assertEqual(callback["callbackBodyType"], cfg.callback_body_type)
        if cfg.security_token:
            self.assertEqual(token["x-oss-security-token"], cfg.security_token)
            self.assertIn({"x-oss-security-token": cfg.security_token}, conditions)
        else:
            self.assertNotIn("x-oss-security-token", token)
        self.assertNotIn(cfg.access_key_secret, json.dumps(token))
        return token, conditions

    def test_v1_token_is_hmac_sha1_signed_and_pins_the_sts_token_if_any(self):
        for sts in (None, "sts-token-value"):
            with self.subTest(sts=sts):
                token, _ = self.check(config(security_token=sts))
                expected = base64.b64encode(hmac.new(
                    b"sk", token["policy"].encode(), hashlib.sha1).digest()).decode()
                self.assertEqual(token["signature"], expected)
                self.assertNotIn("x-oss-signature", token)

    def test_v4_token_is_signed_with_the_derived_key_and_pins_its_fields(self):
        for sts in (None, "sts-token-value"):
            with self.subTest(sts=sts):
                token, conditions = self.check(config(signature_version="v4", security_token=sts))
                self.assertNotIn("signature", token)
                date = time.strftime("%Y%m%d", time.gmtime(NOW))
                self.assertEqual(token["x-oss-signature-version"], "OSS4-HMAC-SHA256")
                self.assertEqual(token["x-oss-credential"],
                                 "ak/%s/cn-hangzhou/oss/aliyun_v4_request" % date)
                self.assertEqual(token["x-oss-date"],
                                 time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW)))
                for field in ("x-oss-signature-version", "x-oss-credential", "x-oss-date"):
                    self.assertIn({field: token[field]}, conditions)
                key = hmac.new(b"aliyun_v4sk", date.encode(), hashlib.sha256).digest()
                for part in (b"cn-hangzhou", b"oss", b"aliyun_v4_request"):
                    key = hmac.new(key, part, hashlib.sha256).digest()
                expected = hmac.new(key, token["policy"].encode(), hashlib.sha256).hexdigest()
                self.assertEqual(token["x-oss-signature"], expected)

    def test_expiration_is_utc_whatever_the_machine_timezone(self):
        saved = os.environ.get("TZ")
        os.environ["TZ"] = "Asia/Shanghai"
        time.tzset()
        try:
            for version in ("v1", "v4"):
                token = appserver.issue_token(config(signature_version=version), now=NOW)
                self.assertEqual(decode_policy(token)["expiration"], "2026-11-18T11:07:10Z")
                if version == "v4":
                    self.assertEqual(token["x-oss-date"], "20261118T110640Z")
        finally:
            if saved is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = saved
            time.tzset()

    def test_optional_conditions_follow_the_config(self):
        token = appserver.issue_token(config(max_upload_bytes=0, bucket=None, callback_url="",
                                             pin_callback=True), now=NOW)
        self.assertEqual(decode_policy(token)["conditions"],
                         [["starts-with", "$key", "user-dir-prefix/"]])
        self.assertNotIn("callback", token)
        unpinned = appserver.issue_token(config(pin_callback=False), now=NOW)
        self.assertFalse(any("callback" in c for c in decode_policy(unpinned)["conditions"]
                             if isinstance(c, dict)))

    def test_callback_sni_only_for_https_callbacks(self):
        sni = appserver.issue_token(config(callback_sni=True), now=NOW)
        self.assertIs(json.loads(base64.b64decode(sni["callback"]))["callbackSNI"], True)
        plain = appserver.issue_token(config(callback_sni=True, callback_url="http://a.example/"),
                                      now=NOW)
        self.assertNotIn("callbackSNI", json.loads(base64.b64decode(plain["callback"])))

    def test_v4_config_needs_a_region(self):
        with self.assertRaises(ValueError):
            appserver.Config(signature_version="v4", region=None)


if __name__ == "__main__":
    unittest.main()
