"""Test-only RSA helpers: a tiny DER encoder/reader, a PKCS#1 v1.5 signer and forgery builders.

Standard library only, and deliberately independent of appserver.py, so the tests never check
the verifier against its own code. Nothing here is hardened: it reads our own committed test keys
and builds (often malformed) inputs for the code under test.
"""

import base64
import hashlib
import pathlib
import re

DATA = pathlib.Path(__file__).resolve().parent / "data"

# ---------------------------------------------------------------- DER encoding

def der_len(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag, content, length=None):
    """Encode one TLV. `length` overrides the (minimal) length bytes, for malformed inputs."""
    return bytes([tag]) + (der_len(len(content)) if length is None else length) + content


def int_content(value):
    """Minimal two's-complement content octets of an INTEGER."""
    if value >= 0:
        return value.to_bytes(value.bit_length() // 8 + 1, "big")
    n = (-value - 1).bit_length() // 8 + 1
    return value.to_bytes(n, "big", signed=True)


def der_int(value):
    return tlv(0x02, int_content(value))


def der_seq(*parts):
    return tlv(0x30, b"".join(parts))


def der_null():
    return b"\x05\x00"


def oid_content(dotted):
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def der_oid(dotted):
    return tlv(0x06, oid_content(dotted))


OID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
OID_RSASSA_PSS = "1.2.840.113549.1.1.10"
OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_PRIME256V1 = "1.2.840.10045.3.1.7"


def pkcs1_public_der(n, e):
    return der_seq(der_int(n), der_int(e))


def spki_der(n, e, alg=None, unused_bits=0, rsa_public=None):
    alg = der_seq(der_oid(OID_RSA_ENCRYPTION), der_null()) if alg is None else alg
    inner = pkcs1_public_der(n, e) if rsa_public is None else rsa_public
    return der_seq(alg, tlv(0x03, bytes([unused_bits]) + inner))


def pem(label, der, newline="\n", width=64):
    b64 = base64.b64encode(der).decode("ascii")
    lines = ["-----BEGIN %s-----" % label]
    lines += [b64[i:i + width] for i in range(0, len(b64), width)]
    lines.append("-----END %s-----" % label)
    return (newline.join(lines) + newline).encode("ascii")


# ---------------------------------------------------------------- DER reading (our own keys only)

def _read_tlv(data, pos):
    tag = data[pos]
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        nbytes = first & 0x7F
        length = int.from_bytes(data[pos:pos + nbytes], "big")
        pos += nbytes
    return tag, data[pos:pos + length], pos + length


def _children(content):
    out, pos = [], 0
    while pos < len(content):
        tag, value, pos = _read_tlv(content, pos)
        out.append((tag, value))
    return out


def pem_to_der(text):
    if isinstance(text, bytes):
        text = text.decode("ascii")
    m = re.search(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", text, re.S)
    if not m:
        raise ValueError("no PEM block")
    return m.group(1), base64.b64decode("".join(m.group(2).split()))


class PrivateKey:
    def __init__(self, n, e, d, p=None, q=None):
        self.n, self.e, self.d, self.p, self.q = n, e, d, p, q
        self.k = (n.bit_length() + 7) // 8
        if p and q and p * q != n:
            raise ValueError("inconsistent private key (p*q != n)")
        if pow(pow(2, e, n), d, n) != 2:
            raise ValueError("inconsistent private key")

    def private_op(self, m):
        """m^d mod n, with the CRT when p and q are known (about 3x faster)."""
        if not (self.p and self.q):
            return pow(m, self.d, self.n)
        p, q = self.p, self.q
        m1 = pow(m % p, self.d % (p - 1), p)
        m2 = pow(m % q, self.d % (q - 1), q)
        h = (pow(q, -1, p) * (m1 - m2)) % p
        return m2 + h * q

    @property
    def public_pair(self):
        return self.n, self.e


def load_private_key(path_or_bytes):
    data = path_or_bytes
    if isinstance(path_or_bytes, (str, pathlib.Path)):
        data = pathlib.Path(path_or_bytes).read_bytes()
    label, der = pem_to_der(data)
    _, seq, _ = _read_tlv(der, 0)
    items = _children(seq)
    if label == "PRIVATE KEY":          # PKCS#8: version, AlgorithmIdentifier, OCTET STRING
        _, seq, _ = _read_tlv(items[2][1], 0)
        items = _children(seq)
    elif label != "RSA PRIVATE KEY":
        raise ValueError("unsupported private key label " + label)
    ints = [int.from_bytes(v, "big") for tag, v in items]
    return PrivateKey(ints[1], ints[2], ints[3], ints[4], ints[5])


def load_public_pair(path):
    """(n, e) from a committed SPKI PEM, read with our own reader."""
    label, der = pem_to_der(pathlib.Path(path).read_bytes())
    assert label == "PUBLIC KEY", label
    _, spki, _ = _read_tlv(der, 0)
    alg, bits = _children(spki)
    _, rsa, _ = _read_tlv(bits[1][1:], 0)
    n, e = (int.from_bytes(v, "big") for _, v in _children(rsa))
    return n, e


def _is_probable_prime(n, rng, rounds=40):
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def generate_private_key(bits, e=65537, seed=0):
    """A deterministic throwaway key of an odd size (for edge cases no committed key covers)."""
    import random
    rng = random.Random(seed)

    def prime(nbits):
        while True:
            c = rng.getrandbits(nbits) | (3 << (nbits - 2)) | 1
            if (c - 1) % e and _is_probable_prime(c, rng):
                return c

    while True:
        p, q = prime(bits // 2), prime(bits - bits // 2)
        n = p * q
        if p != q and n.bit_length() == bits:
            d = pow(e, -1, (p - 1) * (q - 1))
            return PrivateKey(n, e, d, p, q)


def load_test_key(name):
    return load_private_key(DATA / name)


# ---------------------------------------------------------------- PKCS#1 v1.5

HASH_OIDS = {
    "md5": "1.2.840.113549.2.5",
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}
HASHES = tuple(HASH_OIDS)


def digest(hash_name, message):
    return hashlib.new(hash_name, message).digest()


def digest_info(hash_name, message, with_null=True):
    alg = der_seq(der_oid(HASH_OIDS[hash_name]), der_null()) if with_null else der_seq(
        der_oid(HASH_OIDS[hash_name]))
    return der_seq(alg, tlv(0x04, digest(hash_name, message)))


def encode_block(k, t, block_type=b"\x01", fill=b"\xff"):
    """00 || type || fill * ps || 00 || T, padded to k bytes."""
    ps = k - len(t) - 3
    if ps < 0:
        raise ValueError("T too long for the modulus")
    return b"\x00" + block_type + fill * ps + b"\x00" + t


def emsa_pkcs1_v15(hash_name, message, k):
    return encode_block(k, digest_info(hash_name, message))


def raw_sign(key, em):
    """s = m^d mod n, as exactly k bytes (m is the integer value of any k-byte block)."""
    m = int.from_bytes(em, "big")
    if m >= key.n:
        raise ValueError("block >= n")
    s = key.private_op(m)
    if pow(s, key.e, key.n) != m:
        raise AssertionError("test kit signing self-check failed")
    return s.to_bytes(key.k, "big")


def sign(key, message, hash_name="md5"):
    return raw_sign(key, emsa_pkcs1_v15(hash_name, message, key.k))


def textbook_open(n, e, signature):
    """s^e mod n as k bytes: what a verifier sees before comparing (test-side only)."""
    k = (n.bit_length() + 7) // 8
    return pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")


# ---------------------------------------------------------------- Bleichenbacher 2006

def icbrt(x):
    """Floor of the integer cube root (Newton's method on integers)."""
    if x < 0:
        raise ValueError("negative")
    if x < 2:
        return x
    r = 1 << ((x.bit_length() + 2) // 3)
    while True:
        s = (2 * r + x // (r * r)) // 3
        if s >= r:
            break
        r = s
    while r ** 3 > x:
        r -= 1
    while (r + 1) ** 3 <= x:
        r += 1
    return r


def bb06_forge(n, message, hash_name="md5", ff_count=8):
    """Forge an e=3 'signature' whose cube is 00 01 FF*ff_count 00 DigestInfo digest GARBAGE.

    No private key involved: take the prefix, fill the rest of the k-byte block with 0xff,
    and take the integer cube root; the cube root of the top of the interval keeps the prefix
    intact and only disturbs the low-order (garbage) bytes."""
    k = (n.bit_length() + 7) // 8
    prefix = b"\x00\x01" + b"\xff" * ff_count + b"\x00" + digest_info(hash_name, message)
    garbage_len = k - len(prefix)
    hi = int.from_bytes(prefix + b"\xff" * garbage_len, "big")
    lo = int.from_bytes(prefix + b"\x00" * garbage_len, "big")
    s = icbrt(hi)
    if not lo <= s ** 3 <= hi or s ** 3 >= n:
        raise ValueError("no cube root in range; make the garbage longer")
    return s.to_bytes(k, "big"), prefix


def lax_parse_verify(n, e, message, signature, hash_name="md5"):
    """A deliberately broken 2006-style verifier: skips 00 01 FF..FF 00, reads the DigestInfo
    and digest, and ignores whatever follows. Only used to prove the forgery is a real one."""
    k = (n.bit_length() + 7) // 8
    block = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    if block[:2] != b"\x00\x01":
        return False
    i = 2
    while i < len(block) and block[i] == 0xFF:
        i += 1
    if i == 2 or i >= len(block) or block[i] != 0:
        return False
    expected = digest_info(hash_name, message)
    return block[i + 1:i + 1 + len(expected)] == expected


def b64(data):
    return base64.b64encode(data).decode("ascii")
