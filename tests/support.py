"""Shared test helpers: a live app server on loopback, and CI-aware skips."""

import os
import pathlib
import threading
import unittest

REPO = pathlib.Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition, reason):
    """Skip when an optional tool is missing, except in CI, which installs everything:
    there a missing tool means the setup broke, and a silent skip would hide it."""
    if condition:
        return
    if IN_CI:
        raise AssertionError("required under CI=true: " + reason)
    raise unittest.SkipTest(reason)


def start_app_server(config, app=None, **options):
    """Start the app server on 127.0.0.1:0 in a thread; returns (server, base_url)."""
    import appserver

    server = appserver.make_server(config, "127.0.0.1", 0, app=app, **options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="appserver-test", daemon=True)
    thread.start()
    server._test_thread = thread
    host, port = server.server_address[:2]
    return server, "http://%s:%d" % (host, port)


def stop_app_server(server):
    server.stop()
    server._test_thread.join(10)
