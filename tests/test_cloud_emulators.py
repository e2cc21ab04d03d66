"""The credential-service emulators do what the documentation says (tests/cloud_emulators.py).

The STS emulator's verifier is checked against signatures made by independent
implementations (tests/data/sts_vectors.json, see sts_vectors.md), not against itself.
"""

import http.client
import json
import pathlib
import socket
import time
import unittest
import urllib.parse

from tests.cloud_emulators import (
    FAULTS, HUGE_BODY_BYTES, CredentialStore, CredentialsUriEmulator, EcsMetadataEmulator,
    StsEmulator, canonicalized_query, format_expiration, parse_expiration, percent_encode,
    rpc_signature, sign_rpc_request, string_to_sign)

DATA = pathlib.Path(__file__).resolve().parent / "data"
VECTOR_FILE = json.loads((DATA / "sts_vectors.json").read_text(encoding="utf-8"))
VECTORS = VECTOR_FILE["vectors"]
DOCUMENTED = VECTOR_FILE["documented_examples"]
ROLE_ARN = "acs:ram::1234567890123456:role/oss-upload"
PROVIDER_ARN = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-test"
ERROR_KEYS = {"RequestId", "HostId", "Code", "Message"}
TOKEN_PATH = "/latest/api/token"
CREDS = "/latest/meta-data/ram/security-credentials/"


class FakeClock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(emulator, method, target, body=None, headers=None, timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        conn.close()


def rpc(emulator, params, method="GET", timeout=5.0):
    """Send RPC parameters the way an SDK would: in the query (GET) or a form body (POST)."""
    encoded = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    if method == "GET":
        return call(emulator, "GET", "/?" + encoded, timeout=timeout)
    return call(emulator, "POST", "/", encoded.encode(),
                {"Content-Type": "application/x-www-form-urlencoded"}, timeout=timeout)


def vector_clock(vector, offset=30):
    return FakeClock(parse_expiration(vector["params"]["Timestamp"]) + offset)


def vector_keys(vector):
    params = vector["params"]
    secret = vector["access_key_secret"]
    token = params.get("SecurityToken")
    return {params["AccessKeyId"]: (secret, token) if token else secret}


def signed(vector, **changes):
    params = dict(vector["params"], **changes)
    params["Signature"] = vector["signature"]
    return params


class Emulated(unittest.TestCase):
    def serve(self, emulator):
        emulator.start()
        self.addCleanup(emulator.stop)
        return emulator

    def assertError(self, answer, status, code):
        self.assertEqual(answer.status, status, answer.body[:300])
        document = answer.json()
        self.assertEqual(set(document), ERROR_KEYS)
        self.assertEqual(document["Code"], code)
        self.assertEqual(document["HostId"], "sts.aliyuncs.com")
        return document


# ------------------------------------------------------------------------------------------
# Signature vectors
# ------------------------------------------------------------------------------------------

class SignatureVectors(unittest.TestCase):
    def test_the_vectors_cover_what_the_issue_asks(self):
        self.assertGreaterEqual(len(VECTORS), 3)
        policies = [v["params"].get("Policy", "") for v in VECTORS]
        self.assertTrue(any(" " in p and "*" in p for p in policies))
        self.assertTrue(any("~" in v["params"]["RoleSessionName"] for v in VECTORS))
        self.assertEqual({v["method"] for v in VECTORS}, {"GET", "POST"})
        for vector in VECTORS:
            self.assertEqual(vector["params"]["Action"], "AssumeRole")
            self.assertEqual(vector["params"]["Version"], "2015-04-01")
            self.assertNotIn("Signature", vector["params"])

    def test_own_canonicalization_agrees_with_the_independent_signers(self):
        for vector in VECTORS:
            with self.subTest(vector["name"]):
                params, method = vector["params"], vector["method"]
                self.assertEqual(canonicalized_query(params), vector["canonicalized_query"])
                self.assertEqual(string_to_sign(method, params), vector["string_to_sign"])
                self.assertEqual(rpc_signature(vector["access_key_secret"], method, params),
                                 vector["signature"])

    def test_the_documented_worked_example(self):
        """The "Signature mechanism" page's own example (DescribeRegions, testid/testsecret)."""
        example, = DOCUMENTED
        self.assertEqual(example["signature"], "CT9X0VtwR86fNWSnsc6v8YGOjuE=")
        params = example["params"]
        self.assertEqual(canonicalized_query(params), example["canonicalized_query"])
        self.assertEqual(string_to_sign("GET", params), example["string_to_sign"])
        self.assertEqual(rpc_signature("testsecret", "GET", params), example["signature"])

    def test_percent_encoding_rules(self):
        self.assertEqual(percent_encode("a b*c~d+e/f=g"), "a%20b%2Ac~d%2Be%2Ff%3Dg")
        self.assertEqual(percent_encode("-_.~AZaz09"), "-_.~AZaz09")
        self.assertEqual(percent_encode("\u7167"), "%E7%85%A7")
        self.assertEqual(percent_encode("é\n"), "%C3%A9%0A")

    def test_the_quote_plus_style_signature_is_refused_where_it_differs(self):
        """credentials-python 1.0.12 encodes a space as '+'; the documented rule is %20."""
        differing = [v for v in VECTORS if not v["alibabacloud_credentials_1_0_12"]["agrees"]]
        self.assertTrue(differing)
        for vector in differing:
            other = vector["alibabacloud_credentials_1_0_12"]
            self.assertIn("%2B", other["string_to_sign"])
            self.assertNotEqual(other["signature"], vector["signature"])
            self.assertNotEqual(rpc_signature(vector["access_key_secret"], vector["method"],
                                              vector["params"]), other["signature"])


# ------------------------------------------------------------------------------------------
# STS AssumeRole over HTTP
# ------------------------------------------------------------------------------------------

class AssumeRole(Emulated):
    def sts(self, vector, offset=30, **kwargs):
        kwargs.setdefault("access_keys", vector_keys(vector))
        return self.serve(StsEmulator(clock=vector_clock(vector, offset), **kwargs))

    def test_every_vector_is_accepted_by_the_verifier(self):
        for vector in VECTORS:
            with self.subTest(vector["name"]):
                sts = self.sts(vector)
                answer = rpc(sts, signed(vector), vector["method"])
                if vector["emulator_outcome"] == "accepted":
                    self.assertEqual(answer.status, 200, answer.body)
                    document = answer.json()
                    self.assertEqual(set(document),
                                     {"RequestId", "AssumedRoleUser", "Credentials"})
                    creds = document["Credentials"]
                    self.assertEqual(set(creds), {"AccessKeyId", "AccessKeySecret",
                                                  "SecurityToken", "Expiration"})
                    self.assertTrue(creds["AccessKeyId"].startswith("STS."))
                    call_ = sts.last_call
                    self.assertEqual(call_.action, "AssumeRole")
                    policy = vector["params"].get("Policy")
                    self.assertEqual(call_.policy, json.loads(policy) if policy else None)
                    self.assertEqual(call_.credential.access_key_id, creds["AccessKeyId"])
                else:   # the signature was good: the refusal is about the parameter
                    self.assertError(answer, 400, vector["emulator_outcome"])
                    self.assertEqual(sts.calls, [])

    def test_tampered_vectors_are_refused(self):
        for vector in VECTORS:
            for name in vector["params"]:
                if name in ("SignatureMethod", "SignatureVersion", "Timestamp", "AccessKeyId",
                            "Version", "Format", "Action", "SecurityToken"):
                    continue   # those fail earlier checks, with their own codes
                with self.subTest(vector=vector["name"], param=name):
                    sts = self.sts(vector)
                    value = vector["params"][name]
                    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
                    answer = rpc(sts, signed(vector, **{name: tampered}), vector["method"])
                    self.assertError(answer, 400, "SignatureDoesNotMatch")
                    self.assertEqual(sts.calls, [])

    def test_wrong_signature_method_or_secret(self):
        vector = VECTORS[1]
        sts = self.sts(vector)
        other = "POST" if vector["method"] == "GET" else "GET"
        self.assertError(rpc(sts, signed(vector), other), 400, "SignatureDoesNotMatch")
        params = sign_rpc_request(vector["params"], vector["access_key_secret"] + "x",
                                  vector["method"])
        document = self.assertError(rpc(sts, params, vector["method"]), 400,
                                    "SignatureDoesNotMatch")
        self.assertIn("server string to sign is:" + vector["string_to_sign"],
                      document["Message"])
        bad = signed(vector)
        bad["Signature"] = bad["Signature"][:-2] + "A="
        self.assertError(rpc(sts, bad, vector["method"]), 400, "SignatureDoesNotMatch")

    def test_a_reused_nonce_is_refused(self):
        vector = VECTORS[0]
        sts = self.sts(vector)
        self.assertEqual(rpc(sts, signed(vector)).status, 200)
        self.assertError(rpc(sts, signed(vector)), 400, "SignatureNonceUsed")
        self.assertEqual(len(sts.calls), 1)

    def test_timestamp_within_15_minutes(self):
        vector = VECTORS[0]
        for offset, ok in ((900, True), (-900, True), (901, False), (-901, False),
                           (3600, False)):
            with self.subTest(offset=offset):
                sts = self.sts(vector, offset=offset)
                answer = rpc(sts, signed(vector))
                if ok:
                    self.assertEqual(answer.status, 200, answer.body)
                else:
                    self.assertError(answer, 400, "InvalidTimeStamp.Expired")

    def test_malformed_timestamp(self):
        vector = VECTORS[0]
        sts = self.sts(vector)
        params = dict(vector["params"], Timestamp="2026-12-03 10:00:00")
        self.assertError(rpc(sts, sign_rpc_request(params, "testsecret")), 400,
                         "InvalidTimeStamp.Format")

    def test_unknown_access_key(self):
        vector = VECTORS[0]
        sts = self.sts(vector, access_keys={"someone-else": "testsecret"})
        self.assertError(rpc(sts, signed(vector)), 404, "InvalidAccessKeyId.NotFound")

    def test_sts_caller_needs_its_security_token(self):
        vector = next(v for v in VECTORS if "SecurityToken" in v["params"])
        sts = self.sts(vector)
        params = {k: v for k, v in vector["params"].items() if k != "SecurityToken"}
        self.assertError(rpc(sts, sign_rpc_request(params, vector["access_key_secret"])),
                         400, "MissingSecurityToken")

    def fresh(self, sts, **changes):
        params = {
            "Format": "JSON", "Version": "2015-04-01", "AccessKeyId": "ak",
            "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
            "SignatureNonce": "nonce-%f-%s" % (time.monotonic(), id(changes)),
            "Timestamp": format_expiration(sts.clock()), "Action": "AssumeRole",
            "RoleArn": ROLE_ARN, "RoleSessionName": "oss-app-server"}
        params.update(changes)
        params = {k: v for k, v in params.items() if v is not None}
        return rpc(sts, sign_rpc_request(params, "sk"))

    def test_parameter_checks(self):
        sts = self.serve(StsEmulator(access_keys={"ak": "sk"}, role_arns=[ROLE_ARN]))
        cases = [
            (dict(Version="2014-05-26"), 400, "InvalidVersion"),
            (dict(Format="XML"), 400, "InvalidParameter.Format"),
            (dict(Action="GetCallerIdentity"), 404, "InvalidAction.NotFound"),
            (dict(SignatureMethod="HMAC-SHA256"), 400, "IncompleteSignature"),
            (dict(RoleArn=None), 400, "MissingRoleArn"),
            (dict(RoleArn="acs:ram::1234567890123456:role/other"), 403, "NoPermission"),
            (dict(RoleArn="arn:aws:iam::1:role/x"), 400, "InvalidParameter.RoleArn"),
            (dict(RoleSessionName=None), 400, "MissingRoleSessionName"),
            (dict(RoleSessionName="a"), 400, "InvalidParameter.RoleSessionName"),
            (dict(RoleSessionName="x" * 65), 400, "InvalidParameter.RoleSessionName"),
            (dict(RoleSessionName="has space"), 400, "InvalidParameter.RoleSessionName"),
            (dict(DurationSeconds="899"), 400, "InvalidParameter.DurationSeconds"),
            (dict(DurationSeconds="43201"), 400, "InvalidParameter.DurationSeconds"),
            (dict(DurationSeconds="1e3"), 400, "InvalidParameter.DurationSeconds"),
            (dict(Policy="{not json"), 400, "InvalidParameter.PolicyGrammar"),
            (dict(Policy="[]"), 400, "InvalidParameter.PolicyGrammar"),
            (dict(Policy='{"Version":"1","Statement":[]}' + " " * 2048), 400,
             "InvalidParameter.PolicyGrammar"),
        ]
        for changes, status, code in cases:
            with self.subTest(changes=changes):
                self.assertError(self.fresh(sts, **changes), status, code)
        self.assertEqual(sts.calls, [])
        for duration in ("900", "43200"):
            self.assertEqual(self.fresh(sts, DurationSeconds=duration).status, 200)

    def test_duration_and_short_lifetime(self):
        clock = FakeClock()
        store = CredentialStore(clock)
        sts = self.serve(StsEmulator(store=store))
        answer = self.fresh(sts, DurationSeconds="1800")
        expiration = answer.json()["Credentials"]["Expiration"]
        self.assertEqual(parse_expiration(expiration), int(clock.now) + 1800)
        short = self.serve(StsEmulator(store=store, lifetime=5))
        creds = self.fresh(short).json()["Credentials"]
        self.assertEqual(parse_expiration(creds["Expiration"]), int(clock.now) + 5)
        self.assertIn(creds["AccessKeyId"], [t[0] for t in store.valid()])
        clock.advance(6)
        self.assertNotIn(creds["AccessKeyId"], [t[0] for t in store.valid()])
        self.assertEqual(len(store.valid()), 1)

    def test_post_form_body_and_query_together(self):
        sts = self.serve(StsEmulator())
        params = sign_rpc_request({
            "Format": "JSON", "Version": "2015-04-01", "AccessKeyId": "ak",
            "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
            "SignatureNonce": "split-1", "Timestamp": format_expiration(time.time()),
            "Action": "AssumeRole", "RoleArn": ROLE_ARN, "RoleSessionName": "split",
            "Policy": '{"Version": "1", "Statement": []}'}, "sk", "POST")
        query = {k: v for k, v in params.items() if k in ("Action", "Version", "Format")}
        form = {k: v for k, v in params.items() if k not in query}
        answer = call(sts, "POST", "/?" + urllib.parse.urlencode(query),
                      urllib.parse.urlencode(form).encode(),   # spaces as '+': form rules
                      {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(sts.last_call.policy, {"Version": "1", "Statement": []})
        repeated = call(sts, "GET", "/?Action=AssumeRole&Action=AssumeRole")
        self.assertError(repeated, 400, "InvalidParameter")


# ------------------------------------------------------------------------------------------
# STS AssumeRoleWithOIDC
# ------------------------------------------------------------------------------------------

def oidc_params(token, **changes):
    params = {"Action": "AssumeRoleWithOIDC", "Format": "JSON", "Version": "2015-04-01",
              "RoleArn": ROLE_ARN, "OIDCProviderArn": PROVIDER_ARN, "OIDCToken": token,
              "RoleSessionName": "ack-pod", "DurationSeconds": "3600",
              "Timestamp": format_expiration(time.time())}
    params.update(changes)
    return {k: v for k, v in params.items() if v is not None}


class AssumeRoleWithOIDC(Emulated):
    def test_anonymous_success_records_the_policy(self):
        sts = self.serve(StsEmulator(oidc_token="eyJ.token.one", lifetime=60))
        policy = '{"Version": "1", "Statement": [{"Effect": "Allow", "Action": "oss:*"}]}'
        answer = rpc(sts, oidc_params("eyJ.token.one", Policy=policy), "POST")
        self.assertEqual(answer.status, 200, answer.body)
        document = answer.json()
        self.assertEqual(set(document), {"RequestId", "AssumedRoleUser", "Credentials",
                                         "OIDCTokenInfo"})
        self.assertEqual(sts.last_call.action, "AssumeRoleWithOIDC")
        self.assertEqual(sts.last_call.policy, json.loads(policy))
        self.assertEqual(sts.last_call.params["OIDCToken"], "eyJ.token.one")

    def test_the_token_can_be_rotated(self):
        sts = self.serve(StsEmulator(oidc_token="eyJ.token.one"))
        self.assertEqual(rpc(sts, oidc_params("eyJ.token.one")).status, 200)
        sts.oidc_token = "eyJ.token.two"
        self.assertError(rpc(sts, oidc_params("eyJ.token.one")), 401,
                         "AuthenticationFail.OIDCToken.InvalidSignature")
        self.assertEqual(rpc(sts, oidc_params("eyJ.token.two")).status, 200)

    def test_refusals(self):
        sts = self.serve(StsEmulator(oidc_token="eyJ.token.one"))
        cases = [
            (oidc_params("eyJ.token.one", OIDCProviderArn="acs:ram::1:oidc-provider/x"), 401,
             "AuthenticationFail.NoPermission"),
            (oidc_params("eyJ.token.one", OIDCProviderArn=None), 400, "MissingOIDCProviderArn"),
            (oidc_params(""), 401, "AuthenticationFail.OIDCToken.Invalid"),
            (oidc_params("abc"), 400, "InvalidParameter.OIDCToken"),
            (oidc_params("x" * 20001), 400, "InvalidParameter.OIDCToken"),
            (oidc_params("eyJ.token.one", RoleSessionName="a~b"), 400,
             "InvalidParameter.RoleSessionName"),
            (oidc_params("eyJ.token.one", Version="2016-01-01"), 400, "InvalidVersion"),
        ]
        for params, status, code in cases:
            with self.subTest(params={k: v[:40] for k, v in params.items()}):
                self.assertError(rpc(sts, params, "POST"), status, code)
        self.assertEqual(sts.calls, [])


# ------------------------------------------------------------------------------------------
# ECS metadata service
# ------------------------------------------------------------------------------------------

class EcsMetadata(Emulated):
    def put_token(self, ecs, ttl="21600"):
        headers = {} if ttl is None else {"X-aliyun-ecs-metadata-token-ttl-seconds": ttl}
        return call(ecs, "PUT", TOKEN_PATH, b"", headers)

    def get(self, ecs, path, token=None):
        headers = {} if token is None else {"X-aliyun-ecs-metadata-token": token}
        return call(ecs, "GET", path, headers=headers)

    def test_hardened_token_flow(self):
        ecs = self.serve(EcsMetadataEmulator(role_name="EcsRamRoleDocumentTesting",
                                             mode="hardened"))
        put = self.put_token(ecs)
        self.assertEqual(put.status, 200)
        token = put.body.decode()
        listing = self.get(ecs, CREDS, token)
        self.assertEqual((listing.status, listing.body), (200, b"EcsRamRoleDocumentTesting"))
        answer = self.get(ecs, CREDS + "EcsRamRoleDocumentTesting", token)
        self.assertEqual(answer.status, 200)
        document = answer.json()
        self.assertEqual(set(document), {"AccessKeyId", "AccessKeySecret", "Expiration",
                                         "SecurityToken", "LastUpdated", "Code"})
        self.assertEqual(document["Code"], "Success")
        self.assertTrue(document["AccessKeyId"].startswith("STS."))
        self.assertGreater(parse_expiration(document["Expiration"]), time.time())
        parse_expiration(document["LastUpdated"])
        self.assertIn(tuple(document[k] for k in ("AccessKeyId", "AccessKeySecret",
                                                  "SecurityToken")),
                      [t[:3] for t in ecs.store.valid()])
        self.assertEqual(self.get(ecs, CREDS + "OtherRole", token).status, 404)
        self.assertEqual(ecs.tokens_issued, 1)
        seen = ecs.requests
        self.assertEqual([(r.method, r.path) for r in seen[:2]],
                         [("PUT", TOKEN_PATH), ("GET", CREDS)])
        self.assertEqual(seen[0].headers["x-aliyun-ecs-metadata-token-ttl-seconds"], "21600")
        self.assertTrue(all(r.headers.get("x-aliyun-ecs-metadata-token") == token
                            for r in seen[1:]))

    def test_token_ttl_header(self):
        ecs = self.serve(EcsMetadataEmulator())
        for ttl in (None, "", "0", "21601", "-1", "abc", "1.5", "99999999"):
            with self.subTest(ttl=ttl):
                self.assertEqual(self.put_token(ecs, ttl).status, 400)
        for ttl in ("1", "21600"):
            self.assertEqual(self.put_token(ecs, ttl).status, 200)
        self.assertEqual(call(ecs, "GET", TOKEN_PATH).status, 405)

    def test_wrong_or_expired_token_is_401_in_both_modes(self):
        clock = FakeClock()
        for mode in ("both", "hardened"):
            with self.subTest(mode=mode):
                ecs = self.serve(EcsMetadataEmulator(mode=mode, clock=clock))
                token = self.put_token(ecs, "10").body.decode()
                self.assertEqual(self.get(ecs, CREDS, "not-a-token").status, 401)
                self.assertEqual(self.get(ecs, CREDS, token).status, 200)
                clock.advance(10)
                self.assertEqual(self.get(ecs, CREDS, token).status, 401)
                fresh = self.put_token(ecs).body.decode()
                ecs.expire_tokens()
                self.assertEqual(self.get(ecs, CREDS, fresh).status, 401)

    def test_normal_mode_is_refused_when_hardened_only(self):
        hardened = self.serve(EcsMetadataEmulator(mode="hardened"))
        self.assertEqual(self.get(hardened, CREDS).status, 403)
        self.assertEqual(self.get(hardened, CREDS + "EcsRamRoleTest").status, 403)
        both = self.serve(EcsMetadataEmulator(mode="both"))
        self.assertEqual(self.get(both, CREDS).body, b"EcsRamRoleTest")
        self.assertEqual(self.get(both, CREDS + "EcsRamRoleTest").json()["Code"], "Success")

    def test_token_endpoint_disabled_for_the_fallback(self):
        ecs = self.serve(EcsMetadataEmulator(token_endpoint=False))
        self.assertEqual(self.put_token(ecs).status, 404)
        self.assertEqual(self.get(ecs, CREDS + "EcsRamRoleTest").status, 200)
        refused = self.serve(EcsMetadataEmulator(token_endpoint=False,
                                                 token_disabled_status=403, mode="hardened"))
        self.assertEqual(self.put_token(refused).status, 403)
        self.assertEqual(self.get(refused, CREDS).status, 403)

    def test_no_role_attached(self):
        ecs = self.serve(EcsMetadataEmulator(role_name=None))
        self.assertEqual(self.get(ecs, CREDS).status, 404)

    def test_rotation_hands_out_new_credentials_before_the_old_expire(self):
        clock = FakeClock()
        ecs = self.serve(EcsMetadataEmulator(clock=clock, lifetime=60, refresh_before=20))
        path = CREDS + "EcsRamRoleTest"
        first = self.get(ecs, path).json()
        self.assertEqual(parse_expiration(first["Expiration"]), int(clock.now) + 60)
        clock.advance(39)
        self.assertEqual(self.get(ecs, path).json()["AccessKeyId"], first["AccessKeyId"])
        clock.advance(2)    # 41 s: within 20 s of expiry
        second = self.get(ecs, path).json()
        self.assertNotEqual(second["AccessKeyId"], first["AccessKeyId"])
        valid = [t[0] for t in ecs.store.valid()]
        self.assertEqual(valid, [first["AccessKeyId"], second["AccessKeyId"]])   # overlap
        clock.advance(20)   # 61 s: the first has expired
        self.assertEqual([t[0] for t in ecs.store.valid()], [second["AccessKeyId"]])
        self.assertEqual(self.get(ecs, path).json()["AccessKeyId"], second["AccessKeyId"])
        keys = set()
        for _ in range(5):
            clock.advance(41)
            document = self.get(ecs, path).json()
            self.assertGreater(parse_expiration(document["Expiration"]), clock.now)
            keys.add(document["AccessKeyId"])
        self.assertEqual(len(keys), 5)
        forced = ecs.rotation.rotate()
        self.assertEqual(self.get(ecs, path).json()["AccessKeyId"], forced.access_key_id)

    def test_rotation_in_real_time(self):
        ecs = self.serve(EcsMetadataEmulator(lifetime=2, refresh_before=1))
        seen = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(seen) < 3:
            seen.add(self.get(ecs, CREDS + "EcsRamRoleTest").json()["AccessKeyId"])
            time.sleep(0.1)
        self.assertGreaterEqual(len(seen), 3)


# ------------------------------------------------------------------------------------------
# Credentials URI
# ------------------------------------------------------------------------------------------

class CredentialsUri(Emulated):
    def test_document_and_rotation(self):
        clock = FakeClock()
        uri = self.serve(CredentialsUriEmulator(clock=clock, lifetime=30, refresh_before=10))
        parsed = urllib.parse.urlsplit(uri.credentials_url)
        self.assertEqual((parsed.hostname, parsed.port), ("127.0.0.1", uri.port))
        first = call(uri, "GET", parsed.path).json()
        self.assertEqual(set(first), {"Code", "AccessKeyId", "AccessKeySecret",
                                      "SecurityToken", "Expiration"})
        self.assertEqual(first["Code"], "Success")
        clock.advance(21)
        second = call(uri, "GET", parsed.path).json()
        self.assertNotEqual(second["AccessKeyId"], first["AccessKeyId"])
        self.assertEqual(call(uri, "GET", "/other").status, 404)


# ------------------------------------------------------------------------------------------
# Fault modes, the same for every emulator
# ------------------------------------------------------------------------------------------

class Faults(Emulated):
    """Each case: (emulator, how to ask for credentials, how to read them from a document)."""

    def cases(self):
        ecs = self.serve(EcsMetadataEmulator())
        uri = self.serve(CredentialsUriEmulator())
        sts = self.serve(StsEmulator(oidc_token="eyJ.token"))
        return [
            ("ecs", ecs, lambda timeout=5.0: call(ecs, "GET", CREDS + "EcsRamRoleTest",
                                                  timeout=timeout), lambda d: d),
            ("uri", uri, lambda timeout=5.0: call(uri, "GET", "/credentials", timeout=timeout),
             lambda d: d),
            ("sts", sts, lambda timeout=5.0: rpc(sts, oidc_params("eyJ.token"),
                                                 timeout=timeout),
             lambda d: d.get("Credentials", d)),
        ]

    def test_every_fault(self):
        for name, emulator, ask, creds in self.cases():
            for fault in FAULTS:
                if fault == "stall":
                    continue
                with self.subTest(emulator=name, fault=fault):
                    emulator.set_fault(fault, count=1)
                    answer = ask()
                    self.check_fault(fault, emulator, answer, creds)
                    normal = ask()     # count=1: the next answer is normal again
                    self.assertEqual(normal.status, 200)
                    self.assertIn("AccessKeyId", creds(normal.json()))

    def check_fault(self, fault, emulator, answer, creds):
        if fault == "html":
            self.assertEqual(answer.status, 200)
            self.assertTrue(answer.headers["content-type"].startswith("text/html"))
            self.assertRaises(ValueError, json.loads, answer.body)
        elif fault == "server_error":
            self.assertEqual(answer.status, 500)
        elif fault == "redirect":
            self.assertEqual(answer.status, 302)
            target = urllib.parse.urlsplit(answer.headers["location"])
            self.assertEqual((target.hostname, target.port), ("127.0.0.1", emulator.port))
            followed = call(emulator, "GET", target.path + "?" + target.query)
            self.assertEqual(followed.status, 200)   # a client that followed would succeed
            self.assertIn("AccessKeyId", creds(followed.json()))
        elif fault == "huge":
            self.assertEqual(answer.status, 200)
            self.assertGreater(len(answer.body), HUGE_BODY_BYTES)
            self.assertEqual(int(answer.headers["content-length"]), len(answer.body))
            self.assertIn("AccessKeyId", creds(answer.json()))
        elif fault == "code_failed":
            self.assertEqual(answer.status, 200)
            self.assertEqual(answer.json()["Code"], "Failed")
        else:
            self.assertEqual(answer.status, 200)
            document = creds(answer.json())
            if fault == "expired":
                self.assertLess(parse_expiration(document["Expiration"]), time.time())
            elif fault == "missing_field":
                self.assertNotIn("SecurityToken", document)
                self.assertIn("AccessKeyId", document)
            elif fault == "bad_expiration":
                self.assertRaises(ValueError, parse_expiration, document["Expiration"])

    def test_stall(self):
        for name, emulator, ask, creds in self.cases():
            with self.subTest(emulator=name):
                emulator.set_fault("stall", count=2)
                started = time.monotonic()
                with self.assertRaises(socket.timeout):   # no answer while stalled
                    ask(0.5)
                self.assertGreaterEqual(time.monotonic() - started, 0.45)
                emulator.release_stalls()
                emulator.stall_seconds = 0.3     # a stall that ends closes without an answer
                with self.assertRaises(http.client.RemoteDisconnected):
                    ask(5.0)
                self.assertIn("AccessKeyId", creds(ask().json()))

    def test_down_and_back_on_the_same_port(self):
        for name, emulator, ask, creds in self.cases():
            with self.subTest(emulator=name):
                port = emulator.port
                emulator.stop()
                with self.assertRaises(ConnectionRefusedError):
                    ask()
                emulator.start()
                self.assertEqual(emulator.port, port)
                self.assertIn("AccessKeyId", creds(ask().json()))

    def test_unknown_fault(self):
        ecs = EcsMetadataEmulator()
        self.assertRaises(ValueError, ecs.set_fault, "teapot")
        self.assertRaises(ValueError, ecs.set_fault, "html", 0)
        self.assertRaises(ValueError, EcsMetadataEmulator, host="0.0.0.0")


class SharedStore(Emulated):
    def test_one_store_across_emulators(self):
        store = CredentialStore()
        ecs = self.serve(EcsMetadataEmulator(store=store))
        sts = self.serve(StsEmulator(store=store, oidc_token="eyJ.token", lifetime=30))
        uri = self.serve(CredentialsUriEmulator(store=store))
        a = call(ecs, "GET", CREDS + "EcsRamRoleTest").json()
        b = rpc(sts, oidc_params("eyJ.token")).json()["Credentials"]
        c = call(uri, "GET", "/credentials").json()
        valid = {t[0]: t for t in store.valid()}
        for document in (a, b, c):
            entry = valid[document["AccessKeyId"]]
            self.assertEqual(entry[1:3], (document["AccessKeySecret"], document["SecurityToken"]))
            self.assertEqual(entry[3], parse_expiration(document["Expiration"]))
            self.assertTrue(store.is_valid(document["AccessKeyId"], document["SecurityToken"],
                                           document["AccessKeySecret"]))
            self.assertFalse(store.is_valid(document["AccessKeyId"], "wrong-token"))
        self.assertEqual([c.source for c in store.issued],
                         ["ecs", "sts:AssumeRoleWithOIDC", "uri"])
        store.revoke(a["AccessKeyId"])
        self.assertNotIn(a["AccessKeyId"], [t[0] for t in store.valid()])


if __name__ == "__main__":
    unittest.main()
