"""Project Wycheproof RSASSA-PKCS1-v1_5 vectors, kept in tests/data/wycheproof/.

The files there are upstream's (Apache-2.0, github.com/C2SP/wycheproof), reduced to the fields
read here, with every test case; that folder's README.md gives the snapshot and the command.

Decisions (see the folder's README, "How to read result"):
- `valid` must verify; `invalid` must return False and never raise.
- `acceptable` + `MissingNull` (DigestInfo without the NULL parameter): REJECTED. The verifier
  re-encodes one canonical block (with NULL) and compares; OSS itself signs the NULL form, and
  pyca/cryptography, Go and BoringSSL reject it too.
- e = 3 groups: load_public_key accepts odd 3 <= e < 2^32, so the keys must load and their
  `valid` cases must verify (not "refused by policy").
- Generation files: every signature verifies, including SHA-1 (`WeakHash`, acceptable), because
  rsa_verify supports sha1; single-bit flips of the signature (and of the message) do not.
"""

import json
import pathlib
import random
import unittest

import appserver
from tests import rsa_testkit as kit

WYCHEPROOF = pathlib.Path(__file__).resolve().parent / "data" / "wycheproof"
VERIFY_FILES = ("rsa_signature_2048_sha256_test.json", "rsa_signature_3072_sha256_test.json")
GENERATE_FILES = ("rsa_pkcs1_2048_sig_gen_test.json", "rsa_pkcs1_3072_sig_gen_test.json")
HASH_NAMES = {"SHA-1": "sha1", "SHA-224": "sha224", "SHA-256": "sha256",
              "SHA-384": "sha384", "SHA-512": "sha512"}


def load_vectors(name):
    with open(WYCHEPROOF / name, encoding="utf-8") as fh:
        return json.load(fh)


def bigint(hexstr):
    return int(hexstr, 16)   # the files' BigInts of n and e are non-negative here


class VerificationVectorsTest(unittest.TestCase):
    def run_file(self, name):
        data = load_vectors(name)
        self.assertEqual(data["schema"], "rsassa_pkcs1_verify_schema_v1.json")
        counts = {"valid": 0, "invalid": 0, "acceptable": 0}
        for group in data["testGroups"]:
            self.assertEqual(group["type"], "RsassaPkcs1Verify")
            hash_name = HASH_NAMES[group["sha"]]
            n = bigint(group["publicKey"]["modulus"])
            e = bigint(group["publicKey"]["publicExponent"])
            # the key must load from every encoding the file gives, to the same (n, e)
            key = appserver.load_public_key(bytes.fromhex(group["publicKeyDer"]))
            self.assertEqual((key.n, key.e), (n, e))
            self.assertEqual(tuple(appserver.load_public_key(group["publicKeyPem"].encode())), (n, e))
            self.assertEqual(tuple(appserver.load_public_key(bytes.fromhex(group["publicKeyAsn"]))),
                             (n, e))
            for tc in group["tests"]:
                msg, sig = bytes.fromhex(tc["msg"]), bytes.fromhex(tc["sig"])
                result, flags = tc["result"], tc["flags"]
                counts[result] += 1
                if result == "valid":
                    expected = True
                elif result == "invalid":
                    expected = False
                else:
                    self.assertEqual(flags, ["MissingNull"], "undecided acceptable case %d" % tc["tcId"])
                    expected = False
                with self.subTest(file=name, tcId=tc["tcId"], result=result, flags=flags,
                                  comment=tc["comment"]):
                    try:
                        got = appserver.rsa_verify(key, msg, sig, hash_name)
                    except Exception as exc:  # noqa: BLE001 - no exception is allowed
                        self.fail("rsa_verify raised %r" % exc)
                    self.assertIs(got, expected)
        self.assertEqual(sum(counts.values()), data["numberOfTests"])
        return counts

    def test_2048_sha256(self):
        counts = self.run_file(VERIFY_FILES[0])
        self.assertEqual(counts, {"valid": 9, "invalid": 249, "acceptable": 1})

    def test_3072_sha256(self):
        counts = self.run_file(VERIFY_FILES[1])
        self.assertEqual(counts["acceptable"], 1)
        self.assertGreaterEqual(counts["valid"], 8)

    def test_e3_groups_load_and_verify(self):
        seen = 0
        for name in VERIFY_FILES:
            for group in load_vectors(name)["testGroups"]:
                if bigint(group["publicKey"]["publicExponent"]) != 3:
                    continue
                key = appserver.load_public_key(bytes.fromhex(group["publicKeyDer"]))
                self.assertEqual(key.e, 3)
                for tc in group["tests"]:
                    seen += 1
                    self.assertEqual(tc["result"], "valid")
                    self.assertIs(appserver.rsa_verify(key, bytes.fromhex(tc["msg"]),
                                                       bytes.fromhex(tc["sig"]), "sha256"), True,
                                  "tcId %d (%s)" % (tc["tcId"], tc["flags"]))
        self.assertEqual(seen, 3)


class GenerationVectorsTest(unittest.TestCase):
    def run_file(self, name):
        data = load_vectors(name)
        self.assertEqual(data["schema"], "rsassa_pkcs1_generate_schema_v1.json")
        rng = random.Random(name)
        total = 0
        for group in data["testGroups"]:
            self.assertEqual(group["type"], "RsassaPkcs1Generate")
            hash_name = HASH_NAMES[group["sha"]]
            n = bigint(group["privateKey"]["modulus"])
            e = bigint(group["privateKey"]["publicExponent"])
            key = appserver.load_public_key(bytes.fromhex(group["keyDer"]))
            self.assertEqual((key.n, key.e), (n, e))
            self.assertEqual(tuple(appserver.load_public_key(group["keyPem"].encode())), (n, e))
            priv = kit.load_private_key(group["privateKeyPem"].encode())
            self.assertEqual((priv.n, priv.e), (n, e))
            for tc in group["tests"]:
                total += 1
                msg, sig = bytes.fromhex(tc["msg"]), bytes.fromhex(tc["sig"])
                self.assertIn(tc["result"], ("valid", "acceptable"))
                with self.subTest(file=name, tcId=tc["tcId"], sha=group["sha"], e=e):
                    # the test kit reproduces the deterministic signature (kit cross-check)
                    self.assertEqual(kit.sign(priv, msg, hash_name), sig)
                    self.assertIs(appserver.rsa_verify(key, msg, sig, hash_name), True)
                    bits = len(sig) * 8
                    positions = {0, 7, 8, bits // 2, bits - 8, bits - 1}
                    positions.update(rng.randrange(bits) for _ in range(10))
                    for bit in sorted(positions):
                        flipped = bytearray(sig)
                        flipped[bit // 8] ^= 0x80 >> (bit % 8)
                        self.assertIs(appserver.rsa_verify(key, msg, bytes(flipped), hash_name),
                                      False, "sig bit %d flipped" % bit)
                    if msg:
                        for _ in range(3):
                            bit = rng.randrange(len(msg) * 8)
                            m2 = bytearray(msg)
                            m2[bit // 8] ^= 0x80 >> (bit % 8)
                            self.assertIs(appserver.rsa_verify(key, bytes(m2), sig, hash_name),
                                          False, "msg bit %d flipped" % bit)
                    else:
                        self.assertIs(appserver.rsa_verify(key, b"\x00", sig, hash_name), False)
                    # the hash is pinned by the caller: any other hash name fails
                    for other in HASH_NAMES.values():
                        if other != hash_name:
                            self.assertIs(appserver.rsa_verify(key, msg, sig, other), False, other)
        self.assertEqual(total, data["numberOfTests"])

    def test_2048_generation(self):
        self.run_file(GENERATE_FILES[0])

    def test_3072_generation(self):
        self.run_file(GENERATE_FILES[1])

    def test_sha1_weak_hash_cases_verify(self):
        data = load_vectors(GENERATE_FILES[0])
        sha1 = [g for g in data["testGroups"] if g["sha"] == "SHA-1"]
        self.assertTrue(sha1)
        for group in sha1:
            key = appserver.load_public_key(bytes.fromhex(group["keyDer"]))
            for tc in group["tests"]:
                self.assertEqual(tc["flags"], ["WeakHash"])
                self.assertIs(appserver.rsa_verify(key, bytes.fromhex(tc["msg"]),
                                                   bytes.fromhex(tc["sig"]), "sha1"), True)


if __name__ == "__main__":
    unittest.main()
