"""axe-core (npm, test-only; see tests/browser_support.py) on the upload page in its idle,
uploading, done and error states, light and dark: no serious or critical violation."""

import json
import unittest

from tests import support
from tests.browser_support import ARTIFACTS, SIZE_LIMIT, BrowserCase, npm_modules

RUN_AXE = """async () => {
  const r = await axe.run(document, { resultTypes: ['violations'] });
  return r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                  nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5) }));
}"""


class AxeTest(BrowserCase):

    @classmethod
    def set_up_servers(cls):
        cls.axe_path = npm_modules() / "axe-core" / "axe.min.js"
        cls.emu = cls.emulator("bucket")
        cls.slow_emu = cls.emulator("slow-bucket", throttle=1024 * 1024)
        cls.app_v1 = cls.app(cls.emu, max_upload_bytes=SIZE_LIMIT)
        cls.app_slow = cls.app(cls.slow_emu, max_upload_bytes=64 * 1024 * 1024)
        cls.app_reject = cls.app(cls.emu, pub_key_url_prefixes=("https://keys.invalid/",))
        cls.report = {}

    @classmethod
    def tearDownClass(cls):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "axe.json").write_text(json.dumps(cls.report, indent=2, sort_keys=True) + "\n")
        super().tearDownClass()

    def axe_page(self, app_url, color_scheme=None):
        # An init script is not subject to the page's CSP (script-src 'self'), a script tag is.
        context = self.browser.new_context(viewport={"width": 960, "height": 900},
                                           color_scheme=color_scheme)
        self.addCleanup(context.close)
        context.add_init_script(path=str(self.axe_path))
        page = context.new_page()
        page.set_default_timeout(20000)
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        self.addCleanup(lambda: self.assertEqual(errors, []))
        page.goto(app_url + "/index.html")
        self.wait_token(page, self.emu.url if app_url != self.app_slow else self.slow_emu.url)
        return page

    def check(self, page, state):
        violations = page.evaluate(RUN_AXE)
        self.report[state] = violations
        serious = [v for v in violations if v["impact"] in ("serious", "critical")]
        self.assertEqual(serious, [], "%s: serious or critical axe violations" % state)

    def states(self, color_scheme, suffix):
        page = self.axe_page(self.app_v1, color_scheme)
        self.check(page, "idle" + suffix)
        # axe really looks: an image without alt text is a critical violation.
        page.evaluate("() => { const i = document.createElement('img'); i.id = 'axe-probe'; "
                      "i.src = 'favicon.svg'; document.body.append(i); }")
        self.assertIn("image-alt", [v["id"] for v in page.evaluate(RUN_AXE)])
        page.evaluate("() => document.getElementById('axe-probe').remove()")
        page.set_input_files("#file-input", [
            self.write_file("picture.png", support.png_bytes(30, 20)),
            self.write_file("notes.txt", b"notes\n"),
            self.write_file("too-big.bin", b"\0" * (SIZE_LIMIT + 1))])
        self.check(page, "files added" + suffix)
        page.click("#start-upload")
        for name in ("picture.png", "notes.txt"):
            self.assertEqual(self.wait_terminal(page, name)["state"], "done")
        page.locator("details.file-raw:not([hidden]) > summary").first.click()
        self.check(page, "done" + suffix)

        page = self.axe_page(self.app_reject, color_scheme)
        page.set_input_files("#file-input", [self.write_file("callback.txt", b"203\n")])
        with self.assertLogs("appserver", "WARNING"):
            page.click("#start-upload")
            self.assertEqual(self.wait_terminal(page, "callback.txt")["state"], "callback-failed")
        self.check(page, "error (203)" + suffix)

    def test_idle_done_and_error_states_light(self):
        self.states(None, "")

    def test_idle_done_and_error_states_dark(self):
        self.states("dark", " (dark)")

    def test_uploading_state(self):
        page = self.axe_page(self.app_slow)
        page.set_input_files("#file-input", [self.write_file("large.bin", bytes(24 * 1024 * 1024))])
        page.click("#start-upload")
        page.wait_for_function("() => Number(document.querySelector('#file-list li.file').dataset.progress || 0) >= 1")
        self.check(page, "uploading")
        self.assertEqual(page.locator("#file-list li.file").get_attribute("data-state"), "uploading")
        page.get_by_role("button", name="Cancel large.bin").click()
        self.assertEqual(self.wait_terminal(page, "large.bin")["state"], "cancelled")
        self.check(page, "cancelled")
        self.assertTrue(self.slow_emu.wait_idle(30))


if __name__ == "__main__":
    unittest.main()
