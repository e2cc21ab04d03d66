"""The server as a process: stop signals honoured whichever thread receives them, and IPv6.

Every server here is `python appserver.py` in a subprocess on a loopback address.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from tests.support import REPO, free_port

STOP_WITHIN = 2.0  # seconds from the signal to the process's exit


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OSS_", "ALIBABA_CLOUD_"))}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def start(host="127.0.0.1", env=None):
    port = free_port(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    proc = subprocess.Popen([sys.executable, "appserver.py", host, str(port)], cwd=str(REPO),
                            env=env or clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server did not start: %r" % proc.stdout.read()[-2000:])
        time.sleep(0.02)


def banner_line(proc):
    """The line that says where the server listens (warnings come before it)."""
    for _ in range(20):
        line = proc.stdout.readline().decode()
        if "listening on" in line:
            return line.strip()
    raise AssertionError("no 'listening on' line")


def stop_seconds(proc, send):
    """Deliver a signal with ``send()``; the seconds until the process exited (status 0)."""
    started = time.monotonic()
    send()
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("server still running 10 s after the signal")
    finally:
        output = proc.stdout.read()
        proc.stdout.close()
    elapsed = time.monotonic() - started
    if code != 0 or b"Traceback" in output:
        raise AssertionError("exit %s: %r" % (code, output[-2000:]))
    return elapsed


def non_main_thread_ids(pid):
    """Kernel thread ids of the process's threads other than the main one."""
    return [int(tid) for tid in os.listdir("/proc/%d/task" % pid) if int(tid) != pid]


def tgkill(pid, tid, signum):
    """Send a signal to one thread of another process (tgkill(2)): thread-directed, so only
    that thread may take it, unlike kill(2), which lets the kernel pick any thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_TGKILL, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill failed")


SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)


def light_load(url, stop):
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url + "/", timeout=2) as response:
                json.loads(response.read())
        except (OSError, ValueError):
            pass


class StopSignals(unittest.TestCase):

    def cycle(self, signum, load):
        proc, url = start()
        with urllib.request.urlopen(url + "/", timeout=5) as response:
            self.assertIn("policy", json.loads(response.read()))
        stop = threading.Event()
        workers = [threading.Thread(target=light_load, args=(url, stop)) for _ in range(load)]
        for worker in workers:
            worker.start()
        try:
            if load:
                time.sleep(0.1)
            return stop_seconds(proc, lambda: proc.send_signal(signum))
        finally:
            stop.set()
            for worker in workers:
                worker.join(5)

    def test_50_sigterm_and_50_sigint_cycles_each_stop_within_2_seconds(self):
        cases = [(signum, 2 if i % 3 == 0 else 0)
                 for signum in (signal.SIGTERM, signal.SIGINT) for i in range(50)]
        with ThreadPoolExecutor(2) as pool:
            times = list(pool.map(lambda case: self.cycle(*case), cases))
        slow = [(cases[i], round(t, 2)) for i, t in enumerate(times) if t > STOP_WITHIN]
        self.assertEqual(slow, [], "cycles that took longer than %.1f s" % STOP_WITHIN)

    @unittest.skipUnless(SYS_TGKILL, "tgkill syscall number unknown for this machine")
    def test_signal_delivered_to_a_worker_thread_stops_the_server(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=signum.name):
                proc, url = start()
                # a keep-alive connection holds a handler thread open as well
                held = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])),
                                                timeout=5)
                held.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                held.recv(4096)
                self.addCleanup(held.close)
                threads = non_main_thread_ids(proc.pid)
                self.assertTrue(threads, "the server should run worker threads")
                elapsed = stop_seconds(proc, lambda: tgkill(proc.pid, threads[0], signum))
                self.assertLess(elapsed, STOP_WITHIN)


class IPv6(unittest.TestCase):

    def test_serves_tokens_and_callbacks_on_ipv6_loopback(self):
        proc, url = start("::1", clean_env(
            OSS_CALLBACK_URL="http://callback.example.com/cb",
            OSS_HOST="https://yonghu-test.oss-cn-hangzhou.aliyuncs.com",  # the example's bucket
            OSS_CALLBACK_BINDING="0"))  # the example comes from no token of ours: no grant
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as response:
                token = json.loads(response.read())
            self.assertIn("policy", token)
            # The official OSS callback example (signed by OSS, embedded key) over IPv6.
            request = urllib.request.Request(
                url + "/index.php?id=1&index=2", data=b"bucket=yonghu-test", method="POST",
                headers={"authorization": "kKQeGTRccDKyHB3H9vF+xYMSrmhMZjzzl2/kdD1ktNVgbWEfYTQG"
                                          "0G2SU/RaHBovRCE8OkQDjC3uG33esH2txA==",
                         "x-oss-pub-key-url": "aHR0cDovL2dvc3NwdWJsaWMuYWxpY2RuLmNvbS9jYWxs"
                                              "YmFja19wdWJfa2V5X3YxLnBlbQ==",
                         "Content-Type": "application/x-www-form-urlencoded"})
            with urllib.request.urlopen(request, timeout=5) as response:
                self.assertEqual(json.loads(response.read()),
                                 {"Status": "OK", "user": None,
                                  "upload": {"bucket": "yonghu-test"}})
        finally:
            stop_seconds(proc, lambda: proc.send_signal(signal.SIGTERM))

    def test_banner_brackets_the_ipv6_address(self):
        proc, url = start("::1", clean_env(OSS_CALLBACK_URL="http://callback.example.com/cb"))
        line = banner_line(proc)
        stop_seconds(proc, lambda: proc.send_signal(signal.SIGTERM))
        self.assertEqual(line, "oss-appserver listening on " + url)
        self.assertIn("[::1]", url)

    def run_cli(self, *args, **env):
        return subprocess.run([sys.executable, "appserver.py", *args], cwd=str(REPO),
                              env=clean_env(**env), capture_output=True, text=True, timeout=20)

    def test_ipv6_without_callback_url_exits_2_naming_the_variable(self):
        result = self.run_cli("::1", str(free_port(socket.AF_INET6, "::1")))
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("OSS_CALLBACK_URL is required when listening on an IPv6 address",
                      result.stderr)
        self.assertIn("OSS cannot call back to an IPv6 address", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_ipv6_literal_callback_url_exits_2(self):
        result = self.run_cli("127.0.0.1", "0", OSS_CALLBACK_URL="http://[2001:db8::1]/cb")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("OSS_CALLBACK_URL", result.stderr)
        self.assertIn("IPv6", result.stderr)


class Banner(unittest.TestCase):

    def test_all_interfaces_are_shown_as_bound_with_a_note(self):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "appserver.py", str(port)], cwd=str(REPO),
                                env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            line = banner_line(proc)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            proc.stdout.close()
        self.assertIn("listening on http://0.0.0.0:%d" % port, line)
        self.assertIn("all interfaces", line)
        self.assertIn("http://127.0.0.1:%d" % port, line)


if __name__ == "__main__":
    unittest.main()
