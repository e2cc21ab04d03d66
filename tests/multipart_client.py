"""A small standard-library multipart/form-data client for the tests and the demo check.

It streams the file part from disk, so uploading 50 MB does not hold 50 MB in memory, and it
can stop mid-body to simulate an aborted upload.
"""

import http.client
import json
import os
import secrets
import urllib.parse
import urllib.request
from typing import NamedTuple, Optional

CHUNK = 64 * 1024


class Reply(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def token_fields(token, key, success_action_status="200"):
    """The form fields upload.js builds from an app-server token, in its order."""
    fields = [("key", key), ("policy", token["policy"])]
    if "x-oss-signature" in token:
        fields += [(name, token[name]) for name in
                   ("x-oss-signature-version", "x-oss-credential", "x-oss-date",
                    "x-oss-signature")]
    else:
        fields += [("OSSAccessKeyId", token["accessid"]), ("signature", token["signature"])]
    fields.append(("success_action_status", success_action_status))
    if "callback" in token:
        fields.append(("callback", token["callback"]))
    if "x-oss-security-token" in token:
        fields.append(("x-oss-security-token", token["x-oss-security-token"]))
    return fields


def _part_header(boundary, name, filename=None, content_type=None):
    # WHATWG form-data escaping of names: '"' as %22, CR and LF as %0D and %0A.
    def quote(text):
        return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")

    header = f'--{boundary}\r\nContent-Disposition: form-data; name="{quote(name)}"'
    if filename is not None:
        header += f'; filename="{quote(filename)}"'
    header += "\r\n"
    if content_type is not None:
        header += f"Content-Type: {content_type}\r\n"
    return (header + "\r\n").encode("utf-8")


def post_form(url, fields, file_name=None, file_source=None, *,
              file_content_type="application/octet-stream", trailing_fields=(),
              boundary=None, headers=None, abort_after=None, timeout=60) -> Optional[Reply]:
    """POST ``fields`` (name, value) pairs, then a ``file`` part, then ``trailing_fields``.

    ``file_source`` is bytes or a path (streamed from disk); None sends no file part.
    ``abort_after`` sends only that many body bytes, then closes the connection and
    returns None.
    """
    boundary = boundary or "----oss-test-" + secrets.token_hex(12)
    segments = [_part_header(boundary, name) + value.encode("utf-8") + b"\r\n"
                for name, value in fields]
    if file_source is not None:
        segments.append(_part_header(boundary, "file", file_name, file_content_type))
        if isinstance(file_source, (bytes, bytearray)):
            segments.append(bytes(file_source))
        else:
            segments.append(os.fspath(file_source))
        segments.append(b"\r\n")
    segments += [_part_header(boundary, name) + value.encode("utf-8") + b"\r\n"
                 for name, value in trailing_fields]
    segments.append(f"--{boundary}--\r\n".encode("ascii"))
    length = sum(len(s) if isinstance(s, bytes) else os.path.getsize(s) for s in segments)

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        headers = dict(headers or {})
        conn.putrequest("POST", parts.path or "/", skip_host="Host" in headers)
        conn.putheader("Content-Type", f'multipart/form-data; boundary="{boundary}"')
        conn.putheader("Content-Length", str(length))
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        budget = length if abort_after is None else abort_after
        for segment in segments:
            for chunk in _chunks(segment):
                chunk = chunk[:budget]
                conn.send(chunk)
                budget -= len(chunk)
                if budget == 0 and abort_after is not None:
                    return None
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def _chunks(segment):
    if isinstance(segment, bytes):
        yield segment
        return
    with open(segment, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            yield block
