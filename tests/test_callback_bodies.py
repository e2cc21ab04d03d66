"""Validly signed callbacks whose bodies or paths are hostile: each gets a 400 or a clean 200,
never a 500, and the server logs no traceback.

Signed with a 2048-bit test key (tests/rsa_testkit.py) served by an injected fetcher, so the
signature always verifies and only the body and path decide the answer.
"""

import http.client
import json
import logging
import unittest
import urllib.parse

import appserver
from tests import rsa_testkit as kit
from tests.support import start_app_server, stop_app_server
from tests.test_callback import CountingFetch, parse_response, raw_exchange, signed_headers
from tests.test_key_urls import FakeClock

KEY_URL = "http://127.0.0.1:9/keys/test.pem"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def tracebacks(self):
        return [r.getMessage() for r in self.records if r.exc_info or r.levelno >= logging.ERROR]


class SignedBodies(unittest.TestCase):
    body_type = FORM

    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",),
                                      callback_body_type=cls.body_type,
                                      host="https://ours.oss-cn-hangzhou.aliyuncs.com",
                                      bucket="ours", upload_dir="uploads/",
                                      max_upload_bytes=1000)
        cls.fetch = CountingFetch()
        app = appserver.App(cls.config, key_cache=appserver.PublicKeyCache(fetch=cls.fetch))
        cls.server, base = start_app_server(cls.config, app=app)
        cls.port = int(base.rsplit(":", 1)[1])
        cls.addClassCleanup(stop_app_server, cls.server)

    def setUp(self):
        self.logs = LogCapture()
        logger = logging.getLogger("appserver")
        logger.addHandler(self.logs)
        self.addCleanup(logger.removeHandler, self.logs)

    def post(self, body, target="/cb"):
        headers = signed_headers(self.priv, target, body, KEY_URL, content_type=self.body_type)
        lines = ["POST %s HTTP/1.1" % target, "Host: t", "Connection: close",
                 "Content-Length: %d" % len(body)] + ["%s: %s" % h for h in headers.items()]
        raw, _ = raw_exchange(self.port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                              + body)
        status, headers, answer = parse_response(raw)
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


class KeyFetchBudget(unittest.TestCase):
    """Unsigned junk may name any URL under an allowed prefix, and so use up the fetch budget.
    A URL that has served a good key before draws on a reserved budget of its own."""

    def test_junk_naming_1000_distinct_urls_does_not_lock_out_a_known_key(self):
        priv = kit.load_test_key("rsa2048_key.pem")
        pem = (kit.DATA / "rsa2048_pub.pem").read_bytes()
        good_url = "http://127.0.0.1:9/keys/good.pem"
        fetched = []

        def fetch(url):
            fetched.append(url)
            if url == good_url:
                return pem
            raise appserver.PubKeyUnavailable("no such key")

        clock = FakeClock()
        config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",),
                                  bucket="ours", upload_dir="uploads/")
        app = appserver.App(config, key_cache=appserver.PublicKeyCache(fetch=fetch, clock=clock))
        server, base = start_app_server(config, app=app)
        self.addCleanup(stop_app_server, server)
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        self.addCleanup(connection.close)

        def post(key_url, sign_with=priv):
            body = b"bucket=ours&filename=uploads%2Fa&size=1"
            headers = signed_headers(sign_with, "/cb", body, key_url)
            connection.request("POST", "/cb", body=body, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read())

        self.assertEqual(post(good_url)[0], 200)
        clock.advance(25 * 3600)  # the good key's cache entry (24 h) has expired
        junk_signer = kit.load_test_key("rsa1024_key.pem")
        statuses = {}
        for i in range(1000):
            status, document = post("http://127.0.0.1:9/keys/junk-%d.pem" % i, junk_signer)
            statuses[status] = statuses.get(status, 0) + 1
        self.assertEqual(statuses, {400: 1000})
        self.assertLess(len(fetched), 40, "junk fetches are rate limited")
        status, document = post(good_url)
        self.assertEqual(status, 200, document)
        self.assertEqual(fetched.count(good_url), 2)


if __name__ == "__main__":
    unittest.main()
