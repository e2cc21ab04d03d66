"""`make demo`: the whole upload flow on one machine, with no cloud account and no network.

    python3 -m tests.demo [--signature-version v1|v4] [--port 8080] [--emulator-port 9000]

Starts the OSS emulator (tests/oss_emulator.py) and the app server (appserver.py) as child
processes, wired together on 127.0.0.1: the app server's OSS_HOST is the emulator, its callback
URL is itself, and it trusts the emulator's callback key URL. Both logs are shown, prefixed
[oss] and [app]. Ctrl-C (or SIGTERM) stops both; objects live in a temporary directory that is
removed on exit.
"""

import argparse
import os
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

    def wait_listening(self, port):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

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
           if not name.startswith(("OSS_", "ALIBABA_CLOUD_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m tests.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--signature-version", choices=("v1", "v4"), default="v1")
    parser.add_argument("--port", type=int, default=8080, help="app server port (default 8080)")
    parser.add_argument("--emulator-port", type=int, default=9000,
                        help="OSS emulator port (default 9000)")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

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
            if not emulator.wait_listening(args.emulator_port):
                print(f"demo: the OSS emulator did not start on port {args.emulator_port} "
                      "(busy? try --emulator-port)", flush=True)
                return 1
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
            if not app.wait_listening(args.port):
                print(f"demo: the app server did not start on port {args.port} "
                      "(busy? try --port)", flush=True)
                return 1
            print(f"\ndemo ({args.signature_version}) ready. Open {app_url}/index.html\n"
                  f"  bucket (OSS emulator): {emulator_url}   objects in {root}\n"
                  "  Ctrl-C stops both servers.\n", flush=True)
            while not stop.wait(0.2):
                for child in children:
                    if child.process.poll() is not None:
                        print(f"demo: {child.label} exited with status "
                              f"{child.process.returncode}; stopping", flush=True)
                        return 1
            print("demo: stopping", flush=True)
            return 0
        finally:
            for child in reversed(children):
                child.stop()


if __name__ == "__main__":
    sys.exit(main())
