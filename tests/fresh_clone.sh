#!/usr/bin/env bash
# What a new user gets. Run by `make fresh-clone` and `make install-check`.
#
#   tests/fresh_clone.sh                 git clone HEAD (committed state only) into a temporary
#                                        folder, `CI=true make test` there (nothing may skip),
#                                        then the install check on that clone
#   tests/fresh_clone.sh --install-only  the install check on this working tree
#
# The install check: `pip install` the tree into a new venv, start the venv's `oss-appserver`
# from a folder outside the tree on a free loopback port, and fetch /index.html and /upload.js
# (200 and not empty each), then stop it. PYTHON (default python3) builds the venvs.
set -euo pipefail
PYTHON=${PYTHON:-python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/oss-appserver-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

install_check() {   # $1: a source tree
    echo "== install check: pip install $1 into a new venv"
    # A copy without build output or venvs: a stale build/ would leak old files into the wheel.
    mkdir "$work/src"
    tar -C "$1" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./tests/artifacts -cf - . \
        | tar -C "$work/src" -xf -
    "$PYTHON" -m venv "$work/venv"
    "$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$work/src"
    mkdir "$work/elsewhere"
    cd "$work/elsewhere"
    # Only the installed copy may serve: the source tree is removed before the server starts.
    rm -rf "$work/src"
    "$work/venv/bin/python" - "$work/venv/bin/oss-appserver" <<'PY'
import os, signal, socket, subprocess, sys, time, urllib.error, urllib.request

script = sys.argv[1]
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
env = {name: value for name, value in os.environ.items()
       if not name.startswith(("OSS_", "ALIBABA_CLOUD_"))}
server = subprocess.Popen([script, "127.0.0.1", str(port)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
failures = []
try:
    base = "http://127.0.0.1:%d" % port
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                failures.append("oss-appserver did not start listening on port %d" % port)
                break
            time.sleep(0.1)
    for path in ([] if failures else ["/index.html", "/upload.js"]):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, b""
        except OSError as exc:
            status, body = repr(exc), b""
        print("GET %s -> %s, %d bytes" % (path, status, len(body)))
        if status != 200 or not body:
            failures.append("GET %s: %s, %d bytes (want 200, not empty)" % (path, status, len(body)))
finally:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            failures.append("oss-appserver did not stop within 5 s of SIGTERM")
            server.kill()
            server.wait()
    output = server.stdout.read()
if failures:
    sys.stdout.write("oss-appserver's output:\n" + output)
    sys.exit("install check FAILED: " + "; ".join(failures))
print("install check OK: the installed oss-appserver serves the page")
PY
}

if [ "${1:-}" = "--install-only" ]; then
    install_check "$repo"
    exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 [--install-only]" >&2; exit 2; }

if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    echo "note: uncommitted changes are not in the clone; it tests HEAD"
fi
echo "== git clone $repo (HEAD $(git -C "$repo" rev-parse --short HEAD)) into $work/clone"
git clone --quiet --no-hardlinks "$repo" "$work/clone"
echo "== CI=true make test in the clone"
(cd "$work/clone" && CI=true make test PYTHON="$PYTHON")
install_check "$work/clone"
echo "fresh clone OK"
