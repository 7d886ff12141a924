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

from ..errors import FantasyPortraitError


class RunError(FantasyPortraitError):
    """The server refused or failed the workflow. ``transient``: worth trying again (a server-side
    HTTP 5xx, out of memory), as opposed to a failure on the job's own inputs."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class ServerUnreachable(RunError):
    """The server cannot be reached, or the connection to it was lost."""


class PromptVanished(ServerUnreachable):
    """The prompt is neither queued, running nor in the history: the server was restarted."""


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


def node_order(node_id: str) -> tuple:
    """Sort key of API-format node ids: numerically ("2" before "10")."""
    return len(node_id), node_id


def nodes_of_class(workflow: dict, *classes: str) -> list[str]:
    """Ids of the workflow's nodes of these class types, in node-id order."""
    return sorted((k for k, n in workflow.items() if n.get("class_type") in classes), key=node_order)


def fill_inputs(workflow: dict, image: str | None, videos: list[str]) -> dict:
    """Put uploaded file names into the workflow's LoadImage and LoadVideo nodes (in node-id order)."""
    wf = json.loads(json.dumps(workflow))

    if image is not None:
        loaders = nodes_of_class(wf, "LoadImage")
        if not loaders:
            raise FantasyPortraitError("The workflow has no LoadImage node for the portrait image.")
        wf[loaders[0]]["inputs"]["image"] = image
    loaders = nodes_of_class(wf, "LoadVideo")
    if len(videos) > len(loaders):
        raise FantasyPortraitError(
            f"{len(videos)} driving videos were given but the workflow has {len(loaders)} LoadVideo node(s).")
    for node_id, name in zip(loaders, videos):
        wf[node_id]["inputs"]["file"] = name
    return wf


def apply_overrides(workflow: dict, sets: list[str], notes: list[str] | None = None, label: str = "--set") -> dict:
    """``NODE.INPUT=VALUE`` overrides: NODE is a node id, a node title or a class type that occurs once;
    VALUE is read as JSON when it parses (numbers, true/false, lists), else as text. An input that is
    connected to another node gets the value instead (e.g. a fixed size instead of Output Size's); a
    note saying so is added to ``notes``. ``label`` names the overrides in messages (``--set``, or a jobs
    file's ``set`` column)."""
    wf = json.loads(json.dumps(workflow))
    for item in sets or []:
        target, equals, raw = item.partition("=")
        node_ref, dot, name = target.strip().rpartition(".")
        if not equals or not dot or not node_ref or not name:
            raise FantasyPortraitError(f"{label} {item!r}: write NODE.INPUT=VALUE, NODE being a node id or title "
                                       "(e.g. 19.seed=7 or \"FantasyPortrait Sampler.portrait_cfg=3.5\").")
        ids = ([node_ref] if node_ref in wf else
               [k for k, n in wf.items() if n.get("_meta", {}).get("title") == node_ref]
               or [k for k, n in wf.items() if n.get("class_type") == node_ref])
        if not ids:
            known = ", ".join(f"{k} ({n.get('_meta', {}).get('title') or n['class_type']})"
                              for k, n in sorted(wf.items(), key=lambda kv: node_order(kv[0])))
            raise FantasyPortraitError(f"{label} {item!r}: the workflow has no node {node_ref!r}. Its nodes: {known}.")
        if len(ids) > 1:
            raise FantasyPortraitError(f"{label} {item!r}: {len(ids)} nodes are called {node_ref!r} "
                                       f"(ids {', '.join(sorted(ids))}); use the node id.")
        node = wf[ids[0]]
        if name not in node["inputs"]:
            raise FantasyPortraitError(f"{label} {item!r}: node {ids[0]} ({node['class_type']}) has no input {name!r}; "
                                       f"its inputs: {', '.join(sorted(node['inputs']))}.")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        link = node["inputs"][name]
        if isinstance(link, list) and len(link) == 2 and notes is not None:
            notes.append(f"{label} {item}: {node['class_type']}.{name} now takes this value instead of node "
                         f"{link[0]}'s output {link[1]}")
        node["inputs"][name] = value
    return wf


#: model-file inputs and the ComfyUI models/ folder each belongs in
MODEL_FOLDERS = {"unet_name": "diffusion_models", "vae_name": "vae", "lora_name": "loras", "clip_name": "text_encoders",
                 "ckpt_name": "checkpoints", "model_name": "fantasyportrait", "detector": "fantasyportrait",
                 "landmarks": "fantasyportrait", "motion_encoder": "fantasyportrait"}
MODEL_FOLDERS_BY_NODE = {("CLIPVisionLoader", "clip_name"): "clip_vision"}


def _choices(spec):
    """The allowed values of a combo input in /object_info (V1 ``[[...], {...}]`` or V3 ``["COMBO", {options}]``)."""
    if isinstance(spec, list) and spec:
        if isinstance(spec[0], list):
            return spec[0]
        if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
            return spec[1].get("options")
    return None


def check_workflow(workflow: dict, object_info: dict) -> None:
    """Before queueing: every node type exists on the server and every model file the workflow names is
    in the server's lists; otherwise a :class:`RunError` that says what is missing and where it goes."""
    unknown = sorted({n["class_type"] for n in workflow.values() if n["class_type"] not in object_info})
    if unknown:
        raise RunError(f"The server has no node type(s) {', '.join(unknown)}: install the custom node pack(s) that "
                       "provide them into ComfyUI/custom_nodes/ (the FantasyPortrait nodes come from this pack) and "
                       "restart ComfyUI.")
    missing = []
    for node_id, node in sorted(workflow.items(), key=lambda kv: node_order(kv[0])):
        ctype = node["class_type"]
        spec = object_info[ctype].get("input", {})
        specs = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in node["inputs"].items():
            folder = MODEL_FOLDERS_BY_NODE.get((ctype, name)) or MODEL_FOLDERS.get(name)
            choices = _choices(specs.get(name))
            if folder and isinstance(value, str) and choices is not None and value not in choices:
                missing.append(f"{value} (node {node_id}, {ctype}.{name}): put it in ComfyUI/models/{folder}/")
    if missing:
        raise RunError("Model file(s) missing on the server:\n  " + "\n  ".join(missing)
                       + "\nThen restart ComfyUI (or press 'r' in its window to refresh the model lists).")


def load_workflow(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            wf = json.load(fh)
    except FileNotFoundError:
        raise FantasyPortraitError(f"Workflow not found: {path}") from None
    except ValueError as exc:
        raise FantasyPortraitError(f"{path} is not valid JSON ({exc}).") from None
    if "nodes" in wf and "links" in wf:
        raise FantasyPortraitError(
            f"{path} is a UI-format workflow (for drag-and-drop). Use the API-format file (*_api.json), or export "
            "one from ComfyUI with 'Export (API)'.")
    if not isinstance(wf, dict) or not all(isinstance(n, dict) and "class_type" in n for n in wf.values()):
        raise FantasyPortraitError(f"{path} is not an API-format ComfyUI workflow.")
    return wf


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
    image_name = client.upload(image) if image else None
    video_names = [client.upload(v) for v in videos]
    progress(f"uploaded {1 if image else 0} image and {len(video_names)} video(s)")
    entry = run_workflow(client, fill_inputs(wf, image_name, video_names), progress, timeout=timeout)
    data = download_result(client, entry)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as fh:
        fh.write(data)
    return out


# --------------------------------------------------------------------------------------------
# a private, headless ComfyUI for one run


def find_comfyui(explicit: str | None = None, pack_dir: str | None = None, missing: str | None = None) -> str:
    """The ComfyUI folder to start: ``explicit``, or the ComfyUI whose ``custom_nodes/`` holds this pack
    (``pack_dir``, default the pack's own folder). ``missing``: the message when there is neither."""
    if explicit:
        folder = os.path.abspath(os.path.expanduser(explicit))
        if not os.path.isdir(folder):
            raise FantasyPortraitError(f"ComfyUI folder not found: {folder}")
        if not (os.path.isfile(os.path.join(folder, "main.py")) and os.path.isdir(os.path.join(folder, "comfy"))):
            raise FantasyPortraitError(f"{folder} is not a ComfyUI folder (it has no main.py and comfy/): give the "
                                       "folder that holds ComfyUI's main.py.")
        return folder
    from . import PACK_DIR

    parent = os.path.dirname(pack_dir or PACK_DIR)
    if os.path.basename(parent) == "custom_nodes" and os.path.isfile(os.path.join(parent, "..", "main.py")):
        return os.path.abspath(os.path.join(parent, ".."))
    raise FantasyPortraitError(missing or (
        "No ComfyUI to start: this pack is not inside a ComfyUI's custom_nodes/ folder. Give --comfyui DIR (a "
        "ComfyUI with this pack in its custom_nodes/) or --server URL (a running ComfyUI)."))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def comfyui_python(comfy_dir: str, explicit: str | None = None) -> str:
    """ComfyUI's Python: ``explicit``, a venv inside ComfyUI, the portable build's, or this one."""
    if explicit:
        return explicit
    for candidate in ("venv/bin/python", ".venv/bin/python", "venv/Scripts/python.exe", ".venv/Scripts/python.exe",
                      "../python_embeded/python.exe"):
        path = os.path.normpath(os.path.join(comfy_dir, candidate))
        if os.path.isfile(path):
            return path
    return sys.executable


class PrivateServer:
    """A headless ComfyUI on a free loopback port, started for one run and always stopped after it
    (also on errors and Ctrl-C). ``python``: the interpreter of that ComfyUI (default: :func:`comfyui_python`,
    the one ComfyUI was installed with); its output goes to ``log_path`` (default: a new temporary file);
    ``env``: variables added to its environment."""

    def __init__(self, comfyui_dir: str, python: str | None = None, extra_args=(), ready_timeout: float = 300.0,
                 progress: Callable[[str], None] = lambda s: None, log_path: str | None = None,
                 env: dict | None = None):
        self.dir, self.python = comfyui_dir, comfyui_python(comfyui_dir, python)
        self.extra_args, self.ready_timeout, self.progress = list(extra_args), ready_timeout, progress
        self.log_path, self.env = log_path, env
        self.proc = None
        self.url = None

    def __enter__(self) -> str:
        import subprocess
        import tempfile

        port = _free_port()
        self.log = (open(self.log_path, "w+") if self.log_path else
                    tempfile.NamedTemporaryFile("w+", prefix="fantasyportrait-comfyui-", suffix=".log", delete=False))
        self.proc = subprocess.Popen(
            [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
             *self.extra_args], cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env} if self.env else None)
        self.url = f"http://127.0.0.1:{port}"
        self.progress(f"starting ComfyUI from {self.dir} on {self.url} (log: {self.log.name})")
        client = ComfyClient(self.url, timeout=5)
        deadline = time.monotonic() + self.ready_timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RunError(f"ComfyUI exited while starting (status {self.proc.returncode}):\n{self._tail()}")
                try:
                    client.get_json("/system_stats")
                    break
                except RunError:
                    if time.monotonic() > deadline:
                        raise RunError(f"ComfyUI did not answer within {self.ready_timeout:.0f} s:\n{self._tail()}")
                    time.sleep(0.5)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self.url

    def _tail(self, lines: int = 20) -> str:
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - it must not outlive the run
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return False
