"""Regressions for the findings of the security review: callbacks from other tenants, fetch
bounds that DNS and connecting must respect, and key parsing that must only raise KeyFormatError."""

import socket
import threading
import time
import unittest
from unittest import mock

import appserver


class CallbackFields(unittest.TestCase):
    """A genuine OSS callback proves OSS sent it, not that it is about one of our uploads."""

    config = appserver.Config(bucket="examplebucket", upload_dir="user-dir-prefix/",
                              max_upload_bytes=1000)

    def test_our_uploads_pass(self):
        for fields in ({"bucket": "examplebucket", "filename": "user-dir-prefix/a.png",
                        "size": "1000"},
                       {"object": "user-dir-prefix/b", "size": 3},
                       {"unrelated": "x"}):
            with self.subTest(fields=fields):
                appserver.check_callback_fields(self.config, fields)

    def test_other_tenants_are_refused(self):
        for fields in ({"bucket": "attacker-bucket", "filename": "user-dir-prefix/a.png"},
                       {"filename": "elsewhere/a.png"},
                       {"object": "user-dir-prefixX/a.png"},
                       {"object": "user-dir-prefix/a.png", "size": "1001"}):
            with self.subTest(fields=fields):
                with self.assertRaises(appserver.CallbackRejected):
                    appserver.check_callback_fields(self.config, fields)

    def test_unknown_bucket_is_not_checked(self):
        config = appserver.Config(bucket=None)
        appserver.check_callback_fields(config, {"bucket": "any", "filename": "user-dir-prefix/x"})

    def test_body_type_comes_from_the_config_not_the_header(self):
        fields = appserver.parse_callback_fields(appserver.FORM_URLENCODED, b'{"a":1}')
        self.assertEqual(fields, {'{"a":1}': ""})
        with self.assertRaises(appserver.CallbackRejected):
            appserver.parse_callback_fields("application/json", b"[" * 100000)


class FetchDeadline(unittest.TestCase):
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


class KeyParsing(unittest.TestCase):
    def test_a_long_algorithm_identifier_is_a_key_format_error(self):
        algorithm = b"\x06\x09" + bytes.fromhex("2a864886f70d010101") + b"\x05\x00" + b"\x00" * 300
        inner = b"\x30\x82" + len(algorithm).to_bytes(2, "big") + algorithm + b"\x03\x01\x00"
        der = b"\x30\x82" + len(inner).to_bytes(2, "big") + inner
        with self.assertRaises(appserver.KeyFormatError):
            appserver.load_public_key(der)


if __name__ == "__main__":
    unittest.main()
