"""The upload page (static/index.html + upload.js) in a real headless Chromium.

Everything runs on loopback: the real app server (appserver.py) issues tokens and verifies
callbacks, the local OSS emulator (tests/oss_emulator.py) stores objects and calls back, and
Debian's Chromium, driven by Playwright for Python, plays the user.

The browser is $CHROMIUM when that is set, else Debian's /usr/bin/chromium, else Playwright's own
Chromium if it was downloaded. Skips (naming what is missing) only when Playwright or every one of
those is missing, and fails instead under CI=true. Screenshots land in tests/artifacts/ (git-ignored by the .gitignore the test writes
there); tests/artifacts/screenshot.png is the one meant for the README (`make screenshot` copies
it to static/.readme/screenshot.png). The OssUpload core alone, narrow and dark layouts, axe-core
and the README's recipes are in tests/test_browser_client.py, test_browser_a11y.py and
test_browser_recipes.py.
"""

import base64
import hashlib
import hmac
import json
import re
import time
import unittest
import urllib.request

from tests import support
from tests.browser_support import (AK_ID, AK_SECRET, ARTIFACTS, BUCKET, REGION,
                                   TIMEOUT_MS, UPLOAD_DIR, BrowserCase)
STS_TOKEN = "browser-test-sts-token/+="
SIZE_LIMIT = 256 * 1024           # policy content-length-range max for the main app server
RANDOM_ALPHABET = "ABCDEFGHJKMNPQRSTWXYZabcdefhijkmnprstwxyz2345678"
SHORT_EXPIRY = 6                  # token lifetime (s) for the clock-skew test
# Sign-in (OSS_TOKEN_AUTH=hmac): the main application's secret, and per-user folders.
TICKET_SECRET = "browser-test-ticket-secret-0123456789abcdef"
USER_DIR = "uploads/{user}/"
ALLOWED_TYPES = ("image/png", "image/jpeg")
TICKET_STORAGE_KEY = "oss-upload-ticket"    # upload.js keeps the ticket under this name
# Records the fields of every form the page posts, in order (Chromium does not hand a
# multipart body with a file to Playwright). Test instrumentation, not part of the page.
RECORD_FORMS = """(() => {
  const send = XMLHttpRequest.prototype.send;
  window.__sentForms = [];
  XMLHttpRequest.prototype.send = function (body) {
    if (body instanceof FormData) {
      window.__sentForms.push([...body.entries()].map(([name, value]) =>
        [name, typeof value === 'string' ? value : 'file:' + value.type]));
    }
    return send.apply(this, arguments);
  };
})();"""


def mint_ticket(user, lifetime=600, secret=TICKET_SECRET):
    """A ticket as the user's main application mints it: <user>.<expiry>.<mac>, the mac being
    unpadded base64url of HMAC-SHA256(secret, "oss-upload-ticket.v1.<user>.<expiry>")."""
    expiry = int(time.time()) + lifetime
    mac = hmac.new(secret.encode("utf-8"), ("oss-upload-ticket.v1.%s.%d" % (user, expiry)).encode(),
                   hashlib.sha256).digest()
    return "%s.%d.%s" % (user, expiry, base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii"))


class BrowserUploadTest(BrowserCase):
    """One browser, one emulator per behaviour, one app server per configuration."""

    @classmethod
    def set_up_servers(cls):
        ignore = ARTIFACTS / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# screenshots written by tests/test_browser.py\n*\n")
        emulator = cls.emulator

        cls.emu = emulator("bucket")
        # Slow enough that a large upload is still running when the test cancels it, fast enough
        # that what the sockets had already buffered when it was cancelled drains in seconds.
        cls.slow_emu = emulator("slow-bucket", throttle=2 * 1024 * 1024)

        app = cls.app
        cls.app_v1 = app(cls.emu, max_upload_bytes=SIZE_LIMIT)
        cls.app_v4 = app(cls.emu, signature_version="v4")
        # STS credentials: the token's fields carry x-oss-security-token, which the bucket
        # demands of every upload signed with them.
        cls.sts_emu = emulator("sts-bucket", security_token=STS_TOKEN)
        cls.app_sts = app(cls.sts_emu, signature_version="v4", security_token=STS_TOKEN)
        # Trusts no key URL the emulator uses: every callback fails verification -> OSS 203.
        cls.app_reject = app(cls.emu, pub_key_url_prefixes=("https://keys.invalid/",))
        cls.app_slow = app(cls.slow_emu, max_upload_bytes=64 * 1024 * 1024)
        cls.app_short = app(cls.emu, expire_seconds=SHORT_EXPIRY)
        # Sign-in with a ticket, a folder per user, and only PNG and JPEG (configured as a
        # deployer would, through the environment variables).
        auth_env = {"OSS_ACCESS_KEY_ID": AK_ID, "OSS_ACCESS_KEY_SECRET": AK_SECRET,
                    "OSS_HOST": cls.emu.url, "OSS_BUCKET": BUCKET, "OSS_REGION": REGION,
                    "OSS_PUB_KEY_URL_PREFIXES": cls.emu.pub_key_url_prefix,
                    "OSS_TOKEN_AUTH": "hmac", "OSS_TOKEN_AUTH_SECRET": TICKET_SECRET,
                    "OSS_UPLOAD_DIR": USER_DIR, "OSS_ALLOWED_CONTENT_TYPES": ",".join(ALLOWED_TYPES)}
        cls.app_auth = app(cls.emu, env=auth_env)
        # One token per user a minute: the second page load is over the limit.
        cls.app_rate = app(cls.emu, env=dict(auth_env, OSS_TOKEN_RATE="1/minute"))
        # Bucket host where nothing listens: the page must report a network/CORS failure.
        cls.dead_host = "http://127.0.0.1:%d" % support.free_port()
        cls.app_dead = app(cls.emu, host=cls.dead_host)

    # ------------------------------------------------------------------ helpers

    def open_page(self, url, allow_errors_from=(), init_script=None, before_goto=None,
                  allow_errors_at=()):
        """A fresh page; console errors and uncaught exceptions are collected and checked.

        Console errors are allowed from URLs under ``allow_errors_from`` and at the exact URLs
        ``allow_errors_at`` (Chromium logs every 4xx answer as an error of that URL)."""
        context = self.browser.new_context(viewport={"width": 960, "height": 900})
        self.addCleanup(context.close)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors = []

        def on_console(msg):
            if msg.type != "error":
                return
            where = (msg.location or {}).get("url", "")
            # Chromium asks every origin for /favicon.ico on its own; that is not the page's code.
            if where.endswith("/favicon.ico"):
                return
            if any(where.startswith(prefix) for prefix in allow_errors_from):
                return
            if where in allow_errors_at:
                return
            errors.append("console error: %s (at %s)" % (msg.text, where))

        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append("uncaught exception: %s" % exc))
        if before_goto:
            before_goto(page)
        page.goto(url)
        self.addCleanup(lambda: self.assertEqual(errors, [], "JavaScript errors on the page"))
        return page

    def open_served_page(self, app_url, expected_host, init_script=None):
        page = self.open_page(app_url + "/index.html", init_script=init_script)
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=expected_host)
        # Served over http: no server-URL field, the page's own origin gives the token.
        self.assertTrue(page.locator("#server-field").is_hidden())
        return page

    def assert_done(self, page, name):
        info = self.wait_terminal(page, name)
        self.assertEqual(info["state"], "done", "%s did not upload: %s" % (name, info["text"]))
        return info

    def screenshot(self, page, name):
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def stored_type(self, emu, key):
        """The Content-Type the emulator serves the object with (the type OSS stored)."""
        request = urllib.request.Request(emu.url + "/" + key, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Content-Type"]

    def record_requests(self, page_list):
        """A before_goto hook that appends every request the page makes to ``page_list``."""
        return lambda page: page.on("request", lambda request: page_list.append(request))

    def requests_to(self, requests, base_url):
        return [r for r in requests if r.url == base_url or r.url.startswith(base_url + "/")]

    # ------------------------------------------------------------------ tests

    def test_two_files_through_the_input_show_callback_json(self):
        png = support.png_bytes(37, 23)
        text = "hello from the browser test\n\u00e9\u00e8 UTF-8 too\n".encode("utf-8")
        page = self.open_served_page(self.app_v1, self.emu.url)
        self.assertIn("V1", page.locator("#sig-version").text_content())
        self.assertIn("262,144 bytes", page.locator("#size-limit").text_content())

        page.set_input_files("#file-input", [self.write_file("picture.png", png),
                                             self.write_file("notes.txt", text)])
        self.assertEqual(self.row(page, "picture.png").get_attribute("data-state"), "ready")
        page.click("#start-upload")
        pic = self.assert_done(page, "picture.png")
        notes = self.assert_done(page, "notes.txt")

        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "picture.png"), png)
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "notes.txt"), text)

        self.assertEqual(pic["object"], UPLOAD_DIR + "picture.png")
        # The object name is shown once: not again in the state line
        self.assertEqual(pic["text"], "Uploaded")
        # (the raw answer, which names it too, sits in a closed <details>).
        self.assertEqual(self.row(page, "picture.png").inner_text().count(UPLOAD_DIR + "picture.png"), 1)
        self.assertEqual(self.row(page, "picture.png").locator(".file-dims").text_content(), "37 \u00d7 23 px")
        answer = json.loads(pic["detail"])
        self.assertEqual(answer["Status"], "OK")
        upload = answer["upload"]
        self.assertEqual(str(upload["width"]), "37")
        self.assertEqual(str(upload["height"]), "23")
        self.assertEqual(str(upload["size"]), str(len(png)))
        self.assertEqual(upload["mimeType"], "image/png")
        self.assertEqual(upload["filename"], UPLOAD_DIR + "picture.png")
        # Pretty-printed, not the raw one-line body.
        self.assertIn('\n  "upload": {', pic["detail"])

        notes_upload = json.loads(notes["detail"])["upload"]
        self.assertEqual(str(notes_upload["size"]), str(len(text)))
        self.assertEqual(notes_upload["filename"], UPLOAD_DIR + "notes.txt")
        self.assertIn("2 uploaded", page.locator("#status").text_content())
        self.assertEqual(page.locator("#status").get_attribute("aria-live"), "polite")
        self.screenshot(page, "screenshot.png")

    def test_file_over_policy_limit_is_refused_before_any_request(self):
        page = self.open_served_page(self.app_v1, self.emu.url)
        before = self.emu.post_count
        small = b"small enough\n"
        page.set_input_files("#file-input", [self.write_file("too-big.bin", b"\0" * (SIZE_LIMIT + 1)),
                                             self.write_file("fits.txt", small)])
        big = self.row(page, "too-big.bin")
        self.assertEqual(big.get_attribute("data-state"), "refused")
        message = big.locator(".file-state").text_content()
        self.assertIn("262,145 bytes", message)   # the file's size
        self.assertIn("262,144 bytes", message)   # the policy's limit
        page.click("#start-upload")
        self.assert_done(page, "fits.txt")
        self.assertEqual(self.row(page, "too-big.bin").get_attribute("data-state"), "refused")
        # Exactly one PostObject (the small file): the big one never left the browser.
        self.assertEqual(self.emu.post_count, before + 1)
        self.assertFalse(self.emu.object_path(UPLOAD_DIR + "too-big.bin").exists())
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "fits.txt"), small)
        self.assertIn("1 refused", page.locator("#status").text_content())
        self.screenshot(page, "refused-too-large.png")

    def test_callback_rejected_by_app_server_shows_203(self):
        data = b"stored although the callback fails\n"
        page = self.open_served_page(self.app_reject, self.emu.url)
        page.set_input_files("#file-input", [self.write_file("callback-203.txt", data)])
        with self.assertLogs("appserver", "WARNING") as logs:
            page.click("#start-upload")
            info = self.wait_terminal(page, "callback-203.txt")
        # It really was the app server that refused the callback (the key URL is not trusted).
        self.assertTrue(any("callback rejected" in line for line in logs.output), logs.output)
        self.assertEqual(info["state"], "callback-failed", info["text"])
        self.assertIn("uploaded, but the callback to the app server failed", info["text"].lower())
        self.assertEqual(info["object"], UPLOAD_DIR + "callback-203.txt")
        self.assertIn("callback to the app server failed", info["result"])
        # Code and Message parsed from OSS's CallbackFailed XML (the app server answered 400).
        detail = dict(line.split(": ", 1) for line in info["detail"].splitlines())
        self.assertEqual(detail["Code"], "CallbackFailed")
        self.assertIn("400", detail["Message"])
        self.assertNotIn("<", info["detail"])   # parsed, not the raw XML
        # OSS keeps the object even when the callback fails.
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "callback-203.txt"), data)
        self.screenshot(page, "callback-203.png")

    def test_cancel_in_the_middle_of_a_large_upload_stores_nothing(self):
        size = 48 * 1024 * 1024
        page = self.open_served_page(self.app_slow, self.slow_emu.url)
        page.set_input_files("#file-input", [self.write_file("large.bin", bytes(size))])
        row = self.row(page, "large.bin")
        height_ready = row.bounding_box()["height"]
        page.click("#start-upload")
        page.wait_for_function(
            """() => { const li = document.querySelector('#file-list li.file');
                       return li.dataset.state === 'uploading' && Number(li.dataset.progress || 0) >= 1
                         && li.querySelector('.file-rate').textContent.endsWith('/s'); }""")
        # No layout jump: the row keeps its height while the bar, percentage and speed change.
        self.assertEqual(row.bounding_box()["height"], height_ready)
        self.assertEqual(row.locator("progress").get_attribute("max"), "100")
        # The total line follows the one file on its way.
        total = page.locator("#total")
        self.assertTrue(total.is_visible())
        self.assertLess(int(total.get_attribute("data-percent")), 100)
        self.assertRegex(page.locator("#total-text").text_content(),
                         r"^Total: \d+% \u00b7 .+ of 48\.0 MB \u00b7 0 of 1 file uploaded$")
        progress_at_cancel = int(row.get_attribute("data-progress"))
        self.assertLess(progress_at_cancel, 100, "upload finished before it could be cancelled")
        self.assertRegex(row.locator(".file-rate").text_content(), r"^\d+% \u00b7 [\d.,]+ (B|KB|MB|GB)/s$")
        row.get_by_role("button", name="Cancel large.bin").click()
        info = self.wait_terminal(page, "large.bin")
        self.assertEqual(info["state"], "cancelled", info["text"])
        self.assertTrue(row.get_by_role("button", name="Retry large.bin").is_visible())
        self.assertEqual(row.bounding_box()["height"], height_ready)
        self.assertNotIn("/s", row.locator(".file-rate").text_content())
        # The emulator sees the connection drop and throws the partial upload away.
        self.assertTrue(self.slow_emu.wait_idle(20), "the emulator is still receiving the upload")
        self.assertEqual(list(self.slow_emu.staging_files()), [])
        self.assertFalse(self.slow_emu.object_path(UPLOAD_DIR + "large.bin").exists(),
                         "a cancelled upload must not be stored")
        self.assertIn("1 cancelled", page.locator("#status").text_content())
        self.assertTrue(total.is_hidden(), "a cancelled file leaves the total")
        self.screenshot(page, "cancelled.png")

    def test_v4_token_with_a_random_object_name(self):
        data = b"signed with OSS4-HMAC-SHA256\n"
        page = self.open_served_page(self.app_v4, self.emu.url)
        self.assertIn("V4", page.locator("#sig-version").text_content())
        page.check('input[name="myradio"][value="random_name"]')
        page.set_input_files("#file-input", [self.write_file("v4 file.txt", data)])
        page.click("#start-upload")
        info = self.assert_done(page, "v4 file.txt")
        key = info["object"]
        self.assertRegex(key, r"^%s[%s]{10}\.txt$" % (re.escape(UPLOAD_DIR), RANDOM_ALPHABET))
        self.assertEqual(self.stored(self.emu, key), data)
        self.assertEqual(json.loads(info["detail"])["upload"]["filename"], key)
        self.screenshot(page, "v4-random-name.png")

    def test_sts_token_fields_carry_the_security_token_to_the_bucket(self):
        data = b"signed with temporary credentials\n"
        page = self.open_served_page(self.app_sts, self.sts_emu.url)
        page.set_input_files("#file-input", [self.write_file("sts file.txt", data)])
        page.click("#start-upload")
        info = self.assert_done(page, "sts file.txt")
        self.assertEqual(self.stored(self.sts_emu, info["object"]), data)

    def test_drag_and_drop_uploads_and_the_accept_list_refuses_other_types(self):
        page = self.open_served_page(self.app_v1, self.emu.url)
        # The optional accept list also applies to dropped files, which bypass the input's filter.
        page.fill("#accept-list", "text/plain, .md")
        self.assertEqual(page.locator("#file-input").get_attribute("accept"), "text/plain,.md")
        content = "dropped onto the zone\n"
        data_transfer = page.evaluate_handle(
            """text => { const dt = new DataTransfer();
                         dt.items.add(new File([text], 'dropped.txt', {type: 'text/plain'}));
                         dt.items.add(new File(['MZ'], 'program.exe',
                                               {type: 'application/x-msdownload'}));
                         return dt; }""", content)
        page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": data_transfer})
        page.dispatch_event("#dropzone", "dragover", {"dataTransfer": data_transfer})
        self.assertIn("is-dragover", page.locator("#dropzone").get_attribute("class"))
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": data_transfer})
        self.assertNotIn("is-dragover", page.locator("#dropzone").get_attribute("class"))
        self.assertEqual(self.row(page, "dropped.txt").get_attribute("data-state"), "ready")
        exe = self.row(page, "program.exe")
        self.assertEqual(exe.get_attribute("data-state"), "refused")
        self.assertIn("not in the allowed list", exe.locator(".file-state").text_content())
        before = self.emu.post_count
        page.click("#start-upload")
        self.assert_done(page, "dropped.txt")
        self.assertEqual(self.emu.post_count, before + 1)
        self.assertFalse(self.emu.object_path(UPLOAD_DIR + "program.exe").exists())
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "dropped.txt"), content.encode())
        self.screenshot(page, "drag-and-drop.png")

    def test_keyboard_only_user_can_choose_and_upload_files(self):
        page = self.open_served_page(self.app_v1, self.emu.url)
        # Playwright turns file-chooser interception on without waiting for the browser; a
        # listener registered well before the key press makes sure it is on when Enter lands.
        page.on("filechooser", lambda chooser: None)
        for _ in range(15):   # Tab through the page until the file button has the focus
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "choose-files":
                break
        self.assertEqual(page.evaluate("document.activeElement.id"), "choose-files")
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        self.assertTrue(chooser.value.is_multiple())
        chooser.value.set_files(self.write_file("keyboard.txt", b"typed, not clicked\n"))
        page.keyboard.press("Tab")
        self.assertEqual(page.evaluate("document.activeElement.id"), "start-upload")
        page.keyboard.press("Enter")
        self.assert_done(page, "keyboard.txt")
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "keyboard.txt"), b"typed, not clicked\n")

    def test_token_expiry_uses_the_server_clock(self):
        # The browser's clock is an hour slow. Judged by it, a token would look fresh long after
        # it expired; judged by the server's Date header, it is renewed when < 3 s are left.
        slow_clock = ("(() => { const realNow = Date.now; "
                      "Date.now = () => realNow.call(Date) - 3600 * 1000; })();")
        token_responses = []
        page = self.open_page(
            self.app_short + "/index.html", init_script=slow_clock,
            before_goto=lambda p: p.on("response", lambda r: token_responses.append(r)
                                       if r.url == self.app_short + "/" else None))
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        self.assertLess(page.evaluate("Date.now()") / 1000, time.time() - 3000)  # really skewed
        self.assertEqual(len(token_responses), 1)
        expire = token_responses[0].json()["expire"]

        page.set_input_files("#file-input", [self.write_file("first.txt", b"first\n")])
        page.click("#start-upload")
        self.assert_done(page, "first.txt")
        self.assertEqual(len(token_responses), 1, "a fresh token must be reused")

        time.sleep(max(0.0, expire + 0.5 - time.time()))   # the first token is now expired
        page.set_input_files("#file-input", [self.write_file("second.txt", b"second\n")])
        page.click("#start-upload")
        self.assert_done(page, "second.txt")
        self.assertEqual(len(token_responses), 2, "an expiring token must be replaced")
        self.assertGreater(token_responses[1].json()["expire"], expire)
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "second.txt"), b"second\n")

    def test_network_failure_points_to_bucket_cors(self):
        page = self.open_page(self.app_dead + "/index.html", allow_errors_from=(self.dead_host,))
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.dead_host)
        page.set_input_files("#file-input", [self.write_file("unreachable.txt", b"nowhere\n")])
        page.click("#start-upload")
        info = self.wait_terminal(page, "unreachable.txt")
        self.assertEqual(info["state"], "failed", info["text"])
        self.assertIn(self.dead_host, info["text"])
        self.assertIn("CORS", info["text"])
        self.assertIn("README", info["text"])
        row = self.row(page, "unreachable.txt")
        self.assertTrue(row.get_by_role("button", name="Retry unreachable.txt").is_visible())

    def test_page_opened_from_disk_asks_for_the_server(self):
        page = self.open_page((support.REPO / "static" / "index.html").as_uri())
        self.assertTrue(page.locator("#server-url").is_visible())
        page.fill("#server-url", self.app_v1)
        page.click("#server-connect")
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        data = b"from a page on disk\n"
        page.set_input_files("#file-input", [self.write_file("from-disk.txt", data)])
        page.click("#start-upload")
        self.assert_done(page, "from-disk.txt")
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "from-disk.txt"), data)

    # ------------------------------------------------------------------ sign-in and types

    def test_ticket_in_the_link_uploads_into_the_users_folder(self):
        user = "alice_01"
        ticket = mint_ticket(user)
        requests = []
        page = self.open_page(self.app_auth + "/index.html?from=app#ticket=" + ticket,
                              before_goto=self.record_requests(requests), init_script=RECORD_FORMS)
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        # The ticket left the address bar (path and query kept) and lives in sessionStorage.
        href = page.evaluate("location.href")
        self.assertEqual(href, self.app_auth + "/index.html?from=app")
        self.assertNotIn(ticket, href)
        self.assertEqual(page.evaluate("k => sessionStorage.getItem(k)", TICKET_STORAGE_KEY), ticket)
        token_requests = self.requests_to(requests, self.app_auth)
        token_requests = [r for r in token_requests if r.url == self.app_auth + "/"]
        self.assertEqual(len(token_requests), 1)
        self.assertEqual(token_requests[0].headers.get("authorization"), "Bearer " + ticket)
        self.assertEqual(page.locator("#upload-dir").text_content(), "uploads/%s/" % user)
        self.assertEqual(page.locator("#content-types").text_content(), ", ".join(ALLOWED_TYPES))
        self.assertEqual(page.locator("#file-input").get_attribute("accept"), ",".join(ALLOWED_TYPES))
        self.assertTrue(page.locator("#signin").is_hidden())

        png = support.png_bytes(19, 11)
        page.set_input_files("#file-input", [self.write_file("avatar.png", png)])
        page.click("#start-upload")
        info = self.assert_done(page, "avatar.png")
        key = "uploads/%s/avatar.png" % user
        self.assertEqual(self.stored(self.emu, key), png)
        # The policy requires x-oss-content-type to be one of the list (a form without it is
        # refused with 403), and OSS stores the object with that type.
        self.assertEqual(self.stored_type(self.emu, key), "image/png")
        self.assertEqual(info["object"], key)
        answer = json.loads(info["detail"])
        self.assertEqual(answer["Status"], "OK")
        self.assertEqual(answer["user"], user)
        self.assertEqual(answer["upload"]["mimeType"], "image/png")
        forms = page.evaluate("window.__sentForms")
        self.assertEqual(len(forms), 1)
        self.assertEqual(forms[0][-2:], [["x-oss-content-type", "image/png"], ["file", "file:image/png"]])

        # A reload (the fragment is gone) signs in again with the ticket kept for this tab.
        page.reload()
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        self.assertEqual(page.locator("#upload-dir").text_content(), "uploads/%s/" % user)
        self.screenshot(page, "signed-in.png")

    def test_without_a_ticket_the_page_asks_to_sign_in_and_sends_nothing(self):
        requests, responses = [], []

        def watch(page):
            page.on("request", lambda request: requests.append(request))
            page.on("response", lambda response: responses.append(response))
        before = self.emu.post_count
        page = self.open_page(self.app_auth + "/index.html", before_goto=watch,
                              allow_errors_at=(self.app_auth + "/",))
        notice = page.locator("#signin")
        notice.wait_for(state="visible")
        self.assertIn("Sign in to upload", notice.text_content())
        # One message for the page: no error in the status line, nothing else saying 401.
        self.assertEqual(page.locator("#status").text_content(), "No files selected.")
        self.assertEqual(page.locator("#bucket-host").text_content(), "not known (sign in first)")
        page.wait_for_function(
            "() => document.getElementById('announcer').textContent === 'Sign in to upload.'")
        mentions = page.get_by_text("Sign in to upload")
        self.assertEqual([mentions.nth(i).get_attribute("id") for i in range(mentions.count())],
                         ["signin-heading", "announcer"])   # the notice, and its announcement
        self.assertNotIn("HTTP 401", page.locator("body").inner_text())
        for control in ("#choose-files", "#file-input", "#start-upload"):
            self.assertTrue(page.locator(control).is_disabled(), control + " is enabled")
        token_answers = [r for r in responses if r.url == self.app_auth + "/"]
        self.assertEqual([r.status for r in token_answers], [401])
        self.assertEqual(token_answers[0].header_value("WWW-Authenticate"), "Bearer")
        self.assertNotIn("authorization", token_answers[0].request.headers)

        # A file dropped anyway is not taken.
        data_transfer = page.evaluate_handle(
            """() => { const dt = new DataTransfer();
                       dt.items.add(new File(['x'], 'dropped.png', {type: 'image/png'}));
                       return dt; }""")
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": data_transfer})
        self.assertEqual(page.locator("#file-list li").count(), 0)
        self.assertEqual(self.requests_to(requests, self.emu.url), [])
        self.assertEqual(self.emu.post_count, before)
        self.screenshot(page, "sign-in.png")

    def test_expired_ticket_asks_to_sign_in_and_is_forgotten(self):
        ticket = mint_ticket("bob", lifetime=-60)
        page = self.open_page(self.app_auth + "/index.html#ticket=" + ticket,
                              allow_errors_at=(self.app_auth + "/",))
        notice = page.locator("#signin")
        notice.wait_for(state="visible")
        self.assertIn("not accepted", notice.text_content())
        self.assertEqual(page.evaluate("location.href"), self.app_auth + "/index.html")
        # Refused: a reload must not send it again.
        self.assertIsNone(page.evaluate("k => sessionStorage.getItem(k)", TICKET_STORAGE_KEY))
        self.assertTrue(page.locator("#choose-files").is_disabled())

        # The main application sends a fresh ticket to the open page: it signs in.
        fresh = mint_ticket("bob")
        page.evaluate("t => { location.hash = 'ticket=' + t; }", fresh)
        notice.wait_for(state="hidden")
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        self.assertEqual(page.evaluate("location.href"), self.app_auth + "/index.html")
        self.assertEqual(page.evaluate("k => sessionStorage.getItem(k)", TICKET_STORAGE_KEY), fresh)
        self.assertTrue(page.locator("#choose-files").is_enabled())
        self.assertEqual(page.locator("#upload-dir").text_content(), "uploads/bob/")

    def test_page_opened_from_disk_sends_the_ticket_across_origins(self):
        # Cross-origin (a file:// page): the 401 must be readable (CORS headers on the error)
        # to show the sign-in notice, and the preflight must allow Authorization.
        page_url = (support.REPO / "static" / "index.html").as_uri()
        page = self.open_page(page_url, allow_errors_at=(self.app_auth + "/",))
        page.fill("#server-url", self.app_auth)
        page.click("#server-connect")
        page.locator("#signin").wait_for(state="visible")
        self.assertEqual(page.locator("#status").text_content(), "No files selected.")

        user = "erin"
        ticket = mint_ticket(user)
        page = self.open_page(page_url + "#ticket=" + ticket)
        self.assertEqual(page.evaluate("location.href"), page_url)
        self.assertEqual(page.evaluate("k => sessionStorage.getItem(k)", TICKET_STORAGE_KEY), ticket)
        page.fill("#server-url", self.app_auth)
        page.click("#server-connect")
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        png = support.png_bytes(5, 4)
        page.set_input_files("#file-input", [self.write_file("from-disk.png", png)])
        page.click("#start-upload")
        self.assert_done(page, "from-disk.png")
        self.assertEqual(self.stored(self.emu, "uploads/%s/from-disk.png" % user), png)

    def test_type_not_allowed_by_the_server_is_refused_before_any_request(self):
        user = "carol"
        requests = []
        page = self.open_page(self.app_auth + "/index.html#ticket=" + mint_ticket(user),
                              before_goto=self.record_requests(requests))
        page.wait_for_function(
            "t => document.getElementById('content-types').textContent === t",
            arg=", ".join(ALLOWED_TYPES))
        before = self.emu.post_count
        text = b"plain text is not an image\n"
        page.set_input_files("#file-input", [self.write_file("notes.txt", text)])
        notes = self.row(page, "notes.txt")
        self.assertEqual(notes.get_attribute("data-state"), "refused")
        message = notes.locator(".file-state").text_content()
        self.assertIn("text/plain", message)                   # the file's type
        self.assertIn("image/png, image/jpeg", message)        # the allowed list
        self.assertTrue(page.locator("#start-upload").is_disabled())
        self.assertEqual(self.requests_to(requests, self.emu.url), [])
        self.assertEqual(self.emu.post_count, before)

        # An allowed type next to it uploads; the refused one never leaves the browser.
        jpeg = support.jpeg_bytes(8, 6)
        page.set_input_files("#file-input", [self.write_file("photo.jpg", jpeg)])
        page.click("#start-upload")
        self.assert_done(page, "photo.jpg")
        self.assertEqual(self.stored_type(self.emu, "uploads/%s/photo.jpg" % user), "image/jpeg")
        self.assertEqual(notes.get_attribute("data-state"), "refused")
        self.assertEqual(self.emu.post_count, before + 1)
        self.assertEqual(len([r for r in self.requests_to(requests, self.emu.url)
                              if r.method == "POST"]), 1)
        self.assertFalse(self.emu.object_path("uploads/%s/notes.txt" % user).exists())
        self.assertIn("1 refused", page.locator("#status").text_content())
        self.screenshot(page, "refused-type.png")

    def test_over_the_token_rate_the_page_says_when_to_try_again(self):
        ticket = mint_ticket("dave")
        page = self.open_page(self.app_rate + "/index.html#ticket=" + ticket,
                              allow_errors_at=(self.app_rate + "/",))
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        page.reload()   # the second token within the minute
        status = page.locator("#status")
        page.wait_for_function("() => /Try again/.test(document.getElementById('status').textContent)")
        match = re.search(r"Try again in (\d+) seconds?\.", status.text_content())
        self.assertIsNotNone(match, status.text_content())
        self.assertTrue(1 <= int(match.group(1)) <= 60, match.group(0))
        self.assertTrue(page.locator("#signin").is_hidden())

    def test_form_without_a_type_list_carries_no_type_field(self):
        # Without OSS_ALLOWED_CONTENT_TYPES the form is as before: no x-oss-content-type.
        page = self.open_page(self.app_v1 + "/index.html", init_script=RECORD_FORMS)
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=self.emu.url)
        self.assertEqual(page.locator("#content-types").text_content(), "any")
        self.assertIsNone(page.locator("#file-input").get_attribute("accept"))
        page.set_input_files("#file-input", [self.write_file("untyped.txt", b"no type field\n")])
        page.click("#start-upload")
        self.assert_done(page, "untyped.txt")
        forms = page.evaluate("window.__sentForms")
        # The token's fields in the server's order, then key and the file.
        with urllib.request.urlopen(self.app_v1 + "/", timeout=10) as response:
            fields = list(json.load(response)["fields"])
        self.assertEqual([[name for name, _ in form] for form in forms], [fields + ["key", "file"]])
        self.assertNotIn("x-oss-content-type", fields)
        self.assertEqual(self.stored_type(self.emu, UPLOAD_DIR + "untyped.txt"), "text/plain")


if __name__ == "__main__":
    unittest.main()
