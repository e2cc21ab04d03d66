"""`make demo`: the whole upload flow on one machine, with no cloud account and no network.

    python3 -m tests.demo [--signature-version v1|v4] [--port 8080] [--emulator-port 9000]
    make demo [SIGNATURE_VERSION=v4] [APP_PORT=8080] [OSS_PORT=9000]

Starts the OSS emulator (tests/oss_emulator.py) and the app server (appserver.py) as child
processes, wired together on 127.0.0.1: the app server's OSS_HOST is the emulator, its callback
URL is itself, and it trusts the emulator's callback key URL. Both logs are shown, prefixed
[oss] and [app]. "ready" is printed once both answer HTTP; a busy port is one line and exit 1.
Ctrl-C (or SIGTERM) stops both, within a second whichever thread the signal lands on; objects
live in a temporary directory that is removed on exit.
"""

import argparse
import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from tests.oss_emulator import RESERVED_PREFIX
from tests.support import REPO

ACCESS_KEY_ID = "demo-access-key-id"
ACCESS_KEY_SECRET = "demo-access-key-secret"
BUCKET = "examplebucket"
REGION = "cn-hangzhou"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
POLL = 0.1                 # how often the supervisor looks at its children while it waits
# Test hook (tests/test_demo.py): after "ready", a worker thread reads one line from stdin and
# then sends this signal (TERM or INT) to itself, i.e. to a thread that is not the main one.
THREAD_SIGNAL_HOOK = "DEMO_TEST_SIGNAL_FROM_THREAD"


class StopSignals:
    """SIGINT and SIGTERM, seen by the main thread at once whichever thread receives them.

    Python runs signal handlers only in the main thread, between bytecodes; a signal that the
    kernel hands to another thread does not wake a main thread blocked in a wait. The C-level
    handler does write the signal's number to the wakeup fd, from whatever thread it runs in,
    so the main thread waits in select() on the other end of that socket pair. The Python
    handler does nothing: setting an Event from a handler can deadlock on the Event's own lock.
    """

    def __init__(self):
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {signum: signal.signal(signum, lambda *_: None)
                          for signum in (signal.SIGINT, signal.SIGTERM)}
        self.received = None

    def wait(self, timeout):
        """Wait up to ``timeout`` s; True once SIGINT or SIGTERM has arrived."""
        if self.received is None and select.select([self._reader], [], [], timeout)[0]:
            for number in self._reader.recv(256):
                if number in (signal.SIGINT, signal.SIGTERM):
                    self.received = signal.Signals(number)
        return self.received is not None

    def close(self):
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._reader.close()
        self._writer.close()


class Child:
    """A child process whose output is copied to ours, line by line, with a prefix."""

    def __init__(self, label, argv, env):
        # A new session keeps the terminal's Ctrl-C away from the children: the demo stops
        # them itself, in order, and waits for them.
        self.process = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.label = label
        self._copier = threading.Thread(target=self._copy, name=f"{label}-output", daemon=True)
        self._copier.start()

    def _copy(self):
        for line in self.process.stdout:
            sys.stdout.write(f"[{self.label}] {line.decode('utf-8', 'replace')}")
            sys.stdout.flush()

    def answers_http(self, port):
        """True once this child is running and a GET / on ``port`` gets any HTTP answer."""
        if self.process.poll() is not None:
            return False
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return self.process.poll() is None
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"demo: {self.label} did not stop in {STOP_TIMEOUT:.0f} s; killing it",
                      flush=True)
                self.process.kill()
                self.process.wait()
        self._copier.join(STOP_TIMEOUT)


def child_env(extra):
    """Our environment without any OSS/Alibaba settings of the user's, plus ``extra``."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("OSS_", "ALIBABA_CLOUD_")) and name != THREAD_SIGNAL_HOOK}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def port_busy(port):
    """True if a server could not listen on 127.0.0.1:``port`` now (as the children bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def signal_from_thread(signum):
    """The test hook: a worker thread signals itself once a line arrives on stdin."""
    def run():
        sys.stdin.readline()
        signal.pthread_kill(threading.get_ident(), signum)
    threading.Thread(target=run, name="signal-from-thread", daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m tests.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--signature-version", choices=("v1", "v4"), default="v1")
    parser.add_argument("--port", type=int, default=8080,
                        help="app server port (default 8080; make demo APP_PORT=...)")
    parser.add_argument("--emulator-port", type=int, default=9000,
                        help="OSS emulator port (default 9000; make demo OSS_PORT=...)")
    args = parser.parse_args(argv)
    ports = (("app server", args.port, "APP_PORT", "--port"),
             ("OSS emulator", args.emulator_port, "OSS_PORT", "--emulator-port"))
    if args.port == args.emulator_port:
        print(f"demo: the app server and the OSS emulator cannot share port {args.port}; "
              "choose two (make demo APP_PORT=... OSS_PORT=...)", flush=True)
        return 1
    for label, port, variable, option in ports:
        if port_busy(port):
            print(f"demo: port {port} ({label}) is busy; choose another: "
                  f"make demo {variable}=... (or {option} ...)", flush=True)
            return 1

    signals = StopSignals()
    try:
        return supervise(args, signals)
    finally:
        signals.close()


def supervise(args, signals):
    app_url = f"http://127.0.0.1:{args.port}"
    emulator_url = f"http://127.0.0.1:{args.emulator_port}"
    children = []
    with tempfile.TemporaryDirectory(prefix="oss-demo-") as root:
        try:
            emulator = Child("oss", [
                sys.executable, "-m", "tests.oss_emulator", "--port", str(args.emulator_port),
                "--root", root, "--bucket", BUCKET, "--access-key-id", ACCESS_KEY_ID,
                "--access-key-secret", ACCESS_KEY_SECRET, "--region", REGION,
                "--cors-origin", app_url, "--cors-origin", f"http://localhost:{args.port}"],
                child_env({}))
            children.append(emulator)
            app = Child("app", [sys.executable, "appserver.py", "127.0.0.1", str(args.port)],
                        child_env({
                            "OSS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                            "OSS_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
                            "OSS_HOST": emulator_url,
                            "OSS_BUCKET": BUCKET,
                            "OSS_REGION": REGION,
                            "OSS_SIGNATURE_VERSION": args.signature_version,
                            "OSS_CALLBACK_URL": app_url,
                            "OSS_PUB_KEY_URL_PREFIXES": f"{emulator_url}/{RESERVED_PREFIX}/",
                        }))
            children.append(app)
            waiting = {emulator: args.emulator_port, app: args.port}
            deadline = time.monotonic() + START_TIMEOUT
            while waiting:
                for child, port in list(waiting.items()):
                    if child.process.poll() is not None:
                        print(f"demo: the {child.label} server exited with status "
                              f"{child.process.returncode} while starting on port {port}",
                              flush=True)
                        return 1
                    if child.answers_http(port):
                        del waiting[child]
                if waiting and time.monotonic() > deadline:
                    print("demo: no HTTP answer within %.0f s on port %s" % (
                        START_TIMEOUT, " or ".join(str(p) for p in waiting.values())), flush=True)
                    return 1
                if waiting and signals.wait(POLL):
                    print("demo: stopping", flush=True)
                    return 0
            print(f"\ndemo ({args.signature_version}) ready. Open {app_url}/index.html\n"
                  f"  bucket (OSS emulator): {emulator_url}   objects in {root}\n"
                  "  Ctrl-C stops both servers.\n", flush=True)
            hook = os.environ.get(THREAD_SIGNAL_HOOK)
            if hook:
                signal_from_thread(signal.Signals["SIG" + hook])
            while not signals.wait(POLL):
                for child in children:
                    if child.process.poll() is not None:
                        print(f"demo: {child.label} exited with status "
                              f"{child.process.returncode}; stopping", flush=True)
                        return 1
            print(f"demo: {signals.received.name}: stopping", flush=True)
            return 0
        finally:
            for child in reversed(children):
                child.stop()


if __name__ == "__main__":
    sys.exit(main())
