"""Who may get a token: OSS_TOKEN_AUTH none, hmac (Bearer tickets), header (an authenticating
proxy), and the App(config, authorize=fn) hook; the settings they need; CORS origin lists; the
startup warning; and the README's Python snippet that mints a ticket.

Every ticket here is minted by the test itself from the documented format (hmac, hashlib and
base64 only): `<user>.<expiry>.<mac>`, mac = unpadded base64url of
HMAC-SHA256(secret, "oss-upload-ticket.v1.<user>.<expiry>"). Nothing the server computes is
used as an expected value.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

import appserver
from tests.support import (REPO, AppServerTestCase, FakeClock, assert_json_error, env_config,
                           free_port, mint_ticket, one_response, request_bytes)

SECRET = "ticket-secret-of-the-main-application-0123456789"   # 48 bytes
OTHER_SECRET = "another-secret-that-is-long-enough-for-hmac-keys"
TOKEN_KEYS = ("accessid", "policy", "signature", "x-oss-signature", "callback", "dir")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def policy_of(token):
    return json.loads(base64.b64decode(token["policy"], validate=True))


def key_conditions(token):
    return [c for c in policy_of(token)["conditions"]
            if isinstance(c, list) and len(c) == 3 and c[1] == "$key"]


def run_cli(*args, env=None, timeout=30):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
    environ.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "appserver.py"), *args], env=environ,
                          capture_output=True, text=True, timeout=timeout)


class TokenAuthTestCase(AppServerTestCase):
    def get_token(self, headers=None):
        """(status, response, body) of GET / with ``headers``."""
        return self.request("GET", "/", headers=headers or {})

    def assert_token(self, status, resp, body, user_dir):
        self.assertEqual(status, 200, body[:300])
        token = json.loads(body)
        self.assertEqual(token["dir"], user_dir)
        self.assertEqual(key_conditions(token), [["starts-with", "$key", user_dir]])
        return token

    def assert_refused(self, status, resp, body, expected=401):
        """A refusal: the status, the error JSON, no token, and for 401 the Bearer challenge."""
        document = assert_json_error(self, status, resp, body, expected)
        self.assertEqual(set(document), {"Status", "Message"})
        for key in TOKEN_KEYS:
            self.assertNotIn(key.encode(), body)
        if expected == 401:
            self.assertEqual(resp.getheader("WWW-Authenticate"), "Bearer")
        return document


class HmacTickets(TokenAuthTestCase):
    def setUp(self):
        self.start_server(env_config(OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=SECRET,
                                     OSS_UPLOAD_DIR="uploads/{user}/"))

    def bearer(self, ticket):
        return {"Authorization": "Bearer " + ticket}

    def test_a_good_ticket_gets_a_token_pinned_to_the_users_folder(self):
        for user in ("alice", "Bob_2", "x" * 64, "-_-"):
            with self.subTest(user=user):
                ticket = mint_ticket(SECRET, user, int(time.time()) + 600)
                self.assert_token(*self.get_token(self.bearer(ticket)), "uploads/%s/" % user)

    def test_the_scheme_name_is_case_insensitive(self):
        ticket = mint_ticket(SECRET, "alice", int(time.time()) + 600)
        self.assert_token(*self.get_token({"Authorization": "bearer " + ticket}),
                          "uploads/alice/")

    def test_a_ticket_up_to_24_hours_ahead_is_accepted(self):
        ticket = mint_ticket(SECRET, "alice", int(time.time()) + 24 * 3600 - 60)
        self.assert_token(*self.get_token(self.bearer(ticket)), "uploads/alice/")

    def test_refused_tickets_get_401_with_the_bearer_challenge_and_no_token(self):
        now = int(time.time())
        good = mint_ticket(SECRET, "alice", now + 600)
        user, expiry, mac = good.split(".")
        flipped = ("B" if mac[0] == "A" else "A") + mac[1:]
        cases = {
            "expired": mint_ticket(SECRET, "alice", now - 5),
            "expired long ago": mint_ticket(SECRET, "alice", 1),
            "user changed": "bob.%s.%s" % (expiry, mac),
            "expiry changed": "alice.%d.%s" % (now + 700, mac),
            "mac changed": "alice.%s.%s" % (expiry, flipped),
            "mac padded": good + "=",
            "mac standard base64": "alice.%s.%s" % (expiry, base64.b64encode(
                base64.urlsafe_b64decode(mac + "=")).decode()),
            "wrong secret": mint_ticket(OTHER_SECRET, "alice", now + 600),
            "secret without the purpose label": "alice.%s.%s" % (expiry, b64url(hmac.new(
                SECRET.encode(), ("alice.%s" % expiry).encode(), hashlib.sha256).digest())),
            "user with a space": mint_ticket(SECRET, "al ice", now + 600),
            "user with a dot": mint_ticket(SECRET, "al.ice", now + 600),
            "user with a slash": mint_ticket(SECRET, "../bob", now + 600),
            "user of 65 characters": mint_ticket(SECRET, "x" * 65, now + 600),
            "empty user": mint_ticket(SECRET, "", now + 600),
            "non-ASCII user": mint_ticket(SECRET, "al\u00efce", now + 600),
            "expiry of 13 digits": mint_ticket(SECRET, "alice", 10 ** 12 + now),
            "far future (24 h + 2 min)": mint_ticket(SECRET, "alice", now + 24 * 3600 + 120),
            "far future (a year)": mint_ticket(SECRET, "alice", now + 365 * 86400),
            "empty ticket": "",
            "two parts": "alice.%s" % expiry,
            "four parts": good + ".x",
        }
        for name, ticket in cases.items():
            with self.subTest(name):
                headers = {"Authorization": ("Bearer " + ticket).encode("utf-8")
                           .decode("latin-1")}
                self.assert_refused(*self.get_token(headers))

    def test_a_missing_header_or_another_scheme_gets_401(self):
        ticket = mint_ticket(SECRET, "alice", int(time.time()) + 600)
        for name, headers in {"no header": {},
                              "Basic": {"Authorization": "Basic " + base64.b64encode(
                                  b"alice:pw").decode()},
                              "Token": {"Authorization": "Token " + ticket},
                              "no scheme": {"Authorization": ticket},
                              "scheme glued to the ticket": {"Authorization": "Bearer" + ticket},
                              "ticket in the query": {}}.items():
            with self.subTest(name):
                target = "/?ticket=" + ticket if name == "ticket in the query" else "/"
                self.assert_refused(*self.request("GET", target, headers=headers))

    def test_two_authorization_headers_get_401(self):
        ticket = mint_ticket(SECRET, "alice", int(time.time()) + 600)
        status, headers, body = one_response(self.port, request_bytes(
            "GET", "/", [("Authorization", "Bearer " + ticket),
                         ("Authorization", "Bearer " + ticket), ("Connection", "close")]))
        assert_json_error(self, status, headers, body, 401)
        self.assertEqual(headers["www-authenticate"], ["Bearer"])
        self.assertNotIn(b"policy", body)

    def test_a_ticket_that_worked_is_refused_once_it_has_expired(self):
        clock = FakeClock(time.time())
        config = env_config(OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=SECRET,
                            OSS_UPLOAD_DIR="uploads/{user}/")
        self.start_server(config, app=appserver.App(config, clock=clock))
        ticket = mint_ticket(SECRET, "alice", int(clock()) + 60)
        self.assert_token(*self.get_token(self.bearer(ticket)), "uploads/alice/")
        clock.advance(61)
        document = self.assert_refused(*self.get_token(self.bearer(ticket)))
        self.assertIn("expired", document["Message"])
        # A forged twin of the ticket that worked is still a forgery.
        user, expiry, mac = ticket.split(".")
        self.assert_refused(*self.get_token(self.bearer("%s.%d.%s" % (user, int(expiry) + 60,
                                                                      mac))))

    def test_a_refused_ticket_is_not_a_server_error(self):
        self.get_token(self.bearer("alice.1.%s" % ("A" * 43)))
        self.assertEqual(self.logs.tracebacks(), [])


class ProxyHeader(TokenAuthTestCase):
    HEADER = "X-Auth-Request-User"

    def start(self, **environ):
        self.start_server(env_config(OSS_TOKEN_AUTH="header", OSS_TOKEN_AUTH_HEADER=self.HEADER,
                                     OSS_UPLOAD_DIR="uploads/{user}/", **environ))

    def test_a_trusted_peer_with_the_header_gets_a_token_for_that_user(self):
        self.start()   # default OSS_TRUSTED_PROXIES: loopback, and the test connects from it
        self.assert_token(*self.get_token({self.HEADER: "carol"}), "uploads/carol/")
        self.assert_token(*self.get_token({self.HEADER.lower(): "dave_9"}), "uploads/dave_9/")

    def test_an_explicitly_trusted_loopback_network_works_too(self):
        self.start(OSS_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1/32")
        self.assert_token(*self.get_token({self.HEADER: "carol"}), "uploads/carol/")

    def test_an_untrusted_peer_gets_401_even_with_the_header(self):
        self.start(OSS_TRUSTED_PROXIES="10.0.0.0/8")
        self.assert_refused(*self.get_token({self.HEADER: "carol"}))
        # X-Forwarded-For naming a trusted address does not make the peer trusted.
        self.assert_refused(*self.get_token({self.HEADER: "carol",
                                             "X-Forwarded-For": "10.1.2.3"}))

    def test_a_missing_header_gets_401(self):
        self.start()
        self.assert_refused(*self.get_token())
        self.assert_refused(*self.get_token({"X-Forwarded-User": "carol"}))

    def test_bad_user_syntax_gets_401(self):
        self.start()
        for user in ("car ol", "../carol", "carol/x", "x" * 65, "", "c{user}", "caröl"):
            with self.subTest(user=user):
                self.assert_refused(*self.get_token(
                    {self.HEADER: user.encode("utf-8").decode("latin-1")}))

    def test_two_user_headers_get_401(self):
        self.start()
        status, headers, body = one_response(self.port, request_bytes(
            "GET", "/", [(self.HEADER, "carol"), (self.HEADER, "mallory"),
                         ("Connection", "close")]))
        assert_json_error(self, status, headers, body, 401)
        self.assertNotIn(b"policy", body)


class AuthorizeHook(TokenAuthTestCase):
    """App(config, authorize=fn): fn gets the request and returns a Grant or refuses."""

    def start(self, authorize, **environ):
        config = env_config(OSS_UPLOAD_DIR="uploads/", **environ)
        self.start_server(config, app=appserver.App(config, authorize=authorize))

    def test_a_grant_under_the_upload_dir_gets_a_token_with_its_folder_size_and_types(self):
        seen = []

        def authorize(request):
            seen.append(request)
            return appserver.Grant("dave", "uploads/team-7/dave/", 1234, ("image/png",))

        self.start(authorize)
        status, resp, body = self.get_token({"X-Session": "s-1"})
        token = self.assert_token(status, resp, body, "uploads/team-7/dave/")
        conditions = policy_of(token)["conditions"]
        self.assertIn(["content-length-range", 0, 1234], conditions)
        self.assertIn(["in", "$x-oss-content-type", ["image/png"]], conditions)
        self.assertEqual(token["contentTypes"], ["image/png"])
        (request,) = seen
        self.assertEqual((request.method, request.path, request.peer), ("GET", "/", "127.0.0.1"))
        self.assertEqual(request.headers["x-session"], ["s-1"])
        self.assertLess(abs(request.now - time.time()), 60)

    def test_unauthorized_gives_401_and_forbidden_gives_403(self):
        def authorize(request):
            if "x-session" not in request.headers:
                raise appserver.Unauthorized("sign in first")
            raise appserver.Forbidden("uploads are closed for you")

        self.start(authorize)
        document = self.assert_refused(*self.get_token(), expected=401)
        self.assertEqual(document["Message"], "sign in first")
        status, resp, body = self.get_token({"X-Session": "s-1"})
        document = self.assert_refused(status, resp, body, expected=403)
        self.assertEqual(document["Message"], "uploads are closed for you")

    def test_a_folder_outside_the_upload_dir_is_a_500_with_an_incident_id_and_no_token(self):
        for folder in ("elsewhere/", "uploads", "uploads/../secret/", "upload/", "/uploads/x/",
                       "uploads/{user}/"):
            with self.subTest(folder=folder):
                self.start(lambda request: appserver.Grant("dave", folder, 1000))
                status, resp, body = self.get_token()
                document = self.assert_refused(status, resp, body, expected=500)
                incident = re.fullmatch(r"internal error \(incident ([0-9a-f]{12})\)",
                                        document["Message"])
                self.assertIsNotNone(incident, document)
                self.assertIn(incident.group(1), "\n".join(self.logs.tracebacks()))

    def test_other_bad_grants_are_500s_too(self):
        for grant in (appserver.Grant("bad user", "uploads/x/", 1000),
                      appserver.Grant("dave", "uploads/x/", -1),
                      appserver.Grant("dave", "uploads/x/", True),
                      appserver.Grant("dave", "uploads/x/", 10, ("",))):
            with self.subTest(grant=grant):
                self.start(lambda request: grant)
                self.assert_refused(*self.get_token(), expected=500)

    def test_a_bad_grant_is_refused_every_time_not_only_the_first(self):
        self.start(lambda request: appserver.Grant("dave", "elsewhere/", 1000))
        for _ in range(3):
            self.assert_refused(*self.get_token(), expected=500)

    def test_a_grant_with_a_list_of_types_is_checked_and_works_every_time(self):
        self.start(lambda request: appserver.Grant("dave", "uploads/d/", 10, ["image/png"]))
        for _ in range(2):
            token = self.assert_token(*self.get_token(), "uploads/d/")
            self.assertEqual(token["contentTypes"], ["image/png"])

    def test_a_grant_without_a_user_is_fine(self):
        self.start(lambda request: appserver.Grant(None, "uploads/", 10))
        self.assert_token(*self.get_token(), "uploads/")


class Settings(unittest.TestCase):
    def assert_config_error(self, variable, **environ):
        with self.assertRaises(appserver.ConfigError) as caught:
            env_config(**environ)
        self.assertEqual(caught.exception.variable, variable)
        self.assertIn(variable, str(caught.exception))
        return caught.exception

    def test_hmac_needs_a_secret_of_at_least_32_bytes(self):
        self.assert_config_error("OSS_TOKEN_AUTH_SECRET", OSS_TOKEN_AUTH="hmac")
        error = self.assert_config_error("OSS_TOKEN_AUTH_SECRET", OSS_TOKEN_AUTH="hmac",
                                         OSS_TOKEN_AUTH_SECRET="s" * 31)
        self.assertNotIn("s" * 31, str(error))
        self.assertEqual(env_config(OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET="s" * 32)
                         .token_auth_secret, "s" * 32)
        # Bytes, not characters: 16 two-byte characters are 32 bytes.
        self.assertEqual(env_config(OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET="\u00e9" * 16)
                         .token_auth_secret, "\u00e9" * 16)
        self.assert_config_error("OSS_TOKEN_AUTH_SECRET", OSS_TOKEN_AUTH="hmac",
                                 OSS_TOKEN_AUTH_SECRET="\u00e9" * 15 + "x")

    def test_header_mode_needs_the_header_name(self):
        self.assert_config_error("OSS_TOKEN_AUTH_HEADER", OSS_TOKEN_AUTH="header")
        self.assert_config_error("OSS_TOKEN_AUTH_HEADER", OSS_TOKEN_AUTH="header",
                                 OSS_TOKEN_AUTH_HEADER="X Bad Header")

    def test_a_user_folder_needs_a_mode_that_knows_the_user(self):
        self.assert_config_error("OSS_UPLOAD_DIR", OSS_UPLOAD_DIR="uploads/{user}/")
        self.assert_config_error("OSS_UPLOAD_DIR", OSS_TOKEN_AUTH="none",
                                 OSS_UPLOAD_DIR="uploads/{user}/")
        self.assert_config_error("OSS_UPLOAD_DIR", OSS_TOKEN_AUTH="hmac",
                                 OSS_TOKEN_AUTH_SECRET=SECRET,
                                 OSS_UPLOAD_DIR="uploads/{user}/{user}/")
        self.assertEqual(env_config(OSS_TOKEN_AUTH="header", OSS_TOKEN_AUTH_HEADER="X-User",
                                    OSS_UPLOAD_DIR="uploads/{user}/").upload_dir,
                         "uploads/{user}/")

    def test_an_unknown_mode_is_refused(self):
        self.assert_config_error("OSS_TOKEN_AUTH", OSS_TOKEN_AUTH="jwt")

    def test_the_command_line_exits_2_naming_the_variable(self):
        cases = [("OSS_TOKEN_AUTH_SECRET", {"OSS_TOKEN_AUTH": "hmac"}),
                 ("OSS_TOKEN_AUTH_SECRET", {"OSS_TOKEN_AUTH": "hmac",
                                            "OSS_TOKEN_AUTH_SECRET": "short-secret-value"}),
                 ("OSS_TOKEN_AUTH_HEADER", {"OSS_TOKEN_AUTH": "header"}),
                 ("OSS_UPLOAD_DIR", {"OSS_UPLOAD_DIR": "uploads/{user}/"})]
        for variable, env in cases:
            with self.subTest(variable=variable, env=env):
                result = run_cli("127.0.0.1", str(free_port()), env=env)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn("configuration error", result.stderr)
                self.assertIn(variable, result.stderr)
                self.assertNotIn("short-secret-value", result.stderr + result.stdout)


class Cors(TokenAuthTestCase):
    A, B, C = "https://a.example.com", "http://b.example.org:8443", "https://c.example.com"

    def test_a_listed_origin_is_echoed_with_credentials_and_vary(self):
        self.start_server(env_config(OSS_CORS_ORIGIN="%s, %s" % (self.A, self.B)))
        for origin in (self.A, self.B):
            with self.subTest(origin=origin):
                status, resp, body = self.get_token({"Origin": origin})
                self.assertEqual(status, 200)
                self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), origin)
                self.assertEqual(resp.getheader("Access-Control-Allow-Credentials"), "true")
                self.assertIn("Origin", [v.strip() for v in
                                         ",".join(resp.headers.get_all("Vary")).split(",")])

    def test_an_unlisted_origin_gets_no_allow_origin(self):
        self.start_server(env_config(OSS_CORS_ORIGIN="%s,%s" % (self.A, self.B)))
        for origin in (self.C, "null", self.A + ".evil.example", self.A + "/", ""):
            with self.subTest(origin=origin):
                status, resp, body = self.get_token({"Origin": origin} if origin else {})
                self.assertEqual(status, 200)   # CORS is the browser's gate; curl still works
                self.assertIsNone(resp.getheader("Access-Control-Allow-Origin"))
                self.assertIsNone(resp.getheader("Access-Control-Allow-Credentials"))
                self.assertIn("Origin", resp.getheader("Vary", ""))

    def test_star_never_carries_credentials(self):
        self.start_server(env_config(OSS_CORS_ORIGIN="*"))
        for headers in ({"Origin": self.A}, {}):
            status, resp, _ = self.get_token(headers)
            self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), "*")
            self.assertIsNone(resp.getheader("Access-Control-Allow-Credentials"))
        status, resp, _ = self.request("OPTIONS", "/", headers={
            "Origin": self.A, "Access-Control-Request-Method": "GET"})
        self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), "*")
        self.assertIsNone(resp.getheader("Access-Control-Allow-Credentials"))

    def test_preflight_allows_the_authorization_header(self):
        self.start_server(env_config(OSS_CORS_ORIGIN=self.A, OSS_TOKEN_AUTH="hmac",
                                     OSS_TOKEN_AUTH_SECRET=SECRET))
        status, resp, _ = self.request("OPTIONS", "/", headers={
            "Origin": self.A, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        self.assertIn(status, (200, 204))
        self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), self.A)
        self.assertEqual(resp.getheader("Access-Control-Allow-Credentials"), "true")
        allowed = [h.strip().lower() for h in
                   resp.getheader("Access-Control-Allow-Headers", "").split(",")]
        self.assertIn("authorization", allowed)
        self.assertIn("GET", resp.getheader("Access-Control-Allow-Methods", ""))

    def test_a_refusal_is_readable_by_a_listed_origin(self):
        # The page must see the 401 to show "sign in to upload" instead of a network error.
        self.start_server(env_config(OSS_CORS_ORIGIN=self.A, OSS_TOKEN_AUTH="hmac",
                                     OSS_TOKEN_AUTH_SECRET=SECRET))
        status, resp, body = self.get_token({"Origin": self.A})
        self.assert_refused(status, resp, body)
        self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), self.A)
        self.assertEqual(resp.getheader("Access-Control-Allow-Credentials"), "true")
        ticket = mint_ticket(SECRET, "alice", int(time.time()) + 600)
        status, resp, _ = self.get_token({"Origin": self.A, "Authorization": "Bearer " + ticket})
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("Access-Control-Allow-Origin"), self.A)

    def test_a_bad_origin_list_is_a_config_error(self):
        for value in ("https://a.example.com,*", "a.example.com", "https://a.example.com/path"):
            with self.subTest(value=value):
                with self.assertRaises(appserver.ConfigError) as caught:
                    env_config(OSS_CORS_ORIGIN=value)
                self.assertEqual(caught.exception.variable, "OSS_CORS_ORIGIN")


class StartupWarning(unittest.TestCase):
    def test_listen_warnings_name_auth_none_on_a_non_loopback_address(self):
        none = env_config()
        for host in ("0.0.0.0", "::", "192.0.2.10", "2001:db8::1", "app.example.com"):
            with self.subTest(host=host):
                (warning,) = appserver.listen_warnings(none, host)
                self.assertIn("OSS_TOKEN_AUTH=none", warning)
        for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost"):
            with self.subTest(host=host):
                self.assertEqual(appserver.listen_warnings(none, host), [])
        for config in (env_config(OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=SECRET),
                       env_config(OSS_TOKEN_AUTH="header", OSS_TOKEN_AUTH_HEADER="X-User")):
            with self.subTest(mode=config.token_auth):
                self.assertEqual(appserver.listen_warnings(config, "0.0.0.0"), [])

    def test_the_startup_log_warns_when_main_is_asked_for_all_interfaces(self):
        # main() is asked for 0.0.0.0; make_server is wrapped to bind loopback instead, so
        # the test opens nothing beyond 127.0.0.1 while main decides and warns as for 0.0.0.0.
        port = free_port()
        script = ("import sys, appserver\n"
                  "real = appserver.make_server\n"
                  "appserver.make_server = lambda config, host, port, **options: "
                  "real(config, '127.0.0.1', port, **options)\n"
                  "sys.exit(appserver.main(['0.0.0.0', sys.argv[1]]))\n")
        for env, warned in (({}, True),
                            ({"OSS_TOKEN_AUTH": "hmac", "OSS_TOKEN_AUTH_SECRET": SECRET}, False)):
            with self.subTest(env=env):
                output = self.run_until_listening(script, port, env)
                self.assertEqual("OSS_TOKEN_AUTH=none on 0.0.0.0" in output, warned, output)

    def run_until_listening(self, script, port, env):
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_"))}
        environ.update(env, PYTHONUNBUFFERED="1")
        process = subprocess.Popen([sys.executable, "-c", script, str(port)], cwd=REPO,
                                   env=environ, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        lines = []
        try:
            deadline = time.monotonic() + 20
            for line in process.stdout:
                lines.append(line)
                if "listening on" in line or time.monotonic() > deadline:
                    break
        finally:
            process.send_signal(signal.SIGTERM)
            rest, _ = process.communicate(timeout=20)
        output = "".join(lines) + rest
        self.assertIn("listening on", output)
        return output


class ReadmeSnippet(TokenAuthTestCase):
    """The README's Python snippet for minting a ticket, run as written."""

    @staticmethod
    def snippet():
        """The first ```python block after a heading that contains "Minting a ticket", and
        before the next heading."""
        lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
        heading = next((i for i, line in enumerate(lines)
                        if line.startswith("#") and "Minting a ticket" in line), None)
        if heading is not None:
            for i in range(heading + 1, len(lines)):
                if lines[i].startswith("#"):
                    break
                if lines[i].strip() == "```python":
                    end = lines.index("```", i + 1)
                    return "\n".join(lines[i + 1:end]) + "\n"
        raise AssertionError('README.md has no ```python block under a "Minting a ticket" '
                             "heading")

    def test_the_python_snippet_mints_a_ticket_the_server_accepts(self):
        namespace = {"SECRET": SECRET, "USER": "alice", "__name__": "readme_snippet"}
        exec(compile(self.snippet(), "README.md (Minting a ticket)", "exec"), namespace)
        mint = namespace["mint_ticket"]
        ticket = mint(SECRET, "alice")
        # What the snippet wrote is the documented format, checked independently.
        user, expiry, _ = ticket.split(".")
        self.assertEqual(user, "alice")
        self.assertLess(abs(int(expiry) - (time.time() + 3600)), 60)
        self.assertEqual(ticket, mint_ticket(SECRET, "alice", int(expiry)))
        self.assertLessEqual(abs(int(mint(SECRET, "bob", ttl=60).split(".")[1])
                                 - (int(expiry) - 3600 + 60)), 2)

        self.start_server(env_config(OSS_TOKEN_AUTH="hmac", OSS_TOKEN_AUTH_SECRET=SECRET,
                                     OSS_UPLOAD_DIR="uploads/{user}/"))
        status, resp, body = self.get_token({"Authorization": "Bearer " + ticket})
        self.assert_token(status, resp, body, "uploads/alice/")


if __name__ == "__main__":
    unittest.main()
