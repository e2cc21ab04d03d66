"""The OSS callback endpoint through a running server (loopback only).

- the documented example of OSS's "Callback" API page, end to end, with the embedded 512-bit
  key: it passes byte for byte, and any one change fails;
- header checks (signature and key URL encodings, duplicates, allowed key URLs), none of which
  may cause a key fetch;
- the callback hook and how the body is parsed.
Callbacks other than the official example are signed by tests/rsa_testkit.py with test-only keys.
None of these callbacks comes from one of our tokens, so they carry no grant: every server here
runs with callback_binding=False and tests verification alone (grants are in
test_callback_binding*.py, genuine uploads with binding on in test_e2e.py).
(Framing of the callback request is in test_framing.py, field checks in
test_callback_bodies.py, the public key's fetch in test_key_fetch.py.)
"""

import dataclasses
import json
import unittest

import appserver
from tests import rsa_testkit as kit
from tests.support import (FORM, OFFICIAL_AUTHORIZATION, OFFICIAL_BODY, OFFICIAL_KEY_URL_B64,
                           OFFICIAL_KEY_URL_HTTPS_B64, OFFICIAL_TARGET, AppServerTestCase,
                           CountingFetch, exchange, official_callback, parse_response,
                           request_bytes, signed_headers, string_to_sign)

BODY = b"object=user-dir-prefix%2Fa.jpg&size=1"


# ---------------------------------------------------------------------------- string to sign

class StringToSignTest(unittest.TestCase):
    def test_official_example_is_path_query_newline_body(self):
        self.assertEqual(appserver.callback_string_to_sign(OFFICIAL_TARGET, OFFICIAL_BODY),
                         b"/index.php?id=1&index=2\nbucket=yonghu-test")

    def test_path_is_percent_decoded_to_bytes_and_the_query_kept_raw(self):
        cases = [
            ("/cb", b"x", b"/cb\nx"),
            ("/cb?", b"x", b"/cb?\nx"),                       # a '?' with an empty query is kept
            ("/a%20b?q=%20", b"", b"/a b?q=%20\n"),           # path decoded, query raw
            ("/a+b?x=+", b"", b"/a+b?x=+\n"),                 # plain unquote: '+' stays '+'
            ("/%ff%fe", b"", b"/\xff\xfe\n"),                 # bytes, not U+FFFD
            ("/%E4%B8%AD", b"", "/\u4e2d\n".encode("utf-8")),
            ("/a%3Fb?c=d", b"", b"/a?b?c=d\n"),
            ("/p?a=1?b=2", b"body\n", b"/p?a=1?b=2\nbody\n"),
        ]
        for target, body, expected in cases:
            with self.subTest(target):
                self.assertEqual(appserver.callback_string_to_sign(target, body), expected)
                self.assertEqual(string_to_sign(target, body), expected)   # our own copy agrees


# ---------------------------------------------------------------------------- official example

class OfficialExampleTest(AppServerTestCase):
    """The documented example through a live server. The embedded OSS key is used: no fetch."""

    def setUp(self):
        self.fetch = CountingFetch()
        config = appserver.Config(callback_binding=False)  # OSS's example carries no grant
        app = appserver.App(config, key_cache=appserver.PublicKeyCache(fetch=self.fetch))
        self.start_server(config, app)

    def tearDown(self):
        self.assertEqual(self.fetch.calls, [], "the embedded OSS key must never be fetched")

    def send(self, **changes):
        """The official request with ``changes`` (target, body, key_url_b64, authorization);
        the parsed answer, which must be the only one before the server closes."""
        return parse_response(exchange(self.port, official_callback(**changes)))

    def test_exact_official_request_passes(self):
        # No half-close: the server must close by itself, as Connection: close asks.
        raw = exchange(self.port, official_callback(), shut_write=False)
        status, headers, body = parse_response(raw)
        self.assertEqual(status, 200, raw[:400])
        self.assertTrue(headers["content-type"][0].startswith("application/json"))
        self.assertEqual(headers["content-length"], [str(len(body))])
        head_len = raw.index(b"\r\n\r\n") + 4
        self.assertEqual(len(raw) - head_len, len(body), "bytes after the declared body")
        self.assertTrue(body.startswith(b'{"Status":"OK"'), body)
        doc = json.loads(body)
        self.assertEqual(doc, {"Status": "OK", "user": None, "upload": {"bucket": "yonghu-test"}})

    def test_percent_encoded_path_is_decoded_before_verifying(self):
        # OSS signs the percent-decoded path; the raw query is signed as sent
        for target in ("/index%2ephp?id=1&index=2", "/%69ndex.php?id=1&index=2"):
            with self.subTest(target):
                status, _, body = self.send(target=target)
                self.assertEqual(status, 200, body)
        # ...but the query is not decoded: an escaped query byte changes the signed string
        status, _, _ = self.send(target="/index.php?id=1&index=%32")
        self.assertEqual(status, 400)

    def test_https_key_url_variant_passes(self):
        status, _, body = self.send(key_url_b64=OFFICIAL_KEY_URL_HTTPS_B64)
        self.assertEqual(status, 200, body)

    def test_http11_keep_alive_client_passes(self):
        headers = {"authorization": OFFICIAL_AUTHORIZATION, "x-oss-pub-key-url": OFFICIAL_KEY_URL_B64,
                   "Content-Type": FORM}
        status, resp, body = self.request("POST", OFFICIAL_TARGET, OFFICIAL_BODY, headers)
        self.assertOkUpload(status, resp, body, {"bucket": "yonghu-test"})

    def test_any_one_change_to_path_query_body_or_signature_fails(self):
        variants = {
            "body byte": dict(body=b"bucket=yonghu-tesT"),
            "body first byte": dict(body=b"Bucket=yonghu-test"),
            "body trailing newline": dict(body=OFFICIAL_BODY + b"\n"),
            "body trailing CRLF": dict(body=OFFICIAL_BODY + b"\r\n"),
            "empty body": dict(body=b""),
            "path byte": dict(target="/index.phq?id=1&index=2"),
            "path first byte": dict(target="/Index.php?id=1&index=2"),
            "query byte": dict(target="/index.php?id=1&index=3"),
            "query name byte": dict(target="/index.php?id=1&indey=2"),
            "query trailing &": dict(target="/index.php?id=1&index=2&"),
            "without the ?": dict(target="/index.phpid=1&index=2"),
            "? replaced by /": dict(target="/index.php/id=1&index=2"),
            "no query at all": dict(target="/index.php"),
            "signature byte": dict(authorization=OFFICIAL_AUTHORIZATION.replace("kKQe", "kKQf")),
        }
        for name, kw in variants.items():
            with self.subTest(name):
                self.assertJsonError(*self.send(**kw), 400)

    def test_flipping_any_single_body_bit_fails(self):
        for i in range(len(OFFICIAL_BODY)):
            body = bytearray(OFFICIAL_BODY)
            body[i] ^= 0x01
            with self.subTest(i=i):
                self.assertJsonError(*self.send(body=bytes(body)), 400)

    def test_server_still_answers_after_refused_callbacks(self):
        self.assertEqual(self.send(body=b"x" * 18)[0], 400)
        status, _, _ = self.send()
        self.assertEqual(status, 200)
        status, _, body = self.request("GET", "/healthz")
        self.assertEqual((status, json.loads(body)), (200, {"Status": "OK"}))


# ---------------------------------------------------------------------------- header checks

class HeaderChecksTest(AppServerTestCase):
    """Framing and header checks. A counting fake fetch proves that no failing request causes
    a key fetch: every case names a fresh (allowed) key URL, so a lax server would fetch it."""

    def setUp(self):
        self.priv = kit.load_test_key("rsa2048_key.pem")
        self.fetch = CountingFetch()
        self.config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",),
                                       max_callback_bytes=1024, callback_binding=False)
        app = appserver.App(self.config, key_cache=appserver.PublicKeyCache(fetch=self.fetch))
        self.start_server(self.config, app)
        self.urls = 0

    def fresh_url(self):
        self.urls += 1
        return "http://127.0.0.1:9/keys/case-%d.pem" % self.urls

    def callback(self, target="/cb?x=1", body=BODY, key_url=None):
        key_url = key_url or self.fresh_url()
        return key_url, signed_headers(self.priv, target, body, key_url)

    def assertNoFetch(self, url):
        self.assertFalse(self.fetch.fetched(url), "%s was fetched" % url)

    def test_control_valid_request_fetches_once(self):
        url, headers = self.callback()
        status, resp, body = self.request("POST", "/cb?x=1", BODY, headers)
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/a.jpg", "size": "1"})
        self.assertEqual(self.fetch.calls.count(url), 1)

    def send_raw(self, target, header_list, body=b""):
        return parse_response(exchange(self.port, request_bytes(
            "POST", target, header_list, body, host="127.0.0.1")))

    def signed_list(self, url, headers):
        return [("authorization", headers["authorization"]),
                ("x-oss-pub-key-url", headers["x-oss-pub-key-url"]),
                ("Content-Type", FORM)]

    def bad_header_cases(self):
        good_sig = self.callback()[1]["authorization"]
        urlsafe = good_sig.replace("+", "-").replace("/", "_")
        self.assertNotEqual(urlsafe, good_sig)
        return {
            "authorization @@@@": ("authorization", "@@@@"),
            "authorization with spaces": ("authorization", good_sig[:40] + " " + good_sig[40:]),
            "authorization URL-safe alphabet": ("authorization", urlsafe),
            "authorization missing padding": ("authorization", good_sig.rstrip("=")
                                              if good_sig.endswith("=") else good_sig[:-1]),
            "authorization too long": ("authorization", "QUFB" * 3000),
            "authorization with OSS prefix": ("authorization", "OSS " + good_sig),
            "authorization empty": ("authorization", ""),
            "key url @@@@": ("x-oss-pub-key-url", "@@@@"),
            "key url with spaces": ("x-oss-pub-key-url", "aHR0 cDov"),
            "key url too long": ("x-oss-pub-key-url", kit.b64(
                ("http://127.0.0.1:9/keys/" + "a" * 3000 + ".pem").encode())),
            "key url empty": ("x-oss-pub-key-url", ""),
        }

    def test_bad_base64_headers_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        for name, (header, value) in self.bad_header_cases().items():
            url, headers = self.callback(body=body)
            headers[header] = value
            with self.subTest(name):
                self.assertJsonError(*self.send_raw(
                    "/cb?x=1", [(k, v) for k, v in headers.items()]
                    + [("Content-Length", str(len(body)))], body), 400)
                self.assertNoFetch(url)

    def test_url_safe_key_url_400_without_fetch(self):
        # a key URL whose standard base64 has '+' or '/', sent in the URL-safe alphabet
        for i in range(6):   # '~' (0x7e) at a byte offset = 2 mod 3 encodes to '+'
            url = "http://127.0.0.1:9/keys/%s~.pem" % ("u" * i)
            std = kit.b64(url.encode())
            if "+" in std or "/" in std:
                break
        else:
            self.fail("no URL with '+' or '/' in its base64 found")
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        _, headers = self.callback(body=body, key_url=url)
        self.assertEqual(headers["x-oss-pub-key-url"], std)
        headers["x-oss-pub-key-url"] = std.replace("+", "-").replace("/", "_")
        status, resp, data = self.request("POST", "/cb?x=1", body, headers)
        self.assertJsonError(status, resp, data, 400)
        self.assertNoFetch(url)

    def test_missing_headers_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        for missing in ("authorization", "x-oss-pub-key-url"):
            url, headers = self.callback(body=body)
            del headers[missing]
            with self.subTest(missing=missing):
                status, resp, data = self.request("POST", "/cb?x=1", body, headers)
                self.assertJsonError(status, resp,
                                     data, 400)
                self.assertNoFetch(url)

    def test_duplicate_security_headers_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        url, headers = self.callback(body=body)
        other_url, _ = self.callback(body=body)
        lst = self.signed_list(url, headers) + [
            ("x-oss-pub-key-url", kit.b64(other_url.encode())),
            ("Content-Length", str(len(body)))]
        self.assertJsonError(*self.send_raw("/cb?x=1", lst, body), 400)
        self.assertNoFetch(url)
        self.assertNoFetch(other_url)

    def test_disallowed_key_urls_400_without_fetch(self):
        body = b"object=user-dir-prefix%2Fa.jpg&size=1"
        before = len(self.fetch.calls)
        for url in ("https://gosspublic.alicdn.com.evil.test/k.pem",
                    "https://gosspublic.alicdn.com@127.0.0.1/",
                    "http://gosspublic-alicdn.com/x",
                    "https://evil.com\\@gosspublic.alicdn.com/x",
                    "file:///etc/passwd",
                    "https://gosspublic.alicdn.com:444/callback_pub_key_v1.pem",
                    "https://GOSSPUBLIC.ALICDN.COM/callback_pub_key_v1.pem",
                    "https://gosspublic.alicdn.com./callback_pub_key_v1.pem",
                    " http://127.0.0.1:9/keys/x.pem",
                    "http://127.0.0.1:9/other/x.pem",
                    "http://127.0.0.1:10/keys/x.pem",
                    "http://localhost:9/keys/x.pem",
                    "http://169.254.169.254/latest/meta-data/"):
            _, headers = self.callback(body=body, key_url=url)
            with self.subTest(url=url):
                status, resp, data = self.request("POST", "/cb?x=1", body, headers)
                self.assertJsonError(status, resp,
                                     data, 400)
        self.assertEqual(len(self.fetch.calls), before)


# ---------------------------------------------------------------------------- hook and parsing

class HookAndBodyTest(AppServerTestCase):
    def setUp(self):
        self.priv = kit.load_test_key("rsa2048_key.pem")
        self.fetch = CountingFetch()
        self.hook_calls = []
        self.hook_raises = False

        def hook(upload):
            self.hook_calls.append(upload)
            if self.hook_raises:
                raise RuntimeError("hook exploded: secret-detail-12345")
            return appserver.default_callback_hook(upload)

        self.config = appserver.Config(pub_key_url_prefixes=("http://127.0.0.1:9/keys/",),
                                       callback_binding=False)
        self.hook = hook
        self.start_server(self.config, appserver.App(
            self.config, key_cache=appserver.PublicKeyCache(fetch=self.fetch), callback_hook=hook))

    def use_json_body_type(self):
        """The body is parsed as the configured callbackBodyType: Content-Type is unsigned."""
        config = dataclasses.replace(self.config, callback_body_type="application/json")
        self.server.app = appserver.App(config, key_cache=self.server.app.key_cache,
                                        callback_hook=self.hook)

    def post(self, target, body, content_type=FORM):
        headers = signed_headers(self.priv, target, body, "http://127.0.0.1:9/keys/k.pem",
                                 content_type)
        return self.request("POST", target, body, headers)

    def test_form_body_fields_reach_the_hook_decoded(self):
        body = (b"filename=user-dir-prefix%2Fphoto+1.jpg&size=114020&mimeType=image%2Fjpeg"
                b"&height=539&width=810&x%3Auid=12345&empty=")
        status, resp, data = self.post("/cb", body)
        expected = {"filename": "user-dir-prefix/photo 1.jpg", "size": "114020",
                    "mimeType": "image/jpeg", "height": "539", "width": "810",
                    "x:uid": "12345", "empty": ""}
        self.assertOkUpload(status, resp, data, expected)
        # The hook gets who, where and how large (the size as a number), and the raw fields.
        self.assertEqual(self.hook_calls[-1], {"user": None, "bucket": None,
                                               "object": "user-dir-prefix/photo 1.jpg",
                                               "size": 114020, "fields": expected})

    def test_json_body_fields_reach_the_hook_typed(self):
        self.use_json_body_type()
        fields = {"name": "2f7b.jpg", "source_name": "1/1_hFRt.jpg", "size": 114020,
                  "pic_info": "810,539"}
        for ctype in ("application/json", "application/json; charset=utf-8"):
            with self.subTest(ctype):
                body = json.dumps(fields).encode()
                status, resp, data = self.post("/cb?json=1", body, ctype)
                self.assertOkUpload(status, resp, data, fields)
                self.assertEqual(self.hook_calls[-1], {"user": None, "bucket": None,
                                                       "object": None, "size": 114020,
                                                       "fields": fields})

    def test_json_content_type_does_not_switch_the_parser(self):
        fields = {"object": "user-dir-prefix/a.jpg"}
        status, resp, data = self.post("/cb", json.dumps(fields).encode(), "application/json")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(data)["upload"], {json.dumps(fields): ""})

    def test_signed_but_malformed_json_body_400(self):
        self.use_json_body_type()
        status, resp, data = self.post("/cb", b"{not json", "application/json")
        self.assertJsonError(status, resp, data, 400)
        status, resp, data = self.post("/cb", b"[1, 2]", "application/json")
        self.assertJsonError(status, resp, data, 400)

    def test_hook_that_raises_500_then_next_request_works(self):
        self.hook_raises = True
        with self.assertLogs("appserver", "ERROR"):
            status, resp, data = self.post("/cb", b"object=user-dir-prefix%2Fa.jpg&size=1")
        self.assertJsonError(status, resp, data, 500)
        self.assertNotIn(b"secret-detail-12345", data)
        self.assertNotIn(b"Traceback", data)
        self.assertNotIn(b"RuntimeError", data)
        self.hook_raises = False
        status, resp, data = self.post("/cb", b"object=user-dir-prefix%2Fb.jpg&size=2")
        self.assertOkUpload(status, resp, data, {"object": "user-dir-prefix/b.jpg", "size": "2"})
        status, _, body = self.request("GET", "/healthz")
        self.assertEqual(status, 200)

    def test_hook_not_called_for_unverified_callback(self):
        before = len(self.hook_calls)
        headers = signed_headers(self.priv, "/cb", b"a=1", "http://127.0.0.1:9/keys/k.pem")
        status, _, _ = self.request("POST", "/cb", b"a=2", headers)
        self.assertEqual(status, 400)
        self.assertEqual(len(self.hook_calls), before)


if __name__ == "__main__":
    unittest.main()
