"""load_public_key: accepted encodings, strict DER, key sanity checks, random mutations."""

import random
import time
import unittest

import appserver
from tests import rsa_testkit as kit

OSS_PEM = (b"-----BEGIN PUBLIC KEY-----\n"
           b"MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAKs/JBGzwUB2aVht4crBx3oIPBLNsjGs\n"
           b"C0fTXv+nvlmklvkcolvpvXLTjaxUHR3W9LXxQ2EHXAJfCB+6H2YF1k8CAwEAAQ==\n"
           b"-----END PUBLIC KEY-----\n")
OSS_N = int(
    "ab3f2411b3c1407669586de1cac1c77a083c12cdb231ac0b47d35effa7be59a4"
    "96f91ca25be9bd72d38dac541d1dd6f4b5f14361075c025f081fba1f6605d64f", 16)
OSS_DER_HEX = ("305c300d06092a864886f70d0101010500034b003048024100" + "%0128x" % OSS_N + "0203010001")


def odd_with_bits(bits, seed=1):
    rng = random.Random(seed)
    return rng.getrandbits(bits) | (1 << (bits - 1)) | 1


class AcceptedFormsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.pair = (cls.priv.n, cls.priv.e)

    def assertKey(self, key, n, e):
        self.assertIsInstance(key, appserver.PublicKey)
        self.assertEqual((key.n, key.e), (n, e))
        self.assertEqual(tuple(key), (n, e))

    def test_key_format_error_is_value_error(self):
        self.assertTrue(issubclass(appserver.KeyFormatError, ValueError))

    def test_oss_pem_lf_and_crlf(self):
        self.assertEqual(kit.pem_to_der(OSS_PEM)[1].hex(), OSS_DER_HEX)
        self.assertKey(appserver.load_public_key(OSS_PEM), OSS_N, 65537)
        self.assertKey(appserver.load_public_key(OSS_PEM.replace(b"\n", b"\r\n")), OSS_N, 65537)
        self.assertKey(appserver.load_public_key(OSS_PEM.rstrip(b"\n")), OSS_N, 65537)
        self.assertEqual(appserver.load_public_key(OSS_PEM).n.bit_length(), 512)

    def test_committed_spki_pem_files(self):
        for name in ("rsa2048_pub.pem", "rsa2048_e3_pub.pem", "rsa1024_pub.pem"):
            raw = (kit.DATA / name).read_bytes()
            n, e = kit.load_public_pair(kit.DATA / name)
            with self.subTest(name):
                self.assertKey(appserver.load_public_key(raw), n, e)
                self.assertKey(appserver.load_public_key(raw.replace(b"\n", b"\r\n")), n, e)

    def test_openssl_pkcs1_pem(self):
        raw = (kit.DATA / "rsa2048_pub_pkcs1.pem").read_bytes()
        self.assertTrue(raw.startswith(b"-----BEGIN RSA PUBLIC KEY-----"))
        self.assertKey(appserver.load_public_key(raw), *self.pair)
        self.assertKey(appserver.load_public_key(raw.replace(b"\n", b"\r\n")), *self.pair)

    def test_der_of_both(self):
        n, e = self.pair
        self.assertKey(appserver.load_public_key(kit.spki_der(n, e)), n, e)
        self.assertKey(appserver.load_public_key(kit.pkcs1_public_der(n, e)), n, e)
        self.assertKey(appserver.load_public_key(bytes.fromhex(OSS_DER_HEX)), OSS_N, 65537)
        self.assertKey(appserver.load_public_key(kit.pkcs1_public_der(OSS_N, 65537)), OSS_N, 65537)

    def test_built_pem_of_both(self):
        n, e = self.pair
        for newline in ("\n", "\r\n"):
            with self.subTest(newline=repr(newline)):
                self.assertKey(appserver.load_public_key(
                    kit.pem("PUBLIC KEY", kit.spki_der(n, e), newline)), n, e)
                self.assertKey(appserver.load_public_key(
                    kit.pem("RSA PUBLIC KEY", kit.pkcs1_public_der(n, e), newline)), n, e)

    def test_boundaries_accepted(self):
        cases = {
            "512-bit n": (odd_with_bits(512), 65537),
            "8192-bit n": (odd_with_bits(8192), 65537),
            "e = 3": (odd_with_bits(2048), 3),
            "e = 5": (odd_with_bits(2048), 5),
            "e = 2^32 - 1": (odd_with_bits(2048), 2 ** 32 - 1),
            "e = 2^31 + 1": (odd_with_bits(1024), 2 ** 31 + 1),
        }
        for name, (n, e) in cases.items():
            with self.subTest(name):
                self.assertKey(appserver.load_public_key(kit.spki_der(n, e)), n, e)
                self.assertKey(appserver.load_public_key(kit.pkcs1_public_der(n, e)), n, e)


class RejectedTest(unittest.TestCase):
    """Each case must raise KeyFormatError (and nothing else)."""

    @classmethod
    def setUpClass(cls):
        cls.priv = kit.load_test_key("rsa2048_key.pem")
        cls.n, cls.e = cls.priv.n, cls.priv.e
        cls.spki = kit.spki_der(cls.n, cls.e)
        cls.pkcs1 = kit.pkcs1_public_der(cls.n, cls.e)
        cls.oss = bytes.fromhex(OSS_DER_HEX)

    def assertRefused(self, data, name=None):
        with self.subTest(name):
            with self.assertRaises(appserver.KeyFormatError) as ctx:
                appserver.load_public_key(data)
            self.assertTrue(str(ctx.exception), "KeyFormatError needs a message")

    def assertAllRefused(self, cases, also_pem=True):
        for name, der in cases.items():
            self.assertRefused(der, name + " (DER)")
            if also_pem:
                label = "RSA PUBLIC KEY" if name.startswith("pkcs1") else "PUBLIC KEY"
                self.assertRefused(kit.pem(label, der), name + " (PEM)")

    # -- lengths ---------------------------------------------------------------------------

    def test_non_minimal_lengths(self):
        n_int, e_int = kit.der_int(self.n), kit.der_int(self.e)
        rsa = kit.der_seq(n_int, e_int)
        alg = kit.der_seq(kit.der_oid(kit.OID_RSA_ENCRYPTION), kit.der_null())
        bits = kit.tlv(0x03, b"\x00" + rsa)
        oss_body = self.oss[2:]
        cases = {
            "oss outer 81 5c": b"\x30\x81\x5c" + oss_body,
            "oss outer 82 00 5c": b"\x30\x82\x00\x5c" + oss_body,
            "outer 83 00 01 22": b"\x30\x83\x00\x01\x22" + alg + bits,
            "AlgorithmIdentifier 81 0d": kit.der_seq(
                kit.tlv(0x30, alg[2:], length=b"\x81\x0d"), bits),
            "OID 81 09": kit.der_seq(kit.der_seq(kit.tlv(
                0x06, kit.oid_content(kit.OID_RSA_ENCRYPTION), length=b"\x81\x09"),
                kit.der_null()), bits),
            "NULL 81 00": kit.der_seq(kit.der_seq(kit.der_oid(kit.OID_RSA_ENCRYPTION),
                                                  b"\x05\x81\x00"), bits),
            "BIT STRING 83 00 01 0f": kit.der_seq(alg, kit.tlv(0x03, b"\x00" + rsa,
                                                               length=b"\x83\x00\x01\x0f")),
            "RSAPublicKey 83 00 01 0a": kit.der_seq(alg, kit.tlv(0x03, b"\x00" + kit.tlv(
                0x30, n_int + e_int, length=b"\x83\x00\x01\x0a"))),
            "e INTEGER 81 03": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                n_int, kit.tlv(0x02, kit.int_content(self.e), length=b"\x81\x03"))),
            "n INTEGER 83 00 01 01": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.tlv(0x02, kit.int_content(self.n), length=b"\x83\x00\x01\x01"), e_int)),
            "pkcs1 outer 83 00 01 0a": kit.tlv(0x30, n_int + e_int, length=b"\x83\x00\x01\x0a"),
            "pkcs1 e 81 03": kit.der_seq(n_int, kit.tlv(0x02, kit.int_content(self.e),
                                                        length=b"\x81\x03")),
            "oss n INTEGER 81 41": bytes.fromhex(
                "305d300d06092a864886f70d0101010500034c003049028141" + "00%0128x" % OSS_N
                + "0203010001"),
        }
        self.assertAllRefused(cases)

    def test_indefinite_length(self):
        alg = kit.der_seq(kit.der_oid(kit.OID_RSA_ENCRYPTION), kit.der_null())
        rsa = self.pkcs1
        cases = {
            "outer 80": b"\x30\x80" + alg + kit.tlv(0x03, b"\x00" + rsa) + b"\x00\x00",
            "RSAPublicKey 80": kit.der_seq(alg, kit.tlv(0x03, b"\x00" + b"\x30\x80" + rsa[4:]
                                                        + b"\x00\x00")),
            "pkcs1 outer 80": b"\x30\x80" + rsa[4:] + b"\x00\x00",
            "long form 85": b"\x30\x85\x00\x00\x00\x01\x22" + self.spki[4:],
            "long form ff": b"\x30\xff" + self.spki[4:],
        }
        self.assertAllRefused(cases)

    def test_length_past_end(self):
        oss = bytearray(self.oss)
        cases = {}
        o = bytearray(oss); o[1] += 1; cases["outer length +1"] = bytes(o)
        o = bytearray(oss); o[1] = 0x7f; cases["outer length 7f"] = bytes(o)
        o = bytearray(oss); o[3] += 1; cases["AlgorithmIdentifier length +1"] = bytes(o)
        o = bytearray(oss); o[18] += 1; cases["BIT STRING length +1"] = bytes(o)
        o = bytearray(oss); o[21] += 1; cases["RSAPublicKey length +1"] = bytes(o)
        o = bytearray(oss); o[23] += 1; cases["n length +1"] = bytes(o)
        o = bytearray(oss); o[-4] += 1; cases["e length +1"] = bytes(o)
        o = bytearray(oss); o[-4] = 0x7f; cases["e length 7f"] = bytes(o)
        cases["spki outer 84 ff ff ff ff"] = b"\x30\x84\xff\xff\xff\xff" + self.spki[4:]
        cases["pkcs1 outer +1"] = self.pkcs1[:3] + bytes([self.pkcs1[3] + 1]) + self.pkcs1[4:]
        # sanity: offsets are the ones we think
        self.assertEqual((oss[2], oss[17], oss[20], oss[22], oss[-5]), (0x30, 0x03, 0x30, 0x02, 0x02))
        self.assertAllRefused(cases)

    def test_inner_length_short_of_parent(self):
        # children lengths that do not add up to the parent's (bytes left inside a constructed value)
        o = bytearray(self.oss)
        o[-4] -= 1   # e claims 2 bytes, the third is left over inside RSAPublicKey
        self.assertRefused(bytes(o), "e shorter than its slot")

    # -- integers ---------------------------------------------------------------------------

    def test_padded_and_negative_integers(self):
        n_c, e_c = kit.int_content(self.n), kit.int_content(self.e)
        cases = {
            "n with extra 00": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.tlv(0x02, b"\x00" + n_c), kit.der_int(self.e))),
            "e with extra 00": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.der_int(self.n), kit.tlv(0x02, b"\x00" + e_c))),
            "e = 3 as 00 03": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.der_int(self.n), kit.tlv(0x02, b"\x00\x03"))),
            "n negative (leading 00 removed)": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.tlv(0x02, n_c[1:]), kit.der_int(self.e))),
            "n negative (minimal two's complement)": kit.spki_der(-self.n, self.e),
            "e negative": kit.spki_der(self.n, -65537),
            "e = -3": kit.spki_der(self.n, -3),
            "n with leading ff": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.tlv(0x02, b"\xff" + n_c), kit.der_int(self.e))),
            "empty INTEGER e": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.der_int(self.n), b"\x02\x00")),
            "n = 0": kit.spki_der(0, self.e),
            "pkcs1 n with extra 00": kit.der_seq(kit.tlv(0x02, b"\x00" + n_c), kit.der_int(self.e)),
            "pkcs1 e negative": kit.pkcs1_public_der(self.n, -65537),
        }
        self.assertAllRefused(cases)

    def test_wrong_tags(self):
        rsa_body = self.pkcs1[4:]
        cases = {
            "n as OCTET STRING": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.tlv(0x04, kit.int_content(self.n)), kit.der_int(self.e))),
            "RSAPublicKey as SET": kit.spki_der(0, 0, rsa_public=kit.tlv(0x31, rsa_body)),
            "BIT STRING as OCTET STRING": kit.der_seq(
                kit.der_seq(kit.der_oid(kit.OID_RSA_ENCRYPTION), kit.der_null()),
                kit.tlv(0x04, self.pkcs1)),
            "constructed BIT STRING": kit.der_seq(
                kit.der_seq(kit.der_oid(kit.OID_RSA_ENCRYPTION), kit.der_null()),
                kit.tlv(0x23, kit.tlv(0x03, b"\x00" + self.pkcs1))),
            "extra INTEGER in RSAPublicKey": kit.spki_der(0, 0, rsa_public=kit.der_seq(
                kit.der_int(self.n), kit.der_int(self.e), kit.der_int(7))),
            "only n in RSAPublicKey": kit.spki_der(0, 0, rsa_public=kit.der_seq(kit.der_int(self.n))),
            "pkcs1 extra INTEGER": kit.der_seq(kit.der_int(self.n), kit.der_int(self.e), kit.der_int(1)),
            "empty SEQUENCE": b"\x30\x00",
        }
        self.assertAllRefused(cases)

    # -- algorithm / bit string -------------------------------------------------------------

    def test_wrong_oid_and_parameters(self):
        def with_alg(alg):
            return kit.spki_der(self.n, self.e, alg=alg)
        cases = {
            "RSASSA-PSS": with_alg(kit.der_seq(kit.der_oid(kit.OID_RSASSA_PSS))),
            "RSASSA-PSS with NULL": with_alg(kit.der_seq(kit.der_oid(kit.OID_RSASSA_PSS),
                                                         kit.der_null())),
            "EC prime256v1": with_alg(kit.der_seq(kit.der_oid(kit.OID_EC_PUBLIC_KEY),
                                                  kit.der_oid(kit.OID_PRIME256V1))),
            "sha256WithRSAEncryption": with_alg(kit.der_seq(
                kit.der_oid("1.2.840.113549.1.1.11"), kit.der_null())),
            "rsaEncryption without NULL": with_alg(kit.der_seq(kit.der_oid(kit.OID_RSA_ENCRYPTION))),
            "rsaEncryption with INTEGER param": with_alg(kit.der_seq(
                kit.der_oid(kit.OID_RSA_ENCRYPTION), kit.der_int(0))),
            "rsaEncryption NULL + extra": with_alg(kit.der_seq(
                kit.der_oid(kit.OID_RSA_ENCRYPTION), kit.der_null(), kit.der_null())),
            "OID one arc longer": with_alg(kit.der_seq(
                kit.der_oid(kit.OID_RSA_ENCRYPTION + ".0"), kit.der_null())),
        }
        self.assertAllRefused(cases)

    def test_a_long_algorithm_identifier_is_a_key_format_error(self):
        algorithm = b"\x06\x09" + bytes.fromhex("2a864886f70d010101") + b"\x05\x00" + b"\x00" * 300
        inner = b"\x30\x82" + len(algorithm).to_bytes(2, "big") + algorithm + b"\x03\x01\x00"
        der = b"\x30\x82" + len(inner).to_bytes(2, "big") + inner
        with self.assertRaises(appserver.KeyFormatError):
            appserver.load_public_key(der)

    def test_real_ec_key(self):
        # a genuine P-256 SPKI (public test data shape): must be refused, not crash
        ec_point = b"\x04" + bytes(range(1, 65))
        der = kit.der_seq(kit.der_seq(kit.der_oid(kit.OID_EC_PUBLIC_KEY),
                                      kit.der_oid(kit.OID_PRIME256V1)),
                          kit.tlv(0x03, b"\x00" + ec_point))
        self.assertRefused(der, "EC DER")
        self.assertRefused(kit.pem("PUBLIC KEY", der), "EC PEM")

    def test_bit_string_unused_bits(self):
        for unused in (1, 7, 8, 0xff):
            self.assertRefused(kit.spki_der(self.n, self.e, unused_bits=unused), "unused=%d" % unused)
        o = bytearray(self.oss)
        o[19] = 1
        self.assertRefused(bytes(o), "oss unused=1")

    # -- trailing bytes / truncation -------------------------------------------------------

    def test_trailing_bytes(self):
        alg = kit.der_seq(kit.der_oid(kit.OID_RSA_ENCRYPTION), kit.der_null())
        cases = {
            "00 after SPKI": self.spki + b"\x00",
            "00 00 after SPKI": self.spki + b"\x00\x00",
            "NULL after SPKI": self.spki + b"\x05\x00",
            "copy after SPKI": self.spki + self.spki,
            "00 after OSS": self.oss + b"\x00",
            "00 after PKCS#1": self.pkcs1 + b"\x00",
            "inside BIT STRING after RSAPublicKey": kit.der_seq(
                alg, kit.tlv(0x03, b"\x00" + self.pkcs1 + b"\x00")),
            "inside SPKI after BIT STRING": kit.der_seq(
                alg, kit.tlv(0x03, b"\x00" + self.pkcs1), b"\x05\x00"),
        }
        self.assertAllRefused(cases)

    def test_trailing_bytes_in_pem_body(self):
        # extra DER bytes inside the base64 body, and a second base64 chunk
        self.assertRefused(kit.pem("PUBLIC KEY", self.spki + b"\x00"), "PEM with DER + 00")
        self.assertRefused(kit.pem("RSA PUBLIC KEY", self.pkcs1 + b"\x00"), "PKCS#1 PEM + 00")

    def test_truncated_input(self):
        for name, der in (("spki", self.spki), ("pkcs1", self.pkcs1), ("oss", self.oss)):
            for cut in range(len(der)):
                with self.subTest(name, cut=cut):
                    with self.assertRaises(appserver.KeyFormatError):
                        appserver.load_public_key(der[:cut])
        for cut in range(0, len(OSS_PEM), 7):
            with self.subTest("oss pem", cut=cut):
                with self.assertRaises(appserver.KeyFormatError):
                    appserver.load_public_key(OSS_PEM[:cut].rstrip(b"-\n") + b"\n")

    # -- key sanity --------------------------------------------------------------------------

    def test_key_sanity(self):
        n2048 = self.n
        cases = {
            "even n": (n2048 - 1, 65537),
            "n < 512 bits (511)": (odd_with_bits(511), 65537),
            "n = 256 bits": (odd_with_bits(256), 65537),
            "n = 1": (1, 65537),
            "n > 8192 bits (8193)": (odd_with_bits(8193), 65537),
            "n = 9000 bits": (odd_with_bits(9000), 65537),
            "e = 0": (n2048, 0),
            "e = 1": (n2048, 1),
            "e = 2": (n2048, 2),
            "even e 65538": (n2048, 65538),
            "even e 4": (n2048, 4),
            "e = 2^32": (n2048, 2 ** 32),
            "e = 2^32 + 1": (n2048, 2 ** 32 + 1),
            "e = 2^40 + 1": (n2048, 2 ** 40 + 1),
            "e = n": (n2048, n2048),
        }
        for name, (n, e) in cases.items():
            self.assertRefused(kit.spki_der(n, e), name + " (SPKI)")
            self.assertRefused(kit.pkcs1_public_der(n, e), name + " (PKCS#1)")
            self.assertRefused(kit.pem("PUBLIC KEY", kit.spki_der(n, e)), name + " (PEM)")

    # -- PEM framing -----------------------------------------------------------------------

    def test_pem_framing(self):
        body = OSS_PEM.split(b"\n")[1:3]
        cases = {
            "empty": b"",
            "whitespace": b"  \n",
            "certificate label": kit.pem("CERTIFICATE", bytes.fromhex(OSS_DER_HEX)),
            "private key label": (kit.DATA / "rsa2048_key.pem").read_bytes(),
            "mismatched END": OSS_PEM.replace(b"END PUBLIC KEY", b"END RSA PUBLIC KEY"),
            "missing END": OSS_PEM.split(b"-----END")[0],
            "bad base64 char": OSS_PEM.replace(b"MFww", b"MF*w"),
            "base64 missing padding": b"-----BEGIN PUBLIC KEY-----\n" + body[0] + b"\n"
                                      + body[1].rstrip(b"=") + b"\n-----END PUBLIC KEY-----\n",
            "no BEGIN": b"\n".join(body) + b"\n-----END PUBLIC KEY-----\n",
            "raw base64 only": b"".join(body),
            "oversized": b"-----BEGIN PUBLIC KEY-----\n" + b"QUFB\n" * 40000
                         + b"-----END PUBLIC KEY-----\n",
        }
        for name, data in cases.items():
            self.assertRefused(data, name)


class RandomMutationTest(unittest.TestCase):
    """1,000 seeded mutations of valid keys: a KeyFormatError/ValueError or a sane key, nothing else."""

    def mutate(self, rng, data):
        data = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(6)
            if not data:
                data.append(rng.randrange(256))
                continue
            i = rng.randrange(len(data))
            if op == 0:
                data[i] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[i] = rng.randrange(256)
            elif op == 2:
                del data[i:i + rng.randint(1, 8)]
            elif op == 3:
                data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 4:
                data = data[:i]
            else:
                data[i] = rng.choice([0x00, 0x7f, 0x80, 0x81, 0x82, 0x84, 0xff])
        return bytes(data)

    def test_1000_mutations(self):
        rng = random.Random(0x5EED)
        priv = kit.load_test_key("rsa2048_key.pem")
        seeds = [bytes.fromhex(OSS_DER_HEX), kit.spki_der(priv.n, priv.e),
                 kit.pkcs1_public_der(priv.n, priv.e), OSS_PEM,
                 (kit.DATA / "rsa2048_pub_pkcs1.pem").read_bytes()]
        outcomes = {"refused": 0, "accepted": 0}
        slowest = 0.0
        for i in range(1000):
            data = self.mutate(rng, seeds[i % len(seeds)])
            t0 = time.perf_counter()
            try:
                key = appserver.load_public_key(data)
            except ValueError:
                outcomes["refused"] += 1
            except Exception as exc:  # noqa: BLE001 - the point of the test
                self.fail("mutation %d (%s) raised %r" % (i, data.hex(), exc))
            else:
                outcomes["accepted"] += 1
                self.assertIsInstance(key, appserver.PublicKey)
                self.assertTrue(key.n % 2 == 1 and 512 <= key.n.bit_length() <= 8192, i)
                self.assertTrue(key.e % 2 == 1 and 3 <= key.e < 2 ** 32, i)
            slowest = max(slowest, time.perf_counter() - t0)
        self.assertGreater(outcomes["refused"], 500, outcomes)
        self.assertLess(slowest, 0.5, "one load_public_key call took %.3f s" % slowest)

    def test_mutation_errors_are_key_format_errors_for_der(self):
        # DER input has no text decoding step, so every refusal must be the dedicated subclass
        rng = random.Random(1234)
        der = bytes.fromhex(OSS_DER_HEX)
        for i in range(300):
            data = self.mutate(rng, der)
            try:
                appserver.load_public_key(data)
            except appserver.KeyFormatError:
                pass
            except Exception as exc:  # noqa: BLE001
                self.fail("DER mutation %d (%s) raised %r, not KeyFormatError" % (i, data.hex(), exc))


if __name__ == "__main__":
    unittest.main()
