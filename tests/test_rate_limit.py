"""OSS_TOKEN_RATE: tokens per user (hmac, header) or per client address (none); 429 with
Retry-After over the limit, and recovery; X-Forwarded-For believed only from a trusted proxy
(its rightmost untrusted hop), IPv6 clients by their /64; bounded memory and a cheap check.

The clock of the app's rate limiter is replaced by a settable one where a test needs exact
time; one test runs on the real clock at 5/second.
"""

import gc
import http.client
import os
import threading
import time
import tracemalloc
import unittest

import appserver
from tests.support import (AppServerTestCase, FakeClock, assert_json_error, env_config,
                           mint_ticket)

TICKET_SECRET = "ticket-secret-of-the-main-application-0123456789"
README_MAX_CLIENTS = 10000   # README: "the least recently seen clients are forgotten past 10,000"


class RateTestCase(AppServerTestCase):
    def start(self, rate, clock=True, **environ):
        config = env_config(OSS_TOKEN_RATE=rate, **environ)
        self.start_server(config)
        if clock:
            self.clock = FakeClock(5000.0)
            self.server.app.rate_limiter.clock = self.clock   # the configured limiter itself
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(self.conn.close)

    def get(self, headers=None):
        """(status, response, body) of GET / on one keep-alive connection."""
        self.conn.request("GET", "/", headers=headers or {})
        response = self.conn.getresponse()
        return response.status, response, response.read()

    def status(self, headers=None):
        return self.get(headers)[0]

    def assert_limited(self, headers=None):
        """A 429: error JSON, no token, and Retry-After in whole seconds; returns it."""
        status, response, body = self.get(headers)
        document = assert_json_error(self, status, response, body, 429)
        self.assertEqual(set(document), {"Status", "Message"})
        self.assertNotIn(b"policy", body)
        retry_after = response.getheader("Retry-After")
        self.assertRegex(retry_after or "", r"^[1-9][0-9]*$")
        # The page reads it across origins.
        self.assertIn("Retry-After", response.getheader("Access-Control-Expose-Headers", ""))
        return int(retry_after)


class RateLimit(RateTestCase):
    def test_the_setting_is_parsed_and_validated(self):
        self.assertEqual(env_config(OSS_TOKEN_RATE="5/second").token_rate, (5, 1))
        self.assertEqual(env_config(OSS_TOKEN_RATE="60/minute").token_rate, (60, 60))
        self.assertEqual(env_config(OSS_TOKEN_RATE="1000/hour").token_rate, (1000, 3600))
        self.assertIsNone(env_config(OSS_TOKEN_RATE="0").token_rate)
        self.assertIsNone(env_config().token_rate)
        for value in ("5", "5/day", "-1/minute", "0/minute", "1.5/second", "5/ minute",
                      "\u0663/second", "5/minutes"):
            with self.subTest(value=value):
                with self.assertRaises(appserver.ConfigError) as caught:
                    env_config(OSS_TOKEN_RATE=value)
                self.assertEqual(caught.exception.variable, "OSS_TOKEN_RATE")

    def test_no_limit_by_default(self):
        self.start_server(env_config())
        self.assertIsNone(self.server.app.rate_limiter)
        for _ in range(50):
            self.assertEqual(self.request("GET", "/")[0], 200)

    def test_5_per_second_on_the_real_clock_gives_429_then_recovers(self):
        self.start("5/second", clock=False)
        started = time.monotonic()
        statuses = [self.status() for _ in range(12)]
        elapsed = time.monotonic() - started
        self.assertEqual(statuses[:5], [200] * 5, statuses)
        # The bucket refills at 5/s: at most one more per 0.2 s that the burst took.
        self.assertLessEqual(statuses.count(200), 5 + int(elapsed * 5) + 1, statuses)
        if elapsed < 0.2:
            self.assertEqual(statuses[5:], [429] * 7, statuses)
        # However slow this machine, a burst soon meets a 429, which says: 1 second.
        for _ in range(20):
            status, response, _ = self.get()
            if status == 429:
                break
        self.assertEqual(status, 429)
        self.assertEqual(response.getheader("Retry-After"), "1")
        time.sleep(1.05)   # a full second: the whole burst is back
        self.assertEqual([self.status() for _ in range(5)], [200] * 5)

    def test_3_per_minute_says_when_to_retry_and_honouring_it_works(self):
        self.start("3/minute")
        self.assertEqual([self.status() for _ in range(3)], [200] * 3)
        retry_after = self.assert_limited()
        self.assertLessEqual(retry_after, 60)
        self.clock.advance(retry_after - 0.5)
        self.assert_limited()
        self.clock.advance(0.5)
        self.assertEqual(self.status(), 200)
        self.assert_limited()

    def test_over_ten_minutes_of_hammering_only_the_configured_rate_gets_through(self):
        self.start("3/minute")
        granted = 0
        for _ in range(600):   # a request every simulated second for ten minutes
            status = self.status()
            self.assertIn(status, (200, 429))
            granted += status == 200
            self.clock.advance(1)
        # 30 in ten minutes, plus at most the initial burst of 3.
        self.assertGreaterEqual(granted, 30)
        self.assertLessEqual(granted, 33)

    def test_an_idle_client_gets_a_burst_of_the_rate_not_more(self):
        self.start("3/minute")
        self.clock.advance(3600)
        statuses = [self.status() for _ in range(6)]
        self.assertEqual(statuses, [200] * 3 + [429] * 3)

    def test_each_user_has_a_limit_of_their_own_in_hmac_mode(self):
        self.start("2/minute", OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=TICKET_SECRET,
                   OSS_UPLOAD_DIR="uploads/{user}/")
        expiry = int(time.time()) + 600
        alice = {"Authorization": "Bearer " + mint_ticket(TICKET_SECRET, "alice", expiry)}
        bob = {"Authorization": "Bearer " + mint_ticket(TICKET_SECRET, "bob", expiry)}
        self.assertEqual([self.status(alice) for _ in range(2)], [200, 200])
        self.assert_limited(alice)
        # Same connection, same address: bob is counted apart from alice.
        self.assertEqual([self.status(bob) for _ in range(2)], [200, 200])
        self.assert_limited(bob)
        self.assert_limited(alice)
        # A user is a user wherever they come from: X-Forwarded-For does not reset it.
        self.assert_limited({**alice, "X-Forwarded-For": "198.51.100.99"})

    def test_a_refused_request_is_answered_401_not_429(self):
        self.start("1/minute", OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=TICKET_SECRET)
        for _ in range(3):
            self.assertEqual(self.status(), 401)


class ClientAddressKeys(RateTestCase):
    """With OSS_TOKEN_AUTH=none each client address has its own limit, 1/minute here."""

    def test_without_x_forwarded_for_the_peer_is_the_client(self):
        self.start("1/minute")
        self.assertEqual(self.status(), 200)
        self.assert_limited()

    def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(self):
        self.start("1/minute")   # the test connects from 127.0.0.1, trusted by default
        self.assertEqual(self.status({"X-Forwarded-For": "198.51.100.7"}), 200)
        self.assert_limited({"X-Forwarded-For": "198.51.100.7"})
        self.assertEqual(self.status({"X-Forwarded-For": "198.51.100.8"}), 200)
        self.assertEqual(self.status(), 200)   # the proxy's own address is another key

    def test_a_spoofed_leftmost_entry_does_not_change_the_key(self):
        self.start("1/minute")
        self.assertEqual(self.status({"X-Forwarded-For": "198.51.100.7"}), 200)
        for spoofed in ("6.6.6.6, 198.51.100.7", "6.6.6.6,7.7.7.7 , 198.51.100.7",
                        "garbage, 198.51.100.7", "198.51.100.8, 198.51.100.7"):
            with self.subTest(spoofed=spoofed):
                self.assert_limited({"X-Forwarded-For": spoofed})

    def test_trusted_hops_on_the_right_are_skipped(self):
        self.start("1/minute", OSS_TRUSTED_PROXIES="127.0.0.0/8,10.0.0.0/8")
        self.assertEqual(self.status({"X-Forwarded-For": "198.51.100.9, 10.1.1.1"}), 200)
        self.assert_limited({"X-Forwarded-For": "198.51.100.9"})
        self.assert_limited({"X-Forwarded-For": "1.2.3.4, 198.51.100.9, 10.9.9.9, 127.0.0.2"})

    def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(self):
        self.start("1/minute", OSS_TRUSTED_PROXIES="10.0.0.0/8")
        self.assertEqual(self.status({"X-Forwarded-For": "198.51.100.7"}), 200)
        # Every request is 127.0.0.1's, whatever it claims.
        self.assert_limited({"X-Forwarded-For": "198.51.100.8"})
        self.assert_limited()

    def test_ipv6_clients_are_counted_by_their_64(self):
        self.start("1/minute")
        self.assertEqual(self.status({"X-Forwarded-For": "2001:db8:1:2::aaaa"}), 200)
        self.assert_limited({"X-Forwarded-For": "2001:db8:1:2:ffff:ffff:ffff:ffff"})
        self.assertEqual(self.status({"X-Forwarded-For": "2001:db8:1:3::aaaa"}), 200)


class ClientAddress(unittest.TestCase):
    """appserver.client_address(config, peer, headers), case by case."""

    def key(self, peer, *forwarded, trusted="127.0.0.0/8,::1/128"):
        config = env_config(OSS_TRUSTED_PROXIES=trusted)
        headers = {"x-forwarded-for": list(forwarded)} if forwarded else {}
        return appserver.client_address(config, peer, headers)

    def test_the_peer_without_a_proxy(self):
        self.assertEqual(self.key("198.51.100.7"), "198.51.100.7")
        self.assertEqual(self.key("198.51.100.7", "1.2.3.4"), "198.51.100.7")   # untrusted peer
        self.assertEqual(self.key("127.0.0.1"), "127.0.0.1")

    def test_the_rightmost_untrusted_hop_from_a_trusted_proxy(self):
        self.assertEqual(self.key("127.0.0.1", "198.51.100.7"), "198.51.100.7")
        self.assertEqual(self.key("127.0.0.1", "6.6.6.6, 198.51.100.7"), "198.51.100.7")
        self.assertEqual(self.key("127.0.0.1", "6.6.6.6", "198.51.100.7"), "198.51.100.7")
        self.assertEqual(self.key("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1",
                                  trusted="10.0.0.0/8"), "198.51.100.7")
        self.assertEqual(self.key("10.0.0.2", "198.51.100.7", trusted="10.0.0.0/8"),
                         "198.51.100.7")

    def test_ipv6_by_64_and_ipv4_mapped_as_ipv4(self):
        first = self.key("2001:db8:1:2:aaaa:bbbb:cccc:dddd")
        self.assertEqual(first, self.key("2001:db8:1:2::1"))
        self.assertNotEqual(first, self.key("2001:db8:1:3::1"))
        self.assertEqual(first, "2001:db8:1:2::/64")
        self.assertEqual(self.key("::1", "2001:db8:9:9:1::1"), "2001:db8:9:9::/64")
        self.assertEqual(self.key("::ffff:198.51.100.7"), "198.51.100.7")
        self.assertEqual(self.key("127.0.0.1", "::ffff:198.51.100.7"), "198.51.100.7")

    def test_ports_in_hops_are_dropped(self):
        self.assertEqual(self.key("127.0.0.1", "198.51.100.7:5555"), "198.51.100.7")
        self.assertEqual(self.key("127.0.0.1", "[2001:db8:5:6::1]:443"), "2001:db8:5:6::/64")

    def test_when_every_hop_is_trusted_the_peer_counts(self):
        # The leftmost entry is the client's own word even when it names a trusted address.
        self.assertEqual(self.key("127.0.0.1", "127.0.0.9"), "127.0.0.1")
        self.assertEqual(self.key("127.0.0.1", "10.0.0.1, 127.0.0.2",
                                  trusted="127.0.0.0/8,10.0.0.0/8"), "127.0.0.1")

    def test_an_ipv4_mapped_proxy_address_is_trusted_as_its_ipv4(self):
        # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        self.assertEqual(self.key("::ffff:127.0.0.1", "198.51.100.7"), "198.51.100.7")


def rss_bytes():
    """This process's resident set size, or None where /proc is missing."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


class RateLimiterBounds(unittest.TestCase):
    def test_the_limiter_memory_stays_flat_across_100000_keys(self):
        limiter = appserver.RateLimiter(1, 3600, clock=FakeClock(0.0))
        keys = ["10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255) for i in range(100000)]
        tracemalloc.start()
        try:
            for key in keys[:20000]:
                limiter.take(key)
            plateau = tracemalloc.get_traced_memory()[0]
            for key in keys[20000:]:
                limiter.take(key)
            final = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        self.assertLessEqual(len(limiter._buckets), README_MAX_CLIENTS)
        # 10,000 entries take about 1.5 MB; 80,000 more kept would be 12 MB.
        self.assertLess(final - plateau, 256 * 1024,
                        "grew by %d bytes from 20,000 to 100,000 keys" % (final - plateau))

    def test_the_app_forgets_old_clients_across_100000_addresses(self):
        app = appserver.App(env_config(OSS_TOKEN_RATE="1/hour"))
        app.rate_limiter.clock = FakeClock(0.0)

        def status(index):
            address = "10.%d.%d.%d" % (index >> 16 & 255, index >> 8 & 255, index & 255)
            return app.handle("GET", "/", {"x-forwarded-for": [address]}, None,
                              lambda n: b"", "127.0.0.1").status

        for index in range(20000):
            self.assertEqual(status(index), 200)
        gc.collect()
        plateau = rss_bytes()
        for index in range(20000, 100000):
            self.assertEqual(status(index), 200)
        gc.collect()
        final = rss_bytes()
        self.assertLessEqual(len(app.rate_limiter._buckets), README_MAX_CLIENTS)
        if plateau is not None:
            self.assertLess(final - plateau, 8 * 1024 * 1024,
                            "RSS grew by %d bytes from 20,000 to 100,000 clients"
                            % (final - plateau))
        # The most recent client is remembered (still limited); the first is forgotten.
        self.assertEqual(status(99999), 429)
        self.assertEqual(status(0), 200)

    def test_the_least_recently_seen_key_goes_first(self):
        limiter = appserver.RateLimiter(1, 60, max_keys=3, clock=FakeClock(0.0))
        for key in ("a", "b", "c"):
            self.assertEqual(limiter.take(key), 0)
        self.assertGreater(limiter.take("a"), 0)   # a is now the most recently seen
        self.assertEqual(limiter.take("d"), 0)     # b, the least recently seen, is dropped
        self.assertEqual(limiter.take("b"), 0)     # forgotten: a fresh bucket (drops c)
        self.assertGreater(limiter.take("a"), 0)   # a was kept all along
        self.assertGreater(limiter.take("d"), 0)
        self.assertLessEqual(len(limiter._buckets), 3)

    def test_take_is_cheap(self):
        limiter = appserver.RateLimiter(60, 60)
        keys = ["198.51.%d.%d" % (i >> 8 & 255, i & 255) for i in range(100000)]
        started = time.perf_counter()
        for key in keys:
            limiter.take(key)
        elapsed = time.perf_counter() - started
        self.assertLess(elapsed, 2.0, "100,000 takes took %.2f s" % elapsed)

    def test_concurrent_takes_grant_exactly_the_count(self):
        limiter = appserver.RateLimiter(100, 3600, clock=FakeClock(0.0))
        granted = []
        lock = threading.Lock()

        def worker():
            mine = sum(1 for _ in range(500) if limiter.take("one key") == 0)
            with lock:
                granted.append(mine)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(sum(granted), 100)


if __name__ == "__main__":
    unittest.main()
