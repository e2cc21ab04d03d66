"""A small local double of an Alibaba Cloud OSS service: one or more buckets, PostObject with
its upload callback, signed object reads and the bucket calls a deployment check makes.

Standard library only. It implements what the OSS documentation says of the calls below, and
nothing else of OSS (no ListObjects, no PutObject, no multipart upload API):

* ``POST /``  browser form upload (PostObject), V1 and V4 signatures, STS token, policy checks,
  optional upload callback signed with the emulator's own RSA key;
* ``GET|HEAD /<key>``  GetObject and HeadObject, anonymous (bucket ACL public-read) or signed:
  V1 and V4 signatures in the Authorization header or in the URL (presigned), STS tokens;
* ``GET /?bucketInfo``  GetBucketInfo; ``GET|PUT|DELETE /?cors``  GetBucketCors, PutBucketCors,
  DeleteBucketCors (always signed);
* ``GET /__oss_emulator__/callback_pub_key.pem``  the callback public key (the prefix is reserved
  and refused as an object key, so it can never collide with an object);
* ``OPTIONS``  CORS preflight, answered from the bucket's CORS rules.

Every answer carries a ``Date`` header from the emulator's clock, which can be set askew.
Several buckets can live in one emulator, each with its own keys, objects and CORS rules: a
request goes to the bucket named by the first label of its Host header
(``otherbucket.127.0.0.1:9000``), else to the default bucket.

Use it from tests with :class:`EmulatorServer`, or run it:
``python -m tests.oss_emulator --port 9000 --root DIR --bucket examplebucket --access-key-id ID
--access-key-secret SECRET [--security-token T] [--region cn-hangzhou] [--cors-origin ORIGIN]
[--no-cors] [--acl private] [--clock-skew SECONDS] [--deny ACTION] [--head-stall SECONDS]
[--head-fault STATUS] [--throttle BYTES_PER_S] [--extra-bucket NAME:ID:SECRET[:REGION]]``.

Where the documentation leaves behaviour open, the choice made here is documented next to the code that
makes it; every such place carries the word "Choice:".
"""

import argparse
import base64
import binascii
import calendar
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import http.client
import http.server
import json
import logging
import math
import mimetypes
import os
import pathlib
import re
import secrets
import select
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import typing
import urllib.parse
import xml.etree.ElementTree as ElementTree
from email.utils import formatdate, parsedate_to_datetime
from xml.sax.saxutils import escape as xml_escape

log = logging.getLogger("oss_emulator")
log.addHandler(logging.NullHandler())

DEFAULT_KEY_PATH = pathlib.Path(__file__).resolve().parent / "data" / "emulator_key.pem"

# Object keys starting with this are refused, so the key URL below can never name an object.
RESERVED_PREFIX = "__oss_emulator__"
PUB_KEY_PATH = "/" + RESERVED_PREFIX + "/callback_pub_key.pem"

CHUNK = 64 * 1024
MAX_FIELD_VALUE = 2 * 1024 * 1024          # PostObject: each field value <= 2 MB
MAX_PRE_DATA = 8 * 1024 * 1024             # PostObject: all values before `file` <= 8 MB
MAX_PART_HEADERS = 8 * 1024                # our own bound on one part's header block
MAX_OBJECT_SIZE = 5 * 1024 ** 3            # PostObject: object <= 5 GB
MAX_METADATA = 8 * 1024                    # PostObject: all user metadata <= 8 KB
MAX_KEY_BYTES = 1023
MAX_CALLBACK_CONFIG = 5 * 1024             # Callback API: callback parameter <= 5 KB
MAX_CALLBACK_URLS = 5
# Choice: the OSS pages give 3 MB and 1 MB for the app server's answer; the
# emulator enforces the stricter 1 MB so that an app server passing here passes on OSS too.
MAX_CALLBACK_RESPONSE = 1024 * 1024
CALLBACK_TIMEOUT = 5.0
V4_MAX_AGE = 7 * 24 * 3600                 # Signature Version 4: a V4 request is valid 7 days from x-oss-date
V4_MAX_SKEW = 15 * 60                      # Signature Version 4: 15 minutes of clock skew

# Form fields stored as object HTTP headers (PostObject), in their canonical spelling.
STORED_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Expires")


# --------------------------------------------------------------------------------------------
# Errors (PostObject error codes)
# --------------------------------------------------------------------------------------------

class OSSError(Exception):
    """An error answered in OSS's XML layout.

    ``extra``: further (element, text) pairs after HostId, as OSS adds to some errors (the
    StringToSign of SignatureDoesNotMatch, for one); a text that is a list of pairs nests.
    ``status`` overrides the code's usual HTTP status (the 5xx faults)."""

    STATUS = {
        "AccessDenied": 403, "AccessForbidden": 403, "SignatureDoesNotMatch": 403,
        "InvalidAccessKeyId": 403, "InvalidSecurityToken": 403, "RequestTimeTooSkewed": 403,
        "InvalidArgument": 400, "InvalidPolicyDocument": 400, "MalformedPOSTRequest": 400,
        "RequestIsNotMultiPartContent": 400, "IncorrectNumberOfFilesInPOSTRequest": 400,
        "EntityTooLarge": 400, "EntityTooSmall": 400, "MaxPOSTPreDataLengthExceededError": 400,
        "FieldItemTooLong": 400, "InvalidObjectName": 400, "MetadataTooLarge": 400,
        "MalformedXML": 400, "InvalidDigest": 400,
        "NoSuchKey": 404, "NoSuchCORSConfiguration": 404, "MethodNotAllowed": 405,
        "FileAlreadyExists": 409, "MissingContentLength": 411,
        "InternalError": 500, "NotImplemented": 501, "ServiceUnavailable": 503,
    }

    def __init__(self, code, message, ec=None, extra=(), status=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status or self.STATUS[code]
        self.ec = ec
        self.extra = tuple(extra)


def malformed():
    return OSSError("MalformedPOSTRequest",
                    "The body of your POST request is not well-formed multipart/form-data.")


def signature_mismatch():
    return OSSError("SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your key and signing method.")


def invalid_access_key_id():
    return OSSError("InvalidAccessKeyId",
                    "The OSS Access Key Id you provided does not exist in our records.")


def condition_failed(condition, ec="0006-00000227"):
    # The message echoes the condition as a JSON array with json.dumps' default separators,
    # e.g. ["eq", "$success_action_status", "200"] (PostObject, Appendix: Policy; the
    # 0006-00000227 error page shows this message).
    return OSSError("AccessDenied",
                    "Invalid according to Policy: Policy Condition failed: "
                    + json.dumps(condition), ec=ec)


def invalid_policy(detail):
    return OSSError("InvalidPolicyDocument", "Invalid Policy: " + detail)


def callback_argument(message):
    return OSSError("InvalidArgument", message)


def _xml_elements(pairs, indent):
    lines = []
    for tag, value in pairs:
        if isinstance(value, (list, tuple)):
            lines.append(f"{indent}<{tag}>")
            lines += _xml_elements(value, indent + "  ")
            lines.append(f"{indent}</{tag}>")
        else:
            lines.append(f"{indent}<{tag}>{xml_escape(str(value))}</{tag}>")
    return lines


def error_xml(code, message, request_id, host_id, ec=None, extra=()):
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<Error>",
             f"  <Code>{xml_escape(code)}</Code>",
             f"  <Message>{xml_escape(message)}</Message>",
             f"  <RequestId>{request_id}</RequestId>",
             f"  <HostId>{xml_escape(host_id)}</HostId>"]
    lines += _xml_elements(extra, "  ")
    if ec:
        lines.append(f"  <EC>{ec}</EC>")
        lines.append(f"  <RecommendDoc>https://api.aliyun.com/troubleshoot?q={ec}</RecommendDoc>")
    lines.append("</Error>")
    return ("\n".join(lines) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------
# RSA private key (PEM/DER, PKCS#1 or PKCS#8) and PKCS#1 v1.5 signing with MD5
# --------------------------------------------------------------------------------------------

class PrivateKeyError(ValueError):
    """The emulator's key file is not a well-formed unencrypted RSA private key."""


RSA_OID = bytes.fromhex("2a864886f70d010101")           # 1.2.840.113549.1.1.1
MD5_DIGEST_INFO = bytes.fromhex("3020300c06082a864886f70d020505000410")


def _der_read(data, pos, expected_tag):
    """Read one DER TLV at ``pos``; return (value, next_pos). Rejects BER-only encodings."""
    if pos + 2 > len(data) or data[pos] != expected_tag:
        raise PrivateKeyError(f"expected DER tag 0x{expected_tag:02x} at offset {pos}")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise PrivateKeyError("unsupported DER length encoding")
        length = int.from_bytes(data[pos:pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise PrivateKeyError("non-minimal DER length")
        pos += count
    if pos + length > len(data):
        raise PrivateKeyError("DER value runs past the end of the data")
    return data[pos:pos + length], pos + length


def _der_int(data, pos):
    value, pos = _der_read(data, pos, 0x02)
    if not value or (len(value) > 1 and value[0] == 0 and value[1] < 0x80) or value[0] & 0x80:
        raise PrivateKeyError("INTEGER is empty, non-minimal or negative")
    return int.from_bytes(value, "big"), pos


def _der_len(length):
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag, value):
    return bytes([tag]) + _der_len(len(value)) + value


def _der_uint(n):
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


class RSAPrivateKey:
    def __init__(self, n, e, d, p, q, dp, dq, qinv):
        if (p * q != n or (e * d) % math.lcm(p - 1, q - 1) != 1
                or dp != d % (p - 1) or dq != d % (q - 1) or (qinv * q) % p != 1):
            raise PrivateKeyError("inconsistent RSA key components")
        if n.bit_length() < 2048:
            raise PrivateKeyError("the callback key must have at least 2048 bits")
        self.n, self.e, self.d = n, e, d
        self._p, self._q, self._dp, self._dq, self._qinv = p, q, dp, dq, qinv
        self.size = (n.bit_length() + 7) // 8

    @classmethod
    def from_pem(cls, pem):
        text = pem.decode("ascii") if isinstance(pem, bytes) else pem
        match = re.search(r"-----BEGIN (RSA |)PRIVATE KEY-----\r?\n(.*?)-----END \1PRIVATE KEY-----",
                          text, re.S)
        if not match:
            raise PrivateKeyError("no unencrypted 'RSA PRIVATE KEY' or 'PRIVATE KEY' PEM block")
        if ":" in match.group(2):
            raise PrivateKeyError("encrypted PEM keys are not supported")
        try:
            der = base64.b64decode("".join(match.group(2).split()), validate=True)
        except binascii.Error as exc:
            raise PrivateKeyError(f"bad base64 in PEM: {exc}") from None
        return cls.from_der(der, pkcs8=not match.group(1))

    @classmethod
    def from_der(cls, der, pkcs8):
        if pkcs8:
            body, end = _der_read(der, 0, 0x30)
            if end != len(der):
                raise PrivateKeyError("trailing data after PrivateKeyInfo")
            version, pos = _der_int(body, 0)
            algorithm, pos = _der_read(body, pos, 0x30)
            oid, alg_pos = _der_read(algorithm, 0, 0x06)
            if version != 0 or oid != RSA_OID or algorithm[alg_pos:] not in (b"", b"\x05\x00"):
                raise PrivateKeyError("PrivateKeyInfo does not hold an RSA key")
            der, pos = _der_read(body, pos, 0x04)
            if pos != len(body) and body[pos] != 0xA0:     # only optional [0] attributes may follow
                raise PrivateKeyError("unexpected data in PrivateKeyInfo")
        body, end = _der_read(der, 0, 0x30)
        if end != len(der):
            raise PrivateKeyError("trailing data after RSAPrivateKey")
        values, pos = [], 0
        for _ in range(9):
            value, pos = _der_int(body, pos)
            values.append(value)
        if pos != len(body) or values[0] != 0:
            raise PrivateKeyError("only two-prime RSAPrivateKey (version 0) is supported")
        return cls(*values[1:])

    def public_key_der(self):
        """SubjectPublicKeyInfo DER, the format served as a 'PUBLIC KEY' PEM."""
        rsa_public = _der(0x30, _der_uint(self.n) + _der_uint(self.e))
        algorithm = _der(0x30, _der(0x06, RSA_OID) + b"\x05\x00")
        return _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_public))

    def public_key_pem(self):
        b64 = base64.b64encode(self.public_key_der()).decode("ascii")
        lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
        return ("-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines)
                + "\n-----END PUBLIC KEY-----\n").encode("ascii")

    def sign_md5(self, message):
        """RSASSA-PKCS1-v1_5 signature of MD5(message), as OSS signs callbacks (Callback API)."""
        digest_info = MD5_DIGEST_INFO + hashlib.md5(message).digest()
        encoded = b"\x00\x01" + b"\xff" * (self.size - len(digest_info) - 3) + b"\x00" + digest_info
        m = int.from_bytes(encoded, "big")
        # CRT, then a check with the public exponent so that a fault can never leak a bad value.
        s1, s2 = pow(m, self._dp, self._p), pow(m, self._dq, self._q)
        s = s2 + self._q * ((self._qinv * (s1 - s2)) % self._p)
        if pow(s, self.e, self.n) != m:
            raise RuntimeError("RSA signing self-check failed")
        return s.to_bytes(self.size, "big")


# --------------------------------------------------------------------------------------------
# Checksums and image headers (callback system variables, Callback API)
# --------------------------------------------------------------------------------------------

def _crc64_table():
    poly = 0xC96C5795D7870F42                # ECMA-182 polynomial, bit-reflected
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC64_TABLE = _crc64_table()


_CRC64_ONES = 0xFFFFFFFFFFFFFFFF
_CRC64_BLOCK = 8192
_crc64_masks = []
_crc64_masks_lock = threading.Lock()


def _crc64_block_masks():
    """64 masks over the bits of an 8 KB block: bit j of the CRC register after the block
    (from a zero register) is the parity of the block's bits under mask j, since a CRC is
    linear in its input. Built once: the register each single message bit leads to, then
    transposed into bit planes with bytes operations."""
    with _crc64_masks_lock:
        if _crc64_masks:
            return _crc64_masks
        table, size = _CRC64_TABLE, _CRC64_BLOCK
        contributions = [0] * (8 * size)            # bit 8k+b: byte k holds 1 << b
        for bit in range(8):
            register = table[1 << bit]
            for k in range(size - 1, -1, -1):
                contributions[8 * k + bit] = register
                register = table[register & 0xFF] ^ (register >> 8)
        planes = b"".join(c.to_bytes(8, "little") for c in contributions)
        bit_of = [bytes((v >> t) & 1 for v in range(256)) for t in range(8)]
        shifted = [bytes((v << t) & 0xFF for v in range(256)) for t in range(8)]
        for j in range(64):
            flags = planes[j // 8::8].translate(bit_of[j % 8])      # one byte per message bit
            mask = 0
            for t in range(8):
                mask |= int.from_bytes(flags[t::8].translate(shifted[t]), "little")
            _crc64_masks.append(mask)
        return _crc64_masks


class Crc64:
    """CRC-64/XZ (what OSS calls crc64ecma): reflected, init and xorout all ones.

    Streams: ``update(data)`` any number of times, then ``value()``. Whole 8 KB blocks are
    folded in with the parity masks above (a register r followed by block D gives what D
    with r XORed into its first 8 bytes gives from zero), some 20 MB/s in pure Python; the
    bytes after the last whole block go through the byte table."""

    def __init__(self, crc=0):
        self._register = crc ^ _CRC64_ONES
        self._pending = b""

    def update(self, data):
        data = self._pending + bytes(data) if self._pending else bytes(data)
        whole = len(data) - len(data) % _CRC64_BLOCK
        if whole:
            masks = _crc64_block_masks()
            register = self._register
            for offset in range(0, whole, _CRC64_BLOCK):
                bits = int.from_bytes(data[offset:offset + _CRC64_BLOCK], "little") ^ register
                register = 0
                for j, mask in enumerate(masks):
                    register |= ((bits & mask).bit_count() & 1) << j
            self._register = register
        self._pending = data[whole:]
        return self

    def value(self):
        register, table = self._register, _CRC64_TABLE
        for byte in self._pending:
            register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
        return register ^ _CRC64_ONES


def crc64_update(crc, data):
    """The CRC-64/XZ of what ``crc`` (0 to start) covered followed by ``data``."""
    return Crc64(crc).update(data).value()


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_info(path):
    """(width, height, format) read from a PNG, JPEG, GIF, BMP or WebP header, else None.

    Formats are named as OSS names them in ``${imageInfo.format}``: png, jpg, gif, bmp, webp.
    """
    with open(path, "rb") as f:
        head = f.read(32)
        try:
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return width, height, "png"
            if head[:6] in (b"GIF87a", b"GIF89a"):
                width, height = struct.unpack("<HH", head[6:10])
                return width, height, "gif"
            if head.startswith(b"BM"):
                (dib_size,) = struct.unpack("<I", head[14:18])
                if dib_size == 12:                       # BITMAPCOREHEADER: 16-bit sizes
                    width, height = struct.unpack("<HH", head[18:22])
                else:                                    # negative height = top-down rows
                    width, height = struct.unpack("<ii", head[18:26])
                return abs(width), abs(height), "bmp"
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return _webp_info(head)
            if head.startswith(b"\xff\xd8"):
                return _jpeg_info(f)
        except struct.error:
            return None
    return None


def _webp_info(head):
    if len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":       # lossy: key-frame start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF, "webp"
    if chunk == b"VP8L" and head[20] == 0x2F:                      # lossless: 14-bit sizes - 1
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, "webp"
    if chunk == b"VP8X":                                           # extended: 24-bit canvas - 1
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return width, height, "webp"
    return None


def _jpeg_info(f):
    """Walk JPEG marker segments (seeking past their payloads) up to the first SOFn header."""
    f.seek(2)
    for _ in range(4096):
        byte = f.read(1)
        if byte != b"\xff":
            return None
        marker = 0xFF
        while marker == 0xFF:                   # any number of 0xFF fill bytes
            raw = f.read(1)
            if not raw:
                return None
            marker = raw[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue                            # standalone markers carry no length
        if marker in (0xD9, 0xDA):              # EOI or start of scan: no frame header found
            return None
        raw = f.read(2)
        if len(raw) != 2:
            return None
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            frame = f.read(5)
            if len(frame) != 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height, "jpg"
        f.seek(length - 2, os.SEEK_CUR)
    return None


# --------------------------------------------------------------------------------------------
# multipart/form-data, streamed (RFC 7578 / RFC 2046), without the removed `cgi` module
# --------------------------------------------------------------------------------------------

class ClientDisconnected(Exception):
    """The connection ended before Content-Length bytes arrived (an aborted upload)."""


class BodyReader:
    """Reads exactly ``length`` request-body bytes, optionally throttled to ``rate`` bytes/s."""

    def __init__(self, stream, length, rate=None):
        self._stream = stream
        self.remaining = length
        self._rate = rate
        self._received = 0
        self._started = time.monotonic()

    def read(self, size=CHUNK):
        """Up to ``size`` bytes; b"" once the whole body has been read."""
        if self.remaining <= 0:
            return b""
        size = min(size, self.remaining)
        if self._rate:
            # Small reads keep the pace even, so a test can watch progress and abort mid-way.
            size = min(size, max(1, self._rate // 20))
        try:
            data = self._stream.read1(size)
        except OSError as exc:                     # reset, or the handler's idle timeout
            raise ClientDisconnected(str(exc)) from None
        if not data:
            raise ClientDisconnected(f"connection closed with {self.remaining} body bytes missing")
        self.remaining -= len(data)
        if self._rate:
            self._received += len(data)
            ahead = self._received / self._rate - (time.monotonic() - self._started)
            if ahead > 0:
                time.sleep(ahead)
        return data

    def drain(self):
        while self.read():
            pass


_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_FIELD_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def parse_header_params(value):
    """'form-data; name="a"; filename="b"' -> ('form-data', {'name': 'a', 'filename': 'b'}).

    Quoted strings end at the next '"' with no backslash escapes: browsers encode form-data
    names and filenames the WHATWG way ('"' as %22, CR/LF as %0D/%0A, backslash sent as is),
    and the %XX sequences are left undecoded because a literal "%22" in a name looks the same.
    RFC 2046 boundaries cannot contain '"' or '\\', so the same reading suits Content-Type.
    Raises ValueError on a syntax error or a repeated parameter.
    """
    main, _, rest = value.partition(";")
    params = {}
    pos = 0
    while pos < len(rest):
        while pos < len(rest) and rest[pos] in " \t;":
            pos += 1
        if pos == len(rest):
            break
        eq = rest.find("=", pos)
        if eq < 0:
            raise ValueError(f"parameter without '=' in {value!r}")
        name = rest[pos:eq].strip().lower()
        pos = eq + 1
        if rest[pos:pos + 1] == '"':
            end = rest.find('"', pos + 1)
            if end < 0:
                raise ValueError(f"unterminated quoted string in {value!r}")
            param, pos = rest[pos + 1:end], end + 1
            if rest[pos:].lstrip(" \t")[:1] not in ("", ";"):
                raise ValueError(f"text after a quoted string in {value!r}")
        else:
            end = rest.find(";", pos)
            end = len(rest) if end < 0 else end
            param, pos = rest[pos:end].strip(), end
        if not _FIELD_NAME_RE.fullmatch(name) or name in params:
            raise ValueError(f"bad or repeated parameter {name!r} in {value!r}")
        params[name] = param
    return main.strip().lower(), params


def boundary_from_content_type(content_type):
    try:
        media_type, params = parse_header_params(content_type or "")
    except ValueError:
        raise malformed() from None
    if media_type != "multipart/form-data":
        raise OSSError("RequestIsNotMultiPartContent",
                       "Bucket POST must be of the enclosure-type multipart/form-data.")
    boundary = params.get("boundary", "")
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise malformed()
    return boundary.encode("ascii")


class Part:
    def __init__(self, name, filename, content_type, header_names):
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.header_names = header_names


class MultipartReader:
    """Pull parser: ``next_part()`` gives each part's headers, ``read_part()`` streams its content.

    Only CRLF ends a line (RFC 2046). A delimiter is CRLF "--" boundary; the RFC forbids it
    inside content, so a delimiter followed by anything but "--" (close) or optional
    whitespace and CRLF is a malformed body rather than data. At most one chunk plus the
    length of the delimiter is ever held in memory.
    """

    def __init__(self, body, boundary):
        self._body = body
        self._delimiter = b"\r\n--" + boundary
        # The first delimiter may open the body without a CRLF before it; a virtual CRLF lets
        # one search find it either way (anything before it is preamble and is skipped).
        self._buf = bytearray(b"\r\n")
        self._at_delimiter = False
        self._done = False

    def _fill(self):
        data = self._body.read()
        self._buf += data
        return bool(data)

    def _need(self, count):
        while len(self._buf) < count:
            if not self._fill():
                raise malformed()

    def _content(self):
        keep = len(self._delimiter) - 1      # a delimiter may straddle two reads
        while True:
            index = self._buf.find(self._delimiter)
            if index >= 0:
                if index:
                    yield bytes(self._buf[:index])
                    del self._buf[:index]
                self._at_delimiter = True
                return
            if len(self._buf) > keep:
                chunk = bytes(self._buf[:-keep])
                del self._buf[:-keep]
                yield chunk
            if not self._fill():
                raise malformed()            # body ended inside a part, with no close delimiter

    def read_part(self):
        """Iterate over the current part's content chunks."""
        return self._content()

    def next_part(self):
        """Headers of the next part, or None after the close delimiter."""
        if self._done:
            return None
        if not self._at_delimiter:           # skip the preamble, or content nobody read
            for _ in self._content():
                pass
        self._at_delimiter = False
        self._need(len(self._delimiter) + 2)
        del self._buf[:len(self._delimiter)]
        if self._buf[:2] == b"--":
            self._done = True                # the epilogue is left for the caller to drain
            return None
        padding = 0
        while True:                          # RFC 2046 transport padding, then CRLF
            self._need(2)
            if self._buf[0] in b" \t" and padding < MAX_PART_HEADERS:
                del self._buf[0]
                padding += 1
                continue
            if self._buf[:2] != b"\r\n":
                raise malformed()
            del self._buf[:2]
            break
        return self._read_headers()

    def _read_headers(self):
        self._need(2)
        if self._buf[:2] == b"\r\n":
            raise malformed()                # no headers at all, so no Content-Disposition
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if 0 <= end <= MAX_PART_HEADERS:
                break
            if len(self._buf) > MAX_PART_HEADERS:
                raise OSSError("FieldItemTooLong", "Your name of form field is too long.")
            if not self._fill():
                raise malformed()
        block = bytes(self._buf[:end])
        del self._buf[:end + 4]
        headers = {}
        try:
            for line in block.decode("utf-8").split("\r\n"):
                name, colon, value = line.partition(":")
                name = name.lower()
                if not colon or not _FIELD_NAME_RE.fullmatch(name) or "\r" in value \
                        or "\n" in value or name in headers:
                    raise malformed()        # also rejects obsolete line folding
                headers[name] = value.strip(" \t")
            disposition, params = parse_header_params(headers.get("content-disposition", ""))
        except (UnicodeDecodeError, ValueError):
            raise malformed() from None
        if disposition != "form-data" or not params.get("name"):
            raise malformed()
        return Part(params["name"], params.get("filename"), headers.get("content-type"),
                    sorted(headers))


# --------------------------------------------------------------------------------------------
# Policy document (PostObject, Appendix: Policy) and signatures (V1, V4)
# --------------------------------------------------------------------------------------------

_EXPIRATION_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?Z")
_X_OSS_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def _utc_timestamp(*parts):
    """Unix time of UTC calendar fields given as digit strings; ValueError if out of range."""
    moment = datetime.datetime(*map(int, parts), tzinfo=datetime.timezone.utc)
    return calendar.timegm(moment.utctimetuple())


def _no_duplicate_members(pairs):
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member in a JSON object")
    return dict(pairs)


class Policy:
    """A decoded policy whose structure has been fully checked."""

    def __init__(self, expiration, conditions, ranges):
        self.expiration = expiration       # Unix time
        self.conditions = conditions       # [(operator, field, operand, echo)]
        self.ranges = ranges               # [(min, max)] from content-length-range

    @classmethod
    def parse(cls, policy_b64):
        try:
            raw = base64.b64decode(policy_b64, validate=True)
            doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_members)
        except binascii.Error:
            raise invalid_policy("Invalid Base64.") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise invalid_policy(f"Invalid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise invalid_policy("Invalid JSON: the policy must be a JSON object.")
        for member in ("expiration", "conditions"):
            if member not in doc:
                raise invalid_policy(f"Policy missing {member}.")
        extra = sorted(set(doc) - {"expiration", "conditions"})
        if extra:
            raise invalid_policy(f"Unexpected policy member: {extra[0]}.")
        expiration = doc["expiration"]
        match = _EXPIRATION_RE.fullmatch(expiration) if isinstance(expiration, str) else None
        try:
            when = _utc_timestamp(*match.groups()[:6]) + float(match.group(7) or 0)
        except (AttributeError, ValueError):
            raise invalid_policy(f"Invalid 'expiration' value: {json.dumps(expiration)}.") from None
        if not isinstance(doc["conditions"], list):
            raise invalid_policy("Invalid 'conditions' value: it must be an array.")
        conditions, ranges = [], []
        for condition in doc["conditions"]:
            parsed = cls._parse_condition(condition)
            if parsed[0] == "content-length-range":
                ranges.append(parsed[2])
            else:
                conditions.append(parsed)
        return cls(when, conditions, ranges)

    @staticmethod
    def _parse_condition(condition):
        if isinstance(condition, dict):
            if len(condition) != 1:
                raise invalid_policy("Invalid Simple-Condition: Simple-Conditions must have "
                                     "exactly one property specified.")
            (name, value), = condition.items()
            if not isinstance(value, str):
                raise invalid_policy(f"Invalid Simple-Condition: the value of {name} must be a string.")
            # Failures echo a simple condition in its "eq" form, e.g. ["eq", "$bucket", "b"].
            return "eq", name.lower(), value, ["eq", "$" + name, value]
        if not isinstance(condition, list) or not condition or not isinstance(condition[0], str):
            raise invalid_policy(f"Invalid Condition: {json.dumps(condition)}.")
        operator = condition[0]
        if operator == "content-length-range":
            if len(condition) != 3 or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in condition[1:]) \
                    or not 0 <= condition[1] <= condition[2]:
                raise invalid_policy(f"Invalid content-length-range: {json.dumps(condition)}.")
            return operator, None, (condition[1], condition[2]), condition
        if operator not in ("eq", "starts-with", "in", "not-in"):
            raise invalid_policy(f"Invalid Condition: unsupported operator {json.dumps(operator)}.")
        if len(condition) != 3 or not isinstance(condition[1], str) \
                or not condition[1].startswith("$") or len(condition[1]) < 2:
            raise invalid_policy(f"Invalid Condition: {json.dumps(condition)}.")
        operand = condition[2]
        if operator in ("in", "not-in"):
            valid = isinstance(operand, list) and all(isinstance(v, str) for v in operand)
        else:
            valid = isinstance(operand, str)
        if not valid:
            raise invalid_policy(f"Invalid Condition: wrong value type in {json.dumps(condition)}.")
        return operator, condition[1][1:].lower(), operand, condition

    def check(self, fields, bucket, now):
        """Expiration, then every field condition, on the values as posted (before ${filename}).

        A condition names a form field, "$" + its name, matched like form field names are
        (case-insensitively, see _Handler._read_fields), and sees only that field's value:
        ["in", "$x-oss-content-type", [...]] tests the x-oss-content-type field, and
        ["in", "$content-type", [...]] the Content-Type field, never the file part's type
        nor the type finally stored (which follows x-oss-content-type > Content-Type > the
        file part's type, PostObject, form element x-oss-content-type).

        Choice: a field the form does not carry has the value "", so a pinned field that is
        missing fails (["in", "$x-oss-content-type", [...]] refuses a form without that
        field, whatever its Content-Type field or file part say), and
        ["starts-with", "$x", ""] accepts a missing x. The error page 0006-00000226 says a
        request whose body lacks a field a condition names fails, and gives its EC but no
        code or message: such a failure answers the usual AccessDenied "Policy Condition
        failed" message (0006-00000227 page) with the EC 0006-00000226. That page would also
        refuse the conditions "" satisfies, which the emulator lets through.
        "$bucket" is always the bucket being posted to, whatever the form says.
        """
        if now >= self.expiration:
            raise OSSError("AccessDenied", "Invalid according to Policy: Policy expired.",
                           ec="0006-00000213")
        for operator, field, operand, echo in self.conditions:
            absent = field != "bucket" and field not in fields
            value = bucket if field == "bucket" else fields.get(field, "")
            if operator == "eq":
                ok = value == operand
            elif operator == "starts-with":
                ok = value.startswith(operand)
            elif operator == "in":
                ok = value in operand
            else:
                ok = value not in operand
            if not ok:
                raise condition_failed(echo, "0006-00000226" if absent else "0006-00000227")

    def pins(self, field):
        return any(op == "eq" and name == field for op, name, _, _ in self.conditions)

    def check_size(self, size):
        for low, high in self.ranges:
            if size < low:
                raise OSSError("EntityTooSmall",
                               "Your proposed upload smaller than the minimum allowed size.")
            if size > high:
                raise too_large()

    def max_size(self):
        return min([high for _, high in self.ranges] + [MAX_OBJECT_SIZE])


def too_large():
    return OSSError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")


def sign_v1(secret, policy_b64):
    mac = hmac.new(secret.encode("utf-8"), policy_b64.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def v4_signing_key(secret, yyyymmdd, region):
    """HMAC-SHA256 chain "aliyun_v4" + secret -> date -> region -> "oss" -> "aliyun_v4_request"."""
    key = ("aliyun_v4" + secret).encode("utf-8")
    for part in (yyyymmdd, region, "oss", "aliyun_v4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def sign_v4(secret, yyyymmdd, region, policy_b64):
    key = v4_signing_key(secret, yyyymmdd, region)
    return hmac.new(key, policy_b64.encode("utf-8"), hashlib.sha256).hexdigest()


def _same(a, b):
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


V4_FIELDS = ("x-oss-signature-version", "x-oss-credential", "x-oss-date", "x-oss-signature")
V1_FIELDS = ("ossaccesskeyid", "signature")


# --------------------------------------------------------------------------------------------
# Signed requests: "Include a V1 signature in the Authorization header", "Include a V4
# signature in the Authorization header", and the same two signatures in URLs (presigned)
# --------------------------------------------------------------------------------------------

MAX_SKEW = 15 * 60                  # Date / x-oss-date: at most 15 minutes from OSS's clock
V4_MAX_EXPIRES = 7 * 24 * 3600      # x-oss-expires: 1 to 604800 seconds
V4_ALGORITHM = "OSS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

# Query parameters that take part in the V1 CanonicalizedResource ("Include a V1 signature in
# the Authorization header": the sub-resources, sorted by name). Any other parameter is left
# out of what V1 signs.
V1_SUBRESOURCES = frozenset((
    "acl", "append", "asyncFetch", "bucketInfo", "callback", "callback-var", "cname", "comp",
    "continuation-token", "cors", "delete", "encryption", "endTime", "group", "img",
    "inventory", "inventoryId", "lifecycle", "link", "live", "location", "logging",
    "metaQuery", "objectInfo", "objectMeta", "partNumber", "policy", "position", "qos",
    "qosInfo", "referer", "regionList", "replication", "replicationLocation",
    "replicationProgress", "requestPayment", "resourceGroup", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "response-content-language",
    "response-content-type", "response-expires", "restore", "security-token", "sequential",
    "startTime", "stat", "status", "style", "styleName", "symlink", "tagging",
    "transferAcceleration", "uploadId", "uploads", "versionId", "versioning", "versions",
    "vod", "website", "worm", "wormExtend", "wormId", "x-oss-ac-forward-allow",
    "x-oss-ac-source-ip", "x-oss-ac-subnet-mask", "x-oss-ac-vpc-id", "x-oss-async-process",
    "x-oss-process", "x-oss-request-payer", "x-oss-traffic-limit",
))
V1_QUERY_AUTH = ("OSSAccessKeyId", "Expires", "Signature")
V4_QUERY_AUTH = ("x-oss-signature-version", "x-oss-credential", "x-oss-date", "x-oss-expires",
                 "x-oss-signature")


@dataclasses.dataclass(frozen=True)
class SignedRequest:
    """What a signature covers, as the emulator received it."""

    method: str
    bucket: str                # the bucket the request went to ("" for none)
    key: str                   # the object key, percent-decoded ("" for a bucket call)
    query: tuple               # ((name, value), ...) percent-decoded, in the order sent
    headers: dict              # lower-case name -> value, trimmed; repeats joined with ","
    body_sha256: str = ""      # hex SHA-256 of the request body


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who signed a request: the AccessKey ID and the bucket whose owner holds the key."""

    access_key_id: str
    owner: object              # a Bucket


def v1_canonical_resource(bucket, key, query):
    """"/" + bucket + "/" + key, then "?" and the sub-resources sorted by name (name, or
    name=value when the value is not empty), joined with "&"; the values are not encoded."""
    resource = f"/{bucket}/{key}" if bucket else "/"
    subresources = sorted(((n, v) for n, v in query if n in V1_SUBRESOURCES),
                          key=lambda pair: pair[0])
    if subresources:
        resource += "?" + "&".join(n + "=" + v if v else n for n, v in subresources)
    return resource


def v1_canonical_headers(headers):
    """Every x-oss-* header, lower-case name ":" value "\n", sorted by name."""
    return "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)
                   if name.startswith("x-oss-"))


def v1_string_to_sign(request, date):
    """VERB, Content-MD5, Content-Type, Date (or Expires), then CanonicalizedOSSHeaders and
    CanonicalizedResource, joined by "\n" (the last two without one between them)."""
    return "\n".join((request.method, request.headers.get("content-md5", ""),
                      request.headers.get("content-type", ""), date,
                      v1_canonical_headers(request.headers)
                      + v1_canonical_resource(request.bucket, request.key, request.query)))


def v1_signature(secret, string_to_sign):
    mac = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _v4_encode(text, keep_slash=False):
    """RFC 3986 percent-encoding of the UTF-8 bytes: only A-Z a-z 0-9 - _ . ~ stay as they
    are (and "/" in the canonical URI)."""
    return urllib.parse.quote(text, safe="/" if keep_slash else "")


def v4_canonical_request(request, additional_headers, payload_hash, skip=()):
    """HTTP verb, canonical URI, canonical query string, canonical headers, additional
    headers and the hashed payload, joined by "\n".

    The canonical URI is "/" + bucket + "/" + key, encoded but for "/". The query is every
    parameter (but those in ``skip``) encoded, sorted, as name=value or name alone. The
    headers are content-type, content-md5, every x-oss-* header and the additional headers,
    as lower-case name ":" value "\n", sorted."""
    uri = _v4_encode(f"/{request.bucket}/{request.key}" if request.bucket else "/", True)
    pairs = sorted((_v4_encode(n), _v4_encode(v)) for n, v in request.query if n not in skip)
    query = "&".join(n + "=" + v if v else n for n, v in pairs)
    signed = sorted(name for name in request.headers
                    if name.startswith("x-oss-") or name in ("content-type", "content-md5")
                    or name in additional_headers)
    headers = "".join(f"{name}:{request.headers[name]}\n" for name in signed)
    return "\n".join((request.method, uri, query, headers, ";".join(additional_headers),
                      payload_hash))


def v4_string_to_sign(timestamp, scope, canonical_request):
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return "\n".join((V4_ALGORITHM, timestamp, scope, digest))


def v4_signature(secret, yyyymmdd, region, string_to_sign):
    key = v4_signing_key(secret, yyyymmdd, region)
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _iso8601(timestamp):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(timestamp))


def _bytes_hex(text):
    return " ".join(f"{b:02X}" for b in text.encode("utf-8"))


def _invalid_argument(message, name=None, value=None, ec=None):
    extra = [("ArgumentName", name), ("ArgumentValue", value)] if name is not None else []
    return OSSError("InvalidArgument", message, ec=ec, extra=extra)


def _expired(expires_at, now):
    return OSSError("AccessDenied", "Request has expired.",
                    extra=[("Expires", _iso8601(expires_at)), ("ServerTime", _iso8601(now))])


def _too_skewed(request_time, now):
    return OSSError("RequestTimeTooSkewed", "The difference between the request time and the "
                    "current time is too large.",
                    extra=[("RequestTime", _iso8601(request_time)), ("ServerTime", _iso8601(now)),
                           ("MaxAllowedSkewMilliseconds", str(MAX_SKEW * 1000))])


def _parse_http_date(value):
    """Unix time of an RFC 1123 date ("Tue, 20 Dec 2022 08:48:18 GMT"), else None."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None or moment.tzinfo is None or moment.utcoffset():
        return None
    return moment.timestamp()


def _parse_x_oss_date(value):
    match = _X_OSS_DATE_RE.fullmatch(value or "")
    try:
        return _utc_timestamp(*match.groups())
    except (AttributeError, ValueError):
        return None


def _parse_credential(credential, where, ec):
    """(AccessKeyId, yyyymmdd, region) of "<AccessKeyId>/<date>/<region>/oss/aliyun_v4_request"."""
    scope = credential.split("/")
    if len(scope) != 5 or not scope[0] or not re.fullmatch(r"\d{8}", scope[1]) \
            or not scope[2] or scope[3] != "oss" or scope[4] != "aliyun_v4_request":
        raise _invalid_argument(f"Invalid credential in {where}.", where, credential, ec)
    return scope[0], scope[1], scope[2]


def _parse_v4_authorization(value):
    """{"Credential", "Signature", optional "AdditionalHeaders"} of a V4 Authorization header.

    Choice: the pairs may come in any order, with or without a space after each comma (the
    documentation writes ", ", the SDKs ","); an unknown or repeated pair, or an empty
    AdditionalHeaders (error page 0002-00000209), is InvalidArgument."""
    pairs = {}
    for item in value[len(V4_ALGORITHM):].split(","):
        name, eq, text = item.strip().partition("=")
        if not eq or name in pairs or name not in ("Credential", "Signature",
                                                   "AdditionalHeaders") or not text.strip():
            raise _invalid_argument("Authorization header is invalid.", "Authorization", value)
        pairs[name] = text.strip()
    if "Credential" not in pairs or "Signature" not in pairs:
        raise _invalid_argument("Authorization header is invalid.", "Authorization", value)
    return pairs


def _additional_headers(text):
    """Lower-case names of an AdditionalHeaders list ("host;range"), sorted, once each."""
    return sorted({name.strip().lower() for name in text.split(";") if name.strip()})


def check_security_token(token, expected):
    """The security token a request carries against the one its AccessKey needs.

    A temporary AccessKey without its token is InvalidAccessKeyId. Choice: a wrong token,
    or a token for a key that needs none, is 403 InvalidSecurityToken."""
    if expected is not None and not token:
        raise invalid_access_key_id()
    if token is not None and (expected is None or not _same(token, expected)):
        raise OSSError("InvalidSecurityToken", "The security token you provided is invalid.")


def _signature_mismatch(access_key_id, provided, string_to_sign, canonical_request=None,
                        ec="0002-00000040"):
    """SignatureDoesNotMatch as OSS answers it: the AccessKey ID, the signature sent and what
    OSS signed (StringToSign, its bytes in hex, and for V4 the CanonicalRequest), so that a
    client can see where it differs."""
    extra = [("OSSAccessKeyId", access_key_id), ("SignatureProvided", provided)]
    if canonical_request is not None:
        extra.append(("CanonicalRequest", canonical_request))
    extra += [("StringToSign", string_to_sign), ("StringToSignBytes", _bytes_hex(string_to_sign))]
    error = signature_mismatch()
    error.ec, error.extra = ec, tuple(extra)
    return error


def authenticate_request(request, bucket, lookup_key, now):
    """The Principal that signed ``request`` (sent to ``bucket``), or None when it carries no
    signature at all. ``lookup_key(access_key_id)`` gives (secret, security token, owner
    bucket) or raises InvalidAccessKeyId.

    Choice: a request that mixes an Authorization header with signature parameters in its
    URL, or V1 with V4 parameters, is 400 InvalidArgument."""
    authorization = request.headers.get("authorization")
    names = {name for name, _ in request.query}
    v1_query = names & set(V1_QUERY_AUTH)
    v4_query = names & set(V4_QUERY_AUTH)
    if sum(map(bool, (authorization is not None, v1_query, v4_query))) > 1:
        raise _invalid_argument("Only one authentication mechanism may be used.")
    params = {}
    for name, value in request.query:
        if name in V1_QUERY_AUTH + V4_QUERY_AUTH + ("security-token", "x-oss-security-token",
                                                    "x-oss-additional-headers"):
            if name in params:
                raise _invalid_argument(f"Repeated query parameter {name}.", name, value)
            params[name] = value
    if authorization is not None:
        if authorization.startswith("OSS "):
            return _v1_header(request, bucket, lookup_key, now, authorization)
        if authorization.startswith(V4_ALGORITHM + " "):
            return _v4_header(request, bucket, lookup_key, now, authorization)
        raise _invalid_argument("Authorization header is invalid.", "Authorization",
                                authorization)
    if v1_query:
        return _v1_query(request, lookup_key, now, params)
    if v4_query:
        return _v4_query(request, bucket, lookup_key, now, params)
    return None


def _v1_header(request, bucket, lookup_key, now, authorization):
    """"Include a V1 signature in the Authorization header": "OSS " AccessKeyId ":" Signature.

    The Date of the string to sign is the x-oss-date header when the request has one, else
    the Date header (the page: "when both are present, x-oss-date prevails"). Choice: that
    value must be an RFC 1123 date, or for x-oss-date also the ISO 8601 basic form
    (20221220T084818Z); missing or unreadable, it is 403 AccessDenied."""
    match = re.fullmatch(r"OSS ([^:\s]+):(\S+)", authorization)
    if not match:
        raise _invalid_argument("Authorization header is invalid.", "Authorization",
                                authorization)
    access_key_id, provided = match.groups()
    secret, expected_token, owner = lookup_key(access_key_id)
    date = request.headers.get("x-oss-date") or request.headers.get("date")
    signed_at = None
    if date:
        signed_at = _parse_http_date(date)
        if signed_at is None and "x-oss-date" in request.headers:
            signed_at = _parse_x_oss_date(date)
    if signed_at is None:
        raise OSSError("AccessDenied", "The request has no valid Date or x-oss-date header.",
                       ec="0002-00000503")
    if abs(signed_at - now) > MAX_SKEW:
        raise _too_skewed(signed_at, now)
    check_security_token(request.headers.get("x-oss-security-token"), expected_token)
    string_to_sign = v1_string_to_sign(request, date)
    if not _same(provided, v1_signature(secret, string_to_sign)):
        raise _signature_mismatch(access_key_id, provided, string_to_sign)
    return Principal(access_key_id, owner)


def _v1_query(request, lookup_key, now, params):
    """A V1 presigned URL: OSSAccessKeyId, Expires (Unix time) and Signature in the query;
    the string to sign has Expires where the header form has Date, and the security-token
    parameter of an STS key is a sub-resource. Choice: a URL missing one of the three, or
    whose Expires is no integer, is 403 AccessDenied."""
    if not all(params.get(name) for name in V1_QUERY_AUTH) \
            or not re.fullmatch(r"[0-9]{1,12}", params["Expires"]):
        raise OSSError("AccessDenied", "Query-string authentication requires the Signature, "
                       "Expires and OSSAccessKeyId parameters.")
    access_key_id, provided = params["OSSAccessKeyId"], params["Signature"]
    secret, expected_token, owner = lookup_key(access_key_id)
    expires = int(params["Expires"])
    if now > expires:
        raise _expired(expires, now)
    check_security_token(params.get("security-token"), expected_token)
    string_to_sign = v1_string_to_sign(request, params["Expires"])
    if not _same(provided, v1_signature(secret, string_to_sign)):
        raise _signature_mismatch(access_key_id, provided, string_to_sign)
    return Principal(access_key_id, owner)


def _check_region(region, bucket, where, credential, ec):
    """Choice: a signing region that is not the bucket's is 400 InvalidArgument "The signing
    region in credential is invalid.", with the element and value (the message and layout
    OSS gives a PostObject credential of the wrong region, error page 0002-00000715; the
    pages 0002-00000228 and 0002-00000226 describe the header and URL cases without a
    message)."""
    if region != bucket.region:
        raise _invalid_argument("The signing region in credential is invalid.", where,
                                credential, ec)


def _v4_header(request, bucket, lookup_key, now, authorization):
    """"Include a V4 signature in the Authorization header".

    Choice: x-oss-date is required (403 AccessDenied without it, 400 InvalidArgument when
    it is not yyyymmddTHHMMSSZ or its day is not the credential's), and so is
    x-oss-content-sha256, whose value (UNSIGNED-PAYLOAD, or the hex SHA-256 of the body) is
    the hashed payload."""
    pairs = _parse_v4_authorization(authorization)
    access_key_id, day, region = _parse_credential(pairs["Credential"], "Authorization",
                                                   "0002-00000213")
    secret, expected_token, owner = lookup_key(access_key_id)
    _check_region(region, bucket, "Authorization", pairs["Credential"], "0002-00000228")
    timestamp = request.headers.get("x-oss-date")
    if not timestamp:
        raise OSSError("AccessDenied", "The request has no x-oss-date header.",
                       ec="0002-00000503")
    signed_at = _parse_x_oss_date(timestamp)
    if signed_at is None or timestamp[:8] != day:
        raise _invalid_argument("Invalid x-oss-date.", "x-oss-date", timestamp, "0002-00000502")
    if abs(signed_at - now) > MAX_SKEW:
        raise _too_skewed(signed_at, now)
    payload = request.headers.get("x-oss-content-sha256")
    if payload not in (UNSIGNED_PAYLOAD, request.body_sha256):
        raise _invalid_argument("x-oss-content-sha256 must be UNSIGNED-PAYLOAD or the "
                                "SHA-256 of the body.", "x-oss-content-sha256", payload or "")
    check_security_token(request.headers.get("x-oss-security-token"), expected_token)
    additional = _additional_headers(pairs.get("AdditionalHeaders", ""))
    canonical = v4_canonical_request(request, additional, payload)
    string_to_sign = v4_string_to_sign(timestamp, f"{day}/{region}/oss/aliyun_v4_request",
                                       canonical)
    if not _same(pairs["Signature"], v4_signature(secret, day, region, string_to_sign)):
        raise _signature_mismatch(access_key_id, pairs["Signature"], string_to_sign,
                                  canonical, "0002-00000201")
    return Principal(access_key_id, owner)


def _v4_query(request, bucket, lookup_key, now, params):
    """A V4 presigned URL: x-oss-signature-version, x-oss-credential, x-oss-date,
    x-oss-expires (1 to 604800 seconds from x-oss-date), x-oss-signature, and optional
    x-oss-additional-headers and x-oss-security-token. Every parameter but x-oss-signature
    is in the canonical query; the payload is UNSIGNED-PAYLOAD.

    Choice: a missing parameter is 400 InvalidArgument; an x-oss-date more than 15 minutes
    ahead of the emulator's clock (the page allows that much) is RequestTimeTooSkewed; past
    x-oss-date + x-oss-expires the URL is 403 AccessDenied "Request has expired."."""
    for name in V4_QUERY_AUTH:
        if not params.get(name):
            raise _invalid_argument(f"Query parameter {name} is required.", name, "",
                                    "0002-00000215" if name == "x-oss-expires" else None)
    if params["x-oss-signature-version"] != V4_ALGORITHM:
        raise _invalid_argument("Invalid x-oss-signature-version.", "x-oss-signature-version",
                                params["x-oss-signature-version"])
    credential = params["x-oss-credential"]
    access_key_id, day, region = _parse_credential(credential, "x-oss-credential",
                                                   "0002-00000224")
    secret, expected_token, owner = lookup_key(access_key_id)
    _check_region(region, bucket, "x-oss-credential", credential, "0002-00000226")
    timestamp = params["x-oss-date"]
    signed_at = _parse_x_oss_date(timestamp)
    if signed_at is None or timestamp[:8] != day:
        raise _invalid_argument("Invalid x-oss-date.", "x-oss-date", timestamp, "0002-00000502")
    expires = params["x-oss-expires"]
    if not re.fullmatch(r"[0-9]{1,7}", expires) or not 1 <= int(expires) <= V4_MAX_EXPIRES:
        raise _invalid_argument("Invalid x-oss-expires.", "x-oss-expires", expires)
    if signed_at - now > MAX_SKEW:
        raise _too_skewed(signed_at, now)
    if now > signed_at + int(expires):
        raise _expired(signed_at + int(expires), now)
    check_security_token(params.get("x-oss-security-token"), expected_token)
    additional = _additional_headers(params.get("x-oss-additional-headers", ""))
    canonical = v4_canonical_request(request, additional, UNSIGNED_PAYLOAD,
                                     skip=("x-oss-signature",))
    string_to_sign = v4_string_to_sign(timestamp, f"{day}/{region}/oss/aliyun_v4_request",
                                       canonical)
    provided = params["x-oss-signature"]
    if not _same(provided, v4_signature(secret, day, region, string_to_sign)):
        raise _signature_mismatch(access_key_id, provided, string_to_sign, canonical,
                                  "0002-00000201")
    return Principal(access_key_id, owner)


# --------------------------------------------------------------------------------------------
# Upload callback (Callback API)
# --------------------------------------------------------------------------------------------

FORM_TYPE = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
SYSTEM_VARIABLES = ("bucket", "object", "etag", "size", "mimeType", "imageInfo.height",
                    "imageInfo.width", "imageInfo.format", "crc64", "contentMd5", "vpcId",
                    "clientIp", "reqId", "operation")
NUMERIC_VARIABLES = ("size", "imageInfo.height", "imageInfo.width")
_VARIABLE_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]+")


class CallbackConfig:
    def __init__(self, urls, host, template, body_type):
        self.urls = urls
        self.host = host
        self.template = template      # [str literal | (variable name, inside a JSON string)]
        self.body_type = body_type

    @classmethod
    def parse(cls, value):
        """The ``callback`` form field; None when it names no callbackUrl (Callback API)."""
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise callback_argument("The callback configuration is not base64 encoded.") from None
        if len(raw) > MAX_CALLBACK_CONFIG:
            raise callback_argument("The callback configuration is too long.")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            doc = None
        if not isinstance(doc, dict):
            raise callback_argument("The callback configuration is not json format.")
        for member in ("callbackUrl", "callbackHost", "callbackBody", "callbackBodyType"):
            if not isinstance(doc.get(member, ""), str):
                raise callback_argument(f"The {member} is invalid.")
        if not doc.get("callbackUrl"):
            return None
        urls = doc["callbackUrl"].split(";")
        if len(urls) > MAX_CALLBACK_URLS:
            raise callback_argument("The callbackUrl is invalid: more than 5 urls.")
        for url in urls:
            cls._check_url(url)
        body_type = doc.get("callbackBodyType") or FORM_TYPE
        if body_type not in (FORM_TYPE, JSON_TYPE):
            raise callback_argument("The callbackBodyType is invalid.")
        if not doc.get("callbackBody"):
            raise callback_argument("The callbackBody is empty.")
        if doc.get("callbackSNI", False) not in (True, False, "true", "false"):
            raise callback_argument("The callbackSNI is invalid.")
        host = doc.get("callbackHost") or None
        if host is not None and not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]+", host):
            raise callback_argument("The callbackHost is invalid.")
        template = cls._parse_template(doc["callbackBody"], body_type == JSON_TYPE)
        return cls(urls, host, template, body_type)

    @staticmethod
    def _check_url(url):
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            raise callback_argument("The callbackUrl is invalid.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0 \
                or not url.isascii() or any(c.isspace() or ord(c) < 0x20 for c in url) \
                or ":" in parts.hostname:             # Callback API: no IPv6
            raise callback_argument("The callbackUrl is invalid.")

    @staticmethod
    def _parse_template(body, json_type):
        """Split at ${...} placeholders, noting for JSON whether each one sits inside a string.

        Choice (JSON type): a placeholder outside a JSON string becomes a whole JSON value (a
        quoted string; ``size`` and the image numbers bare); inside a string literal of the
        template it becomes the escaped text without quotes. That reproduces the real OSS sample
        in the Callback API page, where "${imageInfo.width},${imageInfo.height}" gave "810,539".
        """
        template, pos, in_string, escaped = [], 0, False, False
        while True:
            start = body.find("${", pos)
            literal = body[pos:] if start < 0 else body[pos:start]
            if literal:
                template.append(literal)
            for char in literal:
                if escaped:
                    escaped = False
                elif char == "\\" and in_string:
                    escaped = True
                elif char == '"':
                    in_string = not in_string
            if start < 0:
                return template
            end = body.find("}", start + 2)
            if end < 0 or not _VARIABLE_NAME_RE.fullmatch(body[start + 2:end]):
                raise callback_argument("The callbackBody is invalid: bad ${} syntax.")
            template.append((body[start + 2:end], json_type and in_string))
            pos = end + 1

    def render(self, variables):
        """The callback body. ``variables`` maps system names and "x:..." names to strings.

        Choice: an x: variable the form did not send renders as an empty value; an unknown
        system variable name is left in the body literally, as "${name}".
        Choice (JSON type): an empty value outside a string renders as "" (how OSS renders it
        is unconfirmed). crc64 is a quoted decimal string, since it exceeds 2**53.
        """
        out = []
        for item in self.template:
            if isinstance(item, str):
                out.append(item)
                continue
            name, in_string = item
            if name not in SYSTEM_VARIABLES and not name.startswith("x:"):
                out.append("${" + name + "}")
                continue
            value = variables.get(name, "")
            if self.body_type == FORM_TYPE:
                out.append(urllib.parse.quote(value, safe=""))
            elif in_string:
                out.append(json.dumps(value, ensure_ascii=False)[1:-1])
            elif name in NUMERIC_VARIABLES and value:
                out.append(value)
            else:
                out.append(json.dumps(value, ensure_ascii=False))
        return "".join(out).encode("utf-8")


class CallbackResult:
    def __init__(self, ok, detail):
        self.ok = ok
        self.detail = detail          # the app server's JSON body if ok, else the 203 Message


def deliver_callback(config, body, key, pub_key_url, extra_headers, timeout):
    """POST to each callbackUrl in turn until one succeeds (Callback API).

    Choice: when every URL fails, the 203 message is the last URL's failure.
    Choice: https URLs are supported, but TLS always sends SNI (callbackSNI is accepted and
    ignored): the emulator only ever calls back over loopback.
    """
    result = None
    for url in config.urls:
        result = _post_callback(url, config, body, key, pub_key_url, extra_headers, timeout)
        if result.ok:
            return result
        log.info("callback to %s failed: %s", url, result.detail)
    return result


def _post_callback(url, config, body, key, pub_key_url, extra_headers, timeout):
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + ("?" + parts.query if "?" in url.split("#")[0] else "")
    # Spec 5.4: the signed string is the percent-decoded path, the raw query with its '?'
    # (present iff the URL has one), "\n", then the body.
    signed = urllib.parse.unquote_to_bytes(parts.path or "/")
    if "?" in target:
        signed += b"?" + parts.query.encode("ascii")
    signature = key.sign_md5(signed + b"\n" + body)
    headers = {
        "Host": config.host or parts.netloc,
        "Content-Type": config.body_type,
        "Content-Length": str(len(body)),
        "Connection": "close",
        "Date": formatdate(usegmt=True),
        "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode("ascii"),
        "User-Agent": "aliyun-oss-callback",
        "authorization": base64.b64encode(signature).decode("ascii"),
        "x-oss-pub-key-url": base64.b64encode(pub_key_url.encode("ascii")).decode("ascii"),
        "x-oss-signature-version": "1.0",
        "x-oss-tag": "CALLBACK",
        **extra_headers,
    }
    deadline = time.monotonic() + timeout
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        try:
            conn.connect()
        except TimeoutError:
            return CallbackResult(False, "Cost too long time")
        except OSError:
            return CallbackResult(False, "Error Status : -1.OSS can not connect to your "
                                         "callbackUrl, please check it")
        conn.putrequest("POST", target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        sock = conn.sock           # http.client forgets it once a "close" response arrives
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        response = conn.getresponse()
        if response.status != 200:
            return CallbackResult(False, f"Error status : {response.status}.")
        length = response.getheader("Content-Length")
        if length is None or response.getheader("Transfer-Encoding"):
            return CallbackResult(False, "Error Status : 400.User server missing content-length")
        if not length.isdigit() or int(length) == 0:
            return CallbackResult(False, "Error Status : 400.User server return invalid "
                                         "content-length value")
        if int(length) > MAX_CALLBACK_RESPONSE:
            return CallbackResult(False, "Error Status : 400.User server return too long "
                                         "content-length value")
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        answer = response.read()
        if time.monotonic() > deadline:
            return CallbackResult(False, "Cost too long time")
        try:
            json.loads(answer.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return CallbackResult(False, "Response body is not valid json format.")
        return CallbackResult(True, answer)
    except TimeoutError:
        return CallbackResult(False, "Cost too long time")
    except (OSError, http.client.HTTPException):
        return CallbackResult(False, "Error Status : -1.OSS can not connect to your "
                                     "callbackUrl, please check it")
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------

class Staged:
    def __init__(self, file, path):
        self.file = file
        self.path = path
        self.committed = False


class ObjectStore:
    """Objects under ``root/objects``, uploads in progress under ``root/tmp``.

    Choice: an object's file is named by the SHA-256 of its key (metadata beside it as
    ``<hash>.json``), so that every valid OSS key can be stored: keys up to 1023 bytes, keys
    ending in "/", and both "a" and "a/b". No key can reach outside the root.
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(exist_ok=True)
        for leftover in self._tmp.iterdir():          # from a previous run that was killed
            leftover.unlink()
        self._lock = threading.Lock()                 # makes data + metadata replace as one

    def object_path(self, key):
        return self._objects / hashlib.sha256(key.encode("utf-8")).hexdigest()

    def staging_files(self):
        return list(self._tmp.iterdir())

    @contextlib.contextmanager
    def staging(self):
        """A temporary file that disappears unless committed."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        staged = Staged(os.fdopen(fd, "wb"), pathlib.Path(name))
        try:
            with staged.file:
                yield staged
        finally:
            if not staged.committed:
                staged.path.unlink(missing_ok=True)

    def commit(self, staged, key, meta, forbid_overwrite):
        staged.file.flush()
        target = self.object_path(key)
        fd, meta_tmp = tempfile.mkstemp(dir=self._tmp, prefix="meta-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(meta, f)
            with self._lock:
                if forbid_overwrite and target.exists():
                    raise OSSError("FileAlreadyExists", "The object you specified already "
                                   "exists and can not be overwritten.")
                os.replace(meta_tmp, target.with_suffix(".json"))
                os.replace(staged.path, target)
                staged.committed = True
        finally:
            pathlib.Path(meta_tmp).unlink(missing_ok=True)

    def update_meta(self, key, etag, updates):
        """Add ``updates`` to the metadata of ``key`` if it still holds the object ``etag``."""
        target = self.object_path(key).with_suffix(".json")
        with self._lock:
            try:
                meta = json.loads(target.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return
            if meta.get("etag") != etag:
                return
            meta.update(updates)
            fd, meta_tmp = tempfile.mkstemp(dir=self._tmp, prefix="meta-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(meta, f)
            os.replace(meta_tmp, target)

    def open(self, key):
        """(open binary file, metadata dict), or None if there is no such object."""
        target = self.object_path(key)
        with self._lock:
            try:
                f = open(target, "rb")
            except FileNotFoundError:
                return None
            meta = json.loads(target.with_suffix(".json").read_text(encoding="utf-8"))
        return f, meta


# --------------------------------------------------------------------------------------------
# CORS rules (PutBucketCors, GetBucketCors, DeleteBucketCors)
# --------------------------------------------------------------------------------------------

# Choice: PutBucketCors's page now gives 20 rules per bucket and a 16 KB body (older editions
# said 10 rules); the emulator enforces 20 and 16 KB.
MAX_CORS_RULES = 20
MAX_CORS_BODY = 16 * 1024
CORS_METHODS = ("GET", "PUT", "DELETE", "POST", "HEAD")
_CORS_HEADER_FORBIDDEN = set("<>&'\"")


def _malformed_xml():
    return OSSError("MalformedXML", "The XML you provided was not well-formed or did not "
                                    "validate against our published schema.")


def _one_wildcard_match(pattern, value, ignore_case=False):
    """``value`` matches ``pattern``, in which one "*" stands for any text."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    head, star, tail = pattern.partition("*")
    if not star:
        return value == pattern
    return len(value) >= len(head) + len(tail) and value.startswith(head) \
        and value.endswith(tail)


@dataclasses.dataclass(frozen=True)
class CorsRule:
    """One CORSRule: AllowedOrigin and AllowedMethod (at least one each), AllowedHeader and
    ExposeHeader (any number), MaxAgeSeconds (optional)."""

    allowed_origins: tuple
    allowed_methods: tuple
    allowed_headers: tuple = ()
    expose_headers: tuple = ()
    max_age_seconds: "int | None" = None

    def __post_init__(self):
        for name in ("allowed_origins", "allowed_methods", "allowed_headers", "expose_headers"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))

    def validate(self):
        """The checks of PutBucketCors, as OSSError."""
        if not self.allowed_origins or not self.allowed_methods:
            raise _malformed_xml()
        for method in self.allowed_methods:
            if method not in CORS_METHODS:
                raise _invalid_argument(f"Unsupported method {method}.", "AllowedMethod", method)
        for origin in self.allowed_origins:
            if origin.count("*") > 1 or not origin:
                raise _invalid_argument("Each AllowedOrigin can contain at most one wildcard.",
                                        "AllowedOrigin", origin)
        for header in self.allowed_headers:
            if header.count("*") > 1 or not header or _CORS_HEADER_FORBIDDEN & set(header):
                raise _invalid_argument("Invalid AllowedHeader.", "AllowedHeader", header)
        for header in self.expose_headers:
            if not header or (_CORS_HEADER_FORBIDDEN | {"*"}) & set(header):
                raise _invalid_argument("Invalid ExposeHeader.", "ExposeHeader", header)
        if self.max_age_seconds is not None and (
                isinstance(self.max_age_seconds, bool) or not isinstance(self.max_age_seconds, int)
                or self.max_age_seconds < 0):
            raise _invalid_argument("Invalid MaxAgeSeconds.", "MaxAgeSeconds",
                                    str(self.max_age_seconds))

    def allows_origin(self, origin):
        return any(_one_wildcard_match(pattern, origin) for pattern in self.allowed_origins)

    def allows_headers(self, names):
        return all(any(_one_wildcard_match(pattern, name, ignore_case=True)
                       for pattern in self.allowed_headers) for name in names)


@dataclasses.dataclass(frozen=True)
class CorsConfiguration:
    rules: tuple
    response_vary: bool = False

    @classmethod
    def make(cls, rules, response_vary=False):
        config = cls(tuple(rules), bool(response_vary))
        config.validate()
        return config

    def validate(self):
        if not self.rules:
            raise _malformed_xml()
        if len(self.rules) > MAX_CORS_RULES:
            raise _invalid_argument(f"The number of CORS rules exceeds {MAX_CORS_RULES}.",
                                    "CORSRule", str(len(self.rules)))
        for rule in self.rules:
            rule.validate()

    @classmethod
    def parse(cls, body):
        """A PutBucketCors body. Choice: elements the page does not name, text where a
        container belongs, repeated MaxAgeSeconds or ResponseVary, or a MaxAgeSeconds or
        ResponseVary that is no integer or boolean are MalformedXML."""
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            raise _malformed_xml() from None
        if root.tag != "CORSConfiguration" or (root.text or "").strip():
            raise _malformed_xml()
        rules, vary = [], None
        for child in root:
            if child.tag == "ResponseVary" and vary is None and not len(child):
                text = (child.text or "").strip()
                if text not in ("true", "false"):
                    raise _malformed_xml()
                vary = text == "true"
            elif child.tag == "CORSRule" and not (child.text or "").strip():
                rules.append(cls._parse_rule(child))
            else:
                raise _malformed_xml()
        return cls.make(rules, bool(vary))

    @staticmethod
    def _parse_rule(element):
        values = {"AllowedOrigin": [], "AllowedMethod": [], "AllowedHeader": [],
                  "ExposeHeader": [], "MaxAgeSeconds": []}
        for child in element:
            if child.tag not in values or len(child):
                raise _malformed_xml()
            values[child.tag].append((child.text or "").strip())
        max_age = values["MaxAgeSeconds"]
        if len(max_age) > 1 or (max_age and not re.fullmatch(r"[0-9]{1,9}", max_age[0])):
            raise _malformed_xml()
        return CorsRule(values["AllowedOrigin"], values["AllowedMethod"],
                        values["AllowedHeader"], values["ExposeHeader"],
                        int(max_age[0]) if max_age else None)

    def to_xml(self):
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<CORSConfiguration>"]
        for rule in self.rules:
            pairs = ([("AllowedOrigin", v) for v in rule.allowed_origins]
                     + [("AllowedMethod", v) for v in rule.allowed_methods]
                     + [("AllowedHeader", v) for v in rule.allowed_headers]
                     + [("ExposeHeader", v) for v in rule.expose_headers])
            if rule.max_age_seconds is not None:
                pairs.append(("MaxAgeSeconds", rule.max_age_seconds))
            lines += _xml_elements([("CORSRule", pairs)], "  ")
        lines.append(f"  <ResponseVary>{'true' if self.response_vary else 'false'}</ResponseVary>")
        lines.append("</CORSConfiguration>")
        return ("\n".join(lines) + "\n").encode("utf-8")

    def match(self, origin, method, request_headers=()):
        """The first rule allowing ``origin``, ``method`` and every one of ``request_headers``
        (PutBucketCors: "the first matching rule"), else None."""
        for rule in self.rules:
            if rule.allows_origin(origin) and method in rule.allowed_methods \
                    and rule.allows_headers(request_headers):
                return rule
        return None


def seeded_cors_rule(origins):
    """The rule ``cors_origins`` stands for: those origins may GET, HEAD and POST with any
    header, see ETag and x-oss-request-id, and cache a preflight for 600 s."""
    return CorsRule(tuple(origins), ("GET", "HEAD", "POST"), ("*",),
                    ("ETag", "x-oss-request-id"), 600)


# --------------------------------------------------------------------------------------------
# The bucket: credentials, rules and state shared by all connections
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class UploadPlan:
    """Everything decided from the form fields before the file's bytes are read."""

    key: str
    policy: Policy
    callback: "CallbackConfig | None"
    meta: dict                 # x-oss-meta-* fields
    headers: dict              # STORED_HEADERS present in the form
    content_type: str
    status: int                # success_action_status
    forbid_overwrite: bool
    access_key_id: str
    custom_vars: dict          # x:... fields for the callback body


def _header_value(name, value):
    if "\r" in value or "\n" in value:
        raise OSSError("InvalidArgument", f"The value of {name} contains a line break.")
    return value


ACLS = ("private", "public-read", "public-read-write")
BUCKET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
ACCESS_DENIED_ACL = "You have no right to access this object because of bucket acl."


@dataclasses.dataclass
class BucketSpec:
    """A bucket of the emulator: its name, its owner's AccessKey (and STS store), region, ACL,
    CORS rules and the faults it plays.

    ``cors_rules``: a list of CorsRule (an empty list: no CORS configuration); None takes
    ``cors_origins`` instead, which seeds one rule (see seeded_cors_rule) with ResponseVary
    true, or no configuration when empty or None. ``denied_actions``: RAM actions
    ("oss:GetObject", "oss:GetBucketInfo", "oss:GetBucketCors", "oss:PutBucketCors",
    "oss:DeleteBucketCors", "oss:PutObject") refused with 403 AccessDenied, either a set (for
    every key of the owner) or a dict from AccessKey ID ("*": every key) to a set.
    ``head_stall``: seconds HeadObject waits before it answers; ``head_fault``: a 5xx status
    HeadObject answers (bare, as HEAD answers are). ``stalls`` and ``faults`` do the same for
    any operation by name ("HeadObject", "GetObject", "GetBucketInfo", "GetBucketCors",
    "PutBucketCors", "DeleteBucketCors", "PostObject").

    Choice: the ACL defaults to public-read (OSS creates buckets private), so that browsers
    and tests read uploaded objects without a signature as they always could here; with
    "private" every object read must be signed. A PostObject is signed with a key of the
    bucket's own owner, as before; any other key is InvalidAccessKeyId there."""

    name: str
    access_key_id: str = "ak"
    access_key_secret: str = "sk"
    security_token: "str | None" = None
    region: str = "cn-hangzhou"
    cors_origins: "tuple | None" = ("*",)
    cors_rules: "list | None" = None
    cors_response_vary: "bool | None" = None
    acl: str = "public-read"
    credential_store: object = None
    denied_actions: object = None
    head_stall: "float | None" = None
    head_fault: "int | None" = None
    stalls: "dict | None" = None
    faults: "dict | None" = None
    throttle: "int | None" = None
    callback_timeout: float = CALLBACK_TIMEOUT


def _denied_map(denied):
    if not denied:
        return {}
    if isinstance(denied, dict):
        return {key: set(actions) for key, actions in denied.items()}
    return {"*": set(denied)}


def _fault_error(status):
    if status == 503:
        return OSSError("ServiceUnavailable", "Please reduce your request rate.", status=503)
    return OSSError("InternalError", "We encountered an internal error. Please try again.",
                    status=status)


class Bucket:
    def __init__(self, root, spec, clock, key, created=None):
        if not BUCKET_NAME_RE.fullmatch(spec.name) or spec.acl not in ACLS:
            raise ValueError(f"bad bucket name or ACL: {spec.name!r}, {spec.acl!r}")
        self.spec = spec
        self.name = spec.name
        self.access_key_id = spec.access_key_id
        self.access_key_secret = spec.access_key_secret
        self.security_token = spec.security_token
        self.credential_store = spec.credential_store
        self.region = spec.region
        self.acl = spec.acl
        self.throttle = spec.throttle
        self.clock = clock
        self.created = clock() if created is None else created
        self.key = key
        self.public_key_pem = key.public_key_pem()
        self.callback_timeout = spec.callback_timeout
        self.store = ObjectStore(root)
        self.pub_key_url = None               # set once the server knows its port
        self.post_count = 0
        self._active = 0
        self._idle = threading.Condition()
        self.denied_actions = _denied_map(spec.denied_actions)
        self.stalls = dict(spec.stalls or {})
        self.faults = dict(spec.faults or {})
        if spec.head_stall is not None:
            self.stalls["HeadObject"] = spec.head_stall
        if spec.head_fault is not None:
            self.faults["HeadObject"] = spec.head_fault
        if spec.cors_rules is not None:
            vary = bool(spec.cors_response_vary)
            self.cors = CorsConfiguration.make(spec.cors_rules, vary) if spec.cors_rules else None
        elif spec.cors_origins:
            # Choice: the seeded rule comes with ResponseVary true, so that answers vary by
            # Origin as they did before CORS rules were state of their own.
            vary = True if spec.cors_response_vary is None else spec.cors_response_vary
            self.cors = CorsConfiguration.make([seeded_cors_rule(spec.cors_origins)], vary)
        else:
            self.cors = None

    @contextlib.contextmanager
    def tracking_post(self):
        with self._idle:
            self.post_count += 1
            self._active += 1
            self._idle.notify_all()
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout, posts):
        with self._idle:
            return self._idle.wait_for(
                lambda: self.post_count >= posts and self._active == 0, timeout)

    # -- CORS, ACL and RAM-like denials --------------------------------------------------------

    def cors_headers(self, origin, method):
        """The CORS headers of an answer to a request from ``origin`` with ``method``.

        The first rule allowing both decides (PutBucketCors); without one, the answer carries
        no CORS header, as OSS does for a request no rule admits (the browser then hides it).
        Choice: a rule whose AllowedOrigin is exactly "*" answers "*", any other echoes the
        origin. With ResponseVary true, every answer carries "Vary: Origin", and none
        does with ResponseVary false. Error answers get CORS headers as any other."""
        config = self.cors
        headers = {}
        rule = config.match(origin, method) if config and origin else None
        if rule is not None:
            headers["Access-Control-Allow-Origin"] = "*" if "*" in rule.allowed_origins \
                else origin
            headers["Access-Control-Allow-Methods"] = ", ".join(rule.allowed_methods)
            if rule.expose_headers:
                headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
            if rule.max_age_seconds is not None:
                headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
        if config and config.response_vary:
            headers["Vary"] = "Origin"
        return headers

    def denied(self, access_key_id):
        return self.denied_actions.get("*", set()) | self.denied_actions.get(access_key_id, set())

    def authorize(self, principal, action):
        """Refuse ``action`` to ``principal`` (None: anonymous) with 403 AccessDenied.

        Choice: the owner's keys may do everything but their denied actions; anonymous
        requests and keys of another bucket's owner may only read objects of a public-read
        (or public-read-write) bucket, and are refused anything else ("The bucket you access
        does not belong to you." for a signed request). A denied action answers the message
        and detail OSS gives for an explicit deny of a RAM policy (error page 0003-00000201)."""
        if principal is not None and principal.owner is self:
            if action in self.denied(principal.access_key_id):
                raise OSSError("AccessDenied", "Access denied by bucket policy.",
                               ec="0003-00000201", extra=[("AccessDeniedDetail", [
                                   ("NoPermissionType", "ExplicitDeny"),
                                   ("AuthAction", action)])])
            return
        if action == "oss:GetObject" and self.acl in ("public-read", "public-read-write"):
            return
        if principal is None:
            if action == "oss:GetObject":
                raise OSSError("AccessDenied", ACCESS_DENIED_ACL, ec="0003-00000001")
            raise OSSError("AccessDenied", "AccessDenied: Anonymous access is forbidden for "
                                           "this operation.", ec="0003-00000001")
        raise OSSError("AccessDenied", "The bucket you access does not belong to you.",
                       ec="0003-00000001")

    def owns_key(self, access_key_id):
        """(secret, security token) when ``access_key_id`` is this bucket owner's, else None."""
        try:
            return self._credentials(access_key_id)
        except OSSError:
            return None

    # -- GetBucketInfo ---------------------------------------------------------------------------

    def info_xml(self):
        """GetBucketInfo's BucketInfo/Bucket, with the elements its page lists."""
        owner = str(int(hashlib.sha256(self.name.encode()).hexdigest()[:15], 16))
        pairs = [
            ("AccessMonitor", "Disabled"),
            ("CreationDate", _iso8601(self.created)),
            ("ExtranetEndpoint", f"oss-{self.region}.aliyuncs.com"),
            ("IntranetEndpoint", f"oss-{self.region}-internal.aliyuncs.com"),
            ("Location", f"oss-{self.region}"),
            ("StorageClass", "Standard"),
            ("TransferAcceleration", "Disabled"),
            ("CrossRegionReplication", "Disabled"),
            ("Name", self.name),
            ("ResourceGroupId", "rg-default-id"),
            ("Owner", [("DisplayName", owner), ("ID", owner)]),
            ("AccessControlList", [("Grant", self.acl)]),
            ("Comment", ""),
            ("DataRedundancyType", "LRS"),
            ("ServerSideEncryptionRule", [("SSEAlgorithm", "None")]),
            ("BucketPolicy", [("LogBucket", ""), ("LogPrefix", "")]),
        ]
        lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<BucketInfo>"]
        lines += _xml_elements([("Bucket", pairs)], "  ")
        lines.append("</BucketInfo>")
        return ("\n".join(lines) + "\n").encode("utf-8")

    # -- signatures (V1, V4) -----------------------------------------------------------------

    def authenticate(self, fields):
        """Check V1 or V4 credentials and signature; return the signing version."""
        v4 = any(name in fields for name in V4_FIELDS)
        v1 = any(name in fields for name in V1_FIELDS)
        if not (v1 or v4 or "policy" in fields):
            raise OSSError("AccessDenied", "You have no right to access this object because "
                                           "of bucket acl.")
        if v1 and v4:
            raise OSSError("InvalidArgument", "Post request mixes V1 and V4 signature fields.")
        if v4:
            self._authenticate_v4(fields)
            return "v4"
        if not fields.get("ossaccesskeyid"):
            raise OSSError("InvalidArgument", "Post request accessKeyId is empty.")
        if not fields.get("signature"):
            raise OSSError("InvalidArgument", "Post request signature is empty.")
        policy = self._policy_field(fields)
        secret, security_token = self._credentials(fields["ossaccesskeyid"])
        self._check_security_token(fields, security_token)
        if not _same(fields["signature"], sign_v1(secret, policy)):
            raise signature_mismatch()
        return "v1"

    @staticmethod
    def _policy_field(fields):
        if not fields.get("policy"):
            raise OSSError("InvalidArgument", "Post request policy is empty.")
        return fields["policy"]

    def _authenticate_v4(self, fields):
        for name in V4_FIELDS:
            if not fields.get(name):
                raise OSSError("InvalidArgument", f"Post request {name} is empty.")
        policy = self._policy_field(fields)
        if fields["x-oss-signature-version"] != "OSS4-HMAC-SHA256":
            raise OSSError("InvalidArgument", "Invalid x-oss-signature-version: "
                           f"{fields['x-oss-signature-version']}.")
        credential = fields["x-oss-credential"]
        scope = credential.split("/")
        if len(scope) != 5 or not re.fullmatch(r"\d{8}", scope[1]) or not scope[2] \
                or scope[3] != "oss" or scope[4] != "aliyun_v4_request":
            raise OSSError("InvalidArgument", f"Invalid x-oss-credential: {credential}.")
        access_key_id, scope_date, region = scope[:3]
        secret, security_token = self._credentials(access_key_id)
        if region != self.region:
            raise OSSError("InvalidArgument", f"Invalid signing region in x-oss-credential: "
                           f"{region}, expected {self.region}.")
        date = fields["x-oss-date"]
        match = _X_OSS_DATE_RE.fullmatch(date)
        try:
            signed_at = _utc_timestamp(*match.groups())
        except (AttributeError, ValueError):
            raise OSSError("InvalidArgument", f"Invalid x-oss-date: {date}.") from None
        if date[:8] != scope_date:
            raise OSSError("InvalidArgument", "The date of x-oss-date does not match the date "
                                              "in x-oss-credential.")
        # Choice (not documented): the 15 minutes of skew allow an x-oss-date ahead of
        # the emulator's clock; behind it, the 7-day validity window is the only limit.
        now = self.clock()
        if signed_at - now > V4_MAX_SKEW:
            raise OSSError("RequestTimeTooSkewed", "The difference between the request time "
                                                   "and the current time is too large.")
        if now - signed_at > V4_MAX_AGE:
            raise OSSError("AccessDenied", "Request has expired.")
        self._check_security_token(fields, security_token)
        expected = sign_v4(secret, scope_date, region, policy)
        if not _same(fields["x-oss-signature"], expected):
            raise signature_mismatch()

    def _credentials(self, access_key_id):
        """(secret, security token) of ``access_key_id``: the configured key, else a key of
        ``credential_store`` (a tests.cloud_emulators.CredentialStore) that is valid now by
        the store's clock. Spec 2/8: an unknown AK, or an expired or revoked STS AK, is
        InvalidAccessKeyId."""
        if access_key_id == self.access_key_id:
            return self.access_key_secret, self.security_token
        store = self.credential_store
        credential = store.lookup(access_key_id) if store is not None else None
        if credential is None or not store.is_valid(access_key_id):
            raise invalid_access_key_id()
        return credential.access_key_secret, credential.security_token

    @staticmethod
    def _check_security_token(fields, expected):
        """Spec 2/8: a temporary AK without its token is InvalidAccessKeyId (see
        check_security_token)."""
        check_security_token(fields.get("x-oss-security-token"), expected)

    # -- the whole form, before the file's bytes ---------------------------------------------

    def plan_upload(self, fields, file_part):
        version = self.authenticate(fields)
        access_key_id = (fields.get("ossaccesskeyid")
                         or fields.get("x-oss-credential", "").split("/")[0])
        if "oss:PutObject" in self.denied(access_key_id):
            raise OSSError("AccessDenied", "Access denied by bucket policy.", ec="0003-00000201",
                           extra=[("AccessDeniedDetail", [("NoPermissionType", "ExplicitDeny"),
                                                          ("AuthAction", "oss:PutObject")])])
        policy = Policy.parse(fields["policy"])
        if version == "v4":
            required = ["x-oss-signature-version", "x-oss-credential", "x-oss-date"]
            if "x-oss-security-token" in fields:
                required.append("x-oss-security-token")
            for name in required:
                if not policy.pins(name):
                    raise invalid_policy(f"A V4 policy must contain a condition on ${name}.")
        policy.check(fields, self.name, self.clock())

        if not fields.get("key"):
            raise OSSError("InvalidArgument", "Post request key is empty.")
        key = fields["key"].replace("${filename}", file_part.filename or "")
        validate_key(key)

        callback = CallbackConfig.parse(fields["callback"]) if fields.get("callback") else None

        meta = {name: _header_value(name, value) for name, value in fields.items()
                if name.startswith("x-oss-meta-")}
        if sum(len(n) + len(v.encode("utf-8")) for n, v in meta.items()) > MAX_METADATA:
            raise OSSError("MetadataTooLarge", "Your metadata headers exceed the maximum "
                                               "allowed metadata size.")
        headers = {name: _header_value(name, fields[name.lower()]) for name in STORED_HEADERS
                   if name.lower() in fields}
        # PostObject, form element x-oss-content-type: "The content types are prioritized in
        # the following order: x-oss-content-type form field > Content-Type form field > the
        # Content-Type of the file part generated by the browser." This one value is what GET
        # serves as Content-Type and what a callback body gets as ${mimeType}.
        # Choice: a field sent empty counts as not sent (the page does not say), so the next
        # one in that order decides; a policy pinning the field with "in" still refuses "".
        # Choice: with none of them, guess from the key's extension, else
        # application/octet-stream, as the page "Configure the Content-Type header" describes
        # for an upload that gives no type.
        content_type = (fields.get("x-oss-content-type") or fields.get("content-type")
                        or file_part.content_type or mimetypes.guess_type(key)[0]
                        or "application/octet-stream")
        status = fields.get("success_action_status")
        return UploadPlan(
            key=key, policy=policy, callback=callback, meta=meta, headers=headers,
            content_type=_header_value("Content-Type", content_type),
            status=int(status) if status in ("200", "201", "204") else 204,
            forbid_overwrite=fields.get("x-oss-forbid-overwrite", "").lower() == "true",
            access_key_id=access_key_id,
            custom_vars={name: value for name, value in fields.items() if name.startswith("x:")},
        )


def validate_key(key):
    """Spec 2 + issue: no empty key, no leading '/', no '..' segment; plus OSS's 1023-byte
    limit, no control characters (they would end up in headers) and the emulator's prefix."""
    if (not key or key.startswith("/") or ".." in key.split("/")
            or len(key.encode("utf-8")) > MAX_KEY_BYTES
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key)
            or key.startswith(RESERVED_PREFIX)):
        raise OSSError("InvalidObjectName", "The specified object is not valid.")


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

def _new_request_id():
    return secrets.token_hex(12).upper()


MAX_REQUEST_BODY = 64 * 1024       # bodies of calls other than PostObject (PutBucketCors)
RESPONSE_OVERRIDES = {               # GetObject's request parameters -> response headers
    "response-content-type": "Content-Type", "response-content-language": "Content-Language",
    "response-expires": "Expires", "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def _query_pairs(query):
    """((name, value), ...) of a raw query string, percent-decoded ("+" stays "+")."""
    pairs = []
    for item in query.split("&"):
        if item:
            name, _, value = item.partition("=")
            pairs.append((urllib.parse.unquote(name), urllib.parse.unquote(value)))
    return tuple(pairs)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AliyunOSS"
    sys_version = ""
    timeout = 60                    # a stalled uploader counts as disconnected after this

    def parse_request(self):
        self._bucket = None         # one handler serves every request of a connection
        return super().parse_request()

    @property
    def bucket(self):
        """The bucket this request goes to (the first label of its Host header)."""
        if self._bucket is None:
            self._bucket = self.server.service.select(self.headers.get("Host"))
        return self._bucket

    def version_string(self):
        return self.server_version

    def date_time_string(self, timestamp=None):
        """The Date header, from the emulator's clock (skewed if so configured). Choice: the
        skew moves every time the emulator uses (Date, signature and policy checks,
        Last-Modified, a callback's Date) together, as if OSS's own clock were off."""
        return formatdate(self.server.service.now() if timestamp is None else timestamp,
                          usegmt=True)

    def log_message(self, format, *args):
        log.info("%s %s", self.address_string(), format % args)

    # -- responses ---------------------------------------------------------------------------

    def _start(self, status, headers, request_id, length, cors=True):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("x-oss-request-id", request_id)
        origin = self.headers.get("Origin")
        if cors:
            for name, value in self.bucket.cors_headers(origin, self.command).items():
                self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status, payload, headers, request_id, cors=True):
        self._start(status, headers, request_id, len(payload), cors)
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _send_error(self, error, request_id, cors=True):
        """The error as XML, with x-oss-ec when the error has an EC. To a HEAD request a bare
        status (OSS sends no body to HEAD) with Content-Length 0, x-oss-request-id and the
        XML base64-encoded in x-oss-err (where the oss2 SDK reads a HEAD error's details)."""
        headers = {"x-oss-ec": error.ec} if error.ec else {}
        host_id = self.headers.get("Host") or self.server.netloc
        payload = error_xml(error.code, error.message, request_id, host_id, error.ec,
                            error.extra)
        if self.command == "HEAD":
            headers["x-oss-err"] = base64.b64encode(payload).decode("ascii")
            return self._start(error.status, headers, request_id, 0, cors)
        self._send(error.status, payload, {"Content-Type": "application/xml", **headers},
                   request_id, cors)

    # -- the pieces every signed call goes through ------------------------------------------

    def _read_small_body(self):
        """The request body of a call other than PostObject (at most MAX_REQUEST_BODY)."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise OSSError("MissingContentLength", "You must provide the Content-Length HTTP "
                                                   "header.")
        length = self.headers.get("Content-Length", "0") or "0"
        if not re.fullmatch(r"[0-9]+", length):
            self.close_connection = True
            raise _invalid_argument("Invalid Content-Length.", "Content-Length", length)
        if int(length) > MAX_REQUEST_BODY:
            self.close_connection = True
            raise OSSError("EntityTooLarge", "Your proposed upload exceeds the maximum allowed "
                                             "size.")
        try:
            return self.rfile.read(int(length)) if int(length) else b""
        except OSError:
            self.close_connection = True
            raise

    def _signed_request(self, key, body=b""):
        split = urllib.parse.urlsplit(self.path)
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            value = value.strip()
            headers[name] = headers[name] + "," + value if name in headers else value
        return SignedRequest(self.command, self.bucket.name, key, _query_pairs(split.query),
                             headers, hashlib.sha256(body).hexdigest())

    def _authorize(self, operation, action, key="", body=b""):
        """Play the operation's faults, then authenticate and authorize the request; the
        Principal, or None for an anonymous one."""
        bucket, service = self.bucket, self.server.service
        stall = bucket.stalls.get(operation)
        if stall:
            service.stopping.wait(stall)
        fault = bucket.faults.get(operation)
        if fault:
            raise _fault_error(fault)
        principal = authenticate_request(self._signed_request(key, body), bucket,
                                         lambda ak: service.lookup_key(ak, bucket), service.now())
        bucket.authorize(principal, action)
        return principal

    def _object_key(self):
        return urllib.parse.unquote(urllib.parse.urlsplit(self.path).path[1:])

    def _query_names(self):
        return {name for name, _ in _query_pairs(urllib.parse.urlsplit(self.path).query)}

    # -- CORS preflight (PutBucketCors) ------------------------------------------------------

    def do_OPTIONS(self):
        """A preflight is answered from the first rule allowing its Origin, its
        Access-Control-Request-Method and every header of Access-Control-Request-Headers;
        with no such rule 403 AccessForbidden. Choice: a preflight needs no signature and
        ignores the ACL and denied actions (browsers send none)."""
        request_id = _new_request_id()
        origin = self.headers.get("Origin")
        method = self.headers.get("Access-Control-Request-Method", "")
        requested = self.headers.get("Access-Control-Request-Headers", "")
        names = [name.strip() for name in requested.split(",") if name.strip()]
        config = self.bucket.cors
        rule = config.match(origin, method, names) if config and origin and method else None
        if rule is None:
            message = ("CORSResponse: CORS is not enabled for this bucket." if config is None
                       else "CORSResponse: This CORS request is not allowed. This is usually "
                       "because the evalution of Origin, request method / "
                       "Access-Control-Request-Method or Access-Control-Request-Headers are "
                       "not whitelisted by the resource's CORS spec.")
            headers = {"Vary": "Origin"} if config and config.response_vary else {}
            return self._send(403, error_xml("AccessForbidden", message, request_id,
                                             self.headers.get("Host") or self.server.netloc),
                              {"Content-Type": "application/xml", **headers}, request_id,
                              cors=False)
        headers = {"Access-Control-Allow-Origin": "*" if "*" in rule.allowed_origins else origin,
                   "Access-Control-Allow-Methods": ", ".join(rule.allowed_methods)}
        if requested:                          # the requested headers, as they were asked for
            headers["Access-Control-Allow-Headers"] = _header_value("headers", requested)
        if rule.expose_headers:
            headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
        if rule.max_age_seconds is not None:
            headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
        if config.response_vary:
            headers["Vary"] = "Origin"
        self._send(200, b"", headers, request_id, cors=False)

    # -- GetObject, HeadObject, the bucket calls and the callback public key -----------------

    def do_GET(self):
        request_id = _new_request_id()
        path = urllib.parse.urlsplit(self.path).path
        if path == PUB_KEY_PATH:
            return self._send(200, self.bucket.public_key_pem,
                              {"Content-Type": "application/x-pem-file"}, request_id)
        try:
            self._read_small_body()
            if path == "/":
                return self._bucket_get(request_id)
            self._get_object(request_id)
        except OSSError as error:
            log.info("%s %s %s refused: %s", self.command, self.path, request_id, error)
            self._send_error(error, request_id)

    do_HEAD = do_GET

    def _bucket_get(self, request_id):
        names = self._query_names()
        if self.command == "GET" and "bucketInfo" in names:
            self._authorize("GetBucketInfo", "oss:GetBucketInfo")
            return self._send(200, self.bucket.info_xml(), {"Content-Type": "application/xml"},
                              request_id)
        if self.command == "GET" and "cors" in names:
            self._authorize("GetBucketCors", "oss:GetBucketCors")
            config = self.bucket.cors
            if config is None:
                raise OSSError("NoSuchCORSConfiguration", "The CORS configuration does not "
                                                          "exist.", ec="0023-00000001")
            return self._send(200, config.to_xml(), {"Content-Type": "application/xml"},
                              request_id)
        raise OSSError("NotImplemented", "The OSS emulator does not implement ListObjects.")

    def _get_object(self, request_id):
        """GetObject / HeadObject: the object with its metadata, Content-MD5, ETag and
        x-oss-hash-crc64ecma. A missing key is 404 NoSuchKey (bare to HEAD).

        The CRC-64 is computed as an object is stored; an object stored without one (by an
        older emulator) gets it when first served."""
        operation = "HeadObject" if self.command == "HEAD" else "GetObject"
        key = self._object_key()
        principal = self._authorize(operation, "oss:GetObject", key)
        bucket = self.bucket
        opened = bucket.store.open(key) if key and not key.startswith(RESERVED_PREFIX) else None
        if opened is None:
            raise OSSError("NoSuchKey", "The specified key does not exist.", ec="0026-00000001")
        f, meta = opened
        with f:
            crc = meta.get("crc64")
            if crc is None:
                crc = Crc64()
                for block in iter(lambda: f.read(CHUNK), b""):
                    crc.update(block)
                crc = str(crc.value())
                f.seek(0)
                bucket.store.update_meta(key, meta["etag"], {"crc64": crc})
            headers = {"Content-Type": meta["content_type"], "ETag": f'"{meta["etag"]}"',
                       "Last-Modified": formatdate(meta["last_modified"], usegmt=True),
                       "Content-MD5": base64.b64encode(bytes.fromhex(meta["etag"])).decode(),
                       "Accept-Ranges": "bytes", "x-oss-object-type": "Normal",
                       "x-oss-storage-class": "Standard", "x-oss-hash-crc64ecma": crc,
                       **meta["headers"], **meta["meta"]}
            if principal is not None:
                headers.update(self._response_overrides())
            self._start(200, headers, request_id, meta["size"])
            if self.command != "HEAD":
                for block in iter(lambda: f.read(CHUNK), b""):
                    self.wfile.write(block)

    def _response_overrides(self):
        """GetObject's response-* parameters: the response headers they set.

        Choice: honoured on signed requests only (a presigned download link names its
        Content-Disposition this way); an anonymous request's are ignored. A value is sent
        as its UTF-8 bytes."""
        overrides = {}
        for name, value in _query_pairs(urllib.parse.urlsplit(self.path).query):
            header = RESPONSE_OVERRIDES.get(name)
            if header and value:
                overrides[header] = _header_value(name, value).encode("utf-8").decode("latin-1")
        return overrides

    # -- PutBucketCors, DeleteBucketCors -------------------------------------------------------

    def do_PUT(self):
        request_id = _new_request_id()
        try:
            body = self._read_small_body()
            if urllib.parse.urlsplit(self.path).path != "/" or "cors" not in self._query_names():
                raise OSSError("NotImplemented", "The OSS emulator implements no PUT but "
                                                 "PutBucketCors.")
            self._put_bucket_cors(body)
            self._send(200, b"", {}, request_id)
        except OSSError as error:
            log.info("PUT %s %s refused: %s", self.path, request_id, error)
            self._send_error(error, request_id)

    def _put_bucket_cors(self, body):
        """PutBucketCors replaces the whole configuration. Choice: Content-MD5 is optional,
        but checked when sent (InvalidDigest); a body over 16 KB is 400 EntityTooLarge."""
        self._authorize("PutBucketCors", "oss:PutBucketCors", body=body)
        digest = self.headers.get("Content-MD5")
        if digest is not None and not _same(
                digest.strip(), base64.b64encode(hashlib.md5(body).digest()).decode()):
            raise OSSError("InvalidDigest", "The Content-MD5 you specified was invalid.")
        if len(body) > MAX_CORS_BODY:
            raise OSSError("EntityTooLarge", "The CORS configuration exceeds 16 KB.")
        self.bucket.cors = CorsConfiguration.parse(body)

    def do_DELETE(self):
        request_id = _new_request_id()
        try:
            self._read_small_body()
            if urllib.parse.urlsplit(self.path).path != "/" or "cors" not in self._query_names():
                raise OSSError("NotImplemented", "The OSS emulator implements no DELETE but "
                                                 "DeleteBucketCors.")
            self._authorize("DeleteBucketCors", "oss:DeleteBucketCors")
            self.bucket.cors = None
            self._send(204, b"", {}, request_id)
        except OSSError as error:
            log.info("DELETE %s %s refused: %s", self.path, request_id, error)
            self._send_error(error, request_id)

    # -- PostObject (PostObject) -----------------------------------------------------------------

    def do_POST(self):
        request_id = _new_request_id()
        if urllib.parse.urlsplit(self.path).path != "/":
            self.close_connection = True
            return self._send_error(OSSError("MethodNotAllowed", "The specified method is not "
                                             "allowed against this resource."), request_id)
        stall = self.bucket.stalls.get("PostObject")
        if stall:
            self.server.service.stopping.wait(stall)
        fault = self.bucket.faults.get("PostObject")
        if fault:
            self.close_connection = True
            return self._send_error(_fault_error(fault), request_id)
        with self.bucket.tracking_post():
            self._post_object(request_id)

    def _post_object(self, request_id):
        length = self.headers.get("Content-Length", "")
        # Choice: no chunked request bodies; browsers always send a Content-Length for forms.
        if self.headers.get("Transfer-Encoding") or not re.fullmatch(r"[0-9]+", length):
            self.close_connection = True
            return self._send_error(OSSError("MissingContentLength", "You must provide the "
                                             "Content-Length HTTP header."), request_id)
        if int(length) > MAX_OBJECT_SIZE + MAX_PRE_DATA:
            self.close_connection = True
            return self._send_error(OSSError("InvalidArgument",
                                             "Post body size must be less than 5G."), request_id)
        body = BodyReader(self.rfile, int(length), self.bucket.throttle)
        try:
            try:
                status, headers, payload = self._upload(body, request_id)
            except OSSError as error:
                log.info("PostObject %s refused: %s", request_id, error)
                body.drain()       # read the rest so the client gets to see the answer
                return self._send_error(error, request_id)
        except ClientDisconnected as exc:
            log.info("PostObject %s aborted by the client (%s); nothing stored", request_id, exc)
            self.close_connection = True
            return
        self._send(status, payload, headers, request_id)

    def _upload(self, body, request_id):
        bucket = self.bucket
        reader = MultipartReader(body, boundary_from_content_type(self.headers["Content-Type"]))
        fields, file_part = self._read_fields(reader)
        plan = bucket.plan_upload(fields, file_part)
        with bucket.store.staging() as staged:
            md5, size, crc = hashlib.md5(), 0, Crc64()
            limit = plan.policy.max_size()
            for chunk in reader.read_part():
                size += len(chunk)
                if size > limit:
                    plan.policy.check_size(size)
                    raise OSSError("InvalidArgument", "Post body size must be less than 5G.")
                staged.file.write(chunk)
                md5.update(chunk)
                crc.update(chunk)
            self._skip_trailing_parts(reader, request_id)
            body.drain()                       # the epilogue, if any
            plan.policy.check_size(size)
            staged.file.flush()
            image = image_info(staged.path) if plan.callback else None
            etag = md5.hexdigest().upper()
            meta = {"key": plan.key, "size": size, "etag": etag,
                    "content_type": plan.content_type, "last_modified": bucket.clock(),
                    "headers": plan.headers, "meta": plan.meta, "crc64": str(crc.value())}
            bucket.store.commit(staged, plan.key, meta, plan.forbid_overwrite)
        log.info("PostObject %s stored %r (%d bytes, %s)", request_id, plan.key, size,
                 plan.content_type)
        headers = {"ETag": f'"{etag}"'}
        if plan.callback:
            variables = {
                "bucket": bucket.name, "object": plan.key, "etag": etag, "size": str(size),
                "mimeType": plan.content_type,
                "imageInfo.height": str(image[1]) if image else "",
                "imageInfo.width": str(image[0]) if image else "",
                "imageInfo.format": image[2] if image else "",
                "contentMd5": base64.b64encode(md5.digest()).decode("ascii"),
                "vpcId": "", "clientIp": self.client_address[0], "reqId": request_id,
                "operation": "PostObject", **plan.custom_vars,
            }
            variables["crc64"] = meta["crc64"]
            result = deliver_callback(
                plan.callback, plan.callback.render(variables), bucket.key, bucket.pub_key_url,
                {"x-oss-bucket": bucket.name, "x-oss-request-id": request_id,
                 "x-oss-requester": plan.access_key_id,
                 "Date": formatdate(bucket.clock(), usegmt=True)}, bucket.callback_timeout)
            if result.ok:
                return 200, {**headers, "Content-Type": JSON_TYPE}, result.detail
            host_id = self.headers.get("Host") or self.server.netloc
            return 203, {**headers, "Content-Type": "application/xml"}, error_xml(
                "CallbackFailed", result.detail, request_id, host_id, "0007-00000203")
        if plan.status == 201:
            location = f"{self.server.url}/{urllib.parse.quote(plan.key)}"
            payload = ('<?xml version="1.0" encoding="UTF-8"?>\n<PostResponse>\n'
                       f"  <Bucket>{xml_escape(bucket.name)}</Bucket>\n"
                       f"  <Location>{xml_escape(location)}</Location>\n"
                       f"  <Key>{xml_escape(plan.key)}</Key>\n"
                       f"  <ETag>&quot;{etag}&quot;</ETag>\n</PostResponse>\n").encode("utf-8")
            return 201, {**headers, "Content-Type": "application/xml"}, payload
        return plan.status, headers, b""

    @staticmethod
    def _read_fields(reader):
        """Fields up to the file part, by lower-cased name.

        Choice: form field names, and the "$name" of policy conditions, match whatever their
        case. OSS's own pages spell one field several ways: the PostObject request example
        sends "Signature" where the examples of its error pages (0006-00000104, for one)
        send "signature"; "Content-Type" is a PostObject form element, while the policy
        examples of the error pages 0006-00000222 and 0006-00000224 pin "$content-type";
        the page 0006-00000103 lists "Policy, Key, file, OSSAccessKeyId, and
        Content-Disposition" as names to use. None says a spelling is refused. So
        "X-OSS-Content-Type" is the x-oss-content-type field, both for the stored type and
        for a condition on "$x-oss-content-type", and a form carrying two spellings of one
        name is refused like any repeated field (below).
        """
        fields, pre_data = {}, 0
        while True:
            part = reader.next_part()
            if part is None:
                raise OSSError("IncorrectNumberOfFilesInPOSTRequest",
                               "POST requires exactly one file upload per request.")
            name = part.name.lower()
            if name == "file":
                if set(part.header_names) - {"content-disposition", "content-type"}:
                    raise OSSError("InvalidArgument",
                                   "The bucket POST contains unrecognized field name")
                return fields, part
            value = bytearray()
            for chunk in reader.read_part():
                value += chunk
                pre_data += len(chunk)
                if len(value) > MAX_FIELD_VALUE or pre_data > MAX_PRE_DATA:
                    raise OSSError("MaxPOSTPreDataLengthExceededError", "Your POST request "
                                   "fields preceding the upload file were too large.")
            # Choice: a repeated field makes the form ambiguous (which value did the policy
            # check?), so it is refused as malformed.
            if name in fields:
                raise malformed()
            try:
                fields[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise malformed() from None

    @staticmethod
    def _skip_trailing_parts(reader, request_id):
        """Spec open question 7: what OSS does with fields after the file is unconfirmed.

        Choice: they are read and ignored (and logged), except a second file part, which
        makes the upload fail with IncorrectNumberOfFilesInPOSTRequest.
        """
        ignored = []
        while (part := reader.next_part()) is not None:
            if part.name.lower() == "file":
                raise OSSError("IncorrectNumberOfFilesInPOSTRequest",
                               "POST requires exactly one file upload per request.")
            for _ in reader.read_part():
                pass
            ignored.append(part.name)
        if ignored:
            log.warning("PostObject %s: ignoring form fields after the file part: %s",
                        request_id, ", ".join(ignored))


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.info("connection from %s ended early: %s", client_address[0], exc)
        else:
            log.exception("error while serving %s", client_address[0])


class Service:
    """What all buckets of one emulator share: the clock (and its skew), the bucket list."""

    def __init__(self, clock, clock_skew):
        self.clock = clock
        self.clock_skew = clock_skew
        self.default = None
        self.buckets = {}
        self.stopping = threading.Event()

    def add(self, bucket):
        """Add ``bucket``; the first one added is the default bucket."""
        if bucket.name in self.buckets:
            raise ValueError(f"two buckets named {bucket.name!r}")
        self.buckets[bucket.name] = bucket
        self.default = self.default or bucket
        return bucket

    def now(self):
        return self.clock() + self.clock_skew

    def select(self, host):
        """The bucket named by the first label of ``host`` (virtual-hosted style,
        "bucket.127.0.0.1:9000"), else the default bucket."""
        name = (host or "").strip().lower()
        if not name.startswith("["):
            name = name.split(":", 1)[0].split(".", 1)[0]
        return self.buckets.get(name, self.default)

    def lookup_key(self, access_key_id, bucket):
        """(secret, security token, owner bucket) of a key of any bucket's owner, the bucket
        asked first; else InvalidAccessKeyId."""
        for candidate in [bucket] + [b for b in self.buckets.values() if b is not bucket]:
            found = candidate.owns_key(access_key_id)
            if found is not None:
                return found[0], found[1], candidate
        raise invalid_access_key_id()


class PostReply(typing.NamedTuple):
    status: int
    headers: dict
    body: bytes


class EmulatorServer:
    """The emulator as a server in a background thread (see the module docstring).

    The default bucket is described by the keyword arguments, each one as in BucketSpec
    (``bucket`` is its name); ``extra_buckets`` adds BucketSpecs of further buckets, reached
    through the first label of the Host header. ``credential_store`` (a
    ``tests.cloud_emulators.CredentialStore``): its keys are accepted too, each with its own
    secret and security token, while the store holds them valid. ``clock`` is the emulator's
    time source and ``clock_skew`` seconds are added to it (Date headers, signature and policy
    checks)."""

    def __init__(self, root, bucket="examplebucket", access_key_id="ak", access_key_secret="sk",
                 security_token=None, region="cn-hangzhou", cors_origins=("*",), throttle=None,
                 host="127.0.0.1", port=0, clock=time.time, key_path=DEFAULT_KEY_PATH,
                 callback_timeout=CALLBACK_TIMEOUT, credential_store=None, *,
                 acl="public-read", cors_rules=None, cors_response_vary=None,
                 denied_actions=None, head_stall=None, head_fault=None, stalls=None,
                 faults=None, clock_skew=0, extra_buckets=()):
        key = RSAPrivateKey.from_pem(pathlib.Path(key_path).read_bytes())
        self.root = pathlib.Path(root)
        spec = BucketSpec(bucket, access_key_id, access_key_secret, security_token, region,
                          cors_origins, cors_rules, cors_response_vary, acl, credential_store,
                          denied_actions, head_stall, head_fault, stalls, faults, throttle,
                          callback_timeout)
        self.service = Service(clock, clock_skew)
        now = self.service.now()
        self.bucket = self.service.add(Bucket(root, spec, self.service.now, key, created=now))
        for extra in extra_buckets:
            self.service.add(Bucket(self.root / "buckets" / extra.name, extra, self.service.now,
                                    key, created=now))
        self._address = (host, port)
        self._httpd = None
        self._thread = None

    def start(self):
        self._httpd = _HTTPServer(self._address, _Handler)
        host, port = self._httpd.server_address[:2]
        self._httpd.netloc = f"{host}:{port}"
        self._httpd.url = f"http://{host}:{port}"
        self._httpd.service = self.service
        for bucket in self.service.buckets.values():
            bucket.pub_key_url = self.url + PUB_KEY_PATH
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="oss-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.service.stopping.set()           # stalled answers give up at once
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def url(self):
        return self._httpd.url

    @property
    def netloc(self):
        return self._httpd.netloc

    @property
    def pub_key_url(self):
        return self.bucket.pub_key_url

    @property
    def pub_key_url_prefix(self):
        return f"{self.url}/{RESERVED_PREFIX}/"

    @property
    def public_key_pem(self):
        return self.bucket.public_key_pem

    @property
    def post_count(self):
        return self.bucket.post_count

    # -- buckets -------------------------------------------------------------------------------

    def get_bucket(self, name=None):
        """The Bucket named ``name`` (None: the default bucket); KeyError if there is none."""
        return self.bucket if name is None else self.service.buckets[name]

    def host_header(self, bucket=None):
        """The Host header that addresses ``bucket`` (virtual-hosted style:
        "name.127.0.0.1:port"; the plain netloc for the default bucket)."""
        if bucket is None or bucket == self.bucket.name:
            return self.netloc
        self.get_bucket(bucket)
        return f"{bucket}.{self.netloc}"

    @property
    def clock_skew(self):
        return self.service.clock_skew

    @clock_skew.setter
    def clock_skew(self, seconds):
        self.service.clock_skew = seconds

    def now(self):
        """The emulator's time (its clock plus the skew)."""
        return self.service.now()

    @property
    def cors_rules(self):
        """The default bucket's CORS rules (a list of CorsRule; empty: no configuration)."""
        return self.get_cors_rules()

    def get_cors_rules(self, bucket=None):
        config = self.get_bucket(bucket).cors
        return list(config.rules) if config else []

    def get_cors_response_vary(self, bucket=None):
        config = self.get_bucket(bucket).cors
        return config.response_vary if config else None

    def set_cors_rules(self, rules, response_vary=False, bucket=None):
        """Replace the bucket's CORS configuration, as PutBucketCors would; an empty list
        removes it (DeleteBucketCors)."""
        target = self.get_bucket(bucket)
        target.cors = CorsConfiguration.make(rules, response_vary) if rules else None

    def set_denied_actions(self, actions, access_key_id="*", bucket=None):
        """Refuse ``actions`` (a set of RAM actions) to ``access_key_id`` ("*": every key)."""
        self.get_bucket(bucket).denied_actions[access_key_id] = set(actions)

    def set_stall(self, operation, seconds, bucket=None):
        """Make ``operation`` ("HeadObject", ...) wait ``seconds`` before answering (None:
        no stall)."""
        stalls = self.get_bucket(bucket).stalls
        if seconds is None:
            stalls.pop(operation, None)
        else:
            stalls[operation] = seconds

    def set_fault(self, operation, status, bucket=None):
        """Make ``operation`` answer ``status`` (a 5xx; None: answer normally)."""
        faults = self.get_bucket(bucket).faults
        if status is None:
            faults.pop(operation, None)
        else:
            faults[operation] = status

    # -- objects -------------------------------------------------------------------------------

    def object_path(self, key, bucket=None):
        return self.get_bucket(bucket).store.object_path(key)

    def staging_files(self, bucket=None):
        """Temporary files of uploads in progress (empty when nothing is being received)."""
        return self.get_bucket(bucket).store.staging_files()

    def put_object(self, key, data, content_type=None, *, bucket=None, headers=None, meta=None):
        """Store ``data`` under ``key`` directly (no request), as a PutObject would; returns
        its ETag (upper-case hex MD5). ``headers``: stored object headers (Cache-Control,
        Content-Disposition, Content-Encoding, Expires); ``meta``: x-oss-meta-* headers."""
        validate_key(key)
        target = self.get_bucket(bucket)
        data = bytes(data)
        etag = hashlib.md5(data).hexdigest().upper()
        with target.store.staging() as staged:
            staged.file.write(data)
            target.store.commit(staged, key, {
                "key": key, "size": len(data), "etag": etag,
                "content_type": content_type or mimetypes.guess_type(key)[0]
                or "application/octet-stream",
                "last_modified": self.now(), "headers": dict(headers or {}),
                "meta": dict(meta or {}), "crc64": str(crc64_update(0, data))}, False)
        return etag

    def get_object(self, key, bucket=None):
        """The stored bytes of ``key``, or None."""
        opened = self.get_bucket(bucket).store.open(key)
        if opened is None:
            return None
        with opened[0] as f:
            return f.read()

    def post_object(self, key, data=b"", *, bucket=None, content_type="application/octet-stream",
                    callback=None, callback_var=None, fields=(), filename="upload.bin",
                    success_action_status="200", timeout=30):
        """A PostObject to ``bucket`` (None: the default one) over HTTP, signed (V1) with that
        bucket owner's key, as a browser holding a token of that owner would send it; a
        PostReply. ``callback``: a dict (callbackUrl, callbackBody, ...) or its base64 text,
        e.g. to play an attacker's bucket calling back into an app server;
        ``callback_var``: {"x:name": value} fields; ``fields``: more (name, value) pairs."""
        target = self.get_bucket(bucket)
        policy = base64.b64encode(json.dumps({
            "expiration": _iso8601(self.now() + 600),
            "conditions": [["content-length-range", 0, MAX_OBJECT_SIZE]]}).encode()).decode()
        form = [("key", key), ("policy", policy), ("OSSAccessKeyId", target.access_key_id),
                ("Signature", sign_v1(target.access_key_secret, policy)),
                ("success_action_status", success_action_status)]
        if target.security_token:
            form.append(("x-oss-security-token", target.security_token))
        if callback is not None:
            if isinstance(callback, dict):
                callback = base64.b64encode(json.dumps(callback).encode()).decode()
            form.append(("callback", callback))
        form += list((callback_var or {}).items()) + list(fields)
        boundary = "----oss-emulator-" + secrets.token_hex(8)
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode() + b"\r\n" for name, value in form)
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                 f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n').encode()
        body += bytes(data) + f"\r\n--{boundary}--\r\n".encode()
        host, port = self._httpd.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("POST", "/", body, {
                "Host": self.host_header(target.name),
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
            response = conn.getresponse()
            return PostReply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def wait_idle(self, timeout=5.0, posts=0, bucket=None):
        """Wait until at least ``posts`` PostObject requests have arrived and none is still
        being handled; False on timeout. After an aborted upload the client cannot know
        when the emulator has even seen the request, hence ``posts``."""
        return self.get_bucket(bucket).wait_idle(timeout, posts)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.oss_emulator",
                                     description="Local OSS emulator: PostObject + callback, "
                                                 "signed reads, bucket info and CORS.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--root", required=True, help="directory for stored objects")
    parser.add_argument("--bucket", default="examplebucket")
    parser.add_argument("--access-key-id", default="ak")
    parser.add_argument("--access-key-secret", default="sk")
    parser.add_argument("--security-token")
    parser.add_argument("--region", default="cn-hangzhou")
    parser.add_argument("--cors-origin", action="append", dest="cors_origins",
                        help="allowed CORS origin, may repeat (default: *)")
    parser.add_argument("--no-cors", action="store_true",
                        help="start without a CORS configuration (NoSuchCORSConfiguration)")
    parser.add_argument("--acl", choices=ACLS, default="public-read",
                        help="bucket ACL; private needs signed object reads")
    parser.add_argument("--clock-skew", type=float, default=0, metavar="SECONDS",
                        help="seconds added to the emulator's clock (Date headers, checks)")
    parser.add_argument("--deny", action="append", default=[], metavar="ACTION",
                        help="RAM action refused to every key, e.g. oss:GetBucketInfo; may repeat")
    parser.add_argument("--head-stall", type=float, metavar="SECONDS",
                        help="HeadObject waits this long before answering")
    parser.add_argument("--head-fault", type=int, metavar="STATUS",
                        help="HeadObject answers this 5xx status")
    parser.add_argument("--extra-bucket", action="append", default=[],
                        metavar="NAME:ID:SECRET[:REGION]",
                        help="a further bucket with its own key, addressed as NAME.<host>:<port>")
    parser.add_argument("--throttle", type=int, metavar="BYTES_PER_S",
                        help="slow down reading of upload bodies")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    extra = []
    for text in args.extra_bucket:
        parts = text.split(":")
        if len(parts) not in (3, 4) or not all(parts):
            parser.error(f"--extra-bucket {text!r}: expected NAME:ID:SECRET[:REGION]")
        extra.append(BucketSpec(parts[0], parts[1], parts[2],
                                region=parts[3] if len(parts) == 4 else args.region))
    emulator = EmulatorServer(
        root=args.root, bucket=args.bucket, access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret, security_token=args.security_token,
        region=args.region, cors_origins=None if args.no_cors else (args.cors_origins or ("*",)),
        throttle=args.throttle, host=args.host, port=args.port, acl=args.acl,
        clock_skew=args.clock_skew, denied_actions=set(args.deny) or None,
        head_stall=args.head_stall, head_fault=args.head_fault, extra_buckets=extra)
    # A signal may land on any thread, and Python runs handlers only in the main thread once
    # it is back in the interpreter loop: the main thread waits on the wakeup fd, which the
    # C-level handler writes in whichever thread received the signal. The handler itself only
    # records the signal (an Event.set() there could deadlock on the Event's own lock).
    stopped = []
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: stopped.append(signum))
    try:
        emulator.start()
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc.strerror)
        return 1
    log.info("OSS emulator for bucket %s listening on %s (objects in %s); callback public key "
             "at %s", args.bucket, emulator.url, args.root, emulator.pub_key_url)
    while not stopped:
        select.select([reader], [], [], 1.0)
        try:
            reader.recv(64)
        except OSError:  # the timeout ran out: nothing was written
            pass
    emulator.stop()
    log.info("OSS emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
