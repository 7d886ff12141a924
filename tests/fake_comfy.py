"""The tests' one in-process fake of ComfyUI's HTTP API, with a real queue, for the runner's and the batch
runner's unit tests.

It keeps uploads (in upload order), every posted ``/prompt`` body, a pending queue and a history, and
"executes" one prompt at a time on a thread (``seconds`` each). A prompt whose seed (any node's ``seed``
input) is in ``fail_seeds`` fails with a node error; one in ``flaky_seeds`` fails once with an
out-of-memory error, then succeeds; with ``refuse`` (ComfyUI's ``node_errors``) every prompt is refused
at validation, as ``/prompt`` refuses a bad widget value. ``kill()``
closes the listening socket (connections are refused), and ``forget()`` empties the queue and the
history while listening on (a restart between two requests). Headers of every request are kept.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JSONHandler(BaseHTTPRequestHandler):
    """A quiet request handler that answers JSON."""

    def log_message(self, *args):
        pass

    def _json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FakeComfy:
    def __init__(self, object_info: dict, seconds: float = 0.2, fail_seeds=(), flaky_seeds=(), refuse=None):
        self.object_info, self.seconds = object_info, seconds
        self.fail_seeds, self.flaky_seeds = set(fail_seeds), set(flaky_seeds)
        self.refuse = refuse
        self.posted = []  # every /prompt body, as sent
        self.lock = threading.Lock()
        self.uploads, self.pending, self.history, self.executed = {}, [], {}, []
        self.running = None
        self.interrupted = False
        self.headers_seen = []
        self.port = None
        self.generation = 0
        self._start()

    # --- server lifecycle -----------------------------------------------------------------------
    def _start(self):
        fake = self

        class Handler(JSONHandler):
            def do_GET(self):
                fake.headers_seen.append(dict(self.headers))
                path = self.path
                with fake.lock:
                    if path.startswith("/ws"):
                        return self._json(404, {})
                    if path == "/system_stats":
                        return self._json(200, {"system": {}})
                    if path == "/object_info":
                        return self._json(200, fake.object_info)
                    if path == "/queue":
                        running = [[0, fake.running, {}, {}, []]] if fake.running else []
                        return self._json(200, {"queue_running": running,
                                                "queue_pending": [[i + 1, p, {}, {}, []] for i, (p, _) in
                                                                  enumerate(fake.pending)]})
                    if path.startswith("/history/"):
                        pid = path.split("/")[2]
                        return self._json(200, {pid: fake.history[pid]} if pid in fake.history else {})
                    if path.startswith("/view?"):
                        name = path.split("filename=")[1].split("&")[0]
                        body = f"VIDEO {name}".encode()
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        return self.wfile.write(body)
                self._json(404, {})

            def do_POST(self):
                fake.headers_seen.append(dict(self.headers))
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with fake.lock:
                    if self.path == "/upload/image":
                        name = data.split(b'filename="')[1].split(b'"')[0].decode()
                        fake.uploads[name] = fake.uploads.get(name, 0) + 1
                        return self._json(200, {"name": name, "subfolder": "", "type": "input"})
                    if self.path == "/prompt":
                        fake.posted.append(json.loads(data))
                        prompt = fake.posted[-1]["prompt"]
                        if fake.refuse:
                            return self._json(400, {"error": {"type": "prompt_outputs_failed_validation",
                                                              "message": "Prompt outputs failed validation",
                                                              "details": ""}, "node_errors": fake.refuse})
                        for node in prompt.values():
                            for value in node["inputs"].values():
                                if isinstance(value, str) and value.startswith("fp_") and value not in fake.uploads:
                                    return self._json(400, {"error": {"message": "Prompt outputs failed validation"},
                                                            "node_errors": {"1": {"class_type": "LoadImage", "errors": [
                                                                {"message": "Invalid file", "details": value}]}}})
                        pid = uuid.uuid4().hex
                        fake.pending.append((pid, prompt))
                        return self._json(200, {"prompt_id": pid, "number": len(fake.pending), "node_errors": {}})
                    if self.path == "/queue":
                        delete = set(json.loads(data).get("delete", []))
                        fake.pending = [(p, w) for p, w in fake.pending if p not in delete]
                        return self._json(200, {})
                    if self.path == "/interrupt":
                        if json.loads(data or b"{}").get("prompt_id") == fake.running:
                            fake.interrupted = True
                        return self._json(200, {})
                self._json(404, {})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self.port = self.httpd.server_address[1]
        self.alive = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._execute, args=(self.httpd,), daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def kill(self):
        self.alive = False
        self.httpd.shutdown()
        self.httpd.server_close()

    def forget(self):
        """What a restart between two requests looks like: queue, history and uploads are gone."""
        with self.lock:
            self.pending, self.history, self.uploads, self.running = [], {}, {}, None
            self.generation += 1

    # --- execution ------------------------------------------------------------------------------
    def _execute(self, httpd):
        while self.alive and self.httpd is httpd:
            with self.lock:
                job = self.pending.pop(0) if self.pending else None
                self.running = job[0] if job else None
                self.interrupted = False
            if job is None:
                time.sleep(0.02)
                continue
            pid, prompt = job
            generation = self.generation
            end = time.monotonic() + self.seconds
            while time.monotonic() < end and not self.interrupted and self.alive:
                time.sleep(0.01)
            if not self.alive or self.httpd is not httpd:
                return  # killed while running: the prompt is lost with the process
            if generation != self.generation:
                continue  # "restarted" while running: forgotten
            seeds = {v for n in prompt.values() for k, v in n["inputs"].items() if k in ("seed", "noise_seed")}
            with self.lock:
                self.running = None
                self.executed.append((pid, prompt))
                if self.interrupted:
                    self.history[pid] = {"status": {"status_str": "error", "completed": False,
                                                    "messages": [["execution_interrupted", {}]]}, "outputs": {}}
                elif seeds & self.fail_seeds:
                    self.history[pid] = {"status": {"status_str": "error", "completed": False, "messages": [
                        ["execution_error", {"node_id": "19", "node_type": "FantasyPortraitSampler",
                                             "exception_type": "FantasyPortraitError",
                                             "exception_message": "bad input for this job"}]]}, "outputs": {}}
                elif seeds & self.flaky_seeds:
                    self.flaky_seeds -= seeds
                    self.history[pid] = {"status": {"status_str": "error", "completed": False, "messages": [
                        ["execution_error", {"node_id": "19", "node_type": "FantasyPortraitSampler",
                                             "exception_type": "torch.OutOfMemoryError",
                                             "exception_message": "CUDA out of memory"}]]}, "outputs": {}}
                else:
                    self.history[pid] = {"status": {"status_str": "success", "completed": True}, "outputs": {
                        "22": {"images": [{"filename": f"{pid}.mp4", "subfolder": "video", "type": "output"}]}}}


#: a small API workflow (an image, two driving videos, the output) and the server's /object_info for it
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "LoadVideo", "inputs": {"file": "a.mp4"}},
    "10": {"class_type": "LoadVideo", "inputs": {"file": "b.mp4"}},
    "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0]}},
}


OBJECT_INFO = {
    "LoadImage": {"input": {"required": {"image": [["x.png"], {"image_upload": True}]}}},
    "LoadVideo": {"input": {"required": {"file": [["a.mp4"], {"video_upload": True}]}}},
    "SaveVideo": {"input": {"required": {"video": ["VIDEO", {}]}}},
    "UNETLoader": {"input": {"required": {"unet_name": [["wan2.1_i2v_480p_14B_fp8_e4m3fn.safetensors"], {}],
                                          "weight_dtype": [["default", "fp8_e4m3fn"], {}]}}},
    "CLIPVisionLoader": {"input": {"required": {"clip_name": ["COMBO", {"options": ["clip_vision_h.safetensors"]}]}}},
    "KSampler": {"input": {"required": {"seed": ["INT", {}], "model": ["MODEL", {}]}}},
}
