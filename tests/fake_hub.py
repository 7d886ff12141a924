"""A small local stand-in for the Hugging Face hub (``HF_ENDPOINT``), for the setup tests.

Serves ``/{repo}/resolve/{revision}/{path}`` (HEAD and GET with ``Range``) for the files it is given,
with the headers the ``huggingface_hub`` client reads (``X-Repo-Commit``, ``X-Linked-Etag`` = SHA-256,
``X-Linked-Size``) and the hub's error codes (``RepoNotFound``, ``EntryNotFound``, ``GatedRepo`` for a
gated repository asked without ``Authorization``). ``cut[path] = n`` makes the next n GETs of that file
stop after half the bytes asked for, as a dropped connection would. Every GET's ``Range`` header is recorded.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, files: dict, gated=()):
        self.files = dict(files)  # (repo, path) -> bytes
        self.gated = set(gated)
        self.cut = {}
        self.gets = []  # (repo, path, Range header or None)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _error(self, code, error_code):
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("X-Error-Message", error_code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, body_too):
                parts = self.path.split("?")[0].lstrip("/").split("/")
                if "resolve" not in parts:
                    return self._error(404, "EntryNotFound")
                at = parts.index("resolve")
                repo, path = "/".join(parts[:at]), "/".join(parts[at + 2:])
                if not any(r == repo for r, _ in hub.files) and repo not in hub.gated:
                    return self._error(404, "RepoNotFound")
                if repo in hub.gated and not self.headers.get("Authorization"):
                    return self._error(401, "GatedRepo")
                data = hub.files.get((repo, path))
                if data is None:
                    return self._error(404, "EntryNotFound")
                sha = hashlib.sha256(data).hexdigest()
                start, status = 0, 200
                rng = self.headers.get("Range")
                if body_too:
                    hub.gets.append((repo, path, rng))
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{sha}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("ETag", f'"{sha}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if not body_too:
                    return
                if hub.cut.get(path):
                    hub.cut[path] -= 1
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection drops mid-file
                    return
                self.wfile.write(body)

            def do_HEAD(self):
                self._serve(False)

            def do_GET(self):
                self._serve(True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
