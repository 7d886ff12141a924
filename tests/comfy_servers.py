"""Real ComfyUI servers for the end-to-end tests: a base folder with the pack, the test-only nodes and
the tiny models, and headless servers on free loopback ports."""

import os
import socket
import subprocess
import time
import urllib.request

from conftest import COMFYUI_DIR, ROOT
from conftest import COMFYUI_PYTHON as PYTHON


#: ``--set`` overrides pointing a shipped workflow at the tiny test models (tests/comfy_models.py)
TINY_MODELS = ["1.unet_name=tiny_wan_i2v.safetensors", "3.clip_name=fp_test_umt5.safetensors",
               "6.clip_name=fp_test_clip_h.safetensors"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base(base, models_from=None, test_nodes=True):
    """``base``/custom_nodes with this pack (and the test-only nodes); ``base``/models with the tiny models,
    made by tests/comfy_models.py, or linked from another base folder (``models_from``)."""
    from media import models_dir

    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / "ComfyUI-FantasyPortrait")
    if test_nodes:
        os.symlink(os.path.join(ROOT, "tests", "comfy_test_nodes"), base / "custom_nodes" / "fp_test_nodes")
    if models_from is not None:
        os.symlink(models_from / "models", base / "models")
    elif test_nodes:
        made = subprocess.run([PYTHON, os.path.join(ROOT, "tests", "comfy_models.py"), COMFYUI_DIR, str(base),
                               models_dir(), ROOT], capture_output=True, text=True, timeout=600)
        assert made.returncode == 0, made.stderr[-3000:]
    return base


class ComfyServer:
    """A headless ComfyUI on ``base``; ``url``, ``log`` (path), ``stop()``, ``kill()``."""

    def __init__(self, base, log_path, frontend_root=None, env=None):
        self.base, self.log = base, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        front = [] if frontend_root is None else ["--front-end-root", str(frontend_root)]
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([PYTHON, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                                      *front, "--disable-auto-launch", "--disable-api-nodes",
                                      "--use-pytorch-cross-attention", "--base-directory", str(base)],
                                     cwd=COMFYUI_DIR, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        try:
            for _ in range(240):
                time.sleep(0.5)
                try:
                    urllib.request.urlopen(self.url + "/system_stats", timeout=5).read()
                    return
                except OSError:
                    assert self.proc.poll() is None, open(log_path).read()[-3000:]
            raise AssertionError("ComfyUI did not answer:\n" + open(log_path).read()[-3000:])
        except BaseException:  # a server that did not come up is not left running
            self.kill()
            raise

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self._log.close()


def two_person_clip(folder) -> str:
    """The first 12 frames of two_person.mp4 (23 fps, no audio) in ``folder``: a short two-person driver
    keeps the end-to-end runs quick."""
    from fantasyportrait_core.video import read_video, write_video
    from media import media_path

    clip = folder / "two_person_12.mp4"
    if not clip.exists():
        write_video(str(clip), read_video(media_path("two_person.mp4"), max_frames=12).frames, 23)
    return str(clip)
