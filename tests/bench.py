#!/usr/bin/env python3
"""Benchmark: the app server against a stdlib baseline, side by side, in one run.

    python3 tests/bench.py                 # 5 s per wrk run: about 15 minutes in all
    python3 tests/bench.py --duration 2    # a quicker, noisier run
    python3 tests/bench.py --module-dir ../old-checkout   # another appserver.py, same bench

Baseline: a stdlib ``ThreadingHTTPServer`` handler with the app server's protocol settings
(HTTP/1.1 keep-alive, one write per response, TCP_NODELAY, the same listen backlog) that
answers every request with a fixed 300-byte JSON. The app server is built with
``appserver.make_server`` exactly as ``python appserver.py`` builds it, access log included
(written to a temporary file). Each server runs in its own process; the load generator is
``wrk`` (a separate process, bounded by ``-d``, aimed at 127.0.0.1 only). With ``taskset`` and
two or more CPUs the server is pinned to CPU 0 and wrk to CPU 1.

Workloads: ``GET /`` (token); the callback example of OSS's callback documentation (signed by
OSS with its embedded 512-bit key, so no fetch) with keep-alive and with ``Connection: close``;
a callback signed with a 2048-bit test key served by a loopback key server, cache warmed before
measuring. Every callback is verified in full: the app server caches keys, never verification
results. In-process: ``rsa_verify`` for 512/2048/4096-bit keys against a bare
``pow(s, e, n)``, and ``issue_token``.

A single run says little on a shared machine: the baseline's own p99 at the highest
concurrency varies several-fold from one run to the next, and its throughput at c=8 by a
third. So the two levels the targets read, c=8 and the highest, are measured ``--repeat``
times (5), app and baseline runs interleaved (app, baseline, app, ...); their rows hold
medians, and their ratios are the medians of the per-pair ratios. The CPU steal over the
whole bench (time the virtual machine's host gave to others) is printed with the results.

``--before REV`` (by default the last appserver.py before the module was layered into
sections) measures token throughput against the appserver.py of that git revision, in the
same run: with logging at WARNING, the request path alone (nine pairs), and with the access
log on, where the lines each server wrote while it ran are counted: a server that leaves lines
unwritten looks faster than it is.

Prints one markdown table, then the targets with the arithmetic:

- token throughput at c=8 at least 0.80 of the baseline's;
- official-example callback at c=8: keep-alive at least 0.60, Connection: close at least 0.75;
- 2048-bit callback at c=8: time per request within the baseline's plus 1.2 bare ``pow``;
- no errors in any app run;
- p99 at the highest concurrency at most 2x the baseline's, for every workload;
- token throughput with hmac tickets and a rate limit at least 0.80 of it without;
- upload confirmation adds at most 1.2 times a signed HEAD's round trip to a callback;
- token throughput at c=8, logging at WARNING, no lower than the appserver.py at ``--before``.
"""

import argparse
import base64
import dataclasses
import hashlib
import hmac
import http.client
import http.server
import json
import logging
import os
import pathlib
import platform
import select
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit

REPO = pathlib.Path(__file__).resolve().parent.parent


def module_dir(argv):
    """--module-dir's value, read before argparse runs: it decides which appserver imports."""
    for index, arg in enumerate(argv):
        if arg == "--module-dir" and index + 1 < len(argv):
            return os.path.abspath(argv[index + 1])
        if arg.startswith("--module-dir="):
            return os.path.abspath(arg.partition("=")[2])
    return str(REPO)


sys.path.insert(0, str(REPO))  # tests.rsa_testkit
sys.path.insert(0, module_dir(sys.argv[1:]))

import appserver  # noqa: E402

DATA = REPO / "tests" / "data"

# The callback example of OSS's callback documentation, signed by OSS (embedded 512-bit key).
OFFICIAL_TARGET = "/index.php?id=1&index=2"
OFFICIAL_BODY = "bucket=yonghu-test"
OFFICIAL_AUTHORIZATION = ("kKQeGTRccDKyHB3H9vF+xYMSrmhMZjzzl2/kdD1ktNVgbWEfYTQG0G2SU/RaHBovRCE8"
                          "OkQDjC3uG33esH2txA==")
OFFICIAL_PUB_KEY_URL_B64 = ("aHR0cDovL2dvc3NwdWJsaWMuYWxpY2RuLmNvbS9jYWxsYmFja19wdWJfa2V5X3Yx"
                            "LnBlbQ==")

TARGET_2048 = "/callback?bench=2048"
BODY_2048 = ("filename=user-dir-prefix%2Fphoto.jpg&size=123456&mimeType=image%2Fjpeg"
             "&height=600&width=800")


def baseline_body():
    """A fixed JSON document of exactly 300 bytes."""
    doc = {"Status": "OK", "accessid": "LTAI-bench", "dir": "user-dir-prefix/", "pad": ""}
    doc["pad"] = "x" * (300 - len(json.dumps(doc, separators=(",", ":"))))
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) == 300, len(body)
    return body


###############################################################################
# Signing (stdlib): tests/rsa_testkit.py when present, else a tiny local signer
###############################################################################

try:
    from tests import rsa_testkit
except ImportError:  # pragma: no cover - the testkit is part of the repo
    rsa_testkit = None


def load_private_key(path):
    """(n, e, d) of a PKCS#1 or PKCS#8 PEM private key."""
    if rsa_testkit is not None:
        key = rsa_testkit.load_private_key(path)
        return key.n, key.e, key.d
    # Minimal DER walk: SEQUENCE { version, n, e, d, ... } (PKCS#8 wraps it in an OCTET STRING).
    text = pathlib.Path(path).read_text()
    der = base64.b64decode("".join(l for l in text.splitlines() if not l.startswith("-----")))

    def tlv(data, pos):
        tag, length = data[pos], data[pos + 1]
        pos += 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        return tag, data[pos:pos + length], pos + length

    def children(data):
        pos, out = 0, []
        while pos < len(data):
            tag, value, pos = tlv(data, pos)
            out.append((tag, value))
        return out

    items = children(tlv(der, 0)[1])
    if items[1][0] == 0x30:  # PKCS#8
        items = children(tlv(items[2][1], 0)[1])
    n, e, d = (int.from_bytes(items[i][1], "big") for i in (1, 2, 3))
    return n, e, d


def sign_md5(private, message):
    """RSASSA-PKCS1-v1_5 with MD5, as OSS signs callbacks."""
    n, e, d = private
    k = (n.bit_length() + 7) // 8
    digest_info = appserver.DIGEST_INFO_PREFIXES["md5"] + appserver.hashlib.md5(message).digest()
    block = b"\x00\x01" + b"\xff" * (k - len(digest_info) - 3) + b"\x00" + digest_info
    return pow(int.from_bytes(block, "big"), d, n).to_bytes(k, "big")


###############################################################################
# Server processes (--serve baseline|app)
###############################################################################

class BaselineHandler(http.server.BaseHTTPRequestHandler):
    """The stdlib floor: HTTP/1.1 keep-alive, TCP_NODELAY, one write per response."""

    protocol_version = "HTTP/1.1"
    BODY = baseline_body()
    KEEP = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"
            + BODY)
    CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n"
             b"Connection: close\r\n\r\n" + BODY)

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def answer(self):
        length = self.headers.get("Content-Length")
        if length:
            self.rfile.read(int(length))
        self.wfile.write(self.CLOSE if self.close_connection else self.KEEP)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


class BaselineServer(http.server.ThreadingHTTPServer):
    request_queue_size = appserver.AppServer.request_queue_size
    daemon_threads = True

    def server_bind(self):  # no reverse DNS lookup, like AppServer
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass  # wrk resets its connections at the end of a run


BENCH_TICKET_SECRET = "bench-ticket-secret-0123456789-0123456789"


def bench_ticket(user="bench", lifetime=3600):
    """A ticket in the documented format (Authorization: Bearer), minted here."""
    payload = "%s.%d" % (user, int(time.time()) + lifetime)
    mac = hmac.new(BENCH_TICKET_SECRET.encode(), ("oss-upload-ticket.v1." + payload).encode(),
                   hashlib.sha256).digest()
    return payload + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def bench_config(key_prefix, token_auth=False):
    settings = dict(access_key_id="LTAI-bench", access_key_secret="bench-secret-not-real",
                    callback_url="http://127.0.0.1:8080/callback",
                    pub_key_url_prefixes=appserver.DEFAULT_PUB_KEY_URL_PREFIXES + (key_prefix,))
    if token_auth:
        # hmac tickets and a rate limit set high enough never to trigger: the cost of the
        # checks, not of refusals.
        settings.update(token_auth="hmac", token_auth_secret=BENCH_TICKET_SECRET,
                        token_rate=(10 ** 6, 1))
    if "callback_binding" in {field.name for field in dataclasses.fields(appserver.Config)}:
        # The callbacks measured carry no grant from this server's tokens (the documentation's
        # example cannot): binding off, so that they are verified in full and accepted.
        settings["callback_binding"] = False
    if "confirm_uploads" in {field.name for field in dataclasses.fields(appserver.Config)}:
        settings["confirm_uploads"] = "0"   # measured on its own, against the emulator
    return appserver.Config(**settings)


def serve(kind, key_prefix, log_path, level=logging.INFO):
    if kind == "baseline":
        server = BaselineServer(("127.0.0.1", 0), BaselineHandler)
    else:
        # As main() configures it: INFO to a stream, one access-log line per request. (An
        # older appserver.py, from --module-dir or --before, as it configured itself.)
        stream = open(log_path, "a", buffering=1)
        if hasattr(appserver, "log_to_stream"):
            appserver.log_to_stream(stream, level)
        else:
            handler_class = getattr(appserver, "BatchingStreamHandler", logging.StreamHandler)
            logging.basicConfig(level=level, handlers=[handler_class(stream)],
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        server = appserver.make_server(bench_config(key_prefix, kind == "app-auth"),
                                       "127.0.0.1", 0)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("PORT %d" % server.server_address[1], flush=True)
    # As main() runs it (serve_forever's loop also keeps the deadlines).
    server.serve_forever(poll_interval=getattr(appserver, "SERVE_POLL_INTERVAL", 0.25))


###############################################################################
# Driver
###############################################################################

class KeyServer:
    """Serves the 2048-bit test public key on loopback (headers and body in one write)."""

    def __init__(self, pem):
        response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-pem-file\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(pem) + pem)
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.fetches += 1
                self.close_connection = True
                self.wfile.write(response)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.prefix = "http://127.0.0.1:%d/keys/" % self.httpd.server_address[1]
        self.url = self.prefix + "bench_2048.pem"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class ServerProcess:
    def __init__(self, kind, pin, key_prefix, log_path, quiet=False, module=None):
        """``module``: the folder whose appserver.py serves (the one this bench imported)."""
        command = [sys.executable, os.path.abspath(__file__), "--serve", kind,
                   "--key-prefix", key_prefix, "--log", log_path,
                   "--module-dir", module or os.path.dirname(os.path.abspath(appserver.__file__))]
        if quiet:
            command.append("--no-access-log")
        if pin is not None:
            command = ["taskset", "-c", str(pin)] + command
        self.kind = kind
        self.stderr = tempfile.NamedTemporaryFile(prefix=os.path.basename(log_path) + "." + kind
                                                  + ".", suffix=".stderr", dir=os.path.dirname(
                                                      log_path) or None, delete=False)
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.stderr,
                                     cwd=str(REPO))
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise SystemExit("bench: the %s server did not start: %s"
                             % (kind, pathlib.Path(self.stderr.name).read_text()[-2000:]))
        self.port = int(line.split()[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


LUA_DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d,\"p50_us\":%d,\"p99_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def lua_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_script(method="GET", path="/", body=None, headers=()):
    lines = ["wrk.method = %s" % lua_string(method), "wrk.path = %s" % lua_string(path)]
    if body is not None:
        lines.append("wrk.body = %s" % lua_string(body))
    for name, value in headers:
        lines.append("wrk.headers[%s] = %s" % (lua_string(name), lua_string(value)))
    return "\n".join(lines) + "\n" + LUA_DONE


class Workload:
    def __init__(self, name, method, path, body=None, headers=()):
        self.name, self.method, self.path, self.body = name, method, path, body
        self.headers = list(headers)
        self.script = lua_script(method, path, body, self.headers)

    def probe(self, port):
        """One request with http.client: the status and body the server gives."""
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(self.method, self.path,
                               body=self.body.encode() if self.body is not None else None,
                               headers=dict(self.headers))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def cpu_ticks():
    """(steal, total) jiffies of all CPUs from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(value) for value in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    return (fields[7], sum(fields[:8])) if len(fields) >= 8 else None


def steal_share(before, after):
    if before is None or after is None or after[1] <= before[1]:
        return None
    return 100.0 * (after[0] - before[0]) / (after[1] - before[1])


def cpu_seconds(pid):
    """User + system CPU time of a process (Linux /proc), or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def run_wrk(wrk_pin, port, script_path, connections, duration, server_pid=None):
    command = ["wrk", "-t1", "-c%d" % connections, "-d%ds" % max(1, int(duration)),
               "--timeout", "5s",
               "-s", script_path, "http://127.0.0.1:%d/" % port]
    if wrk_pin is not None:
        command = ["taskset", "-c", str(wrk_pin)] + command
    cpu_before = cpu_seconds(server_pid) if server_pid else None
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    cpu_after = cpu_seconds(server_pid) if server_pid else None
    for line in result.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            stats = json.loads(line[len("BENCHJSON "):])
            stats["cpu_us"] = None
            if cpu_before is not None and cpu_after is not None and stats["requests"]:
                stats["cpu_us"] = (cpu_after - cpu_before) * 1e6 / stats["requests"]
            stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
            stats["errors"] = sum(stats[k] for k in ("connect", "read", "write", "status",
                                                    "timeout"))
            return stats
    raise SystemExit("bench: wrk produced no result:\n%s\n%s" % (result.stdout, result.stderr))


class LineCounter:
    """Access-log request lines appended to a log file since the last call."""

    def __init__(self, path):
        self.path, self.offset = path, 0

    def new_lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return 0
        data = data[:data.rfind(b"\n") + 1]  # a line still being written counts next time
        self.offset += len(data)
        return data.count(b"appserver.access:")


def interleaved_runs(servers, workloads, args, wrk_pin, pairs=5, connections=8, logs=None):
    """{name: [wrk stats]}: each server's workload after a warm-up, ``pairs`` times, the
    servers taking turns so that a burst of outside load hits each about equally. With
    ``logs`` ({name: log path}), each run's stats say how many access-log lines were written
    while it ran ("lines")."""
    counters = {name: LineCounter(path) for name, path in (logs or {}).items()}
    for name, server in servers.items():
        status, body = workloads[name].probe(server.port)
        if status != 200:
            raise SystemExit("bench: %s answered %d: %s" % (workloads[name].name, status,
                                                             body[:200]))
        run_wrk(wrk_pin, server.port, workloads[name].script_path, connections, args.warmup)
    time.sleep(1)  # the warm-up's lines
    for counter in counters.values():
        counter.new_lines()
    runs = {name: [] for name in servers}
    for _ in range(pairs):
        for name, server in servers.items():
            stats = run_wrk(wrk_pin, server.port, workloads[name].script_path, connections,
                            args.duration, server.proc.pid)
            if stats["errors"]:
                raise SystemExit("bench: %s: %d errors" % (workloads[name].name,
                                                            stats["errors"]))
            if name in counters:
                stats["lines"] = counters[name].new_lines()
            runs[name].append(stats)
    return runs


def measure_token_auth(args, wrk_pin, server_pin, key_prefix, tmp, pairs=5, connections=8):
    """Token throughput of a server with hmac tickets and a (never reached) rate limit against
    one with no token authorization, in interleaved pairs: the cost of the checks."""
    plain = Workload("GET / (token), no authorization", "GET", "/")
    auth = Workload("GET / (token), hmac ticket + rate limit", "GET", "/",
                    headers=[("Authorization", "Bearer " + bench_ticket())])
    for name, workload in (("plain", plain), ("auth", auth)):
        workload.script_path = os.path.join(tmp, "workload-token-%s.lua" % name)
        with open(workload.script_path, "w") as f:
            f.write(workload.script)
    log_path = os.path.join(tmp, "auth.log")
    servers = {}
    try:
        servers["plain"] = ServerProcess("app", server_pin, key_prefix, log_path)
        servers["auth"] = ServerProcess("app-auth", server_pin, key_prefix, log_path)
        runs = interleaved_runs(servers, {"plain": plain, "auth": auth}, args, wrk_pin, pairs,
                                connections)
    finally:
        for server in servers.values():
            server.stop()
    rps = {name: [stats["rps"] for stats in stats_list] for name, stats_list in runs.items()}
    return rps, statistics.median(a / p for a, p in zip(rps["auth"], rps["plain"]))


# The last appserver.py before the module was layered into sections. That refactor was not
# to lose token throughput, so the bench measures the two in the same run (--before).
BEFORE_REFACTOR = "e40fadf39923e3a33548f94bb37f9cec92941442"


def module_at(rev, tmp):
    """A folder holding appserver.py as of git revision ``rev``, or (None, why not)."""
    try:
        shown = subprocess.run(["git", "-C", str(REPO), "show", "%s:appserver.py" % rev],
                               capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, "git show failed: %s" % exc
    if shown.returncode != 0:
        return None, "git show %s:appserver.py: %s" % (
            rev, shown.stderr.decode(errors="replace").strip() or "failed")
    folder = os.path.join(tmp, "before")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "appserver.py"), "wb") as f:
        f.write(shown.stdout)
    return folder, ""


def measure_before(args, wrk_pin, server_pin, key_prefix, tmp, connections=8,
                   pairs=(("quiet", 9), ("logged", 5))):
    """Token throughput and server CPU per request of this appserver.py against the one at
    --before, in interleaved pairs, first with logging at WARNING (the request path alone),
    then with the access log on: {"quiet"/"logged": {"now"/"before": [stats]}}, or a string
    saying why not. The target reads the first: nine pairs, as one pair's ratio ranges
    from 0.7 to 1.3 on a shared VM."""
    folder, why_not = module_at(args.before, tmp)
    if folder is None:
        return why_not
    token = Workload("GET / (token)", "GET", "/")
    token.script_path = os.path.join(tmp, "workload-token-before.lua")
    with open(token.script_path, "w") as f:
        f.write(token.script)
    results = {}
    for mode, mode_pairs in pairs:
        servers, log_paths = {}, {}
        try:
            for name, module in (("now", None), ("before", folder)):
                log_paths[name] = os.path.join(tmp, "%s-%s.log" % (mode, name))
                servers[name] = ServerProcess("app", server_pin, key_prefix, log_paths[name],
                                              quiet=mode == "quiet", module=module)
            results[mode] = interleaved_runs(servers, {"now": token, "before": token}, args,
                                             wrk_pin, mode_pairs, connections,
                                             log_paths if mode == "logged" else None)
        finally:
            for server in servers.values():
                server.stop()
    return results


def print_before(args, measured, connections=8):
    """The comparison with the appserver.py at --before; returns whether the target is met."""
    print("\n## Token throughput against the appserver.py of %s (c=%d, interleaved pairs)\n"
          % (args.before[:12], connections))
    if isinstance(measured, str):
        print("- MISS not measured: %s" % measured)
        return False
    results = measured
    print("| appserver.py | logging | token req/s (median) | server CPU per request (median) "
          "| access-log lines written during the runs | runs, req/s |")
    print("|---|---|---:|---:|---:|---|")
    for mode, logging_label in (("quiet", "WARNING"), ("logged", "access log on")):
        for name, label in (("now", "this one"), ("before", args.before[:12])):
            runs = results[mode][name]
            cpu = [stats["cpu_us"] for stats in runs if stats["cpu_us"] is not None]
            answered, written = (sum(s["requests"] for s in runs),
                                 sum(s.get("lines", 0) for s in runs))
            written = "%d for %d requests (%.0f%%)" % (
                written, answered, 100.0 * written / max(answered, 1)) if mode == "logged" \
                else "–"
            print("| %s | %s | %s | %s | %s | %s |" % (
                label, logging_label, rate(statistics.median(s["rps"] for s in runs)),
                "%.0f µs" % statistics.median(cpu) if cpu else "–", written,
                ", ".join(rate(s["rps"]) for s in runs)))
    ratios = {mode: statistics.median(n["rps"] / b["rps"] for n, b in zip(
        results[mode]["now"], results[mode]["before"])) for mode in results}
    ok = ratios["quiet"] >= 1
    print("\n- %s token throughput of this appserver.py, logging at WARNING: %.2f of the one "
          "at %s (median of pair ratios; target >= 1.00, no lower than before). With the "
          "access log on: %.2f (see the lines each wrote while it ran: a line "
          "not written is work put off, not work saved)." % ("PASS" if ok else "MISS", ratios["quiet"], args.before[:12],
                         ratios["logged"]))
    return ok


def print_token_auth(rps, ratio, connections=8):
    print("\n## Token authorization cost (c=%d, %d interleaved pairs)\n" % (connections,
                                                                          len(rps["plain"])))
    print("| server | token req/s (median) | runs |")
    print("|---|---:|---|")
    for name, label in (("plain", "OSS_TOKEN_AUTH=none"),
                        ("auth", "OSS_TOKEN_AUTH=hmac + OSS_TOKEN_RATE (never reached)")):
        runs = sorted(rps[name])
        print("| %s | %s | %s |" % (label, rate(runs[len(runs) // 2]),
                                    ", ".join(rate(r) for r in rps[name])))
    print("\n- %s token throughput with hmac tickets and rate limiting: %.2f of the throughput "
          "without (median of pair ratios; target >= 0.80)" % ("PASS" if ratio >= 0.8
                                                              else "MISS", ratio))
    return ratio >= 0.8


def per_op_seconds(statement, repeat=9):
    """The best of ``repeat`` timings: other processes only ever add time."""
    timer = timeit.Timer(statement)
    number, _ = timer.autorange()
    number = max(number, 3)
    return min(timer.repeat(repeat, number)) / number


def paired_per_op_seconds(first, second, repeat=9):
    """Best-of timings of two statements, interleaved so both see the same machine load."""
    timers = [timeit.Timer(first), timeit.Timer(second)]
    number = max(3, timers[1].autorange()[0])
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for index, timer in enumerate(timers):
            best[index] = min(best[index], timer.timeit(number) / number)
    return best


def microbenchmarks(private_2048, tmp):
    """rsa_verify vs bare pow for 512/2048/4096-bit keys; issue_token v1/v4."""
    rows = []
    keys = []
    official = appserver.OSS_CALLBACK_PUBLIC_KEY
    message = appserver.callback_string_to_sign(OFFICIAL_TARGET, OFFICIAL_BODY.encode())
    keys.append((512, official, message, base64.b64decode(OFFICIAL_AUTHORIZATION), "OSS key"))
    n, e, d = private_2048
    message = appserver.callback_string_to_sign(TARGET_2048, BODY_2048.encode())
    keys.append((2048, appserver.PublicKey(n, e), message, sign_md5(private_2048, message),
                 "test key"))
    key_4096 = os.path.join(tmp, "bench_4096.pem")
    if shutil.which("openssl") and subprocess.run(
            ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096",
             "-out", key_4096], capture_output=True, timeout=120).returncode == 0:
        private = load_private_key(key_4096)
        keys.append((4096, appserver.PublicKey(private[0], private[1]), message,
                     sign_md5(private, message), "openssl-generated"))
    else:
        rows.append(("rsa_verify 4096-bit: skipped (openssl CLI missing)",) + ("–",) * 11)
    pow_seconds = {}
    for bits, key, msg, signature, origin in keys:
        assert appserver.rsa_verify(key, msg, signature, "md5"), bits
        s = int.from_bytes(signature, "big")
        verify, bare = paired_per_op_seconds(
            lambda: appserver.rsa_verify(key, msg, signature, "md5"), lambda: pow(s, key.e, key.n))
        pow_seconds[bits] = bare
        rows.append(("rsa_verify %d-bit (%s) vs bare pow, in-process" % (bits, origin), "–",
                     rate(1 / verify), rate(1 / bare), "%.2f" % (bare / verify),
                     micros(verify), micros(bare), "%.2f" % (verify / bare),
                     "–", "–", "–", "–"))
    for version in ("v1", "v4"):
        config = appserver.Config(access_key_id="LTAI-bench", access_key_secret="s",
                                  signature_version=version, region="cn-hangzhou",
                                  callback_url="http://127.0.0.1:8080/callback")
        seconds = per_op_seconds(lambda: appserver.issue_token(config, 1767225600))
        rows.append(("issue_token %s, in-process" % version, "–", rate(1 / seconds), "–", "–",
                     micros(seconds), "–", "–", "–", "–", "–", "–"))
    return rows, pow_seconds


def interleaved_per_op_seconds(statements, repeat=9):
    """Best-of timings of several statements, interleaved so all see the same machine load."""
    timers = [timeit.Timer(s) for s in statements]
    number = max(3, min(timer.autorange()[0] for timer in timers))
    best = [float("inf")] * len(timers)
    for _ in range(repeat):
        for index, timer in enumerate(timers):
            best[index] = min(best[index], timer.timeit(number) / number)
    return best


def confirmation_costs(private_2048, tmp):
    """(rows, (callback without confirmation, with it, a bare signed HEAD) in seconds): a
    2048-bit callback through App.handle, with upload confirmation off and on against the OSS
    emulator on loopback, and the HEAD round trip alone."""
    if not hasattr(appserver, "confirm_upload"):
        return [], None
    import multiprocessing
    key, size = "user-dir-prefix/photo.jpg", 123456
    # The emulator runs in a process of its own, as OSS would: in this one it would compete
    # with the measured code for the GIL.
    ready = multiprocessing.get_context("fork").Queue()
    emulator = multiprocessing.get_context("fork").Process(
        target=serve_emulator, args=(os.path.join(tmp, "bucket"), key, size, ready), daemon=True)
    emulator.start()
    try:
        emu_url = ready.get(timeout=30)
        url = "http://127.0.0.1:1/bench_2048.pem"
        message = appserver.callback_string_to_sign(TARGET_2048, BODY_2048.encode())
        headers = {"authorization": [base64.b64encode(sign_md5(private_2048, message)).decode()],
                   "x-oss-pub-key-url": [base64.b64encode(url.encode()).decode()],
                   "content-type": ["application/x-www-form-urlencoded"]}
        apps = []
        for confirm in ("0", "1"):
            config = appserver.Config(
                access_key_id="LTAI-bench", access_key_secret="s", host=emu_url,
                bucket="examplebucket", region="cn-hangzhou", callback_binding=False,
                callback_url="http://127.0.0.1:8080/callback", confirm_uploads=confirm,
                pub_key_url_prefixes=("http://127.0.0.1:1/",))
            keys = appserver.PublicKeyCache(embedded={url: appserver.PublicKey(*private_2048[:2])})
            apps.append(appserver.App(config, key_cache=keys))
        body = BODY_2048.encode()

        def callback(app):
            return lambda: app.handle("POST", TARGET_2048, headers, len(body), lambda n: body)

        for app in apps:
            response = callback(app)()
            assert response.status == 200, response.body
        credentials = appserver.Credentials("LTAI-bench", "s")

        def head():
            answer = appserver.oss_request(apps[1].config, credentials, "HEAD", key, timeout=5)
            assert answer.status == 200, answer.status

        off, on, alone = interleaved_per_op_seconds([callback(apps[0]), callback(apps[1]), head])
    finally:
        emulator.terminate()
        emulator.join()
    rows = [("2048-bit callback, confirmation on vs off (HEAD to the emulator), in-process",
             "–", rate(1 / on), rate(1 / off), "%.2f" % (off / on), micros(on), micros(off),
             "–", "–", "–", "–", "–"),
            ("signed HEAD to the emulator on loopback, alone, in-process", "–",
             rate(1 / alone), "–", "–", micros(alone), "–", "–", "–", "–", "–", "–")]
    return rows, (off, on, alone)


def serve_emulator(root, key, size, ready):
    from tests.oss_emulator import EmulatorServer
    emu = EmulatorServer(root, bucket="examplebucket", access_key_id="LTAI-bench",
                         access_key_secret="s").start()
    emu.put_object(key, b"\0" * size, "image/jpeg")
    ready.put(emu.url)
    threading.Event().wait()


def print_confirmation(costs):
    """The confirmation target: what it adds to a callback is the HEAD round trip, no more."""
    off, on, alone = costs
    ok = on - off <= 1.2 * alone
    print("- %s upload confirmation adds %.1f µs per callback (on %.1f µs − off %.1f µs) <= "
          "1.2 × the HEAD round trip alone, %.1f µs = %.1f µs" % (
              "PASS" if ok else "MISS", (on - off) * 1e6, on * 1e6, off * 1e6, alone * 1e6,
              1.2 * alone * 1e6))
    return ok


def cpu_pair(app, base):
    if app.get("cpu_us") is None or base.get("cpu_us") is None:
        return "–"
    return "%.0f / %.0f µs" % (app["cpu_us"], base["cpu_us"])


def rate(value):
    return "{:,.0f}".format(value)


def micros(seconds):
    return "%.1f µs" % (seconds * 1e6)


def ms(us):
    return "%.2f ms" % (us / 1000)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def module_origin(path):
    """The app module measured, with its commit when it is in a git checkout."""
    folder = os.path.dirname(path)
    try:
        commit = subprocess.run(["git", "-C", folder, "log", "-1", "--format=%h"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--", path],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = dirty = ""
    if not commit:
        return path
    return "%s (commit %s%s)" % (path, commit, ", modified" if dirty else "")


class Row:
    """One workload at one concurrency: its app and baseline runs, in interleaved pairs."""

    def __init__(self):
        self.app, self.base = [], []

    @staticmethod
    def _summary(runs):
        summary = {key: statistics.median(r[key] for r in runs)
                   for key in ("rps", "p50_us", "p99_us")}
        cpu = [r["cpu_us"] for r in runs if r.get("cpu_us") is not None]
        summary["cpu_us"] = statistics.median(cpu) if len(cpu) == len(runs) else None
        summary["errors"] = sum(r["errors"] for r in runs)
        return summary

    def summaries(self):
        """(app, baseline): medians over the runs, errors summed."""
        return self._summary(self.app), self._summary(self.base)

    def ratio(self, key):
        """The median of the per-pair ratios app / baseline: each pair saw the same load."""
        return statistics.median(a[key] / max(b[key], 1) for a, b in zip(self.app, self.base))

    def pairs(self, key):
        return ", ".join("%.0f/%.0f" % (a[key] / 1000, b[key] / 1000)
                         for a, b in zip(self.app, self.base))


# The names --workloads takes, in table order.
WORKLOAD_KEYS = ("token", "official-keep-alive", "official-close", "rsa2048")


def make_workloads(keys, private_2048, selected, tmp):
    signature_2048 = sign_md5(private_2048, appserver.callback_string_to_sign(
        TARGET_2048, BODY_2048.encode()))
    official_headers = [("Content-Type", "application/x-www-form-urlencoded"),
                        ("authorization", OFFICIAL_AUTHORIZATION),
                        ("x-oss-pub-key-url", OFFICIAL_PUB_KEY_URL_B64)]
    workloads = {
        "token": Workload("GET / (token)", "GET", "/"),
        "official-keep-alive": Workload("POST official example, keep-alive", "POST",
                                        OFFICIAL_TARGET, OFFICIAL_BODY, official_headers),
        "official-close": Workload("POST official example, Connection: close", "POST",
                                   OFFICIAL_TARGET, OFFICIAL_BODY,
                                   official_headers + [("Connection", "close")]),
        "rsa2048": Workload("POST 2048-bit key, warm cache", "POST", TARGET_2048, BODY_2048,
                            [("Content-Type", "application/x-www-form-urlencoded"),
                             ("authorization", base64.b64encode(signature_2048).decode()),
                             ("x-oss-pub-key-url",
                              base64.b64encode(keys.url.encode()).decode())]),
    }
    chosen = []
    for key in WORKLOAD_KEYS:
        if key in selected:
            workload = workloads[key]
            workload.key = key
            workload.script_path = os.path.join(tmp, "workload-%s.lua" % key)
            with open(workload.script_path, "w") as f:
                f.write(workload.script)
            chosen.append(workload)
    return chosen


def load_keys():
    """(2048-bit private key, its public PEM)."""
    key_path = DATA / "rsa2048_key.pem"
    if not key_path.exists():
        key_path = DATA / "bench_key.pem"
        if not key_path.exists():
            subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                            "rsa_keygen_bits:2048", "-out", str(key_path)], check=True,
                           capture_output=True, timeout=120)
    private_2048 = load_private_key(key_path)
    n, e, _ = private_2048
    if key_path.name == "rsa2048_key.pem":
        pem = (DATA / "rsa2048_pub.pem").read_bytes()
    else:
        pem = subprocess.run(["openssl", "pkey", "-in", str(key_path), "-pubout"],
                             capture_output=True, check=True, timeout=60).stdout
    assert appserver.load_public_key(pem) == appserver.PublicKey(n, e)
    return private_2048, pem


def print_header(args, cpus, pins, levels):
    print("# make bench: oss-appserver vs stdlib ThreadingHTTPServer baseline\n")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    print("- machine: %s, %d CPUs available; Python %s; %s" % (
        cpu_model(), cpus, platform.python_version(), (wrk_version.splitlines() or ["wrk"])[0]))
    print("- app server module: %s" % module_origin(os.path.abspath(appserver.__file__)))
    if pins[0] is not None:
        print("- pinning: each server process on CPU %d, wrk on CPU %d (taskset -c)" % pins)
    else:
        print("- pinning: none (%s); server and wrk share CPUs, expect noisier figures"
              % ("--no-pin" if args.no_pin else "taskset missing or a single CPU"))
    print("- wrk -t1, %s s per run after %s s of warm-up, 127.0.0.1 only; %s"
          % (args.duration, args.warmup,
             "app logging at WARNING (--no-access-log: diagnosis only)" if args.no_access_log
             else "app access log on (to a file), as `python appserver.py` logs"))
    print("- callbacks: verified in full (signature, key URL, fields), with callback binding "
          "off (the documentation's example carries no grant) and upload confirmation off "
          "(its cost is the in-process row of its own)")
    if args.repeat > 1:
        print("- c=%s: %d runs each, app and baseline interleaved; their rows hold medians "
              "and the medians of the per-pair ratios"
              % (" and c=".join(str(c) for c in sorted(target_levels(levels))), args.repeat))
    print("- load average before: %.2f %.2f %.2f (other processes compete for both CPUs "
          "when it is above ~0.5)" % os.getloadavg())
    print("", flush=True)


def check_servers(workloads, servers):
    """Each workload gets a 200 (and the app's verdict is "OK"); warms the key cache."""
    for workload in workloads:
        for kind, server in servers.items():
            status, body = workload.probe(server.port)
            if status != 200:
                raise SystemExit("bench: %s answered %d to %r: %r"
                                 % (kind, status, workload.name, body[:200]))
            if kind == "app" and workload.method == "POST":
                assert json.loads(body)["Status"] == "OK", body


def target_levels(levels):
    """The concurrency levels the targets read: c=8 (or the middle one) and the highest."""
    return {8 if 8 in levels else levels[len(levels) // 2], max(levels)}


def measure(workloads, servers, levels, args, wrk_pin):
    """({(workload name, connections): Row}, requests the app answered). The levels the
    targets read run --repeat times, app and baseline alternating, so that a burst of outside
    load hits both about equally."""
    rows = {}
    repeated = target_levels(levels)
    answered = len(workloads)  # check_servers' probes
    for workload in workloads:
        if args.warmup > 0:
            for kind, server in servers.items():
                stats = run_wrk(wrk_pin, server.port, workload.script_path, 8, args.warmup)
                answered += stats["requests"] if kind == "app" else 0
        for connections in levels:
            row = rows[(workload.name, connections)] = Row()
            for _ in range(args.repeat if connections in repeated else 1):
                for kind in ("app", "baseline"):
                    server = servers[kind]
                    stats = run_wrk(wrk_pin, server.port, workload.script_path, connections,
                                    args.duration, server.proc.pid)
                    (row.app if kind == "app" else row.base).append(stats)
                    answered += stats["requests"] if kind == "app" else 0
                    print("  %-42s c=%-3d %-8s %10.0f req/s  p50 %7.2f ms  p99 %7.2f ms  "
                          "errors %d" % (workload.name, connections, kind, stats["rps"],
                                         stats["p50_us"] / 1000, stats["p99_us"] / 1000,
                                         stats["errors"]), file=sys.stderr, flush=True)
    return rows, answered


def access_log_lines(path):
    """(request lines written, lines the server reported dropped) in the app's log."""
    written = dropped = 0
    with open(path, errors="replace") as f:
        for line in f:
            if "access-log lines dropped" in line:
                dropped += int(line.split(" access-log lines dropped")[0].rsplit(" ", 1)[1])
            elif "appserver.access:" in line:
                written += 1
    return written, dropped


def print_table(workloads, levels, rows, micro_rows):
    header = ("| workload | conc. | app req/s | baseline req/s | ratio | app p50 | baseline p50 "
              "| p50 ratio | app p99 | baseline p99 | p99 ratio | errors app / baseline "
              "| server CPU per request, app / baseline |")
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for workload in workloads:
        for connections in levels:
            row = rows[(workload.name, connections)]
            app, base = row.summaries()
            runs = " (median of %d)" % len(row.app) if len(row.app) > 1 else ""
            print(("| %s | %d%s | %s | %s | %.2f | %s | %s | %.2f | %s | %s | %.2f | %d / %d "
                   "| %s |") % (
                workload.name, connections, runs, rate(app["rps"]), rate(base["rps"]),
                row.ratio("rps"), ms(app["p50_us"]), ms(base["p50_us"]), row.ratio("p50_us"),
                ms(app["p99_us"]), ms(base["p99_us"]), row.ratio("p99_us"), app["errors"],
                base["errors"], cpu_pair(app, base)))
    for row in micro_rows:
        print("| " + " | ".join(row + ("–",)) + " |")
    print("\nIn-process rows: \"app req/s\" is rsa_verify (or issue_token) calls/s, \"baseline "
          "req/s\" a bare pow(s, e, n); the p50 columns hold the time per call. Server CPU per "
          "request: user + system time of the server process over the run / requests served. "
          "Rows of several runs: each figure is the median over the runs, each ratio the "
          "median of the per-pair ratios.")


def print_targets(workloads, levels, rows, pow_seconds):
    """The targets, each with its arithmetic; returns (met, total)."""
    print("\n## Targets (ratios to the baseline in this run)\n")
    verdicts = []

    def target(ok, text):
        verdicts.append(ok)
        print("- %s %s" % ("PASS" if ok else "MISS", text))

    c = 8 if 8 in levels else levels[len(levels) // 2]
    by_key = {w.key: rows[(w.name, c)] for w in workloads}
    for key, bound, what in (("token", 0.80, "token throughput"),
                             ("official-keep-alive", 0.60,
                              "official-example callback throughput, keep-alive"),
                             ("official-close", 0.75,
                              "official-example callback throughput, Connection: close")):
        if key in by_key:
            r = by_key[key].ratio("rps")
            target(r >= bound, "%s at c=%d: %.2f (target >= %.2f)" % (what, c, r, bound))
    if "rsa2048" in by_key and 2048 in pow_seconds:
        app, base = by_key["rsa2048"].summaries()
        t_app, t_base, t_pow = 1e6 / app["rps"], 1e6 / base["rps"], pow_seconds[2048] * 1e6
        bound = t_base + 1.2 * t_pow
        target(t_app <= bound, "2048-bit callback, c=%d, time per request = 1 / throughput: "
               "app %.1f µs <= baseline %.1f µs + 1.2 × pow %.1f µs = %.1f µs (margin %+.1f µs)"
               % (c, t_app, t_base, t_pow, bound, bound - t_app))
        if app.get("cpu_us") is not None and base.get("cpu_us") is not None:
            cpu_bound = base["cpu_us"] + 1.2 * t_pow
            print("  (same check on server CPU time per request, which other processes do not "
                  "inflate: app %.1f µs vs baseline %.1f µs + 1.2 × %.1f µs = %.1f µs: %s)"
                  % (app["cpu_us"], base["cpu_us"], t_pow, cpu_bound,
                     "within" if app["cpu_us"] <= cpu_bound else "over"))
    errors = sum(r.summaries()[0]["errors"] for r in rows.values())
    base_errors = sum(r.summaries()[1]["errors"] for r in rows.values())
    target(errors == 0, "errors (non-2xx + socket errors) across all app runs: %d "
           "(baseline: %d)" % (errors, base_errors))
    top = max(levels)
    for workload in workloads:
        row = rows[(workload.name, top)]
        app, base = row.summaries()
        r = row.ratio("p99_us")
        runs = len(row.app)
        target(r <= 2, "p99 at c=%d, %s: %s%.2f× (target <= 2×); app/baseline p99 per pair, "
               "ms: %s" % (top, workload.name, "median of %d pair ratios " % runs
                           if runs > 1 else "", r, row.pairs("p99_us")))
    return sum(verdicts), len(verdicts)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    parser.add_argument("--connections", default="1,8,64", help="concurrency levels (1,8,64)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per server at c=8 and at the highest concurrency, "
                        "interleaved (5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per "
                        "server and workload, not measured; 0: none (1)")
    parser.add_argument("--workloads", default=",".join(WORKLOAD_KEYS),
                        help="which workloads, comma-separated (%s)" % ",".join(WORKLOAD_KEYS))
    parser.add_argument("--module-dir", default=str(REPO),
                        help="the folder whose appserver.py to measure (this checkout's); "
                        "to compare another version with the same bench")
    parser.add_argument("--no-pin", action="store_true", help="do not use taskset")
    parser.add_argument("--no-access-log", action="store_true",
                        help="run the app server with logging at WARNING (diagnosis only)")
    parser.add_argument("--no-micro", action="store_true",
                        help="skip the in-process rows (diagnosis only)")
    parser.add_argument("--no-auth-row", action="store_true",
                        help="skip the token-authorization cost comparison")
    parser.add_argument("--before", default=BEFORE_REFACTOR, metavar="REV",
                        help="measure token throughput against appserver.py at this git "
                        "revision (default: the last one before the layered refactor); "
                        "'none' to skip")
    parser.add_argument("--serve", choices=("baseline", "app", "app-auth"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--key-prefix", default="http://127.0.0.1:1/", help=argparse.SUPPRESS)
    parser.add_argument("--log", default=os.devnull, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    selected = args.workloads.split(",")
    unknown = set(selected) - set(WORKLOAD_KEYS)
    if unknown or args.repeat < 1:
        parser.error("unknown workloads %s" % ",".join(sorted(unknown)) if unknown
                     else "--repeat must be at least 1")
    args.workloads = selected
    return args


def main(argv=None):
    args = parse_arguments(argv)
    if args.serve:
        serve(args.serve, args.key_prefix, args.log,
              logging.WARNING if args.no_access_log else logging.INFO)
        return 0

    if not shutil.which("wrk"):
        print("bench: wrk is missing. Install it with:\n    apt-get install -y wrk",
              file=sys.stderr)
        return 1
    levels = [int(c) for c in args.connections.split(",")]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pinned = not args.no_pin and shutil.which("taskset") is not None and cpus >= 2
    server_pin, wrk_pin = (0, 1) if pinned else (None, None)

    tmp = tempfile.mkdtemp(prefix="oss-bench-")
    private_2048, pem = load_keys()
    keys = KeyServer(pem)
    workloads = make_workloads(keys, private_2048, args.workloads, tmp)
    print_header(args, cpus, (server_pin, wrk_pin), levels)

    log_path = os.path.join(tmp, "app.log")
    servers = {}
    steal_before = cpu_ticks()
    try:
        for kind in ("baseline", "app"):
            servers[kind] = ServerProcess(kind, server_pin, keys.prefix, log_path,
                                          args.no_access_log)
        check_servers(workloads, servers)
        expected_fetches = 1 if "rsa2048" in args.workloads else 0
        assert keys.fetches == expected_fetches, keys.fetches
        rows, answered = measure(workloads, servers, levels, args, wrk_pin)
        fetches_after = keys.fetches
        time.sleep(1)  # the log writer's last batch
        written, dropped = access_log_lines(log_path)
    finally:
        for server in servers.values():
            server.stop()
        keys.stop()

    load_after = os.getloadavg()
    if pinned and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {server_pin})  # time the in-process rows on the server's CPU
    micro_rows, pow_seconds = ([], {}) if args.no_micro else microbenchmarks(private_2048, tmp)
    confirmation_rows, confirmation = ([], None) if args.no_micro else confirmation_costs(
        private_2048, tmp)
    micro_rows += confirmation_rows
    # An appserver.py from before token authorization (--module-dir) has nothing to compare.
    has_auth = "token_auth" in {field.name for field in dataclasses.fields(appserver.Config)}
    auth = None if args.no_auth_row or not has_auth else measure_token_auth(
        args, wrk_pin, server_pin, keys.prefix, tmp)
    before = None if args.before == "none" else measure_before(
        args, wrk_pin, server_pin, keys.prefix, tmp)
    steal = steal_share(steal_before, cpu_ticks())

    print_table(workloads, levels, rows, micro_rows)
    met, total = print_targets(workloads, levels, rows, pow_seconds)
    if auth is not None:
        met, total = met + print_token_auth(*auth), total + 1
    if confirmation is not None:
        met, total = met + print_confirmation(confirmation), total + 1
    if before is not None:
        met, total = met + print_before(args, before), total + 1
    print()
    print("- key fetches by the app server: %d (the cache was warmed before measuring)"
          % fetches_after)
    if not args.no_access_log:
        print("- app access log: %d lines written for the %d requests counted (wrk does not "
              "count those in flight when a run ends); %d reported dropped%s"
              % (written, answered, dropped,
                 " (the log writer fell behind: the app did less work than it answered)"
                 if dropped else ""))
    print("- load average after the load runs: %.2f %.2f %.2f" % load_after)
    if steal is not None:
        print("- CPU steal while the bench ran: %.1f%% of all CPU time (time the virtual "
              "machine's host gave to others; above a few percent, figures swing from run "
              "to run)" % steal)
    print("\n%d of %d targets met." % (met, total))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
