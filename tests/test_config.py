"""Configuration from the environment, and the command line."""

import json
import os
import subprocess
import sys
import unittest

import appserver
from tests.support import REPO


def from_env(**environ):
    return appserver.config_from_env(environ, server_url="http://127.0.0.1:8080")


def run_cli(*args, env=None, timeout=20):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
    environ.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "appserver.py"), *args], env=environ,
                          capture_output=True, text=True, timeout=timeout)


class Defaults(unittest.TestCase):
    def test_empty_environment_is_the_sample(self):
        cfg = from_env()
        self.assertTrue(cfg.placeholder_credentials)
        self.assertEqual(cfg.host, "https://examplebucket.oss-cn-hangzhou.aliyuncs.com")
        self.assertEqual(cfg.bucket, "examplebucket")
        self.assertEqual(cfg.region, "cn-hangzhou")
        self.assertEqual(cfg.signature_version, "v1")
        self.assertEqual(cfg.callback_url, "http://127.0.0.1:8080")
        self.assertEqual(cfg.upload_dir, "user-dir-prefix/")
        self.assertEqual(cfg.expire_seconds, 30)
        self.assertEqual(cfg.max_upload_bytes, 10485760)
        self.assertEqual(cfg.pub_key_url_prefixes,
                         ("http://gosspublic.alicdn.com/", "https://gosspublic.alicdn.com/"))
        self.assertTrue(cfg.pin_callback)

    def test_sdk_variable_names_are_fallbacks(self):
        cfg = from_env(ALIBABA_CLOUD_ACCESS_KEY_ID="id2", ALIBABA_CLOUD_ACCESS_KEY_SECRET="s2",
                       ALIBABA_CLOUD_SECURITY_TOKEN="t2")
        self.assertEqual((cfg.access_key_id, cfg.access_key_secret, cfg.security_token),
                         ("id2", "s2", "t2"))
        self.assertFalse(cfg.placeholder_credentials)
        cfg = from_env(OSS_ACCESS_KEY_ID="id1", ALIBABA_CLOUD_ACCESS_KEY_ID="id2")
        self.assertEqual(cfg.access_key_id, "id1")

    def test_region_and_bucket_from_host_or_variables(self):
        cfg = from_env(OSS_HOST="https://my-bucket.oss-eu-central-1-internal.aliyuncs.com/",
                       OSS_SIGNATURE_VERSION="V4")
        self.assertEqual((cfg.bucket, cfg.region, cfg.signature_version),
                         ("my-bucket", "eu-central-1", "v4"))
        self.assertEqual(cfg.host, "https://my-bucket.oss-eu-central-1-internal.aliyuncs.com")
        cfg = from_env(OSS_HOST="http://127.0.0.1:9000", OSS_REGION="oss-cn-beijing",
                       OSS_BUCKET="b1b")
        self.assertEqual((cfg.bucket, cfg.region), ("b1b", "cn-beijing"))

    def test_default_callback_body_names_the_bucket_when_known(self):
        # OSS fills ${bucket} in, so a callback from someone else's bucket can be told apart.
        self.assertEqual(from_env().callback_body,
                         appserver.DEFAULT_CALLBACK_BODY + "&bucket=${bucket}")
        # Without a known bucket callback binding cannot work (it is a startup error), so the
        # bucket-less default body is seen with binding off.
        with self.assertRaises(appserver.ConfigError) as caught:
            from_env(OSS_HOST="http://127.0.0.1:9000")
        self.assertEqual(caught.exception.variable, "OSS_BUCKET")
        self.assertEqual(from_env(OSS_HOST="http://127.0.0.1:9000",
                                  OSS_CALLBACK_BINDING="0").callback_body,
                         appserver.DEFAULT_CALLBACK_BODY)
        body = from_env(OSS_CALLBACK_BODY_TYPE="application/json").callback_body
        rendered = body.replace("${object}", '"a"').replace("${size}", "1") \
            .replace("${mimeType}", '"t"').replace("${imageInfo.height}", '""') \
            .replace("${imageInfo.width}", '""').replace("${bucket}", '"examplebucket"')
        self.assertEqual(json.loads(rendered)["bucket"], "examplebucket")
        # A body of one's own is kept as it is (binding off: binding needs ${bucket} and ${size}).
        self.assertEqual(from_env(OSS_CALLBACK_BODY="a=${object}",
                                  OSS_CALLBACK_BINDING="0").callback_body, "a=${object}")

    def test_empty_upload_dir_is_allowed_with_a_warning(self):
        cfg = from_env(OSS_UPLOAD_DIR="")
        self.assertEqual(cfg.upload_dir, "")
        self.assertTrue(any("OSS_UPLOAD_DIR" in w for w in appserver.config_warnings(cfg)))

    def test_empty_callback_url_means_no_callback(self):
        self.assertEqual(from_env(OSS_CALLBACK_URL="").callback_url, "")

    def test_secrets_stay_out_of_repr(self):
        text = repr(from_env(OSS_ACCESS_KEY_SECRET="s3cr3t-value", OSS_SESSION_TOKEN="tok-value"))
        self.assertNotIn("s3cr3t-value", text)
        self.assertNotIn("tok-value", text)

    def test_loopback_callback_warns(self):
        warnings = appserver.config_warnings(from_env())
        self.assertTrue(any("placeholders" in w for w in warnings))
        self.assertTrue(any("127.0.0.1" in w and "cannot reach" in w for w in warnings))
        public = from_env(OSS_ACCESS_KEY_ID="a", OSS_ACCESS_KEY_SECRET="b",
                          OSS_CALLBACK_URL="https://app.example.com/cb")
        self.assertEqual(appserver.config_warnings(public), [])


class BadValues(unittest.TestCase):
    BAD = [
        ("OSS_SIGNATURE_VERSION", "v3-hidden"),
        ("OSS_EXPIRE_SECONDS", "-1-hidden"),
        ("OSS_EXPIRE_SECONDS", "0"),
        ("OSS_EXPIRE_SECONDS", "５"),
        ("OSS_MAX_UPLOAD_BYTES", "10MB-hidden"),
        ("OSS_MAX_UPLOAD_BYTES", "99999999999"),
        ("OSS_HOST", "ftp://hidden.example"),
        ("OSS_HOST", "https://user:hidden@bucket.example"),
        ("OSS_BUCKET", "Hidden_Bucket"),
        ("OSS_REGION", "cn hidden"),
        ("OSS_CALLBACK_URL", "javascript:hidden"),
        ("OSS_CALLBACK_URL", ";".join(["http://a.example/hidden"] * 6)),
        ("OSS_CALLBACK_BODY_TYPE", "text/hidden"),
        ("OSS_CALLBACK_SNI", "hidden"),
        ("OSS_PIN_CALLBACK", "hidden"),
        ("OSS_CORS_ORIGIN", "https://hidden.example/path"),
        ("OSS_UPLOAD_DIR", "/hidden/"),
        ("OSS_PUB_KEY_URL_PREFIXES", "https://hidden.example"),
        ("OSS_PUB_KEY_URL_PREFIXES", "file:///hidden/"),
        ("OSS_MAX_CALLBACK_BYTES", "0"),
        ("OSS_MAX_CONNECTIONS", "hidden"),
        ("OSS_ACCESS_KEY_SECRET", ""),
        ("OSS_ACCESS_KEY_SECRET", "hidden\nnewline"),
        ("OSS_ACCESS_KEY_SECRET", "hidden\udcff"),  # undecodable bytes from the environment
        ("OSS_ACCESS_KEY_ID", "hidden id"),
        ("OSS_SESSION_TOKEN", "hidden\x7f"),
        ("OSS_HOST", "http://[hidden"),
        ("OSS_HOST", "https://hidden.example;script-src *"),
        ("OSS_HOST", "https://hidden.example:99999"),
        ("OSS_HOST", "https://hidden-例子.com"),
        ("OSS_CALLBACK_URL", "http://[hidden"),
        ("OSS_CALLBACK_URL", "http://hidden.example:99999/"),
        ("OSS_UPLOAD_DIR", "hidden"),
        ("OSS_UPLOAD_DIR", "a/../hidden/"),
        ("OSS_PUB_KEY_URL_PREFIXES", " , "),
        ("OSS_PUB_KEY_URL_PREFIXES", "http://hidden.example:99999/"),
    ]

    def test_each_bad_value_names_the_variable_not_the_value(self):
        for name, value in self.BAD:
            with self.subTest(name=name, value=value):
                with self.assertRaises(appserver.ConfigError) as caught:
                    from_env(**{name: value})
                self.assertEqual(caught.exception.variable, name)
                self.assertIn(name, str(caught.exception))
                self.assertNotIn("hidden", str(caught.exception))

    def test_v4_without_a_region_is_refused(self):
        with self.assertRaises(appserver.ConfigError) as caught:
            from_env(OSS_HOST="http://127.0.0.1:9000", OSS_SIGNATURE_VERSION="v4")
        self.assertEqual(caught.exception.variable, "OSS_REGION")

    def test_process_exits_2_without_echoing_the_value(self):
        result = run_cli("127.0.0.1", "0", env={"OSS_EXPIRE_SECONDS": "s3cr3t-ish"})
        self.assertEqual(result.returncode, 2)
        self.assertIn("OSS_EXPIRE_SECONDS", result.stderr)
        self.assertNotIn("s3cr3t-ish", result.stderr + result.stdout)


class CommandLine(unittest.TestCase):
    def test_parse_args_like_the_sample(self):
        self.assertEqual(appserver.parse_args([]), ("127.0.0.1", 8080))
        self.assertEqual(appserver.parse_args(["9000"]), ("0.0.0.0", 9000))
        self.assertEqual(appserver.parse_args(["127.0.0.1", "1234"]), ("127.0.0.1", 1234))
        for bad in (["x"], ["1", "2", "3"], ["127.0.0.1", "70000"], ["--port", "1"],
                    ["bad host", "80"], ["١٢٣"]):
            with self.subTest(args=bad), self.assertRaises(ValueError):
                appserver.parse_args(bad)

    def test_help_lists_every_variable(self):
        result = run_cli("--help")
        self.assertEqual(result.returncode, 0)
        for setting in appserver.SETTINGS:
            self.assertIn(setting.name, result.stdout)
            for fallback in setting.fallbacks:
                self.assertIn(fallback, result.stdout)
        self.assertIn("--idle-timeout", result.stdout)
        self.assertIn("--request-timeout", result.stdout)
        self.assertIn("usage:", result.stdout)

    def test_wrong_arguments_print_usage_and_exit_2(self):
        result = run_cli("not-a-port")
        self.assertEqual(result.returncode, 2)
        self.assertIn("usage:", result.stderr)
        self.assertEqual(result.stdout, "")


if __name__ == "__main__":
    unittest.main()
