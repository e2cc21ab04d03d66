#!/usr/bin/env python3
"""Generate tests/data/oss_signer_vectors.json with the official OSS Python SDK (oss2).

TEST-ONLY GENERATOR: not run by CI or `make test`, and not imported by any test. It needs
oss2 (which appserver.py never uses), installed in a throwaway venv outside the repository:

    python3 -m venv /tmp/oss2venv
    /tmp/oss2venv/bin/pip install oss2==2.19.1
    /tmp/oss2venv/bin/python tests/data/make_oss_signer_vectors.py > tests/data/oss_signer_vectors.json

No request reaches the network: `Session.do_request` is replaced by a function that records the
signed request and raises. The clock is fixed (time.time and oss2.auth's datetime.utcnow), so
the output is byte-for-byte reproducible. The StringToSign / CanonicalRequest are captured by
wrapping oss2.auth's own private helpers (see auth.py), and every captured StringToSign is
re-checked here against the signature oss2 put in the request, so the capture itself is sound.
See oss_signer_vectors.md.
"""

import base64
import datetime as _dt
import hashlib
import hmac
import json
import sys
import time

import oss2
import oss2.auth
import oss2.credentials
import oss2.http
import oss2.utils
import requests

ENDPOINT = 'https://oss-cn-hangzhou.aliyuncs.com'
REGION = 'cn-hangzhou'
BUCKET = 'examplebucket'
AK_ID = 'LTAI5tExampleAccessKeyId'
AK_SECRET = 'ExampleAccessKeySecret0123456789abcdef'
STS_TOKEN = 'CAIS.example-sts-token/+='
NOW = 1764000000  # 2025-11-24T16:00:00Z, a Monday

# ---- fixed clock -------------------------------------------------------------------------
time.time = lambda: float(NOW)  # used by email.utils.formatdate (V1 Date) and by _sign_url


class _FixedDatetime(_dt.datetime):
    @classmethod
    def utcnow(cls):
        return _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=NOW)


oss2.auth.datetime = _FixedDatetime  # V4 takes x-oss-date from datetime.utcnow()

# ---- capture what oss2 signs -------------------------------------------------------------
_captured = {}


def _wrap(cls, attr, slot):
    orig = getattr(cls, attr)

    def wrapper(*args, **kwargs):
        out = orig(*args, **kwargs)
        _captured[slot] = out.decode('utf-8') if isinstance(out, bytes) else out
        return out

    setattr(cls, attr, wrapper)


_wrap(oss2.auth.ProviderAuth, '_ProviderAuth__get_bytes_to_sign', 'string_to_sign_v1')
_wrap(oss2.auth.ProviderAuthV4, '_ProviderAuthV4__get_canonical_request_bytes', 'canonical_request')
_wrap(oss2.auth.ProviderAuthV4, '_ProviderAuthV4__get_string_to_sign_bytes', 'string_to_sign_v4')


class _Captured(Exception):
    pass


_last_request = {}


def _no_network(self, req, timeout):
    _last_request['req'] = req
    raise _Captured()


oss2.http.Session.do_request = _no_network


# ---- independent re-check of the captured strings against oss2's own signature -------------
def _v1_sig(sts):
    return base64.b64encode(hmac.new(AK_SECRET.encode(), sts.encode('utf-8'), hashlib.sha1).digest()).decode()


def _v4_sig(sts):
    date = sts.split('\n')[1][:8]
    k = hmac.new(('aliyun_v4' + AK_SECRET).encode(), date.encode(), hashlib.sha256).digest()
    for part in (REGION, 'oss', 'aliyun_v4_request'):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return hmac.new(k, sts.encode('utf-8'), hashlib.sha256).hexdigest()


def make_bucket(version, sts, provider=False):
    av = oss2.AUTH_VERSION_4 if version == 'v4' else oss2.AUTH_VERSION_1
    if provider:
        # StsAuth does not pass `in_additional_headers` on (TypeError), so the AdditionalHeaders
        # vectors use the provider-based class, which StsAuth wraps, directly.
        creds = oss2.credentials.StaticCredentialsProvider(AK_ID, AK_SECRET, STS_TOKEN if sts else None)
        cls = oss2.auth.ProviderAuthV4 if version == 'v4' else oss2.auth.ProviderAuth
        auth = cls(creds)
    elif sts:
        auth = oss2.StsAuth(AK_ID, AK_SECRET, STS_TOKEN, auth_version=av)
    elif version == 'v4':
        auth = oss2.AuthV4(AK_ID, AK_SECRET)
    else:
        auth = oss2.Auth(AK_ID, AK_SECRET)
    return oss2.Bucket(auth, ENDPOINT, BUCKET, region=REGION)


# Headers oss2 puts on every request that are neither signed nor part of the signer's job.
_UNSIGNED_TRANSPORT = {'user-agent', 'accept-encoding', 'content-length'}


def run_header(name, version, sts, method, key, call, headers_in=None, subresource=None,
               body=None, additional_headers=None):
    _captured.clear()
    _last_request.clear()
    bucket = make_bucket(version, sts, provider=additional_headers is not None)
    try:
        call(bucket)
    except _Captured:
        pass
    req = _last_request['req']
    assert req.method == method, (name, req.method)
    expected = {}
    for k, v in req.headers.items():
        if v is None or k.lower() in _UNSIGNED_TRANSPORT:
            continue
        expected[k] = v
    # the URL requests would put on the wire (prepared, never sent)
    url = requests.Request(req.method, req.url, params=req.params).prepare().url
    auth = req.headers['authorization']
    entry = {
        'name': name, 'version': version, 'method': method, 'key': key,
        'subresource': subresource or {}, 'headers_in': headers_in or {}, 'sts': sts,
    }
    if additional_headers is not None:
        entry['additional_headers'] = additional_headers
    if body is not None:
        entry['body'] = body
    entry['url'] = url
    entry['expected_headers'] = expected
    if version == 'v1':
        sts_str = _captured['string_to_sign_v1']
        assert auth == 'OSS %s:%s' % (AK_ID, _v1_sig(sts_str)), name
        entry['string_to_sign'] = sts_str
    else:
        sts_str = _captured['string_to_sign_v4']
        cr = _captured['canonical_request']
        assert sts_str.endswith(hashlib.sha256(cr.encode('utf-8')).hexdigest()), name
        assert ('Signature=%s' % _v4_sig(sts_str)) in auth, name
        entry['string_to_sign'] = sts_str
        entry['canonical_request'] = cr
    return entry


def run_presign(name, version, sts, method, key, expires, slash_safe=False, headers=None,
                additional_headers=None):
    _captured.clear()
    bucket = make_bucket(version, sts, provider=additional_headers is not None)
    kwargs = {}
    if headers is not None:
        kwargs['headers'] = dict(headers)
    if additional_headers is not None:
        kwargs['additional_headers'] = list(additional_headers)
    url = bucket.sign_url(method, key, expires, slash_safe=slash_safe, **kwargs)
    entry = {'name': name, 'version': version, 'method': method, 'key': key,
             'expires': expires, 'sts': sts, 'slash_safe': slash_safe}
    if headers is not None:
        entry['headers_in'] = headers
    if additional_headers is not None:
        entry['additional_headers'] = additional_headers
    entry['expected_url'] = url
    query = dict(p.split('=', 1) for p in url.split('?', 1)[1].split('&'))
    if version == 'v1':
        sts_str = _captured['string_to_sign_v1']
        assert requests.utils.unquote(query['Signature']) == _v1_sig(sts_str), name
        entry['string_to_sign'] = sts_str
    else:
        sts_str = _captured['string_to_sign_v4']
        cr = _captured['canonical_request']
        assert sts_str.endswith(hashlib.sha256(cr.encode('utf-8')).hexdigest()), name
        assert query['x-oss-signature'] == _v4_sig(sts_str), name
        entry['string_to_sign'] = sts_str
        entry['canonical_request'] = cr
    return entry


# ---- the requests ------------------------------------------------------------------------
KEY_SPACE_PLUS = 'uploads/photo 1+2.jpg'
KEY_UNICODE = 'f\u00fcr/\u4e2d\u6587/\u00fcber \u6587.txt'   # 'für/中文/über 文.txt'
KEY_SPECIALS = 'a/b/c/~tilde*star%25percent.txt'   # '%25' is literal: a '%' that must not be decoded
KEY_PLAIN = 'plain.txt'

CORS_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n<CORSConfiguration><CORSRule>'
            '<AllowedOrigin>https://app.example.com</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>'
            '<AllowedMethod>POST</AllowedMethod><AllowedHeader>*</AllowedHeader>'
            '<ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>600</MaxAgeSeconds>'
            '</CORSRule></CORSConfiguration>')
CORS_MD5 = oss2.utils.content_md5(CORS_XML.encode('utf-8'))


def header_cases():
    """(name, method, key, call, headers_in, subresource, body) independent of version/sts."""
    cors_headers = {'Content-Type': 'application/xml', 'Content-MD5': CORS_MD5}
    return [
        ('head_object_plain', 'HEAD', KEY_PLAIN,
         lambda b: b.head_object(KEY_PLAIN), None, None, None),
        ('head_object_space_plus', 'HEAD', KEY_SPACE_PLUS,
         lambda b: b.head_object(KEY_SPACE_PLUS), None, None, None),
        ('head_object_unicode_nested', 'HEAD', KEY_UNICODE,
         lambda b: b.head_object(KEY_UNICODE), None, None, None),
        ('get_object_tilde_star_percent', 'GET', KEY_SPECIALS,
         lambda b: b.get_object(KEY_SPECIALS), None, None, None),
        ('get_object_unicode_nested', 'GET', KEY_UNICODE,
         lambda b: b.get_object(KEY_UNICODE), None, None, None),
        ('get_bucket_info', 'GET', '',
         lambda b: b.get_bucket_info(), None, {'bucketInfo': None}, None),
        ('get_bucket_cors', 'GET', '',
         lambda b: b.get_bucket_cors(), None, {'cors': None}, None),
        # oss2's own put_bucket_cors sets neither Content-Type nor Content-MD5
        ('put_bucket_cors_oss2_native', 'PUT', '',
         lambda b: b.put_bucket_cors(CORS_XML), None, {'cors': None}, CORS_XML),
        # the same request with the two headers a browser-facing signer / ali-oss would set
        ('put_bucket_cors_xml_md5', 'PUT', '',
         lambda b: b._do('PUT', BUCKET, '', data=CORS_XML.encode('utf-8'), params={'cors': ''},
                         headers=dict(cors_headers)),
         cors_headers, {'cors': None}, CORS_XML),
    ]


def main():
    header, presigned = [], []
    for version in ('v1', 'v4'):
        for sts in (False, True):
            sfx = '_%s%s' % (version, '_sts' if sts else '')
            for name, method, key, call, hin, sub, body in header_cases():
                header.append(run_header(name + sfx, version, sts, method, key, call,
                                         headers_in=hin, subresource=sub, body=body))
    # V4 AdditionalHeaders: Bucket methods never pass any; call the auth directly the way
    # Bucket._do does, but with in_additional_headers (Host given explicitly, see the note).
    for sts in (False, True):
        def call(b, sts=sts):
            host = BUCKET + '.oss-cn-hangzhou.aliyuncs.com'
            req = oss2.http.Request('GET', b._make_url(BUCKET, KEY_SPACE_PLUS),
                                    headers={'Host': host}, region=REGION, product='oss')
            b.auth._sign_request(req, BUCKET, KEY_SPACE_PLUS, in_additional_headers=['host'])
            b.session.do_request(req, timeout=1)
        header.append(run_header('get_object_additional_host_v4' + ('_sts' if sts else ''), 'v4',
                                 sts, 'GET', KEY_SPACE_PLUS, call,
                                 headers_in={'Host': BUCKET + '.oss-cn-hangzhou.aliyuncs.com'},
                                 additional_headers=['host']))

    for version in ('v1', 'v4'):
        for sts in (False, True):
            sfx = '_%s%s' % (version, '_sts' if sts else '')
            presigned += [
                run_presign('get_plain' + sfx, version, sts, 'GET', KEY_PLAIN, 3600),
                run_presign('get_space_plus' + sfx, version, sts, 'GET', KEY_SPACE_PLUS, 900),
                run_presign('get_unicode_nested' + sfx, version, sts, 'GET', KEY_UNICODE, 3600),
                run_presign('get_unicode_nested_slash_safe' + sfx, version, sts, 'GET', KEY_UNICODE,
                            3600, slash_safe=True),
                run_presign('get_tilde_star_percent' + sfx, version, sts, 'GET', KEY_SPECIALS, 60),
                run_presign('head_unicode_nested' + sfx, version, sts, 'HEAD', KEY_UNICODE, 300),
            ]
    for sts in (False, True):
        sfx = '_v4' + ('_sts' if sts else '')
        presigned.append(run_presign(
            'get_additional_host' + sfx, 'v4', sts, 'GET', KEY_SPACE_PLUS, 3600,
            headers={'Host': BUCKET + '.oss-cn-hangzhou.aliyuncs.com'}, additional_headers=['host']))

    names = [e['name'] for e in header + presigned]
    assert len(names) == len(set(names))
    out = {
        'source': 'oss2 %s' % oss2.__version__,
        'python': '%d.%d.%d' % sys.version_info[:3],
        'endpoint': ENDPOINT, 'region': REGION, 'bucket': BUCKET,
        'access_key_id': AK_ID, 'access_key_secret': AK_SECRET, 'security_token': STS_TOKEN,
        'time': NOW,
        'header': header,
        'presigned': presigned,
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()
