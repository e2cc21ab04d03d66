"""The OssUpload core (static/oss-upload.js, oss-upload.mjs) driven directly in Chromium, and the
page's narrow-screen, dark, preview, early-refusal and download behaviour.

Real app servers (appserver.make_server) and the OSS emulator on 127.0.0.1; see
tests/browser_support.py for how Chromium is found and what a missing one means.
"""

import json
import time
import unittest
import urllib.error
import urllib.request

from tests import support
from tests.browser_support import (ARTIFACTS, BrowserCase, RECIPES, SIZE_LIMIT, STATIC,
                                   UPLOAD_DIR, token_json)

ALLOWED = ("image/png", "image/jpeg")
TICKET_SECRET = "browser-client-test-ticket-secret-0123456789"

# Every element that scrolls sideways (overflow auto/scroll and wider content than box), and
# the document's own width: at 390 px neither may exceed the viewport.
OVERFLOW = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    const s = getComputedStyle(el);
    const scrolls = ['auto', 'scroll'].includes(s.overflowX);
    if (scrolls && el.scrollWidth > el.clientWidth + 1) {
      bad.push(el.tagName + '.' + el.className + ' ' + el.scrollWidth + '>' + el.clientWidth);
    }
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > document.documentElement.clientWidth + 1) {
      bad.push('outside: ' + el.tagName + '.' + el.className + ' right=' + r.right);
    }
  }
  return {doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, bad: bad};
}"""


class OssUploadCoreTest(BrowserCase):

    @classmethod
    def set_up_servers(cls):
        cls.emu = cls.emulator("bucket")
        cls.slow_emu = cls.emulator("slow-bucket", throttle=2 * 1024 * 1024)
        cls.app_v1 = cls.app(cls.emu, max_upload_bytes=SIZE_LIMIT)
        cls.app_v4 = cls.app(cls.emu, signature_version="v4")
        # Trusts no key URL the emulator uses: every callback fails verification -> OSS 203.
        cls.app_reject = cls.app(cls.emu, pub_key_url_prefixes=("https://keys.invalid/",))
        cls.app_slow = cls.app(cls.slow_emu, max_upload_bytes=64 * 1024 * 1024)
        cls.app_types = cls.app(cls.emu, max_upload_bytes=SIZE_LIMIT, allowed_content_types=ALLOWED)
        # Sign-in with a ticket and a folder per user, download links on (links need both).
        cls.app_signed = cls.app(cls.emu, env={
            "OSS_TOKEN_AUTH": "hmac", "OSS_TOKEN_AUTH_SECRET": TICKET_SECRET,
            "OSS_UPLOAD_DIR": "uploads/{user}/", "OSS_DOWNLOAD_EXPIRE_SECONDS": "300"})
        cls.files = cls.static_server({"/static/": STATIC, "/recipes/": RECIPES})

    def core_page(self, app_url, allow_console=()):
        # Chromium logs every 4xx answer as a console error; the tests provoke some.
        page = self.open_page(app_url + "/index.html", allow_console=(
            "the server responded with a status of 403",) + tuple(allow_console))
        page.wait_for_function("() => typeof window.OssUpload === 'object'")
        return page

    # ------------------------------------------------------------------ the core

    def test_token_is_reused_and_concurrent_callers_share_one_request(self):
        page = self.core_page(self.app_v1)
        tokens = []
        page.on("request", lambda r: tokens.append(r) if r.url == self.app_v1 + "/" else None)
        out = page.evaluate("""async () => {
          const c = OssUpload.createClient({ tokenUrl: '/' });
          const [a, b] = await Promise.all([c.getToken(), c.getToken()]);
          const again = await c.getToken();
          const progress = [];
          const file = new File(['core upload\\n'], 'core.txt', { type: 'text/plain' });
          const res = await c.upload(file, { onProgress: p => progress.push(p.loaded) });
          c.forgetToken();
          const fresh = await c.getToken();
          return { same: a === b && b === again && res.token === a, fresh: fresh !== a,
                   key: res.key, status: res.status, json: res.json, progress: progress.length,
                   url: a.url, fields: Object.keys(a.fields), max: a.limits.maxSize,
                   clock: c.clockSource(), lifetime: a.expire - c.serverNow() };
        }""")
        self.assertTrue(out["same"], "one token for concurrent and later callers")
        self.assertTrue(out["fresh"])
        self.assertEqual(len(tokens), 2, "one request, then one after forgetToken()")
        self.assertEqual(out["key"], UPLOAD_DIR + "core.txt")
        self.assertEqual(out["status"], 200)
        self.assertEqual(out["json"]["Status"], "OK")
        self.assertEqual(out["json"]["upload"]["filename"], UPLOAD_DIR + "core.txt")
        self.assertGreater(out["progress"], 0)
        self.assertEqual(out["url"].rstrip("/"), self.emu.url)
        self.assertEqual(out["fields"], list(token_json(self.app_v1)["fields"]))
        self.assertEqual(out["max"], SIZE_LIMIT)
        self.assertEqual(out["clock"], "server Date header")
        self.assertGreater(out["lifetime"], 3)
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "core.txt"), b"core upload\n")

    def test_token_near_expiry_is_replaced(self):
        page = self.core_page(self.app_v4)
        tokens = []
        page.on("request", lambda r: tokens.append(r) if r.url == self.app_v4 + "/" else None)
        out = page.evaluate("""async () => {
          // minLifetime longer than a token lives: every call needs a new one.
          const c = OssUpload.createClient({ tokenUrl: '/', minLifetime: 3600 });
          const a = await c.getToken();
          const b = await c.getToken();
          return { differ: a !== b, version: a.version, fields: Object.keys(a.fields) };
        }""")
        self.assertTrue(out["differ"])
        self.assertEqual(len(tokens), 2)
        self.assertEqual(out["version"], "v4")
        self.assertIn("x-oss-signature", out["fields"])

    def test_203_is_a_callback_error_and_the_object_is_stored(self):
        page = self.core_page(self.app_reject)
        with self.assertLogs("appserver", "WARNING"):
            err = page.evaluate("""async () => {
              const c = OssUpload.createClient();
              try {
                await c.upload(new File(['x'], 'cb.txt', { type: 'text/plain' }));
                return null;
              } catch (e) {
                return { isError: e instanceof Error, isUploadError: e instanceof OssUpload.UploadError,
                         kind: e.kind, status: e.status, code: e.code, ossMessage: e.ossMessage,
                         stored: e.stored, key: e.key, message: e.message };
              }
            }""")
        self.assertIsNotNone(err, "a 203 must not resolve")
        self.assertTrue(err["isError"] and err["isUploadError"])
        self.assertEqual((err["kind"], err["status"], err["code"], err["stored"]),
                         ("callback", 203, "CallbackFailed", True))
        self.assertIn("400", err["ossMessage"])
        self.assertEqual(err["key"], UPLOAD_DIR + "cb.txt")
        self.assertIn("callback", err["message"])
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + "cb.txt"), b"x")

    def test_oss_xml_error_is_parsed_and_forgets_the_token(self):
        page = self.core_page(self.app_v1)
        err = page.evaluate("""async () => {
          const c = OssUpload.createClient();
          const t = await c.getToken();
          const fields = {};
          for (const [k, v] of Object.entries(t.fields)) {
            fields[k] = /^signature$/i.test(k) ? 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' : v;
          }
          const bad = Object.assign({}, t, { fields });
          try {
            await c.upload(new File(['x'], 'forged.txt'), { token: bad });
            return null;
          } catch (e) {
            return { kind: e.kind, status: e.status, code: e.code, requestId: e.requestId,
                     message: e.message, forgotten: c.lastToken() === null,
                     parsed: OssUpload.parseOssError(
                       '<?xml version="1.0"?><Error><Code>AccessDenied</Code>' +
                       '<Message>a &amp; b &lt;c&gt;</Message><RequestId>r1</RequestId></Error>') };
          }
        }""")
        self.assertIsNotNone(err)
        self.assertEqual((err["kind"], err["status"], err["code"]), ("oss", 403, "SignatureDoesNotMatch"))
        self.assertTrue(err["requestId"])
        self.assertIn("SignatureDoesNotMatch", err["message"])
        self.assertTrue(err["forgotten"], "a refused signature must not be reused")
        self.assertEqual(err["parsed"], {"code": "AccessDenied", "message": "a & b <c>", "requestId": "r1", "ec": ""})
        self.assertFalse(self.emu.object_path(UPLOAD_DIR + "forged.txt").exists())

    def test_check_refuses_by_size_and_type(self):
        page = self.core_page(self.app_types)
        out = page.evaluate("""async ([limit]) => {
          const c = OssUpload.createClient();
          const t = await c.getToken();
          const big = new File([new Uint8Array(limit + 1)], 'big.png', { type: 'image/png' });
          const txt = new File(['t'], 'notes.txt', { type: 'text/plain' });
          const ok = new File(['p'], 'ok.png', { type: 'image/png' });
          let uploadErr = null;
          try { await c.upload(txt); } catch (e) { uploadErr = e.kind + ':' + e.code; }
          return { big: c.check(big, t).code, txt: c.check(txt, t).code, ok: c.check(ok, t),
                   types: t.contentTypes, send: t.sendContentType, uploadErr };
        }""", [SIZE_LIMIT])
        self.assertEqual(out["big"], "TooLarge")
        self.assertEqual(out["txt"], "TypeNotAllowed")
        self.assertIsNone(out["ok"])
        self.assertEqual(out["types"], list(ALLOWED))
        self.assertTrue(out["send"])
        self.assertEqual(out["uploadErr"], "refused:TypeNotAllowed")

    def test_cancel_aborts_the_upload_and_nothing_is_stored(self):
        page = self.core_page(self.app_slow)
        out = page.evaluate("""async () => {
          const c = OssUpload.createClient();
          const ctl = new AbortController();
          const file = new File([new Uint8Array(24 * 1024 * 1024)], 'cancel-me.bin');
          let seen = 0;
          try {
            await c.upload(file, { signal: ctl.signal,
              onProgress: p => { seen = p.loaded; if (p.loaded > 0) ctl.abort(); } });
            return { resolved: true };
          } catch (e) { return { kind: e.kind, seen, total: file.size }; }
        }""")
        self.assertEqual(out.get("kind"), "cancelled", out)
        self.assertLess(out["seen"], out["total"])
        self.assertTrue(self.slow_emu.wait_idle(20))
        self.assertEqual(list(self.slow_emu.staging_files()), [])
        self.assertFalse(self.slow_emu.object_path(UPLOAD_DIR + "cancel-me.bin").exists())

    def test_es_module_reexports_the_one_global(self):
        page = self.open_page(self.files + "/recipes/blank.html")
        out = page.evaluate("""async (base) => {
          const before = new Set(Object.getOwnPropertyNames(globalThis));
          const m = await import(base + '/static/oss-upload.mjs');
          const added = Object.getOwnPropertyNames(globalThis).filter(n => !before.has(n));
          return { added, same: m.default === globalThis.OssUpload,
                   named: typeof m.createClient === 'function' && m.parseOssError === m.default.parseOssError,
                   frozen: Object.isFrozen(m.default) };
        }""", self.files)
        self.assertEqual(out["added"], ["OssUpload"])
        self.assertTrue(out["same"] and out["named"] and out["frozen"], out)
        # The page's two scripts add OssUpload and nothing else (upload.js is an IIFE).
        blank = set(self.open_page(self.files + "/recipes/blank.html").evaluate(
            "() => Object.getOwnPropertyNames(window)"))
        app_page = self.core_page(self.app_v1)
        self.wait_token(app_page, self.emu.url)
        names = app_page.evaluate("() => Object.getOwnPropertyNames(window)")
        self.assertEqual(sorted(set(names) - blank), ["OssUpload"])
        # The app server serves it as JavaScript (a module needs a JavaScript MIME type).
        with urllib.request.urlopen(self.app_v1 + "/oss-upload.mjs", timeout=10) as response:
            self.assertTrue(response.headers["Content-Type"].startswith("text/javascript"))

    # ------------------------------------------------------------------ the page

    def test_the_readme_screenshot_is_not_served(self):
        self.assertTrue((STATIC / ".readme" / "screenshot.png").is_file())
        self.assertFalse((STATIC / "screenshot.png").exists())
        for path in ("/screenshot.png", "/.readme/screenshot.png", "/.readme/"):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(self.app_v1 + path, timeout=10)
            self.assertEqual(caught.exception.code, 404, path)
            caught.exception.close()

    def test_page_at_390px_has_no_horizontal_overflow(self):
        page = self.open_page(self.app_types + "/index.html", viewport={"width": 390, "height": 844})
        self.wait_token(page, self.emu.url)
        long_name = "a-very-long-file-name-without-any-spaces-" * 3 + ".png"
        png = support.png_bytes(64, 40)
        page.set_input_files("#file-input", [self.write_file(long_name, png),
                                             self.write_file("photo.jpg", support.jpeg_bytes(10, 8)),
                                             self.write_file("notes.txt", b"refused\n")])
        page.click("#start-upload")
        self.assertEqual(self.wait_terminal(page, long_name)["state"], "done")
        self.assertEqual(self.wait_terminal(page, "photo.jpg")["state"], "done")
        for summary in page.locator("details.file-raw:not([hidden]) > summary").all():
            summary.click()
        page.wait_for_timeout(100)
        measured = page.evaluate(OVERFLOW)
        self.assertLessEqual(measured["doc"], 390, measured)
        self.assertEqual(measured["bad"], [], measured)
        page.screenshot(path=str(ARTIFACTS / "narrow-390.png"), full_page=True)

        # Opened from disk, with the server field and its Connect button.
        page = self.open_page((STATIC / "index.html").as_uri(), viewport={"width": 390, "height": 844})
        self.assertTrue(page.locator("#server-url").is_visible())
        measured = page.evaluate(OVERFLOW)
        self.assertLessEqual(measured["doc"], 390, measured)
        self.assertEqual(measured["bad"], [], measured)

    def test_dark_mode(self):
        page = self.open_page(self.app_v1 + "/index.html", color_scheme="dark")
        self.wait_token(page, self.emu.url)
        colours = page.evaluate("""() => ({ bg: getComputedStyle(document.body).backgroundColor,
                                            fg: getComputedStyle(document.body).color,
                                            scheme: matchMedia('(prefers-color-scheme: dark)').matches })""")
        self.assertTrue(colours["scheme"])
        self.assertEqual(colours["bg"], "rgb(20, 23, 28)")
        self.assertEqual(colours["fg"], "rgb(231, 234, 238)")
        page.set_input_files("#file-input", [self.write_file("dark.png", support.png_bytes(12, 9))])
        page.click("#start-upload")
        self.assertEqual(self.wait_terminal(page, "dark.png")["state"], "done")
        page.screenshot(path=str(ARTIFACTS / "dark.png"), full_page=True)

    def test_image_preview_and_its_size_after_upload(self):
        page = self.open_page(self.app_v1 + "/index.html")
        self.wait_token(page, self.emu.url)
        page.set_input_files("#file-input", [self.write_file("preview.png", support.png_bytes(31, 17)),
                                             self.write_file("plain.txt", b"no preview\n")])
        row = self.row(page, "preview.png")
        page.wait_for_function("() => document.querySelector('li.file[data-preview=\"loaded\"]')")
        thumb = row.locator("img.file-thumb")
        self.assertTrue(thumb.is_visible())
        self.assertTrue(thumb.get_attribute("src").startswith("blob:"))
        self.assertEqual(thumb.evaluate("img => [img.naturalWidth, img.naturalHeight]"), [31, 17])
        self.assertEqual(thumb.get_attribute("alt"), "Preview of preview.png")
        self.assertTrue(self.row(page, "plain.txt").locator("img.file-thumb").is_hidden())
        # Nothing was sent yet: the preview is local.
        self.assertEqual(self.emu.object_path(UPLOAD_DIR + "preview.png").exists(), False)
        page.click("#start-upload")
        self.assertEqual(self.wait_terminal(page, "preview.png")["state"], "done")
        self.assertEqual(row.locator(".file-dims").text_content(), "31 \u00d7 17 px")
        self.assertIn("bytes", row.locator(".file-stored-size").text_content())
        self.assertTrue(self.row(page, "plain.txt").locator(".file-dims-row").is_hidden())
        total = page.locator("#total-text").text_content()
        self.assertTrue(total.startswith("Total: 100%"), total)
        self.assertIn("2 of 2 files uploaded", total)
        # The raw answer sits behind a closed "Details" toggle.
        details = row.locator("details.file-raw")
        self.assertFalse(details.evaluate("d => d.open"))
        self.assertTrue(row.locator(".file-detail").is_hidden())
        details.locator("summary").click()
        self.assertEqual(json.loads(row.locator(".file-detail").text_content())["Status"], "OK")

    def test_oversize_and_wrong_type_are_refused_as_they_are_added(self):
        page = self.open_page(self.app_types + "/index.html")
        page.wait_for_function("() => document.getElementById('content-types').textContent.includes('image/png')")
        before = self.emu.post_count
        page.set_input_files("#file-input", [self.write_file("huge.png", b"\x89PNG" + b"\0" * SIZE_LIMIT),
                                             self.write_file("doc.txt", b"text\n"),
                                             self.write_file("fine.png", support.png_bytes(3, 3))])
        # Refused at once, before Upload is pressed.
        self.assertEqual(self.row(page, "huge.png").get_attribute("data-state"), "refused")
        self.assertIn("Too large", self.row(page, "huge.png").locator(".file-state").text_content())
        self.assertEqual(self.row(page, "doc.txt").get_attribute("data-state"), "refused")
        self.assertIn("text/plain", self.row(page, "doc.txt").locator(".file-state").text_content())
        self.assertEqual(self.row(page, "fine.png").get_attribute("data-state"), "ready")
        self.assertIn("2 refused", page.locator("#status").text_content())
        self.assertEqual(self.emu.post_count, before)
        page.click("#start-upload")
        self.assertEqual(self.wait_terminal(page, "fine.png")["state"], "done")
        self.assertEqual(self.emu.post_count, before + 1)

    def test_downloads_show_a_link_and_a_thumbnail(self):
        ticket = support.mint_ticket(TICKET_SECRET, "yan", int(time.time()) + 600)
        page = self.open_page(self.app_signed + "/index.html#ticket=" + ticket)
        self.wait_token(page, self.emu.url)
        folder = "uploads/yan/"
        png = support.png_bytes(20, 14)
        page.set_input_files("#file-input", [self.write_file("shared.png", png),
                                             self.write_file("shared.txt", b"link only\n")])
        page.click("#start-upload")
        for name in ("shared.png", "shared.txt"):
            self.assertEqual(self.wait_terminal(page, name)["state"], "done")
        page.wait_for_function("() => document.querySelectorAll('li.file[data-download=\"ready\"]').length === 2")
        row = self.row(page, "shared.png")
        href = row.locator("a.file-link").get_attribute("href")
        self.assertTrue(href.startswith(self.emu.url + "/" + folder + "shared.png?"), href)
        self.assertEqual(row.locator(".file-object").text_content(), folder + "shared.png")
        remote = row.locator("img.file-remote")
        remote.wait_for(state="visible")
        page.wait_for_function("() => document.querySelector('img.file-remote').naturalWidth > 0")
        self.assertEqual(remote.evaluate("img => [img.naturalWidth, img.naturalHeight]"), [20, 14])
        with urllib.request.urlopen(href, timeout=10) as response:
            self.assertEqual(response.read(), png)
        self.assertTrue(self.row(page, "shared.txt").locator("img.file-remote").is_hidden())
        self.assertTrue(self.row(page, "shared.txt").locator("a.file-link").is_visible())
        page.screenshot(path=str(ARTIFACTS / "downloads.png"), full_page=True)

    def test_signed_in_core_sends_the_ticket_for_tokens_and_download_links(self):
        ticket = support.mint_ticket(TICKET_SECRET, "zoe", int(time.time()) + 600)
        page = self.core_page(self.app_signed, allow_console=("the server responded with a status of 401",))
        requests = []
        page.on("request", lambda r: requests.append(r) if r.url.startswith(self.app_signed + "/") else None)
        out = page.evaluate("""async (ticket) => {
          const anonymous = OssUpload.createClient();
          let refused = null;
          try { await anonymous.getToken(); } catch (e) { refused = e.kind + ':' + e.status; }
          const c = OssUpload.createClient({ ticket: () => ticket });
          const res = await c.upload(new File(['mine'], 'mine.txt', { type: 'text/plain' }));
          const link = await c.downloadUrl(res.key);
          let outside = null;
          try { await c.downloadUrl('uploads/someone-else/x.txt'); } catch (e) { outside = e.kind + ':' + e.status; }
          const body = await (await fetch(link.url)).text();
          return { refused, key: res.key, downloads: res.token.downloads, link: link.url,
                   expires: link.expires, outside, body };
        }""", ticket)
        self.assertEqual(out["refused"], "auth:401")
        self.assertEqual(out["key"], "uploads/zoe/mine.txt")
        self.assertTrue(out["downloads"])
        self.assertTrue(out["link"].startswith(self.emu.url + "/uploads/zoe/mine.txt?"), out["link"])
        self.assertGreater(out["expires"], time.time())
        self.assertEqual(out["outside"], "server:403")
        self.assertEqual(out["body"], "mine")
        signed = [r for r in requests if r.headers.get("authorization") == "Bearer " + ticket]
        self.assertEqual(sorted({r.url.split("?")[0] for r in signed}),
                         [self.app_signed + "/", self.app_signed + "/download-url"])


if __name__ == "__main__":
    unittest.main()
