"""Headless runs through ComfyUI's HTTP API (``fantasyportrait run``).

Uploads the portrait image and driving video(s), fills them into an API-format workflow, queues
it, follows progress over ComfyUI's websocket (or by polling when that is not available), and
downloads the saved video. A failed run raises :class:`RunError` with ComfyUI's node error.
"""

from __future__ import annotations

import base64
import http.client
import json
import mimetypes
import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Callable

from fantasyportrait_core.errors import FantasyPortraitError

from .example_inputs import upload_name
from .errors import PromptVanished, RunError, ServerUnreachable  # noqa: F401 (also the runner's API)
from .workflow import apply_overrides, check_workflow, fill_inputs, load_workflow


class ComfyClient:
    """ComfyUI's HTTP API. ``headers`` (e.g. an auth token for a server behind a proxy) go with every
    request and are never part of a message."""

    def __init__(self, server: str, timeout: float = 30.0, headers: dict | None = None):
        if "://" not in server:
            server = "http://" + server
        self.base = server.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.client_id = uuid.uuid4().hex

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={**self.headers, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RunError(f"{method} {path} failed with HTTP {exc.code}: {_describe_error(detail)}",
                           transient=exc.code >= 500) from None
        except urllib.error.URLError as exc:
            raise ServerUnreachable(f"Cannot reach ComfyUI at {self.base} ({exc.reason}). Is the server "
                                    "running?") from None
        except (http.client.HTTPException, OSError) as exc:  # OSError: resets, refusals, timeouts
            raise ServerUnreachable(f"Lost the connection to ComfyUI at {self.base} ({exc}).") from None

    def get_json(self, path: str):
        return json.loads(self._request("GET", path))

    def post_json(self, path: str, data: dict) -> None:
        self._request("POST", path, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def upload(self, path: str, name: str | None = None) -> str:
        """Upload a file to ComfyUI's input folder (as ``name``, default its own name); returns the name
        to put in the workflow."""
        if not os.path.isfile(path):
            raise FantasyPortraitError(f"Input file not found: {path}")
        boundary = uuid.uuid4().hex
        name = name or os.path.basename(path)
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(path, "rb") as fh:
            data = fh.read()
        body = b"".join([
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: {ctype}\r\n\r\n".encode(), data, b"\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n".encode(),
            f"--{boundary}--\r\n".encode(),
        ])
        reply = json.loads(self._request("POST", "/upload/image", body,
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]

    def queue(self, workflow: dict) -> str:
        body = json.dumps({"prompt": workflow, "client_id": self.client_id}).encode()
        reply = json.loads(self._request("POST", "/prompt", body, {"Content-Type": "application/json"}))
        if reply.get("node_errors"):
            raise RunError("ComfyUI refused the workflow: " + _describe_error(json.dumps(reply)))
        return reply["prompt_id"]

    def download(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request("GET", "/view?" + query)


def _describe_error(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:2000]
    parts = []
    err = data.get("error")
    if isinstance(err, dict):
        parts.append(f"{err.get('message', '')} {err.get('details', '')}".strip())
    for node_id, node in (data.get("node_errors") or {}).items():
        for e in node.get("errors", []):
            parts.append(f"node {node_id} ({node.get('class_type', '?')}): {e.get('message')} {e.get('details', '')}".strip())
    return "; ".join(p for p in parts if p) or text.strip()[:2000]


# --------------------------------------------------------------------------------------------
# a minimal websocket reader (text frames only), enough for ComfyUI's progress messages


class _WebSocket:
    def __init__(self, base: str, client_id: str, timeout: float = 2.0, headers: dict | None = None):
        url = urllib.parse.urlparse(base)
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
        if url.scheme == "https":
            raise OSError("websocket over TLS not supported; polling instead")
        self.sock = socket.create_connection((host, port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()) + "\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1024)
            if not chunk:
                raise OSError("websocket handshake failed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise OSError("websocket not available")
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.sock.settimeout(timeout)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def next_message(self):
        """The next text message as JSON, or None for binary/control frames. Raises socket.timeout."""
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        payload = self._read(length)
        if b0 & 0x0F == 1:
            return json.loads(payload.decode("utf-8"))
        if b0 & 0x0F == 8:
            raise OSError("websocket closed by server")
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------


def run_workflow(client: ComfyClient, workflow: dict, progress: Callable[[str], None] = lambda s: None,
                 timeout: float | None = None, on_queued: Callable[[str], None] = lambda prompt_id: None,
                 stop: Callable[[], bool] = lambda: False) -> dict:
    """Queue ``workflow``, follow it, and return its history entry (outputs per node). ``on_queued(prompt_id)``
    runs as soon as the server accepted it; ``stop()`` returning True ends the wait (see :func:`follow`)."""
    ws = open_progress(client)
    try:
        if stop():
            raise RunError("Stopped before queueing.")
        prompt_id = client.queue(workflow)
        on_queued(prompt_id)
        progress(f"queued as {prompt_id}")
        return follow(client, prompt_id, progress, ws, timeout=timeout, stop=stop)
    finally:
        if ws is not None:
            ws.close()


def open_progress(client: ComfyClient):
    """The server's websocket for progress messages, or None (then :func:`follow` polls)."""
    try:
        return _WebSocket(client.base, client.client_id, headers=client.headers)
    except OSError:
        return None


def follow(client: ComfyClient, prompt_id: str, progress: Callable[[str], None] = lambda s: None, ws=None,
           poll: float = 0.5, timeout: float | None = None, vanish_check: float = 3.0,
           stop: Callable[[], bool] = lambda: False) -> dict:
    """Wait for a queued prompt and return its history entry. Progress comes from ``ws`` (a websocket
    opened before queueing) when there is one. Every ``vanish_check`` seconds a prompt that is not in
    the history is looked for in the queue; when it is in neither (the server restarted),
    :class:`PromptVanished` is raised. ``stop()`` returning True ends the wait with a RunError."""
    start = last_check = time.monotonic()
    last_history = float("-inf")
    while True:
        if stop():
            raise RunError("Stopped before the run finished.")
        if timeout is not None and time.monotonic() - start > timeout:
            raise RunError(f"The run did not finish within {timeout:g} s.", transient=True)
        if ws is not None:
            try:
                msg = ws.next_message()
            except socket.timeout:
                msg = None
            except OSError:
                ws.close()
                ws = None
                msg = None
            if msg and msg.get("data", {}).get("prompt_id", prompt_id) == prompt_id:
                kind, data = msg.get("type"), msg.get("data", {})
                if kind == "progress":
                    progress(f"node {data.get('node')}: {data.get('value')}/{data.get('max')}")
                elif kind == "executing" and data.get("node"):
                    progress(f"running node {data['node']}")
                elif kind == "execution_error":
                    raise _execution_error(data)
                elif kind == "execution_interrupted":
                    raise RunError("The run was cancelled on the server.")
            finished = msg is not None and (msg.get("type") == "execution_success" or (
                msg.get("type") == "executing" and msg.get("data", {}).get("node") is None))
            if msg is not None and not finished and time.monotonic() - last_history < poll:
                continue  # a busy websocket (progress, previews) is not a reason to ask for the history
        else:
            time.sleep(poll)
        last_history = time.monotonic()
        history = client.get_json(f"/history/{prompt_id}")
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status", {})
            if status.get("status_str") == "error":
                for name, data in status.get("messages", []):
                    if name == "execution_error":
                        raise _execution_error(data)
                    if name == "execution_interrupted":
                        raise RunError("The run was cancelled on the server.")
                raise RunError("The run failed (no error message from ComfyUI).")
            if status.get("completed", True):
                return entry
        elif time.monotonic() - last_check > vanish_check:
            last_check = time.monotonic()
            queue = client.get_json("/queue")
            listed = {item[1] for key in ("queue_running", "queue_pending") for item in queue.get(key, [])}
            if prompt_id not in listed and prompt_id not in client.get_json(f"/history/{prompt_id}"):
                raise PromptVanished(f"Prompt {prompt_id} is no longer known to {client.base} (the server was "
                                     "restarted?).")


def _execution_error(data: dict) -> RunError:
    """A node failed: out of memory is worth another try, anything else is about the job's inputs."""
    kind = str(data.get("exception_type", ""))
    return RunError(_node_error(data), transient="OutOfMemory" in kind or "OOM" in kind)


def _node_error(data: dict) -> str:
    return (f"ComfyUI node {data.get('node_id')} ({data.get('node_type')}) failed: "
            f"{data.get('exception_type', '')}: {data.get('exception_message', '').strip()}")


def download_result(client: ComfyClient, entry: dict) -> bytes:
    """The bytes of the file a finished run saved (its video, when there are several files)."""
    files = saved_files(entry)
    if not files:
        raise RunError("The run finished but saved no output (does the workflow end in SaveVideo?).")
    return client.download(files[0])


def saved_files(entry: dict) -> list[dict]:
    """Saved outputs of a finished run (videos first)."""
    items = []
    for out in entry.get("outputs", {}).values():
        for key in ("videos", "gifs", "images"):
            for item in out.get(key, []):
                if item.get("type") == "output":
                    items.append(item)
    return sorted(items, key=lambda i: not i["filename"].lower().endswith((".mp4", ".webm", ".mov")))


def run(server: str, workflow_path: str, image: str | None, videos: list[str], out: str,
        progress: Callable[[str], None] | None = None, timeout: float | None = None,
        sets: list[str] | None = None) -> str:
    progress = progress or (lambda s: print(s, file=sys.stderr))
    client = ComfyClient(server)
    notes = []
    wf = apply_overrides(load_workflow(workflow_path), sets, notes)
    for note in notes:
        progress(note)
    check_workflow(wf, client.get_json("/object_info"))
    image_name = client.upload(image, upload_name(image)) if image else None
    video_names = [client.upload(v, upload_name(v)) for v in videos]
    progress(f"uploaded {1 if image else 0} image and {len(video_names)} video(s)")
    entry = run_workflow(client, fill_inputs(wf, image_name, video_names), progress, timeout=timeout)
    data = download_result(client, entry)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as fh:
        fh.write(data)
    return out
