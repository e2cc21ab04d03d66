"""GET /download-url?key=<object>: a presigned GET for one object under the caller's own grant
folder, authorized like tokens, never outliving the credentials; off unless
OSS_DOWNLOAD_EXPIRE_SECONDS is above 0, and refused with OSS_TOKEN_AUTH=none.

That the signature itself is right is the signer's test (vectors from Alibaba's SDK,
tests/test_oss_signer.py) and the emulator's (a GET with the link, tests/test_oss_tools.py).
"""

import calendar
import json
import time
import unittest
import urllib.parse

import appserver
from tests.support import AppServerTestCase, env_config, mint_ticket

SECRET = "ticket-secret-of-the-main-application-0123456789"


def config(**environ):
    values = dict(OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=SECRET,
                  OSS_UPLOAD_DIR="uploads/{user}/", OSS_DOWNLOAD_EXPIRE_SECONDS="600")
    values.update(environ)
    return env_config(**values)


class DownloadUrl(AppServerTestCase):
    def setUp(self):
        self.start_server(config())

    def get(self, key, user="alice", raw=None):
        headers = {"Authorization": "Bearer " + mint_ticket(SECRET, user, int(time.time()) + 60)
                   } if user else {}
        query = raw if raw is not None else "key=" + urllib.parse.quote(key, safe="")
        return self.request("GET", "/download-url?" + query, headers=headers)

    def test_a_key_in_the_users_folder_gets_a_presigned_get_and_its_expiry(self):
        for key in ("uploads/alice/pic.png", "uploads/alice/a b/ü+%.png"):
            with self.subTest(key=key):
                before = int(time.time())
                status, resp, body = self.get(key)
                self.assertEqual(status, 200, body)
                self.assertEqual(resp.getheader("Cache-Control"), "no-store")
                answer = json.loads(body)
                url = urllib.parse.urlsplit(answer["url"])
                self.assertEqual("%s://%s" % (url.scheme, url.netloc),
                                 "https://examplebucket.oss-cn-hangzhou.aliyuncs.com")
                self.assertEqual(urllib.parse.unquote(url.path), "/" + key)
                query = dict(urllib.parse.parse_qsl(url.query))
                self.assertEqual(set(query), {"OSSAccessKeyId", "Expires", "Signature"})
                self.assertEqual(query["OSSAccessKeyId"], "ak")
                self.assertEqual(int(query["Expires"]), answer["expires"])
                self.assertTrue(before + 600 <= answer["expires"] <= int(time.time()) + 600)

    def test_another_users_key_or_the_folder_itself_is_403(self):
        for key in ("uploads/bob/pic.png", "uploads/alice/", "uploads/alice", "elsewhere.png",
                    "uploads/alicex/pic.png"):
            with self.subTest(key=key):
                status, resp, body = self.get(key)
                self.assertEqual(status, 403, body)
                self.assertNotIn(b"Signature", body)

    def test_bad_keys_are_400(self):
        for key in ("uploads/alice/../bob/x.png", "uploads/alice/./x", "uploads/alice/a\nb",
                    "uploads/alice/a\x00b", "uploads/alice/" + "x" * 1010, "",
                    "uploads/alice/a\\..\\b"):
            with self.subTest(key=key[:40]):
                status, resp, body = self.get(key)
                self.assertEqual(status, 400, body)
        for raw in ("", "key=a&key=b", "name=x", "key=%ff%fe"):
            with self.subTest(raw=raw):
                self.assertEqual(self.get(None, raw=raw)[0], 400)

    def test_a_key_with_a_question_mark_is_400_with_v1_signatures(self):
        # V1 signs "/bucket/<key>" and the sub-resources as one string: the link for
        # "x.png?response-content-type=text/html" would also serve x.png as HTML.
        status, resp, body = self.get("uploads/alice/x.png?response-content-type=text/html")
        self.assertEqual(status, 400, body)

    def test_no_or_a_bad_ticket_is_401(self):
        self.assertEqual(self.get("uploads/alice/x.png", user=None)[0], 401)
        status, resp, body = self.request("GET", "/download-url?key=uploads%2Falice%2Fx",
                                          headers={"Authorization": "Bearer alice.1.x"})
        self.assertEqual(status, 401)

    def test_the_token_says_downloads_are_on(self):
        status, resp, body = self.request("GET", "/", headers={
            "Authorization": "Bearer " + mint_ticket(SECRET, "alice", int(time.time()) + 60)})
        self.assertIs(json.loads(body)["downloads"], True)


class Settings(AppServerTestCase):
    def test_off_by_default_the_route_is_404_and_tokens_say_nothing(self):
        self.start_server(env_config())
        self.assertEqual(self.request("GET", "/download-url?key=user-dir-prefix/x")[0], 404)
        self.assertNotIn("downloads", json.loads(self.request("GET", "/")[2]))

    def test_on_with_token_auth_none_is_a_config_error(self):
        with self.assertRaises(appserver.ConfigError) as caught:
            env_config(OSS_DOWNLOAD_EXPIRE_SECONDS="60")
        self.assertEqual(caught.exception.variable, "OSS_DOWNLOAD_EXPIRE_SECONDS")

    def test_a_key_with_a_question_mark_is_signed_with_v4(self):
        self.start_server(config(OSS_SIGNATURE_VERSION="v4"))
        status, resp, body = self.request(
            "GET", "/download-url?key=" + urllib.parse.quote("uploads/alice/x?y.png", safe=""),
            headers={"Authorization": "Bearer " + mint_ticket(SECRET, "alice",
                                                               int(time.time()) + 60)})
        self.assertEqual(status, 200, body)
        self.assertIn("/uploads/alice/x%3Fy.png?", json.loads(body)["url"])

    def test_a_folder_all_users_share_is_a_config_error(self):
        for upload_dir in ("uploads/", ""):
            with self.subTest(upload_dir=upload_dir), \
                    self.assertRaises(appserver.ConfigError) as caught:
                config(OSS_UPLOAD_DIR=upload_dir)
            self.assertEqual(caught.exception.variable, "OSS_DOWNLOAD_EXPIRE_SECONDS")

    def test_the_link_never_outlives_the_credentials(self):
        now = time.time()
        credentials = appserver.CredentialProvider(
            "static", static=appserver.Credentials("STS.x", "s", "tok", now + 400),
            margin=60)
        cfg = config(OSS_SIGNATURE_VERSION="v4")
        self.start_server(cfg, app=appserver.App(cfg, credentials=credentials))
        status, resp, body = self.request("GET", "/download-url?key=uploads%2Falice%2Fx", headers={
            "Authorization": "Bearer " + mint_ticket(SECRET, "alice", int(now) + 60)})
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(answer["url"]).query))
        self.assertLessEqual(answer["expires"], now + 400 - 60)
        self.assertEqual(int(query["x-oss-expires"]), answer["expires"] - int(query_time(query)))
        self.assertEqual(query["x-oss-security-token"], "tok")


def query_time(query):
    return calendar.timegm(time.strptime(query["x-oss-date"], "%Y%m%dT%H%M%SZ"))


if __name__ == "__main__":
    unittest.main()
