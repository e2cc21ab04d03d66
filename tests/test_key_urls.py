"""Which public-key URLs are admitted (the allowlist of prefixes), and the public-key cache
alone, with a fake fetch and clock: TTLs, the negative cache, single-flight, bounds and the
fetch rate. (The fetch itself is in test_key_fetch.py.)"""

import threading
import time
import unittest

import appserver
from tests import rsa_testkit as kit
from tests.support import CountingFetch, FakeClock

DEFAULT_PREFIXES = appserver.Config().pub_key_url_prefixes
OSS_HTTP = "http://gosspublic.alicdn.com/callback_pub_key_v1.pem"
OSS_HTTPS = "https://gosspublic.alicdn.com/callback_pub_key_v1.pem"
OSS_N = int(
    "ab3f2411b3c1407669586de1cac1c77a083c12cdb231ac0b47d35effa7be59a4"
    "96f91ca25be9bd72d38dac541d1dd6f4b5f14361075c025f081fba1f6605d64f", 16)


class DefaultPrefixesTest(unittest.TestCase):
    def test_defaults_are_the_documented_ones(self):
        self.assertEqual(tuple(DEFAULT_PREFIXES),
                         ("http://gosspublic.alicdn.com/", "https://gosspublic.alicdn.com/"))
        self.assertEqual(appserver.OSS_CALLBACK_KEY_URL, OSS_HTTP)

    def test_the_real_oss_key_urls_are_admitted(self):
        for url in (OSS_HTTP, OSS_HTTPS, "https://gosspublic.alicdn.com/callback_pub_key_v2.pem"):
            with self.subTest(url):
                self.assertIs(appserver.pub_key_url_allowed(url, DEFAULT_PREFIXES), True)

    def test_lookalike_hosts_userinfo_ports_case_and_control_characters_are_refused(self):
        refused = [
            "https://gosspublic.alicdn.com.evil.test/k.pem",
            "http://gosspublic.alicdn.com.evil.test/callback_pub_key_v1.pem",
            "https://gosspublic.alicdn.com@127.0.0.1/",
            "http://gosspublic.alicdn.com@127.0.0.1/callback_pub_key_v1.pem",
            "https://user@gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "https://user:pw@gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "https://@gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "http://gosspublic-alicdn.com/x",
            "http://gosspublicXalicdn.com/x",
            "http://evil.gosspublic.alicdn.com/x",
            "https://evil.com\\@gosspublic.alicdn.com/x",
            "https://gosspublic.alicdn.com\\@evil.com/x",
            "https://gosspublic.alicdn.com\\x",
            "file:///etc/passwd",
            "file://gosspublic.alicdn.com/etc/passwd",
            "ftp://gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "gopher://gosspublic.alicdn.com/x",
            "https://gosspublic.alicdn.com:444/callback_pub_key_v1.pem",
            "http://gosspublic.alicdn.com:8080/callback_pub_key_v1.pem",
            "https://GOSSPUBLIC.ALICDN.COM/callback_pub_key_v1.pem",
            "https://GossPublic.alicdn.com/callback_pub_key_v1.pem",
            "http://gosspublic.alicdn.CoM/callback_pub_key_v1.pem",
            "https://gosspublic.alicdn.com./callback_pub_key_v1.pem",
            "http://gosspublic.alicdn.com./x",
            " https://gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "\thttps://gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "\x00https://gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "https://gosspublic.alicdn.com\t/callback_pub_key_v1.pem",
            "https://gosspublic.ali\ncdn.com/callback_pub_key_v1.pem",
            "https://gosspublic.alicdn.com\x00.evil.test/k.pem",
            "https://gosspublic.alicdn.com /callback_pub_key_v1.pem",
            "https://gosspublic.alicdn.com/callback_pub_key_v1.pem\r\nX-Injected: 1",
            "https://gosspublic.alicdn.com/call back.pem",
            "https://gosspublic.alicdn.com/k.pem\x7f",
            "https://gosspublic%2ealicdn.com/callback_pub_key_v1.pem",
            "https://%67osspublic.alicdn.com/callback_pub_key_v1.pem",
            "https://gosspublic.alicdn.com%2f@evil.test/x",
            "https://gosspublic.alicdn.com%00/x",
            "https://gosspublic.alicdn.com",          # no path at all
            "https:gosspublic.alicdn.com/x",
            "https:/gosspublic.alicdn.com/x",
            "//gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "gosspublic.alicdn.com/callback_pub_key_v1.pem",
            "/callback_pub_key_v1.pem",
            "",
            "https://[::1]/callback_pub_key_v1.pem",
            "https://127.0.0.1/callback_pub_key_v1.pem",
            "https://169.254.169.254/latest/meta-data/",
            "https://gosspublic.alicdn.com\u3002evil.test/x",   # ideographic full stop
            "https://gosspublic\uff0ealicdn.com/x",            # fullwidth full stop
            "https://gosspublic.alicdn.com:443@evil.test/x",
        ]
        for url in refused:
            with self.subTest(url=url):
                self.assertIs(appserver.pub_key_url_allowed(url, DEFAULT_PREFIXES), False)

    def test_empty_prefix_list_refuses_everything(self):
        for url in (OSS_HTTP, OSS_HTTPS, "http://127.0.0.1:1/x"):
            with self.subTest(url):
                self.assertIs(appserver.pub_key_url_allowed(url, ()), False)


class LoopbackPrefixTest(unittest.TestCase):
    PORT = 48123
    PREFIX = "http://127.0.0.1:%d/keys/" % PORT

    def allowed(self, url, prefixes=None):
        return appserver.pub_key_url_allowed(url, (self.PREFIX,) if prefixes is None else prefixes)

    def test_urls_under_the_prefix_are_admitted(self):
        for url in ("http://127.0.0.1:%d/keys/k.pem" % self.PORT,
                    "http://127.0.0.1:%d/keys/" % self.PORT,
                    "http://127.0.0.1:%d/keys/sub/dir/k.pem" % self.PORT):
            with self.subTest(url):
                self.assertIs(self.allowed(url), True)

    def test_other_scheme_host_port_path_or_userinfo_is_refused(self):
        p = self.PORT
        for url in ("https://127.0.0.1:%d/keys/k.pem" % p,        # scheme differs
                    "HTTP://127.0.0.1:%d/keys/k.pem\x00" % p,
                    "http://127.0.0.2:%d/keys/k.pem" % p,         # host differs
                    "http://localhost:%d/keys/k.pem" % p,
                    "http://127.1:%d/keys/k.pem" % p,
                    "http://0x7f000001:%d/keys/k.pem" % p,
                    "http://[::1]:%d/keys/k.pem" % p,
                    "http://127.0.0.1.:%d/keys/k.pem" % p,
                    "http://127.0.0.1/keys/k.pem",                # port: default 80 != p
                    "http://127.0.0.1:%d/keys/k.pem" % (p + 1),
                    "http://127.0.0.1:80/keys/k.pem",
                    "http://127.0.0.1:%d/other/k.pem" % p,        # path prefix
                    "http://127.0.0.1:%d/keys" % p,
                    "http://127.0.0.1:%d/keysX/k.pem" % p,
                    "http://127.0.0.1:%d/Keys/k.pem" % p,
                    "http://127.0.0.1:%d" % p,
                    "http://x@127.0.0.1:%d/keys/k.pem" % p,       # userinfo
                    "http://127.0.0.1:%d@evil.test/keys/k.pem" % p,
                    " http://127.0.0.1:%d/keys/k.pem" % p,
                    "http://127.0.0.1:%d\\@evil.test/keys/k.pem" % p,
                    "http://127.0.0.1:%d/keys/k.pem\n" % p):
            with self.subTest(url=url):
                self.assertIs(self.allowed(url), False)

    def test_a_prefix_without_a_port_matches_only_the_default_port(self):
        # a prefix without a port matches only the scheme's default port
        self.assertIs(self.allowed("http://127.0.0.1/keys/k.pem", ("http://127.0.0.1/keys/",)), True)
        self.assertIs(self.allowed("http://127.0.0.1:8080/keys/k.pem", ("http://127.0.0.1/keys/",)),
                      False)
        self.assertIs(self.allowed("http://127.0.0.1:443/keys/k.pem", ("http://127.0.0.1/keys/",)),
                      False)
        self.assertIs(self.allowed("https://127.0.0.1/keys/k.pem", ("https://127.0.0.1/keys/",)), True)
        self.assertIs(self.allowed("https://127.0.0.1:80/keys/k.pem", ("https://127.0.0.1/keys/",)),
                      False)
        # a prefix with a port does not match the default port
        self.assertIs(self.allowed("http://127.0.0.1/keys/k.pem", ("http://127.0.0.1:8080/keys/",)),
                      False)

    def test_any_of_several_prefixes_admits(self):
        prefixes = DEFAULT_PREFIXES + (self.PREFIX,)
        self.assertIs(self.allowed(OSS_HTTP, prefixes), True)
        self.assertIs(self.allowed("http://127.0.0.1:%d/keys/k.pem" % self.PORT, prefixes), True)
        self.assertIs(self.allowed("http://127.0.0.1:%d/x.pem" % self.PORT, prefixes), False)


# ---------------------------------------------------------------------------- PublicKeyCache

class PublicKeyCacheTest(unittest.TestCase):
    URL = "http://127.0.0.1:1/keys/k.pem"

    def setUp(self):
        self.n, self.e = kit.load_public_pair(kit.DATA / "rsa2048_pub.pem")

    def make(self, fetch, clock=None, **kw):
        return appserver.PublicKeyCache(fetch=fetch, clock=clock or FakeClock(), **kw)

    def test_embedded_oss_key_never_fetches(self):
        fetch = CountingFetch()
        cache = self.make(fetch)
        for url in (OSS_HTTP, OSS_HTTPS, appserver.OSS_CALLBACK_KEY_URL):
            with self.subTest(url):
                key = cache.get(url)
                self.assertEqual((key.n, key.e), (OSS_N, 65537))
        self.assertEqual(fetch.count, 0)

    def test_embedded_key_even_when_fetch_fails(self):
        fetch = CountingFetch(fail=True)
        cache = self.make(fetch)
        self.assertEqual(cache.get(OSS_HTTPS).n, OSS_N)
        self.assertEqual(fetch.count, 0)

    def test_a_good_key_is_cached_for_24_hours(self):
        clock, fetch = FakeClock(), CountingFetch()
        cache = self.make(fetch, clock)
        key = cache.get(self.URL)
        self.assertEqual((key.n, key.e), (self.n, self.e))
        self.assertEqual(fetch.count, 1)
        for step in (1, 3600, 86400 - 3600 - 2):
            clock.advance(step)
            self.assertEqual(cache.get(self.URL), key)
        self.assertEqual(fetch.count, 1, "refetched before 24 h")
        clock.advance(3)   # now 24 h + 1 s after the fetch
        self.assertEqual(cache.get(self.URL), key)
        self.assertEqual(fetch.count, 2, "not refetched after 24 h")

    def test_a_failure_is_cached_for_30_seconds(self):
        clock, fetch = FakeClock(), CountingFetch(fail=True)
        cache = self.make(fetch, clock)
        with self.assertRaises(appserver.PubKeyUnavailable):
            cache.get(self.URL)
        self.assertEqual(fetch.count, 1)
        clock.advance(29)
        with self.assertRaises(appserver.PubKeyUnavailable):
            cache.get(self.URL)
        self.assertEqual(fetch.count, 1, "failure not cached for 30 s")
        fetch.fail = False
        clock.advance(2)   # 31 s after the failure
        key = cache.get(self.URL)
        self.assertEqual(key.n, self.n)
        self.assertEqual(fetch.count, 2)

    def test_fetcher_bug_is_a_cached_failure_not_a_crash(self):
        clock = FakeClock()
        fetch = CountingFetch(fail=RuntimeError("injected fetcher bug"))
        cache = self.make(fetch, clock)
        with self.assertLogs("appserver", "ERROR"):
            with self.assertRaises(appserver.PubKeyUnavailable):
                cache.get(self.URL)
        with self.assertRaises(appserver.PubKeyUnavailable):
            cache.get(self.URL)
        self.assertEqual(fetch.count, 1)

    def test_a_key_under_2048_bits_from_a_host_other_than_oss_is_refused(self):
        # the 2048-bit floor for every host but gosspublic.alicdn.com (whose key is pinned)
        fetch = CountingFetch(pem=(kit.DATA / "rsa1024_pub.pem").read_bytes())
        cache = self.make(fetch)
        with self.assertRaises(appserver.PubKeyUnavailable):
            cache.get(self.URL)
        self.assertEqual(fetch.count, 1)
        e3 = CountingFetch(pem=(kit.DATA / "rsa2048_e3_pub.pem").read_bytes())
        self.assertEqual(self.make(e3).get(self.URL).e, 3)

    def test_bad_pem_is_a_cached_failure(self):
        clock = FakeClock()
        fetch = CountingFetch(pem=b"<html>not a key</html>")
        cache = self.make(fetch, clock)
        for _ in range(3):
            with self.assertRaises(appserver.PubKeyUnavailable):
                cache.get(self.URL)
        self.assertEqual(fetch.count, 1)

    def test_100_threads_asking_at_once_share_one_fetch(self):
        fetch = CountingFetch(delay=0.3)
        cache = self.make(fetch, clock=time.monotonic)
        barrier = threading.Barrier(100)
        results, errors = [], []

        def worker():
            barrier.wait()
            try:
                results.append(cache.get(self.URL))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 100)
        self.assertTrue(all(k.n == self.n for k in results))
        self.assertEqual(fetch.count, 1)

    def test_30_threads_asking_at_once_share_one_failure(self):
        fetch = CountingFetch(delay=0.2, fail=True)
        cache = self.make(fetch, clock=time.monotonic)
        barrier = threading.Barrier(30)
        errors = []

        def worker():
            barrier.wait()
            try:
                cache.get(self.URL)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(len(errors), 30)
        self.assertEqual(fetch.count, 1)

    def test_different_urls_fetched_separately(self):
        fetch = CountingFetch()
        cache = self.make(fetch)
        cache.get(self.URL)
        cache.get(self.URL + "2")
        cache.get(self.URL)
        self.assertEqual(sorted(fetch.calls), sorted([self.URL, self.URL + "2"]))

    def test_entries_are_bounded_and_the_oldest_evicted(self):
        fetch = CountingFetch()
        cache = self.make(fetch, max_entries=8)
        urls = ["http://127.0.0.1:1/keys/%d.pem" % i for i in range(20)]
        for url in urls:
            cache.get(url)
        self.assertEqual(fetch.count, 20)
        cache.get(urls[-1])                 # the newest entry is still cached
        self.assertEqual(fetch.count, 20)
        cache.get(urls[0])                  # the oldest was evicted: fetched again
        self.assertEqual(fetch.count, 21)
        self.assertLessEqual(self.stored_entries(cache), 8)

    def test_the_default_cache_is_bounded(self):
        fetch = CountingFetch()
        cache = self.make(fetch, max_fetches_per_minute=10 ** 6)
        for i in range(3000):
            cache.get("http://127.0.0.1:1/keys/%d.pem" % i)
        self.assertLess(self.stored_entries(cache), 3000)

    def test_failures_count_against_the_bound(self):
        # negative entries count against the bound too (an attacker controls failures)
        fetch = CountingFetch(fail=True)
        cache = self.make(fetch, max_entries=8)
        for i in range(100):
            with self.assertRaises(appserver.PubKeyUnavailable):
                cache.get("http://127.0.0.1:1/keys/%d.pem" % i)
        self.assertLessEqual(self.stored_entries(cache), 8)

    def test_fetches_are_rate_limited_across_urls(self):
        # Unsigned junk can name a new URL under an allowed prefix every time.
        fetch, clock = CountingFetch(), FakeClock()
        cache = self.make(fetch, clock, max_fetches_per_minute=5)
        for i in range(5):
            cache.get("http://127.0.0.1:1/keys/%d.pem" % i)
        with self.assertRaises(appserver.PubKeyUnavailable):
            cache.get("http://127.0.0.1:1/keys/new.pem")
        self.assertEqual(fetch.count, 5)
        cache.get("http://127.0.0.1:1/keys/0.pem")  # cached keys still answer
        clock.advance(61)
        cache.get("http://127.0.0.1:1/keys/new.pem")
        self.assertEqual(fetch.count, 6)

    def test_failures_are_evicted_before_good_keys(self):
        good, bad = CountingFetch(), CountingFetch(fail=True)

        def fetch(url, *args, **kwargs):
            return (good if url.endswith("good.pem") else bad)(url)

        cache = self.make(fetch, max_entries=4)
        cache.get("http://127.0.0.1:1/keys/good.pem")
        for i in range(10):
            with self.assertRaises(appserver.PubKeyUnavailable):
                cache.get("http://127.0.0.1:1/keys/bad%d.pem" % i)
        cache.get("http://127.0.0.1:1/keys/good.pem")
        self.assertEqual(good.count, 1)

    @staticmethod
    def stored_entries(cache):
        # white-box: the largest dict on the cache (its URL -> entry map)
        sizes = [len(v) for v in vars(cache).values() if isinstance(v, dict)]
        assert sizes, "no dict attribute found on PublicKeyCache"
        return max(sizes)


if __name__ == "__main__":
    unittest.main()
