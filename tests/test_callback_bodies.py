"""Validly signed callbacks whose bodies or paths are hostile: each gets a 400 or a clean 200,
never a 500, and the server logs no traceback.

Signed with a 2048-bit test key (tests/rsa_testkit.py) served by an injected fetcher, so the
signature always verifies and only the body and path decide the answer. These callbacks come
from no token of ours and carry no grant, so the server runs with callback_binding=False: this
tests verification and the configuration's field checks alone (the checks against a grant are
in test_callback_binding*.py).
"""

import json
import unittest
import urllib.parse

import appserver
from tests import rsa_testkit as kit
from tests.support import (FORM, CountingFetch, capture_logs, exchange, parse_response,
                           request_bytes, signed_headers, start_app_server, stop_app_server)

KEY_URL = "http://127.0.0.1:9/keys/test.pem"
JSON = "application/json"


class CallbackFieldRules(unittest.TestCase):
    """check_callback_fields and parse_callback_fields alone. A genuine OSS callback proves
    OSS sent it, not that it is about one of our uploads: another tenant's bucket or folder is
    refused."""

    config = appserver.Config(bucket="examplebucket", upload_dir="user-dir-prefix/",
                              max_upload_bytes=1000)

    def test_our_uploads_pass(self):
        for fields in ({"bucket": "examplebucket", "filename": "user-dir-prefix/a.png",
                        "size": "1000"},
                       {"object": "user-dir-prefix/b", "size": 3},
                       {"unrelated": "x"}):
            with self.subTest(fields=fields):
                appserver.check_callback_fields(self.config, fields)

    def test_other_tenants_buckets_folders_and_oversized_uploads_are_refused(self):
        for fields in ({"bucket": "attacker-bucket", "filename": "user-dir-prefix/a.png"},
                       {"filename": "elsewhere/a.png"},
                       {"object": "user-dir-prefixX/a.png"},
                       {"object": "user-dir-prefix/a.png", "size": "1001"}):
            with self.subTest(fields=fields):
                with self.assertRaises(appserver.CallbackRejected):
                    appserver.check_callback_fields(self.config, fields)

    def test_without_a_configured_bucket_the_bucket_is_not_checked(self):
        config = appserver.Config(bucket=None)
        appserver.check_callback_fields(config, {"bucket": "any", "filename": "user-dir-prefix/x"})

    def test_body_type_comes_from_the_config_not_the_header(self):
        fields = appserver.parse_callback_fields(appserver.FORM_URLENCODED, b'{"a":1}')
        self.assertEqual(fields, {'{"a":1}': ""})
        with self.assertRaises(appserver.CallbackRejected):
            appserver.parse_callback_fields("application/json", b"[" * 100000)


class FormFields(unittest.TestCase):
    """A form body is read as urllib.parse.parse_qsl reads it (the stdlib is the reference
    here): last value of a repeated name, '+' as a space, blank values kept, escapes decoded
    as UTF-8 with U+FFFD for bytes that are not."""

    def test_fields_are_those_parse_qsl_finds(self):
        for text in ("bucket=b&object=user-dir-prefix%2Fa+b.png&size=3",
                     "a=1&a=2", "a&b=&=c&&", "", "&", "=", "a==b", "+=+", "a+b%20c=d+e%2Bf",
                     "x=%E4%BD%A0%E5%A5%BD", "x=%ff%fe", "x=%zz&y=%2", "x=%", "x=%%41",
                     "\u4f60=\u597d", "k=v;w=z", "a=%0d%0a", "name=%C3%A9t%C3%A9"):
            with self.subTest(text=text):
                self.assertEqual(appserver.form_fields(text, 1000),
                                 dict(urllib.parse.parse_qsl(text, keep_blank_values=True)))

    def test_more_fields_than_the_limit_are_refused_as_parse_qsl_refuses_them(self):
        at_limit, over = "&".join(["a=1"] * 1000), "&".join(["a=1"] * 1001)
        self.assertEqual(appserver.form_fields(at_limit, 1000), {"a": "1"})
        urllib.parse.parse_qsl(at_limit, max_num_fields=1000)
        with self.assertRaises(ValueError):
            urllib.parse.parse_qsl(over, max_num_fields=1000)
        with self.assertRaises(ValueError):
            appserver.form_fields(over, 1000)


class SignedBodies(unittest.TestCase):
    body_type = FORM

    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",),
                                      callback_body_type=cls.body_type,
                                      host="https://ours.oss-cn-hangzhou.aliyuncs.com",
                                      bucket="ours", upload_dir="uploads/",
                                      max_upload_bytes=1000, callback_binding=False)
        cls.fetch = CountingFetch()
        app = appserver.App(cls.config, key_cache=appserver.PublicKeyCache(fetch=cls.fetch))
        cls.server, base = start_app_server(cls.config, app=app)
        cls.port = int(base.rsplit(":", 1)[1])
        cls.addClassCleanup(stop_app_server, cls.server)

    def setUp(self):
        self.logs = capture_logs(self)

    def post(self, body, target="/cb"):
        headers = signed_headers(self.priv, target, body, KEY_URL, content_type=self.body_type)
        status, headers, answer = parse_response(exchange(self.port, request_bytes(
            "POST", target, [("Connection", "close"), ("Content-Length", str(len(body)))]
            + list(headers.items()), body)))
        self.assertNotEqual(status, 500, answer)
        self.assertEqual(headers.get("x-content-type-options"), ["nosniff"])
        document = json.loads(answer)  # strict enough: NaN would parse, so check below
        self.assertNotIn(b"NaN", answer)
        self.assertNotIn(b"Infinity", answer)
        self.assertEqual(self.logs.tracebacks(), [])
        return status, document

    def assertRejected(self, body, target="/cb"):
        status, document = self.post(body, target)
        self.assertEqual((status, document["Status"]), (400, "Error"), (body[:80], document))
        return document

    def assertAccepted(self, body, target="/cb"):
        status, document = self.post(body, target)
        self.assertEqual(status, 200, (body[:80], document))
        return document


class FormBodies(SignedBodies):

    def test_our_own_upload_is_accepted(self):
        document = self.assertAccepted(b"filename=uploads%2Fa.png&size=12&bucket=ours")
        self.assertEqual(document["upload"]["size"], "12")

    def test_official_example_shape_with_absent_fields_is_accepted(self):
        self.assertAccepted(b"bucket=ours")

    def test_unparseable_sizes_are_refused(self):
        for size in (b"-1", b"abc", b"1e12", b"0x10", b"+5", b"5_0", b"5" * 5000, b"",
                     b"1234567890123", "\u0663".encode("utf-8")):
            with self.subTest(size=size[:20]):
                self.assertRejected(b"filename=uploads%2Fa&size=" + urllib.parse.quote_from_bytes(
                    size).encode("ascii"))

    def test_size_over_the_limit_is_refused(self):
        self.assertRejected(b"filename=uploads%2Fa&size=1001")
        self.assertAccepted(b"filename=uploads%2Fa&size=1000")

    def test_filename_outside_the_folder_is_refused_even_with_object_inside(self):
        self.assertRejected(b"object=uploads%2Fa&filename=elsewhere%2Fa")
        self.assertRejected(b"object=elsewhere%2Fa&filename=uploads%2Fa")

    def test_other_bucket_is_refused(self):
        self.assertRejected(b"bucket=theirs&filename=uploads%2Fa")

    def test_empty_body_is_refused(self):
        self.assertRejected(b"")

    def test_decoded_cr_lf_or_nul_in_the_path_is_refused_before_any_key_work(self):
        for target in ("/cb%0d%0abody", "/cb%0A", "/cb%00", "/a%0d?x=1"):
            with self.subTest(target=target):
                before = len(self.fetch.calls)
                document = self.assertRejected(b"bucket=ours", target=target)
                self.assertIn("control characters", document["Message"])
                self.assertEqual(len(self.fetch.calls), before)


class JsonBodies(SignedBodies):
    body_type = JSON

    def test_our_own_upload_is_accepted_with_integer_size(self):
        document = self.assertAccepted(
            b'{"filename":"uploads/a.png","size":12,"bucket":"ours","width":null}')
        self.assertEqual(document["upload"]["size"], 12)

    def test_digit_string_size_is_accepted(self):
        self.assertAccepted(b'{"filename":"uploads/a.png","size":"12"}')

    def test_non_finite_numbers_are_refused(self):
        for size in (b"1e400", b"-1e400", b"Infinity", b"-Infinity", b"NaN"):
            with self.subTest(size=size):
                self.assertRejected(b'{"filename":"uploads/a","size":' + size + b'}')
        # ...anywhere in the body, not just in size
        self.assertRejected(b'{"filename":"uploads/a","size":1,"height":NaN}')
        self.assertRejected(b'{"filename":"uploads/a","size":1,"x":[1e999]}')

    def test_bad_size_types_are_refused(self):
        for size in (b"true", b"false", b"null", b"1.5", b"-1", b"[1]", b'"abc"', b'"-1"',
                     b"1000000000000", b'"0x1f"'):
            with self.subTest(size=size):
                self.assertRejected(b'{"filename":"uploads/a","size":' + size + b'}')

    def test_non_string_names_are_refused(self):
        for name in (b"null", b"7", b"[\"uploads/a\"]", b"{}", b"true"):
            with self.subTest(name=name):
                self.assertRejected(b'{"filename":' + name + b',"size":1}')
                self.assertRejected(b'{"object":' + name + b',"size":1}')
                self.assertRejected(b'{"bucket":' + name + b'}')

    def test_null_and_non_object_bodies_are_refused(self):
        for body in (b"null", b"[]", b'"x"', b"7", b"{}"):
            with self.subTest(body=body):
                self.assertRejected(body)

    def test_nesting_is_limited_to_32_levels(self):
        def nested(levels):  # the body object itself is level 1
            return b'{"bucket":"ours","x":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"
        self.assertAccepted(nested(32))
        self.assertRejected(nested(33))
        # just below the interpreter's recursion limit: parses, must not fail on the answer
        self.assertRejected(nested(900))
        self.assertRejected(nested(100000))


if __name__ == "__main__":
    unittest.main()
