"""Upload confirmation: after a callback verifies (and binds), a signed HEAD of the object in
our bucket must find it, with the callback's size (and CRC-64 when the template renders
${crc64}). A 404 is a refusal (400); no answer in time, a 5xx, a 403 or no credentials is a
503, which OSS reports to the browser as 203 CallbackFailed while the object stays.

This file drives confirm_upload with a recording stand-in for the HEAD, and the App without
credentials; tests/test_oss_tools.py runs the whole flow through the OSS emulator, whose HEAD
checks the signature on its own, from the OSS documentation.
"""

import email.message
import time
import unittest

import appserver
from tests.support import env_config


class Head:
    """A stand-in for oss_request that records its calls and answers as told."""

    def __init__(self, status=200, headers=None, code="", error=None):
        self.status, self.code, self.error = status, code, error
        self.headers = email.message.Message()
        for name, value in (headers or {}).items():
            self.headers[name] = value
        self.calls = []

    def __call__(self, config, credentials, method, key, *, timeout, now=None, **_):
        self.calls.append((method, key, timeout))
        if self.error:
            raise self.error
        return appserver.OssAnswer(self.status, self.headers, b"", self.code)


CONFIG = env_config(OSS_CONFIRM_UPLOADS="1", OSS_CALLBACK_URL="https://app.example.com/cb")
CRC_CONFIG = env_config(OSS_CONFIRM_UPLOADS="1", OSS_CALLBACK_URL="https://app.example.com/cb",
                        OSS_CALLBACK_BODY=appserver.DEFAULT_CALLBACK_BODY
                        + "&bucket=${bucket}&crc=${crc64}")
CREDENTIALS = appserver.Credentials("ak", "sk-of-the-test")


def upload(size=5, **fields):
    return {"user": None, "bucket": "examplebucket", "object": "user-dir-prefix/a.png",
            "size": size, "fields": dict({"filename": "user-dir-prefix/a.png",
                                          "mimeType": "image/png"}, **fields)}


def stored(**headers):
    """HEAD headers of the object the callbacks here name: 5 bytes of image/png."""
    return dict({"Content-Length": "5", "Content-Type": "image/png"}, **headers)


class ConfirmUpload(unittest.TestCase):
    def confirm(self, head, record=None, config=CONFIG, timeout=4.0):
        return appserver.confirm_upload(config, CREDENTIALS, record or upload(),
                                        timeout=timeout, request=head)

    def test_an_object_of_the_claimed_size_is_confirmed_with_one_head_of_its_key(self):
        head = Head(200, stored())
        self.assertIsNone(self.confirm(head))
        self.assertEqual(head.calls, [("HEAD", "user-dir-prefix/a.png", 4.0)])

    def test_a_missing_object_is_a_400(self):
        with self.assertRaises(appserver.CallbackRejected) as caught:
            self.confirm(Head(404, code="NoSuchKey"))
        self.assertEqual(caught.exception.status, 400)
        self.assertIn("not in our bucket", caught.exception.message)

    def test_another_size_is_a_400(self):
        for length in ("4", "6", "05", None):
            with self.subTest(length=length), self.assertRaises(appserver.CallbackRejected):
                headers = stored()
                if length:
                    headers["Content-Length"] = length
                else:
                    del headers["Content-Length"]
                self.confirm(Head(200, headers))

    def test_a_crc64_the_template_renders_must_match(self):
        good = upload(crc="5460935913460049542")
        self.confirm(Head(200, stored(**{"x-oss-hash-crc64ecma": "5460935913460049542"})),
                     good, config=CRC_CONFIG)
        for crc in ("5460935913460049543", None):
            with self.subTest(crc=crc), self.assertRaises(appserver.CallbackRejected):
                headers = stored()
                if crc:
                    headers["x-oss-hash-crc64ecma"] = crc
                self.confirm(Head(200, headers), good, config=CRC_CONFIG)

    def test_no_answer_a_5xx_or_a_403_is_a_503_and_a_403_says_forbidden(self):
        cases = {"timeout": Head(error=appserver.FetchFailed("fetch failed: TimeoutError")),
                 "500": Head(500, code="InternalError"),
                 "503": Head(503),
                 "403": Head(403, code="AccessDenied"),
                 "403 for a wrong signature": Head(403, code="SignatureDoesNotMatch")}
        for name, head in cases.items():
            with self.subTest(name), self.assertRaises(appserver.UploadUnconfirmed) as caught:
                self.confirm(head)
            self.assertEqual(caught.exception.status, 503)
            # Only AccessDenied is a permission to grant; wrong keys are not.
            self.assertEqual(caught.exception.forbidden, name == "403")

    def test_a_content_type_the_template_renders_must_be_the_objects(self):
        self.confirm(Head(200, stored(**{"Content-Type": "IMAGE/PNG"})))
        for claimed in ("image/svg+xml", None, 7):
            with self.subTest(claimed=claimed), self.assertRaises(appserver.CallbackRejected):
                self.confirm(Head(200, stored()), upload(mimeType=claimed))

    def test_an_object_name_that_is_no_key_is_a_400_without_a_request(self):
        for name in ("user-dir-prefix/\ud800.png", "user-dir-prefix/a\nb", "x" * 1024):
            head = Head(200, stored())
            with self.subTest(name=name[:30]), self.assertRaises(appserver.CallbackRejected):
                self.confirm(head, dict(upload(), object=name))
            self.assertEqual(head.calls, [])

    def test_no_time_left_is_a_503_without_a_request(self):
        head = Head(200, stored())
        with self.assertRaises(appserver.UploadUnconfirmed):
            self.confirm(head, timeout=0)
        self.assertEqual(head.calls, [])

    def test_a_callback_without_an_object_name_cannot_be_confirmed(self):
        with self.assertRaises(appserver.CallbackRejected):
            self.confirm(Head(200, stored()), dict(upload(), object=None))


class WithoutCredentials(unittest.TestCase):
    def test_no_valid_credentials_to_sign_the_head_is_a_503(self):
        class NoCredentials:
            def current(self):
                return None

        app = appserver.App(CONFIG, credentials=NoCredentials())
        with self.assertRaises(appserver.UploadUnconfirmed) as caught:
            app._confirm(upload(), time.monotonic() + 4)
        self.assertEqual(caught.exception.status, 503)


class Setting(unittest.TestCase):
    def test_auto_is_on_with_real_keys_a_bucket_and_a_template_with_the_object(self):
        self.assertTrue(env_config(OSS_CONFIRM_UPLOADS="auto",
                                   OSS_CALLBACK_URL="https://a.example/cb").confirms_uploads)
        self.assertFalse(appserver.Config().confirms_uploads)   # placeholders: the demo
        self.assertFalse(env_config(OSS_CONFIRM_UPLOADS="auto").confirms_uploads)  # no callback
        self.assertFalse(env_config(OSS_CONFIRM_UPLOADS="auto",
                                    OSS_CALLBACK_URL="https://a.example/cb",
                                    OSS_CALLBACK_BINDING="0",
                                    OSS_CALLBACK_BODY="bucket=${bucket}").confirms_uploads)

    def test_on_with_placeholders_no_bucket_or_no_object_is_a_config_error(self):
        cases = {"placeholders": dict(OSS_ACCESS_KEY_ID="", OSS_ACCESS_KEY_SECRET=""),
                 "no bucket": dict(OSS_HOST="https://cdn.example.com", OSS_CALLBACK_BINDING="0"),
                 "no object": dict(OSS_CALLBACK_BINDING="0", OSS_CALLBACK_BODY="size=${size}")}
        for name, environ in cases.items():
            values = {"OSS_CONFIRM_UPLOADS": "1", "OSS_ACCESS_KEY_ID": "ak",
                      "OSS_ACCESS_KEY_SECRET": "sk", "OSS_CALLBACK_URL": "https://a.example/c",
                      "OSS_HOST": "https://examplebucket.oss-cn-hangzhou.aliyuncs.com"}
            values.update(environ)
            values = {k: v for k, v in values.items() if v}
            with self.subTest(name), self.assertRaises(appserver.ConfigError) as caught:
                appserver.config_from_env(values)
            self.assertEqual(caught.exception.variable, "OSS_CONFIRM_UPLOADS")

    def test_an_unknown_value_is_a_config_error(self):
        with self.assertRaises(appserver.ConfigError):
            env_config(OSS_CONFIRM_UPLOADS="maybe")


if __name__ == "__main__":
    unittest.main()
