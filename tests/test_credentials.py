"""End to end: temporary credentials (OIDC role, AssumeRole, ECS instance RAM role, credentials
URI) from the loopback emulators of tests/cloud_emulators.py, signing real uploads through the
OSS emulator, which accepts the same CredentialStore's keys.

The scenarios that need real time (credentials rotating several times, an outage long enough for
the credentials to run low, credentials that live 24 s) start in the background from
setUpModule, so that the other tests of this module run meanwhile; the Timed* classes, last in
the module's order, wait for them and assert on what they recorded. Credentials there live
LIFETIME seconds with OSS_CREDENTIAL_MARGIN_SECONDS=1.

Every response, subprocess output, fetch error and "appserver" log record of the module is kept
(EVIDENCE, LOGS) for the leak scan: no AccessKey secret or OIDC token anywhere, the STS security
token only in upload tokens.

Refreshers are CredentialProvider's own, with the fetch make_credential_provider would give
them wrapped in a ParkableFetch: CredentialProvider has no stop(), and a refresher that outlived
its test would keep polling a stopped emulator and logging into later tests.
"""

import base64
import contextlib
import dataclasses
import functools
import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import unittest
import urllib.parse
from typing import NamedTuple, Optional

import appserver
from tests.cloud_emulators import (FAULTS, CredentialStore, CredentialsUriEmulator,
                                   EcsMetadataEmulator, StsEmulator, json_response,
                                   parse_expiration, sign_rpc_request)
from tests.multipart_client import post_form, token_fields
from tests.oss_emulator import EmulatorServer
from tests.support import (REPO, FakeClock, LogCapture, exchange, png_bytes, start_app_server,
                           stop_app_server)

BUCKET, REGION = "examplebucket", "cn-hangzhou"
ROLE_ARN = "acs:ram::1234567890123456:role/oss-upload"
PROVIDER_ARN = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-test"  # StsEmulator's default
ECS_ROLE = "EcsRamRoleTest"                                            # EcsMetadataEmulator's
STATIC_ID = "LTAI5tCredentialsTestId"
STATIC_SECRET = "StaticSecret" + secrets.token_hex(12)
WRONG_SECRET = "WrongSecret" + secrets.token_hex(12)
CALLBACK_SECRET = "CallbackSecret" + secrets.token_hex(16)
TICKET_SECRET = "TicketSecret" + secrets.token_hex(16)
MARGIN = 1
# Today the refresher renews when a third of the lifetime is left (credentials that live less
# than 45 minutes), and tokens stop when less than margin + 10 s is left: 39 s credentials renew
# at 13 s left, before tokens stop at 11 s, and rotate every 26 s.
LIFETIME = 39
ROTATIONS = 2           # at least this many rotations: three credentials sign uploads
MIN_TOKEN_SECONDS = 10  # the issue: 503 rather than a token that would live less than this
UNAVAILABLE = {"Status": "Error", "Message": "upload credentials unavailable"}
DATA = png_bytes(3, 2)
SOURCES = {"oidc": "sts:AssumeRoleWithOIDC", "ram_role": "sts:AssumeRole", "ecs": "ecs",
           "ecs_normal": "ecs", "uri": "uri"}


###############################################################################
# Evidence for the leak scan, and the module's log capture
###############################################################################

class Evidence:
    """What the module's servers said, and every secret the module made or was handed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.token_responses = []   # raw GET / 200 answers: the STS token may be there
        self.other_responses = []   # every other answer, the OSS emulator's relays included
        self.outputs = []           # stdout and stderr of appserver.py runs
        self.stores = []
        self.oidc_tokens = []
        self.fetches = []

    def response(self, raw, token):
        with self.lock:
            (self.token_responses if token else self.other_responses).append(raw)

    def add(self, kind, value):
        with self.lock:
            getattr(self, kind).append(value)
        return value

    def secrets(self):
        """AccessKey secrets (static, wrong, temporary), key material, OIDC tokens."""
        with self.lock:
            stores, tokens = list(self.stores), list(self.oidc_tokens)
        issued = [c for store in stores for c in store.issued]
        return ([STATIC_SECRET, WRONG_SECRET, CALLBACK_SECRET, TICKET_SECRET] + tokens
                + [c.access_key_secret for c in issued]), [c.security_token for c in issued]

    def errors(self):
        with self.lock:
            fetches = list(self.fetches)
        return [str(error) for fetch in fetches for error in fetch.errors]


EVIDENCE = Evidence()
LOGS = LogCapture()      # the "appserver" logger, for the whole module
SCENARIOS = {}


def setUpModule():
    LOGS.start()
    for scenario in (RotationScenario(), OutageScenario("ecs"), OutageScenario("sts"),
                     ShortLivedScenario()):
        SCENARIOS[scenario.key] = scenario
        scenario.start()


def tearDownModule():
    for scenario in SCENARIOS.values():
        scenario.stopping.set()
    for scenario in SCENARIOS.values():
        scenario.join(30)
    LOGS.stop()


def log_mark():
    return len(LOGS.records)


def records_since(mark):
    with LOGS._records_lock:
        return list(zip(LOGS.records[mark:], LOGS.lines[mark:]))


def assert_no_traceback(test, mark):
    for record, line in records_since(mark):
        test.assertFalse(record.exc_info or "Traceback" in line,
                         "a traceback in the log: %s" % line[:2000])


def forms(value):
    """A value as it could leak: raw, base64, URL-safe base64, hex, percent-encoded."""
    raw = value.encode("utf-8")
    return {raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode(),
            urllib.parse.quote(value, safe="").encode()}


def leak_findings():
    """Where a secret or an OIDC token shows anywhere, or an STS token outside upload tokens."""
    secret_values, sts_tokens = EVIDENCE.secrets()
    with EVIDENCE.lock:
        tokens = b"\n".join(EVIDENCE.token_responses)
        others = b"\n".join(EVIDENCE.other_responses)
        outputs = b"\n".join(EVIDENCE.outputs)
    places = {"a log line": LOGS.text().encode("utf-8"),
              "an error message": "\n".join(EVIDENCE.errors()).encode("utf-8"),
              "the output of appserver.py": outputs, "a response": others}
    findings = []
    for kind, values, where in (("secret", secret_values, dict(places, token=tokens)),
                                ("STS token", sts_tokens, places)):
        for value in set(values):
            for form in forms(value):
                findings += ["%s %s...: in %s" % (kind, value[:6], place)
                             for place, blob in where.items() if form in blob]
    return findings


###############################################################################
# Servers
###############################################################################

def new_store(clock=time.time):
    """A CredentialStore whose secrets and tokens the leak scan looks for."""
    return EVIDENCE.add("stores", CredentialStore(clock))


def new_oidc_token():
    """A JWT-shaped service-account token (STS compares it whole)."""
    return EVIDENCE.add("oidc_tokens", "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.%s.%s" % (
        secrets.token_urlsafe(90), secrets.token_urlsafe(60)))


def write_token_file(path, token):
    """As the kubelet rotates a projected token: a new file renamed over the old."""
    with open(path + ".new", "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.replace(path + ".new", path)
    return path


def base_env(oss=None):
    env = {"OSS_HOST": oss.url if oss else "http://127.0.0.1:9", "OSS_BUCKET": BUCKET,
           "OSS_REGION": REGION, "OSS_UPLOAD_DIR": "uploads/",
           "OSS_CALLBACK_SECRET": CALLBACK_SECRET,
           "OSS_CREDENTIAL_MARGIN_SECONDS": str(MARGIN)}
    if oss:
        env["OSS_PUB_KEY_URL_PREFIXES"] = oss.pub_key_url_prefix
    return env


def oidc_env(sts, token_file):
    return {"ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": PROVIDER_ARN,
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE": token_file, "OSS_STS_ENDPOINT": sts.url}


def ram_role_env(sts, secret=STATIC_SECRET):
    return {"ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN, "OSS_ACCESS_KEY_ID": STATIC_ID,
            "OSS_ACCESS_KEY_SECRET": secret, "OSS_STS_ENDPOINT": sts.url}


def ecs_env(ecs):
    return {"ALIBABA_CLOUD_ECS_METADATA": ECS_ROLE, "OSS_ECS_METADATA_ENDPOINT": ecs.url}


def uri_env(uri):
    return {"ALIBABA_CLOUD_CREDENTIALS_URI": uri.credentials_url}


def sts_emulator(store, **options):
    options.setdefault("access_keys", {STATIC_ID: STATIC_SECRET})
    options.setdefault("role_arns", {ROLE_ARN})
    return StsEmulator(store, **options)


class ParkableFetch:
    """A provider's fetch, with its calls counted and its failures kept; ``park()`` puts the
    refresher thread to sleep for good at its next fetch (or as this one ends)."""

    def __init__(self, fetch):
        self._fetch = fetch
        self._parked = threading.Event()
        self.lock = threading.Lock()
        self.calls = 0
        self.errors = []

    def __call__(self):
        self._park_if_asked()
        with self.lock:
            self.calls += 1
        try:
            credentials = self._fetch()
        except BaseException as exc:
            with self.lock:
                self.errors.append(exc)
            self._park_if_asked()
            raise
        self._park_if_asked()
        return credentials

    def _park_if_asked(self):
        if self._parked.is_set():
            threading.Event().wait()   # a daemon thread: it ends with the process

    def park(self):
        self._parked.set()

    def failures(self):
        with self.lock:
            return list(self.errors)


def provider_for(config, clock=time.time):
    """(provider, ParkableFetch or None): what make_credential_provider builds for ``config``
    (name, detail, margin, the fetch function), its fetch parkable."""
    made = appserver.make_credential_provider(config, clock)
    if not made.refreshes:
        return made, None
    fetch = EVIDENCE.add("fetches", ParkableFetch(
        functools.partial(appserver.FETCHERS[config.credentials], config)))
    return appserver.CredentialProvider(made.name, fetch=fetch, margin=made.margin, clock=clock,
                                        detail=made.detail), fetch


@dataclasses.dataclass
class Stack:
    config: object
    provider: object
    fetch: Optional[ParkableFetch]
    server: object
    url: str

    @property
    def port(self):
        return self.server.server_address[1]

    def wait_for_failure(self, timeout=10.0):
        until = time.monotonic() + timeout
        while not self.fetch.failures() and time.monotonic() < until:
            time.sleep(0.05)
        return self.fetch.failures()


def start_stack(cleanup, env, oss=None):
    """The app server on 127.0.0.1 with the configuration ``env`` (over base_env), its callback
    URL its own address; ``cleanup(fn, *args)`` registers what stops it."""
    values = dict(base_env(oss), **env)
    config = appserver.config_from_env(values, "http://127.0.0.1:1")
    provider, fetch = provider_for(config)
    server, url = start_app_server(config, app=appserver.App(config, credentials=provider))
    cleanup(stop_app_server, server)
    if fetch is not None:
        cleanup(fetch.park)
    if "OSS_CALLBACK_URL" not in values:
        config = dataclasses.replace(config, callback_url=url)
        server.app = appserver.App(config, credentials=provider)
    return Stack(config, provider, fetch, server, url)


def start_oss(cleanup, store):
    root = tempfile.TemporaryDirectory()
    cleanup(root.cleanup)
    oss = EmulatorServer(root.name, bucket=BUCKET, region=REGION, credential_store=store).start()
    cleanup(oss.stop)
    return oss


def started(cleanup, emulator):
    emulator.start()
    cleanup(emulator.stop)
    return emulator


###############################################################################
# Requests
###############################################################################

class Reply(NamedTuple):
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def request(url, path="/", method="GET", headers=None, body=None, evidence=True):
    """One request on its own connection; the raw answer goes to the evidence (an app server's
    answers, not an emulator's)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    pairs = response.getheaders()
    raw = ("HTTP/1.1 %d %s\r\n" % (response.status, response.reason)).encode("latin-1") + \
        "".join("%s: %s\r\n" % pair for pair in pairs).encode("latin-1") + b"\r\n" + data
    if evidence:
        EVIDENCE.response(raw, method == "GET" and path.partition("?")[0] == "/"
                          and response.status == 200)
    return Reply(response.status, {name.lower(): value for name, value in pairs}, data)


def upload(token, name):
    reply = post_form(token["host"], token_fields(token, token["dir"] + name), name, DATA,
                      file_content_type="image/png")
    EVIDENCE.response(reply.body, False)
    return reply


@dataclasses.dataclass
class Outcome:
    """One GET / (and, with a token, a real upload and a GET /readyz)."""
    at: float
    status: int
    body: bytes = b""
    access_key_id: Optional[str] = None
    upload_status: Optional[int] = None
    upload_body: bytes = b""
    readyz: Optional[int] = None
    problems: tuple = ()

    @property
    def uploaded(self):
        if self.upload_status != 200:
            return False
        try:
            return json.loads(self.upload_body).get("Status") == "OK"
        except ValueError:
            return False

    def __str__(self):
        return "GET / %s %r; upload %s %r; readyz %s; %s" % (
            self.status, self.body[:200], self.upload_status, self.upload_body[:300],
            self.readyz, "; ".join(self.problems))


def token_problems(token, store, asked_at):
    """What is wrong with a token signed with ``store``'s temporary credentials."""
    credential = store.lookup(token.get("accessid"))
    if credential is None:
        return ["signed with %r, which no emulator handed out" % token.get("accessid")]
    policy = json.loads(base64.b64decode(token["policy"]))
    expiration = parse_expiration(policy["expiration"])
    problems = []
    if expiration > credential.expiration - MARGIN:
        problems.append("the policy expires at %s, after its credentials' expiry %s less the "
                        "margin" % (policy["expiration"], credential.expiration_text))
    if expiration < asked_at + MIN_TOKEN_SECONDS - 1:
        problems.append("the policy lives less than %d s" % MIN_TOKEN_SECONDS)
    if token.get("expire") != expiration:
        problems.append("expire %r is not the policy's expiration" % token.get("expire"))
    if token.get("x-oss-security-token") != credential.security_token:
        problems.append("x-oss-security-token is not the token of %s" % credential.access_key_id)
    if {"x-oss-security-token": credential.security_token} not in policy["conditions"]:
        problems.append("the policy does not pin the security token")
    if token.get("fields", {}).get("x-oss-security-token") != credential.security_token:
        problems.append("fields carry another security token")
    elsewhere = [name for name, value in token.items() if name not in (
        "x-oss-security-token", "policy", "fields")
        and credential.security_token in json.dumps(value)]
    if elsewhere:
        problems.append("the security token is also in %s" % ", ".join(elsewhere))
    return problems


def token_and_upload(stack, store, name):
    asked_at = time.time()
    reply = request(stack.url, "/")
    outcome = Outcome(asked_at, reply.status, reply.body)
    if reply.status != 200:
        return outcome
    token = reply.json()
    outcome.access_key_id = token.get("accessid")
    outcome.problems = tuple(token_problems(token, store, asked_at))
    answer = upload(token, name)
    outcome.upload_status, outcome.upload_body = answer.status, answer.body
    outcome.readyz = request(stack.url, "/readyz").status
    return outcome


def assert_unavailable(test, stack, context=""):
    """GET / and /readyz: 503, the error shape and Retry-After; /healthz: 200."""
    for path in ("/", "/readyz"):
        reply = request(stack.url, path)
        test.assertEqual(reply.status, 503, "%s %s %r" % (context, path, reply.body[:300]))
        test.assertEqual(reply.json(), UNAVAILABLE, context)
        test.assertTrue(reply.headers.get("content-type", "").startswith("application/json"))
        retry_after = reply.headers.get("retry-after", "")
        test.assertTrue(retry_after.isdigit() and int(retry_after) > 0,
                        "%s %s Retry-After %r" % (context, path, retry_after))
    health = request(stack.url, "/healthz")
    test.assertEqual((health.status, health.json()), (200, {"Status": "OK"}), context)


def wait_for_status(url, status, timeout, path="/"):
    until = time.monotonic() + timeout
    while True:
        reply = request(url, path)
        if reply.status == status or time.monotonic() > until:
            return reply
        time.sleep(0.2)


def representative_requests(stack):
    """Requests of every kind the server answers, healthy or not."""
    for path in ("/", "/?secret=1", "/readyz", "/healthz", "/index.html", "/upload.js",
                 "/nope", "/%00"):
        request(stack.url, path)
    for method in ("HEAD", "OPTIONS", "PUT", "DELETE"):
        request(stack.url, "/", method=method)
    for raw in (b"garbage\r\n\r\n", b"BREW / HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
                b"POST /cb HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                b"authorization: @@@@\r\n\r\nhello",
                b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        EVIDENCE.response(exchange(stack.port, raw), False)


def run_appserver(env, args=("127.0.0.1", "0"), timeout=20):
    """``python appserver.py ARGS`` with only ``env`` (and PATH): (exit status, stdout, stderr)."""
    process = subprocess.Popen([sys.executable, "appserver.py", *args], cwd=REPO,
                               env=clean_env(env), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    EVIDENCE.add("outputs", out + err)
    return process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def clean_env(env):
    return dict(env, PATH=os.environ.get("PATH", "/usr/bin:/bin"), PYTHONDONTWRITEBYTECODE="1")


###############################################################################
# Scenarios that take real time, run in the background
###############################################################################

class ScenarioStopped(Exception):
    pass


class Scenario(threading.Thread):
    """``play(cleanup)`` in a thread; tests ``outcome(test)`` to wait and see it finished."""

    key = "scenario"
    budget = 120.0

    def __init__(self):
        super().__init__(name="scenario-" + self.key, daemon=True)
        self.stopping = threading.Event()
        self.failure = None

    def run(self):
        with contextlib.ExitStack() as exits:
            try:
                self.play(exits.callback)
            except ScenarioStopped:
                pass
            except Exception:   # noqa: BLE001 - shown by the test that waits for it
                self.failure = traceback.format_exc()

    def sleep(self, seconds):
        if self.stopping.wait(seconds):
            raise ScenarioStopped()

    def outcome(self, test):
        self.join(self.budget)
        test.assertFalse(self.is_alive(), "%s did not finish in %d s" % (self.key, self.budget))
        test.assertIsNone(self.failure, "%s broke:\n%s" % (self.key, self.failure))
        return self


class RotationScenario(Scenario):
    """Every provider signs uploads until each has used ROTATIONS + 1 credentials. The OIDC token
    file and the token STS expects change together after the first OIDC rotation."""

    key = "rotation"
    NAMES = ("oidc", "ram_role", "ecs", "ecs_normal", "uri")

    def play(self, cleanup):
        self.store = store = new_store()
        oss = start_oss(cleanup, store)
        folder = tempfile.TemporaryDirectory()
        cleanup(folder.cleanup)
        self.oidc_tokens = [new_oidc_token(), new_oidc_token()]
        token_file = write_token_file(os.path.join(folder.name, "token"), self.oidc_tokens[0])
        self.sts = started(cleanup, sts_emulator(store, oidc_token=self.oidc_tokens[0],
                                                 lifetime=LIFETIME))
        self.ecs = started(cleanup, EcsMetadataEmulator(store, mode="hardened",
                                                        lifetime=LIFETIME))
        self.ecs_normal = started(cleanup, EcsMetadataEmulator(store, token_endpoint=False,
                                                               lifetime=LIFETIME))
        uri = started(cleanup, CredentialsUriEmulator(store, lifetime=LIFETIME))
        envs = {"oidc": dict(oidc_env(self.sts, token_file), OSS_SIGNATURE_VERSION="v4"),
                "ram_role": ram_role_env(self.sts),
                "ecs": dict(ecs_env(self.ecs), OSS_SIGNATURE_VERSION="v4"),
                "ecs_normal": ecs_env(self.ecs_normal),
                "uri": dict(uri_env(uri), OSS_SIGNATURE_VERSION="v4")}
        self.stacks = {name: start_stack(cleanup, envs[name], oss) for name in self.NAMES}
        for stack in self.stacks.values():
            stack.provider.start()
        for stack in self.stacks.values():
            stack.provider.wait_ready(5)
        self.outcomes = {name: [] for name in self.NAMES}
        self.oidc_switched_at = None
        deadline = time.monotonic() + 100
        round_ = 0
        while not self.rotated_enough() and time.monotonic() < deadline:
            for name, stack in self.stacks.items():
                self.outcomes[name].append(
                    token_and_upload(stack, store, "%s-%d.png" % (name, round_)))
            if self.oidc_switched_at is None and len(self.keys_used("oidc")) >= 2:
                # The next refresh is 20 s or more away: file and STS change together before it.
                write_token_file(token_file, self.oidc_tokens[1])
                self.sts.oidc_token = self.oidc_tokens[1]
                self.oidc_switched_at = time.time()
            round_ += 1
            self.sleep(0.4)

    def keys_used(self, name):
        return {o.access_key_id for o in self.outcomes[name] if o.uploaded}

    def rotated_enough(self):
        return all(len(self.keys_used(name)) > ROTATIONS for name in self.NAMES)


class OutageScenario(Scenario):
    """The metadata service (ECS role) or STS (AssumeRole) stops right after the first fetch;
    tokens are asked for until they stop; then the service comes back."""

    def __init__(self, kind):
        self.kind = kind
        self.key = kind + "-outage"
        super().__init__()

    def play(self, cleanup):
        self.store = store = new_store()
        oss = start_oss(cleanup, store)
        if self.kind == "ecs":
            self.service = started(cleanup, EcsMetadataEmulator(store, lifetime=LIFETIME))
            env = ecs_env(self.service)
        else:
            self.service = started(cleanup, sts_emulator(store, lifetime=LIFETIME))
            env = ram_role_env(self.service)
        self.stack = stack = start_stack(cleanup, env, oss)
        stack.provider.wait_ready(5)
        self.before = token_and_upload(stack, store, "before.png")
        self.service.stop()
        self.stopped_at = time.time()
        self.while_down = []            # (when, outcome, failed refreshes so far)
        self.after_failure = None       # an upload after a refresh failed
        deadline = time.monotonic() + 2 * LIFETIME
        while time.monotonic() < deadline:
            failures = len(stack.fetch.failures())
            if failures and self.after_failure is None:
                self.after_failure = outcome = token_and_upload(stack, store, "after.png")
            else:
                reply = request(stack.url, "/")
                outcome = Outcome(time.time(), reply.status, reply.body)
                if reply.status == 200:
                    outcome.access_key_id = reply.json()["accessid"]
            self.while_down.append((time.time(), outcome, failures))
            if outcome.status != 200:
                break
            self.sleep(0.25)
        self.low = {path: request(self.stack.url, path) for path in ("/", "/readyz", "/healthz")}
        self.service.start()
        self.restarted_at = time.time()
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and not (
                request(stack.url, "/").status == 200 and request(stack.url, "/readyz").status
                == 200):
            self.sleep(0.25)
        self.recovered_after = time.time() - self.restarted_at
        self.after = token_and_upload(stack, store, "recovered.png")
        self.health = request(stack.url, "/healthz")


class ShortLivedScenario(Scenario):
    """Credentials that live 24 s (the metadata service rotating them 14 s before they expire),
    margin 1 s: tokens for a whole refresh cycle and more."""

    key = "short-lived"
    LIFETIME = 24

    def play(self, cleanup):
        self.store = store = new_store()
        oss = start_oss(cleanup, store)
        ecs = started(cleanup, EcsMetadataEmulator(store, lifetime=self.LIFETIME,
                                                   refresh_before=14))
        stack = start_stack(cleanup, ecs_env(ecs), oss)
        stack.provider.wait_ready(5)
        self.outcomes = []
        deadline = time.monotonic() + 2 * self.LIFETIME
        while time.monotonic() < deadline:
            self.outcomes.append(token_and_upload(stack, store, "short.png"))
            if len({o.access_key_id for o in self.outcomes if o.uploaded}) >= 3:
                break
            self.sleep(0.25)


###############################################################################
# Bad answers from the credential services
###############################################################################

# What a clear error says for each fault; any wording that names the problem will do.
FAULT_WORDS = {"html": r"JSON", "code_failed": r"Code|Failed|Success", "huge": r"larger|bytes",
               "redirect": r"302", "stall": r"[Tt]ime", "expired": r"expired",
               "missing_field": r"missing|field", "bad_expiration": r"Expiration",
               "server_error": r"500"}


class FixedAnswerEmulator(CredentialsUriEmulator):
    """A credentials URI that answers one document, whatever it is."""

    def __init__(self, document, **options):
        super().__init__(**options)
        self.document = document

    def handle(self, request):
        return json_response(200, self.document)


class BadServiceAnswers(unittest.TestCase):

    def assert_clear_failure(self, stack, mark, words):
        """The service's answer was refused with a clear error saying ``words``: the fetch
        raised a CredentialsError (or, for credentials already expired, the provider refused
        what the fetch returned), logged as a warning naming the provider; tokens and /readyz
        answer 503."""
        prefix = "%s credentials: " % stack.provider.name
        until = time.monotonic() + 10
        while True:
            failures = stack.fetch.failures()
            lines = [r for r, _ in records_since(mark) if r.getMessage().startswith(prefix)]
            if failures:
                error = failures[0]
                self.assertIsInstance(error, appserver.CredentialsError,
                                      "%s: %s" % (type(error).__name__, error))
                self.assertRegex(str(error), words)
                lines = [r for r in lines if r.getMessage().startswith(prefix + str(error))]
            else:   # the fetch succeeded; the provider refused its answer
                lines = [r for r in lines if re.search(words, r.getMessage())]
            if lines or time.monotonic() > until:
                break
            time.sleep(0.05)
        self.assertTrue(lines, "no log line %s... saying %s" % (prefix, words))
        self.assertTrue(all(r.levelname == "WARNING" and not r.exc_info for r in lines),
                        [r.getMessage() for r in lines])
        assert_unavailable(self, stack)

    def test_each_fault_of_each_service_is_a_clear_log_line_then_503_and_recovery(self):
        mark = log_mark()
        cases = []
        for service in ("ecs", "sts", "uri"):
            for fault in FAULTS:
                store = new_store()
                emulator = {"ecs": EcsMetadataEmulator, "sts": sts_emulator,
                            "uri": CredentialsUriEmulator}[service](store)
                started(self.addCleanup, emulator).set_fault(fault)
                env = {"ecs": ecs_env, "sts": ram_role_env, "uri": uri_env}[service](emulator)
                stack = start_stack(self.addCleanup, env)
                stack.provider.start()
                cases.append((service, fault, emulator, stack))
        for service, fault, emulator, stack in cases:
            with self.subTest(service=service, fault=fault):
                self.assert_clear_failure(stack, mark, FAULT_WORDS[fault])
        for service, fault, emulator, stack in cases:
            emulator.clear_fault()
            emulator.release_stalls()
        for service, fault, emulator, stack in cases:
            with self.subTest(service=service, fault=fault, phase="recovery"):
                self.assertEqual(wait_for_status(stack.url, 200, 15).status, 200)
                self.assertEqual(request(stack.url, "/readyz").status, 200)
        assert_no_traceback(self, mark)

    def test_a_missing_or_empty_oidc_token_file_is_a_clear_log_line_and_nothing_goes_to_sts(self):
        mark = log_mark()
        temporary = tempfile.TemporaryDirectory()
        self.addCleanup(temporary.cleanup)
        folder = temporary.name
        empty = os.path.join(folder, "empty")
        open(empty, "w").close()
        cases = []
        for name, path in (("missing", os.path.join(folder, "missing")), ("empty", empty)):
            sts = started(self.addCleanup, sts_emulator(new_store()))
            stack = start_stack(self.addCleanup, oidc_env(sts, path))
            stack.provider.start()
            cases.append((name, path, sts, stack))
        for name, path, sts, stack in cases:
            with self.subTest(name):
                self.assert_clear_failure(stack, mark, r"token file")
                self.assertEqual(sts.requests, [])
        for name, path, sts, stack in cases:
            sts.oidc_token = new_oidc_token()
            write_token_file(path, sts.oidc_token)
        for name, path, sts, stack in cases:
            with self.subTest(name, phase="token written"):
                self.assertEqual(wait_for_status(stack.url, 200, 15).status, 200)
        assert_no_traceback(self, mark)

    def test_an_expiration_that_is_no_date_is_a_clear_log_line_never_a_traceback(self):
        # Shaped like YYYY-MM-DDThh:mm:ssZ, but no such moment.
        mark = log_mark()
        cases = []
        for expiration in ("2031-02-30T00:00:00Z", "2031-13-01T00:00:00Z",
                           "2031-01-01T24:61:00Z", "0000-01-01T00:00:00Z"):
            document = {"Code": "Success", "AccessKeyId": "STS.NoSuchMoment",
                        "AccessKeySecret": "NoSuchMomentSecret", "SecurityToken": "CAISnone",
                        "Expiration": expiration}
            uri = started(self.addCleanup, FixedAnswerEmulator(document))
            stack = start_stack(self.addCleanup, uri_env(uri))
            stack.provider.start()
            cases.append((expiration, stack))
        for expiration, stack in cases:
            with self.subTest(expiration):
                self.assert_clear_failure(stack, mark, r"Expiration")
        assert_no_traceback(self, mark)


###############################################################################
# Configuration errors: exit 2, one line naming the variable
###############################################################################

class ConfigErrors(unittest.TestCase):

    def test_malformed_credential_settings_exit_2_naming_the_variable(self):
        oidc = {"ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN, "ALIBABA_CLOUD_OIDC_PROVIDER_ARN":
                PROVIDER_ARN, "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "/nonexistent/token",
                "OSS_STS_ENDPOINT": "http://127.0.0.1:9"}
        ram_role = {"ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN, "OSS_ACCESS_KEY_ID": STATIC_ID,
                    "OSS_ACCESS_KEY_SECRET": STATIC_SECRET,
                    "OSS_STS_ENDPOINT": "http://127.0.0.1:9"}
        base = base_env()
        no_callback_secret = {k: v for k, v in base.items() if k != "OSS_CALLBACK_SECRET"}
        cases = {
            "OSS_STS_ENDPOINT": {**base, **ram_role, "OSS_STS_ENDPOINT": "http://example.com"},
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED": dict(
                base, OSS_CREDENTIALS="ecs", ALIBABA_CLOUD_ECS_METADATA=ECS_ROLE,
                ALIBABA_CLOUD_ECS_METADATA_DISABLED="true"),
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE": dict(
                base, OSS_CREDENTIALS="oidc",
                **{k: v for k, v in oidc.items() if k != "ALIBABA_CLOUD_OIDC_TOKEN_FILE"}),
            "OSS_BUCKET": dict({k: v for k, v in base.items() if k != "OSS_BUCKET"},
                               OSS_ROLE_POLICY="auto", OSS_CALLBACK_BINDING="0", **ram_role),
            "OSS_CALLBACK_SECRET oidc": dict(no_callback_secret, **oidc),
            "OSS_CALLBACK_SECRET ecs": dict(no_callback_secret, ALIBABA_CLOUD_ECS_METADATA=ECS_ROLE,
                                            OSS_ECS_METADATA_ENDPOINT="http://127.0.0.1:9"),
            "OSS_CALLBACK_SECRET uri": dict(no_callback_secret,
                                            ALIBABA_CLOUD_CREDENTIALS_URI="http://127.0.0.1:9/c"),
        }
        results = {}
        threads = [threading.Thread(target=lambda k=k, env=env: results.__setitem__(
            k, run_appserver(env))) for k, env in cases.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for case, (status, out, err) in sorted(results.items()):
            with self.subTest(case):
                variable = case.split()[0]
                self.assertEqual(status, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn("configuration error", err)
                self.assertRegex(err, r"\b%s\b" % variable)
                self.assertNotIn("Traceback", out + err)
                for value in (STATIC_SECRET, CALLBACK_SECRET):
                    self.assertNotIn(value, out + err)
        self.assertEqual(sorted(results), sorted(cases))


###############################################################################
# The ECS modes
###############################################################################

class EcsModes(unittest.TestCase):

    def test_imdsv1_disabled_refuses_the_normal_mode_when_the_token_endpoint_is_off(self):
        mark = log_mark()
        ecs = started(self.addCleanup, EcsMetadataEmulator(new_store(),
                                                           token_endpoint=False))
        stack = start_stack(self.addCleanup, dict(ecs_env(ecs),
                                                  ALIBABA_CLOUD_IMDSV1_DISABLED="true"))
        stack.provider.start()
        failures = stack.wait_for_failure()
        self.assertTrue(failures)
        self.assertIsInstance(failures[0], appserver.CredentialsError)
        assert_unavailable(self, stack)
        seen = ecs.requests
        self.assertTrue(seen)
        self.assertEqual({(r.method, r.path) for r in seen}, {("PUT", "/latest/api/token")},
                         "with IMDSv1 disabled nothing but the token PUT")
        self.assertTrue(any(r.getMessage().startswith("ecs credentials: ")
                            for r, _ in records_since(mark)))
        assert_no_traceback(self, mark)

    def test_forced_ecs_discovers_the_role_name_from_the_listing(self):
        store = new_store()
        ecs = started(self.addCleanup, EcsMetadataEmulator(store, mode="hardened"))
        config = appserver.config_from_env(dict(base_env(), OSS_CREDENTIALS="ecs",
                                                OSS_ECS_METADATA_ENDPOINT=ecs.url))
        self.assertEqual(config.credentials, "ecs")
        credentials = appserver.fetch_ecs_role(config)
        self.assertTrue(store.is_valid(credentials.access_key_id, credentials.security_token,
                                       credentials.access_key_secret))
        paths = [r.path for r in ecs.requests if r.method == "GET"]
        self.assertEqual(paths, ["/latest/meta-data/ram/security-credentials/",
                                 "/latest/meta-data/ram/security-credentials/" + ECS_ROLE])

    def test_auto_never_contacts_the_metadata_service_without_a_role_name(self):
        ecs = started(self.addCleanup, EcsMetadataEmulator(new_store()))
        for extra in ({}, {"ALIBABA_CLOUD_ECS_METADATA": ECS_ROLE,
                       "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}):
            with self.subTest(extra):
                env = dict(base_env(), OSS_ECS_METADATA_ENDPOINT=ecs.url, **extra)
                stack = start_stack(self.addCleanup, env)
                self.assertEqual(stack.config.credentials, "placeholder")
                self.assertEqual(request(stack.url, "/").status, 200)
        time.sleep(0.2)
        self.assertEqual(ecs.requests, [])


###############################################################################
# The OSS emulator and the credential store
###############################################################################

class OssEmulatorStore(unittest.TestCase):
    """EmulatorServer(credential_store=...) accepts the store's keys, as OSS accepts STS keys."""

    def test_store_keys_sign_v1_and_v4_with_their_token_until_they_expire(self):
        clock = FakeClock(time.time())
        store = new_store(clock)
        oss = start_oss(self.addCleanup, store)
        config = appserver.config_from_env(dict(base_env(oss), OSS_CALLBACK_URL=""))
        held = store.issue(60, "test")
        good = appserver.Credentials(held.access_key_id, held.access_key_secret,
                                     held.security_token, held.expiration)
        for version in ("v1", "v4"):
            with self.subTest(version):
                cfg = dataclasses.replace(config, signature_version=version)
                token = appserver.issue_token(cfg, time.time(), credentials=good)
                self.assertIn(upload(token, "ok.png").status, (200, 204))
                no_token = dict(token)
                no_token.pop("x-oss-security-token")
                self.assertIn(b"InvalidAccessKeyId", upload(no_token, "x.png").body)
                wrong = appserver.issue_token(cfg, time.time(), credentials=dataclasses.replace(
                    good, security_token="CAISwrong"))
                self.assertIn(b"InvalidSecurityToken", upload(wrong, "x.png").body)
                static = appserver.issue_token(cfg, time.time(), credentials=appserver.Credentials(
                    "ak", "sk"))    # the emulator's own fixed key still works
                self.assertIn(upload(static, "static.png").status, (200, 204))
        token = appserver.issue_token(config, time.time(), credentials=good)
        clock.advance(61)
        self.assertIn(b"InvalidAccessKeyId", upload(token, "late.png").body)
        fresh = store.issue(60, "test")
        store.revoke(fresh.access_key_id)
        revoked = appserver.issue_token(config, time.time(), credentials=appserver.Credentials(
            fresh.access_key_id, fresh.access_key_secret, fresh.security_token, fresh.expiration))
        self.assertIn(b"InvalidAccessKeyId", upload(revoked, "revoked.png").body)


###############################################################################
# The provider these tests build is the server's
###############################################################################

class ProviderWiring(unittest.TestCase):

    def test_the_server_builds_the_same_provider_as_these_tests(self):
        url = "http://127.0.0.1:9"
        sts = {"OSS_STS_ENDPOINT": url, "ALIBABA_CLOUD_ROLE_ARN": ROLE_ARN}
        envs = {"oidc": dict(sts, ALIBABA_CLOUD_OIDC_PROVIDER_ARN=PROVIDER_ARN,
                             ALIBABA_CLOUD_OIDC_TOKEN_FILE="/nonexistent/token"),
                "ram_role": dict(sts, OSS_ACCESS_KEY_ID=STATIC_ID,
                                 OSS_ACCESS_KEY_SECRET=STATIC_SECRET),
                "ecs": {"ALIBABA_CLOUD_ECS_METADATA": ECS_ROLE, "OSS_ECS_METADATA_ENDPOINT": url},
                "uri": {"ALIBABA_CLOUD_CREDENTIALS_URI": url + "/c"}}
        for name, env in envs.items():
            with self.subTest(name):
                config = appserver.config_from_env(dict(base_env(), **env))
                self.assertEqual(config.credentials, name)
                if name != "ram_role":   # no AccessKey at all
                    self.assertEqual((config.access_key_id, config.access_key_secret),
                                     (appserver.PLACEHOLDER_ACCESS_KEY_ID,
                                      appserver.PLACEHOLDER_ACCESS_KEY_SECRET))
                made = appserver.App(config).credentials
                ours, fetch = provider_for(config)
                self.addCleanup(fetch.park)
                self.assertEqual((made.name, made.detail, made.margin, made.refreshes),
                                 (ours.name, ours.detail, ours.margin, True))
                self.assertEqual((made.name, made.margin), (name, MARGIN))


###############################################################################
# Session policy and the OIDC token file
###############################################################################

def assert_upload_folder_policy(test, policy, resource):
    """Exactly oss:PutObject and oss:GetObject, allowed on ``resource`` alone."""
    test.assertIsInstance(policy, dict)
    test.assertEqual(set(policy), {"Version", "Statement"}, policy)
    test.assertEqual(policy["Version"], "1")
    statements = policy["Statement"]
    test.assertEqual(len(statements), 1, policy)
    statement = statements[0]
    test.assertEqual(set(statement), {"Effect", "Action", "Resource"}, policy)
    test.assertEqual(statement["Effect"], "Allow")
    actions = statement["Action"]
    test.assertEqual(sorted([actions] if isinstance(actions, str) else actions),
                     ["oss:GetObject", "oss:PutObject"])
    resources = statement["Resource"]
    test.assertEqual([resources] if isinstance(resources, str) else resources, [resource])


class SessionPolicy(unittest.TestCase):

    def setUp(self):
        self.sts = started(self.addCleanup, sts_emulator(new_store()))
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.sts.oidc_token = new_oidc_token()
        self.token_file = write_token_file(os.path.join(folder.name, "token"),
                                           self.sts.oidc_token)

    def fetch(self, provider, **env):
        env = dict(base_env(), **(ram_role_env(self.sts) if provider == "ram_role"
                                  else oidc_env(self.sts, self.token_file)), **env)
        config = appserver.config_from_env(env)
        self.assertEqual(config.credentials, provider)
        credentials = appserver.FETCHERS[provider](config)
        self.assertEqual(credentials.access_key_id,
                         self.sts.last_call.credential.access_key_id)
        return self.sts.last_call

    def test_auto_allows_put_and_get_on_the_upload_folder_for_both_sts_actions(self):
        for provider in ("ram_role", "oidc"):
            with self.subTest(provider):
                for env in ({}, {"OSS_ROLE_POLICY": "auto"}):
                    call = self.fetch(provider, **env)
                    self.assertIn("Policy", call.params)
                    assert_upload_folder_policy(self, call.policy,
                                                "acs:oss:*:*:%s/uploads/*" % BUCKET)

    def test_auto_cuts_the_resource_at_the_user_placeholder(self):
        for provider in ("ram_role", "oidc"):
            with self.subTest(provider):
                call = self.fetch(provider, OSS_UPLOAD_DIR="uploads/{user}/",
                                  OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=TICKET_SECRET)
                assert_upload_folder_policy(self, call.policy,
                                            "acs:oss:*:*:%s/uploads/*" % BUCKET)
                call = self.fetch(provider, OSS_UPLOAD_DIR="site/a/{user}/x/",
                                  OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=TICKET_SECRET)
                assert_upload_folder_policy(self, call.policy,
                                            "acs:oss:*:*:%s/site/a/*" % BUCKET)

    def test_none_passes_no_policy(self):
        for provider in ("ram_role", "oidc"):
            with self.subTest(provider):
                call = self.fetch(provider, OSS_ROLE_POLICY="none")
                self.assertNotIn("Policy", call.params)
                self.assertIsNone(call.policy)

    def test_the_oidc_token_file_is_read_afresh_at_each_fetch(self):
        first = self.sts.oidc_token
        self.assertEqual(self.fetch("oidc").params["OIDCToken"], first)
        second = new_oidc_token()
        write_token_file(self.token_file, second)
        self.sts.oidc_token = second
        self.assertEqual(self.fetch("oidc").params["OIDCToken"], second)
        self.assertEqual(len(self.sts.calls), 2)


###############################################################################
# Leaks
###############################################################################

class Leaks(unittest.TestCase):

    def test_no_secret_or_oidc_token_leaks_and_the_sts_token_is_only_in_upload_tokens(self):
        mark = log_mark()
        store = new_store()
        oss = start_oss(self.addCleanup, store)
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        sts = started(self.addCleanup, sts_emulator(store, oidc_token=new_oidc_token(),
                                                    echo_string_to_sign=True))
        token_file = write_token_file(os.path.join(folder.name, "token"), sts.oidc_token)
        ecs = started(self.addCleanup, EcsMetadataEmulator(store, mode="hardened"))
        uri = started(self.addCleanup, CredentialsUriEmulator(store))
        down = started(self.addCleanup, EcsMetadataEmulator(store))
        stacks = {"oidc": start_stack(self.addCleanup, oidc_env(sts, token_file), oss),
                  "ram_role": start_stack(self.addCleanup, ram_role_env(sts), oss),
                  "ecs": start_stack(self.addCleanup, ecs_env(ecs), oss),
                  "uri": start_stack(self.addCleanup, uri_env(uri), oss)}
        for stack in stacks.values():
            self.assertTrue(stack.provider.wait_ready(5))
        wrong = start_stack(self.addCleanup, ram_role_env(sts, secret=WRONG_SECRET))
        wrong.provider.start()
        down.stop()
        gone = start_stack(self.addCleanup, ecs_env(down))
        gone.provider.start()
        for name, stack in stacks.items():
            with self.subTest(name):
                self.assertTrue(token_and_upload(stack, store, name + ".png").uploaded)
                representative_requests(stack)
        for stack in (wrong, gone):
            self.assertTrue(stack.wait_for_failure())
            assert_unavailable(self, stack)
            representative_requests(stack)

        # STS echoes its string to sign on a wrong signature; the server says only the Code.
        echoed = request(sts.url, "/?" + urllib.parse.urlencode(sign_rpc_request(
            dict(wrong_call_params(), AccessKeyId=STATIC_ID), WRONG_SECRET)), evidence=False)
        self.assertIn(b"string to sign", echoed.body)
        error = str(wrong.fetch.failures()[0])
        self.assertIn("SignatureDoesNotMatch", error)
        logged = "\n".join(line for _, line in records_since(mark))
        self.assertIn("ram_role credentials: " + error, logged)
        for text in (error, logged, "\n".join(EVIDENCE.errors())):
            self.assertNotIn("string to sign", text)
            self.assertNotIn("%2F&", text)
            self.assertNotIn("SignatureNonce", text)
        assert_no_traceback(self, mark)
        self.assertEqual(leak_findings(), [])


def wrong_call_params():
    return {"Action": "AssumeRole", "RoleArn": ROLE_ARN, "RoleSessionName": "leak-check",
            "Format": "JSON", "Version": "2015-04-01", "SignatureMethod": "HMAC-SHA1",
            "SignatureVersion": "1.0", "SignatureNonce": secrets.token_hex(8),
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


###############################################################################
# python appserver.py with the ECS role
###############################################################################

class Startup(unittest.TestCase):

    def test_startup_names_the_provider_and_role_never_a_secret_and_sigterm_stops_it(self):
        store = new_store()
        ecs = started(self.addCleanup, EcsMetadataEmulator(store, mode="hardened"))
        env = clean_env(dict(base_env(), **ecs_env(ecs)))
        process = subprocess.Popen([sys.executable, "appserver.py", "127.0.0.1", "0"], cwd=REPO,
                                   env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        self.addCleanup(lambda: process.poll() is None and process.kill())
        out, err = [], []
        readers = [threading.Thread(target=lambda s=s, d=d: d.extend(iter(s.readline, b"")),
                                    daemon=True)
                   for s, d in ((process.stdout, out), (process.stderr, err))]
        for reader in readers:
            reader.start()
        until = time.monotonic() + 15
        while not any(b"callback:" in line for line in out) and time.monotonic() < until \
                and process.poll() is None:
            time.sleep(0.05)
        banner = b"".join(out).decode()
        port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", banner)
        self.assertTrue(port, banner + b"".join(err).decode())
        url = "http://127.0.0.1:" + port.group(1)
        credentials_line = re.search(r"credentials:.*", banner)
        self.assertTrue(credentials_line, banner)
        self.assertRegex(credentials_line.group(0), r"\becs\b")
        self.assertIn(ECS_ROLE, credentials_line.group(0))
        reply = wait_for_status(url, 200, 10)
        self.assertEqual(reply.status, 200, reply.body)
        token = reply.json()
        credential = store.lookup(token["accessid"])
        self.assertIsNotNone(credential)
        self.assertEqual(token["x-oss-security-token"], credential.security_token)
        process.send_signal(signal.SIGTERM)
        self.assertEqual(process.wait(15), 0)
        for reader in readers:
            reader.join(5)
        output = b"".join(out) + b"".join(err)
        EVIDENCE.add("outputs", output)
        self.assertNotIn(b"Traceback", output)
        for issued in store.issued:
            for value in (issued.access_key_secret, issued.security_token):
                for form in forms(value):
                    self.assertNotIn(form, output)
        for form in forms(CALLBACK_SECRET):
            self.assertNotIn(form, output)


###############################################################################
# The timed scenarios
###############################################################################

class TimedOutage(unittest.TestCase):

    def check_outage(self, scenario):
        scenario.outcome(self)
        self.assertTrue(scenario.before.uploaded, str(scenario.before))
        self.assertEqual(scenario.before.problems, ())
        *served, (last_at, last, _) = scenario.while_down
        self.assertTrue(served, "no token was issued once the service stopped")
        self.assertTrue(all(o.status == 200 for _, o, _ in served),
                        [str(o) for _, o, _ in served if o.status != 200])
        self.assertEqual(last.status, 503, "tokens never stopped: %s" % last)
        # Tokens kept coming after refreshes had failed, and uploads with them succeeded.
        self.assertTrue(any(failures for _, o, failures in served))
        self.assertIsNotNone(scenario.after_failure)
        self.assertTrue(scenario.after_failure.uploaded, str(scenario.after_failure))
        self.assertEqual(scenario.after_failure.problems, ())
        # They stopped only when the credentials ran low: less than margin + 10 s left.
        held = scenario.store.lookup(served[-1][1].access_key_id)
        left = held.expiration - last_at
        self.assertLess(left, MARGIN + MIN_TOKEN_SECONDS + 1.5,
                        "503 with %.1f s of the credentials left" % left)
        for path in ("/", "/readyz"):
            reply = scenario.low[path]
            self.assertEqual(reply.status, 503, path)
            self.assertEqual(reply.json(), UNAVAILABLE)
            self.assertTrue(reply.headers.get("retry-after", "").isdigit())
        self.assertEqual(scenario.low["/healthz"].status, 200)
        # Back by itself, no restart.
        self.assertLess(scenario.recovered_after, 25)
        self.assertTrue(scenario.after.uploaded, str(scenario.after))
        self.assertEqual(scenario.after.problems, ())
        self.assertNotEqual(scenario.after.access_key_id, scenario.before.access_key_id)
        self.assertEqual(scenario.health.status, 200)
        failures = scenario.stack.fetch.failures()
        self.assertTrue(failures and all(isinstance(f, appserver.CredentialsError)
                                         for f in failures), failures)

    def test_metadata_service_outage_tokens_until_low_then_503_then_recovery(self):
        self.check_outage(SCENARIOS["ecs-outage"])

    def test_sts_outage_tokens_until_low_then_503_then_recovery(self):
        self.check_outage(SCENARIOS["sts-outage"])


class TimedRotation(unittest.TestCase):

    def setUp(self):
        self.scenario = SCENARIOS["rotation"].outcome(self)

    def test_every_provider_keeps_uploading_while_its_credentials_rotate(self):
        scenario = self.scenario
        for name in scenario.NAMES:
            with self.subTest(name):
                stack, outcomes = scenario.stacks[name], scenario.outcomes[name]
                if name != "ram_role":
                    self.assertEqual(stack.config.access_key_id,
                                     appserver.PLACEHOLDER_ACCESS_KEY_ID, "started with a key")
                self.assertEqual(stack.config.credentials, name.split("_normal")[0])
                bad = [str(o) for o in outcomes if not o.uploaded or o.problems
                       or o.readyz != 200]
                self.assertEqual(bad, [], "%d of %d rounds" % (len(bad), len(outcomes)))
                keys = scenario.keys_used(name)
                self.assertGreater(len(keys), ROTATIONS, "credentials did not rotate")
                for key in keys:
                    self.assertEqual(scenario.store.lookup(key).source, SOURCES[name])
                self.assertEqual(stack.fetch.failures(), [])

    def test_ecs_uses_the_hardened_mode_and_falls_back_to_the_normal_mode(self):
        hardened = self.scenario.ecs.requests
        self.assertTrue(any(r.method == "PUT" for r in hardened))
        for r in hardened:
            if r.method == "PUT":
                self.assertEqual(r.path, "/latest/api/token")
                self.assertRegex(r.headers.get("x-aliyun-ecs-metadata-token-ttl-seconds", ""),
                                 r"^[0-9]+$")
            else:
                self.assertIn("x-aliyun-ecs-metadata-token", r.headers, r.path)
        normal = self.scenario.ecs_normal.requests
        self.assertTrue(any(r.method == "PUT" for r in normal))
        gets = [r for r in normal if r.method == "GET"]
        self.assertTrue(gets)
        self.assertTrue(all("x-aliyun-ecs-metadata-token" not in r.headers for r in gets))

    def test_the_oidc_token_file_is_read_afresh_and_the_next_refresh_succeeds(self):
        scenario = self.scenario
        self.assertIsNotNone(scenario.oidc_switched_at)
        calls = [c for c in scenario.sts.calls if c.action == "AssumeRoleWithOIDC"]
        used = [c.params["OIDCToken"] for c in calls]
        self.assertEqual(used[0], scenario.oidc_tokens[0])
        self.assertEqual(used[-1], scenario.oidc_tokens[1])
        self.assertEqual(sorted(set(used)), sorted(scenario.oidc_tokens))

    def test_both_sts_actions_carry_the_upload_folder_session_policy(self):
        calls = self.scenario.sts.calls
        self.assertEqual({c.action for c in calls}, {"AssumeRole", "AssumeRoleWithOIDC"})
        for call in calls:
            assert_upload_folder_policy(self, call.policy, "acs:oss:*:*:%s/uploads/*" % BUCKET)
            self.assertEqual(call.params["RoleArn"], ROLE_ARN)

    def test_nothing_in_this_module_leaked_a_secret_or_an_sts_token(self):
        for scenario in SCENARIOS.values():
            scenario.outcome(self)
        self.assertEqual(leak_findings(), [])


class TimedShortLived(unittest.TestCase):

    def test_credentials_that_live_24_s_are_renewed_before_tokens_stop(self):
        scenario = SCENARIOS["short-lived"].outcome(self)
        refused = [o for o in scenario.outcomes if o.status != 200]
        self.assertEqual([str(o) for o in refused[:3]], [],
                         "%d of %d token requests refused while the metadata service was up"
                         % (len(refused), len(scenario.outcomes)))
        self.assertEqual([str(o) for o in scenario.outcomes if not o.uploaded or o.problems], [])
        self.assertGreaterEqual(len({o.access_key_id for o in scenario.outcomes if o.uploaded}),
                                3)


if __name__ == "__main__":
    unittest.main()
