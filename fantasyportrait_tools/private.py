"""A private ComfyUI for ``run``/``batch`` without ``--server``: finding the ComfyUI folder and its own Python,
and a headless server on a free loopback port that is always stopped after the run."""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Callable

from fantasyportrait_core.errors import FantasyPortraitError

from .errors import RunError
from .runner import ComfyClient


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
