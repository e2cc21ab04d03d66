"""The README's client recipes, each a small page in tests/browser_recipes/, in Chromium against
real app servers and the OSS emulator: (a) fetch + FormData, (b) Uppy 5 with @uppy/aws-s3,
(c) Uppy 6 with @uppy/xhr-upload, (d) plupload 2.3. Each shows the app server's callback
answer on success and an error on a 203 (the app server refuses the callback).

The libraries come from npm (pinned in tests/browser_recipes/package.json, installed into a
cache outside the repository by tests/browser_support.py) and are served with the pages by a
loopback static server, a different origin from the app server's and the bucket's.
"""

import json
import unittest

from tests import support
from tests.browser_support import RECIPES, UPLOAD_DIR, BrowserCase, npm_modules

ALLOWED = ("image/png", "image/jpeg")
RECIPE_PAGES = {
    "fetch": "recipe-fetch.html",
    "uppy5": "recipe-uppy5.html",
    "uppy6": "recipe-uppy6.html",
    "plupload": "recipe-plupload.html",
    "uppy5-default": "uppy5-default.html",
    "uppy6-default": "uppy6-default.html",
}
# Uppy's aws-s3 logs an error when the bucket does not expose Location (OSS answers a POST
# with a body, not a Location); Chromium logs a failed request's status as an error.
EXPECTED_CONSOLE = ("Could not read the Location header", "the server responded with a status of")


class RecipeTest(BrowserCase):

    @classmethod
    def set_up_servers(cls):
        modules = npm_modules()
        cls.emu = cls.emulator("bucket")
        # V4, with a type list (the form must carry x-oss-content-type).
        cls.app_ok = cls.app(cls.emu, signature_version="v4", allowed_content_types=ALLOWED)
        # Trusts no key URL the emulator uses: every callback fails verification -> OSS 203.
        cls.app_reject = cls.app(cls.emu, pub_key_url_prefixes=("https://keys.invalid/",))
        cls.pages = cls.static_server({"/recipes/": RECIPES, "/npm/": modules})

    def run_recipe(self, recipe, app_url, path, allow_console=()):
        page = self.open_page("%s/recipes/%s?app=%s" % (self.pages, RECIPE_PAGES[recipe], app_url),
                              allow_console=EXPECTED_CONSOLE + tuple(allow_console))
        page.wait_for_load_state("load")
        page.set_input_files("#file", [path])
        page.wait_for_function(
            "() => document.getElementById('result').dataset.done || document.getElementById('error').dataset.done")
        return page.locator("#result").text_content(), page.locator("#error").text_content()

    def success(self, recipe):
        name = "%s-recipe.png" % recipe
        png = support.png_bytes(21, 13)
        result, error = self.run_recipe(recipe, self.app_ok, self.write_file(name, png))
        self.assertEqual(error, "", "%s failed" % recipe)
        answer = json.loads(result)
        self.assertEqual(answer["Status"], "OK")
        self.assertEqual(answer["upload"]["filename"], UPLOAD_DIR + name)
        self.assertEqual(answer["upload"]["mimeType"], "image/png")
        self.assertEqual((str(answer["upload"]["width"]), str(answer["upload"]["height"])), ("21", "13"))
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + name), png)

    def callback_fails(self, recipe):
        name = "%s-203.txt" % recipe
        with self.assertLogs("appserver", "WARNING") as logs:
            # Uppy logs the upload's error to the console itself.
            result, error = self.run_recipe(recipe, self.app_reject, self.write_file(name, b"203\n"),
                                            allow_console=("HTTP 203 CallbackFailed",))
        self.assertTrue(any("callback rejected" in line for line in logs.output), logs.output)
        self.assertEqual(result, "", "%s took a 203 for a success" % recipe)
        self.assertIn("203", error)
        self.assertIn("CallbackFailed", error)
        self.assertEqual(self.stored(self.emu, UPLOAD_DIR + name), b"203\n")   # OSS keeps it

    def test_a_fetch_and_formdata(self):
        self.success("fetch")

    def test_a_fetch_and_formdata_203(self):
        self.callback_fails("fetch")

    def test_b_uppy5_aws_s3(self):
        self.success("uppy5")

    def test_b_uppy5_aws_s3_203(self):
        self.callback_fails("uppy5")

    def test_b_uppy5_own_uploader_takes_a_203_for_a_success(self):
        # Why recipe (b) brings its own uploadPartBytes.
        with self.assertLogs("appserver", "WARNING"):
            result, error = self.run_recipe("uppy5-default", self.app_reject,
                                            self.write_file("default-203.txt", b"203\n"))
        self.assertEqual(error, "")
        response = json.loads(result)
        self.assertEqual(response["status"], 200)            # Uppy's, not OSS's 203
        self.assertNotIn("CallbackFailed", result)           # the body is gone

    def test_c_uppy6_xhr_upload(self):
        self.success("uppy6")

    def test_c_uppy6_xhr_upload_203(self):
        self.callback_fails("uppy6")

    def test_c_uppy6_without_on_after_response_hides_the_callback_failure(self):
        # Why recipe (c) brings its own onAfterResponse.
        with self.assertLogs("appserver", "WARNING"):
            result, error = self.run_recipe("uppy6-default", self.app_reject,
                                            self.write_file("default6-203.txt", b"203\n"),
                                            allow_console=("expects a JSON response",))
        self.assertEqual(result, "")
        self.assertIn("expects a JSON response", error)
        self.assertNotIn("CallbackFailed", error)

    def test_d_plupload(self):
        self.success("plupload")

    def test_d_plupload_203(self):
        self.callback_fails("plupload")


if __name__ == "__main__":
    unittest.main()
