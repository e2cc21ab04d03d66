"""make_wsgi_app() under a real gunicorn at startup: a bad setting is one line and status 4
(gunicorn's "App failed to load"), so gunicorn stops instead of respawning workers; warnings
reach stderr with no logging configuration of the user's.

Each gunicorn listens on 127.0.0.1 and is bounded in time.
"""

import os
import re
import subprocess
import sys
import unittest

from tests.support import REPO, free_port, require

try:
    import gunicorn  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    gunicorn = None

LINE = "appserver: configuration error: OSS_SIGNATURE_VERSION must be v1 or v4"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OSS_", "ALIBABA_CLOUD_"))}
    env.update(extra)
    return env


def our_lines(stderr):
    """Each place the app wrote to gunicorn's shared stderr, read as far as our line goes:
    gunicorn's own processes write to the same stream, and a write of theirs can land on the
    same line right after ours."""
    return [stderr[m.start():m.start() + len(LINE)] if stderr.startswith(LINE, m.start())
            else stderr[m.start():stderr.find("\n", m.start())]
            for m in re.finditer("appserver: ", stderr)]  # the app's own prefix


def run_gunicorn(*options, env, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", *options, "-b", "127.0.0.1:%d" % free_port(),
         "appserver:make_wsgi_app()"],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)


class ConfigErrorStopsGunicorn(unittest.TestCase):

    def setUp(self):
        require(gunicorn is not None, "gunicorn is not installed (pip install gunicorn)")

    def assert_one_clean_line(self, result, workers):
        self.assertEqual(result.returncode, 4, result.stderr[-2000:])
        self.assertEqual(our_lines(result.stderr), [LINE] * workers)
        self.assertNotIn("hidden", result.stderr + result.stdout)
        self.assertIn("App failed to load", result.stderr)

    def test_one_worker_prints_one_line_and_gunicorn_exits_4_without_a_traceback(self):
        result = run_gunicorn("-w", "1", env=clean_env(OSS_SIGNATURE_VERSION="v9-hidden"))
        self.assert_one_clean_line(result, workers=1)
        self.assertNotIn("Traceback", result.stderr)

    def test_preload_checks_once_in_the_master_and_exits_4_without_a_traceback(self):
        result = run_gunicorn("-w", "2", "--preload",
                              env=clean_env(OSS_SIGNATURE_VERSION="v9-hidden"))
        self.assertEqual(result.returncode, 4, result.stderr[-2000:])
        self.assertEqual(our_lines(result.stderr), [LINE])
        self.assertNotIn("Traceback", result.stderr)

    def test_several_workers_each_fail_once_and_no_traceback_comes_from_appserver(self):
        # gunicorn's arbiter may print a HaltServer traceback of its own when a second
        # worker fails while it halts (benoitc/gunicorn#2186); none of it is ours.
        # The same bug can leave gunicorn's own exit status at 1; the workers' status is ours,
        # and gunicorn stops rather than respawning them (run_gunicorn's timeout bounds it).
        result = run_gunicorn("-w", "2", env=clean_env(OSS_SIGNATURE_VERSION="v9-hidden"))
        self.assertIn(result.returncode, (1, 4), result.stderr[-2000:])
        self.assertIn("exited with code 4", result.stderr)
        self.assertNotIn("exited with code 3", result.stderr)
        ours = our_lines(result.stderr)
        self.assertGreaterEqual(len(ours), 1)
        self.assertTrue(all(line == LINE for line in ours), ours)
        self.assertNotIn("appserver.py", result.stderr)


class WarningsReachStderr(unittest.TestCase):

    def test_startup_warnings_are_printed_without_a_logging_config(self):
        require(gunicorn is not None, "gunicorn is not installed (pip install gunicorn)")
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:%d" % port,
             "appserver:make_wsgi_app()"], cwd=str(REPO), env=clean_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = []
        try:
            for line in process.stdout:
                seen.append(line)
                if "OSS_CALLBACK_URL is not set" in line:
                    break
                if len(seen) > 50:
                    break
        finally:
            process.terminate()
            process.wait(20)
            process.stdout.close()
        self.assertTrue(any("WARNING appserver" in line and "placeholders" in line
                            for line in seen), seen)
        self.assertTrue(any("OSS_CALLBACK_URL is not set" in line for line in seen), seen)


if __name__ == "__main__":
    unittest.main()
