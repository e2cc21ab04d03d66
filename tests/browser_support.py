"""Shared set-up of the browser tests in tests/test_browser_*.py.

One Chromium (as tests/test_browser.py finds it), OSS emulators and real app servers on
127.0.0.1, a loopback static server for the test-only pages (tests/browser_recipes/) and the
test-only npm packages, which are installed from the pinned tests/browser_recipes/package.json
and its package-lock.json (npm ci) into a cache folder outside the repository ($OSS_APPSERVER_NPM_CACHE, else
$XDG_CACHE_HOME/oss-appserver-npm, else ~/.cache/oss-appserver-npm), once per package.json.
Missing Playwright, Chromium, npm or registry: a skip naming it, a failure under CI=true.
"""

import functools
import hashlib
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.parse

from tests import support

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

SYSTEM_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = support.REPO / "tests" / "artifacts"
RECIPES = support.REPO / "tests" / "browser_recipes"
STATIC = support.REPO / "static"

AK_ID = "browser-test-ak"
AK_SECRET = "browser-test-secret"
BUCKET = "examplebucket"
REGION = "cn-hangzhou"
UPLOAD_DIR = "user-dir-prefix/"
SIZE_LIMIT = 64 * 1024
TIMEOUT_MS = 20000
TERMINAL_STATES = ("done", "callback-failed", "failed", "cancelled", "refused")
NPM_INSTALL_TIMEOUT = 600


def find_chromium(pw):
    """(path, None), or (None, why there is none): $CHROMIUM, /usr/bin/chromium, Playwright's."""
    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return (chosen, None) if os.path.exists(chosen) else (None, "CHROMIUM=%s does not exist" % chosen)
    if os.path.exists(SYSTEM_CHROMIUM):
        return SYSTEM_CHROMIUM, None
    try:
        bundled = pw.chromium.executable_path
    except Exception:  # pragma: no cover - depends on the Playwright version
        bundled = ""
    if bundled and os.path.exists(bundled):
        return bundled, None
    return None, ("no Chromium: CHROMIUM is not set, %s is missing (apt-get install -y chromium), "
                  "and Playwright's own Chromium is missing" % SYSTEM_CHROMIUM)


def npm_cache_root():
    explicit = os.environ.get("OSS_APPSERVER_NPM_CACHE")
    if explicit:
        return pathlib.Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "oss-appserver-npm"


@functools.lru_cache(maxsize=None)
def npm_modules():
    """node_modules of tests/browser_recipes/package.json and package-lock.json, installed on
    first use into a folder named by their hash (a changed pin installs afresh). SkipTest (failure in CI) without
    npm or when the install fails."""
    npm = shutil.which("npm")
    support.require(npm is not None, "npm is not installed (apt-get install -y npm): the browser "
                    "tests need axe-core, Uppy and plupload from the npm registry")
    manifest = (RECIPES / "package.json").read_bytes()
    lock = (RECIPES / "package-lock.json").read_bytes()
    digest = hashlib.sha256(manifest + b"\0" + lock).hexdigest()[:16]
    target = npm_cache_root() / digest
    stamp = target / "node_modules" / ".oss-appserver-installed"
    if stamp.exists():
        return target / "node_modules"
    target.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="install-", dir=str(target.parent)))
    try:
        (work / "package.json").write_bytes(manifest)
        (work / "package-lock.json").write_bytes(lock)
        try:
            # npm ci: exactly the lockfile's versions, no install scripts run.
            run = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                cwd=str(work), capture_output=True, text=True, timeout=NPM_INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            support.require(False, "npm ci in a copy of tests/browser_recipes took over %d s"
                            % NPM_INSTALL_TIMEOUT)
        support.require(run.returncode == 0, "npm ci in a copy of tests/browser_recipes "
                        "failed (is the registry reachable?): " + (run.stderr or run.stdout)[-800:])
        (work / "node_modules" / ".oss-appserver-installed").write_text(digest + "\n")
        try:
            os.rename(str(work), str(target))
        except OSError:   # another run installed it meanwhile
            if not stamp.exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "node_modules"


class _StaticHandler(http.server.SimpleHTTPRequestHandler):
    """/recipes/* from tests/browser_recipes, /npm/* from the npm cache, /static/* from static/."""

    extensions_map = dict(http.server.SimpleHTTPRequestHandler.extensions_map,
                          **{".js": "text/javascript", ".mjs": "text/javascript",
                             ".css": "text/css", ".html": "text/html; charset=utf-8"})

    def translate_path(self, path):
        path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        roots = self.server.roots
        for prefix, root in roots.items():
            if path.startswith(prefix):
                rest = path[len(prefix):]
                full = (root / rest).resolve()
                if full == root or root in full.parents:
                    return str(full)
        return str(pathlib.Path("/nonexistent"))

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):
        pass


def start_static_server(roots):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StaticHandler)
    server.daemon_threads = True
    server.roots = {prefix: pathlib.Path(root).resolve() for prefix, root in roots.items()}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True, name="browser-static")
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
        thread.join(10)
    return "http://127.0.0.1:%d" % server.server_address[1], stop


class BrowserCase(unittest.TestCase):
    """A browser, emulators and app servers for one test class; subclasses add their servers
    in set_up_servers(appserver, emulator)."""

    @classmethod
    def setUpClass(cls):
        support.require(sync_playwright is not None,
                        "Playwright for Python is not installed (pip install playwright)")
        import appserver
        from tests.oss_emulator import EmulatorServer
        cls._cleanups = []
        try:
            cls.pw = sync_playwright().start()
            cls._cleanups.append(cls.pw.stop)
            executable, missing = find_chromium(cls.pw)
            support.require(executable is not None, missing)
            cls.browser = cls.pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            cls._cleanups.append(cls.browser.close)
            cls.tmp = pathlib.Path(tempfile.mkdtemp(prefix="oss-browser-test-"))
            cls._cleanups.append(lambda: shutil.rmtree(cls.tmp, ignore_errors=True))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            cls.appserver = appserver
            cls.EmulatorServer = EmulatorServer
            cls.set_up_servers()
        except BaseException:
            cls._tear_down()
            raise

    @classmethod
    def set_up_servers(cls):
        pass

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

    @classmethod
    def emulator(cls, name, **kw):
        emu = cls.EmulatorServer(root=cls.tmp / name, bucket=BUCKET, access_key_id=AK_ID,
                                 access_key_secret=AK_SECRET, region=REGION,
                                 host="127.0.0.1", port=0, **kw)
        emu.start()
        cls._cleanups.append(emu.stop)
        return emu

    @classmethod
    def app(cls, emu, env=None, **kw):
        """An app server whose callback_url is its own URL, as in a real deployment; configured
        by Config fields, or with ``env`` by environment variables (over the emulator's)."""
        fields = dict(access_key_id=AK_ID, access_key_secret=AK_SECRET, host=emu.url, bucket=BUCKET,
                      region=REGION, upload_dir=UPLOAD_DIR, pub_key_url_prefixes=(emu.pub_key_url_prefix,))
        fields.update(kw)
        last_error = None
        for _ in range(5):
            port = support.free_port()
            url = "http://127.0.0.1:%d" % port
            if env is not None:
                environ = {"OSS_ACCESS_KEY_ID": AK_ID, "OSS_ACCESS_KEY_SECRET": AK_SECRET,
                           "OSS_HOST": emu.url, "OSS_BUCKET": BUCKET, "OSS_REGION": REGION,
                           "OSS_PUB_KEY_URL_PREFIXES": emu.pub_key_url_prefix,
                           "OSS_CALLBACK_URL": url + "/"}
                environ.update(env)
                config = cls.appserver.config_from_env(environ, server_url=url + "/")
            else:
                config = cls.appserver.Config(callback_url=url + "/", **fields)
            try:
                server = cls.appserver.make_server(config, "127.0.0.1", port)
            except OSError as exc:
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
    def static_server(cls, roots):
        url, stop = start_static_server(roots)
        cls._cleanups.append(stop)
        return url

    # ------------------------------------------------------------------ per test

    def open_page(self, url, viewport=None, color_scheme=None, check_console=True,
                  allow_console=()):
        """A fresh page; uncaught exceptions (and console errors, unless they contain one of
        ``allow_console``) fail the test at its end."""
        context = self.browser.new_context(viewport=viewport or {"width": 960, "height": 900},
                                           color_scheme=color_scheme)
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        errors = []

        def on_console(msg):
            if msg.type != "error" or not check_console:
                return
            where = (msg.location or {}).get("url", "")
            if where.endswith("/favicon.ico") or any(a in msg.text or a in where for a in allow_console):
                return
            errors.append("console error: %s (at %s)" % (msg.text, where))
        page.on("console", on_console)
        page.on("pageerror", lambda exc: errors.append("uncaught exception: %s" % exc))
        page.goto(url)
        self.addCleanup(lambda: self.assertEqual(errors, [], "JavaScript errors on the page"))
        return page

    def wait_token(self, page, host):
        page.wait_for_function(
            "h => document.getElementById('bucket-host').textContent === h", arg=host)

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
        return {"state": row.get_attribute("data-state"),
                "text": row.locator(".file-state").text_content(),
                "result": row.locator(".file-result-text").text_content(),
                "object": row.locator(".file-object").text_content(),
                "detail": row.locator(".file-detail").text_content()}

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


def token_json(app_url):
    import urllib.request
    with urllib.request.urlopen(app_url + "/", timeout=10) as response:
        return json.load(response)
