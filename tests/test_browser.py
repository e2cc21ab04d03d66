"""The upload page (static/index.html + upload.js) in a real headless Chromium.

Everything runs on loopback: the real app server (appserver.py) issues tokens and verifies
callbacks, the local OSS emulator (tests/oss_emulator.py) stores objects and calls back, and
Debian's Chromium, driven by Playwright for Python, plays the user.

Skips (with the reason) only when Playwright or /usr/bin/chromium is missing, and fails instead
under CI=true. Screenshots land in tests/artifacts/ (git-ignored by the .gitignore the test writes
there); tests/artifacts/screenshot.png is the one meant for the README.
"""

import json
import os
import pathlib
import re
import shutil
import tempfile
import threading
import time
import unittest

from tests import support

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = support.REPO / "tests" / "artifacts"

AK_ID = "browser-test-ak"
AK_SECRET = "browser-test-secret"
BUCKET = "examplebucket"
REGION = "cn-hangzhou"
UPLOAD_DIR = "user-dir-prefix/"
SIZE_LIMIT = 256 * 1024           # policy content-length-range max for the main app server
RANDOM_ALPHABET = "ABCDEFGHJKMNPQRSTWXYZabcdefhijkmnprstwxyz2345678"
TERMINAL_STATES = ("done", "callback-failed", "failed", "cancelled", "refused")
TIMEOUT_MS = 20000
SHORT_EXPIRY = 6                  # token lifetime (s) for the clock-skew test


class BrowserUploadTest(unittest.TestCase):
    """One browser, one emulator per behaviour, one app server per configuration."""

    @classmethod
    def setUpClass(cls):
        support.require(sync_playwright is not None,
                        "Playwright for Python is not installed (pip install playwright)")
        support.require(os.path.exists(CHROMIUM),
                        CHROMIUM + " is missing (apt-get install -y chromium)")
        import appserver
        from tests.oss_emulator import EmulatorServer

        cls._cleanups = []
        try:
            cls._set_up(appserver, EmulatorServer)
        except BaseException:
            cls._tear_down()
            raise

    @classmethod
    def _set_up(cls, appserver, EmulatorServer):
        cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="oss-browser-test-"))
        cls._cleanups.append(lambda: shutil.rmtree(cls.tmp, ignore_errors=True))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        ignore = ARTIFACTS / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# screenshots written by tests/test_browser.py\n*\n")

        def emulator(name, **kw):
            emu = EmulatorServer(root=cls.tmp / name, bucket=BUCKET, access_key_id=AK_ID,
                                 access_key_secret=AK_SECRET, region=REGION,
                                 cors_origins=("*",), host="127.0.0.1", port=0, **kw)
            emu.start()
            cls._cleanups.append(emu.stop)
            return emu

        cls.emu = emulator("bucket")
        # Slow enough that a large upload is still running when the test cancels it, fast enough
        # that what the sockets had already buffered when it was cancelled drains in seconds.
        cls.slow_emu = emulator("slow-bucket", throttle=2 * 1024 * 1024)

        def app(emu, **kw):
            fields = dict(access_key_id=AK_ID, access_key_secret=AK_SECRET, host=emu.url,
                          bucket=BUCKET, region=REGION, upload_dir=UPLOAD_DIR,
                          pub_key_url_prefixes=(emu.pub_key_url_prefix,))
            fields.update(kw)
            return cls._start_app(appserver, **fields)

        cls.app_v1 = app(cls.emu, max_upload_bytes=SIZE_LIMIT)
        cls.app_v4 = app(cls.emu, signature_version="v4")
        # Trusts no key URL the emulator uses: every callback fails verification -> OSS 203.
        cls.app_reject = app(cls.emu, pub_key_url_prefixes=("https://keys.invalid/",))
        cls.app_slow = app(cls.slow_emu, max_upload_bytes=64 * 1024 * 1024)
        cls.app_short = app(cls.emu, expire_seconds=SHORT_EXPIRY)
        # Bucket host where nothing listens: the page must report a network/CORS failure.
        cls.dead_host = "http://127.0.0.1:%d" % support.free_port()
        cls.app_dead = cls._start_app(appserver, access_key_id=AK_ID, access_key_secret=AK_SECRET,
                                      host=cls.dead_host, bucket=BUCKET, region=REGION,
                                      upload_dir=UPLOAD_DIR)

        cls.pw = sync_playwright().start()
        cls._cleanups.append(cls.pw.stop)
        cls.browser = cls.pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        cls._cleanups.append(cls.browser.close)

    @classmethod
    def _start_app(cls, appserver, **fields):
        """Start an app server whose callback_url is its own URL (as in a real deployment).

        The URL is only known once the port is, so the port is reserved first."""
        last_error = None
        for _ in range(5):
            port = support.free_port()
            url = "http://127.0.0.1:%d" % port
            config = appserver.Config(callback_url=url + "/", **fields)
            try:
                server = appserver.make_server(config, "127.0.0.1", port)
            except OSError as exc:  # the port was taken in between; try another
                last_error = exc
                continue
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      daemon=True, name="appserver-browser-test")
            thread.start()

            def stop(server=server, thread=thread):
                server.shutdown()
                server.server_close()
                thread.join(10)
            cls._cleanups.append(stop)
            return url
        raise last_error

    @classmethod
    def tearDownClass(cls):
        cls._tear_down()

    @classmethod
    def _tear_down(cls):
        while cls._cleanups:
            fn = cls._cleanups.pop()
            try:
                fn()
            except Exception:  # keep tearing down the rest
                pass

    # ------------------------------------------------------------------ helpers

    def open_page(self, url, allow_errors_from=(), init_script=None, before_goto=None):
        """A fresh page; console errors and uncaught exceptions are collected and checked."""
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

    def row(self, page, name):
        return page.locator('#file-list li.file[data-file-name="%s"]' % name)

    def wait_terminal(self, page, name, timeout=TIMEOUT_MS):
        page.wait_for_function(
            """([name, states]) => {
                 const li = [...document.querySelectorAll('#file-list li.file')]
                   .find(el => el.dataset.fileName === name);
                 return li && states.includes(li.dataset.state);
               }""", arg=[name, list(TERMINAL_STATES)], timeout=timeout)
        row = self.row(page, name)
        return {
            "state": row.get_attribute("data-state"),
            "text": row.locator(".file-state").text_content(),
            "result": row.locator(".file-result-text").text_content(),
            "detail": row.locator(".file-detail").text_content(),
        }

    def assert_done(self, page, name):
        info = self.wait_terminal(page, name)
        self.assertEqual(info["state"], "done", "%s did not upload: %s" % (name, info["text"]))
        return info

    def screenshot(self, page, name):
        page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def write_file(self, name, data):
        path = self.tmp / "files" / self.id().rsplit(".", 1)[-1] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    def stored(self, emu, key, timeout=5.0):
        path = emu.object_path(key)
        deadline = time.monotonic() + timeout
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(path.exists(), "object %r is not in the emulator's storage" % key)
        return path.read_bytes()

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

        self.assertIn("Object name: " + UPLOAD_DIR + "picture.png", pic["result"])
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
        self.assertIn("Object name: " + UPLOAD_DIR + "callback-203.txt", info["result"])
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
        self.screenshot(page, "cancelled.png")

    def test_v4_token_with_a_random_object_name(self):
        data = b"signed with OSS4-HMAC-SHA256\n"
        page = self.open_served_page(self.app_v4, self.emu.url)
        self.assertIn("V4", page.locator("#sig-version").text_content())
        page.check('input[name="myradio"][value="random_name"]')
        page.set_input_files("#file-input", [self.write_file("v4 file.txt", data)])
        page.click("#start-upload")
        info = self.assert_done(page, "v4 file.txt")
        key = re.search(r"Object name: (\S+)\. The app server answered:", info["result"])
        self.assertIsNotNone(key, info["result"])
        key = key.group(1)
        self.assertRegex(key, r"^%s[%s]{10}\.txt$" % (re.escape(UPLOAD_DIR), RANDOM_ALPHABET))
        self.assertEqual(self.stored(self.emu, key), data)
        self.assertEqual(json.loads(info["detail"])["upload"]["filename"], key)
        self.screenshot(page, "v4-random-name.png")

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


if __name__ == "__main__":
    unittest.main()
