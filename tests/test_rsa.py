"""rsa_verify: the OSS doc known-answer test, PKCS#1 v1.5 forgery classes, hash table, robustness.

Signatures here are made by tests/rsa_testkit.py (stdlib pow() with an independently built block)
with the test-only keys in tests/data/, never by appserver's own code.
"""

import base64
import hashlib
import random
import unittest
import unittest.mock

import appserver
from tests import rsa_testkit as kit

# OSS's published 512-bit callback key, and the worked example of the "Callback" page of the
# OSS API documentation (the signature and the string it signs).
OSS_N = int(
    "ab3f2411b3c1407669586de1cac1c77a083c12cdb231ac0b47d35effa7be59a4"
    "96f91ca25be9bd72d38dac541d1dd6f4b5f14361075c025f081fba1f6605d64f", 16)
OSS_E = 65537
KAT_SIG = base64.b64decode(
    "kKQeGTRccDKyHB3H9vF+xYMSrmhMZjzzl2/kdD1ktNVgbWEfYTQG0G2SU/RaHBovRCE8OkQDjC3uG33esH2txA==")
KAT_MSG = b"/index.php?id=1&index=2\nbucket=yonghu-test"


def pubkey(n, e):
    return appserver.PublicKey(n, e)


class KnownAnswerTest(unittest.TestCase):
    key = pubkey(OSS_N, OSS_E)

    def test_kat_inputs_are_the_documented_key_and_message(self):
        self.assertEqual(len(KAT_MSG), 42)
        self.assertEqual(hashlib.md5(KAT_MSG).hexdigest(), "5b74fc97cc385b45c6c8b7782d5a2140")
        self.assertEqual(len(KAT_SIG), 64)
        # the test kit's encoder reproduces what OSS's private key produced (kit sanity check)
        self.assertEqual(kit.textbook_open(OSS_N, OSS_E, KAT_SIG),
                         kit.emsa_pkcs1_v15("md5", KAT_MSG, 64))

    def test_kat_valid(self):
        self.assertIs(appserver.rsa_verify(self.key, KAT_MSG, KAT_SIG), True)
        self.assertIs(appserver.rsa_verify(self.key, KAT_MSG, KAT_SIG, "md5"), True)
        self.assertIs(appserver.rsa_verify(self.key, KAT_MSG, KAT_SIG, hash_name="md5"), True)

    def test_kat_valid_where_md5_is_refused_for_security_use(self):
        # A FIPS-mode OpenSSL refuses md5() unless usedforsecurity=False; OSS signs with MD5.
        def fips_md5(*data, usedforsecurity=True):
            if usedforsecurity:
                raise ValueError("[digital envelope routines] unsupported")
            return hashlib.md5(*data, usedforsecurity=False)

        appserver._emsa_pkcs1_v15_prefix.cache_clear()
        self.addCleanup(appserver._emsa_pkcs1_v15_prefix.cache_clear)
        with unittest.mock.patch.dict(appserver._HASHES, {"md5": fips_md5}):
            self.assertIs(appserver.rsa_verify(self.key, KAT_MSG, KAT_SIG), True)
            self.assertIs(appserver.rsa_verify(self.key, KAT_MSG + b"x", KAT_SIG), False)

    def test_kat_invalid_variants(self):
        variants = {
            "body byte": b"/index.php?id=1&index=2\nbucket=yonghu-tesu",
            "body first byte": b"/index.php?id=1&index=2\nBucket=yonghu-test",
            "path byte": b"/index.php?id=1&index=2".replace(b"index.php", b"indexXphp")
                         + b"\nbucket=yonghu-test",
            "query byte": b"/index.php?id=1&index=3\nbucket=yonghu-test",
            "trailing newline": KAT_MSG + b"\n",
            "leading newline": b"\n" + KAT_MSG,
            "without ?": b"/index.phpid=1&index=2\nbucket=yonghu-test",
            "? replaced by &": b"/index.php&id=1&index=2\nbucket=yonghu-test",
            "no newline": b"/index.php?id=1&index=2bucket=yonghu-test",
            "CRLF": b"/index.php?id=1&index=2\r\nbucket=yonghu-test",
            "empty": b"",
        }
        for name, msg in variants.items():
            with self.subTest(name):
                self.assertIs(appserver.rsa_verify(self.key, msg, KAT_SIG), False)
        # every single-byte change of the message fails
        for i in range(len(KAT_MSG)):
            msg = bytearray(KAT_MSG)
            msg[i] ^= 0x01
            with self.subTest(msg_byte=i):
                self.assertIs(appserver.rsa_verify(self.key, bytes(msg), KAT_SIG), False)

    def test_kat_signature_bit_flips(self):
        for bit in range(len(KAT_SIG) * 8):
            sig = bytearray(KAT_SIG)
            sig[bit // 8] ^= 0x80 >> (bit % 8)
            with self.subTest(bit=bit):
                self.assertIs(appserver.rsa_verify(self.key, KAT_MSG, bytes(sig)), False)

    def test_kat_wrong_hash_name(self):
        for name in ("sha1", "sha256", "sha512"):
            with self.subTest(name):
                self.assertIs(appserver.rsa_verify(self.key, KAT_MSG, KAT_SIG, name), False)


class LengthAndRangeTest(unittest.TestCase):
    """CVE-2020-13757 (python-rsa, leading zeros) and RustCrypto #272 (s >= n)."""

    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.key = pubkey(cls.priv.n, cls.priv.e)
        cls.msg = b"/cb?x=1\nobject=a.jpg&size=1"
        cls.sig = kit.sign(cls.priv, cls.msg)
        cls.oss = pubkey(OSS_N, OSS_E)

    def test_control_valid(self):
        self.assertIs(appserver.rsa_verify(self.key, self.msg, self.sig), True)

    def test_prepended_and_appended_zero_bytes(self):
        for key, msg, sig in ((self.key, self.msg, self.sig), (self.oss, KAT_MSG, KAT_SIG)):
            for name, bad in {
                "00 prepended": b"\x00" + sig,
                "00 00 prepended": b"\x00\x00" + sig,
                "00 appended": sig + b"\x00",
                "last byte dropped": sig[:-1],
                "first byte dropped": sig[1:],
                "doubled": sig + sig,
                "empty": b"",
            }.items():
                with self.subTest(name, bits=key.n.bit_length()):
                    self.assertIs(appserver.rsa_verify(key, msg, bad), False)

    def test_signature_with_leading_zero_byte_needs_exact_length(self):
        # find a valid signature whose first byte is 0: stripping it must not verify
        # (with the committed rsa2048_key.pem, i = 270 is the first; start there to stay fast)
        for i in range(270, 4270):
            msg = b"leading-zero-%d" % i
            sig = kit.sign(self.priv, msg)
            if sig[0] == 0:
                break
        else:
            self.skipTest("no signature with a leading zero byte found")
        self.assertIs(appserver.rsa_verify(self.key, msg, sig), True)
        self.assertIs(appserver.rsa_verify(self.key, msg, sig[1:]), False)

    def test_s_edge_values(self):
        for key in (self.key, self.oss):
            n, k = key.n, (key.n.bit_length() + 7) // 8
            cases = {"0": 0, "1": 1, "n-1": n - 1, "n": n, "n+1": n + 1,
                     "all-ff": 256 ** k - 1}
            for name, s in cases.items():
                with self.subTest(name, bits=n.bit_length()):
                    self.assertIs(appserver.rsa_verify(key, self.msg, s.to_bytes(k, "big")), False)

    def test_s_plus_n_is_rejected(self):
        # s + n has the same s^e mod n; it fits in k bytes for this key when s is small enough
        k = self.priv.k
        for i in range(200):
            msg = b"malleable-%d" % i
            sig = kit.sign(self.priv, msg)
            s2 = int.from_bytes(sig, "big") + self.priv.n
            if s2 < 256 ** k:
                break
        else:
            self.skipTest("no small signature found")
        self.assertIs(appserver.rsa_verify(self.key, msg, sig), True)
        self.assertIs(appserver.rsa_verify(self.key, msg, s2.to_bytes(k, "big")), False)
        # and KAT + n as 65 bytes
        s3 = int.from_bytes(KAT_SIG, "big") + OSS_N
        self.assertIs(appserver.rsa_verify(self.oss, KAT_MSG, s3.to_bytes(65, "big")), False)


class BlockFormatTest(unittest.TestCase):
    """Correctly exponentiated signatures over wrong blocks, made with the test key."""

    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.key = pubkey(cls.priv.n, cls.priv.e)
        cls.msg = b"/cb\nobject=a.jpg"
        cls.k = cls.priv.k

    def signed_block(self, em):
        self.assertEqual(len(em), self.k)
        return kit.raw_sign(self.priv, em)

    def verify(self, sig, hash_name="md5", msg=None):
        return appserver.rsa_verify(self.key, self.msg if msg is None else msg, sig, hash_name)

    def test_sha256_offered_as_md5_and_vice_versa(self):
        sha256_sig = kit.sign(self.priv, self.msg, "sha256")
        md5_sig = kit.sign(self.priv, self.msg, "md5")
        self.assertIs(self.verify(sha256_sig, "sha256"), True)
        self.assertIs(self.verify(md5_sig, "md5"), True)
        self.assertIs(self.verify(sha256_sig, "md5"), False)
        self.assertIs(self.verify(md5_sig, "sha256"), False)

    def test_md5_oid_with_other_digest(self):
        # MD5 DigestInfo header wrapped around a SHA-256 digest (length fields made consistent)
        alg = kit.der_seq(kit.der_oid(kit.HASH_OIDS["md5"]), kit.der_null())
        t = kit.der_seq(alg, kit.tlv(0x04, hashlib.sha256(self.msg).digest()))
        self.assertIs(self.verify(self.signed_block(kit.encode_block(self.k, t)), "md5"), False)
        self.assertIs(self.verify(self.signed_block(kit.encode_block(self.k, t)), "sha256"), False)

    def test_digest_info_missing_null(self):
        for h in ("md5", "sha1", "sha256"):
            t = kit.digest_info(h, self.msg, with_null=False)
            with self.subTest(h):
                self.assertIs(self.verify(self.signed_block(kit.encode_block(self.k, t)), h), False)

    def test_ber_lengths_in_digest_info(self):
        d = hashlib.md5(self.msg).digest()
        oid = kit.der_oid(kit.HASH_OIDS["md5"])
        alg = kit.der_seq(oid, kit.der_null())
        octets = kit.tlv(0x04, d)
        forms = {
            "outer SEQUENCE 81 20": kit.tlv(0x30, alg + octets, length=b"\x81\x20"),
            "outer SEQUENCE 82 00 20": kit.tlv(0x30, alg + octets, length=b"\x82\x00\x20"),
            "AlgorithmIdentifier 81 0c": kit.der_seq(kit.tlv(0x30, oid + kit.der_null(),
                                                             length=b"\x81\x0c"), octets),
            "OCTET STRING 81 10": kit.der_seq(alg, kit.tlv(0x04, d, length=b"\x81\x10")),
            "OID 81 08": kit.der_seq(kit.der_seq(kit.tlv(0x06, kit.oid_content(
                kit.HASH_OIDS["md5"]), length=b"\x81\x08"), kit.der_null()), octets),
            "NULL 81 00": kit.der_seq(kit.der_seq(oid, b"\x05\x81\x00"), octets),
        }
        for name, t in forms.items():
            with self.subTest(name):
                self.assertIs(self.verify(self.signed_block(kit.encode_block(self.k, t))), False)

    def test_padding_variants(self):
        t = kit.digest_info("md5", self.msg)
        good = kit.encode_block(self.k, t)
        self.assertIs(self.verify(self.signed_block(good)), True)
        variants = {
            "block type 02": kit.encode_block(self.k, t, block_type=b"\x02"),
            "block type 00": kit.encode_block(self.k, t, block_type=b"\x00", fill=b"\x00"),
            "padding byte fe": good[:10] + b"\xfe" + good[11:],
            "padding of zeros": kit.encode_block(self.k, t, fill=b"\x00"),
            "leading 01 not 00": b"\x01" + good[1:],
            "separator not 00": good[:self.k - len(t) - 1] + b"\x01" + t,
            # short padding: the DigestInfo moved left, trailing garbage after the digest
            "short padding + trailing garbage": b"\x00\x01" + b"\xff" * 8 + b"\x00" + t
                                                + b"\x00" * (self.k - 11 - len(t)),
            "digest truncated, padding longer": b"\x00\x01" + b"\xff" * (self.k - len(t) - 2)
                                                + b"\x00" + t[:-1],
        }
        for name, em in variants.items():
            with self.subTest(name):
                self.assertEqual(len(em), self.k)
                self.assertIs(self.verify(self.signed_block(em)), False)


class ShortModulusTest(unittest.TestCase):
    """RFC 8017 9.2 step 3: emLen must be at least tLen + 11, i.e. at least 8 bytes of FF."""

    def test_padding_shorter_than_8_bytes_rejected(self):
        priv = kit.generate_private_key(720, seed=7)        # k = 90 bytes
        key = pubkey(priv.n, priv.e)
        msg = b"short padding"
        t512 = kit.digest_info("sha512", msg)                # 83 bytes: PS would be 4
        self.assertEqual(priv.k - len(t512) - 3, 4)
        sig = kit.raw_sign(priv, kit.encode_block(priv.k, t512))
        self.assertIs(appserver.rsa_verify(key, msg, sig, "sha512"), False)
        # control: SHA-384 (T = 67 bytes, PS = 20) verifies with the same key
        self.assertIs(appserver.rsa_verify(key, msg, kit.sign(priv, msg, "sha384"), "sha384"), True)

    def test_padding_of_exactly_8_bytes_accepted(self):
        priv = kit.generate_private_key(8 * (34 + 11), seed=8)   # md5: T = 34, PS = 8
        key = pubkey(priv.n, priv.e)
        msg = b"minimal padding"
        self.assertEqual(priv.k - 34 - 3, 8)
        self.assertIs(appserver.rsa_verify(key, msg, kit.sign(priv, msg, "md5")), True)


class Bleichenbacher2006Test(unittest.TestCase):
    """e = 3 forgery with garbage after the digest (CVE-2006-4339, CVE-2016-1494, CVE-2022-24771/2)."""

    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_e3_key.pem")
        cls.key = pubkey(cls.priv.n, cls.priv.e)

    def test_e3_key_is_what_we_think(self):
        self.assertEqual(self.priv.e, 3)
        self.assertEqual(self.priv.n.bit_length(), 2048)

    def test_honest_e3_signature_verifies(self):
        msg = b"/cb\nobject=honest"
        self.assertIs(appserver.rsa_verify(self.key, msg, kit.sign(self.priv, msg)), True)

    def test_forgery_fools_a_lax_parser_but_not_rsa_verify(self):
        for h in ("md5", "sha1", "sha256"):
            msg = b"/index.php?id=1\nforged=" + h.encode()
            forged, prefix = kit.bb06_forge(self.priv.n, msg, h)
            with self.subTest(h):
                self.assertEqual(len(forged), 256)
                block = kit.textbook_open(self.priv.n, 3, forged)
                self.assertTrue(block.startswith(prefix))          # prefix intact ...
                self.assertNotEqual(block, kit.emsa_pkcs1_v15(h, msg, 256))   # ... garbage after
                self.assertTrue(kit.lax_parse_verify(self.priv.n, 3, msg, forged, h))
                self.assertIs(appserver.rsa_verify(self.key, msg, forged, h), False)

    def test_forgery_with_longer_padding(self):
        msg = b"/cb\nforged-long-ps"
        for ff_count in (8, 16, 32):
            forged, _ = kit.bb06_forge(self.priv.n, msg, "md5", ff_count=ff_count)
            with self.subTest(ff_count=ff_count):
                self.assertTrue(kit.lax_parse_verify(self.priv.n, 3, msg, forged))
                self.assertIs(appserver.rsa_verify(self.key, msg, forged), False)


class HashTableTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.key = pubkey(cls.priv.n, cls.priv.e)

    def test_kit_digest_info_prefixes_match_rfc_8017(self):
        # The DigestInfo prefixes of RFC 8017, section 9.2, note 1 (also those of Go, BoringSSL
        # and python-rsa)
        expected = {
            "md5": "3020300c06082a864886f70d020505000410",
            "sha1": "3021300906052b0e03021a05000414",
            "sha256": "3031300d060960864801650304020105000420",
        }
        for h, hexprefix in expected.items():
            t = kit.digest_info(h, b"x")
            self.assertEqual(t[:-hashlib.new(h).digest_size].hex(), hexprefix)

    def test_every_supported_hash(self):
        msgs = (b"", b"abc", b"/cb?x=1\n" + bytes(range(256)) * 5)
        for h in kit.HASHES:
            for msg in msgs:
                sig = kit.sign(self.priv, msg, h)
                with self.subTest(h, msg_len=len(msg)):
                    self.assertIs(appserver.rsa_verify(self.key, msg, sig, h), True)
                    self.assertIs(appserver.rsa_verify(self.key, msg + b"x", sig, h), False)
                    others = [o for o in kit.HASHES if o != h]
                    for other in others:
                        self.assertIs(appserver.rsa_verify(self.key, msg, sig, other), False)

    def test_default_hash_is_md5(self):
        msg = b"default"
        self.assertIs(appserver.rsa_verify(self.key, msg, kit.sign(self.priv, msg, "md5")), True)
        self.assertIs(appserver.rsa_verify(self.key, msg, kit.sign(self.priv, msg, "sha1")), False)

    def test_unknown_hash_name_raises_value_error(self):
        msg = b"abc"
        sig = kit.sign(self.priv, msg, "md5")
        for name in ("sha3_256", "md4", "blake2b", "sha512_256", "whirlpool", "", "md5 ", "none"):
            with self.subTest(name=name):
                with self.assertRaises(ValueError):
                    appserver.rsa_verify(self.key, msg, sig, name)

    def test_512_bit_key_too_small_for_sha512_is_false_not_exception(self):
        # T for SHA-512 is 83 bytes; a 64-byte modulus cannot hold it (RFC 8017 9.2 step 3)
        oss = pubkey(OSS_N, OSS_E)
        for h in ("sha384", "sha512"):
            with self.subTest(h):
                self.assertIs(appserver.rsa_verify(oss, KAT_MSG, KAT_SIG, h), False)


class GarbageNeverRaisesTest(unittest.TestCase):
    def test_random_signature_bytes(self):
        rng = random.Random(20261129)
        priv = kit.load_test_key("rsa2048_key.pem")
        keys = [pubkey(priv.n, priv.e), pubkey(OSS_N, OSS_E)]
        for i in range(600):
            key = keys[i % 2]
            k = (key.n.bit_length() + 7) // 8
            length = rng.choice([0, 1, k - 1, k, k, k, k + 1, rng.randrange(0, 2 * k + 2)])
            sig = bytes(rng.randrange(256) for _ in range(length))
            h = rng.choice(kit.HASHES)
            with self.subTest(i=i, length=length, hash=h):
                self.assertIs(appserver.rsa_verify(key, b"msg", sig, h), False)

    def test_structured_garbage(self):
        key = pubkey(OSS_N, OSS_E)
        for sig in (b"\x00" * 64, b"\xff" * 64, b"\x00\x01" + b"\xff" * 62, b"\x80" + b"\x00" * 63,
                    b"\x00" * 63 + b"\x01", b"\x00" * 1000, b"\xff" * 100000):
            with self.subTest(sig=sig[:4].hex(), length=len(sig)):
                self.assertIs(appserver.rsa_verify(key, KAT_MSG, sig), False)


if __name__ == "__main__":
    unittest.main()
