"""The OSS emulator's object and bucket API (tests/oss_emulator.py), over real HTTP on 127.0.0.1:
signed HeadObject and GetObject (V1 and V4, in the Authorization header and presigned, with
STS tokens), GetBucketInfo, Get/Put/DeleteBucketCors and preflights that follow the stored
rules, the Date header and a skewed clock, several buckets chosen by the Host header, and the
faults (denied actions, a stalled or failing HeadObject).

No appserver.py here: requests are signed by the small signer below, written from the OSS
pages "Include a V1 signature in the Authorization header", "Include a V4 signature in the
Authorization header" and their presigned-URL counterparts, and checked against the vectors
made with the oss2 SDK (tests/data/oss_signer_vectors.json).
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
from email.utils import formatdate, parsedate_to_datetime
from typing import NamedTuple
from xml.etree import ElementTree

from tests import rsa_testkit as kit
from tests.cloud_emulators import CredentialStore
from tests.oss_emulator import BucketSpec, CorsRule, EmulatorServer
from tests.support import REPO
from tests.test_emulator_content_type import CallbackRecorder

DATA = REPO / "tests" / "data"
BUCKET = "examplebucket"
REGION = "cn-hangzhou"
AK, SECRET = "LTAItestowner", "owner-secret-0123"
TOKEN_AK, TOKEN_SECRET, TOKEN = "STS.primarykey", "primary-sts-secret", "CAIS.primary/+=token"
CRC64_OF_123456789 = "11051210869376104954"       # CRC-64/XZ check value, 0x995DC9BBDF1939FA


# -- an independent signer, from the documentation ------------------------------------------

V1_SUBRESOURCES = {"acl", "bucketInfo", "cors", "security-token", "response-content-type",
                   "response-content-disposition", "x-oss-process", "objectMeta"}


def _hex_sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _encode(text, safe=""):
    """RFC 3986: everything but A-Z a-z 0-9 - _ . ~ (and ``safe``) as %XX of the UTF-8 bytes."""
    return "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-_.~" + safe)
                   else "%%%02X" % b for b in text.encode("utf-8"))


class Signer:
    """Signs requests for one AccessKey (and its STS token), for one bucket and region."""

    def __init__(self, access_key_id=AK, secret=SECRET, token=None, bucket=BUCKET,
                 region=REGION):
        self.access_key_id, self.secret, self.token = access_key_id, secret, token
        self.bucket, self.region = bucket, region

    # V1: VERB \n Content-MD5 \n Content-Type \n Date \n CanonicalizedOSSHeaders + Resource
    def v1_string(self, method, key, query, headers, date):
        lower = {name.lower(): value for name, value in headers.items()}
        oss_headers = "".join("%s:%s\n" % (name, lower[name]) for name in sorted(lower)
                              if name.startswith("x-oss-"))
        resource = "/%s/%s" % (self.bucket, key)
        subresources = sorted((n, v) for n, v in query if n in V1_SUBRESOURCES)
        if subresources:
            resource += "?" + "&".join(n if not v else n + "=" + v for n, v in subresources)
        return "%s\n%s\n%s\n%s\n%s%s" % (method, lower.get("content-md5", ""),
                                         lower.get("content-type", ""), date, oss_headers,
                                         resource)

    def _v1_mac(self, text):
        return base64.b64encode(hmac.new(self.secret.encode(), text.encode("utf-8"),
                                         hashlib.sha1).digest()).decode()

    def v1_header(self, method, key="", query=(), headers=None, when=None):
        """(headers with Date and Authorization, string to sign)."""
        headers = dict(headers or {})
        if self.token:
            headers["x-oss-security-token"] = self.token
        headers.setdefault("Date", formatdate(time.time() if when is None else when, usegmt=True))
        text = self.v1_string(method, key, query, headers,
                              headers.get("x-oss-date") or headers["Date"])
        headers["Authorization"] = "OSS %s:%s" % (self.access_key_id, self._v1_mac(text))
        return headers, text

    def v1_presign(self, method, key, expires_at, query=()):
        """(query pairs of a presigned URL, string to sign)."""
        query = list(query) + ([("security-token", self.token)] if self.token else [])
        text = self.v1_string(method, key, query, {}, str(int(expires_at)))
        return query + [("OSSAccessKeyId", self.access_key_id), ("Expires", str(int(expires_at))),
                        ("Signature", self._v1_mac(text))], text

    # V4: OSS4-HMAC-SHA256 \n x-oss-date \n scope \n hex(SHA256(canonical request))
    def v4_canonical(self, method, key, query, headers, additional, payload):
        uri = _encode("/%s/%s" % (self.bucket, key), safe="/")
        pairs = sorted((_encode(n), _encode(v or "")) for n, v in query)
        lower = {name.lower(): value.strip() for name, value in headers.items()}
        signed = sorted(name for name in lower if name.startswith("x-oss-")
                        or name in ("content-type", "content-md5") or name in additional)
        return "\n".join([method, uri, "&".join(n + "=" + v if v else n for n, v in pairs),
                          "".join("%s:%s\n" % (name, lower[name]) for name in signed),
                          ";".join(sorted(additional)), payload])

    def _v4_sign(self, stamp, region, canonical):
        scope = "%s/%s/oss/aliyun_v4_request" % (stamp[:8], region)
        text = "OSS4-HMAC-SHA256\n%s\n%s\n%s" % (stamp, scope, _hex_sha256(canonical))
        key = ("aliyun_v4" + self.secret).encode()
        for part in (stamp[:8], region, "oss", "aliyun_v4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return scope, text, hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def stamp(when=None):
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))

    def v4_header(self, method, key="", query=(), headers=None, when=None, additional=(),
                  region=None):
        """(headers with x-oss-date, x-oss-content-sha256 and Authorization, canonical
        request, string to sign)."""
        headers = dict(headers or {})
        stamp = self.stamp(when)
        headers.update({"x-oss-date": stamp, "x-oss-content-sha256": "UNSIGNED-PAYLOAD"})
        if self.token:
            headers["x-oss-security-token"] = self.token
        canonical = self.v4_canonical(method, key, query, headers, additional,
                                      "UNSIGNED-PAYLOAD")
        scope, text, signature = self._v4_sign(stamp, region or self.region, canonical)
        authorization = "OSS4-HMAC-SHA256 Credential=%s/%s," % (self.access_key_id, scope)
        if additional:
            authorization += "AdditionalHeaders=%s," % ";".join(sorted(additional))
        headers["Authorization"] = authorization + "Signature=" + signature
        return headers, canonical, text

    def v4_presign(self, method, key, expires, query=(), when=None, headers=None,
                   additional=(), region=None):
        """(query pairs of a presigned URL, canonical request, string to sign)."""
        stamp = self.stamp(when)
        region = region or self.region
        query = list(query) + [
            ("x-oss-signature-version", "OSS4-HMAC-SHA256"),
            ("x-oss-credential", "%s/%s/%s/oss/aliyun_v4_request"
             % (self.access_key_id, stamp[:8], region)),
            ("x-oss-date", stamp), ("x-oss-expires", str(expires))]
        if self.token:
            query.append(("x-oss-security-token", self.token))
        if additional:
            query.append(("x-oss-additional-headers", ";".join(sorted(additional))))
        canonical = self.v4_canonical(method, key, query, headers or {}, additional,
                                      "UNSIGNED-PAYLOAD")
        _, text, signature = self._v4_sign(stamp, region, canonical)
        return query + [("x-oss-signature", signature)], canonical, text


def crc64_bitwise(data):
    """CRC-64/XZ one bit at a time: reflected polynomial 0xC96C5795D7870F42, init and
    xorout all ones."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


# -- HTTP --------------------------------------------------------------------------------------

class Reply(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def error(self):
        """{element: text} of an XML error body (nested elements by their own names)."""
        root = ElementTree.fromstring(self.body)
        assert root.tag == "Error", self.body
        return {element.tag: element.text or "" for element in root.iter()}


def target(key="", query=()):
    path = "/" + _encode(key, safe="/")
    if query:
        path += "?" + "&".join(_encode(n) + ("" if v is None else "=" + _encode(v))
                               for n, v in query)
    return path


def call(emulator, method, path, headers=None, body=b"", host=None, timeout=10):
    """One request on a new connection, with exactly the headers given (and Host)."""
    port = int(emulator.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host or emulator.netloc)
        for name, value in (headers or {}).items():
            conn.putheader(name, value.encode("utf-8"))
        if body or method in ("PUT", "POST"):
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body or None)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def cors_xml(rules, response_vary=None):
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<CORSConfiguration>']
    for rule in rules:
        parts.append("<CORSRule>")
        for tag, values in rule.items():
            for value in values if isinstance(values, list) else [values]:
                parts.append("<%s>%s</%s>" % (tag, value, tag))
        parts.append("</CORSRule>")
    if response_vary is not None:
        parts.append("<ResponseVary>%s</ResponseVary>" % response_vary)
    return ("".join(parts) + "</CORSConfiguration>").encode()


class EmulatorCase(unittest.TestCase):
    """One emulator for the class, built from ``options``, with a temporary root."""

    options = {}

    @classmethod
    def setUpClass(cls):
        tmp = tempfile.TemporaryDirectory()
        cls.addClassCleanup(tmp.cleanup)
        cls.emu = EmulatorServer(tmp.name, **cls.emulator_options()).start()
        cls.addClassCleanup(cls.emu.stop)

    @classmethod
    def emulator_options(cls):
        return dict({"bucket": BUCKET, "access_key_id": AK, "access_key_secret": SECRET,
                     "region": REGION}, **cls.options)

    def call(self, method, path, headers=None, **options):
        return call(self.emu, method, path, headers, **options)

    def assert_error(self, reply, status, code, message=None):
        self.assertEqual(reply.status, status, reply.body)
        self.assertEqual(reply.headers["Content-Type"], "application/xml")
        self.assertRegex(reply.headers["x-oss-request-id"], r"^[0-9A-F]{24}$")
        error = reply.error()
        self.assertEqual(error["Code"], code, reply.body)
        if message is not None:
            self.assertEqual(error["Message"], message)
        return error

    def assert_bare(self, reply, status, code=None):
        """A HEAD error: the status, no body, a request id, Content-Length 0 and the XML
        error in base64 in x-oss-err."""
        self.assertEqual(reply.status, status)
        self.assertEqual(reply.body, b"")
        self.assertEqual(reply.headers["Content-Length"], "0")
        self.assertRegex(reply.headers["x-oss-request-id"], r"^[0-9A-F]{24}$")
        if code is not None:
            detail = base64.b64decode(reply.headers["x-oss-err"])
            self.assertIn(("<Code>%s</Code>" % code).encode(), detail)


def date_header_time(reply):
    return parsedate_to_datetime(reply.headers["Date"]).timestamp()


# -- signed object reads -----------------------------------------------------------------------

class SignedReads(EmulatorCase):
    options = {"acl": "private"}
    KEYS = ("check.txt", "dir/a b+c.txt", "für/中文/über 文.txt", "x/~tilde*star%25.txt",
            "q/what?&=#.bin")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for key in cls.KEYS:
            cls.emu.put_object(key, b"123456789" if key == "check.txt" else key.encode(),
                               "text/plain")
        cls.signer = Signer()

    def forms(self, method, key, query=()):
        """(name, path, headers) of the request signed in each of the four ways."""
        v1_headers, _ = self.signer.v1_header(method, key, query)
        v4_headers, _, _ = self.signer.v4_header(method, key, query)
        v1_query, _ = self.signer.v1_presign(method, key, time.time() + 60, query)
        v4_query, _, _ = self.signer.v4_presign(method, key, 60, query)
        return [("v1 header", target(key, query), v1_headers),
                ("v4 header", target(key, query), v4_headers),
                ("v1 presigned", target(key, v1_query), {}),
                ("v4 presigned", target(key, v4_query), {})]

    def test_anonymous_reads_of_a_private_bucket_are_refused(self):
        self.assert_error(self.call("GET", "/check.txt"), 403, "AccessDenied",
                          "You have no right to access this object because of bucket acl.")
        self.assert_bare(self.call("HEAD", "/check.txt"), 403, "AccessDenied")

    def test_head_object_in_each_signature_form_gives_the_object_headers(self):
        for name, path, headers in self.forms("HEAD", "check.txt"):
            with self.subTest(name):
                reply = self.call("HEAD", path, headers)
                self.assertEqual(reply.status, 200, reply.headers.get("x-oss-err"))
                self.assertEqual(reply.body, b"")
                self.assertEqual(reply.headers["Content-Length"], "9")
                self.assertEqual(reply.headers["Content-Type"], "text/plain")
                md5 = hashlib.md5(b"123456789")
                self.assertEqual(reply.headers["ETag"], '"%s"' % md5.hexdigest().upper())
                self.assertEqual(reply.headers["Content-MD5"],
                                 base64.b64encode(md5.digest()).decode())
                self.assertEqual(reply.headers["x-oss-hash-crc64ecma"], CRC64_OF_123456789)
                self.assertEqual(reply.headers["x-oss-object-type"], "Normal")
                self.assertIsNotNone(parsedate_to_datetime(reply.headers["Last-Modified"]))
                self.assertLess(abs(date_header_time(reply) - time.time()), 5)

    def test_get_object_in_each_signature_form_for_awkward_keys(self):
        for key in self.KEYS[1:]:
            for name, path, headers in self.forms("GET", key):
                with self.subTest(key=key, form=name):
                    reply = self.call("GET", path, headers)
                    self.assertEqual((reply.status, reply.body), (200, key.encode()))

    def test_a_response_override_is_a_signed_subresource(self):
        query = [("response-content-type", "image/png"),
                 ("response-content-disposition", 'attachment; filename="c ü.txt"')]
        for name, path, headers in self.forms("GET", "check.txt", query):
            with self.subTest(name):
                reply = self.call("GET", path, headers)
                self.assertEqual(reply.status, 200)
                self.assertEqual(reply.headers["Content-Type"], "image/png")
                self.assertEqual(reply.headers["Content-Disposition"].encode("latin-1"),
                                 'attachment; filename="c ü.txt"'.encode("utf-8"))
        headers, _ = self.signer.v1_header("GET", "check.txt", query)
        tampered = target("check.txt", [("response-content-type", "text/html")])
        self.assert_error(self.call("GET", tampered, headers), 403, "SignatureDoesNotMatch")

    def test_a_missing_key_is_a_bare_404_to_head_and_nosuchkey_to_get(self):
        headers, _ = self.signer.v1_header("HEAD", "nothing/here.txt")
        self.assert_bare(self.call("HEAD", "/nothing/here.txt", headers), 404, "NoSuchKey")
        headers, _ = self.signer.v1_header("GET", "nothing/here.txt")
        self.assert_error(self.call("GET", "/nothing/here.txt", headers), 404, "NoSuchKey",
                          "The specified key does not exist.")

    def test_v1_signature_mismatch_echoes_the_string_to_sign(self):
        wrong = Signer(secret="not-the-secret")
        headers, text = wrong.v1_header("GET", "check.txt")
        error = self.assert_error(self.call("GET", "/check.txt", headers), 403,
                                  "SignatureDoesNotMatch")
        self.assertEqual(error["StringToSign"], text)
        self.assertEqual(error["StringToSignBytes"],
                         " ".join("%02X" % b for b in text.encode()))
        self.assertEqual(error["OSSAccessKeyId"], AK)
        self.assertEqual(error["SignatureProvided"], headers["Authorization"].split(":")[1])
        headers, _ = wrong.v1_header("HEAD", "check.txt")
        self.assert_bare(self.call("HEAD", "/check.txt", headers), 403, "SignatureDoesNotMatch")

    def test_v4_signature_mismatch_echoes_the_canonical_request(self):
        headers, canonical, text = Signer(secret="not-the-secret").v4_header("GET", "check.txt")
        error = self.assert_error(self.call("GET", "/check.txt", headers), 403,
                                  "SignatureDoesNotMatch")
        self.assertEqual(error["CanonicalRequest"], canonical)
        self.assertEqual(error["StringToSign"], text)
        # A header that is signed but changed on the way: the canonical request shows it.
        headers, canonical, _ = self.signer.v4_header("GET", "check.txt",
                                                      headers={"x-oss-meta-a": "1"})
        headers["x-oss-meta-a"] = "2"
        error = self.assert_error(self.call("GET", "/check.txt", headers), 403,
                                  "SignatureDoesNotMatch")
        self.assertEqual(error["CanonicalRequest"], canonical.replace("x-oss-meta-a:1",
                                                                      "x-oss-meta-a:2"))

    def test_presigned_urls_bind_method_and_key(self):
        for version in ("v1", "v4"):
            with self.subTest(version):
                if version == "v1":
                    query, text = self.signer.v1_presign("GET", "check.txt", time.time() + 60)
                else:
                    query, _, text = self.signer.v4_presign("GET", "check.txt", 60)
                error = self.assert_error(self.call("GET", target("dir/a b+c.txt", query)), 403,
                                          "SignatureDoesNotMatch")
                self.assertNotEqual(error["StringToSign"], text)
                self.assert_bare(self.call("HEAD", target("check.txt", query)), 403,
                                 "SignatureDoesNotMatch")
                self.assertEqual(self.call("GET", target("check.txt", query)).status, 200)

    def test_an_unknown_access_key_is_invalid_access_key_id(self):
        stranger = Signer(access_key_id="LTAIunknown")
        for name, path, headers in [
                ("v1", "/check.txt", stranger.v1_header("GET", "check.txt")[0]),
                ("v4", "/check.txt", stranger.v4_header("GET", "check.txt")[0]),
                ("v1 url", target("check.txt", stranger.v1_presign("GET", "check.txt",
                                                                   time.time() + 60)[0]), {}),
                ("v4 url", target("check.txt", stranger.v4_presign("GET", "check.txt", 60)[0]),
                 {})]:
            with self.subTest(name):
                self.assert_error(self.call("GET", path, headers), 403, "InvalidAccessKeyId")

    def test_a_clock_more_than_15_minutes_off_is_request_time_too_skewed(self):
        for offset, ok in ((-16 * 60, False), (16 * 60, False), (-14 * 60, True),
                           (14 * 60, True)):
            for version in ("v1", "v4"):
                with self.subTest(offset=offset, version=version):
                    when = time.time() + offset
                    if version == "v1":
                        headers, _ = self.signer.v1_header("GET", "check.txt", when=when)
                    else:
                        headers, _, _ = self.signer.v4_header("GET", "check.txt", when=when)
                    reply = self.call("GET", "/check.txt", headers)
                    if ok:
                        self.assertEqual(reply.status, 200, reply.body)
                        continue
                    error = self.assert_error(reply, 403, "RequestTimeTooSkewed")
                    self.assertEqual(error["RequestTime"], time.strftime(
                        "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(int(when))))
                    self.assertIn("ServerTime", error)

    def test_v1_needs_a_date_and_prefers_x_oss_date(self):
        headers, _ = self.signer.v1_header("GET", "check.txt")
        del headers["Date"]
        self.assert_error(self.call("GET", "/check.txt", headers), 403, "AccessDenied")
        # x-oss-date (RFC 1123, as ali-oss sends it) takes the place of a stale Date.
        now = formatdate(time.time(), usegmt=True)
        headers, text = self.signer.v1_header("GET", "check.txt", headers={
            "Date": "Mon, 01 Jan 2001 00:00:00 GMT", "x-oss-date": now})
        self.assertIn("\n%s\n" % now, text)
        self.assertEqual(self.call("GET", "/check.txt", headers).status, 200)

    def test_expired_presigned_urls_are_access_denied(self):
        query, _ = self.signer.v1_presign("GET", "check.txt", time.time() - 5)
        error = self.assert_error(self.call("GET", target("check.txt", query)), 403,
                                  "AccessDenied", "Request has expired.")
        self.assertIn("ServerTime", error)
        query, _, _ = self.signer.v4_presign("GET", "check.txt", 60, when=time.time() - 120)
        self.assert_error(self.call("GET", target("check.txt", query)), 403, "AccessDenied",
                          "Request has expired.")
        self.assert_bare(self.call("HEAD", target("check.txt", query)), 403, "AccessDenied")
        # still valid a second before the end of x-oss-expires
        query, _, _ = self.signer.v4_presign("GET", "check.txt", 120, when=time.time() - 110)
        self.assertEqual(self.call("GET", target("check.txt", query)).status, 200)
        query, _, _ = self.signer.v4_presign("GET", "check.txt", 604801)
        self.assert_error(self.call("GET", target("check.txt", query)), 400, "InvalidArgument")
        query, _, _ = self.signer.v4_presign("GET", "check.txt", 60, when=time.time() + 20 * 60)
        self.assert_error(self.call("GET", target("check.txt", query)), 403,
                          "RequestTimeTooSkewed")

    def test_a_v4_signature_for_another_region_is_invalid_argument(self):
        headers, _, _ = self.signer.v4_header("GET", "check.txt", region="cn-beijing")
        error = self.assert_error(self.call("GET", "/check.txt", headers), 400,
                                  "InvalidArgument",
                                  "The signing region in credential is invalid.")
        self.assertIn("/cn-beijing/oss/aliyun_v4_request", error["ArgumentValue"])
        query, _, _ = self.signer.v4_presign("GET", "check.txt", 60, region="cn-beijing")
        self.assert_error(self.call("GET", target("check.txt", query)), 400, "InvalidArgument")
        headers, _, _ = self.signer.v4_header("HEAD", "check.txt", region="cn-beijing")
        self.assert_bare(self.call("HEAD", "/check.txt", headers), 400, "InvalidArgument")

    def test_additional_headers_such_as_host_are_signed(self):
        host = "%s.%s" % (BUCKET, self.emu.netloc)
        headers, canonical, _ = self.signer.v4_header("GET", "check.txt",
                                                      headers={"Host": host},
                                                      additional=("host",))
        self.assertIn("\nhost:%s\n" % host, canonical)
        del headers["Host"]
        self.assertEqual(self.call("GET", "/check.txt", headers, host=host).status, 200)
        other = "%s.other.test:1" % BUCKET
        self.assert_error(self.call("GET", "/check.txt", headers, host=other), 403,
                          "SignatureDoesNotMatch")
        query, _, _ = self.signer.v4_presign("GET", "check.txt", 60, headers={"Host": host},
                                             additional=("host",))
        self.assertEqual(self.call("GET", target("check.txt", query), host=host).status, 200)
        self.assert_error(self.call("GET", target("check.txt", query), host=other), 403,
                          "SignatureDoesNotMatch")

    def test_authorization_headers_in_the_sdks_spellings(self):
        headers, _, _ = self.signer.v4_header("GET", "check.txt", headers={"Host": "h.test"},
                                              additional=("host",))
        del headers["Host"]
        credential, additional, signature = headers["Authorization"][17:].split(",")
        # oss2 puts ", " between the pairs and AdditionalHeaders last.
        headers["Authorization"] = "OSS4-HMAC-SHA256 %s, %s, %s" % (credential, signature,
                                                                    additional)
        reply = self.call("GET", "/check.txt", headers, host="h.test")
        self.assertEqual(reply.status, 200, reply.body)
        for bad in ("OSS4-HMAC-SHA256 Credential=%s" % credential[11:],
                    headers["Authorization"] + ", Extra=1",
                    "OSS %s" % AK, "AWS %s:x" % AK, "Bearer token"):
            with self.subTest(bad):
                self.assert_error(self.call("GET", "/check.txt", dict(headers, Authorization=bad),
                                            host="h.test"), 400, "InvalidArgument")
        headers, _ = self.signer.v1_header("GET", "check.txt")
        query, _ = self.signer.v1_presign("GET", "check.txt", time.time() + 60)
        self.assert_error(self.call("GET", target("check.txt", query), headers), 400,
                          "InvalidArgument")

    def test_v4_needs_x_oss_date_and_a_payload_hash(self):
        headers, _, _ = self.signer.v4_header("GET", "check.txt")
        self.assert_error(self.call("GET", "/check.txt", dict(headers, **{
            "x-oss-content-sha256": "deadbeef"})), 400, "InvalidArgument")
        del headers["x-oss-date"]
        self.assert_error(self.call("GET", "/check.txt", headers), 403, "AccessDenied")

    def test_get_bucket_info_needs_a_signature_and_describes_the_bucket(self):
        self.assert_error(self.call("GET", "/?bucketInfo"), 403, "AccessDenied")
        for version in ("v1", "v4"):
            with self.subTest(version):
                if version == "v1":
                    headers, _ = self.signer.v1_header("GET", "", [("bucketInfo", None)])
                else:
                    headers, _, _ = self.signer.v4_header("GET", "", [("bucketInfo", None)])
                reply = self.call("GET", "/?bucketInfo", headers)
                self.assertEqual(reply.status, 200, reply.body)
                self.assertEqual(reply.headers["Content-Type"], "application/xml")
                root = ElementTree.fromstring(reply.body)
                self.assertEqual(root.tag, "BucketInfo")
                bucket = root.find("Bucket")
                self.assertEqual(bucket.findtext("Name"), BUCKET)
                self.assertEqual(bucket.findtext("Location"), "oss-cn-hangzhou")
                self.assertEqual(bucket.findtext("ExtranetEndpoint"),
                                 "oss-cn-hangzhou.aliyuncs.com")
                self.assertEqual(bucket.findtext("IntranetEndpoint"),
                                 "oss-cn-hangzhou-internal.aliyuncs.com")
                self.assertEqual(bucket.findtext("StorageClass"), "Standard")
                self.assertEqual(bucket.findtext("AccessControlList/Grant"), "private")
                self.assertRegex(bucket.findtext("CreationDate"),
                                 r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$")
                self.assertTrue(bucket.findtext("Owner/ID"))

    def test_calls_the_emulator_does_not_implement(self):
        headers, _ = self.signer.v1_header("PUT", "check.txt")
        self.assert_error(self.call("PUT", "/check.txt", headers), 501, "NotImplemented")
        headers, _ = self.signer.v1_header("DELETE", "check.txt")
        self.assert_error(self.call("DELETE", "/check.txt", headers), 501, "NotImplemented")


class SecurityTokens(EmulatorCase):
    """The primary key has a security token, and a CredentialStore lends temporary keys."""

    @classmethod
    def emulator_options(cls):
        cls.store = CredentialStore()
        return {"bucket": BUCKET, "access_key_id": TOKEN_AK, "access_key_secret": TOKEN_SECRET,
                "security_token": TOKEN, "region": REGION, "acl": "private",
                "credential_store": cls.store}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu.put_object("a.txt", b"A")

    def attempts(self, signer):
        """(name, path, headers) of GET a.txt in the four forms."""
        return [("v1", "/a.txt", signer.v1_header("GET", "a.txt")[0]),
                ("v4", "/a.txt", signer.v4_header("GET", "a.txt")[0]),
                ("v1 url", target("a.txt", signer.v1_presign("GET", "a.txt",
                                                            time.time() + 60)[0]), {}),
                ("v4 url", target("a.txt", signer.v4_presign("GET", "a.txt", 60)[0]), {})]

    def test_the_token_is_required_and_must_be_the_right_one(self):
        held = self.store.issue(600, "test")
        for who, access_key_id, secret, token in (
                ("primary", TOKEN_AK, TOKEN_SECRET, TOKEN),
                ("store", held.access_key_id, held.access_key_secret, held.security_token)):
            for name, path, headers in self.attempts(Signer(access_key_id, secret, token)):
                with self.subTest(who=who, form=name):
                    self.assertEqual(self.call("GET", path, headers).status, 200)
            for name, path, headers in self.attempts(Signer(access_key_id, secret)):
                with self.subTest(who=who, form=name, token="none"):
                    self.assert_error(self.call("GET", path, headers), 403, "InvalidAccessKeyId")
            for name, path, headers in self.attempts(Signer(access_key_id, secret, "CAISwrong")):
                with self.subTest(who=who, form=name, token="wrong"):
                    self.assert_error(self.call("GET", path, headers), 403,
                                      "InvalidSecurityToken")

    def test_a_revoked_or_expired_temporary_key_is_unknown(self):
        held = self.store.issue(600, "test")
        signer = Signer(held.access_key_id, held.access_key_secret, held.security_token)
        self.store.revoke(held.access_key_id)
        for name, path, headers in self.attempts(signer):
            with self.subTest(name):
                self.assert_error(self.call("GET", path, headers), 403, "InvalidAccessKeyId")
        gone = self.store.issue(600, "test", expiration=time.time() - 1)
        headers, _ = Signer(gone.access_key_id, gone.access_key_secret,
                            gone.security_token).v1_header("GET", "a.txt")
        self.assert_error(self.call("GET", "/a.txt", headers), 403, "InvalidAccessKeyId")


class PublicRead(EmulatorCase):
    """The default ACL, public-read: anonymous reads work as before."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu.put_object("pub/a.json", b'{"a": 1}', headers={"Cache-Control": "no-cache"},
                           meta={"x-oss-meta-owner": "ann"})

    def test_anonymous_get_and_head_serve_the_object(self):
        reply = self.call("GET", target("pub/a.json", [("response-content-type", "text/html")]))
        self.assertEqual((reply.status, reply.body), (200, b'{"a": 1}'))
        self.assertEqual(reply.headers["Content-Type"], "application/json")   # not overridden
        self.assertEqual(reply.headers["Cache-Control"], "no-cache")
        self.assertEqual(reply.headers["x-oss-meta-owner"], "ann")
        self.assertEqual(self.call("HEAD", "/pub/a.json").headers["Content-Length"], "8")
        self.assert_bare(self.call("HEAD", "/pub/missing"), 404, "NoSuchKey")
        self.assertEqual(self.emu.get_object("pub/a.json"), b'{"a": 1}')
        self.assertIsNone(self.emu.get_object("pub/missing"))

    def test_a_bad_signature_is_refused_even_where_anonymous_reads_work(self):
        headers, _ = Signer(secret="wrong").v1_header("GET", "pub/a.json")
        self.assert_error(self.call("GET", "/pub/a.json", headers), 403,
                          "SignatureDoesNotMatch")
        headers, _ = Signer(token="CAISunexpected").v1_header("GET", "pub/a.json")
        self.assert_error(self.call("GET", "/pub/a.json", headers), 403, "InvalidSecurityToken")

    def test_bucket_calls_are_never_anonymous(self):
        for path in ("/?bucketInfo", "/?cors"):
            with self.subTest(path):
                self.assert_error(self.call("GET", path), 403, "AccessDenied")
        self.assert_error(self.call("PUT", "/?cors", body=cors_xml([
            {"AllowedOrigin": "*", "AllowedMethod": "GET"}])), 403, "AccessDenied")

    def test_head_gives_the_crc64_of_what_postobject_stored(self):
        self.assertEqual(str(crc64_bitwise(b"123456789")), CRC64_OF_123456789)
        reply = self.emu.post_object("up/check.txt", b"123456789")
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(self.call("HEAD", "/up/check.txt").headers["x-oss-hash-crc64ecma"],
                         CRC64_OF_123456789)
        # across the emulator's 8 KB blocks, against a bit-at-a-time CRC-64/XZ
        for size in (8191, 8192, 8193, 3 * 8192 + 100):
            with self.subTest(size):
                data = os.urandom(size)
                self.assertEqual(self.emu.post_object("up/r.bin", data).status, 200)
                self.assertEqual(self.call("HEAD", "/up/r.bin").headers["x-oss-hash-crc64ecma"],
                                 str(crc64_bitwise(data)))


# -- CORS --------------------------------------------------------------------------------------

class BucketCors(EmulatorCase):
    options = {"cors_origins": ("http://app.test",)}

    def setUp(self):
        self.signer = Signer()
        self.emu.set_cors_rules([CorsRule(["http://app.test"], ["GET", "HEAD", "POST"], ["*"],
                                          ["ETag", "x-oss-request-id"], 600)],
                                response_vary=True)
        self.emu.put_object("c.txt", b"cors")

    def get_cors(self):
        headers, _, _ = self.signer.v4_header("GET", "", [("cors", None)])
        return self.call("GET", "/?cors", headers)

    def put_cors(self, body, md5=True, version="v4"):
        extra = {"Content-Type": "application/xml"}
        if md5:
            extra["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
        if version == "v4":
            headers, _, _ = self.signer.v4_header("PUT", "", [("cors", None)], headers=extra)
        else:
            headers, _ = self.signer.v1_header("PUT", "", [("cors", None)], headers=extra)
        return self.call("PUT", "/?cors", headers, body=body)

    def preflight(self, origin, method, request_headers=None):
        headers = {"Origin": origin, "Access-Control-Request-Method": method}
        if request_headers:
            headers["Access-Control-Request-Headers"] = request_headers
        return self.call("OPTIONS", "/c.txt", headers)

    def test_the_seeded_rule_as_get_bucket_cors_shows_it(self):
        reply = self.get_cors()
        self.assertEqual(reply.status, 200, reply.body)
        root = ElementTree.fromstring(reply.body)
        self.assertEqual(root.tag, "CORSConfiguration")
        (rule,) = root.findall("CORSRule")
        self.assertEqual([e.text for e in rule.findall("AllowedOrigin")], ["http://app.test"])
        self.assertEqual([e.text for e in rule.findall("AllowedMethod")], ["GET", "HEAD", "POST"])
        self.assertEqual([e.text for e in rule.findall("AllowedHeader")], ["*"])
        self.assertEqual([e.text for e in rule.findall("ExposeHeader")],
                         ["ETag", "x-oss-request-id"])
        self.assertEqual(rule.findtext("MaxAgeSeconds"), "600")
        self.assertEqual(root.findtext("ResponseVary"), "true")

    def test_put_bucket_cors_round_trip_and_its_effect_on_preflights(self):
        rules = [{"AllowedOrigin": ["https://a.example.com", "https://*.shared.test"],
                  "AllowedMethod": ["GET", "PUT"], "AllowedHeader": ["x-oss-*", "content-type"],
                  "ExposeHeader": ["ETag"], "MaxAgeSeconds": "100"},
                 {"AllowedOrigin": "*", "AllowedMethod": ["GET", "HEAD"],
                  "ExposeHeader": ["x-oss-request-id", "x-oss-hash-crc64ecma"],
                  "MaxAgeSeconds": "200"}]
        for version in ("v1", "v4"):
            with self.subTest(version):
                reply = self.put_cors(cors_xml(rules, "false"), version=version)
                self.assertEqual((reply.status, reply.body), (200, b""))
        reply = self.get_cors()
        root = ElementTree.fromstring(reply.body)
        self.assertEqual([[e.text for e in r] for r in root.findall("CORSRule")], [
            ["https://a.example.com", "https://*.shared.test", "GET", "PUT", "x-oss-*",
             "content-type", "ETag", "100"],
            ["*", "GET", "HEAD", "x-oss-request-id", "x-oss-hash-crc64ecma", "200"]])
        self.assertEqual(root.findtext("ResponseVary"), "false")
        self.assertEqual(self.emu.cors_rules[0].allowed_headers, ("x-oss-*", "content-type"))
        self.assertEqual(self.emu.cors_rules[1].max_age_seconds, 200)

        # The first matching rule answers.
        reply = self.preflight("https://a.example.com", "PUT", "x-oss-meta-a, Content-Type")
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers["Access-Control-Allow-Origin"], "https://a.example.com")
        self.assertEqual(reply.headers["Access-Control-Allow-Methods"], "GET, PUT")
        self.assertEqual(reply.headers["Access-Control-Allow-Headers"],
                         "x-oss-meta-a, Content-Type")
        self.assertEqual(reply.headers["Access-Control-Max-Age"], "100")
        self.assertIsNone(reply.headers["Vary"])
        reply = self.preflight("https://x.shared.test", "GET")
        self.assertEqual(reply.headers["Access-Control-Max-Age"], "100")
        # GET from another origin falls through to the second rule; a header the first
        # rule does not allow makes it fall through too.
        reply = self.preflight("https://other.test", "GET")
        self.assertEqual((reply.status, reply.headers["Access-Control-Allow-Origin"],
                          reply.headers["Access-Control-Max-Age"]), (200, "*", "200"))
        reply = self.preflight("https://a.example.com", "GET", "x-requested-with")
        self.assertEqual(reply.status, 403)
        reply = self.preflight("https://a.example.com", "HEAD")
        self.assertEqual((reply.status, reply.headers["Access-Control-Max-Age"]), (200, "200"))
        for origin, method in (("https://other.test", "PUT"), ("https://a.example.com", "POST"),
                               ("https://a.example.com", "")):
            with self.subTest(origin=origin, method=method):
                reply = self.preflight(origin, method)
                self.assert_error(reply, 403, "AccessForbidden")
                self.assertIsNone(reply.headers["Access-Control-Allow-Origin"])
        # A plain request with an Origin gets the matching rule's headers.
        reply = self.call("GET", "/c.txt", {"Origin": "https://a.example.com"})
        self.assertEqual(reply.headers["Access-Control-Allow-Origin"], "https://a.example.com")
        self.assertEqual(reply.headers["Access-Control-Expose-Headers"], "ETag")
        reply = self.call("HEAD", "/c.txt", {"Origin": "https://b.test"})
        self.assertEqual(reply.headers["Access-Control-Allow-Origin"], "*")
        self.assertEqual(reply.headers["Access-Control-Expose-Headers"],
                         "x-oss-request-id, x-oss-hash-crc64ecma")
        reply = self.call("POST", "/c.txt", {"Origin": "https://b.test"})
        self.assertIsNone(reply.headers["Access-Control-Allow-Origin"])

    def test_response_vary_puts_vary_origin_on_every_answer(self):
        self.assertEqual(self.put_cors(cors_xml([{"AllowedOrigin": "https://a.test",
                                                  "AllowedMethod": "GET"}], "true")).status, 200)
        for reply in (self.call("GET", "/c.txt"), self.call("GET", "/c.txt", {"Origin": "x"}),
                      self.preflight("https://a.test", "GET"), self.call("GET", "/nope")):
            self.assertEqual(reply.headers["Vary"], "Origin")

    def test_put_bucket_cors_refuses_what_the_page_forbids(self):
        many = [{"AllowedOrigin": "https://%d.test" % i, "AllowedMethod": "GET"}
                for i in range(21)]
        cases = [
            ("not xml", b"<CORSConfiguration><CORSRule>", "MalformedXML"),
            ("wrong root", b"<CORS><CORSRule/></CORS>", "MalformedXML"),
            ("no rule", cors_xml([]), "MalformedXML"),
            ("unknown element", cors_xml([{"AllowedOrigin": "*", "AllowedMethod": "GET",
                                           "Color": "red"}]), "MalformedXML"),
            ("no method", cors_xml([{"AllowedOrigin": "*"}]), "MalformedXML"),
            ("max age twice", cors_xml([{"AllowedOrigin": "*", "AllowedMethod": "GET",
                                         "MaxAgeSeconds": ["1", "2"]}]), "MalformedXML"),
            ("vary not boolean", cors_xml([{"AllowedOrigin": "*", "AllowedMethod": "GET"}],
                                          "yes"), "MalformedXML"),
            ("21 rules", cors_xml(many), "InvalidArgument"),
            ("bad method", cors_xml([{"AllowedOrigin": "*", "AllowedMethod": "PATCH"}]),
             "InvalidArgument"),
            ("two wildcards", cors_xml([{"AllowedOrigin": "https://*.*.test",
                                         "AllowedMethod": "GET"}]), "InvalidArgument"),
            ("wildcard expose", cors_xml([{"AllowedOrigin": "*", "AllowedMethod": "GET",
                                           "ExposeHeader": "*"}]), "InvalidArgument"),
        ]
        for name, body, code in cases:
            with self.subTest(name):
                self.assert_error(self.put_cors(body), 400, code)
        self.assertEqual(self.put_cors(cors_xml(many[:20])).status, 200)
        body = cors_xml([{"AllowedOrigin": "*", "AllowedMethod": "GET"}])
        headers, _, _ = self.signer.v4_header("PUT", "", [("cors", None)], headers={
            "Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()})
        self.assert_error(self.call("PUT", "/?cors", headers, body=body), 400, "InvalidDigest")
        self.assertEqual(len(self.emu.cors_rules), 20)       # nothing refused was stored
        self.assertEqual(self.put_cors(body, md5=False).status, 200)
        self.assertEqual(self.emu.cors_rules, [CorsRule(("*",), ("GET",))])

    def test_delete_bucket_cors_leaves_no_configuration(self):
        headers, _ = self.signer.v1_header("DELETE", "", [("cors", None)])
        reply = self.call("DELETE", "/?cors", headers)
        self.assertEqual((reply.status, reply.body), (204, b""))
        self.assert_error(self.get_cors(), 404, "NoSuchCORSConfiguration",
                          "The CORS configuration does not exist.")
        self.assertEqual(self.emu.cors_rules, [])
        self.assert_error(self.preflight("http://app.test", "GET"), 403, "AccessForbidden",
                          "CORSResponse: CORS is not enabled for this bucket.")
        reply = self.call("GET", "/c.txt", {"Origin": "http://app.test"})
        self.assertEqual(reply.status, 200)
        self.assertIsNone(reply.headers["Access-Control-Allow-Origin"])


class NoCorsAtStart(EmulatorCase):
    options = {"cors_origins": None,
               "extra_buckets": [BucketSpec("rulesbucket", "ak2", "sk2", cors_rules=[
                   CorsRule(["https://one.test"], ["GET"], max_age_seconds=5),
                   CorsRule(["*"], ["POST"])], cors_response_vary=False)]}

    def test_no_configuration_and_arbitrary_rules(self):
        headers, _ = Signer().v1_header("GET", "", [("cors", None)])
        self.assert_error(self.call("GET", "/?cors", headers), 404, "NoSuchCORSConfiguration")
        self.assertEqual(self.emu.cors_rules, [])
        host = self.emu.host_header("rulesbucket")
        headers, _ = Signer("ak2", "sk2", bucket="rulesbucket").v1_header(
            "GET", "", [("cors", None)])
        reply = self.call("GET", "/?cors", headers, host=host)
        self.assertEqual(reply.status, 200, reply.body)
        self.assertEqual(len(ElementTree.fromstring(reply.body).findall("CORSRule")), 2)
        self.assertEqual(self.emu.get_cors_rules("rulesbucket")[1].allowed_methods, ("POST",))
        reply = self.call("OPTIONS", "/", {"Origin": "https://one.test",
                                           "Access-Control-Request-Method": "POST"}, host=host)
        self.assertEqual((reply.status, reply.headers["Access-Control-Allow-Origin"]), (200, "*"))


# -- the Date header and the clock -----------------------------------------------------------

class FixedClock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


class ClockAndDate(EmulatorCase):
    BASE = 1_800_000_000.0            # 2027-01-15T08:00:00Z

    @classmethod
    def emulator_options(cls):
        cls.clock = FixedClock(cls.BASE)
        return dict(super().emulator_options(), clock=cls.clock, clock_skew=3600)

    def setUp(self):
        self.emu.clock_skew = 3600

    def test_every_answer_has_a_date_from_the_emulator_clock(self):
        self.emu.put_object("d.txt", b"d")
        expected = formatdate(self.BASE + 3600, usegmt=True)
        replies = [self.call("GET", "/d.txt"), self.call("HEAD", "/d.txt"),
                   self.call("GET", "/missing"), self.call("HEAD", "/missing"),
                   self.call("OPTIONS", "/", {"Origin": "x",
                                              "Access-Control-Request-Method": "GET"}),
                   self.call("GET", "/?bucketInfo"),
                   self.call("GET", "/__oss_emulator__/callback_pub_key.pem")]
        replies.append(self.emu.post_object("d2.txt", b"x"))
        for reply in replies:
            self.assertEqual(reply.headers["Date"], expected)
        self.assertEqual(self.emu.now(), self.BASE + 3600)
        self.assertEqual(ElementTree.fromstring(self.emu_info()).findtext("Bucket/CreationDate"),
                         "2027-01-15T09:00:00.000Z")

    def emu_info(self):
        headers, _ = Signer().v1_header("GET", "", [("bucketInfo", None)], when=self.BASE + 3600)
        return self.call("GET", "/?bucketInfo", headers).body

    def test_a_skew_of_an_hour_makes_correct_clients_too_skewed(self):
        for version in ("v1", "v4"):
            with self.subTest(version):
                if version == "v1":
                    headers, _ = Signer().v1_header("GET", "", [("bucketInfo", None)],
                                                    when=self.BASE)
                else:
                    headers, _, _ = Signer().v4_header("GET", "", [("bucketInfo", None)],
                                                       when=self.BASE)
                reply = self.call("GET", "/?bucketInfo", headers)
                error = self.assert_error(reply, 403, "RequestTimeTooSkewed")
                self.assertEqual(error["ServerTime"], "2027-01-15T09:00:00.000Z")
                self.assertEqual(error["RequestTime"], "2027-01-15T08:00:00.000Z")
                # what a --check measures: the server's Date against the request's
                self.assertEqual(date_header_time(reply) - self.BASE, 3600)
        self.emu.clock_skew = -600
        headers, _ = Signer().v1_header("GET", "", [("bucketInfo", None)], when=self.BASE)
        reply = self.call("GET", "/?bucketInfo", headers)
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers["Date"], formatdate(self.BASE - 600, usegmt=True))


# -- several buckets in one emulator ---------------------------------------------------------

EVIL, EVIL_AK, EVIL_SECRET, EVIL_REGION = "attackerbucket", "LTAIattacker", "evil-secret", \
    "cn-shanghai"


class SeveralBuckets(EmulatorCase):
    options = {"extra_buckets": [BucketSpec(EVIL, EVIL_AK, EVIL_SECRET, region=EVIL_REGION,
                                            acl="private", cors_origins=None)]}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu.put_object("same.txt", b"ours")
        cls.emu.put_object("same.txt", b"theirs", bucket=EVIL)
        cls.evil_host = cls.emu.host_header(EVIL)
        cls.evil = Signer(EVIL_AK, EVIL_SECRET, bucket=EVIL, region=EVIL_REGION)

    def test_the_host_header_picks_the_bucket(self):
        self.assertEqual(self.evil_host, "%s.%s" % (EVIL, self.emu.netloc))
        # request by request, also on one kept-alive connection
        conn = http.client.HTTPConnection("127.0.0.1", int(self.emu.url.rsplit(":", 1)[1]),
                                          timeout=10)
        self.addCleanup(conn.close)
        for host, status in ((self.emu.netloc, 200), (self.evil_host, 403),
                             (self.emu.netloc, 200)):
            conn.request("GET", "/same.txt", headers={"Host": host})
            response = conn.getresponse()
            response.read()
            self.assertEqual(response.status, status, host)
        self.assertEqual(self.call("GET", "/same.txt").body, b"ours")
        self.assertEqual(self.call("GET", "/same.txt", host="unknown.%s" % self.emu.netloc).body,
                         b"ours")
        self.assertEqual(self.call("GET", "/same.txt", host="%s.%s" % (BUCKET, self.emu.netloc))
                         .body, b"ours")
        self.assert_error(self.call("GET", "/same.txt", host=self.evil_host), 403,
                          "AccessDenied")
        headers, text = self.evil.v1_header("GET", "same.txt")
        self.assertIn("/%s/same.txt" % EVIL, text)
        self.assertEqual(self.call("GET", "/same.txt", headers, host=self.evil_host).body,
                         b"theirs")
        headers, _, _ = self.evil.v4_header("GET", "", [("bucketInfo", None)])
        reply = self.call("GET", "/?bucketInfo", headers, host=self.evil_host.upper())
        self.assertEqual(ElementTree.fromstring(reply.body).findtext("Bucket/Location"),
                         "oss-cn-shanghai")
        self.assertEqual(self.emu.get_object("same.txt", bucket=EVIL), b"theirs")

    def test_each_bucket_has_its_own_keys_region_and_cors(self):
        ours = Signer()
        # our key on their bucket: a valid signature, but not their owner's
        headers, _ = Signer(bucket=EVIL).v1_header("GET", "same.txt")
        self.assert_error(self.call("GET", "/same.txt", headers, host=self.evil_host), 403,
                          "AccessDenied", "The bucket you access does not belong to you.")
        # their key on our public-read bucket: objects yes, bucket calls no
        headers, _ = Signer(EVIL_AK, EVIL_SECRET).v1_header("GET", "same.txt")
        self.assertEqual(self.call("GET", "/same.txt", headers).body, b"ours")
        headers, _ = Signer(EVIL_AK, EVIL_SECRET).v1_header("GET", "", [("bucketInfo", None)])
        self.assert_error(self.call("GET", "/?bucketInfo", headers), 403, "AccessDenied")
        # V4 scope: our region is not theirs
        headers, _, _ = Signer(EVIL_AK, EVIL_SECRET, bucket=EVIL).v4_header("GET", "same.txt")
        self.assert_error(self.call("GET", "/same.txt", headers, host=self.evil_host), 400,
                          "InvalidArgument")
        headers, _ = self.evil.v1_header("GET", "", [("cors", None)])
        self.assert_error(self.call("GET", "/?cors", headers, host=self.evil_host), 404,
                          "NoSuchCORSConfiguration")
        headers, _ = ours.v1_header("GET", "", [("cors", None)])
        self.assertEqual(self.call("GET", "/?cors", headers).status, 200)

    def test_an_upload_to_the_attackers_bucket_calls_back_signed_by_the_emulator(self):
        recorder = CallbackRecorder()
        self.addCleanup(recorder.stop)
        reply = self.emu.post_object(
            "loot/x.png", b"\x89PNG", bucket=EVIL, content_type="image/png",
            callback={"callbackUrl": recorder.url + "?x=1",
                      "callbackBody": "bucket=${bucket}&object=${object}&u=${x:user}"},
            callback_var={"x:user": "alice"})
        self.assertEqual((reply.status, reply.body), (200, b'{"Status":"OK"}'))
        ((path, headers, body),) = recorder.requests
        self.assertEqual(body, b"bucket=attackerbucket&object=loot%2Fx.png&u=alice")
        self.assertEqual(headers["x-oss-bucket"], EVIL)
        self.assertEqual(headers["x-oss-requester"], EVIL_AK)
        key_url = base64.b64decode(headers["x-oss-pub-key-url"]).decode()
        self.assertEqual(key_url, self.emu.pub_key_url)
        n, e = kit.load_public_pair(DATA / "emulator_pub.pem")
        signed = urllib.parse.unquote_to_bytes(path.split("?")[0]) + b"?x=1\n" + body
        self.assertEqual(kit.textbook_open(n, e, base64.b64decode(headers["authorization"])),
                         kit.emsa_pkcs1_v15("md5", signed, (n.bit_length() + 7) // 8))
        self.assertEqual(self.emu.get_object("loot/x.png", bucket=EVIL), b"\x89PNG")
        self.assertIsNone(self.emu.get_object("loot/x.png"))
        self.assertTrue(self.emu.object_path("loot/x.png", bucket=EVIL).exists())


# -- faults ------------------------------------------------------------------------------------

class DeniedActions(EmulatorCase):
    @classmethod
    def emulator_options(cls):
        cls.store = CredentialStore()
        return dict(super().emulator_options(), credential_store=cls.store, denied_actions={
            AK: {"oss:GetObject", "oss:GetBucketInfo", "oss:GetBucketCors", "oss:PutObject"}})

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu.put_object("d.txt", b"d")

    def test_denied_actions_are_access_denied_for_that_key_only(self):
        signer = Signer()
        headers, _ = signer.v1_header("GET", "d.txt")
        error = self.assert_error(self.call("GET", "/d.txt", headers), 403, "AccessDenied")
        self.assertEqual(error["AuthAction"], "oss:GetObject")
        self.assertEqual(error["NoPermissionType"], "ExplicitDeny")
        self.assertEqual(error["EC"], "0003-00000201")
        headers, _, _ = signer.v4_header("HEAD", "d.txt")
        self.assert_bare(self.call("HEAD", "/d.txt", headers), 403, "AccessDenied")
        query, _ = signer.v1_presign("GET", "d.txt", time.time() + 60)
        self.assert_error(self.call("GET", target("d.txt", query)), 403, "AccessDenied")
        for sub in ("bucketInfo", "cors"):
            headers, _ = signer.v1_header("GET", "", [(sub, None)])
            self.assert_error(self.call("GET", "/?" + sub, headers), 403, "AccessDenied")
        headers, _ = signer.v1_header("PUT", "", [("cors", None)])
        body = cors_xml([{"AllowedOrigin": "*", "AllowedMethod": "GET"}])
        self.assertEqual(self.call("PUT", "/?cors", headers, body=body).status, 200)
        self.assert_error(Reply(*self.emu.post_object("p.txt", b"p")), 403, "AccessDenied")
        # anonymous reads of this public-read bucket are no key's, so not denied
        self.assertEqual(self.call("GET", "/d.txt").status, 200)
        held = self.store.issue(600, "test")
        temporary = Signer(held.access_key_id, held.access_key_secret, held.security_token)
        headers, _ = temporary.v1_header("GET", "d.txt")
        self.assertEqual(self.call("GET", "/d.txt", headers).status, 200)
        self.emu.set_denied_actions({"oss:GetObject"})          # every key
        self.addCleanup(self.emu.set_denied_actions, set())
        headers, _ = temporary.v1_header("GET", "d.txt")
        self.assert_error(self.call("GET", "/d.txt", headers), 403, "AccessDenied")


class HeadFaults(EmulatorCase):
    options = {"head_stall": 1.0, "faults": {"GetBucketInfo": 500}}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.emu.put_object("h.txt", b"h")

    def test_a_stalled_head_misses_a_short_client_deadline(self):
        with self.assertRaises(TimeoutError):
            self.call("HEAD", "/h.txt", timeout=0.3)
        started = time.monotonic()
        self.assertEqual(self.call("HEAD", "/h.txt", timeout=5).status, 200)
        self.assertGreaterEqual(time.monotonic() - started, 0.95)
        started = time.monotonic()
        self.assertEqual(self.call("GET", "/h.txt").status, 200)
        self.assertLess(time.monotonic() - started, 0.9)

    def test_5xx_faults(self):
        self.emu.set_stall("HeadObject", None)
        self.addCleanup(self.emu.set_stall, "HeadObject", 1.0)
        for status in (503, 500, 502):
            with self.subTest(status):
                self.emu.set_fault("HeadObject", status)
                self.assert_bare(self.call("HEAD", "/h.txt"), status)
                self.assertEqual(self.call("GET", "/h.txt").status, 200)
        self.emu.set_fault("HeadObject", None)
        self.assertEqual(self.call("HEAD", "/h.txt").status, 200)
        headers, _ = Signer().v1_header("GET", "", [("bucketInfo", None)])
        self.assert_error(self.call("GET", "/?bucketInfo", headers), 500, "InternalError")
        self.emu.set_fault("GetObject", 503)
        self.addCleanup(self.emu.set_fault, "GetObject", None)
        self.assert_error(self.call("GET", "/h.txt"), 503, "ServiceUnavailable")


# -- the command line ----------------------------------------------------------------------

class CommandLine(unittest.TestCase):
    def test_new_options_of_the_command_line(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        log_path = os.path.join(tmp.name, "emulator.log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.oss_emulator", "--port", "0", "--root",
                 os.path.join(tmp.name, "root"), "--bucket", BUCKET, "--access-key-id", AK,
                 "--access-key-secret", SECRET, "--no-cors", "--acl", "private",
                 "--clock-skew", "3600", "--head-fault", "503", "--deny", "oss:GetBucketCors",
                 "--extra-bucket", "otherbucket:ak2:sk2:cn-beijing"],
                cwd=REPO, stdout=log, stderr=log)
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.terminate)
        deadline, url = time.monotonic() + 15, None
        while url is None and time.monotonic() < deadline and process.poll() is None:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                match = re.search(r"listening on (http://\S+)", f.read())
            url = match.group(1) if match else time.sleep(0.05)
        self.assertIsNotNone(url, pathlib.Path(log_path).read_text(encoding="utf-8"))

        class Address:
            netloc = url[len("http://"):]
        Address.url = url
        reply = call(Address, "GET", "/x.txt")
        self.assertEqual(reply.status, 403)
        self.assertAlmostEqual(date_header_time(reply), time.time() + 3600, delta=5)
        self.assertEqual(call(Address, "HEAD", "/x.txt").status, 503)
        headers, _ = Signer().v1_header("GET", "", [("cors", None)], when=time.time() + 3600)
        self.assertEqual(call(Address, "GET", "/?cors", headers).status, 403)   # denied
        headers, _ = Signer("ak2", "sk2", bucket="otherbucket").v1_header(
            "GET", "", [("bucketInfo", None)], when=time.time() + 3600)
        reply = call(Address, "GET", "/?bucketInfo", headers, host="otherbucket." + Address.netloc)
        self.assertEqual(ElementTree.fromstring(reply.body).findtext("Bucket/Location"),
                         "oss-cn-beijing")


# -- the oss2 SDK's vectors --------------------------------------------------------------------

VECTORS = json.loads((DATA / "oss_signer_vectors.json").read_text(encoding="utf-8"))


def _tamper(text, index):
    """``text`` with the character at ``index`` replaced by another of the same alphabet
    (base64 or hex), so that exactly one byte of the signature changes."""
    new = "B" if text[index] != "B" else "C"
    return text[:index] + new + text[index + 1:]


class OssSdkVectors(unittest.TestCase):
    """Every request of tests/data/oss_signer_vectors.json (signed by the oss2 SDK) is
    accepted by an emulator holding those credentials, bucket and region with its clock at
    the vectors' time; with one byte of its signature changed it is refused, and the error
    shows the very string the SDK signed (for HEAD, in x-oss-err)."""

    @classmethod
    def setUpClass(cls):
        keys = {v["key"] for v in VECTORS["header"] + VECTORS["presigned"] if v["key"]}
        cls.emulators = {}
        for sts in (False, True):
            tmp = tempfile.TemporaryDirectory()
            cls.addClassCleanup(tmp.cleanup)
            emu = EmulatorServer(
                tmp.name, bucket=VECTORS["bucket"], access_key_id=VECTORS["access_key_id"],
                access_key_secret=VECTORS["access_key_secret"],
                security_token=VECTORS["security_token"] if sts else None,
                region=VECTORS["region"], acl="private",
                clock=lambda: float(VECTORS["time"])).start()
            cls.addClassCleanup(emu.stop)
            for key in keys:
                emu.put_object(key, key.encode("utf-8"))
            cls.emulators[sts] = emu
        cls.host = "%s.%s" % (VECTORS["bucket"], urllib.parse.urlsplit(VECTORS["endpoint"]).netloc)

    def check_refusal(self, vector, reply):
        self.assertEqual(reply.status, 403)
        if vector["method"] == "HEAD":
            self.assertEqual(reply.body, b"")
            body = base64.b64decode(reply.headers["x-oss-err"])
        else:
            body = reply.body
        error = Reply(reply.status, reply.headers, body).error()
        self.assertEqual(error["Code"], "SignatureDoesNotMatch")
        self.assertEqual(error["StringToSign"], vector["string_to_sign"])
        if vector["version"] == "v4":
            self.assertEqual(error["CanonicalRequest"], vector["canonical_request"])

    def test_header_signatures(self):
        self.assertEqual(len(VECTORS["header"]), 38)
        for vector in VECTORS["header"]:
            with self.subTest(vector["name"]):
                emu = self.emulators[vector["sts"]]
                url = urllib.parse.urlsplit(vector["url"])
                path = url.path + ("?" + url.query if url.query else "")
                headers = {name: value for name, value in vector["expected_headers"].items()
                           if name.lower() != "host"}
                body = vector.get("body", "").encode("utf-8")
                reply = call(emu, vector["method"], path, headers, body=body, host=self.host)
                self.assertEqual(reply.status, 200, reply.body or reply.headers.get("x-oss-err"))
                if vector["method"] == "GET" and vector["key"]:
                    self.assertEqual(reply.body, vector["key"].encode("utf-8"))
                authorization = headers["authorization"]
                at = authorization.index(":") + 1 if vector["version"] == "v1" \
                    else authorization.index("Signature=") + len("Signature=")
                headers["authorization"] = _tamper(authorization, at)
                self.check_refusal(vector, call(emu, vector["method"], path, headers,
                                                body=body, host=self.host))

    def test_presigned_urls(self):
        self.assertEqual(len(VECTORS["presigned"]), 26)
        for vector in VECTORS["presigned"]:
            with self.subTest(vector["name"]):
                emu = self.emulators[vector["sts"]]
                url = urllib.parse.urlsplit(vector["expected_url"])
                reply = call(emu, vector["method"], url.path + "?" + url.query, host=self.host)
                self.assertEqual(reply.status, 200, reply.body or reply.headers.get("x-oss-err"))
                params = url.query.split("&")
                name = "Signature=" if vector["version"] == "v1" else "x-oss-signature="
                (index,) = [i for i, p in enumerate(params) if p.startswith(name)]
                signature = urllib.parse.unquote(params[index][len(name):])
                params[index] = name + urllib.parse.quote(_tamper(signature, 0), safe="")
                self.check_refusal(vector, call(emu, vector["method"],
                                                url.path + "?" + "&".join(params),
                                                host=self.host))
