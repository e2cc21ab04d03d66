"""Fetching a callback's public key from a key URL that the allowlist admits.

- the fetch's own bounds: one deadline that resolving and connecting count against, and a
  size cap that the response's headers count against;
- a budget of fetches that junk callbacks naming new URLs cannot use up for a known key;
- the real fetcher and cache against a key server on 127.0.0.1 that is good, weak, of the
  wrong key, redirecting, stalled, trickling, huge, HTML, chunked, or down: a bad one costs a
  fast 400 and never stalls the server.
(Which URLs are admitted, and the cache alone, are in test_key_urls.py.)
The callbacks are signed with test keys and carry no grant from a token, so every server here
runs with callback_binding=False: with binding on they would be refused before any key fetch.
"""

import http.client
import json
import socket
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import appserver
from tests import rsa_testkit as kit
from tests.support import (AppServerTestCase, FakeClock, KeyServer, capture_logs, exchange,
                           free_port, one_response, parse_responses, signed_headers,
                           start_app_server, stop_app_server)


class FetchBoundsTest(unittest.TestCase):
    """fetch_public_key_pem alone: resolving and connecting count against the one deadline,
    and the response's headers count against the size cap."""

    def test_a_slow_resolver_does_not_stretch_the_deadline(self):
        def slow_getaddrinfo(*args, **kwargs):
            time.sleep(3)
            return []

        started = time.monotonic()
        with mock.patch("socket.getaddrinfo", slow_getaddrinfo):
            with self.assertRaises(appserver.PubKeyUnavailable):
                appserver.fetch_public_key_pem("http://127.0.0.1:9/k.pem", deadline=0.5)
        self.assertLess(time.monotonic() - started, 2)

    def test_many_unresponsive_addresses_share_one_deadline(self):
        # Listeners whose backlog is full never complete a handshake.
        listeners = []
        addresses = []
        for _ in range(3):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            listeners.append(listener)
            addresses.append((socket.AF_INET, socket.SOCK_STREAM, 6, "",
                              listener.getsockname()))
        fillers = []
        try:
            for listener in listeners:
                for _ in range(8):
                    filler = socket.socket()
                    filler.setblocking(False)
                    filler.connect_ex(listener.getsockname())
                    fillers.append(filler)
            with mock.patch("socket.getaddrinfo", lambda *a, **k: addresses):
                started = time.monotonic()
                with self.assertRaises(appserver.PubKeyUnavailable):
                    appserver.fetch_public_key_pem("http://127.0.0.1:9/k.pem", deadline=1.0)
                self.assertLess(time.monotonic() - started, 2.0)
        finally:
            for s in fillers + listeners:
                s.close()

    def test_response_headers_count_against_the_size_cap(self):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def serve():
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    for i in range(90):
                        conn.sendall(b"X-%d: %s\r\n" % (i, b"a" * 60000))
                    conn.sendall(b"Content-Length: 0\r\n\r\n")
                except OSError:
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        url = "http://127.0.0.1:%d/k.pem" % server.getsockname()[1]
        with self.assertRaises(appserver.PubKeyUnavailable) as caught:
            appserver.fetch_public_key_pem(url)
        self.assertIn("larger than", str(caught.exception))
        thread.join(5)
        server.close()


class KeyFetchBudgetTest(unittest.TestCase):
    """Unsigned junk may name any URL under an allowed prefix, and so use up the fetch budget.
    A URL that has served a good key before draws on a reserved budget of its own."""

    def test_junk_naming_1000_distinct_urls_does_not_lock_out_a_known_key(self):
        capture_logs(self)  # 1000 refusals are logged by design
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
                                  bucket="ours", upload_dir="uploads/", callback_binding=False)
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


class LoopbackKeyServerTest(AppServerTestCase):
    """The real fetcher and cache against a key server of this test's own."""

    def setUp(self):
        self.keys = KeyServer()
        self.addCleanup(self.keys.stop)
        self.priv = kit.load_test_key("rsa2048_key.pem")
        self.weak = kit.load_test_key("rsa1024_key.pem")
        self.e3 = kit.load_test_key("rsa2048_e3_key.pem")
        config = appserver.Config(pub_key_url_prefixes=(self.keys.prefix,),
                                  callback_binding=False)
        self.start_server(config, appserver.App(config))

    def post_signed(self, priv, key_name, target="/cb?x=1", body=b"object=user-dir-prefix%2Fa.jpg&size=1",
                    timeout=10):
        headers = signed_headers(priv, target, body, self.keys.url(key_name))
        return self.request("POST", target, body, headers, timeout=timeout)

    def test_a_good_key_is_fetched_once_then_cached(self):
        status, resp, body = self.post_signed(self.priv, "good.pem")
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/a.jpg", "size": "1"})
        status, resp, body = self.post_signed(self.priv, "good.pem", body=b"object=user-dir-prefix%2Fb.jpg&size=2")
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/b.jpg", "size": "2"})
        self.assertEqual(self.keys.count("good.pem"), 1, "key not cached")

    def test_a_signature_by_another_key_is_400(self):
        # signed with the e=3 key, but the URL names the e=65537 key
        status, resp, body = self.post_signed(self.e3, "good2.pem")
        self.assertJsonError(status, resp, body, 400)

    def test_a_2048_bit_key_with_exponent_3_is_accepted(self):
        status, resp, body = self.post_signed(self.e3, "e3.pem")
        self.assertOkUpload(status, resp, body, {"object": "user-dir-prefix/a.jpg", "size": "1"})

    def test_a_1024_bit_key_from_a_host_other_than_oss_is_refused(self):
        status, resp, body = self.post_signed(self.weak, "weak.pem")
        self.assertJsonError(status, resp, body, 400)
        self.assertEqual(self.keys.count("weak.pem"), 1)

    def test_not_admitted_urls_never_reach_the_key_server(self):
        before = self.keys.total()
        p = self.keys.port
        for url in ("http://127.0.0.1:%d/other/good.pem" % p,
                    "http://localhost:%d/keys/good.pem" % p,
                    "http://127.0.0.1:%d/keys/../other/good.pem" % p,
                    "https://127.0.0.1:%d/keys/good.pem" % p,
                    "http://127.0.0.1:%d@127.0.0.1:%d/keys/good.pem" % (p, p),
                    " http://127.0.0.1:%d/keys/good.pem" % p,
                    "http://127.0.0.1:%d/keys/good%%2epem" % p):
            headers = signed_headers(self.priv, "/cb", b"a=1", url)
            with self.subTest(url=url):
                status, resp, body = self.request("POST", "/cb", b"a=1", headers)
                self.assertJsonError(status, resp,
                                     body, 400)
        self.assertEqual(self.keys.total(), before, self.keys.requests)

    def test_bad_key_servers_400_fast_and_server_stays_responsive(self):
        names = ["redirect.pem", "stall.pem", "stall-body.pem", "trickle.pem", "huge.pem",
                 "huge-declared.pem", "html.pem", "html-wrapped.pem", "two-pems.pem",
                 "status500.pem", "empty.pem", "missing.pem"]
        results = {}

        def run(name):
            t0 = time.monotonic()
            try:
                status, resp, body = self.post_signed(self.priv, name, timeout=20)
                results[name] = (status, resp.getheader("Content-Type"), body,
                                 time.monotonic() - t0)
            except Exception as exc:  # noqa: BLE001
                results[name] = (None, None, repr(exc).encode(), time.monotonic() - t0)

        threads = [threading.Thread(target=run, args=(n,)) for n in names]
        for t in threads:
            t.start()
        # meanwhile the app server keeps answering
        health = []
        t_end = time.monotonic() + 1.5
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            status, _, body = self.request("GET", "/healthz", timeout=5)
            health.append((status, body, time.monotonic() - t0))
            time.sleep(0.1)
        for t in threads:
            t.join(25)
        self.assertTrue(health)
        for status, body, elapsed in health:
            self.assertEqual((status, json.loads(body)), (200, {"Status": "OK"}))
            self.assertLess(elapsed, 1.0, "healthz blocked by a slow key fetch")
        for name in names:
            with self.subTest(name):
                status, ctype, body, elapsed = results[name]
                self.assertEqual(status, 400, body[:300])
                self.assertTrue(ctype.startswith("application/json"))
                self.assertEqual(json.loads(body)["Status"], "Error")
                self.assertLess(elapsed, 5.0, "key fetch not bounded by a deadline")
        self.assertEqual(self.keys.count("redirect.pem"), 1)
        self.assertEqual(self.keys.count("redirect-target.pem"), 0, "redirect was followed")
        # the failures are cached briefly (negative TTL): a retry does not refetch
        status, _, _ = self.post_signed(self.priv, "html.pem")
        self.assertEqual(status, 400)
        self.assertEqual(self.keys.count("html.pem"), 1)

    def test_100_concurrent_callbacks_cold_cache_one_fetch(self):
        target, body = "/upload/done?id=7", b"object=user-dir-prefix%2Fa.jpg&size=1234"
        headers = signed_headers(self.priv, target, body, self.keys.url("cold.pem"))
        barrier = threading.Barrier(100)
        results = []
        lock = threading.Lock()

        def run():
            barrier.wait()
            try:
                status, _, data = self.request("POST", target, body, headers, timeout=20)
            except Exception as exc:  # noqa: BLE001
                status, data = None, repr(exc).encode()
            with lock:
                results.append((status, data))

        threads = [threading.Thread(target=run) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(len(results), 100)
        bad = [r for r in results if r[0] != 200]
        self.assertEqual(bad, [], "%d of 100 callbacks failed" % len(bad))
        for _, data in results:
            self.assertEqual(json.loads(data)["upload"],
                             {"object": "user-dir-prefix/a.jpg", "size": "1234"})
        self.assertEqual(self.keys.count("cold.pem"), 1)


class KeyServerFaultsTest(AppServerTestCase):
    """A key server that is down, stalled, huge, redirecting, answering HTML, or merely slow
    to send its body or chunked."""

    def setUp(self):
        self.private = kit.load_test_key("rsa2048_key.pem")
        self.keys = KeyServer()
        self.addCleanup(self.keys.stop)
        self.down_prefix = "http://127.0.0.1:%d/keys/" % free_port()
        config = appserver.Config(pub_key_url_prefixes=(self.keys.prefix, self.down_prefix),
                                  callback_binding=False)
        self.start_server(config, idle_timeout=5.0, request_timeout=15.0, max_connections=64)

    def callback(self, key_url, target="/callback?n=1",
                 body=b"object=user-dir-prefix/a.png&size=5"):
        headers = signed_headers(self.private, target, body, key_url)
        data = ("POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n"
                "Content-Type: %s\r\nauthorization: %s\r\nx-oss-pub-key-url: %s\r\n\r\n"
                % (target, len(body), headers["Content-Type"], headers["authorization"],
                   headers["x-oss-pub-key-url"])).encode() + body
        started = time.monotonic()
        (status, headers, response), = parse_responses(exchange(self.port, data, timeout=15))
        return status, json.loads(response), time.monotonic() - started

    def test_key_body_arriving_after_the_headers_is_read(self):
        # HTTP/1.0 (or Connection: close) answer whose body is a separate TCP segment.
        status, document, _ = self.callback(self.keys.url("split.pem"))
        self.assertEqual((status, document.get("Status")), (200, "OK"), document)

    def test_chunked_key_response_with_connection_close_is_read(self):
        status, document, _ = self.callback(self.keys.url("chunked.pem"))
        self.assertEqual((status, document.get("Status")), (200, "OK"), document)

    def test_key_server_down_stalled_huge_redirecting_or_html_is_a_fast_400(self):
        # Bounds: the 2 s fetch deadline plus generous slack for a loaded CI machine.
        cases = {"down": (self.down_prefix + "k.pem", 3.0),
                 "stalled": (self.keys.url("stall.pem"), 5.0),
                 "huge": (self.keys.url("huge.pem"), 4.0),
                 "redirect": (self.keys.url("redirect.pem"), 3.0),
                 "html": (self.keys.url("html.pem"), 3.0)}
        for name, (url, bound) in cases.items():
            with self.subTest(name):
                status, document, elapsed = self.callback(url)
                self.assertEqual(status, 400)
                self.assertEqual(document, {"Status": "Error",
                                            "Message": "callback public key unavailable"})
                self.assertLess(elapsed, bound)
        self.assertEqual(self.keys.count("redirect.pem"), 1)
        self.assertEqual(self.keys.count("redirect-target.pem"), 0)  # not followed
        # A failure is cached briefly: a second callback naming the dead key makes no fetch.
        before = len(self.keys.requests)
        self.assertEqual(self.callback(self.keys.url("html.pem"))[0], 400)
        self.assertEqual(len(self.keys.requests), before)

    def test_server_stays_responsive_while_a_key_fetch_stalls(self):
        pending = ThreadPoolExecutor(1)
        self.addCleanup(pending.shutdown)
        future = pending.submit(self.callback, self.keys.url("stall.pem"))
        time.sleep(0.2)
        started = time.monotonic()
        status, _, body = one_response(
            self.port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertIn("policy", json.loads(body))
        self.assertLess(time.monotonic() - started, 1.5)  # not stuck behind the 2 s fetch
        self.assertEqual(future.result(10)[0], 400)


if __name__ == "__main__":
    unittest.main()
