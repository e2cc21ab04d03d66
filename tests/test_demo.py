"""`make demo` (tests/demo.py) as a user runs it: ports, "ready", and stopping.

Each test starts the demo on free loopback ports. "ready" must mean that both servers answer
(a token is fetched at once, without retrying); SIGTERM and SIGINT stop it with status 0 within
2 s, also when the signal lands on a thread other than the main one (the demo's test hook makes
a worker thread signal itself); a busy port is one line naming the port, and status 1.
"""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

from tests.demo import THREAD_SIGNAL_HOOK
from tests.support import REPO

READY_TIMEOUT = 15.0
STOP_LIMIT = 2.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """``python -m tests.demo`` on two free ports, its output collected line by line."""

    def __init__(self, *args, env=None):
        self.port, self.emulator_port = free_port(), free_port()
        while self.emulator_port == self.port:
            self.emulator_port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.demo", "--port", str(self.port),
             "--emulator-port", str(self.emulator_port), *args],
            cwd=REPO, env=dict(os.environ, **(env or {})), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = queue.Queue()
        self.output = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("no %r within %.0f s; output:\n%s"
                                     % (text, timeout, "".join(self.output))) from None
            if line is None:
                raise AssertionError("demo exited (%s) before %r; output:\n%s"
                                     % (self.process.wait(), text, "".join(self.output)))
            self.output.append(line)
            if text in line:
                return

    def token(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/" % self.port, timeout=5) as response:
            return response.status, json.loads(response.read())

    def wait_exit(self, timeout):
        """The exit status, and how long it took; kills the demo if it overran."""
        started = time.monotonic()
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            status = None
        return status, time.monotonic() - started

    def close(self):
        """Stop the demo if a test left it running: SIGTERM first, so that it stops its
        children (they run in sessions of their own and would outlive a killed demo)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                self._kill_children()
        self.process.stdin.close()
        self.process.stdout.close()

    def _kill_children(self):
        """The last resort: kill the processes started with this demo's ports (Linux /proc)."""
        marks = (["appserver.py", "127.0.0.1", str(self.port)],
                 ["tests.oss_emulator", "--port", str(self.emulator_port)])
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as fh:
                    argv = fh.read().decode("utf-8", "replace").split("\0")
            except (OSError, ValueError):
                continue
            if any(all(part in argv for part in mark) for mark in marks):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


class DemoLifecycleTest(unittest.TestCase):
    def start(self, **kwargs):
        demo = Demo(**kwargs)
        self.addCleanup(demo.close)
        demo.wait_for(" ready. Open http://127.0.0.1:%d/index.html" % demo.port)
        status, token = demo.token()             # at once: "ready" means both servers answer
        self.assertEqual(status, 200)
        self.assertEqual(token["host"], "http://127.0.0.1:%d" % demo.emulator_port)
        return demo

    def assert_stops(self, demo):
        status, elapsed = demo.wait_exit(STOP_LIMIT + 3)
        self.assertEqual(status, 0, "demo did not exit 0; output:\n" + "".join(demo.output))
        self.assertLess(elapsed, STOP_LIMIT)

    def test_sigterm_stops_within_2s(self):
        demo = self.start()
        demo.process.send_signal(signal.SIGTERM)
        self.assert_stops(demo)

    def test_sigint_stops_within_2s(self):
        demo = self.start()
        demo.process.send_signal(signal.SIGINT)
        self.assert_stops(demo)

    def test_signal_to_a_worker_thread_stops_within_2s(self):
        for name in ("TERM", "INT"):
            with self.subTest(signal=name):
                demo = self.start(env={THREAD_SIGNAL_HOOK: name})
                demo.process.stdin.write("\n")      # the hook's thread now signals itself
                demo.process.stdin.flush()
                self.assert_stops(demo)
                demo.wait_for("SIG%s: stopping" % name, timeout=1)


class DemoPortTest(unittest.TestCase):
    def test_busy_port_is_one_line_and_status_1(self):
        for which in ("--port", "--emulator-port"):
            with self.subTest(busy=which), socket.socket() as holder:
                holder.bind(("127.0.0.1", 0))
                holder.listen()
                busy = holder.getsockname()[1]
                other = free_port()
                ports = {"--port": busy, "--emulator-port": other}
                if which == "--emulator-port":
                    ports = {"--port": other, "--emulator-port": busy}
                result = subprocess.run(
                    [sys.executable, "-m", "tests.demo",
                     *(str(x) for item in ports.items() for x in item)],
                    cwd=REPO, capture_output=True, text=True, timeout=30)
                self.assertEqual(result.returncode, 1)
                lines = (result.stdout + result.stderr).splitlines()
                self.assertEqual(len(lines), 1, lines)
                self.assertIn("port %d" % busy, lines[0])
                self.assertIn("busy", lines[0])


if __name__ == "__main__":
    unittest.main()
