"""Unit tests of the OSS emulator alone (tests/oss_emulator.py): no app server involved.

Forms are signed here with hashlib/hmac directly, so a bug in the emulator's own signing
helpers cannot hide a bug in its checks.
"""

import base64
import hashlib
import hmac
import http.client
import http.server
import io
import json
import pathlib
import re
import struct
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

import appserver
from tests import oss_emulator as emu_mod
from tests.multipart_client import Reply, post_form
from tests.support import jpeg_bytes, png_bytes
from tests.oss_emulator import (BodyReader, EmulatorServer, MultipartReader, OSSError,
                                RSAPrivateKey, PrivateKeyError)

DATA = pathlib.Path(__file__).resolve().parent / "data"
FAR_FUTURE = "2099-01-01T00:00:00.000Z"
# `openssl dgst -md5 -sign tests/data/emulator_key.pem` over b"hello": an independent signer.
OPENSSL_HELLO_SIGNATURE = bytes.fromhex(
    "942c8df18864a4f9c64ae59b7bff00e20a8562ae62e10ca5c889e9ba3b65794ae0b70166a642c4a03ea254af"
    "c8526830cdc07b562598ca3800608b79ecbdebe85ff19c6646c046efe362d47bed67d5977ad46fd43c67d1d1"
    "35ff453663d68dd2e63dc01d97de7a961f472f62835d6d131fc18370506e29c7772ecde11d1c4600d20447f7"
    "098966049e42390a1498ddb06f92b59ad268e9332b7768cf9f48b9c281369602292a65f14166342075f7620b"
    "dd8da3a53bbffc16ac9e45b12c26a42f12271bd39c75b6302151e00cfe2ec880f71880f9142e9e1c6f4003fc"
    "74d6f8936e64527de8bf5f36542307324516a4e5c362d5c192ade724c5409fcbf35e79fa")


# -- building blocks -------------------------------------------------------------------------

def policy_b64(conditions, expiration=FAR_FUTURE):
    doc = {"expiration": expiration, "conditions": conditions}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def v1_fields(policy, key="dir/a.txt", secret="sk", access_key_id="ak"):
    signature = base64.b64encode(hmac.new(secret.encode(), policy.encode(), hashlib.sha1).digest())
    return [("key", key), ("OSSAccessKeyId", access_key_id), ("policy", policy),
            ("Signature", signature.decode())]


def v4_fields(conditions, when, key="dir/a.txt", secret="sk", access_key_id="ak",
              region="cn-hangzhou", token=None, pin=True):
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    credential = f"{access_key_id}/{date[:8]}/{region}/oss/aliyun_v4_request"
    extra = {"x-oss-signature-version": "OSS4-HMAC-SHA256", "x-oss-credential": credential,
             "x-oss-date": date}
    if token:
        extra["x-oss-security-token"] = token
    pins = [{name: value} for name, value in extra.items()] if pin else []
    policy = policy_b64(conditions + pins)
    signing_key = ("aliyun_v4" + secret).encode()
    for part in (date[:8], region, "oss", "aliyun_v4_request"):
        signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(signing_key, policy.encode(), hashlib.sha256).hexdigest()
    return [("key", key), ("policy", policy)] + list(extra.items()) + [
        ("x-oss-signature", signature)]


def error_of(reply):
    text = reply.body.decode()
    fields = dict(re.findall(r"<(Code|Message|RequestId|HostId|EC)>(.*?)</", text))
    return reply.status, fields.get("Code"), fields.get("Message")


def callback_b64(url, body="object=${object}", body_type=None, host=None):
    doc = {"callbackUrl": url, "callbackBody": body}
    if body_type:
        doc["callbackBodyType"] = body_type
    if host:
        doc["callbackHost"] = host
    return base64.b64encode(json.dumps(doc).encode()).decode()


class OneByteStream(io.BytesIO):
    """read1 returns a single byte: every delimiter straddles reads."""

    def read1(self, size=-1):
        return self.read(1)


def parse(body, boundary=b"B0undary", stream=io.BytesIO):
    """[(name, filename, content)] of a multipart body, through the emulator's parser."""
    reader = MultipartReader(BodyReader(stream(body), len(body)), boundary)
    parts = []
    while (part := reader.next_part()) is not None:
        parts.append((part.name, part.filename, b"".join(reader.read_part())))
    return parts


# -- pure functions --------------------------------------------------------------------------

class KeyTests(unittest.TestCase):
    def setUp(self):
        self.pem = (DATA / "emulator_key.pem").read_bytes()

    def test_public_key_derived_from_the_private_key_matches_openssl(self):
        key = RSAPrivateKey.from_pem(self.pem)
        self.assertEqual(key.n.bit_length(), 2048)
        self.assertEqual(key.public_key_pem(), (DATA / "emulator_pub.pem").read_bytes())

    def test_signature_equals_openssl_and_verifies_with_the_app_server(self):
        key = RSAPrivateKey.from_pem(self.pem)
        self.assertEqual(key.sign_md5(b"hello"), OPENSSL_HELLO_SIGNATURE)
        public = appserver.load_public_key(key.public_key_pem())
        self.assertTrue(appserver.rsa_verify(public, b"hello", key.sign_md5(b"hello"), "md5"))
        self.assertFalse(appserver.rsa_verify(public, b"hellO", key.sign_md5(b"hello"), "md5"))

    def test_pkcs8_wrapping_loads_the_same_key(self):
        der = base64.b64decode("".join(self.pem.decode().splitlines()[1:-1]))
        algorithm = bytes.fromhex("300d06092a864886f70d0101010500")
        body = b"\x02\x01\x00" + algorithm + emu_mod._der(0x04, der)
        pkcs8 = emu_mod._der(0x30, body)
        pem = (b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(pkcs8)
               + b"-----END PRIVATE KEY-----\n")
        self.assertEqual(RSAPrivateKey.from_pem(pem).n, RSAPrivateKey.from_pem(self.pem).n)

    def test_malformed_der_is_refused(self):
        der = base64.b64decode("".join(self.pem.decode().splitlines()[1:-1]))
        cases = {
            "trailing data": der + b"\x00",
            "truncated": der[:-1],
            "non-minimal length": b"\x30\x82\x00\x05" + der[4:9],
            "wrong tag": b"\x31" + der[1:],
        }
        for name, bad in cases.items():
            with self.subTest(name), self.assertRaises(PrivateKeyError):
                RSAPrivateKey.from_der(bad, pkcs8=False)
        with self.assertRaises(PrivateKeyError):
            RSAPrivateKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")

    def test_inconsistent_components_are_refused(self):
        key = RSAPrivateKey.from_pem(self.pem)
        with self.assertRaises(PrivateKeyError):
            RSAPrivateKey(key.n, key.e, key.d + 2, key._p, key._q, key._dp, key._dq, key._qinv)


class ChecksumAndImageTests(unittest.TestCase):
    def test_crc64_matches_the_xz_check_value(self):
        self.assertEqual(emu_mod.crc64_update(0, b"123456789"), 0x995DC9BBDF1939FA)
        self.assertEqual(emu_mod.crc64_update(emu_mod.crc64_update(0, b"1234"), b"56789"),
                         0x995DC9BBDF1939FA)

    def image(self, data):
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            return emu_mod.image_info(f.name)

    def test_image_sizes_are_read_from_the_file_headers(self):
        cases = {
            "png": (png_bytes(3, 2), (3, 2, "png")),
            "jpeg baseline": (jpeg_bytes(640, 480), (640, 480, "jpg")),
            "jpeg progressive": (jpeg_bytes(17, 9, sof=0xC2), (17, 9, "jpg")),
            "gif": (b"GIF89a" + struct.pack("<HH", 12, 34) + b"\x00" * 20, (12, 34, "gif")),
            "bmp": (b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 5, -7) + b"\x00" * 30,
                    (5, 7, "bmp")),
            "bmp core": (b"BM" + b"\x00" * 12 + struct.pack("<IHH", 12, 6, 8) + b"\x00" * 30,
                         (6, 8, "bmp")),
            "webp lossy": (b"RIFF\x00\x00\x00\x00WEBPVP8 \x00\x00\x00\x00\x00\x00\x00"
                           b"\x9d\x01\x2a" + struct.pack("<HH", 300, 200) + b"\x00" * 4,
                           (300, 200, "webp")),
            "webp lossless": (b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f"
                              + ((99 - 1) | ((77 - 1) << 14)).to_bytes(4, "little")
                              + b"\x00" * 8, (99, 77, "webp")),
            "webp extended": (b"RIFF\x00\x00\x00\x00WEBPVP8X\x00\x00\x00\x00\x00\x00\x00\x00"
                              + (1023).to_bytes(3, "little") + (511).to_bytes(3, "little")
                              + b"\x00" * 4, (1024, 512, "webp")),
            "text": (b"hello world, no image here", None),
            "truncated png": (b"\x89PNG\r\n\x1a\n\x00\x00", None),
            "jpeg without frame": (b"\xff\xd8\xff\xd9", None),
            "truncated webp": (b"RIFF\x00\x00\x00\x00WEBPVP8L", None),
        }
        for name, (data, expected) in cases.items():
            with self.subTest(name):
                self.assertEqual(self.image(data), expected)


class MultipartParserTests(unittest.TestCase):
    BODY = (b"preamble to ignore\r\n--B0undary\r\n"
            b'Content-Disposition: form-data; name="key"\r\n\r\nvalue\r\n'
            b"--B0undary  \t\r\n"                          # transport padding
            b'Content-Disposition: form-data; name="file"; filename="a\\b.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
            b"\r\n--B0undar\r\r\n\r\n--B0undar--B0undary\n\r"
            b"\r\n--B0undary--\r\nepilogue")

    def test_fields_files_preamble_epilogue_and_crlf_edges(self):
        # The file content holds CR, LF, truncated delimiters, the boundary without its CRLF,
        # and ends with a bare CR; every delimiter straddles reads in the one-byte stream.
        expected = [("key", None, b"value"),
                    ("file", "a\\b.bin", b"\r\n--B0undar\r\r\n\r\n--B0undar--B0undary\n\r")]
        self.assertEqual(parse(self.BODY), expected)
        self.assertEqual(parse(self.BODY, stream=OneByteStream), expected)

    def test_delimiter_followed_by_junk_is_malformed(self):
        # RFC 2046 forbids the delimiter inside content, so "--B0undaryX" is not data.
        body = self.BODY.replace(b"--B0undar--B0undary\n", b"\r\n--B0undaryX")
        with self.assertRaises(OSSError) as caught:
            parse(body)
        self.assertEqual(caught.exception.code, "MalformedPOSTRequest")

    def test_transport_padding_with_a_large_part_following(self):
        big = b"x" * 100_000          # the first read fills the buffer well past the padding
        body = (b'--B0undary \t \r\nContent-Disposition: form-data; name="file"; filename="f"'
                b"\r\n\r\n" + big + b"\r\n--B0undary--")
        self.assertEqual(parse(body), [("file", "f", big)])

    def test_first_delimiter_without_preamble_and_empty_values(self):
        body = (b'--B0undary\r\nContent-Disposition: form-data; name="a"\r\n\r\n\r\n'
                b'--B0undary\r\nContent-Disposition: form-data; name="file"; filename=""\r\n\r\n'
                b"\r\n--B0undary--")
        self.assertEqual(parse(body), [("a", None, b""), ("file", "", b"")])

    def test_malformed_multipart_bodies_are_refused(self):
        part = b'Content-Disposition: form-data; name="a"\r\n\r\nx'
        cases = {
            "no close delimiter": b"--B0undary\r\n" + part,
            "no closing CRLF before close": b"--B0undary\r\n" + part + b"--B0undary--",
            "no content-disposition": b"--B0undary\r\nContent-Type: text/plain\r\n\r\nx\r\n--B0undary--",
            "no headers": b"--B0undary\r\n\r\nx\r\n--B0undary--",
            "bare LF headers": b'--B0undary\r\nContent-Disposition: form-data; name="a"\n\nx\r\n--B0undary--',
            "folded header": b"--B0undary\r\nContent-Disposition: form-data;\r\n name=\"a\"\r\n\r\nx\r\n--B0undary--",
            "not form-data": b'--B0undary\r\nContent-Disposition: attachment; name="a"\r\n\r\nx\r\n--B0undary--',
            "unterminated quote": b'--B0undary\r\nContent-Disposition: form-data; name="a\r\n\r\nx\r\n--B0undary--',
            "no delimiter at all": b"just some bytes",
        }
        for name, body in cases.items():
            with self.subTest(name), self.assertRaises(OSSError) as caught:
                parse(body)
            self.assertEqual(caught.exception.code, "MalformedPOSTRequest", name)

    def test_part_headers_are_bounded(self):
        body = (b'--B0undary\r\nContent-Disposition: form-data; name="' + b"n" * 10000
                + b'"\r\n\r\nx\r\n--B0undary--')
        with self.assertRaises(OSSError) as caught:
            parse(body)
        self.assertEqual(caught.exception.code, "FieldItemTooLong")

    def test_boundary_is_parsed_strictly_from_a_multipart_content_type(self):
        ok = {
            "multipart/form-data; boundary=abc": b"abc",
            'Multipart/Form-Data; charset=utf-8; boundary="a b:c"': b"a b:c",
        }
        for value, boundary in ok.items():
            self.assertEqual(emu_mod.boundary_from_content_type(value), boundary)
        for value, code in {
            "application/x-www-form-urlencoded": "RequestIsNotMultiPartContent",
            None: "RequestIsNotMultiPartContent",
            "multipart/form-data": "MalformedPOSTRequest",
            "multipart/form-data; boundary=": "MalformedPOSTRequest",
            "multipart/form-data; boundary=" + "x" * 71: "MalformedPOSTRequest",
            "multipart/form-data; boundary=a; boundary=b": "MalformedPOSTRequest",
            'multipart/form-data; boundary="ends with space "': "MalformedPOSTRequest",
        }.items():
            with self.subTest(value), self.assertRaises(OSSError) as caught:
                emu_mod.boundary_from_content_type(value)
            self.assertEqual(caught.exception.code, code)

    def test_body_reader_reports_a_short_body(self):
        reader = BodyReader(io.BytesIO(b"abc"), 10)
        self.assertEqual(reader.read(), b"abc")
        with self.assertRaises(emu_mod.ClientDisconnected):
            reader.read()


class PolicyTests(unittest.TestCase):
    def parse(self, doc):
        raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        return emu_mod.Policy.parse(base64.b64encode(raw).decode())

    def refused(self, doc):
        with self.assertRaises(OSSError) as caught:
            self.parse(doc)
        self.assertEqual(caught.exception.code, "InvalidPolicyDocument")
        self.assertTrue(caught.exception.message.startswith("Invalid Policy: "))
        return caught.exception.message

    def test_invalid_documents(self):
        self.assertEqual(
            self.refused({"expiration": FAR_FUTURE, "conditions": [{"a": "1", "b": "2"}]}),
            "Invalid Policy: Invalid Simple-Condition: Simple-Conditions must have exactly one "
            "property specified.")
        self.assertIn("Invalid JSON", self.refused(b"{not json"))
        for doc in ([], {"conditions": []}, {"expiration": FAR_FUTURE},
                    {"expiration": FAR_FUTURE, "conditions": [], "extra": 1},
                    {"expiration": "tomorrow", "conditions": []},
                    {"expiration": "2099-13-01T00:00:00Z", "conditions": []},
                    {"expiration": FAR_FUTURE, "conditions": {}},
                    {"expiration": FAR_FUTURE, "conditions": [["ends-with", "$key", "x"]]},
                    {"expiration": FAR_FUTURE, "conditions": [["eq", "key", "x"]]},
                    {"expiration": FAR_FUTURE, "conditions": [["eq", "$key"]]},
                    {"expiration": FAR_FUTURE, "conditions": [["in", "$key", "a"]]},
                    {"expiration": FAR_FUTURE, "conditions": [["not-in", "$key", [1]]]},
                    {"expiration": FAR_FUTURE, "conditions": [["content-length-range", 5, 1]]},
                    {"expiration": FAR_FUTURE, "conditions": [["content-length-range", "1", 5]]},
                    {"expiration": FAR_FUTURE, "conditions": [{"key": 1}]},
                    {"expiration": FAR_FUTURE, "conditions": ["eq"]}):
            with self.subTest(doc):
                self.refused(doc)
        self.assertIn("Invalid JSON", self.refused(
            b'{"expiration": "2099-01-01T00:00:00Z", "conditions": [], "conditions": []}'))
        with self.assertRaises(OSSError) as caught:
            emu_mod.Policy.parse("not base64!")
        self.assertEqual(caught.exception.code, "InvalidPolicyDocument")

    def test_every_condition_kind(self):
        policy = self.parse({"expiration": "2030-01-01T00:00:00.500Z", "conditions": [
            {"bucket": "bkt"}, ["eq", "$success_action_status", "200"],
            {"Content-Type": "image/png"}, ["starts-with", "$key", "dir/"],
            ["in", "$x-oss-meta-color", ["red", "blue"]],
            ["not-in", "$cache-control", ["no-store"]], ["content-length-range", 2, 5]]})
        good = {"success_action_status": "200", "content-type": "image/png", "key": "dir/x",
                "x-oss-meta-color": "red", "cache-control": "max-age=1"}
        now = time.time()
        policy.check(good, "bkt", now)
        failures = {
            ("bucket", "other"): '["eq", "$bucket", "bkt"]',
            ("success_action_status", "201"): '["eq", "$success_action_status", "200"]',
            ("content-type", "image/PNG"): '["eq", "$Content-Type", "image/png"]',
            ("key", "other/x"): '["starts-with", "$key", "dir/"]',
            ("x-oss-meta-color", "green"): '["in", "$x-oss-meta-color", ["red", "blue"]]',
            ("cache-control", "no-store"): '["not-in", "$cache-control", ["no-store"]]',
        }
        for (field, value), echo in failures.items():
            fields = dict(good)
            bucket = "bkt"
            if field == "bucket":
                bucket = value
            else:
                fields[field] = value
            with self.subTest(field), self.assertRaises(OSSError) as caught:
                policy.check(fields, bucket, now)
            self.assertEqual((caught.exception.status, caught.exception.code), (403, "AccessDenied"))
            self.assertEqual(caught.exception.message,
                             "Invalid according to Policy: Policy Condition failed: " + echo)
        missing = dict(good)
        del missing["content-type"]
        with self.assertRaises(OSSError):
            policy.check(missing, "bkt", now)
        for size, code in ((1, "EntityTooSmall"), (6, "EntityTooLarge")):
            with self.assertRaises(OSSError) as caught:
                policy.check_size(size)
            self.assertEqual(caught.exception.code, code)
        policy.check_size(2)
        policy.check_size(5)

    def test_expiration_is_exclusive_and_keeps_milliseconds(self):
        policy = self.parse({"expiration": "2030-01-01T00:00:00.500Z", "conditions": []})
        deadline = 1893456000.5
        policy.check({}, "b", deadline - 0.001)
        with self.assertRaises(OSSError) as caught:
            policy.check({}, "b", deadline)
        self.assertEqual(caught.exception.message, "Invalid according to Policy: Policy expired.")


class CallbackTemplateTests(unittest.TestCase):
    VARS = {"object": "dir/a b&c.png", "size": "10", "mimeType": "image/png",
            "imageInfo.width": "", "imageInfo.height": "7", "x:uid": 'say "hi"'}

    def render(self, body, body_type):
        config = emu_mod.CallbackConfig.parse(callback_b64("http://127.0.0.1:1/", body, body_type))
        return config.render(self.VARS).decode()

    def test_form_values_are_url_encoded(self):
        self.assertEqual(
            self.render("o=${object}&m=${mimeType}&w=${imageInfo.width}&u=${x:uid}&n=${x:none}"
                        "&k=${unknown}", None),
            "o=dir%2Fa%20b%26c.png&m=image%2Fpng&w=&u=say%20%22hi%22&n=&k=${unknown}")

    def test_json_values_are_json_rendered(self):
        body = ('{"o":${object},"s":${size},"w":${imageInfo.width},"h":${imageInfo.height},'
                '"u":${x:uid},"pic":"${imageInfo.height}x${size} \\"${x:uid}\\""}')
        rendered = self.render(body, "application/json")
        self.assertEqual(json.loads(rendered), {"o": "dir/a b&c.png", "s": 10, "w": "", "h": 7,
                                                "u": 'say "hi"', "pic": '7x10 "say "hi""'})

    def test_invalid_callback_parameters(self):
        def refused(value):
            with self.assertRaises(OSSError) as caught:
                emu_mod.CallbackConfig.parse(value)
            self.assertEqual((caught.exception.status, caught.exception.code),
                             (400, "InvalidArgument"))
            return caught.exception.message
        self.assertEqual(refused("%%%"), "The callback configuration is not base64 encoded.")
        self.assertEqual(refused(base64.b64encode(b"[1]").decode()),
                         "The callback configuration is not json format.")
        refused(callback_b64("ftp://127.0.0.1/"))
        refused(callback_b64(";".join(["http://127.0.0.1/"] * 6)))
        refused(callback_b64("http://127.0.0.1/", body=""))
        refused(callback_b64("http://127.0.0.1/", body="a=${object"))
        refused(callback_b64("http://127.0.0.1/", body_type="text/plain"))
        self.assertIsNone(emu_mod.CallbackConfig.parse(callback_b64("")))


# -- the running server ----------------------------------------------------------------------

class Recorder(http.server.ThreadingHTTPServer):
    """An app-server stand-in that records callbacks and answers with ``self.answer``."""

    daemon_threads = True

    def __init__(self):
        self.requests = []
        self.answer = (200, {"Content-Type": "application/json"}, b'{"Status":"OK"}', 0)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, self.headers, body))
                status, headers, payload, delay = outer.answer
                time.sleep(delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers and headers.get("Omit") is None:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.handle_error = lambda request, address: None   # e.g. the emulator gave up waiting
        self.url = "http://127.0.0.1:%d" % self.server_address[1]
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


class EmulatorTestCase(unittest.TestCase):
    emulator_options = {}

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.now = time.time()
        cls.emu = EmulatorServer(cls.tmp.name, clock=lambda: cls.now, **cls.emulator_options)
        cls.emu.start()

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        cls.tmp.cleanup()

    def setUp(self):
        # The class shares one emulator (stopping one takes 0.5 s); each test starts from the
        # real time, whatever the test before moved the clock to, and stores under keys of
        # its own.
        type(self).now = time.time()

    def post(self, fields, data=b"data", name="a.txt", **options):
        options.setdefault("file_content_type", "text/plain")
        return post_form(self.emu.url, fields, name, data, **options)

    def assert_error(self, reply, status, code, message=None):
        got_status, got_code, got_message = error_of(reply)
        self.assertEqual((got_status, got_code), (status, code), reply.body)
        self.assertEqual(reply.headers["Content-Type"], "application/xml")
        if message is not None:
            self.assertEqual(got_message, message)

    def assert_not_stored(self, key="dir/a.txt"):
        self.assertTrue(self.emu.wait_idle(posts=self.emu.post_count))
        self.assertFalse(self.emu.object_path(key).exists())
        self.assertEqual(self.emu.staging_files(), [])


class PostObjectTests(EmulatorTestCase):
    def test_store_and_serve_with_metadata(self):
        policy = policy_b64([["starts-with", "$key", "dir/"]])
        fields = v1_fields(policy, key="dir/${filename}") + [
            ("success_action_status", "200"), ("x-oss-meta-owner", "ann"),
            ("Cache-Control", "max-age=60"), ("Content-Disposition", "inline")]
        reply = self.post(fields, b"\x00\xffbinary\r\n", name="meta.bin",
                          file_content_type="application/x-thing")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.body, b"")
        etag = '"%s"' % hashlib.md5(b"\x00\xffbinary\r\n").hexdigest().upper()
        self.assertEqual(reply.headers["ETag"], etag)
        self.assertRegex(reply.headers["x-oss-request-id"], r"^[0-9A-F]{24}$")
        self.assertEqual(reply.headers["Server"], "AliyunOSS")
        self.assertEqual(self.emu.object_path("dir/meta.bin").read_bytes(), b"\x00\xffbinary\r\n")

        conn = http.client.HTTPConnection("127.0.0.1", int(self.emu.url.rsplit(":", 1)[1]))
        conn.request("GET", "/dir/meta.bin")
        response = conn.getresponse()
        self.assertEqual(response.read(), b"\x00\xffbinary\r\n")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["Content-Type"], "application/x-thing")
        self.assertEqual(response.headers["ETag"], etag)
        self.assertEqual(response.headers["x-oss-meta-owner"], "ann")
        self.assertEqual(response.headers["Cache-Control"], "max-age=60")
        self.assertEqual(response.headers["Content-Disposition"], "inline")
        conn.request("GET", "/dir/missing")
        response = conn.getresponse()
        self.assertEqual(response.status, 404)
        self.assertIn(b"<Code>NoSuchKey</Code>", response.read())
        conn.close()

    def test_success_action_status_201_answers_xml_and_any_other_value_gives_204(self):
        policy = policy_b64([["starts-with", "$key", "dir/"]])
        for status, expected in (("201", 201), ("204", 204), ("", 204), ("302", 204)):
            with self.subTest(status):
                fields = v1_fields(policy, key="dir/s.txt")
                if status:
                    fields.append(("success_action_status", status))
                reply = self.post(fields)
                self.assertEqual(reply.status, expected)
                if expected == 201:
                    self.assertIn(b"<PostResponse>", reply.body)
                    self.assertIn(b"<Bucket>examplebucket</Bucket>", reply.body)
                    self.assertIn(b"<Key>dir/s.txt</Key>", reply.body)
                    self.assertIn(("<ETag>&quot;%s&quot;</ETag>" % hashlib.md5(b"data")
                                   .hexdigest().upper()).encode(), reply.body)
                    self.assertIn(f"<Location>{self.emu.url}/dir/s.txt</Location>".encode(),
                                  reply.body)
                else:
                    self.assertEqual(reply.body, b"")

    def test_field_names_are_case_insensitive(self):
        policy = policy_b64([["starts-with", "$KEY", "dir/"], {"Success_Action_Status": "201"}])
        fields = [(name.upper(), value) for name, value in v1_fields(policy, key="dir/c.txt")]
        reply = self.post(fields + [("SUCCESS_ACTION_STATUS", "201")], name="c.txt")
        self.assertEqual(reply.status, 201, reply.body)
        self.assertTrue(self.emu.object_path("dir/c.txt").exists())

    def test_conditions_see_the_key_before_filename_expansion(self):
        policy = policy_b64([{"key": "dir/${filename}"}])
        reply = self.post(v1_fields(policy, key="dir/${filename}"), name="x.txt")
        self.assertEqual(reply.status, 204, reply.body)
        self.assertTrue(self.emu.object_path("dir/x.txt").exists())

    def test_fields_after_the_file_are_ignored_and_logged(self):
        policy = policy_b64([["starts-with", "$key", "dir/"]])
        with self.assertLogs("oss_emulator", "WARNING") as logs:
            reply = self.post(v1_fields(policy, key="dir/t.txt"),
                              trailing_fields=[("submit", "Upload"), ("x-oss-meta-late", "1")])
        self.assertEqual(reply.status, 204, reply.body)
        self.assertIn("ignoring form fields after the file part: submit, x-oss-meta-late",
                      logs.output[0])
        self.assertTrue(self.emu.wait_idle())
        conn = http.client.HTTPConnection("127.0.0.1", int(self.emu.url.rsplit(":", 1)[1]))
        conn.request("HEAD", "/dir/t.txt")
        self.assertIsNone(conn.getresponse().headers["x-oss-meta-late"])
        conn.close()

    def test_exactly_one_file_part_is_required(self):
        policy = policy_b64([["starts-with", "$key", "dir/"]])
        reply = post_form(self.emu.url, v1_fields(policy, key="dir/n.txt"))
        self.assert_error(reply, 400, "IncorrectNumberOfFilesInPOSTRequest",
                          "POST requires exactly one file upload per request.")
        self.assert_not_stored("dir/n.txt")
        # A second file part comes after the first one was received: still nothing stored.
        boundary = "b2"
        body = b"".join(
            [b'--b2\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
             % (n.encode(), v.encode()) for n, v in v1_fields(policy, key="dir/two.txt")]
            + [b'--b2\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
               b"one\r\n"] * 2 + [b"--b2--\r\n"])
        reply = self.raw_post(body, "multipart/form-data; boundary=" + boundary)
        self.assert_error(reply, 400, "IncorrectNumberOfFilesInPOSTRequest")
        self.assert_not_stored("dir/two.txt")

    def raw_post(self, body, content_type, headers=()):
        conn = http.client.HTTPConnection("127.0.0.1", int(self.emu.url.rsplit(":", 1)[1]))
        try:
            conn.request("POST", "/", body, {"Content-Type": content_type, **dict(headers)})
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def test_non_multipart_unknown_part_headers_and_oversized_fields_are_refused(self):
        self.assert_error(self.raw_post(b"a=b", "application/x-www-form-urlencoded"), 400,
                          "RequestIsNotMultiPartContent",
                          "Bucket POST must be of the enclosure-type multipart/form-data.")
        self.assert_error(self.raw_post(b"--x\r\n", "multipart/form-data; boundary=x"), 400,
                          "MalformedPOSTRequest",
                          "The body of your POST request is not well-formed "
                          "multipart/form-data.")
        policy = policy_b64([])
        boundary_body = (b'--x\r\nContent-Disposition: form-data; name="key"\r\n\r\nk\r\n'
                         b'--x\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n'
                         b"X-Extra: 1\r\n\r\nabc\r\n--x--\r\n")
        self.assert_error(self.raw_post(boundary_body, "multipart/form-data; boundary=x"), 400,
                          "InvalidArgument", "The bucket POST contains unrecognized field name")
        reply = self.post(v1_fields(policy) + [("key", "again")])
        self.assert_error(reply, 400, "MalformedPOSTRequest")
        reply = self.post([("key", "dir/a"), ("x-oss-meta-big", "v" * (2 * 1024 * 1024 + 1))])
        self.assert_error(reply, 400, "MaxPOSTPreDataLengthExceededError")

    def test_error_xml_layout_names_the_request_and_the_host(self):
        reply = self.post([("key", "dir/a.txt")], headers={"Host": "examplebucket.example"})
        self.assertEqual(reply.status, 403)
        text = reply.body.decode()
        self.assertTrue(text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
                                        "  <Code>AccessDenied</Code>\n"))
        self.assertIn("<RequestId>%s</RequestId>" % reply.headers["x-oss-request-id"], text)
        self.assertIn("<HostId>examplebucket.example</HostId>", text)

    def test_invalid_or_missing_object_keys_are_refused(self):
        policy = policy_b64([])
        for key in ("/abs", "a/../b", "..", "a/..", "__oss_emulator__/callback_pub_key.pem",
                    "a\x00b", "k" * 1024, "${filename}"):
            with self.subTest(key):
                reply = self.post(v1_fields(policy, key=key), name="../up")
                self.assert_error(reply, 400, "InvalidObjectName",
                                  "The specified object is not valid.")
        reply = self.post([(n, v) for n, v in v1_fields(policy) if n != "key"])
        self.assert_error(reply, 400, "InvalidArgument", "Post request key is empty.")

    def test_header_injection_is_refused(self):
        reply = self.post(v1_fields(policy_b64([]), key="dir/injected")
                          + [("x-oss-meta-a", "x\r\nSet-Cookie: a=b")])
        self.assert_error(reply, 400, "InvalidArgument")
        self.assert_not_stored("dir/injected")

    def test_forbid_overwrite_and_failed_overwrite_keeps_the_old_object(self):
        policy = policy_b64([["content-length-range", 0, 5]])
        self.assertEqual(self.post(v1_fields(policy, key="dir/keep"), b"old").status, 204)
        reply = self.post(v1_fields(policy, key="dir/keep") + [("x-oss-forbid-overwrite", "true")],
                          b"new")
        self.assert_error(reply, 409, "FileAlreadyExists")
        reply = self.post(v1_fields(policy, key="dir/keep"), b"too large")
        self.assert_error(reply, 400, "EntityTooLarge",
                          "Your proposed upload exceeds the maximum allowed size.")
        self.assertTrue(self.emu.wait_idle())
        self.assertEqual(self.emu.object_path("dir/keep").read_bytes(), b"old")
        self.assertEqual(self.emu.staging_files(), [])

    def test_content_type_is_x_oss_content_type_then_content_type_then_the_file_parts(self):
        policy = policy_b64([])
        cases = [([("x-oss-content-type", "a/x"), ("Content-Type", "b/y")], "a/x"),
                 ([("Content-Type", "b/y")], "b/y"), ([], "text/plain")]
        for extra, expected in cases:
            with self.subTest(expected):
                self.assertEqual(self.post(v1_fields(policy, key="dir/ct") + extra).status, 204)
                meta = json.loads(self.emu.object_path("dir/ct").with_suffix(".json").read_text())
                self.assertEqual(meta["content_type"], expected)

    def test_public_key_is_served_under_the_reserved_prefix(self):
        self.assertTrue(self.emu.pub_key_url.startswith(self.emu.pub_key_url_prefix))
        self.assertEqual(self.emu.pub_key_url_prefix, self.emu.url + "/__oss_emulator__/")
        with urllib.request.urlopen(self.emu.pub_key_url) as response:
            self.assertEqual(response.read(), (DATA / "emulator_pub.pem").read_bytes())


class SignatureTests(EmulatorTestCase):
    def test_v1_checks_secret_access_key_id_policy_and_required_fields(self):
        policy = policy_b64([["starts-with", "$key", "dir/"]])
        self.assertEqual(self.post(v1_fields(policy)).status, 204)
        self.assert_error(self.post(v1_fields(policy, secret="wrong")), 403,
                          "SignatureDoesNotMatch", "The request signature we calculated does "
                          "not match the signature you provided. Check your key and signing "
                          "method.")
        self.assert_error(self.post(v1_fields(policy, access_key_id="nobody")), 403,
                          "InvalidAccessKeyId",
                          "The OSS Access Key Id you provided does not exist in our records.")
        tampered = v1_fields(policy)
        tampered[2] = ("policy", policy_b64([["starts-with", "$key", ""]]))
        self.assert_error(self.post(tampered), 403, "SignatureDoesNotMatch")
        without = [(n, v) for n, v in v1_fields(policy) if n != "Signature"]
        self.assert_error(self.post(without), 400, "InvalidArgument",
                          "Post request signature is empty.")
        without = [(n, v) for n, v in v1_fields(policy) if n != "OSSAccessKeyId"]
        self.assert_error(self.post(without), 400, "InvalidArgument",
                          "Post request accessKeyId is empty.")
        self.assert_error(self.post([("key", "dir/a.txt")]), 403, "AccessDenied")

    def test_v1_policy_expired_by_a_second_is_refused(self):
        policy = policy_b64([], expiration=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                          time.gmtime(self.now + 30)))
        self.assertEqual(self.post(v1_fields(policy)).status, 204)
        type(self).now += 31
        reply = self.post(v1_fields(policy, key="dir/late.txt"))
        self.assert_error(reply, 403, "AccessDenied",
                          "Invalid according to Policy: Policy expired.")
        self.assertIn(b"<EC>0006-00000213</EC>", reply.body)
        self.assert_not_stored("dir/late.txt")

    def test_v4_checks_secret_access_key_id_region_time_window_and_pins(self):
        self.assertEqual(self.post(v4_fields([{"bucket": "examplebucket"}], self.now)).status, 204)
        cases = [
            (v4_fields([], self.now, secret="x"), 403, "SignatureDoesNotMatch"),
            (v4_fields([], self.now, access_key_id="x"), 403, "InvalidAccessKeyId"),
            (v4_fields([], self.now, region="cn-beijing"), 400, "InvalidArgument"),
            (v4_fields([], self.now + 16 * 60), 403, "RequestTimeTooSkewed"),
            (v4_fields([], self.now - 8 * 86400), 403, "AccessDenied"),
            (v4_fields([], self.now, pin=False), 400, "InvalidPolicyDocument"),
            (v4_fields([{"bucket": "otherbucket"}], self.now), 403, "AccessDenied"),
        ]
        for fields, status, code in cases:
            with self.subTest(code):
                self.assert_error(self.post(fields), status, code)
        self.assertEqual(self.post(v4_fields([], self.now + 14 * 60)).status, 204)
        self.assertEqual(self.post(v4_fields([], self.now - 6 * 86400)).status, 204)

    def test_v4_scope_and_date_rules(self):
        good = dict(v4_fields([], self.now))
        mutations = {
            "x-oss-credential": [good["x-oss-credential"].replace("/oss/", "/s3/"),
                                 good["x-oss-credential"].replace("aliyun_v4_request", "x"),
                                 good["x-oss-credential"] + "/extra",
                                 good["x-oss-credential"].replace(good["x-oss-date"][:8], "2023-1-1")],
            "x-oss-date": [good["x-oss-date"][:8], "20231301T000000Z",
                           time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.now - 86400))],
            "x-oss-signature-version": ["OSS4-HMAC-SHA1"],
        }
        for name, values in mutations.items():
            for value in values:
                with self.subTest(name=name, value=value):
                    fields = [(n, value if n == name else v) for n, v in good.items()]
                    self.assert_error(self.post(fields), 400, "InvalidArgument")

    def test_v4_documented_example_is_accepted(self):
        # The PostObject example of OSS's "Signature Version 4" page: AK ak, secret sk,
        # cn-hangzhou, x-oss-date 20231203T121212Z.
        policy_json = ('{"expiration":"2023-12-03T13:00:00.000Z","conditions":[{"bucket":'
                       '"examplebucket"},{"x-oss-signature-version":"OSS4-HMAC-SHA256"},'
                       '{"x-oss-credential":"ak/20231203/cn-hangzhou/oss/aliyun_v4_request"},'
                       '{"x-oss-date":"20231203T121212Z"},["content-length-range",1,1024]]}')
        fields = [("key", "dir/vector"), ("policy", base64.b64encode(policy_json.encode()).decode()),
                  ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
                  ("x-oss-credential", "ak/20231203/cn-hangzhou/oss/aliyun_v4_request"),
                  ("x-oss-date", "20231203T121212Z"),
                  ("x-oss-signature",
                   "00a867c28c763ac3e14a0bd37dd675c9414ee3258e327b629c5ea9531f86c3b1")]
        type(self).now = 1701605532 + 60                 # 2023-12-03T12:13:12Z
        self.assertEqual(self.post(fields).status, 204)


class SecurityTokenTests(EmulatorTestCase):
    emulator_options = {"security_token": "sts-token"}

    def test_v1_and_v4_need_the_pinned_sts_token(self):
        policy = policy_b64([])
        token = [("x-oss-security-token", "sts-token")]
        self.assertEqual(self.post(v1_fields(policy) + token).status, 204)
        self.assertEqual(self.post(v4_fields([], self.now, token="sts-token")).status, 204)
        self.assert_error(self.post(v1_fields(policy)), 403, "InvalidAccessKeyId")
        self.assert_error(self.post(v1_fields(policy) + [("x-oss-security-token", "bad")]), 403,
                          "InvalidSecurityToken")
        self.assert_error(self.post(v4_fields([], self.now, token="bad")), 403,
                          "InvalidSecurityToken")
        unpinned = v4_fields([], self.now) + token      # the token is not pinned in the policy
        self.assert_error(self.post(unpinned), 400, "InvalidPolicyDocument")


class StorageTests(EmulatorTestCase):
    emulator_options = {"throttle": 200_000}

    def test_aborted_upload_leaves_nothing(self):
        data = b"z" * 300_000
        policy = policy_b64([])
        done = threading.Event()

        def watch():
            while not done.is_set():
                if self.emu.staging_files():
                    self.staging_seen = True
                time.sleep(0.01)

        self.staging_seen = False
        posts = self.emu.post_count
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            reply = self.post(v1_fields(policy, key="dir/aborted"), data, abort_after=200_000)
            self.assertIsNone(reply)
            self.assertTrue(self.emu.wait_idle(timeout=10, posts=posts + 1))
            self.assert_not_stored("dir/aborted")
        finally:
            done.set()
            watcher.join()
        self.assertTrue(self.staging_seen, "the upload was being written to a temporary file")

    def test_throttle_slows_the_upload(self):
        started = time.monotonic()
        reply = self.post(v1_fields(policy_b64([]), key="dir/slow"), b"s" * 100_000)
        self.assertEqual(reply.status, 204)
        self.assertGreaterEqual(time.monotonic() - started, 0.45)

    def test_stale_staging_files_are_removed_at_start(self):
        with tempfile.TemporaryDirectory() as root:
            (pathlib.Path(root) / "tmp").mkdir()
            (pathlib.Path(root) / "tmp" / "upload-stale").write_bytes(b"x")
            emulator = EmulatorServer(root)
            self.assertEqual(emulator.staging_files(), [])


class CorsTests(EmulatorTestCase):
    emulator_options = {"cors_origins": ("http://127.0.0.1:8080", "http://*.example.com")}

    def request(self, method, headers):
        conn = http.client.HTTPConnection("127.0.0.1", int(self.emu.url.rsplit(":", 1)[1]))
        try:
            conn.request(method, "/", headers=headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def test_preflight_allows_only_listed_origins_and_methods(self):
        status, headers, _ = self.request("OPTIONS", {
            "Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-requested-with"})
        self.assertEqual(status, 200)
        self.assertEqual(headers["Access-Control-Allow-Origin"], "http://127.0.0.1:8080")
        self.assertIn("POST", headers["Access-Control-Allow-Methods"])
        self.assertEqual(headers["Access-Control-Allow-Headers"], "x-requested-with")
        status, headers, _ = self.request("OPTIONS", {
            "Origin": "http://a.example.com", "Access-Control-Request-Method": "POST"})
        self.assertEqual((status, headers["Access-Control-Allow-Origin"]),
                         (200, "http://a.example.com"))
        for origin, method in (("http://evil.test", "POST"), ("http://127.0.0.1:8080", "DELETE"),
                               ("http://127.0.0.1:8080", "")):
            with self.subTest(origin=origin, method=method):
                status, headers, body = self.request("OPTIONS", {
                    "Origin": origin, "Access-Control-Request-Method": method})
                self.assertEqual(status, 403)
                self.assertIn(b"<Code>AccessForbidden</Code>", body)
                self.assertIsNone(headers["Access-Control-Allow-Origin"])

    def test_cors_headers_only_for_an_allowed_origin(self):
        reply = self.post(v1_fields(policy_b64([])), headers={"Origin": "http://127.0.0.1:8080"})
        self.assertEqual(reply.status, 204)
        self.assertEqual(reply.headers["Access-Control-Allow-Origin"], "http://127.0.0.1:8080")
        self.assertIn("ETag", reply.headers["Access-Control-Expose-Headers"])
        reply = self.post(v1_fields(policy_b64([])), headers={"Origin": "http://evil.test"})
        self.assertEqual(reply.status, 204)
        self.assertIsNone(reply.headers["Access-Control-Allow-Origin"])


class CallbackTests(EmulatorTestCase):
    emulator_options = {"callback_timeout": 0.5}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.app = Recorder()
        cls.public_key = appserver.load_public_key((DATA / "emulator_pub.pem").read_bytes())

    @classmethod
    def tearDownClass(cls):
        cls.app.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.app.requests.clear()
        self.app.answer = (200, {"Content-Type": "application/json"}, b'{"Status":"OK"}', 0)

    def upload(self, callback, key="dir/cb.png", data=None, extra=()):
        data = png_bytes(4, 3) if data is None else data
        policy = policy_b64([["starts-with", "$key", "dir/"]])
        fields = v1_fields(policy, key=key) + [("callback", callback)] + list(extra)
        return self.post(fields, data, name="cb.png", file_content_type="image/png")

    def test_form_callback_is_signed_and_relayed(self):
        body = ("bucket=${bucket}&object=${object}&etag=${etag}&size=${size}&mimeType=${mimeType}"
                "&height=${imageInfo.height}&width=${imageInfo.width}&format=${imageInfo.format}"
                "&md5=${contentMd5}&ip=${clientIp}&req=${reqId}&op=${operation}&vpc=${vpcId}"
                "&uid=${x:uid}")
        self.app.answer = (200, {"Content-Type": "application/json"}, b'{"Status":"OK","n":1}', 0)
        data = png_bytes(4, 3)
        reply = self.upload(callback_b64(self.app.url + "/cb/a%20b?x=1&y=%2F", body),
                            key="dir/relayed.png", extra=[("x:uid", "u 1/2")])
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(reply.body, b'{"Status":"OK","n":1}')
        self.assertEqual(reply.headers["Content-Type"], "application/json")
        self.assertTrue(self.emu.object_path("dir/relayed.png").exists())

        (path, headers, sent), = self.app.requests
        self.assertEqual(path, "/cb/a%20b?x=1&y=%2F")
        fields = dict(urllib.parse.parse_qsl(sent.decode(), keep_blank_values=True))
        md5 = hashlib.md5(data)
        self.assertEqual(fields, {
            "bucket": "examplebucket", "object": "dir/relayed.png", "etag": md5.hexdigest().upper(),
            "size": str(len(data)), "mimeType": "image/png", "height": "3", "width": "4",
            "format": "png", "md5": base64.b64encode(md5.digest()).decode(), "ip": "127.0.0.1",
            "req": reply.headers["x-oss-request-id"], "op": "PostObject", "vpc": "",
            "uid": "u 1/2"})
        self.assertIn("mimeType=image%2Fpng", sent.decode())
        self.assertEqual(headers["Content-Type"], "application/x-www-form-urlencoded")
        self.assertEqual(headers["Content-MD5"], base64.b64encode(hashlib.md5(sent).digest()).decode())
        self.assertEqual(base64.b64decode(headers["x-oss-pub-key-url"]).decode(),
                         self.emu.pub_key_url)
        signature = base64.b64decode(headers["authorization"])
        signed = b"/cb/a b?x=1&y=%2F\n" + sent          # path decoded, query raw
        self.assertEqual(signed, appserver.callback_string_to_sign(path, sent))
        self.assertTrue(appserver.rsa_verify(self.public_key, signed, signature, "md5"))

    def test_json_callback_and_crc64(self):
        body = ('{"object":${object},"size":${size},"width":${imageInfo.width},'
                '"format":${imageInfo.format},"crc64":${crc64},"uid":${x:uid}}')
        reply = self.upload(callback_b64(self.app.url, body, "application/json"),
                            key="dir/check.txt", data=b"123456789", extra=[("x:uid", "7")])
        self.assertEqual(reply.status, 200, reply.body)
        (path, headers, sent), = self.app.requests
        self.assertEqual(path, "/")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(json.loads(sent), {"object": "dir/check.txt", "size": 9, "width": "",
                                            "format": "", "crc64": str(0x995DC9BBDF1939FA),
                                            "uid": "7"})
        signature = base64.b64decode(headers["authorization"])
        self.assertTrue(appserver.rsa_verify(self.public_key, b"/\n" + sent, signature, "md5"))

    def test_callback_host_and_second_url(self):
        closed = Recorder()
        closed_url = closed.url
        closed.stop()
        reply = self.upload(callback_b64(closed_url + ";" + self.app.url + "/second",
                                         host="app.example.com"))
        self.assertEqual(reply.status, 200, reply.body)
        (path, headers, _), = self.app.requests
        self.assertEqual((path, headers["Host"]), ("/second", "app.example.com"))

    def test_failures_give_203_and_keep_the_object(self):
        ok_type = {"Content-Type": "application/json"}
        cases = [
            ((500, ok_type, b'{"e":1}', 0), "Error status : 500."),
            ((200, ok_type, b"not json", 0), "Response body is not valid json format."),
            ((200, ok_type, b"\xef\xbb\xbf{}", 0), "Response body is not valid json format."),
            ((200, {**ok_type, "Omit": "1", "Connection": "close"}, b"{}", 0),
             "Error Status : 400.User server missing content-length"),
            ((200, {**ok_type, "Content-Length": "0"}, b"", 0),
             "Error Status : 400.User server return invalid content-length value"),
            ((200, {**ok_type, "Content-Length": str(2 * 1024 * 1024)}, b"", 0),
             "Error Status : 400.User server return too long content-length value"),
            ((200, ok_type, b"{}", 1.0), "Cost too long time"),
        ]
        for index, (answer, message) in enumerate(cases):
            with self.subTest(message):
                self.app.answer = answer
                key = f"dir/fail{index}.png"
                reply = self.upload(callback_b64(self.app.url), key=key)
                self.assert_error(reply, 203, "CallbackFailed", message)
                self.assertIn(b"<EC>0007-00000203</EC>", reply.body)
                self.assertTrue(self.emu.object_path(key).exists())
        closed = Recorder()
        closed.stop()
        reply = self.upload(callback_b64(closed.url), key="dir/refused.png")
        self.assert_error(reply, 203, "CallbackFailed", "Error Status : -1.OSS can not connect "
                          "to your callbackUrl, please check it")
        self.assertTrue(self.emu.object_path("dir/refused.png").exists())

    def test_invalid_callback_stores_nothing(self):
        reply = self.upload("not-base64!", key="dir/badcb.png")
        self.assert_error(reply, 400, "InvalidArgument",
                          "The callback configuration is not base64 encoded.")
        self.assert_not_stored("dir/badcb.png")
        self.assertEqual(self.app.requests, [])

    def test_pinned_callback_condition(self):
        pinned = callback_b64(self.app.url)
        policy = policy_b64([{"callback": pinned}])
        swapped = callback_b64(self.app.url + "/evil")
        reply = self.post(v1_fields(policy, key="dir/pin") + [("callback", swapped)])
        self.assert_error(reply, 403, "AccessDenied", "Invalid according to Policy: Policy "
                          f'Condition failed: ["eq", "$callback", "{pinned}"]')
        self.assert_not_stored("dir/pin")
        self.assertEqual(self.app.requests, [])


if __name__ == "__main__":
    unittest.main()
